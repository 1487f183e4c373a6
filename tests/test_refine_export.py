"""Export of a refined (RGB) field: colours written as they are, never decoded; the latent path unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from latent3d.export import ExportConfig, export_checkpoint, extract_mesh
from latent3d.refine.convert import to_rgb_nerf
from latent3d.refine.train import RefineConfig, RefineTrainer

from test_refine import PAPER_MATRIX, embeddings, latent_field, target_oracle

PERMUTED = PAPER_MATRIX[:, [2, 0, 1]]  # a head whose colours the linear latent map cannot give


def never_decode(latent):
    raise AssertionError("an RGB field's texture must not be decoded")


@pytest.fixture(scope="module")
def source():
    """A compact object (density lowered away from the centre blob) with strongly varying latents."""
    model = latent_field(seed=2)
    with torch.no_grad():
        last = model.field.mlp[-1]
        last.bias[0] -= 4.0
        last.weight[1:] *= 8.0
    model.update_occupancy(torch.Generator().manual_seed(0))
    return model.eval()


@pytest.mark.unit
def test_vertex_colours_are_the_fields_rgb(source):
    config = ExportConfig(resolution=48, color_mode="vertex")
    mesh = extract_mesh(to_rgb_nerf(source, PERMUTED), config, decode=never_decode)
    inside = mesh.vertices - config.effective_color_offset(1.0) * mesh.normals
    _, latent = source.query(torch.as_tensor(inside))
    expected = ((latent @ PERMUTED + 1) / 2).clamp(0, 1).detach().numpy()
    np.testing.assert_allclose(mesh.colors, expected, atol=1e-5)
    converted = extract_mesh(to_rgb_nerf(source), config)  # the paper matrix: the latent path's colours
    latent_path = extract_mesh(source, config)
    np.testing.assert_allclose(converted.colors, latent_path.colors, atol=1e-5)
    assert len(mesh.faces) > 100 and np.abs(mesh.vertices).max() < 0.9  # a closed object, not the box's walls
    assert np.abs(mesh.colors - latent_path.colors).max() > 0.1


@pytest.mark.smoke
def test_texture_is_baked_rgb_without_decode(source):
    config = ExportConfig(resolution=48, texture_size=64, face_budget=800)
    rgb = extract_mesh(to_rgb_nerf(source), config, decode=never_decode)
    latent = extract_mesh(source, config)  # the latent path, linear map at the same size
    assert rgb.texture.shape == latent.texture.shape == (64, 64, 3)
    assert np.abs(rgb.texture.astype(int) - latent.texture.astype(int)).max() <= 1  # same texels, rounding apart
    permuted = extract_mesh(to_rgb_nerf(source, PERMUTED), config, decode=never_decode)
    assert np.abs(permuted.texture.astype(int) - latent.texture.astype(int)).max() > 20


def pooled(images):
    """A stand-in encoder (8× average pooling, 4 channels): export needs no real VAE."""
    pooled = torch.nn.functional.avg_pool2d(images, 8)
    return torch.cat([pooled, pooled[:, :1]], 1)


@pytest.mark.smoke
def test_export_checkpoint_reads_a_refined_checkpoint(tmp_path, source):
    trainer = RefineTrainer(RefineConfig.tiny(freeze_geometry=True), source, target_oracle(), pooled, embeddings(), "cpu")
    trainer.train_step()
    path = trainer.save(tmp_path / "refined.safetensors")
    glb = export_checkpoint(path, tmp_path / "out", config=ExportConfig(resolution=48, texture_size=64, face_budget=800))[0]
    mesh = trimesh.load(glb, force="mesh", process=False)
    assert glb.name == "refined.glb" and mesh.visual.kind == "texture" and len(mesh.faces) > 0
