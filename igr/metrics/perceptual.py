"""Paired perceptual metrics: LPIPS (AlexNet, v0.1) and DISTS (VGG16), per image, from uint8 inputs.

- LPIPS: the ``lpips`` package's own network (``net='alex'``, ``version='0.1'``, its bundled linear
  weights); the AlexNet trunk is loaded from a local torchvision state dict instead of the model zoo.
  Inputs are scaled to [−1, 1] at the evaluation resolution.
- DISTS: Ding et al.'s structure/texture similarity with ``DISTS_pytorch``'s published α/β. Its class
  fetches VGG16 from the model zoo, so the forward pass is restated here (tests check it against the
  package with the same VGG weights). Both images are first resized like ``DISTS_pytorch.prepare_image(
  resize=True)``: PIL bilinear, short side 256 when it is longer (1024×768 → 341×256), as TryOffDiff did.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import nn

from igr.errors import WeightsError
from igr.metrics.backbone_base import fingerprint, seeded_init
from igr.metrics.images import check_uint8_pair, tensor_to_hwc


class PairedMetric:
    """(pred, gt) uint8 batches → per-image scores, (B,) float64 on the CPU."""

    key: str
    label: str

    def __init__(self, weights: Path | None, device: torch.device | str) -> None:
        self.weights = weights
        self.random_init = weights is None
        self.device = torch.device(device)
        self.identity = f"{self.key}|{'random-init' if weights is None else fingerprint(weights)}"

    @property
    def description(self) -> str:
        if self.random_init:
            return f"{self.label}: RANDOM-INIT trunk (test only; values are meaningless)"
        return f"{self.label}: trunk weights {self.weights}"


def _features_state(path: Path) -> dict[str, torch.Tensor]:
    """``features.*`` entries of a torchvision classification state dict, prefix stripped."""
    from igr.weights_io import read_state_dict

    state = read_state_dict(path)
    feats = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    if not feats:
        raise WeightsError(f"{path}: no 'features.*' keys (expected a torchvision state dict)")
    return feats


class LPIPSMetric(PairedMetric):
    key = "alexnet"
    label = "LPIPS v0.1, AlexNet trunk (lpips package)"

    def __init__(
        self, weights: Path | None, linear_path: str | None = None, device: torch.device | str = "cpu"
    ) -> None:
        import lpips

        from igr.weights_io import load_into, read_state_dict

        super().__init__(weights, device)
        # Read here, weights-only with our one-line errors; lpips' own torch.load would print a traceback.
        linear = read_state_dict(linear_path) if linear_path is not None else None
        if linear is not None and (not linear or not all(k.startswith("lin") for k in linear)):
            raise WeightsError(f"{linear_path}: not LPIPS linear-layer weights (expected lin0.* ... lin4.* keys)")
        with seeded_init(), warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", UserWarning
            )  # lpips passes torchvision's deprecated `pretrained=`
            # pnet_rand=True: build the AlexNet trunk without torchvision's download; its weights come next.
            net = lpips.LPIPS(
                net="alex",
                version="0.1",
                pretrained=True,
                pnet_rand=True,
                verbose=False,
            )  # the package's bundled v0.1 linear layers; a configured file replaces them next
        if linear is not None:
            missing = {k for k in net.state_dict() if k.startswith("lin")} - set(linear)
            if missing:
                raise WeightsError(f"{linear_path}: LPIPS linear weights lack {len(missing)} key(s), e.g. {min(missing)}")
            net.load_state_dict(linear, strict=False)
        if weights is not None:
            trunk = _features_state(weights)
            # lpips splits torchvision's alexnet.features into slice1..5 but keeps the layer indices.
            names = {name.split(".", 1)[1]: name for name in net.net.state_dict()}
            mapped = {names[k]: v for k, v in trunk.items() if k in names}
            load_into(net.net, mapped, weights)
        self.net = net.eval().to(self.device)

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        check_uint8_pair(pred, gt)
        x = pred.to(self.device, torch.float32) / 127.5 - 1
        y = gt.to(self.device, torch.float32) / 127.5 - 1
        return self.net(x, y).reshape(-1).double().cpu()


class _DISTSNet(nn.Module):
    """DISTS (Ding et al. 2020): VGG16 stages with L2 pooling, per-channel mean/structure similarities."""

    CHANNELS = (3, 64, 128, 256, 512, 512)

    def __init__(self, vgg_features: nn.Sequential, alpha: torch.Tensor, beta: torch.Tensor) -> None:
        from DISTS_pytorch.DISTS_pt import L2pooling

        super().__init__()
        cuts = [(0, 4), (5, 9), (10, 16), (17, 23), (24, 30)]  # VGG16 convs between its max-pools
        self.stages = nn.ModuleList()
        for i, (a, b) in enumerate(cuts):
            layers = [] if i == 0 else [L2pooling(channels=self.CHANNELS[i])]  # replaces the max-pool at a-1
            layers += [vgg_features[j] for j in range(a, b)]
            self.stages.append(nn.Sequential(*layers))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, -1, 1, 1))
        self.register_buffer("alpha", alpha.reshape(1, -1, 1, 1).float())
        self.register_buffer("beta", beta.reshape(1, -1, 1, 1).float())

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [x]  # the raw image is the first "layer"
        h = (x - self.mean) / self.std
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx, fy = self._features(x), self._features(y)
        w_sum = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / w_sum, self.CHANNELS, dim=1)
        betas = torch.split(self.beta / w_sum, self.CHANNELS, dim=1)
        c1 = c2 = 1e-6
        dist1 = dist2 = 0
        for a, b, al, be in zip(fx, fy, alphas, betas):
            mx, my = a.mean([2, 3], keepdim=True), b.mean([2, 3], keepdim=True)
            s1 = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
            vx = ((a - mx) ** 2).mean([2, 3], keepdim=True)
            vy = ((b - my) ** 2).mean([2, 3], keepdim=True)
            cov = (a * b).mean([2, 3], keepdim=True) - mx * my
            s2 = (2 * cov + c2) / (vx + vy + c2)
            dist1 = dist1 + (al * s1).sum(1, keepdim=True)
            dist2 = dist2 + (be * s2).sum(1, keepdim=True)
        return (1 - (dist1 + dist2)).reshape(-1)


def dists_resize(image_hwc: np.ndarray) -> torch.Tensor:
    """``DISTS_pytorch.prepare_image(resize=True)``: PIL bilinear short side → 256 if larger; [0, 1] float."""
    im = Image.fromarray(image_hwc)
    if min(im.size) > 256:
        im = TF.resize(im, 256, interpolation=TF.InterpolationMode.BILINEAR)
    return TF.to_tensor(im)


def _bundled_alpha_beta() -> Path:
    import DISTS_pytorch

    return Path(DISTS_pytorch.__file__).resolve().parent / "weights.pt"


class DISTSMetric(PairedMetric):
    key = "vgg16"
    label = "DISTS, VGG16 trunk, DISTS_pytorch alpha/beta, images resized to short side 256"

    def __init__(
        self, weights: Path | None, alpha_beta_path: str | None = None, device: torch.device | str = "cpu"
    ) -> None:
        from torchvision.models.vgg import cfgs, make_layers

        from igr.weights_io import load_into, read_state_dict

        super().__init__(weights, device)
        ab_path = Path(alpha_beta_path) if alpha_beta_path is not None else _bundled_alpha_beta()
        ab = read_state_dict(ab_path)
        if "alpha" not in ab or "beta" not in ab:
            raise WeightsError(f"{ab_path}: expected 'alpha' and 'beta' tensors (DISTS weights.pt)")
        with seeded_init():
            features = make_layers(cfgs["D"])  # VGG16 conv trunk, same indices as vgg16().features
            for m in features.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(
                        m.weight, mode="fan_out", nonlinearity="relu"
                    )  # torchvision's init
                    nn.init.zeros_(m.bias)
        if weights is not None:
            load_into(features, _features_state(weights), weights)
        self.net = _DISTSNet(features, ab["alpha"], ab["beta"]).eval().to(self.device)

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        check_uint8_pair(pred, gt)
        x = torch.stack([dists_resize(tensor_to_hwc(im)) for im in pred]).to(self.device)
        y = torch.stack([dists_resize(tensor_to_hwc(im)) for im in gt]).to(self.device)
        return self.net(x, y).double().cpu()
