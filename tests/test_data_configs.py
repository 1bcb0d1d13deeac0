"""Every shipped data config builds an IGRDataModule; the curation config loads."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

import igr
from igr.data import IGRDataModule
from igr.data.commands.curate import DEFAULT_CONFIG, load_config

DATA_CONFIGS = sorted((Path(igr.__file__).parent / "configs" / "data").glob("*.yaml"))


def test_there_are_data_configs():
    assert {p.stem for p in DATA_CONFIGS} >= {"synthetic", "viton_hd", "coarse", "hqft", "streettryon"}


@pytest.mark.parametrize("path", DATA_CONFIGS, ids=lambda p: p.stem)
def test_data_config_builds(path):
    args = OmegaConf.to_container(OmegaConf.load(path))
    dm = IGRDataModule(**args)
    assert dm.image_size == tuple(args["image_size"])


def test_curate_config_is_the_default():
    assert DEFAULT_CONFIG.is_file()
    cfg = load_config(None, [])
    assert cfg.extreme_action == "fix" and cfg.keep_fraction == 0.2  # the paper's HQFT share (configs/paper.yaml)
