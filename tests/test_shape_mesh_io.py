"""Mesh loading, validation, normalization, primitives and sketch diagnostics (latent3d.shape)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import trimesh

from latent3d.shape.checks import edge_counts
from latent3d.shape.loss import SketchShapeConfig, make_shape_guide
from latent3d.shape.mesh_io import SUPPORTED_EXTENSIONS, Mesh, load_mesh, normalize_mesh, rotation_matrix
from latent3d.shape.primitives import make_box, make_capsule, make_cylinder, make_sphere, make_torus, union_meshes

pytestmark = pytest.mark.unit
SHAPES = Path("/work/shared/assets/shapes")


def _volume(mesh: Mesh) -> float:
    return float(mesh.to_trimesh().volume)


# -- loading -----------------------------------------------------------------------------------------


def _placed_reference(text: str, mesh_scale: float = 0.7) -> np.ndarray:
    """The official placement, computed independently: the file's own 'v' lines (plain Python), centred on
    their mean, the farthest at mesh_scale."""
    rows = [[float(x) for x in line.split()[1:4]] for line in text.splitlines() if line.split()[:1] == ["v"]]
    n = len(rows)
    mean = [sum(r[i] for r in rows) / n for i in range(3)]
    radius = max(sum((r[i] - mean[i]) ** 2 for i in range(3)) ** 0.5 for r in rows)
    return np.array([[(r[i] - mean[i]) * mesh_scale / radius for i in range(3)] for r in rows])


def test_load_teddy_obj():
    path = SHAPES / "teddy.obj"
    if not path.is_file():
        pytest.skip("reference mesh teddy.obj is not available")
    mesh = load_mesh(path)
    assert mesh.num_faces == 5760 and mesh.num_vertices == 2892  # the file's own 2,892 'v' lines
    assert mesh.vertices.dtype == np.float32 and mesh.faces.dtype == np.int64
    assert mesh.source == str(path) and mesh.uv is None
    normalized = normalize_mesh(mesh)
    assert np.abs(normalized.vertices.mean(0)).max() < 1e-5
    assert np.linalg.norm(normalized.vertices, axis=1).max() == pytest.approx(0.7, abs=1e-5)


def test_teddy_placement_matches_official_vertex_list():
    path = SHAPES / "teddy.obj"
    if not path.is_file():
        pytest.skip("reference mesh teddy.obj is not available")
    reference = _placed_reference(path.read_text())
    np.testing.assert_allclose(normalize_mesh(load_mesh(path)).vertices, reference, rtol=0, atol=1e-6)
    # trimesh's own loading (seams split, per-object vertices) would have placed it elsewhere: the bug
    split = np.asarray(trimesh.load(path, process=False, force="mesh").vertices, dtype=np.float64)
    assert len(split) == 5922
    centre, radius = split.mean(0), np.linalg.norm(split - split.mean(0), axis=1).max()
    file_vertices = load_mesh(path).vertices.astype(np.float64)
    scale = 0.7 / np.linalg.norm(file_vertices - file_vertices.mean(0), axis=1).max()
    assert np.linalg.norm((centre - file_vertices.mean(0)) * scale) > 0.2  # centre 0.22 off
    assert (0.7 / radius) / scale == pytest.approx(0.76, abs=0.01)  # 0.76x the official size


MULTI_OBJECT_OBJ = """# two objects, UV seams, a quad, negative indices, a continuation, extras on 'v'
mtllib ../never-read.mtl
o first
v 0 0 0
v 2 0 0 1.0
v 2 2 0 0.5 0.5 0.5
v 0 2 0
vt 0 0
vt 1 0
vt 1 1
vt 0 1
vt 0.5 0.5
usemtl red
s 1
f 1/1 2/2 3/3 4/4
f 1/5 3/3 \
  2/2
o second
g part
v 5 5 5
v 6 5 5
v 5 6 5
v 5 5 6
vn 0 0 1
usemtl blue
f -4//1 -3//1 -2//1
f -4/-1/1 -2/-2/1 -1/-3/1

f 5 7 8
"""


def test_multi_object_obj_placement_matches_its_v_lines(tmp_path):
    path = tmp_path / "multi.obj"
    path.write_text(MULTI_OBJECT_OBJ)
    mesh = load_mesh(path)
    assert mesh.num_vertices == 8  # the file's 'v' lines, not split at seams or per object
    np.testing.assert_array_equal(mesh.faces, [[0, 1, 2], [0, 2, 3], [0, 2, 1], [4, 5, 6], [4, 6, 7], [4, 6, 7]])
    np.testing.assert_allclose(normalize_mesh(mesh).vertices, _placed_reference(MULTI_OBJECT_OBJ), rtol=0, atol=1e-6)


def test_other_formats_normalize_on_unique_positions(tmp_path):
    sphere = make_sphere(0.5, subdivisions=2)
    shifted = Mesh(sphere.vertices + np.float32([0.3, 0.0, 0.0]), sphere.faces)
    soup = shifted.vertices[shifted.faces].reshape(-1, 3)  # what STL stores: three corners per face
    path = tmp_path / "soup.stl"
    path.write_bytes(trimesh.Trimesh(soup, np.arange(len(soup)).reshape(-1, 3), process=False).export(file_type="stl"))
    loaded = load_mesh(path)
    assert loaded.num_vertices == shifted.num_vertices  # coincident corners merged
    np.testing.assert_allclose(normalize_mesh(loaded).vertices.mean(0), 0.0, atol=1e-6)
    order = np.lexsort(loaded.vertices.T)
    np.testing.assert_allclose(loaded.vertices[order], shifted.vertices[np.lexsort(shifted.vertices.T)], atol=1e-6)


@pytest.mark.parametrize("extension", ["obj", "ply", "stl", "off", "glb", "gltf"])
def test_round_trip_formats(tmp_path, extension):
    original = make_sphere(0.5, subdivisions=2)
    exported = original.to_trimesh().export(file_type=extension)
    if isinstance(exported, dict):  # gltf: the json plus its buffer files
        for name, data in exported.items():
            (tmp_path / name).write_bytes(data)
        path = tmp_path / "model.gltf"
    else:
        path = tmp_path / f"sphere.{extension}"
        path.write_bytes(exported if isinstance(exported, bytes) else exported.encode())
    loaded = load_mesh(path)
    assert loaded.num_faces == original.num_faces
    np.testing.assert_allclose(loaded.bounds(), original.bounds(), atol=1e-5)
    assert _volume(loaded) == pytest.approx(_volume(original), rel=1e-4)


def test_scene_objects_merged_with_transforms(tmp_path):
    scene = trimesh.Scene()
    scene.add_geometry(make_box((1.0, 1.0, 1.0)).to_trimesh(), transform=trimesh.transformations.translation_matrix([2.0, 0.0, 0.0]))
    scene.add_geometry(make_sphere(0.5, 2).to_trimesh())
    path = tmp_path / "scene.glb"
    path.write_bytes(scene.export(file_type="glb"))
    mesh = load_mesh(path)
    assert mesh.num_faces == 12 + make_sphere(0.5, 2).num_faces
    np.testing.assert_allclose(mesh.bounds(), [[-0.5, -0.5, -0.5], [2.5, 0.5, 0.5]], atol=1e-5)


# -- bad input ---------------------------------------------------------------------------------------


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found.*nope.obj"):
        load_mesh(tmp_path / "nope.obj")


def test_unsupported_extension_lists_supported(tmp_path):
    path = tmp_path / "model.fbx"
    path.write_bytes(b"binary")
    with pytest.raises(ValueError, match=r"model\.fbx.*unsupported.*'\.fbx'.*\.obj, \.ply") as info:
        load_mesh(path)
    assert all(ext in str(info.value) for ext in SUPPORTED_EXTENSIONS)


def test_point_cloud_ply_has_no_faces(tmp_path):
    path = tmp_path / "cloud.ply"
    path.write_bytes(trimesh.PointCloud(np.random.default_rng(0).random((20, 3))).export(file_type="ply"))
    with pytest.raises(ValueError, match=r"cloud\.ply.*no faces.*point cloud"):
        load_mesh(path)


def test_text_without_faces_has_no_faces(tmp_path):
    path = tmp_path / "notes.obj"
    path.write_text("this is not a mesh\n")
    with pytest.raises(ValueError, match=r"notes\.obj.*no triangle faces"):
        load_mesh(path)


def test_corrupt_glb_is_unreadable(tmp_path):
    path = tmp_path / "broken.glb"
    path.write_bytes(b"\x00\x01 not a glb")
    with pytest.raises(ValueError, match=r"broken\.glb.*could not be read as a GLB mesh"):
        load_mesh(path)


def test_non_finite_vertices(tmp_path):
    path = tmp_path / "nan.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv nan 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\n")
    with pytest.raises(ValueError, match=r"nan\.obj.*1 vertices have non-finite coordinates \(NaN or inf"):
        load_mesh(path)


def test_zero_extent_mesh(tmp_path):
    path = tmp_path / "point.obj"
    path.write_text("v 1 1 1\nv 1 1 1\nv 1 1 1\nf 1 2 3\n")
    with pytest.raises(ValueError, match=r"point\.obj.*degenerate.*zero extent"):
        load_mesh(path)


def test_zero_area_mesh(tmp_path):
    path = tmp_path / "line.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
    with pytest.raises(ValueError, match=r"line\.obj.*degenerate.*zero area"):
        load_mesh(path)


def test_mesh_arrays_are_validated_and_read_only():
    with pytest.raises(ValueError, match=r"face indices must lie in \[0, 2\]"):
        Mesh(np.zeros((3, 3)), np.array([[0, 1, 3]]))
    mesh = make_box()
    with pytest.raises(ValueError):
        mesh.vertices[0, 0] = 5.0  # read-only: functions return new meshes instead


# -- normalization and primitives ----------------------------------------------------------------------


def test_normalize_scale_rotation_offset():
    box = make_box((2.0, 1.0, 1.0), center=(3.0, 0.0, 0.0))
    mesh = normalize_mesh(box, mesh_scale=0.5, rotation_deg=(0.0, 90.0, 0.0), offset=(0.0, 0.1, 0.0))
    assert np.linalg.norm(mesh.vertices - [0.0, 0.1, 0.0], axis=1).max() == pytest.approx(0.5, abs=1e-6)
    extent = mesh.vertices.max(0) - mesh.vertices.min(0)
    assert extent[2] > extent[0]  # 90° about y turns the long x side onto z
    np.testing.assert_allclose(rotation_matrix((0, 90, 0)) @ [0, 0, 1], [1, 0, 0], atol=1e-12)  # front → +x
    np.testing.assert_allclose(rotation_matrix((90, 0, 0)) @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    with pytest.raises(ValueError, match="mesh_scale must be a positive finite number, got -1"):
        normalize_mesh(box, mesh_scale=-1)
    with pytest.raises(ValueError, match="rotation_deg must be three finite numbers"):
        normalize_mesh(box, rotation_deg=(0, 0))


def test_primitives_are_closed_with_outward_normals():
    cases = [
        (make_sphere(0.5, 3), 4 / 3 * np.pi * 0.125, 0.01),
        (make_box((1.0, 2.0, 0.5)), 1.0, 1e-6),
        (make_capsule(0.2, 1.0), np.pi * 0.04 * 0.6 + 4 / 3 * np.pi * 0.008, 0.02),
        (make_cylinder(0.25, 0.5, sections=64), np.pi * 0.0625 * 0.5, 0.01),
        (make_torus(0.45, 0.15, sections=64), 2 * np.pi**2 * 0.45 * 0.0225, 0.01),
    ]
    for mesh, volume, rel in cases:
        assert edge_counts(mesh) == (0, 0), mesh.source
        assert _volume(mesh) == pytest.approx(volume, rel=rel), mesh.source  # positive: outward normals
    extent = make_capsule(0.2, 1.0).bounds()
    np.testing.assert_allclose(extent[1] - extent[0], [0.4, 1.0, 0.4], atol=1e-3)  # along y by default


def test_union_drops_buried_faces():
    parts = [make_sphere(0.3, 3), make_sphere(0.3, 3)]
    union = union_meshes(parts, offsets=[(0.0, 0.0, 0.0), (0.3, 0.0, 0.0)])
    concatenation = union_meshes(parts, offsets=[(0.0, 0.0, 0.0), (0.3, 0.0, 0.0)], remove_inner=False)
    assert concatenation.num_faces == 2 * parts[0].num_faces
    # each sphere has a quarter of its surface (a cap of height r/2) inside the other; crossing faces stay
    assert 0.70 * concatenation.num_faces < union.num_faces < 0.80 * concatenation.num_faces
    # no face is left deep inside the union: every vertex is outside the other sphere or near its surface
    assert (np.linalg.norm(union.vertices - [0.15, 0.0, 0.0], axis=1) > 0.1).all()
    with pytest.raises(ValueError, match="offsets must have one"):
        union_meshes(parts, offsets=[(0, 0, 0)])


# -- sketch diagnostics (warnings in make_shape_guide) -------------------------------------------------


def _open_box() -> Mesh:
    box = make_box((1.0, 1.0, 1.0))
    centroids = box.vertices[box.faces].mean(1)
    return Mesh(box.vertices, box.faces[centroids[:, 1] < 0.49], source="open_box")  # no top (+y) face


def test_open_sketch_warns_not_watertight():
    with pytest.warns(UserWarning, match=r"open_box is not watertight \(4 boundary edges"):
        make_shape_guide(_open_box(), SketchShapeConfig(mode="exact"))


def test_overlapping_sketch_warns():
    parts = [make_sphere(0.3, 2), make_sphere(0.3, 2)]
    mesh = union_meshes(parts, offsets=[(0.0, 0.0, 0.0), (0.25, 0.0, 0.0)], remove_inner=False)
    with pytest.warns(UserWarning, match="overlapping or self-intersecting parts"):
        make_shape_guide(mesh, SketchShapeConfig(mode="exact"))


def test_inside_out_sketch_is_flipped():
    inverted = make_sphere(0.5, 2).flipped()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        guide = make_shape_guide(inverted, SketchShapeConfig(mode="exact"))
    assert [str(w.message) for w in caught if "inside out" in str(w.message) and "flipped" in str(w.message)]
    assert len(caught) == 1, [str(w.message) for w in caught]  # a closed sphere: nothing else to report
    assert not guide.report.inverted
    import torch

    inside, _ = guide.targets(torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.0, 0.0]]))
    assert inside.tolist() == [1.0, 0.0]


def test_closed_sketch_gives_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_shape_guide(make_sphere(0.5, 2), SketchShapeConfig(mode="exact"))


def test_mesh_copies_writable_inputs():
    vertices = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    mesh = Mesh(vertices, np.array([[0, 1, 2]]))
    vertices[0, 0] = 9.0  # the caller's array stays writable and the mesh does not change
    assert mesh.vertices[0, 0] == 0.0
    assert Mesh(mesh.vertices, mesh.faces).vertices is mesh.vertices  # read-only arrays are shared, not copied
