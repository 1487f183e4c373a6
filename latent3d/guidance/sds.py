"""Score distillation sampling (SDS) and the opacity-entropy sparsity loss (docs/method.md §1)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ..nerf.cameras import Cameras
from .denoiser import Denoiser

Weighting = Literal["sqrt_alpha_one_minus_alpha", "one_minus_alpha", "uniform"]


@dataclass
class SdsConfig:
    """Score distillation. Defaults are the official Latent-NeRF ones."""

    guidance_scale: float = 100.0
    """Classifier-free guidance scale s in ε̂ = ε_u + s(ε_c − ε_u)."""
    t_range: tuple[float, float] = (0.02, 0.98)
    """Timesteps are drawn uniformly from the integers in [t_range[0]·T, t_range[1]·T]."""
    weighting: Weighting = "sqrt_alpha_one_minus_alpha"
    """w(t): official √ᾱ(1−ᾱ); threestudio/DreamFusion-style 1−ᾱ; or 1."""

    def __post_init__(self) -> None:
        lo, hi = self.t_range
        if not (0.0 <= lo <= hi <= 1.0):
            raise ValueError(f"SdsConfig.t_range must satisfy 0 <= low <= high <= 1, got {self.t_range!r}")
        if not math.isfinite(self.guidance_scale):
            raise ValueError(f"SdsConfig.guidance_scale must be finite, got {self.guidance_scale!r}")
        if self.weighting not in ("sqrt_alpha_one_minus_alpha", "one_minus_alpha", "uniform"):
            raise ValueError(f"SdsConfig.weighting must be sqrt_alpha_one_minus_alpha, one_minus_alpha or uniform, got {self.weighting!r}")


def timestep_bounds(config: SdsConfig, num_timesteps: int) -> tuple[int, int]:
    lo = int(config.t_range[0] * num_timesteps)
    hi = min(int(config.t_range[1] * num_timesteps), num_timesteps - 1)
    return lo, max(lo, hi)


def sample_timesteps(config: SdsConfig, num_timesteps: int, n: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """[n] int64 timesteps uniform on {lo, …, hi} (20 … 980 for the defaults)."""
    lo, hi = timestep_bounds(config, num_timesteps)
    return torch.randint(lo, hi + 1, (n,), generator=generator, device=device)


def sds_weight(alpha_bar: torch.Tensor, weighting: Weighting) -> torch.Tensor:
    if weighting == "sqrt_alpha_one_minus_alpha":
        return alpha_bar.sqrt() * (1 - alpha_bar)
    if weighting == "one_minus_alpha":
        return 1 - alpha_bar
    return torch.ones_like(alpha_bar)


@dataclass
class SdsOutput:
    loss: torch.Tensor  # scalar; d loss / d latents == grad
    grad: torch.Tensor  # [B, C, h, w] w(t)(ε̂ − ε)
    timesteps: torch.Tensor  # [B]


def guided_noise(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance ε̂ = ε_u + s(ε_c − ε_u)."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def sds_loss(
    latents: torch.Tensor,
    denoiser: Denoiser,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    config: SdsConfig,
    generator: torch.Generator | None = None,
    cameras: Cameras | None = None,
) -> SdsOutput:
    """SDS on rendered latents [B, C, h, w] (model space) with text embeddings cond/uncond [B, L, C].

    Draws t then ε from ``generator``; runs the denoiser once on the batch [uncond; cond]. The loss is
    ½‖z − sg(z − g)‖² summed, whose gradient with respect to ``latents`` is exactly g = w(t)(ε̂ − ε), so a
    mixed-precision gradient scaler scales it like any other loss.
    """
    b = latents.shape[0]
    device = latents.device
    alphas = denoiser.alphas_cumprod.to(device)
    t = sample_timesteps(config, alphas.shape[0], b, generator, device)
    with torch.no_grad():
        z = latents.detach().float()
        noise = torch.randn(z.shape, generator=generator, device=device, dtype=z.dtype)
        alpha_bar = alphas[t].view(-1, 1, 1, 1)
        z_t = alpha_bar.sqrt() * z + (1 - alpha_bar).sqrt() * noise
        both_cameras = None if cameras is None else Cameras.cat([cameras, cameras])
        eps = denoiser.predict_noise(torch.cat([z_t, z_t]), torch.cat([t, t]), torch.cat([uncond, cond]), cameras=both_cameras)
        eps_uncond, eps_cond = eps.float().chunk(2)
        grad = sds_weight(alpha_bar, config.weighting) * (guided_noise(eps_uncond, eps_cond, config.guidance_scale) - noise)
    target = (latents.float() - grad).detach()
    loss = 0.5 * (latents.float() - target).square().sum()
    return SdsOutput(loss=loss, grad=grad, timesteps=t)


def opacity_entropy(opacity: torch.Tensor) -> torch.Tensor:
    """Mean binary entropy of accumulated opacity a = clamp(Σw, 1e-5, 1 − 1e-5) (pushes a to 0 or 1)."""
    a = opacity.float().clamp(1e-5, 1 - 1e-5)
    return (-(a * a.log() + (1 - a) * (1 - a).log())).mean()
