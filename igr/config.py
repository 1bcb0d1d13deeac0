"""Typed configs for the model, diffusion and optimiser.

Defaults come from ``configs/paper.yaml`` — the one place that holds the paper's numbers — so a config file
only states what it changes. ``load_model_config`` reads a YAML (a plain mapping, or the ``model:`` section of an
experiment file) into a checked :class:`ModelConfig`; an unknown key is an error that names the nearest valid key.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from igr.errors import IGRError

CONFIG_DIR = Path(str(resources.files("igr") / "configs"))
PAPER = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "paper.yaml"), resolve=True)
CATEGORIES = ("upper", "lower", "full")
# The Hub repository of the SD1.5 weights IGR starts from: `igr download-weights` fetches it, model cards cite it.
SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
LR_PARTS = ("garmnet", "denoiser", "adapter")  # what optim.lr_scale can scale


def _paper(*path: str) -> Any:
    node: Any = PAPER
    for key in path:
        node = node[key]
    return node


@dataclass
class DiffusionConfig:
    train_timesteps: int = _paper("diffusion", "train_timesteps")
    beta_start: float = _paper("diffusion", "beta_start")
    beta_end: float = _paper("diffusion", "beta_end")
    beta_schedule: str = _paper("diffusion", "beta_schedule")
    condition_drop: float = _paper("diffusion", "condition_drop")
    # Of the samples that keep their conditions, the share whose IP-Adapter image embedding alone is zeroed (the
    # prompt and GarmNet's input stay), as IP-Adapter trains with image and text dropped independently. 0 = the
    # paper's joint drop only. (In the tiny world it did not make the model use GarmNet: docs/tiny-world.md, round 8.)
    image_drop: float = _paper("diffusion", "image_drop")
    # "none": plain MSE on the prediction. "truncated_snr": each sample's error weighted as its z0 error times
    # clamp(SNR(t), 1, snr_gamma) (Salimans & Ho 2022's max(SNR, 1), capped), whatever the prediction type: small t,
    # where a z0-predicting model may lose the detail it is given, count up to snr_gamma times more.
    loss_weighting: str = _paper("diffusion", "loss_weighting")
    snr_gamma: float = _paper("diffusion", "snr_gamma")
    # Which t the training draws: "none" = uniform over the training timesteps (SD1.5's, so the paper's); "later" /
    # "earlier" = the last / first `timestep_bias_portion` of them drawn `timestep_bias_multiplier` times as often
    # (diffusers' SDXL training script's timestep bias). A z0-model's kind and silhouette are its prediction at the
    # largest t, the conditional mean from pure noise (docs/tiny-world.md, round 11).
    timestep_bias: str = _paper("diffusion", "timestep_bias")
    timestep_bias_portion: float = _paper("diffusion", "timestep_bias_portion")
    timestep_bias_multiplier: float = _paper("diffusion", "timestep_bias_multiplier")
    garmnet_timestep: int = _paper("garmnet_timestep")
    # SD1.5's parameterisation (the paper fine-tunes SD1.5, so it keeps it). The tiny world trains from scratch
    # and may choose v-prediction on a zero-terminal-SNR schedule (Lin et al. 2024): with SD's schedule the last
    # step still leaks the image mean, which a from-scratch model then cannot set (tinted, washed-out colours).
    prediction_type: str = _paper("diffusion", "prediction_type")  # epsilon | v_prediction | sample
    zero_terminal_snr: bool = _paper("diffusion", "zero_terminal_snr")
    timestep_spacing: str = _paper("diffusion", "timestep_spacing")  # leading (SD1.5) | trailing | linspace

    def __post_init__(self) -> None:
        checks = {
            "prediction_type": (self.prediction_type, ("epsilon", "v_prediction", "sample")),
            "timestep_spacing": (self.timestep_spacing, ("leading", "trailing", "linspace")),
            "loss_weighting": (self.loss_weighting, ("none", "truncated_snr")),
            "timestep_bias": (self.timestep_bias, ("none", "later", "earlier")),
        }
        for key, (value, allowed) in checks.items():
            if value not in allowed:
                raise IGRError(f"diffusion.{key}: '{value}' is not one of {', '.join(allowed)}")
        for key in ("condition_drop", "image_drop"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise IGRError(f"diffusion.{key}: {getattr(self, key)} is not a probability in [0, 1]")
        if not self.snr_gamma >= 1:
            raise IGRError(f"diffusion.snr_gamma: {self.snr_gamma} must be >= 1 (the weight is clamped to [1, gamma])")
        if not 0.0 < self.timestep_bias_portion < 1.0:
            raise IGRError(f"diffusion.timestep_bias_portion: {self.timestep_bias_portion} must be in (0, 1)")
        if not self.timestep_bias_multiplier > 0:
            raise IGRError(f"diffusion.timestep_bias_multiplier: {self.timestep_bias_multiplier} must be > 0")
        if self.zero_terminal_snr and self.prediction_type == "epsilon":
            raise IGRError("diffusion.zero_terminal_snr needs prediction_type v_prediction or sample (ε is "
                           "undefined at zero SNR)")


@dataclass
class SamplingConfig:
    steps: int = _paper("sampling", "steps")
    guidance_scale: float = _paper("sampling", "guidance_scale")
    sampler: str = "ddim"  # "ddim" (paper) or "dpmsolver++"
    eta: float = 0.0


@dataclass
class OptimConfig:
    lr: float = _paper("optim", "lr")
    weight_decay: float = _paper("optim", "weight_decay")
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    # After warm-up: "constant" (the paper's fine-tuning of SD1.5) or "cosine" (decay to 0 at trainer.max_steps,
    # for short from-scratch runs; in the tiny world it measured the same as constant, docs/tiny-world.md round 5).
    decay: str = "constant"
    # Multipliers on ``lr`` for the trained parts: "garmnet", "denoiser" (its UNet) and "adapter" (the IP-Adapter's
    # projection and K/V-ip layers, which live inside the denoiser UNet). Empty = one lr for all, as the paper
    # (which starts every part from pretrained weights, the IP-Adapter included).
    lr_scale: dict[str, float] = field(default_factory=dict)
    # Gradient clipping is the trainer's ``gradient_clip_val`` (the one setting every strategy, DeepSpeed
    # included, applies); the experiment configs set it.

    def __post_init__(self) -> None:
        # Checked here, when the config is built: AdamW would only refuse a bad value once the run folder,
        # its config.yaml and the TensorBoard files exist.
        if not self.lr > 0:
            raise IGRError(f"optim.lr: {self.lr} must be > 0")
        if self.weight_decay < 0:
            raise IGRError(f"optim.weight_decay: {self.weight_decay} must be >= 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise IGRError(f"optim.betas: {tuple(self.betas)} must be two values in [0, 1)")
        if self.warmup_steps < 0:
            raise IGRError(f"optim.warmup_steps: {self.warmup_steps} must be >= 0")
        if self.decay not in ("constant", "cosine"):
            raise IGRError(f"optim.decay: '{self.decay}' must be 'constant' or 'cosine'")
        for part, scale in dict(self.lr_scale).items():
            if part not in LR_PARTS:
                raise IGRError(f"optim.lr_scale: unknown part '{part}' (one of {', '.join(LR_PARTS)})")
            if not (isinstance(scale, (int, float)) and scale > 0):
                raise IGRError(f"optim.lr_scale.{part}: {scale} must be a number > 0")


@dataclass
class ModelConfig:
    """The whole IGR model. ``sd_path`` set → UNets, VAE and text encoder load from a diffusers SD1.5 folder;
    unset → every component is built from the architecture dicts below with random init (the tiny world)."""

    name: str = "custom"
    resolution: tuple[int, int] = tuple(_paper("resolution"))  # (H, W) of person and garment images
    # Pretrained weights (local paths; ``igr download-weights`` fetches them).
    sd_path: str | None = None  # diffusers folder with unet/ vae/ text_encoder/ tokenizer/
    vae_path: str | None = None  # overrides sd_path/vae (e.g. the tiny VAE trained by the demo)
    ip_adapter_path: str | None = None  # ip-adapter_sd15.safetensors or .bin
    image_encoder_path: str | None = None  # open_clip checkpoint (ViT-H-14 for SD1.5)
    # Architectures (used when no weights are given, and by `igr info` on the meta device).
    unet: dict[str, Any] = field(default_factory=dict)  # UNet2DConditionModel kwargs (4-channel denoiser)
    vae: dict[str, Any] = field(default_factory=dict)  # AutoencoderKL kwargs
    text_encoder: dict[str, Any] = field(default_factory=dict)  # transformers CLIPTextConfig kwargs
    tokenizer: str = "open_clip"  # "open_clip" (its bundled BPE vocab, offline) or "sd" (sd_path/tokenizer)
    image_encoder: dict[str, Any] = field(default_factory=lambda: {"model_name": "ViT-H-14"})
    # IP-Adapter (eq. 3)
    clip_size: int = _paper("ip_adapter", "clip_size")
    num_ip_tokens: int = _paper("ip_adapter", "num_tokens")
    ip_scale: float = _paper("ip_adapter", "scale")
    # GarmNet (eq. 4); False gives the "w/o GarmNet" ablation of Table 2.
    use_garmnet: bool = True
    prompts: dict[str, str] = field(default_factory=lambda: dict(_paper("prompts")))
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        self.resolution = tuple(int(v) for v in self.resolution)
        missing = [c for c in CATEGORIES if c not in self.prompts]
        if missing:
            raise IGRError(f"model.prompts: missing prompt for categories {missing}")
        h, w = self.resolution
        if h % 8 or w % 8:
            raise IGRError(f"model.resolution: {h}x{w} must be divisible by 8")


def _check_keys(cls: type, data: dict[str, Any], where: str) -> None:
    valid = [f.name for f in fields(cls)]
    for key in data:
        if key not in valid:
            near = difflib.get_close_matches(key, valid, n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else f"; valid keys: {', '.join(valid)}"
            raise IGRError(f"{where}: unknown key '{key}'{hint}")


def model_config_from_dict(data: dict[str, Any], where: str = "model config") -> ModelConfig:
    _check_keys(ModelConfig, data, where)
    return ModelConfig(**data)


def yaml_error_line(exc: BaseException) -> str:
    """One line from a YAML error: PyYAML's messages span several lines (problem, then a caret excerpt)."""
    mark = getattr(exc, "problem_mark", None)
    lines = str(exc).strip().splitlines() or [exc.__class__.__name__]
    problem = getattr(exc, "problem", None) or lines[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise IGRError(f"{path}: config file not found")
    try:
        # literally: a model config is data, and ${oc.env:...} must not copy the environment into a model.yaml
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as exc:  # omegaconf raises several types for bad YAML
        raise IGRError(f"{path}: not a readable YAML config ({yaml_error_line(exc)})") from None
    if not isinstance(data, dict):
        raise IGRError(f"{path}: expected a mapping at the top level")
    return data


def _system_section(data: dict) -> dict | None:
    """The IGRSystem arguments of an experiment file (``model: {init_args: {...}}`` or ``model: {...}``)."""
    node = data.get("model")
    if not isinstance(node, dict):
        return None
    return node.get("init_args", node)


def load_model_config(path: str | Path) -> ModelConfig:
    """Read a model YAML. Accepts a bare model mapping, or an experiment file with a ``model:`` section
    (LightningCLI layout: ``model: {init_args: {model: {...}}}`` or ``model: {...}``, where ``model.model`` may
    also name a model YAML relative to the experiment file, as LightningCLI reads it)."""
    path = Path(path)
    node: Any = _read_yaml(path)
    system = _system_section(node)
    if system is not None:
        node = system.get("model", system)
        if isinstance(node, str):
            return load_model_config(path.parent / node)
    return model_config_from_dict(node, where=str(path))


def load_diffusion_config(path: str | Path) -> DiffusionConfig:
    """The ``model.diffusion`` section of an experiment file (the paper's defaults where it has none, or for a
    bare model YAML), checked like the model section."""
    path = Path(path)
    system = _system_section(_read_yaml(path)) or {}
    data = system.get("diffusion") or {}
    where = f"{path}: model.diffusion"
    if isinstance(data, str):  # a diffusion YAML, relative to the experiment file (as LightningCLI reads it)
        where, data = str(path.parent / data), _read_yaml(path.parent / data)
    _check_keys(DiffusionConfig, data, where)
    return DiffusionConfig(**data)


def parse_size(text: str, what: str = "--size") -> tuple[int, int]:
    """``"1024x768"`` (H×W) → (1024, 768); one place for every ``--size``-style option."""
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise IGRError(f"{what} '{text}': expected HxW, e.g. 1024x768") from None
    if h <= 0 or w <= 0:
        raise IGRError(f"{what} '{text}': height and width must be positive")
    return h, w
