"""Lambertian shading of an RGB field's samples (docs/method.md §4), as the official code and its peers do.

colour = albedo · (r + (1 − r)·max(0, n·l)), with r the ambient ratio, l a unit light direction and n the
outward unit normal −∇σ/‖∇σ‖ from central differences of the density, ∂σ/∂x ≈ (σ(x + εe) − σ(x − εe))/2ε
(ε = 1e-2, points clamped into the scene box); a zero gradient gives n = 0, i.e. ambient light only. The
light is drawn once per step as normalize(camera position + N(0, I)), so it mostly faces the view (no
black frames). Shading happens in RGB only: shading latents gives the "yellow clouds" of latent space.
Gradients flow through the normals into the density, as in the official code. The background is not lit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Shading:
    """One step's lighting: unit light direction [3], ambient ratio r in [0, 1], normal step ε (world units)."""

    light: torch.Tensor
    ambient_ratio: float = 0.1
    epsilon: float = 1e-2


def random_light(camera_position: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """normalize(camera position [3] + N(0, I)): a light near the camera (draws 3 normals from ``generator``)."""
    noise = torch.randn(3, generator=generator, device=camera_position.device, dtype=torch.float32)
    light = camera_position.float().reshape(3) + noise
    return light / light.norm().clamp(min=1e-12)


def density_normals(density, x: torch.Tensor, epsilon: float, bound: float) -> torch.Tensor:
    """Outward unit normals [N, 3] at x [N, 3]: −∇σ/‖∇σ‖ by central differences (6 density calls in one
    batch); 0 where the gradient vanishes."""
    n = x.shape[0]
    offsets = torch.eye(3, device=x.device, dtype=x.dtype) * epsilon  # [3, 3]
    probes = torch.cat([x[None] + offsets[:, None], x[None] - offsets[:, None]]).reshape(-1, 3).clamp(-bound, bound)
    sigma = density(probes).float().reshape(2, 3, n)
    gradient = ((sigma[0] - sigma[1]) / (2 * epsilon)).T  # [N, 3]
    normals = -gradient / gradient.square().sum(-1, keepdim=True).clamp(min=1e-20).sqrt()
    return torch.nan_to_num(normals, nan=0.0, posinf=0.0, neginf=0.0)


def lambertian(albedo: torch.Tensor, normals: torch.Tensor, light: torch.Tensor, ambient_ratio: float) -> torch.Tensor:
    """albedo [N, 3] · (r + (1 − r)·max(0, n·l)) with normals [N, 3] and light [3]."""
    cosine = (normals @ light.to(normals)).clamp(min=0.0)  # [N]
    return albedo * (ambient_ratio + (1.0 - ambient_ratio) * cosine)[:, None]


class LambertianField(nn.Module):
    """An RGB field ``x -> (σ, albedo)`` (with ``density``) lit by ``shading``: x -> (σ, shaded colour)."""

    def __init__(self, field: nn.Module, shading: Shading, bound: float) -> None:
        super().__init__()
        self.field, self.shading, self.bound = field, shading, float(bound)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma, albedo = self.field(x)
        if x.shape[0] == 0:
            return sigma, albedo
        normals = density_normals(self.field.density, x, self.shading.epsilon, self.bound)
        return sigma, lambertian(albedo, normals, self.shading.light, self.shading.ambient_ratio)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self.field.density(x)
