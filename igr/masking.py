"""Automatic garment masks: a clothes-parsing SegFormer labels every pixel, the category picks the labels, and a
clean-up keeps one solid garment.

The parser is ``SegformerForSemanticSegmentation`` (transformers) with the public ``segformer_b2_clothes`` label
set (18 labels, :data:`CLOTHES_LABELS`); ``igr download-weights --what parser`` fetches the weights into
``weights/segformer_b2_clothes``, the path ``configs/masking.yaml`` points at. Labels are looked up by *name* in the
model's ``id2label``, so a parser fine-tuned with another label order still maps correctly.

Category → labels (docs/design.md §8): upper → upper-clothes; lower → skirt + pants; full → dress, or upper + lower
when the photo has no dress. Clean-up: the largest connected component, holes filled, optional dilation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image
from scipy import ndimage

from igr.config import CONFIG_DIR
from igr.errors import IGRError, WeightsError

# The public segformer_b2_clothes label set (ATR-derived), in id order.
CLOTHES_LABELS = (
    "Background", "Hat", "Hair", "Sunglasses", "Upper-clothes", "Skirt", "Pants", "Dress", "Belt",
    "Left-shoe", "Right-shoe", "Face", "Left-leg", "Right-leg", "Left-arm", "Right-arm", "Bag", "Scarf",
)  # fmt: skip
# Each category: label-name groups tried in order; the first group present in the photo is the garment.
CATEGORY_LABELS: dict[str, tuple[tuple[str, ...], ...]] = {
    "upper": (("Upper-clothes",),),
    "lower": (("Skirt", "Pants"),),
    "full": (("Dress",), ("Upper-clothes", "Skirt", "Pants")),
}
MIN_PIXELS = 16  # fewer garment pixels than this is noise, not a garment


@dataclass
class MaskingConfig:
    parser_path: str | None = None  # a SegformerForSemanticSegmentation folder (config.json + weights)
    dilation: int = 0  # grow the cleaned mask by this many pixels (garment edges, loose fabric)
    min_pixels: int = MIN_PIXELS


def load_masking_config(path: str | Path | None = None) -> MaskingConfig:
    """``configs/masking.yaml`` (or ``path``): where the parser weights are and how masks are cleaned."""
    path = Path(path) if path else CONFIG_DIR / "masking.yaml"
    if not path.is_file():
        raise IGRError(f"{path}: masking config not found")
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}  # literally, like every config we read
    unknown = set(data) - set(MaskingConfig.__dataclass_fields__)
    if unknown:
        raise IGRError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    return MaskingConfig(**data)


# --------------------------------------------------------------------------- label maps → masks


def label_ids(id2label: dict[int, str], names: tuple[str, ...]) -> list[int]:
    by_name = {str(v).lower(): int(k) for k, v in id2label.items()}
    return [by_name[n.lower()] for n in names if n.lower() in by_name]


def garment_mask(
    labels: np.ndarray,
    category: str,
    id2label: dict[int, str] | None = None,
    min_pixels: int = MIN_PIXELS,
    name: str = "photo",
) -> np.ndarray:
    """A label map (H,W ints) → uint8 {0,1} mask of the category's garment labels, before clean-up.
    Raises a one-line :class:`IGRError` when the photo has none of them."""
    if category not in CATEGORY_LABELS:
        raise IGRError(f"{name}: category '{category}' is not one of {', '.join(CATEGORY_LABELS)}")
    id2label = id2label or dict(enumerate(CLOTHES_LABELS))
    for group in CATEGORY_LABELS[category]:
        ids = label_ids(id2label, group)
        mask = np.isin(labels, ids)
        if int(mask.sum()) >= min_pixels:
            return mask.astype(np.uint8)
    wanted = " or ".join("+".join(g) for g in CATEGORY_LABELS[category]).lower()
    found = [id2label.get(int(i), str(i)) for i in np.unique(labels) if int(i) in id2label and int(i) != 0]
    seen = ", ".join(found) if found else "nothing but background"
    raise IGRError(f"{name}: no {category} garment found ({wanted} wanted; the parser saw {seen})")


def clean_mask(mask: np.ndarray, dilation: int = 0) -> np.ndarray:
    """Largest 8-connected component, holes filled, then grown by ``dilation`` pixels: parsers leave specks
    (a sleeve-coloured bag) and holes (a logo, a hand on the shirt) that the garment crop p_g should not get."""
    mask = np.asarray(mask).astype(bool)
    components, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n > 1:
        sizes = ndimage.sum(mask, components, index=np.arange(1, n + 1))
        mask = components == (int(np.argmax(sizes)) + 1)
    mask = ndimage.binary_fill_holes(mask)
    if dilation > 0:
        disk = _disk(dilation)
        mask = ndimage.binary_dilation(mask, structure=disk)
    return mask.astype(np.uint8)


def _disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


def overlay(photo: Image.Image, mask: np.ndarray, colour=(255, 64, 64), alpha: float = 0.45) -> Image.Image:
    """The photo with the mask tinted on top (what the app shows so a user can check the mask)."""
    photo = photo.convert("RGB")
    m = np.asarray(Image.fromarray(np.asarray(mask, np.uint8) * 255).resize(photo.size, Image.NEAREST)) > 0
    a = np.asarray(photo).astype(np.float32)
    a[m] = (1 - alpha) * a[m] + alpha * np.asarray(colour, np.float32)
    return Image.fromarray(a.round().astype(np.uint8), "RGB")


# --------------------------------------------------------------------------- the parser


class ClothesParser:
    """A SegFormer clothes parser: PIL photo → label map at the photo's size, and → garment mask."""

    def __init__(self, model, processor, dilation: int = 0, min_pixels: int = MIN_PIXELS) -> None:
        self.model = model.eval().requires_grad_(False)
        self.processor = processor
        self.dilation = dilation
        self.min_pixels = min_pixels
        self.id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
        missing = [
            n for g in CATEGORY_LABELS.values() for n in sum(g, ()) if not label_ids(self.id2label, (n,))
        ]
        if missing:
            raise WeightsError(
                f"parser labels {sorted(set(missing))} are not in the model's id2label "
                f"(expected the segformer_b2_clothes label set: {', '.join(CLOTHES_LABELS)})"
            )

    @classmethod
    def from_pretrained(
        cls, path: str | Path, dilation: int = 0, min_pixels: int = MIN_PIXELS
    ) -> ClothesParser:
        """Load a local ``SegformerForSemanticSegmentation`` folder (no network: ``igr download-weights`` fetches
        it). Without a ``preprocessor_config.json`` the SegFormer defaults (512×512, ImageNet mean/std) apply."""
        from transformers import SegformerForSemanticSegmentation, SegformerImageProcessor
        from transformers.utils import logging as hf_logging

        from igr.weights_io import load_diffusers_model

        path = Path(path)
        was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a per-tensor "Loading weights" bar is noise in a one-line CLI
        try:
            model = load_diffusers_model(SegformerForSemanticSegmentation, path)
        finally:
            if was_on:
                hf_logging.enable_progress_bar()
        if (path / "preprocessor_config.json").is_file():
            processor = SegformerImageProcessor.from_pretrained(str(path), local_files_only=True)
        else:
            processor = SegformerImageProcessor()
        return cls(model, processor, dilation=dilation, min_pixels=min_pixels)

    @classmethod
    def from_config(cls, config: MaskingConfig, path: str | Path | None = None) -> ClothesParser:
        where = path or config.parser_path
        if not where:
            raise IGRError(
                "no garment parser configured (set parser_path in configs/masking.yaml or pass --parser)"
            )
        if not Path(where).is_dir():
            raise IGRError(
                f"{where}: garment parser not found (fetch it with `igr download-weights --what parser`)"
            )
        return cls.from_pretrained(where, dilation=config.dilation, min_pixels=config.min_pixels)

    def to(self, device) -> ClothesParser:
        self.model.to(device)
        return self

    @torch.inference_mode()
    def labels(self, photo: Image.Image) -> np.ndarray:
        """(H,W) int label map of ``photo``: logits upsampled to the photo's size, then argmax."""
        photo = photo.convert("RGB")
        device = next(self.model.parameters()).device
        pixels = self.processor(images=photo, return_tensors="pt")["pixel_values"].to(device)
        logits = self.model(pixel_values=pixels.to(self.model.dtype)).logits  # (1, L, H/4, W/4)
        logits = torch.nn.functional.interpolate(
            logits.float(), size=(photo.height, photo.width), mode="bilinear", align_corners=False
        )
        return logits.argmax(1)[0].cpu().numpy()

    def mask(
        self, photo: Image.Image, category: str, name: str = "photo", dilation: int | None = None
    ) -> np.ndarray:
        """uint8 {0,1} garment mask of ``photo`` at its size; one-line :class:`IGRError` if none is found."""
        raw = garment_mask(self.labels(photo), category, self.id2label, self.min_pixels, name)
        return clean_mask(raw, self.dilation if dilation is None else dilation)
