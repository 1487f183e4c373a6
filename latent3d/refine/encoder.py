"""The differentiable VAE encoder of refinement: images [B, 3, H, W] in [0, 1] -> model-space latents.

Any callable with that contract works (``SdComponents.encode_images``: posterior mean × the model's latent
scale). :class:`ModuleEncoder` adds what a bare callable cannot offer: a fingerprint of its weights (a run
is not resumed with another VAE) and per-block gradient checkpointing, which recomputes each residual or
attention block's activations during the backward pass instead of keeping them: for SD's VAE at 512² the
tensors kept for the backward fall from 3.13 GB to 0.69 GB (fp32, measured by benchmarks/refine_step.py),
for one extra encoder forward per step.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..guidance.denoiser import weights_digest

ImageEncoder = Callable[[torch.Tensor], torch.Tensor]
"""images [B, 3, H, W] in [0, 1] -> model-space latents [B, C, H/f, W/f] (f = 8 for SD), differentiable."""

CHECKPOINTED_BLOCKS = ("ResnetBlock", "AttnBlock", "Attention")
"""Class-name parts of the blocks :func:`checkpointed_blocks` recomputes: diffusers' ``ResnetBlock2D`` and
``Attention``, ComfyUI's (LDM's) ``ResnetBlock`` and ``AttnBlock``."""


@contextlib.contextmanager
def checkpointed_blocks(module: nn.Module) -> Iterator[int]:
    """Within the block, every residual/attention sub-block of ``module`` runs under non-reentrant gradient
    checkpointing when gradients are enabled; yields how many blocks were wrapped. The module is restored
    on exit."""
    blocks = [m for m in module.modules() if any(part in type(m).__name__ for part in CHECKPOINTED_BLOCKS)]
    blocks = [m for m in blocks if not any(m is not other and _contains(other, m) for other in blocks)]  # outermost only
    for block in blocks:
        forward = block.forward

        def wrapped(*args, _forward=forward, **kwargs):
            if torch.is_grad_enabled():
                return checkpoint(_forward, *args, use_reentrant=False, preserve_rng_state=False, **kwargs)
            return _forward(*args, **kwargs)

        block.forward = wrapped  # an instance attribute shadows the class's forward
    try:
        yield len(blocks)
    finally:
        for block in blocks:
            del block.forward


def _contains(outer: nn.Module, inner: nn.Module) -> bool:
    return any(m is inner for m in outer.modules() if m is not outer)


@dataclasses.dataclass
class ModuleEncoder:
    """An encode callable and the module holding its weights (for checkpointing and the fingerprint)."""

    encode: ImageEncoder
    module: nn.Module
    checkpointing: bool = False
    """Per-block gradient checkpointing of ``module`` during the encode (see the module docstring)."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            with checkpointed_blocks(self.module):
                return self.encode(images)
        return self.encode(images)

    def with_checkpointing(self, enabled: bool = True) -> "ModuleEncoder":
        return dataclasses.replace(self, checkpointing=enabled)

    def fingerprint(self) -> str:
        return weights_digest(list(self.module.parameters()), "vae_encoder")


def components_encoder(components) -> ModuleEncoder:
    """The VAE encoder of :class:`latent3d.loading.SdComponents` (posterior mean × scaling factor)."""
    return ModuleEncoder(components.encode_images, components.vae.encoder)


def checkpointed(encoder: ImageEncoder) -> ImageEncoder:
    """``encoder`` with gradient checkpointing: per block for a :class:`ModuleEncoder`, else around the
    whole call (which only frees the activations while the UNet runs: the backward recomputes them all)."""
    if isinstance(encoder, ModuleEncoder):
        return encoder.with_checkpointing(True)

    def whole(images: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return checkpoint(encoder, images, use_reentrant=False, preserve_rng_state=False)
        return encoder(images)

    whole.fingerprint = getattr(encoder, "fingerprint", None)  # type: ignore[attr-defined]
    return whole
