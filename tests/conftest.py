"""Shared fixtures: the tiny model config and small synthetic inputs. Everything runs on CPU in seconds."""

from __future__ import annotations

import copy
import os

# Before torch loads OpenMP: idle threads sleep instead of spinning, which on a busy 2-core machine makes
# small-tensor tests ~10x faster (measured) and costs nothing measurable when the machine is idle.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
# Under pytest-xdist (`make test` runs `-n 2`) the workers share the cores: one torch thread each, and the same
# for the processes a test starts (they inherit OMP_NUM_THREADS), so the workers do not oversubscribe the CPU.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if XDIST_WORKER:
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1 if XDIST_WORKER else max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tiny_config():
    from igr.config import CONFIG_DIR, load_model_config

    return load_model_config(CONFIG_DIR / "model" / "tiny.yaml")


@pytest.fixture(scope="session")
def _tiny_model_built():
    """The tiny model built once (seed 0) and the global RNG state its build leaves behind."""
    from igr.config import CONFIG_DIR, load_model_config
    from igr.models import build_model

    torch.manual_seed(0)
    model = build_model(load_model_config(CONFIG_DIR / "model" / "tiny.yaml")).eval()
    return model, torch.get_rng_state()


@pytest.fixture
def tiny_model(_tiny_model_built):
    """A fresh copy per test (tests change its weights, dtype, processors, caches), with the global RNG where a
    build from seed 0 leaves it, so a test sees exactly what building the model itself would give it."""
    model, rng = _tiny_model_built
    torch.set_rng_state(rng)
    return copy.deepcopy(model)


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    """A random-init tiny model exported as a pipeline folder (seed 0), shared by the tests that only read it."""
    from igr.config import CONFIG_DIR, load_model_config
    from igr.export import export_pipeline
    from igr.models import build_model

    torch.manual_seed(0)
    model = build_model(load_model_config(CONFIG_DIR / "model" / "tiny.yaml")).eval()
    return export_pipeline(model, tmp_path_factory.mktemp("model") / "pipe")


def make_batch(batch: int = 2, size: tuple[int, int] = (64, 48), seed: int = 0) -> dict:
    """A person/mask/garment batch in the DataModule's format: tensors in [-1, 1] and {0, 1}."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    mask = torch.zeros(batch, 1, h, w)
    mask[:, :, h // 5 : h * 3 // 4, w // 5 : w * 4 // 5] = 1
    return {
        "person": torch.rand(batch, 3, h, w, generator=g) * 2 - 1,
        "mask": mask,
        "garment": torch.rand(batch, 3, h, w, generator=g) * 2 - 1,
        "category": ["upper", "full", "lower", "upper"][:batch] * (batch // 4 + 1),
        "key": [f"k{i}" for i in range(batch)],
    }


@pytest.fixture
def batch():
    b = make_batch()
    b["category"] = b["category"][:2]
    return b
