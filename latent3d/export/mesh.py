"""TexturedMesh: the result of an export, host- and format-neutral (numpy arrays, CPU)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class TexturedMesh:
    """A triangle mesh with optional vertex colours or a UV texture.

    World frame of the field: y up, +z the front (glTF's frame too). Faces are counter-clockwise seen from
    outside (normals point out of the solid).
    """

    vertices: np.ndarray
    """[V, 3] float32 world coordinates."""
    faces: np.ndarray
    """[F, 3] int64 vertex indices."""
    normals: np.ndarray
    """[V, 3] float32 unit vertex normals (area-weighted face normals), pointing outward."""
    colors: np.ndarray | None = None
    """[V, 3] float32 sRGB colours in [0, 1], or None."""
    uvs: np.ndarray | None = None
    """[V, 2] float32 texture coordinates in [0, 1], OBJ/OpenGL convention: u to the right, v *up* (v = 0 is
    the image's bottom row). Texel (row, col) of an H×W texture has its centre at u = (col + 0.5)/W,
    v = 1 − (row + 0.5)/H. The GLB writer stores (u, 1 − v), glTF's top-left origin."""
    texture: np.ndarray | None = None
    """[H, W, 3] uint8 sRGB image, row 0 at the top; present exactly when ``uvs`` is."""
    info: dict[str, Any] = field(default_factory=dict)
    """What produced it: threshold, resolution, per-stage timings (seconds), field evaluations."""

    def __post_init__(self) -> None:
        self.vertices = _array("vertices", self.vertices, np.float32, (None, 3))
        self.faces = _array("faces", self.faces, np.int64, (None, 3))
        self.normals = _array("normals", self.normals, np.float32, (len(self.vertices), 3))
        if len(self.faces) and (self.faces.min() < 0 or self.faces.max() >= len(self.vertices)):
            raise ValueError(f"faces must index vertices in [0, {len(self.vertices)}), got range [{self.faces.min()}, {self.faces.max()}]")
        if self.colors is not None:
            colors = np.asarray(self.colors)
            if colors.dtype == np.uint8:
                colors = colors.astype(np.float32) / 255.0
            self.colors = _array("colors", colors, np.float32, (len(self.vertices), 3))
            if self.colors.size and (self.colors.min() < 0 or self.colors.max() > 1):
                raise ValueError(f"colors must lie in [0, 1], got range [{self.colors.min()}, {self.colors.max()}]")
        if (self.uvs is None) != (self.texture is None):
            raise ValueError("uvs and texture must be given together (both or neither)")
        if self.uvs is not None:
            self.uvs = _array("uvs", self.uvs, np.float32, (len(self.vertices), 2))
            self.texture = _array("texture", self.texture, np.uint8, (None, None, 3))

    @property
    def has_texture(self) -> bool:
        return self.texture is not None

    def vertex_colors(self) -> np.ndarray | None:
        """[V, 3] float32 colours: ``colors``, else the texture sampled (nearest texel) at ``uvs``, else None."""
        if self.colors is not None:
            return self.colors
        if self.texture is None:
            return None
        h, w = self.texture.shape[:2]
        cols = np.clip((self.uvs[:, 0] * w).astype(np.int64), 0, w - 1)
        rows = np.clip(((1.0 - self.uvs[:, 1]) * h).astype(np.int64), 0, h - 1)
        return self.texture[rows, cols].astype(np.float32) / 255.0

    def to_trimesh(self):
        """The mesh as a ``trimesh.Trimesh`` (texture as a TextureVisuals with a PIL image, else vertex
        colours)."""
        import trimesh
        from PIL import Image

        mesh = trimesh.Trimesh(self.vertices, self.faces, vertex_normals=self.normals, process=False)
        if self.texture is not None:
            material = trimesh.visual.material.SimpleMaterial(image=Image.fromarray(self.texture))
            mesh.visual = trimesh.visual.TextureVisuals(uv=self.uvs, material=material)
        elif self.colors is not None:
            mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=np.round(self.colors * 255).astype(np.uint8))
        return mesh


def _array(name: str, value: Any, dtype: type, shape: tuple[int | None, ...]) -> np.ndarray:
    """``value`` as a C-contiguous array of ``dtype`` with the given shape (None = any size)."""
    if hasattr(value, "detach"):  # torch tensors
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, array.shape)):
        expected = "[" + ", ".join("N" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {expected}, got {array.shape}")
    if np.issubdtype(dtype, np.floating) and array.size and not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite, got NaN or infinite values")
    if np.issubdtype(dtype, np.integer) and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=dtype)
