"""On-disk cache of real-set features, so repeated evaluations against the same real set skip them.

A cache entry is keyed by (real-set identity, extractor identity, resolution). The extractor identity
includes a fingerprint of its weights file (or "random-init") and the preprocessing version, so features
from other weights or a random test backbone are never reused for a real evaluation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from igr.atomic import atomic_file


def files_set_id(files: Iterable[Path], root: Path | None = None) -> str:
    """Identity of a set of files: their names (relative to ``root``), sizes and modification times."""
    h = hashlib.sha256()
    for f in sorted(Path(p) for p in files):
        st = f.stat()
        name = str(f.relative_to(root)) if root is not None else str(f.resolve())
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


class FeatureCache:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, real_id: str, identity: str, resolution: tuple[int, int] | None) -> Path:
        digest = hashlib.sha256(json.dumps([real_id, identity, resolution]).encode()).hexdigest()[:24]
        return self.root / f"{identity.split('|', 1)[0]}-{digest}.npz"

    def load(self, real_id: str, identity: str, resolution: tuple[int, int] | None) -> np.ndarray | None:
        path = self._path(real_id, identity, resolution)
        if not path.is_file():
            return None
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            if meta != {"real_id": real_id, "identity": identity, "resolution": list(resolution or [])}:
                return None  # a hash collision or a hand-edited file: recompute rather than trust it
            return data["feats"]

    def save(
        self, real_id: str, identity: str, resolution: tuple[int, int] | None, feats: np.ndarray
    ) -> Path:
        path = self._path(real_id, identity, resolution)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({"real_id": real_id, "identity": identity, "resolution": list(resolution or [])})
        # atomic: a concurrent reader sees the old file or the new one, never half of one
        with atomic_file(path) as f:
            np.savez(f, feats=np.asarray(feats, dtype=np.float32), meta=np.array(meta))
        return path
