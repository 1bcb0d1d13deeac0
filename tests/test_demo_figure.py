"""`igr demo --figure`: the README's picture is the report's sample grid, shrunk to commit."""

from __future__ import annotations

import numpy as np
from PIL import Image

from igr.demo import write_figure


def test_write_figure_shrinks_a_wide_grid_and_keeps_a_narrow_one(tmp_path):
    wide = tmp_path / "wide.png"
    Image.fromarray(np.full((256, 2000, 3), 200, np.uint8)).save(wide)
    with Image.open(write_figure(wide, tmp_path / "docs" / "a.png")) as im:
        assert im.size == (960, 123)  # 256 * 960 / 2000 = 122.9
        assert im.convert("RGB").getpixel((10, 10)) == (200, 200, 200)
    narrow = tmp_path / "narrow.png"
    Image.fromarray(np.zeros((100, 300, 3), np.uint8)).save(narrow)
    with Image.open(write_figure(narrow, tmp_path / "b.png")) as im:
        assert im.size == (300, 100)
