"""What every metric backbone shares, below the extractors that use it: the identity of its weights file (for
feature-cache keys) and a deterministic random init (tests build backbones without weights)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

import torch

RANDOM_INIT_SEED = 0  # every rank and every run builds the same random network


def fingerprint(path: Path) -> str:
    """Cheap identity of a weights file (name, size, hash of the first and last MiB) for cache keys."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(-(1 << 20), 2)
            h.update(f.read(1 << 20))
    return f"{path.name}:{size}:{h.hexdigest()[:16]}"


@contextlib.contextmanager
def seeded_init(seed: int = RANDOM_INIT_SEED) -> Iterator[None]:
    """Deterministic parameter init without touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
