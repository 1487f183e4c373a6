"""Sketch-Shape guidance (docs/method.md §2): a per-sample loss that pulls the NeRF's density towards a coarse mesh.

For each sample p of the current view with density σ(p):
    ind(p) = 1 if winding(p) > 0.5 else 0                      (inside the sketch)
    ω(p)   = 1 − exp(−d(p)² / (2 σ_S²))                          (d: distance to the sketch surface)
    α(p)   = clamp(1 − exp(−0.2 σ(p)), 0, 1)                     (occupancy of the sample)
    L      = Σ_p (δ_p/δ_0) · ω(p) · [−α log(clip(ind)) − (1 − α) log(clip(1 − ind))],  clip to [0.01, 0.99]
with δ_p the ray length sample p stands for (the marching step) and δ_0 = 2√3/1024 the official step.
ω ≈ 0 near the surface leaves a band of width ~σ_S ("proximal_surface") free for the text guidance to
shape; deep inside the sketch density is pushed up, far outside it is pushed down. The targets depend on
the sample positions only, so gradients reach σ alone.

Weighting relative to the official code: it injected its SDS gradient without the fp16 gradient scaler's
2^16 factor, so its written shape weight 5e-6 acted as 5e-6 · 2^16 ≈ 0.328 relative to SDS. Our SDS loss
is properly scaled (docs/method.md §1), so the default ``shape_weight`` is that effective value, 0.33
(threestudio uses 1.0 at its step 0.0068).

Step size: the official loss is a plain sum over the samples of a view, so its strength is proportional to
the number of samples per unit ray length, i.e. to 1/step. Each sample here is weighted by δ_p/δ_0, which
makes L a per-unit-length quantity (a Riemann sum of ∫ ω·CE ds / δ_0): it equals the official sum at the
official step and keeps that strength at any other step (the CPU default step 2/128 is 4.6× longer; an
unweighted sum there would be 4.6× weaker), so ``shape_weight`` means the same on every device. L is not a
mean: it grows with the ray length through the object (≈ 0.1 per official-step sample; ≈ 5e3 for a fresh
field's 64×64 view).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch

from ..nerf.render import OFFICIAL_STEP_SIZE
from .checks import SketchReport, prepare_sketch
from .mesh_io import Mesh, load_mesh, normalize_mesh
from .winding import ExactSketch, SketchField, SketchGrid

CLIP = 0.01
"""The cross-entropy's log arguments are clipped to [CLIP, 1 − CLIP] (official ``ce_pq_loss``)."""
OCCUPANCY_RATE = 0.2
"""α = 1 − exp(−OCCUPANCY_RATE·σ) (official DELTA); α > 0.5 ⇔ σ > 5·ln 2 ≈ 3.47."""
OFFICIAL_SHAPE_WEIGHT = 5e-6
"""``lambda_shape`` as written in the official code (acting ×2^16 there, see the module docstring)."""


@dataclass
class SketchShapeConfig:
    """Sketch-Shape guidance. Defaults are the paper's, with the shape weight in properly scaled units."""

    mesh_scale: float = 0.7
    """After centring, the sketch is scaled so its farthest vertex lies this far from the origin."""
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Rotation of the sketch after scaling: xyz Euler angles in degrees (about x, then y, then z)."""
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Translation of the sketch after rotation (world units; y is up, +z the front)."""
    proximal_surface: float = 0.3
    """σ_S: width of the band around the sketch surface that is left free (ω = 1 − exp(−d²/2σ_S²))."""
    shape_weight: float = 0.33
    """Weight of the summed loss: the official 5e-6 × 2^16 ≈ 0.328 for our properly scaled SDS loss."""
    mode: Literal["grid", "exact"] = "grid"
    """"grid": precompute winding number and distance on a grid once (fast, any device); "exact": libigl
    queries per sample every step on the CPU (the official code's way; a reference)."""
    grid_resolution: int = 128
    """Nodes per axis of the precomputed grid. At 128 (16.8 MB, ≈ 2.3 s to build for a 6k-face sketch) the
    loss on rendered samples is within ≈ 0.02 % (fresh field) to ≈ 0.5 % (samples hugging the sketch) of
    exact mode; at 64 (2 MB, 0.4 s) ≈ 0.14 % on the fresh field's samples (benchmarks/shape_loss.py)."""
    grid_bound: float = 1.0
    """The grid covers [-grid_bound, grid_bound]^3; use the field's bound (FieldConfig.bound)."""
    fade_start: int | None = None
    """Step at which the weight starts to fall linearly to 0 (None, with fade_end None: constant weight)."""
    fade_end: int | None = None
    """Step from which the weight is 0 (and the loss is not evaluated)."""
    chunk: int = 65536
    """Points per libigl call when querying or building the grid (bounds the temporary memory)."""
    max_faces: int = 100_000
    """Sketches with more faces are decimated (quadric error) to this many first, with a warning: a sketch
    is coarse guidance, and the grid's build time grows with the face count (at 128³ on 2 CPU cores: ≈ 2.4 s
    for 5.8k faces, ≈ 8 s for 92k, ≈ 40 s for 1.47M; decimating 1.47M faces to 100k takes ≈ 3.5 s)."""

    def __post_init__(self) -> None:
        for name in ("mesh_scale", "proximal_surface", "grid_bound"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"SketchShapeConfig.{name} must be a positive finite number, got {value!r}")
        if not (isinstance(self.shape_weight, (int, float)) and math.isfinite(self.shape_weight) and self.shape_weight >= 0):
            raise ValueError(f"SketchShapeConfig.shape_weight must be a finite number >= 0, got {self.shape_weight!r}")
        for name in ("rotation_deg", "offset"):
            value = getattr(self, name)
            if not (isinstance(value, (tuple, list)) and len(value) == 3 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)):
                raise ValueError(f"SketchShapeConfig.{name} must be three finite numbers (x, y, z), got {value!r}")
        if self.mode not in ("grid", "exact"):
            raise ValueError(f"SketchShapeConfig.mode must be 'grid' or 'exact', got {self.mode!r}")
        if not isinstance(self.grid_resolution, int) or isinstance(self.grid_resolution, bool) or not 8 <= self.grid_resolution <= 512:
            raise ValueError(f"SketchShapeConfig.grid_resolution must be an integer in [8, 512], got {self.grid_resolution!r}")
        if not isinstance(self.chunk, int) or self.chunk <= 0:
            raise ValueError(f"SketchShapeConfig.chunk must be a positive integer, got {self.chunk!r}")
        if not isinstance(self.max_faces, int) or isinstance(self.max_faces, bool) or self.max_faces < 100:
            raise ValueError(f"SketchShapeConfig.max_faces must be an integer >= 100, got {self.max_faces!r}")
        self._check_fade()

    def _check_fade(self) -> None:
        start, end = self.fade_start, self.fade_end
        if start is None and end is None:
            return
        if start is None or end is None:
            raise ValueError(f"SketchShapeConfig.fade_start and fade_end must both be set or both None, got {start!r} and {end!r}")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)) or not 0 <= start < end:
            raise ValueError(f"SketchShapeConfig.fade_start and fade_end must be integers with 0 <= fade_start < fade_end, got {start!r} and {end!r}")

    def weight_at(self, step: int) -> float:
        """shape_weight until fade_start, then linearly down to 0 at fade_end (constant without a fade)."""
        if self.fade_start is None or self.fade_end is None or step <= self.fade_start:
            return float(self.shape_weight)
        if step >= self.fade_end:
            return 0.0
        return float(self.shape_weight) * (self.fade_end - step) / (self.fade_end - self.fade_start)

    @classmethod
    def paper(cls) -> "SketchShapeConfig":
        """The official settings (weight in properly scaled units)."""
        return cls()

    @classmethod
    def tiny(cls, **changes) -> "SketchShapeConfig":
        """A coarse 48³ grid for tests and CPU smoke runs."""
        return dataclasses.replace(cls(grid_resolution=48), **changes)


def occupancy(sigma: torch.Tensor) -> torch.Tensor:
    """α = clamp(1 − exp(−0.2 σ), 0, 1), elementwise."""
    return (1 - torch.exp(-OCCUPANCY_RATE * sigma)).clamp(0.0, 1.0)


def proximity_weight(distance: torch.Tensor, proximal_surface: float) -> torch.Tensor:
    """ω = 1 − exp(−d² / (2 σ_S²)), elementwise: 0 on the surface, → 1 far from it."""
    return 1 - torch.exp(-distance.square() / (2 * proximal_surface**2))


def sketch_shape_loss(inside: torch.Tensor, weight: torch.Tensor, sigma: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Σ (δ/δ_0)·ω·[−α log(clip(ind)) − (1 − α) log(clip(1 − ind))] over samples; all arguments [S].

    ``inside`` holds the 0/1 targets (float), ``deltas`` the ray length each sample stands for; δ_0 is the
    official step (module docstring). Only ``sigma`` should carry gradients.
    """
    alpha = occupancy(sigma.float())
    target = inside.float()
    cross_entropy = -(alpha * torch.log(target.clamp(CLIP, 1 - CLIP)) + (1 - alpha) * torch.log((1 - target).clamp(CLIP, 1 - CLIP)))
    return (deltas.float() / OFFICIAL_STEP_SIZE * weight.float() * cross_entropy).sum()


class SketchShapeGuide:
    """The Sketch-Shape loss as the trainer's ``ShapeGuide``: ``guide(points [S,3], sigma [S], step) -> scalar``.

    Build it with ``make_shape_guide``. ``mesh`` is the normalized sketch in world coordinates.
    """

    def __init__(self, field: SketchField, mesh: Mesh, config: SketchShapeConfig, fingerprint: str, report: SketchReport | None = None) -> None:
        self.field = field
        self.mesh = mesh
        self.config = config
        self.report = report
        self._fingerprint = fingerprint

    def fingerprint(self) -> str:
        """16 hex digits identifying the sketch mesh and the config (a checkpoint records it)."""
        return self._fingerprint

    def weight_at(self, step: int) -> float:
        return self.config.weight_at(step)

    @torch.no_grad()
    def targets(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points [S, 3] -> (inside [S] 0/1 float32, ω [S]) on the points' device."""
        winding, distance = self.field.query(points)
        return (winding > 0.5).float(), proximity_weight(distance, self.config.proximal_surface)

    def loss(self, points: torch.Tensor, sigma: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
        """The loss L over the samples before ``shape_weight`` (points [S, 3], sigma [S], deltas [S])."""
        if points.dim() != 2 or points.shape[1] != 3 or sigma.shape != points.shape[:1] or deltas.shape != points.shape[:1]:
            raise ValueError(f"points must be [S, 3], sigma and deltas [S], got {list(points.shape)}, {list(sigma.shape)} and {list(deltas.shape)}")
        inside, weight = self.targets(points)
        return sketch_shape_loss(inside, weight, sigma, deltas)

    def __call__(self, points: torch.Tensor, sigma: torch.Tensor, deltas: torch.Tensor, step: int) -> torch.Tensor:
        weight = self.weight_at(step)
        if weight == 0.0 or points.shape[0] == 0:
            return sigma.new_zeros((), dtype=torch.float32)
        return weight * self.loss(points, sigma, deltas)

    def to(self, device: torch.device | str) -> "SketchShapeGuide":
        """The same guide with its grid on ``device`` (exact mode always queries on the CPU)."""
        field = self.field.to(device) if isinstance(self.field, SketchGrid) else self.field
        return SketchShapeGuide(field, self.mesh, self.config, self._fingerprint, self.report)


def sketch_fingerprint(mesh: Mesh, config: SketchShapeConfig) -> str:
    """sha256 of the (raw) mesh arrays and every config field that changes the loss, 16 hex digits."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(mesh.vertices, dtype="<f4").tobytes())
    digest.update(np.ascontiguousarray(mesh.faces, dtype="<i8").tobytes())
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k != "chunk"}
    for name in ("mesh_scale", "proximal_surface", "shape_weight", "grid_bound"):
        fields[name] = float(fields[name])  # 1 and 1.0 are the same setting
    for name in ("rotation_deg", "offset"):
        fields[name] = [float(v) for v in fields[name]]
    digest.update(json.dumps(fields, sort_keys=True).encode())
    return digest.hexdigest()[:16]


Progress = Callable[[str, int, int], None]
"""on_progress(stage, done, total): "sketch check", "sketch decimate" (once each) and "sketch grid" (per chunk)."""


def make_shape_guide(
    mesh: Mesh | str | os.PathLike,
    config: SketchShapeConfig | None = None,
    device: torch.device | str = "cpu",
    *,
    on_progress: Progress | None = None,
) -> SketchShapeGuide:
    """Build the Sketch-Shape guide from a raw mesh (or a mesh file path) and ``config``.

    The mesh is decimated when it has more than ``config.max_faces`` faces (with a warning), normalized
    (``normalize_mesh`` with the config's mesh_scale, rotation and offset), checked (warnings for open or
    overlapping sketches; inside-out ones are flipped), then either wrapped for exact per-sample queries or
    sampled onto the grid. ``on_progress`` (see ``Progress``) reports each stage; it may raise to abort.
    """
    config = config if config is not None else SketchShapeConfig()
    if not isinstance(config, SketchShapeConfig):
        raise ValueError(f"config must be a SketchShapeConfig, got {type(config).__name__}")
    if not isinstance(mesh, Mesh):
        mesh = load_mesh(mesh)
    report_stage = on_progress or (lambda stage, done, total: None)
    fingerprint = sketch_fingerprint(mesh, config)
    sketch = normalize_mesh(_decimated(mesh, config.max_faces, report_stage), config.mesh_scale, config.rotation_deg, config.offset)
    report_stage("sketch check", 0, 1)
    exact = ExactSketch(sketch, config.chunk)
    checked, report = prepare_sketch(sketch, exact.winding_number_np)
    if checked is not sketch:  # flipped: rebuild the trees for the flipped faces
        sketch, exact = checked, ExactSketch(checked, config.chunk)
    report_stage("sketch check", 1, 1)
    reach = float(np.abs(sketch.vertices).max())
    if reach > config.grid_bound:
        warnings.warn(
            f"sketch {mesh.source} reaches coordinate ±{reach:.3f} after normalization, outside the scene box "
            f"[-grid_bound, grid_bound]^3 with grid_bound={config.grid_bound}: the parts outside cannot be followed; "
            "lower mesh_scale or offset",
            stacklevel=2,
        )
    if config.mode == "exact":
        field: SketchField = exact
    else:
        grid_progress = lambda done, total: report_stage("sketch grid", done, total)  # noqa: E731
        field = SketchGrid.build(exact, config.grid_resolution, config.grid_bound, grid_progress).to(device)
    return SketchShapeGuide(field, sketch, config, fingerprint, report)


def _decimated(mesh: Mesh, max_faces: int, report_stage: Progress) -> Mesh:
    """``mesh`` with at most ``max_faces`` faces (quadric decimation, warned), the mesh itself when it has fewer."""
    if mesh.num_faces <= max_faces:
        return mesh
    from ..export.surface import decimate

    warnings.warn(
        f"sketch {mesh.source} has {mesh.num_faces} faces, more than max_faces={max_faces}: decimated to {max_faces} "
        "(a sketch is coarse guidance; raise SketchShapeConfig.max_faces to keep more)",
        stacklevel=3,
    )
    report_stage("sketch decimate", 0, 1)
    vertices, faces = decimate(mesh.vertices, mesh.faces, max_faces)
    report_stage("sketch decimate", 1, 1)
    return Mesh(vertices, faces, source=mesh.source)
