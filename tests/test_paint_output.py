"""Latent-Paint's renderer pieces and output (latent3d.paint.render / output): background on directions,
view geometry, gutters, decoding sizes, written files and the turntable."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from latent3d.colors import latents_to_rgb
from latent3d.guidance.prompts import PromptEmbeddings
from latent3d.nerf.cameras import orbit_cameras
from latent3d.paint.mesh import make_paint_mesh, place_paint_mesh
from latent3d.paint.output import decode_paint_texture, fill_latent_gutters, paint_output, turntable_images, used_texels, write_painted
from latent3d.paint.render import MeshTensors, environment_lookup, render_views
from latent3d.paint.scenes import uv_sphere
from latent3d.paint.train import PaintConfig, paint_mesh

pytestmark = pytest.mark.unit


def direction(theta_deg, phi_deg):
    t, p = math.radians(theta_deg), math.radians(phi_deg)
    return [math.sin(t) * math.sin(p), math.cos(t), math.sin(t) * math.cos(p)]


def test_environment_is_looked_up_by_azimuth_and_polar_angle():
    rows, cols = 4, 8
    env = torch.arange(4 * rows * cols, dtype=torch.float32).reshape(4, rows, cols)
    # texel (i, j) centre: polar (i + ½)·180/rows, azimuth (j + ½)·360/cols
    dirs = torch.tensor([[direction((i + 0.5) * 45, (j + 0.5) * 45) for j in range(cols)] for i in range(rows)])[None]
    torch.testing.assert_close(environment_lookup(env, dirs)[0], env, atol=1e-3, rtol=0)
    # φ = 0 (+z, the front) lies halfway between the last and the first column: the lookup wraps around
    seam = environment_lookup(env, torch.tensor([[[direction(22.5, 0.0)]]]))[0, :, 0, 0]
    torch.testing.assert_close(seam, (env[:, 0, 0] + env[:, 0, -1]) / 2, atol=1e-3, rtol=0)


def test_a_sphere_covers_its_analytic_disc_and_shows_its_texture():
    """Pixels covered by a sphere of radius 0.6 seen from distance d: a disc of angular radius
    asin(0.6/d), i.e. π·(f·tan(asin(0.6/d)))² pixels with f = (H/2)/tan(fov/2); they show the texture,
    the others the background."""
    mesh = MeshTensors.from_mesh(place_paint_mesh(uv_sphere(48, 96), 0.6))
    size, distance, fov = 128, 1.4, 60.0
    cameras = orbit_cameras([30.0], 70.0, distance, fov)
    texture = torch.tensor([0.5, -1.0, 2.0, 0.25])[:, None, None].expand(4, 64, 64)
    back = torch.tensor([9.0, 8.0, 7.0, 6.0])[:, None, None]
    view = render_views(mesh, texture, back, cameras, size, size)
    focal = (size / 2) / math.tan(math.radians(fov / 2))
    expected = math.pi * (focal * math.tan(math.asin(0.6 / distance))) ** 2
    assert abs(float(view.mask.sum()) - expected) < 0.02 * expected  # the polygonal sphere is slightly smaller
    inside, outside = view.mask[0, 0] > 0, view.mask[0, 0] == 0
    torch.testing.assert_close(view.image[0][:, inside], texture[:, :1, 0].expand(-1, int(inside.sum())))
    torch.testing.assert_close(view.image[0][:, outside], back[:, :, 0].expand(-1, int(outside.sum())))


def quad_mesh():
    """One quad whose UVs cover only [0.27, 0.73]² of the texture (texel centres 4..11 of 16)."""
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=np.float32)
    uvs = np.array([[0.27, 0.27], [0.73, 0.27], [0.73, 0.73], [0.27, 0.73]], dtype=np.float32)
    return make_paint_mesh(vertices, [[0, 1, 2], [0, 2, 3]], uvs, source="quad")


def test_latent_gutters_take_the_nearest_used_texel():
    mesh = quad_mesh()
    texture = torch.randn(4, 16, 16, generator=torch.Generator().manual_seed(0))
    filled = fill_latent_gutters(texture, mesh)
    used = used_texels(mesh.uvs, mesh.faces, 16)
    assert used[8, 8] and not used[0, 0] and used.sum() == 10 * 10  # the 8×8 covered texels grown by one
    torch.testing.assert_close(filled[:, torch.from_numpy(used)], texture[:, torch.from_numpy(used)], atol=0, rtol=0)
    rows, cols = np.nonzero(used)
    for r, c in zip(*np.nonzero(~used)):
        d = (rows - r) ** 2 + (cols - c) ** 2
        candidates = [texture[:, rows[i], cols[i]] for i in np.flatnonzero(d == d.min())]
        assert any(torch.equal(filled[:, r, c], k) for k in candidates), (r, c)


def test_decode_sizes_and_the_multiple_of_8_rule():
    mesh = quad_mesh()
    z = torch.tensor([0.6, -0.2, 0.4, -0.3])
    texture = z[:, None, None].expand(4, 64, 64).contiguous()
    linear = decode_paint_texture(texture, mesh, resolution=100)  # no VAE: any size in range
    expected = np.round(latents_to_rgb(z).numpy() * 255)
    assert linear.shape == (100, 100, 3) and np.abs(linear.astype(float) - expected).max() <= 1
    calls = []

    def fake_vae(latent):
        calls.append(tuple(latent.shape))
        rgb = latents_to_rgb(latent[0].permute(1, 2, 0)).permute(2, 0, 1)[None]
        return torch.nn.functional.interpolate(rgb, scale_factor=8, mode="nearest")

    assert decode_paint_texture(texture, mesh, 256, fake_vae).shape == (256, 256, 3) and calls[-1] == (1, 4, 32, 32)  # shrunk first
    assert decode_paint_texture(texture, mesh, 1024, fake_vae).shape == (1024, 1024, 3) and calls[-1] == (1, 4, 64, 64)  # then resized
    with pytest.raises(ValueError, match="texture_resolution must be a multiple of 8 when a VAE decodes the texture"):
        decode_paint_texture(texture, mesh, 1001, fake_vae)
    with pytest.raises(ValueError, match=r"texture_resolution must be an integer in \[64, 4096\]"):
        decode_paint_texture(texture, mesh, 32)


def test_written_mesh_reloads_with_its_texture_and_own_coordinates(tmp_path):
    mesh = uv_sphere(8, 16, radius=3.0)  # not the placed radius 0.6: files keep the mesh's own coordinates
    zero = PromptEmbeddings.single(torch.zeros(1, 4, 8), torch.zeros(1, 4, 8))
    from latent3d.guidance.denoiser import OracleDenoiser

    result = paint_mesh(PaintConfig.tiny(iterations=1), mesh, OracleDenoiser(lambda c, h, w: torch.zeros(len(c), 4, h, w)), zero, device="cpu")
    textured = paint_output(result, resolution=128)
    written = write_painted(textured, tmp_path)
    assert [p.name for p in written] == ["mesh.glb", "mesh.obj", "mesh.mtl", "mesh.png"]
    glb = trimesh.load(written[0], force="mesh")
    assert glb.visual.material.baseColorTexture.size == (128, 128)
    assert glb.visual.uv.min() >= 0 and glb.visual.uv.max() <= 1
    assert np.isclose(np.linalg.norm(glb.vertices, axis=1).max(), 3.0, atol=1e-4)


def test_turntable_shows_the_texture_where_the_view_looks():
    """The centre ray of the φ = 90° frame (θ = 60°) hits the sphere at θ = 60°, φ = 90°, i.e. UV
    (0.25, 1 − 60/180): the pixel shows the RGB texture there; the corners show the white background."""
    mesh = uv_sphere(48, 96)
    zero = PromptEmbeddings.single(torch.zeros(1, 4, 8), torch.zeros(1, 4, 8))
    from latent3d.guidance.denoiser import OracleDenoiser

    result = paint_mesh(PaintConfig.tiny(iterations=1), mesh, OracleDenoiser(lambda c, h, w: torch.zeros(len(c), 4, h, w)), zero, device="cpu")
    s = (np.arange(256) + 0.5) / 256
    v, u = np.meshgrid(1 - s, s, indexing="ij")
    image = np.stack([u, v, 0.5 + 0.0 * u], -1)  # smooth: red grows with u, green with v
    frames = turntable_images(result, np.round(image * 255).astype(np.uint8), frames=4, size=64)
    assert frames.shape == (4, 3, 64, 64)
    torch.testing.assert_close(frames[1, :, 31:33, 31:33].mean((1, 2)), torch.tensor([0.25, 1 - 60 / 180, 0.5]), atol=0.02, rtol=0)
    assert torch.equal(frames[:, :, 0, 0], torch.ones(4, 3))
