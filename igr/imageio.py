"""The one reader of users' images and CSV files, for every command (restore, make-shards, eval-folders).

Images come from phones, scanners, Photoshop and Excel, and PIL's defaults get several of them wrong:
``convert("RGB")`` clips 16-bit greyscale to white, ignores EXIF orientation (a phone photo turns sideways),
and drops alpha so a transparent background becomes whatever RGB it hides (often black). Here:

- EXIF orientation is applied; sizes are reported as displayed (:func:`image_size`);
- alpha (RGBA, LA, PA, palette transparency) is composited on white — the garment canvas of the datasets;
- 16-bit and 32-bit integer greyscale are scaled by value to 8 bits (65535 → 255), never clipped;
- CMYK, YCbCr, palette, 1-bit and grey become RGB;
- an image above :data:`MAX_PIXELS` is refused with one line before it is decoded (PIL's
  ``DecompressionBombWarning`` is not let through).

Every problem is an :class:`IGRError` of one line ``"<path>: <problem>"``.
CSV files: UTF-8 with or without BOM (Excel writes one), UTF-16 with BOM, else Windows-1252 (a superset of
the printable Latin-1); anything else is one line saying how to save it.
"""

from __future__ import annotations

import csv
import io
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from igr.errors import IGRError

# PIL's own warning threshold (89.5 megapixels); PIL only errors at twice that. Far above any photo or
# dataset image we read, far below what a crafted PNG of a few KB can claim.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
# Bytes read from one image file: above an uncompressed 16-bit RGBA image of MAX_PIXELS (~716 MB) is no image.
MAX_FILE_BYTES = 1 << 30
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def _check_pixels(img: Image.Image, name: str | Path, what: str) -> None:
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise IGRError(
            f"{name}: {what} image is {w}x{h} (W×H, {w * h:,} pixels), over the limit of {MAX_PIXELS:,} "
            "pixels that guards against decompression bombs"
        )


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:120]
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def read_file_bytes(path: str | Path, what: str, name: str | Path | None = None, limit: int = MAX_FILE_BYTES) -> bytes:
    """A regular file's bytes, at most ``limit`` of them. FIFOs, devices and sockets are refused before they are
    opened (a FIFO would block forever, ``/dev/zero`` read until memory runs out); the cap is enforced on the
    bytes read, not on ``st_size``, which a growing file or a special file does not report truthfully."""
    path = Path(path)
    name = path if name is None else name
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise IGRError(f"{name}: {what} file not found") from None
    except PermissionError:
        raise IGRError(f"{name}: {what} file cannot be read (permission denied)") from None
    if stat.S_ISDIR(st.st_mode):
        raise IGRError(f"{name}: is a directory, expected a {what} image")
    if not stat.S_ISREG(st.st_mode):
        raise IGRError(f"{name}: not a regular file (a FIFO, device or socket), expected a {what} file")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except PermissionError:
        raise IGRError(f"{name}: {what} file cannot be read (permission denied)") from None
    except OSError as exc:
        raise IGRError(f"{name}: {what} file cannot be read ({_describe(exc)})") from None
    if len(data) > limit:
        raise IGRError(f"{name}: {what} file is over {limit // 2**20} MiB, too large for an image")
    return data


def decode(
    data: bytes | Path | str,
    what: str = "image",
    name: str | Path | None = None,
    max_side: int | None = None,
) -> Image.Image:
    """Open and fully decode an image (a path or the file's bytes), with EXIF orientation applied.

    ``what`` names the role (person, mask, garment, prediction) and ``name`` the file, for the messages. With
    ``max_side``, a larger image comes back downsized (aspect kept) so its long side is ``max_side``; a JPEG is
    then decoded at a reduced scale straight away (``draft``), never at full size.
    """
    if isinstance(data, (str, Path)):
        name = Path(data) if name is None else name
        data = read_file_bytes(data, what, name)
    name = "<bytes>" if name is None else name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit speaks instead
        try:
            img = Image.open(io.BytesIO(data))
        except Image.UnidentifiedImageError:
            raise IGRError(f"{name}: not an image (cannot identify the {what} file's format)") from None
        except Image.DecompressionBombError:
            img = None
        except Exception as exc:
            raise IGRError(f"{name}: unreadable {what} image ({_describe(exc)})") from None
        if img is None:  # PIL refused the header itself; read the size for the message
            raise IGRError(f"{name}: {what} image is over the limit of {MAX_PIXELS:,} pixels that guards "
                           "against decompression bombs")
        _check_pixels(img, name, what)
        try:
            if max_side is not None and max(img.size) > max_side:
                scale = max_side / max(img.size)
                img.draft(img.mode, (max(1, round(img.width * scale)), max(1, round(img.height * scale))))
            img.load()
            img = ImageOps.exif_transpose(img)
        except Exception as exc:  # truncated files, broken EXIF, unsupported modes
            raise IGRError(f"{name}: unreadable {what} image ({_describe(exc)})") from None
    if max_side is not None and max(img.size) > max_side:
        # In place, aspect kept; reducing_gap: an integer box reduction first, ~4x faster for the same result.
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return img


def header_size(data: bytes, what: str = "image", name: str | Path = "<bytes>") -> tuple[int, int]:
    """(W, H) of an image's bytes from the header only, the pixel limit checked; nothing is decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as img:
                _check_pixels(img, name, what)
                return img.size
        except IGRError:
            raise
        except Image.UnidentifiedImageError:
            raise IGRError(f"{name}: not an image (cannot identify the {what} file's format)") from None
        except Image.DecompressionBombError:
            raise IGRError(f"{name}: {what} image is over the limit of {MAX_PIXELS:,} pixels that guards "
                           "against decompression bombs") from None
        except Exception as exc:
            raise IGRError(f"{name}: unreadable {what} image ({_describe(exc)})") from None


def image_size(path: str | Path, what: str = "image") -> tuple[int, int]:
    """(H, W) as displayed (EXIF orientation applied), from the header only."""
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():  # a FIFO would block the open
        raise IGRError(f"{path}: not a regular file (a FIFO, device or socket), expected a {what} file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                w, h = img.size
                orientation = img.getexif().get(0x0112, 1)
        except FileNotFoundError:
            raise IGRError(f"{path}: {what} file not found") from None
        except PermissionError:
            raise IGRError(f"{path}: {what} file cannot be read (permission denied)") from None
        except Image.UnidentifiedImageError:
            raise IGRError(f"{path}: not an image (cannot identify the {what} file's format)") from None
        except Exception as exc:
            raise IGRError(f"{path}: unreadable {what} image ({_describe(exc)})") from None
    return (w, h) if orientation in _TRANSPOSED else (h, w)


def _grey_to_u8(img: Image.Image) -> np.ndarray:
    """Greyscale of any depth → uint8 HxW by value scaling (16-bit: /257, so 65535 → 255)."""
    a = np.asarray(img)
    if img.mode == "1":
        return a.astype(np.uint8) * 255
    if img.mode == "L":
        return a
    if img.mode.startswith("I;16") or img.mode == "I":
        a = a.astype(np.float64)
        # "I" holds what a 16-bit PNG decodes to in some Pillow versions; 8-bit data stays as it is.
        scale = 257.0 if img.mode != "I" or a.max(initial=0) > 255 else 1.0
        return np.clip(np.round(a / scale), 0, 255).astype(np.uint8)
    if img.mode == "F":
        a = a.astype(np.float64)
        a = a * 255 if a.max(initial=0) <= 1 else a  # a [0, 1] float image or one on the 0..255 scale
        return np.clip(np.round(a), 0, 255).astype(np.uint8)
    return np.asarray(img.convert("L"))


def has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info
    )


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode → 8-bit RGB; transparent pixels become white."""
    if has_alpha(img):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode in ("1", "L", "I", "F") or img.mode.startswith("I;16"):
        return Image.fromarray(_grey_to_u8(img), "L").convert("RGB")
    return img.convert("RGB")  # RGB, CMYK, YCbCr, LAB, HSV, P without transparency


def to_grey(img: Image.Image) -> np.ndarray:
    """A mask image of any mode → uint8 HxW on the 0..255 scale (RGB: the brightest channel; alpha ignored)."""
    if img.mode in ("1", "L", "I", "F") or img.mode.startswith("I;16"):
        return _grey_to_u8(img)
    if img.mode in ("LA", "La"):
        return np.asarray(img)[..., 0]
    return np.asarray(img.convert("RGB")).max(axis=-1)


def read_rgb(path: str | Path, what: str = "image") -> Image.Image:
    """An image file as 8-bit RGB, displayed orientation, alpha on white."""
    return to_rgb(decode(path, what))


# --------------------------------------------------------------------------- CSV

_ENCODINGS = ("utf-8-sig", "cp1252")
_MAX_TEXT_BYTES = 64 << 20  # a CSV of names and categories; far more is not one


def read_text(path: str | Path, what: str = "CSV") -> str:
    """A small text file's contents, decoded as UTF-8 (BOM optional), UTF-16 (with BOM) or Windows-1252."""
    path = Path(path)
    if not path.is_file():
        raise IGRError(f"{path}: {what} file not found" if not path.exists() else f"{path}: is not a file")
    raw = read_file_bytes(path, what, limit=_MAX_TEXT_BYTES)
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel's "Unicode text"
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise IGRError(f"{path}: not valid UTF-16 text (byte {exc.start})") from None
    if b"\x00" in raw:
        raise IGRError(f"{path}: not a text {what} file (it holds NUL bytes)")
    for encoding in _ENCODINGS:
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError as exc:
            error = exc
    bad = raw[error.start : error.start + 1].hex()
    raise IGRError(
        f"{path}: cannot decode the {what} file as UTF-8 or Windows-1252 (byte 0x{bad} at offset "
        f"{error.start}); save it as UTF-8"
    )


def read_csv(path: str | Path, what: str = "CSV") -> list[list[str]]:
    """Rows of a CSV file (encodings as :func:`read_text`), cells stripped of surrounding spaces."""
    text = read_text(path, what)
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise IGRError(f"{path}: malformed {what} ({exc})") from None
    return [[c.strip() for c in row] for row in rows]
