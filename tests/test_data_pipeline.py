"""The DataModule and its stream: batch contract, rank x worker splitting, determinism, Lightning."""

import os

import lightning as L
import pytest
import torch
from data_helpers import H, W, good_sample, write_keyed, write_synthetic, write_tar

from igr.data import IGRDataModule
from igr.data.pipeline import EpochLoader, ShardStream, to_float_batch
from igr.errors import IGRError


def _keys_by_worker(urls, rank, world, *, batches, shuffle_buffer=0, workers=2, train=True):
    stream = ShardStream(urls, image_size=(H, W), batch_size=2, train=train, num_batches=batches if train else None,
                         shuffle_buffer=shuffle_buffer, rank=rank, world_size=world)
    loader = EpochLoader(stream, num_workers=workers)
    out = [[] for _ in range(workers)]
    for i, batch in enumerate(loader):
        out[i % workers].extend(batch["key"])  # the DataLoader takes batches from workers in turn
    return out


@pytest.mark.parametrize("n_shards,per_shard", [(8, 3), (1, 24)], ids=["by-shard", "by-sample"])
def test_two_ranks_two_workers_see_disjoint_samples(tmp_path, n_shards, per_shard):
    urls = write_keyed(str(tmp_path / "d"), n_shards, per_shard)
    # One pass: 24 samples over 4 slots -> 6 samples = 3 batches per worker, 6 batches per rank.
    seen = [_keys_by_worker(urls, rank, 2, batches=6) for rank in (0, 1)]
    slots = [set(keys) for per_rank in seen for keys in per_rank]
    assert all(len(s) == 6 for s in slots)
    for i in range(4):
        for j in range(i + 1, 4):
            assert not slots[i] & slots[j], (i, j)
    assert set().union(*slots) == {f"k{s}_{i}" for s in range(n_shards) for i in range(per_shard)}


def test_eval_stream_is_split_and_deterministic(tmp_path):
    urls = write_keyed(str(tmp_path / "d"), 3, 5)
    runs = [[_keys_by_worker(urls, rank, 2, batches=None, train=False) for rank in (0, 1)] for _ in range(2)]
    assert runs[0] == runs[1]
    keys = [k for per_rank in runs[0] for per_worker in per_rank for k in per_worker]
    assert sorted(keys) == sorted(f"k{s}_{i}" for s in range(3) for i in range(5))  # each sample exactly once


def test_rank_from_environment(tmp_path, monkeypatch):
    urls = write_keyed(str(tmp_path / "d"), 4, 2)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    stream = ShardStream(urls, image_size=(H, W), batch_size=2, train=False)
    keys = [k for b in stream.batches() for k in b["key"]]
    assert keys == ["k1_0", "k1_1", "k3_0", "k3_1"]


def test_training_order_changes_with_the_epoch_and_is_reproducible(tmp_path):
    urls = write_keyed(str(tmp_path / "d"), 4, 4)

    def epoch_keys(epoch, buffer=8):
        s = ShardStream(urls, image_size=(H, W), batch_size=4, train=True, num_batches=4, shuffle_buffer=buffer,
                        rank=0, world_size=1, seed=7)
        s.set_epoch(epoch)
        return [k for b in s.batches() for k in b["key"]]

    assert epoch_keys(0) == epoch_keys(0)
    assert epoch_keys(0) != epoch_keys(1)
    # Without a shuffle buffer, 16 samples are exactly one pass over the (reordered) shards.
    one_pass = epoch_keys(1, buffer=0)
    assert sorted(one_pass) == sorted(f"k{s}_{i}" for s in range(4) for i in range(4))
    assert one_pass != epoch_keys(0, buffer=0)


def test_datamodule_batches_follow_the_contract(tmp_path):
    write_synthetic(str(tmp_path / "train"), 12, size=(96, 72))
    write_tar(str(tmp_path / "test-000000.tar"), [good_sample(f"u{i}", garment=False) for i in range(5)])
    dm = IGRDataModule(train_shards=str(tmp_path / "train"), val_shards=str(tmp_path / "train" / "train.json"),
                       test_shards=str(tmp_path / "test-000000.tar"), image_size=(H, W), batch_size=4,
                       num_workers=0, train_samples_per_epoch=8, val_samples=6, test_paired=False)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == len(dm.train_dataloader()) == 2
    b = batches[0]
    assert set(b) == {"person", "mask", "garment", "category", "key"}
    assert b["person"].shape == (4, 3, H, W) and b["person"].dtype == torch.float32  # resized from 96x72
    assert b["garment"].shape == (4, 3, H, W) and b["mask"].shape == (4, 1, H, W)
    assert -1 <= b["person"].min() and b["person"].max() <= 1 and b["person"].min() < -0.5
    assert set(b["mask"].unique().tolist()) == {0.0, 1.0}
    assert all(c in ("upper", "lower", "full") for c in b["category"]) and len(b["key"]) == 4
    val = [k for b in dm.val_dataloader() for k in b["key"]]
    assert val == [k for b in dm.val_dataloader() for k in b["key"]] and len(val) == 6
    dm.setup("test")
    t = next(iter(dm.test_dataloader()))
    assert "garment" not in t and t["person"].shape == (4, 3, H, W)


def test_uint8_transfer_gives_the_same_batches_after_conversion(tmp_path):
    write_synthetic(str(tmp_path / "s"), 4, size=(H, W))
    common = dict(image_size=(H, W), batch_size=4, train=False, rank=0, world_size=1)
    f = next(ShardStream([str(tmp_path / "s" / "train-000000.tar")], **common).batches())
    u = next(ShardStream([str(tmp_path / "s" / "train-000000.tar")], transfer_uint8=True, **common).batches())
    assert u["person"].dtype == torch.uint8 and u["mask"].dtype == torch.uint8
    u = IGRDataModule(transfer_uint8=True).on_after_batch_transfer(u, 0)
    for name in ("person", "mask", "garment"):
        # bit-equal: both paths run .float().div_(127.5).sub_(1.0) on the same uint8 values
        assert u[name].dtype == torch.float32 and torch.equal(u[name], f[name])
    assert to_float_batch(f) is f


def test_missing_shards_fail_at_setup(tmp_path):
    dm = IGRDataModule(train_shards=str(tmp_path / "nope" / "train-{000000..000003}.tar"), num_workers=0)
    with pytest.raises(IGRError, match="data.train_shards: .*train-000000.tar: shard not found"):
        dm.setup("fit")
    with pytest.raises(IGRError, match="data.test_shards is not set"):
        IGRDataModule().setup("test")
    with pytest.raises(IGRError, match="image_size"):
        IGRDataModule(image_size=(4, 4))


class _Probe(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.keys = []

    def training_step(self, batch, _):
        assert batch["person"].dtype == torch.float32 and batch["mask"].shape[1] == 1
        self.keys += batch["key"]
        return ((self.w - batch["garment"].mean()) ** 2).sum()

    def validation_step(self, batch, _):
        self.keys += batch["key"]

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("transfer_uint8", [False, True])
def test_lightning_fit_with_workers(tmp_path, transfer_uint8):
    write_synthetic(str(tmp_path / "s"), 16, per_shard=4)
    dm = IGRDataModule(train_shards=str(tmp_path / "s"), val_shards=str(tmp_path / "s" / "train-000000.tar"),
                       image_size=(H, W), batch_size=2, num_workers=2, train_samples_per_epoch=8,
                       transfer_uint8=transfer_uint8)
    probe = _Probe()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        default_root_dir=str(tmp_path))
    trainer.fit(probe, dm)
    assert trainer.global_step == 4 and len(probe.keys) == 8 + 4
    assert os.path.isdir(tmp_path / "s")


def test_a_resumed_loader_continues_where_it_stopped(tmp_path):
    """Was: a resumed loader drew a fresh order (reseeded by a restart count), so the interrupted epoch's unread samples
    were never read in that pass. Now the loader's state places the rest of the epoch exactly."""
    urls = write_keyed(str(tmp_path / "d"), 2, 8)

    def loader():
        return EpochLoader(ShardStream(urls, image_size=(H, W), batch_size=4, train=True, num_batches=3,
                                       shuffle_buffer=4, rank=0, world_size=1), epoch_fn=lambda: 3)

    first = loader()
    keys = [k for b in first for k in b["key"]]
    assert keys == [k for b in loader() for k in b["key"]]  # reproducible per epoch
    interrupted = iter(first)
    next(interrupted)
    state = first.state_dict()
    assert state == {"version": 2, "epoch": 3, "cursor": 36, "batches": 1, "world_size": 1, "num_workers": 1,
                     "batch_size": 4, "num_batches": 3}
    resumed = loader()
    resumed.load_state_dict(state)
    assert [k for b in resumed for k in b["key"]] == keys[4:]


def test_workers_start_from_a_forkserver_and_read_what_forked_ones_read(tmp_path):
    """Workers are started every epoch; forked from the training process (threads: DDP's, the progress bar's)
    one now and then hangs before it starts. Catches a loader back on the fork start method, and a dataset that
    does not survive the trip to a forkserver worker (it is pickled there, not inherited)."""
    write_synthetic(str(tmp_path / "s"), 16, per_shard=4)

    def keys(method):
        dm = IGRDataModule(train_shards=str(tmp_path / "s"), val_shards=str(tmp_path / "s"), image_size=(H, W),
                           batch_size=2, num_workers=2, train_samples_per_epoch=8, worker_start_method=method)
        dm.setup("fit")
        loaders = dm.train_dataloader(), dm.val_dataloader()
        assert {loader.multiprocessing_context.get_start_method() for loader in loaders} == {method}
        return [[k for batch in loader for k in batch["key"]] for loader in loaders]

    served = keys("forkserver")
    assert served == keys("fork") and len(served[0]) == 8 and len(served[1]) == 16
    with pytest.raises(IGRError, match="data.worker_start_method: 'threads'"):
        IGRDataModule(train_shards=str(tmp_path / "s"), worker_start_method="threads")


def test_the_forkserver_preloads_what_a_lightning_worker_unpickles():
    """A forkserver worker unpickles its arguments: the stream and Lightning's seeding worker_init_fn. Catches a
    preload list without the latter's module, which every worker then imported (Lightning: 2-3 s per worker,
    every epoch and every validation; a 200-step demo fit took 133 s instead of 112)."""
    import multiprocessing.forkserver as forkserver

    from lightning.fabric.utilities.seed import pl_worker_init_function

    from igr.data.pipeline import worker_context

    worker_context("forkserver")
    preload = forkserver._forkserver._preload_modules
    assert {"igr.data.pipeline", pl_worker_init_function.__module__} <= set(preload)


def test_bench_data_writes_its_rows_and_machine_to_json(tmp_path, capsys):
    """Catches: `igr bench-data --json` (where the README's data-loading figures come from) not writing a row per
    size × workers with its throughput, or writing into a folder that does not exist instead of one error line."""
    import json

    from igr.cli import main

    out = tmp_path / "data.json"
    argv = ["bench-data", "--sizes", "64x48", "--workers", "1,0", "--samples", "32", "--num", "8", "--batch-size", "4"]
    assert main([*argv, "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert [(row["size"], row["workers"]) for row in r["rows"]] == [("64x48", 1), ("64x48", 0)]
    assert all(row["samples"] >= 28 and row["samples_per_s"] > 0 for row in r["rows"])
    assert [row["start_method"] for row in r["rows"]] == ["forkserver", None]  # as training starts its workers
    # the worker's decoding is counted although a forkserver's workers are not this process's children (uncounted,
    # the row was 0.05-0.06 of the in-process one here; counted, 0.3-0.4: the in-process row also pays the stream's
    # per-epoch setup on this tiny set)
    in_worker, in_process = (row["cpu_ms_per_sample"] for row in r["rows"])
    assert in_worker > 0.15 * in_process, (in_worker, in_process)
    assert r["best_samples_per_s"]["64x48"] == max(row["samples_per_s"] for row in r["rows"])
    assert r["cpu_count"] >= 1 and r["machine"] and r["versions"]["torch"]
    capsys.readouterr()
    assert main([*argv, "--json", str(tmp_path / "missing" / "data.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --json ") and "missing does not exist" in err[0], err
    assert not (tmp_path / "missing").exists()


def test_bench_data_reads_another_process_cpu_time():
    """Catches: a /proc reading that takes the wrong fields or clock ticks (the worker rows of igr bench-data)."""
    import subprocess
    import sys

    from igr.data.commands.bench_data import _process_cpu

    # the child says when it has burnt 0.5 s of CPU, however busy the machine (a fixed wait was not enough)
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.process_time()\n"
                              "while time.process_time() - t < 0.5: pass\nprint('burnt', flush=True)\n"
                              "time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "burnt"
        seconds = _process_cpu(child.pid)
    finally:
        child.kill()
        child.wait()
    assert seconds is not None and 0.45 < seconds < 1.5, seconds
    assert _process_cpu(child.pid) is None  # gone
