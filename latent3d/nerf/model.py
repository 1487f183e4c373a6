"""LatentNeRF: the trained object passed between stages (field + background + occupancy grid)."""

from __future__ import annotations

import torch
from torch import nn

from .cameras import Cameras
from .field import Background, FieldConfig, LatentField
from .render import OccupancyGrid, RenderConfig, ViewRender, render_views


class LatentNeRF(nn.Module):
    """A latent radiance field with its background and occupancy grid.

    ``query(x)`` -> (σ [N], latent [N, C]) and ``density(x)`` at world points; ``render`` draws views.
    Its ``state_dict`` holds everything needed to render it again. ``render_config`` is stored resolved
    for ``device`` (an automatic step size becomes the device's default).
    """

    def __init__(self, field_config: FieldConfig, render_config: RenderConfig, device="cpu") -> None:
        super().__init__()
        self.field_config = field_config
        self.render_config = render_config.resolved(device)
        self.field = LatentField(field_config, device)
        self.background = Background(field_config, device)
        self.occupancy = OccupancyGrid(render_config.occupancy_resolution, field_config.bound, device)

    @property
    def bound(self) -> float:
        return self.field_config.bound

    @property
    def device(self) -> torch.device:
        return self.occupancy.density.device

    def query(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.field(x)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self.field.density(x)

    def update_occupancy(self, generator: torch.Generator | None = None) -> None:
        self.occupancy.update(self.field.density, self.render_config, generator)

    def render(
        self,
        cameras: Cameras,
        height: int,
        width: int,
        generator: torch.Generator | None = None,
        jitter: bool = False,
        use_occupancy: bool = True,
    ):
        """(ViewRender with latent [B, C, H, W], opacity, depth; packed samples when grad is enabled)."""
        occupancy = self.occupancy if use_occupancy else None
        return render_views(
            self.field, self.background, cameras.to(self.device), height, width, self.render_config, self.bound, occupancy, generator, jitter
        )

    @torch.no_grad()
    def render_latents(self, cameras: Cameras, height: int, width: int) -> ViewRender:
        return self.render(cameras, height, width)[0]
