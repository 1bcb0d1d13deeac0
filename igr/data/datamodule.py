"""``IGRDataModule``: WebDataset shards in, dict batches out (docs/design.md §1, §4, §6)."""

from __future__ import annotations

import warnings

import lightning as L

from igr.data.dealing import index_sizes
from igr.data.pipeline import EpochLoader, ShardStream, to_float_batch, worker_context
from igr.data.shards import resolve_shards
from igr.data.transforms import PairedAugment
from igr.errors import IGRError

# ShardStream gives each worker its exact share of the epoch's samples, so its __len__ is exact;
# Lightning's generic caution about IterableDataset lengths does not apply.
warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined", category=UserWarning)


class IGRDataModule(L.LightningDataModule):
    """Streams person / mask / garment / category samples from WebDataset shards.

    Batches are dicts: ``person`` float32 (B, 3, H, W) in [-1, 1], ``mask`` float32 (B, 1, H, W)
    in {0, 1}, ``garment`` float32 (B, 3, H, W) in [-1, 1] (absent for unpaired sets),
    ``category`` list of ``"upper" | "lower" | "full"``, ``key`` list of sample keys.

    Args:
        train_shards: training shards: a brace pattern (``shards/synth/train-{000000..000003}.tar``),
            a directory (all its ``*.tar``), a ``{split}.json`` index, or a URL webdataset opens
            (``pipe:aws s3 cp s3://b/train-{000000..000099}.tar -``, ``https://...``); several
            joined by ``::``. Local paths are checked at ``setup``: a missing shard fails then.
        val_shards: validation shards, same forms; one deterministic pass per validation.
        test_shards: test shards (also used for ``predict``).
        image_size: (H, W) of the batches; samples of another size are resized keeping their
            aspect ratio and padded, never stretched.
        batch_size: samples per batch per device.
        num_workers: DataLoader worker processes per device.
        worker_start_method: how those workers start: ``forkserver`` (default) forks each from a
            single-threaded server process that has imported the data pipeline once; ``fork`` forks the
            training process itself, which holds threads (DDP's, the progress bar's) and, non-persistent
            workers being started every epoch, now and then forks while one of them holds an interpreter
            lock: the worker hangs before it starts and the run waits for ever (seen on Python 3.11 with
            two DDP ranks); ``spawn`` starts a fresh interpreter per worker (slow: imports torch each epoch).
            As with spawn, a script of yours that iterates a loader needs the ``if __name__ == "__main__":``
            guard (a worker imports the script's main module); ``igr fit`` and notebooks need nothing.
        train_samples_per_epoch: samples per training epoch over all devices (the training
            stream is endless: this only sets how often validation and checkpoints happen).
        augment: paired augmentation for training (flip; scale and shift of person + mask).
        hflip_p: probability of a horizontal flip (person, mask and garment together); 0 by
            default, as in the paper: a flip mirrors logos and text into the targets.
        scale_range: (min, max) zoom of person and mask.
        shift_frac: maximum shift of person and mask, as a fraction of H and of W.
        mask_threshold: grey masks are binarised at ``value > mask_threshold`` (and counted).
        val_samples: use only the first N validation samples (None: all).
        val_batch_size: batch size for validation / test (None: ``batch_size``).
        shuffle_buffer: samples held per worker for shuffling the training stream.
        val_paired: validation shards carry garments (False: ``garment`` is not loaded).
        test_paired: test shards carry garments (False for unpaired sets such as StreetTryOn).
        seed: seed of the shard order (per pass over the training set), the shuffle buffer (per epoch, rank
            and worker) and augmentation (per sample read). Each pass reads every training sample once, dealt to
            ranks and workers (``igr.data.dealing``); a resumed fit continues the pass where it stopped. Shard
            sizes come from the ``{split}.json`` index (local shards without one: their tar headers).
        pin_memory: pin batches in page-locked memory (faster host-to-GPU copies).
        transfer_uint8: workers send uint8 images (a quarter of the bytes) and the float32
            conversion happens after the batch reaches the device (``on_after_batch_transfer``).
            The model sees the same float32 batches; iterating a DataLoader by hand yields
            uint8 ones (convert with ``igr.data.pipeline.to_float_batch``).
    """

    def __init__(
        self,
        train_shards: str | None = None,
        val_shards: str | None = None,
        test_shards: str | None = None,
        image_size: tuple[int, int] = (1024, 768),
        batch_size: int = 8,
        num_workers: int = 4,
        worker_start_method: str = "forkserver",
        train_samples_per_epoch: int = 10_000,
        augment: bool = True,
        hflip_p: float = 0.0,
        scale_range: tuple[float, float] = (0.9, 1.1),
        shift_frac: float = 0.05,
        mask_threshold: int = 127,
        val_samples: int | None = None,
        val_batch_size: int | None = None,
        shuffle_buffer: int = 256,
        val_paired: bool = True,
        test_paired: bool = True,
        seed: int = 0,
        pin_memory: bool = False,
        transfer_uint8: bool = False,
    ):
        super().__init__()
        if len(image_size) != 2 or min(image_size) < 8:
            raise IGRError(f"image_size={image_size}: expected (H, W), each at least 8")
        for key, value, low in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0),
                                ("train_samples_per_epoch", train_samples_per_epoch, 1),
                                ("val_batch_size", val_batch_size, 1)):
            if value is not None and value < low:
                raise IGRError(f"data.{key}: {value} must be >= {low}")
        if worker_start_method not in ("forkserver", "fork", "spawn"):
            raise IGRError(f"data.worker_start_method: '{worker_start_method}' is not forkserver, fork or spawn")
        if not (0.0 <= hflip_p <= 1.0) or scale_range[0] > scale_range[1] or scale_range[0] <= 0 or shift_frac < 0:
            raise IGRError(f"bad augmentation settings: hflip_p={hflip_p}, scale_range={scale_range}, shift_frac={shift_frac}")
        self.save_hyperparameters()
        self.train_shards, self.val_shards, self.test_shards = train_shards, val_shards, test_shards
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.batch_size, self.num_workers = batch_size, num_workers
        self.worker_start_method = worker_start_method
        self.train_samples_per_epoch = train_samples_per_epoch
        self.augment = PairedAugment(hflip_p, tuple(scale_range), shift_frac) if augment else None
        self.mask_threshold = mask_threshold
        self.val_samples, self.val_batch_size = val_samples, val_batch_size or batch_size
        self.shuffle_buffer, self.seed, self.pin_memory = shuffle_buffer, seed, pin_memory
        self.val_paired, self.test_paired = val_paired, test_paired
        self.transfer_uint8 = transfer_uint8
        self._urls: dict[str, list[str]] = {}

    # ------------------------------------------------------------------ setup
    def _rank_world(self) -> tuple[int | None, int | None]:
        trainer = self.trainer
        if trainer is None:
            return None, None  # resolved per process from torch.distributed / RANK, WORLD_SIZE
        return trainer.global_rank, trainer.world_size

    def _resolve(self, name: str, spec: str | None) -> list[str]:
        if spec is None:
            raise IGRError(f"data.{name}_shards is not set; give a shard pattern, directory or index")
        if name not in self._urls:
            try:
                self._urls[name] = resolve_shards(spec)
            except IGRError as exc:
                raise IGRError(f"data.{name}_shards: {exc}") from None
        return self._urls[name]

    def setup(self, stage: str | None = None) -> None:
        """Resolve the shard sets the stage needs, so a wrong path fails before any training."""
        if stage in ("fit", None):
            self._resolve("train", self.train_shards)
            if self.val_shards is not None:
                self._resolve("val", self.val_shards)
        if stage == "validate":
            self._resolve("val", self.val_shards)
        if stage in ("test", "predict"):
            self._resolve("test", self.test_shards)

    # ------------------------------------------------------------------ loaders
    def _loader(self, stream: ShardStream, epoch_fn=None, progress_fn=None) -> EpochLoader:
        context = worker_context(self.worker_start_method) if self.num_workers else None
        return EpochLoader(stream, num_workers=self.num_workers, pin_memory=self.pin_memory,
                           persistent_workers=False, epoch_fn=epoch_fn, progress_fn=progress_fn,
                           multiprocessing_context=context)

    def _epoch(self):
        trainer = self.trainer
        return trainer.current_epoch if trainer is not None else None

    def _batches_trained(self) -> int:
        # this epoch's training batches, as the trainer counts them (and restores them on a resume)
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def train_dataloader(self) -> EpochLoader:
        rank, world = self._rank_world()
        per_rank = self.train_samples_per_epoch // max(world or 1, 1)
        stream = ShardStream(
            self._resolve("train", self.train_shards), image_size=self.image_size, batch_size=self.batch_size,
            train=True, num_batches=max(1, per_rank // self.batch_size), augment=self.augment,
            mask_threshold=self.mask_threshold, shuffle_buffer=self.shuffle_buffer, seed=self.seed,
            rank=rank, world_size=world, transfer_uint8=self.transfer_uint8,
            known_sizes=index_sizes(self.train_shards.split("::")))
        if self.trainer is None:
            return self._loader(stream)
        return self._loader(stream, epoch_fn=self._epoch, progress_fn=self._batches_trained)

    def _eval_loader(self, name: str, spec: str | None, paired: bool, max_samples: int | None) -> EpochLoader:
        rank, world = self._rank_world()
        stream = ShardStream(
            self._resolve(name, spec), image_size=self.image_size, batch_size=self.val_batch_size, train=False,
            load_garment=paired, mask_threshold=self.mask_threshold, max_samples=max_samples, seed=self.seed,
            rank=rank, world_size=world, transfer_uint8=self.transfer_uint8)
        return self._loader(stream)

    def val_dataloader(self) -> EpochLoader | list:
        if self.val_shards is None:
            return []
        return self._eval_loader("val", self.val_shards, self.val_paired, self.val_samples)

    def test_dataloader(self) -> EpochLoader:
        return self._eval_loader("test", self.test_shards, self.test_paired, None)

    def predict_dataloader(self) -> EpochLoader:
        return self.test_dataloader()

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        # transfer_uint8 batches become float32 here, on the device (a no-op for float batches).
        return to_float_batch(batch)
