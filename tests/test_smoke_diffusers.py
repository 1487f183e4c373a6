"""A few real Latent-NeRF steps through diffusers models: tiny UNet, tiny CLIP, tiny VAE (CPU, offline)."""

import math

import pytest
import torch

from latent3d.loading import encode_prompt
from latent3d.nerf.train import NerfConfig, NerfTrainer, fit_latent_nerf
from latent3d.tiny import build_tiny_components


@pytest.mark.smoke
def test_fit_latent_nerf_with_tiny_diffusers_models():
    components = build_tiny_components(seed=0)
    embeddings = encode_prompt(components, "a hamburger")
    config = NerfConfig.tiny(iterations=3, resolution=16)

    # the field's initial weights come from config.seed: a fresh trainer shows the starting state
    initial = {k: v.clone() for k, v in NerfTrainer(config, components.denoiser, embeddings, "cpu").model.state_dict().items()}
    previews = []
    result = fit_latent_nerf(config, components.denoiser, embeddings, device="cpu", on_step=lambda step, total, preview: previews.append(preview))

    assert result.status == "completed" and result.step == 3 and result.skipped_steps == 0
    for key in ("loss", "sds", "sparsity"):
        assert len(result.history[key]) == 3 and all(math.isfinite(v) for v in result.history[key]), key
    assert any(v != 0 for v in result.history["sds"])  # the UNet's SDS term took part
    trained = result.model.state_dict()
    changed = [k for k, v in initial.items() if v.is_floating_point() and not torch.equal(v, trained[k])]
    assert any(k.startswith("field.") for k in changed) and any(k.startswith("background.") for k in changed), changed

    preview = previews[-1]
    assert preview is not None and preview.shape == (4, config.preview_resolution, config.preview_resolution)
    with torch.no_grad():
        image = components.decode_latents(preview[None])
    assert image.shape == (1, 3, 8 * config.preview_resolution, 8 * config.preview_resolution)
    assert torch.isfinite(image).all() and 0 <= float(image.min()) and float(image.max()) <= 1
