"""`igr fit` (LightningCLI): every shipped experiment config runs on the tiny model; resume, export, bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fit_helpers import tiny_overrides

from igr.cli import main
from igr.config import CONFIG_DIR

EXPERIMENTS = sorted(p.name for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    for split, num, seed in (("train", 24, 0), ("val", 4, 1)):
        assert (
            main(
                [
                    "make-shards",
                    "synthetic",
                    "--out",
                    str(root),
                    "--split",
                    split,
                    "--num",
                    str(num),
                    "--size",
                    "64x48",
                    "--seed",
                    str(seed),
                ]
            )
            == 0
        )
    return root


def _tiny_overrides(shards: Path, run: Path, steps: int = 2) -> list[str]:
    return tiny_overrides(shards, run, steps)


def _demo_fit_args(shards: Path, run: Path, steps: int) -> list[str]:
    return ["fit", "-c", str(CONFIG_DIR / "experiment" / "demo.yaml"), *_tiny_overrides(shards, run, steps=steps)]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_config_trains_on_the_tiny_model(experiment, shards, tmp_path):
    args = ["fit", "-c", str(CONFIG_DIR / "experiment" / experiment), *_tiny_overrides(shards, tmp_path)]
    args.append(
        "--model.init_from=null"
    )  # the finetune configs point at a coarse run that does not exist here
    assert main(args) == 0
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert list(tmp_path.rglob("config.yaml")), "the run directory holds the resolved config"


def _recorded(out: Path) -> list[str]:
    return ["--trainer.callbacks+=draw_recorder.DrawRecorder", f"--trainer.callbacks.out={out}"]


NO_VAL = ["--trainer.limit_val_batches=0"]  # for tests about training alone: validation sampling costs seconds


def test_resume_continues_the_global_step_the_noise_stream_and_export_round_trips(shards, tmp_path):
    """2 steps + resume to 4 draw the same ε, t and drop masks as 4 uninterrupted steps. Catches a noise stream
    that restarts from the seed on resume (steps 3-4 would repeat steps 1-2) or is not saved at all."""
    import draw_recorder

    whole = tmp_path / "whole"
    assert main([*_demo_fit_args(shards, whole, steps=4), *NO_VAL, *_recorded(whole / "draws")]) == 0
    run = tmp_path / "run"
    base = [*_demo_fit_args(shards, run, steps=2), *NO_VAL, *_recorded(run / "draws")]
    assert main(base) == 0
    last = run / "checkpoints" / "last.ckpt"
    first = torch.load(last, weights_only=False)
    assert first["global_step"] == 2 and len(first["noise_rng"]) == 1
    assert main([*base, "--trainer.max_steps=4", "--ckpt_path=last"]) == 0
    resumed = torch.load(last, weights_only=False)
    assert resumed["global_step"] == 4
    assert resumed["optimizer_states"][0]["state"], "optimizer state restored and saved"
    assert resumed["lr_schedulers"][0]["last_epoch"] == 4

    uninterrupted, interrupted = draw_recorder.read(whole / "draws")[0], draw_recorder.read(run / "draws")[0]
    assert [r["step"] for r in interrupted] == [1, 2, 3, 4] == [r["step"] for r in uninterrupted]
    for a, b in zip(uninterrupted, interrupted):
        assert (a["t"], a["keep"], a["noise"]) == (b["t"], b["keep"], b["noise"]), a["step"]
    assert interrupted[2]["noise"] != interrupted[0]["noise"]

    from igr.export import export_checkpoint, load_pipeline

    pipe = export_checkpoint(last, tmp_path / "pipe")
    model, _ = load_pipeline(pipe)
    state = resumed["state_dict"]
    for k, v in model.denoiser.state_dict().items():
        assert torch.equal(v, state[f"model.denoiser.{k}"]), k
    assert not any(p.suffix in (".ckpt", ".pt", ".bin") for p in pipe.iterdir())


def _igr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "igr.cli", *args], capture_output=True, text=True)


def test_unknown_config_key_names_the_nearest_valid_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  optim:\n    lrr: 0.1\n")
    proc = _igr("fit", "-c", str(bad))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {bad}: unknown key 'model.optim.lrr'; did you mean lr?"


def test_a_missing_or_malformed_config_fails_before_torch_is_imported(tmp_path):
    """A typo in a config path, a YAML error or an unknown key in a typed section is reported in a fraction of a
    second: `igr fit` used to import torch, Lightning and diffusers first (18.8 s here to say "not found")."""
    bad_key, bad_yaml = tmp_path / "key.yaml", tmp_path / "yaml.yaml"
    bad_key.write_text("model:\n  optim:\n    lrr: 0.1\n")
    bad_yaml.write_text("model: [\n")
    code = (
        "import sys\nfrom igr.errors import IGRError\nfrom igr.train import main\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n        main(['-c', path])\n    except IGRError as exc:\n        print(exc)\n"
        "print('torch' in sys.modules, 'lightning' in sys.modules)\n"
    )
    missing = tmp_path / "missing.yaml"
    proc = subprocess.run([sys.executable, "-c", code, str(missing), str(bad_key), str(bad_yaml)],
                          capture_output=True, text=True, check=True)
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == f"{missing}: config file not found"
    assert lines[1] == f"{bad_key}: unknown key 'model.optim.lrr'; did you mean lr?"
    assert lines[2].startswith(f"{bad_yaml}: not a readable YAML config")
    assert lines[3] == "False False"


def test_bad_config_value_is_one_line_naming_the_key(tmp_path):
    proc = _igr(
        "fit",
        "-c",
        str(CONFIG_DIR / "experiment" / "demo.yaml"),
        "--model.diffusion.prediction_type=x0",
        f"--trainer.default_root_dir={tmp_path / 'run'}",
        "--trainer.max_steps=1",
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: diffusion.prediction_type: 'x0' is not one of epsilon, v_prediction, sample"
    )
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()


def test_missing_shards_fail_before_training(tmp_path):
    proc = _igr(
        "fit",
        "-c",
        str(CONFIG_DIR / "experiment" / "demo.yaml"),
        f"--data.train_shards={tmp_path / 'nowhere'}",
        f"--trainer.default_root_dir={tmp_path / 'run'}",
        "--trainer.max_steps=1",
    )
    assert proc.returncode != 0
    assert "nowhere" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_weights_fail_before_training(shards, tmp_path):
    proc = _igr(
        "fit",
        "-c",
        str(CONFIG_DIR / "experiment" / "demo.yaml"),
        *_tiny_overrides(shards, tmp_path / "run")[2:],
        f"--model.model.vae_path={tmp_path / 'novae'}",
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().splitlines()[-1]
        == f"error: {tmp_path / 'novae'}: folder not found (expected a AutoencoderKL folder with config.json)"
    )


def test_resume_from_a_file_keeps_what_the_command_gives_over_the_checkpoints_hparams(shards, tmp_path):
    """``--ckpt_path FILE``: the checkpoint's hyper-parameters fill in what the command and its configs leave out,
    and what they give wins. Catches LightningCLI's merge, which put the checkpoint's values over the command line
    (a resume could not move a weight path or change the validation guidance, and kept the old value silently)."""
    base = [*_demo_fit_args(shards, tmp_path, steps=1), *NO_VAL]
    assert main([*base, "--model.sampling.guidance_scale=2.0", "--model.optim.weight_decay=0.0123"]) == 0
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert main([*base, "--trainer.max_steps=2", f"--ckpt_path={last}", "--model.sampling.guidance_scale=4.5"]) == 0
    resumed = torch.load(last, weights_only=False)
    assert resumed["global_step"] == 2
    hparams = resumed["hyper_parameters"]  # what the resumed run's IGRSystem was built with
    assert hparams["sampling"]["guidance_scale"] == 4.5  # given on the command line: wins
    assert hparams["optim"]["weight_decay"] == 0.0123  # left out: the checkpoint's, not the default
    assert hparams["optim"]["lr"] == 3.0e-4  # from demo.yaml in both runs


def test_a_fresh_fit_into_a_run_with_checkpoints_is_refused_and_the_runs_config_resumes_it(
    shards, tmp_path, capsys
):
    """The same command typed again without ``--ckpt_path`` (e.g. ``make train-coarse`` after a crash) used to
    start over and overwrite the run's checkpoints under the same names; it now fails before writing anything.
    The run's own config.yaml is a valid ``-c`` config (it holds ``weights_only``, which our key check refused)."""
    base = [*_demo_fit_args(shards, tmp_path, steps=1), *NO_VAL]
    assert main(base) == 0
    folder = tmp_path / "checkpoints"
    assert (folder / "last.ckpt").is_file()
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}  # checkpoints, config.yaml, events
    capsys.readouterr()
    assert main(base) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {folder}: holds checkpoints of an earlier run (last.ckpt")
    assert "--ckpt_path last" in err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before, "nothing written"

    (config,) = tmp_path.rglob("config.yaml")
    assert main(["fit", "-c", str(config), "--trainer.max_steps=2", "--ckpt_path=last"]) == 0
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == 2


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(shards, tmp_path, monkeypatch):
    from igr.system import IGRSystem

    base = _demo_fit_args(shards, tmp_path, steps=2)
    assert main(base) == 0
    last = tmp_path / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    original = IGRSystem.diffusion_loss
    monkeypatch.setattr(
        IGRSystem, "diffusion_loss", lambda self, b, generator=None: original(self, b) * float("nan")
    )
    with pytest.raises(FloatingPointError, match="non-finite training loss at step 2"):
        main([*base, "--trainer.max_steps=4", f"--ckpt_path={last}"])
    assert last.read_bytes() == before


def test_deepspeed_overlay_builds_the_paper_setup():
    """The 4xA100 overlay: DeepSpeed ZeRO-2 (built here on CPU, not launched), bf16, global batch = paper's 32."""
    pytest.importorskip("deepspeed")
    import importlib

    from omegaconf import OmegaConf

    from igr.config import PAPER

    cfg = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "trainer" / "deepspeed_4xa100.yaml"))
    t = cfg["trainer"]
    module, _, name = t["strategy"]["class_path"].rpartition(".")
    strategy = getattr(importlib.import_module(module), name)(**t["strategy"]["init_args"])
    zero = strategy.config["zero_optimization"]
    assert zero["stage"] == 2 and zero["overlap_comm"] and zero["contiguous_gradients"]
    assert t["precision"] == "bf16-mixed"
    assert t["devices"] * t["num_nodes"] * t["accumulate_grad_batches"] * cfg["data"]["batch_size"] == (
        PAPER["optim"]["global_batch_size"]
    )
    assert cfg["model"]["model"]["gradient_checkpointing"] is True


def test_ema_option_is_saved_and_exported(shards, tmp_path):
    args = _demo_fit_args(shards, tmp_path, steps=3)  # the demo experiment trains with igr.callbacks.EMA
    assert main(args) == 0
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    ema, live = ckpt["ema_state"], ckpt["state_dict"]
    assert ema.keys() <= live.keys() and any(k.startswith("model.garmnet.") for k in ema)
    assert any(not torch.equal(ema[k], live[k]) for k in ema), "EMA weights lag the live ones"

    from igr.export import export_checkpoint, load_pipeline

    model, _ = load_pipeline(export_checkpoint(tmp_path / "checkpoints" / "last.ckpt", tmp_path / "pipe", ema=True))
    k = next(k for k in ema if k.startswith("model.denoiser."))
    assert torch.equal(model.denoiser.state_dict()[k[len("model.denoiser."):]], ema[k])


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_bf16_fits_run(shards, tmp_path, precision):
    """A few steps (validation and its metrics included) in bf16 autocast and in pure bf16 weights."""
    assert main([*_demo_fit_args(shards, tmp_path, steps=2), f"--trainer.precision={precision}"]) == 0
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2


def test_init_from_is_needed_only_by_a_fresh_fit(shards, tmp_path, capsys):
    """The fine-tune starts from the coarse checkpoint; resuming it and load_from_checkpoint must not need that
    file any more (init_from used to be applied again in __init__). A fresh fit with a missing file fails."""
    from igr.config import load_diffusion_config
    from igr.system import IGRSystem

    coarse = IGRSystem(diffusion=load_diffusion_config(CONFIG_DIR / "experiment" / "demo.yaml"))
    start = tmp_path / "start.ckpt"  # a checkpoint's layout: state_dict + hyper_parameters
    torch.save({"state_dict": coarse.state_dict(), "hyper_parameters": dict(coarse.hparams)}, start)
    fine = tmp_path / "fine"
    args = [*_demo_fit_args(shards, fine, steps=2), *NO_VAL, f"--model.init_from={start}"]
    assert main(args) == 0
    start.unlink()  # the coarse run is gone
    assert main([*args, "--trainer.max_steps=3", "--ckpt_path=last"]) == 0
    last = fine / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 3
    IGRSystem.load_from_checkpoint(last)
    capsys.readouterr()
    assert main([*_demo_fit_args(shards, tmp_path / "again", steps=2), *NO_VAL, f"--model.init_from={start}"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {start}: init_from checkpoint not found"
