"""The density lattice handed to marching cubes, evaluated only where the surface can be.

A 256³ lattice is 16.7 M points; the field costs ≈10 µs a point on 2 CPU cores, so evaluating all of it
would take minutes. A coarse density (the model's occupancy grid, or a coarse pass over the field) tells
which coarse cells can hold density above the iso-level ("inside"). The surface can only cross cells on
the inside/outside border; those cells, dilated, form a band, and only fine lattice points in the band
query the field. Fine points elsewhere take the coarse cell's value when inside and 0 outside, so marching
cubes finds no crossing there. Interior cavities smaller than a coarse cell are filled (they are never
seen in a render either). With the occupancy grid as the coarse density, cells more than one cell away from
its mask are empty for export too, as they are for the renderer, which never samples them: the mesh shows
what renders show (fog the renderer skips does not become a surface), and the one-cell margin forgives a
stale cell next to the object.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from .config import ExportConfig

log = logging.getLogger(__name__)


class RadianceField(Protocol):
    """What export needs from a trained object (``LatentNeRF`` and the refined ``RgbNeRF`` satisfy it).

    An optional ``color_space`` attribute says what ``query``'s colours are: "latent" (the default when
    absent: model-space latents, decoded by the linear map or a VAE) or "rgb" (sRGB in [0, 1], written as
    they are, never decoded).
    """

    bound: float

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3] world points -> σ [N]."""
        ...

    def query(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, 3] world points -> (σ [N], latent [N, C]) (or rgb [N, 3] when ``color_space`` is "rgb")."""
        ...


@dataclass
class DensityLattice:
    values: np.ndarray
    """[R, R, R] float32 σ, axes (x, y, z); point (i, j, k) sits at -bound + (i, j, k)·spacing."""
    bound: float
    threshold: float
    """The iso-level to extract."""
    evaluations: int
    """Field evaluations spent (coarse pass + band)."""
    coarse_source: str
    """"occupancy" or "field"."""

    @property
    def spacing(self) -> float:
        return 2.0 * self.bound / (self.values.shape[0] - 1)


def model_device(model: RadianceField) -> torch.device:
    """Where the model's points must go: its ``device`` attribute, else its first tensor's, else the CPU."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    if isinstance(model, torch.nn.Module):
        for tensor in list(model.parameters()) + list(model.buffers()):
            return tensor.device
    return torch.device("cpu")


def scene_bound(model: RadianceField) -> float:
    """``model.bound`` checked: the scene lives in [-bound, bound]^3."""
    bound = getattr(model, "bound", None)
    if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound) or bound <= 0:
        raise ValueError(f"model.bound must be a positive finite number (scene in [-bound, bound]^3), got {bound!r}")
    return float(bound)


@torch.no_grad()
def evaluate_density(model: RadianceField, points: torch.Tensor, chunk: int) -> torch.Tensor:
    """σ [N] float32 at points [N, 3], ``chunk`` points per call; NaN -> 0, +inf -> 1e6."""
    if points.shape[0] == 0:
        return points.new_zeros(0)
    sigma = torch.cat([model.density(points[i : i + chunk]).reshape(-1).float() for i in range(0, points.shape[0], chunk)])
    return torch.nan_to_num(sigma, nan=0.0, posinf=1e6, neginf=0.0).clamp_(min=0.0)


def coarse_cells(model: RadianceField, config: ExportConfig, device: torch.device) -> tuple[torch.Tensor, str, int]:
    """(cell density [Rc, Rc, Rc] over axes (x, y, z), source name, field evaluations spent).

    A cell's value is the largest density seen in it: the occupancy grid keeps the max-EMA of random samples
    per cell (0 outside its mask); the coarse pass takes the max of the cell's 8 corners.
    """
    occupancy = getattr(model, "occupancy", None)
    updated = occupancy is not None and int(getattr(occupancy, "updates", 0)) > 0
    if config.coarse_source == "occupancy" and not updated:
        raise ValueError("ExportConfig.coarse_source is 'occupancy' but the model's occupancy grid was never updated; use 'auto' or 'field'")
    if config.coarse_source == "occupancy" or (config.coarse_source == "auto" and updated):
        r = occupancy.resolution
        # flat index i + r*j + r*r*k (i along x) -> [k, j, i] -> [i, j, k]
        cells = torch.where(occupancy.mask, occupancy.density.detach().float(), 0.0)
        cells = cells.reshape(r, r, r).permute(2, 1, 0).contiguous()
        return torch.nan_to_num(cells, nan=0.0, posinf=1e6).clamp(min=0.0).to(device), "occupancy", 0
    rc = config.coarse_resolution
    bound = scene_bound(model)
    axis = torch.linspace(-bound, bound, rc + 1, device=device)
    corners = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    sigma = evaluate_density(model, corners, config.chunk).reshape(1, 1, rc + 1, rc + 1, rc + 1)
    cells = F.max_pool3d(sigma, kernel_size=2, stride=1)[0, 0]
    return cells, "field", corners.shape[0]


def half_opacity_density(cells: torch.Tensor, cell_size: float) -> float | None:
    """Median σ at the cell where axis-aligned rays (all 6 directions) through ``cells`` [R, R, R] reach
    accumulated opacity 0.5 (optical depth ln 2); None when no ray does."""
    found = []
    for axis in range(3):
        rows = cells.movedim(axis, -1).reshape(-1, cells.shape[axis])
        for ray_rows in (rows, rows.flip(-1)):
            depth = torch.cumsum(ray_rows * cell_size, -1)
            hit = depth[:, -1] >= math.log(2.0)
            if hit.any():
                first = (depth[hit] >= math.log(2.0)).float().argmax(-1)
                found.append(ray_rows[hit].gather(1, first[:, None])[:, 0])
    if not found:
        return None
    return float(torch.cat(found).median())


def pick_threshold(cells: torch.Tensor, cell_size: float, config: ExportConfig) -> float:
    """The iso-level: ``config.threshold`` or the automatic rule documented on ``ExportConfig.threshold``."""
    if config.threshold is not None:
        return float(config.threshold)
    peak = float(cells.max()) if cells.numel() else 0.0
    if peak <= 0:
        raise ValueError("the field is empty: its coarse density is 0 everywhere, so there is no surface to extract")
    half = half_opacity_density(cells, cell_size)
    if half is None:
        level = min(config.threshold_cap, 0.5 * peak)
        log.warning("no axis ray through the field reaches 50%% opacity (max density %.3g); threshold %.3g", peak, level)
        return level
    return min(config.threshold_cap, 0.5 * half)


def _dilate(mask: torch.Tensor, steps: int, outside: bool) -> torch.Tensor:
    """Binary dilation of [R, R, R] by ``steps`` cells (26-neighbourhood); ``outside`` is the value beyond
    the grid."""
    if steps == 0:
        return mask
    padded = F.pad(mask[None, None].float(), (steps,) * 6, value=float(outside))
    return F.max_pool3d(padded, kernel_size=2 * steps + 1, stride=1)[0, 0] > 0.5


def surface_band(inside: torch.Tensor, dilation: int) -> torch.Tensor:
    """Cells [R, R, R] bool the iso-surface can cross: inside cells touching outside ones and vice versa
    (beyond the grid counts as outside), dilated by ``dilation`` cells."""
    border = _dilate(inside, 1, False) & _dilate(~inside, 1, True)
    return _dilate(border, dilation, False)


@torch.no_grad()
def sample_density_lattice(model: RadianceField, config: ExportConfig) -> DensityLattice:
    """σ on the R³ lattice of ``config.resolution`` points per axis, field queried only in the band."""
    bound = scene_bound(model)
    device = model_device(model)
    cells, source, evaluations = coarse_cells(model, config, device)
    rc = cells.shape[0]
    threshold = pick_threshold(cells, 2 * bound / rc, config)
    inside = cells > threshold
    r = config.resolution
    # a lattice coarser than the cells needs a wider band to keep one lattice point on each side
    band = surface_band(inside, config.dilation + max(0, math.ceil(rc / (r - 1)) - 1))
    coords = torch.linspace(-bound, bound, r, device=device)
    cell_of = ((coords + bound) * (rc / (2 * bound))).long().clamp_(0, rc - 1)  # fine point -> coarse cell, per axis
    ix, iy, iz = cell_of[:, None, None], cell_of[None, :, None], cell_of[None, None, :]
    values = torch.where(inside[ix, iy, iz], cells[ix, iy, iz], torch.zeros((), device=device))  # [R, R, R]
    fine = band[ix, iy, iz].nonzero()  # [M, 3]
    points = -bound + fine.float() * (2 * bound / (r - 1))
    sigma = evaluate_density(model, points, config.chunk)
    if source == "occupancy":  # the renderer never samples outside the mask; one cell of margin forgives stale cells
        visible = _dilate(cells > 0, 1, False)
        sigma = sigma * visible[cell_of[fine[:, 0]], cell_of[fine[:, 1]], cell_of[fine[:, 2]]]
    values[fine[:, 0], fine[:, 1], fine[:, 2]] = sigma
    evaluations += fine.shape[0]
    log.info("density lattice %d³: %d band points (%.1f%%), coarse %s %d³, threshold %.4g", r, fine.shape[0], 100 * fine.shape[0] / r**3, source, rc, threshold)
    return DensityLattice(values.cpu().numpy(), bound, threshold, evaluations, source)
