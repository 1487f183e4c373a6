"""xatlas UVs for meshes without usable ones, decimated first when huge, cached per mesh.

xatlas takes ≈ 1.3 s for nascar.obj (7.5k faces) and grows faster than linearly, so the result is cached
under the sha256 of the input vertices (float32) and faces (int64) and the unwrap settings: in memory
(least recently used, ``MEMORY_ENTRIES`` meshes) and, when the caller names a folder, on disk as
``<hash>.npz`` (plain arrays, loaded with ``allow_pickle=False``; a damaged file is recomputed). The
official Latent-Paint caches xatlas output per experiment with torch.save (pickle); we never unpickle.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MEMORY_ENTRIES = 16
"""Unwrapped meshes kept in memory (a 100k-face entry ≈ 4 MB)."""


@dataclass(frozen=True)
class Unwrapped:
    """A mesh with xatlas UVs (vertices split at chart seams)."""

    vertices: np.ndarray
    """[V, 3] float32."""
    faces: np.ndarray
    """[F, 3] int64."""
    uvs: np.ndarray
    """[V, 2] float32 in [0, 1], v up (``latent3d.export.uv`` convention)."""
    decimated_from: int | None = None
    """Face count before decimation, or None when the mesh was small enough."""


_memory: "OrderedDict[str, Unwrapped]" = OrderedDict()


def cache_key(vertices: np.ndarray, faces: np.ndarray, resolution: int, padding: int, max_faces: int) -> str:
    """sha256 hex of the mesh arrays (little-endian float32 / int64) and the settings."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(vertices, dtype="<f4").tobytes())
    digest.update(np.ascontiguousarray(faces, dtype="<i8").tobytes())
    digest.update(f"xatlas resolution={resolution} padding={padding} max_faces={max_faces}".encode())
    return digest.hexdigest()


def _read_entry(path: Path) -> Unwrapped | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            vertices, faces, uvs = data["vertices"], data["faces"], data["uvs"]
            decimated = int(data["decimated_from"])
    except Exception as e:  # a truncated or foreign file: recompute
        warnings.warn(f"UV cache file {path} is unreadable ({type(e).__name__}: {e}): recomputing", stacklevel=3)
        return None
    ok = vertices.ndim == 2 and vertices.shape[1] == 3 and faces.ndim == 2 and faces.shape[1] == 3 and uvs.shape == (len(vertices), 2)
    if not ok or not len(faces) or faces.min() < 0 or faces.max() >= len(vertices):
        warnings.warn(f"UV cache file {path} holds inconsistent arrays: recomputing", stacklevel=3)
        return None
    return Unwrapped(vertices.astype(np.float32), faces.astype(np.int64), uvs.astype(np.float32), decimated if decimated > 0 else None)


def _write_entry(path: Path, entry: Unwrapped) -> None:
    """Atomic: a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez(out, vertices=entry.vertices, faces=entry.faces, uvs=entry.uvs, decimated_from=np.int64(entry.decimated_from or 0))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _compute(vertices, faces, resolution, padding, max_faces, source) -> Unwrapped:
    from ..export import surface, uv

    decimated_from = None
    if len(faces) > max_faces:
        decimated_from = len(faces)
        vertices, faces = surface.decimate(np.asarray(vertices, dtype=np.float32), np.asarray(faces, dtype=np.int64), max_faces)
        warnings.warn(
            f"{source}: {decimated_from} faces is above max_unwrap_faces={max_faces}: decimated to {len(faces)} faces "
            "before xatlas UV unwrapping (the painted mesh is the decimated one)",
            stacklevel=4,
        )
    atlas = uv.unwrap(vertices, faces, resolution, padding)
    return Unwrapped(np.asarray(vertices, dtype=np.float32)[atlas.vertex_map], atlas.faces, atlas.uvs, decimated_from)


def unwrap_cached(
    vertices: np.ndarray,
    faces: np.ndarray,
    resolution: int,
    padding: int,
    max_faces: int,
    cache_dir: str | os.PathLike | None = None,
    source: str = "mesh",
) -> Unwrapped:
    """xatlas UVs for (vertices [V, 3], faces [F, 3]); meshes above ``max_faces`` are decimated first
    (quadric, ``latent3d.export.surface.decimate``) with a warning naming both counts. Cached as the
    module says; ``cache_dir`` None keeps the memory cache only."""
    key = cache_key(vertices, faces, resolution, padding, max_faces)
    entry = _memory.get(key)
    path = Path(cache_dir) / f"{key}.npz" if cache_dir is not None else None
    if entry is None and path is not None and path.is_file():
        entry = _read_entry(path)
    if entry is None:
        entry = _compute(vertices, faces, resolution, padding, max_faces, source)
        if path is not None:
            _write_entry(path, entry)
    elif entry.decimated_from is not None:
        warnings.warn(
            f"{source}: {entry.decimated_from} faces is above max_unwrap_faces={max_faces}: using the cached decimation "
            f"to {len(entry.faces)} faces",
            stacklevel=2,
        )
    _memory[key] = entry
    _memory.move_to_end(key)
    while len(_memory) > MEMORY_ENTRIES:
        _memory.popitem(last=False)
    return entry


def clear_memory_cache() -> None:
    """Forget the in-memory entries (the disk cache stays)."""
    _memory.clear()
