"""The training nodes' run folders (``output/latent3d/runs/<run key>/``): what is kept, what is pruned.

Host-free: every function takes the runs folder. What a run folder holds: the checkpoint
(``nerf``/``paint``/``refined`` ``.safetensors`` + its ``.json`` twin) and the lock file a running node
holds. What resume needs is the checkpoint; an interrupted run keeps its optimizer state (exact resume), a
completed run drops it unless the node's ``keep_optimizer`` is on (a third of the size; training it further
restarts Adam's moments).

Bounded: before a training node starts, :func:`prune_runs` deletes the folders of killed runs (no
checkpoint, no live lock) and all but the ``keep`` most recent runs (KEEP_RUNS, or ``LATENT3D_KEEP_RUNS``).
A folder whose lock is held (a run in progress, in this or another process) is never deleted.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..latent3d.runfolder import folder_in_use

RUNS_FOLDER = "latent3d/runs"
"""Where the run folders live, relative to ComfyUI's output folder."""
KEEP_RUNS = 20
"""Run folders kept by default when a new run starts (≈ 1.1 GB of completed Latent-NeRF runs at most)."""
KEEP_RUNS_ENV = "LATENT3D_KEEP_RUNS"
CHECKPOINT_SUFFIX = ".safetensors"


@dataclass(frozen=True)
class RunFolder:
    """One run folder: its size, when it was last written, and whether it holds a checkpoint."""

    path: Path
    bytes: int
    modified: float
    """Newest modification time of the folder or a file in it (seconds since the epoch)."""
    has_checkpoint: bool

    @property
    def key(self) -> str:
        return self.path.name


def keep_runs_setting(default: int = KEEP_RUNS) -> int:
    """How many runs to keep: ``LATENT3D_KEEP_RUNS`` when set to an integer ≥ 1, else ``default``."""
    value = os.environ.get(KEEP_RUNS_ENV, "").strip()
    if not value:
        return default
    try:
        keep = int(value)
    except ValueError as error:
        raise ValueError(f"{KEEP_RUNS_ENV} must be an integer >= 1 (run folders to keep), got {value!r}") from error
    if keep < 1:
        raise ValueError(f"{KEEP_RUNS_ENV} must be an integer >= 1 (run folders to keep), got {value!r}")
    return keep


def _describe(path: Path) -> RunFolder:
    size, newest, checkpoint = 0, path.stat().st_mtime, False
    for item in path.rglob("*"):
        if item.is_file() and not item.is_symlink():
            stat = item.stat()
            size += stat.st_size
            newest = max(newest, stat.st_mtime)
            checkpoint = checkpoint or item.suffix == CHECKPOINT_SUFFIX
    return RunFolder(path, size, newest, checkpoint)


def list_runs(root: str | Path) -> list[RunFolder]:
    """The run folders under ``root``, most recently written first (none when ``root`` does not exist)."""
    root = Path(root)
    if not root.is_dir():
        return []
    folders = [_describe(p) for p in root.iterdir() if p.is_dir() and not p.is_symlink()]
    return sorted(folders, key=lambda f: f.modified, reverse=True)


def remove_runs(root: str | Path, keep: int, protect: tuple[str, ...] = (), min_age_s: float = 0.0) -> list[RunFolder]:
    """Delete run folders under ``root``: those without a checkpoint, then all but the ``keep`` most recent
    with one. ``protect`` (run keys), folders in use, and folders written less than ``min_age_s`` ago are
    kept. Returns the deleted folders."""
    if keep < 0:
        raise ValueError(f"keep must be >= 0 (run folders to keep), got {keep}")
    removed, kept = [], 0
    now = time.time()
    for run in list_runs(root):
        recent = now - run.modified < min_age_s
        if run.key in protect or recent or folder_in_use(run.path):
            kept += run.has_checkpoint
            continue
        if run.has_checkpoint and kept < keep:
            kept += 1
            continue
        shutil.rmtree(run.path, ignore_errors=True)
        removed.append(run)
    return removed


def prune_runs(root: str | Path, current: str, keep: int | None = None) -> list[RunFolder]:
    """What a training node does before it starts run ``current``: keep that run and the ``keep`` most
    recent others (default :func:`keep_runs_setting`), delete the rest and killed runs' empty folders. A
    checkpoint-less folder younger than a minute is left alone (a run that is just starting elsewhere)."""
    keep = keep_runs_setting() if keep is None else keep
    return remove_runs(root, keep, protect=(current,), min_age_s=60.0)


def summary(runs: list[RunFolder]) -> str:
    """'3 runs, 171.2 MB' style text."""
    total = sum(r.bytes for r in runs)
    return f"{len(runs)} run{'s' if len(runs) != 1 else ''}, {total / 2**20:.1f} MB"
