"""EMA callback maths (diffusers' EMAModel underneath): fp32 shadow, one update per optimizer step, warm-up.

The expected shadows are written out by hand from the update s ← d·s + (1 − d)·p; decay 0.9 is used so that a
swapped decay (0.1) gives different numbers."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from tolerance import assert_close_f32

from igr.callbacks import EMA


class _One(torch.nn.Module):
    def __init__(self, value: float = 0.0, dtype=torch.float32) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([value], dtype=dtype))
        self.frozen = torch.nn.Parameter(torch.tensor([7.0]), requires_grad=False)


def _run(ema: EMA, values: list[float], module: _One | None = None, micro: int = 1) -> _One:
    """Set w to each value in turn, one optimizer step each (``micro`` batch ends per step)."""
    module = module or _One(values[0])
    trainer = SimpleNamespace(global_step=0, sanity_checking=False)
    ema.on_fit_start(trainer, module)
    for v in values[1:]:
        with torch.no_grad():
            module.w.fill_(v)
        for i in range(micro):
            trainer.global_step += i == micro - 1  # the optimizer steps at the end of the accumulation
            ema.on_train_batch_end(trainer, module, None, None, 0)
    return module


@pytest.mark.parametrize("foreach", [False, True])
def test_constant_decay_follows_the_ema_recursion(foreach):
    """Catches a swapped decay (s ← 0.1·s + 0.9·p), updates of frozen parameters, a shadow that is the live one;
    with fused (foreach) updates as without."""
    ema = EMA(decay=0.9, warmup=False, foreach=foreach)
    _run(ema, [0.0, 1.0, 1.0, 3.0])
    s = 0.0
    for p in (1.0, 1.0, 3.0):
        s = 0.9 * s + 0.1 * p  # 0.1, 0.19, 0.471
    (shadow,) = ema.shadow().values()
    assert list(ema.shadow()) == ["w"] and ema.ema.foreach is foreach
    torch.testing.assert_close(shadow, torch.tensor([s]))
    assert abs(s - 0.471) < 1e-9


def test_warm_up_starts_from_the_live_weights_and_ramps_the_decay():
    """diffusers' warm-up: decay of update k is min(decay, (1 + (k−1)) / (10 + (k−1))), 0 for the first.
    Catches the warm-up being off (first shadow = 0.9·p0 + 0.1·p1 instead of p1)."""
    ema = EMA(decay=0.9, warmup=True)
    _run(ema, [0.0, 2.0, 4.0, 4.0])
    s = 0.0
    for k, p in enumerate((2.0, 4.0, 4.0), start=1):
        d = 0.0 if k == 1 else min(0.9, k / (9 + k))  # k=1: 0 → s = 2; k=2: 2/11; k=3: 3/12
        s = d * s + (1 - d) * p
    torch.testing.assert_close(ema.shadow()["w"], torch.tensor([s]))


def test_updates_once_per_optimizer_step_not_per_micro_batch():
    """accumulate_grad_batches = 4: four batch ends, one optimizer step, one update. Catches per-batch updates."""
    ema = EMA(decay=0.9, warmup=False)
    _run(ema, [0.0, 1.0, 1.0], micro=4)
    torch.testing.assert_close(ema.shadow()["w"], torch.tensor([0.9 * 0.1 + 0.1]))  # two updates, not eight
    assert ema.ema.optimization_step == 2


@pytest.mark.parametrize("foreach", [False, True])
def test_shadow_is_fp32_and_keeps_updates_below_bf16_resolution(foreach):
    """A bf16 parameter moving by one bf16 ulp (1/128 near 1): the update 0.001/128 is below bf16's resolution,
    so a bf16 shadow stays at exactly 1. Catches a shadow in the parameters' dtype (fused updates included)."""
    ema = EMA(decay=0.999, warmup=False, foreach=foreach)
    module = _run(ema, [1.0, 1.0 + 1 / 128], module=_One(1.0, torch.bfloat16))
    shadow = ema.shadow()["w"]
    assert module.w.dtype == torch.bfloat16 and shadow.dtype == torch.float32
    # a bf16 shadow would be off by 7.8e-6; (fused) float32 updates round within a few eps of 1
    assert_close_f32(shadow, torch.tensor([1.0 + 0.001 / 128]), ops=4)


def test_checkpoint_round_trip_continues_the_average(tmp_path):
    """The shadow is saved once (``ema_state``, by name) and the step count in the callback state; a restored
    callback continues with the same numbers. Catches a resume that restarts the warm-up or the shadow."""
    ema = EMA(decay=0.9, warmup=True)
    module = _run(ema, [0.0, 2.0, 4.0])
    ckpt: dict = {}
    ema.on_save_checkpoint(None, module, ckpt)
    state = ema.state_dict()
    assert "shadow_params" not in state and set(ckpt["ema_state"]) == {"w"}

    again = EMA(decay=0.9, warmup=True)
    again.load_state_dict(state)
    again.on_load_checkpoint(None, module, ckpt)
    trainer = SimpleNamespace(global_step=2, sanity_checking=False)
    again.on_fit_start(trainer, module)
    for e in (ema, again):
        with torch.no_grad():
            module.w.fill_(8.0)
        trainer.global_step = 3
        e._last_step = 2
        e.on_train_batch_end(trainer, module, None, None, 0)
    torch.testing.assert_close(again.shadow()["w"], ema.shadow()["w"])


class _Regress(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return ((self.w - 1.0) ** 2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_ema_counts_optimizer_steps_in_a_real_trainer(tmp_path, accumulate):
    ema = EMA(decay=0.9, warmup=False)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=3, accumulate_grad_batches=accumulate, callbacks=[ema], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )
    loader = torch.utils.data.DataLoader(torch.zeros(16, 1), batch_size=1)
    trainer.fit(_Regress(), loader)
    assert trainer.global_step == 3 and ema.ema.optimization_step == 3
