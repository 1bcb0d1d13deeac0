"""The LightningModule: one training step updates exactly the trainable parameters."""

from __future__ import annotations

import pytest
import torch
from tolerance import TINY_UNET_OPS, assert_close_f32

from igr.system import IGRSystem


def test_one_training_step_updates_only_trainable_parameters(batch):
    torch.manual_seed(0)
    system = IGRSystem()
    before = {k: v.detach().clone() for k, v in system.state_dict().items()}
    trainable = {n for n, p in system.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("model.garmnet.", "model.denoiser.")) for n in trainable)
    assert any(".to_k_ip." in n for n in trainable) and any("encoder_hid_proj" in n for n in trainable)

    opt = system.configure_optimizers()["optimizer"]
    system.train()
    assert not system.model.vae.training and not system.model.image_encoder.training
    loss = system.training_step(batch, 0)
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()

    after = system.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing was updated"
    assert changed <= trainable
    for prefix in ("model.vae.", "model.image_encoder.", "model.prompts."):
        assert not any(k.startswith(prefix) for k in changed), prefix
    assert "model.denoiser.unet.encoder_hid_proj.image_projection_layers.0.image_embeds.weight" in changed


def test_validation_loss_is_reproducible(batch):
    system = IGRSystem().eval()
    assert torch.equal(system.validation_step(batch, 3), system.validation_step(batch, 3))  # same call twice


def test_restore_for_metrics(batch):
    system = IGRSystem().eval()
    out = system.restore(
        batch, num_inference_steps=2, guidance_scale=1.5, generator=torch.Generator().manual_seed(0)
    )
    assert out.shape == (2, 3, 64, 48) and 0 <= out.min() and out.max() <= 1


def test_gradient_checkpointing_gives_the_same_gradients(batch, tiny_config):
    """The GarmFus bank is read inside checkpointed blocks during the backward recomputation: gradients
    (GarmNet's included) must equal the plain run's."""
    import dataclasses

    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        system = IGRSystem(model=dataclasses.replace(tiny_config, gradient_checkpointing=ckpt)).train()
        assert system.model.denoiser.unet.is_gradient_checkpointing == ckpt
        assert system.model.garmnet.unet.is_gradient_checkpointing == ckpt
        loss = system.diffusion_loss(batch, generator=torch.Generator().manual_seed(0))
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in system.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert any(k.startswith("model.garmnet.") for k in grads[0])
    for k in grads[0]:
        # recomputed forward, gradients accumulated in another order: forward + backward of both UNets
        assert_close_f32(grads[0][k], grads[1][k], ops=4 * TINY_UNET_OPS, msg=k)


def test_v_prediction_loss_regresses_the_velocity(batch, monkeypatch):
    """With prediction_type v the loss is ‖f(z_t) − (α·ε − σ·z_0)‖². z_0, the draws and z_t are captured where
    the system produces them and the target is rebuilt from α, σ by hand (no call into conditions()). Catches: the
    ε target under v, z_t mixed with the wrong coefficients."""
    import torch.nn.functional as F

    from igr.config import DiffusionConfig

    diffusion = DiffusionConfig(prediction_type="v_prediction", zero_terminal_snr=True, timestep_spacing="trailing")
    torch.manual_seed(0)
    system = IGRSystem(diffusion=diffusion).eval()
    seen = {}
    encode, draw = system.model.vae.encode, system.draw
    monkeypatch.setattr(system.model.vae, "encode", lambda *a, **k: seen.setdefault("z0", encode(*a, **k)))
    monkeypatch.setattr(system, "draw", lambda *a, **k: seen.setdefault("d", draw(*a, **k)))
    pred = torch.randn(2, 4, 16, 12, generator=torch.Generator().manual_seed(3))

    def fake_eps(z_t, t, cond):
        seen["z_t"], seen["t"] = z_t, t
        return pred

    monkeypatch.setattr(system.model, "eps", fake_eps)
    loss = system.diffusion_loss(batch, generator=torch.Generator().manual_seed(5))

    z0, noise, t = seen["z0"].float(), seen["d"].noise, seen["d"].t
    assert torch.equal(seen["t"], t)
    acp = system.noise_scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(seen["z_t"], acp.sqrt() * z0 + (1 - acp).sqrt() * noise)
    expected = ((pred - (acp.sqrt() * noise - (1 - acp).sqrt() * z0)) ** 2).mean()
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(loss, F.mse_loss(pred, noise))  # not the ε loss


# --- init_from ----------------------------------------------------------------------------------------------
def _trainable_state(system: IGRSystem) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in system.state_dict().items() if k.startswith(("model.garmnet.", "model.denoiser."))}


def _save_ckpt(system: IGRSystem, path):
    """The layout of a Lightning checkpoint (state_dict + hyper_parameters), as ``init_from`` reads it."""
    torch.save({"state_dict": system.state_dict(), "hyper_parameters": dict(system.hparams)}, path)
    return path


def test_init_from_loads_the_trainable_weights_once_when_the_fit_starts(tmp_path):
    """Catches: init_from loading nothing (or only one part), loading frozen parts, and loading in __init__ —
    which made every resume and load_from_checkpoint need the coarse file."""
    from igr.export import export_pipeline

    torch.manual_seed(1)
    source = IGRSystem()
    want = _trainable_state(source)
    sources = {"ckpt": _save_ckpt(source, tmp_path / "coarse.ckpt"), "pipeline": export_pipeline(source.model, tmp_path / "p")}
    for kind, path in sources.items():
        torch.manual_seed(2)
        fresh = IGRSystem(init_from=str(path))
        own = _trainable_state(fresh)
        vae_before = {k: v.clone() for k, v in fresh.model.vae.state_dict().items()}
        assert any(not torch.equal(own[k], want[k]) for k in want), f"{kind}: loaded in __init__"
        fresh.setup("fit")
        got = _trainable_state(fresh)
        assert got.keys() == want.keys()
        for k in want:
            assert torch.equal(got[k], want[k]), f"{kind}: {k} not loaded"
        for k, v in fresh.model.vae.state_dict().items():
            assert torch.equal(v, vae_before[k]), f"{kind}: frozen VAE {k} changed"


def test_init_from_refuses_other_architectures(tmp_path, tiny_config):
    """Catches a loader that skips keys or shapes it cannot use (a half-loaded model trains silently wrong)."""
    import dataclasses

    import pytest

    from igr.errors import WeightsError

    wide = dataclasses.replace(tiny_config, unet={**tiny_config.unet, "block_out_channels": [48, 64]})
    ckpt = _save_ckpt(IGRSystem(model=wide), tmp_path / "wide.ckpt")
    with pytest.raises(WeightsError, match=r"wide.ckpt \[garmnet\]: '.*' has shape"):
        IGRSystem(init_from=str(ckpt)).setup("fit")
    no_garmnet = _save_ckpt(IGRSystem(model=dataclasses.replace(tiny_config, use_garmnet=False)), tmp_path / "ng.ckpt")
    with pytest.raises(WeightsError, match=r"ng.ckpt \[garmnet\]: missing"):
        IGRSystem(init_from=str(no_garmnet)).setup("fit")


def test_init_from_refuses_weights_of_another_parameterisation(tmp_path):
    import pytest

    from igr.config import DiffusionConfig
    from igr.errors import IGRError
    from igr.export import export_pipeline

    v = DiffusionConfig(prediction_type="v_prediction", zero_terminal_snr=True, timestep_spacing="trailing")
    export_pipeline(IGRSystem(diffusion=v).model, tmp_path / "v")
    IGRSystem(diffusion=v, init_from=str(tmp_path / "v")).setup("fit")  # same parameterisation: fine
    with pytest.raises(IGRError, match="prediction_type=v_prediction"):
        IGRSystem(init_from=str(tmp_path / "v")).setup("fit")
    # a pipeline written before the option existed has no prediction_type: it is SD1.5's ε
    from igr.export import write_legacy_pipeline

    write_legacy_pipeline(IGRSystem().model, tmp_path / "old")
    yaml = tmp_path / "old" / "model.yaml"
    yaml.write_text(yaml.read_text().replace("prediction_type: epsilon", "").replace("zero_terminal_snr: false", ""))
    IGRSystem(init_from=str(tmp_path / "old")).setup("fit")
    with pytest.raises(IGRError, match="prediction_type=epsilon"):
        IGRSystem(diffusion=v, init_from=str(tmp_path / "old")).setup("fit")


# --- condition drop (§3.1) ----------------------------------------------------------------------------------
def test_condition_drop_probability_is_p_uncond_per_sample():
    """Catches: a drop that never (or always) happens, the comparison turned around (keeping with p = 0.1), or
    one draw for the whole batch."""
    from igr.config import DiffusionConfig

    n = 20_000
    system = IGRSystem()
    keep = system.draw(n, (n, 1, 1, 1), torch.device("cpu"), torch.Generator().manual_seed(0)).keep
    assert keep.dtype == torch.bool and keep.shape == (n,)
    dropped = 1 - keep.float().mean().item()
    assert abs(dropped - 0.1) < 0.01  # p_uncond = 0.1; 3σ of the estimate ≈ 0.0064
    never = IGRSystem(diffusion=DiffusionConfig(condition_drop=0.0))
    assert never.draw(n, (n, 1, 1, 1), torch.device("cpu"), torch.Generator().manual_seed(0)).keep.all()


def test_the_dropped_branch_sees_empty_prompt_zero_image_embedding_and_zero_garmnet_input():
    """Inputs.select on hand-made tensors; the expected values are written out, not computed by select.
    Catches: select never dropping, dropping only some conditions, or dropping the kept samples."""
    from igr.models import Inputs

    g = torch.Generator().manual_seed(0)
    inputs = Inputs(
        person_latent=torch.randn(3, 4, 2, 2, generator=g),
        mask=torch.ones(3, 1, 8, 8),
        text=torch.randn(3, 5, 6, generator=g),
        image_embeds=torch.randn(3, 7, generator=g),
    )
    empty = torch.full((1, 5, 6), 0.25)
    keep = torch.tensor([True, False, True])
    out = inputs.select(keep, empty)
    for i in (0, 2):  # kept: untouched
        assert torch.equal(out.person_latent[i], inputs.person_latent[i]) and torch.equal(out.mask[i], inputs.mask[i])
        assert torch.equal(out.text[i], inputs.text[i]) and torch.equal(out.image_embeds[i], inputs.image_embeds[i])
    assert torch.equal(out.person_latent[1], torch.zeros(4, 2, 2))
    assert torch.equal(out.mask[1], torch.zeros(1, 8, 8))
    assert torch.equal(out.text[1], torch.full((5, 6), 0.25))
    assert torch.equal(out.image_embeds[1], torch.zeros(7))


def _model_inputs_under(system, batch, monkeypatch, keep, keep_image=None):
    """Run diffusion_loss with the draw's drop masks replaced by ``keep`` / ``keep_image``; return the positional
    inputs GarmNet (person latent, mask, text) and the denoiser (z_t, t, text, image embeds, feats) received."""
    from igr.system import Draws

    draw = system.draw

    def draws(*a, **k):
        d = draw(*a, **k)
        return Draws(keep, d.noise, d.t, keep_image)

    monkeypatch.setattr(system, "draw", draws)
    m, seen = system.model, {}
    hooks = [
        m.garmnet.register_forward_pre_hook(lambda mod, args: seen.setdefault("garmnet", args)),
        m.denoiser.register_forward_pre_hook(lambda mod, args: seen.setdefault("denoiser", args)),
    ]
    try:
        system.diffusion_loss(batch, generator=torch.Generator().manual_seed(0))
    finally:
        for h in hooks:
            h.remove()
    return seen["garmnet"], seen["denoiser"]


def test_training_drops_every_condition_of_a_sample_together(batch, monkeypatch):
    """What GarmNet and the denoiser receive in diffusion_loss when the draw drops sample 1 and keeps sample 0.
    Catches: the drop mask not reaching the model, or any one condition (text, IP embedding, GarmNet person
    latent or mask) left in place for a dropped sample."""
    torch.manual_seed(0)
    system = IGRSystem().eval()
    m = system.model
    (person_latent, mask, g_text), (_, _, d_text, image_embeds, feats) = _model_inputs_under(
        system, batch, monkeypatch, torch.tensor([True, False])
    )
    empty = m.prompts.embeddings[-1]
    prompt0 = m.prompts.embeddings[m.prompts.categories.index(batch["category"][0])]
    # sample 1: everything dropped
    assert torch.equal(person_latent[1], torch.zeros_like(person_latent[1])) and mask[1].abs().sum() == 0
    assert torch.equal(g_text[1], empty) and torch.equal(d_text[1], empty)
    assert torch.equal(image_embeds[1], torch.zeros_like(image_embeds[1]))
    # sample 0: everything kept
    torch.testing.assert_close(person_latent[0], m.vae.encode(batch["person"][:1])[0])
    assert torch.equal(mask[0], batch["mask"][0]) and torch.equal(g_text[0], prompt0) and torch.equal(d_text[0], prompt0)
    assert image_embeds[0].abs().sum() > 0
    assert feats is not None and all(f.shape[0] == 2 for f in feats.values())


def test_image_drop_probability_and_an_unchanged_stream_without_it():
    """diffusion.image_drop: the share of samples whose image embedding alone is dropped. Catches: the comparison
    turned around, one draw for the batch, and a default (0) that changes the seeded stream of keep/ε/t."""
    from igr.config import DiffusionConfig

    n, cpu = 20_000, torch.device("cpu")
    with_drop = IGRSystem(diffusion=DiffusionConfig(image_drop=0.3))
    d = with_drop.draw(n, (n, 1, 1, 1), cpu, torch.Generator().manual_seed(0))
    assert d.keep_image.dtype == torch.bool and d.keep_image.shape == (n,)
    assert abs((1 - d.keep_image.float().mean().item()) - 0.3) < 0.012  # 3σ ≈ 0.0097
    plain = IGRSystem().draw(n, (n, 1, 1, 1), cpu, torch.Generator().manual_seed(0))
    assert plain.keep_image is None
    # the default draws the same keep, ε and t as before the option existed (image_drop is drawn last)
    assert torch.equal(plain.keep, d.keep) and torch.equal(plain.noise, d.noise) and torch.equal(plain.t, d.t)
    ref = torch.Generator().manual_seed(0)
    assert torch.equal(plain.keep, torch.rand(n, generator=ref) >= 0.1)


def test_image_drop_zeroes_the_image_embedding_alone(batch, monkeypatch):
    """A sample whose image embedding is dropped keeps its prompt and GarmNet's person latent and mask.
    Catches: keep_image not reaching the model, dropping the wrong sample, or dropping the other conditions too."""
    torch.manual_seed(0)
    system = IGRSystem().eval()
    m = system.model
    (person_latent, mask, g_text), (_, _, d_text, image_embeds, _) = _model_inputs_under(
        system, batch, monkeypatch, torch.tensor([True, True]), torch.tensor([False, True])
    )
    assert torch.equal(image_embeds[0], torch.zeros_like(image_embeds[0]))  # sample 0: image embedding dropped
    assert image_embeds[1].abs().sum() > 0
    for i in (0, 1):  # both keep the prompt and GarmNet's inputs
        prompt = m.prompts.embeddings[m.prompts.categories.index(batch["category"][i])]
        assert torch.equal(d_text[i], prompt) and torch.equal(g_text[i], prompt)
        torch.testing.assert_close(person_latent[i], m.vae.encode(batch["person"][i : i + 1])[0])
        assert torch.equal(mask[i], batch["mask"][i])


def test_drop_probabilities_outside_0_1_are_refused():
    import pytest

    from igr.config import DiffusionConfig
    from igr.errors import IGRError

    with pytest.raises(IGRError, match="image_drop: 1.5 is not a probability"):
        DiffusionConfig(image_drop=1.5)
    with pytest.raises(IGRError, match="condition_drop: -0.1"):
        DiffusionConfig(condition_drop=-0.1)


def test_timestep_bias_draws_the_favoured_timesteps_multiplier_times_as_often():
    """diffusion.timestep_bias: "later" with portion 0.3 and multiplier 3 draws t ≥ 700 with probability
    0.3·3 / (0.7 + 0.3·3) = 0.5625, each favoured t equally often; "earlier" favours t < 300 the same way.
    Catches: the bias ignored, the wrong end favoured, a portion off by its size, and a default ("none") that
    changes the seeded stream of keep/ε/t."""
    from igr.config import DiffusionConfig

    n, cpu = 40_000, torch.device("cpu")
    late = IGRSystem(diffusion=DiffusionConfig(timestep_bias="later", timestep_bias_portion=0.3,
                                               timestep_bias_multiplier=3.0))
    t = late.draw(n, (n, 1, 1, 1), cpu, torch.Generator().manual_seed(0)).t
    assert t.dtype == torch.long and t.min() >= 0 and t.max() <= 999
    assert abs((t >= 700).float().mean().item() - 0.5625) < 0.008  # 3σ ≈ 0.0074
    # within each part t stays uniform: the favoured part's halves, and the rest's halves, are drawn equally
    assert abs((t >= 850).float().mean().item() - 0.5625 / 2) < 0.007
    assert abs((t < 350).float().mean().item() - 0.4375 / 2) < 0.007
    early = IGRSystem(diffusion=DiffusionConfig(timestep_bias="earlier", timestep_bias_portion=0.3,
                                                timestep_bias_multiplier=3.0))
    t = early.draw(n, (n, 1, 1, 1), cpu, torch.Generator().manual_seed(0)).t
    assert abs((t < 300).float().mean().item() - 0.5625) < 0.008
    plain = IGRSystem().draw(n, (n, 1, 1, 1), cpu, torch.Generator().manual_seed(0))
    ref = torch.Generator().manual_seed(0)
    torch.rand(n, generator=ref), torch.randn((n, 1, 1, 1), generator=ref)  # keep, ε: drawn before t
    assert torch.equal(plain.t, torch.randint(0, 1000, (n,), generator=ref))


def test_timestep_bias_settings_outside_their_range_are_refused():
    from igr.config import DiffusionConfig
    from igr.errors import IGRError

    with pytest.raises(IGRError, match="timestep_bias: 'late' is not one of none, later, earlier"):
        DiffusionConfig(timestep_bias="late")
    with pytest.raises(IGRError, match="timestep_bias_portion: 1.0 must be in"):
        DiffusionConfig(timestep_bias_portion=1.0)
    with pytest.raises(IGRError, match="timestep_bias_multiplier: 0.0 must be > 0"):
        DiffusionConfig(timestep_bias_multiplier=0.0)


# --- precision: the DeepSpeed regime on the CPU ---------------------------------------------------------------
def test_one_step_in_the_deepspeed_bf16_regime(batch):
    """DeepSpeed casts parameters (not buffers) to bf16, Lightning casts the batch to bf16, and no autocast runs.
    Before the fix this failed in the CLIP crop's resize (no bf16 kernel) and then at fp32 pixels / fp32 prompt
    embeddings meeting bf16 weights."""
    torch.manual_seed(0)
    system = IGRSystem().train()
    for p in system.parameters():
        p.data = p.data.to(torch.bfloat16)
    assert {b.dtype for b in system.buffers()} == {torch.float32}
    opt = torch.optim.AdamW(system.trainable_parameters(), lr=1e-3)
    bf16 = {k: v.to(torch.bfloat16) if torch.is_tensor(v) else v for k, v in batch.items()}
    loss = system.diffusion_loss(bf16, generator=torch.Generator().manual_seed(0))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in system.trainable_parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.bfloat16 for g in grads)
    opt.step()


def test_gradient_clipping_has_one_place():
    """OptimConfig.max_grad_norm was never read (clipping came from the trainer). It is gone; the experiment
    configs set trainer.gradient_clip_val, and checkpoints that still carry the old key load."""
    from omegaconf import OmegaConf

    from igr.config import CONFIG_DIR, OptimConfig

    assert "max_grad_norm" not in OptimConfig.__dataclass_fields__
    for name in ("coarse", "finetune", "demo", "demo_finetune"):
        assert OmegaConf.load(CONFIG_DIR / "experiment" / f"{name}.yaml").trainer.gradient_clip_val == 1.0, name
    assert IGRSystem(optim={"lr": 1e-4, "max_grad_norm": 1.0}).optim.lr == 1e-4


def test_truncated_snr_weighting_scales_each_sample_s_loss_by_its_clamped_snr(batch):
    """One sample at a time, same weights, same draws: the weighted loss is the plain one times clamp(SNR(t), 1, γ),
    with SNR from the schedule by hand (z0-prediction, so no change of units)."""
    from igr.system import Draws

    diffusion = {"prediction_type": "sample", "loss_weighting": "none"}
    torch.manual_seed(0)
    plain = IGRSystem(diffusion=diffusion)
    torch.manual_seed(0)
    weighted = IGRSystem(diffusion={**diffusion, "loss_weighting": "truncated_snr", "snr_gamma": 5.0})
    one = {k: v[:1] for k, v in batch.items()}
    ab = plain.noise_scheduler.alphas_cumprod
    for t in (20, 150, 700):
        snr = float(ab[t] / (1 - ab[t]))
        noise = torch.randn(plain.model.latent_shape(1), generator=torch.Generator().manual_seed(t))
        draws = Draws(torch.tensor([True]), noise, torch.tensor([t]))
        for system in (plain, weighted):
            system.draw = lambda b, shape, device, generator, d=draws: d
        with torch.no_grad():
            # the same generator for the VAE's posterior sample in both
            losses = [s.diffusion_loss(one, generator=torch.Generator().manual_seed(1)) for s in (weighted, plain)]
            ratio = (losses[0] / losses[1]).item()
        assert ratio == pytest.approx(min(max(snr, 1.0), 5.0), rel=1e-4), t
