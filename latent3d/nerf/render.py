"""Volume rendering of a latent field with empty-space skipping.

Rays march from the ray–box entry (at least ``near_min``) to the exit with a fixed step; a step's sample
is kept only where the occupancy grid says density can be, so the field is evaluated on a *packed* list
of samples (a few per ray in empty scenes, none for rays that miss everything). Compositing then scatters
σδ back into a [rays, steps] layout, where a cumulative sum along each row gives the transmittance
T_i = exp(−Σ_{j<i} σ_j δ_j), α_i = 1 − exp(−σ_i δ_i), w_i = T_i α_i, image = Σ w_i c_i + (1 − Σ w_i)·bg(d).
Skipped steps carry no density, which is exactly what the occupancy grid asserts.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from .cameras import Cameras, camera_rays

OFFICIAL_STEP_SIZE = 2 * math.sqrt(3) / 1024
"""The official marching step, 2√3/1024 ≈ 0.00338 (1024 steps across the [-1, 1]³ diagonal): ≈ 87 samples
along a ray through an object; the default on CUDA."""
CPU_STEP_SIZE = 2.0 / 128
"""The default step on other devices: one occupancy cell, 4.6× longer than the official one (≈ 19 samples
per ray), so a CPU step's rendering costs ≈ 0.4 s instead of ≈ 2 s. Losses that sum over samples (the
sketch loss) are per unit length, so they mean the same at either step."""


def default_step_size(device: torch.device | str) -> float:
    """The marching step ``RenderConfig.step_size=None`` means on ``device``: official on CUDA, coarser elsewhere."""
    return OFFICIAL_STEP_SIZE if torch.device(device).type == "cuda" else CPU_STEP_SIZE


@dataclass
class RenderConfig:
    """Ray marching and occupancy-grid settings. Defaults are the official ones (docs/method.md §1), except that
    ``step_size`` None resolves per device (``default_step_size``): the official 2√3/1024 on CUDA and one
    occupancy cell (2/128) on CPU/MPS, where the official step would make rendering 4–5× slower."""

    occupancy_resolution: int = 128
    """Cells per axis of the occupancy grid over [-bound, bound]^3."""
    occupancy_update_every: int = 16
    """Refresh the occupancy grid every this many training steps."""
    occupancy_decay: float = 0.95
    """grid = max(decay * grid, new density) for refreshed cells."""
    occupancy_update_fraction: float = 1.0
    """Fraction of cells re-evaluated per refresh. 1 (official): every cell, at one jittered point each,
    so a region that becomes dense is found at the next refresh (for 128³ cells and the paper-size field
    ≈ 10 CPU-seconds per refresh on one CPU thread, ≈ 0.6 s per step amortized: more than the render at
    the CPU step; benchmarks/sds_step.py). Below 1: that fraction at random plus every occupied cell
    (0.125: ≈ 1.5 CPU-seconds, but a region outside the occupied cells is found only after ≈ 1/fraction
    refreshes)."""
    density_threshold: float = 10.0
    """A cell is occupied when its density exceeds min(mean grid density, density_threshold)."""
    step_size: float | None = None
    """Marching step in world units. None: ``default_step_size(device)``, resolved when a model is built
    (OFFICIAL_STEP_SIZE on CUDA, CPU_STEP_SIZE = one occupancy cell elsewhere); checkpoints record the
    resolved value."""
    near_min: float = 0.1
    """Rays start no closer than this to the camera."""
    chunk_rays: int = 16384
    """Rays per chunk when rendering without gradients (previews, turntables)."""

    def __post_init__(self) -> None:
        if not isinstance(self.occupancy_resolution, int) or self.occupancy_resolution <= 0:
            raise ValueError(f"RenderConfig.occupancy_resolution must be a positive integer, got {self.occupancy_resolution!r}")
        if not isinstance(self.occupancy_update_every, int) or self.occupancy_update_every <= 0:
            raise ValueError(f"RenderConfig.occupancy_update_every must be a positive integer, got {self.occupancy_update_every!r}")
        if not (0 < self.occupancy_decay <= 1):
            raise ValueError(f"RenderConfig.occupancy_decay must lie in (0, 1], got {self.occupancy_decay!r}")
        if not (0 < self.occupancy_update_fraction <= 1):
            raise ValueError(f"RenderConfig.occupancy_update_fraction must lie in (0, 1], got {self.occupancy_update_fraction!r}")
        if self.step_size is not None and not (isinstance(self.step_size, (int, float)) and math.isfinite(self.step_size) and self.step_size > 0):
            raise ValueError(f"RenderConfig.step_size must be a positive finite number, got {self.step_size!r}")
        if not (math.isfinite(self.near_min) and self.near_min >= 0):
            raise ValueError(f"RenderConfig.near_min must be >= 0, got {self.near_min!r}")

    def resolved(self, device: torch.device | str) -> "RenderConfig":
        """This config with ``step_size`` None replaced by ``default_step_size(device)``."""
        if self.step_size is not None:
            return self
        return dataclasses.replace(self, step_size=default_step_size(device))


class OccupancyGrid(nn.Module):
    """A max-EMA density grid over [-bound, bound]^3 and its occupied-cell mask (buffers, checkpointed)."""

    def __init__(self, resolution: int, bound: float, device="cpu") -> None:
        super().__init__()
        self.resolution = resolution
        self.bound = bound
        self.register_buffer("density", torch.zeros(resolution**3, device=device))
        self.register_buffer("mask", torch.ones(resolution**3, dtype=torch.bool, device=device))
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64, device=device))
        # bounding box (lo xyz, hi xyz) of the occupied cells plus one cell: rays march only through it
        self.register_buffer("aabb", torch.tensor([-bound] * 3 + [bound] * 3, dtype=torch.float32, device=device))

    def cell_index(self, points: torch.Tensor) -> torch.Tensor:
        """Flat cell index [...] of world points [..., 3] (clamped into the grid)."""
        r = self.resolution
        ijk = ((points + self.bound) * (r / (2 * self.bound))).long().clamp_(0, r - 1)
        return ijk[..., 0] + r * ijk[..., 1] + r * r * ijk[..., 2]

    def occupied(self, points: torch.Tensor) -> torch.Tensor:
        return self.mask[self.cell_index(points)]

    def cell_centers(self, cells: torch.Tensor) -> torch.Tensor:
        r = self.resolution
        ijk = torch.stack([cells % r, (cells // r) % r, cells // (r * r)], -1).float()
        return (ijk + 0.5) * (2 * self.bound / r) - self.bound

    @torch.no_grad()
    def update(self, density_fn, config: RenderConfig, generator: torch.Generator | None = None, chunk: int = 262144) -> None:
        """Re-evaluate density at one jittered point per cell (every cell when
        ``config.occupancy_update_fraction`` is 1, the official rule; else a random fraction plus every
        occupied cell), then grid = max(decay·grid, new), threshold min(mean, density_threshold)."""
        n = self.resolution**3
        device = self.density.device
        cell_size = 2 * self.bound / self.resolution
        if config.occupancy_update_fraction >= 1.0 or int(self.updates) == 0:
            cells = torch.arange(n, device=device)
        else:
            count = max(1, int(n * config.occupancy_update_fraction))
            chosen = torch.randint(0, n, (count,), generator=generator, device=device)
            cells = torch.unique(torch.cat([chosen, self.mask.nonzero().squeeze(1)]))
        jitter = (torch.rand(cells.shape[0], 3, generator=generator, device=device) - 0.5) * cell_size
        new = self._evaluate(density_fn, self.cell_centers(cells) + jitter, chunk)
        if int(self.updates) == 0:
            self.density[cells] = new
        else:
            self.density[cells] = torch.maximum(self.density[cells] * config.occupancy_decay, new)
        threshold = min(float(self.density.mean()), config.density_threshold)
        self.mask.copy_(self.density > threshold)
        self._update_aabb()
        self.updates += 1

    @staticmethod
    def _evaluate(density_fn, points: torch.Tensor, chunk: int) -> torch.Tensor:
        new = torch.cat([density_fn(points[i : i + chunk]).float() for i in range(0, points.shape[0], chunk)])
        return torch.nan_to_num(new, nan=0.0, posinf=1e4)

    def _update_aabb(self) -> None:
        occupied = self.mask.nonzero().squeeze(1)
        if occupied.numel() == 0:  # nothing anywhere: an empty box, every ray misses
            self.aabb.copy_(torch.zeros(6))
            return
        r = self.resolution
        ijk = torch.stack([occupied % r, (occupied // r) % r, occupied // (r * r)], -1)
        cell = 2 * self.bound / r
        lo = (ijk.amin(0) - 1).clamp(min=0).float() * cell - self.bound
        hi = (ijk.amax(0) + 2).clamp(max=r).float() * cell - self.bound
        self.aabb.copy_(torch.cat([lo, hi]))

    def occupied_fraction(self) -> float:
        return float(self.mask.float().mean())


@dataclass
class RenderOutput:
    latent: torch.Tensor  # [R, C]
    opacity: torch.Tensor  # [R]
    depth: torch.Tensor  # [R]
    points: torch.Tensor  # [S, 3] packed sample positions
    sigma: torch.Tensor  # [S] packed densities
    ray_index: torch.Tensor  # [S] which ray each sample belongs to
    deltas: torch.Tensor  # [S] length of ray each sample stands for (the marching step)


def ray_box(origins: torch.Tensor, dirs: torch.Tensor, box, near_min: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances of rays [R, 3] through a box: a float b for [-b, b]^3, or a tensor
    (lo xyz, hi xyz) [6]; far <= near means a miss."""
    if isinstance(box, torch.Tensor):
        lo, hi = box[:3].to(origins), box[3:].to(origins)
    else:
        lo, hi = -float(box), float(box)
    safe = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0 = (lo - origins) / safe
    t1 = (hi - origins) / safe
    near = torch.minimum(t0, t1).amax(-1).clamp(min=near_min)
    far = torch.maximum(t0, t1).amin(-1)
    return near, far


def render_rays(
    field: nn.Module,
    background: nn.Module,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    config: RenderConfig,
    bound: float,
    occupancy: OccupancyGrid | None = None,
    generator: torch.Generator | None = None,
    jitter: bool = False,
) -> RenderOutput:
    """Render rays (origins, unit dirs: [R, 3]) through ``field`` (x [S,3] -> (σ [S], latent [S,C])).

    ``occupancy`` None evaluates every step (reference rendering). ``jitter`` offsets each ray's first
    step by U[0, 1)·step (training) instead of half a step, drawing from ``generator``.
    """
    n_rays = origins.shape[0]
    device = origins.device
    dt = config.step_size if config.step_size is not None else default_step_size(device)
    box = occupancy.aabb if occupancy is not None else bound
    near, far = ray_box(origins, dirs, box, config.near_min)
    hit = far > near
    longest = float((far - near)[hit].max()) if bool(hit.any()) else 0.0
    steps = max(1, math.ceil(longest / dt) + 1)
    if jitter:
        offset = torch.rand(n_rays, 1, generator=generator, device=device)
    else:
        offset = torch.full((n_rays, 1), 0.5, device=device)
    t = near[:, None] + (torch.arange(steps, device=device, dtype=torch.float32)[None, :] + offset) * dt  # [R, M]
    keep = t < far[:, None]
    if occupancy is not None:
        keep &= occupancy.occupied(origins[:, None, :] + t[..., None] * dirs[:, None, :])
    ray_index, step_index = keep.nonzero(as_tuple=True)
    t_s = t[ray_index, step_index]
    points = origins[ray_index] + t_s[:, None] * dirs[ray_index]
    sigma, color = field(points)
    # transmittance along each ray: scatter σδ into the [R, M] layout, exclusive cumulative sum per row
    sigma_delta = torch.zeros(n_rays, steps, device=device, dtype=sigma.dtype).index_put((ray_index, step_index), sigma * dt)
    optical = torch.cumsum(sigma_delta, dim=1) - sigma_delta
    weights = (torch.exp(-optical) * (1 - torch.exp(-sigma_delta)))[ray_index, step_index]  # [S]
    channels = color.shape[1]
    latent = torch.zeros(n_rays, channels, device=device, dtype=color.dtype).index_add(0, ray_index, weights[:, None] * color)
    opacity = torch.zeros(n_rays, device=device, dtype=weights.dtype).index_add(0, ray_index, weights)
    depth = torch.zeros(n_rays, device=device, dtype=weights.dtype).index_add(0, ray_index, weights * t_s)
    latent = latent + (1 - opacity)[:, None] * background(dirs)
    return RenderOutput(latent, opacity, depth, points, sigma, ray_index, torch.full_like(t_s, dt))


@dataclass
class ViewRender:
    latent: torch.Tensor  # [B, C, H, W]
    opacity: torch.Tensor  # [B, 1, H, W]
    depth: torch.Tensor  # [B, 1, H, W]
    samples: int  # field evaluations made


def render_views(
    field: nn.Module,
    background: nn.Module,
    cameras: Cameras,
    height: int,
    width: int,
    config: RenderConfig,
    bound: float,
    occupancy: OccupancyGrid | None = None,
    generator: torch.Generator | None = None,
    jitter: bool = False,
) -> tuple[ViewRender, RenderOutput | None]:
    """Render B views to images. With gradients enabled the views render in one pass and the packed
    ``RenderOutput`` is returned too (for losses on samples); without, rays go in chunks of
    ``config.chunk_rays`` and the second value is None."""
    origins, dirs = camera_rays(cameras, height, width)
    origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    b = len(cameras)
    if torch.is_grad_enabled():
        out = render_rays(field, background, origins, dirs, config, bound, occupancy, generator, jitter)
        parts, packed = [out], out
    else:
        parts = [
            render_rays(field, background, origins[i : i + config.chunk_rays], dirs[i : i + config.chunk_rays], config, bound, occupancy, generator, jitter)
            for i in range(0, origins.shape[0], config.chunk_rays)
        ]
        packed = None

    def image(values: list[torch.Tensor]) -> torch.Tensor:
        flat = torch.cat(values)
        flat = flat[:, None] if flat.dim() == 1 else flat
        return flat.reshape(b, height, width, -1).permute(0, 3, 1, 2).contiguous()

    view = ViewRender(
        latent=image([p.latent for p in parts]),
        opacity=image([p.opacity for p in parts]),
        depth=image([p.depth for p in parts]),
        samples=sum(int(p.sigma.shape[0]) for p in parts),
    )
    return view, packed
