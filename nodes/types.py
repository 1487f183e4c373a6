"""The private values that travel between Latent3D nodes (ComfyUI sees them as opaque objects)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..latent3d.nerf.model import LatentNeRF
from ..latent3d.nerf.train import NerfConfig
from ..latent3d.refine.convert import RgbNeRF
from ..latent3d.refine.train import RefineConfig
from ..latent3d.shape.loss import SketchShapeConfig, SketchShapeGuide, make_shape_guide
from ..latent3d.shape.mesh_io import Mesh, normalize_mesh
from ..latent3d.shape.primitives import union_meshes

PLACEMENT_FIELDS = ("mesh_scale", "rotation_deg", "offset")


@dataclass(frozen=True)
class Sketch:
    """Closed parts (a loaded mesh, or primitives to unite) and where the sketch sits in the scene."""

    parts: tuple[Mesh, ...]
    placement: SketchShapeConfig

    def mesh(self) -> Mesh:
        """The raw sketch: the union of its parts, before normalization."""
        return self.parts[0] if len(self.parts) == 1 else union_meshes(self.parts)

    def placed(self) -> Mesh:
        """The sketch as the scene sees it (centred, scaled to mesh_scale, rotated, offset)."""
        p = self.placement
        return normalize_mesh(self.mesh(), p.mesh_scale, p.rotation_deg, p.offset)

    def plus(self, part: Mesh) -> "Sketch":
        return Sketch(self.parts + (part,), self.placement)


@dataclass(frozen=True)
class ShapeGuideSpec:
    """A sketch and the loss settings; the guide is built on the training device when training starts."""

    mesh: Mesh
    config: SketchShapeConfig

    @classmethod
    def from_sketch(cls, sketch: Sketch, config: SketchShapeConfig) -> "ShapeGuideSpec":
        placement = {name: getattr(sketch.placement, name) for name in PLACEMENT_FIELDS}
        return cls(sketch.mesh(), dataclasses.replace(config, **placement))

    def build(self, device, on_progress=None) -> SketchShapeGuide:
        return make_shape_guide(self.mesh, self.config, device, on_progress=on_progress)


@dataclass
class TrainedNerf:
    """A trained Latent-NeRF (or its RGB refinement), its config, checkpoint, and the model's latent format
    (for VAE decoding of a latent field)."""

    model: LatentNeRF | RgbNeRF
    config: NerfConfig
    """The Latent-NeRF run's config (kept for a refined field too: its geometry came from that run)."""
    checkpoint: Path | None
    latent_scale: float = 0.18215
    latent_shift: float = 0.0
    refine_config: RefineConfig | None = None
    """Set by Latent→RGB Refine: ``model`` is then an RgbNeRF whose colours are RGB (no VAE decode)."""

    @property
    def is_rgb(self) -> bool:
        """True for a refined field: export writes its colours as they are."""
        return getattr(self.model, "color_space", "latent") == "rgb"

    def to_vae_latent(self, z):
        """Model-space latents -> the unscaled latents a ComfyUI VAE decodes."""
        return z / self.latent_scale + self.latent_shift
