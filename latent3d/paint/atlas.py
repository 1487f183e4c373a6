"""From a file's materials to one texture: vertices split at UV seams, several textures packed into a grid.

Latent-Paint renders one texture per mesh. The rule (``texture_surface``):
- the file's UVs are used when every face has texture coordinates and they span a non-zero area;
- no face's material has a usable image: no texture (``Kd``/base colours alone are not kept);
- one distinct image (however many materials share it): that image, UVs unchanged (tiling kept);
- several distinct images, or images and untextured materials: an atlas, a near-square grid of equal
  tiles (each image resized to the largest image's size, 2 edge-replicated texels around each tile
  against bleeding; the atlas at most 4096 texels a side, tiles shrunk to fit); untextured materials
  become solid tiles of their colour (``DEFAULT_COLOR`` without one) and their corners sit at the tile's
  centre. Atlas UVs are clamped to [0, 1] first: a tiling (repeating) texture cannot repeat inside a tile,
  so a warning names the material.
A material whose image cannot be used (some of its faces lack UVs, or its UVs have no area) is painted
as a solid tile, with a warning. Without usable UVs the caller unwraps (``uvs`` None).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass

import numpy as np

DEFAULT_COLOR = (0.8, 0.8, 0.8)
"""sRGB colour of faces without a material (or with one that has neither an image nor a colour)."""
TILE_PADDING = 2
"""Texels replicated around each atlas tile, so bilinear lookups at a tile's edge stay inside it."""
MAX_ATLAS_SIDE = 4096
"""Largest atlas width or height in texels."""


@dataclass(frozen=True)
class Material:
    """A material as Latent-Paint reads it."""

    name: str
    image: np.ndarray | None = None
    """[H, W, 3] uint8 sRGB base-colour image (row 0 at the top), or None."""
    color: tuple[float, float, float] | None = None
    """sRGB base colour in [0, 1] (OBJ ``Kd``; glTF's linear baseColorFactor converted), or None."""


@dataclass(frozen=True)
class Surface:
    """Vertices split at UV seams (each distinct (position, uv) corner is one vertex)."""

    vertices: np.ndarray
    """[V, 3] float32."""
    faces: np.ndarray
    """[F, 3] int64, the input faces in order."""
    uvs: np.ndarray | None
    """[V, 2] float32, v up; None: the file's UVs are missing or degenerate (unwrap)."""
    texture: np.ndarray | None
    """[H, W, 3] uint8 or None."""


def uv_area(texcoords: np.ndarray, face_texcoords: np.ndarray) -> float:
    """Total area in UV space of the faces (texcoords [T, 2], face_texcoords [F, 3], all >= 0)."""
    if not len(face_texcoords):
        return 0.0
    tri = np.asarray(texcoords, dtype=np.float64)[face_texcoords]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    return float(0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum())


def _usable_faces(texcoords: np.ndarray, face_texcoords: np.ndarray) -> np.ndarray:
    """[F] bool: every corner has a finite texture coordinate."""
    usable = (face_texcoords >= 0).all(axis=1)
    if len(texcoords):
        finite = np.isfinite(texcoords).all(axis=1)
        usable &= finite[np.maximum(face_texcoords, 0)].all(axis=1)
    return usable


def _tile_keys(materials, face_materials, usable, texcoords, face_texcoords, source) -> tuple[list, np.ndarray]:
    """(distinct tiles as ("image", array) or ("color", rgb), [F] tile index of each face)."""
    tiles: dict[tuple, int] = {}
    contents: list = []
    face_tile = np.empty(len(face_materials), dtype=np.int64)
    for m in np.unique(face_materials):
        mine = face_materials == m
        material = materials[m] if m >= 0 else Material("(none)")
        key = ("color", material.color or DEFAULT_COLOR)
        if material.image is not None:
            ok = usable[mine].all() and uv_area(texcoords, face_texcoords[mine]) > 1e-12
            if ok:
                key = ("image", hashlib.sha256(material.image.tobytes()).hexdigest(), material.image.shape)
            else:
                warnings.warn(
                    f"{source}: material {material.name!r} has a texture, but {int((~usable[mine]).sum())} of its "
                    f"{int(mine.sum())} faces lack texture coordinates or its UVs have no area: painted as a solid tile",
                    stacklevel=4,
                )
        if key not in tiles:
            tiles[key] = len(contents)
            contents.append(material.image if key[0] == "image" else key[1])
        face_tile[mine] = tiles[key]
    return contents, face_tile


def _split(faces: np.ndarray, *corner_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique corner keys [V, 1 + k], new faces [F, 3]) for per-corner keys (position, extra…)."""
    keys = np.stack([faces.reshape(-1)] + [k.reshape(-1) for k in corner_keys], axis=1)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    return unique, inverse.reshape(-1, 3).astype(np.int64)


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def pack_tiles(contents: list, max_side: int = MAX_ATLAS_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """Grid atlas of ``contents`` (images [H, W, 3] uint8 or sRGB colours) -> (atlas [H, W, 3] uint8,
    boxes [n, 4] float64 (u0, v0, u1, v1) of each tile's interior in UV units, v up)."""
    images = [c for c in contents if isinstance(c, np.ndarray)]
    tile_h, tile_w = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
    cols = math.ceil(math.sqrt(len(contents)))
    rows = math.ceil(len(contents) / cols)
    pad = TILE_PADDING
    shrink = min(1.0, (max_side / cols - 2 * pad) / tile_w, (max_side / rows - 2 * pad) / tile_h)
    tile_h, tile_w = max(1, int(tile_h * shrink)), max(1, int(tile_w * shrink))
    cell_h, cell_w = tile_h + 2 * pad, tile_w + 2 * pad
    atlas = np.zeros((rows * cell_h, cols * cell_w, 3), dtype=np.uint8)
    boxes = np.zeros((len(contents), 4))
    for k, content in enumerate(contents):
        if isinstance(content, np.ndarray):
            tile = _resize(content, tile_h, tile_w)
        else:
            tile = np.full((tile_h, tile_w, 3), np.round(np.asarray(content) * 255), dtype=np.uint8)
        r, c = divmod(k, cols)
        atlas[r * cell_h : (r + 1) * cell_h, c * cell_w : (c + 1) * cell_w] = np.pad(tile, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        top, left = r * cell_h + pad, c * cell_w + pad
        boxes[k] = [left / atlas.shape[1], 1 - (top + tile_h) / atlas.shape[0], (left + tile_w) / atlas.shape[1], 1 - top / atlas.shape[0]]
    return atlas, boxes


def _atlas_uvs(corners, texcoords, contents, boxes, materials, face_materials, source) -> np.ndarray:
    """[V, 2] uvs of split corners (position, texcoord, tile) inside their tile's box."""
    tex, tile = corners[:, 1], corners[:, 2]
    box = boxes[tile]
    textured = np.array([isinstance(c, np.ndarray) for c in contents], dtype=bool)[tile]
    local = np.full((len(corners), 2), 0.5)
    uv = texcoords[np.maximum(tex[textured], 0)]
    if len(uv) and (uv.min() < -1e-3 or uv.max() > 1 + 1e-3):
        names = sorted({materials[m].name for m in np.unique(face_materials) if m >= 0 and materials[m].image is not None})
        warnings.warn(
            f"{source}: texture coordinates of {', '.join(names)} reach [{uv.min():.3f}, {uv.max():.3f}] outside [0, 1] "
            "(a repeating texture): clamped, since one atlas tile cannot repeat",
            stacklevel=4,
        )
    local[textured] = np.clip(uv, 0.0, 1.0)
    return (box[:, :2] + local * (box[:, 2:] - box[:, :2])).astype(np.float32)


def texture_surface(positions, faces, texcoords, face_texcoords, face_materials, materials, source: str) -> Surface:
    """Apply the module's rule. positions [P, 3], faces [F, 3] into positions, texcoords [T, 2] (v up),
    face_texcoords [F, 3] into texcoords (-1: none), face_materials [F] into ``materials`` (-1: none)."""
    texcoords = np.asarray(texcoords, dtype=np.float64).reshape(-1, 2)
    usable = _usable_faces(texcoords, face_texcoords)
    file_uvs = bool(usable.all()) and uv_area(texcoords, face_texcoords) > 1e-12
    contents, face_tile = _tile_keys(materials, face_materials, usable, texcoords, face_texcoords, source)
    images = [c for c in contents if isinstance(c, np.ndarray)]
    positions = np.asarray(positions, dtype=np.float32)
    if not images and not file_uvs:
        return Surface(positions, faces, None, None)
    if not images or (len(contents) == 1 and file_uvs):
        corners, new_faces = _split(faces, face_texcoords)
        uvs = texcoords[corners[:, 1]].astype(np.float32) if file_uvs else None
        return Surface(positions[corners[:, 0]], new_faces, uvs, images[0] if images else None)
    textured = np.array([isinstance(c, np.ndarray) for c in contents])[face_tile]
    corner_tex = np.where(textured[:, None], face_texcoords, -1)
    corners, new_faces = _split(faces, corner_tex, np.repeat(face_tile[:, None], 3, axis=1))
    atlas, boxes = pack_tiles(contents)
    uvs = _atlas_uvs(corners, texcoords, contents, boxes, materials, face_materials[textured], source)
    return Surface(positions[corners[:, 0]], new_faces, uvs, atlas)
