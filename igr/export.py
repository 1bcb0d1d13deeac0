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

import contextlib
import dataclasses
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline, SchedulerMixin
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
from igr.components import (
    CategoryPromptsModel,
    FrozenVAEModel,
    GarmDenoiserModel,
    GarmNetModel,
    ImageEncoderModel,
    components_of,
    load_error,
)
from igr.config import DiffusionConfig, ModelConfig, SamplingConfig, model_config_from_dict
from igr.devices import DTYPES, resolve_device, resolve_dtype
from igr.ds_checkpoint import frozen_parameter_names
from igr.errors import IGRError, WeightsError
from igr.models import IGRModel, build_model
from igr.models.unet import base_unet_config
from igr.models.vae import effective_config
from igr.sampling import inference_scheduler
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


def yaml_data(obj: Any) -> Any:
    """A config dataclass as plain YAML/JSON types."""
    data = dataclasses.asdict(obj)
    # resolve=False: a value that reads ${oc.env:...} (from a downloaded folder's model.yaml) stays that text and
    # never becomes the environment's value in the folder we write
    return OmegaConf.to_container(OmegaConf.create(data), resolve=False)


_to_yaml_data = yaml_data


def export_pipeline(
    model: IGRModel,
    out: str | Path,
    sampling: SamplingConfig | None = None,
    overwrite: bool = False,
    card: dict | None = None,
    scheduler=None,
    inputs: Sequence[str | Path] = (),
) -> Path:
    """Write ``model`` as a pipeline folder (the diffusers layout above) with ``sampling`` as its defaults and
    ``scheduler`` (default: the sampler's, built from the model's diffusion settings). With ``overwrite``, only an
    earlier pipeline folder is replaced, never one holding ``inputs`` (what is exported) or the model's weight
    paths (:func:`igr.atomic.check_overwrite`)."""
    out = Path(out)
    cfg = model.config
    sources = [*inputs, *(p for p in (cfg.sd_path, cfg.vae_path, cfg.ip_adapter_path, cfg.image_encoder_path) if p)]
    pipe = IGRPipelineBase.from_model(model, sampling, scheduler=scheduler)
    with atomic_directory(out, overwrite, kind=PIPELINE_KIND, inputs=sources) as tmp:
        pipe.save_pretrained(tmp, card=card)
    return out


def write_legacy_pipeline(model: IGRModel, out: str | Path, sampling: SamplingConfig | None = None) -> Path:
    """The format before the diffusers layout (``model.yaml`` + ``<part>.safetensors``): kept so the upgrade path
    is tested against real old folders."""
    out = Path(out)
    with atomic_directory(out, False, kind=PIPELINE_KIND) as tmp:
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
    return export_pipeline(model, out, sampling=sampling, overwrite=overwrite, inputs=[old])


HUB_FILES = ["model_index.json", "*/*.json", "*/*.safetensors", "model.yaml", "*.safetensors", "README.md", "LICENSE*"]
SHIM_MODULE = "igr_pipeline"
SHIM_SOURCE = (
    '"""Lets `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` find the pipeline class of the '
    'installed igr package (`pip install igr`); `IGRPipeline.from_pretrained(folder)` does not run this file."""\n\n'
    "from igr.pipeline import IGRPipeline  # noqa: F401\n"
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
MODEL_PARTS = ("garmnet", "denoiser", "vae", "image_encoder", "prompts")  # modules shared with pipe.model


def resolve_pretrained(
    name: str | Path,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
) -> Path:
    """A local pipeline folder as is; otherwise an ``org/name`` Hub id, fetched (or found in the HF cache, e.g.
    with ``HF_HUB_OFFLINE=1``) by ``huggingface_hub.snapshot_download``."""
    path = Path(name)
    if path.exists() or not _HUB_ID.match(str(name)):
        return path
    from huggingface_hub import snapshot_download

    kwargs = dict(revision=revision, cache_dir=cache_dir, token=token, allow_patterns=HUB_FILES)
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    try:
        return Path(snapshot_download(str(name), **kwargs))
    except (
        Exception
    ) as exc:  # offline and not cached, unknown repo, auth: one line, not a page of HTTP detail
        detail = " ".join(str(exc).split())[:200]
        raise IGRError(
            f"{name}: not a local folder, and the Hugging Face Hub download failed ({exc.__class__.__name__}: "
            f"{detail})"
        ) from exc


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Within this block diffusers' progress bars are off (the CLI commands show their own; a bar on stderr before
    a one-line error is noise)."""
    from diffusers.utils import logging as diffusers_logging

    was_on = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            diffusers_logging.enable_progress_bar()


def yaml_data_of(obj) -> dict:
    """A config dataclass as plain JSON types."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def _device(name, argument: str) -> torch.device:
    """:func:`resolve_device` with its error naming the Python argument instead of the CLI flag."""
    try:
        return resolve_device(name)
    except IGRError as exc:
        raise IGRError(str(exc).replace("--device", f"{argument}=", 1).replace("= '", "='").replace("= ", "=")) from None


def _dtype(name, device: torch.device, argument: str) -> torch.dtype:
    try:
        return resolve_dtype(name, device)
    except IGRError as exc:
        raise IGRError(str(exc).replace("--dtype ", f"{argument}=", 1)) from None


# --------------------------------------------------------------------------- the pipeline



# --------------------------------------------------------------------------- the diffusers pipeline's folder format


class IGRPipelineBase(DiffusionPipeline):
    """What a pipeline folder is: the registered modules, their config, and how they are saved and loaded.
    :class:`igr.pipeline.IGRPipeline` (the restoration front end) adds the inputs, sampling and outputs; export
    and evaluation, which sit below it, load and write folders through this class."""

    model_cpu_offload_seq = "vae->image_encoder->garmnet->denoiser"
    _optional_components = ["garmnet", "parser"]
    _exclude_from_cpu_offload = ["prompts"]  # a (4,77,D) table read by indexing, not by a forward call

    def __init__(
        self,
        denoiser: GarmDenoiserModel,
        vae: FrozenVAEModel,
        image_encoder: ImageEncoderModel,
        prompts: CategoryPromptsModel,
        scheduler: SchedulerMixin,
        garmnet: GarmNetModel | None = None,
        parser=None,
        model_config: dict | None = None,
        diffusion_config: dict | None = None,
        sampling_config: dict | None = None,
    ) -> None:
        super().__init__()
        if not model_config:
            raise IGRError("model_config: required (the architecture dict that igr export writes)")
        self.register_modules(
            garmnet=garmnet, denoiser=denoiser, vae=vae, image_encoder=image_encoder, prompts=prompts,
            scheduler=scheduler, parser=parser,
        )  # fmt: skip
        self.register_to_config(
            model_config=model_config, diffusion_config=diffusion_config or {}, sampling_config=sampling_config or {}
        )
        where = "model_index.json model_config"
        try:
            diffusion = DiffusionConfig(**(diffusion_config or {}))
            self.sampling = SamplingConfig(**(sampling_config or {}))
        except TypeError as exc:
            raise IGRError(f"model_index.json: malformed diffusion/sampling config ({exc})") from None
        self.model = IGRModel(
            model_config_from_dict(dict(model_config), where=where), garmnet, denoiser, vae, image_encoder, prompts,
            diffusion,
        ).eval().requires_grad_(False)  # fmt: skip
        self._vae_tiling = False

    def __setattr__(self, name: str, value) -> None:
        """diffusers' registration, and ``pipe.model`` kept made of the same modules (``pipe.denoiser = ...``)."""
        super().__setattr__(name, value)
        if name in MODEL_PARTS and "model" in self.__dict__:
            setattr(self.model, name, value)
            self.model.clear_unconditional_cache()

    @classmethod
    def from_model(
        cls,
        model: IGRModel,
        sampling: SamplingConfig | None = None,
        scheduler: SchedulerMixin | None = None,
        parser=None,
    ) -> IGRPipelineBase:
        """The pipeline of an :class:`IGRModel` in memory (a trained or freshly built one): its parts become the
        registered modules, sharing their tensors (nothing is copied)."""
        sampling = sampling or SamplingConfig()
        return cls(
            **components_of(model),
            scheduler=scheduler or inference_scheduler(model.diffusion, sampling.sampler),
            parser=parser,
            model_config=yaml_data(architecture_config(model)),
            diffusion_config=yaml_data(model.diffusion),
            sampling_config=yaml_data(sampling),
        )

    # --- loading ------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        torch_dtype: torch.dtype | str | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool | None = None,
        token: str | bool | None = None,
        parser: str | Path | None = None,
        **kwargs,
    ) -> IGRPipelineBase:
        """Load a pipeline folder (what ``igr export`` and :meth:`save_pretrained` write: ``model_index.json`` and
        one folder per module) or a Hub id (``org/name``; ``revision``, ``cache_dir``, ``local_files_only`` and
        ``token`` go to ``huggingface_hub.snapshot_download``). The other keywords are diffusers':
        ``scheduler=``, ``variant=``, ``use_safetensors=``, ``low_cpu_mem_usage=``, ... ``torch_dtype``
        (``dtype`` is an alias; names such as ``"bf16"`` work) casts while loading; ``device`` moves the result;
        ``parser`` loads a clothes parser for automatic masks. Folders of the older format (``model.yaml`` and
        one ``.safetensors`` per part) load too; ``igr export --upgrade`` converts them."""
        folder = resolve_pretrained(pretrained_model_name_or_path, revision, cache_dir, local_files_only, token)
        want = torch_dtype if torch_dtype is not None else dtype
        dev = None if device is None else _device(device, "device")
        dt = None if want is None else _dtype(want, dev or torch.device("cpu"), "torch_dtype")
        if not folder.is_dir():
            raise IGRError(f"{folder}: model folder not found")
        if (folder / "model_index.json").is_file():
            try:
                kwargs.setdefault("use_safetensors", True)  # no pickles, unless the caller asks for .bin files
                pipe = super().from_pretrained(str(folder), dtype=dt, **kwargs)  # diffusers 0.42: torch_dtype is deprecated
            except IGRError:
                raise
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise load_error(exc, folder) from exc
        elif (folder / "model.yaml").is_file():
            pipe = cls._from_legacy_folder(folder, dt, **kwargs)
        else:
            raise IGRError(f"{folder}: not a pipeline folder (no model_index.json; create one with `igr export`)")
        if parser is not None:
            pipe.load_parser(parser)
        return pipe.to(dev) if dev is not None else pipe

    @classmethod
    def _from_legacy_folder(cls, folder: Path, dtype: torch.dtype | None, **kwargs) -> IGRPipelineBase:
        """The format before model_index.json: ``model.yaml`` + ``<part>.safetensors``."""
        unknown = sorted(set(kwargs) - {"scheduler", "use_safetensors", "low_cpu_mem_usage"})
        if unknown:
            raise IGRError(
                f"{folder}: {', '.join(unknown)} need a folder in the diffusers layout; convert this one with "
                "`igr export --upgrade`"
            )
        model, sampling = load_legacy_pipeline(folder, dtype)
        return cls.from_model(model, sampling, scheduler=kwargs.get("scheduler"))

    @classmethod
    def load_config(cls, *args, **kwargs):
        """diffusers' ``load_config``, reading ``_class_name`` ``["igr_pipeline", "IGRPipeline"]`` (which lets
        ``DiffusionPipeline.from_pretrained(..., trust_remote_code=True)`` find this class through the folder's
        one-line ``igr_pipeline.py``) as this class: loading through ``IGRPipeline`` runs no code from the
        folder."""
        out = super().load_config(*args, **kwargs)
        config = out[0] if isinstance(out, tuple) else out
        if isinstance(config.get("_class_name"), (list, tuple)):
            config["_class_name"] = cls.__name__
        return out

    def save_pretrained(
        self,
        save_directory: str | Path,
        safe_serialization: bool = True,
        variant: str | None = None,
        push_to_hub: bool = False,
        card: dict | None = None,
        **kwargs,
    ) -> Path:
        """diffusers' ``save_pretrained`` (``model_index.json``, one folder per module with its ``config.json`` and
        weights, ``scheduler/scheduler_config.json``; an existing folder is written into, as diffusers does), plus
        a model card and the one-line ``igr_pipeline.py`` that ``DiffusionPipeline.from_pretrained`` needs.
        ``card``: extra facts for the model card (see :mod:`igr.model_card`). A loaded parser is not saved (it is
        a separate SegFormer folder: :meth:`load_parser`)."""
        self.register_to_config(sampling_config=yaml_data_of(self.sampling))
        parser_entry = self.config.get("parser")
        self.register_to_config(parser=(None, None))
        self._card = card
        try:
            super().save_pretrained(
                str(save_directory), safe_serialization=safe_serialization, variant=variant,
                push_to_hub=push_to_hub, **kwargs,
            )  # fmt: skip
        finally:
            self.register_to_config(parser=parser_entry)
            self._card = None
        return Path(save_directory)

    def save_config(self, save_directory, push_to_hub: bool = False, **kwargs) -> None:
        """Called by ``save_pretrained`` after the modules are written: ``model_index.json``, then the class shim and
        the model card (before any upload)."""
        super().save_config(save_directory, push_to_hub=push_to_hub, **kwargs)
        folder = Path(save_directory)
        index = folder / "model_index.json"
        doc = json.loads(index.read_text())
        doc["_class_name"] = [SHIM_MODULE, "IGRPipeline"]  # what the shim imports, whichever class saved
        index.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        (folder / f"{SHIM_MODULE}.py").write_text(SHIM_SOURCE)
        from igr.model_card import write_model_card  # README.md: what the model is, its licences

        write_model_card(folder, self.model, self.sampling, **(getattr(self, "_card", None) or {}))

    # --- placement ----------------------------------------------------------------------------------------
    def to(self, *args, **kwargs) -> IGRPipelineBase:
        """diffusers' ``to`` (``pipe.to("cuda")``, ``pipe.to(torch.float16)``, ``pipe.to("cuda", torch_dtype=...)``,
        ``pipe.to(device=..., dtype=...)``), also accepting igr's names: ``"auto"`` (CUDA, else MPS, else CPU) and
        dtype names (``"bf16"``). ``None`` keeps the current one. The parser follows the device."""
        args = list(args)
        device = kwargs.pop("device", None)
        dtype = kwargs.pop("torch_dtype", kwargs.pop("dtype", None))
        for a in args:
            if isinstance(a, torch.dtype) or (isinstance(a, str) and a in DTYPES):
                dtype = a
            elif a is not None:
                device = a
        dev = None if device is None else _device(device, "device")
        dt = None if dtype is None else _dtype(dtype, dev or self.device, "dtype")
        if dev is not None and self.parser is not None:
            self.parser.to(dev)
        if dev is None and dt is None:
            return self
        return super().to(*[x for x in (dev, dt) if x is not None], **kwargs)


    @property
    def resolution(self) -> tuple[int, int]:
        """(H, W) the model restores at: inputs are resized to it and outputs have it."""
        return tuple(self.model.config.resolution)


def load_pipeline(folder: str | Path, dtype: torch.dtype | None = None) -> tuple[IGRModel, SamplingConfig]:
    """The model and sampling defaults of a pipeline folder of either format (through
    :meth:`igr.pipeline.IGRPipeline.from_pretrained`: built on the meta device, weights assigned, cast to ``dtype``
    while loading when given)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IGRError(f"{folder}: model folder not found")
    if not (folder / "model_index.json").is_file():
        return load_legacy_pipeline(folder, dtype)
    with quiet_loading():
        pipe = IGRPipelineBase.from_pretrained(folder, torch_dtype=dtype)
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
