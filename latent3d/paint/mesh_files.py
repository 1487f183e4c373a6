"""Mesh files as Latent-Paint reads them: positions, faces, texture coordinates and materials, before
vertices are split at UV seams (``atlas.texture_surface`` does that).

- OBJ (+ MTL + images): our parser (``latent3d.shape.obj_file``) with ``vt``, face uv indices, ``usemtl``;
  ``mtllib`` and ``map_Kd`` names are resolved inside the OBJ's folder only (``latent3d.shape.references``;
  refused references raise). A missing MTL, a material missing from it, or an unreadable image is warned
  about and painted from ``Kd`` (or the default colour).
- PLY, STL, OFF, GLB, GLTF: trimesh, confined as for sketches (``latent3d.shape.trimesh_io``); each part
  (glTF primitive) keeps its TEXCOORD_0 (trimesh flips glTF's v-down to v-up on load) and its
  baseColorTexture; without a texture, baseColorFactor (linear) becomes an sRGB colour. The texture is not
  multiplied by baseColorFactor (trimesh itself writes 0.4 there for plain textured meshes). Vertex colours
  are ignored.
``positions``, the list the mesh is placed by, follows ``latent3d.shape.mesh_io.load_mesh``: the OBJ's own
``v`` lines; for the other formats the unique positions (exactly coincident ones merged).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..shape.mesh_io import merge_coincident
from ..shape.references import confined_path, read_confined
from .atlas import Material


@dataclass(frozen=True)
class SourceMesh:
    """One file's contents; indices 0-based."""

    positions: np.ndarray
    """[P, 3] float64 placement list (see the module docstring); ``faces`` index it."""
    faces: np.ndarray
    """[F, 3] int64."""
    texcoords: np.ndarray
    """[T, 2] float64, v up."""
    face_texcoords: np.ndarray
    """[F, 3] int64 into ``texcoords``, -1 where a corner has none."""
    face_materials: np.ndarray
    """[F] int64 into ``materials``, -1 where a face has none."""
    materials: tuple[Material, ...]
    source: str


def decode_image(data: bytes, source: str, what: str) -> np.ndarray | None:
    """[H, W, 3] uint8 sRGB from encoded image bytes, or None with a warning naming ``what``."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except Exception as e:  # PIL raises many types for unknown or truncated images
        warnings.warn(f"{source}: {what} could not be decoded ({type(e).__name__}): ignored", stacklevel=3)
        return None


def _library_names(name: str, root: Path, source: str, where: str) -> list[str]:
    """``mtllib`` may name one file with spaces or several files; the whole name wins when it exists."""
    if confined_path(name, root, source, where).is_file() or len(name.split()) == 1:
        return [name]
    return name.split()


def _read_libraries(obj, root: Path, source: str) -> dict:
    from ..shape.obj_file import read_mtl

    found: dict = {}
    for name, line in obj.material_libraries:
        where = f"line {line}: mtllib"
        for library in _library_names(name, root, source, where):
            path = confined_path(library, root, source, where)
            if not path.is_file():
                warnings.warn(f"{source}: {where} {library!r} not found beside the OBJ: its materials are ignored", stacklevel=4)
                continue
            for material in read_mtl(path.read_text(encoding="utf-8", errors="replace"), f"{source} ({library})").values():
                found.setdefault(material.name, (material, path.parent))
    return found


def _texture_bytes(texture: str, folders: list[Path], source: str, where: str) -> bytes | None:
    """``map_Kd`` is looked up beside the MTL, then beside the OBJ; each lookup is confined to its folder
    (both inside the OBJ's folder). Unsafe names raise; a missing file gives None with a warning."""
    for folder in dict.fromkeys(folders):
        path = confined_path(texture, folder, source, where)
        if path.is_file():
            return read_confined(texture, folder, source, where)
    warnings.warn(f"{source}: {where} {texture!r}: no such file beside the OBJ or its MTL: painted from Kd", stacklevel=5)
    return None


def _obj_material(name: str, libraries: dict, root: Path, source: str) -> Material:
    if name not in libraries:
        if libraries:
            warnings.warn(f"{source}: material {name!r} is in no MTL file read: default colour", stacklevel=4)
        return Material(name)
    entry, folder = libraries[name]
    image = None
    if entry.texture is not None:
        where = f"material {name!r} (line {entry.line}): map_Kd"
        data = _texture_bytes(entry.texture, [folder, root], source, where)
        image = decode_image(data, source, f"{where} {entry.texture!r}") if data is not None else None
    return Material(name, image, entry.color)


def read_obj_source(path: Path) -> SourceMesh:
    """An OBJ with its materials (see the module docstring)."""
    from ..shape.obj_file import read_obj

    source = str(path)
    obj = read_obj(path.read_text(encoding="utf-8", errors="replace"), source, texcoords=True)
    root = path.parent.resolve()
    libraries = _read_libraries(obj, root, source) if obj.material_names else {}
    materials = tuple(_obj_material(name, libraries, root, source) for name in obj.material_names)
    return SourceMesh(obj.positions, obj.faces, obj.texcoords, obj.face_texcoords, obj.face_materials, materials, source)


def _linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)


def _unit(color) -> np.ndarray:
    """The RGB of a colour stored as uint8 (0-255) or float (0-1) -> [3] float64 in [0, 1]."""
    rgb = np.asarray(color)[:3]
    return np.clip(rgb / 255.0 if np.issubdtype(rgb.dtype, np.integer) else rgb.astype(np.float64), 0.0, 1.0)


def _part_material(part, index: int) -> tuple[Material, np.ndarray | None]:
    """(material, uv [n, 2] or None) of one trimesh part."""
    visual = part.visual
    uv = getattr(visual, "uv", None)
    uv = np.asarray(uv, dtype=np.float64) if uv is not None and len(uv) == len(part.vertices) else None
    material = getattr(visual, "material", None)
    name = getattr(material, "name", None) or f"part {index}"
    image = getattr(material, "baseColorTexture", None)
    image = getattr(material, "image", None) if image is None else image
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8).copy() if image is not None else None
    factor = getattr(material, "baseColorFactor", None)
    color = None
    if factor is not None:  # glTF: linear RGB(A); trimesh keeps it as uint8
        color = tuple(float(x) for x in _linear_to_srgb(_unit(factor)))
    elif getattr(material, "diffuse", None) is not None:
        color = tuple(float(x) for x in _unit(material.diffuse))
    return Material(name, pixels, color), uv


def read_trimesh_source(path: Path) -> SourceMesh:
    """PLY, STL, OFF, GLB or GLTF through trimesh with references confined (see the module docstring)."""
    from ..shape.trimesh_io import load_geometry, triangle_parts

    source = str(path)
    parts = triangle_parts(load_geometry(path, materials=True), source)
    vertices, faces, texcoords, face_texcoords, face_materials, materials = [], [], [], [], [], []
    start = 0
    for index, part in enumerate(parts):
        material, uv = _part_material(part, index)
        part_faces = np.asarray(part.faces, dtype=np.int64) + start
        vertices.append(np.asarray(part.vertices, dtype=np.float64))
        texcoords.append(uv if uv is not None else np.zeros((len(part.vertices), 2)))
        face_texcoords.append(part_faces if uv is not None else np.full_like(part_faces, -1))
        faces.append(part_faces)
        face_materials.append(np.full(len(part_faces), index, dtype=np.int64))
        materials.append(material)
        start += len(part.vertices)
    unique, index = merge_coincident(np.concatenate(vertices))
    return SourceMesh(
        unique.astype(np.float64),
        index[np.concatenate(faces)],
        np.concatenate(texcoords),
        np.concatenate(face_texcoords),
        np.concatenate(face_materials),
        tuple(materials),
        source,
    )
