"""A callback for tests: records what each rank drew (ε, t, condition-drop mask) and which samples it read, one
JSON line per training step in ``{out}/rank{r}.jsonl``. Used in-process and by the 2-process DDP run
(``--trainer.callbacks+=draw_recorder.DrawRecorder`` with tests/ on PYTHONPATH)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L


class DrawRecorder(L.Callback):
    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self._draws = None
        self._keys: list[str] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        original = pl_module.draw

        def recording(*args, **kwargs):
            d = original(*args, **kwargs)
            if trainer.training:
                self._draws = d
            return d

        pl_module.draw = recording

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._keys = list(batch["key"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        d = self._draws
        row = {
            "step": trainer.global_step,  # after this batch's optimizer step
            "rank": trainer.global_rank,
            "world": trainer.world_size,
            "keys": self._keys,
            "t": d.t.tolist(),
            "keep": d.keep.tolist(),
            "noise": [float(v) for v in d.noise.flatten()[:64]],
        }
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / f"rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")


def read(out: str | Path) -> dict[int, list[dict]]:
    """rank → rows, in order."""
    rows: dict[int, list[dict]] = {}
    for path in sorted(Path(out).glob("rank*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            rows.setdefault(row["rank"], []).append(row)
    return rows
