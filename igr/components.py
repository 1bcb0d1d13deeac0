"""The parts of an IGR model as diffusers components: each is the igr module itself (a :class:`GarmNet` is a
``GarmNet``, state-dict keys unchanged) that is also a diffusers ``ModelMixin`` + ``ConfigMixin``, built from a small
JSON config. So :class:`igr.pipeline.IGRPipeline` registers them as ``DiffusionPipeline`` modules, and diffusers'
own ``save_pretrained``/``from_pretrained`` write and read one folder per part (``config.json`` +
``diffusion_pytorch_model.safetensors``) with its keywords: ``variant``, ``use_safetensors``, ``low_cpu_mem_usage``
(built on the meta device, weights assigned), ``torch_dtype``; and accelerate's offload hooks attach to them.

diffusers records each part in ``model_index.json`` as ``["igr.components", "<class>"]`` and resolves that module
from ``sys.modules`` (importing igr.pipeline imports it); it checks the classes against the base classes it finds
by name in this module, hence the ``ModelMixin`` import below.

Config keys avoid the names of the parts' submodules (``unet``, ``vae``): ``ModelMixin.__getattr__`` would answer
a submodule's name with the config value.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from diffusers import ConfigMixin, ModelMixin, SchedulerMixin, UNet2DConditionModel  # noqa: F401 (see above)
from diffusers.configuration_utils import register_to_config
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME, WEIGHTS_NAME
from diffusers.utils.accelerate_utils import apply_forward_hook
from diffusers.utils.hub_utils import _add_variant
from safetensors.torch import save_file

from igr.errors import IGRError, WeightsError
from igr.models.denoiser import GarmDenoiser
from igr.models.garmnet import GarmNet
from igr.models.image_encoder import GarmentImageEncoder
from igr.models.prompts import CategoryPrompts
from igr.models.unet import base_unet_config
from igr.models.vae import FrozenVAE, build_vae, effective_config
from igr.weights_io import check_loaded_values, check_weights_folder_dtypes


def load_error(exc: BaseException, where: str | Path) -> WeightsError:
    """One line for a diffusers loading error, led by the file it names under ``where`` (else ``where``)."""
    text = " ".join(str(exc).split()).split(" If you want to instead")[0]  # diffusers' advice is for training
    found = re.findall(r"'([^']+)'", text)
    named = next((f for f in found if f.startswith(str(where))), None)
    if named:
        text = text.replace(f" for '{named}' at '{named}'", "").replace(f" at '{named}'", "").replace(f"'{named}'", "it")
    text = text.replace(f" found in directory {where}.", "")
    return WeightsError(f"{named or where}: cannot load ({exc.__class__.__name__}: {text[:300]})")


class _Part:
    """Loading errors as one line naming the part's folder or file (diffusers' own are pages long)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        # The weights are checked as the legacy loader (read_state_dict) checks them: an unusable dtype or NaN/inf
        # is one line naming the file and tensor, not a cast to garbage or a black image with exit 0.
        folder = Path(pretrained_model_name_or_path) / (kwargs.get("subfolder") or "")
        check_weights_folder_dtypes(folder)
        try:
            part = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except IGRError:
            raise
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise load_error(exc, pretrained_model_name_or_path) from exc
        if folder.is_dir():
            check_loaded_values(part, folder)
        return part


def _json(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({k: v for k, v in dict(d).items() if not k.startswith("_")}))


class GarmNetModel(_Part, GarmNet, ModelMixin, ConfigMixin):
    """GarmNet (the garment UNet, IDM-VTON's ``unet_encoder``): latent + mask channels in, self-attention features
    out."""

    @register_to_config
    def __init__(self, unet_config: dict, timestep: int = 0) -> None:
        GarmNet.__init__(self, UNet2DConditionModel(**unet_config), timestep)


class GarmDenoiserModel(_Part, GarmDenoiser, ModelMixin, ConfigMixin):
    """The denoising UNet with the IP-Adapter parts (image projection, K/V-ip) and the GarmFus processors."""

    @register_to_config
    def __init__(self, unet_config: dict, image_embed_dim: int, num_ip_tokens: int = 4, ip_scale: float = 1.0) -> None:
        GarmDenoiser.__init__(self, UNet2DConditionModel(**unet_config), image_embed_dim, num_ip_tokens, ip_scale)

    _no_split_modules = ["GarmDenoiserModel"]


class FrozenVAEModel(_Part, FrozenVAE, ModelMixin, ConfigMixin):
    """The frozen autoencoder with the latent normalisation; ``encode``/``decode`` trigger accelerate's offload
    hook as diffusers' ``AutoencoderKL`` methods do."""

    def save_pretrained(
        self, save_directory, safe_serialization: bool = True, variant: str | None = None, max_shard_size="10GB",
        **kwargs,
    ) -> None:  # the keywords by name: DiffusionPipeline passes only those the signature lists
        """diffusers writes no weights file for a model without tensors (the exact pixel-unshuffle autoencoder is
        all config), and then cannot load the folder: write an empty one."""
        super().save_pretrained(
            save_directory, safe_serialization=safe_serialization, variant=variant, max_shard_size=max_shard_size,
            **kwargs,
        )
        safe = safe_serialization
        weights = Path(save_directory) / _add_variant(SAFETENSORS_WEIGHTS_NAME if safe else WEIGHTS_NAME, variant)
        if not self.state_dict() and not weights.exists():
            if safe:
                save_file({}, str(weights), metadata={"format": "pt"})
            else:
                torch.save({}, weights)

    @register_to_config
    def __init__(self, vae_config: dict) -> None:
        FrozenVAE.__init__(self, build_vae(vae_config, None, None))

    @apply_forward_hook
    def encode(self, *args, **kwargs):
        return FrozenVAE.encode(self, *args, **kwargs)

    @apply_forward_hook
    def decode(self, *args, **kwargs):
        return FrozenVAE.decode(self, *args, **kwargs)


class ImageEncoderModel(_Part, GarmentImageEncoder, ModelMixin, ConfigMixin):
    """The frozen open_clip vision tower that embeds the garment crop for the IP-Adapter."""

    @register_to_config
    def __init__(self, encoder_config: dict, clip_size: int = 224) -> None:
        GarmentImageEncoder.__init__(self, encoder_config, clip_size)


class CategoryPromptsModel(_Part, CategoryPrompts, ModelMixin, ConfigMixin):
    """The cached category-prompt embeddings (the text part: no text encoder at inference)."""

    @register_to_config
    def __init__(self, prompts: dict, dim: int) -> None:
        CategoryPrompts.__init__(self, prompts, dim)


def _adopt(cls: type[ModelMixin], module: torch.nn.Module, **config) -> ModelMixin:
    """``module``'s weights in a ``cls`` built on the meta device from ``config``: the tensors are assigned, not
    copied, so the result shares them with ``module``."""
    if isinstance(module, cls):
        return module
    with init_empty_weights(include_buffers=False):
        part = cls(**config)
    part.load_state_dict(module.state_dict(), strict=True, assign=True)
    return part.train(module.training)


def components_of(model) -> dict[str, ModelMixin | None]:
    """An :class:`igr.models.IGRModel`'s parts as the pipeline's components (sharing their tensors)."""
    cfg = model.config
    garmnet = None
    if model.garmnet is not None:
        g = model.garmnet
        garmnet = _adopt(GarmNetModel, g, unet_config=_json(g.unet.config), timestep=int(g.timestep))
    return dict(
        garmnet=garmnet,
        denoiser=_adopt(
            GarmDenoiserModel,
            model.denoiser,
            unet_config=base_unet_config(model.denoiser.unet),
            image_embed_dim=int(model.image_encoder.embed_dim),
            num_ip_tokens=int(cfg.num_ip_tokens),
            ip_scale=float(cfg.ip_scale),
        ),
        vae=_adopt(FrozenVAEModel, model.vae, vae_config=effective_config(model.vae.vae)),
        image_encoder=_adopt(
            ImageEncoderModel,
            model.image_encoder,
            encoder_config=_json(cfg.image_encoder),
            clip_size=int(model.image_encoder.clip_size),
        ),
        prompts=_adopt(
            CategoryPromptsModel,
            model.prompts,
            prompts=_json(cfg.prompts),
            dim=int(model.prompts.embeddings.shape[-1]),
        ),
    )
