"""The LightningModule: one training step updates exactly the trainable parameters."""

from __future__ import annotations

import torch

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
    assert torch.equal(system.validation_step(batch, 3), system.validation_step(batch, 3))


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
        torch.testing.assert_close(grads[0][k], grads[1][k], atol=1e-6, rtol=1e-5, msg=k)


def test_v_prediction_loss_regresses_the_velocity(batch):
    """With prediction_type v the loss is ‖f(z_t) − (α·ε − σ·z_0)‖², recomputed here from the same draws."""
    import torch.nn.functional as F

    from igr.config import DiffusionConfig

    diffusion = DiffusionConfig(prediction_type="v_prediction", zero_terminal_snr=True, timestep_spacing="trailing")
    torch.manual_seed(0)
    system = IGRSystem(diffusion=diffusion).eval()
    loss = system.diffusion_loss(batch, generator=torch.Generator().manual_seed(5))

    g = torch.Generator().manual_seed(5)  # replay diffusion_loss's draws in its order
    z0 = system.model.vae.encode(batch["garment"], sample=True, generator=g)
    inputs = system.model.encode_inputs(batch["person"], batch["mask"], list(batch["category"]))
    keep = torch.rand(2, generator=g) >= diffusion.condition_drop
    noise = torch.randn(z0.shape, generator=g)
    t = torch.randint(0, 1000, (2,), generator=g)
    acp = system.noise_scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    z_t = acp.sqrt() * z0 + (1 - acp).sqrt() * noise
    pred = system.model.eps(z_t, t, system.model.conditions(inputs, keep))
    expected = F.mse_loss(pred, acp.sqrt() * noise - (1 - acp).sqrt() * z0)
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(loss, F.mse_loss(pred, noise))  # not the ε loss


def test_init_from_refuses_weights_of_another_parameterisation(tmp_path):
    import pytest

    from igr.config import DiffusionConfig
    from igr.errors import IGRError
    from igr.export import export_pipeline

    v = DiffusionConfig(prediction_type="v_prediction", zero_terminal_snr=True, timestep_spacing="trailing")
    export_pipeline(IGRSystem(diffusion=v).model, tmp_path / "v")
    IGRSystem(diffusion=v, init_from=str(tmp_path / "v"))  # same parameterisation: fine
    with pytest.raises(IGRError, match="prediction_type=v_prediction"):
        IGRSystem(init_from=str(tmp_path / "v"))
    # a pipeline written before the option existed has no prediction_type: it is SD1.5's ε
    export_pipeline(IGRSystem().model, tmp_path / "old")
    yaml = tmp_path / "old" / "model.yaml"
    yaml.write_text(yaml.read_text().replace("prediction_type: epsilon", "").replace("zero_terminal_snr: false", ""))
    IGRSystem(init_from=str(tmp_path / "old"))
    with pytest.raises(IGRError, match="prediction_type=epsilon"):
        IGRSystem(diffusion=v, init_from=str(tmp_path / "old"))
