"""Latent-Paint rasterizer: each CPU backend of ``rasterize`` vs plain trimesh ray casting, and texture lookup.

Mesh: blub.obj (14,208 faces), normalised as Latent-Paint does (centre, farthest vertex at 0.6). Camera: one
random training camera (``sample_cameras``, seed 0). Backends run round-robin, one call each per repeat, so
load spikes hit them alike; each figure is the median over repeats, after one warm-up call (whose time,
the embree BVH build included, is printed as "first"). trimesh's figure is what a caller would otherwise
write: ``mesh.ray.intersects_id(..., multiple_hits=False, return_locations=True)`` on the same pixel-centre
rays (face ids and hit points, no barycentrics yet), with whichever engine trimesh picked: embree, or its
rtree fallback (10-30 s a 64² view, so timed once at 64² and skipped at 512² and under --quick).
``--threads 1`` is the fairer figure on a machine shared with other jobs: two torch threads then wait on
each other when the CPU is shared with other work; the load average is printed around each size. Texture: ``sample_texture`` forward + backward of a 4×128×128 latent texture at 64², UVs interpolated
from per-vertex UVs (bilinear and mipmap).

Last line: ``RESULT raster64_ms=<x> raster512_ms=<y>`` for backend "auto" (nan for sizes not run).
Run: ``python benchmarks/paint_raster.py [--quick] [--threads 2] [--mesh PATH]`` (--quick: 3 repeats, < 20 s).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latent3d.backends import probe  # noqa: E402
from latent3d.nerf.cameras import CameraConfig, camera_rays, sample_cameras  # noqa: E402
from latent3d.paint.raster import clip_positions, embree_usable, interpolate, rasterize  # noqa: E402
from latent3d.paint.texture import sample_texture  # noqa: E402

BLUB = Path("/work/shared/assets/shapes/blub.obj")


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "n/a (no /proc/loadavg)"


def load_blub(path: Path):
    import trimesh

    mesh = trimesh.load(str(path), process=False, force="mesh")
    vertices = mesh.vertices - mesh.vertices.mean(0)
    vertices = (0.6 * vertices / np.linalg.norm(vertices, axis=1).max()).astype(np.float32)
    return trimesh.Trimesh(vertices, mesh.faces, process=False)


def time_round_robin(calls: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """(first-call ms, median ms of ``repeats`` later calls, or the first if none) per name; calls
    interleaved per repeat."""
    first, times = {}, {name: [] for name in calls}
    for name, call in calls.items():
        start = time.perf_counter()
        call()
        first[name] = (time.perf_counter() - start) * 1e3
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: (first[name], statistics.median(times[name] or [first[name]])) for name in calls}


def trimesh_engine(mesh) -> str:
    engine = type(mesh.ray).__module__.rsplit(".", 1)[-1]
    if engine == "ray_pyembree":
        return "embree (embreex)"
    return "rtree + numpy (trimesh's fallback)" if probe("rtree") is not None else "none (needs embreex or rtree)"


def raster_calls(mesh, size: int) -> tuple[dict, object]:
    """The rasterize calls to time, and trimesh's ray casting of the same rays (a callable)."""
    vertices, faces = torch.tensor(np.asarray(mesh.vertices)), torch.tensor(np.asarray(mesh.faces))
    cameras = sample_cameras(CameraConfig(), 1, torch.Generator().manual_seed(0))
    clip = clip_positions(vertices, cameras, size, size)
    backends = ["torch"] + (["embree"] if embree_usable() else [])
    calls = {f"rasterize[{b}]": (lambda b=b: rasterize(clip, faces, (size, size), backend=b)) for b in backends}
    calls["rasterize[auto]"] = lambda: rasterize(clip, faces, (size, size))
    origins, dirs = (t.reshape(-1, 3).double().numpy() for t in camera_rays(cameras, size, size))
    return calls, lambda: mesh.ray.intersects_id(origins, dirs, multiple_hits=False, return_locations=True)


def texture_calls(mesh) -> dict:
    vertices, faces = torch.tensor(np.asarray(mesh.vertices)), torch.tensor(np.asarray(mesh.faces))
    cameras = sample_cameras(CameraConfig(), 1, torch.Generator().manual_seed(0))
    rast = rasterize(clip_positions(vertices, cameras, 64, 64), faces, (64, 64))
    vertex_uv = (vertices[:, :2] / 1.2 + 0.5).clamp(0, 1)  # any smooth UVs do for timing
    uv = interpolate(vertex_uv, rast, faces)
    texture = torch.randn(4, 128, 128, generator=torch.Generator().manual_seed(0)).requires_grad_()

    def step(mode: str) -> None:
        texture.grad = None
        sample_texture(texture, uv, mode).square().mean().backward()

    return {f"sample_texture[{m}] fwd+bwd": (lambda m=m: step(m)) for m in ("bilinear", "mipmap")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats per size (< 20 s)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2, like the tests)")
    parser.add_argument("--mesh", type=Path, default=BLUB, help="an OBJ/PLY/GLB mesh (default blub.obj)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    mesh = load_blub(args.mesh)
    sizes, repeats = (64, 512), (3 if args.quick else 15)
    engine = trimesh_engine(mesh)
    print(f"mesh {args.mesh.name}: {len(mesh.faces)} faces; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"embreex>=4 {'installed' if embree_usable() else 'missing'}; trimesh ray engine: {engine}")
    print(f"loadavg before: {loadavg()}")
    auto = {}
    for size in sizes:
        calls, cast = raster_calls(mesh, size)
        if engine.startswith("embree"):
            calls["trimesh ray casting"] = cast
        results = time_round_robin(calls, repeats if size == 64 else max(3, repeats // 3))
        slow = engine.startswith("rtree") and size == 64 and not args.quick  # 10-30 s a view: one call
        if slow:
            results["trimesh ray casting (1 call)"] = time_round_robin({"cast": cast}, 0)["cast"]
        for name, (first, median) in results.items():
            print(f"{size:4d}²  {name:28s} median {median:9.2f} ms   first {first:9.2f} ms")
        if not (engine.startswith("embree") or slow):
            print(f"{size:4d}²  trimesh ray casting skipped ({engine})")
        auto[size] = results["rasterize[auto]"][1]
        print(f"loadavg after {size}²: {loadavg()}")
    for name, (first, median) in time_round_robin(texture_calls(mesh), repeats).items():
        print(f"  64²  {name:32s} median {median:8.2f} ms   (texture 4×128×128)")
    print(f"loadavg after: {loadavg()}")
    print(f"RESULT raster64_ms={auto.get(64, float('nan')):.2f} raster512_ms={auto.get(512, float('nan')):.2f}")


if __name__ == "__main__":
    main()
