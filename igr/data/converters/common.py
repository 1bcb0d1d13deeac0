"""What every converter shares: one item → one validated, resized, encoded shard sample."""

from __future__ import annotations

import io
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

import numpy as np
from PIL import Image

from igr import imageio
from igr.data.schema import CATEGORIES
from igr.data.shards import ShardSetWriter, encode_sample
from igr.data.transforms import binarize_mask, resize_pad, resize_pad_mask
from igr.errors import IGRError

# Converter skip reasons (printed in the summary and stored in the index).
MISSING_FILE = "missing_file"
UNDECODABLE = "undecodable"
SIZE_MISMATCH = "size_mismatch"
EMPTY_MASK = "empty_mask"
UNKNOWN_CATEGORY = "unknown_category"
DUPLICATE_KEY = "duplicate_key"
TEST_DUPLICATE = "test_duplicate"


@dataclass
class Item:
    """One sample to convert, described by file paths (picklable, for worker processes)."""

    key: str
    category: str
    person: str
    mask: str
    garment: str | None = None
    # "binary": a 0/255 (or grey) mask; "labels": a parsing map whose pixels in mask_labels are garment
    mask_kind: str = "binary"
    mask_labels: tuple[int, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Skip:
    key: str
    reason: str
    detail: str


def sanitize_key(text: str) -> str:
    """A webdataset-safe key: no dots (they separate the extension), no path separators."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _decode(data: bytes, what: str, path: str) -> Image.Image:
    try:
        return imageio.decode(data, what, path)  # EXIF orientation applied, bomb limit, one-line reason
    except IGRError as exc:
        raise _SkipError(UNDECODABLE, str(exc)) from None


class _SkipError(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _jpeg(img: Image.Image, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    # Small images keep full chroma (thin coloured patterns); large ones use the usual 4:2:0.
    img.save(buf, format="JPEG", quality=95, subsampling=0 if size[0] <= 512 else 2)
    return buf.getvalue()


def _image_bytes(data: bytes, img: Image.Image, size: tuple[int, int]) -> bytes:
    if _is_plain_jpeg(data) and img.mode == "RGB" and (img.size[1], img.size[0]) == tuple(size):
        return data  # already right: keep the original bytes, no second JPEG generation loss
    rgb = imageio.to_rgb(img)  # alpha on white, 16-bit scaled, CMYK/palette/grey converted
    return _jpeg(resize_pad(rgb, size, fill="auto"), size)


def _is_plain_jpeg(data: bytes) -> bool:
    """A JPEG whose stored pixels are its displayed pixels (no EXIF rotation for a reader to forget)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.format == "JPEG" and img.getexif().get(0x0112, 1) == 1
    except Exception:
        return False


def _load_mask(item: Item, person_hw: tuple[int, int]) -> np.ndarray:
    """The garment mask as uint8 {0,1} at the person's size."""
    if not os.path.isfile(item.mask):
        raise _SkipError(MISSING_FILE, f"mask {item.mask} not found")
    img = _decode(_read(item.mask), "mask", item.mask)
    if item.mask_kind == "labels":
        if img.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
            raise _SkipError(UNDECODABLE, f"label map {item.mask} is {img.mode}, expected a palette or grey label image")
        if (img.size[1], img.size[0]) != person_hw:
            img = _match_size(img, person_hw, item.mask, Image.Resampling.NEAREST)
        m = np.isin(np.asarray(img), item.mask_labels).astype(np.uint8)
    else:
        grey = Image.fromarray(imageio.to_grey(img), "L")  # 16-bit masks scaled, not clipped to white
        if (grey.size[1], grey.size[0]) != person_hw:
            grey = _match_size(grey, person_hw, item.mask, Image.Resampling.BILINEAR)
        m, _ = binarize_mask(np.asarray(grey))
    return m


def _match_size(img: Image.Image, hw: tuple[int, int], path: str, resample) -> Image.Image:
    """Rescale an annotation stored at another resolution of the same framing; refuse other shapes."""
    h, w = img.size[1], img.size[0]
    if abs(h / w - hw[0] / hw[1]) > 0.01 * hw[0] / hw[1]:
        raise _SkipError(SIZE_MISMATCH, f"mask {path} is {h}x{w}, person is {hw[0]}x{hw[1]}")
    return img.resize((hw[1], hw[0]), resample)


def process_item(args: tuple[Item, tuple[int, int], bool]) -> dict | Skip:
    """Validate, resize (keep aspect, pad) and encode one item; a :class:`Skip` says why not."""
    item, size, paired = args
    try:
        if item.category not in CATEGORIES:
            raise _SkipError(UNKNOWN_CATEGORY, f"category {item.category!r}")
        for what, path in (("person", item.person), ("garment", item.garment if paired else None)):
            if path is not None and not os.path.isfile(path):
                raise _SkipError(MISSING_FILE, f"{what} {path} not found")
        if paired and item.garment is None:
            raise _SkipError(MISSING_FILE, "no garment image")
        p_data = _read(item.person)
        person = _decode(p_data, "person", item.person)
        hw = (person.size[1], person.size[0])
        mask = _load_mask(item, hw)
        if not mask.any():
            raise _SkipError(EMPTY_MASK, f"mask {item.mask} has no garment pixels")
        garment_bytes = None
        if paired:
            g_data = _read(item.garment)
            garment = _decode(g_data, "garment", item.garment)
            garment_bytes = _image_bytes(g_data, garment, size)
        person_bytes = _image_bytes(p_data, person, size)
        mask_small = resize_pad_mask(mask, size)
        if not mask_small.any():
            raise _SkipError(EMPTY_MASK, f"mask {item.mask} vanishes at {size[0]}x{size[1]}")
        buf = io.BytesIO()
        Image.fromarray(mask_small * 255).save(buf, format="PNG")
        return encode_sample(item.key, person_bytes, buf.getvalue(), item.category, garment_bytes, item.meta)
    except _SkipError as s:
        return Skip(item.key, s.reason, s.detail)
    except OSError as exc:
        return Skip(item.key, UNDECODABLE, f"{type(exc).__name__}: {exc}")


@dataclass
class ConvertReport:
    written: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add_skip(self, s: Skip) -> None:
        self.skipped[s.reason] += 1
        ex = self.examples.setdefault(s.reason, [])
        if len(ex) < 3:
            ex.append(f"{s.key}: {s.detail}")


def run_conversion(
    items: Sequence[Item] | Iterable[Item],
    writer: ShardSetWriter,
    size: tuple[int, int],
    *,
    paired: bool = True,
    workers: int = 1,
    total: int | None = None,
    description: str = "converting",
    pre_skipped: Iterable[Skip] = (),
    extra_index: dict | None = None,
) -> tuple[ConvertReport, dict]:
    """Process ``items`` (in order, optionally in ``workers`` processes) into ``writer``; returns (report, index)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    report = ConvertReport()
    for s in pre_skipped:
        report.add_skip(s)
    seen: set[str] = set()
    jobs = ((it, tuple(size), paired) for it in items)
    pool = get_context("fork").Pool(workers) if workers > 1 else None
    results = pool.imap(process_item, jobs, chunksize=4) if pool else map(process_item, jobs)
    try:
        with writer, Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeRemainingColumn(), transient=True) as progress:
            task = progress.add_task(description, total=total)
            for res in results:
                progress.advance(task)
                if isinstance(res, Skip):
                    report.add_skip(res)
                    continue
                if res["__key__"] in seen:
                    report.add_skip(Skip(res["__key__"], DUPLICATE_KEY, "key already written"))
                    continue
                seen.add(res["__key__"])
                writer.write(res)
                report.written += 1
            index = writer.close(skipped=dict(report.skipped), extra=extra_index)
    finally:
        if pool is not None:
            pool.terminate()
    return report, index


def print_summary(report: ConvertReport, index: dict, out_dir: str, console=None) -> None:
    from rich.console import Console

    console = console or Console(highlight=False, soft_wrap=True)
    cats = ", ".join(f"{k} {v}" for k, v in index["categories"].items())
    console.print(f"wrote {report.written} samples ({cats}) in {len(index['shards'])} shard(s) to {out_dir} "
                  f"(index {index['split']}.json)")
    if report.skipped:
        console.print(f"skipped {sum(report.skipped.values())}:")
        for reason, n in sorted(report.skipped.items()):
            console.print(f"  {reason}: {n}")
            for ex in report.examples.get(reason, []):
                console.print(f"    e.g. {ex}", highlight=False)
    else:
        console.print("skipped 0")
