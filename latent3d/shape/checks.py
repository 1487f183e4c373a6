"""Sketch diagnostics: open boundaries, overlapping or self-intersecting parts, inside-out orientation.

None of these stop Sketch-Shape guidance (the generalized winding number copes with all of them), but the
user should know: ``prepare_sketch`` warns about open and overlapping sketches and flips inside-out ones.
Overlap and orientation are detected by sampling the winding number (probes), not by exact intersection
tests, so tiny overlapping features can go unnoticed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .mesh_io import Mesh


@dataclass(frozen=True)
class SketchReport:
    """What ``inspect_sketch`` found."""

    boundary_edges: int
    """Edges used by one face only (after merging coincident vertices): holes in the surface."""
    nonmanifold_edges: int
    """Edges shared by more than two faces."""
    winding_min: float
    """Smallest winding number at the bounding-box probes (≈ −1: inside-out or self-intersecting parts)."""
    winding_max: float
    """Largest winding number at the bounding-box probes (≈ 2: overlapping parts)."""
    orientation: float
    """Mean winding number just around the surface: ≈ +0.5 outward-facing, ≈ −0.5 inside out, ≈ 0 an open sheet."""
    overlap_fraction: float
    """Fraction of the bounding-box probes with winding number > 1.5 or < −0.5."""

    @property
    def watertight(self) -> bool:
        return self.boundary_edges == 0 and self.nonmanifold_edges == 0

    @property
    def inverted(self) -> bool:
        return self.orientation < -0.25

    @property
    def overlapping(self) -> bool:
        """More than 0.5 % of the box probes see overlapping or inverted parts. (The seams left by
        ``union_meshes`` reach ≈ 0.15 %; a concatenation of two overlapping spheres ≈ 2 %.)"""
        return self.overlap_fraction > 0.005


def edge_counts(mesh: Mesh) -> tuple[int, int]:
    """(boundary edges, non-manifold edges) with vertices at identical positions merged."""
    _, index = np.unique(mesh.vertices, axis=0, return_inverse=True)
    faces = index.reshape(-1)[mesh.faces]
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    edges = edges[edges[:, 0] != edges[:, 1]]  # collapsed edges of degenerate faces
    keys = edges[:, 0] * (int(index.max()) + 1) + edges[:, 1]
    _, counts = np.unique(keys, return_counts=True)
    return int((counts == 1).sum()), int((counts > 2).sum())


def inspect_sketch(mesh: Mesh, winding_number: Callable[[np.ndarray], np.ndarray], probes: int = 4096, seed: int = 0) -> SketchReport:
    """Diagnose ``mesh`` with ``winding_number(points [N, 3]) -> [N]`` (e.g. ``ExactSketch.winding_number_np``).

    Probes: ``probes`` uniform points in the bounding box (for the winding range), plus points just in front
    of and behind the centroids of up to ``probes`` random faces, offset by 1e-3 of the box diagonal along
    the face normal (for the orientation). Seeded, so the report is reproducible.
    """
    rng = np.random.default_rng(seed)
    lo, hi = mesh.bounds().astype(np.float64)
    diagonal = float(np.linalg.norm(hi - lo))
    box = rng.uniform(lo, hi, size=(probes, 3))
    chosen = rng.choice(mesh.num_faces, size=min(probes, mesh.num_faces), replace=False)
    tri = mesh.vertices.astype(np.float64)[mesh.faces[chosen]]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(normal, axis=1, keepdims=True)
    valid = length[:, 0] > 0
    normal = normal[valid] / length[valid]
    centroid = tri[valid].mean(axis=1)
    step = 1e-3 * diagonal
    w_box = winding_number(box)
    w_front = winding_number(centroid + step * normal)
    w_back = winding_number(centroid - step * normal)
    orientation = float(np.mean((w_front + w_back) / 2)) if len(centroid) else 0.0
    boundary, nonmanifold = edge_counts(mesh)
    overlap = float(((w_box > 1.5) | (w_box < -0.5)).mean())
    return SketchReport(boundary, nonmanifold, float(w_box.min()), float(w_box.max()), orientation, overlap)


def prepare_sketch(mesh: Mesh, winding_number: Callable[[np.ndarray], np.ndarray]) -> tuple[Mesh, SketchReport]:
    """Warn about what ``inspect_sketch`` finds and flip an inside-out mesh; returns (mesh to use, report).

    After a flip, ``winding_number`` (built for the input) no longer matches the returned mesh: rebuild it.
    """
    report = inspect_sketch(mesh, winding_number)
    name = mesh.source
    if report.inverted:
        warnings.warn(
            f"sketch {name} is inside out (its faces point inwards; mean winding number next to the surface "
            f"{report.orientation:+.2f}): its faces were flipped",
            stacklevel=3,
        )
        mesh = mesh.flipped()
        report = inspect_sketch(mesh, lambda points: -winding_number(points))  # flipping negates the winding number
    if not report.watertight:
        warnings.warn(
            f"sketch {name} is not watertight ({report.boundary_edges} boundary edges, {report.nonmanifold_edges} "
            "non-manifold edges): accepted; the generalized winding number still separates inside (> 0.5) from "
            "outside, with values near 0.5 close to the holes",
            stacklevel=3,
        )
    if report.overlapping:
        warnings.warn(
            f"sketch {name} has overlapping or self-intersecting parts (winding number from {report.winding_min:.2f} "
            f"to {report.winding_max:.2f}; beyond [-0.5, 1.5] at {100 * report.overlap_fraction:.1f} % of sampled points): "
            "accepted; everything with winding number > 0.5 counts as inside (the union of the parts)",
            stacklevel=3,
        )
    return mesh, report
