"""Analytic reference scenes with known latents: targets for the oracle denoiser in tests, benchmarks
and the offline demo. A scene is a module with ``forward(x [N,3]) -> (σ [N], latent [N,4])`` and
``density(x)``, rendered by the same renderer as a LatentNeRF."""

from __future__ import annotations

import torch
from torch import nn

from .guidance.denoiser import OracleDenoiser
from .nerf.cameras import Cameras
from .nerf.render import RenderConfig, render_views


class TwoBlobs(nn.Module):
    """Two soft-edged balls with different latent colours (a red-ish and a blue-ish one in SD1.x terms),
    density ``peak`` inside, and a latent that also varies with height so views differ."""

    def __init__(self, peak: float = 200.0, sharpness: float = 100.0) -> None:
        super().__init__()
        self.register_buffer("centers", torch.tensor([[0.25, 0.0, 0.0], [-0.25, 0.1, 0.0]]))
        self.register_buffer("radii", torch.tensor([0.3, 0.25]))
        self.register_buffer("colors", torch.tensor([[1.0, -0.2, -0.5, 0.0], [-0.6, 0.3, 0.8, -0.4]]))
        self.peak, self.sharpness = peak, sharpness

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d2 = ((x[:, None, :] - self.centers[None]) ** 2).sum(-1)  # [N, 2]
        sigma = (self.peak * torch.sigmoid((self.radii**2 - d2) * self.sharpness)).sum(-1)
        nearest = d2.argmin(-1)
        latent = self.colors[nearest] + torch.stack([0 * x[:, 0], x[:, 1], 0 * x[:, 0], 0.5 * x[:, 2]], -1)
        return sigma, latent

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)[0]


class ColorBlobs(nn.Module):
    """TwoBlobs' two balls, each of one constant colour: ``colors`` [2, C] (RGB for an RGB target, or
    latents, e.g. ``rgb_to_latents`` of the same colours, for its latent twin)."""

    def __init__(self, colors: torch.Tensor, peak: float = 200.0, sharpness: float = 100.0) -> None:
        super().__init__()
        shape = TwoBlobs()
        self.register_buffer("centers", shape.centers.clone())
        self.register_buffer("radii", shape.radii.clone())
        self.register_buffer("colors", torch.as_tensor(colors, dtype=torch.float32).clone())
        self.peak, self.sharpness = peak, sharpness

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d2 = ((x[:, None, :] - self.centers[None]) ** 2).sum(-1)  # [N, 2]
        sigma = (self.peak * torch.sigmoid((self.radii**2 - d2) * self.sharpness)).sum(-1)
        return sigma, self.colors[d2.argmin(-1)]

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)[0]


class ConstantBackground(nn.Module):
    """The same value [C] in every direction."""

    def __init__(self, value) -> None:
        super().__init__()
        self.register_buffer("value", torch.as_tensor(value, dtype=torch.float32).reshape(-1).clone())

    def forward(self, directions: torch.Tensor) -> torch.Tensor:
        return self.value.to(directions.device).expand(directions.shape[0], -1)


class ZeroBackground(nn.Module):
    def forward(self, directions: torch.Tensor) -> torch.Tensor:
        return directions.new_zeros(directions.shape[0], 4)


def scene_renderer(scene: nn.Module, config: RenderConfig | None = None, bound: float = 1.0, background: nn.Module | None = None):
    """``render(cameras, h, w) -> images [B, C, h, w]`` of an analytic scene (every step sampled); the
    background defaults to 4 zero latent channels."""
    config = config or RenderConfig(step_size=2.0 / 128)
    background = background if background is not None else ZeroBackground()

    @torch.no_grad()
    def render(cameras: Cameras, height: int, width: int) -> torch.Tensor:
        scene.to(cameras.device)
        background.to(cameras.device)
        return render_views(scene, background, cameras, height, width, config, bound)[0].latent

    return render


def oracle_for(scene: nn.Module, config: RenderConfig | None = None) -> OracleDenoiser:
    """An oracle denoiser whose target is ``scene``."""
    return OracleDenoiser(scene_renderer(scene, config))
