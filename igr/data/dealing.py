"""Dealing a training set to rank x worker slots so that every sample is read once per pass.

The training set is read as an endless sequence of *passes*. Pass ``p`` is every sample of every shard: the shards in
an order drawn from ``(seed, p)`` (the same on every process), each shard's samples in file order. A global *cursor*
walks that sequence. Each epoch takes the next ``world_size * num_batches * batch_size`` positions (its *window*) and
deals them to the slots (``rank * num_workers + worker``) in contiguous ranges, each as long as its worker's share of
the rank's batches. So over epochs adding up to k passes every sample is read k times, whatever the number of shards,
their sizes, the ranks, workers and epoch length; a slot reads one or two shards per epoch (from an offset), as a
webdataset slot reads whole shards.

The cursor is the loader's state (:class:`~igr.data.pipeline.EpochLoader`): it is handed to the workers each epoch
and saved in checkpoints with the batches already trained, so a resumed run continues where it stopped.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from igr.data.schema import UNREADABLE_SHARD, SkipStats
from igr.data.shards import find_index, index_shards, is_remote, iter_raw, read_index, shard_error_handler
from igr.errors import IGRError


def mix(*parts) -> int:
    """A seed from ``parts``, the same in every process (unlike ``hash()`` of tuples of str)."""
    return int.from_bytes(random.Random(repr(parts)).randbytes(8), "little")


# --------------------------------------------------------------------------- shard sizes


def _sample_key(name: str) -> str | None:
    # webdataset's grouping of members into samples (tariterators.tar_file_iterator, base_plus_ext), on names only
    if re.match(r"__[^/]*__($|/)", name):
        return None
    match = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", name)
    return match.group(1) if match else None


def _sample_starts(path: str) -> Iterator[int]:
    """Byte offsets in a local tar shard of each sample's first member (its extended header, if any), grouped as
    webdataset groups members; reads headers only (tarfile seeks over data)."""
    last = None
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            if not member.isreg():
                continue
            key = _sample_key(member.name)
            if key is not None and key != last:
                last = key
                yield member.offset


def count_tar_samples(path: str) -> int:
    """Samples in a local tar shard, from its headers."""
    return sum(1 for _ in _sample_starts(path))


def sample_offset(path: str, index: int) -> int | None:
    """Byte offset in a local tar shard of sample ``index``; None when the shard holds fewer samples."""
    return next(itertools.islice(_sample_starts(path), index, None), None)


def read_shard_from(url: str, start: int, stats: SkipStats | None = None) -> Iterator[dict]:
    """Raw samples of one shard from its ``start``-th on. A local shard is entered by seeking to that sample, a
    remote one is read from its head (the samples before ``start`` are read and dropped, nothing decoded)."""
    if start == 0 or is_remote(url):
        yield from itertools.islice(iter_raw([url], stats), start, None)
        return
    try:
        offset = sample_offset(url, start)
    except (OSError, tarfile.TarError):
        yield from itertools.islice(iter_raw([url], stats), start, None)  # iter_raw counts the unreadable shard
        return
    if offset is None:
        return
    # webdataset pulls in torch; imported here, as igr.data.shards.iter_raw does
    from webdataset.tariterators import group_by_keys, tar_file_expander

    handler = shard_error_handler(stats)
    with open(url, "rb") as f:
        f.seek(offset)
        yield from group_by_keys(tar_file_expander([{"url": url, "stream": f}], handler=handler), handler=handler)


def index_sizes(specs: Sequence[str]) -> dict[str, int]:
    """``num_samples`` of each shard listed in the ``.json`` indexes among ``specs`` (parts of a shard spec)."""
    sizes: dict[str, int] = {}
    for spec in specs:
        spec = spec.strip()
        if not spec.endswith(".json") or is_remote(spec):
            continue
        path = os.path.expanduser(spec[len("file:"):] if spec.startswith("file:") else spec)
        if not os.path.isfile(path):
            continue
        # index_shards: the one rule for where an entry points (and which entries are refused), in entry order
        for url, entry in zip(index_shards(path), read_index(path)["shards"], strict=True):
            if isinstance(entry, dict) and isinstance(entry.get("num_samples"), int):
                sizes[url] = entry["num_samples"]
    return sizes


def shard_sizes(urls: Sequence[str], known: dict[str, int] | None = None, stats: SkipStats | None = None) -> list[int]:
    """Samples per shard: from ``known``, else the ``{split}.json`` index beside a local shard, else its tar headers.

    An unreadable local shard counts 0 samples (and a skip in ``stats``): training goes on without it. A remote shard
    needs its count from an index: reading the whole set to count it would be a pass of its own."""
    known = dict(known or {})
    indexes: dict[str, dict[str, int]] = {}
    sizes = []
    for url in urls:
        if url in known:
            sizes.append(known[url])
            continue
        if is_remote(url):
            raise IGRError(f"{url}: a remote training shard needs its sample count: list it with num_samples in a "
                           "{split}.json index (as `igr make-shards` writes) and give that index as data.train_shards")
        folder = os.path.dirname(url)
        split = os.path.basename(url).rsplit("-", 1)[0]
        if (folder, split) not in indexes:
            index = find_index([url]) or {}
            indexes[folder, split] = {e["name"]: e["num_samples"] for e in index.get("shards", [])
                                      if isinstance(e, dict) and isinstance(e.get("num_samples"), int)}
        n = indexes[folder, split].get(os.path.basename(url))
        if n is None:
            try:
                n = count_tar_samples(url)
            except (OSError, tarfile.TarError) as exc:
                if stats is not None:
                    stats.skip(UNREADABLE_SHARD, url, "", f"{type(exc).__name__}: {exc}")
                n = 0
        sizes.append(n)
    return sizes


# --------------------------------------------------------------------------- passes and slots


@dataclass(frozen=True)
class Piece:
    """Samples ``start:stop`` (file order) of shard ``shard``; ``position`` is the cursor position of ``start``."""

    shard: int
    start: int
    stop: int
    position: int


class PassPlan:
    """The endless sequence of passes over shards of ``sizes`` samples (see the module docstring)."""

    def __init__(self, sizes: Sequence[int], seed: int):
        self.sizes = [int(n) for n in sizes]
        self.total = sum(self.sizes)
        self.seed = seed
        self._order: tuple[int, list[int]] | None = None

    def order(self, pass_no: int) -> list[int]:
        if self._order is None or self._order[0] != pass_no:
            order = list(range(len(self.sizes)))
            random.Random(mix(self.seed, "pass", pass_no)).shuffle(order)
            self._order = pass_no, order
        return self._order[1]

    def pieces(self, start: int, stop: int | None = None) -> Iterator[Piece]:
        """The pieces of shards that cursor positions ``start:stop`` cover, in order (endless when ``stop`` is None)."""
        if self.total <= 0:
            raise ValueError("a pass plan over no samples")
        pos = start
        while stop is None or pos < stop:
            pass_no, offset = divmod(pos, self.total)
            seen = 0
            for shard in self.order(pass_no):
                n = self.sizes[shard]
                if offset < seen + n:
                    a = offset - seen
                    b = n if stop is None else min(n, a + stop - pos)
                    yield Piece(shard, a, b, pos)
                    pos += b - a
                    offset += b - a
                    if stop is not None and pos >= stop:
                        return
                seen += n


def worker_share(num_batches: int, num_workers: int, worker: int) -> int:
    """Batches of a rank's epoch that ``worker`` makes (the DataLoader takes them from the workers in turn)."""
    return num_batches // num_workers + (worker < num_batches % num_workers)


def batches_from_worker(batches: int, num_workers: int, worker: int) -> int:
    """How many of a rank's first ``batches`` batches came from ``worker``."""
    return max(0, (batches - worker + num_workers - 1) // num_workers)


def slot_range(cursor: int, *, batch_size: int, num_batches: int, num_workers: int, rank: int, worker: int) -> tuple[int, int]:
    """Cursor positions ``start:stop`` that this slot reads in the epoch whose window starts at ``cursor``."""
    first = sum(worker_share(num_batches, num_workers, w) for w in range(worker))
    start = cursor + (rank * num_batches + first) * batch_size
    return start, start + worker_share(num_batches, num_workers, worker) * batch_size
