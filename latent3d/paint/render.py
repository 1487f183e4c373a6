"""Latent-Paint's renderer: a UV-textured mesh in front of a background of latent colours on directions.

A view is rasterized (``raster.rasterize``, no gradient: the geometry is fixed), its pixels' UVs are
interpolated and the texture is sampled there (``texture.sample_texture``, differentiable w.r.t. the
texture); pixels no face covers show the background: image = mask·texture(uv) + (1 − mask)·background.

Background (docs/method.md §3). The official code renders a sphere of radius 20 around the origin whose
faces carry learnable latent colours, behind the mesh. A camera sits at most 1.8 from the origin, so the
point where a pixel's ray leaves through that sphere lies in the ray's own direction up to a parallax of
asin(1.8/20) ≈ 5°: the sphere is, to that accuracy, a learnable latent function of the ray direction. We
store that function directly as an equirectangular latent map [C, h, 2h] looked up bilinearly by the ray's
(azimuth, polar angle) — the same family of backgrounds, without rasterizing a second mesh — with the
azimuth wrapping around and φ = 0 at +z (the front). A 1×1 map is a constant background.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, ContextManager

import numpy as np
import torch
import torch.nn.functional as F

from ..nerf.cameras import Cameras, camera_rays
from .mesh import PaintMesh
from .raster import clip_positions, interpolate, rasterize
from .texture import sample_texture


def _no_section(name: str) -> ContextManager[None]:
    return contextlib.nullcontext()


@dataclass(frozen=True)
class MeshTensors:
    """A placed PaintMesh on a device: what the renderer reads every step."""

    vertices: torch.Tensor  # [V, 3] float32, scene coordinates
    faces: torch.Tensor  # [F, 3] int64
    uvs: torch.Tensor  # [V, 2] float32, v up

    @classmethod
    def from_mesh(cls, mesh: PaintMesh, device: torch.device | str = "cpu") -> "MeshTensors":
        return cls(
            torch.tensor(np.array(mesh.vertices), dtype=torch.float32, device=device),
            torch.tensor(np.array(mesh.faces), dtype=torch.int64, device=device),
            torch.tensor(np.array(mesh.uvs), dtype=torch.float32, device=device),
        )


@dataclass
class PaintView:
    """A rendered batch of views."""

    image: torch.Tensor  # [B, C, H, W]: texture where the mesh covers the pixel, background elsewhere
    mask: torch.Tensor  # [B, 1, H, W] float 0/1: the mesh covers the pixel centre


def rasterize_views(mesh: MeshTensors, cameras: Cameras, height: int, width: int, backend: str = "auto") -> torch.Tensor:
    """rast [B, H, W, 4] of the mesh seen by ``cameras`` (``raster.rasterize``'s contract; no gradient)."""
    with torch.no_grad():
        clip = clip_positions(mesh.vertices, cameras.to(mesh.vertices.device), height, width)
        return rasterize(clip, mesh.faces, (height, width), backend=backend)


def environment_lookup(environment: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Latent colours [B, C, H, W] of the equirectangular map ``environment`` [C, h, w] at unit ray
    ``directions`` [B, H, W, 3] (module docstring). Column j covers azimuths [j, j + 1)·360°/w with
    φ = atan2(x, z) (0 at +z, 90° at +x, as the cameras); row i covers polar angles [i, i + 1)·180°/h from
    +y. Bilinear between texel centres, wrapping around in azimuth, clamped at the poles. Differentiable
    w.r.t. ``environment``."""
    channels, rows, cols = environment.shape
    x, y, z = directions.unbind(-1)
    u = torch.remainder(torch.atan2(x, z) / (2 * math.pi), 1.0)  # [B, H, W] in [0, 1)
    v = torch.arccos(y.clamp(-1.0, 1.0)) / math.pi  # 0 at +y (up), 1 at −y
    # one wrapped column on each side, so bilinear lookups at the seam read the other end of the map
    padded = torch.cat([environment[:, :, -1:], environment, environment[:, :, :1]], 2)
    grid = torch.stack([2.0 * (u * cols + 1.0) / (cols + 2) - 1.0, 2.0 * v - 1.0], -1)
    batch = directions.shape[0]
    return F.grid_sample(padded[None].expand(batch, -1, -1, -1), grid.to(padded.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def background_latents(background: torch.Tensor, cameras: Cameras, height: int, width: int) -> torch.Tensor:
    """[B, C, H, W] background of the views: a constant for a 1×1 map, else ``environment_lookup``."""
    if background.shape[-2:] == (1, 1):
        return background[None].expand(len(cameras), -1, height, width)
    _, directions = camera_rays(cameras.to(background.device), height, width)
    return environment_lookup(background, directions)


def render_views(
    mesh: MeshTensors,
    texture: torch.Tensor,
    background: torch.Tensor,
    cameras: Cameras,
    height: int,
    width: int,
    mode: str = "bilinear",
    backend: str = "auto",
    section: Callable[[str], ContextManager[None]] = _no_section,
) -> PaintView:
    """Views [B, C, H, W] of the mesh with ``texture`` [C, R, R] in front of ``background`` [C, h, w]
    (both differentiable). ``mode``: the texture filter of ``sample_texture``; ``backend``: the
    rasterizer's. ``section(name)`` times the "rasterize" and "texture" parts (benchmarks)."""
    with section("rasterize"):
        rast = rasterize_views(mesh, cameras, height, width, backend)
    with section("texture"):
        with torch.no_grad():
            uv = interpolate(mesh.uvs, rast, mesh.faces)  # [B, H, W, 2]
            mask = (rast[..., 3] > 0).unsqueeze(1)  # [B, 1, H, W]
        features = sample_texture(texture, uv, mode)
        back = background_latents(background, cameras, height, width).to(features.dtype)
        image = torch.where(mask, features, back)
    return PaintView(image, mask.to(image.dtype))


def render_rgb(
    mesh: MeshTensors,
    texture: torch.Tensor,
    cameras: Cameras,
    size: int,
    background_rgb: tuple[float, float, float] = (1.0, 1.0, 1.0),
    backend: str = "auto",
) -> torch.Tensor:
    """RGB views [B, 3, size, size] in [0, 1] of the mesh with an RGB ``texture`` [3, Ht, Wt] (e.g. the
    decoded 1024² texture) on a plain background, mip-mapped so a large texture does not alias in a small
    view (the official evaluation renders the decoded texture the same way, on white)."""
    back = torch.tensor(background_rgb, dtype=texture.dtype, device=texture.device)[:, None, None]
    with torch.no_grad():
        view = render_views(mesh, texture, back, cameras, size, size, "mipmap", backend)
    return view.image.clamp(0.0, 1.0)
