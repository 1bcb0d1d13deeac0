"""``igr bench``: every optimised path gives the reference path's output on the tiny model, and the benchmark
itself runs end to end (2 steps) and reports what it promises."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from diffusers import UNet2DConditionModel
from tolerance import assert_close_f32, f32_atol, tiny_restore_ops

from igr import bench
from igr.cli import main
from igr.commands.bench import SKIPPABLE
from igr.config import CONFIG_DIR
from igr.models.denoiser import GarmDenoiser
from igr.models.garmfus import GarmFusSelfAttnProcessor

TINY = str(CONFIG_DIR / "model" / "tiny.yaml")
STEPS = 3


@pytest.fixture
def setup(tiny_model, batch):
    z = torch.randn(tiny_model.latent_shape(2), generator=torch.Generator().manual_seed(1))
    args = (batch["person"], batch["mask"], batch["category"])
    return tiny_model, args, z


def _count_calls(module: torch.nn.Module, sizes: list[int]):
    return module.register_forward_pre_hook(lambda m, a, kw: sizes.append(a[0].shape[0]), with_kwargs=True)


def test_garmnet_once_equals_garmnet_every_step(setup):
    m, args, z = setup
    assert m.garmnet.timestep == 0  # fixed t: F_hl does not depend on the denoising step
    calls: list[int] = []
    hook = _count_calls(m.garmnet, calls)
    with torch.inference_mode():
        once = m.restore(*args, num_inference_steps=STEPS, latents=z)
        n_once = len(calls)
        every = bench.restore_reference(m, *args, z, STEPS, 1.5, garmnet_every_step=True)
    hook.remove()
    # once on the conditional inputs, once on the constant unconditional input (cached from then on)
    assert n_once == 2 and len(calls) - n_once == STEPS
    assert_close_f32(every, once, ops=tiny_restore_ops(STEPS))
    # (every step vs once: the same ops but other batch sizes; float32 rounding only, tests/tolerance.py)
    # GarmNet's features do change the output, so the agreement above is not vacuous
    garmnet, m.garmnet = m.garmnet, None
    with torch.inference_mode():
        without = m.restore(*args, num_inference_steps=STEPS, latents=z)
    m.garmnet = garmnet
    assert (without - once).abs().max() > 1e-3


def test_batched_cfg_equals_sequential_cfg(setup):
    m, args, z = setup
    sizes: list[int] = []
    hook = _count_calls(m.denoiser, sizes)
    with torch.inference_mode():
        batched = m.restore(*args, num_inference_steps=STEPS, latents=z)
        n = len(sizes)
        sequential = bench.restore_reference(m, *args, z, STEPS, 1.5, sequential_cfg=True)
    hook.remove()
    assert sizes[:n] == [4] * STEPS  # one (2B) call per step
    assert sizes[n:] == [2] * (2 * STEPS)  # two (B) calls per step
    assert_close_f32(sequential, batched, ops=tiny_restore_ops(STEPS))
    # and guidance matters here: s = 1 (conditional branch only) gives another result
    with torch.inference_mode():
        unguided = m.restore(*args, num_inference_steps=STEPS, guidance_scale=1.0, latents=z)
    assert (unguided - batched).abs().max() > 10 * f32_atol(batched, tiny_restore_ops(STEPS))


def test_literal_concat_attention_equals_q_only_and_is_undone(setup):
    m, args, z = setup
    with torch.inference_mode():
        ours = m.restore(*args, num_inference_steps=STEPS, latents=z)
        with bench.literal_attention(m):
            kinds = {
                type(p) for n, p in m.denoiser.unet.attn_processors.items() if n.endswith("attn1.processor")
            }
            assert kinds == {bench.LiteralConcatProcessor}
            literal = m.restore(*args, num_inference_steps=STEPS, latents=z)
    assert_close_f32(literal, ours, ops=tiny_restore_ops(STEPS))
    kinds = {type(p) for n, p in m.denoiser.unet.attn_processors.items() if n.endswith("attn1.processor")}
    assert kinds == {GarmFusSelfAttnProcessor}


def test_unfused_attention_and_channels_last_equal_the_default(setup):
    m, args, z = setup
    with torch.inference_mode():
        ours = m.restore(*args, num_inference_steps=STEPS, latents=z)
        with bench.unfused_attention():
            unfused = m.restore(*args, num_inference_steps=STEPS, latents=z)
        with bench.channels_last(m):
            assert m.denoiser.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
            cl = m.restore(*args, num_inference_steps=STEPS, latents=z)
    assert m.denoiser.unet.conv_in.weight.is_contiguous()
    assert_close_f32(unfused, ours, ops=tiny_restore_ops(STEPS))
    assert_close_f32(cl, ours, ops=tiny_restore_ops(STEPS))


@pytest.mark.parametrize(
    "backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)]
)  # inductor: C++ codegen, ~1 min on 2 cores
def test_compiled_denoiser_equals_eager(setup, backend):
    m, args, z = setup
    eager_unet = m.denoiser.unet
    compiled = bench.CompiledDenoiser(m, backend=backend)
    with torch.inference_mode():
        ours = m.restore(*args, num_inference_steps=2, latents=z)
        with compiled.active():
            assert m.denoiser.unet is compiled.compiled
            out = m.restore(*args, num_inference_steps=2, latents=z)
    assert m.denoiser.unet is eager_unet
    assert_close_f32(out, ours, ops=tiny_restore_ops(2))  # compiled kernels fuse and reorder


def test_plain_sd_floor_is_igr_without_garmnet_and_adapter(tiny_config, setup):
    """The floor samples exactly like IGR (scheduler, CFG, decode): with GarmNet removed and λ = 0 the two
    agree, so the IGR / plain ratio measures GarmNet + GarmFus + IP-Adapter and nothing else."""
    m, args, z = setup
    torch.manual_seed(3)
    plain = UNet2DConditionModel(**tiny_config.unet).eval()
    m.denoiser = GarmDenoiser(copy.deepcopy(plain), image_embed_dim=32, num_ip_tokens=4, ip_scale=0.0).eval()
    m.garmnet = None
    with torch.inference_mode():
        igr = m.restore(*args, num_inference_steps=STEPS, latents=z)
        floor = bench.plain_sd_sample(plain, m, m.prompts(args[2]), z, STEPS, 1.5)
    assert_close_f32(floor, igr, ops=tiny_restore_ops(STEPS))


def test_memory_meter_follows_a_new_peak():
    meter = bench.MemoryMeter(torch.device("cpu"))
    if not meter.resettable:
        pytest.skip("peak RSS cannot be reset on this system")
    meter.reset()
    base = meter.peak()
    x = torch.ones(64 * 2**20 // 4 * 4)  # 256 MB, touched
    grown = meter.peak()
    del x
    meter.reset()
    assert grown - base > 200e6
    assert meter.peak() < grown - 200e6


def test_bench_smoke_two_steps(capsys):
    rc = main(["bench", "-c", TINY, "--steps", "2", "--fast-steps", "2", "--repeats", "1", "--json"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert (
        r["device_type"] == "cpu" and r["dtype"] == "float32" and r["versions"]["torch"] == torch.__version__
    )
    assert r["weights"].startswith("random init") and r["size"] == [64, 48] and r["steps"] == 2
    assert set(r["variants"]) == set(bench.DEFAULT_VARIANTS) - {"train"}
    for name, row in r["variants"].items():
        assert "error" not in row, (name, row)
        assert row["seconds_per_image"] > 0 and row["peak_memory_bytes"] > 0
        if name in (
            "garmnet-every-step",
            "uncond-uncached",
            "cfg-sequential",
            "literal-concat",
            "unfused-attention",
            "channels-last",
        ):
            assert row["equal_within_tolerance"], (name, row["max_abs_diff_vs_igr"])
    assert set(r["variants"]["igr"]["stages_seconds"]) == {"encode", "garmnet", "denoise_loop", "decode"}
    assert {
        "igr_over_plain",
        "garmnet_once_speedup",
        "uncond_cache_speedup",
        "batched_cfg_speedup",
        "q_only_attention_speedup",
    } <= set(r["ratios"])
    assert r["sdpa_everywhere"] and "GarmFusSelfAttnProcessor" in r["attention_processors"]["denoiser"]
    assert r["train"]["samples_per_second"] > 0 and r["train"]["batch"] == 1
    table = bench.format_report(r)
    assert "IGR / plain SD (end to end)" in table and "training step (batch 1" in table


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--size", "65x48"], "--size 65x48: height and width must be positive multiples of 8"),
        (["--size", "big"], "--size 'big': expected HxW"),
        (["--skip", "igr"], "--skip igr:"),
        (["--skip", "plain,warp"], "--skip warp: unknown variant"),
        (["--dtype", "int8"], "--dtype 'int8'"),
        (["--steps", "0"], "must be at least 1"),
    ],
)
def test_bench_errors_are_one_line(capsys, argv, message):
    assert main(["bench", "-c", TINY, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is missing")
def test_bench_without_cuda_is_a_clear_error(capsys):
    assert main(["bench", "-c", TINY, "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_help_lists_every_variant_without_importing_the_model():
    from igr.commands import bench as command

    assert set(command.SKIPPABLE) == set(bench.ALL_VARIANTS) - {"igr"}


@pytest.mark.parametrize("size, latent", [(None, [16, 12]), ("128x96", [32, 24])])
def test_bench_runs_the_demos_pixel_space_model(capsys, size, latent):
    """Catches: `igr bench -c configs/model/tiny_pixel.yaml` (the model `make demo` trains) failing on its
    attention-free pixel-unshuffle autoencoder, and a reported latent size that assumes an AutoencoderKL's
    8-pixel (or 2-per-block) downsampling."""
    pixel = str(CONFIG_DIR / "model" / "tiny_pixel.yaml")
    argv = ["bench", "-c", pixel, "--steps", "1", "--repeats", "1", "--skip", ",".join(v for v in SKIPPABLE if v in bench.DEFAULT_VARIANTS), "--json"]
    assert main(argv + (["--size", size] if size else [])) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["latent"] == latent and r["size"] == ([64, 48] if size is None else [128, 96])
    assert set(r["attention_processors"]) == {"garmnet", "denoiser"}
