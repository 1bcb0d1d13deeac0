"""Building and loading the SD1.5-style UNets that GarmNet and the GarmDenoiser are made of."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel

from igr.weights_io import load_diffusers_model


def build_unet(config: dict[str, Any], sd_path: str | None) -> UNet2DConditionModel:
    """SD1.5 UNet from ``sd_path/unet`` when given, else a random-init UNet from ``config``."""
    if sd_path:
        # from_pretrained returns the model in eval mode, and Lightning keeps modules in the mode it finds them:
        # GarmNet and the denoiser are trained, so they start in train mode like a random-init UNet.
        return load_diffusers_model(UNet2DConditionModel, Path(sd_path) / "unet").train()
    return UNet2DConditionModel(**config)


def add_input_channels(unet: UNet2DConditionModel, extra: int) -> UNet2DConditionModel:
    """Widen ``conv_in`` by ``extra`` zero-initialised input channels (GarmNet's mask channel).

    The pretrained channels keep their weights, so the widened UNet equals the original on inputs whose
    extra channels are ignored — GarmNet starts as SD1.5 looking at the person latent.
    """
    old = unet.conv_in
    new = torch.nn.Conv2d(
        old.in_channels + extra,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    with torch.no_grad():
        if old.weight.device.type != "meta":
            new.weight.zero_()
            new.weight[:, : old.in_channels].copy_(old.weight)
            new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=old.in_channels + extra)
    return unet


def base_unet_config(unet: UNet2DConditionModel) -> dict[str, Any]:
    """The architecture dict that rebuilds the base UNet a denoiser was made from, with no file: the built module's
    own config (so a UNet loaded from ``sd_path`` is described by its folder's config, not the YAML's), its input
    as wide as its output, and no IP-Adapter projection (the denoiser re-installs it). Plain JSON types."""
    cfg = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    cfg.update(in_channels=cfg["out_channels"], encoder_hid_dim=None, encoder_hid_dim_type=None)
    return json.loads(json.dumps(cfg))
