"""extract_mesh: a trained latent field -> TexturedMesh (docs/method.md §5), and export_checkpoint for the CLI."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..nerf.train import StepTimer, load_latent_nerf
from .bake import VAE_SCALE, Decoder, bake_latent_texture, color_space, decode_texture, rgb_texture, vertex_colors
from .config import ExportConfig
from .density import RadianceField, model_device, sample_density_lattice, scene_bound
from .mesh import TexturedMesh
from .surface import decimate, marching_cubes, remove_small_components, vertex_normals
from .uv import unwrap
from .writers import FORMATS, save_mesh

log = logging.getLogger(__name__)


def extract_mesh(
    model: RadianceField, config: ExportConfig | None = None, decode: Decoder | None = None, on_stage: Callable[[str], None] | None = None
) -> TexturedMesh:
    """Extract a coloured triangle mesh from ``model`` (a ``LatentNeRF`` or any object with ``bound``,
    ``density(x [N,3]) -> σ [N]`` and ``query(x) -> (σ [N], latent [N, C])``).

    Stages (seconds of each in ``mesh.info["timings"]``): field (density lattice, band only), marching
    cubes, cleanup (floaters), decimate, then colour: "vertex" mode reads latents at the vertices and maps
    them with the linear map; "texture" mode unwraps (xatlas), bakes the latent texture and decodes it.
    A field whose ``color_space`` is "rgb" (a refined ``RgbNeRF``) gives its RGB colours directly, at
    the vertices or baked into a ``texture_size`` texture; nothing is decoded and ``decode`` is unused.

    Args:
        decode: texture mode only. None: the linear latent→RGB map, baked at ``texture_size``. A VAE decoder
            ``latent [1, C, h, w] (model space, CPU float32) -> image [1, 3, 8h, 8w] in [0, 1]``: the latent
            texture is baked at ``texture_size / 8`` and decoded to ``texture_size``. Vertex mode always uses
            the linear map.

    Raises:
        ValueError: bad config or model, an empty field, or a decoder returning the wrong shape.
    """
    config = _check_inputs(model, config, decode)
    timer = StepTimer(model_device(model), on_start=on_stage)
    with torch.no_grad():
        with timer.section("field"):
            lattice = sample_density_lattice(model, config)
        with timer.section("marching_cubes"):
            vertices, faces = marching_cubes(lattice)
        counts = {"marching_cubes_faces": len(faces)}
        with timer.section("cleanup"):
            vertices, faces = remove_small_components(vertices, faces, config.min_component_fraction)
        counts["cleaned_faces"] = len(faces)
        budget = config.effective_face_budget()
        if budget is not None:
            with timer.section("decimate"):
                vertices, faces = decimate(vertices, faces, budget)
        normals = vertex_normals(vertices, faces)
        offset = config.effective_color_offset(lattice.bound)
        if config.color_mode == "vertex":
            with timer.section("colors"):
                colors = vertex_colors(model, vertices, normals, offset, config.chunk)
            mesh = TexturedMesh(vertices, faces, normals, colors=colors)
        else:
            mesh = _textured(model, vertices, faces, normals, offset, config, decode, timer)
    mesh.info.update(
        threshold=lattice.threshold,
        resolution=config.resolution,
        coarse_source=lattice.coarse_source,
        field_evaluations=lattice.evaluations,
        **counts,
        timings=dict(timer.totals),
    )
    log.info("exported %d vertices, %d faces at threshold %.4g in %.2f s", len(mesh.vertices), len(mesh.faces), lattice.threshold, sum(timer.totals.values()))
    return mesh


def _check_inputs(model: RadianceField, config: ExportConfig | None, decode: Decoder | None) -> ExportConfig:
    config = ExportConfig() if config is None else config
    if not isinstance(config, ExportConfig):
        raise ValueError(f"config must be an ExportConfig, got {type(config).__name__}")
    for name in ("density", "query"):
        if not callable(getattr(model, name, None)):
            raise ValueError(f"model must have a callable {name}(x [N, 3]); got {type(model).__name__} without it")
    scene_bound(model)
    if decode is not None and not callable(decode):
        raise ValueError(f"decode must be None or a callable latent [1, C, h, w] -> image [1, 3, 8h, 8w], got {type(decode).__name__}")
    if decode is not None and color_space(model) == "rgb":
        log.info("decode is not used: the field's colours are RGB already")
    elif decode is not None and config.color_mode == "vertex":
        log.warning("decode is ignored in color_mode 'vertex': vertex colours use the linear map")
    return config


def _textured(
    model: RadianceField,
    vertices: np.ndarray,
    faces: np.ndarray,
    normals: np.ndarray,
    offset: float,
    config: ExportConfig,
    decode: Decoder | None,
    timer: StepTimer,
) -> TexturedMesh:
    rgb = color_space(model) == "rgb"
    scale = 1 if decode is None or rgb else VAE_SCALE
    size = config.texture_size // scale
    with timer.section("uv_unwrap"):
        atlas = unwrap(vertices, faces, size, max(1, math.ceil(config.padding / scale)))
    vertices, normals = vertices[atlas.vertex_map], normals[atlas.vertex_map]
    with timer.section("bake"):
        latent, _ = bake_latent_texture(model, vertices, normals, atlas.faces, atlas.uvs, size, offset, config.chunk)
    with timer.section("decode"):
        texture = rgb_texture(latent) if rgb else decode_texture(latent, decode)
    return TexturedMesh(vertices, atlas.faces, normals, uvs=atlas.uvs, texture=texture)


def export_checkpoint(
    checkpoint_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    format: str = "glb",
    config: ExportConfig | None = None,
    decode: Decoder | None = None,
    name: str | None = None,
    device: torch.device | str = "cpu",
    on_stage: Callable[[str], None] | None = None,
) -> list[Path]:
    """Load a Latent-NeRF checkpoint (or a refined RGB one), extract its mesh and write ``out_dir/<name>.<format>``.

    ``format``: "glb" (embedded texture or COLOR_0), "obj" (+ .mtl and .png when textured) or "ply" (vertex
    colours; a PLY cannot hold a texture, so it is exported with color_mode "vertex"). ``name`` defaults to
    the checkpoint's stem. Returns the written paths (the mesh file first).
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {format!r}")
    if name is not None and (not name or Path(name).name != name):
        raise ValueError(f"name must be a plain file name without folders, got {name!r}")
    model = load_field(checkpoint_path, device)
    stem = name or Path(checkpoint_path).stem
    return export_mesh(model, Path(out_dir) / f"{stem}.{format}", format, config, decode, on_stage)[1]


def load_field(checkpoint_path: str | os.PathLike, device: torch.device | str = "cpu") -> RadianceField:
    """The field of a "latent_nerf" checkpoint (a LatentNeRF) or of an "rgb_nerf" one (a refined RgbNeRF), in eval mode."""
    from ..checkpoint import read_record

    if read_record(checkpoint_path).get("kind") == "rgb_nerf":
        from ..refine.train import load_refined

        return load_refined(checkpoint_path, device)[0].eval()
    return load_latent_nerf(checkpoint_path, device)[0].eval()


def export_mesh(
    model: RadianceField,
    path: str | os.PathLike,
    format: str,
    config: ExportConfig | None = None,
    decode: Decoder | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> tuple[TexturedMesh, list[Path]]:
    """Extract the mesh for ``format`` and write it to ``path``: (mesh, written paths, mesh file first).

    A PLY cannot hold a texture, so "ply" is extracted with color_mode "vertex".
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {format!r}")
    config = ExportConfig() if config is None else config
    if format == "ply" and isinstance(config, ExportConfig) and config.color_mode != "vertex":
        config = dataclasses.replace(config, color_mode="vertex")
    mesh = extract_mesh(model, config, decode, on_stage)
    return mesh, save_mesh(mesh, path, format)
