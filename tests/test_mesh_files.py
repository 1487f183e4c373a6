"""OBJ/MTL parsing (latent3d.shape.obj_file) and confinement of a mesh's external references
(latent3d.shape.references, .trimesh_io): hostile files are written by the tests into tmp_path."""

from __future__ import annotations

import base64
import json
import logging
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import trimesh

from latent3d.shape.mesh_io import load_mesh
from latent3d.shape.obj_file import read_mtl, read_obj
from latent3d.shape.primitives import make_box
from latent3d.shape.references import UnsafeReferenceError, confined_path

pytestmark = pytest.mark.unit
MARKER = "TOP-SECRET-MARKER-5f3a"

# -- OBJ parsing --------------------------------------------------------------------------------------


def test_obj_forms_negative_indices_and_polygons():
    text = "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nvn 0 0 1\n"
    text += "f 1/1/1 2/2/1 3/3/1 4/4/1\nf -4//1 -2//1 -1//1\nf\t1/-4 2/-3 \\\n 3/-2\n"
    obj = read_obj(text, "forms.obj", texcoords=True)
    np.testing.assert_array_equal(obj.faces, [[0, 1, 2], [0, 2, 3], [0, 2, 3], [0, 1, 2]])
    np.testing.assert_array_equal(obj.face_texcoords, [[0, 1, 2], [0, 2, 3], [-1, -1, -1], [0, 1, 2]])
    assert obj.texcoords.shape == (4, 2)
    sketch = read_obj(text, "forms.obj")  # without texcoords: vt lines and face uv indices are skipped
    assert sketch.texcoords.shape == (0, 2) and (sketch.face_texcoords == -1).all()


def test_obj_comments_continuations_and_line_numbers():
    text = "# a comment ending in a backslash \\\nv 0 0 0\r\nv 1 0 \\\n  0 # x\n\n   \nv 0 1 0\nf 1 2 3 # the face\nf 1 2 9\n"
    assert read_obj(text.replace("f 1 2 9\n", ""), "c.obj").positions.tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0]]
    with pytest.raises(ValueError, match=r"c\.obj line 9: face vertex index out of range"):
        read_obj(text, "c.obj")


def test_obj_materials_and_libraries_are_recorded_not_opened():
    text = "mtllib a.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\nusemtl red\nf 1 2 3\nusemtl blue\nf 1 2 3\nusemtl red\nf 3 2 1\n"
    obj = read_obj(text, "m.obj")
    assert obj.material_names == ("red", "blue")
    np.testing.assert_array_equal(obj.face_materials, [-1, 0, 1, 0])
    assert obj.material_libraries == (("a.mtl", 1),)


@pytest.mark.parametrize(
    "text, match",
    [
        ("v 0 0 0\nv 1 x 0\nv 0 1 0\nf 1 2 3\n", r"bad\.obj line 2: 'v' coordinates must be numbers, got 'x'"),
        ("v 0 0\n", r"bad\.obj line 1: a 'v' statement needs at least 3 numbers, got '0 0'"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\n\nf 1 2 4\n", r"bad\.obj line 5: face vertex index out of range: the file has 3 'v' lines, got '4'"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n", r"bad\.obj line 4: face vertex index must be 1-based or negative .*, got '0'"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf -4 1 2\n", r"line 4: face vertex index must be 1-based or negative \(relative to the 3 defined so far\), got '-4'"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2.5 3\n", r"line 4: face vertex indices must be integers, got '2.5'"),
        ("v 0 0 0\nv 1 0 0\nf 1 2\n", r"line 3: a face needs at least 3 vertices, got '1 2'"),
        ("# only a comment\nv 0 0 0\n", r"bad\.obj: no triangle faces: the file has 1 'v' lines and no 'f' line"),
    ],
)
def test_obj_errors_name_file_line_and_rule(tmp_path, text, match):
    path = tmp_path / "bad.obj"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_mesh(path)


def test_obj_texcoord_errors_only_when_texcoords_are_read():
    text = "v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 zero\nf 1/1 2/1 3/2\n"
    assert read_obj(text, "t.obj").faces.shape == (1, 3)  # a sketch ignores vt
    with pytest.raises(ValueError, match=r"t\.obj line 4: 'vt' coordinates must be numbers, got 'zero'"):
        read_obj(text, "t.obj", texcoords=True)
    with pytest.raises(ValueError, match=r"t\.obj line 5: face texcoord index out of range: the file has 1 'vt' lines, got '2'"):
        read_obj(text.replace("vt 0 zero", "vt 0 0"), "t.obj", texcoords=True)


def test_mtl_colours_and_texture_options():
    text = "newmtl a\nKd 0.5 0.25 2\nmap_Kd -s 2 2 1 -bm 0.5 my tex.png\nnewmtl b\nKd 1 0 0\nnewmtl c\n"
    materials = read_mtl(text, "x.mtl")
    assert materials["a"].color == (0.5, 0.25, 1.0) and materials["a"].texture == "my tex.png" and materials["a"].line == 3
    assert materials["b"].texture is None and materials["c"].color is None
    with pytest.raises(ValueError, match=r"x\.mtl line 2: 'Kd' needs three numbers r g b, got 'red'"):
        read_mtl("newmtl a\nKd red\n", "x.mtl")


# -- confinement of external references ---------------------------------------------------------------


@pytest.fixture
def opened():
    """Every path opened (Python's 'open' audit event) while the test runs."""
    import sys

    record: list[str] = []
    active = [True]

    def hook(event, args):
        if active[0] and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            record.append(os.path.realpath(os.fsdecode(args[0])))

    sys.addaudithook(hook)  # hooks cannot be removed: this one goes quiet after the test
    yield record
    active[0] = False


def _box_buffer() -> tuple[bytes, dict]:
    """A unit box's float32 positions and uint32 indices in one buffer, and the glTF keys describing them."""
    box = make_box()
    positions = box.vertices.astype("<f4").tobytes()
    indices = box.faces.astype("<u4").tobytes()
    document = {
        "asset": {"version": "2.0"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1, "mode": 4}]}],
        "accessors": [
            {"bufferView": 0, "componentType": 5126, "count": 8, "type": "VEC3", "min": [-0.5] * 3, "max": [0.5] * 3},
            {"bufferView": 1, "componentType": 5125, "count": 36, "type": "SCALAR"},
        ],
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": len(positions)}, {"buffer": 0, "byteOffset": len(positions), "byteLength": len(indices)}],
    }
    return positions + indices, document


def _png_with_marker() -> bytes:
    import io

    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("secret", MARKER)
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (255, 0, 0)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


@pytest.fixture
def folder(tmp_path) -> Path:
    """tmp_path/mesh (where the hostile meshes live) next to secrets that must never be read."""
    data, _ = _box_buffer()
    (tmp_path / "secret.bin").write_bytes(data + MARKER.encode() * 4)  # a valid buffer: 4.x would load it
    (tmp_path / "secret.png").write_bytes(_png_with_marker())
    (tmp_path / "secret.mtl").write_text(f"newmtl {MARKER}\nKd 1 0 0\nmap_Kd ../secret.png\n")
    (tmp_path / "mesh").mkdir()
    return tmp_path / "mesh"


def _gltf(folder: Path, buffer_uri: str, image_uri: str | None = None, name: str = "hostile.gltf") -> Path:
    data, document = _box_buffer()
    document["buffers"] = [{"uri": buffer_uri, "byteLength": len(data)}]
    if image_uri is not None:
        document["images"] = [{"uri": image_uri}]
        document["textures"] = [{"source": 0}]
        document["materials"] = [{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}}]
        document["meshes"][0]["primitives"][0]["material"] = 0
    path = folder / name
    path.write_text(json.dumps(document))
    return path


def _glb(folder: Path, external_uri: str) -> Path:
    """A GLB without a BIN chunk whose only buffer is an external file."""
    data, document = _box_buffer()
    document["buffers"] = [{"uri": external_uri, "byteLength": len(data)}]
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)
    path = folder / "hostile.glb"
    path.write_bytes(b"glTF" + struct.pack("<II", 2, 20 + len(text)) + struct.pack("<II", len(text), 0x4E4F534A) + text)
    return path


def _inline(data: bytes) -> str:
    return "data:application/octet-stream;base64," + base64.b64encode(data).decode()


def _assert_refused(path: Path, reference: str, opened, capfd, caplog, call=load_mesh) -> None:
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(UnsafeReferenceError) as info:
            call(path)
    message = str(info.value)
    assert str(path) in message and repr(reference) in message and "inside the mesh's folder" in message
    out, err = capfd.readouterr()
    for text in (message, repr(info.value.__cause__), out, err, caplog.text):
        assert MARKER not in text and "root:" not in text  # neither our secret nor /etc/passwd's content
    secrets = {os.path.realpath(p) for p in (path.parent.parent / "secret.bin", path.parent.parent / "secret.png", path.parent.parent / "secret.mtl", "/etc/passwd")}
    assert not secrets & set(opened), sorted(secrets & set(opened))


@pytest.mark.parametrize(
    "uri", ["/etc/passwd", "../secret.bin", "file:///etc/passwd", "%2e%2e/secret.bin", "..\\secret.bin", "sub/../../secret.bin", "C:/secret.bin"]
)
def test_gltf_buffer_outside_the_folder_is_refused(folder, opened, capfd, caplog, uri):
    path = _gltf(folder, uri)
    _assert_refused(path, uri, opened, capfd, caplog)


def test_gltf_image_outside_the_folder_is_refused(folder, opened, capfd, caplog):
    data, _ = _box_buffer()
    path = _gltf(folder, _inline(data), image_uri="../secret.png")
    _assert_refused(path, "../secret.png", opened, capfd, caplog)


def test_glb_external_buffer_outside_the_folder_is_refused(folder, opened, capfd, caplog):
    _assert_refused(_glb(folder, "../secret.bin"), "../secret.bin", opened, capfd, caplog)


def test_symlink_leading_out_of_the_folder_is_refused(folder, opened, capfd, caplog):
    (folder / "link.bin").symlink_to(folder.parent / "secret.bin")
    path = _gltf(folder, "link.bin")
    _assert_refused(path, "link.bin", opened, capfd, caplog)
    with pytest.raises(UnsafeReferenceError, match="escapes the folder through a symlink"):
        load_mesh(path)


def test_ply_texture_file_outside_the_folder_is_refused(folder, opened, capfd, caplog):
    path = folder / "hostile.ply"
    path.write_text(
        "ply\nformat ascii 1.0\ncomment TextureFile ../secret.png\nelement vertex 3\nproperty float x\nproperty float y\n"
        "property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n"
    )
    _assert_refused(path, "../secret.png", opened, capfd, caplog)


def test_obj_sketch_never_opens_its_mtllib(folder, opened):
    path = folder / "hostile.obj"
    path.write_text("mtllib ../secret.mtl\nusemtl x\nv 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\n")
    assert load_mesh(path).num_faces == 2
    assert not {os.path.realpath(folder.parent / "secret.mtl"), os.path.realpath(folder.parent / "secret.png")} & set(opened)


def test_confined_resolver_refuses_on_its_own(folder, opened):
    """Guard 2 without guard 1: trimesh given our resolver cannot read the secret either."""
    import io

    from latent3d.shape.trimesh_io import ConfinedResolver

    path = _gltf(folder, "../secret.bin")
    resolver = ConfinedResolver(folder, str(path))
    for name in ("../secret.bin", "/etc/passwd", "file:///etc/passwd", "sub/../../secret.bin"):
        with pytest.raises(UnsafeReferenceError):
            resolver.get(name)
    with pytest.raises(UnsafeReferenceError):
        trimesh.load(io.BytesIO(path.read_bytes()), file_type="gltf", resolver=resolver)
    with pytest.raises(UnsafeReferenceError):
        resolver.namespaced("sub").get("../../secret.bin")
    assert os.path.realpath(folder.parent / "secret.bin") not in opened
    assert sorted(resolver.keys()) == ["hostile.gltf"]


def test_legitimate_references_inside_the_folder_load(folder):
    data, _ = _box_buffer()
    (folder / "my data.bin").write_bytes(data)
    (folder / "sub").mkdir()
    (folder / "sub" / "box.bin").write_bytes(data)
    (folder / "tex.png").write_bytes(_png_with_marker())
    for uri, image in (("my%20data.bin", None), ("sub/box.bin", "tex.png"), ("sub/../my data.bin", None), (_inline(data), "./tex.png")):
        mesh = load_mesh(_gltf(folder, uri, image, name="ok.gltf"))
        assert mesh.num_faces == 12 and mesh.num_vertices == 8
    (folder / "inside.bin").symlink_to(folder / "sub" / "box.bin")  # a symlink that stays inside is fine
    assert load_mesh(_gltf(folder, "inside.bin", name="ok.gltf")).num_faces == 12
    with pytest.raises(ValueError, match=r"could not be read as a GLTF mesh"):
        load_mesh(_gltf(folder, "missing.bin", name="ok.gltf"))


def test_confined_path_rules(tmp_path):
    assert confined_path("a/b.png", tmp_path, "m.obj", "map_Kd") == (tmp_path / "a" / "b.png").resolve()
    for reference, why in (
        ("/abs.png", "absolute path"),
        ("../x.png", "with '..'"),
        ("http://example.com/x.png", "URL"),
        ("C:\\x.png", "drive"),
        ("\\\\server\\share\\x.png", "drive"),
        ("", "empty"),
        ("a\0b", "NUL"),
    ):
        with pytest.raises(UnsafeReferenceError, match=why):
            confined_path(reference, tmp_path, "m.obj", "map_Kd")
