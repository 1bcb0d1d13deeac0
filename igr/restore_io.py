"""Reading, checking and writing the images of ``igr restore`` and :class:`igr.pipeline.IGRPipeline`.

Every problem with a user's file is an :class:`IGRError` of one line, ``"<path>: <problem>"``, raised before the
model runs. Masks may be 1-channel or RGB, 0/1 or 0/255; grey masks are thresholded and the number of grey pixels
is reported. Human-parsing label maps (VITON-HD ``image-parse-v3``, DressCode ``label_maps``) become masks with
:func:`read_parse_mask`. Outputs are written to a temporary file and renamed into place.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from igr import imageio
from igr.atomic import atomic_file
from igr.config import CATEGORIES
from igr.data.transforms import binarize_mask, image_to_tensor, mask_to_tensor, resize_pad, resize_pad_mask
from igr.errors import IGRError

# Garment labels per category in the parse maps the datasets ship. VITON-HD (CIHP ids): 5 upper-clothes,
# 6 dress, 7 coat, 9 pants, 12 skirt — its own loader counts 5, 6, 7 as "upper". DressCode: 4 upper_clothes,
# 5 skirt, 6 pants, 7 dress.
PARSE_LABELS: dict[str, dict[str, tuple[int, ...]]] = {
    "viton-hd": {"upper": (5, 6, 7), "lower": (9, 12), "full": (6,)},
    "dresscode": {"upper": (4,), "lower": (5, 6), "full": (7,)},
}
# Extensions PIL can write, and the format it writes them in.
OUTPUT_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
}
_SUSPICIOUS_COVERAGE = 0.9  # mask coverage above this is reported: an inverted mask looks like this


def image_extensions() -> set[str]:
    """Extensions PIL can open (lower case, with the dot)."""
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


# --------------------------------------------------------------------------- reading files


def read_person(path: str | Path) -> Image.Image:
    return as_rgb(imageio.decode(path, "person"))


def read_mask(path: str | Path, threshold: int = 127) -> tuple[np.ndarray, int]:
    """A garment mask file → (uint8 HxW {0,1}, number of grey pixels that were thresholded)."""
    mask, n_grey = as_mask(imageio.decode(path, "mask"), threshold)
    check_not_empty(mask, path, threshold)
    return mask, n_grey


def parse_labels(spec: str, category: str) -> tuple[int, ...]:
    """``--labels``: comma-separated label ids (``5,6,7``) or a dataset name (``viton-hd``, ``dresscode``)
    whose garment labels for ``category`` are used."""
    spec = spec.strip()
    if spec.lower() in PARSE_LABELS:
        return PARSE_LABELS[spec.lower()][category]
    try:
        labels = tuple(int(v) for v in spec.split(",") if v.strip())
    except ValueError:
        labels = ()
    if not labels or any(v < 0 for v in labels):
        names = ", ".join(PARSE_LABELS)
        raise IGRError(f"--labels '{spec}': expected label ids like 5,6,7 or one of {names}")
    return labels


def read_parse_mask(path: str | Path, labels: Sequence[int]) -> np.ndarray:
    """A human-parsing label map (one label id per pixel) → uint8 HxW {0,1} mask of ``labels``."""
    img = imageio.decode(path, "parse map")
    if img.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
        ids = np.asarray(img)  # palette images: the indices are the labels
    elif img.mode == "RGB" and _channels_equal(a := np.asarray(img)):
        ids = a[..., 0]
    else:
        raise IGRError(
            f"{path}: parse map has mode {img.mode}; expected a label map (one label id per pixel, "
            "a palette or greyscale PNG, not a colourised rendering)"
        )
    mask = np.isin(ids, list(labels)).astype(np.uint8)
    if not mask.any():
        present = ", ".join(str(v) for v in np.unique(ids)[:20])
        wanted = ",".join(str(v) for v in labels)
        raise IGRError(f"{path}: empty mask, no pixel has label {wanted} (labels present: {present})")
    return mask


def _channels_equal(a: np.ndarray) -> bool:
    return bool((a[..., 0] == a[..., 1]).all() and (a[..., 0] == a[..., 2]).all())


# --------------------------------------------------------------------------- in-memory conversion


def as_rgb(image, name: str = "person") -> Image.Image:
    """PIL image, uint8/float array (HxW, HxWx3, HxWx4) or tensor (3,H,W) → RGB PIL image.

    Float arrays and tensors must hold values in [0, 1]; a [-1, 1] tensor is refused rather than misread.
    """
    if isinstance(image, Image.Image):
        return imageio.to_rgb(image)  # alpha on white, 16-bit scaled, CMYK/palette converted
    a = _as_hwc(image, name)
    if a.dtype != np.uint8:
        a = (_unit_range(a, name) * 255).round().astype(np.uint8)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    elif a.shape[-1] == 4:
        return as_rgb(Image.fromarray(a, "RGBA"), name)
    elif a.shape[-1] != 3:
        raise IGRError(f"{name}: expected 1, 3 or 4 channels, got {a.shape[-1]}")
    return Image.fromarray(np.ascontiguousarray(a), "RGB")


def as_mask(mask, threshold: int = 127, name: str = "mask") -> tuple[np.ndarray, int]:
    """A mask in any of the accepted forms → (uint8 HxW {0,1}, number of grey pixels thresholded).

    uint8 data: 0/1 is used as is, 0/255 and grey values are thresholded (value > ``threshold`` is garment).
    Float data and tensors: values in [0, 1], thresholded at ``threshold / 255``. RGB masks count a pixel as
    garment when any channel is bright (a coloured mask on black works too).
    """
    if isinstance(mask, Image.Image):
        a = imageio.to_grey(mask)  # any PIL mode → uint8 HxW, 0..255 (or 0/1)
    else:
        a = _as_hwc(mask, name)
        a = a[..., :3].max(axis=-1) if a.shape[-1] in (3, 4) else a[..., 0]  # alpha is not the mask
    if a.dtype == bool:
        return a.astype(np.uint8), 0
    if a.dtype != np.uint8:
        a = _unit_range(a, name).astype(np.float32)
        n_grey = int(((a != 0) & (a != 1)).sum())
        return (a > threshold / 255).astype(np.uint8), n_grey
    return binarize_mask(a, threshold)


def _as_hwc(x, name: str) -> np.ndarray:
    """Array or tensor → numpy HxWxC (a tensor is taken as CxHxW, like torchvision's)."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.ndim == 3:
            t = t.permute(1, 2, 0)
        a = t.float().numpy() if t.is_floating_point() else t.numpy()
    elif isinstance(x, np.ndarray):
        a = x
    else:
        raise IGRError(f"{name}: expected a PIL image, numpy array or tensor, got {type(x).__name__}")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or 0 in a.shape:
        raise IGRError(f"{name}: expected an HxW or HxWxC image (CxHxW for tensors), got shape {a.shape}")
    return a


def _unit_range(a: np.ndarray, name: str) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise IGRError(
            f"{name}: float values span [{lo:.2f}, {hi:.2f}]; expected [0, 1] (for [-1, 1] use (x + 1) / 2)"
        )
    return np.clip(a, 0, 1)


# --------------------------------------------------------------------------- checks and model inputs


def check_not_empty(mask: np.ndarray, name: str | Path, threshold: int | None = None) -> None:
    if not mask.any():
        how = f" above threshold {threshold}" if threshold is not None else ""
        raise IGRError(f"{name}: empty mask (no garment pixel{how})")


def mask_warnings(mask: np.ndarray, n_grey: int, name: str | Path, threshold: int) -> list[str]:
    """Things about a usable mask the user should know: grey pixels thresholded, suspiciously large coverage."""
    notes = []
    if n_grey:
        notes.append(f"{name}: {n_grey} grey mask pixels binarised at threshold {threshold}")
    coverage = float(mask.mean())
    if coverage > _SUSPICIOUS_COVERAGE:
        notes.append(
            f"{name}: mask covers {coverage:.0%} of the image; is it inverted (garment must be white)?"
        )
    return notes


def fit_mask(
    mask: np.ndarray,
    person_hw: tuple[int, int],
    resize: bool,
    mask_name: str | Path,
    person_name: str | Path,
) -> np.ndarray:
    """Check the mask has the person's size; with ``resize``, scale it to that size. A mask with another
    aspect ratio is refused even then: it was made for a different (cropped or padded) photo."""
    mh, mw = mask.shape
    ph, pw = person_hw
    if (mh, mw) == (ph, pw):
        return mask
    if not resize:
        raise IGRError(
            f"{mask_name}: mask is {mh}x{mw} (HxW) but person {person_name} is {ph}x{pw}; "
            "pass --resize-mask (resize_mask=True) to scale it"
        )
    if abs(mh / mw - ph / pw) > 0.02 * (ph / pw):
        raise IGRError(
            f"{mask_name}: mask aspect {mh}x{mw} does not match person {person_name} {ph}x{pw}; "
            "it cannot be the mask of this photo"
        )
    # Upscaling: bilinear then threshold keeps edges smooth; downscaling: box (area) averages.
    resample = Image.Resampling.BILINEAR if mh * mw < ph * pw else Image.Resampling.BOX
    img = Image.fromarray(mask * 255).resize((pw, ph), resample)
    out = (np.asarray(img) >= 128).astype(np.uint8)
    check_not_empty(out, mask_name)
    return out


def model_inputs(
    person: Image.Image, mask: np.ndarray, resolution: tuple[int, int], mask_name: str | Path
) -> tuple[torch.Tensor, torch.Tensor]:
    """Person and mask resized (aspect kept, padded) to the model resolution → (3,H,W) in [-1,1], (1,H,W) {0,1}."""
    person = resize_pad(person, tuple(resolution), fill="auto")  # padding continues the photo's background
    small = resize_pad_mask(mask, tuple(resolution))
    if not small.any():
        raise IGRError(
            f"{mask_name}: mask vanishes at the model resolution {resolution[0]}x{resolution[1]} "
            f"({int(mask.sum())} pixels at full size)"
        )
    return image_to_tensor(np.array(person)), mask_to_tensor(small)  # np.array: a writable copy for torch


def check_category(category: str, where: str) -> str:
    if category not in CATEGORIES:
        raise IGRError(f"{where}: category '{category}' is not one of {', '.join(CATEGORIES)}")
    return category


# --------------------------------------------------------------------------- batch folders


@dataclass
class Pair:
    stem: str
    person: Path
    mask: Path


def find_pairs(
    root: str | Path, person_dir: str = "person", mask_dir: str = "mask"
) -> tuple[list[Pair], list[str]]:
    """Person/mask files in ``root/person_dir`` and ``root/mask_dir`` matched by file stem.

    Returns the pairs (sorted by stem) and one problem line per stem that cannot form a pair (no partner,
    or several files with one stem). Hidden files and files PIL cannot open by extension are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise IGRError(f"{root}: input folder not found")
    found: dict[str, dict[str, list[Path]]] = {}
    exts = image_extensions()
    for role, sub in (("person", person_dir), ("mask", mask_dir)):
        folder = root / sub
        if not folder.is_dir():
            raise IGRError(
                f"{folder}: folder not found (batch mode expects {root}/{person_dir}/ and {root}/{mask_dir}/)"
            )
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in exts:
                continue
            found.setdefault(path.stem, {"person": [], "mask": []})[role].append(path)
    pairs, problems = [], []
    for stem in sorted(found):
        people, masks = found[stem]["person"], found[stem]["mask"]
        if len(people) > 1 or len(masks) > 1:
            names = ", ".join(p.name for p in people + masks)
            problems.append(f"{root}: several files with stem '{stem}' ({names})")
        elif not masks:
            problems.append(f"{people[0]}: no mask with the same stem in {root / mask_dir}")
        elif not people:
            problems.append(f"{masks[0]}: no person image with the same stem in {root / person_dir}")
        else:
            pairs.append(Pair(stem, people[0], masks[0]))
    return pairs, problems


def read_categories(path: str | Path) -> dict[str, tuple[str, int]]:
    """A categories CSV (``name,category`` rows; an optional header row) → {stem: (category, line number)}.

    ``name`` may be a stem or a file name (``00001_00.jpg``); categories are checked per pair by the caller,
    so one bad row skips one pair.
    """
    path = Path(path)
    if not path.is_file():
        raise IGRError(f"{path}: categories file not found")
    out: dict[str, tuple[str, int]] = {}
    exts = image_extensions()
    rows = imageio.read_csv(path, "categories CSV")
    for line, row in enumerate(rows, start=1):
        if not any(row) or row[0].startswith("#"):
            continue
        if line == 1 and len(row) == 2 and row[1].lower() == "category":
            continue  # header
        if len(row) != 2 or not row[0]:
            raise IGRError(f"{path}: line {line}: expected 'name,category', got {','.join(row)!r}")
        name = Path(row[0])
        stem = name.stem if name.suffix.lower() in exts else name.name
        if stem in out and out[stem][0] != row[1]:
            raise IGRError(
                f"{path}: line {line}: '{stem}' already has category '{out[stem][0]}' (line {out[stem][1]})"
            )
        out[stem] = (row[1], line)
    if not out:
        raise IGRError(f"{path}: no 'name,category' rows")
    return out


# --------------------------------------------------------------------------- writing


def check_writable(path: str | Path, is_dir: bool = False) -> Path:
    """Fail now — before any compute — if ``path`` (a file, or with ``is_dir`` a folder) cannot be written.

    Creates nothing: writability is probed in the nearest existing folder, which is where the write (after
    creating any missing folders) will go.
    """
    path = Path(path)
    if not is_dir:
        if path.suffix.lower() not in OUTPUT_FORMATS:
            raise IGRError(f"{path}: unsupported output extension (use one of {', '.join(OUTPUT_FORMATS)})")
        if path.is_dir():
            raise IGRError(f"{path}: is a directory, expected an output file name")
    elif path.exists() and not path.is_dir():
        raise IGRError(f"{path}: not writable (exists and is not a directory)")
    folder = path if is_dir else path.parent
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise IGRError(f"{path}: not writable ({existing} is not a directory)")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise IGRError(
            f"{path}: not writable ({exc.strerror or exc.__class__.__name__} in {existing})"
        ) from exc
    return path


def file_ids(paths) -> dict[tuple[int, int], Path]:
    """(device, inode) → path of each existing file in ``paths`` (None and missing ones skipped): the identity
    :func:`same_file` compares outputs against, as ``os.path.samefile`` does."""
    ids: dict[tuple[int, int], Path] = {}
    for p in paths:
        if p is None:
            continue
        try:
            st = os.stat(p)
        except (OSError, ValueError):
            continue
        ids.setdefault((st.st_dev, st.st_ino), Path(p))
    return ids


def same_file(path: str | Path, ids: dict[tuple[int, int], Path]) -> Path | None:
    """The input in ``ids`` (from :func:`file_ids`) that ``path`` is, following links; None if it is none."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return ids.get((st.st_dev, st.st_ino))


def is_within(path: str | Path, folder: str | Path) -> bool:
    """``path`` is ``folder`` or lies under it, after resolving links and ``..`` (neither need exist)."""
    p, f = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return p == f or f in p.parents


def write_image(image: Image.Image, path: str | Path) -> Path:
    """Write ``image`` to a temporary file next to ``path`` and rename it into place: readers (and a crash)
    never see a half-written output."""
    path = Path(path)
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise IGRError(f"{path}: unsupported output extension (use one of {', '.join(OUTPUT_FORMATS)})")
    with atomic_file(path) as f:
        image.save(f, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    return path


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B,3,H,W) in [0,1] → RGB PIL images. NaN or inf is an error: clamped, it would be a black image that
    looks like a result (a guidance of inf, weights of a diverged run)."""
    if not bool(torch.isfinite(images).all()):
        bad = int((~torch.isfinite(images)).sum())
        raise IGRError(
            f"the model returned {bad} NaN/inf value(s) of {images.numel()}: no image written "
            "(check the weights, e.g. with `igr info`, and --guidance)"
        )
    a = (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(np.ascontiguousarray(x), "RGB") for x in a]
