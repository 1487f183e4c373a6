"""The Sketch-Shape loss: config, hand computation, gradients, grid-vs-exact agreement, trainer hook."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latent3d.shape.loss import (
    SketchShapeConfig,
    SketchShapeGuide,
    make_shape_guide,
    occupancy,
    proximity_weight,
    sketch_shape_loss,
)
from latent3d.shape.primitives import make_box, make_sphere, make_teddy_sketch

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"mesh_scale": 0.0}, "mesh_scale must be a positive finite number, got 0.0"),
        ({"proximal_surface": float("nan")}, "proximal_surface must be a positive finite number"),
        ({"shape_weight": -1.0}, "shape_weight must be a finite number >= 0, got -1.0"),
        ({"mode": "fast"}, "mode must be 'grid' or 'exact', got 'fast'"),
        ({"grid_resolution": 4}, r"grid_resolution must be an integer in \[8, 512\], got 4"),
        ({"rotation_deg": (0.0, 1.0)}, "rotation_deg must be three finite numbers"),
        ({"fade_start": 10}, "fade_start and fade_end must both be set or both None, got 10 and None"),
        ({"fade_start": 10, "fade_end": 5}, "fade_start and fade_end must be integers with 0 <= fade_start < fade_end, got 10 and 5"),
        ({"chunk": 0}, "chunk must be a positive integer, got 0"),
    ],
)
def test_config_validation_names_field_rule_value(changes, message):
    with pytest.raises(ValueError, match=f"SketchShapeConfig.{message}"):
        SketchShapeConfig(**changes)


def test_weight_schedule():
    constant = SketchShapeConfig(shape_weight=0.5)
    assert constant.weight_at(0) == constant.weight_at(10**6) == 0.5
    fading = SketchShapeConfig(shape_weight=0.4, fade_start=100, fade_end=200)
    assert [fading.weight_at(s) for s in (0, 100, 150, 200, 300)] == pytest.approx([0.4, 0.4, 0.2, 0.0, 0.0])
    assert SketchShapeConfig().shape_weight == pytest.approx(5e-6 * 2**16, abs=0.005)  # docs/method.md §1


def _hand_loss(inside: list[int], distance: list[float], sigma: list[float], sigma_s: float) -> float:
    total = 0.0
    for ind, d, s in zip(inside, distance, sigma):
        weight = 1 - math.exp(-d * d / (2 * sigma_s**2))
        alpha = min(max(1 - math.exp(-0.2 * s), 0.0), 1.0)
        clip = lambda v: min(max(v, 0.01), 0.99)  # noqa: E731
        total += weight * (-alpha * math.log(clip(ind)) - (1 - alpha) * math.log(clip(1 - ind)))
    return total


def test_loss_equals_hand_computation():
    # a unit cube normalized to mesh_scale 0.7 has half side a = 0.5 * 0.7 / (sqrt(3)/2)
    a = 0.5 * 0.7 / (math.sqrt(3) / 2)
    guide = make_shape_guide(make_box(), SketchShapeConfig(mode="exact", shape_weight=0.25))
    points = torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.0, 0.0], [0.2, 0.1, 0.0], [0.0, 0.0, a + 0.05]])
    sigma = torch.tensor([5.0, 2.0, 0.5, 30.0])
    inside, distance = [1, 0, 1, 0], [a, 0.9 - a, a - 0.2, 0.05]
    expected = _hand_loss(inside, distance, sigma.tolist(), 0.3)
    # at the official step 2√3/1024 the loss is the official plain sum over samples
    official = torch.full((4,), 2 * math.sqrt(3) / 1024)
    assert float(guide.loss(points, sigma, official)) == pytest.approx(expected, rel=1e-5)
    assert float(guide(points, sigma, official, step=0)) == pytest.approx(0.25 * expected, rel=1e-5)
    # a sample standing for a 3× longer piece of ray weighs 3×: the loss is per unit length
    assert float(guide.loss(points, sigma, 3 * official)) == pytest.approx(3 * expected, rel=1e-5)
    # the pure function on given targets, too
    value = sketch_shape_loss(torch.tensor(inside, dtype=torch.float32), proximity_weight(torch.tensor(distance), 0.3), sigma, official)
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_gradient_signs_and_weights():
    guide = make_shape_guide(make_sphere(0.5, 3), SketchShapeConfig(mode="exact"))  # radius 0.7 after normalizing
    points = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.95], [0.0, 0.66, 0.0], [0.0, 0.74, 0.0]])
    points.requires_grad_(True)
    sigma = torch.full((4,), 3.0, requires_grad=True)
    guide(points, sigma, torch.full((4,), 0.01), step=0).backward()
    grad = sigma.grad
    assert torch.isfinite(grad).all()
    assert grad[0] < 0 and grad[2] < 0  # inside: gradient descent raises the density
    assert grad[1] > 0 and grad[3] > 0  # outside: lowers it
    assert abs(grad[2]) < 0.05 * abs(grad[0]) and abs(grad[3]) < 0.05 * abs(grad[1])  # near the surface: ω ≈ 0
    assert points.grad is None  # the targets depend on positions, but gradients reach sigma only


def test_zero_weight_skips_the_queries():
    class Exploding:
        def query(self, points):
            raise AssertionError("queried although the weight is 0")

    config = SketchShapeConfig(fade_start=0, fade_end=10)
    guide = SketchShapeGuide(Exploding(), make_box(), config, "0" * 16)
    sigma = torch.ones(3, requires_grad=True)
    assert float(guide(torch.zeros(3, 3), sigma, torch.ones(3), step=10)) == 0.0
    with pytest.raises(ValueError, match=r"points must be \[S, 3\], sigma and deltas \[S\], got \[3, 3\], \[2\] and \[3\]"):
        guide.loss(torch.zeros(3, 3), torch.ones(2), torch.ones(3))


def test_fingerprint_tracks_mesh_and_config():
    box = make_box()
    base = make_shape_guide(box, SketchShapeConfig(mode="exact")).fingerprint()
    assert len(base) == 16 and base == make_shape_guide(box, SketchShapeConfig(mode="exact", chunk=1000)).fingerprint()
    assert base != make_shape_guide(box, SketchShapeConfig(mode="exact", shape_weight=1.0)).fingerprint()
    assert base != make_shape_guide(make_box((1.0, 1.0, 1.1)), SketchShapeConfig(mode="exact")).fingerprint()
    assert base == make_shape_guide(box, SketchShapeConfig(mode="exact", mesh_scale=0.7, rotation_deg=(0, 0, 0))).fingerprint()


def test_sketch_outside_the_scene_box_warns():
    with pytest.warns(UserWarning, match=r"reaches coordinate ±1\.200 .*grid_bound=1\.0"):
        make_shape_guide(make_sphere(0.5, 2), SketchShapeConfig(mode="exact", offset=(0.5, 0.0, 0.0)))


def test_grid_mode_matches_exact_mode():
    """Loss within 1 % (measured ≈ 0.05 % at 64³, 0.1 % at 48³) on random points with random densities."""
    mesh = make_teddy_sketch()
    with pytest.warns(UserWarning, match="not watertight"):  # union seams
        exact = make_shape_guide(mesh, SketchShapeConfig(mode="exact"))
        grid = make_shape_guide(mesh, SketchShapeConfig(mode="grid", grid_resolution=64))
    generator = torch.Generator().manual_seed(0)
    points = torch.rand(30000, 3, generator=generator) * 1.6 - 0.8
    sigma = torch.rand(30000, generator=generator) * 30
    deltas = torch.full_like(sigma, 0.01)
    l_exact, l_grid = float(exact.loss(points, sigma, deltas)), float(grid.loss(points, sigma, deltas))
    assert abs(l_grid - l_exact) / l_exact < 0.01
    inside_exact, _ = exact.targets(points)
    inside_grid, _ = grid.targets(points)
    assert (inside_exact == inside_grid).float().mean() > 0.99


def test_occupancy_and_proximity_weight():
    assert float(occupancy(torch.tensor(5 * math.log(2)))) == pytest.approx(0.5)
    assert float(occupancy(torch.tensor(-1.0))) == 0.0
    assert float(proximity_weight(torch.tensor(0.0), 0.3)) == 0.0
    assert float(proximity_weight(torch.tensor(0.3), 0.3)) == pytest.approx(1 - math.exp(-0.5))


def test_guide_in_a_trainer_step():
    from latent3d.guidance.prompts import PromptEmbeddings
    from latent3d.nerf.train import NerfConfig, NerfTrainer

    guide = make_shape_guide(make_sphere(0.5, 2), SketchShapeConfig.tiny(grid_resolution=16))
    config = NerfConfig.tiny(iterations=2, sds_weight=0.0)
    embeddings = PromptEmbeddings.single(torch.zeros(1, 4, 8), torch.zeros(1, 4, 8))
    trainer = NerfTrainer(config, object(), embeddings, "cpu", shape_guide=guide)  # sds_weight 0: no denoiser call
    metrics = trainer.train_step()
    assert metrics["shape"] > 0 and np.isfinite(metrics["loss"])


def test_config_round_trips_through_plain_dicts_and_guide_accepts_a_path(tmp_path):
    from latent3d.config import config_from_dict, config_to_dict

    config = SketchShapeConfig(rotation_deg=(0.0, 90.0, 0.0), fade_start=10, fade_end=20, mode="exact")
    assert config_from_dict(SketchShapeConfig, config_to_dict(config)) == config
    path = tmp_path / "box.stl"
    path.write_bytes(make_box().to_trimesh().export(file_type="stl"))
    guide = make_shape_guide(path, config)
    assert guide.config == config and guide.mesh.source == str(path)


def test_large_sketches_are_decimated_with_a_warning_and_preparation_reports_progress():
    sphere = make_sphere(0.5, 3)  # 1280 faces
    stages = []
    with pytest.warns(UserWarning, match=r"has 1280 faces, more than max_faces=200: decimated to 200"):
        guide = make_shape_guide(sphere, SketchShapeConfig(grid_resolution=16, max_faces=200), on_progress=lambda *s: stages.append(s))
    assert guide.mesh.num_faces <= 200
    names = [s[0] for s in stages]
    assert names[0] == "sketch decimate" and "sketch check" in names and names[-1] == "sketch grid"
    assert stages[-1][1] == stages[-1][2] == 16**3  # the grid build reports every chunk up to its total
    # a decimated sphere is still the same sphere for the loss's inside/outside targets
    inside, _ = guide.targets(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.9]]))
    assert inside.tolist() == [1.0, 0.0]
