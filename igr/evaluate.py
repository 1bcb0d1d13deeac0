"""``igr eval``: restore a test set with one or more pipelines and score it under the pinned protocol.

Paired test (ground-truth garments in the shards): SSIM, LPIPS, DISTS, FID, CLIP-FID, KID×1e3 against the GT.
Unpaired test (``--unpaired-shards`` without garments, e.g. StreetTryOn): FID, CLIP-FID, KID against the garments
of ``--real`` (the VITON-HD test garments in the paper). Every (model, guidance) pair is a row of the paper-layout
table; real-set features are computed once and cached on disk. ``--baseline masked-crop`` adds the no-model row
"masked person crop, resized to the output size", so nobody mistakes learning for quality.

``devices=N`` deals every row's batches over N processes and scores on rank 0 (:mod:`igr.eval_distributed`): the
restored images and metrics.json are those of one process. ``dtype`` sets the precision the pipelines restore in
(the metric networks always run in float32); float32 on CUDA restores with TF32 matmuls.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from igr.errors import IGRError
from igr.eval_distributed import Spread, joined, rank_device, restoring, spawn, torchrun_world
from igr.metrics.config import CLASSIFIER_STEPS

PROTOCOL_SIZE = (1024, 768)
BASELINES = ("masked-crop", "category-mean")
RECONSTRUCTION_ROW = "autoencoder reconstruction of the ground truth"
CEILING_ROW = "ground truth (classifier ceiling)"
BOOTSTRAP_FILE = "bootstrap.json"  # the tiny-world rows' bootstrap values, beside metrics.json
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SUBSETS = ("first", "spread")


def _reconstruct(vae, garment_uint8: torch.Tensor, device: str) -> torch.Tensor:
    """The ground-truth garments through the model's frozen autoencoder: the ceiling it leaves any model behind it."""
    x = garment_uint8.to(device).float() / 127.5 - 1
    return ((vae.decode(vae.encode(x)).float() + 1) / 2).clamp(0, 1)


def _score_tiny(tiny: dict, rows: dict, protocol: dict, resamples: int, seed: int) -> None:
    """Classifier metrics and bootstrap intervals for every paired row, plus the ground-truth ceiling row."""
    from igr.metrics import tiny as tiny_metrics
    from igr.metrics.report import ReportRow

    gt = torch.cat(tiny["gt"])
    labels = {a: torch.tensor(v) for a, v in tiny["labels"].items()}
    clf = tiny["classifier"]
    ceiling = tiny_metrics.score_row(clf, gt, gt, labels)
    scored = {name: tiny_metrics.score_row(clf, torch.cat(p), gt, labels) for name, p in tiny["preds"].items()}
    scored[CEILING_ROW] = ceiling
    draws = {name: tiny_metrics.bootstrap_draws(sc, ceiling.features, resamples=resamples, seed=seed)
             for name, sc in scored.items()}
    reference = next(iter(draws))  # the first row (the first model): every other row is differenced with it
    for name, (point, samples) in draws.items():
        row = rows.setdefault(name, ReportRow(name=name, paired={}))
        paired = dict(row.paired or {})
        paired.update({k: v for k, v in point.items() if k != "ssim" or "ssim" not in paired})
        row.paired = paired
        row.intervals = tiny_metrics.intervals(samples)
        if name not in (reference, CEILING_ROW):
            row.difference = {"versus": reference, **tiny_metrics.paired_difference(draws[reference], draws[name])}
    tiny["draws"] = draws  # written to bootstrap.json: any two rows can be differenced on the same resamples later
    tiny["protocol"] = {
        "num_pairs": int(len(gt)),
        **tiny["source"],
        "bootstrap_resamples": resamples,
        "distance_resamples": min(resamples, tiny_metrics.DISTANCE_RESAMPLES),
        "bootstrap_seed": seed,
    }


def write_bootstrap(path: Path, draws: dict, resamples: int, seed: int) -> Path:
    """Every tiny-world row's point values and its values on each bootstrap resample of the test pairs. All rows
    were resampled with the same draws (one seed), so two of them can be differenced draw by draw
    (:func:`read_bootstrap` + :func:`igr.metrics.tiny.paired_difference`) for any pair, not only against the first
    row as metrics.json's ``difference`` is."""
    payload = {
        "resamples": resamples,
        "seed": seed,
        "rows": {name: {"point": point, "draws": samples} for name, (point, samples) in draws.items()},
    }
    path.write_text(json.dumps(payload) + "\n")
    return path


def read_bootstrap(path: str | Path) -> dict[str, tuple[dict[str, float], dict[str, list[float]]]]:
    """{row: (point values, values per resample)}, as :func:`igr.metrics.tiny.paired_difference` takes them."""
    if not Path(path).is_file():
        raise IGRError(f"{path}: not found (igr eval writes it beside metrics.json when it scores tiny-world metrics)")
    try:
        rows = json.loads(Path(path).read_text())["rows"]
        return {name: (r["point"], r["draws"]) for name, r in rows.items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IGRError(f"{path}: not a bootstrap file written by igr eval ({exc})") from exc


def masked_crop_baseline(person: torch.Tensor, mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """No-model baseline: p·m on white, cropped to the mask's box, padded (white) to the output aspect and
    resized to ``size``. person (B,3,H,W) in [-1,1], mask (B,1,H,W) → (B,3,h,w) in [0,1]."""
    x = (person.clamp(-1, 1) + 1) / 2 * mask + (1 - mask)
    out = []
    th, tw = size
    for img, m in zip(x, mask[:, 0] > 0.5):
        rows, cols = torch.nonzero(m.any(1)).flatten(), torch.nonzero(m.any(0)).flatten()
        if len(rows) == 0:
            out.append(torch.ones(3, th, tw))
            continue
        crop = img[:, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        h, w = crop.shape[1:]
        scale = min(th / h, tw / w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        crop = F.interpolate(crop[None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[
            0
        ]
        canvas = torch.ones(3, th, tw)
        top, left = (th - nh) // 2, (tw - nw) // 2
        canvas[:, top : top + nh, left : left + nw] = crop
        out.append(canvas)
    return torch.stack(out).clamp(0, 1)


def _person_tiles(person: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) uint8 person images in [-1,1] with everything outside the garment mask faded towards white, so a
    grid shows what the model was asked to restore."""
    x = (person.float().clamp(-1, 1) + 1) * 127.5
    m = mask.float().to(x.device)
    return (m * x + (1 - m) * (0.35 * x + 0.65 * 255)).round().to(torch.uint8)


def _to_uint8(x01: torch.Tensor) -> torch.Tensor:
    return (x01.clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def shard_batches(
    shards: str, size: tuple[int, int], batch_size: int, limit: int | None, require_garment: bool,
    subset: str = "first",
):
    """Collated batches (person, mask in [-1,1]/{0,1}, category, key, garment_uint8 when paired) of a shard set:
    with ``limit``, its first ``limit`` samples, or (``subset="spread"``) ``limit`` samples evenly spaced over the
    whole set (sample ⌊i·total/limit⌋ for i < limit, total from the shards' index)."""
    from igr.data.shards import iter_samples

    picked = _spread_positions(shards, limit) if subset == "spread" and limit is not None else None
    buf: list[dict] = []
    n = 0
    for position, s in enumerate(iter_samples(
        shards, image_size=size, require_garment=require_garment, load_garment=require_garment
    )):
        if limit is not None and n >= limit:
            break
        if picked is not None and position not in picked:
            continue
        buf.append(s)
        n += 1
        if len(buf) == batch_size:
            yield _collate(buf)
            buf = []
    if buf:
        yield _collate(buf)


def _collate(samples: list[dict]) -> dict:
    person = (
        torch.from_numpy(np.stack([s["person"] for s in samples])).permute(0, 3, 1, 2).float() / 127.5 - 1
    )
    mask = torch.from_numpy(np.stack([s["mask"] for s in samples])).float()[:, None]
    out = {
        "person": person,
        "mask": mask,
        "category": [s["category"] for s in samples],
        "key": [s["key"] for s in samples],
        "meta": [s.get("meta") for s in samples],
        "url": [s.get("url") for s in samples],
    }
    if all("garment" in s for s in samples):
        out["garment_uint8"] = torch.from_numpy(np.stack([s["garment"] for s in samples])).permute(0, 3, 1, 2)
    return out


def _spread_positions(shards: str, limit: int) -> set[int]:
    """The positions of ``limit`` samples evenly spaced over a shard set of ``num_samples`` (its index)."""
    from igr.data.shards import find_index, resolve_shards

    index = find_index(resolve_shards(shards))
    total = index.get("num_samples") if index else None
    if not total:
        raise IGRError(f"{shards}: --subset spread needs the shard set's index with num_samples "
                       "(igr make-shards writes it); use --subset first")
    return {i * total // limit for i in range(min(limit, total))}


def _count(shards: str, limit: int | None) -> int | None:
    from igr.data.shards import find_index, resolve_shards

    index = find_index(resolve_shards(shards))
    total = index.get("num_samples") if index else None
    if total is None:
        return limit
    return min(total, limit) if limit else total


def _restore_batch(model, sampling, b: dict, *, seed: int, steps, guidance, sampler, device: str) -> torch.Tensor:
    """One batch of restorations, uint8 (B,3,H,W); noise per image from its key, so a row is the same wherever and
    in whatever batches it is sampled (igr.sampling.image_generators)."""
    from igr.sampling import image_generators

    with restoring(device, next(model.denoiser.parameters()).dtype):
        pred = model.restore(
            b["person"].to(device),
            b["mask"].to(device),
            b["category"],
            num_inference_steps=steps or sampling.steps,
            guidance_scale=sampling.guidance_scale if guidance is None else guidance,
            generator=image_generators(seed, b["key"]),
            sampler=sampler or sampling.sampler,
        )
    return _to_uint8(pred)


_PROGRESS = None  # a worker's queue of (row index, samples done), set by _worker_init


def _worker_init(progress_queue, threads: int) -> None:
    global _PROGRESS
    _PROGRESS = progress_queue
    # The caller's torch thread count, not the one the environment gives a fresh interpreter: kernels split over
    # another number of threads round differently, and the row would not match the same row restored in-process.
    torch.set_num_threads(threads)


def _sample_row(index: int, path: str, guidance, shards: str, size, batch_size: int, limit, paired: bool,
                kwargs: dict, dtype: str = "fp32", subset: str = "first"):
    """A worker process's row: load the pipeline, restore every test pair; (predictions per batch, seconds)."""
    from igr.export import load_pipeline

    model, sampling = load_pipeline(path, dtype=DTYPES[dtype])
    start, preds = time.perf_counter(), []
    for b in shard_batches(shards, size, batch_size, limit, paired, subset):
        preds.append(_restore_batch(model, sampling, b, guidance=guidance, **kwargs))
        _PROGRESS.put((index, len(b["key"])))
    return preds, time.perf_counter() - start


def _sample_in_workers(rows: list[tuple[str, str, float | None]], jobs: int, columns, **kw) -> dict[str, tuple]:
    """Restore the test set with each (row name, pipeline folder, guidance) in ``jobs`` CPU processes (the
    caller's thread settings), one progress bar per row; {row name: (predictions per batch, seconds)}. Every
    prediction is held in memory until scored: meant for small models and test sets (the tiny world)."""
    import multiprocessing as mp
    import queue
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
    progress_queue = ctx.Queue()
    total = _count(kw["shards"], kw["limit"])
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init,
                             initargs=(progress_queue, torch.get_num_threads())) as pool, \
            Progress(*columns) as progress:
        tasks = [progress.add_task(f"{name} (worker)", total=total) for name, _, _ in rows]
        futures = [pool.submit(_sample_row, i, path, g, **kw) for i, (_, path, g) in enumerate(rows)]
        while True:
            try:  # the last counts may arrive just after their row's result
                i, n = progress_queue.get(timeout=0.2 if not all(f.done() for f in futures) else 0.5)
                progress.advance(tasks[i], n)
            except queue.Empty:
                if all(f.done() for f in futures):
                    break
        return {name: f.result() for (name, _, _), f in zip(rows, futures)}


def evaluate(
    models: list[tuple[str, str]],
    shards: str | None,
    out: str | Path,
    guidance: list[float] | None = None,
    steps: int | None = None,
    sampler: str | None = None,
    metrics_config: str | None = None,
    unpaired_shards: str | None = None,
    real: str | None = None,
    baseline: bool = False,
    baselines: Sequence[str] = (),
    train_shards: str | None = None,
    reconstruction: bool = False,
    bootstrap_resamples: int = 200,
    classifier_steps: int = CLASSIFIER_STEPS,
    classifier: str | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    device: str = "auto",
    workers: int = 1,
    grid_images: int = 8,
    overwrite: bool = False,
    dtype: str = "fp32",
    devices: int = 1,
    subset: str = "first",
) -> dict | None:
    """Restore and score; the report's paths, timings and rows. ``device`` ``auto`` is CUDA when there is one.
    ``devices`` > 1 spawns that many processes on this node (``cuda:0``… or the CPU); under torchrun (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` set) the processes are torchrun's, on one node or several, and
    every rank but 0 returns None."""
    kwargs = {k: v for k, v in locals().items() if k not in ("devices", "baseline")}
    kwargs["baselines"] = list(dict.fromkeys([*(["masked-crop"] if baseline else []), *baselines]))
    kwargs["device"] = device = _eval_device(device, workers)
    launched = torchrun_world()
    if launched is not None:
        rank, world, local_rank = launched
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        if devices not in (1, local_world):
            raise IGRError(f"--devices {devices}: under torchrun the processes are torchrun's "
                           f"({local_world} on this node): leave --devices out")
        _check_arguments(**kwargs, devices=world, rank=rank)
        kwargs["device"] = rank_device(device, local_rank, world)
        with joined(rank, world, "env://") as spread:
            return _evaluate(**kwargs, spread=spread)
    _check_arguments(**kwargs, devices=devices, rank=0)
    if devices > 1:
        _check_files(**kwargs)
        return spawn(devices, _evaluate, kwargs)
    return _evaluate(**kwargs)


def _eval_device(device: str, workers: int) -> str:
    """``auto`` → ``cuda`` when CUDA is available (and no ``--jobs``: its workers are CPU processes), else ``cpu``;
    a named device that is not there is one line."""
    from igr.devices import resolve_device

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() and workers == 1 else "cpu"
    return str(resolve_device(device))


def _check_arguments(*, models, shards, out, unpaired_shards, real, baselines, train_shards, reconstruction,
                     classifier, workers, device, dtype, devices, subset, limit, overwrite, rank, **_) -> None:
    """Every refusal that needs no file read, before any process is started or any model loaded."""
    if rank == 0:  # only rank 0 writes the report
        out = Path(out)
        if out.exists() and any(out.iterdir()) and not overwrite:
            raise IGRError(f"{out}: already exists and is not empty (pass --overwrite to replace its reports)")
    if not shards and not unpaired_shards:
        raise IGRError("give --shards (paired test) and/or --unpaired-shards with --real")
    if unpaired_shards and not real:
        raise IGRError("--unpaired-shards needs --real (the garment set to compare against)")
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise IGRError(f"--baseline {unknown[0]}: not one of {', '.join(BASELINES)}")
    if "category-mean" in baselines and not train_shards:
        raise IGRError("--baseline category-mean needs --train-shards (the training garments to average)")
    if (train_shards or classifier or reconstruction) and not shards:
        raise IGRError("--train-shards / --classifier / --reconstruction score the paired test: give --shards")
    if workers < 1:
        raise IGRError(f"--jobs {workers}: must be ≥ 1")
    if workers > 1 and device != "cpu":
        raise IGRError(f"--jobs {workers} restores in CPU processes; with --device {device} use --jobs 1")
    if devices < 1:
        raise IGRError(f"--devices {devices}: must be ≥ 1")
    if workers > 1 and devices > 1:
        raise IGRError(f"--jobs {workers} (a row per CPU process) and --devices {devices} (every row's batches "
                       "over processes) do not combine: give one")
    if devices > 1 and device.startswith("cuda"):
        if device != "cuda":
            raise IGRError(f"--device {device}: with --devices {devices} give cuda (rank r takes cuda:r)")
        if "WORLD_SIZE" not in os.environ and devices > torch.cuda.device_count():
            raise IGRError(f"--devices {devices}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dtype not in DTYPES:
        raise IGRError(f"--dtype {dtype}: not one of {', '.join(DTYPES)}")
    if dtype == "fp16" and not device.startswith("cuda"):
        raise IGRError(f"--dtype fp16 needs a CUDA device (on {device} use bf16 or fp32)")
    if subset not in SUBSETS:
        raise IGRError(f"--subset {subset}: not one of {', '.join(SUBSETS)}")
    if subset == "spread" and limit is None:
        raise IGRError("--subset spread picks --limit N samples over the whole set: give --limit")
    if limit is not None and limit < 1:
        raise IGRError(f"--limit {limit}: must be ≥ 1")
    if reconstruction and not models:
        raise IGRError("--reconstruction needs a --model (its autoencoder reconstructs the ground truth)")


def _check_files(*, models, shards, unpaired_shards, real, train_shards, classifier, metrics_config, **_) -> None:
    """The inputs named on the command line are there, before processes are started (a rank failing later stops
    the others, which then print a line of their own)."""
    from igr.data.shards import resolve_shards
    from igr.metrics import MetricsConfig

    MetricsConfig.load(metrics_config)
    for spec in (shards, unpaired_shards, real, train_shards):
        if spec:
            resolve_shards(spec)
    for _, folder in models:
        from igr.export import is_pipeline_folder

        if not is_pipeline_folder(folder):
            raise IGRError(f"{folder}: not a pipeline folder (no model_index.json; create one with `igr export`)")
    if classifier and not Path(classifier).is_file():
        raise IGRError(f"{classifier}: tiny-world classifier not found")


def _evaluate(
    models: list[tuple[str, str]],
    shards: str | None,
    out: str | Path,
    guidance: list[float] | None = None,
    steps: int | None = None,
    sampler: str | None = None,
    metrics_config: str | None = None,
    unpaired_shards: str | None = None,
    real: str | None = None,
    baselines: Sequence[str] = (),
    train_shards: str | None = None,
    reconstruction: bool = False,
    bootstrap_resamples: int = 200,
    classifier_steps: int = CLASSIFIER_STEPS,
    classifier: str | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    device: str = "cpu",
    workers: int = 1,
    grid_images: int = 8,
    overwrite: bool = False,
    dtype: str = "fp32",
    subset: str = "first",
    spread: Spread | None = None,
) -> dict | None:
    """:func:`evaluate` in this process, as rank ``spread.rank`` of ``spread.world`` (arguments checked)."""
    from igr.export import load_pipeline
    from igr.metrics import MetricsConfig, MetricSuite
    from igr.metrics.report import ReportRow, save_labelled_grid, write_report

    out = Path(out)
    spread = spread or Spread()
    if device.startswith("cuda:"):  # this rank's card is the current one: nothing of it lands on cuda:0
        torch.cuda.set_device(device)
    loaded = []
    for name, path in models:
        model, sampling = load_pipeline(path, dtype=DTYPES[dtype])
        loaded.append((name, model.to(device), sampling))
    sizes = {tuple(m.config.resolution) for _, m, _ in loaded}
    if len(sizes) > 1:
        raise IGRError(f"models have different resolutions {sorted(sizes)}; evaluate them separately")
    size = sizes.pop() if sizes else PROTOCOL_SIZE
    guidance = guidance or [None]
    sample_kw = {"seed": seed, "steps": steps, "sampler": sampler, "device": device}
    tests = [(t, paired) for t, paired in ((shards, True), (unpaired_shards, False)) if t]
    if spread.rank != 0:  # restore this rank's batches of every model row, in rank 0's order of rows
        for test_shards, paired in tests:
            for _, model, sampling in loaded:
                for g in guidance:
                    for i, b in enumerate(shard_batches(test_shards, size, batch_size, limit, paired, subset)):
                        if spread.mine(i):
                            spread.send(_restore_batch(model, sampling, b, guidance=g, **sample_kw))
        spread.flush()
        return None
    base_cfg = MetricsConfig.load(metrics_config)
    mcfg = replace(base_cfg, resolution=list(size))
    if mcfg.cache_dir is None:
        mcfg = replace(mcfg, cache_dir=str(out.parent / ".feature_cache"))
    notes: list[str] = []  # the metrics protocol itself flags a resolution other than 1024×768
    if dtype != "fp32" and models:
        notes.append(f"models restored in {DTYPES[dtype]} (weights and sampling); metrics computed in float32")
    backbones: dict = {}
    rows: dict[str, ReportRow] = {}
    protocols: dict[str, dict] = {}
    timings: dict[str, float] = {}
    grid_rows: dict[str, list[torch.Tensor]] = {}  # the first grid_images test samples of every paired row
    grid_person: list[torch.Tensor] = []
    grid_gt: list[torch.Tensor] = []
    tiny = None  # tiny-world classifier metrics (kind/colour/pattern accuracy, fd_tiny, kd_tiny), docs/design.md §7
    if train_shards or classifier:
        from igr.metrics import tiny as tiny_metrics

        train_set = None
        if train_shards and (classifier is None or "category-mean" in baselines):
            train_set = tiny_metrics.load_garments(train_shards, size)
        if classifier:
            clf, info = tiny_metrics.load_classifier(classifier)
            if tuple(info.get("size") or ()) != tuple(size):
                raise IGRError(f"{classifier}: the classifier was trained on {info.get('size')} garments; this "
                               f"evaluation scores {list(size)} (train one at that size with igr train-classifier)")
            source = {"classifier_file": str(classifier), "num_train_garments": info.get("num_train"),
                      "classifier_steps": info.get("steps")}
        else:
            clf = tiny_metrics.train_classifier(train_set, steps=classifier_steps, seed=seed)
            source = {"num_train_garments": len(train_set.images), "classifier_steps": classifier_steps}
        tiny = {
            "classifier": clf,
            "means": None if train_set is None else tiny_metrics.category_mean_garments(train_set),
            "source": source,
            "preds": {},
            "gt": [],
            "labels": {a: [] for a in tiny_metrics.ATTRIBUTES},
        }

    def run_test(label: str, test_shards: str, paired: bool, real_id: str) -> None:
        total = _count(test_shards, limit)
        jobs: list[tuple[str, object, float | None]] = [
            (name, (m, s), g) for name, m, s in loaded for g in guidance
        ]
        if paired:
            if "masked-crop" in baselines:
                jobs.append(("masked-crop baseline", None, None))
            if "category-mean" in baselines:
                means = tiny["means"]
                jobs.append(("category-mean baseline",
                             lambda b: tiny_metrics.category_mean_baseline(means, b["category"]).float() / 255, None))
            if reconstruction:
                vae = loaded[0][1].vae
                jobs.append((RECONSTRUCTION_ROW, lambda b: _reconstruct(vae, b["garment_uint8"], device), None))
        columns = [
            TextColumn(f"eval {label}: {{task.description}}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ]

        def row_label(row_name: str, g: float | None) -> str:
            return f"{row_name} (s={g:g})" if g is not None and len(guidance) > 1 else row_name

        sampled: dict[str, tuple] = {}  # row → (predictions per batch, seconds), restored by worker processes
        if workers > 1:
            paths = dict(models)
            rows_to_sample = [(row_label(n, g), paths[n], g) for n, spec, g in jobs if isinstance(spec, tuple)]
            sampled = _sample_in_workers(rows_to_sample, workers, columns, shards=test_shards, size=size,
                                         batch_size=batch_size, limit=limit, paired=paired, kwargs=sample_kw,
                                         dtype=dtype, subset=subset)
        for j, (row_name, spec, g) in enumerate(jobs):
            name = row_label(row_name, g)
            ready = iter(sampled[name][0]) if name in sampled else None
            suite = MetricSuite(
                mcfg, real="gt" if paired else "separate", real_id=real_id, device=device, backbones=backbones
            )
            backbones.update(suite.backbones)
            if not paired and not suite.real_is_cached():
                for b in shard_batches(real, size, batch_size, None, True):
                    suite.update_real(b["garment_uint8"])
            start = time.perf_counter()
            with Progress(*columns) as progress:
                task = progress.add_task(name, total=total)
                for i, b in enumerate(shard_batches(test_shards, size, batch_size, limit, paired, subset)):
                    if spec is None:
                        pred8 = _to_uint8(masked_crop_baseline(b["person"], b["mask"], size))
                    elif callable(spec):
                        pred8 = _to_uint8(spec(b))
                    elif ready is not None:
                        pred8 = next(ready)
                    elif not spread.mine(i):  # restored by another rank
                        pred8 = spread.recv(i, (len(b["key"]), 3, *size))
                    else:
                        pred8 = _restore_batch(*spec, b, guidance=g, **sample_kw)
                    suite.update(pred8, b.get("garment_uint8") if paired else None, keys=b["key"])
                    if tiny is not None and paired:
                        tiny["preds"].setdefault(name, []).append(pred8)
                        if j == 0:
                            tiny["gt"].append(b["garment_uint8"])
                            for meta, url, key in zip(b["meta"], b["url"], b["key"]):
                                labels = tiny_metrics.labels_from_meta(meta, f"{url}: {key}")
                                for a, v in labels.items():
                                    tiny["labels"][a].append(v)
                    tiles = grid_rows.setdefault(name, []) if paired else []
                    if paired and len(tiles) < grid_images:  # every row sees the batches in the same order
                        k = grid_images - len(tiles)
                        tiles.extend(pred8[:k])
                        if j == 0:
                            grid_gt.extend(b["garment_uint8"][:k])
                            grid_person.extend(_person_tiles(b["person"][:k], b["mask"][:k]))
                    progress.advance(task, len(b["key"]))
            timings[f"{label}: {name}"] = time.perf_counter() - start + (sampled[name][1] if name in sampled else 0)
            if suite.num_samples() == 0:
                raise IGRError(f"{test_shards}: no usable samples to evaluate")
            values = suite.compute()
            suite.save_real_cache()
            row = rows.setdefault(name, ReportRow(name=name))
            if paired:
                row.paired = values
            else:
                row.unpaired = values
            protocols[label] = suite.protocol()

    if shards:
        run_test("paired", shards, True, real_id=f"gt:{shards}")
        if tiny is not None:
            _score_tiny(tiny, rows, protocols["paired"], bootstrap_resamples, seed)
    if unpaired_shards:
        run_test("unpaired", unpaired_shards, False, real_id=f"real:{real}")
    out.mkdir(parents=True, exist_ok=True)
    grid = None
    if grid_rows:
        grid_spec = [("person (mask)", grid_person), *grid_rows.items(), ("ground truth", grid_gt)]
        grid = save_labelled_grid(out / "samples.png", grid_spec, height=128)
    paths = write_report(
        out,
        list(rows.values()),
        protocols,
        tiny_protocol=tiny["protocol"] if tiny else None,
        title="IGR evaluation",
        sample_grid=grid,
        paper_tables=("table1", "table3") if len(guidance) > 1 else ("table1",),
        notes=notes,
    )
    (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    if tiny is not None and "draws" in tiny:
        paths["bootstrap"] = write_bootstrap(out / BOOTSTRAP_FILE, tiny["draws"], bootstrap_resamples, seed)
    else:  # an overwritten folder must not keep an earlier evaluation's rows
        (out / BOOTSTRAP_FILE).unlink(missing_ok=True)
    return {
        "paths": {k: str(v) for k, v in paths.items()},
        "timings": timings,
        "rows": {n: {"paired": r.paired, "unpaired": r.unpaired} for n, r in rows.items()},
    }
