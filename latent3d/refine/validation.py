"""Checks at refinement's public boundary: the config's numbers and the VAE encoder it was handed."""

from __future__ import annotations

from typing import Any

import torch

from ..config import check_fields, is_int, is_number

PROBE_SIZE = 64
"""Side of the grey image encoded once to learn the encoder's latent channels and downscale factor."""


def check_config(config: Any) -> None:
    """Raise ValueError naming the RefineConfig field, the rule and the value."""
    check_fields(
        config, positive_ints=("iterations", "render_resolution", "preview_resolution"), non_negative_ints=("preview_every", "checkpoint_every"),
        positive_numbers=("lr_grid", "lr_mlp", "lr_color", "adam_eps", "normal_epsilon"), non_negative_numbers=("sds_weight", "sparsity_weight"),
        booleans=("freeze_geometry", "vae_checkpointing", "mixed_precision"), integers=("seed",),
    )
    value = config.encode_resolution
    if not is_int(value) or value <= 0 or value % 8:
        raise ValueError(f"RefineConfig.encode_resolution must be a positive multiple of 8 (the VAE's input size), got {value!r}")
    if not (is_number(config.ambient_ratio) and 0 <= config.ambient_ratio <= 1):
        raise ValueError(f"RefineConfig.ambient_ratio must lie in [0, 1], got {config.ambient_ratio!r}")
    if config.shading_start is not None and not (is_int(config.shading_start) and config.shading_start >= 0):
        raise ValueError(f"RefineConfig.shading_start must be None (no shading) or an integer >= 0, got {config.shading_start!r}")


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
