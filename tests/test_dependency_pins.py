"""Dependency bounds match what the code calls (pyproject.toml), constraints.txt pins versions those bounds
admit, and the one call into a library's processor signature is made by keyword."""

from __future__ import annotations

import inspect
import warnings
from importlib import metadata
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]

# Libraries whose private API igr calls: each needs an upper bound (see the comment in pyproject.toml).
PRIVATE_API_USERS = {"lightning", "diffusers", "open-clip-torch", "clean-fid", "deepspeed", "torch"}


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra, items in project["optional-dependencies"].items():
        if extra != "dev":  # dev: test tools, and igr's own extras again
            reqs += [Requirement(r) for r in items]
    return {canonicalize_name(r.name): r for r in reqs}


def _constraints() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_constraints_pin_every_dependency_at_a_version_the_bounds_admit():
    reqs, pins = _requirements(), _constraints()
    for name, req in reqs.items():
        assert name in pins, f"constraints.txt does not pin {name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {req}"


def test_installed_versions_fit_the_bounds():
    drift = []
    for name, req in _requirements().items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            continue  # an optional extra this environment does not have
        assert req.specifier.contains(installed, prereleases=True), f"installed {name} {installed} is outside {req}"
        pinned = _constraints().get(name)
        if pinned is not None and pinned != installed:
            drift.append(f"{name} {installed} (constraints.txt: {pinned})")
    if drift:  # a fresh clone without -c constraints.txt may legitimately differ; say so, do not fail
        warnings.warn("installed versions differ from constraints.txt: " + ", ".join(drift), stacklevel=1)


def test_private_api_users_have_upper_bounds_and_the_lower_bounds_have_what_we_call():
    reqs = _requirements()
    for name in PRIVATE_API_USERS:
        assert any(s.operator in ("<", "<=", "~=", "==") for s in reqs[name].specifier), f"{name} has no upper bound"
    # trainer.fit(weights_only=...) (igr/fit_cli.py) arrived in Lightning 2.6.0.
    assert not reqs["lightning"].specifier.contains("2.5.6") and reqs["lightning"].specifier.contains("2.6.0")
    import lightning

    assert "weights_only" in inspect.signature(lightning.Trainer.fit).parameters
    # Params-only bf16 cast with fp32 buffers (DeepSpeed PR #8066) is first released in 0.19.2.
    assert not reqs["deepspeed"].specifier.contains("0.19.1") and reqs["deepspeed"].specifier.contains("0.19.2")


def test_garmfus_passes_the_processor_arguments_by_keyword(monkeypatch):
    """A parent ``__call__`` whose optional arguments come in another order still gets each one by name."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    from igr.models.garmfus import FeatureBank, GarmFusSelfAttnProcessor

    seen = {}

    def reordered(self, attn, hidden_states, temb=None, attention_mask=None, encoder_hidden_states=None, **kw):
        seen.update(temb=temb, attention_mask=attention_mask, encoder_hidden_states=encoder_hidden_states)
        return hidden_states

    monkeypatch.setattr(AttnProcessor2_0, "__call__", reordered)
    bank = FeatureBank()
    ref, x, mask = torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.zeros(2, 1, 8)
    bank.set({"a.attn1": ref})
    GarmFusSelfAttnProcessor("a.attn1", bank)(None, x, attention_mask=mask)
    assert seen["temb"] is None and seen["attention_mask"] is mask
    assert torch.equal(seen["encoder_hidden_states"], torch.cat([ref, x], dim=1))

