"""Where Latent-Paint's parameters start: the latent texture and the background (docs/method.md §3).

Colour start (official): texture = w·z_c + s·N(0, 1) per texel with w = 0.3, s = 0.4 and z_c the ridge
regression z_c = (AᵀA + λI)⁻¹Aᵀc, λ = 1e-2, of the colour c (official: red (1, 0, 0)) through
A = ``LATENT_RGB_MATRIX``ᵀ [3, 4]. As in the official code it regresses the raw colour c, not the
preview's 2c − 1 (``latent3d.colors.rgb_to_latents`` inverts the preview exactly): the start is a noisy
latent "near" the colour, as the paper describes it, not an exact preview of it.

Texture start: the mesh's own base-colour texture, encoded by a VAE encoder when one is given (the image
resized to 8R×8R, so the latent is R×R), else through the linear map's exact inverse at R×R. No noise.

Background: the official sphere's colours start uniform in [0, 1) per latent channel; a constant
background starts at (or stays, when fixed) the latent whose linear preview is ``background_color``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..colors import latent_rgb_matrix, rgb_to_latents

Encoder = Callable[[torch.Tensor], torch.Tensor]
"""images [1, 3, H, W] float32 in [0, 1] (CPU) -> model-space latents [1, 4, H/8, W/8] (×0.18215 for SD1.x)."""

ENVIRONMENT_INIT = (0.0, 1.0)
"""Range of the uniform start of the environment map's latent colours (official: torch.rand)."""


def color_latent(rgb: tuple[float, float, float], regularizer: float = 1e-2) -> torch.Tensor:
    """z [4] float32: the official ridge regression (AᵀA + λI)⁻¹Aᵀ·rgb of a raw colour (module docstring)."""
    a = latent_rgb_matrix(dtype=torch.float64).T  # [3, 4]: rgb = A·z
    c = torch.tensor(rgb, dtype=torch.float64)
    return (torch.linalg.solve(a.T @ a + regularizer * torch.eye(4, dtype=torch.float64), a.T @ c)).float()


def color_texture(rgb, weight: float, noise: float, size: int, regularizer: float, generator: torch.Generator) -> torch.Tensor:
    """[4, size, size] float32 CPU: weight·z_rgb + noise·N(0, 1), the noise drawn from ``generator`` (CPU)."""
    z = color_latent(rgb, regularizer)
    return weight * z[:, None, None] + noise * torch.randn(4, size, size, generator=generator)


def texture_from_image(image: np.ndarray, size: int, encode: Encoder | None, source: str) -> torch.Tensor:
    """[4, size, size] float32 CPU latent texture from an RGB texture ``image`` [H, W, 3] uint8.

    ``encode`` (module docstring's Encoder) gets the image resized to 8·size; without it the linear map's
    inverse is applied at ``size``. Raises ValueError when the encoder returns another shape or non-finite
    values, naming ``source``."""
    rgb = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]  # [1, 3, H, W]
    if encode is None:
        small = _resize(rgb, size).clamp(0.0, 1.0)
        return rgb_to_latents(small[0].permute(1, 2, 0)).permute(2, 0, 1).contiguous()
    big = _resize(rgb, 8 * size).clamp(0.0, 1.0)
    with torch.no_grad():
        latent = encode(big)
    if not torch.is_tensor(latent) or tuple(latent.shape) != (1, 4, size, size):
        got = tuple(latent.shape) if torch.is_tensor(latent) else type(latent).__name__
        raise ValueError(f"{source}: the VAE encoder must map a [1, 3, {8 * size}, {8 * size}] image to a [1, 4, {size}, {size}] latent, got {got}")
    latent = latent.detach().float().cpu()[0]
    if not bool(torch.isfinite(latent).all()):
        raise ValueError(f"{source}: the VAE encoder returned NaN or infinite latents for the mesh's texture")
    return latent.contiguous()


def environment_map(rows: int, generator: torch.Generator) -> torch.Tensor:
    """[4, rows, 2·rows] float32 CPU, uniform in ``ENVIRONMENT_INIT`` (drawn from ``generator``)."""
    low, high = ENVIRONMENT_INIT
    return low + (high - low) * torch.rand(4, rows, 2 * rows, generator=generator)


def constant_background(rgb: tuple[float, float, float]) -> torch.Tensor:
    """[4, 1, 1] float32: the latent whose linear preview is ``rgb`` (``colors.rgb_to_latents``)."""
    return rgb_to_latents(torch.tensor(rgb, dtype=torch.float32))[:, None, None].contiguous()


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """[1, C, H, W] -> [1, C, size, size]: bilinear, antialiased when shrinking."""
    if tuple(image.shape[-2:]) == (size, size):
        return image
    shrink = size < max(image.shape[-2:])
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
