"""Latent→RGB Refine's host glue against ComfyUI's real VAE (from the random SD1.5 checkpoint, loaded by
ComfyUI's loader under inference mode, as a node receives it).

``refine_host.gradient_encoder`` copies the VAE's encoder outside inference mode, so gradients flow through
it; the copy has no decoder, encodes like ``vae.encode`` (the independent reference: ComfyUI's own call),
and its per-block gradient checkpointing gives the same gradients as the plain backward.
"""

from __future__ import annotations

import types

import pytest
import torch


@pytest.fixture(scope="module")
def glue(pack) -> types.ModuleType:
    from comfyui_latent3d.nodes import refine_host

    return refine_host


@pytest.fixture(scope="module")
def config(pack):
    from comfyui_latent3d.latent3d.refine.train import RefineConfig

    return RefineConfig.tiny(encode_resolution=64)


def test_the_vae_copy_gets_gradients_and_encodes_like_the_vae(glue, config, sd15) -> None:
    from comfyui_latent3d.latent3d.refine.encoder import checkpointed_blocks

    vae, model = sd15.vae, sd15.model
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(3))  # IMAGE layout, as a node gets it
    with torch.inference_mode():  # as ComfyUI runs nodes
        reference = model.model.process_latent_in(vae.encode(image).float())  # ComfyUI's encode, in the model's latent space
        with glue.gradient_encoder(vae, model, torch.device("cpu"), config, "Refine") as encoder:
            assert getattr(encoder.module, "decoder", None) is None and not encoder.module.training
            with torch.inference_mode(False), torch.enable_grad():
                x = image.movedim(-1, 1).clone().requires_grad_(True)
                z = encoder(x)
                assert list(z.shape) == [1, 4, 8, 8] and z.requires_grad and not z.is_inference()
                torch.testing.assert_close(z.detach(), reference, rtol=1e-3, atol=1e-3)
                z.square().sum().backward()
                assert float(x.grad.abs().mean()) > 0
                with checkpointed_blocks(encoder.module) as wrapped:
                    x2 = x.detach().clone().requires_grad_(True)
                    encoder(x2).square().sum().backward()
                assert wrapped > 0
                torch.testing.assert_close(x2.grad, x.grad, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in vae.first_stage_model.parameters())  # the host's own VAE weights got no gradient


def test_refusals_name_the_node(glue, config, sd15) -> None:
    with pytest.raises(ValueError, match="Refine: connect a VAE"):
        glue.check_vae(None, 4, "Refine")
    with pytest.raises(ValueError, match="Refine: 'vae' must be a ComfyUI VAE"):
        glue.check_vae(types.SimpleNamespace(first_stage_model=object()), 4, "Refine")
    assert sd15.vae.vae_dtype == torch.float32  # on CPU: 13 kB per input pixel kept for the backward, a quarter when checkpointed
    assert glue.activation_bytes(sd15.vae, 512, False) == pytest.approx(13_000 * 512**2)
    assert glue.activation_bytes(sd15.vae, 512, True) == pytest.approx(0.25 * 13_000 * 512**2)
