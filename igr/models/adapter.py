"""IP-Adapter (paper eq. 3): decoupled cross-attention on CLIP image tokens, through diffusers' own classes.

Attn(Q, K_c, V_c) + λ·Attn(Q, K_ll, V_ll): diffusers' ``IPAdapterAttnProcessor2_0`` on every cross-attention
layer and an ``ImageProjection`` (image embedding → ``num_tokens`` tokens) as the UNet's ``encoder_hid_proj``.
Both are installed by diffusers' IP-Adapter loader (``UNet2DConditionModel._load_ip_adapter_weights``) from a
state dict in the public ``ip-adapter_sd15`` layout — a file on disk, or a fresh one made here — so the public
weights and our own checkpoints go through one code path.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from diffusers.models.embeddings import ImageProjection
from diffusers.utils import logging as diffusers_logging

from igr.errors import WeightsError
from igr.weights_io import check_shapes, read_state_dict

IPState = dict[str, dict[str, torch.Tensor]]  # {"image_proj": {...}, "ip_adapter": {...}}


def _cross_attention_ids(unet: UNet2DConditionModel) -> dict[int, str]:
    """Public-layout key id → cross-attention module name. The public files number attention processors in
    ``unet.attn_processors`` order, counting from 1 and stepping over self-attention (1, 3, 5, ...)."""
    ids, key_id = {}, 1
    for name in unet.attn_processors:
        if not name.endswith("attn1.processor"):
            ids[key_id] = name[: -len(".processor")]
            key_id += 2
    return ids


def expected_shapes(unet: UNet2DConditionModel, image_embed_dim: int, num_tokens: int) -> dict[str, dict]:
    cross_dim = unet.config.cross_attention_dim
    proj = {
        "proj.weight": (cross_dim * num_tokens, image_embed_dim),
        "proj.bias": (cross_dim * num_tokens,),
        "norm.weight": (cross_dim,),
        "norm.bias": (cross_dim,),
    }
    attn = {}
    for key_id, name in _cross_attention_ids(unet).items():
        hidden = unet.get_submodule(name).to_k.out_features
        attn[f"{key_id}.to_k_ip.weight"] = (hidden, cross_dim)
        attn[f"{key_id}.to_v_ip.weight"] = (hidden, cross_dim)
    return {"image_proj": proj, "ip_adapter": attn}


def fresh_state(unet: UNet2DConditionModel, image_embed_dim: int, num_tokens: int) -> IPState:
    """A new adapter in the public layout: random ``ImageProjection``; K/V-ip copied from the text K/V, as the
    IP-Adapter authors initialise it, so the image branch starts out reading like the text branch."""
    cross_dim = unet.config.cross_attention_dim
    proj = ImageProjection(
        cross_attention_dim=cross_dim, image_embed_dim=image_embed_dim, num_image_text_embeds=num_tokens
    )
    image_proj = {k.replace("image_embeds", "proj"): v for k, v in proj.state_dict().items()}
    ip = {}
    for key_id, name in _cross_attention_ids(unet).items():
        attn = unet.get_submodule(name)
        ip[f"{key_id}.to_k_ip.weight"] = attn.to_k.weight.detach().clone()
        ip[f"{key_id}.to_v_ip.weight"] = attn.to_v.weight.detach().clone()
    return {"image_proj": image_proj, "ip_adapter": ip}


def read_ip_adapter(path: str | Path) -> IPState:
    """Read ``ip-adapter_sd15.bin`` (nested dict) or ``.safetensors`` (flat ``image_proj.*``/``ip_adapter.*``)."""
    flat = read_state_dict(path)
    if "image_proj" in flat and "ip_adapter" in flat and isinstance(flat["image_proj"], dict):
        return {"image_proj": dict(flat["image_proj"]), "ip_adapter": dict(flat["ip_adapter"])}
    state: IPState = {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        if head not in state:
            raise WeightsError(
                f"{path}: unexpected key '{key}' (expected 'image_proj.*' and 'ip_adapter.*' keys)"
            )
        state[head][rest] = value
    if not state["image_proj"] or not state["ip_adapter"]:
        raise WeightsError(f"{path}: not an IP-Adapter file (expected 'image_proj' and 'ip_adapter' keys)")
    return state


def install(
    unet: UNet2DConditionModel,
    image_embed_dim: int,
    num_tokens: int,
    scale: float = 1.0,
    path: str | Path | None = None,
) -> None:
    """Install IP-Adapter layers into ``unet`` from ``path`` (public layout) or freshly initialised."""
    if num_tokens != 4:
        # diffusers' loader builds the plain IP-Adapter projection with 4 tokens; other counts need another loader.
        raise WeightsError(f"num_ip_tokens={num_tokens}: only the 4-token IP-Adapter layout is supported")
    state = read_ip_adapter(path) if path else fresh_state(unet, image_embed_dim, num_tokens)
    expected = expected_shapes(unet, image_embed_dim, num_tokens)
    where = path or "fresh IP-Adapter"
    check_shapes(state["image_proj"], expected["image_proj"], f"{where} [image_proj]")
    check_shapes(state["ip_adapter"], expected["ip_adapter"], f"{where} [ip_adapter]")
    # The loader's closing ``to(dtype)`` logs a float32 advisory meant for from_pretrained users; silence it.
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        unet._load_ip_adapter_weights([state], low_cpu_mem_usage=False)
    finally:
        diffusers_logging.set_verbosity(verbosity)
    set_scale(unet, scale)


def set_scale(unet: UNet2DConditionModel, scale: float) -> None:
    """λ in eq. 3. λ = 0 reproduces the UNet without the adapter exactly."""
    for proc in unet.attn_processors.values():
        if isinstance(proc, IPAdapterAttnProcessor2_0):
            proc.scale = [scale] * len(proc.scale)


def is_adapter_parameter(name: str) -> bool:
    """Parameters that belong to the adapter (inside the denoiser UNet, where diffusers puts them)."""
    return name.startswith("encoder_hid_proj.") or ".to_k_ip." in name or ".to_v_ip." in name


def state_dict_public(unet: UNet2DConditionModel) -> IPState:
    """The adapter weights of ``unet`` in the public layout (what ``install(path=...)`` reads back)."""
    proj = unet.encoder_hid_proj.image_projection_layers[0]
    image_proj = {k.replace("image_embeds", "proj"): v.detach().cpu() for k, v in proj.state_dict().items()}
    ip = {}
    for key_id, name in _cross_attention_ids(unet).items():
        proc = unet.attn_processors[name + ".processor"]
        ip[f"{key_id}.to_k_ip.weight"] = proc.to_k_ip[0].weight.detach().cpu()
        ip[f"{key_id}.to_v_ip.weight"] = proc.to_v_ip[0].weight.detach().cpu()
    return {"image_proj": image_proj, "ip_adapter": ip}
