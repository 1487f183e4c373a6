"""Wavefront OBJ and MTL text, parsed by us (no file is followed here; callers resolve the names).

Why our own parser: trimesh splits an OBJ's vertices at UV seams and per ``o`` object, so the vertex mean
that the paper's normalization uses (docs/method.md §2) moves (teddy.obj: 2,892 ``v`` lines, 5,922 vertices after
trimesh; centre 0.22 off, size 0.76×). libigl's ``read_obj``, which the official code uses, returns the
file's own ``v`` list; so does ``read_obj`` here. It also never opens ``mtllib`` files itself, so reading a
sketch cannot reach any other file.

What is read: ``v x y z [w | r g b]`` (extras ignored), ``vt u [v [w]]`` (only with ``texcoords``),
``f`` with ``v``, ``v/vt``, ``v//vn`` or ``v/vt/vn`` corners, 1-based or negative (relative) indices,
polygons fan-triangulated (0, i, i+1); ``usemtl`` and ``mtllib`` names are recorded; ``#`` comments, ``\\``
line continuations and blank lines are handled; every other statement (``vn``, ``o``, ``g``, ``s``, ``l``,
curves, …) is ignored. Speed, pure Python: ≈ 14 MB/s (blub.obj, 0.8 MB and 14k faces: 0.06 s).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Iterator

import numpy as np


@dataclass(frozen=True)
class ObjFile:
    """The geometry of one OBJ file, indices 0-based."""

    positions: np.ndarray
    """[P, 3] float64: the file's ``v`` lines in file order (colour/w extras dropped)."""
    faces: np.ndarray
    """[F, 3] int64 indices into ``positions``; polygons fan-triangulated, in file order."""
    texcoords: np.ndarray
    """[T, 2] float64 ``vt`` (u, v) as stored (OBJ's v points up); [0, 2] unless read with texcoords."""
    face_texcoords: np.ndarray
    """[F, 3] int64 indices into ``texcoords``; -1 for corners without one (all -1 without texcoords)."""
    face_materials: np.ndarray
    """[F] int64 index into ``material_names`` of the ``usemtl`` in force; -1 before the first one."""
    material_names: tuple[str, ...]
    """``usemtl`` names in order of first use."""
    material_libraries: tuple[tuple[str, int], ...]
    """(name, line number) of every ``mtllib`` file named; not opened here."""


def _fail(source: str, line: int, rule: str, value: str) -> ValueError:
    return ValueError(f"{source} line {line}: {rule}, got {value!r}")


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based number of the first physical line, content) with ``#`` comments removed, then ``\\``
    continuations joined (a backslash inside a comment continues nothing); blank lines are skipped."""
    pending, start = "", 0
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip("\r").split("#", 1)[0].rstrip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = (pending + line).strip(), ""
        if line:
            yield start, line
    if pending.strip():
        yield start, pending.strip()


class _Reader:
    """The state of one pass over the statements (counts so far resolve negative indices)."""

    def __init__(self, source: str, texcoords: bool) -> None:
        self.source, self.read_texcoords = source, texcoords
        self.positions, self.texcoords = array("d"), array("d")
        self.faces, self.face_uv, self.face_line, self.face_material = array("q"), array("q"), array("q"), array("q")
        self.materials: dict[str, int] = {}
        self.material = -1
        self.libraries: list[tuple[str, int]] = []

    def numbers(self, line: int, words: list[str], keyword: str, needed: int, wanted: int) -> list[float]:
        if len(words) < needed:
            raise _fail(self.source, line, f"a '{keyword}' statement needs at least {needed} numbers", " ".join(words))
        try:
            values = [float(w) for w in words[:wanted]]
        except ValueError:
            bad = next(w for w in words[:wanted] if not _is_number(w))
            raise _fail(self.source, line, f"'{keyword}' coordinates must be numbers", bad) from None
        return values + [0.0] * (wanted - len(values))

    def index(self, line: int, text: str, count: int, kind: str) -> int:
        """A 1-based or negative OBJ index -> 0-based; positive ones are range-checked at the end."""
        try:
            value = int(text)
        except ValueError:
            raise _fail(self.source, line, f"face {kind} indices must be integers", text) from None
        if value > 0:
            return value - 1
        if value == 0 or value + count < 0:
            rule = f"face {kind} index must be 1-based or negative (relative to the {count} defined so far)"
            raise _fail(self.source, line, rule, text)
        return value + count

    def face(self, line: int, corners: list[str]) -> None:
        if len(corners) < 3:
            raise _fail(self.source, line, "a face needs at least 3 vertices", " ".join(corners))
        n_v, n_t = len(self.positions) // 3, len(self.texcoords) // 2
        vertex, uv = [], []
        for corner in corners:
            parts = corner.split("/")
            vertex.append(self.index(line, parts[0], n_v, "vertex"))
            has_uv = self.read_texcoords and len(parts) > 1 and parts[1] != ""
            uv.append(self.index(line, parts[1], n_t, "texcoord") if has_uv else -1)
        for i in range(1, len(corners) - 1):
            self.faces.extend((vertex[0], vertex[i], vertex[i + 1]))
            self.face_uv.extend((uv[0], uv[i], uv[i + 1]))
            self.face_line.append(line)
            self.face_material.append(self.material)

    def statement(self, line: int, text: str) -> None:
        keyword, rest = _split_keyword(text)
        if keyword == "v":
            self.positions.extend(self.numbers(line, rest.split(), "v", 3, 3))
        elif keyword == "f":
            self.face(line, rest.split())
        elif keyword == "vt" and self.read_texcoords:
            self.texcoords.extend(self.numbers(line, rest.split(), "vt", 1, 2))
        elif keyword == "usemtl":
            self.material = self.materials.setdefault(rest.strip(), len(self.materials))
        elif keyword == "mtllib" and rest.strip():
            self.libraries.append((rest.strip(), line))


def _split_keyword(statement: str) -> tuple[str, str]:
    """(keyword, rest) split at the first run of blanks (spaces or tabs)."""
    parts = statement.split(None, 1)
    return parts[0], parts[1] if len(parts) > 1 else ""


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _check_range(source: str, reader: _Reader, indices: np.ndarray, count: int, kind: str, keyword: str) -> None:
    """Positive indices may point forward in the file; now that the counts are known, check them."""
    bad = np.flatnonzero((indices >= count).any(axis=1))
    if len(bad):
        face = int(bad[0])
        rule = f"face {kind} index out of range: the file has {count} '{keyword}' lines"
        raise _fail(source, int(reader.face_line[face]), rule, str(int(indices[face].max()) + 1))


def read_obj(text: str, source: str, texcoords: bool = False) -> ObjFile:
    """Parse OBJ ``text`` (``source`` names it in errors). ``texcoords`` also reads ``vt`` and face uv
    indices (sketches do not need them, so a broken ``vt`` cannot stop a sketch from loading).

    Raises ValueError naming ``source``, the line, the rule and the value: non-numeric coordinates, faces
    with fewer than 3 corners, non-integer, zero or out-of-range indices, or no ``f`` lines at all.
    """
    reader = _Reader(source, texcoords)
    for line, text_line in logical_lines(text):
        reader.statement(line, text_line)
    positions = np.frombuffer(reader.positions, dtype=np.float64).reshape(-1, 3)
    if not len(reader.faces):
        raise ValueError(
            f"{source}: no triangle faces: the file has {len(positions)} 'v' lines and no 'f' line; a mesh needs a triangle surface"
        )
    faces = np.frombuffer(reader.faces, dtype=np.int64).reshape(-1, 3)
    face_uv = np.frombuffer(reader.face_uv, dtype=np.int64).reshape(-1, 3)
    uvs = np.frombuffer(reader.texcoords, dtype=np.float64).reshape(-1, 2)
    _check_range(source, reader, faces, len(positions), "vertex", "v")
    _check_range(source, reader, face_uv, len(uvs), "texcoord", "vt")
    return ObjFile(
        positions.copy(),
        faces.copy(),
        uvs.copy(),
        face_uv.copy(),
        np.frombuffer(reader.face_material, dtype=np.int64).copy(),
        tuple(reader.materials),
        tuple(reader.libraries),
    )


@dataclass(frozen=True)
class MtlMaterial:
    """What Latent-Paint takes from one ``newmtl`` block."""

    name: str
    color: tuple[float, float, float] | None
    """``Kd`` (r, g, b) in [0, 1] as written (treated as sRGB display values), or None."""
    texture: str | None
    """``map_Kd`` file name (options such as ``-s``/``-o`` removed; they are ignored), or None."""
    line: int
    """Line of the ``map_Kd`` (or of ``newmtl``), for error messages."""


# number of arguments each map_Kd option takes (``-o``, ``-s``, ``-t`` take 1 to 3 numbers)
_MAP_OPTIONS = {"-blendu": 1, "-blendv": 1, "-bm": 1, "-boost": 1, "-cc": 1, "-clamp": 1, "-imfchan": 1, "-mm": 2, "-texres": 1}


def _map_name(words: list[str]) -> str:
    """The file name of a ``map_Kd`` statement's words (options skipped; names may hold spaces)."""
    i = 0
    while i < len(words) and words[i].startswith("-") and not _is_number(words[i]):
        option = words[i].lower()
        if option in ("-o", "-s", "-t"):
            i += 1
            taken = 0
            while i < len(words) - 1 and taken < 3 and _is_number(words[i]):
                i, taken = i + 1, taken + 1
        else:
            i += 1 + _MAP_OPTIONS.get(option, 0)
    return " ".join(words[i:])


def read_mtl(text: str, source: str) -> dict[str, MtlMaterial]:
    """Parse MTL ``text``: per ``newmtl`` its ``Kd`` and ``map_Kd`` (other statements ignored).

    Raises ValueError naming ``source`` and the line for a non-numeric ``Kd``.
    """
    materials: dict[str, MtlMaterial] = {}
    name, color, texture, where = None, None, None, 0

    def close() -> None:
        if name is not None:
            materials[name] = MtlMaterial(name, color, texture, where)

    for line, statement in logical_lines(text):
        keyword, rest = _split_keyword(statement)
        keyword = keyword.lower()
        if keyword == "newmtl":
            close()
            name, color, texture, where = rest.strip(), None, None, line
        elif keyword == "kd" and name is not None:
            words = rest.split()
            if len(words) < 3 or not all(_is_number(w) for w in words[:3]):
                raise _fail(source, line, "'Kd' needs three numbers r g b", rest.strip())
            color = tuple(min(max(float(w), 0.0), 1.0) for w in words[:3])
        elif keyword == "map_kd" and name is not None:
            texture, where = _map_name(rest.split()) or None, line
    close()
    return materials
