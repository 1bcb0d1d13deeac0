"""Real weight loading from local SD-style folders and IP-Adapter / open_clip files written to tmp_path."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from igr.errors import WeightsError
from igr.models import adapter, build_model
from igr.models.image_encoder import GarmentImageEncoder


@pytest.fixture
def weights_dir(tmp_path, tiny_config):
    """A tiny SD1.5-style folder, an IP-Adapter file in both public formats, and an open_clip checkpoint."""
    torch.manual_seed(123)
    sd = tmp_path / "sd"
    unet = UNet2DConditionModel(**tiny_config.unet)
    unet.save_pretrained(sd / "unet")
    AutoencoderKL(**tiny_config.vae).save_pretrained(sd / "vae")
    CLIPTextModel(CLIPTextConfig(**tiny_config.text_encoder)).save_pretrained(sd / "text_encoder")
    ip = adapter.fresh_state(unet, image_embed_dim=32, num_tokens=4)
    for part in ip.values():
        for k in part:
            part[k] = torch.randn_like(part[k])
    torch.save(ip, tmp_path / "ip.bin")
    save_file(
        {f"{h}.{k}": v for h, part in ip.items() for k, v in part.items()}, str(tmp_path / "ip.safetensors")
    )
    enc = GarmentImageEncoder(tiny_config.image_encoder, tiny_config.clip_size)
    torch.save(
        {f"visual.{k}": torch.randn_like(v) for k, v in enc.visual.state_dict().items()}, tmp_path / "clip.pt"
    )
    return {"root": tmp_path, "unet": unet, "ip": ip}


def _config(tiny_config, w, ip="ip.bin"):
    root = w["root"]
    return dataclasses.replace(
        tiny_config,
        sd_path=str(root / "sd"),
        ip_adapter_path=str(root / ip),
        image_encoder_path=str(root / "clip.pt"),
    )


def test_round_trip_loads_every_part(tiny_config, weights_dir, batch):
    m = build_model(_config(tiny_config, weights_dir)).eval()
    src = weights_dir["unet"].state_dict()
    den = m.denoiser.unet.state_dict()
    for k, v in src.items():
        assert torch.equal(den[k], v), k
    gn = m.garmnet.unet.state_dict()
    assert torch.equal(gn["conv_in.weight"][:, :4], src["conv_in.weight"])
    assert all(torch.equal(gn[k], v) for k, v in src.items() if k != "conv_in.weight")
    assert (
        adapter.state_dict_public(m.denoiser.unet)["ip_adapter"].keys()
        == weights_dir["ip"]["ip_adapter"].keys()
    )
    for part in ("image_proj", "ip_adapter"):
        for k, v in adapter.state_dict_public(m.denoiser.unet)[part].items():
            assert torch.equal(v, weights_dir["ip"][part][k]), (part, k)

    # the .safetensors layout gives the same model
    m2 = build_model(_config(tiny_config, weights_dir, ip="ip.safetensors")).eval()
    z, t = torch.randn(m.latent_shape(2)), torch.tensor([3, 600])
    outs = []
    for model in (m, m2):
        cond = model.conditions(model.encode_inputs(batch["person"], batch["mask"], batch["category"]))
        outs.append(model.eps(z, t, cond))
    assert torch.equal(outs[0], outs[1])  # the same weights from two file layouts, the same ops: bit-equal


def test_missing_folder_names_the_path(tiny_config, tmp_path):
    cfg = dataclasses.replace(tiny_config, sd_path=str(tmp_path / "nowhere"))
    with pytest.raises(WeightsError, match=r"nowhere/unet: folder not found"):
        build_model(cfg)


def test_corrupted_ip_adapter_file(tiny_config, weights_dir):
    bad = weights_dir["root"] / "ip.bin"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"ip\.bin: cannot read weights"):
        build_model(_config(tiny_config, weights_dir))


def test_wrong_shape_ip_adapter_names_key_and_shapes(tiny_config, weights_dir):
    ip = weights_dir["ip"]
    ip["image_proj"]["proj.weight"] = torch.randn(128, 7)
    torch.save(ip, weights_dir["root"] / "ip.bin")
    with pytest.raises(WeightsError, match=r"'proj.weight' has shape \(128, 7\), expected \(128, 32\)"):
        build_model(_config(tiny_config, weights_dir))


def test_image_encoder_missing_keys(tiny_config, weights_dir):
    path = weights_dir["root"] / "clip.pt"
    state = torch.load(path, weights_only=True)
    state.pop(next(iter(state)))
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"clip\.pt: missing 1 expected key"):
        build_model(_config(tiny_config, weights_dir))


def test_bin_files_never_unpickle_code(tiny_config, weights_dir):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"image_proj": {"x": Evil()}}, weights_dir["root"] / "ip.bin")
    with pytest.raises(WeightsError, match="cannot read weights"):
        build_model(_config(tiny_config, weights_dir))


def test_a_run_from_sd_path_records_and_exports_the_folders_unet(tiny_config, tmp_path, batch):
    """Catches: a checkpoint's hyper-parameters describing the YAML's UNet instead of the one sd_path loaded (its
    export then cannot load the weights, or builds another architecture), and UNets left in eval mode by
    from_pretrained (Lightning keeps the mode it finds)."""
    from igr.export import export_checkpoint, load_pipeline
    from igr.system import IGRSystem

    torch.manual_seed(0)
    wider = {**tiny_config.unet, "block_out_channels": [48, 64]}  # not the YAML's (32, 64)
    sd = tmp_path / "sd"
    UNet2DConditionModel(**wider).save_pretrained(sd / "unet")
    AutoencoderKL(**tiny_config.vae).save_pretrained(sd / "vae")
    CLIPTextModel(CLIPTextConfig(**tiny_config.text_encoder)).save_pretrained(sd / "text_encoder")
    system = IGRSystem(model=dataclasses.replace(tiny_config, sd_path=str(sd)))
    assert system.model.denoiser.unet.training and system.model.garmnet.unet.training
    assert list(system.hparams["model"]["unet"]["block_out_channels"]) == [48, 64]
    ckpt = tmp_path / "run.ckpt"
    torch.save({"state_dict": system.state_dict(), "hyper_parameters": dict(system.hparams)}, ckpt)
    export_checkpoint(ckpt, tmp_path / "pipe")
    model, _ = load_pipeline(tmp_path / "pipe")
    assert tuple(model.denoiser.unet.config.block_out_channels) == (48, 64)
    for k, v in system.model.denoiser.unet.state_dict().items():
        assert torch.equal(model.denoiser.unet.state_dict()[k], v), k
