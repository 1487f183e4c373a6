"""Host glue of Latent→RGB Refine: the VAE encoder copied for gradients, the colour-head initialisation and
the memory rules (--lowvram). ComfyUI modules are imported inside the functions that use them.

Why a copy: ComfyUI runs every node under ``torch.inference_mode()``, and its VAE weights are inference
tensors that autograd refuses to backpropagate through. A ``copy.deepcopy`` of the VAE's model made outside
inference mode is an ordinary module (its decoder is left out of the copy: the encode never uses it). The
copy lives on the torch device only while the refinement runs and is moved to the VAE's offload device and
dropped afterwards; ComfyUI is asked to free room for it and the encoder's activations first, so a
--lowvram run unloads (or partially loads) the UNet instead of running out of memory.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from typing import Any, Iterator

import torch

from ..latent3d.refine.encoder import ModuleEncoder
from .types import TrainedNerf

ACTIVATION_BYTES_PER_PIXEL = 13_000
"""fp32 bytes the SD VAE encoder keeps per input pixel for its backward pass (3.13 GB at 512², measured on
the diffusers AutoencoderKL with SD's shape by benchmarks/refine_step.py); scaled by the dtype's size."""
CHECKPOINTED_SHARE = 0.25
"""Share of those kept with per-block gradient checkpointing (0.69 of 3.13 GB measured, rounded up)."""
COLOR_INITS = ("paper", "host preview")


def source_nerf(nerf: Any, node: str) -> TrainedNerf:
    """The trained Latent-NeRF input, checked: a TrainedNerf holding a latent (not yet refined) field."""
    if not isinstance(nerf, TrainedNerf) or nerf.model is None:
        raise ValueError(f"{node}: connect 'nerf' to the output of Latent-NeRF Train (got {type(nerf).__name__})")
    if nerf.is_rgb:
        raise ValueError(f"{node}: this 'nerf' is already refined (RGB); connect the output of Latent-NeRF Train instead")
    return nerf


def host_config(config: Any) -> Any:
    """``config`` with VAE gradient checkpointing forced on under --lowvram / --novram."""
    import comfy.model_management as mm

    low = getattr(mm, "vram_state", None) in (getattr(mm.VRAMState, "LOW_VRAM", None), getattr(mm.VRAMState, "NO_VRAM", None))
    return dataclasses.replace(config, vae_checkpointing=True) if low and not config.vae_checkpointing else config


def color_init(model: Any, choice: str) -> list[list[float]] | None:
    """The colour head's initial matrix: None (the paper's latent→RGB matrix) or the host's latent-preview
    factors of the model family (``latent_format.latent_rgb_factors``, [4][3]; SD1.x/SD2.x have no bias)."""
    if choice not in COLOR_INITS:
        raise ValueError(f"color_init must be one of {COLOR_INITS}, got {choice!r}")
    if choice == "paper":
        return None
    factors = getattr(getattr(model.model, "latent_format", None), "latent_rgb_factors", None)
    if factors is None:
        raise ValueError("color_init 'host preview': this model's latent format has no latent_rgb_factors; choose 'paper'")
    return [list(map(float, row)) for row in factors]


def check_vae(vae: Any, channels: int, node: str) -> Any:
    """The VAE's model (``first_stage_model``), after checking the VAE fits the field's latent space."""
    if vae is None:
        raise ValueError(f"{node}: connect a VAE (the checkpoint's): its encoder turns the RGB renders into latents")
    model = getattr(vae, "first_stage_model", None)
    if not isinstance(model, torch.nn.Module) or not callable(getattr(model, "encode", None)):
        raise ValueError(f"{node}: 'vae' must be a ComfyUI VAE (from a checkpoint or VAE loader), got {type(vae).__name__}")
    got = getattr(vae, "latent_channels", channels)
    if got != channels or getattr(vae, "downscale_ratio", 8) != 8:
        raise ValueError(
            f"{node}: the VAE makes {got}-channel latents at 1/{getattr(vae, 'downscale_ratio', 8)} size, but the field was trained in "
            f"{channels}-channel SD latents (1/8): connect the VAE of the Stable Diffusion 1.x/2.x checkpoint"
        )
    return model


def activation_bytes(vae: Any, side: int, checkpointing: bool) -> float:
    """Bytes the VAE encoder keeps for its backward pass at a ``side``² input, in the VAE's dtype."""
    dtype = getattr(vae, "vae_dtype", torch.float32)
    share = CHECKPOINTED_SHARE if checkpointing else 1.0
    return ACTIVATION_BYTES_PER_PIXEL * side * side * torch.empty((), dtype=dtype).element_size() / 4 * share


def _copy_without_decoder(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model`` (outside inference mode) with its decoder left out, lowvram casts undone."""
    skip = {id(part): None for part in (getattr(model, "decoder", None), getattr(model, "post_quant_conv", None)) if isinstance(part, torch.nn.Module)}
    with torch.inference_mode(False):
        clone = copy.deepcopy(model, skip)
    for module in clone.modules():  # what ComfyUI's model patcher sets on a partially loaded model
        if hasattr(module, "prev_comfy_cast_weights"):
            module.comfy_cast_weights = module.prev_comfy_cast_weights
            del module.prev_comfy_cast_weights
        for name in ("weight_function", "bias_function"):
            if hasattr(module, name):
                setattr(module, name, [])
    return clone.eval().requires_grad_(False)


@contextlib.contextmanager
def gradient_encoder(vae: Any, model: Any, device: torch.device, config: Any, node: str) -> Iterator[ModuleEncoder]:
    """A :class:`ModuleEncoder` over a gradient-capable copy of ``vae``'s encoder on ``device`` (images in
    [0, 1] -> the MODEL's latent space), checked against ``vae.encode``; moved off the device and dropped on exit."""
    import comfy.model_management as mm

    source = check_vae(vae, int(model.model.latent_format.latent_channels), node)
    dtype = getattr(vae, "vae_dtype", torch.float32)
    clone = _copy_without_decoder(source)
    if device.type != "cpu":
        mm.free_memory(mm.module_size(clone) + activation_bytes(vae, config.encode_resolution, config.vae_checkpointing), device)
    with torch.inference_mode(False):
        clone.to(device=device, dtype=dtype)
    process_input = getattr(vae, "process_input", lambda image: image * 2.0 - 1.0)
    latent_format = model.model.latent_format

    def encode(images: torch.Tensor) -> torch.Tensor:
        z = clone.encode(process_input(images).to(device, dtype))
        return latent_format.process_in(z.float())

    encoder = ModuleEncoder(encode, clone, checkpointing=config.vae_checkpointing)
    try:
        _check_against_host(encoder, vae, latent_format, device, node)
        yield encoder
    finally:
        clone.to(mm.vae_offload_device())
        del clone, encoder
        mm.soft_empty_cache()


def _check_against_host(encoder: ModuleEncoder, vae: Any, latent_format: Any, device: torch.device, node: str) -> None:
    """The copy must encode like the host's own ``vae.encode`` (a VAE type whose encode the copy does not
    reproduce is refused here rather than trained against)."""
    probe = torch.linspace(0.0, 1.0, 64 * 64 * 3).reshape(1, 64, 64, 3)  # IMAGE layout
    with torch.inference_mode():
        host = vae.encode(probe).float().cpu()
    with torch.inference_mode(False), torch.no_grad():
        ours = latent_format.process_out(encoder(probe.movedim(-1, 1).to(device))).float().cpu()
    if ours.shape != host.shape:
        raise ValueError(f"{node}: the VAE copy encodes to {list(ours.shape)}, the VAE itself to {list(host.shape)}; this VAE type is not supported")
    with torch.inference_mode():
        error = float((ours - host).abs().max() / host.abs().max().clamp(min=1e-6))
    if error > 0.05:
        raise ValueError(f"{node}: the VAE copy encodes differently from the VAE itself (relative error {error:.3f}); this VAE type is not supported")
