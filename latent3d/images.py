"""Tensor images to PIL (previews, turntables, node previews)."""

from __future__ import annotations

import torch


def to_pil(image: torch.Tensor):
    """[3, H, W] or [H, W, 3] float in 0..1 -> PIL RGB image (clamped, rounded)."""
    from PIL import Image

    if image.dim() != 3 or 3 not in (image.shape[0], image.shape[-1]):
        raise ValueError(f"image must have shape [3, H, W] or [H, W, 3], got {list(image.shape)}")
    if image.shape[-1] != 3:
        image = image.permute(1, 2, 0)
    array = (image.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype("uint8")
    return Image.fromarray(array)
