"""The paths a benchmark compares with IGR's restoration: the naive ones its optimisations replace (each must
give the same output) and candidate optimisations, each a function or a context manager around
:meth:`IGRModel.restore`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

from igr.models.garmfus import FeatureBank, self_attention_names
from igr.sampling import guided, guided_sequential, inference_scheduler, sample


@torch.no_grad()
def restore_reference(
    model,
    person: torch.Tensor,
    mask: torch.Tensor,
    category: list[str],
    latents: torch.Tensor,
    num_inference_steps: int = 25,
    guidance_scale: float = 1.5,
    sampler: str = "ddim",
    garmnet_every_step: bool = False,
    sequential_cfg: bool = False,
) -> torch.Tensor:
    """:meth:`IGRModel.restore` written the straightforward way, for the comparison: with
    ``garmnet_every_step`` GarmNet runs inside the denoise callable at every step (the naive way); with
    ``sequential_cfg`` the two CFG branches are two UNet calls (GarmNet once per branch)."""
    inputs = model.encode_inputs(person, mask, category)
    b, device = person.shape[0], person.device
    dtype = next(model.denoiser.parameters()).dtype
    keep = torch.ones(b, dtype=torch.bool, device=device)

    def branch(inp, k) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        if garmnet_every_step:
            return lambda z, t: model.eps(z, t, model.conditions(inp, k))
        cond = model.conditions(inp, k)
        return lambda z, t: model.eps(z, t, cond)

    try:
        if guidance_scale == 1.0:
            denoise = branch(inputs, keep)
        elif sequential_cfg:
            denoise = guided_sequential(branch(inputs, keep), branch(inputs, ~keep), guidance_scale)
        else:
            denoise = guided(branch(inputs.cat(inputs), torch.cat([keep, ~keep])), guidance_scale)
        scheduler = inference_scheduler(model.diffusion, sampler)
        z0 = sample(denoise, latents.to(device, dtype), scheduler, num_inference_steps)
    finally:
        model.denoiser.bank.set(None)
    return model.decode_images(z0)


class LiteralConcatProcessor:
    """The paper's eq. 4 to the letter: self-attention over Concat(F_hl, F_g) (2N queries), keep the latter half.
    Mirrors the processor of ``tests/test_garmfus.py``; without bank features it is plain self-attention."""

    def __init__(self, name: str, bank: FeatureBank) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.name, self.bank, self.inner = name, bank, AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        features = self.bank.features
        if features is None:
            return self.inner(attn, hidden_states, attention_mask=attention_mask, temb=temb)
        n = hidden_states.shape[1]
        both = torch.cat([features[self.name].to(hidden_states.dtype), hidden_states], dim=1)  # (B, 2N, C)
        return self.inner(attn, both)[:, n:]


@contextlib.contextmanager
def literal_attention(model) -> Iterator[None]:
    """Swap the denoiser's GarmFus processors for :class:`LiteralConcatProcessor` (restored on exit)."""
    unet = model.denoiser.unet
    original = dict(unet.attn_processors)
    procs = dict(original)
    for name in self_attention_names(unet):
        procs[name + ".processor"] = LiteralConcatProcessor(name, model.denoiser.bank)
    unet.set_attn_processor(procs)
    try:
        yield
    finally:
        unet.set_attn_processor(original)


@contextlib.contextmanager
def uncached_unconditional(model) -> Iterator[None]:
    """GarmNet on the constant unconditional input at every call (the cache of ``IGRModel.unconditional`` off)."""
    model.cache_unconditional = False
    model.clear_unconditional_cache()
    try:
        yield
    finally:
        model.cache_unconditional = True


@contextlib.contextmanager
def unfused_attention() -> Iterator[None]:
    """Every ``scaled_dot_product_attention`` call takes the unfused math path (softmax(QKᵀ)V materialised) —
    what attention costs without fused SDPA kernels."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        yield


def _conv_modules(model) -> list[torch.nn.Module]:
    parts = [model.denoiser.unet, model.vae]
    if model.garmnet is not None:
        parts.append(model.garmnet.unet)
    return parts


@contextlib.contextmanager
def channels_last(model) -> Iterator[None]:
    """UNets and VAE in channels-last memory format (back to contiguous on exit)."""
    parts = _conv_modules(model)
    for m in parts:
        m.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        for m in parts:
            m.to(memory_format=torch.contiguous_format)


class CompiledDenoiser:
    """``torch.compile`` of the denoiser UNet, swapped in while active; the compiled module is kept, so the
    compilation happens once (in the warm-up) however often the variant runs."""

    def __init__(self, model, backend: str = "inductor", mode: str | None = None) -> None:
        self.model = model
        self.eager = model.denoiser.unet
        self.compiled = torch.compile(self.eager, backend=backend, mode=mode)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        self.model.denoiser.unet = self.compiled
        try:
            yield
        finally:
            self.model.denoiser.unet = self.eager


@contextlib.contextmanager
def vae_option(model, slicing: bool = False, tiling: bool = False) -> Iterator[None]:
    vae = model.vae.vae
    if slicing:
        vae.enable_slicing()
    if tiling:
        vae.enable_tiling()
    try:
        yield
    finally:
        vae.disable_slicing()
        vae.disable_tiling()


@torch.no_grad()
def plain_sd_sample(
    unet,
    model,
    text: torch.Tensor,
    latents: torch.Tensor,
    num_inference_steps: int,
    guidance_scale: float,
    sampler: str = "ddim",
) -> torch.Tensor:
    """Plain SD sampling with the same scheduler, CFG and VAE decode: text (B,77,D) conditional prompts."""
    dtype = next(unet.parameters()).dtype
    empty = model.prompts.empty(text.shape[0]).to(text)
    if guidance_scale == 1.0:
        denoise = lambda z, t: unet(z, t, encoder_hidden_states=text.to(dtype)).sample  # noqa: E731
    else:
        both = torch.cat([text, empty]).to(dtype)
        denoise = guided(lambda z, t: unet(z, t, encoder_hidden_states=both).sample, guidance_scale)
    z0 = sample(
        denoise, latents.to(dtype), inference_scheduler(model.diffusion, sampler), num_inference_steps
    )
    return model.decode_images(z0)
