"""Frozen CLIP image encoder feeding the IP-Adapter (paper §3.2): p_g = Resize_224(Crop_bbox(p·m)).

open_clip's ViT-H-14 vision tower is the encoder IP-Adapter SD1.5 was trained with; the tiny config builds a small
vision tower with the same code. Weights come from a local open_clip checkpoint (full CLIP or vision-only keys).
"""

from __future__ import annotations

from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.model import _build_vision_tower

from igr.errors import IGRError
from igr.weights_io import load_into, read_state_dict


def vision_config(config: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if "model_name" in config:
        cfg = open_clip.get_model_config(config["model_name"])
        if cfg is None:
            raise IGRError(f"image_encoder.model_name: unknown open_clip model '{config['model_name']}'")
        return cfg["embed_dim"], dict(cfg["vision_cfg"])
    try:
        return int(config["embed_dim"]), dict(config["vision_cfg"])
    except KeyError as exc:
        raise IGRError("image_encoder: give either 'model_name' or 'embed_dim' and 'vision_cfg'") from exc


def garment_crop(person: torch.Tensor, mask: torch.Tensor, size: int) -> torch.Tensor:
    """p_g: mask the person, crop to the mask's bounding box, pad to a square (so the garment keeps its
    proportions), resize to ``size``. person (B,3,H,W) in [-1,1], mask (B,1,H,W) in {0,1} → (B,3,size,size) in [0,1].
    Pixels outside the mask never reach the output."""
    x = (person.clamp(-1, 1) + 1) / 2 * mask  # (B,3,H,W): background → 0
    out = []
    for img, m in zip(x, mask[:, 0] > 0.5):
        rows, cols = torch.nonzero(m.any(1)).flatten(), torch.nonzero(m.any(0)).flatten()
        if len(rows) == 0:  # empty mask (condition dropped, or bad input): nothing to show the encoder
            out.append(img.new_zeros(3, size, size))
            continue
        crop = img[:, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        h, w = crop.shape[1:]
        side = max(h, w)
        top, left = (side - h) // 2, (side - w) // 2
        crop = F.pad(crop, (left, side - w - left, top, side - h - top))  # (3, side, side)
        out.append(
            F.interpolate(crop[None], size=(size, size), mode="bicubic", antialias=True, align_corners=False)[
                0
            ]
        )
    return torch.stack(out).clamp(0, 1)


def clip_pixels(person: torch.Tensor, mask: torch.Tensor, size: int) -> torch.Tensor:
    """What the vision tower sees: p_g (``garment_crop``) normalised with CLIP's mean/std, in fp32 whatever
    the inputs' dtype (the antialiased resize has no bf16 CPU kernel). (B,3,H,W) → (B,3,size,size)."""
    crop = garment_crop(person.float(), mask.float(), size)
    mean = torch.tensor(OPENAI_DATASET_MEAN, device=crop.device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD, device=crop.device).view(1, 3, 1, 1)
    return (crop - mean) / std


class GarmentImageEncoder(torch.nn.Module):
    """Frozen open_clip vision tower → image embedding (B, embed_dim) of the garment crop."""

    def __init__(self, config: dict[str, Any], clip_size: int, checkpoint: str | None = None) -> None:
        super().__init__()
        self.embed_dim, vision_cfg = vision_config(config)
        vision_cfg["image_size"] = clip_size
        self.clip_size = clip_size
        self.visual = _build_vision_tower(
            self.embed_dim, vision_cfg, quick_gelu=config.get("quick_gelu", False)
        )
        if checkpoint:
            self.load_checkpoint(checkpoint)
        self.requires_grad_(False)
        self.eval()

    def load_checkpoint(self, path: str) -> None:
        state = read_state_dict(path)
        state = state.get("state_dict", state)  # open_clip training checkpoints wrap the weights
        state = {k.removeprefix("module."): v for k, v in state.items()}
        if any(k.startswith("visual.") for k in state):
            state = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
        load_into(self.visual, state, path)

    def train(self, mode: bool = True):  # frozen: always eval (no dropout), whatever Lightning asks
        return super().train(False)

    @torch.no_grad()
    def forward(self, person: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Preprocessing in fp32 whatever the batch dtype; one cast into the tower's dtype (bf16 under DeepSpeed).
        pixels = clip_pixels(person, mask, self.clip_size)  # (B,3,224,224)
        dtype = next(self.visual.parameters()).dtype
        return self.visual(pixels.to(dtype)).float()  # (B, embed_dim)
