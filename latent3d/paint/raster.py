"""Rasterization for Latent-Paint: which face covers each pixel centre of a camera, and where.

Output contract (nvdiffrast's): ``rast[B, H, W, 4] = (u, v, z/w, triangle_id + 1)``, float32, all 0 on
background. u, v are the perspective-correct barycentric weights of the face's vertices 0 and 1 (vertex 2
weighs 1 − u − v), i.e. the barycentrics of the 3D surface point; z/w is the clip-space depth over w there
(in [−1, 1] between the near and far planes); the nearest surface (smallest z/w) wins. Pixel centres are
sampled: pixel (row, col) is at NDC (2(col + ½)/W − 1, 1 − 2(row + ½)/H). Points outside −w ≤ z ≤ w
(or with w ≤ 0) are clipped away, as nvdiffrast clips triangles at the near and far planes. Triangle ids are
exact in float32 up to 2^24 faces.

One deliberate difference from nvdiffrast: our image row 0 is the TOP of the picture (as in the NeRF
renders, PIL and ``camera_rays``); nvdiffrast's row 0 is the bottom, so its backend flips its output and
every backend returns the same array.

Backends of ``rasterize(..., backend=)``: "torch", the pure-PyTorch reference (per-face bounding boxes of
pixel centres, homogeneous edge functions, a z-buffer by ``scatter_reduce(amin)``); "embree", ray casting
through embreex on CPU (``raster_embree.py``); "nvdiffrast" on CUDA. The rasterizer is not differentiable:
only the texture needs gradients, through ``interpolate``/``sample_texture`` after it.
"""

from __future__ import annotations

import torch

from ..backends import _warn_once, install_hint, pick_backend, probe, probe_version, require
from ..nerf.cameras import Cameras
from .raster_embree import NotProjective, rasterize_embree

BACKENDS = ("auto", "torch", "embree", "nvdiffrast")
MAX_FACES = 1 << 24  # triangle_id + 1 is stored as float32


def clip_matrices(cameras: Cameras, height: int, width: int, near: float = 0.1, far: float = 100.0) -> torch.Tensor:
    """World → clip matrices [B, 4, 4] float64 of our orbit cameras (OpenGL-style depth).

    Same axes and focal as ``camera_rays`` (focal = (H/2)/tan(fovy/2) pixels for both axes, pixel-centre
    NDC as in the module docstring), so the surface point rasterized at a pixel lies on that pixel's NeRF
    ray. w is the depth along the camera's forward axis; z/w = −1 at ``near`` and +1 at ``far``.
    """
    _check_range(height, width, near, far)
    right, up, forward = (a.double() for a in cameras.axes())  # [B, 3] each
    eye = cameras.positions().double()
    focal = (height / 2) / torch.tan(torch.deg2rad(cameras.fovy.double()) / 2)  # [B]
    rows = torch.stack([right * (2 * focal / width)[:, None], up * (2 * focal / height)[:, None], forward], 1)
    x, y, w = torch.cat([rows, -(rows @ eye[:, :, None])], 2).unbind(1)  # [B, 4] each: rows of the matrix
    z = ((far + near) * w - torch.tensor([0.0, 0.0, 0.0, 2 * far * near], dtype=w.dtype, device=w.device)) / (far - near)
    return torch.stack([x, y, z, w], 1)


def clip_positions(
    vertices: torch.Tensor, cameras: Cameras, height: int, width: int, near: float = 0.1, far: float = 100.0
) -> torch.Tensor:
    """Homogeneous clip coordinates [B, V, 4] float32 of world ``vertices`` [V, 3] seen by ``cameras``.

    Computed in float64 (then rounded) so that the only error left is float32's. See ``clip_matrices``.
    """
    if not (isinstance(vertices, torch.Tensor) and vertices.ndim == 2 and vertices.shape[1] == 3):
        raise ValueError(f"vertices must be a [V, 3] tensor, got {_describe(vertices)}")
    if not bool(torch.isfinite(vertices).all()):
        raise ValueError("vertices must be finite, got NaN or inf")
    matrices = clip_matrices(cameras.to(vertices.device), height, width, near, far)
    homogeneous = torch.cat([vertices.double(), torch.ones_like(vertices[:, :1], dtype=torch.float64)], 1)
    return torch.einsum("bij,vj->bvi", matrices, homogeneous).float()


def rasterize(
    clip: torch.Tensor, faces: torch.Tensor, resolution: tuple[int, int], backend: str = "auto"
) -> torch.Tensor:
    """rast [B, H, W, 4] float32 = (u, v, z/w, triangle_id + 1) of the mesh ``faces`` [F, 3] (integer
    indices into V) with clip coordinates ``clip`` [B, V, 4]; see the module docstring for the contract.

    ``backend``: "auto" (nvdiffrast on CUDA when importable; on CPU embree when embreex >= 4 is
    importable; otherwise torch, with one warning), "torch", "embree" or "nvdiffrast". An explicitly
    requested backend that is missing raises RuntimeError with its install hint. The result is on
    ``clip``'s device. Not differentiable (integer visibility); gradients flow through ``interpolate``.
    """
    height, width = _check_resolution(resolution)
    _check_clip(clip)
    _check_faces(faces, clip.shape[1])
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    chosen = _choose(backend, clip.device)
    clip = clip.detach()  # visibility is integer-valued: no graph to build
    if chosen == "nvdiffrast":
        return _rasterize_nvdiffrast(clip, faces, height, width)
    if chosen == "embree":
        try:
            return rasterize_embree(clip, faces, height, width)
        except NotProjective:
            if backend == "embree":
                raise
    return rasterize_torch(clip, faces, height, width)


def _choose(backend: str, device: torch.device) -> str:
    if backend == "torch":
        return "torch"
    if backend == "embree":
        require("embreex", "embree")
        if not embree_usable():
            found = ".".join(map(str, probe_version("embreex") or ())) or "an unknown version"
            raise RuntimeError(
                f"backend 'embree' needs embreex >= 4 (watertight Embree 3+; 2.x lets rays through shared edges), "
                f"found {found}; {install_hint('embreex')}"
            )
        return "embree"
    choice = pick_backend("auto" if backend == "auto" else "nvdiffrast", "nvdiffrast", "nvdiffrast.torch", device)
    if choice == "torch" and device.type == "cpu":
        if embree_usable():
            return "embree"  # faster than the torch twin at 64² and 512² (benchmarks/paint_raster.py)
        _warn_once(f"embreex >= 4 is not installed; rasterizing with the slower pure-PyTorch backend. {install_hint('embreex')}")
    return choice


def embree_usable() -> bool:
    """embreex imports and is >= 4: Embree 3+ intersects watertight (rays never slip between two faces
    sharing an edge); embreex 2.x wheels (Embree 2, still the only ones for some old platforms) do not."""
    return probe("embreex") is not None and (probe_version("embreex") or (0,)) >= (4,)


def interpolate(attributes: torch.Tensor, rast: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Per-pixel attributes [B, H, W, C]: Σ barycentric·attribute over the covering face, 0 on background.

    attributes [V, C] (shared) or [B, V, C] (per batch item); ``faces`` [F, 3] indexes them and may differ
    from the faces that were rasterized (e.g. UV faces of a mesh whose UVs are split at seams), as long as
    face i is the same triangle. Differentiable w.r.t. ``attributes`` (like nvdiffrast's interpolate).
    """
    if not (isinstance(rast, torch.Tensor) and rast.ndim == 4 and rast.shape[-1] == 4):
        raise ValueError(f"rast must be a [B, H, W, 4] tensor from rasterize, got {_describe(rast)}")
    if not (isinstance(attributes, torch.Tensor) and attributes.ndim in (2, 3)):
        raise ValueError(f"attributes must be a [V, C] or [B, V, C] tensor, got {_describe(attributes)}")
    batch = rast.shape[0]
    if attributes.ndim == 3 and attributes.shape[0] not in (1, batch):
        raise ValueError(f"attributes batch {attributes.shape[0]} must be 1 or match rast's batch {batch}")
    _check_faces(faces, attributes.shape[-2])
    face_id = rast[..., 3].long() - 1  # [B, H, W]
    if face_id.numel() and int(face_id.max()) >= faces.shape[0]:
        raise ValueError(f"rast names triangle ids beyond faces' {faces.shape[0]} rows; pass the rasterized faces")
    covered = face_id >= 0
    # index_select, not tensor[index]: advanced indexing always enters torch's thread pool (ms when shared)
    corners = faces.long().to(rast.device).index_select(0, face_id.clamp(min=0).reshape(-1)).reshape(*face_id.shape, 3)
    table = attributes.expand(batch, *attributes.shape[-2:]) if attributes.ndim == 3 else attributes[None].expand(batch, -1, -1)
    offsets = torch.arange(batch, device=rast.device)[:, None, None, None] * table.shape[1]
    values = table.reshape(-1, table.shape[-1]).index_select(0, (corners + offsets).reshape(-1)).reshape(*corners.shape, -1)
    u, v = rast[..., 0:1], rast[..., 1:2]
    weights = torch.stack([u, v, 1.0 - u - v], -2).to(values.dtype)  # [B, H, W, 3, 1]
    return (values * weights).sum(-2) * covered[..., None]


# ---- torch backend: the reference --------------------------------------------------------------------


def rasterize_torch(
    clip: torch.Tensor, faces: torch.Tensor, height: int, width: int, max_candidates: int = 1 << 20
) -> torch.Tensor:
    """The pure-PyTorch rasterizer (same contract as ``rasterize``, inputs assumed valid).

    Homogeneous rasterization (Olano & Greer 1997): with h_i = (x_i, y_i, w_i), E_i(p) = (h_j × h_k)·(px, py, 1)
    are the perspective-correct barycentrics up to one factor (no division by w, no clipping needed), and
    Σ E_i z_i / det[h0 h1 h2] is z/w. Each face tests the pixel centres of its screen bounding box in
    float32 relative to the box corner (``max_candidates`` per chunk, ~130 bytes each); the nearest
    candidate per pixel wins through ``scatter_reduce(amin)`` of a packed (z/w, face) key, and
    ``rast_from_faces`` evaluates the winners in float64.
    """
    batch, num_faces = clip.shape[0], faces.shape[0]
    if batch > 1 and batch * num_faces >= 1 << 31:  # the packed key holds b·F + f in 32 bits
        return torch.cat([rasterize_torch(view[None], faces, height, width, max_candidates) for view in clip])
    coefficients, lo, extent = _face_setup(clip, faces.long().to(clip.device), height, width)
    counts = extent[:, 0] * extent[:, 1]
    best = torch.full((batch * height * width,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=clip.device)
    cumulative = torch.cumsum(counts, 0)
    single = coefficients.reshape(-1, 12).T.float().contiguous()  # [12, B·F]
    start, total = 0, counts.numel()
    while start < total:
        base = int(cumulative[start - 1]) if start else 0
        stop = max(start + 1, int(torch.searchsorted(cumulative, base + max_candidates, right=True)))
        _depth_test(single, lo, extent, counts, start, stop, (num_faces, height, width), best)
        start = stop
    return rast_from_faces(clip, faces, _winners(best, num_faces), height, width)


def _face_setup(clip: torch.Tensor, faces: torch.Tensor, height: int, width: int):
    """Per (batch, face): coefficients [B·F, 3, 4] float64 of (E0, E1, E2, z/w) as α·col' + β·row' + γ in
    pixel offsets (col', row') from the box corner ``lo`` [B·F, 2] (col, row); ``extent`` [B·F, 2] of the box
    (0 for faces that cannot cover a pixel: degenerate, edge-on, behind the camera, beyond near or far).
    Signs are flipped so that det > 0: then inside ⇔ every E_i ≥ 0, and w = det/ΣE > 0 follows."""
    corners = clip.double().index_select(1, faces.reshape(-1)).reshape(-1, 3, 4)  # [B·F, 3, (x, y, z, w)]
    x, y, z, w = corners.unbind(-1)  # [B·F, 3] each
    xj, yj, wj, xk, yk, wk = x.roll(-1, 1), y.roll(-1, 1), w.roll(-1, 1), x.roll(-2, 1), y.roll(-2, 1), w.roll(-2, 1)
    a, b, c = yj * wk - wj * yk, wj * xk - xj * wk, xj * yk - yj * xk  # E_i = h_j × h_k, [B·F, 3]
    det = x[:, 0] * a[:, 0] + y[:, 0] * b[:, 0] + w[:, 0] * c[:, 0]  # h0 · (h1 × h2)
    scale = torch.where(det < 0, -1.0, 1.0).to(det)[:, None]
    a, b, c = a * scale, b * scale, c * scale
    depth = z / torch.where(det == 0, 1.0, det.abs())[:, None]  # z/w = Σ E_i z_i / det
    a = torch.cat([a, (a * depth).sum(1, keepdim=True)], 1)  # [B·F, 4 functions]
    b = torch.cat([b, (b * depth).sum(1, keepdim=True)], 1)
    c = torch.cat([c, (c * depth).sum(1, keepdim=True)], 1)
    # (px, py) = ((2·col + 1)/W − 1, 1 − (2·row + 1)/H): fold the pixel-centre transform into (α, β, γ)
    alpha, beta = a * (2.0 / width), b * (-2.0 / height)
    lo, hi = _boxes(corners, height, width)
    gamma = a * (1.0 / width - 1.0) + b * (1.0 - 1.0 / height) + c + alpha * lo[:, :1] + beta * lo[:, 1:]
    hidden = (det == 0) | (w <= 0).all(1) | (z > w).all(1) | (z < -w).all(1)
    extent = torch.where(hidden[:, None], 0, (hi - lo + 1).clamp(min=0))
    return torch.stack([alpha, beta, gamma], 1), lo, extent


def _boxes(corners: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last pixel (col, row) [B·F, 2] whose centre can lie inside each face's projection; the
    whole image for faces crossing the camera plane (w ≤ 0 at some vertex), which have no finite box."""
    w = corners[..., 3]
    in_front = (w > 0).all(1)
    safe_w = torch.where(w > 0, w, 1.0)
    col = (corners[..., 0] / safe_w + 1.0) * (width / 2) - 0.5
    row = (1.0 - corners[..., 1] / safe_w) * (height / 2) - 0.5
    screen = torch.stack([col, row], -1).clamp(-2.0, max(height, width) + 2.0)  # [B·F, 3, 2]
    size = torch.tensor([width - 1, height - 1], device=corners.device)
    lo = (screen.amin(1) - 1e-6).ceil().long().clamp(min=0)
    hi = torch.minimum((screen.amax(1) + 1e-6).floor().long(), size)
    lo = torch.where(in_front[:, None], lo, torch.zeros_like(lo))
    hi = torch.where(in_front[:, None], hi, size.expand_as(hi))
    return lo, hi


def _depth_test(coefficients, lo, extent, counts, start, stop, sizes, best) -> None:
    """Test the candidates of faces [start, stop) and keep per pixel the smallest (z/w, face) key in
    ``best`` [B·H·W] int64: the high 32 bits order z/w + 1 ∈ [0, 2] (float bits of a non-negative float
    sort like the float), the low 32 bits hold the face index g = b·F + f."""
    num_faces, height, width = sizes
    index = torch.arange(start, stop, device=best.device)
    face = torch.repeat_interleave(index, counts[start:stop])  # [M] face of each candidate
    if face.numel() == 0:
        return
    first = torch.repeat_interleave(torch.cumsum(counts[start:stop], 0) - counts[start:stop], counts[start:stop])
    local = torch.arange(face.numel(), device=best.device) - first
    box_width = extent[:, 0].index_select(0, face)
    dy = torch.div(local, box_width, rounding_mode="floor")
    dx = local - dy * box_width
    c = coefficients.index_select(1, face)  # [12, M]: α of (E0, E1, E2, z/w), then β, then γ
    values = torch.addcmul(torch.addcmul(c[8:], dx.float(), c[:4]), dy.float(), c[4:8])  # [4, M]
    zw = values[3]
    keep = torch.nonzero((values[:3].amin(0) >= 0) & (zw.abs() <= 1))[:, 0]
    face, zw = face.index_select(0, keep), zw.index_select(0, keep)
    row = lo[:, 1].index_select(0, face) + dy.index_select(0, keep)
    col = lo[:, 0].index_select(0, face) + dx.index_select(0, keep)
    pixel = (face // num_faces) * (height * width) + row * width + col
    key = ((zw + 1.0).view(torch.int32).long() << 32) | face
    best.scatter_reduce_(0, pixel, key, "amin")


def _winners(best: torch.Tensor, num_faces: int) -> torch.Tensor:
    """Face index f [B·H·W] int64 of each pixel's smallest key, −1 where no candidate was kept."""
    face = (best & 0xFFFFFFFF) % num_faces if num_faces else best
    return torch.where(best == torch.iinfo(torch.int64).max, -1, face)


def rast_from_faces(clip: torch.Tensor, faces: torch.Tensor, face: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """rast [B, H, W, 4] for a known visible face per pixel, ``face`` [B·H·W] int64 (−1 = background).

    Every backend that decides visibility by itself (the torch z-buffer, embree's nearest hit) ends here,
    so (u, v, z/w) follow one formula, in float64 from the clip coordinates: the homogeneous edge functions
    E_i = (px, py, 1)·(h_j × h_k) at the pixel centre give u, v = E_0/ΣE, E_1/ΣE and z/w = ΣE_i z_i / ΣE_i w_i
    (computed as a_j c_k − a_k c_j with a = x − px·w, c = y − py·w, which avoids cancellation).
    """
    batch, num_vertices = clip.shape[:2]
    rast = torch.zeros(batch * height * width, 4, dtype=torch.float32, device=clip.device)
    pixel = torch.nonzero(face >= 0)[:, 0]
    f = face.index_select(0, pixel)
    item, rest = pixel // (height * width), pixel % (height * width)
    px = ((2.0 * (rest % width).double() + 1.0) / width - 1.0)[:, None]
    py = (1.0 - (2.0 * (rest // width).double() + 1.0) / height)[:, None]
    corner_rows = faces.long().to(clip.device).index_select(0, f) + (item * num_vertices)[:, None]  # [N, 3]
    corners = clip.reshape(-1, 4).double().index_select(0, corner_rows.reshape(-1)).reshape(-1, 3, 4)
    x, y, z, w = corners.unbind(-1)  # [N, 3] each
    a, c = x - px * w, y - py * w  # the pixel moved to the origin: E_i = a_j c_k − a_k c_j
    e = a.roll(-1, 1) * c.roll(-2, 1) - a.roll(-2, 1) * c.roll(-1, 1)  # [N, 3]
    total = e.sum(1)
    zw = (e * z).sum(1) / (e * w).sum(1)
    values = torch.stack([e[:, 0] / total, e[:, 1] / total, zw, (f + 1).double()], 1).float()
    return rast.index_copy_(0, pixel, values).reshape(batch, height, width, 4)  # not rast[pixel] = (see interpolate)


# ---- nvdiffrast backend ------------------------------------------------------------------------------

_NVDIFFRAST_CONTEXTS: dict = {}


def _rasterize_nvdiffrast(clip: torch.Tensor, faces: torch.Tensor, height: int, width: int) -> torch.Tensor:
    dr = probe("nvdiffrast.torch")
    context = _NVDIFFRAST_CONTEXTS.get(clip.device)
    if context is None:
        context = _NVDIFFRAST_CONTEXTS[clip.device] = dr.RasterizeCudaContext(device=clip.device)
    triangles = faces.to(device=clip.device, dtype=torch.int32).contiguous()
    rast, _ = dr.rasterize(context, clip.float().contiguous(), triangles, resolution=[height, width])
    return rast.flip(1)  # nvdiffrast's row 0 is the bottom, ours the top


# ---- validation ----------------------------------------------------------------------------------------


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    return f"{type(value).__name__} {value!r}"


def _check_range(height: int, width: int, near: float, far: float) -> None:
    _check_resolution((height, width))
    if not (0 < near < far < float("inf")):
        raise ValueError(f"near and far must satisfy 0 < near < far < inf, got near={near!r}, far={far!r}")


def _check_resolution(resolution) -> tuple[int, int]:
    ok = isinstance(resolution, (tuple, list)) and len(resolution) == 2
    ok = ok and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in resolution)
    if not ok:
        raise ValueError(f"resolution must be (height, width) of two positive ints, got {resolution!r}")
    return int(resolution[0]), int(resolution[1])


def _check_clip(clip) -> None:
    if not (isinstance(clip, torch.Tensor) and clip.ndim == 3 and clip.shape[-1] == 4 and clip.is_floating_point()):
        raise ValueError(f"clip must be a floating [B, V, 4] tensor of clip coordinates, got {_describe(clip)}")
    if not bool(torch.isfinite(clip).all()):
        raise ValueError("clip must be finite, got NaN or inf (check the vertices)")


def _check_faces(faces, num_vertices: int) -> None:
    if not (isinstance(faces, torch.Tensor) and faces.ndim == 2 and faces.shape[1] == 3):
        raise ValueError(f"faces must be a [F, 3] integer tensor, got {_describe(faces)}")
    if faces.is_floating_point() or faces.is_complex() or faces.dtype == torch.bool:
        raise ValueError(f"faces must hold integer vertex indices, got dtype {faces.dtype}")
    if faces.shape[0] >= MAX_FACES:
        raise ValueError(f"faces must have fewer than 2^24 rows (ids are float32), got {faces.shape[0]}")
    if faces.numel():
        # numpy's reduction is serial: a parallel torch one costs milliseconds when the CPU is shared with other work
        span = (faces.numpy().min(), faces.numpy().max()) if faces.device.type == "cpu" else torch.aminmax(faces)
        low, high = (int(x) for x in span)
        if low < 0 or high >= num_vertices:
            raise ValueError(f"faces must index vertices in [0, {num_vertices}), got values in [{low}, {high}]")
