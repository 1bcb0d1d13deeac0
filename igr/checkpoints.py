"""Training checkpoints that survive ``kill -9``: atomic writes, and a resume that picks the newest complete one.

Lightning's own save goes through fsspec, whose local "transaction" writes the whole file to the system temp
folder and then moves it — across filesystems that is a copy, so a kill leaves a partial target and an orphan
in /tmp. ``last.ckpt`` is also written after the step file, so a kill between the two leaves ``last.ckpt`` one
save behind; resuming from it re-runs those steps, and ModelCheckpoint's version counter then writes
``step000015-v1.ckpt`` next to the existing file. Here:

- :class:`AtomicCheckpointIO` writes each checkpoint beside its target and renames it into place
  (:mod:`igr.atomic`), so a checkpoint file is complete or absent;
- :func:`resume_checkpoint` resolves ``--ckpt_path last`` to the checkpoint with the highest global step among
  the files that load (weights-only, tensors memory-mapped, so looking is cheap), and removes the temporary
  files of interrupted saves;
- :func:`harden` turns the version counter off, so a step file is replaced, never duplicated.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint

from igr.atomic import TMP_SUFFIX, atomic_file
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


def harden(trainer) -> None:
    """Atomic checkpoint writes and no ``-v1`` duplicates for a plain (non-DeepSpeed) trainer."""
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:  # DeepSpeed and custom plugins save their own way
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
    """Temporary files of saves that a kill interrupted (``.NAME.ckpt.XXXX.tmp``)."""
    found = [p for p in folder.glob(".*.ckpt.*" + TMP_SUFFIX) if p.is_file()]
    for p in found:
        p.unlink(missing_ok=True)
    return found


def resume_checkpoint(trainer, ckpt_path: Any, trust_pickle: bool = False) -> Any:
    """``ckpt_path`` made safe to resume from: "last" → the newest complete checkpoint (or None: start fresh);
    a file → checked to load, with a one-line error if it does not."""
    from igr.export import read_checkpoint

    if ckpt_path is None or ckpt_path in ("best", "hpc") or (ckpt_path != "last" and not _is_local(ckpt_path)):
        return ckpt_path
    if ckpt_path != "last":
        if not Path(ckpt_path).is_file():
            raise IGRError(f"{ckpt_path}: ckpt_path not found")
        data = read_checkpoint(ckpt_path, trust_pickle=trust_pickle, mmap=True)
        if "state_dict" not in data or "global_step" not in data:
            raise IGRError(f"{ckpt_path}: not a Lightning training checkpoint (no state_dict / global_step)")
        return ckpt_path
    best: tuple[int, float, Path] | None = None
    broken: list[str] = []
    for folder in checkpoint_dirs(trainer):
        if not folder.is_dir():
            continue
        for tmp in remove_interrupted_saves(folder):
            print(f"removed {tmp} (an interrupted checkpoint save)", file=sys.stderr)
        for path in sorted(folder.glob("*.ckpt")):
            if path.name.startswith(".") or not path.is_file():
                continue
            try:  # weights-only, tensors memory-mapped: a cheap look at global_step
                step = read_checkpoint(path, trust_pickle=trust_pickle, mmap=True).get("global_step")
            except IGRError as exc:
                broken.append(str(exc))
                continue
            if not isinstance(step, int):
                broken.append(f"{path}: no global_step (not a Lightning training checkpoint)")
                continue
            key = (step, path.stat().st_mtime, path)
            if best is None or key[:2] > best[:2]:
                best = key
    for line in broken:
        print(f"warning: not resuming from {line}", file=sys.stderr)
    if best is None:
        if broken:
            raise IGRError(f"ckpt_path=last: no complete checkpoint to resume from (first: {broken[0]})")
        return None  # as Lightning: "last" before the first run starts fresh
    print(f"resuming from {best[2]} (step {best[0]}, the newest complete checkpoint)", file=sys.stderr)
    return str(best[2])
