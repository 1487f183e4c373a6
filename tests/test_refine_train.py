"""Refinement's training loop: Lambertian shading against its formula, frozen geometry, exact resume,
non-finite steps, and clear errors for bad inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from latent3d.nerf.render import RenderConfig, render_views
from latent3d.refine.convert import to_rgb_nerf
from latent3d.refine.shading import LambertianField, Shading
from latent3d.refine.train import RefineConfig, RefineTrainer, load_refined, refine_rgb
from latent3d.scenes import ConstantBackground

from test_refine import VIEWS, embeddings, latent_field, state, target_oracle
from flaky import FlakyDenoiser


@pytest.fixture(scope="module")
def encode():
    from latent3d.tiny import build_tiny_components

    return build_tiny_components(0).encode_images


class Sphere(nn.Module):
    """A soft ball of radius 0.5 (density radial, so its outward normal is x/‖x‖) with a colour gradient."""

    def forward(self, x):
        return self.density(x), torch.stack([0.5 + 0.4 * x[:, 0], 0.5 + 0.4 * x[:, 1], 0.6 - 0.3 * x[:, 2]], -1)

    def density(self, x):
        return 60.0 * torch.sigmoid((0.25 - (x * x).sum(-1)) * 40.0)


class AnalyticLambertian(nn.Module):
    """The documented formula with the analytic normal: albedo·(r + (1 − r)·max(0, n·l))."""

    def __init__(self, light, ratio):
        super().__init__()
        self.light, self.ratio = light, ratio

    def forward(self, x):
        sigma, albedo = Sphere()(x)
        n = x / x.norm(dim=-1, keepdim=True).clamp(min=1e-9)
        return sigma, albedo * (self.ratio + (1 - self.ratio) * (n @ self.light).clamp(min=0))[:, None]


def render(field, background=None):
    background = background or ConstantBackground([0.2, 0.7, 0.4])
    with torch.no_grad():
        return render_views(field, background, VIEWS, 24, 24, RenderConfig(step_size=1.0 / 128), 1.0)[0]


@pytest.mark.unit
def test_lambertian_shading_follows_the_documented_formula():
    light = torch.nn.functional.normalize(torch.tensor([0.3, 0.8, 0.5]), dim=0)
    shaded = render(LambertianField(Sphere(), Shading(light, 0.1, 1e-2), bound=1.0))
    reference = render(AnalyticLambertian(light, 0.1))
    albedo = render(Sphere())
    torch.testing.assert_close(shaded.latent, reference.latent, atol=3e-3, rtol=0)
    lit_away = (shaded.latent - albedo.latent).abs().amax(1) > 0.1
    assert bool(lit_away.any())  # shading does darken the side turned from the light
    empty = albedo.opacity[:, 0] < 1e-6
    assert bool(empty.any()) and torch.equal(shaded.latent.permute(0, 2, 3, 1)[empty], albedo.latent.permute(0, 2, 3, 1)[empty])  # background unlit
    no_shading = render(LambertianField(Sphere(), Shading(light, 1.0, 1e-2), bound=1.0))
    assert torch.equal(no_shading.latent, albedo.latent)  # ambient ratio 1 is the albedo


@pytest.mark.unit
def test_shading_starts_at_the_given_step(encode):
    trainer = RefineTrainer(RefineConfig.tiny(shading_start=2), latent_field(), target_oracle(), encode, embeddings(), "cpu")
    for _ in range(3):
        trainer.train_step()
    assert trainer.history["shaded"] == [0.0, 0.0, 1.0]
    assert [trainer.shading_at(s) for s in (0, 1, 2, 50)] == [False, False, True, True]
    assert not RefineTrainer(RefineConfig.tiny(), latent_field(), target_oracle(), encode, embeddings(), "cpu").shading_at(10**6)


@pytest.mark.smoke
def test_frozen_geometry_keeps_the_density_bit_identical(encode):
    source = latent_field()
    x = torch.rand(4096, 3, generator=torch.Generator().manual_seed(5)) * 2 - 1
    frozen = refine_rgb(RefineConfig.tiny(iterations=5, freeze_geometry=True, preview_every=0), source, target_oracle(), encode, embeddings(), device="cpu")
    assert torch.equal(frozen.model.density(x), source.density(x))
    assert torch.equal(frozen.model.occupancy.density, source.occupancy.density)
    converted = to_rgb_nerf(source)
    assert not torch.equal(frozen.model.query(x)[1], converted.query(x)[1])  # the colours did train
    free = refine_rgb(RefineConfig.tiny(iterations=5, preview_every=0), source, target_oracle(), encode, embeddings(), device="cpu")
    assert not torch.equal(free.model.density(x), source.density(x))  # and without freezing, geometry moves


@pytest.mark.smoke
def test_resume_is_bit_identical_and_reloads(tmp_path, encode):
    config = RefineConfig.tiny(iterations=6, checkpoint_every=2, shading_start=3, preview_every=0)
    source, oracle = latent_field(), target_oracle()
    straight = refine_rgb(config, source, oracle, encode, embeddings(), device="cpu")
    calls = {"n": 0}

    def stop_after_4():
        calls["n"] += 1
        return calls["n"] > 4

    path = tmp_path / "refined.safetensors"
    first = refine_rgb(config, source, oracle, encode, embeddings(), device="cpu", checkpoint_path=path, should_stop=stop_after_4)
    assert first.status == "interrupted" and first.step == 4
    resumed = refine_rgb(config, source, oracle, encode, embeddings(), device="cpu", checkpoint_path=path, resume=True)
    assert resumed.step == 6 and resumed.history == straight.history
    ref = state(straight.model)
    assert all(torch.equal(ref[k], v) for k, v in resumed.model.state_dict().items())
    model, loaded_config, record = load_refined(path)
    assert record["kind"] == "rgb_nerf" and loaded_config == config
    torch.testing.assert_close(model.render_rgb(VIEWS, 16, 16), straight.model.render_rgb(VIEWS, 16, 16))
    with pytest.raises(ValueError, match="source Latent-NeRF"):
        refine_rgb(config, latent_field(seed=1), oracle, encode, embeddings(), device="cpu", checkpoint_path=path, resume=True)


@pytest.mark.unit
def test_non_finite_steps_are_skipped_and_counted(encode):
    trainer = RefineTrainer(RefineConfig.tiny(freeze_geometry=True), latent_field(), FlakyDenoiser(target_oracle(), {2}), encode, embeddings(), "cpu")
    trainer.train_step()
    before = state(trainer.model)
    trainer.train_step()
    assert trainer.skipped_steps == 1 and trainer.history["skipped"] == [0.0, 1.0]
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    trainer.train_step()
    assert trainer.skipped_steps == 1


@pytest.mark.unit
def test_bad_inputs_raise_clear_errors(encode):
    config, source = RefineConfig.tiny(), latent_field()

    def run(field=source, vae=encode, **kwargs):
        return RefineTrainer(config, field, target_oracle(), vae, embeddings(), "cpu", **kwargs)

    with pytest.raises(ValueError, match="already an RGB field"):
        run(field=to_rgb_nerf(source))
    with pytest.raises(ValueError, match="must be a trained LatentNeRF.*Linear"):
        run(field=nn.Linear(3, 4))
    with pytest.raises(ValueError, match="vae_encoder is missing"):
        run(vae=None)
    with pytest.raises(ValueError, match="16-channel latents.*4 latent channels"):
        run(vae=lambda images: torch.zeros(images.shape[0], 16, images.shape[2] // 8, images.shape[3] // 8))
    with pytest.raises(ValueError, match="encode_resolution must be a multiple of 128"):
        run(vae=lambda images: torch.zeros(images.shape[0], 4, images.shape[2] // 16, images.shape[3] // 16))
    with pytest.raises(ValueError, match=r"color_matrix must have shape \[4, 3\]"):
        run(color_matrix=[[1.0, 0.0, 0.0]] * 3)


@pytest.mark.unit
@pytest.mark.parametrize(
    "changes,name",
    [({"encode_resolution": 60}, "encode_resolution"), ({"ambient_ratio": 1.5}, "ambient_ratio"), ({"shading_start": -1}, "shading_start"),
     ({"lr_color": 0.0}, "lr_color"), ({"freeze_geometry": "yes"}, "freeze_geometry"), ({"iterations": 0}, "iterations")],
)
def test_bad_config_names_the_field(changes, name):
    with pytest.raises(ValueError, match=f"RefineConfig.{name}"):
        RefineConfig(**changes)


@pytest.mark.unit
def test_vae_checkpointing_gives_the_same_gradient_and_restores_the_module():
    from latent3d.refine.encoder import ModuleEncoder, checkpointed_blocks
    from latent3d.tiny import build_tiny_modules

    vae = build_tiny_modules()["vae"].eval().requires_grad_(False)
    encoder = ModuleEncoder(lambda images: vae.encode(images * 2 - 1).latent_dist.mean, vae.encoder)
    grads = []
    for enc in (encoder, encoder.with_checkpointing(True)):
        x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        enc(x).square().sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)
    with checkpointed_blocks(vae.encoder) as wrapped:
        assert wrapped >= 4  # the resnets of every level and the mid block's attention
    assert not any("forward" in vars(m) for m in vae.encoder.modules())  # the instance patches are gone
