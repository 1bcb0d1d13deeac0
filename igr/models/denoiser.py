"""GarmDenoiser (paper §3.2): SD1.5's UNet with GarmFus blocks.

Every self-attention layer attends over [F_hl; F_g] (eq. 4, :mod:`igr.models.garmfus`); every cross-attention
layer adds the IP-Adapter's image-token attention to the text attention (eq. 3, :mod:`igr.models.adapter`).
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from igr.models import adapter
from igr.models.garmfus import FeatureBank, GarmFusSelfAttnProcessor, install_processors


class GarmDenoiser(torch.nn.Module):
    def __init__(
        self,
        unet: UNet2DConditionModel,
        image_embed_dim: int,
        num_ip_tokens: int = 4,
        ip_scale: float = 1.0,
        ip_adapter_path: str | None = None,
    ) -> None:
        super().__init__()
        self.unet = unet
        # IP-Adapter first: diffusers' loader re-creates every processor, ours are installed on top.
        adapter.install(unet, image_embed_dim, num_ip_tokens, ip_scale, ip_adapter_path)
        self.bank = FeatureBank()
        install_processors(unet, self.bank, GarmFusSelfAttnProcessor)

    def set_ip_scale(self, scale: float) -> None:
        adapter.set_scale(self.unet, scale)

    def forward(
        self,
        z_t: torch.Tensor,
        t: torch.Tensor,
        text: torch.Tensor,
        image_embeds: torch.Tensor,
        garm_feats: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """z_t (B,4,h,w), t (B,), text (B,77,D), image_embeds (B,E), garm_feats {layer: (B,N,C)} → ε̂ (B,4,h,w)."""
        self.bank.set(garm_feats)  # kept until the next call, so checkpointed recomputation sees it
        dtype = self.unet.dtype  # one cast at the boundary: prompts and CLIP embeddings arrive fp32
        return self.unet(
            z_t.to(dtype),
            t,
            encoder_hidden_states=text.to(dtype),
            added_cond_kwargs={"image_embeds": [image_embeds[:, None].to(dtype)]},  # one image per sample
        ).sample
