"""Texture lookup for Latent-Paint: a (latent) texture sampled at per-pixel UVs, differentiable w.r.t. the
texture (docs/method.md §3: only the texture is learned, so rasterize once, then sample with gradients).

UV convention (OBJ, as in ``export/uv.py``): u grows to the right and v grows UP, so v = 0 is the bottom
row of an image-ordered texture [C, Ht, Wt] (row 0 at the top); texel (row, col) has its centre at
u = (col + ½)/Wt, v = 1 − (row + ½)/Ht. Outside [0, 1] the edge texels extend (clamp, no wrap): atlas
charts never bleed across the texture's border, and the gutters ``fill_gutters`` spreads stay in use.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MODES = ("bilinear", "nearest", "mipmap")


def sample_texture(texture: torch.Tensor, uv: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Texture values [B, C, H, W] at ``uv`` [B, H, W, 2] (u, v).

    texture [C, Ht, Wt] (shared by the batch) or [B, C, Ht, Wt]. ``mode``: "bilinear" (between the four
    nearest texel centres), "nearest", or "mipmap": trilinear between the two mip levels whose texel size
    brackets the pixel's UV footprint (see ``mip_level``), for textures much larger than the view, where
    bilinear lookups would alias. Background pixels are whatever their uv reads (interpolate gives 0:
    the bottom-left texel); mask them with the rasterizer's ids.
    """
    texture, uv = _check(texture, uv, mode)
    grid = torch.stack([uv[..., 0] * 2.0 - 1.0, 1.0 - uv[..., 1] * 2.0], -1).to(texture.dtype)  # v up -> row down
    if mode != "mipmap":
        return _lookup(texture, grid, mode)
    levels = mip_pyramid(texture)
    level = mip_level(uv.detach(), texture.shape[-2:], len(levels))  # [B, H, W]; no gradient through the choice
    out = None
    for index in range(int(level.min().floor()), int(level.max().ceil()) + 1):
        weight = (1.0 - (level - index).abs()).clamp(min=0.0)[:, None].to(texture.dtype)  # [B, 1, H, W]
        term = weight * _lookup(levels[index], grid, "bilinear")
        out = term if out is None else out + term
    return out


def mip_pyramid(texture: torch.Tensor) -> list[torch.Tensor]:
    """Levels [B, C, ⌈Ht/2^l⌉, ⌈Wt/2^l⌉] from the texture down to 1×1, each the 2×2 box average of the
    one above. Exact for power-of-two sizes; for an odd size the last coarse texel averages the texels
    that exist and the level still spans uv [0, 1], which shifts it by up to half a coarse texel (a blur
    level, no seam). Differentiable."""
    levels = [texture]
    while max(levels[-1].shape[-2:]) > 1:
        levels.append(F.avg_pool2d(levels[-1], 2, ceil_mode=True))
    return levels


def mip_level(uv: torch.Tensor, size: tuple[int, int] | torch.Size, count: int) -> torch.Tensor:
    """Fractional mip level λ [B, H, W] in [0, count − 1]: log2 of the pixel's footprint in level-0 texels.

    The footprint is the larger of the horizontal and vertical UV steps between neighbouring pixels (in
    texels). Each direction takes the smaller of the steps to the two neighbours, so a silhouette or a UV
    seam on one side (a jump to the background's or another chart's uv) does not blow the level up.
    """
    texels = uv * torch.tensor([size[1], size[0]], dtype=uv.dtype, device=uv.device)
    footprint = torch.maximum(_step(texels, 2), _step(texels, 1))
    return torch.log2(footprint.clamp(min=1.0)).clamp(max=count - 1)


def _step(texels: torch.Tensor, dim: int) -> torch.Tensor:
    """[B, H, W] smaller UV step (texels) to the two neighbours along image ``dim`` (1 rows, 2 columns)."""
    step = texels.diff(dim=dim).norm(dim=-1)  # one shorter along ``dim``
    if step.shape[dim] == 0:
        return torch.zeros(texels.shape[:-1], dtype=texels.dtype, device=texels.device)
    edge = torch.full_like(step.narrow(dim, 0, 1), math.inf)
    return torch.minimum(torch.cat([edge, step], dim), torch.cat([step, edge], dim))


def _lookup(texture: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    # align_corners=False: grid −1/+1 are the outer edges of the border texels, so texel centres sit at
    # (col + ½)/Wt exactly as the UV convention says; "border" padding is the documented clamp.
    return F.grid_sample(texture, grid, mode=mode, padding_mode="border", align_corners=False)


def _check(texture, uv, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not (isinstance(uv, torch.Tensor) and uv.ndim == 4 and uv.shape[-1] == 2 and uv.is_floating_point()):
        raise ValueError(f"uv must be a floating [B, H, W, 2] tensor, got {_describe(uv)}")
    if not (isinstance(texture, torch.Tensor) and texture.ndim in (3, 4) and texture.is_floating_point()):
        raise ValueError(f"texture must be a floating [C, Ht, Wt] or [B, C, Ht, Wt] tensor, got {_describe(texture)}")
    if min(texture.shape[-2:]) < 1 or texture.shape[-3] < 1:
        raise ValueError(f"texture must have at least one channel and one texel, got shape {list(texture.shape)}")
    batch = uv.shape[0]
    if texture.ndim == 3:
        texture = texture[None]
    if texture.shape[0] not in (1, batch):
        raise ValueError(f"texture batch {texture.shape[0]} must be 1 or match uv's batch {batch}")
    if not bool(torch.isfinite(uv).all()):
        raise ValueError("uv must be finite, got NaN or inf")
    return texture.expand(batch, *texture.shape[1:]), uv


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    return f"{type(value).__name__} {value!r}"
