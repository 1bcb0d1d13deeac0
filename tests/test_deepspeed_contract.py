"""Our side of DeepSpeed's checkpoint contract (Lightning 2.6's DeepSpeedStrategy, deepspeed 0.19, ZeRO-2, bf16),
where every checkpoint is a folder: resume picks the newest complete one, interrupted saves are never picked,
exports take frozen parts from their sources, the grad norm is the engine's, and ``init_from`` is converted once
per node. Folders come from ``ds_layout.write_deepspeed_folder`` (DeepSpeed's layout, checked against DeepSpeed's
own writer in the slow test at the end, which runs Lightning's DeepSpeedStrategy on the CPU: cpu_deepspeed.py)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from ds_layout import write_deepspeed_folder
from lightning.pytorch.callbacks import ModelCheckpoint

from igr.checkpoints import resume_checkpoint
from igr.errors import IGRError
from igr.export import read_checkpoint

# converting a folder (export, init_from) and building the strategy need deepspeed (the dev extras install it)
needs_deepspeed = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed")


def _module() -> torch.nn.Module:
    torch.manual_seed(0)
    m = torch.nn.Sequential(OrderedDict(frozen=torch.nn.Linear(3, 4), trained=torch.nn.Linear(4, 2)))
    m.frozen.requires_grad_(False)
    m.register_buffer("scale", torch.full((2,), 0.5))
    return m


def _lightning_checkpoint(module: torch.nn.Module, step: int) -> dict:
    """What Lightning's checkpoint connector hands the strategy: our hooks' entries (noise_rng, ema_state) too."""
    return {
        "state_dict": module.state_dict(),
        "optimizer_states": [{}],
        "global_step": step,
        "epoch": 0,
        "pytorch-lightning_version": "2.6.6",
        "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 0}}}},
        "callbacks": {"EMA": {"optimization_step": step, "warmup": True}},
        "hyper_parameters": {"init_from": None},
        "noise_rng": [torch.Generator().manual_seed(step).get_state()],
        "ema_state": {"trained.weight": torch.full((2, 4), float(step))},
    }


def _trainer(folder: Path, deepspeed: bool = True) -> SimpleNamespace:
    strategy = SimpleNamespace(deepspeed_engine=None) if deepspeed else SimpleNamespace()
    return SimpleNamespace(checkpoint_callbacks=[ModelCheckpoint(dirpath=folder)], strategy=strategy)


def _ds(folder: Path, step: int, dp: int = 1) -> Path:
    module = _module()
    return write_deepspeed_folder(folder, module, _lightning_checkpoint(module, step), dp_world_size=dp)


def test_a_deepspeed_folder_reads_as_its_client_state_cheaply(tmp_path):
    """Lightning's keys come back from the model-states file (weights-only, memory-mapped) as from a .ckpt file."""
    folder = _ds(tmp_path / "last.ckpt", 6)
    data = read_checkpoint(folder, mmap=True)
    assert data["global_step"] == 6 and data["callbacks"]["EMA"]["optimization_step"] == 6
    assert torch.equal(data["noise_rng"][0], torch.Generator().manual_seed(6).get_state())
    assert torch.equal(data["ema_state"]["trained.weight"], torch.full((2, 4), 6.0))
    assert "state_dict" not in data and data["module"]["trained.weight"].dtype == torch.bfloat16


def test_last_resumes_from_the_newest_complete_deepspeed_folder_and_reports_interrupted_saves(tmp_path, capsys):
    """Catches folders skipped as not-files (a DeepSpeed run restarting at step 0), and an interrupted save
    picked because its ``latest`` or its tag folder exists."""
    ckpts = tmp_path / "checkpoints"
    _ds(ckpts / "step000002.ckpt", 2)
    _ds(ckpts / "step000004.ckpt", 4, dp=2)
    # interrupted while overwriting last.ckpt: rank 1's optimizer shard cut off mid-file
    last = _ds(ckpts / "last.ckpt", 6, dp=2)
    shard = last / "checkpoint" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"
    shard.write_bytes(shard.read_bytes()[:-100])
    # interrupted first save: no `latest` yet
    (_ds(ckpts / "step000008.ckpt", 8) / "latest").unlink()
    # a rank's optimizer shard never written
    (_ds(ckpts / "step000010.ckpt", 10, dp=2) / "checkpoint" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    tmp = ckpts / ".last.ckpt.x1y2.tmp"  # an interrupted atomic save's temporary folder
    _ds(tmp, 12)

    assert resume_checkpoint(_trainer(ckpts), "last") == str(ckpts / "step000004.ckpt")
    err = capsys.readouterr().err
    assert f"removed {tmp}" in err and not tmp.exists()
    assert f"not resuming from {shard}: truncated" in err
    assert f"not resuming from {ckpts / 'step000008.ckpt'}: incomplete DeepSpeed checkpoint (no 'latest'" in err
    assert "step000010.ckpt/checkpoint/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt: missing" in err
    assert "resuming from" in err and "step 4" in err


def test_an_explicit_deepspeed_folder_resumes_and_an_incomplete_one_is_one_line(tmp_path):
    folder = _ds(tmp_path / "step000004.ckpt", 4)
    assert resume_checkpoint(_trainer(tmp_path), str(folder)) == str(folder)
    # another strategy cannot read a folder: said before the fit sets anything up
    for path in (str(folder), "last"):
        with pytest.raises(IGRError, match="a DeepSpeed checkpoint folder, which only the DeepSpeed strategy"):
            resume_checkpoint(_trainer(tmp_path, deepspeed=False), path)
    (folder / "latest").write_text("")  # `latest` cut off
    with pytest.raises(IGRError, match=r"step000004.ckpt: incomplete DeepSpeed checkpoint \('latest' names tag ''"):
        resume_checkpoint(_trainer(tmp_path), str(folder))
    (folder / "latest").unlink()
    with pytest.raises(IGRError, match=r"step000004.ckpt: incomplete DeepSpeed checkpoint \(no 'latest'"):
        resume_checkpoint(_trainer(tmp_path), str(folder))
    (tmp_path / "other.ckpt").mkdir()
    with pytest.raises(IGRError, match="a folder, not a DeepSpeed checkpoint"):
        resume_checkpoint(_trainer(tmp_path), str(tmp_path / "other.ckpt"))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from fit_helpers import make_shards

    return make_shards(tmp_path_factory.mktemp("shards"))


def test_a_fresh_fit_over_deepspeed_folders_is_refused_with_advice_that_works(shards, tmp_path, capsys):
    """The refusal counts folders, and sends the user to ``--ckpt_path last`` only when that would resume (it
    sent them there when every checkpoint was an interrupted save, and ``last`` then failed)."""
    from fit_helpers import fit_args

    from igr.cli import main

    run = tmp_path / "run"
    args = fit_args(shards, run, 2)
    last = _ds(run / "checkpoints" / "last.ckpt", 2)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {run / 'checkpoints'}: holds checkpoints of an earlier run (last.ckpt)")
    assert "resume it with --ckpt_path last (newest complete: last.ckpt, step 2)" in err

    (last / "latest").unlink()  # now only an interrupted save is there
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--ckpt_path last" not in err
    assert "none of them can be resumed from" in err and "no 'latest' file" in err
    assert not (run / "lightning_logs").exists() and sorted(p.name for p in run.iterdir()) == ["checkpoints"]


def _source_weights(tiny_config, root: Path):
    """A tiny SD1.5-style folder (UNet, VAE, text encoder) and an open_clip file: the frozen parts' sources."""
    import dataclasses

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from igr.models.image_encoder import GarmentImageEncoder

    torch.manual_seed(123)
    UNet2DConditionModel(**tiny_config.unet).save_pretrained(root / "sd" / "unet")
    AutoencoderKL(**tiny_config.vae).save_pretrained(root / "sd" / "vae")
    CLIPTextModel(CLIPTextConfig(**tiny_config.text_encoder)).save_pretrained(root / "sd" / "text_encoder")
    enc = GarmentImageEncoder(tiny_config.image_encoder, tiny_config.clip_size)
    torch.save({f"visual.{k}": torch.randn_like(v) for k, v in enc.visual.state_dict().items()}, root / "clip.pt")
    return dataclasses.replace(tiny_config, sd_path=str(root / "sd"), image_encoder_path=str(root / "clip.pt"))


@needs_deepspeed
def test_an_export_from_a_deepspeed_folder_takes_frozen_parts_bit_exact_from_their_sources(tiny_config, tmp_path):
    """zero_to_fp32 rebuilds frozen parameters from the module's bf16 copies: the exported VAE, image encoder and
    GarmNet's unused tail were bf16-rounded. Now they equal their source files bit for bit, and the trained
    weights equal the fp32 master copy."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import load_file

    from igr.export import export_checkpoint
    from igr.system import IGRSystem

    cfg = _source_weights(tiny_config, tmp_path)
    system = IGRSystem(model=cfg)
    with torch.no_grad():  # "trained": every trainable weight moved off its start
        for p in system.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.01)
    checkpoint = {"state_dict": system.state_dict(), "global_step": 3, "hyper_parameters": dict(system.hparams)}
    folder = write_deepspeed_folder(tmp_path / "last.ckpt", system, checkpoint)
    out = export_checkpoint(folder, tmp_path / "pipe", trust_pickle=True)
    weights_name = "diffusion_pytorch_model.safetensors"  # the diffusers layout: one folder per part

    vae = load_file(str(out / "vae" / weights_name))
    src_vae = AutoencoderKL.from_pretrained(tmp_path / "sd" / "vae").state_dict()
    assert any(not torch.equal(v, v.bfloat16().float()) for v in src_vae.values())  # bf16 would change them
    for k, v in src_vae.items():
        assert torch.equal(vae[f"vae.{k}"], v), k
    clip = torch.load(tmp_path / "clip.pt")
    enc = load_file(str(out / "image_encoder" / weights_name))
    for k, v in clip.items():
        assert torch.equal(enc[k], v), k
    garmnet = load_file(str(out / "garmnet" / weights_name))
    unet = UNet2DConditionModel.from_pretrained(tmp_path / "sd" / "unet").state_dict()
    tail = [n for n, p in system.model.garmnet.named_parameters() if not p.requires_grad]
    assert tail, "the tiny GarmNet has an unused, frozen tail"
    for n in tail:
        assert torch.equal(garmnet[n], unet[n.removeprefix("unet.")]), n
    trained = {n: p for n, p in system.model.garmnet.named_parameters() if p.requires_grad}
    for n, p in trained.items():
        assert torch.equal(garmnet[n], p.detach()), n  # the fp32 master weights
    prompts = load_file(str(out / "prompts" / weights_name))
    assert torch.equal(prompts["embeddings"], system.model.prompts.embeddings)


class _FakeEngine:
    """The two calls of deepspeed 0.19's DeepSpeedEngine that the grad-norm logging makes."""

    def __init__(self, norm, applied: bool) -> None:
        self.norm, self.applied = norm, applied

    def get_global_grad_norm(self):
        return self.norm

    def was_step_applied(self) -> bool:
        return self.applied


class _Module(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))
        self.logged: dict[str, float] = {}

    def log(self, name, value, **kwargs) -> None:
        self.logged[name] = float(value)


def test_grad_norm_is_the_engines_under_deepspeed_and_the_gradients_elsewhere():
    """Catches a norm over ``p.grad`` under ZeRO-2, which has cleared or partitioned them: here a stale
    ``p.grad`` of norm 5 is left behind, and the engine's norm is 7.5."""
    from igr.callbacks import ThroughputLogger

    batch = {"person": torch.zeros(2, 3, 4, 4)}
    module = _Module()
    module.w.grad = torch.tensor([3.0, 4.0, 0.0])
    cb = ThroughputLogger()
    plain = SimpleNamespace(strategy=SimpleNamespace(), world_size=1)
    cb.on_before_optimizer_step(plain, module, None)
    cb.on_train_batch_end(plain, module, None, batch, 0)
    assert module.logged["train/grad_norm"] == 5.0

    for applied, norm, expected in ((True, torch.tensor(7.5), 7.5), (False, 9.0, None), (True, None, None)):
        module.logged.clear()
        ds = SimpleNamespace(strategy=SimpleNamespace(deepspeed_engine=_FakeEngine(norm, applied)), world_size=1)
        cb.on_before_optimizer_step(ds, module, None)
        assert "train/grad_norm" not in module.logged  # the engine's norm is not there yet, p.grad is stale
        cb.on_train_batch_end(ds, module, None, batch, 0)
        assert module.logged.get("train/grad_norm") == expected


@needs_deepspeed
@pytest.mark.slow  # 2 processes: ~3 min on the 2-core VM
def test_init_from_a_deepspeed_folder_is_converted_once_per_node_and_shared(shards, tmp_path):
    """Two real DDP processes (gloo) start from a DeepSpeed folder: one conversion (each rank unpickled ≈21 GB
    and wrote ≈7 GB at the paper's size), both ranks start from its weights, and the cache is gone afterwards."""
    from igr.config import CONFIG_DIR, load_diffusion_config
    from igr.system import IGRSystem

    torch.manual_seed(7)
    coarse = IGRSystem(diffusion=load_diffusion_config(CONFIG_DIR / "experiment" / "demo.yaml"))
    checkpoint = {"state_dict": coarse.state_dict(), "global_step": 5, "hyper_parameters": dict(coarse.hparams)}
    folder = write_deepspeed_folder(tmp_path / "coarse" / "last.ckpt", coarse, checkpoint, dp_world_size=2)
    run = tmp_path / "fine"
    root = Path(__file__).resolve().parent.parent
    cmd = [
        sys.executable, "-m", "igr.cli", "fit", "--trust-pickle",
        "-c", str(CONFIG_DIR / "experiment" / "demo.yaml"),
        "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu",
        f"--model.model={CONFIG_DIR / 'model' / 'tiny.yaml'}", f"--model.init_from={folder}",
        "--model.optim.lr=1e-12", "--model.optim.weight_decay=0",  # one step leaves the start weights
        f"--data.train_shards={shards / 'train.json'}",
        "--data.image_size=[64, 48]", "--data.batch_size=2", "--data.num_workers=0",
        f"--trainer.default_root_dir={run}", "--trainer.max_steps=1", "--trainer.limit_val_batches=0",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("converting DeepSpeed checkpoint") == 1, proc.stderr[-3000:]
    assert not list(run.glob(".init_from-*")), "the conversion cache is removed once every rank has read it"
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    tail = []
    for k, p in coarse.named_parameters():
        if p.requires_grad:  # trained: the fp32 master weights (the frozen ones come from the run's own files)
            assert torch.allclose(state[k], p, rtol=0, atol=1e-9), k
        elif k.startswith("model.garmnet."):
            tail.append(k)
    # GarmNet's unused tail is not zero_to_fp32's bf16 copies (norm weights of 1 are bf16-exact, linear ones not)
    assert tail and any(not torch.equal(state[k], state[k].bfloat16().float()) for k in tail)


def _igr_fit(args: list[str]) -> subprocess.CompletedProcess:
    """``igr fit`` in its own process (DeepSpeed leaves a process group behind)."""
    root = Path(__file__).resolve().parent.parent
    paths = [str(root), str(root / "tests"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "DS_ACCELERATOR": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "igr.cli", *args], cwd=root, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@needs_deepspeed
@pytest.mark.slow  # real Lightning + DeepSpeed (ZeRO-2, bf16) on the CPU: ~4 min on the 2-core VM
def test_a_real_deepspeed_run_resumes_from_its_last_folder_as_from_a_file(shards, tmp_path):
    """Lightning's DeepSpeedStrategy writes the folders (deepspeed's own engine), 2 steps, then --ckpt_path last
    to 4: step, optimizer, lr schedule, EMA and noise stream continue; the draws equal a plain 4-step run's. Also
    checks ``ds_layout`` against DeepSpeed's writer: same files, same keys."""
    import draw_recorder
    from fit_helpers import fit_args

    from igr.cli import main

    def recorded(run):
        return ["--trainer.callbacks+=draw_recorder.DrawRecorder", f"--trainer.callbacks.out={run / 'draws'}"]

    no_val = "--trainer.limit_val_batches=0"
    whole = tmp_path / "whole"
    assert main([*fit_args(shards, whole, 4, 2), no_val, *recorded(whole)]) == 0
    run = tmp_path / "run"
    ds = ["--trainer.strategy=cpu_deepspeed.CPUDeepSpeedStrategy", "--trainer.strategy.stage=2",
          "--trainer.precision=bf16-mixed", "--trust-pickle", no_val, *recorded(run)]  # fmt: skip
    _igr_fit([*fit_args(shards, run, 2, 2), *ds])
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_dir() and read_checkpoint(last)["global_step"] == 2
    err = _igr_fit([*fit_args(shards, run, 4, 2), *ds, "--ckpt_path=last"]).stderr
    assert "resuming from" in err and "step 2" in err
    data = read_checkpoint(last, mmap=True)
    assert data["global_step"] == 4 and data["lr_schedulers"][0]["last_epoch"] == 4
    assert not list((run / "checkpoints").glob(".*")), "atomic saves leave no temporary folder"
    assert data["callbacks"]["EMA"]["optimization_step"] == 4 and "ema_state" in data
    (shard,) = (last / "checkpoint").glob("*optim_states.pt")
    adam = torch.load(shard, weights_only=False)["optimizer_state_dict"]["base_optimizer_state"]["state"]
    assert {int(s["step"]) for s in adam.values()} == {4}, "the optimizer continued from step 2"
    ours, theirs = draw_recorder.read(run / "draws")[0], draw_recorder.read(whole / "draws")[0]
    assert [r["step"] for r in ours] == [1, 2, 3, 4]
    for a, b in zip(ours, theirs):
        assert (a["t"], a["keep"], a["noise"]) == (b["t"], b["keep"], b["noise"]), a["step"]

    # the hand-built layout is DeepSpeed's
    module = _module()
    mine = write_deepspeed_folder(tmp_path / "mine", module, _lightning_checkpoint(module, 1))
    assert sorted(p.name for p in (mine / "checkpoint").iterdir()) == sorted(
        p.name for p in (last / "checkpoint").iterdir()
    )
    assert set(read_checkpoint(mine)) - set(_lightning_checkpoint(module, 1)) <= set(data)


class _FakeDeepSpeedStrategy:
    """One rank of a DeepSpeedStrategy whose save, like DeepSpeed's, writes into the folder in place; ``kill``
    stops it after the new model states, before any optimizer shard (what a kill mid-save leaves)."""

    is_global_zero = True

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch

    def broadcast(self, obj):
        return obj

    def barrier(self, name=None) -> None:
        pass

    def save_checkpoint(self, checkpoint: dict, filepath, storage_options=None) -> None:
        module = _module()
        full = write_deepspeed_folder(self.scratch / str(checkpoint["global_step"]), module,
                                      _lightning_checkpoint(module, checkpoint["global_step"]), dp_world_size=2)  # fmt: skip
        target = Path(filepath) / "checkpoint"
        target.mkdir(parents=True, exist_ok=True)
        (target / "mp_rank_00_model_states.pt").write_bytes((full / "checkpoint/mp_rank_00_model_states.pt").read_bytes())
        if checkpoint.get("kill"):
            raise KeyboardInterrupt
        for shard in (full / "checkpoint").glob("*optim_states.pt"):
            (target / shard.name).write_bytes(shard.read_bytes())
        (Path(filepath) / "latest").write_text("checkpoint")


def test_deepspeed_saves_are_atomic_so_a_killed_overwrite_keeps_the_previous_folder(tmp_path, capsys):
    """DeepSpeed overwrites last.ckpt in place: a kill after the new model states left them beside the previous
    save's (complete) optimizer shards, a mix that looks complete. Now the save goes to a temporary folder renamed
    into place; a killed one leaves the previous folder whole and a temporary that resume removes."""
    from igr.checkpoints import atomic_deepspeed_saves

    strategy = _FakeDeepSpeedStrategy(tmp_path / "scratch")
    atomic_deepspeed_saves(strategy)
    ckpts = tmp_path / "checkpoints"
    strategy.save_checkpoint({"global_step": 2}, ckpts / "last.ckpt")
    assert read_checkpoint(ckpts / "last.ckpt")["global_step"] == 2 and sorted(ckpts.iterdir()) == [ckpts / "last.ckpt"]
    with pytest.raises(KeyboardInterrupt):
        strategy.save_checkpoint({"global_step": 4, "kill": True}, ckpts / "last.ckpt")
    (tmp,) = ckpts.glob(".last.ckpt.*.tmp")
    assert resume_checkpoint(_trainer(ckpts), "last") == str(ckpts / "last.ckpt")
    assert read_checkpoint(ckpts / "last.ckpt")["global_step"] == 2 and not tmp.exists()
    assert f"removed {tmp}" in capsys.readouterr().err
    strategy.save_checkpoint({"global_step": 6}, ckpts / "last.ckpt")  # replaces the previous folder
    assert read_checkpoint(ckpts / "last.ckpt")["global_step"] == 6 and sorted(ckpts.iterdir()) == [ckpts / "last.ckpt"]


@needs_deepspeed
def test_harden_makes_a_deepspeed_strategys_saves_atomic():
    from lightning.pytorch.strategies import DeepSpeedStrategy

    from igr.checkpoints import harden

    strategy = DeepSpeedStrategy(stage=2)
    harden(SimpleNamespace(strategy=strategy, checkpoint_callbacks=[]))
    assert strategy.save_checkpoint.__qualname__.startswith("atomic_deepspeed_saves")
