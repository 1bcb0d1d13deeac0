"""Device and dtype names as users write them (``auto``, ``cuda:1``, ``bf16``) → torch objects, with one-line
errors; shared by the pipeline, the CLI commands and the benchmarks."""

from __future__ import annotations

import torch

from igr.errors import IGRError

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` → CUDA, else MPS, else CPU; a named device that is not there is a one-line error."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise IGRError(f"--device '{name}': not a device name (auto, cpu, cuda, cuda:1, mps)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise IGRError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "mps" and not (torch.backends.mps.is_available()):
        raise IGRError(f"--device {name}: MPS is not available on this machine")
    return device


def resolve_dtype(
    name: str | torch.dtype | None, device: torch.device, cuda_default: torch.dtype = torch.float16
) -> torch.dtype:
    """``auto`` → ``cuda_default`` on CUDA (float16: SD1.5's usual inference precision), float32 elsewhere."""
    if isinstance(name, torch.dtype):
        dtype = name
    elif name in (None, "auto"):
        dtype = cuda_default if device.type == "cuda" else torch.float32
    elif name in DTYPES:
        dtype = DTYPES[name]
    else:
        raise IGRError(f"--dtype '{name}': expected auto, float32, float16 or bfloat16")
    return dtype
