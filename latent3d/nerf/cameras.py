"""Orbit cameras, view labels and pixel rays.

Conventions (docs/method.md §1): y is up, the scene's front faces +z. A camera at radius r, polar angle θ (from +y)
and azimuth φ sits at r·(sin θ sin φ, cos θ, sin θ cos φ) and looks at the origin, so φ = 0 views the
front and φ = 90° views the +x side. Angles are in degrees. Image row 0 is the top of the picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

VIEW_LABELS = ("front", "side", "back", "overhead")


@dataclass
class CameraConfig:
    """Training and evaluation camera distributions (official defaults)."""

    radius_range: tuple[float, float] = (1.0, 1.5)
    """Distance from the origin, sampled uniformly."""
    theta_range: tuple[float, float] = (0.0, 150.0)
    """Polar angle from +y in degrees, sampled uniformly."""
    phi_range: tuple[float, float] = (0.0, 360.0)
    """Azimuth in degrees (0 = front, +z), sampled uniformly."""
    fovy_range: tuple[float, float] = (40.0, 70.0)
    """Vertical field of view in degrees, sampled uniformly."""
    overhead_angle: float = 30.0
    """θ at or below this is labelled "overhead", whatever φ is."""
    front_angle: float = 70.0
    """Width in degrees of the azimuth sector labelled "front", centred on φ = 0 (front: [325°, 35°))."""
    back_angle: float = 70.0
    """Width of the sector labelled "back", centred on φ = 180° (back: [145°, 215°)); the rest is "side"."""
    eval_radius: float = 1.8
    """Radius of preview/turntable cameras."""
    eval_theta: float = 80.0
    """Polar angle of preview/turntable cameras."""
    eval_fovy: float = 55.0
    """Field of view of preview/turntable cameras."""

    def __post_init__(self) -> None:
        for name in ("radius_range", "theta_range", "phi_range", "fovy_range"):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ValueError(f"CameraConfig.{name} must be a finite (low, high) with low <= high, got {(lo, hi)!r}")
        if self.radius_range[0] <= 0:
            raise ValueError(f"CameraConfig.radius_range must be positive, got {self.radius_range!r}")
        if not (0 < self.fovy_range[0] and self.fovy_range[1] < 180):
            raise ValueError(f"CameraConfig.fovy_range must lie in (0, 180) degrees, got {self.fovy_range!r}")
        if not (0 <= self.theta_range[0] and self.theta_range[1] <= 180):
            raise ValueError(f"CameraConfig.theta_range must lie in [0, 180] degrees, got {self.theta_range!r}")

    @classmethod
    def paint(cls) -> "CameraConfig":
        """Latent-Paint's cameras (official latent-paint code): the same radius, θ, φ and view sectors as
        Latent-NeRF, a fixed 60° field of view (kaolin's projection of π/3), and the evaluation orbit at
        θ = 60°, radius 1.8 (1.2 × the largest training radius)."""
        return cls(fovy_range=(60.0, 60.0), eval_theta=60.0, eval_radius=1.8, eval_fovy=60.0)


@dataclass
class Cameras:
    """A batch of B pinhole cameras looking at the origin."""

    radius: torch.Tensor  # [B]
    theta: torch.Tensor  # [B] degrees
    phi: torch.Tensor  # [B] degrees in [0, 360)
    fovy: torch.Tensor  # [B] degrees

    def __len__(self) -> int:
        return self.radius.shape[0]

    def __getitem__(self, index) -> "Cameras":
        def pick(t: torch.Tensor) -> torch.Tensor:
            return t[index].reshape(-1)

        return Cameras(pick(self.radius), pick(self.theta), pick(self.phi), pick(self.fovy))

    @property
    def device(self) -> torch.device:
        return self.radius.device

    def positions(self) -> torch.Tensor:
        """[B, 3] camera centres."""
        th, ph = torch.deg2rad(self.theta), torch.deg2rad(self.phi)
        return self.radius[:, None] * torch.stack([th.sin() * ph.sin(), th.cos(), th.sin() * ph.cos()], -1)

    def axes(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(right, up, forward) unit vectors, each [B, 3]; well defined straight overhead too."""
        th, ph = torch.deg2rad(self.theta), torch.deg2rad(self.phi)
        forward = -torch.stack([th.sin() * ph.sin(), th.cos(), th.sin() * ph.cos()], -1)
        right = torch.stack([ph.cos(), torch.zeros_like(ph), -ph.sin()], -1)
        up = torch.linalg.cross(right, forward)
        return right, up, forward

    def labels(self, config: CameraConfig | None = None) -> list[str]:
        return view_labels(self.theta, self.phi, config)

    @staticmethod
    def cat(batches: list["Cameras"]) -> "Cameras":
        return Cameras(*(torch.cat([getattr(c, name) for c in batches]) for name in ("radius", "theta", "phi", "fovy")))

    def to(self, device: torch.device | str) -> "Cameras":
        return Cameras(self.radius.to(device), self.theta.to(device), self.phi.to(device), self.fovy.to(device))


def view_labels(theta: torch.Tensor, phi: torch.Tensor, config: CameraConfig | None = None) -> list[str]:
    """The view word of each camera: "overhead" when θ <= overhead_angle, else by azimuth sector."""
    config = config or CameraConfig()
    half_front, half_back = config.front_angle / 2, config.back_angle / 2
    labels = []
    for th, ph in zip(theta.tolist(), phi.tolist()):
        ph = ph % 360.0
        if th <= config.overhead_angle:
            labels.append("overhead")
        elif ph < half_front or ph >= 360.0 - half_front:
            labels.append("front")
        elif 180.0 - half_back <= ph < 180.0 + half_back:
            labels.append("back")
        else:
            labels.append("side")
    return labels


def _uniform(lo_hi: tuple[float, float], n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    lo, hi = lo_hi
    return lo + (hi - lo) * torch.rand(n, generator=generator, device=device)


def sample_cameras(config: CameraConfig, n: int, generator: torch.Generator | None = None, device="cpu") -> Cameras:
    """n random training cameras. Draws (radius, θ, φ, fov) in that order from ``generator``."""
    if n <= 0:
        raise ValueError(f"number of cameras must be positive, got {n}")
    radius = _uniform(config.radius_range, n, generator, device)
    theta = _uniform(config.theta_range, n, generator, device)
    phi = _uniform(config.phi_range, n, generator, device) % 360.0
    fovy = _uniform(config.fovy_range, n, generator, device)
    return Cameras(radius, theta, phi, fovy)


def orbit_cameras(phis, theta: float, radius: float, fovy: float, device="cpu") -> Cameras:
    """Cameras at the given azimuths (degrees) on one circle, e.g. a turntable."""
    phi = torch.as_tensor(phis, dtype=torch.float32, device=device).reshape(-1) % 360.0
    full = lambda v: torch.full_like(phi, float(v))  # noqa: E731
    return Cameras(full(radius), full(theta), phi, full(fovy))


def eval_cameras(config: CameraConfig, n: int, device="cpu") -> Cameras:
    """n turntable cameras evenly spaced in azimuth, starting at the front."""
    return orbit_cameras([360.0 * i / n for i in range(n)], config.eval_theta, config.eval_radius, config.eval_fovy, device)


def camera_rays(cameras: Cameras, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre rays: (origins [B, H, W, 3], unit directions [B, H, W, 3])."""
    device = cameras.device
    right, up, forward = cameras.axes()
    focal = (height / 2) / torch.tan(torch.deg2rad(cameras.fovy) / 2)  # [B] pixels
    rows = torch.arange(height, device=device, dtype=torch.float32) + 0.5
    cols = torch.arange(width, device=device, dtype=torch.float32) + 0.5
    v = (height / 2 - rows)[None, :, None] / focal[:, None, None]  # [B, H, 1], up positive
    u = (cols - width / 2)[None, None, :] / focal[:, None, None]  # [B, 1, W]
    dirs = forward[:, None, None, :] + u[..., None] * right[:, None, None, :] + v[..., None] * up[:, None, None, :]
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = cameras.positions()[:, None, None, :].expand_as(dirs)
    return origins, dirs
