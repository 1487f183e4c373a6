"""A run's output folder: an exclusive lock so two runs never write one folder, and the metrics log.

The lock is an OS file lock (``fcntl.flock`` / ``msvcrt.locking``) on ``<folder>/.latent3d.lock``: the OS
drops it when the process ends, however it ends (kill -9 included), so a dead run never leaves the folder
locked. The file itself stays (a few bytes holding the last owner's pid).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

LOCK_NAME = ".latent3d.lock"


class FolderInUseError(OSError):
    """Another live process holds the folder's lock."""


class FolderLock:
    """``with FolderLock(folder):`` holds ``folder`` exclusively (created if missing), or raises
    FolderInUseError at once (never waits) naming the folder and the owner's pid."""

    def __init__(self, folder: str | os.PathLike, what: str = "run") -> None:
        self.folder = Path(folder)
        self.what = what
        self._file = None

    def __enter__(self) -> "FolderLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.folder / LOCK_NAME, "a+")
        try:
            _lock(handle)
        except OSError as e:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise FolderInUseError(
                f"{self.folder} is in use by another {self.what} (pid {owner}); wait for it to finish or choose another folder"
            ) from e
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._file is not None:
            _unlock(self._file)
            self._file.close()
            self._file = None


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(handle) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)

    def _unlock(handle) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock(handle) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(handle) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def folder_in_use(folder: str | os.PathLike) -> bool:
    """True when a live process (this one included) holds ``folder``'s lock. Tests the lock without keeping
    it and without writing (the folder's modification times stay as they are)."""
    path = Path(folder) / LOCK_NAME
    if not path.is_file():
        return False
    with open(path, "a+") as handle:
        try:
            _lock(handle)
        except OSError:
            return True
        _unlock(handle)
    return False


def json_safe(value: Any) -> Any:
    """``value`` with NaN and ±inf floats replaced by None (JSON has no NaN), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


class MetricsLog:
    """``metrics.jsonl``: one JSON object per step, written and flushed line by line (a crash loses at
    most the line being written), never bare NaN (non-finite values become null).

    Opened for a run resumed at step ``keep_until``, lines of later steps (written after that checkpoint,
    then lost with the process) are dropped, so the log matches the resumed history; ``keep_until`` 0
    starts an empty log.
    """

    def __init__(self, path: str | os.PathLike, keep_until: int = 0) -> None:
        self.path = Path(path)
        kept: list[str] = []
        if keep_until > 0 and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    if int(json.loads(line).get("step", 0)) <= keep_until:
                        kept.append(line)
                except (ValueError, AttributeError, TypeError):
                    continue  # a torn last line
        self._file = self.path.open("w", buffering=1)
        for line in kept:
            self._file.write(line + "\n")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "MetricsLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
