"""The mesh Latent-Paint textures (docs/method.md §3): a triangle mesh with UVs (its own, else xatlas), an optional
base-colour texture, and the position list that places it in the scene.

    mesh = load_paint_mesh("blub.obj", PaintMeshConfig(cache_dir="cache/uv"))
    placed = place_paint_mesh(mesh)          # centred on its file's positions, farthest at 0.6

Files: OBJ (+MTL+images), GLB/GLTF (several primitives), PLY, STL, OFF, read by ``mesh_files`` with every
external reference confined to the file's folder; several textures become one atlas (``atlas`` states
the rule). In memory: ``make_paint_mesh`` (e.g. a ComfyUI MESH's arrays or a sketch ``Mesh``) and
``convert_textured_mesh`` (our NeRF export's ``TexturedMesh``).

Placement (``place_paint_mesh``): v ← R·((v − mean(P))·mesh_scale / max‖P − mean(P)‖) + offset over the
placement list P (the OBJ's own ``v`` lines, else the unique positions: ``latent3d.shape.mesh_io`` rules),
R from ``rotation_matrix`` (xyz Euler degrees), the same knobs as Load Sketch Mesh. The official demos
also lift y by 0.25 and look at height 0.25; the two cancel in every view, and our cameras look at the
origin, so the default offset is 0.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from ..shape.mesh_io import SUPPORTED_EXTENSIONS, merge_coincident, normalization, transform_points
from .atlas import Surface, texture_surface, uv_area
from .uv_cache import unwrap_cached


@dataclass
class PaintMeshConfig:
    """How a mesh without usable UVs is unwrapped."""

    max_unwrap_faces: int = 100_000
    """Meshes above this many faces are decimated to it before xatlas (which takes ≈ 1.3 s at 7.5k faces
    and grows faster than linearly). Meshes with their own UVs are never decimated."""
    unwrap_resolution: int = 1024
    """xatlas packing resolution in texels (chart padding below is in these texels)."""
    unwrap_padding: int = 4
    """Texels between xatlas charts."""
    cache_dir: str | None = None
    """Folder for the on-disk xatlas cache (``<sha256>.npz``); None: in-memory cache only."""

    def __post_init__(self) -> None:
        for name, low in (("max_unwrap_faces", 4), ("unwrap_resolution", 16), ("unwrap_padding", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"PaintMeshConfig.{name} must be an integer >= {low}, got {value!r}")


def _array(source: str, name: str, value: Any, dtype, columns: int | None) -> np.ndarray:
    """A read-only C-contiguous copy of ``value`` ([N, columns]); torch tensors are accepted."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if columns is not None and (array.ndim != 2 or array.shape[1] != columns):
        raise ValueError(f"{source}: {name} must have shape [N, {columns}], got {list(array.shape)}")
    if np.issubdtype(dtype, np.floating) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).reshape(len(array), -1).any(axis=1).sum())
        raise ValueError(f"{source}: {name} must be finite, got {bad} rows with NaN or inf")
    if np.issubdtype(dtype, np.integer) and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{source}: {name} must hold integer indices, got dtype {array.dtype}")
    array = np.array(array, dtype=dtype, order="C", copy=True)
    array.setflags(write=False)
    return array


def _texture(source: str, value: Any) -> np.ndarray:
    """[H, W, 3] uint8 (floats in [0, 1] are scaled to 0-255)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    image = np.asarray(value)
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"{source}: texture must be an [H, W, 3] RGB image, got shape {list(image.shape)}")
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise ValueError(f"{source}: a float texture must hold values in [0, 1], got range [{image.min()}, {image.max()}]")
        image = np.round(image * 255)
    elif image.dtype != np.uint8:
        raise ValueError(f"{source}: texture must be uint8 or float in [0, 1], got dtype {image.dtype}")
    image = np.ascontiguousarray(image, dtype=np.uint8)
    image.setflags(write=False)
    return image


@dataclass(frozen=True, eq=False)
class PaintMesh:
    """A mesh to paint; arrays are numpy, read-only (functions return new meshes). Valid by construction."""

    vertices: np.ndarray
    """[V, 3] float32 positions, split at UV seams (one vertex per distinct (position, uv))."""
    faces: np.ndarray
    """[F, 3] int64, counter-clockwise seen from outside as stored."""
    uvs: np.ndarray
    """[V, 2] float32, OBJ/OpenGL convention as ``latent3d.export.mesh.TexturedMesh``: v up, texel (row, col)
    of an H×W texture centred at u = (col + 0.5)/W, v = 1 − (row + 0.5)/H. glTF's v-down is flipped."""
    texture: np.ndarray | None
    """[H, W, 3] uint8 sRGB base colour, row 0 at the top, or None."""
    positions: np.ndarray
    """[P, 3] float32 placement list: the file's own positions (module docstring), moved with ``vertices``."""
    source: str = "mesh"
    """File path or description, named in errors and warnings."""
    uv_origin: Literal["file", "xatlas"] = "file"
    """Where ``uvs`` came from."""
    info: dict = field(default_factory=dict)
    """Notes such as ``decimated_from`` (face count before decimation)."""

    def __post_init__(self) -> None:
        name = self.source
        vertices = _array(name, "vertices", self.vertices, np.float32, 3)
        faces = _array(name, "faces", self.faces, np.int64, 3)
        if not len(faces):
            raise ValueError(f"{name}: mesh has no faces; Latent-Paint needs a triangle surface")
        if faces.min() < 0 or faces.max() >= len(vertices):
            raise ValueError(f"{name}: face indices must lie in [0, {len(vertices) - 1}], got [{faces.min()}, {faces.max()}]")
        uvs = _array(name, "uvs", self.uvs, np.float32, 2)
        if len(uvs) != len(vertices):
            raise ValueError(f"{name}: uvs must have one row per vertex, shape [{len(vertices)}, 2], got {list(uvs.shape)}")
        positions = _array(name, "positions", self.positions, np.float32, 3)
        if not len(positions):
            raise ValueError(f"{name}: positions (the placement list) must not be empty")
        texture = None if self.texture is None else _texture(name, self.texture)
        for key, value in (("vertices", vertices), ("faces", faces), ("uvs", uvs), ("positions", positions), ("texture", texture)):
            object.__setattr__(self, key, value)

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])


def _finish(surface: Surface, positions: np.ndarray, source: str, config: PaintMeshConfig) -> PaintMesh:
    """Unwrap when the surface has no usable UVs (dropping a texture that cannot be mapped)."""
    if surface.uvs is not None:
        return PaintMesh(surface.vertices, surface.faces, surface.uvs, surface.texture, positions, source)
    c = config
    done = unwrap_cached(surface.vertices, surface.faces, c.unwrap_resolution, c.unwrap_padding, c.max_unwrap_faces, c.cache_dir, source)
    info = {"decimated_from": done.decimated_from} if done.decimated_from else {}
    return PaintMesh(done.vertices, done.faces, done.uvs, None, positions, source, "xatlas", info)


def load_paint_mesh(path: str | os.PathLike, config: PaintMeshConfig | None = None) -> PaintMesh:
    """Read a mesh to paint with its own UVs and base-colour texture (xatlas UVs when it has none).

    Coordinates are as stored; place it with ``place_paint_mesh``. Raises FileNotFoundError, and
    ValueError (UnsafeReferenceError for a reference leaving the file's folder) naming the file.
    """
    from .mesh_files import read_obj_source, read_trimesh_source

    config = config if config is not None else PaintMeshConfig()
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"paint mesh file not found: {file}")
    suffix = file.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise ValueError(f"{file}: unsupported mesh file extension {suffix or '(none)'!r}; supported: {', '.join(SUPPORTED_EXTENSIONS)}")
    src = read_obj_source(file) if suffix == ".obj" else read_trimesh_source(file)
    if not np.isfinite(src.positions).all():
        raise ValueError(f"{file}: {int((~np.isfinite(src.positions)).any(axis=1).sum())} vertices have non-finite coordinates (NaN or inf)")
    surface = texture_surface(src.positions, src.faces, src.texcoords, src.face_texcoords, src.face_materials, src.materials, src.source)
    return _finish(surface, src.positions, src.source, config)


def make_paint_mesh(
    vertices: Any,
    faces: Any,
    uvs: Any = None,
    texture: Any = None,
    source: str = "mesh",
    config: PaintMeshConfig | None = None,
    positions: Any = None,
) -> PaintMesh:
    """A mesh to paint from arrays (numpy or torch): vertices [V, 3], faces [F, 3], optional uvs [V, 2]
    (v up) and texture [H, W, 3] (uint8, or float in [0, 1]). Without uvs, or with UVs of zero area, xatlas
    unwraps (and a texture is dropped). ``positions`` [P, 3] is the placement list; default: the unique
    positions of ``vertices`` (for a sketch ``Mesh`` from an OBJ pass ``mesh.vertices``).
    Batched ComfyUI MESH tensors must be unbatched by the caller ([B, V, 3] is refused)."""
    config = config if config is not None else PaintMeshConfig()
    vertices = _array(source, "vertices", vertices, np.float32, 3)
    faces = _array(source, "faces", faces, np.int64, 3)
    if not len(faces):
        raise ValueError(f"{source}: mesh has no faces; Latent-Paint needs a triangle surface")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise ValueError(f"{source}: face indices must lie in [0, {len(vertices) - 1}], got [{faces.min()}, {faces.max()}]")
    if texture is not None and uvs is None:
        raise ValueError(f"{source}: a texture needs uvs (one [u, v] per vertex), got uvs None")
    image = None if texture is None else _texture(source, texture)
    placement = merge_coincident(vertices)[0] if positions is None else _array(source, "positions", positions, np.float32, 3)
    if uvs is not None:
        uvs = _array(source, "uvs", uvs, np.float32, 2)
        if len(uvs) != len(vertices):
            raise ValueError(f"{source}: uvs must have one row per vertex, shape [{len(vertices)}, 2], got {list(uvs.shape)}")
        if uv_area(uvs, faces) <= 1e-12:
            warnings.warn(f"{source}: uvs have zero area (degenerate): unwrapped with xatlas instead, texture dropped", stacklevel=2)
            uvs, image = None, None
    if uvs is None:  # unwrap on merged positions, so seam duplicates do not cut charts
        unique, index = merge_coincident(vertices)
        return _finish(Surface(unique, index[faces], None, None), placement, source, config)
    return PaintMesh(vertices, faces, uvs, image, placement, source)


def convert_textured_mesh(mesh, config: PaintMeshConfig | None = None, source: str = "exported mesh") -> PaintMesh:
    """A mesh to paint from ``latent3d.export.mesh.TexturedMesh`` (our NeRF export): its uvs and texture
    when it has them (same v-up convention), else xatlas. Vertex colours are not carried over."""
    from ..export.mesh import TexturedMesh

    if not isinstance(mesh, TexturedMesh):
        raise ValueError(f"mesh must be a latent3d.export.mesh.TexturedMesh, got {type(mesh).__name__}")
    return make_paint_mesh(mesh.vertices, mesh.faces, mesh.uvs, mesh.texture, source, config)


def place_paint_mesh(
    mesh: PaintMesh,
    mesh_scale: float = 0.6,
    rotation_deg: Sequence[float] = (0.0, 0.0, 0.0),
    offset: Sequence[float] = (0.0, 0.0, 0.0),
) -> PaintMesh:
    """The mesh moved into the scene (module docstring): centred on the mean of ``mesh.positions``, scaled
    so the farthest of them lies ``mesh_scale`` from the origin (docs/method.md §3: 0.6), then rotated (xyz Euler
    degrees, ``latent3d.shape.mesh_io.rotation_matrix``) and offset. Returns a new PaintMesh."""
    if not isinstance(mesh, PaintMesh):
        raise ValueError(f"mesh must be a PaintMesh, got {type(mesh).__name__}")
    centre, scale = normalization(mesh.positions, mesh_scale)
    vertices = transform_points(mesh.vertices.astype(np.float64) - centre, scale, rotation_deg, offset)
    positions = transform_points(mesh.positions.astype(np.float64) - centre, scale, rotation_deg, offset)
    return replace(mesh, vertices=vertices, positions=positions)
