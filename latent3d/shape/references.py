"""Files a mesh refers to (glTF buffers and images, OBJ ``mtllib``/``map_Kd``, PLY ``TextureFile``),
confined to the mesh file's own folder.

Why: through the ComfyUI node, a mesh in the input folder is user content; a reference such as
``/etc/passwd``, ``../secret.bin`` or a symlink leading out would otherwise be read and its bytes could
reach a preview or an error message (trimesh < 5 follows such references; 5.x refuses them, but we do not
depend on the version). The rule, enforced here whatever trimesh does:

- ``data:`` URIs (glTF) are allowed: they hold their bytes inline;
- otherwise a reference must be a relative path that resolves, after following symlinks, to a file
  inside the folder holding the mesh file (subfolders are fine); absolute paths, Windows drive or UNC
  paths, ``..`` escapes, symlinks leading out, and URL schemes (``file:``, ``http:``, …) are refused;
- glTF URIs are percent-decoded (the spec's form) and both the raw and decoded names must pass.

Errors name the mesh file, where the reference sits and the reference; they never include any bytes of
the referenced file (nothing is read before the check passes). A file swapped for a symlink between the
check and the read (a race by someone who can write the folder) is outside this guard.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterator
from urllib.parse import unquote, urlsplit

_JSON_CHUNK = 0x4E4F534A  # b"JSON" little-endian
_RULE = "only relative names of files inside the mesh's folder are read"


class UnsafeReferenceError(ValueError):
    """A mesh refers to a file outside its own folder (or by URL): refused, nothing was read."""


def _refuse(source: str, where: str, reference: str, why: str) -> UnsafeReferenceError:
    return UnsafeReferenceError(f"{source}: {where} {reference!r} {why}; {_RULE} (copy the file beside the mesh and name it relatively)")


def _candidates(reference: str, uri: bool) -> list[str]:
    names = [reference, unquote(reference)] if uri else [reference]
    return list(dict.fromkeys(names))


def _check_name(name: str, root: Path, source: str, where: str, reference: str) -> Path:
    if not name.strip() or "\0" in name:
        raise _refuse(source, where, reference, "is empty or holds a NUL character")
    text = name.strip().replace("\\", "/")
    if urlsplit(text).scheme or PureWindowsPath(name.strip()).drive:
        raise _refuse(source, where, reference, "is a URL or drive path (URL schemes are never followed)")
    if PurePosixPath(text).is_absolute():
        raise _refuse(source, where, reference, "is an absolute path")
    path = (root / text).resolve()
    if not path.is_relative_to(root):
        escape = "escapes the folder through a symlink" if ".." not in PurePosixPath(text).parts else "escapes the folder with '..'"
        raise _refuse(source, where, reference, escape)
    return path


def confined_path(reference: str, root: str | os.PathLike, source: str, where: str, uri: bool = False) -> Path:
    """The file ``reference`` names, resolved inside ``root`` (the mesh's folder).

    ``where`` says what holds the reference in errors (e.g. "buffers[0].uri", "line 3: mtllib").
    With ``uri`` the name is also percent-decoded (glTF); every form must stay inside ``root``, the
    decoded one is returned when it exists. Raises UnsafeReferenceError; the file need not exist.
    """
    if not isinstance(reference, str):
        raise _refuse(source, where, str(reference), f"is not a string ({type(reference).__name__})")
    base = Path(root).resolve()
    paths = [_check_name(name, base, source, where, reference) for name in _candidates(reference, uri)]
    return next((p for p in reversed(paths) if p.exists()), paths[-1])


def read_confined(reference: str, root: str | os.PathLike, source: str, where: str, uri: bool = False) -> bytes:
    """The bytes of the file ``reference`` names inside ``root`` (see ``confined_path``).

    Raises UnsafeReferenceError when refused, FileNotFoundError (naming ``source`` and the reference,
    not the resolved path) when there is no such regular file.
    """
    path = confined_path(reference, root, source, where, uri)
    if not path.is_file():
        raise FileNotFoundError(f"{source}: {where} {reference!r}: no such file beside the mesh")
    return path.read_bytes()


def _uris(node: Any, where: str) -> Iterator[tuple[str, Any]]:
    """Every ("pointer", value) of a key named ``uri`` anywhere in a glTF document (extensions too)."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{where}.{key}" if where else str(key)
            if key == "uri":
                yield here, value
            else:
                yield from _uris(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _uris(value, f"{where}[{i}]")


def check_gltf_references(document: Any, root: str | os.PathLike, source: str) -> None:
    """Refuse a glTF document (the parsed JSON) whose ``uri``s leave ``root``; ``data:`` URIs pass."""
    if not isinstance(document, dict):
        raise ValueError(f"{source}: a glTF document must be a JSON object, got {type(document).__name__}")
    for where, uri in _uris(document, ""):
        if isinstance(uri, str) and uri.strip()[:5].lower() == "data:":
            continue
        confined_path(uri, root, source, where, uri=True)


def gltf_document(data: bytes, source: str, binary: bool) -> dict:
    """The JSON of a .gltf file, or of a GLB's first chunk (which must be the JSON chunk, as trimesh and
    the spec require). Raises ValueError "could not be read as a GLB/GLTF mesh" for malformed input."""
    kind = "GLB" if binary else "GLTF"
    try:
        if binary:
            if len(data) < 20 or data[:4] != b"glTF":
                raise ValueError("not a binary glTF: the file must start with 'glTF'")
            length, chunk = struct.unpack_from("<II", data, 12)
            if chunk != _JSON_CHUNK or 20 + length > len(data):
                raise ValueError("the first chunk must be a complete JSON chunk")
            data = data[20 : 20 + length]
        document = json.loads(data.decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError, RecursionError, struct.error) as e:
        raise ValueError(f"{source}: could not be read as a {kind} mesh: {type(e).__name__}: {e}") from e
    if not isinstance(document, dict):
        raise ValueError(f"{source}: could not be read as a {kind} mesh: its JSON is a {type(document).__name__}, not an object")
    return document


def check_ply_references(data: bytes, root: str | os.PathLike, source: str) -> None:
    """Refuse a PLY whose header names a ``TextureFile`` outside ``root`` (both the rest of the line, as
    trimesh 5 reads it, and its last word are checked)."""
    end = data.find(b"end_header", 0, 1 << 20)
    header = data[: end if end >= 0 else 1 << 20].decode("utf-8", errors="replace")
    for number, line in enumerate(header.split("\n"), 1):
        at = line.lower().find("texturefile")
        if at < 0:
            continue
        name = line[at + len("texturefile") :].strip()
        for candidate in dict.fromkeys([name, name.split()[-1] if name.split() else name]):
            confined_path(candidate, root, source, f"header line {number}: TextureFile")
