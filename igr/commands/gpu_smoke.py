"""The GPU smoke run's phases: ``make train-coarse``'s very path on one GPU, in minutes, with no downloads.

    bash scripts/gpu-smoke.sh [--out outputs/gpu-smoke] [--steps 20] [--batch 8] [--size 1024x768]
    python -m igr.commands.gpu_smoke ...          (the same, with the packages already importable)

Phases, each a subprocess of the real command where there is one (so each fails as a user's would):

1. ``environment``  card, library versions.
2. ``shards``       ``igr make-shards synthetic``: train and test shards at ``--size`` (1024x768).
3. ``train``        ``igr fit -c configs/experiment/coarse.yaml -c configs/trainer/deepspeed_4xa100.yaml`` plus an
                    overlay: one device, the sd15 architecture at random init (every weight path dropped,
                    open_clip's bundled tokenizer), the DataModule on the synthetic shards, per-device batch 8,
                    ``--steps`` steps, a DeepSpeed checkpoint folder at the end. s/step, samples/s, peak GB, losses.
4. ``resume``       the same command with ``--ckpt_path last`` for ``--resume-steps`` more steps from that folder.
5. ``export``       ``igr export`` of the folder into a pipeline folder.
6. ``restore``      ``igr bench``'s restoration in bf16 at ``--size``: IGR (GarmNet once) and plain SD.
7. ``eval``         ``igr eval --devices 1 --dtype bf16`` of the exported pipeline on ``--pairs`` test pairs.

After every phase it rewrites ``<out>/<card>.json``: a failure names its phase (``failed_phase``, the error's
last lines) and keeps every earlier figure; phases that need a failed one are marked skipped. The JSON records
pass/fail against the goals (training >= 5 samples/s on one H100 at 1024x768, restoration <= 1.0 s and <= 10 GB
per image in bf16, <= 8 minutes in all). Without CUDA it stops at once with one line (exit 2), unless ``--cpu``:
the same phases with the tiny model, the CPU trainer overlay instead of DeepSpeed and fp32 (what
``tests/test_gpu_smoke.py`` runs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BUDGET_SECONDS = 8 * 60
WARMUP_STEPS = 2
# Goals of issue 32 for one H100 at 1024x768 (restoration in bf16, as igr.bench.TARGETS).
GOALS = {
    "train_samples_per_second_min": 5.0,
    "restore_seconds_per_image_max": 1.0,
    "restore_peak_gb_max": 10.0,
    "total_seconds_max": float(BUDGET_SECONDS),
}


# --- arguments ---------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--out", default="outputs/gpu-smoke", help="folder for <card name>.json and work/")
    parser.add_argument("--size", default=None, help="HxW of shards, training and restoration (default 1024x768)")
    parser.add_argument("--batch", type=int, default=None, help="per-device training batch (default 8)")
    parser.add_argument("--steps", type=int, default=None, help="training steps of the first fit (default 20)")
    parser.add_argument("--resume-steps", type=int, default=2, help="steps after --ckpt_path last (default 2)")
    parser.add_argument("--pairs", type=int, default=8, help="test pairs evaluated (default 8)")
    parser.add_argument("--train-samples", type=int, default=None, help="synthetic training samples (default 64)")
    parser.add_argument("--workers", type=int, default=None, help="processes writing shards / loading data")
    parser.add_argument("--bench-repeats", type=int, default=3, help="timed restorations after the warm-up")
    parser.add_argument("--phases", default=None, help="comma-separated subset of the phases (default: all)")
    parser.add_argument(
        "--cpu", action="store_true",
        help="check the harness without a GPU: tiny model, CPU trainer overlay (no DeepSpeed), fp32, small sizes",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from igr.config import parse_size
    from igr.errors import IGRError

    parser = argparse.ArgumentParser(prog="python -m igr.commands.gpu_smoke")
    add_arguments(parser)
    args = parser.parse_args(argv)
    cpu = args.cpu
    args.model = str(CONFIGS / "model" / ("tiny.yaml" if cpu else "sd15.yaml"))
    args.size = parse_size(args.size or ("64x48" if cpu else "1024x768"))
    args.batch = args.batch or (2 if cpu else 8)
    args.steps = args.steps or (3 if cpu else 20)
    args.train_samples = args.train_samples or (8 if cpu else 64)
    args.workers = args.workers or (1 if cpu else min(8, os.cpu_count() or 1))
    args.dtype = "fp32" if cpu else "bf16"
    if args.size[0] % 8 or args.size[1] % 8:
        raise IGRError(f"--size {args.size[0]}x{args.size[1]}: height and width must be multiples of 8")
    if args.batch < 1 or args.steps <= WARMUP_STEPS or args.resume_steps < 1 or args.pairs < 1:
        raise IGRError(f"--batch, --resume-steps and --pairs must be >= 1, --steps > {WARMUP_STEPS} (warm-up)")
    if args.bench_repeats < 1:
        raise IGRError("--bench-repeats must be >= 1")
    names = [p.name for p in PHASES]
    if args.phases:
        wanted = [p.strip() for p in args.phases.split(",") if p.strip()]
        unknown = [p for p in wanted if p not in names]
        if unknown:
            raise IGRError(f"--phases {','.join(unknown)}: unknown (known: {', '.join(names)})")
        args.phases = wanted
    else:
        args.phases = names
    return args


def card_file(out: str | Path, card: str) -> Path:
    """``outputs/gpu-smoke/NVIDIA_H100_80GB_HBM3.json`` for the card ``NVIDIA H100 80GB HBM3``."""
    return Path(out) / (re.sub(r"[^A-Za-z0-9.-]+", "_", card).strip("_") + ".json")


# --- the training timer (a callback of the `igr fit` subprocess) --------------------------------------------------
class StepTimer(L.Callback):
    """Wall time, loss and peak GPU memory of every training step, written to ``out`` (JSON) at the end of fit.

    Everything is read while the module is still on its device: Lightning's teardown moves it to the CPU after
    ``on_train_end``, so reading ``pl_module.device`` after fit gives ``cpu`` and no peak memory."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.times: list[float] = []
        self.losses: list[float] = []
        self.info: dict[str, Any] = {}
        self._t = 0.0
        self._cuda: torch.device | None = None

    def _sync(self) -> None:
        if self._cuda is not None:
            torch.cuda.synchronize(self._cuda)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._cuda = pl_module.device if pl_module.device.type == "cuda" else None
        if self._cuda is not None:
            torch.cuda.reset_peak_memory_stats(self._cuda)
        model = getattr(pl_module, "model", None)
        params = next(model.denoiser.parameters()) if model is not None else next(pl_module.parameters())
        prompts = getattr(model, "prompts", None)
        self.info = {
            "strategy": type(trainer.strategy).__name__,
            "zero_stage": (getattr(trainer.strategy, "config", None) or {}).get("zero_optimization", {}).get("stage"),
            "precision": str(trainer.precision),
            "devices": trainer.world_size,
            "accumulate_grad_batches": trainer.accumulate_grad_batches,
            "parameter_dtype": str(params.dtype).removeprefix("torch."),
            "buffer_dtype": str(prompts.embeddings.dtype).removeprefix("torch.") if prompts is not None else None,
            "gradient_checkpointing": bool(getattr(getattr(model, "config", None), "gradient_checkpointing", False)),
            "device": str(pl_module.device),
        }

    def on_train_start(self, trainer, pl_module) -> None:
        self.info["start_step"] = trainer.global_step  # after a resume restored it (on_fit_start is before)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync()
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync()
        self.times.append(time.perf_counter() - self._t)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))
        self.info["batch_per_device"] = int(batch["person"].shape[0])
        self.info["batch_dtype"] = str(batch["person"].dtype).removeprefix("torch.")
        self.info["image_size"] = list(batch["person"].shape[-2:])
        if self._cuda is not None:
            self.info["peak_memory_bytes"] = torch.cuda.max_memory_allocated(self._cuda)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            write_json(Path(self.out), {**self.info, "end_step": trainer.global_step, "step_seconds": self.times,
                                        "losses": self.losses})


# --- the report -----------------------------------------------------------------------------------------------------
def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic JSON write (a reader never sees half a report); paths and other objects are written as text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def fmt(value: Any, spec: str = ".2f", unit: str = "") -> str:
    """A figure for the summary line; ``n/a`` for a missing one (a failed phase, a CPU run's memory)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:{spec}}{unit}"


@dataclass
class Phase:
    name: str
    run: Callable[[Context], dict[str, Any]]
    needs: tuple[str, ...] = ()


@dataclass
class Context:
    args: argparse.Namespace
    work: Path
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


class PhaseError(Exception):
    """A phase failed; ``detail`` is what the report keeps (the command's last lines)."""

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail


def goals(report: dict[str, Any], cpu: bool) -> dict[str, Any]:
    """Each goal with its value and ``met`` (None while the value is missing; always None in --cpu mode, where
    the goals do not apply)."""
    phases = report["phases"]
    train = phases.get("train", {})
    restore = phases.get("restore", {})
    rows = {
        "train_samples_per_second_min": train.get("samples_per_second"),
        "restore_seconds_per_image_max": restore.get("seconds_per_image"),
        "restore_peak_gb_max": restore.get("peak_memory_gb"),
        "total_seconds_max": report.get("total_seconds"),
    }
    out = {}
    for key, value in rows.items():
        goal = GOALS[key]
        met = None
        if value is not None and not cpu:
            met = value >= goal if key.endswith("_min") else value <= goal
        out[key] = {"goal": goal, "value": value, "met": met}
    out["applies_to"] = "one H100 at 1024x768, restoration in bf16" + (" (not this --cpu run)" if cpu else "")
    return out


def run_phases(phases: list[Phase], ctx: Context, report: dict[str, Any], path: Path, cpu: bool = False) -> bool:
    """Run ``phases`` in order, rewriting ``path`` after each. A phase whose ``needs`` did not succeed is
    skipped. Returns True when every phase succeeded."""
    t0 = time.perf_counter()
    report.setdefault("phases", {})
    ok = True
    for phase in phases:
        missing = [n for n in phase.needs if report["phases"].get(n, {}).get("status") != "ok"]
        if missing:
            report["phases"][phase.name] = {"status": "skipped", "reason": f"needs {', '.join(missing)}"}
            ctx.log(f"[{phase.name}] skipped: needs {', '.join(missing)}")
            ok = False
            continue
        ctx.log(f"[{phase.name}] ...")
        start = time.perf_counter()
        try:
            figures = phase.run(ctx) or {}
            entry = {"status": "ok", **figures}
        except Exception as exc:  # any failure is this phase's result: keep going with what does not need it
            entry = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            if isinstance(exc, PhaseError) and exc.detail:
                entry["error_tail"] = exc.detail
            report.setdefault("failed_phase", phase.name)
            ok = False
        entry["seconds"] = time.perf_counter() - start
        report["phases"][phase.name] = entry
        ctx.results[phase.name] = entry
        report["total_seconds"] = time.perf_counter() - t0
        report["goals"] = goals(report, cpu)
        write_json(path, report)
        ctx.log(f"[{phase.name}] {entry['status']} in {entry['seconds']:.1f} s"
                + (f": {entry['error']}" if entry["status"] == "failed" else ""))
    report["within_8_minutes"] = report["total_seconds"] <= BUDGET_SECONDS if phases else None
    report["ok"] = ok
    write_json(path, report)
    return ok


# --- the phases -----------------------------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    env = dict(os.environ)
    # The subprocesses import this checkout's igr (and the wheels scripts/gpu-smoke.sh put on PYTHONPATH).
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _igr(ctx: Context, name: str, *argv: str, timeout: float | None = None) -> str:
    """Run ``python -m igr.cli *argv`` (``igr`` as a user types it); its output goes to work/<name>.log."""
    log = ctx.work / f"{name}.log"
    cmd = [sys.executable, "-m", "igr.cli", *argv]
    ctx.log("  $ igr " + " ".join(argv))
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        try:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=_env(), timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PhaseError(f"igr {argv[0]} ran past {timeout:.0f} s", _tail(log)) from None
    if proc.returncode != 0:
        raise PhaseError(f"igr {argv[0]} exited {proc.returncode} (log: {log})", _tail(log))
    return log.read_text(errors="replace")


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def phase_environment(ctx: Context) -> dict[str, Any]:
    from igr.bench import device_name, library_versions

    versions = library_versions()
    import importlib.metadata as md

    for pkg in ("deepspeed", "webdataset", "jsonargparse", "torchvision"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    device = torch.device("cpu" if ctx.args.cpu else "cuda")
    out = {"card": device_name(device), "versions": versions, "cpus": os.cpu_count()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out["gpu_memory_gb"] = props.total_memory / 1e9
    return out


def phase_shards(ctx: Context) -> dict[str, Any]:
    a = ctx.args
    size = f"{a.size[0]}x{a.size[1]}"
    shards = ctx.work / "shards"
    common = ["--out", str(shards), "--size", size, "--workers", str(a.workers), "--max-per-shard", "16"]
    _igr(ctx, "shards-train", "make-shards", "synthetic", "--split", "train", "--num", str(a.train_samples),
         "--seed", "0", *common)
    _igr(ctx, "shards-test", "make-shards", "synthetic", "--split", "test", "--num", str(a.pairs), "--seed", "1",
         *common)
    return {"train": str(shards / "train.json"), "test": str(shards / "test.json"), "train_samples": a.train_samples,
            "test_pairs": a.pairs, "size": list(a.size)}


def model_yaml(source: str | Path, size: tuple[int, int], gradient_checkpointing: bool) -> dict[str, Any]:
    """The model section of the smoke run: the architecture of ``source`` at random init (every weight path
    dropped, open_clip's bundled tokenizer: no file read, nothing downloaded) at ``size``."""
    node = yaml.safe_load(Path(source).read_text())
    node.update(sd_path=None, vae_path=None, ip_adapter_path=None, image_encoder_path=None, tokenizer="open_clip",
                resolution=list(size), gradient_checkpointing=gradient_checkpointing)
    return node


def _fit_configs(ctx: Context, overlay: dict[str, Any], name: str) -> list[str]:
    """``-c`` arguments of ``make train-coarse`` (the DeepSpeed overlay, or the CPU one with --cpu) and ours."""
    path = ctx.work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(overlay, sort_keys=False))
    trainer = "cpu.yaml" if ctx.args.cpu else "deepspeed_4xa100.yaml"
    return ["-c", str(CONFIGS / "experiment" / "coarse.yaml"), "-c", str(CONFIGS / "trainer" / trainer),
            "-c", str(path)]


def _overlay(ctx: Context, max_steps: int, save_every: int, timer_out: Path) -> dict[str, Any]:
    a = ctx.args
    shards = ctx.work / "shards"
    model = ctx.work / "model.yaml"
    # The DeepSpeed overlay turns on gradient checkpointing; the model file replaces its model section, so say it.
    model.write_text(yaml.safe_dump(model_yaml(a.model, a.size, gradient_checkpointing=not a.cpu), sort_keys=False))
    return {
        "model": {"model": str(model)},
        "trainer": {
            "devices": 1, "num_nodes": 1, "max_steps": max_steps, "limit_val_batches": 0,
            "default_root_dir": str(ctx.work / "run"), "enable_progress_bar": False,
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "init_args": {"dirpath": None, "filename": "step{step:07d}", "auto_insert_metric_name": False,
                               "save_last": True, "save_top_k": 0, "every_n_train_steps": save_every}},
                {"class_path": "igr.callbacks.ThroughputLogger"},
                {"class_path": "igr.commands.gpu_smoke.StepTimer", "init_args": {"out": str(timer_out)}},
            ],
        },
        "data": {
            "train_shards": str(shards / "train.json"), "val_shards": str(shards / "test.json"),
            "test_shards": str(shards / "test.json"), "image_size": list(a.size), "batch_size": a.batch,
            "num_workers": a.workers, "train_samples_per_epoch": a.train_samples,
        },
    }


def _timing(steps: dict[str, Any], warmup: int) -> dict[str, Any]:
    times = steps.get("step_seconds") or []
    timed = times[warmup:] or times
    per_step = statistics.median(timed) if timed else None
    batch, devices = steps.get("batch_per_device"), steps.get("devices") or 1
    peak = steps.get("peak_memory_bytes")
    return {
        "seconds_per_step": per_step,
        "samples_per_second": batch * devices / per_step if per_step and batch else None,
        "peak_memory_gb": peak / 1e9 if peak is not None else None,
        "losses_finite": all(math.isfinite(v) for v in steps.get("losses") or [float("nan")]),
    }


def _trust(ctx: Context) -> list[str]:
    # Under DeepSpeed a checkpoint is a folder that only unpickling reads; this run's own, so trusted.
    return [] if ctx.args.cpu else ["--trust-pickle"]


def phase_train(ctx: Context) -> dict[str, Any]:
    a = ctx.args
    timer = ctx.work / "train-steps.json"
    configs = _fit_configs(ctx, _overlay(ctx, a.steps, a.steps, timer), "train-overlay")
    _igr(ctx, "train", "fit", *configs)
    steps = json.loads(timer.read_text())
    ckpt = ctx.work / "run" / "checkpoints" / "last.ckpt"
    if not ckpt.exists():
        raise PhaseError(f"fit ended without {ckpt}")
    if steps["end_step"] != a.steps or len(steps["step_seconds"]) != a.steps:
        raise PhaseError(f"fit ran {len(steps['step_seconds'])} steps to global step {steps['end_step']}, "
                         f"not {a.steps}")
    return {**steps, **_timing(steps, WARMUP_STEPS), "checkpoint": str(ckpt), "checkpoint_is_folder": ckpt.is_dir(),
            "checkpoint_gb": _size(ckpt) / 1e9}


def phase_resume(ctx: Context) -> dict[str, Any]:
    a = ctx.args
    timer = ctx.work / "resume-steps.json"
    total = a.steps + a.resume_steps
    # No save at the end: one checkpoint folder is all the disk needs to hold (~26 GB for sd15 under ZeRO-2).
    overlay = _overlay(ctx, total, 10**9, timer)
    _igr(ctx, "resume", "fit", *_fit_configs(ctx, overlay, "resume-overlay"), "--ckpt_path", "last", *_trust(ctx))
    steps = json.loads(timer.read_text())
    if steps["start_step"] != a.steps or steps["end_step"] != total:
        raise PhaseError(f"resume started at global step {steps['start_step']} (expected {a.steps}) and ended at "
                         f"{steps['end_step']} (expected {total})")
    return {"start_step": steps["start_step"], "end_step": steps["end_step"], "losses": steps["losses"],
            "step_seconds": steps["step_seconds"], "losses_finite": _timing(steps, 0)["losses_finite"]}


def phase_export(ctx: Context) -> dict[str, Any]:
    out = ctx.work / "pipeline"
    _igr(ctx, "export", "export", ctx.results["train"]["checkpoint"], "--out", str(out), *_trust(ctx))
    return {"pipeline": str(out), "pipeline_gb": _size(out) / 1e9}


def phase_restore(ctx: Context) -> dict[str, Any]:
    from igr.bench import DEFAULT_VARIANTS, BenchOptions, run_benchmark

    a = ctx.args
    keep = ("igr", "plain")
    opts = BenchOptions(
        config=a.model, device="cpu" if a.cpu else "cuda", size=tuple(a.size),
        dtype="float32" if a.cpu else "bfloat16", repeats=a.bench_repeats,
        skip=tuple(v for v in DEFAULT_VARIANTS if v not in keep),
    )
    report = run_benchmark(opts, log=lambda msg: ctx.log("  " + msg))
    rows = report["variants"]
    igr, plain = rows["igr"], rows.get("plain", {})

    def gb(row):
        return row["peak_memory_bytes"] / 1e9 if row.get("peak_memory_bytes") is not None else None

    ratio = None
    if plain.get("seconds_per_image") and igr.get("seconds_per_image"):
        ratio = igr["seconds_per_image"] / plain["seconds_per_image"]
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {
        "steps": report["steps"], "guidance": report["guidance"], "dtype": report["dtype"], "size": report["size"],
        "seconds_per_image": igr.get("seconds_per_image"), "peak_memory_gb": gb(igr),
        "stages_seconds": igr.get("stages_seconds"),
        "plain_sd_seconds_per_image": plain.get("seconds_per_image"), "plain_sd_peak_memory_gb": gb(plain),
        "igr_over_plain": ratio,
    }


def phase_eval(ctx: Context) -> dict[str, Any]:
    a = ctx.args
    out = ctx.work / "eval"
    test = str(ctx.work / "shards" / "test.json")
    _igr(ctx, "eval", "eval", "--model", ctx.results["export"]["pipeline"], "--name", "smoke", "--shards", test,
         "--real", test, "-c", str(CONFIGS / "metrics" / "default.yaml"), "--limit", str(a.pairs),
         "--out", str(out), "--overwrite", "--devices", "1", "--dtype", a.dtype)
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    timings = out / "timings.json"
    seconds = sum(json.loads(timings.read_text()).values()) if timings.is_file() else None
    # Only SSIM is computed: the other metrics' backbones need `igr download-weights` (they say n/a, never random).
    return {"out": str(out), "pairs": a.pairs, "dtype": a.dtype, "paired": rows[0].get("paired"),
            "restore_seconds": seconds, "seconds_per_pair": seconds / a.pairs if seconds else None}


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


PHASES = [
    Phase("environment", phase_environment),
    Phase("shards", phase_shards),
    Phase("train", phase_train, needs=("shards",)),
    Phase("resume", phase_resume, needs=("train",)),
    Phase("export", phase_export, needs=("train",)),
    Phase("restore", phase_restore),
    Phase("eval", phase_eval, needs=("shards", "export")),
]


def summary(card: str, report: dict[str, Any]) -> str:
    p = report["phases"]
    train, restore = p.get("train", {}), p.get("restore", {})
    status = "ok" if report.get("ok") else f"FAILED at {report.get('failed_phase') or 'a skipped phase'}"
    return (
        f"{card}: {status}; train {fmt(train.get('seconds_per_step'))} s/step "
        f"({fmt(train.get('samples_per_second'), '.1f')} samples/s, peak {fmt(train.get('peak_memory_gb'), '.1f')} GB); "
        f"restore {fmt(restore.get('seconds_per_image'))} s/image (peak {fmt(restore.get('peak_memory_gb'), '.1f')} GB); "
        f"{fmt((report.get('total_seconds') or 0) / 60, '.1f')} min"
    )


def run(args: argparse.Namespace) -> int:
    from igr.bench import device_name
    from igr.errors import IGRError

    if not args.cpu:
        if not torch.cuda.is_available():
            raise IGRError("gpu-smoke needs a CUDA GPU and none is visible here (torch.cuda.is_available() is False)")
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise IGRError("gpu-smoke trains under DeepSpeed, which is not installed "
                           "(bash scripts/gpu-smoke.sh installs it from .whl/; make gpu-bundle makes .whl/)")
    card = device_name(torch.device("cpu" if args.cpu else "cuda"))
    out = Path(args.out)
    work = out / "work"
    if work.exists():
        shutil.rmtree(work)  # this command's own scratch folder: a stale checkpoint would be resumed
    work.mkdir(parents=True)
    path = card_file(out, "cpu" if args.cpu else card)
    report: dict[str, Any] = {
        "card": card,
        "command": "bash scripts/gpu-smoke.sh" + ("" if not args.cpu else " --cpu"),
        "mode": "cpu (tiny model, CPU trainer, fp32: checks the harness only)" if args.cpu else "gpu",
        "model": f"{Path(args.model).stem} architecture, random init (no weights read)",
        "settings": {"size": list(args.size), "batch": args.batch, "steps": args.steps,
                     "resume_steps": args.resume_steps, "pairs": args.pairs, "dtype": args.dtype},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "phases": {},
    }
    ctx = Context(args=args, work=work)
    ok = run_phases([p for p in PHASES if p.name in args.phases], ctx, report, path, cpu=args.cpu)
    print(summary(card, report) + f" -> {path}")
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
