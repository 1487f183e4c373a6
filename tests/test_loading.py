"""Headless model loading (latent3d.loading) and the tiny random models (latent3d.tiny), all offline."""

import os
import subprocess
import sys
import time

import pytest
import torch

from latent3d.guidance.denoiser import DiffusersDenoiser
from latent3d.guidance.prompts import PromptEmbeddings
from latent3d.loading import ModelLoadError, SdComponents, components_from_modules, encode_prompt, load_stable_diffusion
from latent3d.nerf.cameras import VIEW_LABELS
from latent3d.tiny import build_tiny_components, build_tiny_modules, save_tiny_pipeline, save_tiny_single_file, tiny_tokenizer


@pytest.fixture(scope="module")
def tiny() -> SdComponents:
    return build_tiny_components(seed=0)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny_sd") / "pipeline", seed=0)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def unet_probe(components: SdComponents, seed: int = 1):
    """The same (z_t, t, text) through a components' denoiser; raw UNet output and ε."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2, 4, 16, 16, generator=g)
    t = torch.tensor([37, 811])
    emb = components.encode_text(["a hamburger", ""])
    raw = components.unet(z, t, encoder_hidden_states=emb).sample
    return raw, components.denoiser.predict_noise(z, t, emb)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# -- tiny models ----------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_tiny_is_deterministic_per_seed_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = build_tiny_modules(0), build_tiny_modules(0), build_tiny_modules(1)
    assert torch.equal(state, torch.random.get_rng_state())
    for name in ("unet", "vae", "text_encoder"):
        assert_same_weights(a[name], b[name])
        random = [k for k, v in a[name].state_dict().items() if v.is_floating_point() and v.numel() > 1 and v.std() > 0]
        assert random and all(not torch.equal(a[name].state_dict()[k], c[name].state_dict()[k]) for k in random), name


@pytest.mark.unit
def test_tiny_components_are_frozen_fp32_and_sd_shaped(tiny):
    assert tiny.latent_channels == 4 and tiny.vae_scale_factor == 8
    assert tiny.dtype == torch.float32 and tiny.device.type == "cpu"
    assert isinstance(tiny.denoiser, DiffusersDenoiser) and tiny.denoiser.prediction_type == "epsilon"
    assert tiny.denoiser.alphas_cumprod.shape == (1000,)
    assert abs(float(tiny.denoiser.alphas_cumprod[-1]) - 0.0047) < 1e-3  # SD1.x scaled-linear schedule
    for module in (tiny.unet, tiny.vae, tiny.text_encoder):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())


@pytest.mark.unit
def test_tiny_tokenizer_handles_any_text_pads_and_truncates():
    tok = tiny_tokenizer()
    out = tok(["a photo of a hamburger, front view", "", "x" * 300, "héllo 🍔 wörld"], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    ids = out.input_ids
    assert ids.shape == (4, 77)
    assert int(ids[:, 0].unique()) == tok.bos_token_id and int(ids[2, -1]) == tok.eos_token_id
    assert int(ids[1, 1]) == tok.eos_token_id == tok.pad_token_id  # "" -> <sot> <eot> <pad>…
    text = "héllo 🍔 wörld"  # one token per UTF-8 byte (spaces split words): nothing maps to <unk>
    assert ids[3].tolist().index(tok.eos_token_id) == 1 + len(text.replace(" ", "").encode("utf-8"))


@pytest.mark.unit
def test_encode_text_shape_width_and_validation(tiny):
    emb = tiny.encode_text(["a hamburger", "", "a very long prompt " * 40])
    assert emb.shape == (3, 77, tiny.denoiser.embedding_dim) and emb.dtype == torch.float32
    assert torch.isfinite(emb).all()
    assert not torch.allclose(emb[0], emb[1])
    for bad in ("a string", [], [1, 2], None):
        with pytest.raises(ValueError, match="prompts"):
            tiny.encode_text(bad)


@pytest.mark.unit
def test_decode_and_encode_shapes_ranges_and_gradient(tiny):
    z = torch.randn(2, 4, 8, 12)
    images = tiny.decode_latents(z)
    assert images.shape == (2, 3, 64, 96) and images.dtype == torch.float32
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    pixels = torch.rand(2, 3, 64, 96, requires_grad=True)
    latents = tiny.encode_images(pixels)
    assert latents.shape == (2, 4, 8, 12) and torch.isfinite(latents).all()
    latents.square().sum().backward()  # RGB refinement backpropagates through the VAE encoder
    assert pixels.grad is not None and torch.isfinite(pixels.grad).all() and pixels.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny.vae.parameters())
    with pytest.raises(ValueError, match="latents"):
        tiny.decode_latents(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="images"):
        tiny.encode_images(torch.rand(1, 3, 60, 64))


@pytest.mark.unit
def test_encode_prompt_composes_with_view_prompts(tiny):
    embeddings = encode_prompt(tiny, "a hamburger", negative="blurry")
    assert isinstance(embeddings, PromptEmbeddings) and embeddings.width == tiny.denoiser.embedding_dim
    assert embeddings.uncond.shape == (1, 77, embeddings.width)
    assert torch.allclose(embeddings.uncond, tiny.encode_text(["blurry"]))
    assert torch.allclose(embeddings.views["side"], tiny.encode_text(["a hamburger, side view"]))
    assert not torch.allclose(embeddings.views["front"], embeddings.views["back"])
    single = encode_prompt(tiny, "a hamburger", view_dependent=False)
    assert all(torch.equal(single.views[label], single.views["front"]) for label in VIEW_LABELS)


@pytest.mark.unit
def test_v_prediction_config_converts_to_epsilon_by_hand_formula():
    components = build_tiny_components(seed=0, prediction_type="v_prediction")
    assert components.denoiser.prediction_type == "v_prediction"
    g = torch.Generator().manual_seed(2)
    z_t, t = torch.randn(2, 4, 16, 16, generator=g), torch.tensor([10, 700])
    emb = components.encode_text(["a", "b"])
    v = components.unet(z_t, t, encoder_hidden_states=emb).sample
    ab = components.denoiser.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = ab.sqrt() * v + (1 - ab).sqrt() * z_t  # v = √ᾱ ε − √(1−ᾱ) x0 and z_t = √ᾱ x0 + √(1−ᾱ) ε
    x0 = ab.sqrt() * z_t - (1 - ab).sqrt() * v
    assert torch.allclose(components.denoiser.predict_noise(z_t, t, emb), expected, atol=1e-5)
    assert torch.allclose(ab.sqrt() * x0 + (1 - ab).sqrt() * expected, z_t, atol=1e-4)  # consistent pair


@pytest.mark.unit
def test_load_tiny_literal():
    a = load_stable_diffusion("tiny", "cpu")
    b = load_stable_diffusion("tiny", "cpu", seed=3)
    assert a.name == "tiny" and a.dtype == torch.float32
    assert_same_weights(a.unet, build_tiny_components(0).unet)
    assert not torch.equal(a.unet.conv_in.weight, b.unet.conv_in.weight)


# -- folders and single files -----------------------------------------------------------------------------------


@pytest.mark.unit
def test_saved_folder_loads_to_the_same_model(tiny, tiny_dir):
    assert (tiny_dir / "model_index.json").is_file() and not (tiny_dir / "safety_checker").exists()
    loaded = load_stable_diffusion(tiny_dir, "cpu")
    assert loaded.name == tiny_dir.name and loaded.dtype == torch.float32
    (raw_a, eps_a), (raw_b, eps_b) = unet_probe(tiny), unet_probe(loaded)
    assert torch.equal(raw_a, raw_b) and torch.equal(eps_a, eps_b)
    z = torch.randn(1, 4, 8, 8)
    assert torch.equal(tiny.decode_latents(z), loaded.decode_latents(z))
    assert loaded.scheduler_config["prediction_type"] == "epsilon"


@pytest.mark.unit
def test_saved_v_prediction_folder_keeps_prediction_type(tmp_path):
    folder = save_tiny_pipeline(tmp_path / "v", prediction_type="v_prediction")
    assert load_stable_diffusion(folder, "cpu").denoiser.prediction_type == "v_prediction"


@pytest.mark.unit
@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_single_file_with_local_config_loads_to_the_same_model(tiny, tiny_dir, tmp_path, suffix):
    path = save_tiny_single_file(tmp_path / f"tiny{suffix}")
    loaded = load_stable_diffusion(path, "cpu", config=tiny_dir)
    assert loaded.name == "tiny"
    assert_same_weights(tiny.unet, loaded.unet)
    assert_same_weights(tiny.vae, loaded.vae)
    assert_same_weights(tiny.text_encoder, loaded.text_encoder)
    assert torch.equal(unet_probe(tiny)[1], unet_probe(loaded)[1])


@pytest.mark.unit
def test_ckpt_with_pickled_code_is_refused_without_running_it(tiny_dir, tmp_path):
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Payload()}, path)
    with pytest.raises(ModelLoadError, match="weights_only=True"):
        load_stable_diffusion(path, "cpu", config=tiny_dir)
    assert not marker.exists()


@pytest.mark.unit
def test_single_file_offline_without_config_says_what_to_do(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"not read")  # the check comes before any reading
    with pytest.raises(ModelLoadError, match="local diffusers folder.*--model-config.*config=") as info:
        load_stable_diffusion(path, "cpu")
    assert "HF_HUB_OFFLINE" in str(info.value)


# -- bad inputs -----------------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_missing_paths_and_bad_values_name_the_argument(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="model .*nope.* does not exist"):
        load_stable_diffusion(missing)
    with pytest.raises(FileNotFoundError, match=r"model .*x\.safetensors"):
        load_stable_diffusion(tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="has no model_index.json"):
        load_stable_diffusion(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"0")
    with pytest.raises(ValueError, match=r"\.safetensors or \.ckpt.*weights\.bin"):
        load_stable_diffusion(tmp_path / "weights.bin")
    (tmp_path / "m.ckpt").write_bytes(b"0")
    with pytest.raises(FileNotFoundError, match="config .*nope"):
        load_stable_diffusion(tmp_path / "m.ckpt", config=missing)
    with pytest.raises(ValueError, match="config .*no model_index.json"):
        load_stable_diffusion(tmp_path / "m.ckpt", config=tmp_path)
    with pytest.raises(ValueError, match="config is only used with single-file"):
        load_stable_diffusion("tiny", config=tmp_path)
    for bad in (None, "", 3):
        with pytest.raises(ValueError, match="model must be"):
            load_stable_diffusion(bad)
    with pytest.raises(ValueError, match="dtype"):
        load_stable_diffusion("tiny", "cpu", dtype="int8")
    with pytest.raises(ValueError, match="device"):
        load_stable_diffusion("tiny", "not-a-device")


@pytest.mark.unit
def test_folder_missing_components_is_a_value_error(tmp_path, tiny_dir):
    (tmp_path / "model_index.json").write_text((tiny_dir / "model_index.json").read_text())
    with pytest.raises(ValueError, match="lacks the Stable Diffusion components"):
        load_stable_diffusion(tmp_path)


@pytest.mark.unit
def test_hub_id_offline_fails_fast_with_a_clear_message():
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE") as info:
        load_stable_diffusion("latent3d-tests/no-such-model", "cpu")
    assert time.perf_counter() - start < 10
    assert "local diffusers folder" in str(info.value)


@pytest.mark.unit
def test_mismatched_text_encoder_width_is_refused():
    from transformers import CLIPTextConfig, CLIPTextModel

    modules = build_tiny_modules(0)
    modules["text_encoder"] = CLIPTextModel(CLIPTextConfig(vocab_size=514, hidden_size=16, intermediate_size=20, num_hidden_layers=1, num_attention_heads=2))
    with pytest.raises(ValueError, match="cross_attention_dim 32 differs from the text encoder's hidden_size 16"):
        components_from_modules(**modules, name="mismatch", device="cpu")


@pytest.mark.unit
def test_importing_loading_does_not_import_diffusers():
    code = "import sys, latent3d.loading, latent3d.tiny; print(sorted(m for m in ('diffusers', 'transformers', 'huggingface_hub') if m in sys.modules))"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env={**os.environ, "PYTHONPATH": root}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_sd15_unet_has_the_sd15_layout():
    from latent3d.loading import build_sd15_unet

    unet = build_sd15_unet(seed=0)
    assert 859_000_000 < sum(p.numel() for p in unet.parameters()) < 860_000_000
    assert unet.config.cross_attention_dim == 768 and not unet.training
