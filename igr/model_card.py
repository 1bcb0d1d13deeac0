"""The model card (``README.md``) of a pipeline folder: what the model is, how such a model is trained and
evaluated, how to run it, and the licences it inherits.

``igr export`` and :meth:`igr.pipeline.IGRPipeline.save_pretrained` write it into every pipeline folder, so a
folder pushed to the Hub explains itself. It is a :class:`huggingface_hub.ModelCard` whose metadata
(:class:`huggingface_hub.ModelCardData`) says ``library_name: diffusers`` and ``pipeline_tag: image-to-image``,
so the Hub files the model with diffusers' image-to-image models.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from igr.config import SD15_REPO, SamplingConfig

# Replaced by the reader with their folder or Hub id; the usage snippet is run as written by tests/test_model_card.py.
MODEL_ID = "PATH_OR_HUB_ID"

# IGRPipeline.from_pretrained is what loads a pipeline folder today (local folder or Hub id).
USAGE = f"""\
```python
import torch
from PIL import Image
from igr.pipeline import IGRPipeline  # pip install igr

device = "cuda" if torch.cuda.is_available() else "cpu"
dtype = torch.float16 if device == "cuda" else torch.float32
pipe = IGRPipeline.from_pretrained("{MODEL_ID}", torch_dtype=dtype).to(device)
person = Image.open("person.jpg")  # any size: resized and padded to the model's resolution
mask = Image.open("mask.png")  # the garment to restore, white on black
out = pipe(person, mask=mask, category="upper", generator=torch.Generator().manual_seed(0))
out.images[0].save("garment.png")
```

From a shell: `igr restore --model {MODEL_ID} --person person.jpg --mask mask.png --category upper --out garment.png`
(`--auto-mask` instead of `--mask` makes the mask with a clothes parser), or the web app
`igr serve --model {MODEL_ID}` (`pip install 'igr[app]'`).
"""

CITATION = """\
## Citation

The method is from:

```bibtex
@article{shen2024igr,
  title   = {{IGR}: Improving Diffusion Model for Garment Restoration from Person Image},
  author  = {Shen, Le and Huang, Rong and Wang, Zhijie},
  journal = {arXiv preprint arXiv:2412.11513},
  year    = {2024}
}
```
"""

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


def build_model_card(model, sampling: SamplingConfig | None = None, trained_on: str | None = None,
                     evaluation: str | None = None) -> ModelCard:  # fmt: skip
    """The card for ``model`` (an :class:`igr.models.IGRModel`); ``trained_on`` and ``evaluation`` (markdown, e.g.
    the table of ``igr eval``'s report) add what only the caller knows."""
    from igr.models import parameter_counts

    cfg, diffusion = model.config, model.diffusion
    sampling = sampling or SamplingConfig()
    parts = dict(garmnet=model.garmnet, denoiser=model.denoiser, vae=model.vae,
                 image_encoder=model.image_encoder, text_encoder=None)  # fmt: skip
    counts = parameter_counts(parts)
    h, w = cfg.resolution
    sd = int(model.denoiser.unet.config.block_out_channels[0]) >= 320  # SD1.5 widths, not the tiny world
    data = ModelCardData(
        license="creativeml-openrail-m" if sd else "apache-2.0",
        library_name="diffusers",
        pipeline_tag="image-to-image",
        tags=["virtual-try-off", "garment-restoration", "diffusion", "stable-diffusion", "igr"],
        # Only when the weights started from SD1.5's: an SD-sized random init is not derived from it.
        base_model=SD15_REPO if cfg.sd_path else None,
    )
    garmnet = (
        "with GarmNet (high-level garment features)" if cfg.use_garmnet else "without GarmNet (ablation)"
    )
    lines = [
        f"# IGR garment restoration — `{cfg.name}`",
        "",
        "An implementation of *IGR: Improving Diffusion Model for Garment Restoration from Person Image* (Shen, "
        "Huang and Wang, 2024): given a photo of a person and a mask of one garment, it generates the garment as "
        "an in-shop product image (virtual try-off).",
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
        or "With `igr eval` (`pip install 'igr[metrics]'`) under TryOffDiff's evaluation protocol (section 5 of "
        "docs/design.md in the repository): paired SSIM / LPIPS / DISTS on the VITON-HD test split at 1024×768, FID / KID / CLIP-FID "
        "against the real test garments, unpaired on StreetTryOn. No scores were recorded in this folder.",
        "",
        "## Use",
        "",
        USAGE,
        LICENCES,
        CITATION,
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def model_card(model, sampling: SamplingConfig | None = None, trained_on: str | None = None,
               evaluation: str | None = None) -> str:  # fmt: skip
    """The card's text (``README.md``) for ``model``; see :func:`build_model_card`."""
    return str(build_model_card(model, sampling, trained_on, evaluation))


def write_model_card(folder: str | Path, model, sampling: SamplingConfig | None = None, **facts) -> Path:
    """Write ``folder/README.md`` (callers write into a folder that is renamed into place afterwards)."""
    path = Path(folder) / "README.md"
    build_model_card(model, sampling, **facts).save(path)
    return path
