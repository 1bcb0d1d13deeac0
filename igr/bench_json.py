"""The ``--json PATH`` of the measuring commands (``igr bench-data``, ``igr bench-metrics``): the path checked before
any work, and the figures written with the machine they were measured on (for figures quoted elsewhere: README)."""

from __future__ import annotations

import json
import os
from typing import Any

from igr.errors import IGRError


def check_json_path(path: str | None) -> None:
    """One error line, before anything is measured, when ``path`` lies in a folder that does not exist."""
    folder = os.path.dirname(os.path.abspath(path)) if path else None
    if folder and not os.path.isdir(folder):
        raise IGRError(f"--json {path}: folder {folder} does not exist")


def write_json_record(path: str, device, load_average: float, **fields: Any) -> None:
    """``fields`` after the machine (device, cores, load average, library versions), written atomically."""
    # igr.bench imports the models: loaded only once there is something to write
    from igr.atomic import atomic_file
    from igr.bench import device_name, library_versions

    record = {"machine": device_name(device), "cpu_count": os.cpu_count(),
              # the larger of the 1-minute averages before and after: others' jobs slow the wall clock
              "load_average": load_average, "versions": library_versions(), **fields}
    with atomic_file(path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
