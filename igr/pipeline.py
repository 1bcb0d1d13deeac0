"""``IGRPipeline``: garment restoration from your own photos, the way diffusers pipelines work.

    pipe = IGRPipeline.from_pretrained("outputs/demo/pipeline", torch_dtype=torch.float16).to("cuda")
    out = pipe(person, mask, "upper", generator=torch.Generator().manual_seed(0))
    out.images[0].save("garment.png")

    pipe = IGRPipeline.from_pretrained("org/igr-viton-hd")            # a Hub id: huggingface_hub.snapshot_download
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)     # any fitting scheduler
    pipe.load_parser("weights/segformer_b2_clothes")
    out = pipe(person, category="lower", num_inference_steps=15)      # no mask: a clothes parser makes one
    out.masks[0]                                                      # ... and returns it

``person`` and ``mask`` are PIL images, numpy arrays or tensors (one, or lists); any size — the person is
resized and padded to the model resolution keeping its aspect ratio (see :mod:`igr.restore_io` for the mask
rules). Outputs are at the model resolution. GarmNet runs once per image, before the sampling loop; the
unconditional CFG branch's GarmNet features are computed once per model; both CFG branches run as one batched
UNet call.

Loading builds every part on the meta device and then assigns the weights read from the folder, so no parameter
is randomly initialised and nothing is held twice. Nothing here imports Lightning.

Randomness: the initial noise is drawn with ``generator`` — one generator for the whole batch (as diffusers
does), or a list with one per image, which makes each image's result independent of what else is in the batch.
Generators may live on the CPU whatever the device (the noise is drawn there and moved), so a seed gives the
same starting noise on CPU, CUDA and MPS.

``IGRPipeline`` is a ``diffusers.DiffusionPipeline``: its modules (GarmNet, the denoiser with the IP-Adapter, the
VAE, the CLIP image encoder, the cached prompt embeddings, the scheduler; optionally a clothes parser) are
registered, ``save_pretrained`` writes ``model_index.json`` and one folder per module, and
``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` returns an ``IGRPipeline`` (the folder's
``igr_pipeline.py`` is one import line; ``IGRPipeline.from_pretrained`` never runs it). ``components``, ``config``,
``progress_bar``/``set_progress_bar_config``, ``push_to_hub`` and the loading keywords (``variant``,
``use_safetensors``, ``low_cpu_mem_usage``, ``scheduler``) are diffusers'.

Low memory: ``enable_model_cpu_offload()`` / ``enable_sequential_cpu_offload()`` are diffusers' own, through
accelerate's hooks (they need an accelerator); :meth:`enable_vae_tiling` decodes large outputs tile by tile.
``enable_attention_slicing`` is a no-op with a warning: it would replace IGR's attention processors.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers.utils import BaseOutput
from PIL import Image

from igr import restore_io
from igr.config import load_model_config
from igr.devices import resolve_device, resolve_dtype  # noqa: F401 (igr.pipeline's public names, as before)
from igr.errors import IGRError
from igr.export import (  # noqa: F401 (the folder format and its loading helpers, re-exported)
    HUB_FILES,
    IGRPipelineBase,
    quiet_loading,
    resolve_pretrained,
)
from igr.models import build_model
from igr.models.image_encoder import garment_crop

CALLBACK_TENSORS = ("latents",)


@dataclass
class IGRPipelineOutput(BaseOutput):
    """``images``: the restored garments — a list of PIL images (``output_type="pil"``), a (B,H,W,3) float array in
    [0,1] (``"np"``), a (B,3,H,W) float tensor in [0,1] (``"pt"``) or the (B,C,h,w) latents (``"latent"``).
    ``masks``: with automatic masking, the mask made for each photo at the photo's size — PIL "L" images (pil),
    uint8 {0,1} arrays (np) or (1,H,W) float tensors (pt); ``None`` when the masks were given."""

    images: list[Image.Image] | np.ndarray | torch.Tensor
    masks: list | None = None


# --------------------------------------------------------------------------- the pipeline


class IGRPipeline(IGRPipelineBase):
    """A loaded IGR model as a diffusers pipeline: GarmNet, the denoiser (with the IP-Adapter), the VAE, the CLIP
    image encoder, the cached prompt embeddings and the scheduler are its registered modules (GarmNet sits beside
    the denoiser as IDM-VTON's ``unet_encoder`` does); a clothes parser for automatic masks is optional.

    Build one with :meth:`from_pretrained` (a folder or Hub id), :meth:`from_config` (a model YAML and weights) or
    :meth:`from_model` (an :class:`IGRModel` in memory). ``pipe.model`` is the :class:`IGRModel` made of the same
    modules (one restoration loop, shared with training and evaluation); ``pipe.sampling`` the default steps,
    guidance and eta."""

    _callback_tensor_inputs = list(CALLBACK_TENSORS)

    @classmethod
    def from_config(
        cls,
        config: str | Path,
        weights: str | Path | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> IGRPipeline:
        """Build from a model YAML (e.g. ``configs/model/sd15.yaml`` with local weight paths) and load the
        trained GarmNet/denoiser/adapter weights from ``weights``: a Lightning ``.ckpt`` or a pipeline folder.
        Without ``weights`` the trainable parts keep their initialisation (SD1.5, or random for the tiny config).
        (diffusers' ``ConfigMixin.from_config`` builds from a config dict; a pipeline has none to build from.)"""
        from igr.init_weights import load_trainable_weights

        model = build_model(load_model_config(config))
        if weights is not None:
            if not Path(weights).exists():
                raise IGRError(f"{weights}: weights not found (expected a .ckpt file or a pipeline folder)")
            load_trainable_weights(model, str(weights))
        return cls.from_model(model).to(device, dtype)

    def load_parser(self, path: str | Path, dilation: int = 0) -> IGRPipeline:
        """Load a clothes-parsing SegFormer (``igr download-weights --what parser``) for automatic masks."""
        from igr.masking import ClothesParser

        if not Path(path).is_dir():
            raise IGRError(
                f"{path}: garment parser not found (fetch it with `igr download-weights --what parser`)"
            )
        self.parser = ClothesParser.from_pretrained(path, dilation=dilation).to(self._execution_device)
        return self

    def enable_vae_tiling(self, tile_size: int | None = None, overlap: float = 0.25) -> IGRPipeline:
        """Decode outputs larger than ``tile_size`` pixels (default: the VAE's sample size, 512 for SD1.5) tile by
        tile with blended overlaps (diffusers' ``AutoencoderKL`` tiling): the decoder's memory grows with the tile,
        not the image. Only the decode is tiled: a tiled encode would change the person latent GarmNet sees.
        Tiles see only their neighbourhood, so pixels differ slightly from the plain decode."""
        vae = self.vae.vae
        step = 8 * self.vae.factor  # diffusers' blending needs whole latent blocks per tile and overlap
        if tile_size is not None and (tile_size < step or tile_size % step):
            raise IGRError(f"tile_size={tile_size}: must be a positive multiple of {step} pixels")
        if tile_size is not None:
            vae.tile_sample_min_size = int(tile_size)
            vae.tile_latent_min_size = int(tile_size) // self.vae.factor
        vae.tile_overlap_factor = overlap
        self._vae_tiling = True
        return self

    def disable_vae_tiling(self) -> IGRPipeline:
        self._vae_tiling = False
        return self

    def enable_attention_slicing(self, slice_size: str | int | None = "auto") -> None:
        """A no-op with a warning: diffusers' slicing replaces every attention processor with a sliced one, which
        would drop the GarmFus processors (GarmNet's feature writers and the denoiser's fused self-attention) and
        the IP-Adapter's. Memory: :meth:`enable_model_cpu_offload` or :meth:`enable_vae_tiling`."""
        warnings.warn(
            "enable_attention_slicing: not applied; it would replace IGR's GarmFus and IP-Adapter attention "
            "processors (use enable_model_cpu_offload or enable_vae_tiling to save memory)",
            stacklevel=2,
        )

    def disable_attention_slicing(self) -> None:
        pass

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        vae = self.vae.vae
        vae.use_tiling = self._vae_tiling
        try:
            return self.model.decode_images(z)
        finally:
            vae.use_tiling = False
    # --- inputs -------------------------------------------------------------------------------------------
    def prepare(
        self,
        person,
        mask,
        mask_threshold: int = 127,
        resize_mask: bool = False,
        name: str = "image",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One in-memory pair → model inputs (3,H,W) in [-1,1] and (1,H,W) in {0,1} at the model resolution.
        Grey masks are thresholded with a warning that gives the count; problems raise :class:`IGRError`."""
        person_img = restore_io.as_rgb(person, f"{name} person")
        mask_arr, n_grey = restore_io.as_mask(mask, mask_threshold, f"{name} mask")
        restore_io.check_not_empty(mask_arr, f"{name} mask", mask_threshold)
        for note in restore_io.mask_warnings(mask_arr, n_grey, f"{name} mask", mask_threshold):
            warnings.warn(note, stacklevel=3)
        mask_arr = restore_io.fit_mask(
            mask_arr, (person_img.height, person_img.width), resize_mask, f"{name} mask", f"{name} person"
        )
        return restore_io.model_inputs(person_img, mask_arr, self.resolution, f"{name} mask")

    def auto_mask(
        self, person, category: str, name: str = "image", dilation: int | None = None
    ) -> np.ndarray:
        """The garment mask of ``person`` (uint8 {0,1}, the photo's size) from the clothes parser."""
        if self.parser is None:
            raise IGRError(
                f"{name}: no mask given and no garment parser loaded (pipe.load_parser(PATH); "
                "`igr download-weights --what parser` fetches one)"
            )
        restore_io.check_category(category, name)
        return self.parser.mask(restore_io.as_rgb(person, f"{name} person"), category, name, dilation)

    def garment_crop(self, person: torch.Tensor, mask: torch.Tensor, size: int = 224) -> Image.Image:
        """The IP-Adapter's view p_g = Resize(Crop_bbox(p·m)) of one prepared pair, as an image (for display)."""
        crop = garment_crop(person[None].float(), mask[None].float(), size)
        return restore_io.to_pil(crop)[0]

    # --- restoration --------------------------------------------------------------------------------------
    def __call__(
        self,
        person,
        mask=None,
        category: str | Sequence[str] = "upper",
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        num_images_per_prompt: int = 1,
        eta: float | None = None,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        mask_threshold: int = 127,
        resize_mask: bool = False,
        progress: bool | Callable | None = None,
    ) -> IGRPipelineOutput | tuple:
        """Restore garments from one person (PIL image, HxWxC array, (3,H,W) tensor) or a list / (B,3,H,W) batch.

        ``mask=None`` makes each mask with the clothes parser (:meth:`load_parser`) and returns them in
        ``.masks``. ``num_inference_steps``/``guidance_scale``/``eta`` default to the folder's sampling settings
        (25 steps, guidance 1.5 as in the paper, eta 0; eta is DDIM's noise, ignored by schedulers without it);
        ``num_images_per_prompt`` restores each person that many times (images ``i*n .. i*n+n-1`` are person
        ``i``'s; one generator per image, or one for all). ``height``/``width`` are the model's resolution (inputs
        of any size are resized to it): other values are refused. ``latents`` gives z_T (B*n,C,h,w) instead of
        drawing it from ``generator``. ``callback_on_step_end(pipe, step, t, {"latents": z})`` runs after each
        step and may return a dict with replacement ``latents``. ``progress``: the diffusers progress bar by default
        (``set_progress_bar_config(disable=True)`` hides it), ``False`` for none, or a callable wrapping the steps.
        With ``return_dict=False`` the result is ``(images,)`` or ``(images, masks)``."""
        if output_type not in ("pil", "np", "pt", "latent"):
            raise IGRError(f"output_type '{output_type}': expected pil, np, pt or latent")
        self._check_sampling_args(num_inference_steps, guidance_scale)  # before any parsing or model work
        bad = [k for k in callback_on_step_end_tensor_inputs if k not in CALLBACK_TENSORS]
        if bad:
            raise IGRError(
                f"callback_on_step_end_tensor_inputs {bad}: only {list(CALLBACK_TENSORS)} are passed"
            )
        h, w = self.resolution
        if (height is not None and height != h) or (width is not None and width != w):
            raise IGRError(
                f"height={height}, width={width}: this model restores at height={h}, width={w} (photos of any size "
                "are resized to it; leave height and width unset)"
            )
        if isinstance(num_images_per_prompt, bool) or not isinstance(num_images_per_prompt, int) or (
            num_images_per_prompt < 1
        ):
            raise IGRError(f"num_images_per_prompt={num_images_per_prompt!r}: must be a whole number, at least 1")
        people, _ = _as_list(person)
        categories = [category] * len(people) if isinstance(category, str) else list(category)
        if len(categories) != len(people):
            raise IGRError(f"got {len(people)} person images but {len(categories)} categories")
        for i, c in enumerate(categories):
            restore_io.check_category(c, f"image {i}")
        auto = mask is None
        if auto:
            masks = [self.auto_mask(p, c, f"image {i}") for i, (p, c) in enumerate(zip(people, categories))]
        else:
            masks, _ = _as_list(mask)
        if len(people) != len(masks):
            raise IGRError(f"got {len(people)} person images but {len(masks)} masks")
        prepared = [
            self.prepare(p, m, mask_threshold, resize_mask, name=f"image {i}")
            for i, (p, m) in enumerate(zip(people, masks))
        ]
        n = num_images_per_prompt
        out = self.generate(
            torch.stack([p for p, _ in prepared]).repeat_interleave(n, 0),
            torch.stack([m for _, m in prepared]).repeat_interleave(n, 0),
            [c for c in categories for _ in range(n)],
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=generator,
            latents=latents,
            progress=True if progress is None else progress,  # diffusers shows its bar by default
            callback_on_step_end=callback_on_step_end,
            output_type="latent" if output_type == "latent" else "pt",
            eta=eta,
        )
        images = _format_images(out, output_type)
        mask_out = _format_masks([m for m in masks for _ in range(n)], output_type) if auto else None
        if not return_dict:
            return (images,) if mask_out is None else (images, mask_out)
        return IGRPipelineOutput(images=images, masks=mask_out)

    @torch.inference_mode()
    def generate(
        self,
        person: torch.Tensor,
        mask: torch.Tensor,
        categories: list[str],
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        progress: bool | Callable | None = None,
        callback_on_step_end: Callable | None = None,
        output_type: str = "pt",
        eta: float | None = None,
    ) -> torch.Tensor:
        """Prepared inputs (B,3,H,W) in [-1,1] and (B,1,H,W) in {0,1} → garments (B,3,H,W) in [0,1], float32 CPU
        (``output_type="latent"``: the (B,C,h,w) latents z_0 instead).

        Inputs stay float32 while the model runs in fp16/bf16 (the frozen encoders cast them; the CLIP crop's
        antialiased resize has no bf16 kernel on the CPU)."""
        model = self.model
        steps, scale = self._check_sampling_args(num_inference_steps, guidance_scale)
        b = person.shape[0]
        if isinstance(generator, list) and len(generator) != b:
            raise IGRError(f"got {len(generator)} generators for {b} images")
        device = self._execution_device
        person, mask = person.to(device, torch.float32), mask.to(device, torch.float32)
        try:
            # The model's restoration loop, with this pipeline's scheduler and callback; with CPU offload,
            # accelerate's hooks move each part to the device when it runs.
            z = model.restore(
                person,
                mask,
                list(categories),
                num_inference_steps=int(steps),
                guidance_scale=scale,
                generator=generator,
                eta=float(self.sampling.eta if eta is None else eta),
                progress=self._progress(progress),
                latents=latents,
                return_latents=True,
                scheduler=self._fresh_scheduler(),
                callback=self._step_callback(callback_on_step_end),
            )
            if output_type == "latent":
                return z.float().cpu()
            return self._decode(z).cpu()
        finally:
            self.maybe_free_model_hooks()

    def _check_sampling_args(self, num_inference_steps, guidance_scale) -> tuple[int, float]:
        """(steps, guidance scale) with the folder's defaults for None; out-of-range steps and a non-finite
        guidance (which makes every pixel NaN, a black image) raise an :class:`IGRError` naming the argument."""
        steps = self.sampling.steps if num_inference_steps is None else num_inference_steps
        train = int(self.scheduler.config.get("num_train_timesteps", self.model.diffusion.train_timesteps))
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= train:
            raise IGRError(
                f"num_inference_steps={steps!r}: must be an integer from 1 to {train} (the scheduler's "
                "train timesteps)"
            )
        scale = self.sampling.guidance_scale if guidance_scale is None else guidance_scale
        try:
            scale = float(scale)
        except (TypeError, ValueError):
            raise IGRError(f"guidance_scale={guidance_scale!r}: expected a number") from None
        if not math.isfinite(scale):
            raise IGRError(f"guidance_scale={scale}: must be a finite number (1 = no guidance; the paper uses 1.5)")
        return int(steps), scale

    def _fresh_scheduler(self):
        """A copy of ``self.scheduler`` per call (multistep solvers keep state; concurrent app requests must not
        share it), checked against the parameterisation the model was trained for."""
        cfg, ours = self.scheduler.config, self.model.diffusion
        for key, want in (
            ("prediction_type", ours.prediction_type),
            ("num_train_timesteps", ours.train_timesteps),
        ):
            have = cfg.get(key, want)
            if have != want:
                raise IGRError(
                    f"scheduler {type(self.scheduler).__name__} has {key}={have}, the model was trained with {want}; "
                    "build it with .from_config(pipe.scheduler.config)"
                )
        if not hasattr(self.scheduler, "set_timesteps") or not hasattr(self.scheduler, "step"):
            raise IGRError(f"{type(self.scheduler).__name__}: not a diffusers scheduler")
        return copy.deepcopy(self.scheduler)

    def _progress(self, progress: bool | Callable | None) -> Callable | None:
        """A callable as given; True: diffusers' progress bar (``set_progress_bar_config``); else none."""
        if callable(progress):
            return progress
        return (lambda steps: self.progress_bar(steps)) if progress else None

    def _step_callback(self, callback):
        """diffusers' ``callback_on_step_end(pipe, step, t, {"latents": z})`` as :func:`igr.sampling.sample`'s
        ``callback(i, t, z)``: a returned dict may replace the latents."""
        if callback is None:
            return None
        return lambda i, t, z: (callback(self, i, t, {"latents": z}) or {}).get("latents", z)

def _as_list(x) -> tuple[list, bool]:
    """(items, was_single): a (B,C,H,W) tensor or a list/tuple is a batch, anything else one item."""
    if isinstance(x, (list, tuple)):
        if not x:
            raise IGRError("empty input list")
        return list(x), False
    if isinstance(x, torch.Tensor) and x.ndim == 4:
        return list(x), False
    if isinstance(x, (Image.Image, torch.Tensor)) or hasattr(x, "shape"):
        return [x], True
    raise IGRError(f"expected a PIL image, array or tensor (or a list of them), got {type(x).__name__}")


def _format_images(out: torch.Tensor, output_type: str):
    if output_type in ("pt", "latent"):
        return out
    if output_type == "np":
        return out.permute(0, 2, 3, 1).numpy()
    return restore_io.to_pil(out)


def _format_masks(masks: list[np.ndarray], output_type: str) -> list:
    if output_type == "pil":
        return [Image.fromarray(m * 255, "L") for m in masks]
    if output_type == "np":
        return list(masks)
    return [torch.from_numpy(m.astype(np.float32))[None] for m in masks]
