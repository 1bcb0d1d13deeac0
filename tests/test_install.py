"""What ``pip install igr`` gives: inference (the pipeline, ``igr restore``) with no training, metrics or app
package installed; the extras add those, ``[dev]`` all of them (``make setup``); one version source; typed."""

from __future__ import annotations

import email
import functools
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

import igr

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
from packaging.requirements import Requirement  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# What an inference user must not need; each is checked only where it is installed (it is in `make setup`'s venv).
HEAVY = {"lightning", "pytorch_lightning", "webdataset", "braceexpand", "torchmetrics", "lpips", "DISTS_pytorch",
         "cleanfid", "tensorboard", "jsonargparse", "gradio", "deepspeed", "selenium", "matplotlib"}  # fmt: skip
# A fresh virtual environment has these whatever is installed into it.
SEEDED = {"pip", "setuptools", "pkg_resources", "_distutils_hack", "wheel"}


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _closure(requirements: list[str]) -> set[str]:
    """The installed distributions `pip install` of ``requirements`` brings in, dependencies of dependencies too
    (markers evaluated for this interpreter, extras followed); canonical names."""
    installed = {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions()}  # one scan of sys.path
    seen: dict[str, set[str]] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        extras = set(req.extras)
        if name in seen and extras <= seen[name]:
            continue
        seen.setdefault(name, set()).update(extras)
        dist = installed.get(name)  # None: not installed here, so nothing of it can be imported either
        for line in (dist.requires or []) if dist else []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras | {""}):
                todo.append(sub)
    return set(seen)


@functools.lru_cache(maxsize=1)
def _not_in_inference_install() -> frozenset[str]:
    """Top-level module names that only distributions outside the core dependencies' closure provide."""
    core = _closure(_project()["dependencies"]) | {"igr"}
    return frozenset({module for module, dists in metadata.packages_distributions().items()
            if module.isidentifier() and module not in SEEDED
            and not {canonicalize_name(d) for d in dists} & core})  # fmt: skip


def test_core_dependencies_leave_out_training_metrics_and_app():
    """Catches: lightning, webdataset, LPIPS, ... back in `dependencies` (every inference user installing them)."""
    installed = HEAVY & set(metadata.packages_distributions())
    assert installed and installed <= _not_in_inference_install()


def test_dev_extra_installs_every_extra():
    """Catches: an extra `make setup` (pip install -e '.[dev]') would not install, so its tests fail there."""
    extras = _project()["optional-dependencies"]
    reached, todo = set(), ["igr[dev]"]
    while todo:
        req = Requirement(todo.pop())
        if canonicalize_name(req.name) != "igr":
            reached.add(canonicalize_name(req.name))
        for extra in req.extras if canonicalize_name(req.name) == "igr" else ():
            todo += [] if extra in reached else extras[extra]
            reached.add(extra)
    every = {canonicalize_name(Requirement(r).name) for reqs in extras.values() for r in reqs} - {"igr"}
    assert every <= reached, every - reached


def test_inference_imports_and_restores_without_the_extras(tiny_pipeline_dir, tmp_path):
    """Catches: a module on the inference path importing Lightning, webdataset, torchmetrics, LPIPS, gradio, ...
    at top level. Every module no core dependency provides is made unimportable (as if not installed); then the
    Python API and `python -m igr restore` each restore an image."""
    import numpy as np
    from PIL import Image

    blocked = sorted(_not_in_inference_install())
    person, mask = tmp_path / "me.jpg", tmp_path / "me_mask.png"
    Image.fromarray((np.random.default_rng(0).random((120, 90, 3)) * 255).astype(np.uint8)).save(person)
    m = np.zeros((120, 90), np.uint8)
    m[30:90, 20:70] = 255
    Image.fromarray(m).save(mask)
    script = tmp_path / "inference_only.py"
    script.write_text(textwrap.dedent(f"""
        import runpy, sys
        for name in {blocked!r}:
            sys.modules[name] = None  # `import name` raises ModuleNotFoundError, find_spec(name) is None

        import torch
        from PIL import Image
        from igr.pipeline import IGRPipeline

        pipe = IGRPipeline.from_pretrained({str(tiny_pipeline_dir)!r})
        out = pipe(Image.open({str(person)!r}), mask=Image.open({str(mask)!r}), category="upper",
                   num_inference_steps=2, generator=torch.Generator().manual_seed(0))
        out.images[0].save({str(tmp_path / "api.png")!r})

        sys.argv = ["igr", "restore", "--model", {str(tiny_pipeline_dir)!r}, "--person", {str(person)!r},
                    "--mask", {str(mask)!r}, "--category", "upper", "--out", {str(tmp_path / "cli.png")!r},
                    "--steps", "2", "--device", "cpu"]
        try:
            runpy.run_module("igr", run_name="__main__", alter_sys=True)  # python -m igr
        except SystemExit as exit:
            assert exit.code in (0, None), exit.code

        from igr.cli import main  # training is an extra: one line saying which
        assert main(["fit", "--help"]) == 2
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.strip().splitlines()[-1] == (
        "error: igr fit needs the [train] extra: pip install 'igr[train]' (no module named lightning)")
    for name in ("api.png", "cli.png"):
        assert Image.open(tmp_path / name).size == (48, 64)


def test_built_wheel_has_one_version_extras_classifiers_and_py_typed(tmp_path):
    """Catches: a second version literal (pyproject vs igr/__init__.py drifting), an extra or classifier lost, and
    py.typed left out of the wheel. Builds a wheel from a copy of the project's packaging files."""
    pytest.importorskip("setuptools.build_meta")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "igr").mkdir()
    for name in ("__init__.py", "py.typed"):
        shutil.copy(ROOT / "igr" / name, tmp_path / "igr" / name)
    probe = "import setuptools.build_meta as b, sys\nprint(b.build_wheel(sys.argv[1]))"
    run = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "dist")], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    wheel = zipfile.ZipFile(tmp_path / "dist" / run.stdout.strip().splitlines()[-1])
    assert "igr/py.typed" in wheel.namelist()
    [meta_name] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    meta = email.message_from_bytes(wheel.read(meta_name))
    assert meta["Version"] == igr.__version__
    assert {"app", "train", "metrics", "deepspeed", "dev"} <= set(meta.get_all("Provides-Extra"))
    core = {canonicalize_name(Requirement(r).name) for r in meta.get_all("Requires-Dist") if "extra ==" not in r}
    assert {"torch", "diffusers"} <= core and not core & {"lightning", "torchmetrics", "gradio", "lpips"}
    assert "Typing :: Typed" in meta.get_all("Classifier") and meta.get_all("Project-URL")


def test_citation_cff_cites_the_paper():
    """Catches: a CITATION.cff GitHub's "Cite this repository" cannot read (the keys CFF 1.2.0 requires)."""
    import yaml

    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["message"] and cff["title"] and cff["authors"]
    paper = cff["preferred-citation"]
    assert paper["title"].startswith("IGR: Improving Diffusion Model for Garment Restoration")
    assert [a["family-names"] for a in paper["authors"]] == ["Shen", "Huang", "Wang"] and paper["year"] == 2024
