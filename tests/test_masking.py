"""Automatic garment masks: category → label mapping and clean-up on hand-made label maps; a random-init SegFormer
with the segformer_b2_clothes config runs end to end through ``igr restore --auto-mask``; a photo without the
requested garment fails with one line and writes nothing."""

from __future__ import annotations

import numpy as np
import pytest
from parser_helpers import make_parser
from PIL import Image

from igr.cli import main
from igr.errors import IGRError
from igr.masking import CLOTHES_LABELS, ClothesParser, clean_mask, garment_mask

UPPER, SKIRT, PANTS, DRESS, FACE, BAG = 4, 5, 6, 7, 11, 16


def test_the_label_set_is_segformer_b2_clothes():
    """Catches: a shifted or renamed label table (the public model's id2label, in id order)."""
    assert len(CLOTHES_LABELS) == 18
    assert {
        0: "Background",
        4: "Upper-clothes",
        5: "Skirt",
        6: "Pants",
        7: "Dress",
        17: "Scarf",
    }.items() <= dict(enumerate(CLOTHES_LABELS)).items()


def _map() -> np.ndarray:
    """A hand-made parse: face at the top, upper clothes, a skirt and pants side by side, a bag."""
    m = np.zeros((40, 30), np.int64)
    m[2:8, 10:20] = FACE
    m[10:22, 5:25] = UPPER
    m[24:38, 5:14] = SKIRT
    m[24:38, 16:25] = PANTS
    m[12:16, 27:30] = BAG
    return m


def test_category_maps_to_the_garment_labels():
    """Catches: wrong labels per category, the dress fallback missing or always taken."""
    m = _map()
    np.testing.assert_array_equal(garment_mask(m, "upper"), (m == UPPER).astype(np.uint8))
    np.testing.assert_array_equal(garment_mask(m, "lower"), np.isin(m, [SKIRT, PANTS]).astype(np.uint8))
    # no dress in the photo: full = upper + lower
    np.testing.assert_array_equal(garment_mask(m, "full"), np.isin(m, [UPPER, SKIRT, PANTS]).astype(np.uint8))
    dressed = m.copy()
    dressed[10:30, 5:25] = DRESS
    np.testing.assert_array_equal(garment_mask(dressed, "full"), (dressed == DRESS).astype(np.uint8))


def test_garment_not_found_is_one_line_naming_what_was_seen():
    m = _map()
    m[m == UPPER] = 0
    with pytest.raises(IGRError) as info:
        garment_mask(m, "upper", name="me.jpg")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("me.jpg: no upper garment found") and "Face" in msg
    specks = np.zeros((40, 30), np.int64)
    specks[0, :5] = UPPER  # 5 pixels: noise, not a garment
    with pytest.raises(IGRError, match="no upper garment found"):
        garment_mask(specks, "upper")


def test_clean_up_keeps_the_largest_component_fills_holes_and_dilates():
    """Catches: specks kept, holes (a logo, a hand) left in the mask, dilation ignored or by the wrong radius."""
    m = np.zeros((30, 30), np.uint8)
    m[5:20, 5:20] = 1
    m[10:13, 10:13] = 0  # a hole
    m[25:28, 25:28] = 1  # a speck elsewhere
    out = clean_mask(m)
    expect = np.zeros_like(m)
    expect[5:20, 5:20] = 1
    np.testing.assert_array_equal(out, expect)
    grown = clean_mask(m, dilation=2)
    assert grown[3, 12] == 1 and grown[2, 12] == 0  # 2 pixels above the top edge, not 3
    assert grown[3, 3] == 0  # a disk, not a square: the corner grows by less
    assert grown.sum() > out.sum()


def test_parser_predicts_at_the_photo_size(tmp_path):
    """Catches: a label map at the processor's 32×32 instead of the photo's size, wrong label lookup."""
    parser = ClothesParser.from_pretrained(make_parser(tmp_path / "p", label=PANTS))
    photo = Image.fromarray(np.full((50, 40, 3), 128, np.uint8))
    labels = parser.labels(photo)
    assert labels.shape == (50, 40) and (labels == PANTS).all()
    assert parser.mask(photo, "lower").sum() == 50 * 40
    with pytest.raises(IGRError, match="no upper garment found"):
        parser.mask(photo, "upper")
    random = ClothesParser.from_pretrained(make_parser(tmp_path / "r", seed=1))  # untouched random init runs
    assert random.labels(photo).shape == (50, 40)


def test_parser_without_the_clothes_labels_is_refused(tmp_path):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    cfg = SegformerConfig(
        num_encoder_blocks=1,
        depths=[1],
        sr_ratios=[1],
        hidden_sizes=[8],
        patch_sizes=[7],
        strides=[4],
        num_attention_heads=[1],
        mlp_ratios=[2],
        decoder_hidden_size=8,
        num_labels=3,
    )
    SegformerForSemanticSegmentation(cfg).save_pretrained(tmp_path / "ade")
    with pytest.raises(IGRError, match="not in the model's id2label"):
        ClothesParser.from_pretrained(tmp_path / "ade")


@pytest.fixture(scope="module")
def model_dir(tiny_pipeline_dir):
    return tiny_pipeline_dir


def _photo(path):
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((80, 60, 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_restore_auto_mask_end_to_end_and_save_mask(tmp_path, model_dir, capsys):
    """Catches: --auto-mask not reaching the model (the saved mask must be what the parser made), --save-mask
    not writing it, and a missing garment producing an empty restoration instead of an error."""
    parser = make_parser(tmp_path / "parser", label=UPPER)
    photo, out = _photo(tmp_path / "me.jpg"), tmp_path / "out" / "garment.png"
    argv = ["restore", "--model", str(model_dir), "--person", str(photo), "--category", "upper", "--steps", "1",
            "--auto-mask", "--parser", str(parser), "--save-mask", "--out", str(out)]  # fmt: skip
    capsys.readouterr()  # transformers' save progress bars
    rc, err = main(argv), capsys.readouterr().err
    assert rc == 0, err
    assert Image.open(out).size == (48, 64)
    saved = np.asarray(Image.open(tmp_path / "out" / "garment_mask.png"))
    assert saved.shape == (80, 60) and (saved == 255).all()  # the parser said upper-clothes everywhere

    lower = argv.copy()
    lower[lower.index("upper")] = "lower"
    lower[-1] = str(tmp_path / "out2" / "garment.png")
    assert main(lower) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no lower garment found" in err and str(photo) in err
    assert not (tmp_path / "out2").exists()  # nothing written

    both = argv + ["--mask", str(photo)]
    assert main(both) == 2 and "one of them" in capsys.readouterr().err
    missing = argv.copy()
    missing[missing.index(str(parser))] = str(tmp_path / "nope")
    assert main(missing + ["--overwrite"]) == 2
    assert "garment parser not found" in capsys.readouterr().err
