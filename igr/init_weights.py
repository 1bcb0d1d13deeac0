"""Starting a model's trainable parts (GarmNet, GarmDenoiser + adapter) from trained weights.

Used by ``model.init_from`` (the HQFT fine-tune starts from the coarse run, paper §3.3) and by
``IGRPipeline.from_config(weights=...)``. No Lightning import here, so the restoration pipeline can use it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from igr.checkpoint_io import load_checkpoint_state, read_pipeline_config
from igr.config import DiffusionConfig
from igr.errors import IGRError, WeightsError
from igr.models.model import IGRModel
from igr.weights_io import load_into, read_state_dict

TRAINABLE = ("garmnet", "denoiser")


def load_trainable_weights(model: IGRModel, source: str | Path) -> None:
    """Copy GarmNet/denoiser(+adapter) weights from a Lightning checkpoint or a pipeline folder into ``model``.
    Every key and shape is checked (:func:`load_into`); weights of another parameterisation are refused."""
    path = Path(source)
    if path.is_dir() and (path / "model_index.json").is_file():  # the diffusers layout (igr export)
        # Read here, not through igr.export (which imports this module to export DeepSpeed folders): only the two
        # trainable parts' files and the index's diffusion config, no VAE or image encoder built.
        from diffusers import DiffusionPipeline

        from igr.components import load_error

        try:  # diffusers' reader, so a broken index gets the same one line here as in `igr restore`
            doc = DiffusionPipeline.load_config(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise load_error(exc, path) from exc
        check_parameterisation(model, doc.get("diffusion_config") if isinstance(doc, dict) else None, path)
        for name in TRAINABLE:
            module = getattr(model, name)
            if module is not None:
                state, where = _read_part(path / name)
                load_into(module, state, where)
        return
    if path.is_dir() and (path / "model.yaml").is_file():
        doc = read_pipeline_config(path)  # broken YAML: one line naming the file
        check_parameterisation(model, doc.get("diffusion"), path)
        for name in TRAINABLE:
            module = getattr(model, name)
            if module is not None:
                load_into(module, read_state_dict(path / f"{name}.safetensors"), path / f"{name}.safetensors")
        return
    if not path.exists():
        raise IGRError(f"{path}: init_from checkpoint not found")
    state, hparams = load_checkpoint_state(path)
    check_parameterisation(model, hparams.get("diffusion"), path)
    for name in TRAINABLE:
        module = getattr(model, name)
        if module is None:
            continue
        prefix = f"model.{name}."
        part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        load_into(module, part, f"{path} [{name}]")


def _read_part(folder: Path) -> tuple[dict, Path]:
    """A diffusers part folder's weights (one file, or shards listed in its index) and the path to name in errors."""
    single = folder / "diffusion_pytorch_model.safetensors"
    if single.is_file():
        return read_state_dict(single), single
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise WeightsError(f"{index}: not a readable shard index ({exc.__class__.__name__}: {exc})") from None
        state: dict = {}
        for shard in shards:
            state.update(read_state_dict(folder / shard))
        return state, folder
    raise WeightsError(f"{single}: missing (the pipeline folder has no weights for {folder.name})")


def check_parameterisation(model: IGRModel, source: dict | None, path) -> None:
    """Weights trained for one output parameterisation (ε, v, z_0; schedule) are wrong for another: refuse."""
    if not source:
        return
    ours, default = dataclasses.asdict(model.diffusion), dataclasses.asdict(DiffusionConfig())
    for key in ("prediction_type", "zero_terminal_snr"):
        theirs = source.get(key, default[key])  # older checkpoints predate the option: SD1.5's ε
        if theirs != ours[key]:
            raise IGRError(
                f"{path}: init_from weights were trained with diffusion.{key}={theirs}, this run has "
                f"{ours[key]}; set model.diffusion.{key} to match"
            )
