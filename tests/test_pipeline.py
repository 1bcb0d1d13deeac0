"""IGRPipeline: inputs of every accepted form in, PIL images at the model resolution out; seeds reproduce;
GarmNet runs once per image with both CFG branches batched; bad inputs fail with one clear line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from igr.errors import IGRError
from igr.export import export_pipeline
from igr.models import adapter
from igr.pipeline import IGRPipeline, resolve_device, resolve_dtype

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
    return IGRPipeline(tiny_model)


def test_single_input_gives_one_image_and_lists_give_lists(pipe):
    out = pipe(_person(), _mask(), "upper", num_inference_steps=STEPS, generator=_seed(0))
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (48, 64)  # (W, H) of the model

    outs = pipe(
        [_person(), _person(seed=1)], [_mask(), _mask()], ["upper", "full"], num_inference_steps=STEPS
    )
    assert isinstance(outs, list) and len(outs) == 2
    assert all(isinstance(o, Image.Image) and o.size == (48, 64) for o in outs)

    batch = torch.rand(3, 3, 64, 48)  # a (B,3,H,W) tensor in [0,1] is a batch
    masks = torch.zeros(3, 1, 64, 48)
    masks[:, :, 10:50, 10:40] = 1
    t = pipe(batch, masks, "lower", num_inference_steps=STEPS, output_type="pt")
    assert t.shape == (3, 3, 64, 48) and t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1


def test_same_seed_same_image_different_seed_different(pipe):
    def run(seed):
        return np.asarray(pipe(_person(), _mask(), "upper", num_inference_steps=STEPS, generator=_seed(seed)))

    a, b, c = run(0), run(0), run(1)
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 1


def test_per_image_generators_make_results_independent_of_the_batch(pipe):
    p0, p1 = _person(seed=0), _person(seed=1)
    alone = pipe(p1, _mask(), "full", num_inference_steps=STEPS, generator=_seed(7), output_type="pt")
    both = pipe(
        [p0, p1], [_mask(), _mask()], ["upper", "full"], num_inference_steps=STEPS,
        generator=[_seed(7), _seed(7)], output_type="pt",
    )  # fmt: skip
    torch.testing.assert_close(both[1], alone, atol=1e-4, rtol=0)
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
    two = dict(person=[_person(), _person(seed=1)], mask=[_mask()] * 2, category="upper")
    calls = _count_calls(pipe, **two, num_inference_steps=3, guidance_scale=1.5)
    assert calls == {
        "garmnet": [4],
        "denoiser": [4, 4, 4],
    }  # GarmNet once for both branches; one 2B call per step
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
        torch.testing.assert_close(p, ref_person, atol=1e-6, rtol=0)


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
    ref = IGRPipeline(model)(*args, num_inference_steps=STEPS, generator=_seed(0), output_type="pt")

    loaded = IGRPipeline.from_pretrained(folder)
    assert loaded.resolution == (64, 48) and loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    assert torch.equal(loaded(*args, num_inference_steps=STEPS, generator=_seed(0), output_type="pt"), ref)

    torch.manual_seed(0)  # the tiny config's frozen parts are random-init: same seed, same frozen weights
    built = IGRPipeline.from_config(CONFIG_DIR / "model" / "tiny.yaml", weights=folder)
    out = built(*args, num_inference_steps=STEPS, generator=_seed(0), output_type="pt")
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    with pytest.raises(IGRError, match="missing.ckpt: weights not found"):
        IGRPipeline.from_config(CONFIG_DIR / "model" / "tiny.yaml", weights=tmp_path / "missing.ckpt")
    with pytest.raises(IGRError, match="model folder not found"):
        IGRPipeline.from_pretrained(tmp_path / "nope")


def test_bfloat16_runs_and_matches_float32_roughly(pipe):
    ref = pipe(_person(), _mask(), "upper", num_inference_steps=STEPS, generator=_seed(0), output_type="pt")
    pipe.to("cpu", "bfloat16")
    assert pipe.dtype == torch.bfloat16
    out = pipe(_person(), _mask(), "upper", num_inference_steps=STEPS, generator=_seed(0), output_type="pt")
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
    pipe = IGRPipeline(tiny_model).to("cuda", torch.float32)
    ref = pipe(_person(), _mask(), "upper", num_inference_steps=STEPS, generator=_seed(0), output_type="pt")
    pipe.to(dtype=dtype)
    cpu_gen = pipe(
        _person(), _mask(), "upper", num_inference_steps=STEPS, generator=_seed(0), output_type="pt"
    )
    cuda_gen = torch.Generator("cuda").manual_seed(0)  # generators on the device work too
    pipe(_person(), _mask(), "upper", num_inference_steps=STEPS, generator=cuda_gen)
    assert (cpu_gen - ref).abs().mean() < 0.05
