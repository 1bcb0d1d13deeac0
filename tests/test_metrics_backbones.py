"""Each backbone metric against its reference implementation, with the same (random) weights from tmp files.

Real ImageNet/CLIP weights cannot be downloaded here, so both sides get the same randomly initialised
network: the reference through the library's own code path, ours through the weight file it reads.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from metrics_helpers import no_network, random_pairs, save_folder  # noqa: F401  (no_network is a fixture)
from PIL import Image
from tolerance import ALEXNET_OPS, INCEPTION_OPS, VGG16_OPS, VIT_B_32_OPS, assert_close_f32
from torch import nn

from igr.errors import WeightsError
from igr.metrics.backbones import Unavailable, build_backbone
from igr.metrics.config import MetricsConfig
from igr.metrics.extractors import ClipFeatures, InceptionFeatures
from igr.metrics.images import load_rgb
from igr.metrics.perceptual import DISTSMetric, LPIPSMetric, _bundled_alpha_beta

# The reference side uses deprecated-but-working library paths (TorchScript, torchvision's `pretrained=`).
pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


def test_lpips_matches_lpips_package(tmp_path, no_network):  # noqa: F811
    import lpips

    torch.manual_seed(11)
    ref = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    alexnet = torchvision.models.alexnet(weights=None)
    for sl in ref.net.children():  # lpips keeps torchvision's layer indices inside slice1..5
        for idx, layer in sl.named_children():
            alexnet.features[int(idx)].load_state_dict(layer.state_dict())
    torch.save(alexnet.state_dict(), tmp_path / "alexnet.pth")

    pred, gt = random_pairs(3, 64, 48, noise=40)
    with torch.no_grad():
        expected = ref(pred.float() / 127.5 - 1, gt.float() / 127.5 - 1).flatten().double()
    ours = LPIPSMetric(tmp_path / "alexnet.pth")
    assert_close_f32(ours(pred, gt), expected, ops=ALEXNET_OPS)  # another implementation: another op order
    assert expected.min() > 0
    # the trunk really comes from the file: our own random init gives other values
    assert not np.allclose(LPIPSMetric(None)(pred, gt).numpy(), expected.numpy(), rtol=1e-3)


def test_dists_matches_dists_pytorch(tmp_path, monkeypatch, no_network):  # noqa: F811
    from DISTS_pytorch import DISTS_pt
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(12)
    features = make_layers(cfgs["D"])  # vgg16().features without the 120M-parameter classifier
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, tmp_path / "vgg16.pth")
    # DISTS() fetches ImageNet VGG16 from the model zoo; hand it the same random network instead.
    monkeypatch.setattr(DISTS_pt.models, "vgg16", lambda *args, **kwargs: SimpleNamespace(features=features))
    ref = DISTS_pt.DISTS(load_weights=False)
    ab = torch.load(_bundled_alpha_beta(), weights_only=True)
    ref.alpha.data, ref.beta.data = ab["alpha"], ab["beta"]

    pred, gt = random_pairs(2, 300, 270, noise=60)  # short side > 256: exercises DISTS' resize to 256
    expected = []
    for p, g in zip(pred, gt, strict=True):
        x = DISTS_pt.prepare_image(Image.fromarray(p.permute(1, 2, 0).numpy()), resize=True)
        y = DISTS_pt.prepare_image(Image.fromarray(g.permute(1, 2, 0).numpy()), resize=True)
        assert x.shape[-2:] == (284, 256)
        expected.append(ref(x, y).item())
    ours = DISTSMetric(tmp_path / "vgg16.pth")
    assert_close_f32(ours(pred, gt), expected, ops=VGG16_OPS)
    assert min(expected) > 0


class _TinyTorchScriptInception(nn.Module):
    """Stands in for clean-fid's TorchScript file: same interface (``.layers`` → 2048-d pool)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(3, 2048, 13, stride=13), nn.ReLU(), nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def test_inception_features_match_cleanfid_pipeline(tmp_path, no_network):  # noqa: F811
    from cleanfid.fid import get_folder_features
    from cleanfid.inception_torchscript import InceptionV3W

    torch.manual_seed(13)
    torch.jit.script(_TinyTorchScriptInception()).save(str(tmp_path / "inception-2015-12-05.pt"))
    pred, _ = random_pairs(5, 72, 54)
    files = save_folder(tmp_path / "imgs", pred, [f"{i:03d}" for i in range(5)])

    ref_model = InceptionV3W(str(tmp_path), download=False)
    expected = get_folder_features(
        str(tmp_path / "imgs"),
        ref_model,
        num_workers=0,
        batch_size=2,
        device=torch.device("cpu"),
        mode="clean",
        verbose=False,
    )
    ours = InceptionFeatures(tmp_path / "inception-2015-12-05.pt")
    got = ours(torch.stack([load_rgb(f) for f in files]))
    assert got.shape == (5, 2048)
    assert_close_f32(got, expected, ops=INCEPTION_OPS)
    assert np.abs(expected).max() > 0


def test_clip_features_match_open_clip_encode_image(tmp_path, no_network):  # noqa: F811
    import open_clip
    import torchvision.transforms as T

    torch.manual_seed(14)
    model = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True).eval()
    # OpenAI's checkpoint is fp16: store fp16 and give the reference the same rounded weights.
    state = {f"visual.{k}": v.half() for k, v in model.visual.state_dict().items()}
    torch.save(state, tmp_path / "ViT-B-32.pt")
    model.visual.load_state_dict({k[len("visual.") :]: v.float() for k, v in state.items()})

    pred, _ = random_pairs(2, 80, 60)
    # clean-fid's img_preprocess_clip + CLIP_fx normalisation, restated (cleanfid.clip_features imports
    # OpenAI's `clip` package, which is not a dependency).
    crop = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224)])
    norm = T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
    x = torch.stack(
        [
            torch.from_numpy(np.array(crop(Image.fromarray(p.permute(1, 2, 0).numpy())))).permute(2, 0, 1)
            for p in pred
        ]
    )
    with torch.no_grad():
        expected = model.encode_image(norm(x.float() / 255.0))
    got = ClipFeatures(tmp_path / "ViT-B-32.pt")(pred)
    assert got.shape == (2, 512)
    assert_close_f32(got, expected, ops=VIT_B_32_OPS)


def test_missing_weights_are_reported_not_replaced(tmp_path):
    config = MetricsConfig()
    result = build_backbone(config, "inception")
    assert isinstance(result, Unavailable) and result.reason == "n/a (no Inception weights configured)"
    config = MetricsConfig.from_dict({"weights": {"vgg16": str(tmp_path / "nope.pth")}})
    assert build_backbone(config, "vgg16").reason == f"n/a (no VGG16 weights at {tmp_path / 'nope.pth'})"
    config = MetricsConfig(weights_dir=str(tmp_path / "w"))
    assert build_backbone(config, "clip_vit_b_32").reason == (
        f"n/a (no CLIP ViT-B/32 weights at {tmp_path / 'w' / 'ViT-B-32.pt'})"
    )


def test_unreadable_or_wrong_weights_are_errors(tmp_path):
    (tmp_path / "inception.pt").write_bytes(b"not a torchscript file")
    with pytest.raises(WeightsError, match="inception.pt: not clean-fid's TorchScript Inception"):
        InceptionFeatures(tmp_path / "inception.pt")
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), tmp_path / "squeeze.pth")
    with pytest.raises(WeightsError, match="squeeze.pth"):
        LPIPSMetric(tmp_path / "squeeze.pth")
