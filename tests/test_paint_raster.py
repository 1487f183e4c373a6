"""Latent-Paint rasterizer and texture lookup: analytic cases, trimesh ray casting, backend twins."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from latent3d import backends
from latent3d.nerf.cameras import CameraConfig, Cameras, camera_rays, sample_cameras
from latent3d.paint import raster
from latent3d.paint.raster import clip_positions, interpolate, rasterize
from latent3d.paint.texture import mip_level, sample_texture

pytestmark = pytest.mark.unit

BLUB = Path("/work/shared/assets/shapes/blub.obj")
NEAR, FAR = 0.1, 100.0
needs_embree = pytest.mark.skipif(not raster.embree_usable(), reason="embreex >= 4 not installed")


def camera(theta=90.0, phi=0.0, radius=2.0, fovy=60.0) -> Cameras:
    return Cameras(*(torch.tensor([float(x)]) for x in (radius, theta, phi, fovy)))


def ids(rast: torch.Tensor) -> torch.Tensor:
    return rast[..., 3].long()


def expected_zw(depth: torch.Tensor) -> torch.Tensor:
    """OpenGL z/w of view depth (distance along the camera's forward axis)."""
    return (FAR + NEAR) / (FAR - NEAR) - 2 * FAR * NEAR / ((FAR - NEAR) * depth)


def screen(points: np.ndarray, cam: Cameras, size: int) -> np.ndarray:
    """[N, 2] (col, row) of world points by the pinhole convention alone (focal = (H/2)/tan(fovy/2))."""
    right, up, forward = (a[0].double().numpy() for a in cam.axes())
    rel = points - cam.positions()[0].double().numpy()
    focal = (size / 2) / math.tan(math.radians(float(cam.fovy[0])) / 2)
    depth = rel @ forward
    return np.stack([size / 2 + focal * (rel @ right) / depth, size / 2 - focal * (rel @ up) / depth], -1)


def edge_pixels(*id_maps: torch.Tensor) -> torch.Tensor:
    """[B, H, W] True where a 3×3 neighbourhood holds more than one id in any of the maps."""
    edge = torch.zeros(id_maps[0].shape, dtype=torch.bool)
    for m in id_maps:
        m = m.double()[:, None]
        edge |= (F.max_pool2d(m, 3, 1, 1) != -F.max_pool2d(-m, 3, 1, 1))[:, 0]
    return edge


@pytest.fixture(scope="module")
def blub():
    if not BLUB.is_file():
        pytest.skip(f"{BLUB} not found")
    import trimesh

    mesh = trimesh.load(str(BLUB), process=False, force="mesh")
    v = mesh.vertices - mesh.vertices.mean(0)
    v = (0.6 * v / np.linalg.norm(v, axis=1).max()).astype(np.float32)  # docs/method.md §3 normalisation
    return trimesh.Trimesh(v, mesh.faces, process=False)


def tensors(mesh):
    return torch.tensor(np.asarray(mesh.vertices), dtype=torch.float32), torch.tensor(np.asarray(mesh.faces))


# ---- analytic cases ----------------------------------------------------------------------------------


def test_one_triangle_facing_the_camera():
    size, cam = 32, camera()
    verts = torch.tensor([[-0.6, -0.5, 0.0], [0.7, -0.3, 0.0], [-0.1, 0.6, 0.0]])
    rast = rasterize(clip_positions(verts, cam, size, size), torch.tensor([[0, 1, 2]]), (size, size), backend="torch")
    corners = screen(verts.double().numpy(), cam, size)
    cols, rows = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    p = np.stack([cols, rows], -1)

    def edge(a, b):  # signed distance (pixels) of p from the directed edge a→b
        d = b - a
        return (d[0] * (p[..., 1] - a[1]) - d[1] * (p[..., 0] - a[0])) / np.hypot(*d)

    dist = np.stack([edge(corners[i], corners[(i + 1) % 3]) for i in range(3)])
    dist *= np.sign(dist.sum(0, keepdims=True).mean())  # inside positive, whatever the winding on screen
    inside, clear = (dist > 0).all(0), np.abs(dist).min(0) > 1e-3
    got = ids(rast)[0].numpy()
    assert inside.sum() > 50 and np.array_equal(got[clear], inside[clear].astype(np.int64))
    origins, dirs = camera_rays(cam, size, size)
    t = -origins[..., 2] / dirs[..., 2]  # ray hits the plane z = 0
    hit = (origins + t[..., None] * dirs)[0][ids(rast)[0] == 1].double()
    u, v = rast[0, ..., 0][ids(rast)[0] == 1].double(), rast[0, ..., 1][ids(rast)[0] == 1].double()
    point = u[:, None] * verts[0].double() + v[:, None] * verts[1].double() + (1 - u - v)[:, None] * verts[2].double()
    torch.testing.assert_close(point, hit, atol=1e-5, rtol=0)
    zw = rast[0, ..., 2][ids(rast)[0] == 1].double()
    torch.testing.assert_close(zw, expected_zw(torch.full_like(zw, 2.0)), atol=1e-6, rtol=0)  # plane at depth 2
    assert (rast[0][ids(rast)[0] == 0] == 0).all()


@pytest.mark.parametrize("backend", ["torch", pytest.param("embree", marks=[needs_embree, pytest.mark.reference])])
def test_cube_along_an_axis_shows_only_its_front_faces(backend):
    import trimesh

    box = trimesh.creation.box((1.0, 1.0, 1.0))
    verts, faces = tensors(box)
    for phi, axis in ((0.0, 2), (90.0, 0)):  # front camera sees +z, side camera sees +x
        cam = camera(phi=phi, radius=2.5, fovy=50.0)
        rast = rasterize(clip_positions(verts, cam, 48, 48), faces, (48, 48), backend=backend)
        seen = ids(rast)[ids(rast) > 0].unique() - 1
        normals = torch.tensor(box.face_normals)[seen]
        assert len(seen) == 2 and torch.allclose(normals[:, axis], torch.ones(2, dtype=torch.float64))
        zw = rast[..., 2][ids(rast) > 0].double()
        torch.testing.assert_close(zw, expected_zw(torch.full_like(zw, 2.0)), atol=1e-6, rtol=0)  # face at 0.5


@pytest.mark.parametrize("backend", ["torch", pytest.param("embree", marks=[needs_embree, pytest.mark.reference])])
def test_nearest_of_two_overlapping_triangles_wins(backend):
    tri = torch.tensor([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.0, 0.5, 0.0]])
    verts = torch.cat([tri + torch.tensor([0.1, 0.0, -0.3]), tri])  # second triangle is nearer (+z camera)
    cam = camera()
    for faces, near_id in ((torch.tensor([[0, 1, 2], [3, 4, 5]]), 2), (torch.tensor([[3, 4, 5], [0, 1, 2]]), 1)):
        rast = rasterize(clip_positions(verts, cam, 32, 32), faces, (32, 32), backend=backend)
        front = screen(tri.double().numpy(), cam, 32)
        centre = front.mean(0).astype(int)
        assert ids(rast)[0, centre[1], centre[0]] == near_id
        assert set(ids(rast).unique().tolist()) == {0, 1, 2}  # the far one peeks out on the right


def test_background_is_zero_and_meshes_behind_the_camera_vanish():
    verts = torch.tensor([[-0.5, -0.5, 3.0], [0.5, -0.5, 3.0], [0.0, 0.5, 3.0]])  # behind the camera at z = 2
    rast = rasterize(clip_positions(verts, camera(), 16, 16), torch.tensor([[0, 1, 2]]), (16, 16), backend="torch")
    assert rast.shape == (1, 16, 16, 4) and rast.dtype == torch.float32 and (rast == 0).all()
    empty = rasterize(clip_positions(verts, camera(), 8, 8), torch.zeros(0, 3, dtype=torch.long), (8, 12), backend="torch")
    assert empty.shape == (1, 8, 12, 4) and (empty == 0).all()


def near_plane_scene():
    """A floor from behind the camera (w < 0) to a wall: rows nearer than the near plane are clipped."""
    verts = torch.tensor([[-1.0, -0.2, 2.5], [1.0, -0.2, 2.5], [0.0, -0.2, 0.0], [-1, -1, -1.0], [1, -1, -1.0], [0, 1.0, -1.0]])
    return verts, torch.tensor([[0, 1, 2], [3, 4, 5]])


def test_near_plane_clips_pixels_and_reveals_what_is_behind():
    verts, faces = near_plane_scene()
    cam = camera(fovy=90.0)
    near = 0.5
    matrices_clip = clip_positions(verts, cam, 32, 32, near=near, far=FAR)
    rast = rasterize(matrices_clip, faces, (32, 32), backend="torch")
    points = interpolate(verts, rast, faces)[0]
    depth = 2.0 - points[..., 2]
    floor = ids(rast)[0] == 1
    assert floor.any() and (ids(rast)[0] == 2).any() and (depth[floor] >= near - 1e-5).all()
    unclipped = rasterize(clip_positions(verts, cam, 32, 32, near=0.001, far=FAR), faces, (32, 32), backend="torch")
    assert ((ids(unclipped)[0] == 1) & ~floor).sum() > 0  # the clipped rows were floor before


# ---- real mesh: against trimesh ray casting, and the backends against each other -------------------------


def double(cams: Cameras) -> Cameras:
    return Cameras(*(t.double() for t in (cams.radius, cams.theta, cams.phi, cams.fovy)))


def trimesh_reference(mesh, cams: Cameras, size: int):
    """First hits of ``camera_rays`` (float64) by trimesh: face ids + 1 [B, H, W], barycentrics
    [B, H, W, 3], hit points [B, H, W, 3] and |cos| between ray and face normal [B, H, W]."""
    import trimesh

    origins, dirs = camera_rays(double(cams), size, size)
    o, d = origins.reshape(-1, 3).numpy(), dirs.reshape(-1, 3).numpy()
    try:
        tri, ray, loc = mesh.ray.intersects_id(o, d, multiple_hits=False, return_locations=True)
    except ImportError as e:  # neither embreex nor rtree installed
        pytest.skip(f"trimesh cannot ray-cast here: {e}")
    face, bary, points, cos = np.zeros(len(o), np.int64), np.zeros((len(o), 3)), np.zeros((len(o), 3)), np.zeros(len(o))
    face[ray], points[ray] = tri + 1, loc
    bary[ray] = trimesh.triangles.points_to_barycentric(mesh.triangles[tri], loc)
    cos[ray] = np.abs((mesh.face_normals[tri] * d[ray]).sum(1))
    shape = (len(cams), size, size)
    return tuple(torch.tensor(a).reshape(*shape, -1).squeeze(-1) for a in (face, bary, points, cos))


def compare_ids(got: torch.Tensor, want: torch.Tensor, max_ratio: float) -> float:
    """Mismatches only on edge pixels, at most ``max_ratio`` of the covered pixels; returns the ratio."""
    wrong = got != want
    assert not (wrong & ~edge_pixels(got, want)).any(), "mismatch away from any silhouette or face edge"
    ratio = wrong.sum().item() / max(1, (want > 0).sum().item())
    assert ratio <= max_ratio, f"face-id mismatch ratio {ratio:.4%} > {max_ratio:.2%}"
    return ratio


def check_barycentrics(got: torch.Tensor, want: torch.Tensor, cos: torch.Tensor) -> None:
    """Barycentrics [N, 2] of the same faces. float32 clip coordinates move a hit by ~1e-7 of the scene;
    in barycentric units that grows as 1/(face altitude · cos), so grazing hits and slivers exceed 1e-4."""
    error = (got.double() - want.double()).abs().amax(-1)
    assert torch.quantile(error[cos > 0.1], 0.99) <= 1e-4 and error.max() <= 2e-3, error.max()


@pytest.mark.parametrize("backend", ["torch", pytest.param("embree", marks=[needs_embree, pytest.mark.reference])])
def test_blub_matches_trimesh_ray_casting(blub, backend):
    cams, size = sample_cameras(CameraConfig(), 3, torch.Generator().manual_seed(3)), 96
    verts, faces = tensors(blub)
    rast = rasterize(clip_positions(verts, cams, size, size), faces, (size, size), backend=backend)
    want, bary, points, cos = trimesh_reference(blub, cams, size)
    compare_ids(ids(rast), want, max_ratio=0.01)
    same = (ids(rast) == want) & (want > 0)
    check_barycentrics(rast[..., :2][same], bary[..., :2][same], cos[same])
    ours = interpolate(verts.double(), rast, faces)[same]
    assert (ours - points[same]).norm(dim=-1).max() < 2e-5  # world units; a pixel here is ~0.02


@needs_embree
@pytest.mark.reference
def test_embree_equals_torch_on_blub_and_caches_its_bvh(blub):
    from latent3d.paint import raster_embree

    verts, faces = tensors(blub)
    raster_embree._FRAMES.clear()
    generator = torch.Generator().manual_seed(5)
    for size in (64, 128):
        cams = sample_cameras(CameraConfig(), 2, generator)
        clip = clip_positions(verts, cams, size, size)
        a, b = rasterize(clip, faces, (size, size), "torch"), rasterize(clip, faces, (size, size), "embree")
        compare_ids(ids(b), ids(a), max_ratio=0.002)
        same = ids(a) == ids(b)
        assert torch.equal(a[same], b[same])  # visibility aside, both evaluate rast_from_faces
    assert len(raster_embree._FRAMES) == 1  # one BVH served every view
    moved = verts * 1.1  # same faces, other vertices: the cached frame must not be reused blindly
    clip = clip_positions(moved, cams, 64, 64)
    compare_ids(ids(rasterize(clip, faces, (64, 64), "embree")), ids(rasterize(clip, faces, (64, 64), "torch")), 0.002)


@needs_embree
@pytest.mark.reference
def test_embree_clips_at_near_and_far_like_torch():
    verts, faces = near_plane_scene()
    for near, far, visible in ((0.5, FAR, {0, 1, 2}), (0.1, 2.5, {0, 1})):  # the wall lies at depth 3
        clip = clip_positions(verts, camera(fovy=90.0), 32, 32, near=near, far=far)
        a, b = rasterize(clip, faces, (32, 32), "torch"), rasterize(clip, faces, (32, 32), "embree")
        assert set(ids(a).unique().tolist()) == visible
        compare_ids(ids(b), ids(a), max_ratio=0.01)


@pytest.mark.gpu
def test_torch_matches_nvdiffrast_on_cuda(blub):
    if not torch.cuda.is_available() or backends.probe("nvdiffrast.torch") is None:
        pytest.skip("needs CUDA and nvdiffrast")
    verts, faces = (t.cuda() for t in tensors(blub))
    clip = clip_positions(verts, sample_cameras(CameraConfig(), 2, torch.Generator().manual_seed(1)).to("cuda"), 128, 128)
    a, b = rasterize(clip, faces, (128, 128), "torch").cpu(), rasterize(clip, faces, (128, 128), "nvdiffrast").cpu()
    compare_ids(ids(b), ids(a), max_ratio=0.01)
    same = (ids(a) == ids(b)) & (ids(a) > 0)
    assert torch.quantile((b[..., :3][same] - a[..., :3][same]).abs().amax(-1), 0.99) < 1e-4


def test_rasterized_points_lie_on_the_nerf_rays(blub):
    verts, faces = tensors(blub)
    cams, (height, width) = sample_cameras(CameraConfig(), 2, torch.Generator().manual_seed(7)), (48, 80)
    rast = rasterize(clip_positions(verts, cams, height, width), faces, (height, width), backend="torch")
    covered = ids(rast) > 0
    points = interpolate(verts.double(), rast, faces)[covered]
    origins, dirs = (t[covered].double() for t in camera_rays(cams, height, width))
    t = ((points - origins) * dirs).sum(-1)
    off_ray = (points - origins - t[:, None] * dirs).norm(dim=-1)
    assert off_ray.max() < 1e-5
    forward = cams.axes()[2].double()[:, None, None].expand(-1, height, width, -1)[covered]
    torch.testing.assert_close(rast[..., 2][covered].double(), expected_zw(t * (dirs * forward).sum(-1)), atol=2e-6, rtol=0)


def test_interpolate_shares_or_batches_attributes_and_is_differentiable():
    verts = torch.tensor([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.0, 0.5, 0.0]])
    faces = torch.tensor([[0, 1, 2]])
    rast = rasterize(clip_positions(verts, Cameras.cat([camera(), camera(phi=20.0)]), 16, 16), faces, (16, 16), "torch")
    colours = torch.eye(3, requires_grad=True)
    out = interpolate(colours, rast, faces)
    assert out.shape == (2, 16, 16, 3) and (out[ids(rast) == 0] == 0).all()
    torch.testing.assert_close(out.sum(-1)[ids(rast) > 0], torch.ones(int((ids(rast) > 0).sum())))
    out.sum().backward()
    assert colours.grad is not None and colours.grad.abs().sum() > 0
    batched = interpolate(torch.stack([colours.detach(), 2 * colours.detach()]), rast, faces)
    torch.testing.assert_close(batched[1], 2 * interpolate(colours.detach(), rast, faces)[1])


def test_a_quad_filling_the_view_renders_its_texture():
    """Rasterize -> interpolate uvs -> sample: row 0 at the top and v up agree end to end."""
    half = 2.0 * math.tan(math.radians(30.0))  # the z = 0 square that a 60° camera at distance 2 sees
    verts = torch.tensor([[-half, -half, 0.0], [half, -half, 0.0], [half, half, 0.0], [-half, half, 0.0]])
    faces, uvs = torch.tensor([[0, 1, 2], [0, 2, 3]]), torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    rast = rasterize(clip_positions(verts, camera(), 16, 16), faces, (16, 16), backend="torch")
    texture = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
    image = sample_texture(texture, interpolate(uvs, rast, faces))
    torch.testing.assert_close(image[0], texture.detach(), atol=1e-4, rtol=0)
    image.sum().backward()
    torch.testing.assert_close(texture.grad, torch.ones_like(texture), atol=1e-4, rtol=0)


# ---- texture lookup ----------------------------------------------------------------------------------


def texel_centre_uv(rows: torch.Tensor, cols: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return torch.stack([(cols + 0.5) / width, 1.0 - (rows + 0.5) / height], -1).double()


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_texel_centres_read_their_texels(mode):
    texture = torch.arange(2 * 3 * 5, dtype=torch.float64).reshape(2, 3, 5)
    rows, cols = torch.meshgrid(torch.arange(3), torch.arange(5), indexing="ij")
    uv = texel_centre_uv(rows, cols, 3, 5)[None]
    torch.testing.assert_close(sample_texture(texture, uv, mode)[0], texture, atol=1e-6, rtol=0)


def test_bilinear_halfway_and_the_v_up_convention():
    texture = torch.tensor([[[1.0, 2.0], [3.0, 5.0]]], dtype=torch.float64)  # row 0 is the top
    uv = torch.tensor([[[[0.0, 0.0], [1.0, 1.0], [0.5, 0.75], [0.5, 0.5]]]], dtype=torch.float64)
    got = sample_texture(texture, uv)[0, 0, 0]
    # (0,0) is the bottom-left texel (3), (1,1) the top-right (2), (0.5, 0.75) halfway along the top row
    torch.testing.assert_close(got, torch.tensor([3.0, 2.0, 1.5, 2.75], dtype=torch.float64))


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "mipmap"])
def test_sample_texture_gradcheck(mode):
    generator = torch.Generator().manual_seed(0)
    texture = torch.randn(2, 4, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    uv = torch.rand(1, 3, 3, 2, dtype=torch.float64, generator=generator) * 0.9 + 0.05
    assert torch.autograd.gradcheck(lambda t: sample_texture(t, uv, mode), (texture,))


def test_mipmap_averages_a_minified_checkerboard_and_matches_bilinear_when_magnified():
    rows, cols = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    checker = (((rows + cols) % 2) * 2.0 - 1.0).double()[None]  # ±1 texels, mean 0
    far = texel_centre_uv(*torch.meshgrid(torch.arange(8) * 8.0 + 3.5, torch.arange(8) * 8.0 + 3.5, indexing="ij"), 64, 64)[None]
    torch.testing.assert_close(mip_level(far, (64, 64), 7), torch.full((1, 8, 8), 3.0, dtype=torch.float64))
    assert sample_texture(checker, far, "mipmap").abs().max() < 1e-9  # 8×8-texel footprint averages to 0
    near = torch.rand(1, 6, 6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.001 + 0.5
    torch.testing.assert_close(sample_texture(checker, near, "mipmap"), sample_texture(checker, near, "bilinear"))


# ---- inputs ------------------------------------------------------------------------------------------


def test_bad_inputs_name_the_argument():
    verts = torch.tensor([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.0, 0.5, 0.0]])
    faces = torch.tensor([[0, 1, 2]])
    clip = clip_positions(verts, camera(), 8, 8)
    cases = [
        (lambda: rasterize(clip, torch.tensor([[0, 1, 3]]), (8, 8)), "faces"),
        (lambda: rasterize(clip, torch.tensor([[0, -1, 2]]), (8, 8)), "faces"),
        (lambda: rasterize(clip, faces.float(), (8, 8)), "faces"),
        (lambda: rasterize(clip, torch.tensor([0, 1, 2]), (8, 8)), "faces"),
        (lambda: rasterize(clip[0], faces, (8, 8)), "clip"),
        (lambda: rasterize(clip[..., :3], faces, (8, 8)), "clip"),
        (lambda: rasterize(clip * float("nan"), faces, (8, 8)), "clip"),
        (lambda: rasterize(clip, faces, (0, 8)), "resolution"),
        (lambda: rasterize(clip, faces, (8, -2)), "resolution"),
        (lambda: rasterize(clip, faces, 8), "resolution"),
        (lambda: rasterize(clip, faces, (8, 8), backend="opengl"), "backend"),
        (lambda: clip_positions(verts * float("inf"), camera(), 8, 8), "vertices"),
        (lambda: clip_positions(verts[:, :2], camera(), 8, 8), "vertices"),
        (lambda: clip_positions(verts, camera(), 0, 8), "resolution"),
        (lambda: clip_positions(verts, camera(), 8, 8, near=0.0), "near"),
        (lambda: interpolate(verts, clip, faces), "rast"),
        (lambda: sample_texture(torch.zeros(4, 8, 8), torch.zeros(1, 2, 2, 3)), "uv"),
        (lambda: sample_texture(torch.zeros(8, 8), torch.zeros(1, 2, 2, 2)), "texture"),
        (lambda: sample_texture(torch.zeros(4, 8, 8), torch.zeros(1, 2, 2, 2), mode="cubic"), "mode"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()


def test_missing_backends_raise_with_the_install_hint(monkeypatch):
    clip = clip_positions(torch.eye(3), camera(), 8, 8)
    with pytest.raises(RuntimeError, match="CUDA"):
        rasterize(clip, torch.tensor([[0, 1, 2]]), (8, 8), backend="nvdiffrast")
    monkeypatch.setattr(backends, "probe", lambda module: None)
    monkeypatch.setattr(raster, "probe", lambda module: None)
    with pytest.raises(RuntimeError, match="pip install 'embreex>=4'"):
        rasterize(clip, torch.tensor([[0, 1, 2]]), (8, 8), backend="embree")
    with pytest.warns(RuntimeWarning, match="embreex"):  # auto falls back to torch, saying so once
        assert rasterize(clip, torch.tensor([[0, 1, 2]]), (8, 8)).shape == (1, 8, 8, 4)


def test_embree_2_is_refused_because_it_is_not_watertight(monkeypatch):
    if backends.probe("embreex") is None:
        pytest.skip("embreex not installed")
    monkeypatch.setattr(raster, "probe_version", lambda distribution: (2, 17, 7))
    clip = clip_positions(torch.eye(3), camera(), 8, 8)
    with pytest.raises(RuntimeError, match="embreex >= 4"):
        rasterize(clip, torch.tensor([[0, 1, 2]]), (8, 8), backend="embree")
    assert raster._choose("auto", torch.device("cpu")) == "torch"


def test_importing_the_paint_modules_imports_no_accelerator():
    code = "import sys, latent3d.paint.raster, latent3d.paint.texture; print(sorted({'embreex', 'nvdiffrast'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
    assert out.stdout.strip() == "[]"
