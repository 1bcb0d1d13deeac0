"""The model card (``README.md``) of a pipeline folder: what the model is, how such a model is trained and
evaluated, how to run it, and the licences it inherits.

``igr export`` and :meth:`igr.pipeline.IGRPipeline.save_pretrained` write it into every pipeline folder, so a
folder pushed to the Hub explains itself. The YAML header is the Hub's model-card metadata.
"""

from __future__ import annotations

from pathlib import Path

from igr.config import SamplingConfig

LICENCES = """\
## Licences

This model is derived from other people's work and inherits their terms:

- **Stable Diffusion v1.5** (UNets, VAE, text encoder): the CreativeML OpenRAIL-M licence, including its use
  restrictions; they apply to this model and to its outputs' use. A tiny random-init model (`tiny` config)
  contains no SD1.5 weights.
- **IP-Adapter** (h94/IP-Adapter, Apache-2.0) and **OpenCLIP ViT-H-14** (LAION, MIT) when initialised from them.
- **Training data**: VITON-HD is released for **non-commercial research use only**; a model trained on it
  inherits that restriction. DressCode and StreetTryOn have their own non-commercial research terms.
- **The code** (the `igr` package) is Apache-2.0 (see `LICENSE` in the repository).
"""


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.1f} k"


def model_card(model, sampling: SamplingConfig | None = None, trained_on: str | None = None,
               evaluation: str | None = None) -> str:  # fmt: skip
    """The card's text for ``model`` (an :class:`igr.models.IGRModel`); ``trained_on`` and ``evaluation``
    (markdown, e.g. the table of ``igr eval``'s report) add what only the caller knows."""
    from igr.models import parameter_counts

    cfg, diffusion = model.config, model.diffusion
    sampling = sampling or SamplingConfig()
    parts = dict(garmnet=model.garmnet, denoiser=model.denoiser, vae=model.vae,
                 image_encoder=model.image_encoder, text_encoder=None)  # fmt: skip
    counts = parameter_counts(parts)
    h, w = cfg.resolution
    sd = int(model.denoiser.unet.config.block_out_channels[0]) >= 320  # SD1.5 widths, not the tiny world
    licence = "creativeml-openrail-m" if sd else "apache-2.0"
    header = "\n".join(
        [
            "---",
            f"license: {licence}",
            "library_name: igr",
            "pipeline_tag: image-to-image",
            "tags: [virtual-try-off, garment-restoration, diffusion, stable-diffusion]",
            "---",
            "",
        ]  # fmt: skip
    )
    garmnet = (
        "with GarmNet (high-level garment features)" if cfg.use_garmnet else "without GarmNet (ablation)"
    )
    lines = [
        f"# IGR garment restoration — `{cfg.name}`",
        "",
        "An implementation of *Improving Diffusion Model for Garment Restoration from Person Image* (IGR): given a "
        "photo of a person and a mask of one garment, it generates the garment as an in-shop product image "
        "(virtual try-off).",
        "",
        "## What it is",
        "",
        f"- Resolution {h}×{w} (H×W); inputs of any size are resized and padded to it.",
        f"- A GarmDenoiser (SD1.5-style UNet, {_count(counts['denoiser'])} parameters) {garmnet}"
        + (f", {_count(counts['garmnet'])} parameters" if cfg.use_garmnet else "")
        + f"; an IP-Adapter on a CLIP image embedding of the masked garment crop ({_count(counts['adapter'])}).",
        f"- Frozen VAE ({_count(counts['vae'])}) and CLIP image encoder ({_count(counts['image_encoder'])}); "
        "the three category prompts are stored as embeddings, so no text encoder is needed.",
        f"- Diffusion: {diffusion.prediction_type} prediction, {diffusion.beta_schedule} schedule"
        + (", zero terminal SNR" if diffusion.zero_terminal_snr else "")
        + f"; sampling defaults {sampling.sampler} {sampling.steps} steps, guidance {sampling.guidance_scale}.",
        "",
        "## How it is trained",
        "",
        trained_on
        or (
            "The tiny world of `make demo`: trained from random initialisation on synthetic garments "
            "(`igr make-shards synthetic`), a coarse stage then HQFT, on CPU in minutes. A demonstration of the "
            "method, not a restorer for real photos."
            if not sd
            else None
        )
        or "The paper's recipe (`configs/experiment/coarse.yaml`, then `finetune.yaml`): a coarse stage on "
        "person/garment pairs, then high-quality fine-tuning (HQFT) on a curated subset without occluded, "
        "truncated or side-view samples; AdamW lr 1e-5, global batch 32, conditions dropped together with "
        "probability 0.1 for classifier-free guidance.",
        "",
        "## How it is evaluated",
        "",
        evaluation
        or "With `igr eval` under the pinned protocol of TryOffDiff (docs/design.md §5): paired SSIM / LPIPS / DISTS on "
        "the VITON-HD test split at 1024×768, FID / KID / CLIP-FID against the real test garments, unpaired on "
        "StreetTryOn. No scores were recorded in this folder.",
        "",
        "## Use",
        "",
        "```python",
        "import torch",
        "from igr.pipeline import IGRPipeline",
        "",
        "pipe = IGRPipeline.from_pretrained(PATH_OR_HUB_ID, torch_dtype=torch.float16).to('cuda')",
        "out = pipe(person, mask, 'upper', generator=torch.Generator().manual_seed(0))",
        "out.images[0].save('garment.png')",
        "```",
        "",
        "or `igr restore --model PATH --person me.jpg --auto-mask --category upper --out garment.png`, "
        "or the web app `igr serve --model PATH`.",
        "",
        LICENCES,
    ]
    return header + "\n".join(lines)


def write_model_card(folder: str | Path, model, sampling: SamplingConfig | None = None, **facts) -> Path:
    """Write ``folder/README.md`` (callers write into a folder that is renamed into place afterwards)."""
    path = Path(folder) / "README.md"
    path.write_text(model_card(model, sampling, **facts), encoding="utf-8")
    return path
