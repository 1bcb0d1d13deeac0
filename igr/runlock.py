"""One run folder, one writer: the lock ``igr fit`` takes in its run folder before it writes anything there.

Two fits started into one folder would otherwise both run and clobber each other's checkpoints, ``config.yaml``,
``hparams.yaml`` and event files. The lock is a file created with ``O_EXCL`` (atomic on a local filesystem and on
NFSv3+) holding the writer's pid, host and start time; it is removed when the command ends. A lock left by a
writer that died without removing it (``kill -9``, a power cut) is taken over, with a warning, when its pid is
gone on this host; a lock from another host is never taken over (its pid means nothing here).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import time
from pathlib import Path

from igr.atomic import pid_alive
from igr.errors import IGRError

LOCK_NAME = ".igr-run.lock"
log = logging.getLogger("igr.runlock")


class RunLock:
    """``RunLock(folder).acquire()`` … ``release()``; refuses (:class:`IGRError`, one line) while another live
    process holds the folder."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.held = False
        self._created_folder = False

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8")[:4096])
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        doc = {"pid": os.getpid(), "host": socket.gethostname(),
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": "igr fit"}
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(doc) + "\n")
        return True

    def acquire(self) -> RunLock:
        if not self.folder.exists():
            self.folder.mkdir(parents=True)
            self._created_folder = True
        if not self._create():
            held = self._read()
            pid, host = held.get("pid"), held.get("host")
            if isinstance(pid, int) and host == socket.gethostname() and not pid_alive(pid):
                log.warning("%s: taking over the lock of an igr fit that ended without removing it (pid %d, "
                            "started %s)", self.folder, pid, held.get("started", "?"))
                self.path.unlink(missing_ok=True)
                if self._create():
                    return self._held()
                held = self._read()  # another process took it over first
                pid, host = held.get("pid"), held.get("host")
            self._remove_created_folder()
            who = f"pid {pid} on {host}, since {held.get('started', '?')}" if pid else "unreadable lock"
            raise IGRError(
                f"{self.folder}: another igr fit is writing this run folder ({who}); wait for it or train into "
                f"another --trainer.default_root_dir (if that run is gone, remove {self.path})"
            )
        return self._held()

    def _held(self) -> RunLock:
        self.held = True
        _HELD.append(self)
        return self

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._read().get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self._remove_created_folder()
        if self in _HELD:
            _HELD.remove(self)

    def _remove_created_folder(self) -> None:
        """A fit refused before it wrote anything leaves no empty run folder behind."""
        if self._created_folder:
            try:
                self.folder.rmdir()
            except OSError:  # not empty: the run wrote files
                pass


_HELD: list[RunLock] = []


def release_all() -> None:
    """Release every lock this process holds (the end of ``igr fit``, and at exit)."""
    for lock in list(_HELD):
        lock.release()


atexit.register(release_all)


def run_folder() -> str:
    """The run folder this process holds (for messages), or "run folder"."""
    return str(_HELD[0].folder) if _HELD else "run folder"


def lock_run_folder(trainer) -> RunLock | None:
    """Lock the trainer's run folder (``default_root_dir``), on global rank 0 only: the other ranks of a DDP run
    are the same run. A remote root (``s3://``…) is not locked."""
    root = str(trainer.default_root_dir)
    if trainer.global_rank != 0 or "://" in root:
        return None
    return RunLock(root).acquire()
