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
