"""Checks at refinement's public boundary: the config's numbers and the VAE encoder it was handed."""

from __future__ import annotations

import math
from typing import Any

import torch

PROBE_SIZE = 64
"""Side of the grey image encoded once to learn the encoder's latent channels and downscale factor."""


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_config(config: Any) -> None:
    """Raise ValueError naming the RefineConfig field, the rule and the value."""
    for name in ("iterations", "render_resolution", "preview_resolution"):
        value = getattr(config, name)
        if not _int(value) or value <= 0:
            raise ValueError(f"RefineConfig.{name} must be a positive integer, got {value!r}")
    value = config.encode_resolution
    if not _int(value) or value <= 0 or value % 8:
        raise ValueError(f"RefineConfig.encode_resolution must be a positive multiple of 8 (the VAE's input size), got {value!r}")
    for name in ("preview_every", "checkpoint_every"):
        value = getattr(config, name)
        if not _int(value) or value < 0:
            raise ValueError(f"RefineConfig.{name} must be a non-negative integer, got {value!r}")
    for name in ("lr_grid", "lr_mlp", "lr_color", "adam_eps", "normal_epsilon"):
        value = getattr(config, name)
        if not (_number(value) and value > 0):
            raise ValueError(f"RefineConfig.{name} must be a positive finite number, got {value!r}")
    for name in ("sds_weight", "sparsity_weight"):
        value = getattr(config, name)
        if not (_number(value) and value >= 0):
            raise ValueError(f"RefineConfig.{name} must be a finite number >= 0, got {value!r}")
    if not (_number(config.ambient_ratio) and 0 <= config.ambient_ratio <= 1):
        raise ValueError(f"RefineConfig.ambient_ratio must lie in [0, 1], got {config.ambient_ratio!r}")
    if config.shading_start is not None and not (_int(config.shading_start) and config.shading_start >= 0):
        raise ValueError(f"RefineConfig.shading_start must be None (no shading) or an integer >= 0, got {config.shading_start!r}")
    for name in ("freeze_geometry", "vae_checkpointing", "mixed_precision"):
        if not isinstance(getattr(config, name), bool):
            raise ValueError(f"RefineConfig.{name} must be True or False, got {getattr(config, name)!r}")
    if not _int(config.seed):
        raise ValueError(f"RefineConfig.seed must be an integer, got {config.seed!r}")


def probe_encoder(encoder: Any, channels: int, denoiser_channels: int | None, encode_resolution: int, device: torch.device) -> int:
    """Encode one grey PROBE_SIZE² image (no gradient) and check the result fits the field and the denoiser;
    returns the encoder's downscale factor. Raises ValueError saying what to connect instead."""
    if encoder is None:
        raise ValueError(
            "vae_encoder is missing: refinement encodes its RGB renders with the model's VAE encoder "
            "(e.g. SdComponents.encode_images headless, or connect the checkpoint's VAE in ComfyUI)"
        )
    if not callable(encoder):
        raise ValueError(f"vae_encoder must be callable (images [B, 3, H, W] in [0, 1] -> latents [B, C, h, w]), got {type(encoder).__name__}")
    probe = torch.full((1, 3, PROBE_SIZE, PROBE_SIZE), 0.5, device=device)
    with torch.no_grad():
        out = encoder(probe)
    if not torch.is_tensor(out) or out.dim() != 4 or out.shape[0] != 1:
        got = list(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ValueError(f"vae_encoder must return latents [B, C, h, w] for images [B, 3, H, W]; for [1, 3, {PROBE_SIZE}, {PROBE_SIZE}] it returned {got}")
    expected = denoiser_channels if denoiser_channels is not None else channels
    if out.shape[1] != channels or out.shape[1] != expected:
        raise ValueError(
            f"vae_encoder gives {out.shape[1]}-channel latents but the field has {channels} latent channels "
            f"(and the denoiser takes {expected}): connect the VAE of the model family the Latent-NeRF was trained with"
        )
    side = int(out.shape[-1])
    if side == 0 or PROBE_SIZE % side or out.shape[-2] != side:
        raise ValueError(f"vae_encoder must downscale by a whole factor; [1, 3, {PROBE_SIZE}, {PROBE_SIZE}] gave {list(out.shape)}")
    factor = PROBE_SIZE // side
    if encode_resolution % factor or (encode_resolution // factor) % 8:
        raise ValueError(
            f"RefineConfig.encode_resolution must be a multiple of {8 * factor} for this VAE (÷{factor} gives the latent "
            f"side, which the UNet halves three times), got {encode_resolution}"
        )
    if not bool(torch.isfinite(out).all()):
        raise ValueError("vae_encoder returned NaN or infinite latents for a grey image: check the VAE's weights and dtype")
    return factor
