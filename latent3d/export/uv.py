"""UV atlas (xatlas), texel rasterization of UV triangles, and gutter filling.

Convention: UVs follow ``TexturedMesh.uvs`` (v up); texel (row, col) of an H×W image has its centre at
u = (col + 0.5)/W, v = 1 − (row + 0.5)/H.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class UVAtlas:
    vertex_map: np.ndarray
    """[V'] int64: the input vertex each output vertex copies (seams split vertices)."""
    faces: np.ndarray
    """[F, 3] int64 faces over the output vertices (same order as the input faces)."""
    uvs: np.ndarray
    """[V', 2] float32 in [0, 1], v up."""


def unwrap(vertices: np.ndarray, faces: np.ndarray, size: int, padding: int) -> UVAtlas:
    """xatlas charts packed into one square atlas of about ``size`` texels with ``padding`` texels between
    charts. vertices [V, 3], faces [F, 3] -> UVAtlas."""
    try:
        import xatlas
    except ImportError as e:
        raise ImportError("UV unwrapping needs xatlas: pip install xatlas") from e
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, dtype=np.float32), np.ascontiguousarray(faces, dtype=np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = int(size)
    pack.padding = int(padding)
    pack.bilinear = True
    atlas.generate(pack_options=pack)
    if atlas.atlas_count != 1:
        raise RuntimeError(f"xatlas packed the charts into {atlas.atlas_count} atlases, expected 1")
    vertex_map, new_faces, uvs = atlas[0]
    uvs = np.clip(np.asarray(uvs, dtype=np.float32), 0.0, 1.0)
    uvs[:, 1] = 1.0 - uvs[:, 1]  # xatlas's v grows with the image row; ours grows upward
    return UVAtlas(np.asarray(vertex_map, dtype=np.int64), np.asarray(new_faces, dtype=np.int64), uvs)


def rasterize_uv(uvs: np.ndarray, faces: np.ndarray, size: int, max_candidates: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """Which triangle covers each texel centre of a ``size``×``size`` image, and where.

    uvs [V, 2] (v up), faces [F, 3] -> (face id [H, W] int64, -1 where none; barycentrics [H, W, 3]
    float32 of the texel centre in that face). Every face's bounding box of texel centres is enumerated
    (``max_candidates`` per batch) and tested with edge functions; where faces share a texel, the later
    face wins.
    """
    uv = torch.as_tensor(np.asarray(uvs, dtype=np.float32))
    tri = torch.stack([uv[:, 0] * size, (1.0 - uv[:, 1]) * size], -1)[torch.as_tensor(faces)]  # [F, 3, 2] pixel units
    tri = tri.double()
    face_id = torch.full((size * size,), -1, dtype=torch.int64)
    bary = torch.zeros(size * size, 3, dtype=torch.float32)
    lo = (tri.amin(1) - 0.5).ceil().long().clamp(0, size - 1)  # first texel whose centre can be inside
    hi = (tri.amax(1) - 0.5).floor().long().clamp(-1, size - 1)
    extent = (hi - lo + 1).clamp(min=0)  # [F, 2] columns, rows
    counts = extent[:, 0] * extent[:, 1]
    area = _edge(tri[:, 0], tri[:, 1], tri[:, 2])  # signed, 2× area
    counts[area.abs() < 1e-12] = 0
    start = 0
    cumulative = torch.cumsum(counts, 0)
    while start < len(faces):
        # faces [start, stop) whose candidates fit in the batch (at least one face)
        base = int(cumulative[start - 1]) if start else 0
        stop = max(start + 1, int(torch.searchsorted(cumulative, base + max_candidates, right=True)))
        _rasterize_batch(tri, area, lo, extent, counts, start, stop, size, face_id, bary)
        start = stop
    return face_id.reshape(size, size).numpy(), bary.reshape(size, size, 3).numpy()


def _edge(a: torch.Tensor, b: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Twice the signed area of (a, b, p): [..., 2] points -> [...]."""
    return (b[..., 0] - a[..., 0]) * (p[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (p[..., 0] - a[..., 0])


def _rasterize_batch(tri, area, lo, extent, counts, start, stop, size, face_id, bary) -> None:
    index = torch.arange(start, stop)
    which = torch.repeat_interleave(index, counts[start:stop])  # [M] face of each candidate
    if which.numel() == 0:
        return
    offsets = torch.cumsum(counts[start:stop], 0) - counts[start:stop]
    local = torch.arange(which.numel()) - torch.repeat_interleave(offsets, counts[start:stop])
    width = extent[which, 0]
    col = lo[which, 0] + local % width
    row = lo[which, 1] + local // width
    p = torch.stack([col, row], -1).double() + 0.5
    t = tri[which]
    w0 = _edge(t[:, 1], t[:, 2], p) / area[which]
    w1 = _edge(t[:, 2], t[:, 0], p) / area[which]
    w2 = 1.0 - w0 - w1
    weights = torch.stack([w0, w1, w2], -1)
    inside = (weights >= -1e-9).all(-1)
    pixel = (row * size + col)[inside]
    face_id[pixel] = which[inside]
    bary[pixel] = weights[inside].clamp(0.0, 1.0).float()


def fill_gutters(image: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Every uncovered texel takes the value of its nearest covered texel (Euclidean distance).

    image [H, W, C], covered [H, W] bool -> [H, W, C]. Chart colours then reach past chart borders, so
    bilinear filtering and mip-maps never fetch unbaked texels.
    """
    if covered.all() or not covered.any():
        return image
    from scipy.ndimage import distance_transform_edt

    rows, cols = distance_transform_edt(~covered, return_distances=False, return_indices=True)
    return image[rows, cols]
