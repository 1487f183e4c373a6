"""Export Mesh: a trained Latent-NeRF -> GLB/OBJ/PLY under output/ for core Preview3D, and a core MESH."""

from __future__ import annotations

import dataclasses

from comfy_api.latest import io

from ..latent3d.export import extract_mesh, save_mesh
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
    def execute(cls, nerf: TrainedNerf, format: str, filename_prefix: str, vae=None, **widgets) -> io.NodeOutput:
        if not isinstance(nerf, TrainedNerf):
            raise ValueError("Export Mesh: connect 'nerf' to the output of Latent-NeRF Train")
        config = build_config(EXPORT_MESH, widgets)
        if format == "ply":  # a PLY carries vertex colours, not textures
            config = dataclasses.replace(config, color_mode="vertex")
        path, relative = host.unique_output(filename_prefix, f".{format}")
        with host.pip_hint(EXPORT_MESH.display_name):
            mesh = extract_mesh(nerf.model, config, host.texture_decoder(vae, nerf.to_vae_latent))
            save_mesh(mesh, path, format)
        return io.NodeOutput(relative, host.core_mesh(mesh))
