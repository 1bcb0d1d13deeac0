"""A diffusers user's checklist, run against the tiny exported pipeline (``tiny_pipeline_dir``): the folder layout,
``DiffusionPipeline.from_pretrained``, the standard keywords of ``from_pretrained``/``__call__``/``to``/
``save_pretrained``, ``components``/``config``, the progress bar, offload through accelerate, attention slicing,
``push_to_hub``, older folders and ``igr export --upgrade``, and errors that name Python arguments."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler, EulerDiscreteScheduler

from igr.errors import IGRError
from igr.pipeline import IGRPipeline

MODULES = ["denoiser", "garmnet", "image_encoder", "prompts", "scheduler", "vae"]


def _person(h=80, w=60, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _mask(h=80, w=60):
    m = np.zeros((h, w), np.uint8)
    m[20:60, 10:50] = 1
    return m


def _seed(s):
    return torch.Generator().manual_seed(s)


def _run(pipe, **kw):
    kw.setdefault("num_inference_steps", 2)
    kw.setdefault("output_type", "pt")
    return pipe(_person(), _mask(), "upper", **kw).images


@pytest.fixture
def pipe(tiny_pipeline_dir):
    p = IGRPipeline.from_pretrained(tiny_pipeline_dir)
    p.set_progress_bar_config(disable=True)
    return p


def test_folder_layout_and_diffusion_pipeline_from_pretrained(tiny_pipeline_dir, tmp_path, monkeypatch):
    """Catches: no model_index.json, a module without its own folder, components declared under a module diffusers
    cannot resolve, DiffusionPipeline.from_pretrained not returning an IGRPipeline, and IGRPipeline.from_pretrained
    executing code shipped in the folder."""
    import diffusers.utils.dynamic_modules_utils as dyn

    index = json.loads((tiny_pipeline_dir / "model_index.json").read_text())
    assert index["_class_name"] == ["igr_pipeline", "IGRPipeline"]
    for name in MODULES:
        assert (tiny_pipeline_dir / name).is_dir(), name
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
    assert index["garmnet"] == ["igr.components", "GarmNetModel"]
    assert index["parser"] == [None, None]  # optional, not saved
    assert (tiny_pipeline_dir / "scheduler" / "scheduler_config.json").is_file()

    monkeypatch.setattr(dyn, "HF_MODULES_CACHE", str(tmp_path / "modules"))  # where diffusers copies the shim
    with pytest.raises(ValueError, match="trust_remote_code=True"):  # diffusers' own rule for code in a folder
        DiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    pipe = DiffusionPipeline.from_pretrained(tiny_pipeline_dir, trust_remote_code=True)
    assert type(pipe) is IGRPipeline  # the installed class, not a copy from the folder

    # IGRPipeline.from_pretrained never runs the folder's file
    folder = shutil.copytree(tiny_pipeline_dir, tmp_path / "pipe")
    (folder / "igr_pipeline.py").write_text("raise SystemExit('the folder ran code')\n")
    assert type(IGRPipeline.from_pretrained(folder)) is IGRPipeline


def test_components_config_and_standard_loading_keywords(pipe, tiny_pipeline_dir, tmp_path):
    """Catches: components/config missing a module, from_pretrained dropping scheduler=, torch_dtype=, variant=,
    use_safetensors= or low_cpu_mem_usage=, and the swapped scheduler lost by save_pretrained (DDIM came back)."""
    assert sorted(pipe.components) == sorted(MODULES + ["parser"]) and pipe.components["parser"] is None
    assert pipe.components["denoiser"] is pipe.denoiser is pipe.model.denoiser  # one set of modules
    assert pipe.config["sampling_config"]["steps"] == 25 and pipe.config["model_config"]["resolution"] == [64, 48]
    ref = _run(pipe, generator=_seed(0))

    other = IGRPipeline.from_pretrained(tiny_pipeline_dir)
    with torch.no_grad():
        other.denoiser.unet.conv_out.weight.mul_(3)
    pipe.denoiser = other.denoiser  # a module swapped in is the one that runs
    assert pipe.model.denoiser is other.denoiser and pipe.config["denoiser"] == ("igr.components", "GarmDenoiserModel")
    torch.testing.assert_close(_run(pipe, generator=_seed(0)), _run(other, generator=_seed(0)), atol=0, rtol=0)
    assert (_run(pipe, generator=_seed(0)) - ref).abs().max() > 1e-3

    euler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    swapped = IGRPipeline.from_pretrained(tiny_pipeline_dir, scheduler=euler)
    assert swapped.scheduler is euler
    slow = IGRPipeline.from_pretrained(tiny_pipeline_dir, low_cpu_mem_usage=False, use_safetensors=True)
    torch.testing.assert_close(_run(slow, generator=_seed(0)), ref, atol=0, rtol=0)

    half = IGRPipeline.from_pretrained(tiny_pipeline_dir, torch_dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.vae.dtype == torch.bfloat16

    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.to(torch_dtype=torch.bfloat16).save_pretrained(tmp_path / "saved", variant="bf16")
    assert (tmp_path / "saved" / "denoiser" / "diffusion_pytorch_model.bf16.safetensors").is_file()
    again = IGRPipeline.from_pretrained(tmp_path / "saved", variant="bf16", torch_dtype=torch.bfloat16)
    assert type(again.scheduler) is DPMSolverMultistepScheduler and again.dtype == torch.bfloat16
    with pytest.raises(IGRError, match=r"saved: cannot load \(ValueError: .*`variant=fp16`, but no such"):
        IGRPipeline.from_pretrained(tmp_path / "saved", variant="fp16")

    # pickled .bin weights: written on request, read only on request (diffusers itself would fall back to them)
    pipe.save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert (tmp_path / "bin" / "denoiser" / "diffusion_pytorch_model.bin").is_file()
    with pytest.raises(IGRError, match=r"no file named diffusion_pytorch_model.safetensors"):
        IGRPipeline.from_pretrained(tmp_path / "bin")
    assert IGRPipeline.from_pretrained(tmp_path / "bin", use_safetensors=False).dtype == torch.float32


def test_call_keywords(pipe):
    """Catches: num_images_per_prompt, eta, height/width or return_dict ignored or raising TypeError, a wrong size
    accepted silently, and num_inference_steps=0 running the default 25 steps."""
    two = _run(pipe, num_images_per_prompt=2, generator=[_seed(0), _seed(0)])
    assert two.shape == (2, 3, 64, 48)
    torch.testing.assert_close(two[0], two[1], atol=0, rtol=0)  # same person, same seed
    assert len(pipe(_person(), _mask(), num_inference_steps=1, num_images_per_prompt=3).images) == 3  # PIL list

    ddim = _run(pipe, generator=_seed(1), guidance_scale=1.0)
    assert isinstance(pipe.scheduler, DDIMScheduler)
    noisy = _run(pipe, generator=_seed(1), guidance_scale=1.0, eta=1.0)
    assert (noisy - ddim).abs().max() > 1e-3  # eta=1 adds DDIM's noise
    torch.testing.assert_close(_run(pipe, generator=_seed(1), guidance_scale=1.0, eta=0.0), ddim, atol=0, rtol=0)

    torch.testing.assert_close(_run(pipe, generator=_seed(1), guidance_scale=1.0, height=64, width=48), ddim,
                               atol=0, rtol=0)  # fmt: skip
    with pytest.raises(IGRError, match=r"height=512, width=None: this model restores at height=64, width=48"):
        _run(pipe, height=512)
    (images,) = pipe(_person(), _mask(), num_inference_steps=1, return_dict=False, output_type="np")
    assert images.shape == (1, 64, 48, 3)
    for bad in (0, -1, 2.5):
        with pytest.raises(IGRError, match=rf"num_inference_steps={bad}: must be an integer from 1 to 1000"):
            _run(pipe, num_inference_steps=bad)
    with pytest.raises(IGRError, match="num_images_per_prompt=0"):
        _run(pipe, num_images_per_prompt=0)


def test_to_progress_bar_offload_and_attention_slicing(pipe, capsys):
    """Catches: to(torch_dtype=) raising TypeError, errors quoting CLI flags (--device), the progress bar not
    following set_progress_bar_config, offload silently doing nothing without a GPU, and attention slicing replacing
    the GarmFus / IP-Adapter processors."""
    assert pipe.to("cpu", torch_dtype=torch.bfloat16).dtype == torch.bfloat16
    assert pipe.to(torch.float32).dtype == torch.float32 and pipe.to(dtype="bf16").dtype == torch.bfloat16
    pipe.to(torch.float32)
    if not torch.cuda.is_available():
        with pytest.raises(IGRError, match="^device=cuda: CUDA is not available") as info:
            pipe.to("cuda")
        assert "--" not in str(info.value)
    with pytest.raises(IGRError, match="^dtype='float8': expected auto"):
        pipe.to(dtype="float8")

    capsys.readouterr()
    _run(pipe, num_inference_steps=1)
    assert "it/s" not in capsys.readouterr().err  # disabled by the fixture
    pipe.set_progress_bar_config(disable=False)
    _run(pipe, num_inference_steps=1)
    assert "1/1" in capsys.readouterr().err  # diffusers' tqdm bar, on by default

    if not torch.cuda.is_available():
        for enable in (lambda: pipe.enable_model_cpu_offload(gpu_id=0), pipe.enable_sequential_cpu_offload):
            with pytest.raises(RuntimeError, match="requires accelerator"):
                enable()

    before = {k: type(v) for k, v in pipe.denoiser.unet.attn_processors.items()}
    with pytest.warns(UserWarning, match="enable_attention_slicing: not applied"):
        pipe.enable_attention_slicing()
    assert {k: type(v) for k, v in pipe.denoiser.unet.attn_processors.items()} == before


def test_push_to_hub_uploads_what_save_pretrained_writes(pipe, monkeypatch):
    """Catches: push_to_hub missing, or uploading a folder from_pretrained cannot read (no model_index.json, no
    class shim). The Hub calls are replaced: tests never touch the network."""
    import diffusers.utils.hub_utils as hub

    class Card:
        def save(self, path):
            open(path, "w").write("card")

    seen = {}
    monkeypatch.setattr(hub, "create_repo", lambda repo_id, **kw: type("R", (), {"repo_id": repo_id}))
    monkeypatch.setattr(hub, "load_or_create_model_card", lambda *a, **kw: Card())
    monkeypatch.setattr(hub, "populate_model_card", lambda card, *a, **kw: card)

    def upload(self, folder, repo_id, **kw):
        from pathlib import Path

        seen["files"] = sorted(p.name for p in Path(folder).iterdir())
        seen["reloads"] = type(IGRPipeline.from_pretrained(folder)).__name__
        return repo_id

    monkeypatch.setattr(IGRPipeline, "_upload_folder", upload)
    assert pipe.push_to_hub("org/igr-tiny") == "org/igr-tiny"
    assert {"model_index.json", "igr_pipeline.py", *MODULES} <= set(seen["files"]) and seen["reloads"] == "IGRPipeline"


def test_old_folders_load_and_upgrade(tiny_model, tmp_path, capsys):
    """Catches: a folder of the older layout (model.yaml + <part>.safetensors) no longer loading, `igr export
    --upgrade` writing a folder that differs in weights or sampling defaults, and upgrading a new folder."""
    from igr.cli import main
    from igr.config import SamplingConfig
    from igr.export import write_legacy_pipeline

    old = write_legacy_pipeline(tiny_model, tmp_path / "old", SamplingConfig(steps=7, guidance_scale=2.0))
    ref = _run(IGRPipeline.from_model(tiny_model), generator=_seed(0), guidance_scale=1.5)
    legacy = IGRPipeline.from_pretrained(old)
    assert legacy.sampling.steps == 7
    torch.testing.assert_close(_run(legacy, generator=_seed(0), guidance_scale=1.5), ref, atol=0, rtol=0)
    with pytest.raises(IGRError, match="variant need a folder in the diffusers layout; convert this one"):
        IGRPipeline.from_pretrained(old, variant="fp16")

    assert main(["export", "--upgrade", str(old), "--out", str(tmp_path / "new")]) == 0
    new = IGRPipeline.from_pretrained(tmp_path / "new")
    assert (tmp_path / "new" / "model_index.json").is_file() and new.sampling.guidance_scale == 2.0
    torch.testing.assert_close(_run(new, generator=_seed(0), guidance_scale=1.5), ref, atol=0, rtol=0)
    capsys.readouterr()
    assert main(["export", "--upgrade", str(tmp_path / "new"), "--out", str(tmp_path / "again")]) == 2
    assert "already in the diffusers layout" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model_and_sequential_offload_keep_the_image(tiny_pipeline_dir):
    """On a GPU: accelerate's hooks (through diffusers) move each part in for its use — the VAE's encode/decode
    included (apply_forward_hook) — and the image stays the plain path's. Tolerance: the same kernels on the same
    device, only the parts' placement differs; 1e-5 on [0,1] images allows for cuBLAS choosing other algorithms."""
    pipe = IGRPipeline.from_pretrained(tiny_pipeline_dir).to("cuda")
    pipe.set_progress_bar_config(disable=True)
    plain = _run(pipe, generator=_seed(0))
    for enable in (pipe.enable_model_cpu_offload, pipe.enable_sequential_cpu_offload):
        pipe = IGRPipeline.from_pretrained(tiny_pipeline_dir)
        pipe.set_progress_bar_config(disable=True)
        enable()
        torch.testing.assert_close(_run(pipe, generator=_seed(0)), plain, atol=1e-5, rtol=0)
        assert pipe._execution_device.type == "cuda"
