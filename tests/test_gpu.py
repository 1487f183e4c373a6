"""CUDA tests (marker ``gpu``, opt-in: ``pytest -m gpu``; benchmarks/gpu_check.py runs them): fp16 training
steps and device consistency. Each skips without CUDA."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from latent3d.loading import encode_prompt
from latent3d.loop import INITIAL_LOSS_SCALE, run_loop
from latent3d.nerf.cameras import eval_cameras
from latent3d.nerf.model import LatentNeRF
from latent3d.nerf.train import NerfConfig, NerfTrainer
from latent3d.tiny import build_tiny_components

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def tiny_fp16():
    """The tiny diffusers model in fp16 on CUDA and its prompt embeddings."""
    components = build_tiny_components(seed=0, device="cuda", dtype=torch.float16)
    return components, encode_prompt(components, "a hamburger")


def test_fp16_training_steps_are_finite_and_the_loss_scale_only_backs_off(tiny_fp16):
    components, embeddings = tiny_fp16
    config = NerfConfig.tiny(iterations=30, resolution=16)
    trainer = NerfTrainer(config, components.denoiser, embeddings, "cuda")
    assert trainer.amp  # fp16 autocast and gradient scaling are on for CUDA by default
    initial = {k: v.clone() for k, v in trainer.model.field.state_dict().items()}
    assert run_loop(trainer, config.iterations, preview_every=0, checkpoint_every=0) == "completed"

    skipped = trainer.skipped_steps
    assert skipped <= 3, f"{skipped} of 30 fp16 steps had non-finite gradients"
    # GradScaler halves the scale at every overflow and grows it only after 2000 clean steps
    assert trainer.scaler.get_scale() == INITIAL_LOSS_SCALE * 0.5**skipped
    kept = [loss for loss, flag in zip(trainer.history["loss"], trainer.history["skipped"]) if flag == 0.0]
    assert len(kept) == 30 - skipped and all(math.isfinite(v) for v in kept)
    changed = [k for k, v in trainer.model.field.state_dict().items() if not torch.equal(v, initial[k])]
    assert changed, "no field parameter moved"


def first_step_gradient(config: NerfConfig, components, embeddings) -> torch.Tensor:
    """The field's gradient of the first step's loss after the scaler's unscale (what Adam sees)."""
    trainer = NerfTrainer(config, components.denoiser, embeddings, "cuda")
    loss, _ = trainer.compute_loss()
    trainer.scaler.scale(loss).backward()
    trainer.scaler.unscale_(trainer.optimizer)
    return torch.cat([p.grad.float().flatten() for p in trainer.model.field.parameters() if p.grad is not None])


def test_fp16_gradients_after_unscaling_match_fp32_gradients(tiny_fp16):
    """Same seed, same draws: the autocast step's unscaled gradient is the fp32 step's up to fp16 rounding
    (a missing unscale would make it INITIAL_LOSS_SCALE = 1024 times larger)."""
    components, embeddings = tiny_fp16
    config = NerfConfig.tiny(iterations=1, resolution=16)
    mixed = first_step_gradient(config, components, embeddings)
    full = first_step_gradient(dataclasses.replace(config, mixed_precision=False), components, embeddings)
    assert torch.isfinite(mixed).all() and float(full.norm()) > 0
    ratio = float(mixed.norm() / full.norm())
    cosine = float(torch.nn.functional.cosine_similarity(mixed, full, dim=0))
    assert 0.8 < ratio < 1.25 and cosine > 0.98, (ratio, cosine)


def test_cuda_render_equals_the_cpu_render():
    config = NerfConfig.tiny()
    field = dataclasses.replace(config.field, grid=dataclasses.replace(config.field.grid, backend="torch"))
    torch.manual_seed(0)
    cpu = LatentNeRF(field, config.render, "cpu")
    cpu.update_occupancy(torch.Generator().manual_seed(0))
    gpu = LatentNeRF(field, config.render, "cuda")
    gpu.load_state_dict(cpu.state_dict())
    cameras = eval_cameras(config.camera, 3)
    a = cpu.render_latents(cameras, 32, 32)
    b = gpu.render_latents(cameras, 32, 32)
    assert a.samples > 0 and abs(a.samples - b.samples) <= 0.005 * a.samples  # a sample on a cell boundary may flip
    for name in ("latent", "opacity", "depth"):
        x, y = getattr(a, name), getattr(b, name).cpu()
        off = (x - y).abs() > 1e-3 * (1 + x.abs())
        assert float(off.float().mean()) <= 0.005, f"{name}: {int(off.sum())} of {off.numel()} values differ"
        assert float((x - y).abs().mean()) < 1e-3, name
