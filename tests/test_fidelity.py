"""Fidelity to the official Latent-NeRF, each number computed here from the published formula or the
official code's own lines (not from the project's constants), and runs that cannot go wrong silently."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from latent3d.guidance.denoiser import OracleDenoiser
from latent3d.guidance.prompts import PromptEmbeddings
from latent3d.guidance.sds import opacity_entropy
from latent3d.loop import NONFINITE_WINDOW, NonFiniteRunError
from latent3d.nerf.cameras import orbit_cameras
from latent3d.nerf.field import FieldConfig, LatentField
from latent3d.nerf.grid import GridConfig
from latent3d.nerf.model import LatentNeRF
from latent3d.nerf.render import OccupancyGrid, RenderConfig
from latent3d.nerf.train import NerfConfig, NerfTrainer, fit_latent_nerf, load_latent_nerf
from latent3d.shape.loss import SketchShapeConfig, make_shape_guide
from latent3d.shape.primitives import make_sphere

pytestmark = pytest.mark.unit


def embeddings(width=8):
    return PromptEmbeddings.single(torch.zeros(1, 4, width), torch.zeros(1, 4, width))


def zero_oracle():
    return OracleDenoiser(lambda cams, h, w: torch.zeros(len(cams), 4, h, w))


def test_field_mlp_is_the_official_network():
    """Official: MLP(32, 5, 64, num_layers=3, bias=True): Linear 32→64, ReLU, 64→64, ReLU, 64→5, all with biases."""
    field = LatentField(FieldConfig())
    linears = [m for m in field.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 64), (64, 64), (64, 5)]
    assert all(m.bias is not None for m in linears)
    assert sum(p.numel() for p in field.mlp.parameters()) == 32 * 64 + 64 + 64 * 64 + 64 + 64 * 5 + 5
    relus = [m for m in field.mlp if isinstance(m, torch.nn.ReLU)]
    assert len(relus) == 2 and not isinstance(field.mlp[-1], torch.nn.ReLU)


def test_sparsity_weight_equals_the_official_entropy_in_bits():
    """Official: lambda_sparsity 5e-4 × mean binary entropy in log2 of clamp(Σw, 1e-5, 1−1e-5), acting ×2^16
    (its SDS gradient bypassed the fp16 scaler, so regularizers were 2^16 stronger than written)."""
    opacity = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    a = opacity.double().clamp(1e-5, 1 - 1e-5)
    official = 5e-4 * 2**16 * (-(a * torch.log2(a)) - (1 - a) * torch.log2(1 - a)).mean()
    ours = NerfConfig().sparsity_weight * opacity_entropy(opacity)
    assert float(ours) == pytest.approx(float(official), rel=1e-5)
    assert NerfConfig().sparsity_weight == pytest.approx(47.27, abs=0.01)


def test_default_marching_step_is_official_on_cuda_and_one_cell_on_cpu():
    assert RenderConfig().resolved(torch.device("cuda")).step_size == pytest.approx(2 * math.sqrt(3) / 1024)
    assert RenderConfig().resolved("cpu").step_size == pytest.approx(2 / 128)
    assert RenderConfig(step_size=0.01).resolved(torch.device("cuda")).step_size == 0.01
    trainer = NerfTrainer(NerfConfig.tiny(render=RenderConfig(occupancy_resolution=32)), zero_oracle(), embeddings(), "cpu")
    assert trainer.config.render.step_size == trainer.model.render_config.step_size == pytest.approx(2 / 128)


def test_density_stays_finite_when_the_pre_activation_explodes():
    """A pre-activation past ln(FLT_MAX) ≈ 88.7 used to make σ inf and σδ's cumulative sum NaN."""
    model = LatentNeRF(FieldConfig(grid=GridConfig(levels=2, log2_table_size=10, finest_resolution=32)), RenderConfig(occupancy_resolution=16))
    with torch.no_grad():
        model.field.mlp[-1].bias[0] = 200.0  # h0 ≈ 200 everywhere
    x = torch.rand(64, 3) * 2 - 1
    sigma = model.density(x)
    assert torch.isfinite(sigma).all() and torch.isfinite(sigma * 1e3).all()
    cams = orbit_cameras([30.0], 70.0, 1.5, 50.0)
    view, packed = model.render(cams, 8, 8, use_occupancy=False)
    assert torch.isfinite(view.latent).all() and torch.isfinite(packed.sigma * packed.deltas).all()
    assert float(view.opacity.detach().min()) > 0.999  # still opaque: the bound changes no render
    view.latent.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.field.mlp.parameters() if p.grad is not None)


def test_sketch_loss_does_not_depend_on_the_marching_step():
    """The same field and sketch rendered at step s and s/4 give the same loss (per unit length)."""
    guide = make_shape_guide(make_sphere(0.5, 3), SketchShapeConfig(mode="exact", mesh_scale=0.5))
    field = FieldConfig(grid=GridConfig(levels=4, log2_table_size=12, finest_resolution=64))
    cams = orbit_cameras([20.0], 70.0, 1.4, 50.0)
    losses, samples = [], []
    for step in (2 / 128, 0.5 / 128):
        torch.manual_seed(0)
        model = LatentNeRF(field, RenderConfig(step_size=step))
        _, packed = model.render(cams, 24, 24, use_occupancy=False)
        losses.append(float(guide(packed.points, packed.sigma, packed.deltas, step=0).detach()))
        samples.append(packed.points.shape[0])
    assert samples[1] > 3.9 * samples[0]  # four times the samples...
    assert losses[1] == pytest.approx(losses[0], rel=0.02)  # ...and the same loss


def test_occupancy_refresh_finds_a_new_dense_region_at_the_next_refresh():
    """Official: every refresh re-evaluates every cell. A region that became dense away from the occupied
    cells (a sketch part outside the initial blob) must be occupied after one refresh, not after ~8."""
    config = RenderConfig(occupancy_resolution=32)
    grid = OccupancyGrid(32, 1.0)
    blob = lambda x: 50.0 * (x.norm(dim=-1) < 0.3).float()  # noqa: E731
    grid.update(blob, config, torch.Generator().manual_seed(0))
    part = torch.tensor([0.6, 0.0, 0.0])
    near_part = (grid.cell_centers(torch.arange(32**3)) - part).norm(dim=-1) < 0.15
    assert not grid.mask[near_part].any()
    grown = lambda x: blob(x) + 50.0 * ((x - part).norm(dim=-1) < 0.2).float()  # noqa: E731
    grid.update(grown, config, torch.Generator().manual_seed(1))
    assert grid.mask[near_part].all()


class NanAfter:
    """The zero oracle, returning NaN from call ``start`` on (and before ``stop``)."""

    prediction_type, embedding_dim = "epsilon", None

    def __init__(self, start: int, stop: int = 10**9) -> None:
        self.inner, self.start, self.stop, self.calls = zero_oracle(), start, stop, 0
        self.alphas_cumprod = self.inner.alphas_cumprod

    def predict_noise(self, z_t, t, embeddings, cameras=None):
        self.calls += 1
        eps = self.inner.predict_noise(z_t, t, embeddings, cameras)
        return eps * float("nan") if self.start <= self.calls < self.stop else eps


@pytest.mark.smoke
def test_a_run_whose_every_step_is_non_finite_does_not_complete(tmp_path):
    path = tmp_path / "nerf.safetensors"
    with pytest.raises(NonFiniteRunError, match=r"3 of the last 3 steps had a non-finite loss.*"):
        fit_latent_nerf(NerfConfig.tiny(iterations=3), NanAfter(1), embeddings(), device="cpu", checkpoint_path=path)
    assert path.exists()


@pytest.mark.smoke
def test_a_run_that_stops_learning_stops_and_keeps_its_last_good_state(tmp_path):
    path = tmp_path / "nerf.safetensors"
    config = NerfConfig.tiny(iterations=100, checkpoint_every=0)
    good = fit_latent_nerf(dataclasses.replace(config, iterations=10), NanAfter(11), embeddings(), device="cpu")
    with pytest.raises(NonFiniteRunError, match="stopped"):
        fit_latent_nerf(config, NanAfter(11), embeddings(), device="cpu", checkpoint_path=path)
    model, _, record = load_latent_nerf(path)
    steps = record["step"]
    assert 10 + NONFINITE_WINDOW // 2 < steps < 10 + NONFINITE_WINDOW and record["skipped_steps"] == steps - 10
    for key, value in good.model.state_dict().items():
        if not key.startswith("occupancy"):
            assert torch.equal(value, model.state_dict()[key]), key
    # a few bad steps among many are skipped and the run completes
    few = fit_latent_nerf(dataclasses.replace(config, iterations=40), NanAfter(5, 8), embeddings(), device="cpu")
    assert few.status == "completed" and few.skipped_steps == 3


@pytest.mark.smoke
def test_resume_keeps_the_step_the_run_started_with(tmp_path):
    """An automatic step resumes with the saved one (a CUDA run continued on a CPU keeps the official step)."""
    path = tmp_path / "nerf.safetensors"
    official = 2 * math.sqrt(3) / 1024
    fixed = NerfConfig.tiny(iterations=1, render=RenderConfig(occupancy_resolution=32, step_size=official))
    fit_latent_nerf(fixed, zero_oracle(), embeddings(), device="cpu", checkpoint_path=path)
    auto = NerfConfig.tiny(iterations=2, render=RenderConfig(occupancy_resolution=32))
    resumed = fit_latent_nerf(auto, zero_oracle(), embeddings(), device="cpu", checkpoint_path=path, resume=True)
    assert resumed.step == 2 and resumed.config.render.step_size == pytest.approx(official)
    assert resumed.model.render_config.step_size == pytest.approx(official)
