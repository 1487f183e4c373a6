"""ComfyDenoiser and the CLIP/VAE helpers against ComfyUI's own loader, model sampling and patches.

The random SD1.5 checkpoint makes the UNet's raw output an arbitrary function, so each check compares the
adapter with an independent computation from the raw UNet (``diffusion_model(z_t, t, context)``) that
would disagree if a scaling, the σ↔t mapping, the conditioning or the parameterization were wrong.
A few UNet calls at an 8×8 latent keep the file at a few seconds of compute.
"""

from __future__ import annotations

import types

import pytest
import torch


@pytest.fixture(scope="module")
def cd(pack: types.ModuleType) -> types.ModuleType:
    from comfyui_latent3d.nodes import comfy_denoiser

    return comfy_denoiser


@pytest.fixture(scope="module")
def core() -> types.ModuleType:
    from comfyui_latent3d.latent3d.guidance import denoiser

    return denoiser


@pytest.fixture(scope="module")
def probe(cd: types.ModuleType, sd15: types.SimpleNamespace) -> types.SimpleNamespace:
    """Inputs at three timesteps (both ends of the schedule and the middle) and the raw UNet output there."""
    generator = torch.Generator().manual_seed(0)
    z_t = torch.randn(3, 4, 8, 8, generator=generator)
    t = torch.tensor([0, 500, 999])
    emb = cd.encode_with_clip(sd15.clip, ["", "a chair, front view", "a chair, side view"])
    denoiser = cd.ComfyDenoiser(sd15.model)
    denoiser.load()
    with torch.no_grad():  # for ε-prediction the input scaling 1/√(1+σ²) undoes x = z_t·√(1+σ²): the UNet sees z_t
        raw = sd15.model.model.diffusion_model(z_t, t.float(), context=emb).float()
    assert raw.std() > 1e-2, "the random UNet's output is too small for the comparisons below to mean anything"
    return types.SimpleNamespace(z_t=z_t, t=t, emb=emb, raw=raw, denoiser=denoiser)


def test_schedule_and_attributes(cd, core, sd15, probe) -> None:
    denoiser = probe.denoiser
    assert isinstance(denoiser, core.Denoiser)
    assert denoiser.prediction_type == "epsilon"
    assert denoiser.embedding_dim == 768
    assert denoiser.alphas_cumprod.shape == (1000,) and denoiser.alphas_cumprod.dtype == torch.float32
    torch.testing.assert_close(denoiser.alphas_cumprod, core.scaled_linear_alphas_cumprod(), rtol=0, atol=1e-5)


def test_epsilon_equals_raw_unet_output(cd, sd15, probe) -> None:
    eps = probe.denoiser.predict_noise(probe.z_t, probe.t, probe.emb)
    assert eps.dtype == torch.float32 and eps.shape == probe.z_t.shape and not eps.is_inference()
    torch.testing.assert_close(eps, probe.raw, rtol=1e-4, atol=1e-4)
    # The conditioning reaches the UNet: another prompt gives another ε.
    other = probe.denoiser.predict_noise(probe.z_t, probe.t, probe.emb.flip(0))
    assert (other - eps).abs().max() > 1e-3


def test_v_prediction_patch_gives_v_to_epsilon(cd, core, sd15, probe) -> None:
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete

    (v_model,) = ModelSamplingDiscrete().patch(sd15.model, "v_prediction", False)
    v_denoiser = cd.ComfyDenoiser(v_model)
    assert v_denoiser.prediction_type == "v_prediction"
    torch.testing.assert_close(v_denoiser.alphas_cumprod, probe.denoiser.alphas_cumprod)

    eps = v_denoiser.predict_noise(probe.z_t, probe.t, probe.emb)
    # Same weights, so the raw output is the same; read as v it means ε = √ᾱ·v + √(1−ᾱ)·z_t.
    alpha_bar = core.scaled_linear_alphas_cumprod()[probe.t].view(-1, 1, 1, 1)
    expected = alpha_bar.sqrt() * probe.raw + (1 - alpha_bar).sqrt() * probe.z_t
    torch.testing.assert_close(eps, expected, rtol=1e-4, atol=1e-4)
    assert (eps - probe.raw).abs().max() > 0.1, "v and ε readings must differ for this check to mean anything"
    # Loading the unpatched clone again switches the model back to ε.
    torch.testing.assert_close(probe.denoiser.predict_noise(probe.z_t, probe.t, probe.emb), probe.raw, rtol=1e-4, atol=1e-4)


def test_weight_patch_inside_a_training_context(cd, sd15, probe) -> None:
    """As a training node runs it: the prompt under inference mode, the loop outside it with grad on.

    Loading a weight-patched (LoRA-like) clone writes into inference-tensor weights; that must not fail,
    ε must be an ordinary tensor, and the patch must be undone when the plain model is loaded again.
    """
    patched = sd15.model.clone()
    key = "diffusion_model.out.2.bias"
    patched.add_patches({key: (torch.full((4,), 0.5),)}, 1.0)  # a "diff" patch: bias += 0.5
    denoiser = cd.ComfyDenoiser(patched)
    with torch.inference_mode():
        with torch.inference_mode(False), torch.enable_grad():
            latents = torch.zeros_like(probe.z_t, requires_grad=True)
            eps = denoiser.predict_noise(probe.z_t, probe.t, probe.emb)
            loss = (latents * eps).sum()
            loss.backward()
    assert not eps.is_inference() and not eps.requires_grad
    torch.testing.assert_close(latents.grad, eps)
    torch.testing.assert_close(eps, probe.raw + 0.5, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(probe.denoiser.predict_noise(probe.z_t, probe.t, probe.emb), probe.raw, rtol=1e-4, atol=1e-4)


def test_an_interrupt_stops_a_unet_call_within_one_block(cd, sd15, probe) -> None:
    """The interrupt flag, set while the UNet runs (here by a patch after input block 2, as if the user
    pressed cancel then), raises before the next block: the call never reaches its output blocks. The
    model's own patches still run (the user's patch lists are extended on a copy, not replaced)."""
    import comfy.model_management as mm

    seen, cancel = [], [True]

    def press_cancel(h, options):
        seen.append(options["block"])
        if options["block"] == ("input", 2) and cancel:
            mm.interrupt_current_processing(True)
        return h

    def count_output(h, skip, options):
        seen.append(options["block"])
        return h, skip

    patched = sd15.model.clone()
    patched.set_model_input_block_patch(press_cancel)
    patched.set_model_output_block_patch(count_output)
    denoiser = cd.ComfyDenoiser(patched)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            denoiser.predict_noise(probe.z_t, probe.t, probe.emb)
    finally:
        mm.interrupt_current_processing(False)
    assert seen == [("input", 0), ("input", 1), ("input", 2)], seen
    assert not mm.processing_interrupted()  # reported the way ComfyUI's own nodes do (flag reset)
    assert len(patched.model_options["transformer_options"]["patches"]["input_block_patch"]) == 1  # the model's list is untouched
    seen.clear()
    cancel.clear()
    denoiser.predict_noise(probe.z_t, probe.t, probe.emb)  # without the flag the whole call runs
    assert len([b for b in seen if b[0] == "output"]) == 12


def test_input_validation(cd, probe) -> None:
    d = probe.denoiser
    with pytest.raises(ValueError, match=r"z_t must have shape \[B, 4, h, w\]"):
        d.predict_noise(probe.z_t[:, :3], probe.t, probe.emb)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1000\), got min 0 max 1000"):
        d.predict_noise(probe.z_t, torch.tensor([0, 1, 1000]), probe.emb)
    with pytest.raises(ValueError, match=r"t must be an integer tensor"):
        d.predict_noise(probe.z_t, probe.t.float(), probe.emb)
    with pytest.raises(ValueError, match=r"embeddings must have shape \[3, L, 768\].*got \[3, 77, 1024\]"):
        d.predict_noise(probe.z_t, probe.t, torch.zeros(3, 77, 1024))


def _fake_patcher(config: object, sampling: object = None) -> types.SimpleNamespace:
    inner = types.SimpleNamespace(model_config=config, adm_channels=0)
    return types.SimpleNamespace(model=inner, load_device=torch.device("cpu"), get_model_object=lambda name: sampling)


def test_unsupported_models_are_named(cd, sd15) -> None:
    import comfy.supported_models
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete

    sdxl = comfy.supported_models.SDXL(dict(comfy.supported_models.SDXL.unet_config))
    with pytest.raises(ValueError, match=r"model family SDXL is not supported .*pooled text vector.*supported: SD15 \(Stable Diffusion 1\.x\), SD20"):
        cd.ComfyDenoiser(_fake_patcher(sdxl))
    flux_like = type("Flux", (), {"unet_config": {}})()
    with pytest.raises(ValueError, match=r"model family Flux is not supported"):
        cd.ComfyDenoiser(_fake_patcher(flux_like))
    inpaint = type("SD15", (), {"unet_config": {"in_channels": 9, "context_dim": 768}})()
    with pytest.raises(ValueError, match=r"in_channels=9 .*inpainting"):
        cd.ComfyDenoiser(_fake_patcher(inpaint))
    (x0_model,) = ModelSamplingDiscrete().patch(sd15.model, "x0", False)
    with pytest.raises(ValueError, match=r"samples with .*X0.*needs a discrete DDPM schedule with eps or v_prediction"):
        cd.ComfyDenoiser(x0_model)
    with pytest.raises(ValueError, match=r"model must be a ComfyUI MODEL .*got Tensor"):
        cd.ComfyDenoiser(torch.zeros(1))


def test_encode_with_clip(cd, sd15) -> None:
    texts = ["", "a chair, front view", "a chair embedding:latent3d_test_ti", "a chair embedding:no_such_embedding"]
    with torch.inference_mode():  # as inside a node
        out = cd.encode_with_clip(sd15.clip, texts)
    assert out.shape == (4, 77, 768) and out.dtype == torch.float32
    assert not out.is_inference() and torch.isfinite(out).all()
    # The tokenizer resolved the textual inversion into vectors (a missing one only warns).
    tokens = sd15.clip.tokenize("embedding:latent3d_test_ti")["l"][0]
    assert any(isinstance(token, torch.Tensor) for token, _weight in tokens)
    assert (out[2] - out[1]).abs().max() > 1e-3


def test_encode_with_clip_long_prompts_repeat_to_a_common_length(cd, sd15) -> None:
    texts = ["", " ".join(["chair"] * 100), " ".join(["chair"] * 160)]  # 1, 2 and 3 chunks of 77 tokens
    assert [len(sd15.clip.tokenize(text)["l"]) for text in texts] == [1, 2, 3]
    out = cd.encode_with_clip(sd15.clip, texts)
    assert out.shape == (3, 462, 768)  # lcm(77, 154, 231)
    alone = [cd.encode_with_clip(sd15.clip, [text]) for text in texts]
    for row, single in zip(out, alone):
        torch.testing.assert_close(row[None], single.repeat(1, 462 // single.shape[1], 1))
    with pytest.raises(ValueError, match="texts must be a non-empty list of strings"):
        cd.encode_with_clip(sd15.clip, [])


def test_latent_spaces_and_vae_decode(cd, sd15) -> None:
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    latent = cd.model_space_to_latent(sd15.model, z)
    torch.testing.assert_close(latent, z / 0.18215)
    torch.testing.assert_close(cd.latent_to_model_space(sd15.model, latent), z)
    image = cd.vae_decode(sd15.vae, latent)
    assert image.shape == (1, 64, 64, 3) and image.dtype == torch.float32 and not image.is_inference()
    assert image.min() >= 0 and image.max() <= 1
