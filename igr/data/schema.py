"""The shard sample schema (docs/design.md §4) and the validation every reader applies.

One sample per key: ``person.jpg`` (RGB), ``mask.png`` (single channel, 0/255), ``garment.jpg``
(RGB, absent in unpaired shards), ``category.txt`` (``upper`` | ``lower`` | ``full``) and an
optional ``meta.json``. Person, mask and garment share H×W.

Readers never stop on a bad sample: :func:`decode_sample` raises :class:`SampleError` with one of
the :data:`SKIP_REASONS`, the caller counts it (:class:`SkipStats`) and moves on.
"""

from __future__ import annotations

import io
import json
import logging
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from igr.data.transforms import binarize_mask, resize_pad, resize_pad_mask

log = logging.getLogger("igr.data")

CATEGORIES: tuple[str, ...] = ("upper", "lower", "full")

PERSON = "person.jpg"
MASK = "mask.png"
GARMENT = "garment.jpg"
CATEGORY = "category.txt"
META = "meta.json"

# Why a sample was skipped. "nonbinary_mask" is not a skip: grey masks are binarised and counted.
UNDECODABLE = "undecodable"
MISSING_FIELD = "missing_field"
SIZE_MISMATCH = "size_mismatch"
UNKNOWN_CATEGORY = "unknown_category"
UNREADABLE_SHARD = "unreadable_shard"
NONBINARY_MASK = "nonbinary_mask"
UNSAFE_KEY = "unsafe_key"
DUPLICATE_KEY = "duplicate_key"
SKIP_REASONS: tuple[str, ...] = (
    UNDECODABLE, MISSING_FIELD, SIZE_MISMATCH, UNKNOWN_CATEGORY, UNREADABLE_SHARD, UNSAFE_KEY, DUPLICATE_KEY
)

# JSON read from data files (a sample's meta.json, a shard index) is capped before it is parsed: Python's json
# recurses once per nesting level, so one crafted file nested 100,000 deep would stop a run with RecursionError.
MAX_JSON_DEPTH = 100
MAX_META_BYTES = 1 << 20
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in JSON text (brackets inside strings do not count), without parsing."""
    depth = deepest = 0
    for m in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        if m.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def loads_capped(data: bytes | str, *, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` for data files, refusing (ValueError, one line) what is too big or nested too deep."""
    if len(data) > max_bytes:
        raise ValueError(f"{len(data)} bytes, more than the {max_bytes} allowed")
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    if (depth := json_depth(text)) > max_depth:
        raise ValueError(f"nested {depth} deep, more than the {max_depth} allowed")
    return json.loads(text)


def unsafe_key(key: Any) -> str | None:
    """Why a sample key is not a safe tar member name, or None. A key from a foreign tar may be a member path
    like ``../../evil`` or ``/etc/x``; copied into a new shard, it becomes a path for whoever extracts that tar.
    Relative sub-folder keys (``part1/0001``, as other webdataset writers make) are fine."""
    if not isinstance(key, str) or not key:
        return "empty key"
    if key.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", key):
        return "an absolute path"
    parts = re.split(r"[/\\]", key)
    if any(p in ("", ".", "..") for p in parts):
        return "a path that leaves its folder ('..', '.' or an empty part)"
    if any(ord(c) < 32 for c in key):
        return "control characters"
    return None


SKIP_DESCRIPTIONS = {
    UNDECODABLE: "undecodable image or metadata",
    MISSING_FIELD: "missing field",
    SIZE_MISMATCH: "person/mask/garment sizes differ",
    UNKNOWN_CATEGORY: "unknown category",
    UNREADABLE_SHARD: "unreadable shard (bad tar or URL)",
    UNSAFE_KEY: "unsafe sample key (an absolute path or one with '..')",
    DUPLICATE_KEY: "duplicate sample key (the first sample with the key is used)",
    NONBINARY_MASK: "grey mask, binarised at the threshold (kept)",
}


class SampleError(Exception):
    """A sample that cannot be used; ``reason`` is one of :data:`SKIP_REASONS`."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class SkipStats:
    """Counts skipped samples by reason and logs each bad sample once (with shard and key)."""

    counts: Counter = field(default_factory=Counter)
    nonbinary_masks: int = 0
    good: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)
    _seen: set = field(default_factory=set, repr=False)
    max_examples: int = 5
    quiet: bool = False

    def skip(self, reason: str, url: str, key: str, detail: str) -> None:
        ident = (url, key, reason)
        if ident in self._seen:
            # Resampled training meets the same bad sample again: count it once only.
            return
        self._seen.add(ident)
        self.counts[reason] += 1
        where = f"{url} key={key}" if key else url
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < self.max_examples:
            self.examples[reason].append(f"{where}: {detail}")
        if not self.quiet:
            log.warning("skipped sample %s: %s (%s; %d skipped so far)", where, detail, reason, self.total_skipped)

    def nonbinary(self, url: str, key: str, n_pixels: int) -> None:
        ident = (url, key, NONBINARY_MASK)
        if ident in self._seen:
            return
        self._seen.add(ident)
        self.nonbinary_masks += 1
        if len(self.examples.setdefault(NONBINARY_MASK, [])) < self.max_examples:
            self.examples[NONBINARY_MASK].append(f"{url} key={key}: {n_pixels} grey pixels")
        if self.nonbinary_masks == 1 and not self.quiet:
            log.warning("grey mask in %s key=%s (%d pixels not 0/255): binarising at the threshold; "
                        "further grey masks are counted, not logged", url, key, n_pixels)

    @property
    def total_skipped(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "good": self.good,
            "skipped": {r: self.counts.get(r, 0) for r in SKIP_REASONS},
            "nonbinary_masks": self.nonbinary_masks,
            "examples": {k: v for k, v in self.examples.items() if v},
        }


def _open_image(data: bytes, name: str, mode: str, draft_size: tuple[int, int] | None = None) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # A truncated JPEG is an error here, not a warning.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if draft_size is not None and img.format == "JPEG":
                # libjpeg decodes at 1/2, 1/4, 1/8 scale for free when the target is smaller.
                img.draft("RGB", (draft_size[1], draft_size[0]))
            img.load()
    except Exception as exc:  # PIL raises many types for bad data
        raise SampleError(UNDECODABLE, f"{name}: {type(exc).__name__}: {exc}") from None
    if img.mode != mode:
        if mode == "L" and img.mode in ("P", "RGBA", "LA"):
            img = img.convert("RGB")
        img = img.convert(mode)
    return img


def _image_size(data: bytes, name: str) -> tuple[int, int]:
    """(H, W) from the header, without decoding pixels."""
    try:
        w, h = Image.open(io.BytesIO(data)).size
    except Exception as exc:
        raise SampleError(UNDECODABLE, f"{name}: {type(exc).__name__}: {exc}") from None
    return h, w


def parse_category(data: bytes | str | None) -> str:
    if data is None:
        raise SampleError(MISSING_FIELD, f"{CATEGORY} absent")
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    cat = text.strip().lower()
    if cat not in CATEGORIES:
        raise SampleError(UNKNOWN_CATEGORY, f"category {text.strip()[:40]!r} is not one of {', '.join(CATEGORIES)}")
    return cat


def parse_meta(data: bytes | None) -> dict:
    if data is None:
        return {}
    try:
        meta = loads_capped(data, max_bytes=MAX_META_BYTES)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors too
        raise SampleError(UNDECODABLE, f"{META}: {exc}") from None
    if not isinstance(meta, dict):
        raise SampleError(UNDECODABLE, f"{META}: expected a JSON object")
    return meta


@dataclass
class Decoded:
    """A validated sample. Images are PIL (person, garment: RGB) and numpy (mask: uint8 {0,1})."""

    key: str
    url: str
    person: Image.Image
    mask: np.ndarray
    garment: Image.Image | None
    category: str
    meta: dict
    n_nonbinary: int


def decode_sample(
    raw: dict[str, Any],
    *,
    require_garment: bool = True,
    load_garment: bool = True,
    image_size: tuple[int, int] | None = None,
    threshold: int = 127,
) -> Decoded:
    """Validate and decode one raw webdataset sample (a dict of bytes keyed by extension).

    With ``image_size`` (H, W), person, mask and garment are brought to it with :func:`resize_pad`
    (aspect kept, padded, never stretched). Raises :class:`SampleError` for anything unusable.
    """
    key = raw.get("__key__", "?")
    url = raw.get("__url__", "?")
    if (why := unsafe_key(key)) is not None:
        raise SampleError(UNSAFE_KEY, f"key {key!r} is {why}")
    missing = [f for f in (PERSON, MASK, CATEGORY) if raw.get(f) is None]
    want_garment = load_garment and (require_garment or raw.get(GARMENT) is not None)
    if require_garment and load_garment and raw.get(GARMENT) is None:
        missing.append(GARMENT)
    if missing:
        raise SampleError(MISSING_FIELD, f"{', '.join(missing)} absent")
    category = parse_category(raw[CATEGORY])
    meta = parse_meta(raw.get(META))

    # Sizes come from the headers first, so a mismatch is reported without decoding pixels.
    p_size = _image_size(raw[PERSON], PERSON)
    m_size = _image_size(raw[MASK], MASK)
    sizes = {PERSON: p_size, MASK: m_size}
    if want_garment:
        sizes[GARMENT] = _image_size(raw[GARMENT], GARMENT)
    if len(set(sizes.values())) > 1:
        detail = ", ".join(f"{n} {h}x{w}" for n, (h, w) in sizes.items())
        raise SampleError(SIZE_MISMATCH, detail)

    person = _open_image(raw[PERSON], PERSON, "RGB", image_size)
    mask_img = _open_image(raw[MASK], MASK, "L")
    garment = _open_image(raw[GARMENT], GARMENT, "RGB", image_size) if want_garment else None
    mask, n_nonbinary = binarize_mask(np.asarray(mask_img), threshold)

    if image_size is not None and (person.size[1], person.size[0]) != tuple(image_size):
        person = resize_pad(person, image_size, fill="auto")
        if garment is not None:
            garment = resize_pad(garment, image_size, fill="auto")
    if image_size is not None and mask.shape != tuple(image_size):
        mask = resize_pad_mask(mask, image_size)
    return Decoded(key, url, person, mask, garment, category, meta, n_nonbinary)
