"""Mesh writers: GLB (embedded PNG baseColorTexture or COLOR_0), OBJ + MTL + PNG, binary PLY.

Conventions, checked against what three.js (ComfyUI's Preview3D) expects:
- glTF puts the UV origin at the image's top-left, so the GLB stores (u, 1 − v); OBJ keeps (u, v) with the
  origin at the bottom-left (three.js's OBJLoader textures flip on upload).
- glTF's COLOR_0 is linear RGB (three.js reads it so), so sRGB vertex colours are linearised for the GLB;
  OBJ ("v x y z r g b") and PLY (uchar) carry sRGB as is. baseColorTexture images are sRGB by the spec.
- Materials are non-metallic and fully rough: the colours already include the field's baked shading.
- A mesh with both a texture and vertex colours is written with the texture only (three.js would multiply
  the two).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .mesh import TexturedMesh

FORMATS = ("glb", "obj", "ply")
_GENERATOR = "ComfyUI-Latent3D"


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB [..] in [0, 1] -> linear RGB (IEC 61966-2-1)."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


class _GlbBuffer:
    """The single binary buffer of a GLB being filled: 4-byte aligned buffer views and their accessors."""

    def __init__(self) -> None:
        import pygltflib

        self.gl = pygltflib
        self.blob = bytearray()
        self.views: list = []
        self.accessors: list = []

    def view(self, data: bytes, target: int | None = None) -> int:
        self.blob.extend(b"\0" * (-len(self.blob) % 4))
        self.views.append(self.gl.BufferView(buffer=0, byteOffset=len(self.blob), byteLength=len(data), target=target))
        self.blob.extend(data)
        return len(self.views) - 1

    def accessor(self, array: np.ndarray, kind: str, component: int, target: int, bounds: bool = False) -> int:
        """array [N, K] (float32 or uint32) -> accessor index; ``bounds`` adds min/max (POSITION needs them)."""
        view = self.view(np.ascontiguousarray(array).tobytes(), target)
        extra = {"min": array.min(0).tolist(), "max": array.max(0).tolist()} if bounds else {}
        self.accessors.append(self.gl.Accessor(bufferView=view, componentType=component, count=len(array), type=kind, **extra))
        return len(self.accessors) - 1


def write_glb(mesh: TexturedMesh, path: str | os.PathLike) -> Path:
    """Binary glTF 2.0: one mesh, one primitive; texture mode embeds the PNG as baseColorTexture."""
    buffer = _GlbBuffer()
    gl = buffer.gl
    vec = dict(component=gl.FLOAT, target=gl.ARRAY_BUFFER)
    attributes = gl.Attributes(
        POSITION=buffer.accessor(mesh.vertices, gl.VEC3, bounds=True, **vec), NORMAL=buffer.accessor(mesh.normals, gl.VEC3, **vec)
    )
    if mesh.uvs is not None:
        attributes.TEXCOORD_0 = buffer.accessor(np.stack([mesh.uvs[:, 0], 1.0 - mesh.uvs[:, 1]], -1).astype(np.float32), gl.VEC2, **vec)
    elif mesh.colors is not None:
        attributes.COLOR_0 = buffer.accessor(srgb_to_linear(mesh.colors).astype(np.float32), gl.VEC3, **vec)
    indices = buffer.accessor(mesh.faces.astype(np.uint32).reshape(-1, 1), gl.SCALAR, gl.UNSIGNED_INT, gl.ELEMENT_ARRAY_BUFFER)
    pbr = gl.PbrMetallicRoughness(metallicFactor=0.0, roughnessFactor=1.0)
    gltf = gl.GLTF2(asset=gl.Asset(generator=_GENERATOR, version="2.0"))
    if mesh.texture is not None:
        gltf.images = [gl.Image(bufferView=buffer.view(_png_bytes(mesh.texture)), mimeType="image/png")]
        gltf.samplers = [gl.Sampler(magFilter=gl.LINEAR, minFilter=gl.LINEAR_MIPMAP_LINEAR, wrapS=gl.CLAMP_TO_EDGE, wrapT=gl.CLAMP_TO_EDGE)]
        gltf.textures = [gl.Texture(sampler=0, source=0)]
        pbr.baseColorTexture = gl.TextureInfo(index=0)
    gltf.materials = [gl.Material(name="latent3d", pbrMetallicRoughness=pbr, doubleSided=False)]
    gltf.meshes = [gl.Mesh(name="latent3d", primitives=[gl.Primitive(attributes=attributes, indices=indices, material=0, mode=gl.TRIANGLES)])]
    gltf.nodes = [gl.Node(name="latent3d", mesh=0)]
    gltf.scenes, gltf.scene = [gl.Scene(nodes=[0])], 0
    gltf.accessors, gltf.bufferViews = buffer.accessors, buffer.views
    buffer.blob.extend(b"\0" * (-len(buffer.blob) % 4))
    gltf.buffers = [gl.Buffer(byteLength=len(buffer.blob))]
    gltf.set_binary_blob(bytes(buffer.blob))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    gltf.save_binary(str(path))
    return path


def _rows(array: np.ndarray, prefix: str, fmt: str) -> str:
    buffer = io.StringIO()
    np.savetxt(buffer, array, fmt=fmt, delimiter=" ")
    lines = buffer.getvalue().splitlines()
    return "".join(f"{prefix} {line}\n" for line in lines)


def write_obj(mesh: TexturedMesh, path: str | os.PathLike) -> list[Path]:
    """Wavefront OBJ; textured meshes also get ``<stem>.mtl`` and ``<stem>.png`` beside it (map_Kd).
    Vertex colours go into "v x y z r g b" lines (read by three.js, MeshLab, Blender). Returns
    [obj, mtl, png] or [obj]."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = path.stem
    head = [f"# {_GENERATOR}\n"]
    written = [path]
    if mesh.texture is not None:
        mtl, png = path.with_suffix(".mtl"), path.with_suffix(".png")
        Image.fromarray(mesh.texture).save(png)
        mtl.write_text(f"# {_GENERATOR}\nnewmtl latent3d\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\nmap_Kd {png.name}\n")
        head.append(f"mtllib {mtl.name}\n")
        written += [mtl, png]
    colors = mesh.colors if mesh.texture is None else None
    v = mesh.vertices if colors is None else np.concatenate([mesh.vertices, colors], 1)
    body = [f"o {stem}\n", _rows(v, "v", "%.6f")]
    if mesh.uvs is not None:
        body.append(_rows(mesh.uvs, "vt", "%.6f"))
    body.append(_rows(mesh.normals, "vn", "%.6f"))
    if mesh.texture is not None:
        body.append("usemtl latent3d\n")
    f = mesh.faces + 1
    corner = np.repeat(f, 3, axis=1) if mesh.uvs is not None else np.stack([f, f], -1).reshape(len(f), -1)
    face_fmt = "%d/%d/%d %d/%d/%d %d/%d/%d" if mesh.uvs is not None else "%d//%d %d//%d %d//%d"
    body.append(_rows(corner, "f", face_fmt))
    path.write_text("".join(head + body))
    return written


def write_ply(mesh: TexturedMesh, path: str | os.PathLike) -> Path:
    """Binary little-endian PLY with normals and uchar sRGB vertex colours (sampled from the texture when
    the mesh has one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    colors = mesh.vertex_colors()
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertex = np.empty(len(mesh.vertices), dtype=fields)
    for i, axis in enumerate("xyz"):
        vertex[axis] = mesh.vertices[:, i]
        vertex["n" + axis] = mesh.normals[:, i]
    if colors is not None:
        rgb = np.round(colors * 255).astype(np.uint8)
        vertex["red"], vertex["green"], vertex["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    face = np.empty(len(mesh.faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    face["n"], face["i"] = 3, mesh.faces
    types = {"<f4": "float", "u1": "uchar"}
    props = "".join(f"property {types[t]} {name}\n" for name, t in fields)
    header = (
        f"ply\nformat binary_little_endian 1.0\ncomment {_GENERATOR}\nelement vertex {len(vertex)}\n{props}"
        f"element face {len(face)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    with open(path, "wb") as out:
        out.write(header.encode("ascii"))
        out.write(vertex.tobytes())
        out.write(face.tobytes())
    return path


def save_mesh(mesh: TexturedMesh, path: str | os.PathLike, format: str | None = None) -> list[Path]:
    """Write ``mesh`` as GLB, OBJ (+MTL+PNG) or PLY, picked by ``format`` or else by the file extension.
    Returns the written paths, the mesh file first."""
    if not isinstance(mesh, TexturedMesh):
        raise ValueError(f"mesh must be a TexturedMesh, got {type(mesh).__name__}")
    path = Path(path)
    kind = (format or path.suffix.lstrip(".")).lower()
    if kind not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)} (or a path ending in one), got {format or path.name!r}")
    if kind == "glb":
        return [write_glb(mesh, path)]
    if kind == "obj":
        return write_obj(mesh, path)
    return [write_ply(mesh, path)]
