"""The streaming dataset behind :class:`~igr.data.datamodule.IGRDataModule`.

Each DataLoader worker of each rank is one *slot* (``rank * num_workers + worker`` of
``world_size * num_workers``). Slots read disjoint data:

* with at least as many shards as slots, shards are dealt to slots (``split_by_node`` then
  ``split_by_worker``, as webdataset does, on a shard order that every slot computes alike);
* with fewer shards, every slot reads all shards and keeps every n-th sample, so two ranks
  never train on the same sample in the same pass.

Training streams are *resampled*: an endless sequence of passes, each over a freshly shuffled
shard order (seeded by seed, epoch and pass, so identical on all slots), with a sample shuffle
buffer per slot. Evaluation streams make one pass in file order, deterministically.

Samples are decoded, validated and augmented inside the workers and batched there
(``DataLoader(batch_size=None)``), so a bad sample costs one skip, never a crash.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from igr.data.schema import SampleError, SkipStats, decode_sample
from igr.data.shards import iter_raw
from igr.data.transforms import PairedAugment

log = logging.getLogger("igr.data")


@dataclass(frozen=True)
class Slot:
    rank: int
    world_size: int
    worker: int
    num_workers: int

    @property
    def index(self) -> int:
        return self.rank * self.num_workers + self.worker

    @property
    def count(self) -> int:
        return self.world_size * self.num_workers


def current_slot(rank: int | None = None, world_size: int | None = None) -> Slot:
    """This process's slot; rank/world size from the arguments, else torch.distributed / env (as webdataset)."""
    if rank is None or world_size is None:
        from webdataset.utils import pytorch_worker_info

        r, w, _, _ = pytorch_worker_info()
        rank, world_size = (r if rank is None else rank), (w if world_size is None else world_size)
    info = get_worker_info()
    worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return Slot(rank, world_size, worker, num_workers)


def _mix(*parts: int) -> int:
    # Deterministic across processes (unlike hash() of tuples of str).
    return int.from_bytes(random.Random(repr(parts)).randbytes(8), "little")


def _batch_tensor(arrays: list[np.ndarray], shared: bool, normalize: bool) -> torch.Tensor:
    """uint8 HxWxC (or HxW) arrays -> float32 (B, C, H, W), in [-1, 1] when ``normalize``.

    Filled in place (no torch.stack copy); in a worker the tensor is allocated in shared memory,
    so handing it to the main process copies nothing. The uint8 transpose before the float
    conversion is ~10x cheaper than permuting the float tensor.
    """
    first = arrays[0]
    h, w = first.shape[:2]
    c = first.shape[2] if first.ndim == 3 else 1
    out = torch.empty((len(arrays), c, h, w), dtype=torch.float32)
    if shared:
        out.share_memory_()
    for i, a in enumerate(arrays):
        chw = a.transpose(2, 0, 1) if a.ndim == 3 else a[None]
        out[i].copy_(torch.from_numpy(np.ascontiguousarray(chw)))
    return out.div_(127.5).sub_(1.0) if normalize else out


def _batch_uint8(arrays: list[np.ndarray]) -> torch.Tensor:
    """uint8 HxWxC (or HxW) arrays -> uint8 (B, C, H, W), a quarter of the float32 bytes."""
    stacked = np.stack([a.transpose(2, 0, 1) if a.ndim == 3 else a[None] for a in arrays])
    return torch.from_numpy(stacked)


def collate(samples: list[dict], shared: bool = False, uint8: bool = False) -> dict:
    """Batch decoded samples (uint8 arrays) into the dict the model consumes.

    ``uint8``: images stay uint8 0..255 and masks uint8 {0, 1}; :func:`to_float_batch` (run on
    the device by the DataModule) turns them into the float32 contract.
    """
    def images(name, normalize):
        arrays = [s[name] for s in samples]
        return _batch_uint8(arrays) if uint8 else _batch_tensor(arrays, shared, normalize)

    batch = {
        "person": images("person", True),  # (B, 3, H, W) float32 in [-1, 1]
        "mask": images("mask", False),  # (B, 1, H, W) float32 in {0, 1}
        "category": [s["category"] for s in samples],
        "key": [s["key"] for s in samples],
    }
    if all("garment" in s for s in samples):
        batch["garment"] = images("garment", True)  # (B, 3, H, W) float32 in [-1, 1]
    return batch


def to_float_batch(batch: dict) -> dict:
    """Turn a ``transfer_uint8`` batch into the float32 contract (a no-op on float batches)."""
    for name in ("person", "garment"):
        t = batch.get(name)
        if t is not None and t.dtype == torch.uint8:
            batch[name] = t.float().div_(127.5).sub_(1.0)
    if batch.get("mask") is not None and batch["mask"].dtype == torch.uint8:
        batch["mask"] = batch["mask"].float()
    return batch


class ShardStream(IterableDataset):
    """Batches from a shard list; see the module docstring for splitting and resampling.

    ``train=True``: endless resampled stream, cut to ``num_batches`` per rank per epoch (so every
    rank runs the same number of steps). ``train=False``: one deterministic pass (optionally
    the first ``max_samples`` samples of the set), partial last batches kept.
    """

    def __init__(
        self,
        urls: list[str],
        *,
        image_size: tuple[int, int],
        batch_size: int,
        train: bool,
        num_batches: int | None = None,
        augment: PairedAugment | None = None,
        load_garment: bool = True,
        mask_threshold: int = 127,
        shuffle_buffer: int = 256,
        max_samples: int | None = None,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        transfer_uint8: bool = False,
    ):
        super().__init__()
        if train and num_batches is None:
            raise ValueError("a training stream needs num_batches (its epoch length)")
        self.transfer_uint8 = transfer_uint8
        self.urls = list(urls)
        self.image_size = tuple(image_size)
        self.batch_size = batch_size
        self.train = train
        self.num_batches = num_batches
        self.augment = augment
        self.load_garment = load_garment
        self.mask_threshold = mask_threshold
        self.shuffle_buffer = shuffle_buffer
        self.max_samples = max_samples
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.resumes = 0  # mid-epoch restarts from a checkpoint (EpochLoader.load_state_dict)
        self.stats = SkipStats()
        self._iterations = 0

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("an evaluation stream has no fixed length")
        return self.num_batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    # ------------------------------------------------------------------ raw sample streams
    def _pass_urls(self, pass_no: int) -> list[str]:
        urls = list(self.urls)
        if self.train:
            random.Random(_mix(self.seed, self.epoch, pass_no, self.resumes)).shuffle(urls)
        return urls

    def _raw_for_slot(self, slot: Slot) -> Iterator[dict]:
        """Raw samples of this slot: endless passes (train) or one pass (eval)."""
        by_shard = len(self.urls) >= slot.count and self.max_samples is None
        passes = itertools.count() if self.train else [0]
        for p in passes:
            urls = self._pass_urls(p)
            if by_shard:
                # split_by_node, then split_by_worker, on the same order everywhere.
                mine = urls[slot.rank::slot.world_size][slot.worker::slot.num_workers]
                stream = iter_raw(mine, self.stats)
            else:
                stream = iter_raw(urls, self.stats)
                if self.max_samples is not None:
                    stream = itertools.islice(stream, self.max_samples)
                stream = itertools.islice(stream, slot.index, None, slot.count)
            n = 0
            for n, raw in enumerate(stream, 1):  # noqa: B007 - n counts the pass
                yield raw
            if self.train and n == 0:
                # An endless stream over nothing would hang the trainer instead of failing.
                raise RuntimeError(f"data slot {slot.index} of {slot.count} (rank {slot.rank}, worker {slot.worker}) "
                                   f"got no samples from {len(urls)} shard(s): fewer samples than ranks x workers, "
                                   "or unreadable shards")

    def _shuffled(self, src: Iterator[dict], rng: random.Random) -> Iterator[dict]:
        if not self.train or self.shuffle_buffer <= 1:
            yield from src
            return
        buf: list[dict] = []
        for s in src:
            if len(buf) < self.shuffle_buffer:
                buf.append(s)
                continue
            i = rng.randrange(len(buf))
            yield buf[i]
            buf[i] = s
        rng.shuffle(buf)
        yield from buf

    # ------------------------------------------------------------------ decoding
    def _decode(self, raw: dict, rng: random.Random) -> dict | None:
        try:
            d = decode_sample(raw, require_garment=self.train and self.load_garment, load_garment=self.load_garment,
                              image_size=self.image_size, threshold=self.mask_threshold)
        except SampleError as err:
            self.stats.skip(err.reason, raw.get("__url__", "?"), raw.get("__key__", "?"), err.detail)
            return None
        if d.n_nonbinary:
            self.stats.nonbinary(d.url, d.key, d.n_nonbinary)
        person, mask, garment = d.person, d.mask, d.garment
        if self.augment is not None:
            params = self.augment.draw(rng, self.image_size)
            person, mask, garment = self.augment.apply(person, mask, garment, params)
        self.stats.good += 1
        out = {"person": np.asarray(person), "mask": mask, "category": d.category, "key": d.key}
        if garment is not None:
            out["garment"] = np.asarray(garment)
        return out

    def _samples(self, slot: Slot, rng: random.Random) -> Iterator[dict]:
        failures_in_a_row = 0
        for raw in self._shuffled(self._raw_for_slot(slot), rng):
            s = self._decode(raw, rng)
            if s is not None:
                failures_in_a_row = 0
                yield s
                continue
            failures_in_a_row += 1
            if self.train and failures_in_a_row >= 2000:
                raise RuntimeError(f"data slot {slot.index}: 2000 samples in a row failed validation "
                                   f"({dict(self.stats.counts)}); check the shards with `igr check-shards`")

    def __iter__(self) -> Iterator[dict]:
        slot = current_slot(self.rank, self.world_size)
        epoch = self.epoch + self._iterations  # persistent workers re-iterate their own copy
        self._iterations += 1
        rng = random.Random(_mix(self.seed, epoch, slot.index, 1, self.resumes))
        shared = get_worker_info() is not None
        saved_epoch, self.epoch = self.epoch, epoch
        try:
            samples = self._samples(slot, rng)
            if self.train:
                # This worker's share of the rank's batches (DataLoader interleaves workers).
                share = self.num_batches // slot.num_workers + (slot.worker < self.num_batches % slot.num_workers)
                for _ in range(share):
                    chunk = list(itertools.islice(samples, self.batch_size))
                    if len(chunk) < self.batch_size:
                        raise RuntimeError(f"training shards yielded no usable samples for worker {slot.worker} "
                                           f"of rank {slot.rank} ({self.stats.total_skipped} skipped)")
                    yield collate(chunk, shared, self.transfer_uint8)
            else:
                while chunk := list(itertools.islice(samples, self.batch_size)):
                    yield collate(chunk, shared, self.transfer_uint8)
        finally:
            self.epoch = saved_epoch
            if self.stats.total_skipped or self.stats.nonbinary_masks:
                log.info("data slot %d/%d: %d good, %s", slot.index, slot.count, self.stats.good,
                         dict(self.stats.counts, nonbinary_masks=self.stats.nonbinary_masks))


def worker_context(method: str):
    """The multiprocessing context DataLoader workers start from (``IGRDataModule.worker_start_method``).

    ``forkserver``: workers fork from a server process that has imported this module (and torch) once and runs no
    threads, so a worker cannot inherit a lock another thread held at the fork; starting one costs a fork and
    unpickling the dataset, not an interpreter. Where a platform lacks it (Windows), ``spawn``."""
    import multiprocessing as mp

    if method == "forkserver" and method not in mp.get_all_start_methods():
        method = "spawn"
    context = mp.get_context(method)
    if method == "forkserver":
        # Imported once, when the server starts: what unpickling a worker's arguments needs (this stream, and
        # Lightning's seeding worker_init_fn, whose import is 2-3 s), so that a worker starts in ~0.1 s.
        context.set_forkserver_preload([__name__, "lightning.fabric.utilities.seed"])
    return context


class EpochLoader(DataLoader):
    """A DataLoader that tells its :class:`ShardStream` the epoch before each iteration.

    Lightning calls ``set_epoch`` only on samplers; an IterableDataset has none, so the epoch is
    taken from ``epoch_fn`` (the trainer's epoch, which survives a resume) or counted here.
    Non-persistent workers receive the dataset, with its epoch, afresh each epoch.

    It is resumable in Lightning's sense (``state_dict`` / ``load_state_dict``): after a restart
    in the middle of an epoch the stream is reseeded with the restart count, so the rest of the
    epoch draws new samples instead of replaying the batches the run had already trained on.
    """

    def __init__(self, dataset: ShardStream, *, epoch_fn=None, **kwargs):
        super().__init__(dataset, batch_size=None, **kwargs)
        self._epoch_fn = epoch_fn
        self._count = 0

    def __iter__(self):
        epoch = self._epoch_fn() if self._epoch_fn is not None else None
        self.dataset.set_epoch(self._count if epoch is None else int(epoch))
        self._count += 1
        return super().__iter__()

    def state_dict(self) -> dict:
        return {"epoch": self.dataset.epoch, "resumes": self.dataset.resumes}

    def load_state_dict(self, state: dict) -> None:
        self.dataset.resumes = int(state.get("resumes", 0)) + 1
