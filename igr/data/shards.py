"""Finding, writing and reading WebDataset shard sets.

A shard set is a directory of ``{split}-%06d.tar`` files plus a ``{split}.json`` index (sample
counts per category and per shard). Readers accept a brace pattern, a directory, an index JSON,
or any URL webdataset opens (``pipe:``, ``http(s)://``...).
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import re
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import braceexpand
import numpy as np

from igr.atomic import AtomicFile, atomic_file
from igr.data.schema import (
    CATEGORIES,
    GARMENT,
    UNREADABLE_SHARD,
    SampleError,
    SkipStats,
    decode_sample,
    loads_capped,
    unsafe_key,
)
from igr.errors import IGRError

INDEX_FORMAT = "igr-shards/1"
SHARD_NAME = "{split}-{index:06d}.tar"
_REMOTE = re.compile(r"^(pipe|https?|s3|gs|gcs|ais|hf|sftp|ftp):", re.IGNORECASE)
_GLOB_CHARS = re.compile(r"[*?\[]")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # anything webdataset's gopen could treat as a URL or command
MAX_INDEX_BYTES = 64 << 20
ALLOW_OUTSIDE_ENV = "IGR_ALLOW_OUTSIDE_INDEX"


# --------------------------------------------------------------------------- resolving


def is_remote(url: str) -> bool:
    return bool(_REMOTE.match(url))


def outside_index_allowed(allow: bool | None = None) -> bool:
    """Whether index entries may name shards outside the index's folder: ``allow`` when given (a command's
    ``--allow-outside-index``), else the environment variable ``IGR_ALLOW_OUTSIDE_INDEX=1`` (for ``igr fit`` and
    ``igr eval``)."""
    return allow if allow is not None else os.environ.get(ALLOW_OUTSIDE_ENV, "") == "1"


def resolve_shards(spec: str | Sequence[str], *, allow_outside_index: bool | None = None) -> list[str]:
    """Expand a shard specification into a list of shard URLs, checking local ones exist.

    ``spec``: a brace pattern (``shards/train-{000000..000003}.tar``), a glob, a directory (all
    its ``*.tar``), a ``{split}.json`` index, a remote URL (``pipe:...``, ``http://...``: passed
    through unchecked), several of these joined by ``::``, or a list of them. Raises
    :class:`IGRError` naming the path when something local is missing or nothing matches.

    A remote URL is taken only from ``spec`` (what the user typed or configured), never from an index: an index
    names files inside its own folder (:func:`index_shards`).
    """
    if not isinstance(spec, str):
        urls = [u for s in spec for u in resolve_shards(s, allow_outside_index=allow_outside_index)]
        if not urls:
            raise IGRError("empty shard list")
        return urls
    spec = spec.strip()
    if not spec:
        raise IGRError("empty shard specification")
    if "::" in spec:
        return resolve_shards(spec.split("::"), allow_outside_index=allow_outside_index)
    if is_remote(spec):
        return list(braceexpand.braceexpand(spec))
    if spec.startswith("file:"):
        spec = spec[len("file:"):]
    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        found = sorted(p for p in glob.glob(os.path.join(path, "*.tar")) if not os.path.basename(p).startswith("."))
        if not found:
            raise IGRError(f"{spec}: directory holds no .tar shards")
        splits = sorted(splits_in(found))
        if len(splits) > 1:
            # Silently mixing train and test shards would leak test data into training.
            raise IGRError(f"{spec}: holds several splits ({', '.join(splits)}); name one, "
                           f"e.g. {os.path.join(spec, splits[0] + '.json')}")
        return found
    if path.endswith(".json"):
        return index_shards(path, allow_outside_index=allow_outside_index)
    urls: list[str] = []
    for p in braceexpand.braceexpand(path):
        if _GLOB_CHARS.search(p):
            urls.extend(sorted(glob.glob(p)))
        elif os.path.isfile(p):
            urls.append(p)
        else:
            raise IGRError(f"{p}: shard not found" + (f" (from pattern {spec})" if p != path else ""))
    if not urls:
        raise IGRError(f"{spec}: matches no shards")
    return urls


def splits_in(paths: Sequence[str]) -> set[str]:
    """Split names of shards named ``{split}-NNNNNN.tar`` (other names count as one unnamed split)."""
    return {m.group(1) if (m := re.match(r"^(.*)-\d{6}\.tar$", os.path.basename(p))) else "" for p in paths}


def split_shards(directory: str, split: str, *, allow_outside_index: bool | None = None) -> list[str]:
    """The shards of one split in a shard-set folder: its ``{split}.json`` index, else ``{split}-*.tar``."""
    index = os.path.join(directory, f"{split}.json")
    if os.path.isfile(index):
        return index_shards(index, allow_outside_index=allow_outside_index)
    found = sorted(glob.glob(os.path.join(glob.escape(directory), f"{glob.escape(split)}-[0-9][0-9][0-9][0-9][0-9][0-9].tar")))
    if not found:
        raise IGRError(f"{directory}: no '{split}' shards ({split}.json or {split}-NNNNNN.tar)")
    return found


def index_shards(path: str, *, allow_outside_index: bool | None = None) -> list[str]:
    """The shard files an index lists. An index is data, maybe downloaded: each entry names a file inside the
    index's folder (symlinks resolved). A URL or ``pipe:`` command (webdataset would run it) is refused; an
    absolute path or one leaving the folder is refused unless allowed (:func:`outside_index_allowed`)."""
    index = read_index(path)
    base = os.path.dirname(path)
    root = os.path.realpath(base or ".")
    outside_ok = outside_index_allowed(allow_outside_index)
    urls = []
    for i, entry in enumerate(index["shards"]):
        name = entry.get("name") if isinstance(entry, dict) else entry
        if not isinstance(name, str) or not name:
            raise IGRError(f"{path}: shard entry {i} has no 'name' (a file name beside the index)")
        if _SCHEME.match(name):
            raise IGRError(f"{path}: shard entry {i} ({name[:60]!r}) is a URL or command; an index names files "
                           "beside it (give URLs and pipe: on the command line or in your config)")
        p = os.path.join(base, name)
        if not outside_ok:
            real = os.path.realpath(p)
            if os.path.isabs(name) or os.path.commonpath([root, real]) != root:
                raise IGRError(f"{path}: shard entry {i} ({name[:200]!r}) is outside the index's folder; "
                               f"pass --allow-outside-index (or set {ALLOW_OUTSIDE_ENV}=1) if you trust this index")
        if not os.path.isfile(p):
            raise IGRError(f"{p}: shard listed in {path} not found")
        urls.append(p)
    if not urls:
        raise IGRError(f"{path}: index lists no shards")
    return urls


def read_index(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_INDEX_BYTES + 1)
        index = loads_capped(data, max_bytes=MAX_INDEX_BYTES)
    except FileNotFoundError:
        raise IGRError(f"{path}: index not found") from None
    except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError, too big or too deep
        raise IGRError(f"{path}: not a readable JSON index ({exc})") from None
    if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
        raise IGRError(f"{path}: not a shard index (no 'shards' list)")
    return index


def find_index(urls: Sequence[str]) -> dict | None:
    """The ``{split}.json`` index next to local shards named ``{split}-NNNNNN.tar``, if any."""
    if not urls or is_remote(urls[0]):
        return None
    m = re.match(r"^(.*)-\d{6}\.tar$", os.path.basename(urls[0]))
    if not m:
        return None
    path = os.path.join(os.path.dirname(urls[0]), m.group(1) + ".json")
    if not os.path.isfile(path):
        return None
    try:
        return read_index(path)
    except IGRError:
        return None


# --------------------------------------------------------------------------- writing


def encode_sample(
    key: str,
    person: bytes,
    mask: bytes,
    category: str,
    garment: bytes | None = None,
    meta: dict | None = None,
) -> dict[str, Any]:
    """A sample dict ready for :class:`ShardSetWriter` (all values already encoded)."""
    if "." in key or not key:
        raise ValueError(f"sample key {key!r} must be non-empty and contain no '.' (webdataset splits on it)")
    if category not in CATEGORIES:
        raise ValueError(f"{key}: unknown category {category!r}")
    sample = {"__key__": key, "person.jpg": person, "mask.png": mask, "category.txt": category.encode()}
    if garment is not None:
        sample["garment.jpg"] = garment
    if meta:
        sample["meta.json"] = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    return sample


def existing_split_files(out_dir: str, split: str) -> list[str]:
    pattern = os.path.join(glob.escape(out_dir), f"{glob.escape(split)}-[0-9][0-9][0-9][0-9][0-9][0-9].tar")
    files = sorted(glob.glob(pattern))
    index = os.path.join(out_dir, f"{split}.json")
    if os.path.exists(index):
        files.append(index)
    return files


class ShardSetWriter:
    """Writes ``{split}-%06d.tar`` shards and the ``{split}.json`` index into ``out_dir``.

    Each shard is written under a hidden temporary name and renamed when complete, so an
    interrupted run never leaves a half-written shard that a reader could pick up. Existing
    shards of the same split are an error unless ``overwrite``; with it, stale shards beyond
    the new count are removed at the end. Output is byte-identical for identical input
    (fixed tar mtime/owner, sorted JSON).
    """

    def __init__(
        self,
        out_dir: str,
        split: str,
        *,
        overwrite: bool = False,
        max_count: int = 1000,
        max_bytes: float = 1e9,
        source: str = "",
        image_size: tuple[int, int] | None = None,
    ):
        if not re.fullmatch(r"[A-Za-z0-9_]+", split):
            raise IGRError(f"{split}: split name must be letters, digits or '_'")
        if os.path.exists(out_dir) and not os.path.isdir(out_dir):
            raise IGRError(f"{out_dir}: exists and is not a directory")
        existing = existing_split_files(out_dir, split) if os.path.isdir(out_dir) else []
        if existing and not overwrite:
            raise IGRError(f"{out_dir}: already holds '{split}' shards ({len(existing)} files); use --overwrite to replace them")
        self.out_dir, self.split = out_dir, split
        self.max_count, self.max_bytes = max_count, max_bytes
        self.source, self.image_size = source, image_size
        self.shards: list[dict[str, Any]] = []
        self.categories: Counter = Counter()
        self.num_samples = 0
        self.paired = True
        self._keys: set[str] = set()
        self._tar: tarfile.TarFile | None = None
        self._file: AtomicFile | None = None
        self._count = 0
        self._bytes = 0
        self._shard_categories: Counter = Counter()
        self.closed = False

    # -- one shard
    def _open(self) -> None:
        os.makedirs(self.out_dir, exist_ok=True)  # created on first write: a failed start leaves nothing
        name = SHARD_NAME.format(split=self.split, index=len(self.shards))
        self._file = AtomicFile(os.path.join(self.out_dir, name))
        self._tar = tarfile.open(fileobj=self._file.file, mode="w|", format=tarfile.USTAR_FORMAT)
        self._count, self._bytes = 0, 0
        self._shard_categories = Counter()

    def _finish(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        final = str(self._file.commit())
        name = os.path.basename(final)
        self.shards.append({
            "name": name,
            "num_samples": self._count,
            "bytes": os.path.getsize(final),
            "categories": {c: self._shard_categories.get(c, 0) for c in CATEGORIES},
        })
        self._tar, self._file = None, None

    def write(self, sample: dict[str, Any]) -> None:
        key = sample["__key__"]
        if (why := unsafe_key(key)) is not None:  # it becomes a tar member name: never a path outside
            raise ValueError(f"sample key {key!r} is {why}")
        if key in self._keys:
            raise ValueError(f"duplicate sample key {key!r}")
        self._keys.add(key)
        if self._tar is None:
            self._open()
        for ext in sorted(k for k in sample if not k.startswith("__")):
            data = sample[ext]
            if isinstance(data, str):
                data = data.encode()
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mtime = 0  # reproducible bytes
            info.mode = 0o644
            info.uname = info.gname = "igr"
            self._tar.addfile(info, io.BytesIO(data))
            self._bytes += len(data)
        category = sample["category.txt"]
        category = category.decode() if isinstance(category, bytes) else category
        self.categories[category] += 1
        self._shard_categories[category] += 1
        self.paired &= GARMENT in sample
        self._count += 1
        self.num_samples += 1
        if self._count >= self.max_count or self._bytes >= self.max_bytes:
            self._finish()

    # -- the set
    def close(self, skipped: dict[str, int] | None = None, extra: dict[str, Any] | None = None) -> dict:
        """Finish the last shard, remove stale shards of an overwritten run, write the index."""
        self._finish()
        os.makedirs(self.out_dir, exist_ok=True)
        keep = {s["name"] for s in self.shards}
        for path in existing_split_files(self.out_dir, self.split):
            if path.endswith(".tar") and os.path.basename(path) not in keep:
                os.remove(path)
        index = {
            "format": INDEX_FORMAT,
            "split": self.split,
            "source": self.source,
            "image_size": list(self.image_size) if self.image_size else None,
            "paired": bool(self.paired and self.num_samples > 0),
            "num_samples": self.num_samples,
            "categories": {c: self.categories.get(c, 0) for c in CATEGORIES},
            "skipped": dict(sorted((skipped or {}).items())),
            "shards": self.shards,
        }
        if extra:
            index.update(extra)
        path = os.path.join(self.out_dir, f"{self.split}.json")
        with atomic_file(path, "w", encoding="utf-8") as f:
            json.dump(index, f, indent=2, sort_keys=True)
            f.write("\n")
        self.closed = True
        return index

    def abort(self) -> None:
        """Drop the shard being written (completed shards stay: each is whole)."""
        if self._tar is not None:
            try:
                with contextlib.suppress(Exception):  # the original error matters, not this one
                    self._tar.close()  # flush the tar stream into the file that is about to go
            finally:
                self._file.abort()
            self._tar, self._file = None, None

    def __enter__(self) -> ShardSetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self.closed:
            self.close()


# --------------------------------------------------------------------------- reading


def shard_error_handler(stats: SkipStats | None):
    """A webdataset handler: counts a tar/URL-level failure and carries on with the next shard."""

    def handler(exn: Exception) -> bool:
        url = next((a for a in reversed(getattr(exn, "args", ())) if isinstance(a, str) and a != str(exn.args[0])), "?")
        if stats is not None:
            stats.skip(UNREADABLE_SHARD, url, "", f"{type(exn).__name__}: {exn.args[0] if exn.args else exn}")
        return True

    return handler


def iter_raw(urls: Iterable[str], stats: SkipStats | None = None) -> Iterator[dict[str, Any]]:
    """Raw samples (dicts of bytes keyed by extension, plus ``__key__``/``__url__``) from shards, in order."""
    # webdataset pulls in torch; importing it here keeps `igr make-shards` quick to start.
    from webdataset.tariterators import group_by_keys, tar_file_expander, url_opener

    handler = shard_error_handler(stats)
    streams = url_opener(({"url": u} for u in urls), handler=handler)
    files = tar_file_expander(streams, handler=handler)
    yield from group_by_keys(files, handler=handler)


def require_usable(spec: str | Sequence[str], what: str) -> None:
    """Refuse (one line) a shard set of local files none of which yields a usable sample, before a run starts
    (e.g. before ``igr fit`` writes ``config.yaml`` and its event log). Reads until the first good sample: one
    sample of the first shard when the set is fine. Remote sets are not opened here."""
    urls = resolve_shards(spec)
    if any(is_remote(u) for u in urls):
        return
    stats = SkipStats(quiet=True)
    for raw in iter_raw(urls, stats):
        try:
            decode_sample(raw, require_garment=False)
            return
        except SampleError as err:
            stats.skip(err.reason, raw.get("__url__", "?"), raw.get("__key__", "?"), err.detail)
    counts = ", ".join(f"{n} {reason}" for reason, n in sorted(stats.counts.items())) or "no samples"
    example = next(iter(e for ex in stats.examples.values() for e in ex), "")
    raise IGRError(f"{what}: no usable sample in {len(urls)} shard(s) ({counts})" + (f"; e.g. {example}" if example else ""))


def iter_samples(
    spec: str | Sequence[str],
    *,
    load_garment: bool = True,
    require_garment: bool = False,
    image_size: tuple[int, int] | None = None,
    threshold: int = 127,
    stats: SkipStats | None = None,
    strict: bool = False,
) -> Iterator[dict[str, Any]]:
    """Decoded samples of a shard set, deterministically in shard then tar order (no Lightning).

    Yields dicts ``{"key", "url", "person": uint8 HxWx3, "mask": uint8 HxW {0,1},
    "garment": uint8 HxWx3 (when present and ``load_garment``), "category", "meta"}``. Bad
    samples are skipped and counted in ``stats`` (or raise :class:`SampleError` if ``strict``).
    """
    urls = resolve_shards(spec)
    stats = stats if stats is not None else SkipStats()
    for raw in iter_raw(urls, stats):
        try:
            d = decode_sample(raw, require_garment=require_garment, load_garment=load_garment,
                              image_size=image_size, threshold=threshold)
        except SampleError as err:
            if strict:
                raise
            stats.skip(err.reason, raw.get("__url__", "?"), raw.get("__key__", "?"), err.detail)
            continue
        if d.n_nonbinary:
            stats.nonbinary(d.url, d.key, d.n_nonbinary)
        stats.good += 1
        out = {"key": d.key, "url": d.url, "person": np.asarray(d.person), "mask": d.mask,
               "category": d.category, "meta": d.meta}
        if d.garment is not None:
            out["garment"] = np.asarray(d.garment)
        yield out
