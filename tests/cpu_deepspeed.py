"""Lightning's DeepSpeedStrategy on the CPU, for tests only: Lightning refuses any accelerator but CUDA, while
DeepSpeed itself runs on the CPU (its CPU accelerator over gloo). Three checks are stepped over: the CUDA check,
the device-index check (a CPU device has no index) and the batch size DeepSpeed logs with (read from the train
loader's ``batch_sampler``, which an iterable loader does not have; the overlay's own fix for that is not ours)."""

from __future__ import annotations

import torch
from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    def setup_environment(self) -> None:
        DDPStrategy.setup_environment(self)

    def setup_distributed(self) -> None:
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    @property
    def root_device(self) -> torch.device:
        return torch.device("cpu", self.local_rank)

    def _auto_select_batch_size(self) -> int:
        return 2
