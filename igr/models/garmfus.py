"""GarmFus attention (paper §3.2, eq. 4) as a pair of diffusers attention processors.

GarmNet's self-attention layers (``attn1``) get a :class:`BankWriterProcessor` that records the layer's input
F_hl in a :class:`FeatureBank` under the layer's module name. The denoiser's ``attn1`` layers get a
:class:`GarmFusSelfAttnProcessor` that reads the feature of the same name.

The paper concatenates [F_hl; F_g] along the token axis, runs self-attention over both and keeps the latter
half. Only the latter half's queries survive the slice, so the output equals attention with
Q = W_q·F_g and K, V = W_k,v·[F_hl; F_g] — the same numbers at about half the attention cost
(``tests/test_garmfus.py`` pins the equivalence with the literal concat-and-slice version).
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0


class FeatureBank:
    """Per-layer GarmNet features, keyed by attention module name (``down_blocks.0....attn1``).

    Matching by name — not by list order — keeps GarmNet and denoiser layers paired even if a model's module
    traversal order changes. The bank keeps its features until they are replaced, so a gradient-checkpointed
    block recomputed during backward reads the same features it saw in forward.
    """

    def __init__(self) -> None:
        self.features: dict[str, torch.Tensor] | None = None

    def set(self, features: dict[str, torch.Tensor] | None) -> None:
        self.features = features


class BankWriterProcessor(AttnProcessor2_0):
    """GarmNet ``attn1``: store the self-attention input (B, N, C) under ``name``, then attend as usual."""

    def __init__(self, name: str, bank: FeatureBank) -> None:
        super().__init__()
        self.name = name
        self.bank = bank

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.bank.features is not None:
            self.bank.features[self.name] = hidden_states  # (B, h*w, C): F_hl for this layer
        return super().__call__(attn, hidden_states, *args, **kwargs)


class GarmFusSelfAttnProcessor(AttnProcessor2_0):
    """Denoiser ``attn1``: Attn(Q = F_g, K = V = [F_hl; F_g]) — eq. 4 with the latter half kept.

    With no bank features (the "w/o GarmNet" ablation) this is plain self-attention, identical to SD1.5's.
    """

    def __init__(self, name: str, bank: FeatureBank) -> None:
        super().__init__()
        self.name = name
        self.bank = bank

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        features = self.bank.features
        if features is not None:
            ref = features.get(self.name)
            if ref is None:
                raise KeyError(f"GarmNet feature bank has no entry for layer '{self.name}'")
            if ref.shape[0] != hidden_states.shape[0]:
                raise ValueError(
                    f"{self.name}: GarmNet features have batch {ref.shape[0]}, denoiser tokens {hidden_states.shape[0]}"
                )
            # keys/values over [F_hl; F_g]: (B, 2*h*w, C); queries from F_g only
            encoder_hidden_states = torch.cat([ref.to(hidden_states.dtype), hidden_states], dim=1)
        # By keyword: diffusers' processors take only ``attn`` and ``hidden_states`` positionally by contract
        # (``Attention.forward`` passes the rest as keywords), so a reordered signature cannot shift them.
        return super().__call__(
            attn, hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask,
            temb=temb, **kwargs,
        )


def self_attention_names(unet: torch.nn.Module) -> list[str]:
    """Module names of every self-attention layer (``...attn1``) in a diffusers UNet."""
    return [name[: -len(".processor")] for name in unet.attn_processors if name.endswith("attn1.processor")]


def install_processors(unet, bank: FeatureBank, cls: type) -> None:
    """Give every ``attn1`` of ``unet`` a processor of ``cls`` bound to ``bank``; other layers keep theirs."""
    procs = dict(unet.attn_processors)
    for name in self_attention_names(unet):
        procs[name + ".processor"] = cls(name, bank)
    unet.set_attn_processor(procs)
