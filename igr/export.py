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
import tempfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from igr.atomic import atomic_directory
from igr.config import DiffusionConfig, ModelConfig, SamplingConfig, model_config_from_dict
from igr.errors import IGRError, WeightsError
from igr.models import IGRModel, build_model
from igr.models.weights import load_into, read_state_dict

PARTS = ("garmnet", "denoiser", "vae", "image_encoder", "prompts")


def _public_config(cfg: dict) -> dict:
    return {k: v for k, v in dict(cfg).items() if not k.startswith("_")}


def architecture_config(model: IGRModel) -> ModelConfig:
    """The model's config with architectures read off the built modules and weight paths cleared, so it
    rebuilds the same shapes with no files but the pipeline folder's."""
    unet = _public_config(model.denoiser.unet.config)
    # the denoiser's input is the latent (as many channels as it predicts); the adapter is re-installed
    unet.update(in_channels=unet["out_channels"], encoder_hid_dim=None, encoder_hid_dim_type=None)
    text = dict(model.config.text_encoder) or {"hidden_size": int(model.prompts.embeddings.shape[-1])}
    return dataclasses.replace(
        model.config,
        sd_path=None,
        vae_path=None,
        ip_adapter_path=None,
        image_encoder_path=None,
        tokenizer="open_clip",
        unet=unet,
        vae=_public_config(model.vae.vae.config),
        text_encoder=text,
    )


def _to_yaml_data(obj: Any) -> Any:
    data = dataclasses.asdict(obj)
    return OmegaConf.to_container(OmegaConf.create(data), resolve=True)


def export_pipeline(
    model: IGRModel,
    out: str | Path,
    sampling: SamplingConfig | None = None,
    overwrite: bool = False,
) -> Path:
    out = Path(out)
    with atomic_directory(out, overwrite) as tmp:
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


def load_pipeline(folder: str | Path) -> tuple[IGRModel, SamplingConfig]:
    """Rebuild the model from a pipeline folder; every file is checked key by key and shape by shape."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IGRError(f"{folder}: model folder not found")
    cfg_path = folder / "model.yaml"
    if not cfg_path.is_file():
        raise IGRError(f"{folder}: not a pipeline folder (no model.yaml; create one with `igr export`)")
    doc = OmegaConf.to_container(OmegaConf.load(cfg_path), resolve=True)
    try:
        model_cfg = model_config_from_dict(doc["model"], where=str(cfg_path))
        diffusion = DiffusionConfig(**doc.get("diffusion", {}))
        sampling = SamplingConfig(**doc.get("sampling", {}))
    except (KeyError, TypeError) as exc:
        raise IGRError(f"{cfg_path}: malformed pipeline config ({exc})") from exc
    model = build_model(model_cfg, diffusion, encode_prompts=False)
    for name in PARTS:
        module = getattr(model, name)
        if module is None:
            continue
        path = folder / f"{name}.safetensors"
        if not path.is_file():
            raise WeightsError(f"{path}: missing (the pipeline folder is incomplete)")
        load_into(module, read_state_dict(path), path)
    return model.eval(), sampling


def load_checkpoint_state(ckpt: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """State dict and hyper-parameters from a Lightning checkpoint file (or a DeepSpeed checkpoint folder)."""
    ckpt = Path(ckpt)
    if ckpt.is_dir():  # DeepSpeed writes a folder of shards; consolidate it first
        try:
            from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict
        except ImportError as exc:  # pragma: no cover
            raise IGRError(
                f"{ckpt}: a DeepSpeed checkpoint folder needs `pip install -e .[deepspeed]`"
            ) from exc
        with tempfile.TemporaryDirectory() as tmp:
            convert_zero_checkpoint_to_fp32_state_dict(str(ckpt), f"{tmp}/consolidated.ckpt")
            return load_checkpoint_state(f"{tmp}/consolidated.ckpt")
    if not ckpt.is_file():
        raise IGRError(f"{ckpt}: checkpoint not found")
    try:
        data = torch.load(ckpt, map_location="cpu", weights_only=False)  # Lightning checkpoints hold configs
    except Exception as exc:
        raise IGRError(f"{ckpt}: cannot read checkpoint ({exc.__class__.__name__})") from exc
    if "state_dict" not in data:
        raise IGRError(f"{ckpt}: not a Lightning checkpoint (no state_dict)")
    state = dict(data["state_dict"])
    if "ema_state" in data:
        state["ema_state"] = data["ema_state"]
    return state, data.get("hyper_parameters", {})


def export_checkpoint(ckpt: str | Path, out: str | Path, ema: bool = False, overwrite: bool = False) -> Path:
    """Pipeline folder from a training checkpoint: the config in its hyper-parameters, every weight from its
    state dict (frozen parts included), so no weight path of the training run needs to exist."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise IGRError(f"{out}: already exists (pass --overwrite to replace it)")
    state, hparams = load_checkpoint_state(ckpt)
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
    return export_pipeline(model.eval(), out, sampling=sampling, overwrite=overwrite)
