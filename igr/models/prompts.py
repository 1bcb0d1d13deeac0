"""Category prompts (paper §3.2): three fixed text prompts, encoded once by the frozen text encoder.

The embeddings (plus the empty prompt used for condition drop / CFG) are kept as a buffer, so training and
inference never run the text encoder after setup, and exported pipelines do not need it at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import CLIPTextConfig, CLIPTextModel

from igr.config import CATEGORIES
from igr.errors import IGRError
from igr.weights_io import load_diffusers_model

CONTEXT_LENGTH = 77


def build_text_encoder(config: dict[str, Any], sd_path: str | None) -> CLIPTextModel:
    if sd_path:
        return load_diffusers_model(CLIPTextModel, Path(sd_path) / "text_encoder")
    return CLIPTextModel(CLIPTextConfig(**config))


def tokenize(texts: list[str], tokenizer: str, sd_path: str | None) -> torch.Tensor:
    """Token ids (N, 77). "open_clip" uses the CLIP BPE vocabulary bundled with open_clip (works offline; the
    same vocabulary as SD1.5's tokenizer), "sd" the tokenizer folder of the SD1.5 checkpoint."""
    if tokenizer == "open_clip":
        from open_clip.tokenizer import SimpleTokenizer

        return SimpleTokenizer(context_length=CONTEXT_LENGTH)(texts)
    if tokenizer == "sd":
        if not sd_path:
            raise IGRError("model.tokenizer='sd' needs model.sd_path")
        from transformers import CLIPTokenizer

        folder = Path(sd_path) / "tokenizer"
        if not folder.is_dir():
            raise IGRError(f"{folder}: tokenizer folder not found")
        tok = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
        return tok(
            texts, padding="max_length", max_length=CONTEXT_LENGTH, truncation=True, return_tensors="pt"
        ).input_ids
    raise IGRError(f"model.tokenizer: '{tokenizer}' is not one of open_clip, sd")


class CategoryPrompts(torch.nn.Module):
    """Maps category names to cached prompt embeddings: (B,) names → (B, 77, D)."""

    def __init__(self, prompts: dict[str, str], dim: int) -> None:
        super().__init__()
        self.categories = list(CATEGORIES)
        self.texts = [prompts[c] for c in self.categories] + [""]  # last row: empty prompt (unconditional)
        self.register_buffer("embeddings", torch.zeros(len(self.texts), CONTEXT_LENGTH, dim))

    @torch.no_grad()
    def encode(self, text_encoder: CLIPTextModel, tokenizer: str, sd_path: str | None) -> None:
        ids = tokenize(self.texts, tokenizer, sd_path).to(text_encoder.device)
        text_encoder.eval()
        self.embeddings.copy_(text_encoder(ids).last_hidden_state.to(self.embeddings))

    def index(self, categories: list[str]) -> torch.Tensor:
        try:
            return torch.tensor([self.categories.index(c) for c in categories], device=self.embeddings.device)
        except ValueError:
            bad = next(c for c in categories if c not in self.categories)
            raise IGRError(
                f"unknown category '{bad}' (expected one of {', '.join(self.categories)})"
            ) from None

    def forward(self, categories: list[str]) -> torch.Tensor:
        return self.embeddings[self.index(categories)]

    def empty(self, batch: int) -> torch.Tensor:
        return self.embeddings[-1:].expand(batch, -1, -1)
