"""ExportConfig: every knob of NeRF → textured-mesh export (docs/method.md §5)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

DEFAULT_TEXTURE_FACE_BUDGET = 20_000
"""Faces kept before UV unwrapping when ``face_budget`` is None in texture mode: xatlas's time grows
faster than linearly with the face count (≈1.5–4 s at 20k faces on 2 CPU cores, minutes at 200k)."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class ExportConfig:
    """NeRF → mesh export: density grid, iso-surface, cleanup, decimation and colour."""

    resolution: int = 256
    """Lattice points per axis of the density grid over [-bound, bound]^3 handed to marching cubes."""
    threshold: float | None = None
    """Iso-level of the density σ. None: the automatic rule, min(threshold_cap, ½·σ_half) where σ_half is
    the median density at which axis-aligned rays through the coarse density grid become half opaque
    (accumulated opacity 0.5, i.e. where a render would put the surface). On trained fields σ_half is far
    above 10, so the rule gives stable-dreamfusion's constant 10; on faint fields (solid density < 20) it
    still lands between empty space and the solid instead of above the whole field. The mean density of
    the full grid (stable-dreamfusion's min(mean, 10)) is avoided: empty space dominates it, so it picks a
    fog level on sparse scenes."""
    threshold_cap: float = 10.0
    """Upper limit of the automatic threshold (stable-dreamfusion's density threshold)."""
    coarse_source: Literal["auto", "occupancy", "field"] = "auto"
    """Where the coarse density comes from: the model's occupancy grid (max-EMA density per cell; cells
    more than one cell from its mask are empty for export too, as the renderer never samples them), a
    coarse pass over the field at ``coarse_resolution``, or "auto": the occupancy grid once it has been
    updated, else the coarse pass."""
    coarse_resolution: int = 64
    """Cells per axis of the coarse pass (corner samples, cell value = max of its 8 corners)."""
    dilation: int = 1
    """Coarse cells added around the band of cells the surface can cross (more where the lattice is coarser
    than the cells); only lattice points inside that band query the field (inside the solid they take the
    coarse value, outside 0)."""
    chunk: int = 131072
    """Points per field call (density and latent queries), under torch.no_grad()."""
    min_component_fraction: float = 0.05
    """Connected components whose surface area is below this fraction of the largest one are removed
    (floaters); 0 keeps all."""
    face_budget: int | None = None
    """Decimate (quadric error) to at most this many faces after cleanup and before UV unwrapping. None: no
    decimation in vertex mode, ``DEFAULT_TEXTURE_FACE_BUDGET`` (20 000) in texture mode; to unwrap every
    face, pass a budget above the mesh's face count."""
    color_mode: Literal["vertex", "texture"] = "texture"
    """"vertex": the field's latent at every vertex, linear map to RGB. "texture": UV unwrap (xatlas), bake
    the latent into a UV texture, decode it to an RGB texture (VAE decoder or linear map)."""
    texture_size: int = 1024
    """Side of the RGB texture in pixels. With a VAE decoder the latent texture is baked at
    texture_size / 8 (the VAE decodes h×w latents to 8h×8w pixels), so it must be a multiple of 8; with the
    linear map it is baked at full size."""
    padding: int = 4
    """Gutter between UV charts in pixels of the final texture (at least one texel of the baked texture).
    Every texel outside the charts then takes the value of its nearest chart texel, so bilinear and
    mip-mapped lookups never fetch background."""
    color_offset: float | None = None
    """How far inside the surface (world units, along the inward normal) colours are read from the field.
    The rendering weights Tᵢαᵢ of a sharp surface peak just behind the iso-surface, and a decimated surface
    strays from it by about a lattice cell, so colour is read one cell inside. None: one lattice spacing,
    2·bound/(resolution − 1)."""

    def __post_init__(self) -> None:
        bounded_ints = {
            "resolution": (16, 512),
            "coarse_resolution": (4, 512),
            "dilation": (0, 16),
            "chunk": (1024, 1 << 24),
            "texture_size": (64, 8192),
            "padding": (0, 64),
        }
        for name, (low, high) in bounded_ints.items():
            value = getattr(self, name)
            if not _is_int(value) or not low <= value <= high:
                raise ValueError(f"ExportConfig.{name} must be an integer in [{low}, {high}], got {value!r}")
        if self.texture_size % 8:
            raise ValueError(f"ExportConfig.texture_size must be a multiple of 8, got {self.texture_size!r}")
        if self.threshold is not None and not (_is_number(self.threshold) and self.threshold > 0):
            raise ValueError(f"ExportConfig.threshold must be None or a positive finite number, got {self.threshold!r}")
        if not (_is_number(self.threshold_cap) and self.threshold_cap > 0):
            raise ValueError(f"ExportConfig.threshold_cap must be a positive finite number, got {self.threshold_cap!r}")
        if not (_is_number(self.min_component_fraction) and 0 <= self.min_component_fraction <= 1):
            raise ValueError(f"ExportConfig.min_component_fraction must lie in [0, 1], got {self.min_component_fraction!r}")
        if self.face_budget is not None and not (_is_int(self.face_budget) and self.face_budget >= 16):
            raise ValueError(f"ExportConfig.face_budget must be None or an integer >= 16, got {self.face_budget!r}")
        if self.color_offset is not None and not (_is_number(self.color_offset) and self.color_offset >= 0):
            raise ValueError(f"ExportConfig.color_offset must be None or a finite number >= 0, got {self.color_offset!r}")
        if self.coarse_source not in ("auto", "occupancy", "field"):
            raise ValueError(f"ExportConfig.coarse_source must be 'auto', 'occupancy' or 'field', got {self.coarse_source!r}")
        if self.color_mode not in ("vertex", "texture"):
            raise ValueError(f"ExportConfig.color_mode must be 'vertex' or 'texture', got {self.color_mode!r}")

    def effective_face_budget(self) -> int | None:
        """The decimation target actually used (see ``face_budget``)."""
        if self.face_budget is None and self.color_mode == "texture":
            return DEFAULT_TEXTURE_FACE_BUDGET
        return self.face_budget

    def lattice_spacing(self, bound: float) -> float:
        """Distance between neighbouring lattice points for a scene in [-bound, bound]^3."""
        return 2.0 * bound / (self.resolution - 1)

    def effective_color_offset(self, bound: float) -> float:
        return self.lattice_spacing(bound) if self.color_offset is None else float(self.color_offset)

    @classmethod
    def fast(cls, **changes) -> "ExportConfig":
        """A small, quick setting for previews and tests (128³ grid, 512² texture, 5k faces)."""
        values = {"resolution": 128, "texture_size": 512, "face_budget": 5000}
        values.update(changes)
        return cls(**values)
