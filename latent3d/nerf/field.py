"""The Latent-NeRF field: grid encoding + small MLP -> density and 4 raw latent channels (docs/method.md §1)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from .grid import GridConfig, make_grid_encoding


@dataclass
class FieldConfig:
    """Latent radiance field. Defaults are the official Latent-NeRF ones."""

    grid: GridConfig = field(default_factory=GridConfig)
    """Multi-resolution grid encoding of the position."""
    hidden_dim: int = 64
    """Width of the MLP's hidden layers."""
    hidden_layers: int = 2
    """Number of hidden layers (32 -> 64 -> 64 -> 5 for the default)."""
    latent_channels: int = 4
    """Raw output channels besides density: Stable Diffusion's 4 latent channels."""
    blob_density: float = 5.0
    """Amplitude of the density blob added to the density pre-activation at the origin."""
    blob_radius: float = 0.2
    """Standard deviation of the density blob (world units)."""
    bound: float = 1.0
    """The scene lives in [-bound, bound]^3."""
    background: Literal["mlp", "constant", "none"] = "mlp"
    """Background latent: an MLP on the ray direction (official), one learned latent, or zeros."""
    background_octaves: int = 6
    """Frequency-encoding octaves of the background MLP's direction input (3 + 6*2*3 = 39 dims)."""
    background_hidden_dim: int = 64
    """Hidden width of the background MLP."""

    def __post_init__(self) -> None:
        for name in ("hidden_dim", "hidden_layers", "latent_channels", "background_hidden_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"FieldConfig.{name} must be a positive integer, got {value!r}")
        for name in ("bound", "blob_radius"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"FieldConfig.{name} must be a positive finite number, got {value!r}")
        if not math.isfinite(self.blob_density):
            raise ValueError(f"FieldConfig.blob_density must be finite, got {self.blob_density!r}")
        if self.background not in ("mlp", "constant", "none"):
            raise ValueError(f"FieldConfig.background must be 'mlp', 'constant' or 'none', got {self.background!r}")


DENSITY_EXPONENT_MAX = 15.0
"""σ = exp(min(h, 15)) ≤ 3.3e6: the forward is bounded like the official backward (which clamps the
exponent to [-15, 15]). Unbounded, long runs pushed h past ln(FLT_MAX) ≈ 88.7, σ became inf and σδ's
cumulative sum NaN, and from then on most steps were skipped. The bound changes no render: a sample with
σ ≥ 3.3e6 is opaque (1 − exp(−σδ) = 1 in float32) for any step δ > 1e-5, and the sketch loss's occupancy
1 − exp(−0.2σ) saturates far below it."""


class _TruncExp(torch.autograd.Function):
    """exp(min(x, DENSITY_EXPONENT_MAX)) whose backward is grad·exp(clamp(x, −15, 15)) (the official
    truncated exponential's stable gradient, passed through where the forward is bounded)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x.clamp(max=DENSITY_EXPONENT_MAX))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(-15, 15))


trunc_exp = _TruncExp.apply


def mlp(in_dim: int, hidden: int, layers: int, out_dim: int, bias: bool) -> nn.Sequential:
    dims = [in_dim] + [hidden] * layers
    modules: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        modules += [nn.Linear(a, b, bias=bias), nn.ReLU(inplace=True)]
    modules.append(nn.Linear(dims[-1], out_dim, bias=bias))
    return nn.Sequential(*modules)


class LatentField(nn.Module):
    """x [N, 3] world coordinates -> (sigma [N], latent [N, C]).

    σ = exp(h0 + a·exp(−‖x‖²/(2r²))) with a = blob_density, r = blob_radius; the latent channels are raw
    (no activation) because they are Stable Diffusion latents in model space, not colours.
    """

    def __init__(self, config: FieldConfig, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.config = config
        self.encoding = make_grid_encoding(config.grid, device)
        # the official MLP (32 -> 64 -> 64 -> 5, ReLU) has biases
        self.mlp = mlp(config.grid.output_dim, config.hidden_dim, config.hidden_layers, 1 + config.latent_channels, bias=True).to(device)

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bound = self.config.bound
        unit = ((x + bound) / (2 * bound)).clamp(0.0, 1.0)
        h = self.mlp(self.encoding(unit))
        blob = self.config.blob_density * torch.exp(-(x * x).sum(-1) / (2 * self.config.blob_radius**2))
        return h[:, 0] + blob, h[:, 1:]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre, latent = self._features(x)
        return trunc_exp(pre.float()), latent.float()

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """σ [N] at world points x [N, 3]."""
        pre, _ = self._features(x)
        return trunc_exp(pre.float())


def frequency_encode(d: torch.Tensor, octaves: int) -> torch.Tensor:
    """[N, 3] -> [N, 3 + 6*octaves]: d, sin(2^k d), cos(2^k d) for k < octaves."""
    freqs = 2.0 ** torch.arange(octaves, device=d.device, dtype=d.dtype)
    angles = d[:, None, :] * freqs[None, :, None]  # [N, K, 3]
    return torch.cat([d, torch.sin(angles).flatten(1), torch.cos(angles).flatten(1)], -1)


class Background(nn.Module):
    """Latent background seen where rays leave the scene: ray direction [N, 3] -> latent [N, C]."""

    def __init__(self, config: FieldConfig, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.mode = config.background
        self.octaves = config.background_octaves
        self.channels = config.latent_channels
        if self.mode == "mlp":
            self.net = mlp(3 + 6 * config.background_octaves, config.background_hidden_dim, 1, config.latent_channels, bias=True).to(device)
        elif self.mode == "constant":
            self.value = nn.Parameter(torch.zeros(config.latent_channels, device=device))

    def forward(self, directions: torch.Tensor) -> torch.Tensor:
        if self.mode == "mlp":
            return self.net(frequency_encode(directions.float(), self.octaves)).float()
        if self.mode == "constant":
            return self.value.expand(directions.shape[0], -1)
        return directions.new_zeros(directions.shape[0], self.channels, dtype=torch.float32)
