import math

import pytest
import torch
from torch import nn

from latent3d.nerf.cameras import orbit_cameras
from latent3d.nerf.field import Background, FieldConfig, LatentField, trunc_exp
from latent3d.nerf.grid import GridConfig
from latent3d.nerf.render import OccupancyGrid, RenderConfig, ray_box, render_rays, render_views

pytestmark = pytest.mark.unit


class Slab(nn.Module):
    """σ = c for |z| < L/2 (all x, y), latent = k; zero elsewhere."""

    def __init__(self, c: float, thickness: float, k=(1.0, -2.0, 0.5, 3.0)):
        super().__init__()
        self.c, self.thickness, self.k = c, thickness, torch.tensor(k)

    def forward(self, x):
        inside = (x[:, 2].abs() < self.thickness / 2).float()
        return self.c * inside, self.k.expand(x.shape[0], 4) * 1.0

    def density(self, x):
        return self.forward(x)[0]


class Ball(nn.Module):
    def __init__(self, radius=0.5, sigma=50.0):
        super().__init__()
        self.radius, self.sigma = radius, sigma

    def forward(self, x):
        inside = (x.norm(dim=-1) < self.radius).float()
        return self.sigma * inside, torch.stack([x[:, 0], x[:, 1], x[:, 2], torch.ones_like(x[:, 0])], -1)

    def density(self, x):
        return self.forward(x)[0]


class ConstBackground(nn.Module):
    def __init__(self, value=(0.1, 0.2, 0.3, 0.4)):
        super().__init__()
        self.value = torch.tensor(value)

    def forward(self, d):
        return self.value.expand(d.shape[0], 4)


@pytest.mark.parametrize("c", [0.5, 4.0, 40.0])
def test_constant_density_slab_matches_beer_lambert(c):
    dt, thickness = 1 / 64, 0.5
    cfg = RenderConfig(step_size=dt, near_min=0.1)
    origins = torch.tensor([[0.0, 0.0, 3.0], [0.3, -0.2, 3.0]])
    dirs = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    bg = ConstBackground()
    out = render_rays(Slab(c, thickness), bg, origins, dirs, cfg, bound=1.0)
    transmittance = math.exp(-c * thickness)
    torch.testing.assert_close(out.opacity, torch.full((2,), 1 - transmittance), atol=1e-5, rtol=1e-5)
    expected_latent = (1 - transmittance) * torch.tensor([1.0, -2.0, 0.5, 3.0]) + transmittance * bg.value
    torch.testing.assert_close(out.latent, expected_latent.expand(2, 4), atol=1e-5, rtol=1e-5)
    # depth: Σ_i T_i α_i t_i with the 32 samples at t = 2.75 + (i + 0.5) dt
    alpha = 1 - math.exp(-c * dt)
    depth = sum(math.exp(-c * dt * i) * alpha * (2.75 + (i + 0.5) * dt) for i in range(32))
    torch.testing.assert_close(out.depth, torch.full((2,), depth), atol=1e-4, rtol=1e-5)
    assert out.sigma.shape[0] == 2 * 128  # every step of a 2-unit box is sampled without occupancy


def test_empty_scene_shows_the_background_and_misses_cost_nothing():
    cfg = RenderConfig()
    origins = torch.tensor([[0.0, 0.0, 3.0], [0.0, 5.0, 3.0]])
    dirs = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])  # the second ray misses the box
    out = render_rays(Ball(sigma=0.0), ConstBackground(), origins, dirs, cfg, bound=1.0)
    torch.testing.assert_close(out.latent, ConstBackground().value.expand(2, 4))
    assert (out.ray_index == 0).all()


def test_ray_box_entry_exit():
    near, far = ray_box(torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, 0.0], [0.0, 3.0, 3.0]]), torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]), 1.0, 0.1)
    torch.testing.assert_close(near[:2], torch.tensor([2.0, 0.1]))
    torch.testing.assert_close(far[:2], torch.tensor([4.0, 1.0]))
    assert far[2] <= near[2]


def test_occupancy_skipping_matches_full_sampling_with_far_fewer_samples():
    cfg = RenderConfig(occupancy_resolution=64, step_size=1 / 64)
    ball = Ball(radius=0.5, sigma=30.0)
    grid = OccupancyGrid(64, 1.0)
    grid.update(ball.density, cfg, torch.Generator().manual_seed(0))
    cams = orbit_cameras([0.0, 120.0], theta=70, radius=1.5, fovy=50)
    full, _ = render_views(ball, ConstBackground(), cams, 24, 24, cfg, 1.0)
    with torch.no_grad():
        skip, _ = render_views(ball, ConstBackground(), cams, 24, 24, cfg, 1.0, occupancy=grid)
    assert skip.samples < 0.3 * full.samples
    assert (skip.opacity - full.opacity).abs().mean() < 0.01
    assert (skip.opacity - full.opacity).abs().max() < 0.25  # only rays grazing boundary cells differ
    # with gradients the same views render in one pass and return packed samples
    views, packed = render_views(ball, ConstBackground(), cams, 24, 24, cfg, 1.0, occupancy=grid)
    torch.testing.assert_close(views.latent, skip.latent)
    assert packed.points.shape[0] == skip.samples


def test_occupancy_update_rules():
    cfg = RenderConfig(occupancy_resolution=16, occupancy_update_fraction=0.25)
    grid = OccupancyGrid(16, 1.0)
    ball = Ball(radius=0.5, sigma=8.0)
    grid.update(ball.density, cfg, torch.Generator().manual_seed(0))
    assert int(grid.updates) == 1
    radius = grid.cell_centers(torch.arange(16**3)).norm(dim=-1)
    # the first fill samples 2×2×2 blocks, so only cells well inside/outside are certain
    assert grid.mask[radius < 0.2].all() and not grid.mask[radius > 0.85].any()
    lo, hi = grid.aabb[:3], grid.aabb[3:]
    assert (lo > -0.9).all() and (hi < 0.9).all() and (lo < -0.3).all() and (hi > 0.3).all()
    # the threshold is min(mean density, density_threshold): a dense field stays occupied everywhere it is dense
    before = grid.density.clone()
    grid.update(lambda x: torch.zeros(x.shape[0]), cfg, torch.Generator().manual_seed(1))
    changed = grid.density != before
    torch.testing.assert_close(grid.density[changed], before[changed] * cfg.occupancy_decay)  # max(0.95 g, 0)


def test_field_density_blob_and_gradient_clamp():
    cfg = FieldConfig(grid=GridConfig(levels=2, log2_table_size=10, finest_resolution=32))
    field = LatentField(cfg)
    x = torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.9, 0.9]])
    with torch.no_grad():
        sigma, latent = field(x)
        h = field.mlp(field.encoding((x + 1) / 2))  # the MLP's own output, before the blob
    assert latent.shape == (2, 4)
    torch.testing.assert_close(latent, h[:, 1:])
    # σ = exp(h0 + 5·exp(−‖x‖²/(2·0.2²))): the blob adds 5 at the centre and ≈ 0 far away
    blob = 5.0 * torch.exp(-(x * x).sum(-1) / (2 * 0.2**2))
    torch.testing.assert_close(sigma.log(), h[:, 0] + blob)
    x = torch.tensor([20.0, -20.0, 3.0], requires_grad=True)
    trunc_exp(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.exp(torch.tensor([15.0, -15.0, 3.0])))


def test_background_modes():
    dirs = torch.nn.functional.normalize(torch.randn(5, 3), dim=-1)
    for mode, trainable in [("mlp", True), ("constant", True), ("none", False)]:
        bg = Background(FieldConfig(background=mode))
        out = bg(dirs)
        assert out.shape == (5, 4)
        assert any(p.requires_grad for p in bg.parameters()) == trainable
    with pytest.raises(ValueError, match="background"):
        FieldConfig(background="sky")


@pytest.mark.parametrize("kwargs,name", [({"step_size": float("nan")}, "step_size"), ({"occupancy_resolution": 0}, "occupancy_resolution"), ({"occupancy_decay": 1.5}, "occupancy_decay")])
def test_bad_render_config(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RenderConfig(**kwargs)
