"""The one way igr writes a final output: under a hidden temporary name beside its target, renamed into place.

An interrupted write leaves the previous file or folder (or nothing), never a half-written one: a reader, a
resume or a second run cannot pick up a partial output. The temporary sits in the target's folder so the rename
is atomic (same filesystem) and a crash leaves its debris there, not in the system temp folder. ``mkstemp`` and
``mkdtemp`` create 0600 files and 0700 folders; final outputs get the permissions the umask gives any new file
or folder, so a colleague or a service account can read them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from igr.errors import IGRError

TMP_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (os.umask only swaps it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(is_dir: bool = False) -> int:
    """What ``open(..., "w")`` / ``mkdir`` would give: 0666 / 0777 less the umask."""
    return (0o777 if is_dir else 0o666) & ~current_umask()


def temp_prefix(path: Path) -> str:
    return f".{path.name}."


def is_temp_of(tmp: Path, path: Path) -> bool:
    """Whether ``tmp`` is a leftover of an interrupted write of ``path``."""
    return tmp.name.startswith(temp_prefix(path)) and tmp.name.endswith(TMP_SUFFIX)


class AtomicFile:
    """A file written under a temporary name and renamed to ``path`` by :meth:`commit`.

    For writers that keep a file open across calls (a tar shard growing sample by sample); one-shot writes use
    :func:`atomic_file`. :meth:`abort` removes the temporary.
    """

    def __init__(self, path: str | Path, mode: str = "wb", encoding: str | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(self.path), suffix=TMP_SUFFIX, dir=self.path.parent)
        self.tmp = Path(tmp)
        try:
            self.file: IO = os.fdopen(fd, mode, encoding=encoding, newline="" if "b" not in mode else None)
        except BaseException:
            os.close(fd)
            self.tmp.unlink(missing_ok=True)
            raise

    def commit(self) -> Path:
        f = self.file
        f.flush()
        os.fsync(f.fileno())
        os.fchmod(f.fileno(), default_mode())
        f.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self.file.close()
        finally:
            self.tmp.unlink(missing_ok=True)


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """``with atomic_file(path) as f:`` write to ``f``; on success it replaces ``path``, on error nothing changes."""
    out = AtomicFile(path, mode, encoding)
    try:
        yield out.file
    except BaseException:
        out.abort()
        raise
    out.commit()


def _normalise_modes(root: Path) -> None:
    """Umask permissions for a finished folder and everything in it: besides mkdtemp's 0700, some writers
    (safetensors' ``save_file``) create 0600 files."""
    os.chmod(root, default_mode(is_dir=True))
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), default_mode(is_dir=True))
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, default_mode() | (os.stat(path).st_mode & 0o111 & ~current_umask()))


@contextmanager
def atomic_directory(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """``with atomic_directory(out) as tmp:`` write into ``tmp``; on success it replaces ``out``."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise IGRError(f"{out}: already exists (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out), suffix=TMP_SUFFIX, dir=out.parent))
    try:
        yield tmp
        _normalise_modes(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
