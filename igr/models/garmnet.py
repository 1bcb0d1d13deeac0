"""GarmNet (paper §3.2): the high-level garment extractor.

A copy of the denoiser's UNet with a 5-channel input — the person latent E(p) (4, H/8, W/8) and the garment mask
area-pooled to (1, H/8, W/8) — run at the fixed timestep t = 0 with the category prompt. Its output is not used; what
matters is the input of every self-attention layer, F_hl, which :class:`BankWriterProcessor` records by layer name.
Because t is fixed, F_hl does not depend on the denoising step and GarmNet runs once per restored image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel

from igr.models.garmfus import BankWriterProcessor, FeatureBank, install_processors, self_attention_names


def _unused_tail(unet: UNet2DConditionModel) -> list[torch.nn.Module]:
    """Modules whose outputs never reach a self-attention input: the last transformer block after its ``norm1``,
    its ``proj_out``, and ``conv_norm_out``/``conv_out``. They get no gradient; freezing them keeps DDP/DeepSpeed
    from waiting for gradients that never come. Only applies to the SD layout (last up block has attention);
    ``tests/test_models.py`` checks the set against a real backward pass."""
    last_up = unet.up_blocks[-1]
    attentions = getattr(last_up, "attentions", None)
    if not attentions or len(attentions) != len(last_up.resnets) or last_up.upsamplers is not None:
        return []
    last = attentions[-1]
    block = last.transformer_blocks[-1]
    if len(last.transformer_blocks) != 1:
        return []
    tail = [
        getattr(block, n)
        for n in ("attn1", "norm2", "attn2", "norm3", "ff")
        if getattr(block, n, None) is not None
    ]
    return tail + [last.proj_out, unet.conv_norm_out, unet.conv_out]


def latent_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B,1,H,W) mask in {0,1} → (B,1,h,w) in [0,1]: the garment's share of each latent cell (area pooling),
    computed in fp32. Nearest sampling read one pixel per 8×8 cell, so a strap thinner than a cell was kept at
    one horizontal offset and lost at another; area pooling keeps every garment pixel's mass."""
    return F.interpolate(mask.float(), size=tuple(size), mode="area")


class GarmNet(torch.nn.Module):
    def __init__(self, unet: UNet2DConditionModel, timestep: int = 0) -> None:
        super().__init__()
        if unet.config.in_channels != unet.config.out_channels + 1:
            raise ValueError(
                f"GarmNet needs latent + mask input channels, got in_channels={unet.config.in_channels}"
            )
        self.unet = unet
        self.timestep = timestep
        self.bank = FeatureBank()
        install_processors(unet, self.bank, BankWriterProcessor)
        self.layer_names = self_attention_names(unet)
        for module in _unused_tail(unet):
            module.requires_grad_(False)

    def forward(
        self, person_latent: torch.Tensor, mask: torch.Tensor, text: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """person_latent (B,4,h,w), mask (B,1,H,W) in {0,1}, text (B,77,D) → {layer name: F_hl (B, h_l*w_l, C_l)}."""
        dtype = self.unet.dtype  # the boundary of a trainable part: inputs arrive fp32 (prompts, mask) or bf16
        mask_small = latent_mask(mask, person_latent.shape[-2:]).to(dtype)
        x = torch.cat([person_latent.to(dtype), mask_small], dim=1)  # (B,5,h,w)
        t = torch.full((x.shape[0],), self.timestep, device=x.device, dtype=torch.long)
        features: dict[str, torch.Tensor] = {}
        self.bank.set(features)
        try:
            self.unet(x, t, encoder_hidden_states=text.to(dtype))
        finally:
            self.bank.set(None)  # the dict escapes via the return value; the writer stops recording
        return features
