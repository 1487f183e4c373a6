"""Triangle meshes for Sketch-Shape guidance: the ``Mesh`` type, file loading and normalization.

Convention (DESIGN §1–2): y is up and +z is the front. ``normalize_mesh`` is the paper's preparation
v ← v − mean(v); v ← mesh_scale·v / max‖v‖, followed by an optional rotation and offset.

Every ``Mesh`` is valid by construction (at least one face, finite coordinates, indices in range, non-zero
extent and area); errors name the mesh's ``source`` (usually the file path) and the problem.

Memory: a ``Mesh`` holds float32 vertices (12 B each) and int64 faces (24 B each); loading goes through
trimesh (float64 copies) and validation temporaries: measured peak ≈ 0.25 KB per face (+375 MB for a
1.47M-face PLY, read in 0.2 s). The winding/distance structures built from it are accounted in ``winding``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

SUPPORTED_EXTENSIONS = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")
"""File types ``load_mesh`` reads (through trimesh)."""


def _readonly(array: np.ndarray, dtype) -> np.ndarray:
    """A read-only contiguous ``dtype`` array; writable inputs are copied so the caller's array stays writable."""
    if array.dtype == dtype and array.flags.c_contiguous and not array.flags.writeable:
        return array  # already ours (e.g. from another Mesh)
    array = np.array(array, dtype=dtype, order="C", copy=True)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Mesh:
    """A triangle mesh; arrays are numpy and read-only (functions return new meshes, inputs stay intact)."""

    vertices: np.ndarray
    """[V, 3] float32 positions (y up, +z front)."""
    faces: np.ndarray
    """[F, 3] int64 vertex indices; counter-clockwise seen from outside, so normals point outwards."""
    uv: np.ndarray | None = None
    """[V, 2] float32 texture coordinates when the source had them, else None."""
    source: str = "mesh"
    """Where the mesh came from (file path or primitive description); named in errors and warnings."""

    def __post_init__(self) -> None:
        name = self.source
        vertices = np.asarray(self.vertices)
        faces = np.asarray(self.faces)
        if vertices.ndim != 2 or vertices.shape[1] != 3:
            raise ValueError(f"{name}: vertices must have shape [V, 3], got {list(vertices.shape)}")
        if faces.size == 0:
            raise ValueError(f"{name}: mesh has no faces (a point cloud?); a sketch needs a triangle surface")
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"{name}: faces must have shape [F, 3] (triangles), got {list(faces.shape)}")
        if not np.issubdtype(faces.dtype, np.integer):
            raise ValueError(f"{name}: faces must be integer vertex indices, got dtype {faces.dtype}")
        if faces.min() < 0 or faces.max() >= vertices.shape[0]:
            raise ValueError(f"{name}: face indices must lie in [0, {vertices.shape[0] - 1}], got [{faces.min()}, {faces.max()}]")
        vertices = _readonly(vertices, np.float32)
        faces = _readonly(faces, np.int64)
        bad = int((~np.isfinite(vertices)).any(axis=1).sum())
        if bad:
            raise ValueError(f"{name}: {bad} vertices have non-finite coordinates (NaN or inf, or beyond float32)")
        used_mask = np.zeros(vertices.shape[0], dtype=bool)
        used_mask[faces.reshape(-1)] = True
        used = vertices[used_mask]
        extent = float((used.max(0) - used.min(0)).max())
        if extent <= 0.0:
            raise ValueError(f"{name}: mesh is degenerate: all {len(used)} used vertices coincide (zero extent)")
        if float(face_areas(vertices, faces).sum()) <= 1e-12 * extent * extent:
            raise ValueError(f"{name}: mesh is degenerate: all {len(faces)} faces have zero area")
        object.__setattr__(self, "vertices", vertices)
        object.__setattr__(self, "faces", faces)
        if self.uv is not None:
            uv = np.asarray(self.uv)
            if uv.shape != (vertices.shape[0], 2):
                raise ValueError(f"{name}: uv must have shape [V, 2] = [{vertices.shape[0]}, 2], got {list(uv.shape)}")
            object.__setattr__(self, "uv", _readonly(uv, np.float32))

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def bounds(self) -> np.ndarray:
        """[2, 3] min and max corner of the vertices."""
        return np.stack([self.vertices.min(0), self.vertices.max(0)])

    def with_vertices(self, vertices: np.ndarray, source: str | None = None) -> "Mesh":
        """A new mesh with the same faces and uv and new [V, 3] positions."""
        return Mesh(vertices, self.faces, self.uv, self.source if source is None else source)

    def flipped(self) -> "Mesh":
        """The same surface with the opposite orientation (inside and outside swapped)."""
        return Mesh(self.vertices, self.faces[:, ::-1], self.uv, self.source)

    def to_trimesh(self):
        """A ``trimesh.Trimesh`` copy (no processing, so vertex order is kept)."""
        import trimesh

        return trimesh.Trimesh(np.array(self.vertices), np.array(self.faces), process=False)


def face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[F] triangle areas of (vertices [V, 3], faces [F, 3])."""
    tri = np.asarray(vertices, dtype=np.float64)[faces]
    return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)


def _vector3(value: Sequence[float], name: str) -> np.ndarray:
    try:
        vector = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be three numbers (x, y, z), got {value!r}") from e
    if vector.shape != (3,) or not np.isfinite(vector).all():
        raise ValueError(f"{name} must be three finite numbers (x, y, z), got {value!r}")
    return vector


def rotation_matrix(rotation_deg: Sequence[float]) -> np.ndarray:
    """[3, 3] rotation for xyz Euler angles in degrees: about x first, then y, then z (fixed axes),
    i.e. R = Rz·Ry·Rx. (0, 90, 0) turns the front (+z) towards +x."""
    ax, ay, az = np.deg2rad(_vector3(rotation_deg, "rotation_deg"))
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def transform_mesh(
    mesh: Mesh, scale: float = 1.0, rotation_deg: Sequence[float] = (0.0, 0.0, 0.0), offset: Sequence[float] = (0.0, 0.0, 0.0)
) -> Mesh:
    """v ← R·(scale·v) + offset (R from ``rotation_matrix``); returns a new mesh."""
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    rotation = rotation_matrix(rotation_deg)
    shift = _vector3(offset, "offset")
    vertices = (scale * mesh.vertices.astype(np.float64)) @ rotation.T + shift
    return mesh.with_vertices(vertices.astype(np.float32))


def normalize_mesh(
    mesh: Mesh,
    mesh_scale: float = 0.7,
    rotation_deg: Sequence[float] = (0.0, 0.0, 0.0),
    offset: Sequence[float] = (0.0, 0.0, 0.0),
) -> Mesh:
    """The paper's sketch preparation: centre on the vertex mean, scale so the farthest vertex lies at
    ``mesh_scale`` from the origin, then rotate (xyz Euler degrees, see ``rotation_matrix``) and offset.

    The mean and radius are taken over all vertices of ``mesh.vertices`` (as the official code does).
    """
    if not (isinstance(mesh_scale, (int, float)) and math.isfinite(mesh_scale) and mesh_scale > 0):
        raise ValueError(f"mesh_scale must be a positive finite number, got {mesh_scale!r}")
    vertices = mesh.vertices.astype(np.float64)
    vertices = vertices - vertices.mean(axis=0)
    radius = float(np.linalg.norm(vertices, axis=1).max())
    centred = mesh.with_vertices(vertices.astype(np.float32))
    return transform_mesh(centred, mesh_scale / radius, rotation_deg, offset)


def _geometry_to_mesh(geometry, name: str) -> Mesh:
    import trimesh

    if isinstance(geometry, trimesh.Scene):
        parts = [g for g in geometry.dump(concatenate=False) if isinstance(g, trimesh.Trimesh) and len(g.faces)]
        if not parts:
            kinds = sorted({type(g).__name__ for g in geometry.geometry.values()}) or ["nothing"]
            raise ValueError(f"{name}: file contains no triangle faces (found {', '.join(kinds)}); a sketch needs a triangle surface")
        meshes = [_geometry_to_mesh(part, name) for part in parts]
        return meshes[0] if len(meshes) == 1 else concatenate_meshes(meshes, name)
    if not isinstance(geometry, trimesh.Trimesh):
        raise ValueError(f"{name}: mesh has no faces (got a {type(geometry).__name__}, a point cloud?); a sketch needs a triangle surface")
    uv = getattr(geometry.visual, "uv", None)
    if uv is not None and len(uv) != len(geometry.vertices):
        uv = None
    return Mesh(np.asarray(geometry.vertices), np.asarray(geometry.faces), uv, name)


def concatenate_meshes(meshes: Sequence[Mesh], source: str = "concatenation") -> Mesh:
    """One mesh holding all faces of ``meshes`` (no merging; uv kept only if every part has it)."""
    if not meshes:
        raise ValueError("meshes must hold at least one Mesh, got an empty sequence")
    starts = np.cumsum([0] + [m.num_vertices for m in meshes[:-1]])
    vertices = np.concatenate([m.vertices for m in meshes])
    faces = np.concatenate([m.faces + start for m, start in zip(meshes, starts)])
    uv = np.concatenate([m.uv for m in meshes]) if all(m.uv is not None for m in meshes) else None
    return Mesh(vertices, faces, uv, source)


def load_mesh(path: str | os.PathLike) -> Mesh:
    """Read a triangle mesh from OBJ, PLY, STL, OFF, GLB or GLTF (through trimesh).

    Scenes with several objects are merged with their scene-graph transforms applied. Vertices are kept
    as stored (no merging, nothing silently dropped), so bad data is reported rather than hidden.

    Raises:
        FileNotFoundError: ``path`` does not exist or is not a file.
        ValueError: unsupported extension, unreadable content, no faces (e.g. a point-cloud PLY),
            non-finite vertices, or a degenerate (zero-extent / zero-area) mesh.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"sketch mesh file not found: {file}")
    suffix = file.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise ValueError(f"{file}: unsupported mesh file extension {suffix or '(none)'!r}; supported: {', '.join(SUPPORTED_EXTENSIONS)}")
    import trimesh

    try:
        geometry = trimesh.load(str(file), file_type=suffix[1:], process=False)
    except Exception as e:  # trimesh raises many types for corrupt files
        raise ValueError(f"{file}: could not be read as a {suffix[1:].upper()} mesh: {type(e).__name__}: {e}") from e
    return _geometry_to_mesh(geometry, str(file))
