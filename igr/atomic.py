"""The one way igr writes a final output: under a hidden temporary name beside its target, renamed into place.

An interrupted write leaves the previous file or folder (or nothing), never a half-written one: a reader, a
resume or a second run cannot pick up a partial output. The temporary sits in the target's folder so the rename
is atomic (same filesystem) and a crash leaves its debris there, not in the system temp folder. ``mkstemp`` and
``mkdtemp`` create 0600 files and 0700 folders; final outputs get the permissions the umask gives any new file
or folder, so a colleague or a service account can read them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
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


MARKER = ".igr-output"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def read_marker(folder: Path) -> dict:
    """The marker an igr command wrote into an output folder ({} when there is none or it is unreadable)."""
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8")[:4096])
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_marker(folder: Path, kind: str) -> None:
    # The pid and host let a later run tell a temporary left by a killed writer (gone) from one being written.
    doc = {"kind": kind, "pid": os.getpid(), "host": socket.gethostname()}
    (folder / MARKER).write_text(json.dumps(doc) + "\n", encoding="utf-8")


def remove_stale_temps(out: Path) -> list[Path]:
    """Remove temporaries of ``out`` whose writer is dead (``kill -9``, a power cut): the pid in their marker is
    gone on this host. A temporary without a marker, or from another host, is left alone."""
    removed = []
    parent = out.parent if str(out.parent) else Path(".")
    try:
        candidates = [p for p in parent.iterdir() if is_temp_of(p, out) and p.is_dir() and not p.is_symlink()]
    except OSError:
        return removed
    for tmp in candidates:
        mark = read_marker(tmp)
        pid = mark.get("pid")
        if isinstance(pid, int) and mark.get("host") == socket.gethostname() and not pid_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it, links resolved."""
    try:
        return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))
    except (OSError, ValueError):
        return False


def check_overwrite(out: str | Path, overwrite: bool, kind: str, inputs: Iterable[str | Path] = ()) -> None:
    """Refuse (one line) to replace ``out`` unless ``overwrite`` and it is an earlier igr output of the same
    ``kind`` (its marker says so) that is neither the current folder nor one of its ancestors and holds none of
    this command's ``inputs``. Nothing is replaced that the user did not create with igr as this kind of output."""
    out = Path(out)
    if not os.path.lexists(out):
        return
    if not overwrite:
        raise IGRError(f"{out}: already exists (pass --overwrite to replace it)")
    if out.is_symlink() or not out.is_dir():
        raise IGRError(f"{out}: not an earlier {kind} folder written by igr; --overwrite replaces only those")
    if _inside(Path.cwd(), out):
        raise IGRError(f"{out}: is the current folder or one of its parents; --overwrite never replaces that")
    for p in inputs:
        if p is not None and os.path.exists(p) and _inside(Path(p), out):
            raise IGRError(f"{out}: holds {p}, an input of this command; --overwrite never replaces an input")
    found = read_marker(out).get("kind")
    if found != kind:
        what = f"an igr {found} output" if found else f"no {MARKER} marker of an igr output"
        raise IGRError(f"{out}: not an earlier {kind} folder written by igr ({what}); --overwrite replaces only "
                       "those: remove it yourself or choose another output")


@contextmanager
def atomic_directory(
    out: str | Path, overwrite: bool = False, *, kind: str, inputs: Iterable[str | Path] = ()
) -> Iterator[Path]:
    """``with atomic_directory(out, kind=...) as tmp:`` write into ``tmp``; on success it replaces ``out``.

    The finished folder holds a :data:`MARKER` naming ``kind``; with ``overwrite``, ``out`` is replaced only when it
    is an earlier output of that kind and holds none of ``inputs`` (:func:`check_overwrite`). Temporaries of ``out``
    left by a killed writer are removed first."""
    out = Path(out)
    inputs = list(inputs)
    check_overwrite(out, overwrite, kind, inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out), suffix=TMP_SUFFIX, dir=out.parent))
    try:
        _write_marker(tmp, kind)
        yield tmp
        _normalise_modes(tmp)
        if os.path.lexists(out):
            check_overwrite(out, overwrite, kind, inputs)  # again: the folder may have changed while we wrote
            # Out of the way by a rename first, so a failure between the two steps leaves the old folder whole.
            old = Path(tempfile.mkdtemp(prefix=temp_prefix(out), suffix=TMP_SUFFIX, dir=out.parent))
            _write_marker(old, "replaced")  # a kill before the rmtree leaves a temporary the next run removes
            os.replace(out, old / "old")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
