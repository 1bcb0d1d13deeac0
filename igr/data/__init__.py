"""Data: WebDataset shards (docs/design.md §4), converters, the synthetic generator, HQFT curation.

``IGRDataModule`` feeds Lightning; ``iter_samples`` iterates a shard set deterministically
without Lightning (evaluation, curation); ``resolve_shards`` expands a shard specification.
"""

from igr.data.schema import CATEGORIES, SkipStats
from igr.data.transforms import binarize_mask, resize_pad, resize_pad_mask

__all__ = ["CATEGORIES", "IGRDataModule", "SkipStats", "binarize_mask", "iter_samples", "resize_pad",
           "resize_pad_mask", "resolve_shards"]


def __getattr__(name: str):
    # Lightning is imported only when the DataModule is asked for, so `igr make-shards` starts fast; the shard
    # readers (braceexpand, the [train] extra) only when asked for, so inference (igr.restore_io) runs without them.
    if name == "IGRDataModule":
        from igr.data.datamodule import IGRDataModule

        return IGRDataModule
    if name in ("iter_samples", "resolve_shards"):
        from igr.data import shards

        return getattr(shards, name)
    raise AttributeError(f"module 'igr.data' has no attribute {name!r}")
