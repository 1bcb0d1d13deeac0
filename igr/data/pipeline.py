"""The streaming dataset behind :class:`~igr.data.datamodule.IGRDataModule`.

Each DataLoader worker of each rank is one *slot* (``rank * num_workers + worker`` of
``world_size * num_workers``). Slots read disjoint data:

* training: the set is an endless sequence of passes (a shard order per pass, seeded by seed and
  pass, identical on all slots); each epoch deals the next window of it to the slots in
  contiguous ranges (:mod:`igr.data.dealing`), so every sample is read once per pass whatever the
  number of shards, ranks, workers, epochs and resumes. Each slot shuffles its range in a buffer.
* evaluation: one pass in file order, deterministically: with at least as many shards as slots,
  shards are dealt to slots (``split_by_node`` then ``split_by_worker``, as webdataset does);
  with fewer, every slot reads all shards and keeps every n-th sample.

Samples are decoded, validated and augmented inside the workers and batched there (the
DataLoader's ``batch_size`` and :func:`collate_samples`), so a bad sample costs one skip, never a
crash.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from igr.data.dealing import (
    PassPlan,
    batches_from_worker,
    mix,
    read_shard_from,
    shard_sizes,
    slot_range,
    worker_share,
)
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


def collate_samples(samples: list[dict], uint8: bool = False) -> dict:
    """The DataLoader's ``collate_fn``: :func:`collate`, into shared memory when run in a worker."""
    return collate(samples, get_worker_info() is not None, uint8)


class ShardStream(IterableDataset):
    """Decoded samples from a shard list; see the module docstring for splitting and dealing.

    ``train=True``: this slot's part of the epoch's window of the endless pass sequence
    (:mod:`igr.data.dealing`), shuffled in a buffer, exactly its worker's share of ``num_batches``
    batches of ``batch_size`` samples (so every rank runs the same number of steps). ``train=False``:
    one deterministic pass (optionally the first ``max_samples`` samples of the set). The
    DataLoader (:class:`EpochLoader`) batches the samples in its workers; :meth:`batches` does it in
    this process.
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
        known_sizes: dict[str, int] | None = None,
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
        # Where this epoch's window starts in the pass sequence and how many of the rank's batches of it were
        # trained before a resume; set by EpochLoader each epoch (None: a fresh run's, from the epoch number).
        self.cursor: int | None = None
        self.skip_batches = 0
        self.known_sizes = dict(known_sizes or {})
        self.sizes: list[int] | None = None  # samples per shard (training), counted once by prepare()
        self.stats = SkipStats()

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("an evaluation stream has no fixed length")
        return self.num_batches * self.batch_size  # samples: the DataLoader makes num_batches batches of them

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def prepare(self) -> PassPlan:
        """The pass plan; the shard sizes are counted on the first call (before workers start, they inherit them)."""
        if self.sizes is None:
            self.sizes = shard_sizes(self.urls, self.known_sizes, self.stats)
        return PassPlan(self.sizes, self.seed)

    def window(self, world_size: int) -> int:
        """Samples of one epoch over all ranks: the cursor advances by this much per epoch."""
        return world_size * self.num_batches * self.batch_size

    def batches(self) -> Iterator[dict]:
        """Batches of this stream made in this process (a DataLoader makes them in its workers instead)."""
        samples = iter(self)
        while chunk := list(itertools.islice(samples, self.batch_size)):
            yield collate(chunk, False, self.transfer_uint8)

    # ------------------------------------------------------------------ raw sample streams
    def _read(self, plan: PassPlan, start: int, stop: int | None) -> Iterator[dict]:
        """Raw samples at cursor positions ``start:stop`` (endless when ``stop`` is None), tagged with ``__pos__``."""
        for piece in plan.pieces(start, stop):
            shard = read_shard_from(self.urls[piece.shard], piece.start, self.stats)
            for i, raw in enumerate(itertools.islice(shard, piece.stop - piece.start)):
                raw["__pos__"] = piece.position + i
                yield raw

    def _eval_raw(self, slot: Slot) -> Iterator[dict]:
        """One pass in file order: whole shards dealt to slots, or every n-th sample with fewer shards than slots."""
        if len(self.urls) >= slot.count and self.max_samples is None:
            # split_by_node, then split_by_worker, on the same order everywhere.
            yield from iter_raw(self.urls[slot.rank::slot.world_size][slot.worker::slot.num_workers], self.stats)
            return
        stream = iter_raw(self.urls, self.stats)
        if self.max_samples is not None:
            stream = itertools.islice(stream, self.max_samples)
        yield from itertools.islice(stream, slot.index, None, slot.count)

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
            if "__pos__" in raw:
                # Drawn from the sample's place in the pass sequence: the same whatever slot reads it, and after a resume.
                rng = random.Random(mix(self.seed, "augment", raw["__pos__"]))
            params = self.augment.draw(rng, self.image_size)
            person, mask, garment = self.augment.apply(person, mask, garment, params)
        self.stats.good += 1
        out = {"person": np.asarray(person), "mask": mask, "category": d.category, "key": d.key}
        if garment is not None:
            out["garment"] = np.asarray(garment)
        return out

    def _decoded(self, raws: Iterator[dict], slot: Slot, rng: random.Random) -> Iterator[dict]:
        failures_in_a_row = 0
        for raw in raws:
            s = self._decode(raw, rng)
            if s is not None:
                failures_in_a_row = 0
                yield s
                continue
            failures_in_a_row += 1
            if self.train and failures_in_a_row >= 2000:
                raise RuntimeError(f"data slot {slot.index}: 2000 samples in a row failed validation "
                                   f"({dict(self.stats.counts)}); check the shards with `igr check-shards`")

    def _train_samples(self, slot: Slot, rng: random.Random) -> Iterator[dict]:
        plan = self.prepare()
        if plan.total == 0:
            # An endless stream over nothing would hang the trainer instead of failing.
            raise RuntimeError(f"data slot {slot.index} of {slot.count} (rank {slot.rank}, worker {slot.worker}) got "
                               f"no samples from {len(self.urls)} shard(s): they are empty or unreadable "
                               f"({dict(self.stats.counts)})")
        cursor = self.cursor if self.cursor is not None else self.epoch * self.window(slot.world_size)
        start, stop = slot_range(cursor, batch_size=self.batch_size, num_batches=self.num_batches,
                                 num_workers=slot.num_workers, rank=slot.rank, worker=slot.worker)
        share = worker_share(self.num_batches, slot.num_workers, slot.worker)
        done = min(share, batches_from_worker(self.skip_batches, slot.num_workers, slot.worker))
        need = (share - done) * self.batch_size
        if need == 0:
            return
        mine = self._shuffled(self._read(plan, start, stop), rng)
        # Trained before the resume (the same draw: same range, same shuffle): read again, not decoded. A sample that
        # failed validation among them shifts this by one.
        for _ in itertools.islice(mine, done * self.batch_size):
            pass
        # Past the range only to replace samples that failed validation (those few are read twice this pass).
        raws = itertools.chain(mine, self._read(plan, stop, None))
        for n, sample in enumerate(self._decoded(raws, slot, rng), 1):
            yield sample
            if n == need:
                return

    def __iter__(self) -> Iterator[dict]:
        slot = current_slot(self.rank, self.world_size)
        rng = random.Random(mix(self.seed, self.epoch, slot.index, 1))
        try:
            if self.train:
                yield from self._train_samples(slot, rng)
            else:
                yield from self._decoded(self._eval_raw(slot), slot, rng)
        finally:
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
    """The DataLoader of a :class:`ShardStream`: batches of ``stream.batch_size`` made in the workers.

    A batched DataLoader (``batch_size`` set, so ``batch_sampler.batch_size`` is the per-device batch), as
    Lightning's DeepSpeed strategy and other tools expect of a training loader.

    Before each iteration it tells the stream its epoch and, for training, where the epoch's window starts in the
    pass sequence (:mod:`igr.data.dealing`). Lightning calls ``set_epoch`` only on samplers; an IterableDataset
    has none, so the epoch is taken from ``epoch_fn`` (the trainer's epoch, which survives a resume) or counted
    here. Non-persistent workers receive the stream, with its epoch and position, afresh each epoch.

    It is resumable in Lightning's sense (``state_dict`` / ``load_state_dict``, saved in every checkpoint): the
    state is the epoch's window and the batches of it already trained (``progress_fn``: the trainer's count;
    else the batches this loader handed out), so a resumed run reads the rest of the epoch and goes on through
    the passes where it stopped. On another layout (ranks, workers, batch size, epoch length) the rest of the
    interrupted epoch's window is dealt afresh.
    """

    def __init__(self, dataset: ShardStream, *, epoch_fn=None, progress_fn=None, **kwargs):
        kwargs.setdefault("batch_size", dataset.batch_size)
        kwargs.setdefault("collate_fn", functools.partial(collate_samples, uint8=dataset.transfer_uint8))
        if dataset.train and kwargs.get("persistent_workers"):
            raise ValueError("a training ShardStream takes its position afresh each epoch: "
                             "persistent workers would keep reading the first epoch's")
        super().__init__(dataset, **kwargs)
        self._epoch_fn, self._progress_fn = epoch_fn, progress_fn
        self._count = 0
        self._epoch: int | None = None
        self._cursor, self._skip = 0, 0
        # (epoch, cursor where its window starts, window length, its batches trained before a resume)
        self._anchor: tuple[int, int, int, int] | None = None
        self._live = None

    def _layout(self) -> dict:
        ds = self.dataset
        return {"world_size": current_slot(ds.rank, ds.world_size).world_size, "num_workers": max(1, self.num_workers),
                "batch_size": ds.batch_size, "num_batches": ds.num_batches}

    @staticmethod
    def _window(layout: dict) -> int:
        return layout["world_size"] * layout["num_batches"] * layout["batch_size"]

    def _position(self, epoch: int, layout: dict) -> tuple[int, int]:
        """(cursor where ``epoch``'s window starts, the rank's batches of it already trained)."""
        window = self._window(layout)
        if self._anchor is None:
            self._anchor = (0, 0, window, 0)
        a_epoch, a_cursor, a_window, a_skip = self._anchor
        if epoch == a_epoch:
            return a_cursor, a_skip
        if epoch > a_epoch:
            return a_cursor + a_window + (epoch - a_epoch - 1) * window, 0
        return epoch * window, 0

    def _current_epoch(self) -> int:
        epoch = self._epoch_fn() if self._epoch_fn is not None else None
        return self._count if epoch is None else int(epoch)

    def __iter__(self):
        epoch = self._current_epoch()
        self._count += 1
        ds = self.dataset
        ds.set_epoch(epoch)
        if ds.train:
            ds.prepare()  # shard sizes counted once, here, not in every worker
            self._cursor, self._skip = self._position(epoch, self._layout())
            ds.cursor, ds.skip_batches = self._cursor, self._skip
        self._epoch = epoch
        self._live = super().__iter__()
        return self._live

    def state_dict(self) -> dict:
        ds = self.dataset
        if not ds.train:
            return {"epoch": ds.epoch}
        layout = self._layout()
        if self._epoch is None:  # not iterated yet
            epoch = self._current_epoch()
            cursor, skip = self._position(epoch, layout)
            batches = skip
        else:
            epoch, cursor = self._epoch, self._cursor
            batches = self._skip + (self._live._num_yielded if self._live is not None else 0)
        if self._progress_fn is not None:
            batches = self._progress_fn()  # the DataLoader runs ahead of training (prefetching)
        return {"version": 2, "epoch": int(epoch), "cursor": int(cursor), "batches": int(batches), **layout}

    def load_state_dict(self, state: dict) -> None:
        if "cursor" not in state:
            return  # an older checkpoint's state: epochs are placed from their number, as in a fresh run
        layout = self._layout()
        old = {key: state.get(key) for key in layout}
        epoch, cursor, batches = int(state["epoch"]), int(state["cursor"]), int(state["batches"])
        if old == layout:
            self._anchor = (epoch, cursor, self._window(layout), batches)
        elif batches >= old["num_batches"]:
            self._anchor = (epoch, cursor + self._window(old), 0, 0)  # that epoch is over: the next starts there
        else:
            # The slots' half-read ranges of another layout cannot be continued: the rest of the window is dealt
            # afresh (each sample of the interrupted epoch is then read once more or once less this pass).
            consumed = batches * old["batch_size"] * old["world_size"]
            self._anchor = (epoch, cursor + consumed, self._window(layout), 0)
