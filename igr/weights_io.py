"""Reading weight files from local paths, with one clear error per problem.

Shared by the model (``igr.models``) and the metric backbones (``igr.metrics``). Nothing here touches the network: every path comes from a config, and ``igr download-weights`` is the only
code that fetches files.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path

import torch

from igr.errors import WeightsError

_WEIGHT_NAMES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a ``.safetensors`` or ``.bin``/``.pt``/``.pth`` file (``torch.load(weights_only=True)``: no pickles run)."""
    path = Path(path)
    check_readable(path, "weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"{path}: cannot read weights ({exc.__class__.__name__}: {str(exc).splitlines()[0]})"
        ) from exc
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path}: expected a state dict, found {type(state).__name__}")
    state = dict(state)
    check_values(state, path)
    return state


# What a weights file of ours (or of the backbones we load) holds: float weights, and integer buffers such as
# position ids and BatchNorm's num_batches_tracked. int8/uint8/float8/complex/quantized tensors would be
# loaded and then fail deep inside the first forward pass.
_LOADABLE = {torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.bool}


def check_values(state: Mapping, path: str | Path, prefix: str = "") -> None:
    """Raise a :class:`WeightsError` naming the first tensor of a dtype we cannot use, or holding NaN/inf
    (a diverged training run's weights restore black images). Nested state dicts (an IP-Adapter's
    ``image_proj``/``ip_adapter``) are checked too; other values are left to the loader."""
    for k, value in state.items():
        key = f"{prefix}{k}"
        if isinstance(value, Mapping):
            check_values(value, path, f"{key}.")
            continue
        if not isinstance(value, torch.Tensor):
            continue
        if value.dtype not in _LOADABLE:
            raise WeightsError(
                f"{path}: '{key}' is {str(value.dtype).removeprefix('torch.')}, expected floating-point weights "
                "(float32, float16 or bfloat16); quantised weights are not supported"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise WeightsError(f"{path}: '{key}' holds {bad} NaN/inf value(s) (weights of a diverged run?)")


def check_weights_folder_dtypes(folder: str | Path) -> None:
    """Every ``.safetensors`` file in a diffusers part folder, checked for a tensor dtype we cannot use before
    diffusers loads it: its loader silently casts an int8/uint8/float8 tensor to the parameter's dtype, so the part
    would load garbage with exit 0. Only the files' headers are read (no tensor data), except the offending one."""
    from safetensors import safe_open

    folder = Path(folder)
    if not folder.is_dir():
        return
    allowed = {"F32", "F16", "BF16", "F64", "I64", "I32", "BOOL"}  # _LOADABLE in safetensors' dtype names
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for key in f.keys():
                    if f.get_slice(key).get_dtype() not in allowed:
                        check_values({key: f.get_tensor(key)}, path)
        except WeightsError:
            raise
        except Exception:  # unreadable or truncated: diffusers' loader reports it, as one line (load_error)
            continue


def check_loaded_values(module: torch.nn.Module, folder: str | Path) -> None:
    """NaN/inf in a part diffusers just loaded from ``folder``, named by the weights file that holds the tensor
    (a diverged run's weights otherwise restore black images with exit 0). Checked on the loaded tensors, so the
    files are not read twice; tensors left on the meta device (offloaded) are skipped."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    where: dict[str, Path] = {}
    for index in folder.glob("*.index.json"):  # sharded: the index maps each key to its shard
        try:
            where.update({k: folder / v for k, v in json.loads(index.read_text())["weight_map"].items()})
        except (OSError, ValueError, KeyError, TypeError):
            continue
    default = files[0] if len(files) == 1 else folder
    for key, value in module.state_dict().items():
        if isinstance(value, torch.Tensor) and value.device.type != "meta" and value.is_floating_point():
            check_values({key: value}, where.get(key, default))


def check_readable(path: str | Path, what: str) -> Path:
    """A missing file and one this user may not read are different problems; say which."""
    path = Path(path)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise WeightsError(f"{path}: {what} not found") from None
    except PermissionError:  # a folder on the way that this user may not enter
        raise WeightsError(f"{path}: {what} cannot be read (permission denied)") from None
    if stat.S_ISDIR(st.st_mode):
        raise WeightsError(f"{path}: is a directory, expected a {what}")
    if not os.access(path, os.R_OK):
        raise WeightsError(f"{path}: {what} cannot be read (permission denied)")
    return path


def check_shapes(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor | torch.Size | tuple[int, ...]],
    path: str | Path,
) -> None:
    """Raise a :class:`WeightsError` naming the first missing key or mismatched shape (and, where ``expected``
    holds the module's tensors, an integer tensor in place of float weights)."""
    missing = [k for k in expected if k not in state]
    if missing:
        shown = ", ".join(f"{k} {tuple(expected[k])}" for k in missing[:3])
        raise WeightsError(f"{path}: missing {len(missing)} expected key(s), e.g. {shown}")
    for key, want in expected.items():
        shape = want.shape if isinstance(want, torch.Tensor) else want
        got = tuple(state[key].shape)
        if got != tuple(shape):
            raise WeightsError(f"{path}: '{key}' has shape {got}, expected {tuple(shape)}")
        # Given the module's tensors (not just shapes): an integer tensor where the model has float weights.
        if isinstance(want, torch.Tensor) and want.is_floating_point() and not state[key].is_floating_point():
            dtype = str(state[key].dtype).removeprefix("torch.")
            raise WeightsError(f"{path}: '{key}' is {dtype}, expected floating-point weights")


def load_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Strictly load ``state`` into ``module`` after checking every key and shape."""
    expected = module.state_dict()
    check_shapes(state, expected, path)
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise WeightsError(f"{path}: {len(unexpected)} unexpected key(s), e.g. {', '.join(unexpected[:3])}")
    module.load_state_dict(state, strict=True)


def load_diffusers_model(cls, folder: str | Path):
    """``cls.from_pretrained`` on a local diffusers/transformers folder, offline, with a one-line error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError(f"{folder}: folder not found (expected a {cls.__name__} folder with config.json)")
    if not (folder / "config.json").is_file():
        raise WeightsError(f"{folder}: no config.json (expected a {cls.__name__} folder)")
    if not any((folder / n).is_file() for n in _WEIGHT_NAMES):
        raise WeightsError(f"{folder}: no weights file (expected one of {', '.join(_WEIGHT_NAMES)})")
    try:
        kwargs = {"low_cpu_mem_usage": False} if cls.__module__.startswith("diffusers") else {}
        return cls.from_pretrained(str(folder), local_files_only=True, **kwargs)
    except Exception as exc:
        msg = " ".join(str(exc).split())[:300]
        raise WeightsError(f"{folder}: cannot load {cls.__name__} ({exc.__class__.__name__}: {msg})") from exc
