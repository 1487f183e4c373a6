"""Triangle meshes for Sketch-Shape guidance: the ``Mesh`` type, file loading and normalization.

Convention (docs/method.md §1–2): y is up and +z is the front. ``normalize_mesh`` is the paper's preparation
v ← v − mean(v); v ← mesh_scale·v / max‖v‖, followed by an optional rotation and offset.

Every ``Mesh`` is valid by construction (at least one face, finite coordinates, indices in range, non-zero
extent and area); errors name the mesh's ``source`` (usually the file path) and the problem.

Memory: a ``Mesh`` holds float32 vertices (12 B each) and int64 faces (24 B each); loading goes through
float64 copies and validation temporaries: measured peak ≈ 0.3 KB per face (+408 MB and 1.5 s for a
1.31M-face PLY on a busy 2-core machine, 0.8 s of it validation); OBJ text parses at ≈ 14 MB/s (a 12.8 MB,
328k-face file in 0.9 s). The winding/distance structures built from it are accounted in ``winding``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

SUPPORTED_EXTENSIONS = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")
"""File types ``load_mesh`` reads (OBJ by our parser, the others through trimesh)."""


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
    """[V, 2] float32 texture coordinates when the caller gave them, else None. ``load_mesh`` leaves it None:
    a sketch is geometry only (``latent3d.paint.mesh`` loads meshes with their UVs)."""
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


def _positive_number(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def transform_points(
    points: np.ndarray, scale: float = 1.0, rotation_deg: Sequence[float] = (0.0, 0.0, 0.0), offset: Sequence[float] = (0.0, 0.0, 0.0)
) -> np.ndarray:
    """p ← R·(scale·p) + offset for points [N, 3] (R from ``rotation_matrix``) -> [N, 3] float32."""
    scale = _positive_number("scale", scale)
    rotation = rotation_matrix(rotation_deg)
    shift = _vector3(offset, "offset")
    return ((scale * np.asarray(points, dtype=np.float64)) @ rotation.T + shift).astype(np.float32)


def transform_mesh(
    mesh: Mesh, scale: float = 1.0, rotation_deg: Sequence[float] = (0.0, 0.0, 0.0), offset: Sequence[float] = (0.0, 0.0, 0.0)
) -> Mesh:
    """v ← R·(scale·v) + offset (R from ``rotation_matrix``); returns a new mesh."""
    return mesh.with_vertices(transform_points(mesh.vertices, scale, rotation_deg, offset))


def normalization(points: np.ndarray, mesh_scale: float) -> tuple[np.ndarray, float]:
    """(centre [3] float64, scale) of the paper's preparation for points [N, 3]: the centre is their
    mean and ``scale`` puts the farthest one at ``mesh_scale`` from it, i.e. v' = (v − centre)·scale."""
    mesh_scale = _positive_number("mesh_scale", mesh_scale)
    points = np.asarray(points, dtype=np.float64)
    centre = points.mean(axis=0)
    radius = float(np.linalg.norm(points - centre, axis=1).max())
    if not (math.isfinite(radius) and radius > 0):
        raise ValueError(f"points must have a positive finite extent to be normalized, got radius {radius!r} over {len(points)} points")
    return centre, mesh_scale / radius


def normalize_mesh(
    mesh: Mesh,
    mesh_scale: float = 0.7,
    rotation_deg: Sequence[float] = (0.0, 0.0, 0.0),
    offset: Sequence[float] = (0.0, 0.0, 0.0),
) -> Mesh:
    """The paper's sketch preparation: centre on the vertex mean, scale so the farthest vertex lies at
    ``mesh_scale`` from the origin, then rotate (xyz Euler degrees, see ``rotation_matrix``) and offset.

    The mean and radius are taken over all of ``mesh.vertices``, unused ones included, as the official
    code does with libigl's vertex list; ``load_mesh`` says what that list is for each file format.
    """
    centre, scale = normalization(mesh.vertices, mesh_scale)
    return mesh.with_vertices(transform_points(mesh.vertices.astype(np.float64) - centre, scale, rotation_deg, offset))


def concatenate_meshes(meshes: Sequence[Mesh], source: str = "concatenation") -> Mesh:
    """One mesh holding all faces of ``meshes`` (no merging; uv kept only if every part has it)."""
    if not meshes:
        raise ValueError("meshes must hold at least one Mesh, got an empty sequence")
    starts = np.cumsum([0] + [m.num_vertices for m in meshes[:-1]])
    vertices = np.concatenate([m.vertices for m in meshes])
    faces = np.concatenate([m.faces + start for m, start in zip(meshes, starts)])
    uv = np.concatenate([m.uv for m in meshes]) if all(m.uv is not None for m in meshes) else None
    return Mesh(vertices, faces, uv, source)


def merge_coincident(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge exactly coincident positions: vertices [V, 3] -> (unique [U, 3] float32, index [V] int64)
    with ``unique[index] == vertices``; ``unique`` keeps the order of first occurrence (0.0 and -0.0 merge).
    A stable lexicographic sort (≈ 0.2 s for 2M vertices; ``np.unique(axis=0)`` takes ≈ 7× longer)."""
    points = np.ascontiguousarray(vertices, dtype=np.float32).reshape(-1, 3)
    if not len(points):
        return points, np.zeros(0, dtype=np.int64)
    order = np.lexsort((points[:, 2], points[:, 1], points[:, 0]))  # stable: equal rows keep file order
    ordered = points[order]
    starts = np.ones(len(points), dtype=bool)
    starts[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    group = np.empty(len(points), dtype=np.int64)
    group[order] = np.cumsum(starts) - 1
    first = order[starts]  # each group's first occurrence in the input
    by_first = np.argsort(first, kind="stable")
    rank = np.empty_like(by_first)
    rank[by_first] = np.arange(len(by_first))
    return points[first[by_first]] + np.float32(0.0), rank[group]


def _read_obj_mesh(file: Path) -> Mesh:
    from .obj_file import read_obj

    obj = read_obj(file.read_text(encoding="utf-8", errors="replace"), str(file))
    return Mesh(obj.positions, obj.faces, None, str(file))


def _read_trimesh_mesh(file: Path) -> Mesh:
    from .trimesh_io import load_geometry, triangle_parts

    parts = triangle_parts(load_geometry(file, materials=False), str(file))
    starts = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
    vertices = np.concatenate([np.asarray(p.vertices, dtype=np.float64) for p in parts])
    faces = np.concatenate([np.asarray(p.faces, dtype=np.int64) + start for p, start in zip(parts, starts)])
    unique, index = merge_coincident(vertices)
    return Mesh(unique, index[faces], None, str(file))


def load_mesh(path: str | os.PathLike) -> Mesh:
    """Read a triangle mesh from OBJ, PLY, STL, OFF, GLB or GLTF; ``uv`` is None (sketches need none).

    Vertex lists, and hence ``normalize_mesh``'s mean and radius (docs/method.md §2):
    - OBJ: parsed here (``obj_file.read_obj``): the vertices ARE the file's ``v`` lines in file order,
      faces index them (polygons fan-triangulated), as libigl's ``read_obj`` in the official code gives.
      No ``mtllib`` is opened.
    - PLY, STL, OFF, GLB, GLTF (through trimesh): the unique positions as stored, i.e. exactly coincident
      positions (float32, after the scene-graph transforms of GLB/GLTF nodes) are merged, in order of
      first occurrence; so STL triangle soups and glTF seam duplicates do not weight the mean. Scenes
      with several objects or primitives are merged into one mesh.
    External references (glTF buffers/images, PLY textures) must lie inside the file's folder
    (``references`` states the rule); nothing else is ever read.

    Raises:
        FileNotFoundError: ``path`` does not exist or is not a file.
        UnsafeReferenceError (a ValueError): a reference leaves the folder (nothing of it was read).
        ValueError: unsupported extension, unreadable content (OBJ: with the line and the rule), no faces
            (e.g. a point-cloud PLY), non-finite vertices, or a degenerate (zero-extent / zero-area) mesh.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"sketch mesh file not found: {file}")
    suffix = file.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise ValueError(f"{file}: unsupported mesh file extension {suffix or '(none)'!r}; supported: {', '.join(SUPPORTED_EXTENSIONS)}")
    return _read_obj_mesh(file) if suffix == ".obj" else _read_trimesh_mesh(file)
