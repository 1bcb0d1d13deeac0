"""Pre-training the tiny world's frozen CLIP image encoder: the analogue of CLIP's web pre-training.

IGR's IP-Adapter reads the garment crop p_g through a *pretrained* CLIP ViT-H, which already knows what a tank top,
a red or a striped fabric looks like. A frozen random-init tower knows little of that: a linear probe on its
embedding finds the garment kind 52 % of the time, 75 % after this pre-training (docs/tiny-world.md, round 4).
Here an open_clip ``CLIP`` with the model config's vision tower and a small text tower is trained contrastively on
the shards' garment crops — p_g, exactly what the encoder sees when IGR runs — against captions built from the
generator's labels ("a red dots tank, an upper garment"), the tiny world's alt-text. Only synthetic shards carry
those labels (meta.json ``garment``); real data uses the real CLIP weights (``image_encoder_path``).

Saved as an open_clip state dict (``visual.*`` and the text tower), which ``model.image_encoder_path`` loads.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from igr.atomic import atomic_file
from igr.config import ModelConfig
from igr.errors import IGRError

# The text tower exists only for pre-training (IGR's prompts go through model.text_encoder): small and fixed.
TEXT_CFG = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}


def caption(meta: dict | None, category: str, where: str) -> str:
    """The tiny world's alt-text for one sample, from the generator's labels (meta.json ``garment``)."""
    garment = (meta or {}).get("garment") or {}
    parts = [garment.get(k) for k in ("colour_family", "pattern", "kind")]
    if not all(isinstance(p, str) and p for p in parts):
        raise IGRError(
            f"{where}: meta.json has no garment kind / colour_family / pattern to caption; the tiny CLIP is "
            "pre-trained on synthetic shards (`igr make-shards synthetic`)"
        )
    return f"a {parts[0]} {parts[1]} {parts[2].replace('_', ' ')}, a {category} garment"


def load_crops(shards: str, size: tuple[int, int], clip_size: int) -> tuple[torch.Tensor, list[str]]:
    """Garment crops p_g of a shard set, normalised as the encoder sees them (N,3,c,c), and their captions."""
    from igr.data.shards import iter_samples
    from igr.models.image_encoder import clip_pixels

    pixels, captions = [], []
    for s in iter_samples(shards, load_garment=False, image_size=size):
        captions.append(caption(s.get("meta"), s["category"], f"{s['url']}: {s['key']}"))
        person = torch.from_numpy(np.array(s["person"])).permute(2, 0, 1).float()[None] / 127.5 - 1
        mask = torch.from_numpy(np.array(s["mask"])).float()[None, None]
        pixels.append(clip_pixels(person, mask, clip_size))  # (1,3,c,c)
    if not pixels:
        raise IGRError(f"{shards}: no usable samples to pre-train the tiny CLIP on")
    return torch.cat(pixels), captions


def build_clip(config: ModelConfig):
    """open_clip CLIP whose vision tower is the one GarmentImageEncoder builds from the same model config."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    from igr.models.image_encoder import vision_config

    embed_dim, vision_cfg = vision_config(config.image_encoder)
    vision_cfg["image_size"] = config.clip_size
    return CLIP(embed_dim, CLIPVisionCfg(**vision_cfg), CLIPTextCfg(**TEXT_CFG))


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, ids: torch.Tensor, logit_scale: torch.Tensor):
    """Symmetric InfoNCE where every pair with the *same caption* is a positive: the tiny world has a few hundred
    distinct captions, so a batch of 128 holds duplicates that plain CLIP would push apart."""
    logits = logit_scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T  # (B, B)
    same = (ids[:, None, :] == ids[None, :, :]).all(-1).float()  # (B, B), symmetric
    target = same / same.sum(1, keepdim=True)
    return (-(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.T.log_softmax(1)).sum(1).mean()) / 2


def train_tiny_clip(
    config: ModelConfig,
    shards: str,
    out: str | Path,
    steps: int = 400,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    from open_clip.tokenizer import SimpleTokenizer
    from safetensors.torch import save

    from igr.pretraining import step_progress, warmup_cosine

    out = Path(out)
    if out.exists() and not overwrite:
        raise IGRError(f"{out}: already exists (pass --overwrite to replace it)")
    if out.suffix != ".safetensors":
        raise IGRError(f"{out}: the tiny CLIP is written as a .safetensors file")
    if config.image_encoder_path:
        raise IGRError(f"model.image_encoder_path is set ({config.image_encoder_path}): that encoder is already "
                       "pre-trained; the tiny CLIP is for random-init configs")
    if steps < 1 or batch_size < 2:
        raise IGRError(f"train-clip: --steps {steps} must be ≥ 1 and --batch-size {batch_size} ≥ 2")
    torch.manual_seed(seed)
    pixels, captions = load_crops(shards, tuple(config.resolution), config.clip_size)
    ids = SimpleTokenizer(context_length=TEXT_CFG["context_length"])(captions)  # (N, 16)
    model = build_clip(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    sched = warmup_cosine(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    losses, t0 = [], time.perf_counter()
    with step_progress("tiny CLIP", "loss") as progress:
        task = progress.add_task("clip", total=steps, loss=float("nan"))
        for _ in range(steps):
            idx = torch.randint(0, len(pixels), (batch_size,), generator=gen)
            x = pixels[idx]
            flip = torch.rand(batch_size, generator=gen) < 0.5  # a mirrored garment keeps its caption
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            loss = contrastive_loss(model.encode_image(x), model.encode_text(ids[idx]), ids[idx],
                                    model.logit_scale.exp())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, np.log(100))  # CLIP's cap on the temperature
            losses.append(loss.item())
            progress.update(task, advance=1, loss=float(np.mean(losses[-20:])))
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_file(out) as f:
        f.write(save(state, metadata={"format": "pt", "captions": str(len(set(captions)))}))
    return {
        "steps": steps,
        "crops": len(pixels),
        "distinct_captions": len(set(captions)),
        "first_loss": round(float(np.mean(losses[:10])), 4),
        "final_loss": round(float(np.mean(losses[-20:])), 4),
        "seconds": round(time.perf_counter() - t0, 1),
        "out": str(out),
    }
