"""Stable Diffusion 1.x latents ↔ RGB through the linear approximation of docs/method.md §1.

A model-space SD1.x latent z (VAE latent × 0.18215) maps to an approximate sRGB colour by

    rgb = clamp((zᵀ W + 1) / 2, 0, 1),   W [4, 3] = ``LATENT_RGB_MATRIX``,

one row per latent channel. It costs nothing, so previews, vertex colours and full-resolution texture
bakes use it where no VAE decoder is at hand. ``rgb_to_latents`` is its minimum-norm least-squares inverse
(Latent-Paint initialises its latent texture near a colour with it, docs/method.md §3).
"""

from __future__ import annotations

import torch

LATENT_RGB_MATRIX: tuple[tuple[float, float, float], ...] = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)
"""W [4, 3]: row c is latent channel c's contribution to (R, G, B) in [-1, 1] units (docs/method.md §1)."""


def latent_rgb_matrix(device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``LATENT_RGB_MATRIX`` as a [4, 3] tensor."""
    return torch.tensor(LATENT_RGB_MATRIX, device=device, dtype=dtype)


def _check(name: str, x: torch.Tensor, channels: int) -> None:
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0 or x.shape[-1] != channels:
        raise ValueError(f"{name} must have {channels} channels in its last dimension, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def latents_to_rgb(z: torch.Tensor) -> torch.Tensor:
    """z [..., 4] model-space SD1.x latents -> rgb [..., 3] sRGB in [0, 1], same dtype and device."""
    _check("z", z, 4)
    w = latent_rgb_matrix(z.device, z.dtype)
    return ((z @ w + 1) * 0.5).clamp(0.0, 1.0)


def rgb_to_latents(rgb: torch.Tensor) -> torch.Tensor:
    """rgb [..., 3] in [0, 1] -> z [..., 4], the minimum-norm z with (zᵀW + 1)/2 = rgb.

    W has rank 3, so every colour is reached exactly (before the clamp); of the one-parameter family of
    latents that give it, the pseudo-inverse picks the one closest to 0, i.e. to the latent prior's mean.
    """
    _check("rgb", rgb, 3)
    pinv = torch.linalg.pinv(latent_rgb_matrix(rgb.device, torch.float64)).to(rgb.dtype)  # [3, 4]
    return (2 * rgb - 1) @ pinv


def linear_decode(latents: torch.Tensor) -> torch.Tensor:
    """latents [B, 4, h, w] -> images [B, 3, h, w] in [0, 1] by the linear map (no 8× upsampling)."""
    if not torch.is_tensor(latents) or latents.dim() != 4 or latents.shape[1] != 4:
        shape = tuple(latents.shape) if torch.is_tensor(latents) else type(latents).__name__
        raise ValueError(f"latents must be a [B, 4, h, w] tensor, got {shape}")
    return latents_to_rgb(latents.movedim(1, -1)).movedim(-1, 1)
