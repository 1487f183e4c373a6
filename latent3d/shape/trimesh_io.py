"""PLY, STL, OFF, GLB and GLTF through trimesh, with every external reference confined to the mesh's folder.

Three guards, each enough on its own for the formats it covers (``references`` states the rule):
1. before trimesh sees a GLTF or GLB, its JSON is parsed here and every ``uri`` is checked; a PLY header's
   ``TextureFile`` likewise;
2. trimesh reads from an in-memory copy of the file (no name, so it cannot build its own
   ``FilePathResolver``) and gets a ``ConfinedResolver`` that refuses names leaving the folder;
3. sketches load with ``skip_materials``, so trimesh does not even ask for images.
This module imports trimesh at import time; import it lazily.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterator

import trimesh

from .references import UnsafeReferenceError, check_gltf_references, check_ply_references, gltf_document, read_confined

TRIMESH_EXTENSIONS = (".ply", ".stl", ".off", ".glb", ".gltf")


class ConfinedResolver(trimesh.resolvers.Resolver):
    """A read-only trimesh resolver that serves files inside ``root`` only (``references.read_confined``).

    Names are resolved relative to ``base`` (``root`` unless ``namespaced``) and may never leave ``root``.
    """

    def __init__(self, root: str | os.PathLike, source: str, base: str = "") -> None:
        self.root = Path(root).resolve()
        self.source = source
        self.base = base

    def get(self, name: str) -> bytes:
        name = f"{self.base}/{name}" if self.base else name
        return read_confined(name, self.root, self.source, "reference", uri=True)

    def keys(self) -> Iterator[str]:
        """Relative names of the regular files under ``root`` that resolve inside it."""
        for folder, _, names in os.walk(self.root):
            for name in names:
                path = Path(folder) / name
                if path.is_file() and path.resolve().is_relative_to(self.root):
                    yield str(path.relative_to(self.root))

    def namespaced(self, namespace: str) -> "ConfinedResolver":
        base = f"{self.base}/{namespace}" if self.base else namespace
        return ConfinedResolver(self.root, self.source, base)

    def write(self, name: str, data) -> None:
        raise UnsafeReferenceError(f"{self.source}: refusing to write {name!r}: loading a mesh never writes files")


def check_references(data: bytes, suffix: str, root: Path, source: str) -> None:
    """Guard 1: refuse GLTF/GLB ``uri``s and PLY ``TextureFile``s that leave ``root``."""
    if suffix in (".gltf", ".glb"):
        check_gltf_references(gltf_document(data, source, binary=suffix == ".glb"), root, source)
    elif suffix == ".ply":
        check_ply_references(data, root, source)


def load_geometry(path: Path, materials: bool):
    """A trimesh Scene or geometry from ``path`` (one of TRIMESH_EXTENSIONS), references confined to its
    folder; ``materials`` False skips textures (sketches). Raises UnsafeReferenceError for refused
    references and ValueError "could not be read as a … mesh" for what trimesh cannot parse."""
    source, suffix = str(path), path.suffix.lower()
    data = path.read_bytes()
    check_references(data, suffix, path.parent, source)
    resolver = ConfinedResolver(path.parent, source)
    try:
        return trimesh.load(io.BytesIO(data), file_type=suffix[1:], resolver=resolver, process=False, skip_materials=not materials)
    except UnsafeReferenceError:
        raise
    except Exception as e:  # trimesh raises many types for corrupt files
        raise ValueError(f"{source}: could not be read as a {suffix[1:].upper()} mesh: {type(e).__name__}: {e}") from e


def triangle_parts(geometry, source: str) -> list:
    """The ``trimesh.Trimesh`` parts with faces, scene-graph transforms applied (copies, visuals kept).

    Raises ValueError naming ``source`` when there are no triangle faces (e.g. a point-cloud PLY).
    """
    if isinstance(geometry, trimesh.Scene):
        parts = [g for g in geometry.dump(concatenate=False) if isinstance(g, trimesh.Trimesh) and len(g.faces)]
        if not parts:
            kinds = sorted({type(g).__name__ for g in geometry.geometry.values()}) or ["nothing"]
            raise ValueError(f"{source}: file contains no triangle faces (found {', '.join(kinds)}); a mesh needs a triangle surface")
        return parts
    if not isinstance(geometry, trimesh.Trimesh) or not len(geometry.faces):
        raise ValueError(f"{source}: mesh has no faces (got a {type(geometry).__name__}, a point cloud?); a mesh needs a triangle surface")
    return [geometry]
