"""The metrics config: packaged defaults, YAML loading, one-line errors for bad keys."""

from pathlib import Path

import pytest

from igr.errors import IGRError
from igr.metrics.config import ALL_METRICS, BACKBONE_FILES, DEFAULT_CONFIG, MetricsConfig


def test_packaged_default_looks_where_download_weights_writes_and_pins_the_protocol():
    config = MetricsConfig.load()
    assert DEFAULT_CONFIG.is_file()
    assert all(getattr(config.weights, k) is None for k in BACKBONE_FILES)
    assert config.weight_path("inception") == Path("weights/metrics/inception-2015-12-05.pt")
    assert config.resolution == (1024, 768)
    assert config.metrics == ALL_METRICS
    assert (config.kid.subset_size, config.kid.num_subsets, config.kid.seed) == (1000, 100, 0)
    assert config.allow_random_backbone is False


def test_weights_dir_supplies_standard_file_names(tmp_path):
    (tmp_path / "m.yaml").write_text("weights_dir: /w\nweights:\n  vgg16: ~/mine/vgg.pth\n")
    config = MetricsConfig.load(tmp_path / "m.yaml")
    assert config.weight_path("inception") == Path("/w/inception-2015-12-05.pt")
    assert config.weight_path("vgg16") == Path("~/mine/vgg.pth").expanduser()


@pytest.mark.parametrize(
    "text,message",
    [
        ("weights:\n  incepton: a.pt\n", "unknown key 'incepton'"),
        ("metrics: [ssim, psnr]\n", "unknown metric 'psnr'"),
        ("resolution: [1024]\n", "resolution: expected [H, W]"),
        ("kid: {subset_size: 1}\n", "subset_size must be >= 2"),
        ("colour: red\n", "unknown key 'colour'"),
        ("- a\n- b\n", "expected a mapping"),
        ("weights: [\n", "not valid YAML"),
    ],
)
def test_bad_configs_are_one_line_errors(tmp_path, text, message):
    (tmp_path / "m.yaml").write_text(text)
    with pytest.raises(IGRError, match=message.replace("[", r"\[")):
        MetricsConfig.load(tmp_path / "m.yaml")


def test_missing_config_file():
    with pytest.raises(IGRError, match="metrics config not found"):
        MetricsConfig.load("/nonexistent/metrics.yaml")


def test_download_metric_weights_layout(tmp_path, monkeypatch):
    """The downloader's file names are the ones the config looks for (the download itself is faked)."""
    import torch.hub

    from igr.metrics.backbones import Unavailable, resolve_weights
    from igr.metrics.weights import download_metric_weights

    fetched = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        fetched.append((url, hash_prefix))
        Path(dst).write_bytes(b"weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "vgg16-397923af.pth").write_bytes(b"kept")  # present files are not fetched again
    paths = download_metric_weights(tmp_path / "w", progress=False)
    assert len(fetched) == len(BACKBONE_FILES) - 1
    assert ("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "7be5be79") in fetched
    config = MetricsConfig.load(tmp_path / "w" / "metrics.yaml")
    for key in BACKBONE_FILES:
        resolved = resolve_weights(config, key)
        assert not isinstance(resolved, Unavailable) and resolved == paths[key]
