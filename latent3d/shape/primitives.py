"""Closed primitives and their union: Sketch-Shapes without a file (and known answers for tests).

Every primitive is watertight with outward normals, centred at ``center``; long axes default to y (up).
``union_meshes`` concatenates parts and, by default, drops the faces that lie inside another part, so that
the surface distance of the union is the distance to its outer surface (docs/method.md §2's ω would otherwise
treat buried faces as "surface" and leave the interior around them unconstrained). The generalized
winding number of the result is ≈ 1 inside the union and ≈ 0 outside either way.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np

from .mesh_io import Mesh, concatenate_meshes, transform_mesh

Axis = Literal["x", "y", "z"]
# rotations taking trimesh's z-aligned primitives onto each axis (xyz Euler degrees, see rotation_matrix)
_AXIS_ROTATION = {"x": (0.0, 90.0, 0.0), "y": (-90.0, 0.0, 0.0), "z": (0.0, 0.0, 0.0)}


def _positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _sections(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 3:
        raise ValueError(f"sections must be an integer >= 3, got {value!r}")
    return value


def _from_trimesh(geometry, source: str, axis: Axis, center: Sequence[float]) -> Mesh:
    if axis not in _AXIS_ROTATION:
        raise ValueError(f"axis must be 'x', 'y' or 'z', got {axis!r}")
    mesh = Mesh(np.asarray(geometry.vertices), np.asarray(geometry.faces), source=source)
    return transform_mesh(mesh, 1.0, _AXIS_ROTATION[axis], center)


def make_sphere(radius: float = 0.5, subdivisions: int = 3, center: Sequence[float] = (0.0, 0.0, 0.0)) -> Mesh:
    """Icosphere; ``subdivisions`` 3 → 1,280 faces (volume 0.9915× the true ball), 4 → 5,120 faces."""
    import trimesh

    if not isinstance(subdivisions, int) or not 0 <= subdivisions <= 9:
        raise ValueError(f"subdivisions must be an integer in [0, 9], got {subdivisions!r}")
    geometry = trimesh.creation.icosphere(subdivisions=subdivisions, radius=_positive("radius", radius))
    return _from_trimesh(geometry, f"sphere(r={radius})", "z", center)


def make_box(extents: Sequence[float] = (1.0, 1.0, 1.0), center: Sequence[float] = (0.0, 0.0, 0.0)) -> Mesh:
    """Axis-aligned box with side lengths ``extents`` (x, y, z); 12 faces."""
    import trimesh

    sizes = [_positive(f"extents[{i}]", float(e)) for i, e in enumerate(extents)]
    if len(sizes) != 3:
        raise ValueError(f"extents must be three side lengths, got {extents!r}")
    return _from_trimesh(trimesh.creation.box(extents=sizes), f"box({sizes})", "z", center)


def make_capsule(
    radius: float = 0.15, length: float = 0.6, axis: Axis = "y", center: Sequence[float] = (0.0, 0.0, 0.0), sections: int = 24
) -> Mesh:
    """Capsule (cylinder with hemispherical caps) of total tip-to-tip ``length`` >= 2·radius along ``axis``."""
    import trimesh

    radius, length = _positive("radius", radius), _positive("length", length)
    if length < 2 * radius:
        raise ValueError(f"length must be >= 2*radius = {2 * radius}, got {length}")
    geometry = trimesh.creation.capsule(height=length - 2 * radius, radius=radius, count=[_sections(sections), sections])
    return _from_trimesh(geometry, f"capsule(r={radius}, length={length})", axis, center)


def make_cylinder(
    radius: float = 0.25, height: float = 0.5, axis: Axis = "y", center: Sequence[float] = (0.0, 0.0, 0.0), sections: int = 32
) -> Mesh:
    """Closed cylinder of ``height`` along ``axis`` (4·sections faces)."""
    import trimesh

    geometry = trimesh.creation.cylinder(radius=_positive("radius", radius), height=_positive("height", height), sections=_sections(sections))
    return _from_trimesh(geometry, f"cylinder(r={radius}, h={height})", axis, center)


def make_torus(
    major_radius: float = 0.45,
    minor_radius: float = 0.15,
    axis: Axis = "y",
    center: Sequence[float] = (0.0, 0.0, 0.0),
    sections: int = 32,
) -> Mesh:
    """Torus around ``axis`` (its hole is along ``axis``); the centre point is outside the solid."""
    import trimesh

    major, minor = _positive("major_radius", major_radius), _positive("minor_radius", minor_radius)
    if minor >= major:
        raise ValueError(f"minor_radius must be < major_radius = {major}, got {minor}")
    geometry = trimesh.creation.torus(major, minor, major_sections=_sections(sections), minor_sections=sections)
    return _from_trimesh(geometry, f"torus(R={major}, r={minor})", axis, center)


def union_meshes(parts: Sequence[Mesh], offsets: Sequence[Sequence[float]] | None = None, remove_inner: bool = True) -> Mesh:
    """The union of closed ``parts`` (each moved by its offset) as one mesh.

    With ``remove_inner`` a face is dropped when all three of its vertices lie inside (winding number
    >= 0.499, so coplanar contact faces count as inside) another part. Faces crossing another part are kept, so
    the remaining pieces overlap slightly along the seams instead of leaving holes. The result is
    generally not watertight; its winding number is still ≈ 1 inside and ≈ 0 outside.
    """
    import igl

    if len(parts) == 0:
        raise ValueError("parts must hold at least one Mesh, got an empty sequence")
    if offsets is not None:
        if len(offsets) != len(parts):
            raise ValueError(f"offsets must have one (x, y, z) per part ({len(parts)}), got {len(offsets)}")
        parts = [transform_mesh(p, 1.0, (0.0, 0.0, 0.0), o) for p, o in zip(parts, offsets)]
    source = "union(" + ", ".join(p.source for p in parts) + ")"
    if not remove_inner or len(parts) == 1:
        return concatenate_meshes(list(parts), source)
    kept = []
    for i, part in enumerate(parts):
        others = concatenate_meshes([p for j, p in enumerate(parts) if j != i])
        winding = igl.fast_winding_number(
            others.vertices.astype(np.float64), others.faces, part.vertices.astype(np.float64)
        )
        buried = (winding >= 0.499)[part.faces].all(axis=1)
        if not buried.all():
            kept.append(Mesh(part.vertices, part.faces[~buried], source=part.source))
    if not kept:  # e.g. identical coincident parts: every face is "inside" another
        return concatenate_meshes(list(parts[:1]), source)
    return concatenate_meshes(kept, source)


def make_teddy_sketch(subdivisions: int = 3) -> Mesh:
    """A teddy-bear-like union of spheres (body, head, snout, ears, arms, legs), facing +z, ≈ 1.1 tall.

    About 13k faces at ``subdivisions`` 3 before inner faces are removed. Useful as a file-free sketch.
    """
    spheres = [
        ((0.0, -0.12, 0.0), 0.32),  # body
        ((0.0, 0.33, 0.0), 0.21),  # head
        ((0.0, 0.29, 0.19), 0.08),  # snout
        ((-0.16, 0.5, 0.0), 0.08),  # ears
        ((0.16, 0.5, 0.0), 0.08),
        ((-0.3, 0.0, 0.1), 0.11),  # arms
        ((0.3, 0.0, 0.1), 0.11),
        ((-0.17, -0.4, 0.14), 0.13),  # legs
        ((0.17, -0.4, 0.14), 0.13),
    ]
    parts = [make_sphere(radius, subdivisions, center) for center, radius in spheres]
    union = union_meshes(parts)
    return Mesh(union.vertices, union.faces, source="teddy_sketch")


PRIMITIVE_SHAPES = ("sphere", "box", "capsule", "cylinder", "teddy")


def make_primitive(shape: str, size: Sequence[float], axis: Axis = "y", center: Sequence[float] = (0.0, 0.0, 0.0)) -> Mesh:
    """One primitive by name, with ``size`` = (x, y, z) read per shape: sphere (radius = x), box (extents
    x, y, z), capsule and cylinder (radius = x, length along ``axis`` = y), teddy (a preset; size unused)."""
    if shape not in PRIMITIVE_SHAPES:
        raise ValueError(f"shape must be one of {PRIMITIVE_SHAPES}, got {shape!r}")
    if len(size) != 3:
        raise ValueError(f"size must be three numbers (x, y, z), got {size!r}")
    if shape == "sphere":
        return make_sphere(size[0], center=center)
    if shape == "box":
        return make_box(size, center=center)
    if shape == "capsule":
        return make_capsule(size[0], size[1], axis=axis, center=center)
    if shape == "cylinder":
        return make_cylinder(size[0], size[1], axis=axis, center=center)
    teddy = make_teddy_sketch()
    return transform_mesh(teddy, 1.0, (0.0, 0.0, 0.0), center)
