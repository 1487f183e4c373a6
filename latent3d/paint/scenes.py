"""Known answers for Latent-Paint: a UV sphere with analytic UVs, a smooth latent texture, and an oracle
denoiser whose target is renders of a mesh carrying a known texture (tests, benchmarks, offline demos)."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..guidance.denoiser import OracleDenoiser
from .mesh import PaintMesh, make_paint_mesh, place_paint_mesh
from .render import MeshTensors, render_views


def uv_sphere(rows: int = 24, cols: int = 48, radius: float = 1.0) -> PaintMesh:
    """A latitude-longitude sphere, (rows + 1)·(cols + 1) vertices (the seam at φ = 0 and the poles
    duplicated), 2·rows·cols faces counter-clockwise from outside. UVs: u = φ/360° (φ = 0 at +z, 90° at
    +x, as the cameras), v = 1 − θ/180° (θ from +y), so the texture's top row is the north pole."""
    theta = np.linspace(0.0, math.pi, rows + 1)
    phi = np.linspace(0.0, 2 * math.pi, cols + 1)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    grid = np.stack([np.sin(t) * np.sin(p), np.cos(t), np.sin(t) * np.cos(p)], -1)  # [rows + 1, cols + 1, 3]
    grid[:, -1] = grid[:, 0]  # the seam's copies and the poles' copies coincide exactly (sin 2π, sin π ≠ 0 in floats)
    grid[0], grid[-1] = (0.0, 1.0, 0.0), (0.0, -1.0, 0.0)
    vertices = radius * grid.reshape(-1, 3)
    uvs = np.stack([p / (2 * math.pi), 1.0 - t / math.pi], -1).reshape(-1, 2)
    index = np.arange((rows + 1) * (cols + 1)).reshape(rows + 1, cols + 1)
    a, b, c, d = index[:-1, :-1], index[1:, :-1], index[1:, 1:], index[:-1, 1:]
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return make_paint_mesh(vertices, faces, uvs, source="uv sphere")  # placement on the unique positions: centred exactly


def smooth_latent_texture(size: int) -> torch.Tensor:
    """[4, size, size] float32: a smooth latent pattern in about [−1, 1] per channel (a few periods in u
    and v), image-ordered (row 0 = v near 1)."""
    s = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    v, u = torch.meshgrid(1.0 - s, s, indexing="ij")
    return torch.stack([
        torch.sin(2 * math.pi * u) * torch.sin(math.pi * v),
        torch.cos(2 * math.pi * v),
        0.8 * torch.cos(4 * math.pi * u),
        0.5 * (u - v),
    ])


def painted_oracle(mesh: PaintMesh, texture: torch.Tensor, background: torch.Tensor, mesh_scale: float = 0.6) -> OracleDenoiser:
    """An oracle whose target views are ``mesh`` (placed at ``mesh_scale``, as Latent-Paint places it)
    with ``texture`` [4, R, R] in front of ``background`` [4, h, w], rendered bilinearly."""
    placed = MeshTensors.from_mesh(place_paint_mesh(mesh, mesh_scale))

    @torch.no_grad()
    def render(cameras, height: int, width: int) -> torch.Tensor:
        return render_views(placed, texture.to(cameras.device), background.to(cameras.device), cameras, height, width).image

    return OracleDenoiser(render)
