"""Shared helpers for the metrics tests: small random images, image folders, a network guard."""

from __future__ import annotations

import socket
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image


def random_pairs(
    n: int, h: int = 64, w: int = 48, noise: int = 30, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pred, gt) uint8 batches: smooth-ish random GT and a noisy copy as the prediction."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randint(0, 256, (n, 3, h // 8, w // 8), generator=g).float()
    gt = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    gt = (gt + torch.randint(-10, 11, gt.shape, generator=g)).clamp(0, 255).round().to(torch.uint8)
    pred = (gt.int() + torch.randint(-noise, noise + 1, gt.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    return pred, gt


def save_folder(folder: Path, images: torch.Tensor, names: list[str], ext: str = ".png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for img, name in zip(images, names, strict=True):
        path = folder / f"{name}{ext}"
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def no_network(monkeypatch):
    """Fail any attempt to open a network connection (the metrics must never download)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def np_images(t: torch.Tensor) -> np.ndarray:
    return t.permute(0, 2, 3, 1).numpy()


class KeyedGarments(torch.utils.data.Dataset):
    """Validation-like samples: ``{"garment": float in [-1, 1], "key": "s<i>"}`` (the person is not needed)."""

    def __init__(self, n: int = 5, h: int = 32, w: int = 24) -> None:
        self.n, self.h, self.w = n, h, w

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        _, gt = random_pairs(1, self.h, self.w, seed=100 + i)
        return {"garment": gt[0].float() / 127.5 - 1, "key": f"s{i}"}


def fake_restore(garment: torch.Tensor, keys) -> torch.Tensor:
    """A deterministic per-sample 'restoration' in [0, 1]: the garment blurred and tinted by its key."""
    x = (garment + 1) / 2
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    tint = torch.tensor([(int(k[1:]) % 5) / 20 for k in keys], dtype=x.dtype).view(-1, 1, 1, 1)
    return (blurred * (1 - tint) + tint).clamp(0, 1)


class FakeRestorer(L.LightningModule):
    """Has the ``restore`` method MetricsCallback calls; records which samples this rank restored."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.restored_keys: list[str] = []
        self.calls: list[dict] = []

    def validation_step(self, batch, batch_idx):
        return None

    def restore(self, batch, num_inference_steps, guidance_scale, generator):
        seeds = [g.initial_seed() for g in generator] if isinstance(generator, list) else generator.initial_seed()
        self.calls.append({"steps": num_inference_steps, "guidance": guidance_scale, "seed": seeds})
        self.restored_keys += list(batch["key"])
        return fake_restore(batch["garment"], batch["key"])
