"""The tiny world's evidence: the exact pixel-unshuffle autoencoder, the generator's colour labels, the garment
classifier's scores with bootstrap intervals, the category-mean baseline and the demo's goal check."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tolerance import assert_close_f32

from igr.config import CONFIG_DIR, load_model_config
from igr.errors import IGRError


@pytest.fixture
def pixel_config():
    return load_model_config(CONFIG_DIR / "model" / "tiny_pixel.yaml")


def test_pixel_unshuffle_autoencoder_is_exact_and_survives_a_pipeline_folder(pixel_config, tmp_path):
    """Catches: an encode/decode pair that is not each other's inverse (e.g. a patch order or a latent-statistics
    mistake), a latent shape that ignores the patch size, and an export that drops the autoencoder's config
    (the folder would rebuild a 4-channel AutoencoderKL and fail to load)."""
    from igr.export import export_pipeline, load_pipeline
    from igr.models import build_model
    from igr.models.vae import PixelUnshuffleAutoencoder

    torch.manual_seed(0)
    model = build_model(pixel_config).eval()
    model.vae.latents_mean.fill_(0.3)  # statistics must be undone exactly by decode
    model.vae.latents_std.fill_(0.5)
    x = torch.rand(2, 3, 64, 48) * 2 - 1
    z = model.vae.encode(x)
    assert z.shape == (2, 48, 16, 12) and model.latent_shape(2) == (2, 48, 16, 12)
    # pixel (row 5, col 6) sits in patch (1, 1), position (1, 2) inside it: channel c * 16 + 1 * 4 + 2
    torch.testing.assert_close(z[0, 0 * 16 + 6, 1, 1], (x[0, 0, 5, 6] - 0.3) / 0.5)
    assert_close_f32(model.vae.decode(z), x, ops=4)  # (x - 0.3) / 0.5 and back: four roundings
    export_pipeline(model, tmp_path / "pipe")
    loaded, _ = load_pipeline(tmp_path / "pipe")
    assert isinstance(loaded.vae.vae, PixelUnshuffleAutoencoder) and loaded.denoiser.unet.config.in_channels == 48
    out = loaded.restore(x, torch.ones(2, 1, 64, 48), ["upper", "lower"], num_inference_steps=2)
    assert out.shape == (2, 3, 64, 48)


def test_dct_patches_are_exact_and_hold_each_patch_in_cosine_coefficients(tmp_path):
    """``transform: dct``. Expected values written out: a patch's first coefficient is its sum / 4 (orthonormal DC
    of 16 pixels), a horizontal cosine of frequency 1 lands in coefficient (0, 1) alone with norm √8, and the transform
    keeps norms. Catches: a basis that is not orthonormal (decode would not invert encode), a row/column mix-up, a
    colour channel mixed into another, and a folder that forgets the transform."""
    import math

    from igr.models.vae import PixelUnshuffleAutoencoder, load_vae_folder

    ae = PixelUnshuffleAutoencoder(transform="dct")
    x = torch.rand(2, 3, 8, 12) * 2 - 1
    z = ae.encode(x).latent_dist.mode()  # (2, 48, 2, 3)
    assert_close_f32(ae.decode(z).sample, x, ops=2 * 16)  # a 16-term transform and its inverse
    assert_close_f32(z.square().sum(), x.square().sum(), ops=16 + 576)  # orthonormal; sums of 576 squares
    # colour channel 1 (green), patch (1, 2) = rows 4..7, cols 8..11: its DC is coefficient 16 + 0
    torch.testing.assert_close(z[0, 16, 1, 2], x[0, 1, 4:8, 8:12].sum() / 4)
    # a cosine along the columns, cos(pi (j + 0.5) / 4), in the red channel only
    wave = torch.tensor([math.cos(math.pi * (j + 0.5) / 4) for j in range(4)]).repeat(4, 1)  # (4, 4): rows equal
    patch = torch.zeros(1, 3, 4, 4)
    patch[0, 0] = wave
    c = ae.encode(patch).latent_dist.mode()[0, :, 0, 0]  # (48,)
    expected = torch.zeros(48)
    expected[1] = math.sqrt(8)  # (row freq 0, col freq 1) = index 0 * 4 + 1; its energy: 4 rows × Σ_j cos² = 4 × 2
    assert_close_f32(c, expected, ops=16)
    ae.save_pretrained(tmp_path / "vae")
    again = load_vae_folder(tmp_path / "vae")
    torch.testing.assert_close(again.encode(x).latent_dist.mode(), z)
    with pytest.raises(ValueError, match="vae.transform: 'haar' is not one of none, dct"):
        PixelUnshuffleAutoencoder(transform="haar")


def test_unet_channels_must_match_the_autoencoder(pixel_config):
    """Catches: a UNet predicting 4 channels on a 48-channel latent being built (it fails later, deep in a conv)."""
    from dataclasses import replace

    from igr.models import build_model

    bad = replace(pixel_config, unet={**pixel_config.unet, "in_channels": 4, "out_channels": 4})
    with pytest.raises(IGRError, match="model.unet.out_channels: 4, but the autoencoder has 48"):
        build_model(bad)


def test_train_vae_on_the_pixel_autoencoder_measures_statistics_only(pixel_config, tmp_path):
    """Catches: `igr train-vae` trying to optimise a parameter-free autoencoder, or saving statistics that are not
    the garments' per-channel mean and std (the mean of channel 0 is the mean red value at patch position (0, 0))."""
    from igr.cli import main
    from igr.data.shards import iter_samples
    from igr.models.vae import build_vae
    from igr.vae_train import train_vae

    assert main(["make-shards", "synthetic", "--out", str(tmp_path / "s"), "--split", "train", "--num", "6",
                 "--size", "64x48", "--seed", "1"]) == 0
    result = train_vae(pixel_config, str(tmp_path / "s" / "train.json"), tmp_path / "vae", steps=50)
    assert result["steps"] == 0 and result["reconstruction_l1"] == 0 and result["final_l1"] is None
    json.dumps(result, allow_nan=False)  # the command prints it: strict JSON (it printed NaN before)
    vae = build_vae({}, None, str(tmp_path / "vae"))
    red = np.stack([s["garment"][::4, ::4, 0] for s in iter_samples(str(tmp_path / "s" / "train.json"))])
    assert vae.config.latents_mean[0] == pytest.approx(red.mean() / 127.5 - 1, abs=1e-4)


def test_colour_family_labels():
    """Catches: wrong hue sectors, achromatic colours given a hue, and meta.json labels that are not the family of
    the garment's dominant colour."""
    from igr.data.synthetic import (
        COLOUR_FAMILIES,
        SyntheticConfig,
        _family_hue,
        colour_family,
        generate_sample,
    )

    cases = {(230, 20, 20): "red", (230, 220, 30): "yellow", (30, 200, 40): "green", (30, 200, 210): "cyan",
             (30, 40, 220): "blue", (220, 30, 210): "magenta", (245, 245, 240): "white", (128, 128, 128): "grey",
             (30, 30, 38): "black"}
    assert {c: colour_family(c) for c in cases} == cases
    for h in np.linspace(0, 1, 97):  # squeezed hues keep ≥ 10° from every family boundary (30° + k·60°)
        deg = _family_hue(float(h)) * 360
        assert min(abs((deg - 30) % 60), 60 - abs((deg - 30) % 60)) >= 10 - 1e-6
    for i in range(5):
        g = generate_sample(0, "train", i, SyntheticConfig(size=(64, 48))).meta["garment"]
        rgb = tuple(int(g["dominant_colour"][k : k + 2], 16) for k in (1, 3, 5))
        assert g["colour_family"] == colour_family(rgb) in COLOUR_FAMILIES and g["dominant_colour"] in g["colours"]


def test_labels_from_meta_names_the_sample_and_the_missing_label():
    """Catches: shards from before the colour labels being scored with a silent default class."""
    from igr.metrics.tiny import labels_from_meta

    ok = {"garment": {"kind": "skirt", "colour_family": "blue", "pattern": "dots"}}
    assert labels_from_meta(ok, "x") == {"kind": 5, "colour": 4, "pattern": 5}  # KINDS[5], COLOUR_FAMILIES[4]
    with pytest.raises(IGRError, match=r"a.tar: k1: meta.json has no garment colour"):
        labels_from_meta({"garment": {"kind": "skirt", "pattern": "dots"}}, "a.tar: k1")


def test_category_mean_baseline_is_the_per_category_mean():
    """Catches: a mean over all garments (ignoring the category) or over the wrong axis."""
    from igr.metrics.tiny import GarmentSet, category_mean_baseline, category_mean_garments

    imgs = torch.tensor([10, 20, 200, 7], dtype=torch.uint8)[:, None, None, None].expand(4, 3, 2, 2).contiguous()
    train = GarmentSet(imgs, ["upper", "upper", "lower", "full"], {}, ["a", "b", "c", "d"])
    out = category_mean_baseline(category_mean_garments(train), ["lower", "upper", "full"])
    assert out[:, 0, 0, 0].tolist() == [200, 15, 7] and out.dtype == torch.uint8
    with pytest.raises(IGRError, match="no training garments of categories"):
        category_mean_baseline(category_mean_garments(train), ["dress"])


def _constant_classifier(classes: dict[str, int]):
    """A classifier that predicts one fixed class per attribute (zero weights, one-hot bias)."""
    from igr.metrics.tiny import GarmentClassifier

    clf = GarmentClassifier({"kind": 8, "colour": 9, "pattern": 7}).eval()
    with torch.no_grad():
        for a, head in clf.heads.items():
            head.weight.zero_()
            head.bias.fill_(-1.0)
            head.bias[classes[a]] = 1.0
    return clf


def test_scores_and_bootstrap_intervals():
    """Catches: accuracies not compared with the ground-truth labels, distances not zero for identical sets,
    intervals that do not contain the point value, and bootstrap draws that are not seeded."""
    from igr.metrics.tiny import bootstrap, score_row

    g = torch.Generator().manual_seed(0)
    gt = torch.randint(0, 256, (12, 3, 16, 12), generator=g, dtype=torch.uint8)
    labels = {"kind": torch.tensor([2] * 9 + [0] * 3), "colour": torch.tensor([1] * 6 + [3] * 6),
              "pattern": torch.tensor([0] * 12)}
    clf = _constant_classifier({"kind": 2, "colour": 3, "pattern": 6})
    row = score_row(clf, gt, gt, labels)
    point, ci = bootstrap(row, row.features, resamples=20, seed=1)
    assert point["kind_acc"] == 0.75 and point["colour_acc"] == 0.5 and point["pattern_acc"] == 0
    assert point["ssim"] == pytest.approx(1.0) and abs(point["fd_tiny"]) < 1e-6
    for k, (lo, hi) in ci.items():
        assert lo - 1e-9 <= point[k] <= hi + 1e-9 or k in ("fd_tiny", "kd_tiny"), k
    assert ci["colour_acc"][0] < 0.5 < ci["colour_acc"][1]
    assert bootstrap(row, row.features, resamples=20, seed=1)[1] == ci
    shifted = row.features + 0.5  # Fréchet distance of a shift: ‖δ‖² = D · 0.25
    row.features = shifted
    assert bootstrap(row, shifted - 0.5, resamples=2)[0]["fd_tiny"] == pytest.approx(64 * 0.25, rel=1e-6)


def test_paired_difference_removes_the_spread_the_rows_share():
    """Catches: rows resampled with different draws (the difference then carries both rows' spread), the
    difference taken the wrong way round, and a shared offset reported as a tie."""
    import numpy as np

    from igr.metrics.tiny import Scored, bootstrap_draws, interval, paired_difference

    rng = np.random.default_rng(0)
    n = 40
    feats = rng.normal(size=(n, 4))
    base = rng.uniform(0.2, 0.6, n)  # per-pair SSIM: pairs differ a lot, the rows by exactly 0.05 on each
    kind_b = np.arange(n) % 2 == 0  # B right on half the pairs, A on all of them
    a = Scored(base + 0.05, {"kind": np.ones(n, bool), "colour": kind_b, "pattern": kind_b}, feats)
    b = Scored(base, {"kind": kind_b, "colour": kind_b, "pattern": kind_b}, feats + 1.0)
    da, db = bootstrap_draws(a, feats, resamples=100, seed=3), bootstrap_draws(b, feats, resamples=100, seed=3)
    diff = paired_difference(da, db)
    assert diff["ssim"] == pytest.approx([0.05, 0.05, 0.05])  # the same pairs in every draw: no spread left
    lo, hi = interval(db[1]["ssim"])
    assert hi - lo > 0.03  # while each row's own interval is wide
    assert diff["kind_acc"][0] == pytest.approx(0.5) and 0 < diff["kind_acc"][1] <= 0.5 <= diff["kind_acc"][2]
    assert diff["colour_acc"] == [0.0, 0.0, 0.0]
    assert diff["fd_tiny"][0] == pytest.approx(-4.0) and diff["fd_tiny"][2] < 0  # B's features are shifted by 1


def test_demo_goal_check():
    """Catches: a goal reported as met when a baseline is better, or the Table 2 order checked the wrong way
    round (fd_tiny is lower-is-better)."""
    from igr.demo import check_goals

    rows = {
        "IGR tiny (coarse + HQFT)": {"ssim": 0.6, "kind_acc": 0.95, "colour_acc": 0.69, "fd_tiny": 1.0},
        "masked-crop baseline": {"ssim": 0.45},
        "category-mean baseline": {"ssim": 0.62},
        "w/o HQFT": {"ssim": 0.55, "fd_tiny": 1.5},  # fd order right, SSIM order wrong (0.55 < 0.56)
        "w/o GarmNet": {"ssim": 0.56, "fd_tiny": 2.0},
    }
    goals = check_goals(rows, "long")
    assert [text for text, ok in goals.items() if not ok] == [
        "SSIM above the category-mean baseline",
        "colour family right ≥ 70 %",
        "Table 2 order on SSIM: full > w/o HQFT > w/o GarmNet",
    ]
    assert "SSIM ≥ masked-crop + 0.10" not in check_goals({}, "default")
    assert not any("paper's HQFT" in text for text in goals)  # not trained: no goal for it
    # the same orders on the second Table 2 (the paper's HQFT), against the same w/o HQFT row
    paper = "the paper's HQFT (t uniform, best 20 %)"
    ssim_goal, fd_goal = (f"Table 2 order on {m} ({paper}): full {r} w/o HQFT {r} w/o GarmNet"
                          for m, r in (("SSIM", ">"), ("fd_tiny", "<")))
    # each case differs from the demo's own rows' verdicts on one metric
    for full, ssim_ok, fd_ok in (({"ssim": 0.56, "fd_tiny": 1.7}, True, False),
                                 ({"ssim": 0.545, "fd_tiny": 1.2}, False, True)):
        rows |= {f"IGR tiny, {paper}": full, f"w/o GarmNet, {paper}": {"ssim": 0.54, "fd_tiny": 1.6}}
        goals = check_goals(rows, "long")
        assert (goals[ssim_goal], goals[fd_goal]) == (ssim_ok, fd_ok), full


def test_demo_stages_run_with_passive_openmp(monkeypatch):
    """Catches: demo stages inheriting spinning OpenMP threads (7× slower training on a busy machine), or the
    demo overriding a value the user chose."""
    from igr.demo import stage_env

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert stage_env()["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert stage_env()["OMP_WAIT_POLICY"] == "ACTIVE"


def test_the_ssim_ceiling_script_redraws_each_test_pair_exactly(tmp_path):
    """Catches: oracles that are not the test pairs' own garments (the redraw must give SSIM 1.000 before one thing
    is changed), a pattern change that leaks into the rest of the sample, and a shift search that cannot undo a
    shift. docs/scripts/ssim_ceiling.py is how docs/tiny-world.md's round 15 measures the tiny world's ceiling."""
    import importlib.util
    from pathlib import Path

    from data_helpers import write_synthetic

    script = Path(__file__).resolve().parents[1] / "docs" / "scripts" / "ssim_ceiling.py"
    spec = importlib.util.spec_from_file_location("ssim_ceiling", script)
    ceiling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ceiling)
    write_synthetic(str(tmp_path), 6, split="test", seed=3, size=(64, 48))
    tar = str(next(tmp_path.glob("test-*.tar")))
    keys, garments = ceiling.read_pairs(tar, None)
    gt = ceiling.chw(garments)
    rows, _ = ceiling.oracles(keys, gt, ceiling.generator_config(tar, (64, 48)))
    assert rows["exact redraw"] == pytest.approx(1.0, abs=1e-12)
    assert 0.3 < rows["solid"] < 0.99 and 0.3 < rows["mean colour"] < 0.99
    assert rows["solid, shifted 0 px right, 2 px down"] < rows["solid"]
    shifted, best_dy = ceiling.best_shift(torch.roll(gt, (2, -1), (2, 3)), gt)
    assert shifted == pytest.approx(1.0, abs=1e-12) and best_dy == [-2] * len(keys)
    assert ceiling.windows(gt, gt)["edge"]["ssim"] == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(SystemExit, match="not made by this generator"):
        ceiling.oracles(keys, gt, ceiling.SyntheticConfig(size=(64, 48), defect_fraction=0.0))


def test_table2_beside_the_paper_ranks_each_metric_its_own_way():
    """Catches: the paper's SSIM order taken to be its FID order (its full model is last on SSIM, first on FID),
    a lower-is-better lead reported with the wrong sign, a neighbour's interval taken from the wrong rows or called
    resolved when it holds 0, and a metric some row lacks compared anyway."""
    from igr.metrics.table2 import compare, section

    names = {"IGR (paper)": "full", "w/o GarmNet": "nogarm", "w/o HQFT": "nohqft"}
    rows = {
        "full": {"ssim": 0.45, "fd_tiny": 16.0, "kd_tiny": 0.1},
        "nogarm": {"ssim": 0.44, "fd_tiny": 19.0, "kd_tiny": 0.3},
        "nohqft": {"ssim": 0.43, "fd_tiny": 17.0},  # no kd_tiny: that metric is left out
    }
    x = [0.40, 0.45, 0.50, 0.42]  # the pairs' shared spread, which the paired differences cancel
    draws = {
        "full": ({"ssim": 0.45, "fd_tiny": 16.0}, {"ssim": [v + 0.01 for v in x], "fd_tiny": [15.0, 16.0, 17.0, 18.0]}),
        "nogarm": ({"ssim": 0.44, "fd_tiny": 19.0}, {"ssim": x, "fd_tiny": [18.0, 19.0, 20.0, 21.0]}),
        # against nogarm: −0.02 on half the draws, +0.02 on the other half, so the lead's interval holds 0
        "nohqft": ({"ssim": 0.43, "fd_tiny": 17.0},
                   {"ssim": [v + d for v, d in zip(x, (0.02, -0.02, 0.02, -0.02))], "fd_tiny": [16.0, 17.0, 18.0, 19.0]}),
    }
    entries = {e["metric"]: e for e in compare(rows, names, draws)}
    assert set(entries) == {"ssim", "fd_tiny"}
    ssim, fd = entries["ssim"], entries["fd_tiny"]
    # the paper's Table 2, VITON-HD: SSIM 0.7895 / 0.7931 / 0.7984, FID 13.1425 / 15.7038 / 13.6753
    assert ssim["paper_order"] == ["w/o HQFT", "w/o GarmNet", "IGR (paper)"]
    assert fd["paper_metric"] == "fid" and fd["paper_order"] == ["IGR (paper)", "w/o HQFT", "w/o GarmNet"]
    assert ssim["tiny_order"] == ["IGR (paper)", "w/o GarmNet", "w/o HQFT"] and not ssim["same_order"]
    assert fd["tiny_order"] == ["IGR (paper)", "w/o HQFT", "w/o GarmNet"] and fd["same_order"]
    first, second = ssim["neighbours"]
    assert (first["better"], first["worse"], first["resolved"]) == ("IGR (paper)", "w/o GarmNet", True)
    assert first["difference"] == pytest.approx([0.01, 0.01, 0.01])
    assert second["difference"][0] == pytest.approx(0.01) and second["resolved"] is False
    assert second["difference"][1] < 0 < second["difference"][2]
    # fd_tiny is lower-is-better: full's lead over w/o HQFT is +1 on every draw, w/o HQFT's over w/o GarmNet +2
    assert [n["difference"] for n in fd["neighbours"]] == [pytest.approx([1.0, 1.0, 1.0]), pytest.approx([2.0] * 3)]
    assert all(n["resolved"] for n in fd["neighbours"])
    assert compare(rows, names)[0]["neighbours"][0]["difference"][1:] == [None, None]  # no draws: no interval
    text = "\n".join(section({"IGR tiny": list(entries.values()), "empty": []}))
    assert "| SSIM ↑ | w/o HQFT 0.7984 > w/o GarmNet 0.7931 > full 0.7895 | full 0.450 > w/o GarmNet 0.440 > " \
        "w/o HQFT 0.430 |" in text
    assert "Full = IGR tiny:" in text and "Full = empty" not in text  # a set without entries is left out
    assert "w/o GarmNet over w/o HQFT: +0.010 [" in text and "] tie |" in text
    assert "| FID ↓ / fd_tiny ↓ | full 13.14 < w/o HQFT 13.68 < w/o GarmNet 15.70 |" in text
    # the columns without a tiny counterpart: LPIPS ranks as FID does, CLIP-FID puts w/o GarmNet second
    assert "VITON-HD lpips: full > w/o HQFT > w/o GarmNet" in text
    assert "VITON-HD clip_fid: full > w/o GarmNet > w/o HQFT" in text and "VITON-HD fid:" not in text
    # without the SSIM entry, the paper's SSIM order is listed among the others, best (highest) first
    assert "VITON-HD ssim: w/o HQFT > w/o GarmNet > full" in "\n".join(section({"IGR tiny": [fd]}))
