"""DeepSpeed checkpoint folders, read without DeepSpeed: Lightning's ``DeepSpeedStrategy`` saves every checkpoint
(``step000100.ckpt``, ``last.ckpt``) as a folder in DeepSpeed's layout (deepspeed 0.19, ``engine.save_checkpoint``
with Lightning's fixed tag ``checkpoint``):

    last.ckpt/latest                                   the tag, written by rank 0 after its own files
    last.ckpt/checkpoint/mp_rank_00_model_states.pt    the module (bf16 under bf16 training), DeepSpeed's keys
                                                       (param_shapes, frozen_param_shapes, dp_world_size, ...)
                                                       and Lightning's client state (global_step, epoch, loops,
                                                       callbacks, hyper_parameters, noise_rng, ema_state)
    last.ckpt/checkpoint/bf16_zero_pp_rank_R_mp_rank_00_optim_states.pt   one per data-parallel rank R: its
                                                       fp32 master weights and Adam moments

DeepSpeed overwrites the folder in place (the tag never changes) and writes ``latest`` before the other ranks
necessarily finish, so neither ``latest`` nor the tag folder proves a save complete. ``igr fit`` makes the saves
atomic (:func:`igr.checkpoints.atomic_deepspeed_saves`); for folders written otherwise, a torch file is a zip whose
directory is written last: each expected file must exist and end in a complete zip directory, which a save cut
off mid-file does not (:func:`check_complete`). Reading the model-states file memory-mapped and weights-only is as
cheap as looking at a ``.ckpt`` file's global step.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from igr.errors import IGRError

LATEST = "latest"
MODEL_STATES = ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt")  # ZeRO ≤ 2, ZeRO-3


def is_deepspeed_folder(path: str | Path) -> bool:
    """A folder that DeepSpeed wrote, completely or not (a ``latest`` file, or a tag folder of model states)."""
    path = Path(path)
    if not path.is_dir():
        return False
    return (path / LATEST).is_file() or any(
        (tag / name).is_file() for tag in path.iterdir() if tag.is_dir() for name in MODEL_STATES
    )


def model_states_file(folder: str | Path) -> Path:
    """The model-states file of the tag named in ``latest``; one line naming what is missing otherwise."""
    folder = Path(folder)
    latest = folder / LATEST
    if not latest.is_file():
        raise IGRError(f"{folder}: incomplete DeepSpeed checkpoint (no '{LATEST}' file: its save did not finish)")
    tag = latest.read_text(encoding="utf-8", errors="replace").strip()
    if not tag or not (folder / tag).is_dir():
        raise IGRError(f"{folder}: incomplete DeepSpeed checkpoint ('{LATEST}' names tag {tag!r}, no such folder)")
    for name in MODEL_STATES:
        if (folder / tag / name).is_file():
            return folder / tag / name
    raise IGRError(f"{folder / tag}: incomplete DeepSpeed checkpoint (no {MODEL_STATES[0]})")


def _complete_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:  # reads the directory at the end of the file: absent if cut off
            return bool(z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def check_complete(states_file: Path, states: dict) -> None:
    """Every file the save wrote (model states of each model-parallel rank, ZeRO optimizer shards of each
    data-parallel rank, as ``states`` counts them) exists and is a complete torch file."""
    tag_dir = states_file.parent
    dp, mp = int(states.get("dp_world_size") or 1), int(states.get("mp_world_size") or 1)
    expected = [tag_dir / f"mp_rank_{m:02d}_model_states.pt" for m in range(mp)]
    if states_file.name != MODEL_STATES[0]:  # ZeRO-3: model states are sharded per data-parallel rank too
        expected = [tag_dir / f"zero_pp_rank_{r}_mp_rank_{m:02d}_model_states.pt" for m in range(mp) for r in range(dp)]
    zero = states.get("optimizer") is None and states.get("param_shapes") is not None  # ZeRO saved its shards
    if zero:
        # "bf16_" under bf16 training, "" otherwise: the prefix of the shards that are there
        prefix = next((p.name.split("zero_pp_rank_")[0] for p in tag_dir.glob("*zero_pp_rank_*_optim_states.pt")), "")
        expected += [
            tag_dir / f"{prefix}zero_pp_rank_{r}_mp_rank_{m:02d}_optim_states.pt" for m in range(mp) for r in range(dp)
        ]
    for path in expected:
        if not path.is_file():
            raise IGRError(f"{path}: missing, the DeepSpeed checkpoint is incomplete (an interrupted save)")
        if not _complete_zip(path):
            raise IGRError(f"{path}: truncated, the DeepSpeed checkpoint is incomplete (an interrupted save)")


def frozen_parameter_names(states: dict) -> list[str]:
    """Parameters the optimizer does not own (frozen ones). ``zero_to_fp32`` rebuilds them from the module's
    copies (``frozen_param_fragments``), which bf16 training has rounded to bf16."""
    return list(states.get("frozen_param_shapes") or {})
