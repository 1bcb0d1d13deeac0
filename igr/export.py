"""Pipeline folders: what ``igr export`` writes and what the restoration pipeline loads.

A pipeline folder is a diffusers pipeline (:class:`igr.pipeline.IGRPipeline`), self-contained and without pickles:

    model_index.json         the pipeline's modules (["igr.components", class] each, the scheduler's from diffusers)
                             and the architecture, diffusion and sampling settings
    garmnet/                 trainable: GarmNet              } config.json +
    denoiser/                trainable: GarmDenoiser with     } diffusion_pytorch_model.safetensors
                             the IP-Adapter layers (ImageProjection, K/V-ip)
    vae/, image_encoder/     frozen parts, copied so the folder needs nothing else
    prompts/                 cached category-prompt embeddings (no text encoder needed at inference)
    scheduler/               scheduler_config.json
    igr_pipeline.py          one import line, for DiffusionPipeline.from_pretrained(..., trust_remote_code=True)
    README.md                the model card

The older format (``model.yaml`` + ``<part>.safetensors`` at the top level) still loads (:func:`load_legacy_pipeline`)
and ``igr export --upgrade`` converts it (:func:`upgrade_pipeline`).

Writes go to a temporary folder renamed into place, so an interrupted export leaves nothing half-written.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from igr.atomic import atomic_directory
from igr.config import DiffusionConfig, ModelConfig, SamplingConfig, model_config_from_dict, yaml_error_line
from igr.errors import IGRError, WeightsError
from igr.models import IGRModel, build_model
from igr.models.unet import base_unet_config
from igr.models.vae import effective_config
from igr.weights_io import check_shapes, load_into, read_state_dict

PARTS = ("garmnet", "denoiser", "vae", "image_encoder", "prompts")


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


def yaml_data(obj: Any) -> Any:
    """A config dataclass as plain YAML/JSON types."""
    data = dataclasses.asdict(obj)
    return OmegaConf.to_container(OmegaConf.create(data), resolve=True)


_to_yaml_data = yaml_data


def export_pipeline(
    model: IGRModel,
    out: str | Path,
    sampling: SamplingConfig | None = None,
    overwrite: bool = False,
    card: dict | None = None,
    scheduler=None,
) -> Path:
    """Write ``model`` as a pipeline folder (the diffusers layout above) with ``sampling`` as its defaults and
    ``scheduler`` (default: the sampler's, built from the model's diffusion settings)."""
    from igr.pipeline import IGRPipeline

    out = Path(out)
    pipe = IGRPipeline.from_model(model, sampling, scheduler=scheduler)
    with atomic_directory(out, overwrite) as tmp:
        pipe.save_pretrained(tmp, card=card)
    return out


def write_legacy_pipeline(model: IGRModel, out: str | Path, sampling: SamplingConfig | None = None) -> Path:
    """The format before the diffusers layout (``model.yaml`` + ``<part>.safetensors``): kept so the upgrade path
    is tested against real old folders."""
    out = Path(out)
    with atomic_directory(out, False) as tmp:
        doc = {
            "model": yaml_data(architecture_config(model)),
            "diffusion": yaml_data(model.diffusion),
            "sampling": yaml_data(sampling or SamplingConfig()),
        }
        OmegaConf.save(OmegaConf.create(doc), tmp / "model.yaml")
        for name in PARTS:
            module = getattr(model, name)
            if module is None:
                continue
            state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
            save_file(state, str(tmp / f"{name}.safetensors"))
    return out


def is_pipeline_folder(folder: str | Path) -> bool:
    """A pipeline folder of either format."""
    folder = Path(folder)
    return (folder / "model_index.json").is_file() or (folder / "model.yaml").is_file()


def upgrade_pipeline(old: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """An old-format pipeline folder rewritten in the diffusers layout (same weights, same sampling defaults)."""
    old = Path(old)
    if (old / "model_index.json").is_file():
        raise IGRError(f"{old}: already in the diffusers layout (has model_index.json); nothing to upgrade")
    if not (old / "model.yaml").is_file():
        raise IGRError(f"{old}: not an old-format pipeline folder (no model.yaml)")
    model, sampling = load_legacy_pipeline(old)
    return export_pipeline(model, out, sampling=sampling, overwrite=overwrite)


def read_pipeline_config(folder: str | Path) -> dict:
    """A pipeline folder's ``model.yaml`` as a dict; broken YAML is one line naming the file."""
    cfg_path = Path(folder) / "model.yaml"
    try:
        doc = OmegaConf.to_container(OmegaConf.load(cfg_path), resolve=True)
    except Exception as exc:  # yaml's scanner/parser errors, omegaconf's interpolation errors
        raise IGRError(f"{cfg_path}: not a readable YAML file ({yaml_error_line(exc)})") from None
    if not isinstance(doc, dict):
        raise IGRError(f"{cfg_path}: expected a mapping at the top level")
    return doc


def load_pipeline(folder: str | Path, dtype: torch.dtype | None = None) -> tuple[IGRModel, SamplingConfig]:
    """The model and sampling defaults of a pipeline folder of either format (through
    :meth:`igr.pipeline.IGRPipeline.from_pretrained`: built on the meta device, weights assigned, cast to ``dtype``
    while loading when given)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IGRError(f"{folder}: model folder not found")
    if not (folder / "model_index.json").is_file():
        return load_legacy_pipeline(folder, dtype)
    from igr.pipeline import IGRPipeline, quiet_loading

    with quiet_loading():
        pipe = IGRPipeline.from_pretrained(folder, torch_dtype=dtype)
    return pipe.model, pipe.sampling


def load_legacy_pipeline(
    folder: str | Path, dtype: torch.dtype | None = None
) -> tuple[IGRModel, SamplingConfig]:
    """Rebuild the model from an old-format folder (``model.yaml`` + ``<part>.safetensors``): built on the meta
    device from its config (no memory, no random init of 1.7 B parameters), then each file's weights assigned,
    checked key by key and shape by shape (cast to ``dtype`` while loading, when given)."""
    from accelerate import init_empty_weights

    folder = Path(folder)
    if not folder.is_dir():
        raise IGRError(f"{folder}: model folder not found")
    cfg_path = folder / "model.yaml"
    if not cfg_path.is_file():
        raise IGRError(f"{folder}: not a pipeline folder (no model_index.json; create one with `igr export`)")
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
    """
    ckpt = Path(ckpt)
    trust = _TRUST_PICKLE.get() if trust_pickle is None else trust_pickle
    if not ckpt.is_file():
        raise IGRError(f"{ckpt}: checkpoint not found")
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


def load_checkpoint_state(
    ckpt: str | Path, trust_pickle: bool | None = None
) -> tuple[dict[str, torch.Tensor], dict]:
    """State dict and hyper-parameters from a Lightning checkpoint file (or a DeepSpeed checkpoint folder)."""
    ckpt = Path(ckpt)
    trust = _TRUST_PICKLE.get() if trust_pickle is None else trust_pickle
    if ckpt.is_dir():  # DeepSpeed writes a folder of shards; consolidate it first
        if not trust:
            raise IGRError(
                f"{ckpt}: a DeepSpeed checkpoint folder is read by unpickling its files (DeepSpeed's converter "
                f"cannot load weights-only), which runs code from them; if you trust its source, pass {TRUST_FLAG}"
            )
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
    if out.exists() and not overwrite:
        raise IGRError(f"{out}: already exists (pass --overwrite to replace it)")
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
    return export_pipeline(model.eval(), out, sampling=sampling, overwrite=overwrite)
