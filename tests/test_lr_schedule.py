"""optim.decay: constant after warm-up (the paper) or cosine to 0 at trainer.max_steps (the tiny world)."""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch

from igr.errors import IGRError
from igr.system import IGRSystem


def _lrs(decay: str, warmup: int, max_steps: int, n: int) -> list[float]:
    system = IGRSystem(optim={"lr": 2.0, "warmup_steps": warmup, "decay": decay})
    system.trainer = types.SimpleNamespace(max_steps=max_steps)
    out = system.configure_optimizers()
    opt, sched = out["optimizer"], out["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_cosine_decays_to_zero_at_max_steps_after_a_linear_warm_up():
    lrs = _lrs("cosine", warmup=2, max_steps=10, n=12)
    # warm-up 1/2, 2/2; then cosine over the 8 remaining steps: half-way (step 6) is lr/2, step 10 and on is 0
    want = [1.0, 2.0, 2.0, 2.0 * (1 + 2**-0.5) / 2, 1.0, 2.0 * (1 - 2**-0.5) / 2, 0.0]
    assert lrs[:2] == pytest.approx(want[:2])
    assert [lrs[2], lrs[4], lrs[6], lrs[8]] == pytest.approx([2.0, want[3], 1.0, want[5]])
    assert lrs[10] == pytest.approx(0.0, abs=1e-12) and lrs[11] == pytest.approx(0.0, abs=1e-12)


def test_constant_is_the_paper_default_and_keeps_lr_after_warm_up():
    assert IGRSystem().optim.decay == "constant"
    assert _lrs("constant", warmup=2, max_steps=-1, n=6) == pytest.approx([1.0, 2.0, 2.0, 2.0, 2.0, 2.0])


def test_cosine_without_max_steps_and_unknown_decays_are_refused():
    with pytest.raises(IGRError, match="trainer.max_steps"):
        _lrs("cosine", warmup=0, max_steps=-1, n=1)
    with pytest.raises(IGRError, match="optim.decay"):
        IGRSystem(optim={"decay": "linear"})


def test_lr_scale_moves_each_part_by_its_own_learning_rate(batch):
    """AdamW's first step moves every parameter with a non-zero gradient by lr (|m/√v| = 1), so with weight decay
    off each tensor's largest change is its part's lr (garmnet 1e-4, the IP-Adapter 1e-2, the denoiser UNet 1e-3),
    or 0 where the loss does not reach it."""
    torch.manual_seed(0)
    system = IGRSystem(optim={"lr": 1e-3, "weight_decay": 0.0, "lr_scale": {"garmnet": 0.1, "adapter": 10.0}})
    system.trainer = types.SimpleNamespace(max_steps=-1)
    opt = system.configure_optimizers()["optimizer"]
    named = dict(system.model.named_parameters())
    before = {n: p.detach().clone() for n, p in named.items() if p.requires_grad}
    system.diffusion_loss(batch).backward()
    opt.step()
    lrs = {"garmnet": 1e-4, "denoiser": 1e-3, "adapter": 1e-2}
    moved: dict[str, float] = {}
    for n, old in before.items():
        part = ("adapter" if ".to_k_ip." in n or ".to_v_ip." in n or "encoder_hid_proj" in n
                else n.split(".")[0])
        change = (named[n] - old).abs().max().item()
        moved[part] = max(moved.get(part, 0.0), change)
        # every tensor the step reaches moves by its own part's lr, none by another's (Adam's ε shaves up to ~1 %
        # off a tensor whose gradients are all tiny)
        assert change == 0 or change == pytest.approx(lrs[part], rel=2e-2), n
    assert moved == pytest.approx(lrs, rel=1e-3)


def test_lr_scale_is_checked(tiny_config):
    with pytest.raises(IGRError, match="unknown part 'unet'"):
        IGRSystem(optim={"lr_scale": {"unet": 2.0}})
    with pytest.raises(IGRError, match="lr_scale.adapter"):
        IGRSystem(optim={"lr_scale": {"adapter": 0}})
    system = IGRSystem(optim={"lr_scale": {"garmnet": 0.5}}, model=dataclasses.replace(tiny_config, use_garmnet=False))
    system.trainer = types.SimpleNamespace(max_steps=-1)
    with pytest.raises(IGRError, match="trains no garmnet"):
        system.configure_optimizers()
