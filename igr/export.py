"""Pipeline folders: what ``igr export`` writes and what the restoration pipeline loads.

A pipeline folder is self-contained and holds no pickles:

    model.yaml               ModelConfig with architecture dicts filled in and weight paths cleared,
                             plus the diffusion and sampling settings
    garmnet.safetensors      trainable: GarmNet
    denoiser.safetensors     trainable: GarmDenoiser with the IP-Adapter layers (ImageProjection, K/V-ip)
    vae.safetensors          frozen parts, copied so the folder needs nothing else
    image_encoder.safetensors
    prompts.safetensors      cached category-prompt embeddings (no text encoder needed at inference)

Writes go to a temporary folder renamed into place, so an interrupted export leaves nothing half-written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from igr.atomic import atomic_directory, check_overwrite
from igr.checkpoint_io import (  # noqa: F401 - re-exported: callers import the readers from here
    TRUST_FLAG,
    deepspeed_trust_error,
    load_checkpoint_state,
    pickles_trusted,
    read_checkpoint,
    read_pipeline_config,
    trusting_pickles,
)
from igr.config import DiffusionConfig, ModelConfig, SamplingConfig, model_config_from_dict
from igr.ds_checkpoint import frozen_parameter_names
from igr.errors import IGRError, WeightsError
from igr.models import IGRModel, build_model
from igr.models.unet import base_unet_config
from igr.models.vae import effective_config
from igr.weights_io import check_shapes, load_into, read_state_dict

PARTS = ("garmnet", "denoiser", "vae", "image_encoder", "prompts")
PIPELINE_KIND = "pipeline"  # the kind in a pipeline folder's .igr-output marker: what `--overwrite` may replace


def architecture_config(model: IGRModel) -> ModelConfig:
    """The model's config with architectures read off the built modules and weight paths cleared, so it
    rebuilds the same shapes with no files but the pipeline folder's."""
    unet = base_unet_config(model.denoiser.unet)
    text = dict(model.config.text_encoder) or {"hidden_size": int(model.prompts.embeddings.shape[-1])}
    return dataclasses.replace(
        model.config,
        sd_path=None,
        vae_path=None,
        ip_adapter_path=None,
        image_encoder_path=None,
        tokenizer="open_clip",
        unet=unet,
        vae=effective_config(model.vae.vae),
        text_encoder=text,
    )


def _to_yaml_data(obj: Any) -> Any:
    data = dataclasses.asdict(obj)
    # resolve=False: a value that reads ${oc.env:...} (from a downloaded folder's model.yaml) stays that text and
    # never becomes the environment's value in the folder we write
    return OmegaConf.to_container(OmegaConf.create(data), resolve=False)


def export_pipeline(
    model: IGRModel,
    out: str | Path,
    sampling: SamplingConfig | None = None,
    overwrite: bool = False,
    card: dict | None = None,
    inputs: Sequence[str | Path] = (),
) -> Path:
    """Write ``model`` as a pipeline folder ``out``. With ``overwrite``, only an earlier pipeline folder is replaced,
    never one holding ``inputs`` (the checkpoint exported) or the model's weight paths (:func:`igr.atomic.check_overwrite`)."""
    out = Path(out)
    cfg = model.config
    sources = [*inputs, *(p for p in (cfg.sd_path, cfg.vae_path, cfg.ip_adapter_path, cfg.image_encoder_path) if p)]
    with atomic_directory(out, overwrite, kind=PIPELINE_KIND, inputs=sources) as tmp:
        from igr.model_card import write_model_card  # README.md: what the model is, its licences

        write_model_card(tmp, model, sampling, **(card or {}))
        doc = {
            "model": _to_yaml_data(architecture_config(model)),
            "diffusion": _to_yaml_data(model.diffusion),
            "sampling": _to_yaml_data(sampling or SamplingConfig()),
        }
        OmegaConf.save(OmegaConf.create(doc), tmp / "model.yaml")
        for name in PARTS:
            module = getattr(model, name)
            if module is None:
                continue
            state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
            save_file(state, str(tmp / f"{name}.safetensors"))
    return out


def load_pipeline(folder: str | Path, dtype: torch.dtype | None = None) -> tuple[IGRModel, SamplingConfig]:
    """Rebuild the model from a pipeline folder: built on the meta device from its config (no memory, no random
    init of 1.7 B parameters), then each file's weights assigned, checked key by key and shape by shape (cast to
    ``dtype`` while loading, when given)."""
    from accelerate import init_empty_weights

    folder = Path(folder)
    if not folder.is_dir():
        raise IGRError(f"{folder}: model folder not found")
    cfg_path = folder / "model.yaml"
    if not cfg_path.is_file():
        raise IGRError(f"{folder}: not a pipeline folder (no model.yaml; create one with `igr export`)")
    doc = read_pipeline_config(folder)
    try:
        model_cfg = model_config_from_dict(doc["model"], where=str(cfg_path))
        diffusion = DiffusionConfig(**doc.get("diffusion", {}))
        sampling = SamplingConfig(**doc.get("sampling", {}))
    except (KeyError, TypeError) as exc:
        raise IGRError(f"{cfg_path}: malformed pipeline config ({exc.__class__.__name__}: {exc})") from exc
    # Parameters on meta; buffers stay real: some are computed, not stored.
    with init_empty_weights(include_buffers=False):
        model = build_model(model_cfg, diffusion, encode_prompts=False)
    for name in PARTS:
        module = getattr(model, name)
        if module is None:
            continue
        path = folder / f"{name}.safetensors"
        if not path.is_file():
            raise WeightsError(f"{path}: missing (the pipeline folder is incomplete)")
        state = read_state_dict(path)
        expected = module.state_dict()
        check_shapes(state, {k: v.shape for k, v in expected.items()}, path)
        unexpected = [k for k in state if k not in expected]
        if unexpected:
            raise WeightsError(f"{path}: {len(unexpected)} unexpected key(s), e.g. {', '.join(unexpected[:3])}")
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        module.load_state_dict(state, strict=True, assign=True)
    left = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if left:  # a parameter no file holds: the folder does not describe this architecture
        raise WeightsError(f"{folder}: {len(left)} parameter(s) have no weights, e.g. {left[0]}")
    return model.eval(), sampling


def export_checkpoint(
    ckpt: str | Path,
    out: str | Path,
    ema: bool = False,
    overwrite: bool = False,
    trust_pickle: bool | None = None,
) -> Path:
    """Pipeline folder from a training checkpoint: the config in its hyper-parameters, every weight from its
    state dict (frozen parts included), so no weight path of the training run needs to exist."""
    out = Path(out)
    check_overwrite(out, overwrite, PIPELINE_KIND, [ckpt])  # before the (long) load; again when writing
    state, hparams = load_checkpoint_state(ckpt, trust_pickle)
    cfg = hparams.get("model")
    if isinstance(cfg, dict):
        cfg = model_config_from_dict(cfg, where=f"{ckpt} hyper-parameters")
    if not isinstance(cfg, ModelConfig):
        raise IGRError(f"{ckpt}: checkpoint has no model config in its hyper-parameters")
    diffusion, sampling = hparams.get("diffusion"), hparams.get("sampling")
    diffusion = DiffusionConfig(**diffusion) if isinstance(diffusion, dict) else diffusion
    sampling = SamplingConfig(**sampling) if isinstance(sampling, dict) else sampling
    if not cfg.unet or not cfg.vae:
        raise IGRError(f"{ckpt}: model config lacks the unet/vae architecture dicts needed to rebuild it")
    arch = dataclasses.replace(
        cfg, sd_path=None, vae_path=None, ip_adapter_path=None, image_encoder_path=None
    )
    if not arch.text_encoder:
        arch = dataclasses.replace(
            arch, text_encoder={"hidden_size": int(state["model.prompts.embeddings"].shape[-1])}
        )
    model = build_model(arch, diffusion, encode_prompts=False)
    if ema and "ema_state" not in state:
        raise IGRError(f"{ckpt}: no EMA weights in this checkpoint (train with the EMA callback)")
    prefix = "model."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix) and k != "ema_state"}
    if ema:
        weights.update({k[len(prefix) :]: v for k, v in state["ema_state"].items()})
    load_into(model, weights, ckpt)
    if Path(ckpt).is_dir():  # a DeepSpeed folder: its frozen parameters came back bf16-rounded
        frozen = frozen_parameter_names(read_checkpoint(ckpt, trust_pickle=True, mmap=True))  # trusted to convert
        restore_frozen_from_sources(model, cfg, diffusion, hparams.get("init_from"), frozen, ckpt)
    return export_pipeline(model.eval(), out, sampling=sampling, overwrite=overwrite, inputs=[ckpt])


# Where each part's frozen weights came from when the run started (IGRSystem: build_model, then init_from into the
# trainable parts). The prompt embeddings are computed from sd_path's text encoder.
def _sources(cfg: ModelConfig, init_from: str | None) -> dict[str, list[str | None]]:
    return {
        "vae": [cfg.vae_path or cfg.sd_path],
        "image_encoder": [cfg.image_encoder_path],
        "prompts": [cfg.sd_path],
        "garmnet": [cfg.sd_path, init_from],
        "denoiser": [cfg.sd_path, cfg.ip_adapter_path, init_from],
    }


def restore_frozen_from_sources(
    model: IGRModel, cfg: ModelConfig, diffusion, init_from: str | None, frozen: list[str], ckpt
) -> None:
    """Replace the frozen parameters (and the frozen parts' buffers) that ``zero_to_fp32`` rebuilt from the module's
    bf16 copies with the weights they were trained from: the model rebuilt from the config's weight files (and
    ``init_from``), in fp32. Trainable weights come from the fp32 master copy and stay. A part whose source is
    random init or a file that is gone keeps the bf16 copy, and the export says so."""
    import sys

    prefix = "model."
    keys = {k[len(prefix) :] for k in frozen if k.startswith(prefix)}
    for name in ("vae", "image_encoder", "prompts"):  # frozen modules: their persistent buffers too
        module = getattr(model, name)
        if module is not None:
            persistent = module.state_dict()
            keys |= {f"{name}.{k}" for k, _ in module.named_buffers() if k in persistent}
    parts = sorted({k.split(".", 1)[0] for k in keys})
    sources = _sources(cfg, init_from)
    missing = {n: [p for p in sources.get(n, [None]) if p and not Path(p).exists()] for n in parts}
    usable = [n for n in parts if not missing[n] and any(sources.get(n, [None]))]
    for n in parts:
        if n not in usable:
            why = f"its source {missing[n][0]} is gone" if missing[n] else "it was random init (no weight file)"
            print(f"warning: {ckpt}: frozen {n} exported from the checkpoint's bf16 copy ({why})", file=sys.stderr)
    if not usable:
        return
    source = build_model(cfg, diffusion)  # fp32, every configured weight file loaded as training started
    if init_from and any(n in ("garmnet", "denoiser") for n in usable):
        from igr.init_weights import load_trainable_weights

        load_trainable_weights(source, init_from)
    theirs = source.state_dict()
    ours = {k: v for k, v in model.state_dict().items()}
    with torch.no_grad():
        for k in sorted(keys):
            if k.split(".", 1)[0] in usable and k in ours:
                ours[k].copy_(theirs[k])
