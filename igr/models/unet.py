"""Building and loading the SD1.5-style UNets that GarmNet and the GarmDenoiser are made of."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel

from igr.weights_io import load_diffusers_model


def build_unet(config: dict[str, Any], sd_path: str | None) -> UNet2DConditionModel:
    """SD1.5 UNet from ``sd_path/unet`` when given, else a random-init UNet from ``config``."""
    if sd_path:
        return load_diffusers_model(UNet2DConditionModel, Path(sd_path) / "unet")
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
