"""Export Mesh: a trained Latent-NeRF -> GLB/OBJ/PLY under output/ for core Preview3D, and a core MESH."""

from __future__ import annotations

from .api import io

from ..latent3d.export import export_mesh
from . import host
from .schema import build_schema
from .spec import build_config
from .specs import EXPORT_MESH
from .types import TrainedNerf


class ExportMesh(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return build_schema(EXPORT_MESH)

    @classmethod
    def validate_inputs(cls, filename_prefix: str | None = None) -> bool | str:
        """Checked before the graph runs, not after an upstream training (one named input: ComfyUI repeats a
        failure once per input named here)."""
        return host.check_prefix(filename_prefix)

    @classmethod
    def execute(cls, nerf: TrainedNerf, format: str, filename_prefix: str, vae=None, **widgets) -> io.NodeOutput:
        if not isinstance(nerf, TrainedNerf):
            raise ValueError("Export Mesh: connect 'nerf' to the output of Latent-NeRF Train or Latent→RGB Refine")
        config = build_config(EXPORT_MESH, widgets)
        path, relative = host.unique_output(filename_prefix, f".{format}")
        decode = None if nerf.is_rgb else host.texture_decoder(vae, nerf.to_vae_latent)  # a refined field's colours are RGB
        with host.pip_hint(EXPORT_MESH.display_name):
            mesh, _ = export_mesh(nerf.model, path, format, config, decode)
        return io.NodeOutput(relative, host.core_mesh(mesh))
