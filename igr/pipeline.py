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

Low memory: :meth:`IGRPipeline.enable_model_cpu_offload` keeps the parts that run once per image (VAE, CLIP image
encoder, GarmNet) on the CPU and moves each to the GPU only for its one use; :meth:`enable_vae_tiling` decodes
large outputs tile by tile.
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers.utils import BaseOutput
from PIL import Image

from igr import restore_io
from igr.config import SamplingConfig, load_model_config
from igr.devices import resolve_device, resolve_dtype
from igr.errors import IGRError
from igr.export import load_pipeline
from igr.models import IGRModel, build_model
from igr.models.image_encoder import garment_crop
from igr.sampling import inference_scheduler

HUB_FILES = ["model.yaml", "*.safetensors", "README.md", "LICENSE*"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
CALLBACK_TENSORS = ("latents",)


@dataclass
class IGRPipelineOutput(BaseOutput):
    """``images``: the restored garments — a list of PIL images (``output_type="pil"``), a (B,H,W,3) float array in
    [0,1] (``"np"``), a (B,3,H,W) float tensor in [0,1] (``"pt"``) or the (B,C,h,w) latents (``"latent"``).
    ``masks``: with automatic masking, the mask made for each photo at the photo's size — PIL "L" images (pil),
    uint8 {0,1} arrays (np) or (1,H,W) float tensors (pt); ``None`` when the masks were given."""

    images: list[Image.Image] | np.ndarray | torch.Tensor
    masks: list | None = None


# --------------------------------------------------------------------------- loading


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


# --------------------------------------------------------------------------- the pipeline


class IGRPipeline:
    """A loaded IGR model, its scheduler and sampling defaults, and optionally a clothes parser for masks."""

    def __init__(
        self,
        model: IGRModel,
        sampling: SamplingConfig | None = None,
        scheduler=None,
        parser=None,
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.sampling = sampling or SamplingConfig()
        self.scheduler = scheduler or inference_scheduler(model.diffusion, self.sampling.sampler)
        self.parser = parser
        self._offload_device: torch.device | None = None  # the execution device while offloading
        self._vae_tiling = False

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
    ) -> IGRPipeline:
        """Load a pipeline folder (what ``igr export`` and :meth:`save_pretrained` write) or a Hub id
        (``org/name``; ``revision``, ``cache_dir``, ``local_files_only`` and ``token`` go to
        ``huggingface_hub.snapshot_download``). ``torch_dtype`` (``dtype`` is an alias) casts while loading;
        ``device`` moves the result; ``parser`` loads a clothes parser for automatic masks."""
        folder = resolve_pretrained(
            pretrained_model_name_or_path, revision, cache_dir, local_files_only, token
        )
        want = torch_dtype if torch_dtype is not None else dtype
        dev = None if device is None else resolve_device(device)
        dt = None if want is None else resolve_dtype(want, dev or torch.device("cpu"))
        model, sampling = load_pipeline(folder, dt)
        pipe = cls(model, sampling)
        if parser is not None:
            pipe.load_parser(parser)
        return pipe.to(dev, dt)

    def save_pretrained(
        self, save_directory: str | Path, overwrite: bool = False, card: dict | None = None
    ) -> Path:
        """Write a pipeline folder (safetensors + ``model.yaml`` + a model card) that :meth:`from_pretrained`
        loads and the Hub can host. ``card``: extra facts for the model card (see :mod:`igr.model_card`)."""
        from igr.export import export_pipeline

        return export_pipeline(
            self.model, save_directory, sampling=self.sampling, overwrite=overwrite, card=card
        )

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
        Without ``weights`` the trainable parts keep their initialisation (SD1.5, or random for the tiny config)."""
        from igr.init_weights import load_trainable_weights

        model = build_model(load_model_config(config))
        if weights is not None:
            if not Path(weights).exists():
                raise IGRError(f"{weights}: weights not found (expected a .ckpt file or a pipeline folder)")
            load_trainable_weights(model, str(weights))
        return cls(model).to(device, dtype)

    def load_parser(self, path: str | Path, dilation: int = 0) -> IGRPipeline:
        """Load a clothes-parsing SegFormer (``igr download-weights --what parser``) for automatic masks."""
        from igr.masking import ClothesParser

        if not Path(path).is_dir():
            raise IGRError(
                f"{path}: garment parser not found (fetch it with `igr download-weights --what parser`)"
            )
        self.parser = ClothesParser.from_pretrained(path, dilation=dilation).to(self.device)
        return self

    # --- placement ----------------------------------------------------------------------------------------
    def to(
        self, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None
    ) -> IGRPipeline:
        """Move to ``device`` (``auto``: CUDA, else MPS, else CPU) in ``dtype``; ``None`` keeps the current one.
        As in diffusers, ``pipe.to(torch.float16)`` changes only the dtype. Moving ends CPU offloading."""
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        dev = self.device if device is None else resolve_device(device)
        dt = self.dtype if dtype is None else resolve_dtype(dtype, dev)
        self._offload_device = None
        self.model.to(device=dev, dtype=dt)
        if self.parser is not None:
            self.parser.to(dev)
        return self

    def enable_model_cpu_offload(self, device: str | torch.device = "auto") -> IGRPipeline:
        """Keep the VAE, CLIP image encoder and GarmNet on the CPU and move each to ``device`` only for its single
        use per call (encode, GarmNet once, decode); the denoiser, which runs every step, stays on ``device``.
        Peak GPU memory drops by the size of those parts; the images are the same."""
        dev = resolve_device(device)
        self.model.to("cpu")
        self.model.denoiser.to(dev)
        self._offload_device = dev
        return self

    def disable_model_cpu_offload(self) -> IGRPipeline:
        dev = self._offload_device
        self._offload_device = None
        if dev is not None:
            self.model.to(dev)
        return self

    def enable_vae_tiling(self, tile_size: int | None = None, overlap: float = 0.25) -> IGRPipeline:
        """Decode outputs larger than ``tile_size`` pixels (default: the VAE's sample size, 512 for SD1.5) tile by
        tile with blended overlaps (diffusers' ``AutoencoderKL`` tiling): the decoder's memory grows with the tile,
        not the image. Only the decode is tiled: a tiled encode would change the person latent GarmNet sees.
        Tiles see only their neighbourhood, so pixels differ slightly from the plain decode."""
        vae = self.model.vae.vae
        step = 8 * self.model.vae.factor  # diffusers' blending needs whole latent blocks per tile and overlap
        if tile_size is not None and (tile_size < step or tile_size % step):
            raise IGRError(f"VAE tile size {tile_size}: must be a positive multiple of {step} pixels")
        if tile_size is not None:
            vae.tile_sample_min_size = int(tile_size)
            vae.tile_latent_min_size = int(tile_size) // self.model.vae.factor
        vae.tile_overlap_factor = overlap
        self._vae_tiling = True
        return self

    def disable_vae_tiling(self) -> IGRPipeline:
        self._vae_tiling = False
        return self

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        vae = self.model.vae.vae
        vae.use_tiling = self._vae_tiling
        try:
            return self.model.decode_images(z)
        finally:
            vae.use_tiling = False

    @property
    def device(self) -> torch.device:
        """Where the model runs (with CPU offload: the device parts are moved to for their use)."""
        return self._offload_device or next(self.model.denoiser.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.denoiser.parameters()).dtype

    @property
    def resolution(self) -> tuple[int, int]:
        """(H, W) the model restores at: inputs are resized to it and outputs have it."""
        return tuple(self.model.config.resolution)

    @contextlib.contextmanager
    def _placed(self, *modules: torch.nn.Module | None) -> Iterator[None]:
        """With CPU offload: ``modules`` on the execution device for the block, back on the CPU after it."""
        parts = [m for m in modules if m is not None]
        if self._offload_device is None or not parts:
            yield
            return
        for m in parts:
            m.to(self._offload_device)
        try:
            yield
        finally:
            for m in parts:
                m.to("cpu")
            if self._offload_device.type == "cuda":
                torch.cuda.empty_cache()

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
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        mask_threshold: int = 127,
        resize_mask: bool = False,
        progress: bool | Callable = False,
    ) -> IGRPipelineOutput | tuple:
        """Restore garments from one person (PIL image, HxWxC array, (3,H,W) tensor) or a list / (B,3,H,W) batch.

        ``mask=None`` makes each mask with the clothes parser (:meth:`load_parser`) and returns them in
        ``.masks``. ``num_inference_steps``/``guidance_scale`` default to the folder's sampling settings (25 steps,
        guidance 1.5 as in the paper); ``latents`` gives z_T (B,C,h,w) instead of drawing it from ``generator``.
        ``callback_on_step_end(pipe, step, t, {"latents": z})`` runs after each step and may return a dict with
        replacement ``latents``. With ``return_dict=False`` the result is ``(images,)`` or ``(images, masks)``."""
        if output_type not in ("pil", "np", "pt", "latent"):
            raise IGRError(f"output_type '{output_type}': expected pil, np, pt or latent")
        self._check_sampling_args(num_inference_steps, guidance_scale)  # before any parsing or model work
        bad = [k for k in callback_on_step_end_tensor_inputs if k not in CALLBACK_TENSORS]
        if bad:
            raise IGRError(
                f"callback_on_step_end_tensor_inputs {bad}: only {list(CALLBACK_TENSORS)} are passed"
            )
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
        out = self.generate(
            torch.stack([p for p, _ in prepared]),
            torch.stack([m for _, m in prepared]),
            categories,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=generator,
            latents=latents,
            progress=progress,
            callback_on_step_end=callback_on_step_end,
            output_type="latent" if output_type == "latent" else "pt",
        )
        images = _format_images(out, output_type)
        mask_out = _format_masks(masks, output_type) if auto else None
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
        progress: bool | Callable = False,
        callback_on_step_end: Callable | None = None,
        output_type: str = "pt",
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
        device = self.device
        person, mask = person.to(device, torch.float32), mask.to(device, torch.float32)
        # The model's restoration loop, with this pipeline's scheduler, callback and CPU offload.
        z = model.restore(
            person,
            mask,
            list(categories),
            num_inference_steps=steps,
            guidance_scale=scale,
            generator=generator,
            eta=self.sampling.eta,
            progress=_progress(progress),
            latents=latents,
            return_latents=True,
            scheduler=self._fresh_scheduler(),
            callback=self._step_callback(callback_on_step_end),
            placed=self._placed,
        )
        if output_type == "latent":
            return z.float().cpu()
        with self._placed(model.vae):
            images = self._decode(z)
        return images.cpu()

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


def _progress(progress: bool | Callable) -> Callable | None:
    if callable(progress):
        return progress
    if progress:
        from rich.progress import track

        return lambda steps: track(steps, description="denoising", transient=True)
    return None
