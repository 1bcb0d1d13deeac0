"""``IGRPipeline``: garment restoration from your own photos, diffusers-style.

    pipe = IGRPipeline.from_pretrained("outputs/demo/pipeline").to("cuda", torch.float16)
    garment = pipe(person, mask, "upper", generator=torch.Generator().manual_seed(0))   # a PIL image

``person`` and ``mask`` are PIL images, numpy arrays or tensors (one, or lists); any size — the person is
resized and padded to the model resolution keeping its aspect ratio (see :mod:`igr.restore_io` for the mask
rules). The output is the garment at the model resolution. GarmNet runs once per image, before the sampling
loop, and both classifier-free-guidance branches run as one batched UNet call.

Randomness: the initial noise is drawn with ``generator`` — one generator for the whole batch (as diffusers
does), or a list with one per image, which makes each image's result independent of what else is in the batch.
Generators may live on the CPU whatever the device (the noise is drawn there and moved), so a seed gives the
same starting noise on CPU, CUDA and MPS.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image

from igr import restore_io
from igr.config import SamplingConfig, load_model_config
from igr.errors import IGRError
from igr.export import load_pipeline
from igr.models import IGRModel, build_model

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` → CUDA, else MPS, else CPU; a named device that is not there is a one-line error."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise IGRError(f"--device '{name}': not a device name (auto, cpu, cuda, cuda:1, mps)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise IGRError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "mps" and not (torch.backends.mps.is_available()):
        raise IGRError(f"--device {name}: MPS is not available on this machine")
    return device


def resolve_dtype(
    name: str | torch.dtype | None, device: torch.device, cuda_default: torch.dtype = torch.float16
) -> torch.dtype:
    """``auto`` → ``cuda_default`` on CUDA (float16: SD1.5's usual inference precision), float32 elsewhere."""
    if isinstance(name, torch.dtype):
        dtype = name
    elif name in (None, "auto"):
        dtype = cuda_default if device.type == "cuda" else torch.float32
    elif name in DTYPES:
        dtype = DTYPES[name]
    else:
        raise IGRError(f"--dtype '{name}': expected auto, float32, float16 or bfloat16")
    return dtype


class IGRPipeline:
    """A loaded IGR model plus its sampling defaults; call it on person/mask pairs."""

    def __init__(self, model: IGRModel, sampling: SamplingConfig | None = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.sampling = sampling or SamplingConfig()

    # --- loading ------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> IGRPipeline:
        """Load a pipeline folder (what ``igr export`` writes; every weight file is checked key by key)."""
        model, sampling = load_pipeline(path)
        return cls(model, sampling).to(device, dtype)

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
        from igr.models.init_weights import load_trainable_weights

        model = build_model(load_model_config(config))
        if weights is not None:
            if not Path(weights).exists():
                raise IGRError(f"{weights}: weights not found (expected a .ckpt file or a pipeline folder)")
            load_trainable_weights(model, str(weights))
        return cls(model).to(device, dtype)

    def to(
        self, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None
    ) -> IGRPipeline:
        """Move to ``device`` (``auto``: CUDA, else MPS, else CPU) in ``dtype``; ``None`` keeps the current one.
        As in diffusers, ``pipe.to(torch.float16)`` changes only the dtype."""
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        dev = self.device if device is None else resolve_device(device)
        dt = self.dtype if dtype is None else resolve_dtype(dtype, dev)
        self.model.to(device=dev, dtype=dt)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.denoiser.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.denoiser.parameters()).dtype

    @property
    def resolution(self) -> tuple[int, int]:
        """(H, W) the model restores at: inputs are resized to it and outputs have it."""
        return tuple(self.model.config.resolution)

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

    # --- restoration --------------------------------------------------------------------------------------
    def __call__(
        self,
        person,
        mask,
        category: str | Sequence[str],
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        mask_threshold: int = 127,
        resize_mask: bool = False,
        output_type: str = "pil",
        progress: bool | Callable = False,
    ):
        """Restore garments. A single person (PIL image, HxWxC array, (3,H,W) tensor) gives a single result; a
        list (or a (B,3,H,W) tensor) gives a list. ``num_inference_steps``/``guidance_scale`` default to the
        pipeline folder's sampling settings (25 DDIM steps, guidance 1.5 as in the paper).

        ``output_type``: ``"pil"`` (RGB images) or ``"pt"`` (a (B,3,H,W) float tensor in [0,1] on the CPU)."""
        people, single = _as_list(person)
        masks, _ = _as_list(mask)
        if len(people) != len(masks):
            raise IGRError(f"got {len(people)} person images but {len(masks)} masks")
        categories = [category] * len(people) if isinstance(category, str) else list(category)
        if len(categories) != len(people):
            raise IGRError(f"got {len(people)} person images but {len(categories)} categories")
        for i, c in enumerate(categories):
            restore_io.check_category(c, f"image {i}")
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
            progress=progress,
        )
        if output_type == "pt":
            return out[0] if single else out
        if output_type != "pil":
            raise IGRError(f"output_type '{output_type}': expected pil or pt")
        images = restore_io.to_pil(out)
        return images[0] if single else images

    @torch.inference_mode()
    def generate(
        self,
        person: torch.Tensor,
        mask: torch.Tensor,
        categories: list[str],
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        progress: bool | Callable = False,
    ) -> torch.Tensor:
        """Prepared inputs (B,3,H,W) in [-1,1] and (B,1,H,W) in {0,1} → garments (B,3,H,W) in [0,1], float32 CPU.

        Inputs stay float32 while the model runs in fp16/bf16 (the frozen encoders cast them; the CLIP crop's
        antialiased resize has no bf16 kernel on the CPU)."""
        steps = int(num_inference_steps or self.sampling.steps)
        scale = float(self.sampling.guidance_scale if guidance_scale is None else guidance_scale)
        if isinstance(generator, list) and len(generator) != person.shape[0]:
            raise IGRError(f"got {len(generator)} generators for {person.shape[0]} images")
        out = self.model.restore(
            person.to(self.device, torch.float32),
            mask.to(self.device, torch.float32),
            list(categories),
            num_inference_steps=steps,
            guidance_scale=scale,
            generator=generator,
            sampler=self.sampling.sampler,
            eta=self.sampling.eta,
            progress=_progress(progress),
        )
        return out.float().cpu()


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


def _progress(progress: bool | Callable) -> Callable | None:
    if callable(progress):
        return progress
    if progress:
        from rich.progress import track

        return lambda steps: track(steps, description="denoising", transient=True)
    return None
