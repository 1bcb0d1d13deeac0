"""A tiny random-init clothes-parsing SegFormer with the segformer_b2_clothes label set, saved to a folder."""

from __future__ import annotations

from pathlib import Path

import torch

from igr.masking import CLOTHES_LABELS


def make_parser(path: Path, label: int | None = None, seed: int = 0) -> Path:
    """Save a SegFormer (2 tiny encoder blocks, 18 labels) and its processor (32×32 input) to ``path``. With
    ``label`` the classifier is set to predict that label everywhere — a parser whose answer a test knows."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    torch.manual_seed(seed)
    config = SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], patch_sizes=[7, 3],
        strides=[4, 2], num_attention_heads=[1, 1], mlp_ratios=[2, 2], decoder_hidden_size=16,
        num_labels=len(CLOTHES_LABELS), id2label=dict(enumerate(CLOTHES_LABELS)),
        label2id={n: i for i, n in enumerate(CLOTHES_LABELS)},
    )  # fmt: skip
    model = SegformerForSemanticSegmentation(config).eval()
    if label is not None:
        with torch.no_grad():
            model.decode_head.classifier.weight.zero_()
            model.decode_head.classifier.bias.fill_(-5.0)
            model.decode_head.classifier.bias[label] = 5.0
    model.save_pretrained(path)
    SegformerImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return Path(path)
