import math

import pytest
import torch

from latent3d.guidance.denoiser import (
    DiffusersDenoiser,
    OracleDenoiser,
    alphas_cumprod_from_scheduler_config,
    epsilon_from_prediction,
    scaled_linear_alphas_cumprod,
)
from latent3d.guidance.prompts import PromptEmbeddings, encode_view_prompts, view_prompt
from latent3d.guidance.sds import SdsConfig, guided_noise, opacity_entropy, sample_timesteps, sds_loss, sds_weight
from latent3d.nerf.cameras import orbit_cameras

pytestmark = pytest.mark.unit


class LinearDenoiser:
    """ε = a·z_t + mean of the embedding (so cond and uncond differ), records its calls."""

    prediction_type = "epsilon"
    embedding_dim = 3

    def __init__(self):
        self.alphas_cumprod = scaled_linear_alphas_cumprod()
        self.calls = []

    def predict_noise(self, z_t, t, embeddings, cameras=None):
        self.calls.append((z_t.clone(), t.clone(), embeddings.clone()))
        return 0.7 * z_t + embeddings.mean(dim=(1, 2)).view(-1, 1, 1, 1)


def test_schedule_matches_stable_diffusion():
    a = scaled_linear_alphas_cumprod()
    assert a.shape == (1000,)
    assert abs(float(a[0]) - (1 - 0.00085)) < 1e-7
    assert abs(float(a[-1]) - 0.0046600) < 2e-6  # SD1.x's final ᾱ
    assert (a[1:] < a[:-1]).all()
    torch.testing.assert_close(alphas_cumprod_from_scheduler_config({"beta_schedule": "scaled_linear"}), a)
    with pytest.raises(ValueError, match="beta_schedule"):
        alphas_cumprod_from_scheduler_config({"beta_schedule": "exotic"})


def test_timesteps_cover_20_to_980():
    t = sample_timesteps(SdsConfig(), 1000, 200000, torch.Generator().manual_seed(0))
    assert int(t.min()) == 20 and int(t.max()) == 980


def test_sds_gradient_is_exactly_w_times_guided_minus_noise():
    torch.manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, requires_grad=True)
    cond, uncond = torch.full((2, 5, 3), 0.3), torch.full((2, 5, 3), -0.1)
    cfg = SdsConfig(guidance_scale=7.5)
    den = LinearDenoiser()
    out = sds_loss(latents, den, cond, uncond, cfg, torch.Generator().manual_seed(42))
    out.loss.backward()
    # hand computation with the same draws: t first, then ε
    g = torch.Generator().manual_seed(42)
    t = torch.randint(20, 981, (2,), generator=g)
    noise = torch.randn(2, 4, 8, 8, generator=g)
    ab = scaled_linear_alphas_cumprod()[t].view(-1, 1, 1, 1)
    z_t = ab.sqrt() * latents.detach() + (1 - ab).sqrt() * noise
    eps_u, eps_c = 0.7 * z_t - 0.1, 0.7 * z_t + 0.3
    eps_hat = eps_u + 7.5 * (eps_c - eps_u)
    expected = ab.sqrt() * (1 - ab) * (eps_hat - noise)
    assert torch.equal(out.timesteps, t)
    torch.testing.assert_close(latents.grad, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.grad, expected, atol=1e-6, rtol=1e-5)
    # one batched call on [uncond; cond]
    assert len(den.calls) == 1
    z_batch, t_batch, emb_batch = den.calls[0]
    assert z_batch.shape[0] == 4 and torch.equal(t_batch, torch.cat([t, t]))
    assert torch.equal(emb_batch[:2], uncond) and torch.equal(emb_batch[2:], cond)


def test_guidance_and_weightings():
    eps_u, eps_c = torch.tensor([1.0, 2.0]), torch.tensor([2.0, 0.0])
    torch.testing.assert_close(guided_noise(eps_u, eps_c, 100.0), torch.tensor([101.0, -198.0]))
    ab = torch.tensor([0.25])
    torch.testing.assert_close(sds_weight(ab, "sqrt_alpha_one_minus_alpha"), torch.tensor([0.375]))
    torch.testing.assert_close(sds_weight(ab, "one_minus_alpha"), torch.tensor([0.75]))
    torch.testing.assert_close(sds_weight(ab, "uniform"), torch.tensor([1.0]))


def test_v_prediction_to_epsilon():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    ab = torch.tensor([0.9, 0.5, 0.01]).view(-1, 1, 1, 1)
    z_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    v = ab.sqrt() * eps - (1 - ab).sqrt() * x0
    torch.testing.assert_close(epsilon_from_prediction(v, z_t, ab, "v_prediction"), eps, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="prediction_type"):
        epsilon_from_prediction(v, z_t, ab, "sample")


def test_diffusers_adapter_converts_v_prediction():
    class FakeUnet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(0.5))
            self.config = type("C", (), {"cross_attention_dim": 3})()

        def forward(self, z, t, encoder_hidden_states):
            return type("O", (), {"sample": self.w * z})()

    z_t, t = torch.randn(2, 4, 4, 4), torch.tensor([100, 700])
    den = DiffusersDenoiser(FakeUnet(), scaled_linear_alphas_cumprod(), "v_prediction")
    ab = scaled_linear_alphas_cumprod()[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(den.predict_noise(z_t, t, torch.zeros(2, 5, 3)), ab.sqrt() * 0.5 * z_t + (1 - ab).sqrt() * z_t)
    assert den.embedding_dim == 3


def test_oracle_points_at_the_target():
    target = torch.randn(1, 4, 6, 6)
    oracle = OracleDenoiser(lambda cams, h, w: target.expand(len(cams), -1, h, w))
    ab = oracle.alphas_cumprod[torch.tensor([500])].view(-1, 1, 1, 1)
    noise = torch.randn(1, 4, 6, 6)
    z_t = ab.sqrt() * target + (1 - ab).sqrt() * noise
    eps = oracle.predict_noise(z_t, torch.tensor([500]), torch.zeros(1, 2, 3), cameras=orbit_cameras([0.0], 80, 1.8, 55))
    torch.testing.assert_close(eps, noise, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="camera"):
        oracle.predict_noise(z_t, torch.tensor([500]), torch.zeros(1, 2, 3))


def test_opacity_entropy():
    assert abs(float(opacity_entropy(torch.tensor([0.5]))) - math.log(2)) < 1e-6
    assert float(opacity_entropy(torch.tensor([0.0, 1.0]))) < 1e-3


def test_prompts_and_embeddings():
    assert view_prompt("a hamburger", "front") == "a hamburger, front view"
    seen = []

    def encode(texts):
        seen.extend(texts)
        return torch.arange(len(texts), dtype=torch.float32).view(-1, 1, 1).expand(-1, 77, 8).clone()

    emb = encode_view_prompts(encode, "a hamburger")
    assert seen == ["", "a hamburger, front view", "a hamburger, side view", "a hamburger, back view", "a hamburger, overhead view"]
    cond, uncond = emb.select(["back", "front"])
    assert cond[:, 0, 0].tolist() == [3.0, 1.0] and uncond[:, 0, 0].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="prompt"):
        encode_view_prompts(encode, "  ")
    with pytest.raises(ValueError, match="width"):
        PromptEmbeddings.single(torch.zeros(1, 77, 8), torch.zeros(1, 77, 4))
    with pytest.raises(ValueError, match="non-finite"):
        PromptEmbeddings.single(torch.full((1, 77, 8), float("nan")), torch.zeros(1, 77, 8))


@pytest.mark.parametrize("kwargs,name", [({"t_range": (0.5, 0.1)}, "t_range"), ({"guidance_scale": float("inf")}, "guidance_scale"), ({"weighting": "snr"}, "weighting")])
def test_bad_sds_config(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SdsConfig(**kwargs)
