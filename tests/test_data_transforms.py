"""resize_pad / binarize_mask / paired augmentation: aspect kept, masks binary, person-mask-garment aligned."""

import random

import numpy as np
import pytest
import torch
from PIL import Image

from igr.data.transforms import (
    AugmentParams,
    PairedAugment,
    binarize_mask,
    image_to_tensor,
    resize_pad,
    resize_pad_box,
    resize_pad_mask,
    tensor_to_image,
    zoom_shift,
)


def test_resize_pad_keeps_aspect_and_pads_with_the_border_colour():
    # A 40x40 square on a grey 100x100 background, resized into 64x48 (H x W).
    a = np.full((100, 100, 3), 128, np.uint8)
    a[30:70, 30:70] = (255, 0, 0)
    out = resize_pad(a, (64, 48), fill="auto")
    assert out.shape == (64, 48, 3)
    scale, (nh, nw), (top, left) = resize_pad_box((100, 100), (64, 48))
    assert (nh, nw, top, left) == (48, 48, 8, 0)
    # Padding bands are the border colour; the red square stays square (never stretched).
    assert (out[:top] == 128).all() and (out[top + nh:] == 128).all()
    red = (out[..., 0] > 200) & (out[..., 1] < 60)
    ys, xs = np.nonzero(red)
    assert abs((ys.max() - ys.min()) - (xs.max() - xs.min())) <= 1


def test_resize_pad_identity_and_explicit_fill():
    img = Image.new("RGB", (48, 64), (1, 2, 3))
    assert resize_pad(img, (64, 48)).tobytes() == img.tobytes()
    out = resize_pad(Image.new("RGB", (10, 10), (9, 9, 9)), (20, 10), fill=(250, 0, 0))
    assert out.getpixel((5, 0)) == (250, 0, 0)
    with pytest.raises(ValueError):
        resize_pad(img, (32, 32), fill="median")


def test_resize_pad_mask_stays_binary_and_on_the_image():
    a = np.zeros((120, 90, 3), np.uint8)
    m = np.zeros((120, 90), np.uint8)
    a[20:100, 10:50] = 255
    m[20:100, 10:50] = 1
    img = resize_pad(a, (64, 64), fill=0)
    mask = resize_pad_mask(m, (64, 64))
    assert set(np.unique(mask)) <= {0, 1}
    bright = img[..., 0] > 127
    # Same placement: the masks agree except on a one-pixel rim of resampling.
    assert (bright != mask.astype(bool)).sum() <= 2 * (bright.sum() ** 0.5) * 2
    assert resize_pad_mask(m * 255, (64, 64)).sum() == mask.sum()  # 0/255 input accepted too


def test_binarize_mask_counts_grey_pixels():
    m = np.array([[0, 255, 128], [127, 3, 255]], np.uint8)
    out, n = binarize_mask(m, 127)
    assert out.tolist() == [[0, 1, 1], [0, 0, 1]]
    assert n == 3  # 128, 127 and 3 are neither 0 nor 255
    out01, n01 = binarize_mask(np.array([[0, 1]], np.uint8))
    assert out01.tolist() == [[0, 1]] and n01 == 0
    rgb, _ = binarize_mask(np.stack([m] * 3, -1))
    assert rgb.tolist() == out.tolist()


def _scene():
    """A person image whose garment pixels are exactly the mask; a garment with a left-side mark."""
    person = np.full((64, 48, 3), 230, np.uint8)
    mask = np.zeros((64, 48), np.uint8)
    mask[10:50, 8:30] = 1
    person[mask.astype(bool)] = (220, 20, 20)
    garment = np.full((64, 48, 3), 240, np.uint8)
    garment[5:15, 2:8] = (0, 0, 255)  # mark on the left
    return Image.fromarray(person), mask, Image.fromarray(garment)


@pytest.mark.parametrize("params", [
    AugmentParams(True, 1.0, (0.0, 0.0)),
    AugmentParams(False, 1.1, (2.5, -3.0)),
    AugmentParams(True, 0.9, (-2.0, 1.5)),
])
def test_augmentation_keeps_person_mask_and_garment_aligned(params):
    person, mask, garment = _scene()
    p, m, g = PairedAugment.apply(person, mask, garment, params)
    p, g = np.asarray(p), np.asarray(g)
    red = (p[..., 0] > 150) & (p[..., 1] < 100)
    on = m.astype(bool)
    # Garment pixels and mask coincide up to the resampled rim (one pixel around the box).
    rim = np.abs(on.astype(int) - red.astype(int)).sum()
    assert rim <= 2 * (on.sum() ** 0.5) + 4, rim
    assert on.sum() > 0.6 * mask.sum()
    blue = (g[..., 2] > 200) & (g[..., 0] < 50)
    xs = np.nonzero(blue)[1]
    # The garment is flipped with the person (and never zoomed or shifted).
    assert (xs.min() > 24) == params.flip
    assert blue.sum() == 60


def test_augmentation_moves_the_garment_region_as_requested():
    person, mask, _ = _scene()
    _, m, _ = PairedAugment.apply(person, mask, None, AugmentParams(False, 1.0, (4.0, 0.0)))
    xs = np.nonzero(m)[1]
    assert xs.min() == 12 and xs.max() == 33  # shifted 4 px right


def test_zoom_shift_same_mapping_for_person_and_mask_and_draws():
    img = Image.fromarray((np.arange(64 * 48) % 251).astype(np.uint8).reshape(64, 48))
    a = np.asarray(zoom_shift(img, 1.07, (1.3, -2.2), 0))
    b = np.asarray(zoom_shift(img, 1.07, (1.3, -2.2), 0))
    assert (a == b).all()
    aug = PairedAugment(hflip_p=0.5, scale_range=(0.9, 1.1), shift_frac=0.05)
    rng = random.Random(0)
    draws = [aug.draw(rng, (64, 48)) for _ in range(200)]
    assert 0.3 < sum(d.flip for d in draws) / 200 < 0.7
    assert all(0.9 <= d.scale <= 1.1 and abs(d.shift[0]) <= 2.4 and abs(d.shift[1]) <= 3.2 for d in draws)


def test_tensor_round_trip():
    a = (np.random.default_rng(0).random((8, 6, 3)) * 255).astype(np.uint8)
    t = image_to_tensor(a)
    assert t.shape == (3, 8, 6) and t.dtype == torch.float32 and t.min() >= -1 and t.max() <= 1
    assert (tensor_to_image(t) == a).all()


def test_no_flip_by_default():
    """The paper does not flip, and a flip mirrors logos and text into the garment target. Catches hflip_p > 0
    coming back as the default of the augmentation, the DataModule or the synthetic data config."""
    import inspect

    from omegaconf import OmegaConf

    from igr.config import CONFIG_DIR
    from igr.data import IGRDataModule

    rng = random.Random(0)
    assert not any(PairedAugment().draw(rng, (64, 48)).flip for _ in range(200))
    assert inspect.signature(IGRDataModule.__init__).parameters["hflip_p"].default == 0.0
    for path in (CONFIG_DIR / "data").glob("*.yaml"):
        assert OmegaConf.load(path).get("hflip_p", 0.0) == 0.0, path
