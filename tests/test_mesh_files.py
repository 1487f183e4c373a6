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
