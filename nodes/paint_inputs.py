"""Latent-Paint's node inputs, host-free: which mesh to paint, and the model's latent format.

The mesh comes from one of three inputs, the first connected one winning: a core MESH (e.g. Export
Mesh's; newer hosts' MESH may carry per-vertex ``uvs``, glTF convention, and a ``texture``, which are kept), a sketch
(Load Sketch Mesh / Sketch Primitive, painted as placed there, so its rotation counts; Latent-Paint then
centres and scales it by its own mesh_scale), or a file under input/3d.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..latent3d.paint.mesh import PaintMesh, PaintMeshConfig, load_paint_mesh, make_paint_mesh
from .specs import NO_MESH_FILE
from .types import Sketch

NODE = "Latent-Paint"


def _unbatched(value: Any, name: str, columns: int | None) -> Any:
    """The single item of a host tensor [1, N, ...] (a plain copy), refusing batches of several meshes."""
    tensor = value.detach() if torch.is_tensor(value) else torch.as_tensor(value)
    with torch.inference_mode(False):
        tensor = tensor.clone().cpu()
    if tensor.dim() == (3 if columns else 4):
        if tensor.shape[0] != 1:
            raise ValueError(f"{NODE}: the connected MESH holds a batch of {tensor.shape[0]} meshes ({name} {list(tensor.shape)}); connect a single mesh")
        tensor = tensor[0]
    return tensor


def from_core_mesh(mesh: Any, config: PaintMeshConfig) -> PaintMesh:
    """A PaintMesh from the host's MESH (vertices [1, V, 3], faces [1, F, 3]; optional uvs [1, V, 2] and
    texture [1, H, W, 3] in 0..1). MESH uvs follow glTF (v down: core "Save 3D Model" writes them into the
    GLB unchanged, and ``host.core_mesh`` gives ours that way); they are turned to our v-up convention here.
    A batch with per-item counts (newer hosts' ``vertex_counts``) is cut to the item's real length."""
    if not (hasattr(mesh, "vertices") and hasattr(mesh, "faces")):
        raise ValueError(f"{NODE}: 'mesh' must be a core MESH (vertices and faces), got {type(mesh).__name__}")
    vertices, faces = _unbatched(mesh.vertices, "vertices", 3), _unbatched(mesh.faces, "faces", 3)
    uvs, texture = getattr(mesh, "uvs", None), getattr(mesh, "texture", None)
    uvs = _unbatched(uvs, "uvs", 2) if uvs is not None else None
    counts = getattr(mesh, "vertex_counts", None), getattr(mesh, "face_counts", None)
    if counts[0] is not None and counts[1] is not None:
        vertices, faces = vertices[: int(counts[0][0])], faces[: int(counts[1][0])]
        uvs = uvs[: int(counts[0][0])] if uvs is not None else None
    uvs = torch.stack([uvs[:, 0], 1.0 - uvs[:, 1]], dim=-1) if uvs is not None else None
    texture = _unbatched(texture, "texture", None).float().clamp(0, 1) if texture is not None and uvs is not None else None
    return make_paint_mesh(vertices, faces, uvs, texture, source="the connected MESH", config=config)


def from_sketch(sketch: Any, config: PaintMeshConfig) -> PaintMesh:
    """A PaintMesh from a sketch as placed by its node (xatlas UVs)."""
    if not isinstance(sketch, Sketch):
        raise ValueError(f"{NODE}: 'sketch' must come from Load Sketch Mesh or Sketch Primitive, got {type(sketch).__name__}")
    placed = sketch.placed()
    return make_paint_mesh(placed.vertices, placed.faces, source="the connected sketch", config=config, positions=placed.vertices)


def mesh_to_paint(mesh_file: str, mesh: Any, sketch: Any, resolve_file: Callable[[str], Path], config: PaintMeshConfig) -> PaintMesh:
    """The mesh the node paints: the MESH socket, else the sketch, else ``mesh_file`` resolved by
    ``resolve_file`` (the host's input-folder rule). Raises ValueError saying what to connect."""
    if mesh is not None:
        return from_core_mesh(mesh, config)
    if sketch is not None:
        return from_sketch(sketch, config)
    if not mesh_file or mesh_file == NO_MESH_FILE:
        raise ValueError(f"{NODE}: no mesh to paint; choose a mesh_file under input/3d, or connect a MESH (e.g. from Export Mesh) or a sketch")
    return load_paint_mesh(resolve_file(mesh_file), config)


@dataclass(frozen=True)
class LatentFormat:
    """How a model's latents relate to what its VAE decodes: model space z = (latent − shift)·scale."""

    scale: float = 0.18215
    shift: float = 0.0

    @classmethod
    def of(cls, model: Any) -> "LatentFormat":
        fmt = model.model.latent_format
        return cls(float(fmt.scale_factor), float(getattr(fmt, "shift_factor", 0.0) or 0.0))

    def to_vae(self, z: torch.Tensor) -> torch.Tensor:
        """Model-space latents -> the unscaled latents a ComfyUI VAE decodes."""
        return z / self.scale + self.shift

    def to_model(self, latent: torch.Tensor) -> torch.Tensor:
        """A ComfyUI VAE's (unscaled) latents -> model space."""
        return (latent - self.shift) * self.scale
