"""``make gpu-smoke``: the paper-scale paths on one GPU, in minutes, with no downloads.

    python -m igr.commands.gpu_smoke [--out outputs/gpu-smoke] [--steps 20] [--batch 8] [--size 1024x768]

1. The sd15 architecture (``configs/model/sd15.yaml`` with every weight path dropped: random init, no files read),
   gradient checkpointing on, as the 4xA100 overlay trains it.
2. ``--steps`` training steps under Lightning's ``DeepSpeedStrategy`` (ZeRO stage 2) in ``bf16-mixed`` on one device,
   at 1024x768, per-device batch 8 — the regime of ``make train-coarse``: bf16 parameters and batch, fp32 buffers,
   no autocast. Reports s/step (median after two warm-up steps), samples/s, peak GB and the losses.
3. The restoration benchmark (``igr bench``'s ``igr`` variant: 25 DDIM steps, CFG 1.5, bf16) at 1024x768:
   s/image and peak GB.
4. One JSON named after the card (``outputs/gpu-smoke/NVIDIA_H100_80GB_HBM3.json``).

Budget: 8 minutes on one H100. Without CUDA it stops at once with one line (exit 2). The harness is checked on the
CPU by ``tests/test_gpu_smoke.py`` (config building on the meta device, a tiny bf16 run of the training timer).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

DEFAULT_CONFIG = "configs/model/sd15.yaml"
BUDGET_SECONDS = 8 * 60


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=f"model YAML (default {DEFAULT_CONFIG})")
    parser.add_argument("--size", default="1024x768", help="HxW of training and restoration (default 1024x768)")
    parser.add_argument("--batch", type=int, default=8, help="per-device training batch (default 8, the paper's)")
    parser.add_argument("--steps", type=int, default=20, help="DeepSpeed training steps (default 20)")
    parser.add_argument("--stage", type=int, default=2, choices=(1, 2, 3), help="ZeRO stage (default 2)")
    parser.add_argument("--bench-repeats", type=int, default=3, help="timed restorations after the warm-up")
    parser.add_argument("--out", default="outputs/gpu-smoke", help="folder for <card name>.json")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m igr.commands.gpu_smoke")
    add_arguments(parser)
    args = parser.parse_args(argv)
    from igr.config import parse_size
    from igr.errors import IGRError

    args.size = parse_size(args.size)
    if args.size[0] % 8 or args.size[1] % 8:
        raise IGRError(f"--size {args.size[0]}x{args.size[1]}: height and width must be multiples of 8")
    if args.batch < 1 or args.steps < 3 or args.bench_repeats < 1:
        raise IGRError("--batch and --bench-repeats must be >= 1, --steps >= 3 (two are warm-up)")
    return args


def smoke_config(path: str | Path, size: tuple[int, int]):
    """The model config of the smoke run: the architecture of ``path``, random init (every weight path
    dropped, open_clip's bundled tokenizer), at ``size``, with gradient checkpointing as in the 4xA100 overlay."""
    from igr.bench import random_weights_config
    from igr.config import load_model_config

    cfg = random_weights_config(load_model_config(path), tuple(size))
    return dataclasses.replace(cfg, gradient_checkpointing=True)


def card_file(out: str | Path, card: str) -> Path:
    """``outputs/gpu-smoke/NVIDIA_H100_80GB_HBM3.json`` for the card ``NVIDIA H100 80GB HBM3``."""
    return Path(out) / (re.sub(r"[^A-Za-z0-9.-]+", "_", card).strip("_") + ".json")


class _RandomPairs(torch.utils.data.Dataset):
    """Person / mask / garment samples of random pixels in the DataModule's format (speed and memory do not
    depend on the values); a fixed garment rectangle as the mask."""

    def __init__(self, size: tuple[int, int], n: int) -> None:
        self.size, self.n = size, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(i)
        h, w = self.size
        mask = torch.zeros(1, h, w)
        mask[:, h // 5 : h * 3 // 4, w // 5 : w * 4 // 5] = 1
        return {
            "person": torch.rand(3, h, w, generator=g) * 2 - 1,
            "mask": mask,
            "garment": torch.rand(3, h, w, generator=g) * 2 - 1,
            "category": ("upper", "lower", "full")[i % 3],
            "key": f"random{i:05d}",
        }


def _step_timer():
    """A Lightning callback: wall time and loss of every optimizer step (CUDA synchronised); it resets the peak
    GPU memory counter at fit start. Built here so that importing this module does not import Lightning."""
    import lightning as L

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.losses: list[float] = []
            self._t = 0.0

        @staticmethod
        def _sync(pl_module) -> None:
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize(pl_module.device)

        def on_fit_start(self, trainer, pl_module) -> None:
            if pl_module.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(pl_module.device)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self._sync(pl_module)
            self._t = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self._sync(pl_module)
            self.times.append(time.perf_counter() - self._t)
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.losses.append(float(loss))

    return StepTimer()


def train_smoke(cfg, batch: int, steps: int, **trainer_kwargs) -> dict[str, Any]:
    """``steps`` training steps of :class:`IGRSystem` on random pairs; the Trainer gets ``trainer_kwargs``
    (the smoke run: DeepSpeed ZeRO-2, bf16-mixed, one GPU). Returns timings, losses and peak memory."""
    import lightning as L

    from igr.errors import IGRError
    from igr.system import IGRSystem

    start = time.perf_counter()
    torch.manual_seed(0)
    system = IGRSystem(model=cfg)
    build = time.perf_counter() - start
    timer = _step_timer()
    defaults = dict(
        max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, gradient_clip_val=1.0, callbacks=[timer],
    )
    trainer = L.Trainer(**{**defaults, **trainer_kwargs})
    loader = torch.utils.data.DataLoader(
        _RandomPairs(tuple(cfg.resolution), batch * steps), batch_size=batch, num_workers=0
    )
    fit_start = time.perf_counter()
    trainer.fit(system, loader)
    fit = time.perf_counter() - fit_start
    if len(timer.times) != steps:
        raise IGRError(f"training ran {len(timer.times)} of {steps} steps")
    timed = timer.times[2:]  # two warm-up steps (allocator, cuDNN autotuning, DeepSpeed buckets)
    per_step = statistics.median(timed)
    device = system.device
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {
        "strategy": type(trainer.strategy).__name__,
        "zero_stage": getattr(trainer.strategy, "config", {}).get("zero_optimization", {}).get("stage"),
        "precision": str(trainer.precision),
        "parameter_dtype": str(next(system.model.denoiser.parameters()).dtype).removeprefix("torch."),
        "buffer_dtype": str(system.model.prompts.embeddings.dtype).removeprefix("torch."),
        "devices": trainer.num_devices,
        "batch_per_device": batch,
        "size": list(cfg.resolution),
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "steps": steps,
        "seconds_per_step": per_step,
        "samples_per_second": batch * trainer.num_devices / per_step,
        "step_seconds": timer.times,
        "losses": timer.losses,
        "losses_finite": all(math.isfinite(v) for v in timer.losses),
        "peak_memory_gb": peak / 1e9 if peak is not None else None,
        "build_seconds": build,
        "fit_seconds": fit,
    }


def restore_smoke(config: str, size: tuple[int, int], repeats: int) -> dict[str, Any]:
    """The ``igr bench`` restoration (its ``igr`` variant alone) in bf16 on CUDA: s/image and peak GB."""
    from igr.bench import DEFAULT_VARIANTS, BenchOptions, run_benchmark

    opts = BenchOptions(
        config=config, device="cuda", size=tuple(size), dtype="bfloat16", repeats=repeats,
        skip=tuple(v for v in DEFAULT_VARIANTS if v != "igr"),
    )
    report = run_benchmark(opts, log=lambda msg: print(msg, file=sys.stderr))
    row = report["variants"]["igr"]
    return {
        "steps": report["steps"],
        "guidance": report["guidance"],
        "dtype": report["dtype"],
        "size": report["size"],
        "seconds_per_image": row["seconds_per_image"],
        "median_seconds": row["median_seconds"],
        "peak_memory_gb": row["peak_memory_bytes"] / 1e9 if "peak_memory_bytes" in row else None,
        "stages_seconds": row.get("stages_seconds"),
        "targets": report["targets"],
    }


def run(args: argparse.Namespace) -> int:
    from igr.errors import IGRError

    if not torch.cuda.is_available():
        raise IGRError("gpu-smoke needs a CUDA GPU and none is visible here (torch.cuda.is_available() is False)")
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        raise IGRError("gpu-smoke trains under DeepSpeed, which is not installed (pip install -e .[deepspeed])")
    from lightning.pytorch.strategies import DeepSpeedStrategy

    from igr.bench import device_name, library_versions

    t0 = time.perf_counter()
    card = device_name(torch.device("cuda"))
    cfg = smoke_config(args.config, args.size)
    print(f"gpu-smoke on {card}: {cfg.name} random init at {args.size[0]}x{args.size[1]}", file=sys.stderr)
    train = train_smoke(
        cfg, args.batch, args.steps, accelerator="gpu", devices=1,
        strategy=DeepSpeedStrategy(stage=args.stage), precision="bf16-mixed",
    )
    print(f"train: {train['seconds_per_step']:.2f} s/step, peak {train['peak_memory_gb']:.1f} GB", file=sys.stderr)
    torch.cuda.empty_cache()
    restore = restore_smoke(args.config, args.size, args.bench_repeats)
    total = time.perf_counter() - t0
    result = {
        "card": card,
        "command": "make gpu-smoke",
        "model": f"{cfg.name} architecture, random init (no weights read)",
        "versions": library_versions(),
        "train": train,
        "restore": restore,
        "total_seconds": total,
        "within_8_minutes": total <= BUDGET_SECONDS,
    }
    path = card_file(args.out, card)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{card}: train {train['seconds_per_step']:.2f} s/step ({train['samples_per_second']:.1f} samples/s, "
        f"peak {train['peak_memory_gb']:.1f} GB); restore {restore['seconds_per_image']:.2f} s/image "
        f"(peak {restore['peak_memory_gb']:.1f} GB); {total / 60:.1f} min -> {path}"
    )
    ok = train["losses_finite"] and total <= BUDGET_SECONDS
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    from igr.errors import IGRError

    try:
        return run(parse_args(argv))
    except IGRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
