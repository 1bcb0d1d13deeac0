"""How a benchmark run is measured: devices and dtypes, synchronisation, peak memory, the stages of one
restoration, a description of the machine for the report, and :class:`Variant`: one timed path and its figures."""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from igr.config import parse_size as config_parse_size
from igr.devices import resolve_device as pipeline_device
from igr.devices import resolve_dtype as pipeline_dtype
from igr.errors import IGRError


def resolve_device(name: str) -> torch.device:
    device = pipeline_device(name)
    if device.type not in ("cpu", "cuda"):
        raise IGRError(f"--device {name}: the benchmark runs on cpu or cuda")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    return pipeline_dtype(name, device, cuda_default=torch.bfloat16)  # bf16: the paper-size target's precision


def parse_size(text: str) -> tuple[int, int]:
    """``"1024x768"`` → (1024, 768) = (H, W), multiples of 8 (the VAE's factor)."""
    h, w = config_parse_size(text)
    if h % 8 or w % 8:
        raise IGRError(f"--size {text}: height and width must be positive multiples of 8")
    return h, w


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class MemoryMeter:
    """Peak memory of a section: CUDA ``max_memory_allocated``; CPU peak RSS (VmHWM, reset via clear_refs)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.resettable = device.type == "cuda" or self._reset_rss_peak()
        self.kind = "cuda max_memory_allocated" if device.type == "cuda" else "process peak RSS"
        if not self.resettable:
            self.kind += " (not resettable here: peak since process start)"

    @staticmethod
    def _reset_rss_peak() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            return _proc_status_kb("VmHWM") is not None
        except OSError:
            return False

    def current(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        rss = _proc_status_kb("VmRSS")
        return rss * 1024 if rss is not None else 0

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.resettable:
            self._reset_rss_peak()

    def peak(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device)
        hwm = _proc_status_kb("VmHWM")
        if hwm is not None:
            return hwm * 1024
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss if sys.platform == "darwin" else maxrss * 1024


def free_memory(device: torch.device) -> None:
    """Return cached CUDA blocks, so one variant's peak does not hide in another's cache. (On the CPU tensors are
    freed by reference counting; a full ``gc.collect`` per run would only add seconds.)"""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def available_ram() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@contextlib.contextmanager
def stage_timer(model, device: torch.device, stages: dict[str, float]) -> Iterator[None]:
    """Time the stages of :meth:`IGRModel.restore` — frozen encoders, GarmNet (``sampling_conditions``), VAE decode —
    by wrapping them on the instance; the denoising loop is the rest."""

    def timed(key: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            sync(device)
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            sync(device)
            stages[key] = stages.get(key, 0.0) + time.perf_counter() - start
            return out

        return wrapper

    model.encode_inputs = timed("encode", model.encode_inputs)
    model.sampling_conditions = timed("garmnet", model.sampling_conditions)
    model.vae.decode = timed("decode", model.vae.decode)
    try:
        yield
    finally:
        for obj, name in ((model, "encode_inputs"), (model, "sampling_conditions"), (model.vae, "decode")):
            obj.__dict__.pop(name, None)


def library_versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("diffusers", "transformers", "lightning", "open_clip_torch"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    out["cuda"] = torch.version.cuda
    out["cudnn"] = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({torch.get_num_threads()} threads, {os.cpu_count()} CPUs)"


@dataclass
class Variant:
    name: str
    label: str
    run: Callable[[], torch.Tensor]
    images: int
    role: str = "candidate"  # "baseline" (igr), "reference" (a naive path igr replaces), "candidate", "floor"
    compare: bool = True  # output must equal igr's (to tolerance)
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    stages: bool = False
    times: list[float] = field(default_factory=list)
    stage_times: list[dict[str, float]] = field(default_factory=list)
    peak: int | None = None
    output: torch.Tensor | None = None
    error: str | None = None

    def call(self, device: torch.device, model=None) -> float:
        stages: dict[str, float] = {}
        timer = stage_timer(model, device, stages) if self.stages else contextlib.nullcontext()
        with self.context(), timer, torch.inference_mode():
            sync(device)
            start = time.perf_counter()
            out = self.run()
            sync(device)
            seconds = time.perf_counter() - start
        self.output = out.detach().float().cpu()
        if self.stages:
            self.stage_times.append(stages)
        return seconds
