"""A trained latent field converted to RGB: the same geometry with a trainable linear colour head.

The head maps a sample's 4 latent channels z to a colour rgb = (zᵀM + 1)/2 with M [4, 3] trainable and no
bias, initialised to the latent→RGB matrix of docs/method.md §1 (``LATENT_RGB_MATRIX``) or to the host's
latent-preview factors for the model family. It is applied per sample, before compositing, to the field
and to the background alike (the official ``latent_tune`` mode). Because the head is affine and the
compositing weights of a ray plus its background share sum to one,

    Σᵢ wᵢ·(zᵢᵀM + 1)/2 + (1 − Σᵢ wᵢ)·(z_bgᵀM + 1)/2 = (zᵀM + 1)/2,  z = Σᵢ wᵢ zᵢ + (1 − Σᵢ wᵢ) z_bg,

so at initialisation the RGB render is exactly the linear map of the latent render, pixel for pixel (up
to float rounding); nothing is clamped during training, as in the official code. The field renders with
the same renderer as the latent one (``render_views`` takes any ``x -> (σ, colour)`` module), in one pass.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import nn

from ..colors import LATENT_RGB_MATRIX
from ..nerf.cameras import Cameras
from ..nerf.model import LatentNeRF
from ..nerf.render import RenderOutput, ViewRender, render_views
from .shading import LambertianField, Shading


def color_matrix(matrix: Sequence[Sequence[float]] | torch.Tensor | None = None, channels: int = 4) -> torch.Tensor:
    """The head's initial M [channels, 3] float32: ``matrix`` checked (one row of (R, G, B) weights per latent
    channel, finite), or ``LATENT_RGB_MATRIX`` when None. ComfyUI's ``latent_format.latent_rgb_factors``
    has this layout."""
    if matrix is None:
        if channels != len(LATENT_RGB_MATRIX):
            raise ValueError(f"the default latent→RGB matrix is for 4 latent channels, the field has {channels}; pass color_matrix [{channels}][3]")
        matrix = LATENT_RGB_MATRIX
    try:
        m = torch.as_tensor(matrix, dtype=torch.float32).detach().cpu().clone()
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"color_matrix must be a [{channels}][3] list of numbers (one RGB row per latent channel), got {matrix!r:.200}") from e
    if tuple(m.shape) != (channels, 3):
        raise ValueError(f"color_matrix must have shape [{channels}, 3] (one RGB row per latent channel of the field), got {list(m.shape)}")
    if not bool(torch.isfinite(m).all()):
        raise ValueError("color_matrix must hold finite numbers, got NaN or infinity")
    return m


class ColorHead(nn.Module):
    """latent [N, C] -> rgb [N, 3] float32 = (latent·M + 1)/2; ``linear.weight`` is Mᵀ [3, C] (no bias)."""

    def __init__(self, matrix: torch.Tensor, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.linear = nn.Linear(matrix.shape[0], 3, bias=False, device=device)
        with torch.no_grad():
            self.linear.weight.copy_(matrix.T.to(device))

    @property
    def matrix(self) -> torch.Tensor:
        """M [C, 3] (a detached copy)."""
        return self.linear.weight.detach().T.clone()

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return ((self.linear(latent) + 1) * 0.5).float()


class RgbField(nn.Module):
    """A latent field seen through the head: x [N, 3] -> (σ [N], rgb [N, 3]); ``density`` unchanged."""

    def __init__(self, field: nn.Module, head: ColorHead) -> None:
        super().__init__()
        self.field, self.head = field, head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma, latent = self.field(x)
        return sigma, self.head(latent)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self.field.density(x)


class RgbBackground(nn.Module):
    """The latent background seen through the same head: directions [N, 3] -> rgb [N, 3]."""

    def __init__(self, background: nn.Module, head: ColorHead) -> None:
        super().__init__()
        self.background, self.head = background, head

    def forward(self, directions: torch.Tensor) -> torch.Tensor:
        return self.head(self.background(directions))


class RgbNeRF(nn.Module):
    """A Latent-NeRF with a colour head: renders and ``query`` give RGB, geometry is the latent field's.

    ``color_space`` = "rgb" tells export that ``query``'s colours are RGB in [0, 1] (no VAE decode).
    ``state_dict`` holds the latent model (``latent.*``) and the head (``head.linear.weight``).
    """

    color_space = "rgb"

    def __init__(self, latent: LatentNeRF, head: ColorHead) -> None:
        super().__init__()
        self.latent, self.head = latent, head

    @property
    def bound(self) -> float:
        return self.latent.bound

    @property
    def device(self) -> torch.device:
        return self.latent.device

    @property
    def occupancy(self):
        return self.latent.occupancy

    @property
    def render_config(self):
        return self.latent.render_config

    @property
    def field_config(self):
        return self.latent.field_config

    def rgb_field(self) -> RgbField:
        return RgbField(self.latent.field, self.head)

    def query(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, 3] -> (σ [N], rgb [N, 3] clamped to [0, 1])."""
        sigma, rgb = self.rgb_field()(x)
        return sigma, rgb.clamp(0.0, 1.0)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self.latent.density(x)

    def update_occupancy(self, generator: torch.Generator | None = None) -> None:
        self.latent.update_occupancy(generator)

    def render(
        self,
        cameras: Cameras,
        height: int,
        width: int,
        generator: torch.Generator | None = None,
        jitter: bool = False,
        use_occupancy: bool = True,
        shading: Shading | None = None,
    ) -> tuple[ViewRender, RenderOutput | None]:
        """(ViewRender whose ``latent`` holds RGB [B, 3, H, W] (unclamped), packed samples with grad).

        ``shading`` None renders the albedo; a :class:`Shading` lights the field's samples (never the
        background) with one light for the whole batch.
        """
        field: nn.Module = self.rgb_field()
        if shading is not None:
            field = LambertianField(field, shading, self.bound)
        background = RgbBackground(self.latent.background, self.head)
        occupancy = self.latent.occupancy if use_occupancy else None
        cameras = cameras.to(self.device)
        return render_views(field, background, cameras, height, width, self.render_config, self.bound, occupancy, generator, jitter)

    @torch.no_grad()
    def render_rgb(self, cameras: Cameras, height: int, width: int) -> torch.Tensor:
        """[B, 3, H, W] float32 RGB in [0, 1] (albedo, clamped)."""
        return self.render(cameras, height, width)[0].latent.clamp(0.0, 1.0)


def to_rgb_nerf(model: Any, matrix: Sequence[Sequence[float]] | torch.Tensor | None = None) -> RgbNeRF:
    """A new :class:`RgbNeRF` holding a copy of the trained latent ``model`` (left untouched) and a head
    initialised to ``matrix`` (default ``LATENT_RGB_MATRIX``)."""
    if isinstance(model, RgbNeRF):
        raise ValueError("trained_field is already an RGB field (a refined one); refine the Latent-NeRF it came from instead")
    if not isinstance(model, LatentNeRF):
        raise ValueError(f"trained_field must be a trained LatentNeRF (e.g. from fit_latent_nerf or load_latent_nerf), got {type(model).__name__}")
    channels = int(model.field_config.latent_channels)
    head = ColorHead(color_matrix(matrix, channels), model.device)
    return RgbNeRF(copy.deepcopy(model), head)


def state_fingerprint(module: nn.Module) -> str:
    """16 hex digits of sha256 over every tensor of ``module.state_dict()`` (names, shapes, values): the
    identity of a trained field, recorded by the runs refined from it."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{list(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def matrix_list(matrix: torch.Tensor) -> list[list[float]]:
    """M as a JSON-able [C][3] list (rounded to float32 precision)."""
    return [[float(f"{v:.8g}") for v in row] for row in matrix.tolist()]

