"""Per-image seeds: the same seed gives the same image whatever the batch, its size or order (igr restore,
igr eval and the pipeline all seed image ``key`` with ``image_seed(seed, key)`` on CPU generators)."""

from __future__ import annotations

import zlib

import torch
from conftest import make_batch
from tolerance import assert_close_f32, tiny_restore_ops

from igr.sampling import image_generators, image_seed


def test_the_seed_scheme_is_seed_plus_crc32_of_the_key():
    assert image_seed(5, "00001_00") == 5 + zlib.crc32(b"00001_00")
    g = image_generators(5, ["00001_00", "x"])
    assert torch.equal(torch.randn(3, generator=g[0]), torch.randn(3, generator=torch.Generator().manual_seed(5 + zlib.crc32(b"00001_00"))))
    assert all(gen.device.type == "cpu" for gen in g)


def test_an_image_restores_the_same_alone_or_in_a_batch(tiny_model):
    """Catches one generator for the whole batch (image 2's noise would depend on images 0 and 1)."""
    b = make_batch(3)
    keys = ["a", "b", "c"]
    kwargs = dict(num_inference_steps=2, guidance_scale=1.5)
    together = tiny_model.restore(b["person"], b["mask"], b["category"][:3], generator=image_generators(0, keys), **kwargs)
    alone = tiny_model.restore(b["person"][2:], b["mask"][2:], b["category"][2:3], generator=image_generators(0, ["c"]), **kwargs)
    assert_close_f32(together[2:], alone, ops=tiny_restore_ops(2))  # batch of 3 vs 1: other kernels
    other = tiny_model.restore(b["person"][2:], b["mask"][2:], b["category"][2:3], generator=image_generators(1, ["c"]), **kwargs)
    assert not torch.allclose(other, alone, atol=1e-3)


def test_eval_scores_do_not_depend_on_the_batch_size(tmp_path, tiny_model):
    """igr eval used one generator per batch on the device: scores changed with --batch-size. Catches that."""
    from igr.cli import main
    from igr.evaluate import evaluate
    from igr.export import export_pipeline

    assert main(["make-shards", "synthetic", "--out", str(tmp_path / "s"), "--split", "test", "--num", "3",
                 "--size", "64x48"]) == 0
    pipe = export_pipeline(tiny_model, tmp_path / "pipe")
    (tmp_path / "no-weights").mkdir()
    cfg = tmp_path / "metrics.yaml"
    cfg.write_text(f"metrics: [ssim]\nweights_dir: {tmp_path / 'no-weights'}\n")
    scores = []
    for bs in (1, 3):
        result = evaluate([("m", str(pipe))], str(tmp_path / "s" / "test.json"), tmp_path / f"out{bs}", steps=2,
                          metrics_config=str(cfg), batch_size=bs)
        scores.append(result["rows"]["m"]["paired"]["ssim"])
    assert abs(scores[0] - scores[1]) < 1e-4, scores  # float rounding only (a pixel may round apart)
