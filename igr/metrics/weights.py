"""Fetch the metric backbones once (``igr download-weights --what metrics``); nothing else here downloads.

Files land under one folder with the standard names of :data:`igr.metrics.config.BACKBONE_FILES`, next to a
``metrics.yaml`` whose ``weights_dir`` points at them, so ``--weights-config <folder>/metrics.yaml`` (or
``weights_dir: <folder>`` in any metrics config) uses them.
"""

from __future__ import annotations

from pathlib import Path

from igr.metrics.config import BACKBONE_FILES

# sha256 prefixes the publishers give (torchvision: in the file name; OpenAI: the URL's directory).
# clean-fid publishes no checksum for its Inception file.
SHA256_PREFIX = {
    "alexnet": "7be5be79",
    "vgg16": "397923af",
    "clip_vit_b_32": "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
}


def download_metric_weights(
    folder: str | Path, overwrite: bool = False, progress: bool = True
) -> dict[str, Path]:
    """Download every metric backbone into ``folder`` (files already there are kept); return their paths."""
    import torch.hub

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, (name, file_name, url) in BACKBONE_FILES.items():
        path = folder / file_name
        paths[key] = path
        if path.is_file() and not overwrite:
            print(f"{name}: {path} (already there)")
            continue
        print(f"{name} → {path}")
        # writes to a temporary file and renames it, so an interrupted download leaves no partial file
        torch.hub.download_url_to_file(url, str(path), hash_prefix=SHA256_PREFIX.get(key), progress=progress)
    config = folder / "metrics.yaml"
    config.write_text(
        f"# Written by `igr download-weights`: the metric backbones in this folder.\nweights_dir: {folder}\n"
    )
    print(f"metrics config: {config} (pass it as --weights-config, or set weights_dir: {folder})")
    return paths
