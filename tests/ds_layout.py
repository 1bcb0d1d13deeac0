"""DeepSpeed checkpoint folders in the exact on-disk layout that Lightning 2.6's ``DeepSpeedStrategy.save_checkpoint``
and deepspeed 0.19's ``engine.save_checkpoint`` write for ZeRO-2 in bf16, built without DeepSpeed (whose engine
needs seconds of imports and a process group). ``test_deepspeed_contract.py`` checks the layout against a folder
written by DeepSpeed's own engine (slow) and reads these folders with DeepSpeed's own ``zero_to_fp32``.

- ``latest``: the tag (Lightning always passes ``tag="checkpoint"``);
- ``checkpoint/mp_rank_00_model_states.pt``: the module's state dict with parameters in bf16 (buffers stay fp32,
  deepspeed >= 0.19.2), DeepSpeed's bookkeeping, and Lightning's checkpoint without ``state_dict`` and
  ``optimizer_states`` as client state;
- ``checkpoint/bf16_zero_pp_rank_R_mp_rank_00_optim_states.pt``: rank R's slice of the flat fp32 master weights
  of the trainable parameters (padded to a multiple of 2 x ranks, as ZeRO-2 aligns them).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch

DS_CONFIG = {"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 2}, "bf16": {"enabled": True}}


def write_deepspeed_folder(
    folder: Path, module: torch.nn.Module, checkpoint: dict, dp_world_size: int = 1, tag: str = "checkpoint"
) -> Path:
    """``checkpoint`` is a Lightning checkpoint dict (what a ``.ckpt`` file holds) of ``module``, whose
    ``requires_grad`` flags say which parameters the optimizer owned."""
    state = checkpoint["state_dict"]
    params = dict(module.named_parameters())
    trainable = [n for n, p in params.items() if p.requires_grad]
    frozen = [n for n, p in params.items() if not p.requires_grad]
    buffers = [n for n in state if n not in params]
    client = {k: v for k, v in checkpoint.items() if k not in ("state_dict", "optimizer_states")}
    states = dict(
        module=OrderedDict((k, v.bfloat16() if k in params else v) for k, v in state.items()),
        buffer_names=buffers,
        optimizer=None,
        param_shapes=[OrderedDict((n, params[n].shape) for n in trainable)],
        frozen_param_shapes=OrderedDict((n, params[n].shape) for n in frozen),
        shared_params={},
        frozen_param_fragments=OrderedDict((n, state[n].bfloat16()) for n in frozen),
        lr_scheduler=None,
        data_sampler=None,
        random_ltd=None,
        skipped_steps=0,
        global_steps=int(checkpoint.get("global_step", 0)),
        global_samples=0,
        dp_world_size=dp_world_size,
        mp_world_size=1,
        checkpoint_parallel_dimensions={},
        ds_config=DS_CONFIG,
        ds_version="0.19.8",
        **client,
    )
    tag_dir = folder / tag
    tag_dir.mkdir(parents=True, exist_ok=True)
    torch.save(states, tag_dir / "mp_rank_00_model_states.pt")
    flat = torch.cat([state[n].float().flatten() for n in trainable])
    align = 2 * dp_world_size
    flat = torch.cat([flat, flat.new_zeros(-flat.numel() % align)])
    for rank, part in enumerate(flat.chunk(dp_world_size)):
        optim = {
            "zero_stage": 2,
            "partition_count": dp_world_size,
            "single_partition_of_fp32_groups": [part.clone()],
            "base_optimizer_state": {"state": {0: {"step": torch.tensor(float(states["global_steps"]))}}},
            "ds_version": "0.19.8",
        }
        torch.save(
            {"optimizer_state_dict": optim, "ds_config": DS_CONFIG, "ds_version": "0.19.8"},
            tag_dir / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt",
        )
    (folder / "latest").write_text(tag)
    return folder
