"""Hub ids: ``IGRPipeline.from_pretrained("org/name")`` resolves through ``huggingface_hub.snapshot_download`` —
tested offline on a Hugging Face cache laid out in tmp (``models--org--name/snapshots/<rev>/``, ``refs/main``), with
``HF_HUB_OFFLINE=1`` and ``HF_HUB_CACHE`` pointed at it, in a fresh interpreter that must not import Lightning."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from tolerance import assert_close_f32, tiny_restore_ops

ROOT = Path(__file__).resolve().parents[1]
REV = "0123456789abcdef0123456789abcdef01234567"

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    from igr.errors import IGRError
    from igr.pipeline import IGRPipeline

    pipe = IGRPipeline.from_pretrained("igr-test/tiny-igr", torch_dtype=torch.float32)
    person = (np.random.default_rng(0).random((80, 60, 3)) * 255).astype(np.uint8)
    mask = np.zeros((80, 60), np.uint8)
    mask[20:60, 10:50] = 1
    z = torch.randn(1, 4, 16, 12, generator=torch.Generator().manual_seed(0))
    out = pipe(person, mask, "upper", num_inference_steps=2, latents=z, output_type="pt")
    torch.save(out.images, sys.argv[1])
    try:
        IGRPipeline.from_pretrained("igr-test/not-cached")
    except IGRError as exc:
        print("ERROR:", exc)
    lightning = sorted(m for m in sys.modules if m == "lightning" or m.startswith(("lightning.", "pytorch_lightning")))
    print("LIGHTNING:", lightning)
    """
)


def _hub_cache(root: Path, folder: Path) -> Path:
    """The layout huggingface_hub writes: blobs are optional, a snapshot folder and refs/main are what it reads."""
    repo = root / "models--igr-test--tiny-igr"
    snap = repo / "snapshots" / REV
    shutil.copytree(folder, snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REV)
    return root


@pytest.mark.slow  # a fresh interpreter importing torch + diffusers: ~20 s on 2 cores
def test_hub_id_loads_offline_from_the_cache_without_lightning(tiny_model, tmp_path):
    """Catches: Hub ids treated as local paths (folder not found), a network call despite HF_HUB_OFFLINE, the
    cache's snapshot not being the weights loaded, an uncached id giving a traceback, and any import of Lightning
    on the load-and-run path (igr.system, igr.train)."""
    from igr.pipeline import IGRPipeline

    local = IGRPipeline.from_model(tiny_model).save_pretrained(tmp_path / "pipe")
    cache = _hub_cache(tmp_path / "hf" / "hub", local)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(cache),
               PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "out.pt")], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    assert lines["LIGHTNING"] == "[]"
    assert (
        "igr-test/not-cached: not a local folder, and the Hugging Face Hub download failed" in lines["ERROR"]
    )

    z = torch.randn(1, 4, 16, 12, generator=torch.Generator().manual_seed(0))
    import numpy as np

    person = (np.random.default_rng(0).random((80, 60, 3)) * 255).astype(np.uint8)
    mask = np.zeros((80, 60), np.uint8)
    mask[20:60, 10:50] = 1
    expect = IGRPipeline.from_model(tiny_model)(
        person, mask, "upper", num_inference_steps=2, latents=z, output_type="pt"
    ).images
    # another process (its own torch thread count): float32 rounding may differ, tests/tolerance.py
    assert_close_f32(torch.load(tmp_path / "out.pt"), expect, ops=tiny_restore_ops(2))
