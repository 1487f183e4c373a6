"""Export writers (GLB, OBJ+MTL+PNG, PLY) reloaded by trimesh and pygltflib."""

import numpy as np
import pygltflib
import pytest
import torch
import trimesh

from latent3d.colors import latents_to_rgb
from latent3d.export import ExportConfig, TexturedMesh, extract_mesh, save_mesh
from latent3d.export.writers import srgb_to_linear
from latent3d.scenes import TwoBlobs

pytestmark = pytest.mark.unit


class Blobs(TwoBlobs):
    """The project's two-ball reference scene with the export interface (bound, query)."""

    bound = 1.0

    def query(self, x):
        return self(x)


def field_colors(points: np.ndarray) -> np.ndarray:
    return latents_to_rgb(Blobs()(torch.from_numpy(points))[1]).numpy()


def config(**changes):
    values = dict(resolution=48, coarse_resolution=16, texture_size=128, face_budget=1500, padding=2, color_offset=0.0)
    values.update(changes)
    return ExportConfig(**values)


@pytest.fixture(scope="module")
def textured():
    return extract_mesh(Blobs(), config())


@pytest.fixture(scope="module")
def colored():
    return extract_mesh(Blobs(), config(color_mode="vertex", face_budget=None))


def load_one(path) -> trimesh.Trimesh:
    return trimesh.load(str(path), force="mesh", process=False)


def accessor(gltf: pygltflib.GLTF2, index: int) -> np.ndarray:
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    dtype = {pygltflib.FLOAT: np.float32, pygltflib.UNSIGNED_INT: np.uint32}[acc.componentType]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}[acc.type]
    data = gltf.binary_blob()[view.byteOffset + (acc.byteOffset or 0) :][: acc.count * width * 4]
    return np.frombuffer(data, dtype=dtype).reshape(acc.count, width)


def assert_colors_close(got: np.ndarray, expected: np.ndarray, median: float = 0.03) -> None:
    """Texture lookups at vertices: nearest texel, and vertices on chart borders see the gutter fill."""
    error = np.abs(got - expected).max(1)
    assert np.median(error) < median and np.quantile(error, 0.9) < 0.1


def test_glb_with_texture_reloads_in_pygltflib_and_trimesh(textured, tmp_path):
    (path,) = save_mesh(textured, tmp_path / "object.glb")
    gltf = pygltflib.GLTF2().load(str(path))
    primitive = gltf.meshes[0].primitives[0]
    material = gltf.materials[primitive.material]
    assert material.pbrMetallicRoughness.baseColorTexture.index == 0
    assert gltf.textures[0].source == 0 and gltf.images[0].mimeType == "image/png" and gltf.images[0].bufferView is not None
    uv = accessor(gltf, primitive.attributes.TEXCOORD_0)
    assert np.isfinite(uv).all() and uv.min() >= 0 and uv.max() <= 1
    np.testing.assert_allclose(uv[:, 1], 1 - textured.uvs[:, 1])  # glTF's origin is the top-left
    np.testing.assert_array_equal(accessor(gltf, primitive.indices).reshape(-1, 3), textured.faces)
    mesh = load_one(path)
    assert mesh.visual.kind == "texture" and mesh.visual.material.baseColorTexture.size == (128, 128)
    np.testing.assert_allclose(mesh.visual.uv, textured.uvs, atol=1e-6)
    assert not np.isnan(mesh.vertices).any() and len(mesh.faces) == len(textured.faces)
    assert_colors_close(mesh.visual.to_color().vertex_colors[:, :3] / 255.0, field_colors(textured.vertices))


def test_glb_with_vertex_colors_stores_linear_color_0(colored, tmp_path):
    (path,) = save_mesh(colored, tmp_path / "object.glb")
    gltf = pygltflib.GLTF2().load(str(path))
    primitive = gltf.meshes[0].primitives[0]
    assert primitive.attributes.TEXCOORD_0 is None and not gltf.images
    np.testing.assert_allclose(accessor(gltf, primitive.attributes.COLOR_0), srgb_to_linear(colored.colors), atol=1e-6)
    position = gltf.accessors[primitive.attributes.POSITION]
    np.testing.assert_allclose(position.min, colored.vertices.min(0), atol=1e-6)
    assert len(load_one(path).faces) == len(colored.faces)


def test_obj_mtl_png_reload_with_texture(textured, tmp_path):
    paths = save_mesh(textured, tmp_path / "object.obj")
    assert [p.name for p in paths] == ["object.obj", "object.mtl", "object.png"]
    assert "map_Kd object.png" in paths[1].read_text()
    mesh = load_one(paths[0])
    assert mesh.visual.kind == "texture" and mesh.visual.material.image.size == (128, 128)
    assert len(mesh.faces) == len(textured.faces)
    assert_colors_close(mesh.visual.to_color().vertex_colors[:, :3] / 255.0, field_colors(mesh.vertices))


def test_obj_and_ply_reload_with_vertex_colors(colored, tmp_path):
    (obj,) = save_mesh(colored, tmp_path / "object.obj")
    (ply,) = save_mesh(colored, tmp_path / "object.ply")
    for path in (obj, ply):
        mesh = load_one(path)
        assert mesh.visual.kind == "vertex" and len(mesh.faces) == len(colored.faces)
        np.testing.assert_allclose(mesh.visual.vertex_colors[:, :3] / 255.0, colored.colors, atol=1 / 255 + 1e-6)
        np.testing.assert_allclose(mesh.vertices, colored.vertices, atol=1e-5)


def test_ply_of_a_textured_mesh_samples_the_texture(textured, tmp_path):
    (ply,) = save_mesh(textured, tmp_path / "object.ply")
    mesh = load_one(ply)
    assert_colors_close(mesh.visual.vertex_colors[:, :3] / 255.0, field_colors(textured.vertices))


def test_save_mesh_format_choice_and_errors(colored, tmp_path):
    assert save_mesh(colored, tmp_path / "mesh.bin", format="ply")[0].read_bytes().startswith(b"ply\n")
    with pytest.raises(ValueError, match="format must be one of"):
        save_mesh(colored, tmp_path / "mesh.stl")
    with pytest.raises(ValueError, match="mesh must be a TexturedMesh"):
        save_mesh({"vertices": colored.vertices}, tmp_path / "mesh.glb")


def test_textured_mesh_validates_its_arrays(colored):
    v, f, n = colored.vertices, colored.faces, colored.normals
    with pytest.raises(ValueError, match=r"vertices must have shape \[N, 3\]"):
        TexturedMesh(v[:, :2], f, n)
    with pytest.raises(ValueError, match="faces must index vertices"):
        TexturedMesh(v, f + len(v), n)
    with pytest.raises(ValueError, match="uvs and texture must be given together"):
        TexturedMesh(v, f, n, uvs=np.zeros((len(v), 2)))
    with pytest.raises(ValueError, match="colors must lie in"):
        TexturedMesh(v, f, n, colors=np.full((len(v), 3), 2.0))
    with pytest.raises(ValueError, match="normals must be finite"):
        TexturedMesh(v, f, np.full_like(n, np.nan))
