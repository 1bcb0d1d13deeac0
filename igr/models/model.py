"""The assembled IGR model: parts built from a :class:`ModelConfig`, and the three things everything else needs —
encode the conditions of a batch, predict ε for a noisy latent, and restore garments by sampling.

Training (:mod:`igr.system`), the restoration pipeline and the benchmarks all go through this one object.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from diffusers.utils.torch_utils import randn_tensor

from igr.config import DiffusionConfig, ModelConfig
from igr.errors import IGRError
from igr.models import adapter
from igr.models.denoiser import GarmDenoiser
from igr.models.garmnet import GarmNet
from igr.models.image_encoder import GarmentImageEncoder
from igr.models.prompts import CategoryPrompts, build_text_encoder
from igr.models.unet import add_input_channels, build_unet
from igr.models.vae import FrozenVAE, build_vae, check_latent_channels
from igr.sampling import guided, inference_scheduler, sample


@dataclass
class Inputs:
    """Encoded inputs of a batch, before any condition is dropped."""

    person_latent: torch.Tensor  # (B,4,h,w) E(p)
    mask: torch.Tensor  # (B,1,H,W) in {0,1}
    text: torch.Tensor  # (B,77,D) category prompt c
    image_embeds: torch.Tensor  # (B,E) CLIP embedding of p_g

    def select(self, keep: torch.Tensor, empty_text: torch.Tensor) -> Inputs:
        """Condition drop (§3.1): where ``keep`` is False, every condition is dropped together — empty prompt,
        zero image embedding, zero GarmNet input — so the unconditional branch runs the same code."""
        k = keep.to(self.person_latent.dtype)
        return Inputs(
            person_latent=self.person_latent * k[:, None, None, None],
            mask=self.mask * k[:, None, None, None].to(self.mask.dtype),
            text=torch.where(keep[:, None, None], self.text, empty_text.to(self.text)),
            image_embeds=self.image_embeds * k[:, None].to(self.image_embeds.dtype),
        )

    def cat(self, other: Inputs) -> Inputs:
        return Inputs(*(torch.cat([a, b]) for a, b in zip(self.astuple(), other.astuple())))

    def astuple(self) -> tuple[torch.Tensor, ...]:
        return (self.person_latent, self.mask, self.text, self.image_embeds)


@dataclass
class Conditions:
    """What the denoiser is conditioned on."""

    text: torch.Tensor  # (B,77,D)
    image_embeds: torch.Tensor  # (B,E)
    garm_feats: dict[str, torch.Tensor] | None  # {attn1 layer name: F_hl (B,N,C)}; None without GarmNet


class IGRModel(torch.nn.Module):
    def __init__(
        self,
        config: ModelConfig,
        garmnet: GarmNet | None,
        denoiser: GarmDenoiser,
        vae: FrozenVAE,
        image_encoder: GarmentImageEncoder,
        prompts: CategoryPrompts,
        diffusion: DiffusionConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.diffusion = diffusion or DiffusionConfig()
        self.garmnet = garmnet
        self.denoiser = denoiser
        self.vae = vae
        self.image_encoder = image_encoder
        self.prompts = prompts
        # The unconditional CFG branch's GarmNet features (constant inputs): computed once, see unconditional().
        self.cache_unconditional = True
        self._uncond_cache: tuple[tuple, dict[str, torch.Tensor]] | None = None

    # --- parameters -------------------------------------------------------------------------------------
    def trainable_modules(self) -> list[torch.nn.Module]:
        """GarmNet, GarmDenoiser and the adapter (whose layers live inside the denoiser UNet)."""
        return [m for m in (self.garmnet, self.denoiser) if m is not None]

    def frozen_modules(self) -> list[torch.nn.Module]:
        return [self.vae, self.image_encoder, self.prompts]

    def latent_shape(self, batch: int) -> tuple[int, int, int, int]:
        h, w = self.config.resolution
        f = self.vae.factor
        return (batch, self.denoiser.unet.config.in_channels, h // f, w // f)

    # --- conditions ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_inputs(self, person: torch.Tensor, mask: torch.Tensor, category: list[str]) -> Inputs:
        """person (B,3,H,W) in [-1,1], mask (B,1,H,W) in {0,1}, category names → frozen encodings."""
        if person.shape[-2:] != mask.shape[-2:]:
            raise IGRError(
                f"person {tuple(person.shape[-2:])} and mask {tuple(mask.shape[-2:])} sizes differ"
            )
        return Inputs(
            person_latent=self.vae.encode(person),
            mask=mask,
            text=self.prompts(category),
            image_embeds=self.image_encoder(person, mask),
        )

    def conditions(
        self, inputs: Inputs, keep: torch.Tensor | None = None, keep_image: torch.Tensor | None = None
    ) -> Conditions:
        """Run GarmNet (once) on the inputs, dropping every condition where ``keep`` is False and the image
        embedding alone where ``keep_image`` is False."""
        if keep is not None:
            inputs = inputs.select(keep, self.prompts.empty(1))
        if keep_image is not None:
            inputs = dataclasses.replace(
                inputs, image_embeds=inputs.image_embeds * keep_image[:, None].to(inputs.image_embeds.dtype)
            )
        feats = None
        if self.garmnet is not None:
            feats = self.garmnet(inputs.person_latent, inputs.mask, inputs.text)
        return Conditions(inputs.text, inputs.image_embeds, feats)

    def eps(self, z_t: torch.Tensor, t: torch.Tensor, cond: Conditions) -> torch.Tensor:
        return self.denoiser(z_t, t, cond.text, cond.image_embeds, cond.garm_feats)

    # --- classifier-free guidance ------------------------------------------------------------------------
    @torch.no_grad()
    def unconditional(self, inputs: Inputs) -> Conditions:
        """The dropped branch of CFG (§3.1) for a batch like ``inputs``: empty prompt, zero image embedding, and
        GarmNet's features of a zero latent and zero mask. Those inputs are constants, so the features are
        computed once per model (and device, dtype, latent size) and reused. The cache key holds the version
        counters of GarmNet's parameters (optimizer steps and ``load_state_dict`` bump them) and ``train()`` clears
        it; a write through ``param.data`` bypasses both, so call :meth:`clear_unconditional_cache` after one."""
        b = inputs.person_latent.shape[0]
        text = self.prompts.empty(b).to(inputs.text)
        image_embeds = torch.zeros_like(inputs.image_embeds)
        if self.garmnet is None:
            return Conditions(text, image_embeds, None)
        z, m = inputs.person_latent[:1], inputs.mask[:1]
        key = (z.shape, m.shape, z.dtype, z.device, text.dtype)
        key += tuple((id(p), p._version) for p in self.garmnet.parameters())
        if self.cache_unconditional and self._uncond_cache is not None and self._uncond_cache[0] == key:
            feats = self._uncond_cache[1]
        else:
            feats = self.garmnet(torch.zeros_like(z), torch.zeros_like(m), text[:1])  # {layer: (1,N,C)}
            self._uncond_cache = (key, feats) if self.cache_unconditional else None
        return Conditions(text, image_embeds, {k: v.expand(b, -1, -1) for k, v in feats.items()})

    def clear_unconditional_cache(self) -> None:
        self._uncond_cache = None

    def train(self, mode: bool = True):
        self._uncond_cache = None  # weights are about to change
        return super().train(mode)

    def sampling_conditions(self, inputs: Inputs, guidance_scale: float) -> Conditions:
        """Conditions for sampling: the conditional branch alone at s = 1 (eq. 2 reduces to it), else the
        conditional (first B) and unconditional (last B) branches stacked for one batched UNet call."""
        cond = self.conditions(inputs)
        if guidance_scale == 1.0:
            return cond
        unc = self.unconditional(inputs)
        feats = None
        if cond.garm_feats is not None:
            feats = {k: torch.cat([v, unc.garm_feats[k]]) for k, v in cond.garm_feats.items()}
        return Conditions(torch.cat([cond.text, unc.text]), torch.cat([cond.image_embeds, unc.image_embeds]), feats)

    def denoise_fn(self, cond: Conditions, guidance_scale: float):
        """(z_t, t) → guided prediction, for conditions from :meth:`sampling_conditions`."""
        if guidance_scale == 1.0:
            return lambda z, t: self.eps(z, t, cond)
        return guided(lambda z, t: self.eps(z, t, cond), guidance_scale)

    # --- sampling -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def restore(
        self,
        person: torch.Tensor,
        mask: torch.Tensor,
        category: list[str],
        num_inference_steps: int = 25,
        guidance_scale: float = 1.5,
        generator: torch.Generator | list[torch.Generator] | None = None,
        sampler: str = "ddim",
        eta: float = 0.0,
        progress=None,
        latents: torch.Tensor | None = None,
        return_latents: bool = False,
        scheduler=None,
        callback: Callable | None = None,
        placed: Callable[..., AbstractContextManager] | None = None,
    ) -> torch.Tensor:
        """Restore garments: (B,3,H,W) in [0,1]. The one restoration loop — encode → conditions → sample →
        decode — that training callbacks, evaluation, the benchmarks and :class:`igr.pipeline.IGRPipeline` call.
        GarmNet runs once, before the loop, on the conditional inputs (the unconditional branch reuses the
        features cached by :meth:`unconditional`).

        ``generator`` may be one generator or one per image, on any device (the noise is drawn there and moved);
        ``latents`` gives z_T directly. Inputs may stay float32 while the model runs in fp16/bf16: the frozen
        encoders cast them. ``scheduler`` replaces the one built from ``sampler`` (it is used as given: pass a
        fresh one per call); ``callback(i, t, z)`` runs after each step and may return replacement latents;
        ``placed(*modules)`` is a context manager that puts the parts used once per call on the execution device
        for their use (the pipeline's CPU offload)."""
        if num_inference_steps < 1:
            raise IGRError(f"num_inference_steps={num_inference_steps}: must be at least 1")
        b, device = person.shape[0], person.device
        if isinstance(generator, list) and len(generator) != b:
            raise IGRError(f"got {len(generator)} generators for {b} images")
        dtype = next(self.denoiser.parameters()).dtype
        shape = self.latent_shape(b)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise IGRError(f"latents have shape {tuple(latents.shape)}, expected {shape}")
        place = placed or (lambda *modules: contextlib.nullcontext())
        if scheduler is None:
            scheduler = inference_scheduler(self.diffusion, sampler)
        try:
            with place(self.vae, self.image_encoder, self.prompts):
                inputs = self.encode_inputs(person, mask, category)
            # GarmNet runs once on the B conditional inputs; the unconditional branch's features are cached.
            with place(self.garmnet, self.prompts):
                cond = self.sampling_conditions(inputs, guidance_scale)
            z0 = sample(self.denoise_fn(cond, guidance_scale), latents.to(device, dtype), scheduler,
                        num_inference_steps, generator=generator, eta=eta, progress=progress, callback=callback)
        finally:
            self.denoiser.bank.set(None)  # release GarmNet's features, also if sampling failed
        if return_latents:
            return z0
        with place(self.vae):
            return self.decode_images(z0)

    def decode_images(self, z0: torch.Tensor) -> torch.Tensor:
        """Latents z_0 → garments (B,3,H,W) in [0,1], float32."""
        return ((self.vae.decode(z0).float() + 1) / 2).clamp(0, 1)


def build_model(
    config: ModelConfig,
    diffusion: DiffusionConfig | None = None,
    meta: bool = False,
    encode_prompts: bool = True,
) -> IGRModel:
    """Build every part from ``config``. With ``meta`` the parts are built on the meta device from the
    architecture dicts alone (no files read, no memory used) — for parameter counts. ``encode_prompts=False``
    skips the text encoder (the embeddings are loaded afterwards, as pipeline folders do)."""
    diffusion = diffusion or DiffusionConfig()
    parts = build_parts(
        config, meta=meta, encode_prompts=encode_prompts, garmnet_timestep=diffusion.garmnet_timestep
    )
    parts.pop("text_encoder")
    return IGRModel(config, diffusion=diffusion, **parts)


def build_parts(
    config: ModelConfig,
    meta: bool = False,
    encode_prompts: bool = True,
    garmnet_timestep: int | None = None,
) -> dict[str, torch.nn.Module | None]:
    sd_path = None if meta else config.sd_path
    ctx = torch.device("meta") if meta else torch.device("cpu")
    with ctx:
        base = build_unet(config.unet, sd_path)
    with torch.device("meta") if (meta or not encode_prompts) else ctx:
        text_encoder = build_text_encoder(config.text_encoder, None if not encode_prompts else sd_path)
    with ctx:
        if text_encoder.config.hidden_size != base.config.cross_attention_dim:
            raise IGRError(
                f"text encoder width {text_encoder.config.hidden_size} != UNet cross_attention_dim "
                f"{base.config.cross_attention_dim}"
            )
        image_encoder = GarmentImageEncoder(
            config.image_encoder, config.clip_size, None if meta else config.image_encoder_path
        )
        # GarmNet starts as a copy of the (pretrained) denoiser UNet, plus a zero-initialised mask channel.
        garmnet = None
        if config.use_garmnet:
            garmnet = GarmNet(
                add_input_channels(copy.deepcopy(base), 1),
                timestep=DiffusionConfig().garmnet_timestep if garmnet_timestep is None else garmnet_timestep,
            )
        denoiser = GarmDenoiser(
            base,
            image_embed_dim=image_encoder.embed_dim,
            num_ip_tokens=config.num_ip_tokens,
            ip_scale=config.ip_scale,
            ip_adapter_path=None if meta else config.ip_adapter_path,
        )
        vae = FrozenVAE(build_vae(config.vae, sd_path, None if meta else config.vae_path))
        check_latent_channels(vae, dict(base.config))
        prompts = CategoryPrompts(config.prompts, dim=text_encoder.config.hidden_size)
    if not meta and encode_prompts:
        prompts.encode(text_encoder, config.tokenizer, config.sd_path)
    text_encoder.requires_grad_(False)
    if config.gradient_checkpointing:
        for m in (garmnet, denoiser):
            if m is not None:
                m.unet.enable_gradient_checkpointing()
    return dict(
        garmnet=garmnet,
        denoiser=denoiser,
        vae=vae,
        image_encoder=image_encoder,
        prompts=prompts,
        text_encoder=text_encoder,
    )


def parameter_counts(parts: dict[str, torch.nn.Module | None]) -> dict[str, int]:
    """Per-component counts; the adapter's layers are counted apart from the denoiser they live in."""
    counts: dict[str, int] = {}
    den = parts["denoiser"].unet
    counts["garmnet"] = sum(p.numel() for p in parts["garmnet"].parameters()) if parts.get("garmnet") else 0
    counts["denoiser"] = sum(
        p.numel() for n, p in den.named_parameters() if not adapter.is_adapter_parameter(n)
    )
    counts["adapter"] = sum(p.numel() for n, p in den.named_parameters() if adapter.is_adapter_parameter(n))
    for name in ("vae", "image_encoder", "text_encoder"):
        counts[name] = sum(p.numel() for p in parts[name].parameters()) if parts.get(name) is not None else 0
    total = sum(counts.values())
    # GarmNet's unused tail is frozen (see garmnet._unused_tail), so count requires_grad, not modules.
    trainable = [m for m in (parts.get("garmnet"), parts["denoiser"]) if m is not None]
    counts["trainable"] = sum(p.numel() for m in trainable for p in m.parameters() if p.requires_grad)
    counts["frozen"] = total - counts["trainable"]
    return counts
