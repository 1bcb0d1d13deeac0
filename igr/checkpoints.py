"""Training checkpoints that survive ``kill -9``: atomic writes, and a resume that picks the newest complete one.

Lightning's own save goes through fsspec, whose local "transaction" writes the whole file to the system temp
folder and then moves it — across filesystems that is a copy, so a kill leaves a partial target and an orphan
in /tmp. ``last.ckpt`` is also written after the step file, so a kill between the two leaves ``last.ckpt`` one
save behind; resuming from it re-runs those steps, and ModelCheckpoint's version counter then writes
``step000015-v1.ckpt`` next to the existing file. Here:

- :class:`AtomicCheckpointIO` writes each checkpoint beside its target and renames it into place
  (:mod:`igr.atomic`), so a checkpoint file is complete or absent;
- :func:`resume_checkpoint` resolves ``--ckpt_path last`` to the checkpoint with the highest global step among
  the files and DeepSpeed checkpoint folders that load complete (weights-only, tensors memory-mapped, so looking
  is cheap; :mod:`igr.ds_checkpoint`), reports the others, and removes the temporary files of interrupted saves;
- :func:`atomic_deepspeed_saves` does the same for DeepSpeed's checkpoint folders: all ranks write into one
  temporary folder that rank 0 renames into place once every rank is done;
- :func:`harden` turns the version counter off, so a step file is replaced, never duplicated.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint

from igr.atomic import TMP_SUFFIX, atomic_file, default_mode, temp_prefix
from igr.ds_checkpoint import LATEST, is_deepspeed_folder, model_states_file
from igr.errors import IGRError


def _is_local(path: Any) -> bool:
    protocol = get_filesystem(str(path)).protocol
    return "file" in (protocol if isinstance(protocol, tuple) else (protocol,))


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic and get umask permissions (remote URLs: Lightning's)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_file(os.path.abspath(os.fspath(path))) as f:
            torch.save(checkpoint, f)


def _replace_folder(tmp: Path, target: Path) -> None:
    """``tmp`` renamed to ``target``: the old folder is renamed aside first (a rename, not a long delete, is all
    that separates the two), then deleted."""
    old = None
    if target.exists():
        old = target.with_name(f"{temp_prefix(target)}old{TMP_SUFFIX}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_deepspeed_saves(strategy) -> None:
    """Make a ``DeepSpeedStrategy``'s saves atomic: every rank writes into one hidden temporary folder beside the
    target (``.last.ckpt.XXXX.tmp``), and once all have finished, rank 0 renames it into place. DeepSpeed itself
    overwrites a folder in place, so a kill mid-save mixed a new model state with old optimizer shards."""
    save = strategy.save_checkpoint

    def save_checkpoint(checkpoint: dict, filepath, storage_options: Any | None = None) -> None:
        filepath = strategy.broadcast(filepath)
        if storage_options is not None or not _is_local(filepath):
            return save(checkpoint, filepath, storage_options)
        target = Path(os.path.abspath(os.fspath(filepath)))
        tmp = None
        if strategy.is_global_zero:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=temp_prefix(target), suffix=TMP_SUFFIX, dir=target.parent)
            os.chmod(tmp, default_mode(is_dir=True))
        tmp = strategy.broadcast(tmp)
        save(checkpoint, tmp)  # every rank; DeepSpeed writes `latest` before all ranks are done
        strategy.barrier("igr_checkpoint_written")
        if strategy.is_global_zero:
            _replace_folder(Path(tmp), target)
        strategy.barrier("igr_checkpoint_renamed")

    strategy.save_checkpoint = save_checkpoint


def harden(trainer) -> None:
    """Atomic checkpoint writes (files, or DeepSpeed's folders) and no ``-v1`` duplicates."""
    from lightning.pytorch.strategies import DeepSpeedStrategy

    strategy = trainer.strategy
    if isinstance(strategy, DeepSpeedStrategy):  # saves folders through its engine, not checkpoint_io
        atomic_deepspeed_saves(strategy)
    elif type(strategy.checkpoint_io) is TorchCheckpointIO:  # custom plugins save their own way
        strategy.checkpoint_io = AtomicCheckpointIO()
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint):
            # Lightning's constructor argument `enable_version_counter`; a config cannot forget it this way.
            cb._enable_version_counter = False


def checkpoint_dirs(trainer) -> list[Path]:
    """Where the trainer's ModelCheckpoint callbacks write (the folder Lightning searches for ``last``)."""
    dirs = []
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint):
            # The same resolution (dirpath, else the logger's log_dir, else default_root_dir) that
            # ModelCheckpoint._find_last_checkpoints uses for ckpt_path="last".
            path = cb.dirpath or cb._ModelCheckpoint__resolve_ckpt_dir(trainer)
            if _is_local(path):
                dirs.append(Path(path))
    return dirs


def remove_interrupted_saves(folder: Path) -> list[Path]:
    """Temporary files (and folders) of saves that a kill interrupted (``.NAME.ckpt.XXXX.tmp``), removed."""
    found = sorted(folder.glob(".*.ckpt.*" + TMP_SUFFIX))
    for p in found:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return found


def _mtime(path: Path) -> float:
    return (model_states_file(path) if path.is_dir() else path).stat().st_mtime


def scan_checkpoints(folder: Path, trust_pickle: bool = False) -> tuple[list[tuple[int, float, Path]], list[str]]:
    """(global step, mtime, path) of each complete checkpoint in ``folder`` — files and DeepSpeed checkpoint
    folders alike — and one line for each ``*.ckpt`` that is not (interrupted, unreadable, not Lightning's).
    Each is read weights-only with its tensors memory-mapped, so looking is cheap."""
    from igr.export import read_checkpoint

    complete: list[tuple[int, float, Path]] = []
    broken: list[str] = []
    for path in sorted(folder.glob("*.ckpt")):
        if path.name.startswith("."):
            continue
        if path.is_dir() and not is_deepspeed_folder(path):
            broken.append(f"{path}: a folder but not a DeepSpeed checkpoint (no '{LATEST}' file, no model states)")
            continue
        try:
            step = read_checkpoint(path, trust_pickle=trust_pickle, mmap=True).get("global_step")
        except IGRError as exc:
            broken.append(str(exc))
            continue
        if not isinstance(step, int):
            broken.append(f"{path}: no global_step (not a Lightning training checkpoint)")
            continue
        complete.append((step, _mtime(path), path))
    return complete, broken


def resume_checkpoint(trainer, ckpt_path: Any, trust_pickle: bool = False) -> Any:
    """``ckpt_path`` made safe to resume from: "last" → the newest complete checkpoint, file or DeepSpeed folder
    (or None: start fresh); a given file or folder → checked to load, with a one-line error if it does not."""
    from igr.export import read_checkpoint

    if ckpt_path is None or ckpt_path in ("best", "hpc") or (ckpt_path != "last" and not _is_local(ckpt_path)):
        return ckpt_path
    if ckpt_path != "last":
        path = Path(ckpt_path)
        if not path.exists():
            raise IGRError(f"{ckpt_path}: ckpt_path not found")
        data = read_checkpoint(path, trust_pickle=trust_pickle, mmap=True)  # a folder: checked complete
        weights = "module" if path.is_dir() else "state_dict"  # DeepSpeed keeps the weights under its own key
        if weights not in data or not isinstance(data.get("global_step"), int):
            raise IGRError(f"{ckpt_path}: not a Lightning training checkpoint (no {weights} / global_step)")
        _check_strategy_reads(trainer, path)
        return ckpt_path
    best: tuple[int, float, Path] | None = None
    broken: list[str] = []
    for folder in checkpoint_dirs(trainer):
        if not folder.is_dir():
            continue
        for tmp in remove_interrupted_saves(folder):
            print(f"removed {tmp} (an interrupted checkpoint save)", file=sys.stderr)
        complete, bad = scan_checkpoints(folder, trust_pickle)
        broken += bad
        for key in complete:
            if best is None or key[:2] > best[:2]:
                best = key
    for line in broken:
        print(f"warning: not resuming from {line}", file=sys.stderr)
    if best is None:
        if broken:
            raise IGRError(f"ckpt_path=last: no complete checkpoint to resume from (first: {broken[0]})")
        return None  # as Lightning: "last" before the first run starts fresh
    _check_strategy_reads(trainer, best[2])
    print(f"resuming from {best[2]} (step {best[0]}, the newest complete checkpoint)", file=sys.stderr)
    return str(best[2])


def _check_strategy_reads(trainer, path: Path) -> None:
    """Only DeepSpeed's engine loads a DeepSpeed folder (with its optimizer shards); any other strategy would
    fail on it with "Is a directory" after setting everything up."""
    if path.is_dir() and not hasattr(trainer.strategy, "deepspeed_engine"):
        raise IGRError(
            f"{path}: a DeepSpeed checkpoint folder, which only the DeepSpeed strategy resumes from; resume with "
            "the DeepSpeed trainer config, or start a new run from its weights with --model.init_from"
        )
