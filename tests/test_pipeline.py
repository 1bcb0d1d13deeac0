"""IGRPipeline: inputs of every accepted form in, images at the model resolution out (in an output dataclass, as
diffusers does); seeds reproduce; GarmNet runs once per image with both CFG branches batched and the unconditional
branch's features cached; schedulers swap; offload and VAE tiling keep the image; loading builds on the meta device;
bad inputs fail with one clear line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tolerance import TINY_VAE_OPS, assert_close_f32, tiny_restore_ops

from igr.errors import IGRError
from igr.export import export_pipeline
from igr.models import adapter
from igr.pipeline import IGRPipeline, IGRPipelineOutput, resolve_device, resolve_dtype

STEPS = 2


def _person(h=100, w=80, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8))


def _mask(h=100, w=80) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[h // 5 : h * 3 // 4, w // 5 : w * 4 // 5] = 255
    return m


def _seed(s: int) -> torch.Generator:
    return torch.Generator().manual_seed(s)


@pytest.fixture
def pipe(tiny_model):
    return IGRPipeline.from_model(tiny_model)


def test_output_dataclass_in_every_output_type(pipe):
    """Catches: a wrong layout or range per output_type, return_dict ignored, masks reported without auto-masking."""
    out = pipe(_person(), _mask(), "upper", num_inference_steps=STEPS, generator=_seed(0))
    assert isinstance(out, IGRPipelineOutput) and out.masks is None
    [img] = out.images
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (48, 64)  # (W, H) of the model

    outs = pipe(
        [_person(), _person(seed=1)], [_mask(), _mask()], ["upper", "full"], num_inference_steps=STEPS
    ).images
    assert isinstance(outs, list) and len(outs) == 2
    assert all(isinstance(o, Image.Image) and o.size == (48, 64) for o in outs)

    batch = torch.rand(3, 3, 64, 48)  # a (B,3,H,W) tensor in [0,1] is a batch
    masks = torch.zeros(3, 1, 64, 48)
    masks[:, :, 10:50, 10:40] = 1
    t = pipe(batch, masks, "lower", num_inference_steps=STEPS, output_type="pt", generator=_seed(0)).images
    assert t.shape == (3, 3, 64, 48) and t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1
    a = pipe(batch, masks, "lower", num_inference_steps=STEPS, output_type="np", generator=_seed(0)).images
    assert isinstance(a, np.ndarray) and a.shape == (3, 64, 48, 3)
    np.testing.assert_array_equal(a, t.permute(0, 2, 3, 1).numpy())  # np is pt in HWC, same values
    (pil,) = pipe(batch, masks, "lower", num_inference_steps=STEPS, generator=_seed(0), return_dict=False)
    np.testing.assert_array_equal(np.asarray(pil[0]), (t[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    z = pipe(batch, masks, "lower", num_inference_steps=STEPS, output_type="latent", generator=_seed(0)).images
    assert z.shape == (3, 4, 16, 12)
    with pytest.raises(IGRError, match="output_type 'jpeg'"):
        pipe(batch, masks, "lower", output_type="jpeg")


def test_same_seed_same_image_different_seed_different(pipe):
    def run(seed):
        out = pipe(_person(), _mask(), "upper", num_inference_steps=STEPS, generator=_seed(seed))
        return np.asarray(out.images[0])

    a, b, c = run(0), run(0), run(1)
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 1


def test_per_image_generators_make_results_independent_of_the_batch(pipe):
    p0, p1 = _person(seed=0), _person(seed=1)
    alone = pipe(p1, _mask(), "full", num_inference_steps=STEPS, generator=_seed(7), output_type="pt").images[0]
    both = pipe(
        [p0, p1], [_mask(), _mask()], ["upper", "full"], num_inference_steps=STEPS,
        generator=[_seed(7), _seed(7)], output_type="pt",
    ).images  # fmt: skip
    assert_close_f32(both[1], alone, ops=tiny_restore_ops(STEPS))  # batch of 2 vs 1: other kernels
    with pytest.raises(IGRError, match="got 1 generators for 2 images"):
        pipe([p0, p1], [_mask(), _mask()], "upper", num_inference_steps=STEPS, generator=[_seed(0)])


def _count_calls(pipe, **call):
    """Batch size of every GarmNet and denoiser forward during one pipeline call."""
    calls = {"garmnet": [], "denoiser": []}
    hooks = [
        getattr(pipe.model, name).register_forward_hook(
            lambda mod, args, out, name=name: calls[name].append(args[0].shape[0])
        )
        for name in calls
    ]
    try:
        pipe(**call)
    finally:
        for h in hooks:
            h.remove()
    return calls


def test_garmnet_runs_once_per_image_and_cfg_is_batched(pipe):
    """Catches: GarmNet inside the step loop, CFG as two UNet calls, the unconditional features recomputed."""
    two = dict(person=[_person(), _person(seed=1)], mask=[_mask()] * 2, category="upper")
    calls = _count_calls(pipe, **two, num_inference_steps=3, guidance_scale=1.5)
    # GarmNet once on the 2 conditional inputs and once on the constant unconditional input; one 2B call per step
    assert calls == {"garmnet": [2, 1], "denoiser": [4, 4, 4]}
    calls = _count_calls(pipe, **two, num_inference_steps=3, guidance_scale=1.5)
    assert calls == {"garmnet": [2], "denoiser": [4, 4, 4]}  # the unconditional features are reused
    calls = _count_calls(pipe, **two, num_inference_steps=2, guidance_scale=1.0)
    assert calls == {"garmnet": [2], "denoiser": [2, 2]}  # s = 1: no unconditional branch
    assert pipe.model.denoiser.bank.features is None  # features released after sampling


def test_every_mask_form_gives_the_same_model_input(pipe):
    m255 = _mask()
    forms = {
        "L 0/255": Image.fromarray(m255),
        "RGB 0/255": Image.fromarray(np.stack([m255] * 3, -1)),
        "1-bit": Image.fromarray(m255 > 0),
        "uint8 0/1": m255 // 255,
        "bool": m255 > 0,
        "float tensor": torch.from_numpy(m255 / 255.0)[None],
        "RGBA array": np.dstack([m255] * 3 + [np.full_like(m255, 255)]),
    }
    ref_person, ref_mask = pipe.prepare(_person(), forms["L 0/255"])
    assert ref_person.shape == (3, 64, 48) and ref_mask.shape == (1, 64, 48)
    assert set(ref_mask.unique().tolist()) == {0.0, 1.0}
    for name, form in forms.items():
        _, mask = pipe.prepare(_person(), form)
        assert torch.equal(mask, ref_mask), name
    # the person as PIL, uint8 array, float array and (3,H,W) tensor in [0,1]
    arr = np.array(_person())
    for person in (arr, arr / 255.0, torch.from_numpy(arr).permute(2, 0, 1) / 255.0):
        p, _ = pipe.prepare(person, m255)
        assert_close_f32(p, ref_person, ops=64)  # float64 / uint8 / float32 inputs: resampled in other orders


def test_person_is_resized_keeping_aspect_and_mask_placed_with_it(pipe):
    # 100x100 into 64x48: scaled to 48x48 and centred with 8 rows of padding above and below
    mask = np.ones((100, 100), np.uint8)
    with pytest.warns(UserWarning, match="mask covers 100% of the image; is it inverted"):
        _, m = pipe.prepare(_person(100, 100), mask)
    rows = m[0].any(1).nonzero().flatten()
    assert (rows.min().item(), rows.max().item()) == (8, 55)


def test_grey_masks_are_thresholded_and_counted(pipe):
    m = _mask()
    m[5:15, :] = 200  # 800 grey pixels above the default threshold
    m[90:92, :] = 60  # 160 below it
    with pytest.warns(UserWarning, match=r"image mask: 960 grey mask pixels binarised at threshold 127"):
        _, default = pipe.prepare(_person(), m)
    with pytest.warns(UserWarning, match="threshold 230"):
        _, strict = pipe.prepare(_person(), m, mask_threshold=230)
    assert default.sum() > strict.sum()


def test_bad_inputs_raise_one_line_errors(pipe):
    cases = [
        (lambda: pipe.prepare(_person(), _mask(50, 40)), r"image mask: mask is 50x40 \(HxW\) but person"),
        (lambda: pipe.prepare(_person(), np.zeros((100, 80), np.uint8)), "image mask: empty mask"),
        (
            lambda: pipe.prepare(_person(), _mask(90, 90), resize_mask=True),
            "mask aspect 90x90 does not match",
        ),
        (lambda: pipe.prepare(torch.rand(3, 100, 80) * 2 - 1, _mask()), r"float values span \[-1"),
        (lambda: pipe(_person(), _mask(), "shoes"), "image 0: category 'shoes' is not one of"),
        (lambda: pipe([_person()] * 2, [_mask()], "upper"), "2 person images but 1 masks"),
        (lambda: pipe(_person(), _mask(), ["upper", "lower"]), "1 person images but 2 categories"),
        (lambda: pipe("me.jpg", _mask(), "upper"), "expected a PIL image"),
    ]
    for fn, message in cases:
        with pytest.raises(IGRError, match=message) as info:
            fn()
        assert "\n" not in str(info.value)
    # a mask at another resolution of the same photo is scaled with resize_mask
    _, m = pipe.prepare(_person(), _mask(50, 40), resize_mask=True)
    _, ref = pipe.prepare(_person(), _mask())
    assert (m != ref).float().mean() < 0.02


def test_from_pretrained_and_from_config_load_the_trained_weights(tiny_config, tmp_path):
    from igr.config import CONFIG_DIR
    from igr.models import build_model

    torch.manual_seed(0)
    model = build_model(tiny_config).eval()
    for name, p in model.denoiser.unet.named_parameters():  # "trained" weights that differ from the init
        if adapter.is_adapter_parameter(name):
            p.data.normal_(std=0.2)
    model.garmnet.unet.conv_in.weight.data[:, 4].normal_()
    folder = export_pipeline(model, tmp_path / "pipe")
    args = (_person(), _mask(), "upper")
    ref = IGRPipeline.from_model(model)(*args, num_inference_steps=STEPS, generator=_seed(0), output_type="pt").images

    loaded = IGRPipeline.from_pretrained(folder)
    assert loaded.resolution == (64, 48) and loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    out = loaded(*args, num_inference_steps=STEPS, generator=_seed(0), output_type="pt").images
    assert torch.equal(out, ref)  # the same weights through the same ops in one process: bit-equal

    torch.manual_seed(0)  # the tiny config's frozen parts are random-init: same seed, same frozen weights
    built = IGRPipeline.from_config(CONFIG_DIR / "model" / "tiny.yaml", weights=folder)
    out = built(*args, num_inference_steps=STEPS, generator=_seed(0), output_type="pt").images
    assert_close_f32(out, ref, ops=tiny_restore_ops(STEPS))
    with pytest.raises(IGRError, match="missing.ckpt: weights not found"):
        IGRPipeline.from_config(CONFIG_DIR / "model" / "tiny.yaml", weights=tmp_path / "missing.ckpt")
    with pytest.raises(IGRError, match="model folder not found"):
        IGRPipeline.from_pretrained(tmp_path / "nope")


def test_bfloat16_runs_and_matches_float32_roughly(pipe):
    ref = pipe(_person(), _mask(), "upper", num_inference_steps=STEPS, generator=_seed(0), output_type="pt").images
    pipe.to("cpu", "bfloat16")
    assert pipe.dtype == torch.bfloat16
    out = pipe(_person(), _mask(), "upper", num_inference_steps=STEPS, generator=_seed(0), output_type="pt").images
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert (out - ref).abs().mean() < 0.05


def test_device_and_dtype_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(IGRError, match="--dtype 'float8'"):
        resolve_dtype("float8", torch.device("cpu"))
    with pytest.raises(IGRError, match="not a device name"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(IGRError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_precision_matches_float32(tiny_model, dtype):
    pipe = IGRPipeline.from_model(tiny_model).to("cuda", torch.float32)
    ref = pipe(_person(), _mask(), "upper", num_inference_steps=STEPS, generator=_seed(0), output_type="pt").images
    pipe.to(dtype=dtype)
    cpu_gen = pipe(
        _person(), _mask(), "upper", num_inference_steps=STEPS, generator=_seed(0), output_type="pt"
    ).images
    cuda_gen = torch.Generator("cuda").manual_seed(0)  # generators on the device work too
    pipe(_person(), _mask(), "upper", num_inference_steps=STEPS, generator=cuda_gen)
    assert (cpu_gen - ref).abs().mean() < 0.05


# --------------------------------------------------------------------------- diffusers conventions


def _args():
    return dict(person=_person(), mask=_mask(), category="upper", num_inference_steps=3)


def test_pipeline_equals_the_uncached_two_branch_reference(pipe):
    """Catches: the cached unconditional GarmNet features differing from running GarmNet on the dropped inputs (the
    2B formulation of bench.restore_reference), on the call that fills the cache and on the one that reads it.

    Tolerance: the two run the same operations on differently composed batches (cached B + B rows against one 2B
    batch), so float32 kernels may block and sum in another order. Images are in [0,1]; over 3 steps of a tiny
    UNet the rounding stays within tens of ulp of 1 (1.6e-6 measured on AMD EPYC), so atol=1e-4 covers any CPU's
    kernels and stays far below what wrong unconditional features make (2.5e-2 with GarmNet run on the person
    instead of the dropped inputs)."""
    from igr.bench import restore_reference

    person, mask = pipe.prepare(_person(), _mask())
    person, mask = person[None], mask[None]
    z = torch.randn(pipe.model.latent_shape(1), generator=_seed(3))
    ref = restore_reference(pipe.model, person, mask, ["upper"], z, num_inference_steps=3, guidance_scale=2.0)
    for _ in range(2):  # the second call reads the cache
        out = pipe(**_args(), guidance_scale=2.0, latents=z, output_type="pt").images
        # batched 2B CFG and cached features vs two B-branch calls: other operation orders (a 1e-6 atol failed
        # on AMD EPYC); the wrong cached features this rules out move the image by more than 1e-2
        assert_close_f32(out, ref, ops=tiny_restore_ops(3))
    model_out = pipe.model.restore(person, mask, ["upper"], 3, guidance_scale=2.0, latents=z)
    assert_close_f32(model_out, ref, ops=tiny_restore_ops(3))


def test_unconditional_cache_is_invalidated_when_garmnet_weights_change(pipe):
    """Catches: stale cached features after a training step (in-place update) or load_state_dict."""
    z = torch.randn(pipe.model.latent_shape(1), generator=_seed(3))
    pipe(**_args(), latents=z)
    with torch.no_grad():  # what an optimizer step does: an in-place update of the parameters
        for p in pipe.model.garmnet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    cached = pipe(**_args(), latents=z, output_type="pt").images
    pipe.model.cache_unconditional = False
    fresh = pipe(**_args(), latents=z, output_type="pt").images
    assert_close_f32(cached, fresh, ops=tiny_restore_ops(3))  # cached (1-image) vs batched GarmNet features


def test_latents_and_callback_on_step_end(pipe):
    """Catches: ``latents=`` ignored, the callback not called once per step, its returned latents not used."""
    z = randn = torch.randn(pipe.model.latent_shape(1), generator=_seed(5))
    drawn = pipe(**_args(), generator=_seed(5), output_type="pt").images  # same noise, drawn from the seed
    given = pipe(**_args(), latents=z, output_type="pt").images
    torch.testing.assert_close(given, drawn, atol=0, rtol=0)  # the same noise through the same ops: bit-equal
    seen = []

    def zero_at_end(p, i, t, kwargs):
        seen.append((i, int(t), tuple(kwargs["latents"].shape)))
        return {"latents": torch.zeros_like(kwargs["latents"])} if i == 2 else {}

    out = pipe(**_args(), latents=randn, output_type="pt", callback_on_step_end=zero_at_end).images
    assert [s[0] for s in seen] == [0, 1, 2] and seen[0][2] == (1, 4, 16, 12)
    assert seen[0][1] > seen[-1][1]  # timesteps run from noisy to clean
    expect = (pipe.model.vae.decode(torch.zeros(1, 4, 16, 12)).float() + 1) / 2  # decode of the replaced latents
    assert_close_f32(out, expect.clamp(0, 1), ops=TINY_VAE_OPS)  # one decode, in and out of the pipeline
    with pytest.raises(IGRError, match="only \\['latents'\\]"):
        pipe(**_args(), callback_on_step_end=zero_at_end, callback_on_step_end_tensor_inputs=["noise_pred"])
    with pytest.raises(IGRError, match="latents have shape"):
        pipe(**_args(), latents=torch.zeros(1, 4, 8, 8))


def test_schedulers_swap_as_in_diffusers(pipe):
    """Catches: ``pipe.scheduler`` ignored, init_noise_sigma / scale_model_input skipped (Euler needs both), and a
    scheduler of another parameterisation accepted silently."""
    from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler

    z = torch.randn(pipe.model.latent_shape(1), generator=_seed(1))
    ddim = pipe(**_args(), latents=z, output_type="pt").images
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    dpm = pipe(**_args(), latents=z, output_type="pt").images
    person, mask = pipe.prepare(_person(), _mask())
    ref = pipe.model.restore(person[None], mask[None], ["upper"], 3, latents=z, sampler="dpmsolver++")
    assert_close_f32(dpm, ref, ops=tiny_restore_ops(3))  # the library's sampler, through our loop
    assert (dpm - ddim).abs().max() > 1e-3

    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    assert pipe.scheduler.init_noise_sigma > 1
    seen = []
    pipe(**_args(), latents=z, callback_on_step_end=lambda p, i, t, kw: seen.append(kw["latents"].std()))
    assert seen[0] > 2  # z_T was scaled by init_noise_sigma (about 14.6 for SD's schedule)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, prediction_type="v_prediction")
    with pytest.raises(IGRError, match="prediction_type=v_prediction, the model was trained with epsilon"):
        pipe(**_args())


def test_cpu_offload_and_vae_tiling_give_the_plain_image(pipe):
    """Catches: CPU offload that silently does nothing without an accelerator (diffusers raises), and tiling that
    is not applied (the tiled decode must actually run) or that changes the image beyond blending."""
    z = torch.randn(pipe.model.latent_shape(1), generator=_seed(2))
    plain = pipe(**_args(), latents=z, output_type="pt").images
    if not torch.cuda.is_available():
        for enable in (pipe.enable_model_cpu_offload, pipe.enable_sequential_cpu_offload):
            with pytest.raises(RuntimeError, match="requires accelerator"):
                enable()

    tiled_calls = []
    vae = pipe.model.vae.vae
    orig = vae.tiled_decode
    vae.tiled_decode = lambda *a, **k: tiled_calls.append(1) or orig(*a, **k)
    pipe.enable_vae_tiling(tile_size=32)  # 64x48 output in 32-pixel tiles with a quarter overlap
    tiled = pipe(**_args(), latents=z, output_type="pt").images
    pipe.disable_vae_tiling()
    assert tiled_calls, "the tiled decode did not run"
    # The tiny random VAE normalises each small tile on its own statistics, so the tiled image is not bit-equal;
    # it must still be the same image: far closer to the plain decode than another seed's image is.
    other = pipe(**_args(), latents=torch.randn(z.shape, generator=_seed(9)), output_type="pt").images
    assert (tiled - plain).abs().mean() < 0.5 * (other - plain).abs().mean()
    with pytest.raises(IGRError, match="tile_size=24: must be a positive multiple of 32"):
        pipe.enable_vae_tiling(tile_size=24)


def test_loading_builds_on_the_meta_device_and_assigns_the_weights(tiny_model, tmp_path, monkeypatch):
    """Catches: a load that randomly initialises every layer before reading the weights (the cost of 1.7 B
    parameters on every load), and a meta tensor left behind."""
    folder = export_pipeline(tiny_model, tmp_path / "pipe")
    devices = []
    for cls in (torch.nn.Linear, torch.nn.Conv2d):
        orig = cls.reset_parameters
        monkeypatch.setattr(cls, "reset_parameters", lambda self, orig=orig: devices.append(self.weight.device.type) or orig(self))
    loaded = IGRPipeline.from_pretrained(folder, torch_dtype=torch.bfloat16)
    assert devices and set(devices) == {"meta"}, set(devices)
    assert loaded.dtype == torch.bfloat16
    assert not [n for n, t in list(loaded.model.named_parameters()) + list(loaded.model.named_buffers())
                if t.device.type == "meta"]  # fmt: skip
    for (name, a), b in zip(tiny_model.state_dict().items(), loaded.model.state_dict().values()):
        torch.testing.assert_close(b.float(), a.to(torch.bfloat16).float(), atol=0, rtol=0, msg=name)


def test_save_pretrained_round_trips_and_writes_a_model_card(pipe, tmp_path):
    """Catches: save_pretrained writing something from_pretrained cannot read, no model card, saving over a folder
    refused, and a swapped scheduler lost on the way (it was: DPM-Solver saved, DDIM loaded)."""
    from diffusers import DPMSolverMultistepScheduler

    z = torch.randn(pipe.model.latent_shape(1), generator=_seed(4))
    folder = pipe.save_pretrained(tmp_path / "saved")
    card = (folder / "README.md").read_text()
    assert "CreativeML OpenRAIL-M" in card and "VITON-HD" in card
    again = IGRPipeline.from_pretrained(folder)
    torch.testing.assert_close(
        again(**_args(), latents=z, output_type="pt").images, pipe(**_args(), latents=z, output_type="pt").images,
        atol=0, rtol=0,
    )
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.save_pretrained(folder)  # over an existing folder, as diffusers does
    assert type(IGRPipeline.from_pretrained(folder).scheduler) is DPMSolverMultistepScheduler


def test_missing_mask_without_parser_is_a_clear_error(pipe):
    with pytest.raises(IGRError, match="no mask given and no garment parser loaded"):
        pipe(_person(), category="upper")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_offload_lowers_peak_memory_and_keeps_the_image(tiny_model):
    """On a GPU: with CPU offload the once-run parts are on the CPU while the denoiser runs, peak memory is lower,
    and the image is the plain path's."""
    pipe = IGRPipeline.from_model(tiny_model).to("cuda")
    z = torch.randn(pipe.model.latent_shape(1), generator=_seed(0))
    torch.cuda.reset_peak_memory_stats()
    plain = pipe(**_args(), latents=z, output_type="pt").images
    plain_peak = torch.cuda.max_memory_allocated()
    pipe.enable_model_cpu_offload()  # accelerate's hooks, through diffusers
    torch.cuda.reset_peak_memory_stats()
    where = []
    out = pipe(**_args(), latents=z, output_type="pt",
               callback_on_step_end=lambda p, i, t, kw: where.append(next(p.model.garmnet.parameters()).device.type))
    assert set(where) == {"cpu"} and torch.cuda.max_memory_allocated() < plain_peak
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=0)


def test_igr_version(capsys):
    import igr
    from igr.cli import main

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"igr {igr.__version__}"
