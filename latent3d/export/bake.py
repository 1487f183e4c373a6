"""Colour from the field: latents at vertices or texels, decoded to RGB; or, for a field whose
``color_space`` is "rgb" (a refined field), its RGB colours as they are (no decode).

Where colour is read: a surface point p with unit outward normal n reads the field's latent at
p − offset·n. Volume rendering weights wᵢ = Tᵢαᵢ of a sharp surface sit just behind the iso-surface,
and a decimated surface strays from the iso-surface by about a lattice cell, so the read point is pushed
one lattice spacing inside by default (``ExportConfig.color_offset``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..colors import latents_to_rgb, linear_decode
from .density import RadianceField, model_device
from .uv import fill_gutters, rasterize_uv

Decoder = Callable[[torch.Tensor], torch.Tensor]
"""latent [1, C, h, w] model-space (×0.18215 for SD1.x), CPU float32 -> image [1, 3, 8h, 8w] in [0, 1]."""

VAE_SCALE = 8
"""A Stable Diffusion VAE decodes an h×w latent into 8h×8w pixels."""


@torch.no_grad()
def query_latents(model: RadianceField, points: np.ndarray, chunk: int) -> torch.Tensor:
    """Latent [N, C] float32 CPU at world points [N, 3] (``chunk`` points per field call); NaN -> 0."""
    device = model_device(model)
    x = torch.as_tensor(np.asarray(points, dtype=np.float32), device=device)
    if x.shape[0] == 0:
        raise ValueError("query_latents needs at least one point, got 0")
    parts = [model.query(x[i : i + chunk])[1].float().cpu() for i in range(0, x.shape[0], chunk)]
    return torch.nan_to_num(torch.cat(parts), nan=0.0, posinf=0.0, neginf=0.0)


def color_space(model: RadianceField) -> str:
    """"rgb" when the field's ``query`` gives RGB in [0, 1] (its ``color_space`` attribute), else "latent"."""
    space = getattr(model, "color_space", "latent")
    if space not in ("latent", "rgb"):
        raise ValueError(f"model.color_space must be 'latent' or 'rgb', got {space!r}")
    return space


def vertex_colors(model: RadianceField, vertices: np.ndarray, normals: np.ndarray, offset: float, chunk: int) -> np.ndarray:
    """[V, 3] float32 sRGB in [0, 1] read ``offset`` inside each vertex: an RGB field's colours as they are,
    a latent field's latents through the linear map."""
    values = query_latents(model, vertices - offset * normals, chunk)
    if color_space(model) == "rgb":
        return _three_channels(values, "vertex colours").clamp(0.0, 1.0).numpy()
    return latents_to_rgb(_four_channels(values, "vertex colours")).numpy()


def bake_latent_texture(
    model: RadianceField,
    vertices: np.ndarray,
    normals: np.ndarray,
    faces: np.ndarray,
    uvs: np.ndarray,
    size: int,
    offset: float,
    chunk: int,
) -> tuple[torch.Tensor, np.ndarray]:
    """The field's latent (an RGB field's colours) baked into a ``size``×``size`` UV texture.

    vertices [V, 3], normals [V, 3], faces [F, 3], uvs [V, 2] (v up) -> (latent texture [C, size, size]
    float32 CPU with gutters filled from the nearest chart texel, covered [size, size] bool). Each covered
    texel's surface point and normal are interpolated with its barycentrics in its face.
    """
    face_id, bary = rasterize_uv(uvs, faces, size)
    covered = face_id >= 0
    if not covered.any():
        raise ValueError(f"no texel of the {size}×{size} texture is covered by a UV triangle; the UV atlas is degenerate")
    corners = faces[face_id[covered]]  # [T, 3]
    b = bary[covered][..., None]  # [T, 3, 1]
    points = (vertices[corners] * b).sum(1)
    n = (normals[corners] * b).sum(1)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    latents = query_latents(model, points - offset * n, chunk).numpy()  # [T, C]
    image = np.zeros((size, size, latents.shape[1]), dtype=np.float32)
    image[covered] = latents
    image = fill_gutters(image, covered)
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous(), covered


def decode_texture(latent: torch.Tensor, decode: Decoder | None) -> np.ndarray:
    """Latent texture [C, h, w] -> RGB texture [H, W, 3] uint8.

    ``decode`` None: the linear map of docs/method.md §1 at the same size (H = h). Otherwise ``decode`` gets
    latent[None] ([1, C, h, w], model space, CPU float32) and must return [1, 3, 8h, 8w] in [0, 1] on any
    device (H = 8h); values are clamped to [0, 1].
    """
    c, h, w = latent.shape
    if decode is None:
        _four_channels(latent.movedim(0, -1), "texture decode")
        image = linear_decode(latent[None])
        expected = (1, 3, h, w)
    else:
        with torch.no_grad():
            image = decode(latent[None].float())
        expected = (1, 3, VAE_SCALE * h, VAE_SCALE * w)
    if not torch.is_tensor(image) or tuple(image.shape) != expected:
        got = tuple(image.shape) if torch.is_tensor(image) else type(image).__name__
        raise ValueError(f"decode must return a tensor of shape {expected} (8× the latent [1, {c}, {h}, {w}]) in [0, 1], got {got}")
    image = image.detach().float().cpu()
    if not torch.isfinite(image).all():
        raise ValueError("decode returned NaN or infinite values")
    return (image[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def rgb_texture(colors: torch.Tensor) -> np.ndarray:
    """An RGB field's baked colours [3, h, w] in [0, 1] -> texture [h, w, 3] uint8 (clamped; no decode)."""
    _three_channels(colors.movedim(0, -1), "texture")
    return (colors.detach().float().cpu().permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _three_channels(colors: torch.Tensor, use: str) -> torch.Tensor:
    if colors.shape[-1] != 3:
        raise ValueError(f"{use}: a field with color_space 'rgb' must return 3 colour channels from query, got {colors.shape[-1]}")
    return colors


def _four_channels(latents: torch.Tensor, use: str) -> torch.Tensor:
    if latents.shape[-1] != 4:
        raise ValueError(
            f"{use}: the linear latent→RGB map needs 4 latent channels (SD1.x), the field has {latents.shape[-1]}; "
            "pass a decode for other latent spaces"
        )
    return latents
