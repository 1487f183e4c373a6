import math

import pytest
import torch

from latent3d.nerf.cameras import CameraConfig, Cameras, camera_rays, eval_cameras, orbit_cameras, sample_cameras, view_labels

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "theta,phi,label",
    [
        (90, 0, "front"), (90, 34.999, "front"), (90, 35, "side"), (90, 144.999, "side"), (90, 145, "back"),
        (90, 214.999, "back"), (90, 215, "side"), (90, 324.999, "side"), (90, 325, "front"), (90, 359.9, "front"),
        (90, 360, "front"), (90, -10, "front"), (30, 180, "overhead"), (0, 90, "overhead"), (30.001, 180, "back"),
        (150, 0, "front"),
    ],
)
def test_view_label_boundaries(theta, phi, label):
    assert view_labels(torch.tensor([float(theta)]), torch.tensor([float(phi)])) == [label]


def test_positions_follow_the_convention():
    cams = orbit_cameras([0, 90, 180], theta=90, radius=2.0, fovy=50)
    torch.testing.assert_close(cams.positions(), torch.tensor([[0, 0, 2.0], [2.0, 0, 0], [0, 0, -2.0]]), atol=1e-6, rtol=0)
    top = Cameras(torch.tensor([1.5]), torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([50.0]))
    torch.testing.assert_close(top.positions(), torch.tensor([[0, 1.5, 0]]), atol=1e-6, rtol=0)


def test_axes_are_orthonormal_and_look_at_the_origin_even_overhead():
    cams = Cameras(torch.tensor([1.0, 1.2, 1.4]), torch.tensor([0.0, 45.0, 150.0]), torch.tensor([0.0, 123.0, 300.0]), torch.full((3,), 60.0))
    right, up, forward = cams.axes()
    basis = torch.stack([right, up, forward], 1)  # [B, 3, 3]
    torch.testing.assert_close(basis @ basis.transpose(1, 2), torch.eye(3).expand(3, 3, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(forward, -cams.positions() / cams.radius[:, None], atol=1e-6, rtol=0)
    # a right-handed camera frame: right x up = -forward (OpenGL: the camera looks down its -z)
    torch.testing.assert_close(torch.linalg.cross(right, up), -forward, atol=1e-6, rtol=0)
    assert (up[1:, 1] > 0).all()  # world-up appears upward in side views


def test_rays_cover_the_field_of_view():
    h, w, fovy = 4, 6, 60.0
    cams = orbit_cameras([30.0], theta=70, radius=1.3, fovy=fovy)
    origins, dirs = camera_rays(cams, h, w)
    assert origins.shape == dirs.shape == (1, h, w, 3)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(1, h, w))
    _, up, forward = cams.axes()
    focal = (h / 2) / math.tan(math.radians(fovy / 2))
    # the top row's centre is (h/2 - 0.5) pixels above the optical axis
    top = dirs[0, 0].mean(0)
    angle = math.degrees(math.atan2(float(top @ up[0]), float(top @ forward[0])))
    assert abs(angle - math.degrees(math.atan((h / 2 - 0.5) / focal))) < 1e-3
    centre = dirs[0, h // 2 - 1 : h // 2 + 1, w // 2 - 1 : w // 2 + 1].reshape(-1, 3).mean(0)
    torch.testing.assert_close(centre / centre.norm(), forward[0], atol=1e-6, rtol=0)
    # column 0 is on the camera's left
    right, _, _ = cams.axes()
    assert float(dirs[0, 0, 0] @ right[0]) < 0 < float(dirs[0, 0, -1] @ right[0])


def test_sampling_respects_ranges_and_generator():
    cfg = CameraConfig()
    a = sample_cameras(cfg, 2000, torch.Generator().manual_seed(3))
    b = sample_cameras(cfg, 2000, torch.Generator().manual_seed(3))
    c = sample_cameras(cfg, 2000, torch.Generator().manual_seed(4))
    assert torch.equal(a.theta, b.theta) and not torch.equal(a.theta, c.theta)
    for name, (lo, hi) in [("radius", cfg.radius_range), ("theta", cfg.theta_range), ("fovy", cfg.fovy_range), ("phi", (0, 360))]:
        values = getattr(a, name)
        assert values.min() >= lo and values.max() <= hi
        assert values.max() - values.min() > 0.9 * (hi - lo)
    labels = a.labels(cfg)
    assert set(labels) == {"front", "side", "back", "overhead"}


def test_eval_cameras_start_at_the_front():
    cams = eval_cameras(CameraConfig(), 4)
    assert cams.phi.tolist() == [0.0, 90.0, 180.0, 270.0]
    assert cams.labels() == ["front", "side", "back", "side"]


@pytest.mark.parametrize(
    "kwargs,name",
    [({"radius_range": (0.0, 1.0)}, "radius_range"), ({"fovy_range": (50.0, 40.0)}, "fovy_range"), ({"theta_range": (0.0, 200.0)}, "theta_range")],
)
def test_bad_camera_config(kwargs, name):
    with pytest.raises(ValueError, match=name):
        CameraConfig(**kwargs)
    with pytest.raises(ValueError, match="positive"):
        sample_cameras(CameraConfig(), 0)
