"""The ``igr`` command line itself: help a terminal can show, ``python -m igr``, ``-V``, fast startup, and the
defaults ``igr restore`` promises."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import igr
from igr.cli import COMMANDS, main, plain_text

ROOT = Path(__file__).resolve().parents[1]
# RST a terminal should never show: ``literal``, :role:`x`, a paragraph ending in "::".
RST = re.compile(r"``|:[a-z]+:`|::\s*$", re.MULTILINE)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def test_plain_text_strips_docstring_markup():
    doc = "``igr x``: see :mod:`igr.cli` and :py:func:`~igr.f`.\n\nOne image::\n\n    igr x --a ``b``\n\n::\n\n    y\n"
    assert plain_text(doc) == "igr x: see igr.cli and igr.f.\n\nOne image:\n\n    igr x --a b\n\n\n    y"


@pytest.mark.parametrize("name", [n for n in COMMANDS if n != "fit"])  # fit: LightningCLI prints its own help
def test_every_command_help_is_plain_text(name, capsys):
    """Catches: a command's docstring (description) or an argument's help printed as raw reStructuredText."""
    text = _help([name], capsys)
    assert text.startswith(f"usage: igr {name}") and not RST.search(text), text


def test_top_level_help_and_version(capsys):
    text = _help([], capsys)
    assert "The igr command line" in text and not RST.search(text), text
    for flag in ("-V", "--version"):
        with pytest.raises(SystemExit) as info:
            main([flag])
        assert info.value.code == 0 and capsys.readouterr().out.strip() == f"igr {igr.__version__}"


def test_python_dash_m_igr_runs_the_cli_without_importing_torch():
    """Catches: no igr/__main__.py, and `igr --help` / `-V` paying for torch (seconds) before printing a line."""
    out = subprocess.run([sys.executable, "-m", "igr", "-V"], env=_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"igr {igr.__version__}", out.stderr
    probe = ("import sys\nfrom igr.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print('heavy:', sorted({'torch', 'diffusers', 'lightning', 'numpy'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], env=_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("heavy: []"), out.stdout + out.stderr


def test_restore_help_states_the_models_own_sampling_defaults(capsys):
    """Catches: help promising fixed steps/guidance (the demo's guidance is 3.0, not the 1.5 once printed)."""
    text = " ".join(_help(["restore"], capsys).split())
    assert "--guidance GUIDANCE classifier-free guidance scale (default: the model's own)" in text
    assert "--steps STEPS denoising steps (default: the model's own)" in text


def _inputs(folder: Path) -> list[str]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((120, 90, 3)) * 255).astype(np.uint8)).save(folder / "me.jpg")
    mask = np.zeros((120, 90), np.uint8)
    mask[30:90, 20:70] = 255
    Image.fromarray(mask).save(folder / "me_mask.png")
    return ["--person", str(folder / "me.jpg"), "--mask", str(folder / "me_mask.png"), "--category", "upper"]


def test_restore_defaults_to_the_demo_pipeline_like_serve(tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    """Catches: restore requiring --model where serve defaults to `make demo`'s pipeline, and a missing default
    reported as anything but one line saying how to make it."""
    from igr.commands import DEMO_PIPELINE

    monkeypatch.chdir(tmp_path)
    args = [*_inputs(tmp_path / "in"), "--steps", "2", "--device", "cpu"]
    assert main(["restore", *args, "--out", "a.png"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {DEMO_PIPELINE}: not found; run `make demo` first, or pass --model DIR\n"
    shutil.copytree(tiny_pipeline_dir, tmp_path / DEMO_PIPELINE)
    assert main(["restore", *args, "--out", "a.png"]) == 0
    assert Image.open(tmp_path / "a.png").size == (48, 64)


@pytest.mark.parametrize(("command", "module", "extra"), [("eval-folders", "lpips.pretrained", "metrics"),
                                                          ("make-shards", "webdataset", "train"),
                                                          ("fit", "lightning", "train")])  # fmt: skip
def test_a_missing_extra_is_one_line_naming_it(command, module, extra, monkeypatch, capsys):
    """Catches: `pip install igr` users meeting a traceback where one line names the extra to install."""
    import igr.cli

    def load(name):
        raise ModuleNotFoundError(f"No module named '{module}'", name=module)

    monkeypatch.setattr(igr.cli, "_load", load)
    assert main([command, "--help"]) == 2
    assert capsys.readouterr().err == (
        f"error: igr {command} needs the [{extra}] extra: pip install 'igr[{extra}]' (no module named {module})\n"
    )


def test_a_missing_core_module_is_not_blamed_on_an_extra(monkeypatch):
    import igr.cli

    def load(name):
        raise ModuleNotFoundError("No module named 'diffusers'", name="diffusers")

    monkeypatch.setattr(igr.cli, "_load", load)
    with pytest.raises(ModuleNotFoundError):
        main(["restore", "--help"])
