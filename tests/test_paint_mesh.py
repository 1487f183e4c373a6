"""The Latent-Paint mesh loader (latent3d.paint.mesh): own UVs and textures kept, xatlas with a cache
otherwise, atlases for several textures, placement, validation and confined references."""

from __future__ import annotations

import io
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from latent3d.paint import uv_cache
from latent3d.paint.mesh import PaintMesh, PaintMeshConfig, convert_textured_mesh, load_paint_mesh, make_paint_mesh, place_paint_mesh
from latent3d.shape.mesh_io import load_mesh, normalize_mesh, transform_mesh
from latent3d.shape.primitives import make_sphere
from latent3d.shape.references import UnsafeReferenceError

pytestmark = pytest.mark.unit
SHAPES = Path("/work/shared/assets/shapes")
QUADRANTS = {"top-left": (255, 0, 0), "top-right": (0, 255, 0), "bottom-left": (0, 0, 255), "bottom-right": (255, 255, 0)}


def _shape(name: str) -> Path:
    path = SHAPES / name
    if not path.is_file():
        pytest.skip(f"reference mesh {name} is not available")
    return path


def _quadrant_texture(size: int = 8) -> np.ndarray:
    """[size, size, 3]: red top-left, green top-right, blue bottom-left, yellow bottom-right (row 0 = top)."""
    h = size // 2
    image = np.zeros((size, size, 3), dtype=np.uint8)
    image[:h, :h], image[:h, h:] = QUADRANTS["top-left"], QUADRANTS["top-right"]
    image[h:, :h], image[h:, h:] = QUADRANTS["bottom-left"], QUADRANTS["bottom-right"]
    return image


# a quad split in two triangles per quadrant of UV space; (u, v) with v up, so v > 0.5 is the image's top
QUAD_POSITIONS = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0], [2, 1, 0]], dtype=np.float64)
QUAD_FACES = np.array([[0, 1, 2], [0, 2, 3], [1, 4, 5], [1, 5, 2]])
QUAD_UVS = {  # per face corner; face 0/1 in the top-left quadrant, 2/3 in the bottom-right one
    0: [(0.05, 0.55), (0.45, 0.55), (0.45, 0.95)],
    1: [(0.05, 0.55), (0.45, 0.95), (0.05, 0.95)],
    2: [(0.55, 0.05), (0.95, 0.05), (0.95, 0.45)],
    3: [(0.55, 0.05), (0.95, 0.45), (0.55, 0.45)],
}


def _corner_uvs() -> np.ndarray:
    return np.array([QUAD_UVS[f] for f in range(4)], dtype=np.float64)  # [F, 3, 2]


def _sample(mesh: PaintMesh, face: int) -> tuple[int, ...]:
    """The texel under face ``face``'s UV centroid (v up: row = (1 − v)·H)."""
    u, v = mesh.uvs[mesh.faces[face]].mean(0)
    h, w = mesh.texture.shape[:2]
    return tuple(int(c) for c in mesh.texture[min(int((1 - v) * h), h - 1), min(int(u * w), w - 1)])


def _write_textured_obj(folder: Path, texture: np.ndarray, mtl: str | None = None) -> Path:
    Image.fromarray(texture).save(folder / "checker.png")
    (folder / "checker.mtl").write_text(mtl or "newmtl checker\nKd 1 1 1\nmap_Kd checker.png\n")
    lines = ["mtllib checker.mtl", "o quad"] + [f"v {x} {y} {z}" for x, y, z in QUAD_POSITIONS]
    texcoords, index = np.unique(_corner_uvs().reshape(-1, 2), axis=0, return_inverse=True)  # shared vt lines
    index = index.reshape(4, 3) + 1
    lines += [f"vt {u} {v}" for u, v in texcoords] + ["usemtl checker"]
    lines += [f"f {a + 1}/{ta} {b + 1}/{tb} {c + 1}/{tc}" for (a, b, c), (ta, tb, tc) in zip(QUAD_FACES, index)]
    path = folder / "checker.obj"
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_textured_glb(path: Path, texture: np.ndarray) -> Path:
    """The same quad as a GLB by trimesh (not our writer): corners unrolled, v-up UVs in memory."""
    corners = _corner_uvs().reshape(-1, 2)
    mesh = trimesh.Trimesh(QUAD_POSITIONS[QUAD_FACES].reshape(-1, 3), np.arange(12).reshape(4, 3), process=False)
    mesh.visual = trimesh.visual.TextureVisuals(uv=corners, material=trimesh.visual.material.SimpleMaterial(image=Image.fromarray(texture)))
    path.write_bytes(mesh.export(file_type="glb"))
    return path


def _write_textured_ply(folder: Path) -> Path:
    """The quad as an ASCII PLY with per-corner texture_u/v and a TextureFile beside it (checker.png)."""
    header = ["ply", "format ascii 1.0", "comment TextureFile checker.png", "element vertex 12"]
    header += [f"property float {name}" for name in ("x", "y", "z", "texture_u", "texture_v")]
    header += ["element face 4", "property list uchar int vertex_indices", "end_header"]
    rows = [" ".join(map(str, [*p, *uv])) for p, uv in zip(QUAD_POSITIONS[QUAD_FACES].reshape(-1, 3), _corner_uvs().reshape(-1, 2))]
    path = folder / "checker.ply"
    path.write_text("\n".join(header + rows + [f"3 {3 * f} {3 * f + 1} {3 * f + 2}" for f in range(4)]) + "\n")
    return path


def test_obj_glb_and_ply_give_the_same_uvs_and_texture(tmp_path):
    texture = _quadrant_texture()
    from_obj = load_paint_mesh(_write_textured_obj(tmp_path, texture))
    from_glb = load_paint_mesh(_write_textured_glb(tmp_path / "checker.glb", texture))
    from_ply = load_paint_mesh(_write_textured_ply(tmp_path))
    for mesh in (from_obj, from_glb, from_ply):
        assert mesh.uv_origin == "file"
        np.testing.assert_array_equal(mesh.texture, texture)
        np.testing.assert_allclose(mesh.uvs[mesh.faces], _corner_uvs(), atol=1e-6)  # faces keep file order
        np.testing.assert_allclose(mesh.vertices[mesh.faces], QUAD_POSITIONS[QUAD_FACES], atol=1e-6)
        assert [_sample(mesh, f) for f in range(4)] == [QUADRANTS["top-left"]] * 2 + [QUADRANTS["bottom-right"]] * 2
        assert len(mesh.positions) == 6  # placement list: the 6 distinct positions, not the 12 corners
    assert len(from_obj.vertices) == 8  # the UV seam between the two quads splits vertices 1 and 2


def test_glb_written_by_our_exporter_round_trips(tmp_path):
    from latent3d.export.mesh import TexturedMesh
    from latent3d.export.writers import write_glb

    texture = _quadrant_texture()
    corners = _corner_uvs().reshape(-1, 2)
    exported = TexturedMesh(QUAD_POSITIONS[QUAD_FACES].reshape(-1, 3), np.arange(12).reshape(4, 3), np.tile([0.0, 0.0, 1.0], (12, 1)), uvs=corners, texture=texture)
    mesh = load_paint_mesh(write_glb(exported, tmp_path / "ours.glb"))
    np.testing.assert_allclose(mesh.uvs[mesh.faces], _corner_uvs(), atol=1e-6)
    direct = convert_textured_mesh(exported)
    np.testing.assert_allclose(direct.uvs[direct.faces], _corner_uvs(), atol=1e-6)
    np.testing.assert_array_equal(direct.texture, texture)


def test_blub_keeps_its_own_uvs():
    path = _shape("blub.obj")
    v, vt, corners = [], [], []
    for line in path.read_text().splitlines():  # independent reading: plain Python
        words = line.split()
        if words[:1] == ["v"]:
            v.append([float(x) for x in words[1:4]])
        elif words[:1] == ["vt"]:
            vt.append([float(x) for x in words[1:3]])
        elif words[:1] == ["f"]:
            corners.append([[int(i) - 1 for i in w.split("/")[:2]] for w in words[1:]])
    corners = np.array(corners)  # [F, 3, 2] (v index, vt index): blub is all triangles
    mesh = load_paint_mesh(path)
    assert mesh.uv_origin == "file" and mesh.texture is None
    np.testing.assert_allclose(mesh.uvs[mesh.faces], np.array(vt)[corners[..., 1]], atol=1e-6)
    np.testing.assert_allclose(mesh.vertices[mesh.faces], np.array(v)[corners[..., 0]], atol=1e-6)
    np.testing.assert_allclose(mesh.positions, np.array(v), atol=1e-6)


def test_nascar_is_unwrapped_once_then_cached(tmp_path, monkeypatch):
    from latent3d.export import uv

    path = _shape("nascar.obj")
    calls = []
    real = uv.unwrap
    monkeypatch.setattr(uv, "unwrap", lambda *a, **k: calls.append(1) or real(*a, **k))
    uv_cache.clear_memory_cache()
    config = PaintMeshConfig(cache_dir=str(tmp_path / "uv"))
    first = load_paint_mesh(path, config)
    assert first.uv_origin == "xatlas" and first.texture is None and len(calls) == 1
    assert first.uvs.min() >= 0 and first.uvs.max() <= 1 and first.num_faces == 7500
    again = load_paint_mesh(path, config)  # memory hit
    uv_cache.clear_memory_cache()
    from_disk = load_paint_mesh(path, config)  # disk hit
    assert len(calls) == 1
    for mesh in (again, from_disk):
        np.testing.assert_array_equal(mesh.uvs, first.uvs)
        np.testing.assert_array_equal(mesh.faces, first.faces)
    (cached,) = (tmp_path / "uv").glob("*.npz")
    assert len(cached.stem) == 64  # sha256
    with np.load(cached, allow_pickle=False) as data:  # plain arrays, no pickle
        assert set(data.files) == {"vertices", "faces", "uvs", "decimated_from"}
    cached.write_bytes(b"not an npz")  # a damaged cache file is recomputed, with a warning
    uv_cache.clear_memory_cache()
    with pytest.warns(UserWarning, match="unreadable"):
        load_paint_mesh(path, config)
    assert len(calls) == 2


def test_huge_mesh_is_decimated_before_unwrapping():
    sphere = make_sphere(0.5, subdivisions=5)  # 20,480 faces
    with pytest.warns(UserWarning, match=r"sphere.*20480 faces is above max_unwrap_faces=2000: decimated to \d+ faces"):
        mesh = make_paint_mesh(sphere.vertices, sphere.faces, source=sphere.source, config=PaintMeshConfig(max_unwrap_faces=2000))
    assert mesh.num_faces <= 2000 and mesh.info["decimated_from"] == 20480 and mesh.uv_origin == "xatlas"


def test_two_materials_become_one_atlas(tmp_path):
    red, blue = np.full((4, 4, 3), (255, 0, 0), np.uint8), np.full((8, 16, 3), (0, 0, 255), np.uint8)
    Image.fromarray(red).save(tmp_path / "red.png")
    Image.fromarray(blue).save(tmp_path / "blue.png")
    (tmp_path / "two.mtl").write_text("newmtl r\nmap_Kd red.png\nnewmtl b\nmap_Kd blue.png\nnewmtl g\nKd 0 1 0\n")
    body = "mtllib two.mtl\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 0 0 1\nvt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\n"
    body += "usemtl r\nf 1/1 2/2 3/3\nusemtl b\nf 1/1 3/3 4/4\nusemtl g\nf 1 2 5\n"
    (tmp_path / "two.obj").write_text(body)
    mesh = load_paint_mesh(tmp_path / "two.obj")
    assert mesh.uv_origin == "file" and mesh.texture.shape[0] <= mesh.texture.shape[1]
    assert [_sample(mesh, f) for f in range(3)] == [(255, 0, 0), (0, 0, 255), (0, 255, 0)]
    for f in range(3):  # every corner lies inside its material's tile: the tile's colour at each corner
        h, w = mesh.texture.shape[:2]
        for u, v in mesh.uvs[mesh.faces[f]]:
            texel = mesh.texture[min(int((1 - v) * h), h - 1), min(int(u * w), w - 1)]
            assert tuple(int(c) for c in texel) == _sample(mesh, f)


def test_glb_with_two_textured_primitives(tmp_path):
    scene = trimesh.Scene()
    for colour, shift in (((255, 0, 0), 0.0), ((0, 0, 255), 2.0)):
        box = trimesh.creation.box()
        box.apply_translation([shift, 0, 0])
        material = trimesh.visual.material.SimpleMaterial(image=Image.new("RGB", (4, 4), colour))
        box.visual = trimesh.visual.TextureVisuals(uv=np.full((8, 2), 0.5) + np.random.default_rng(0).uniform(-0.4, 0.4, (8, 2)), material=material)
        scene.add_geometry(box)
    path = tmp_path / "two.glb"
    path.write_bytes(scene.export(file_type="glb"))
    mesh = load_paint_mesh(path)
    colours = {_sample(mesh, f) for f in range(mesh.num_faces)}
    assert colours == {(255, 0, 0), (0, 0, 255)} and len(mesh.positions) == 16


def test_placement_follows_the_sketch_rule_and_knobs():
    path = _shape("teddy.obj")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # teddy2.mtl is not shipped
        mesh = load_paint_mesh(path)
    sketch = load_mesh(path)
    np.testing.assert_allclose(mesh.positions, sketch.vertices, atol=1e-6)  # the file's own 2,892 v lines
    placed = place_paint_mesh(mesh)
    np.testing.assert_allclose(placed.positions, normalize_mesh(sketch, 0.6).vertices, atol=1e-6)
    assert np.linalg.norm(placed.positions, axis=1).max() == pytest.approx(0.6, abs=1e-6)
    turned = place_paint_mesh(mesh, 0.6, (0.0, 90.0, 0.0), (0.0, 0.1, 0.0))
    expected = transform_mesh(normalize_mesh(sketch, 0.6), 1.0, (0.0, 90.0, 0.0), (0.0, 0.1, 0.0))
    np.testing.assert_allclose(turned.positions, expected.vertices, atol=1e-6)
    # vertices move with the positions: every split vertex is a copy of a file position
    from scipy.spatial import cKDTree

    assert cKDTree(turned.positions).query(turned.vertices)[0].max() < 1e-6


def test_in_memory_meshes_and_validation():
    sphere = make_sphere(0.5, 2)
    mesh = make_paint_mesh(sphere.vertices, sphere.faces, source="core MESH")
    assert mesh.uv_origin == "xatlas" and mesh.num_faces == sphere.num_faces
    import torch

    uvs = np.random.default_rng(0).random((sphere.num_vertices, 2))
    with_uvs = make_paint_mesh(torch.tensor(np.array(sphere.vertices)), torch.tensor(np.array(sphere.faces)), uvs, np.zeros((2, 2, 3)), "t")
    assert with_uvs.uv_origin == "file" and with_uvs.texture.dtype == np.uint8
    v, f = sphere.vertices, sphere.faces
    cases = [
        (lambda: make_paint_mesh(v, f[:0], source="m"), r"m: mesh has no faces"),
        (lambda: make_paint_mesh(np.where(np.arange(len(v))[:, None] == 3, np.nan, v), f, source="m"), r"m: vertices must be finite, got 1 rows"),
        (lambda: make_paint_mesh(v, f, uvs[:-1], source="m"), rf"m: uvs must have one row per vertex, shape \[{len(v)}, 2\], got \[{len(v) - 1}, 2\]"),
        (lambda: make_paint_mesh(v, f, uvs, np.zeros((4, 4, 4), np.uint8), source="m"), r"m: texture must be an \[H, W, 3\] RGB image, got shape \[4, 4, 4\]"),
        (lambda: make_paint_mesh(v, f, None, np.zeros((4, 4, 3), np.uint8), source="m"), r"m: a texture needs uvs"),
        (lambda: make_paint_mesh(v, f, uvs, np.full((4, 4, 3), 2.0), source="m"), r"float texture must hold values in \[0, 1\], got range \[2.0, 2.0\]"),
        (lambda: make_paint_mesh(v, f + len(v), source="m"), r"m: face indices must lie in"),
        (lambda: make_paint_mesh(v[None], f, source="m"), r"m: vertices must have shape \[N, 3\], got \[1, "),
        (lambda: PaintMeshConfig(max_unwrap_faces=0), r"PaintMeshConfig.max_unwrap_faces must be an integer >= 4, got 0"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()
    with pytest.warns(UserWarning, match="zero area"):
        assert make_paint_mesh(v, f, np.zeros((len(v), 2)), source="m").uv_origin == "xatlas"


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="paint mesh file not found"):
        load_paint_mesh(tmp_path / "nope.obj")
    (tmp_path / "m.fbx").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"m\.fbx: unsupported mesh file extension '\.fbx'"):
        load_paint_mesh(tmp_path / "m.fbx")
    (tmp_path / "bad.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nf 1/1 2/2 3/1\n")
    with pytest.raises(ValueError, match=r"bad\.obj line 5: face texcoord index out of range: the file has 1 'vt' lines, got '2'"):
        load_paint_mesh(tmp_path / "bad.obj")
    (tmp_path / "cloud.ply").write_bytes(trimesh.PointCloud(np.random.default_rng(0).random((9, 3))).export(file_type="ply"))
    with pytest.raises(ValueError, match=r"cloud\.ply: mesh has no faces"):
        load_paint_mesh(tmp_path / "cloud.ply")


# -- hostile references -------------------------------------------------------------------------------

MARKER = "PAINT-SECRET-MARKER-91c2"


@pytest.fixture
def opened():
    record: list[str] = []
    active = [True]

    def hook(event, args):  # hooks cannot be removed: this one goes quiet after the test
        if active[0] and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            record.append(os.path.realpath(os.fsdecode(args[0])))

    sys.addaudithook(hook)
    yield record
    active[0] = False


@pytest.mark.parametrize(
    "mtllib, mtl, reference",
    [
        ("../secret.mtl", None, "../secret.mtl"),
        ("local.mtl", "newmtl m\nmap_Kd ../secret.png\n", "../secret.png"),
        ("local.mtl", "newmtl m\nmap_Kd /etc/passwd\n", "/etc/passwd"),
        ("local.mtl", "newmtl m\nmap_Kd -s 1 1 1 file:///etc/passwd\n", "file:///etc/passwd"),
        ("link.mtl", None, "link.mtl"),
    ],
)
def test_obj_references_outside_the_folder_are_refused(tmp_path, opened, capfd, mtllib, mtl, reference):
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, format="PNG", pnginfo=_marker_info())
    (tmp_path / "secret.png").write_bytes(buffer.getvalue())
    (tmp_path / "secret.mtl").write_text(f"newmtl m\nKd 1 0 0\nmap_Kd secret.png\n# {MARKER}\n")
    folder = tmp_path / "mesh"
    folder.mkdir()
    (folder / "link.mtl").symlink_to(tmp_path / "secret.mtl")
    if mtl is not None:
        (folder / "local.mtl").write_text(mtl)
    path = folder / "hostile.obj"
    path.write_text(f"mtllib {mtllib}\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nusemtl m\nf 1/1 2/2 3/3\n")
    opened.clear()  # from here on, only the loader opens files
    with pytest.raises(UnsafeReferenceError) as info:
        load_paint_mesh(path)
    assert str(path) in str(info.value) and repr(reference) in str(info.value)
    out, err = capfd.readouterr()
    assert MARKER not in str(info.value) + out + err
    assert not {os.path.realpath(tmp_path / "secret.mtl"), os.path.realpath(tmp_path / "secret.png"), "/etc/passwd"} & set(opened)


def _marker_info():
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("secret", MARKER)
    return info


def test_gltf_image_outside_the_folder_is_refused_for_paint(tmp_path, opened):
    texture = _quadrant_texture()
    glb = _write_textured_glb(tmp_path / "ok.glb", texture)
    assert load_paint_mesh(glb).texture is not None
    (tmp_path / "secret.png").write_bytes(b"\x89PNG" + MARKER.encode())
    folder = tmp_path / "mesh"
    folder.mkdir()
    scene = trimesh.load(glb, process=False)
    exported = scene.export(file_type="gltf")
    import json

    document = json.loads(exported["model.gltf"])
    for name, data in exported.items():
        if name != "model.gltf":
            (folder / name).write_bytes(data)
    document["images"] = [{"uri": "../secret.png"}]
    (folder / "hostile.gltf").write_text(json.dumps(document))
    opened.clear()
    with pytest.raises(UnsafeReferenceError, match=r"hostile\.gltf: images\[0\]\.uri '\.\./secret\.png' escapes the folder"):
        load_paint_mesh(folder / "hostile.gltf")
    assert os.path.realpath(tmp_path / "secret.png") not in opened
