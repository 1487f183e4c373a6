"""NeRF → textured mesh (docs/method.md §5): density lattice, marching cubes, cleanup, decimation, UV bake, writers.

    from latent3d.export import ExportConfig, extract_mesh, save_mesh
    mesh = extract_mesh(model, ExportConfig(color_mode="texture"), decode=None)
    save_mesh(mesh, "out/object.glb")
"""

from .bake import Decoder
from .config import DEFAULT_TEXTURE_FACE_BUDGET, ExportConfig
from .extract import export_checkpoint, export_mesh, extract_mesh
from .mesh import TexturedMesh
from .writers import FORMATS, save_mesh, write_glb, write_obj, write_ply

__all__ = [
    "DEFAULT_TEXTURE_FACE_BUDGET",
    "Decoder",
    "ExportConfig",
    "FORMATS",
    "TexturedMesh",
    "export_checkpoint",
    "export_mesh",
    "extract_mesh",
    "save_mesh",
    "write_glb",
    "write_obj",
    "write_ply",
]
