"""The "embree" backend of ``rasterize``: first hits of pixel-centre rays, cast with embreex on the CPU.

Why it meets the clip-space contract of ``raster.py``: the clip coordinates of a rigid mesh are an affine
image of its vertices, (x, y, z, w) = [p, 1]·T. In the view frame (x, y, w) the camera sits at the origin
and the ray of pixel (px, py) is t·(px, py, 1), so a hit at parameter t has w = t, barycentrics that are the
perspective-correct ones (affine maps keep barycentrics), and z = e + k·t along the ray, i.e. z/w = k + e/t.
With e < 0 (every OpenGL-style projection) z/w grows with t, so embree's nearest hit is the smallest z/w,
and the clipping rule −w ≤ z ≤ w becomes one t-interval per ray. Embree only decides visibility (its
barycentrics would cost a slower query and be float32); (u, v, z/w) of the visible face are evaluated by
``raster.rast_from_faces``, the same float64 formula the torch backend uses.

The BVH (12–18 ms for 14k faces) is built once per mesh in the frame of the first view and cached, keyed by
the faces' content; a later view is mapped into that frame by the affine T fitted to its clip coordinates
and verified on every vertex (``FIT_TOLERANCE``). A view that does not fit (other vertex positions, a
flat mesh whose frame is not invertible) builds a BVH in its own frame.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from ..backends import require

FIT_TOLERANCE = 1e-6
"""Largest residual of the affine fit, relative to the coordinates' magnitude (float32 rounding is ~1e-7)."""
CACHE_SIZE = 4
"""Meshes whose BVH is kept."""


class NotProjective(ValueError):
    """The clip coordinates are not an OpenGL-style projection of 3D points (z not affine in x, y, w, or
    depth decreasing with distance), which ray casting cannot reproduce; the torch backend can."""


@dataclass
class _Frame:
    scene: object  # embreex EmbreeScene over the frame's (x, y, w) vertex coordinates
    points: np.ndarray  # [V, 4] float64 (x, y, w, 1) of the view the frame was built in
    pinv: np.ndarray | None  # [4, V] pseudo-inverse of ``points``; None for a flat frame (not reusable)


_FRAMES: OrderedDict[tuple, _Frame] = OrderedDict()


def rasterize_embree(clip: torch.Tensor, faces: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """rast [B, H, W, 4] float32 on ``clip``'s device (contract of ``raster.rasterize``; inputs valid).

    Embree decides visibility (the nearest face along each pixel-centre ray within the clip interval);
    ``rast_from_faces`` then evaluates (u, v, z/w) exactly as the torch backend does. Raises NotProjective
    for clip coordinates that ray casting cannot reproduce (see the class)."""
    from .raster import rast_from_faces  # raster imports this module

    require("embreex", "embree")
    views = clip.detach().to("cpu", torch.float64).numpy()  # [B, V, 4]
    corners = np.ascontiguousarray(faces.detach().cpu().numpy(), dtype=np.int32)
    key = (hashlib.blake2b(corners.tobytes(), digest_size=16).digest(), corners.shape[0], views.shape[1])
    face = np.concatenate([_cast_view(view, corners, key, height, width) for view in views])
    return rast_from_faces(clip, faces, torch.from_numpy(face).to(clip.device), height, width)


def _cast_view(view: np.ndarray, faces: np.ndarray, key: tuple, height: int, width: int) -> np.ndarray:
    """Nearest face [H·W] int64 (−1 = none) of each pixel of one view [V, 4] (x, y, z, w) float64."""
    frame, fit = _frame_for(view, faces, key)
    inverse = np.linalg.inv(fit[:3][:, [0, 1, 3]])  # view (x, y, w) = r·linear + shift; rows map back
    origin = -fit[3, [0, 1, 3]] @ inverse  # the camera in the frame
    depth_e = float(origin @ fit[:3, 2] + fit[3, 2])  # z = e + k·t along each ray
    if not depth_e < 0:
        raise NotProjective(f"z/w must grow with distance along each ray (z = e + k·w with e < 0), got e = {depth_e:.3g}")
    slope = inverse @ fit[:3, 2]  # k = (px, py, 1)·slope
    px = ((2.0 * np.arange(width) + 1.0) / width - 1.0).astype(np.float32)[None, :, None]
    py = (1.0 - (2.0 * np.arange(height) + 1.0) / height).astype(np.float32)[:, None, None]
    rows = inverse.astype(np.float32)
    directions = (px * rows[0] + py * rows[1] + rows[2]).reshape(-1, 3)  # the ray point at t has w = t
    depth_k = (px * np.float32(slope[0]) + py * np.float32(slope[1]) + np.float32(slope[2])).reshape(-1)
    t_near, t_far = _clip_interval(depth_k, np.float32(depth_e))
    live = t_far > t_near
    start = origin.astype(np.float32) + t_near[:, None] * directions
    face = frame.scene.run(start, directions, dists=np.where(live, t_far - t_near, 0.0).astype(np.float32))
    face = face.astype(np.int64)
    face[~live] = -1
    return face


def _clip_interval(k: np.ndarray, e: float) -> tuple[np.ndarray, np.ndarray]:
    """Per ray, the t-interval [near, far] (t > 0) where −t ≤ e + k·t ≤ t; empty where far ≤ near."""
    near, far = np.zeros_like(k), np.full_like(k, np.inf)
    for a, c in ((k + 1.0, e), (1.0 - k, -e)):  # a·t + c ≥ 0
        bound = -c / np.where(a == 0, 1.0, a)
        near = np.where(a > 0, np.maximum(near, bound), near)
        far = np.where(a < 0, np.minimum(far, bound), far)
        far = np.where((a == 0) & (c < 0), -1.0, far)
    return near, far


def _frame_for(view: np.ndarray, faces: np.ndarray, key: tuple) -> tuple[_Frame, np.ndarray]:
    """The cached frame of this mesh and the fit T [4, 4] from frame (x, y, w, 1) to ``view`` (x, y, z, w);
    a new frame built in this view's own coordinates when the cached one does not fit."""
    frame = _FRAMES.get(key)
    if frame is not None and frame.pinv is not None:
        fit = frame.pinv @ view
        if _fits(frame.points @ fit, view):
            _FRAMES.move_to_end(key)
            return frame, fit
    frame = _build_frame(view, faces)
    fit = np.zeros((4, 4))
    fit[[0, 1, 2], [0, 1, 3]] = 1.0  # the frame's (x, y, w) are this view's x, y and w
    fit[:, 2] = np.linalg.lstsq(frame.points, view[:, 2], rcond=None)[0]
    if not _fits(frame.points @ fit, view):
        raise NotProjective("clip z must be an affine function of (x, y, w) over the vertices, as for any projection of 3D points")
    if frame.pinv is not None:
        _FRAMES[key] = frame
        while len(_FRAMES) > CACHE_SIZE:
            _FRAMES.popitem(last=False)
    return frame, fit


def _fits(predicted: np.ndarray, view: np.ndarray) -> bool:
    return bool(np.abs(predicted - view).max(initial=0.0) <= FIT_TOLERANCE * max(1.0, float(np.abs(view).max(initial=0.0))))


def _build_frame(view: np.ndarray, faces: np.ndarray) -> _Frame:
    require("embreex", "embree")
    from embreex import mesh_construction, rtcore_scene  # probed just above; never imported at module import

    points = np.concatenate([view[:, [0, 1, 3]], np.ones((len(view), 1))], 1)
    scene = rtcore_scene.EmbreeScene()
    mesh_construction.TriangleMesh(scene=scene, vertices=points[:, :3].astype(np.float32), indices=faces)
    spread = np.linalg.svd(points[:, :3] - points[:, :3].mean(0), compute_uv=False) if len(points) >= 4 else np.zeros(1)
    solid = spread.size == 3 and spread[-1] > 1e-6 * spread[0]
    return _Frame(scene, points, np.linalg.pinv(points) if solid else None)
