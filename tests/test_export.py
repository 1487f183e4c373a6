"""Export core: latent↔RGB map, density lattice, iso-surface, cleanup, decimation, texture bake."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from latent3d.colors import LATENT_RGB_MATRIX, latent_rgb_matrix, latents_to_rgb, linear_decode, rgb_to_latents
from latent3d.export import ExportConfig, extract_mesh
from latent3d.export.density import half_opacity_density, surface_band
from latent3d.export.surface import signed_volume
from latent3d.export.uv import rasterize_uv
from latent3d.nerf.field import FieldConfig
from latent3d.nerf.grid import GridConfig
from latent3d.nerf.model import LatentNeRF
from latent3d.nerf.render import RenderConfig

pytestmark = pytest.mark.unit


def sphere_color(x: torch.Tensor) -> torch.Tensor:
    """sRGB in [0.2, 0.8] that depends on the direction only, so reading a little inside changes nothing."""
    return 0.2 + 0.3 * (x / x.norm(dim=-1, keepdim=True).clamp(min=1e-9) + 1)


class Spheres(nn.Module):
    """Balls (centre, radius) of constant density ``peak``; latent = rgb_to_latents(sphere_color(x))."""

    def __init__(self, balls=(((0.0, 0.0, 0.0), 0.5),), peak=50.0, bound=1.0):
        super().__init__()
        self.centers = torch.tensor([c for c, _ in balls])
        self.radii = torch.tensor([r for _, r in balls])
        self.peak, self.bound = peak, bound
        self.calls: list[int] = []

    def density(self, x):
        self.calls.append(x.shape[0])
        inside = ((x[:, None, :] - self.centers).norm(dim=-1) < self.radii).any(-1)
        return self.peak * inside.float()

    def query(self, x):
        return self.density(x), rgb_to_latents(sphere_color(x))


def small(**changes):
    values = dict(resolution=48, coarse_resolution=16, color_mode="vertex", texture_size=128)
    values.update(changes)
    return ExportConfig(**values)


# -- latent <-> RGB ------------------------------------------------------------------------------------


def test_linear_map_matches_design_numbers():
    w = torch.tensor(LATENT_RGB_MATRIX)
    assert w.shape == (4, 3)
    torch.testing.assert_close(latents_to_rgb(torch.eye(4)), (w + 1) / 2)
    torch.testing.assert_close(latents_to_rgb(torch.tensor([1.0, 0, 0, 0])), torch.tensor([0.649, 0.6035, 0.604]))
    torch.testing.assert_close(latents_to_rgb(torch.tensor([0, 0, 0, -1.0])), torch.tensor([0.592, 0.6355, 0.7365]))
    assert torch.equal(latents_to_rgb(torch.zeros(2, 4)), torch.full((2, 3), 0.5))
    assert latents_to_rgb(torch.full((4,), 10.0)).max() == 1.0  # clamped


def test_rgb_to_latents_is_the_min_norm_inverse():
    rgb = torch.rand(64, 3, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    z = rgb_to_latents(rgb)
    assert z.shape == (64, 4)
    torch.testing.assert_close(latents_to_rgb(z), rgb, atol=1e-5, rtol=0)
    null = torch.linalg.svd(latent_rgb_matrix().T).Vh[-1]  # the latent direction W ignores
    assert (z @ null).abs().max() < 1e-5
    image = torch.randn(2, 4, 5, 6)
    torch.testing.assert_close(linear_decode(image), latents_to_rgb(image.movedim(1, -1)).movedim(-1, 1))


def test_color_maps_reject_bad_shapes():
    with pytest.raises(ValueError, match="z must have 4 channels"):
        latents_to_rgb(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="rgb must have 3 channels"):
        rgb_to_latents(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="floating-point"):
        latents_to_rgb(torch.zeros(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\[B, 4, h, w\]"):
        linear_decode(torch.zeros(1, 3, 4, 4))


# -- geometry ------------------------------------------------------------------------------------------


def test_sphere_gives_a_closed_outward_mesh_of_the_right_radius():
    import trimesh

    field = Spheres()
    mesh = extract_mesh(field, small())
    h = 2.0 / (48 - 1)
    radius = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(radius.mean() - 0.5) < 0.5 * h and radius.min() > 0.5 - h and radius.max() < 0.5 + h
    assert trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).is_watertight
    assert signed_volume(mesh.vertices, mesh.faces) == pytest.approx(4 / 3 * math.pi * 0.5**3, rel=0.06)
    assert (np.einsum("ij,ij->i", mesh.normals, mesh.vertices) > 0).all()  # normals point out
    assert mesh.info["threshold"] == 10.0 and mesh.info["coarse_source"] == "field"
    # only the band is evaluated: far fewer points than the 48³ lattice
    assert mesh.info["field_evaluations"] < 0.6 * 48**3


def test_threshold_rule_follows_faint_fields_and_explicit_values():
    faint = extract_mesh(Spheres(peak=4.0), small())
    assert faint.info["threshold"] == pytest.approx(2.0)  # half the solid density, not the cap of 10
    assert abs(np.linalg.norm(faint.vertices, axis=1).mean() - 0.5) < 0.03
    fixed = extract_mesh(Spheres(), small(threshold=25.0))
    assert fixed.info["threshold"] == 25.0
    cells = torch.zeros(8, 8, 8)
    assert half_opacity_density(cells, 0.25) is None
    cells[2:6, 2:6, 2:6] = 40.0
    assert half_opacity_density(cells, 0.25) == 40.0


def test_empty_field_and_unreachable_threshold_raise():
    with pytest.raises(ValueError, match="the field is empty"):
        extract_mesh(Spheres(peak=0.0), small())
    with pytest.raises(ValueError, match="no surface: the density never exceeds the threshold 100"):
        extract_mesh(Spheres(), small(threshold=100.0))


def occupancy_model(field: nn.Module, resolution: int = 24, updates: int = 24) -> LatentNeRF:
    """A LatentNeRF whose density and latent are ``field``'s, its occupancy grid refreshed as in training."""
    config = FieldConfig(grid=GridConfig(levels=4, finest_resolution=64, log2_table_size=12), hidden_dim=16, background="none")
    model = LatentNeRF(config, RenderConfig(occupancy_resolution=resolution))
    model.density, model.query = field.density, field.query
    generator = torch.Generator().manual_seed(0)
    for _ in range(updates):  # a coarse first fill, then refreshes refine it cell by cell
        model.occupancy.update(model.density, model.render_config, generator)
    return model


class FoggySphere(Spheres):
    """The ball plus σ = 3 fog everywhere: the occupancy grid's threshold (min(mean, 10) ≈ 6) skips the fog."""

    def density(self, x):
        return super().density(x) + 3.0


def test_occupancy_grid_path_matches_the_coarse_pass():
    fresh = LatentNeRF(FieldConfig(grid=GridConfig(levels=2, finest_resolution=32, log2_table_size=10)), RenderConfig(occupancy_resolution=8))
    with pytest.raises(ValueError, match="coarse_source is 'occupancy'"):
        extract_mesh(fresh, small(coarse_source="occupancy"))
    model = occupancy_model(Spheres())
    from_grid = extract_mesh(model, small())
    from_field = extract_mesh(model, small(coarse_source="field"))
    assert from_grid.info["coarse_source"] == "occupancy" and from_grid.info["field_evaluations"] < 0.6 * 48**3
    np.testing.assert_allclose(np.sort(np.linalg.norm(from_grid.vertices, axis=1)), np.sort(np.linalg.norm(from_field.vertices, axis=1)), atol=1e-5)


def test_fog_the_renderer_skips_does_not_become_a_surface():
    model = occupancy_model(FoggySphere(), resolution=48, updates=8)
    seen = extract_mesh(model, small(threshold=2.0))
    # fog within one cell (26-neighbourhood) of a masked cell is kept: the margin that forgives stale cells
    reach = 0.5 + 2 * math.sqrt(3) * 2.0 / 48 + 2.0 / 47
    assert np.linalg.norm(seen.vertices, axis=1).max() < reach < 0.7
    field = extract_mesh(model, small(threshold=2.0, coarse_source="field"))  # the field itself: fog fills the box
    assert np.abs(field.vertices).max() > 0.99


def test_surface_band_covers_both_sides_of_the_border():
    inside = torch.zeros(10, 10, 10, dtype=torch.bool)
    inside[3:7, 3:7, 3:7] = True
    band = surface_band(inside, 0)
    assert band[3, 5, 5] and band[2, 5, 5] and not band[5, 5, 5] and not band[0, 5, 5]
    assert surface_band(inside, 1)[1, 5, 5]
    full = torch.ones(4, 4, 4, dtype=torch.bool)
    assert surface_band(full, 0)[0, 0, 0] and not surface_band(full, 0)[1, 1, 1]  # beyond the grid is outside


def test_small_floating_components_are_removed():
    balls = (((0.0, 0.0, 0.0), 0.5), ((0.75, 0.75, 0.75), 0.1))  # area ratio 0.04
    kept = extract_mesh(Spheres(balls), small(min_component_fraction=0.0))
    cleaned = extract_mesh(Spheres(balls), small(min_component_fraction=0.1))
    assert len(cleaned.faces) < len(kept.faces)
    assert np.linalg.norm(cleaned.vertices, axis=1).max() < 0.6
    assert np.linalg.norm(kept.vertices, axis=1).max() > 1.0


def test_decimation_respects_the_face_budget():
    full = extract_mesh(Spheres(), small(resolution=64))
    assert len(full.faces) > 4000
    reduced = extract_mesh(Spheres(), small(resolution=64, face_budget=800))
    assert 400 < len(reduced.faces) <= 800
    assert abs(np.linalg.norm(reduced.vertices, axis=1).mean() - 0.5) < 0.02
    assert signed_volume(reduced.vertices, reduced.faces) > 0


# -- colour --------------------------------------------------------------------------------------------


def test_vertex_colors_are_the_field_colour():
    mesh = extract_mesh(Spheres(), small())
    inside = mesh.vertices - 2.0 / (48 - 1) * mesh.normals  # read one lattice spacing inside by default
    np.testing.assert_allclose(mesh.colors, sphere_color(torch.from_numpy(inside)).numpy(), atol=1e-5)
    offset = extract_mesh(Spheres(), small(color_offset=0.0))
    np.testing.assert_allclose(offset.colors, sphere_color(torch.from_numpy(offset.vertices)).numpy(), atol=1e-5)


def test_texture_bake_decodes_to_the_field_colour_at_texels():
    mesh = extract_mesh(Spheres(), small(color_mode="texture", texture_size=128, face_budget=2000, padding=2))
    assert mesh.texture.shape == (128, 128, 3) and mesh.texture.dtype == np.uint8
    assert mesh.uvs.min() >= 0 and mesh.uvs.max() <= 1
    face_id, bary = rasterize_uv(mesh.uvs, mesh.faces, 128)
    rows, cols = np.nonzero(face_id >= 0)
    assert len(rows) > 0.4 * 128 * 128
    pick = np.random.default_rng(0).choice(len(rows), 200, replace=False)
    rows, cols = rows[pick], cols[pick]
    points = (mesh.vertices[mesh.faces[face_id[rows, cols]]] * bary[rows, cols][..., None]).sum(1)
    expected = sphere_color(torch.from_numpy(points)).numpy()
    got = mesh.texture[rows, cols] / 255.0
    assert np.abs(got - expected).max() < 0.03  # 8-bit rounding + the inward normal of a faceted surface


def test_decoder_gets_the_eighth_size_latent():
    seen = []

    def decode(latent):
        seen.append(tuple(latent.shape))
        return F.interpolate(linear_decode(latent), scale_factor=8, mode="nearest")

    mesh = extract_mesh(Spheres(), small(color_mode="texture", texture_size=256, face_budget=1000), decode=decode)
    assert seen == [(1, 4, 32, 32)]
    assert mesh.texture.shape == (256, 256, 3)
    rgb = mesh.vertex_colors()
    assert np.median(np.abs(rgb - sphere_color(torch.from_numpy(mesh.vertices)).numpy())) < 0.05


def test_decoder_with_the_wrong_output_raises():
    with pytest.raises(ValueError, match=r"decode must return a tensor of shape \(1, 3, 256, 256\)"):
        extract_mesh(Spheres(), small(color_mode="texture", texture_size=256, face_budget=1000), decode=linear_decode)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"resolution": 8}, "resolution"),
        ({"resolution": 64.0}, "resolution"),
        ({"threshold": -1.0}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"min_component_fraction": 1.5}, "min_component_fraction"),
        ({"face_budget": 3}, "face_budget"),
        ({"color_mode": "uv"}, "color_mode"),
        ({"texture_size": 1020}, "texture_size"),
        ({"coarse_source": "grid"}, "coarse_source"),
        ({"color_offset": -0.1}, "color_offset"),
        ({"dilation": True}, "dilation"),
    ],
)
def test_config_errors_name_the_field(changes, field):
    with pytest.raises(ValueError, match=rf"ExportConfig\.{field} must"):
        ExportConfig(**changes)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="config must be an ExportConfig"):
        extract_mesh(Spheres(), {"resolution": 64})
    sphere = Spheres()
    sphere.bound = 0.0
    with pytest.raises(ValueError, match="model.bound must be a positive finite number"):
        extract_mesh(sphere, small())
    with pytest.raises(ValueError, match="callable density"):
        extract_mesh(object(), small())
    with pytest.raises(ValueError, match="decode must be None or a callable"):
        extract_mesh(Spheres(), small(color_mode="texture"), decode="vae")
    three = Spheres()
    three.query = lambda x: (three.density(x), torch.zeros(x.shape[0], 3))
    with pytest.raises(ValueError, match="vertex colours: the linear latent→RGB map needs 4 latent channels"):
        extract_mesh(three, small())
