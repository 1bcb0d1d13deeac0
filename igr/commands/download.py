"""``igr download-weights --to DIR``: fetch every pretrained file the sd15 config and the automatic garment masks
need (users with a network).

This is the only code in the project that touches the network. It writes the layout that
``configs/model/sd15.yaml`` points at (paths relative to the repository root when ``--to weights``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from igr.config import SD15_REPO
from igr.errors import IGRError

SD15_PATTERNS = [
    "model_index.json",
    "scheduler/*",
    "tokenizer/*",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]
IP_ADAPTER = ("h94/IP-Adapter", "models/ip-adapter_sd15.safetensors")
OPEN_CLIP_H14 = ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "open_clip_pytorch_model.bin")
# The clothes parser for automatic garment masks (igr.masking; configs/masking.yaml points at it).
PARSER_REPO = "mattmdjaga/segformer_b2_clothes"
PARSER_FILES = ["config.json", "preprocessor_config.json", "model.safetensors"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", default="weights", help="destination folder (default: weights/)")
    parser.add_argument(
        "--what",
        default="all",
        choices=["all", "sd15", "ip-adapter", "image-encoder", "metrics", "parser"],
        help="which group of files to fetch",
    )


def run(args: argparse.Namespace) -> int:
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub is a declared dependency
        raise IGRError("huggingface_hub is not installed (pip install huggingface_hub)") from exc
    root = Path(args.to)
    root.mkdir(parents=True, exist_ok=True)
    want = {args.what} if args.what != "all" else {"sd15", "ip-adapter", "image-encoder", "metrics", "parser"}
    try:
        if "sd15" in want:
            print(f"SD1.5 → {root / 'stable-diffusion-v1-5'}")
            snapshot_download(
                SD15_REPO, local_dir=root / "stable-diffusion-v1-5", allow_patterns=SD15_PATTERNS
            )
        if "ip-adapter" in want:
            print(f"IP-Adapter SD1.5 → {root / 'ip-adapter'}")
            hf_hub_download(IP_ADAPTER[0], IP_ADAPTER[1], local_dir=root / "ip-adapter")
        if "image-encoder" in want:
            print(f"open_clip ViT-H-14 → {root / 'open_clip-vit-h-14'}")
            hf_hub_download(OPEN_CLIP_H14[0], OPEN_CLIP_H14[1], local_dir=root / "open_clip-vit-h-14")
        if "parser" in want:
            print(f"SegFormer clothes parser → {root / 'segformer_b2_clothes'}")
            snapshot_download(PARSER_REPO, local_dir=root / "segformer_b2_clothes", allow_patterns=PARSER_FILES)
        if "metrics" in want:
            from igr.metrics.weights import download_metric_weights

            download_metric_weights(root / "metrics")
    except IGRError:
        raise
    except Exception as exc:
        raise IGRError(
            f"download into {root} failed ({exc.__class__.__name__}: {str(exc).splitlines()[0]})"
        ) from exc
    print(f"done: weights under {root}")
    return 0
