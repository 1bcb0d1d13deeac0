"""Our train DataLoader against Lightning's DeepSpeed strategy as configs/trainer/deepspeed_4xa100.yaml builds it
(issue #32 item 1). Lightning will not run DeepSpeed on CPU, so this runs the strategy's own config resolution
(``_format_config``) against the real IGRDataModule's train loader, as ``strategy.setup`` does before step 1."""

import importlib

import lightning as L
import pytest
import torch
import yaml
from data_helpers import H, W, write_synthetic

from igr.config import CONFIG_DIR
from igr.data import IGRDataModule

pytest.importorskip("deepspeed")


class _Module(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, _):
        return self.w.sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _overlay_strategy():
    """The strategy as LightningCLI instantiates it from the overlay: class_path with its init_args."""
    doc = yaml.safe_load((CONFIG_DIR / "trainer" / "deepspeed_4xa100.yaml").read_text())
    spec = doc["trainer"]["strategy"]
    module, name = spec["class_path"].rsplit(".", 1)
    return importlib.import_module(module).__dict__[name](**spec.get("init_args", {})), doc["trainer"]


@pytest.mark.parametrize("batch_size", [3, 5])
def test_the_deepspeed_overlay_resolves_its_config_against_our_train_loader(tmp_path, batch_size):
    """Catches: a train loader without ``batch_sampler.batch_size`` (a ``DataLoader(batch_size=None)``), on which
    the strategy's ``_auto_select_batch_size`` raised AttributeError before step 1 (``make train-coarse``), and a
    micro batch that does not follow ``data.batch_size``."""
    write_synthetic(str(tmp_path / "s"), 8, per_shard=4)
    strategy, overlay = _overlay_strategy()
    assert strategy.config.get("train_micro_batch_size_per_gpu") is None  # left to the loader ("auto")
    dm = IGRDataModule(train_shards=str(tmp_path / "s"), image_size=(H, W), batch_size=batch_size, num_workers=0,
                       train_samples_per_epoch=4 * batch_size)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        accumulate_grad_batches=overlay["accumulate_grad_batches"], gradient_clip_val=1.0,
                        default_root_dir=str(tmp_path))
    module = _Module()
    trainer._data_connector.attach_data(module, datamodule=dm)  # as trainer.fit does
    module.trainer = trainer
    strategy._lightning_module = module
    dm.setup("fit")
    strategy._format_config()  # what DeepSpeedStrategy.setup runs first
    assert strategy.config["train_micro_batch_size_per_gpu"] == batch_size
    assert strategy.config["gradient_accumulation_steps"] == overlay["accumulate_grad_batches"]
    loader = dm.train_dataloader()
    assert loader.batch_size == loader.batch_sampler.batch_size == batch_size
    assert [len(b["key"]) for b in loader] == [batch_size] * 4
