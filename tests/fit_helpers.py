"""A tiny `igr fit` run (synthetic shards, the demo experiment on the tiny model, CPU) for the trust and
bad-input tests."""

from __future__ import annotations

from pathlib import Path

from igr.cli import main
from igr.config import CONFIG_DIR


def make_shards(root: Path, train: int = 8, val: int = 2) -> Path:
    for split, num, seed in (("train", train, 0), ("val", val, 1)):
        argv = ["make-shards", "synthetic", "--out", str(root), "--split", split, "--num", str(num),
                "--size", "64x48", "--seed", str(seed)]
        assert main(argv) == 0
    return root


CALLBACKS = """\
trainer:
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{filename: "step{{step:06d}}", auto_insert_metric_name: false, save_last: true,
                  save_top_k: -1, every_n_train_steps: {every}}}
    - class_path: igr.callbacks.EMA
"""


def fit_args(shards: Path, run: Path, steps: int = 2, every: int = 2, *extra: str) -> list[str]:
    """`igr fit` on the demo experiment with a step checkpoint every ``every`` steps (all kept), last.ckpt, and
    the EMA callback (its state travels in the checkpoint)."""
    callbacks = run.parent / f"{run.name}-callbacks.yaml"
    callbacks.parent.mkdir(parents=True, exist_ok=True)
    callbacks.write_text(CALLBACKS.format(every=every))
    return ["fit", "-c", str(CONFIG_DIR / "experiment" / "demo.yaml"), *tiny_overrides(shards, run, steps, every),
            "-c", str(callbacks), *extra]


def tiny_overrides(shards: Path, run: Path, steps: int = 2, every: int = 2) -> list[str]:
    """The CPU overlay, the tiny model on ``shards`` at 64x48, batch 2, ``steps`` steps, validation every ``every``."""
    return [
        "-c", str(CONFIG_DIR / "trainer" / "cpu.yaml"),
        f"--model.model={CONFIG_DIR / 'model' / 'tiny.yaml'}",
        f"--data.train_shards={shards / 'train.json'}",
        f"--data.val_shards={shards / 'val.json'}",
        "--data.image_size=[64, 48]",
        "--data.batch_size=2",
        "--data.num_workers=0",
        f"--trainer.default_root_dir={run}",
        f"--trainer.max_steps={steps}",
        f"--trainer.val_check_interval={every}",
        "--trainer.limit_val_batches=1",
    ]
