"""Winding number and surface distance: exact queries on shapes with known answers, and the grid's agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latent3d.shape.mesh_io import Mesh
from latent3d.shape.primitives import make_box, make_sphere, make_teddy_sketch, make_torus
from latent3d.shape.winding import ExactSketch, SketchGrid, grid_nodes

pytestmark = pytest.mark.unit


def _inscribed_radius(mesh: Mesh) -> float:
    """Smallest distance from the origin to a face plane: the mesh lies between this and its vertex radius."""
    tri = mesh.vertices.astype(np.float64)[mesh.faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    return float(np.abs((normal * tri[:, 0]).sum(1)).min())


def _random_points(n: int, seed: int = 0, half: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-half, half, (n, 3))


def test_sphere_inside_outside_and_distance():
    radius = 0.5
    sphere = make_sphere(radius, 3)
    tessellation = radius - _inscribed_radius(sphere)  # surface lies in the shell [r - tessellation, r]
    assert 0 < tessellation < 0.003
    exact = ExactSketch(sphere)
    points = _random_points(20000)
    norm = np.linalg.norm(points, axis=1)
    winding = exact.winding_number_np(points)
    assert (winding[norm < radius - tessellation] > 0.5).all()
    assert (winding[norm > radius] < 0.5).all()
    assert np.abs(winding[norm < 0.4] - 1).max() < 1e-2 and np.abs(winding[norm > 0.6]).max() < 1e-2
    distance = exact.distance_np(points)
    assert np.abs(distance - np.abs(norm - radius)).max() <= tessellation + 1e-6


def test_box_distance_is_exact():
    half = np.array([0.5, 0.3, 0.2])
    exact = ExactSketch(make_box(tuple(2 * half)))
    points = _random_points(20000, seed=1)
    q = np.abs(points) - half
    outside = np.linalg.norm(np.maximum(q, 0), axis=1)
    inside = -q.max(axis=1)  # interior points: distance to the nearest face
    truth = np.where(q.max(axis=1) > 0, outside, inside)
    np.testing.assert_allclose(exact.distance_np(points), truth, atol=1e-6)
    winding = exact.winding_number_np(points)
    assert ((winding > 0.5) == (q.max(axis=1) < 0))[np.abs(q).min(axis=1) > 1e-4].all()


def test_torus_hole_is_outside():
    torus = make_torus(0.45, 0.15, axis="y", sections=48)
    exact = ExactSketch(torus)
    points = np.array([[0.0, 0.0, 0.0], [0.0, 0.1, 0.0], [0.45, 0.0, 0.0], [0.0, 0.0, -0.45]])
    winding = exact.winding_number_np(points)
    assert winding[0] < 0.05 and winding[1] < 0.05  # the hole, along the axis
    assert (winding[2:] > 0.95).all()  # inside the tube
    assert exact.distance_np(points[:1])[0] == pytest.approx(0.45 - 0.15, abs=0.005)  # to the inner equator


def test_open_box_near_hole_is_half_and_deep_inside_is_inside():
    box = make_box((1.0, 1.0, 1.0))
    centroids = box.vertices[box.faces].mean(1)
    open_box = Mesh(box.vertices, box.faces[centroids[:, 1] < 0.49], source="open_box")  # no top (+y) face
    exact = ExactSketch(open_box)
    hole_plane = exact.winding_number_np(np.array([[0.0, 0.5, 0.0], [0.1, 0.5, -0.1]]))
    np.testing.assert_allclose(hole_plane, 0.5, atol=0.02)  # five faces seen from the hole: half the sphere
    just_below, just_above = exact.winding_number_np(np.array([[0.0, 0.49, 0.0], [0.0, 0.51, 0.0]]))
    assert just_below > 0.5 > just_above
    deep = exact.winding_number_np(np.array([[0.0, 0.0, 0.0], [0.2, -0.3, 0.1]]))
    assert (deep > 0.75).all()  # the centre sees 5/6 of the sphere covered
    assert exact.winding_number_np(np.array([[0.0, 0.0, 0.0]]))[0] == pytest.approx(5 / 6, abs=0.01)


def test_grid_nodes_and_exact_values_at_nodes():
    exact = ExactSketch(make_sphere(0.5, 2))
    grid = SketchGrid.build(exact, resolution=9, bound=1.0)
    assert grid.values.shape == (2, 9, 9, 9) and grid.spacing == pytest.approx(0.25)
    nodes = grid_nodes(9, 1.0, 0, 9**3)
    assert nodes[1].tolist() == [-0.75, -1.0, -1.0] and nodes[9].tolist() == [-1.0, -0.75, -1.0]  # x fastest
    winding, distance = grid.query(torch.from_numpy(nodes).float())
    np.testing.assert_allclose(winding.numpy(), exact.winding_number_np(nodes), atol=1e-5)
    np.testing.assert_allclose(distance.numpy(), exact.distance_np(nodes), atol=1e-5)


def test_grid_matches_exact_away_from_the_surface():
    """Per-point inside/outside agrees wherever the point is more than one cell diagonal from the surface;
    distances agree within the interpolation error (≈ h/2 at the surface kink, smaller elsewhere)."""
    exact = ExactSketch(make_teddy_sketch())
    grid = SketchGrid.build(exact, resolution=64)
    points = _random_points(20000, seed=2, half=0.8)
    w_exact, d_exact = exact.winding_number_np(points), exact.distance_np(points)
    w_grid, d_grid = (t.numpy() for t in grid.query(torch.from_numpy(points).float()))
    far = d_exact > np.sqrt(3) * grid.spacing
    assert far.mean() > 0.8
    assert ((w_grid > 0.5) == (w_exact > 0.5))[far].all()
    assert ((w_grid > 0.5) == (w_exact > 0.5)).mean() > 0.99
    assert np.abs(d_grid - d_exact).max() < grid.spacing / 2 + 1e-4
    assert np.abs(d_grid - d_exact).mean() < 2e-3


def test_query_shapes_devices_and_bad_input():
    exact = ExactSketch(make_sphere(0.5, 2))
    grid = SketchGrid.build(exact, resolution=16)
    points = torch.zeros(5, 3)
    for source in (exact, grid):
        winding, distance = source.query(points)
        assert winding.shape == distance.shape == (5,) and winding.dtype == torch.float32
        with pytest.raises(ValueError, match=r"points must be a tensor of shape \[S, 3\], got \[5, 2\]"):
            source.query(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="resolution must be an integer in"):
        SketchGrid.build(exact, resolution=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_grid_and_exact_on_cuda():
    exact = ExactSketch(make_sphere(0.5, 2))
    grid = SketchGrid.build(exact, resolution=32)
    points = torch.rand(1000, 3) * 2 - 1
    cpu = grid.query(points)
    for source in (grid.to("cuda"), exact):
        winding, distance = source.query(points.cuda())
        assert winding.is_cuda and distance.is_cuda
    torch.testing.assert_close(grid.to("cuda").query(points.cuda())[1].cpu(), cpu[1], atol=1e-5, rtol=1e-5)
