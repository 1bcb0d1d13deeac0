"""Reading what training and ``igr export`` wrote: checkpoint files and DeepSpeed folders (weights-only unless the
user trusts them), and a pipeline folder's ``model.yaml``. Kept apart from :mod:`igr.export` so that modules the
export itself needs (:mod:`igr.init_weights`) can read checkpoints without importing it."""

from __future__ import annotations

import pickle
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import torch
from omegaconf import OmegaConf

from igr.config import yaml_error_line
from igr.ds_checkpoint import check_complete, is_deepspeed_folder, model_states_file
from igr.errors import IGRError


def read_pipeline_config(folder: str | Path) -> dict:
    """A pipeline folder's ``model.yaml`` as a dict; broken YAML is one line naming the file. Read literally: the
    folder may come from the Hub, and interpolation (``${oc.env:HF_TOKEN}``) would copy the environment into what
    is saved from it."""
    cfg_path = Path(folder) / "model.yaml"
    try:
        doc = OmegaConf.to_container(OmegaConf.load(cfg_path), resolve=False)
    except Exception as exc:  # yaml's scanner/parser errors, omegaconf's interpolation errors
        raise IGRError(f"{cfg_path}: not a readable YAML file ({yaml_error_line(exc)})") from None
    if not isinstance(doc, dict):
        raise IGRError(f"{cfg_path}: expected a mapping at the top level")
    return doc



# `--trust-pickle` for code that reaches a checkpoint through layers that do not pass flags down
# (LightningCLI building IGRSystem(init_from=...)): set for the duration of one command.
_TRUST_PICKLE: ContextVar[bool] = ContextVar("igr_trust_pickle", default=False)
TRUST_FLAG = "--trust-pickle"


@contextmanager
def trusting_pickles(trust: bool = True) -> Iterator[None]:
    """Within this block, checkpoints may be unpickled (the user passed ``--trust-pickle``)."""
    token = _TRUST_PICKLE.set(trust)
    try:
        yield
    finally:
        _TRUST_PICKLE.reset(token)


def pickles_trusted() -> bool:
    """Whether this command runs inside :func:`trusting_pickles` (the user passed ``--trust-pickle``)."""
    return _TRUST_PICKLE.get()


def read_checkpoint(ckpt: str | Path, trust_pickle: bool | None = None, mmap: bool = False) -> dict:
    """The one ``torch.load`` of a training checkpoint: weights-only, so unpickling cannot run code from the file.

    Our own checkpoints hold tensors, numbers, strings and plain containers only (hyper-parameters are plain
    dicts, callback states likewise) and load this way. A file that needs Python objects is refused with one
    line naming ``--trust-pickle``; with it (``trust_pickle=True`` or :func:`trusting_pickles`) it is unpickled.
    ``mmap`` maps tensors instead of reading them, for a cheap look at a checkpoint's metadata.

    A DeepSpeed checkpoint folder (:mod:`igr.ds_checkpoint`) is read through its model-states file, after checking
    that its save completed: DeepSpeed's keys (``module`` in bf16, ``frozen_param_shapes``, ...) beside
    Lightning's client state (``global_step``, ``hyper_parameters``, ``callbacks``, ...), but no ``state_dict``.
    """
    ckpt = Path(ckpt)
    trust = _TRUST_PICKLE.get() if trust_pickle is None else trust_pickle
    if ckpt.is_dir() and is_deepspeed_folder(ckpt):
        states_file = model_states_file(ckpt)
        data = read_checkpoint(states_file, trust, mmap)
        check_complete(states_file, data)
        return data
    if not ckpt.is_file():
        raise IGRError(f"{ckpt}: checkpoint not found" + (" (a folder, not a DeepSpeed checkpoint)" if ckpt.is_dir() else ""))
    try:
        data = torch.load(ckpt, map_location="cpu", weights_only=not trust, mmap=mmap)
    except pickle.UnpicklingError as exc:
        if trust:
            raise IGRError(f"{ckpt}: cannot read checkpoint ({_first_line(exc)})") from exc
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f"a Python object ({found.group(1)})" if found else "Python objects"
        raise IGRError(
            f"{ckpt}: refused: the checkpoint holds {what} that only unpickling can rebuild, and unpickling "
            f"runs code from the file; if you trust its source, pass {TRUST_FLAG}"
        ) from None
    except PermissionError as exc:
        raise IGRError(f"{ckpt}: checkpoint cannot be read (permission denied)") from exc
    except Exception as exc:  # truncated (an interrupted copy), not a torch file, ...
        raise IGRError(
            f"{ckpt}: cannot read checkpoint, incomplete or not a torch file ({_first_line(exc)})"
        ) from exc
    if not isinstance(data, dict):
        raise IGRError(f"{ckpt}: not a Lightning checkpoint (holds a {type(data).__name__}, not a dict)")
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0][:200]}" if text else exc.__class__.__name__


def deepspeed_trust_error(ckpt) -> IGRError:
    return IGRError(
        f"{ckpt}: a DeepSpeed checkpoint folder is read by unpickling its files (DeepSpeed's converter "
        f"cannot load weights-only), which runs code from them; if you trust its source, pass {TRUST_FLAG}"
    )


def load_checkpoint_state(
    ckpt: str | Path, trust_pickle: bool | None = None
) -> tuple[dict[str, torch.Tensor], dict]:
    """State dict and hyper-parameters from a Lightning checkpoint file (or a DeepSpeed checkpoint folder)."""
    ckpt = Path(ckpt)
    trust = _TRUST_PICKLE.get() if trust_pickle is None else trust_pickle
    if ckpt.is_dir():  # DeepSpeed writes a folder of shards; consolidate it first
        if not trust:
            raise deepspeed_trust_error(ckpt)
        try:
            from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict
        except ImportError as exc:  # pragma: no cover
            raise IGRError(
                f"{ckpt}: a DeepSpeed checkpoint folder needs `pip install -e .[deepspeed]`"
            ) from exc
        with tempfile.TemporaryDirectory() as tmp:
            convert_zero_checkpoint_to_fp32_state_dict(str(ckpt), f"{tmp}/consolidated.ckpt")
            return load_checkpoint_state(f"{tmp}/consolidated.ckpt", trust_pickle=True)
    data = read_checkpoint(ckpt, trust)
    if "state_dict" not in data:
        raise IGRError(f"{ckpt}: not a Lightning checkpoint (no state_dict)")
    state = dict(data["state_dict"])
    if "ema_state" in data:
        state["ema_state"] = data["ema_state"]
    return state, data.get("hyper_parameters", {})
