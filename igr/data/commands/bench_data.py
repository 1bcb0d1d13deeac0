"""``igr bench-data``: training-loader throughput (decode + validate + augment + collate).

Without ``--shards`` it generates a small synthetic shard set per size in a temporary folder
(generation time is not measured), then times the training DataLoader for each worker count.
The goal on a 2-core machine is >= 20 samples/s at 1024x768. ``--json PATH`` also writes every row with the
machine it ran on (CPU, cores, load average, library versions), for figures quoted elsewhere (README).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from multiprocessing import get_context

from igr.data.commands.make_shards import parse_size
from igr.data.shards import ShardSetWriter, resolve_shards
from igr.errors import IGRError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", help="benchmark these shards instead of generated synthetic ones")
    parser.add_argument("--sizes", default="1024x768,128x96", help="comma-separated HxW (default: 1024x768,128x96)")
    parser.add_argument("--workers", default="0,1,2", help="comma-separated DataLoader worker counts (default: 0,1,2)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size (default: 8)")
    parser.add_argument("--samples", type=int, default=160, help="samples timed per run (default: 160)")
    parser.add_argument("--num", type=int, default=32, help="synthetic samples generated per size (default: 32)")
    parser.add_argument("--no-augment", action="store_true", help="decode only, no flip/scale/shift")
    parser.add_argument("--uint8", action="store_true",
                        help="also time transfer_uint8 batches (workers send uint8; floats are made on the device)")
    parser.add_argument("--start-method", choices=("forkserver", "fork", "spawn"), default="forkserver",
                        help="how the workers start (default forkserver, as data.worker_start_method in training)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows and the machine to this JSON file")


def _make_one(job):
    from igr.data.synthetic import make_shard_sample

    return make_shard_sample(*job)


def _synthetic_set(root: str, size: tuple[int, int], num: int) -> list[str]:
    from igr.data.synthetic import SyntheticConfig

    out = os.path.join(root, f"{size[0]}x{size[1]}")
    cfg = SyntheticConfig(size=size, defect_fraction=0.0)
    # Four shards, so that two workers split by shard as in real training.
    writer = ShardSetWriter(out, "bench", max_count=max(1, num // 4), source="synthetic", image_size=size)
    with get_context("fork").Pool(max(1, os.cpu_count() or 1)) as pool, writer:
        for sample in pool.imap(_make_one, [(0, "bench", i, cfg) for i in range(num)], chunksize=2):
            writer.write(sample)
    return resolve_shards(out)


def measure(urls: list[str], size: tuple[int, int], workers: int, batch_size: int, samples: int,
            augment: bool = True, transfer_uint8: bool = False, start_method: str = "forkserver") -> dict:
    """Samples/s of the training loader over ``samples`` samples, after one warm-up batch."""
    from igr.data.pipeline import EpochLoader, ShardStream, worker_context
    from igr.data.transforms import PairedAugment

    n_batches = max(2, samples // batch_size) + 1
    stream = ShardStream(urls, image_size=size, batch_size=batch_size, train=True, num_batches=n_batches,
                         augment=PairedAugment() if augment else None, shuffle_buffer=16, rank=0, world_size=1,
                         transfer_uint8=transfer_uint8)
    loader = EpochLoader(stream, num_workers=workers,
                         multiprocessing_context=worker_context(start_method) if workers else None)
    # CPU time (this process + its workers) is measured too: on a shared machine the wall clock depends on everyone
    # else's load, the CPU cost per sample does not. Workers started by a forkserver are not this process's children,
    # so getrusage cannot see them: each worker's own CPU time is read from /proc while it runs (Linux).
    cpu0, kids0 = time.process_time(), _children_cpu()
    it = iter(loader)
    worker_cpu: dict[int, float] = {}
    first = next(it)["person"].shape[0]  # worker start-up and the first decode are not throughput
    t0 = time.perf_counter()
    n = 0
    for batch in it:
        n += batch["person"].shape[0]
        for w in getattr(it, "_workers", ()):  # torch's multi-process iterator keeps its worker processes here
            seconds = _process_cpu(w.pid)
            if seconds is not None:
                worker_cpu[w.pid] = seconds
    dt = time.perf_counter() - t0
    del it  # joins the workers (their CPU time reaches getrusage if they were this process's children)
    cpu = time.process_time() - cpu0
    cpu += sum(worker_cpu.values()) if worker_cpu else _children_cpu() - kids0
    return {"size": f"{size[0]}x{size[1]}", "workers": workers, "samples": n, "seconds": dt, "samples_per_s": n / dt,
            "cpu_ms_per_sample": cpu / (n + first) * 1000, "transfer_uint8": transfer_uint8,
            "start_method": loader.multiprocessing_context.get_start_method() if workers else None}


def _write_json(args, rows: list[dict], best: dict, load: float) -> None:
    import torch

    from igr.bench_json import write_json_record

    write_json_record(args.json, torch.device("cpu"), load, shards=args.shards or "generated synthetic",
                      batch_size=args.batch_size, augment=not args.no_augment, rows=rows, best_samples_per_s=best)


def _process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a live process, from /proc (None where there is no /proc or it has exited)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14 and 15)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(args) -> int:
    # Idle OpenMP threads sleep instead of spinning (set before torch loads): on a busy machine
    # spinning threads of the main process would otherwise steal the workers' CPU.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from rich.console import Console
    from rich.table import Table

    try:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
        worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise IGRError(f"--sizes/--workers: {exc}") from None
    if any(w < 0 for w in worker_counts) or args.batch_size < 1 or args.samples < 1:
        raise IGRError("--workers must be >= 0, --batch-size and --samples >= 1")
    from igr.bench_json import check_json_path

    check_json_path(args.json)
    console = Console(highlight=False, soft_wrap=True, width=max(120, Console().width))
    load_before = os.getloadavg()[0]
    console.print(f"CPU cores: {os.cpu_count()}, batch size {args.batch_size}, "
                  f"{'decode only' if args.no_augment else 'decode + augment'} + collate")
    table = Table("size", "workers", "transfer", "samples", "seconds", "samples/s", "CPU ms/sample",
                  "samples/s per core")
    rows = []
    with tempfile.TemporaryDirectory(prefix="igr-bench-") as tmp:
        for size in sizes:
            if args.shards:
                urls = resolve_shards(args.shards)
            else:
                console.print(f"generating {args.num} synthetic samples at {size[0]}x{size[1]} ...")
                urls = _synthetic_set(tmp, size, args.num)
            for w in worker_counts:
                for u8 in ((False, True) if args.uint8 else (False,)):
                    r = measure(urls, size, w, args.batch_size, args.samples, augment=not args.no_augment,
                                transfer_uint8=u8, start_method=args.start_method)
                    rows.append(r)
                    table.add_row(r["size"], str(w), "uint8" if u8 else "float32", str(r["samples"]),
                                  f"{r['seconds']:.2f}", f"{r['samples_per_s']:.1f}", f"{r['cpu_ms_per_sample']:.1f}",
                                  f"{1000 / r['cpu_ms_per_sample']:.1f}")
    console.print(table)
    best = {}
    for r in rows:
        best[r["size"]] = max(best.get(r["size"], 0.0), r["samples_per_s"])
    if "1024x768" in best:
        verdict = "meets" if best["1024x768"] >= 20 else "misses"
        console.print(f"1024x768: best {best['1024x768']:.1f} samples/s (wall clock), {verdict} the goal of 20 samples/s")
    load = max(load_before, os.getloadavg()[0])
    if args.json:
        _write_json(args, rows, best, load)
    if load > (os.cpu_count() or 1):
        console.print(f"note: load average {load:.1f} on {os.cpu_count()} cores while measuring; the wall-clock "
                      "figures are pessimistic, the CPU cost per sample is not")
    return 0
