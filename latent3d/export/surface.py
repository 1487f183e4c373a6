"""Iso-surface, orientation, floater removal, decimation and vertex normals (numpy, CPU)."""

from __future__ import annotations

import logging

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..shape.mesh_io import face_areas
from .density import DensityLattice

log = logging.getLogger(__name__)


def marching_cubes(lattice: DensityLattice) -> tuple[np.ndarray, np.ndarray]:
    """Iso-surface of ``lattice`` at its threshold -> (vertices [V, 3] float32 world, faces [F, 3] int64).

    Marching cubes runs on log σ at level log(threshold): the field's density is exp(h) of a smooth h, so
    log σ varies about linearly across the surface and the interpolated crossing lands where the field's
    iso-surface is; interpolating σ itself puts it up to half a lattice cell too far out. The lattice is
    padded with one layer of empty space, so a solid touching the box still gives closed surfaces. Faces
    come out counter-clockwise seen from outside (positive signed volume).
    """
    from skimage.measure import marching_cubes as skimage_marching_cubes

    if not lattice.values.max() > lattice.threshold:
        raise ValueError(
            f"no surface: the density never exceeds the threshold {lattice.threshold:.4g} (max {lattice.values.max():.4g}); "
            "lower ExportConfig.threshold"
        )
    # clip empty space at 1 % of the level: a smooth field's crossing is unaffected, and a hard 0/σ step
    # (analytic fields) still lands near the middle of its cell instead of far inside
    floor = lattice.threshold * 1e-2
    values = np.log(np.maximum(np.pad(lattice.values, 1, mode="constant", constant_values=0.0), floor))
    h = lattice.spacing
    vertices, faces, _, _ = skimage_marching_cubes(values, level=float(np.log(lattice.threshold)), spacing=(h, h, h), allow_degenerate=False)
    vertices = vertices - (h + lattice.bound)  # undo the padding, lattice origin at -bound
    return orient_outward(vertices.astype(np.float32), faces.astype(np.int64))


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Σ det(v0, v1, v2)/6 over faces: the enclosed volume, positive when faces wind outward."""
    v0, v1, v2 = (vertices[faces[:, i]].astype(np.float64) for i in range(3))
    return float(np.einsum("ij,ij->", v0, np.cross(v1, v2)) / 6.0)


def orient_outward(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip every face when the enclosed volume is negative (one consistent orientation is assumed)."""
    if len(faces) and signed_volume(vertices, faces) < 0:
        faces = np.ascontiguousarray(faces[:, ::-1])
    return vertices, faces


def compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop degenerate faces (repeated indices) and unreferenced vertices; indices renumbered."""
    good = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    faces = faces[good]
    used, inverse = np.unique(faces.reshape(-1), return_inverse=True)
    return np.ascontiguousarray(vertices[used]), inverse.reshape(-1, 3).astype(np.int64)


def remove_small_components(vertices: np.ndarray, faces: np.ndarray, min_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Keep connected components (sharing a vertex) whose area is >= ``min_fraction`` × the largest's."""
    if min_fraction <= 0 or len(faces) == 0:
        return vertices, faces
    n = len(vertices)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
    count, labels = connected_components(graph, directed=False)
    if count == 1:
        return vertices, faces
    face_label = labels[faces[:, 0]]
    area = np.bincount(face_label, weights=face_areas(vertices, faces), minlength=count)
    keep = area >= min_fraction * area.max()
    log.info("components: %d, kept %d (area >= %.3g of the largest)", count, int(keep.sum()), min_fraction)
    return compact(vertices, faces[keep[face_label]])


def decimate(vertices: np.ndarray, faces: np.ndarray, face_budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadric-error decimation (fast-simplification) to at most ``face_budget`` faces."""
    if len(faces) <= face_budget:
        return vertices, faces
    try:
        import fast_simplification
    except ImportError as e:
        raise ImportError("decimation needs fast-simplification: pip install fast-simplification") from e
    target = face_budget
    for _ in range(4):  # the decimator may stop a little above the requested count: ask for fewer
        reduction = min(1.0 - target / len(faces), 0.999)
        points, triangles = fast_simplification.simplify(vertices.astype(np.float64), faces.astype(np.int32), target_reduction=reduction)
        out_v, out_f = compact(points.astype(np.float32), np.asarray(triangles, dtype=np.int64))
        if len(out_f) <= face_budget:
            return orient_outward(out_v, out_f)
        target = max(4, int(target * face_budget / len(out_f) * 0.98))
    raise RuntimeError(f"decimation could not reach face_budget {face_budget}: got {len(out_f)} faces from {len(faces)}")


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[V, 3] float32 unit normals: area-weighted sum of adjacent face normals (+z where undefined)."""
    v0, v1, v2 = (vertices[faces[:, i]].astype(np.float64) for i in range(3))
    face_n = np.cross(v1 - v0, v2 - v0)  # length = 2 × area: the area weighting
    n = len(vertices)
    normals = np.stack(
        [sum(np.bincount(faces[:, c], weights=face_n[:, axis], minlength=n) for c in range(3)) for axis in range(3)], -1
    )
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(length > 1e-20, normals / np.maximum(length, 1e-20), np.array([0.0, 0.0, 1.0]))
    return normals.astype(np.float32)
