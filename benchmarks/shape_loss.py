"""Sketch-Shape loss per step: exact (libigl per sample, as the official code) vs precomputed grid.

Sample points are real: a LatentNeRF with the default NerfConfig() (fresh weights, so its occupancy grid
holds the density blob) renders 64×64 training views with jitter, and the packed samples (points, σ) are
taken from ``model.render``. A second point set re-renders the same cameras with the occupancy grid set to
the sketch dilated by 0.05, as a field that has learned the shape would sample (many near-surface points).

Meshes: teddy.obj (5,760 faces) and a ~92k-face smooth sketch (teddy.obj after two Loop subdivisions).
``--large`` adds a 1.47M-face mesh (four Loop subdivisions): grid build time and peak memory only.

Prints a table, the grid-resolution sweep for teddy, and finally
``RESULT grid_speedup=<x> loss_rel_err=<y>`` for teddy on the fresh-model samples.
Run: ``python benchmarks/shape_loss.py [--views 3] [--large]`` (≈ 1–2 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latent3d.nerf.cameras import sample_cameras  # noqa: E402
from latent3d.nerf.model import LatentNeRF  # noqa: E402
from latent3d.nerf.train import NerfConfig  # noqa: E402
from latent3d.shape.loss import SketchShapeConfig, SketchShapeGuide, make_shape_guide  # noqa: E402
from latent3d.shape.mesh_io import Mesh, load_mesh  # noqa: E402
from latent3d.shape.primitives import make_teddy_sketch  # noqa: E402

TEDDY = Path("/work/shared/assets/shapes/teddy.obj")


def loop_subdivided(mesh: Mesh, iterations: int) -> Mesh:
    import trimesh

    vertices, faces = trimesh.remesh.subdivide_loop(mesh.vertices.astype(np.float64), mesh.faces, iterations=iterations)
    return Mesh(vertices, faces, source=f"{Path(mesh.source).stem} + {iterations}× Loop")


def fresh_model(device: torch.device) -> LatentNeRF:
    """A default LatentNeRF (fresh weights, seed 0) with its first occupancy update done (all cells)."""
    config = NerfConfig()
    torch.manual_seed(0)
    model = LatentNeRF(config.field, config.render, device)
    model.update_occupancy(torch.Generator(device=device).manual_seed(0))
    return model


def render_samples(model: LatentNeRF, views: int, mask: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Packed (points [S, 3], sigma [S]) of ``views`` jittered 64×64 training views (seeded cameras), with
    the model's own occupancy grid or, given ``mask``, that occupancy mask instead."""
    saved = model.occupancy.mask.clone()
    if mask is not None:
        model.occupancy.mask.copy_(mask.to(model.device))
    generator = torch.Generator(device=model.device).manual_seed(1)
    samples = []
    for _ in range(views):
        cameras = sample_cameras(NerfConfig().camera, 1, generator, model.device)
        _, packed = model.render(cameras, 64, 64, generator, jitter=True)
        samples.append((packed.points.detach(), packed.sigma.detach()))
    model.occupancy.mask.copy_(saved)
    return samples


def sketch_occupancy(guide: SketchShapeGuide, resolution: int = 128, margin: float = 0.05) -> torch.Tensor:
    """Occupancy mask (flat, the renderer's x + r·y + r²·z order) of the sketch's inside dilated by ``margin``."""
    r = resolution
    ijk = torch.stack(torch.meshgrid(*(torch.arange(r),) * 3, indexing="ij"), -1).reshape(-1, 3)  # (z, y, x)
    centers = (ijk.flip(-1).float() + 0.5) * (2.0 / r) - 1.0
    inside, distance = guide.field.query(centers)  # grid guide: winding, distance
    return (inside > 0.5) | (distance < margin)


def time_step(guide: SketchShapeGuide, points: torch.Tensor, sigma: torch.Tensor, repeats: int) -> tuple[float, float]:
    """(median seconds of loss forward + backward, loss value)."""
    times, value = [], 0.0
    for _ in range(repeats):
        leaf = sigma.clone().requires_grad_(True)
        if points.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = guide(points, leaf, 0)
        loss.backward()
        if points.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        value = float(loss)
    return statistics.median(times), value


def compare(name: str, mesh: Mesh, sample_sets: dict[str, list], device: torch.device, rows: list, repeats: int) -> dict[str, tuple[float, float]]:
    start = time.perf_counter()
    grid = make_shape_guide(mesh, SketchShapeConfig(), device)
    build = time.perf_counter() - start
    exact = make_shape_guide(mesh, SketchShapeConfig(mode="exact"), device)
    results = {}
    for label, samples in sample_sets.items():
        t_exact = t_grid = l_exact = l_grid = 0.0
        count = 0
        for points, sigma in samples:
            te, le = time_step(exact, points, sigma, max(1, repeats // 2))
            tg, lg = time_step(grid, points, sigma, repeats)
            t_exact, t_grid, l_exact, l_grid, count = t_exact + te, t_grid + tg, l_exact + le, l_grid + lg, count + points.shape[0]
        n = len(samples)
        speedup, rel = t_exact / t_grid, abs(l_grid - l_exact) / l_exact
        rows.append((name, mesh.num_faces, label, count // n, build, 1e3 * t_exact / n, 1e3 * t_grid / n, speedup, rel))
        results[label] = (speedup, rel)
    return results


def resolution_sweep(mesh: Mesh, samples: list, device: torch.device) -> None:
    exact = make_shape_guide(mesh, SketchShapeConfig(mode="exact"), device)
    reference = sum(float(exact.loss(p, s)) for p, s in samples)
    print("\ngrid resolution sweep (teddy, fresh-model samples):")
    print(f"{'N':>5} {'build s':>8} {'MB':>6} {'loss rel err':>13}")
    for resolution in (48, 64, 96, 128, 160):
        start = time.perf_counter()
        guide = make_shape_guide(mesh, SketchShapeConfig(grid_resolution=resolution), device)
        build = time.perf_counter() - start
        value = sum(float(guide.loss(p, s)) for p, s in samples)
        print(f"{resolution:>5} {build:>8.2f} {guide.field.nbytes / 2**20:>6.1f} {abs(value - reference) / reference:>13.2e}")


def large_mesh(base: Mesh, device: torch.device) -> None:
    mesh = loop_subdivided(base, 4)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    start = time.perf_counter()
    guide = make_shape_guide(mesh, SketchShapeConfig(), device)
    build = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"\nlarge sketch: {mesh.num_faces:,} faces, grid {guide.config.grid_resolution}³ built in {build:.1f} s; "
          f"peak RSS {peak:.0f} MB (was {before:.0f} MB before the build)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=3, help="training views (64×64) whose samples are scored")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per view (median)")
    parser.add_argument("--large", action="store_true", help="also build the grid of a 1.47M-face mesh")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    warnings.simplefilter("ignore")  # open/overlapping sketch notices
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    teddy = load_mesh(TEDDY) if TEDDY.is_file() else make_teddy_sketch()
    if not TEDDY.is_file():
        print(f"note: {TEDDY} not found; using the primitive teddy sketch instead")
    dense = loop_subdivided(teddy, 2)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    start = time.perf_counter()
    model = fresh_model(device)
    fresh = render_samples(model, args.views)
    print(f"rendered {args.views} fresh-model views in {time.perf_counter() - start:.1f} s (incl. the first occupancy update)")
    shaped = render_samples(model, args.views, sketch_occupancy(make_shape_guide(teddy, SketchShapeConfig(grid_resolution=64))))
    rows: list = []
    results = compare("teddy.obj", teddy, {"fresh": fresh, "shape-like": shaped}, device, rows, args.repeats)
    compare("teddy 2× Loop", dense, {"fresh": fresh, "shape-like": shaped}, device, rows, args.repeats)
    header = ("sketch", "faces", "samples", "S/view", "grid build s", "exact ms", "grid ms", "speedup", "loss rel err")
    print("\n{:<15} {:>8} {:<10} {:>8} {:>12} {:>9} {:>8} {:>8} {:>13}".format(*header))
    for name, faces, label, count, build, t_exact, t_grid, speedup, rel in rows:
        print(f"{name:<15} {faces:>8} {label:<10} {count:>8} {build:>12.2f} {t_exact:>9.1f} {t_grid:>8.2f} {speedup:>7.1f}x {rel:>13.2e}")
    resolution_sweep(teddy, fresh, device)
    if args.large:
        large_mesh(teddy, device)
    speedup, rel = results["fresh"]
    print(f"RESULT grid_speedup={speedup:.1f} loss_rel_err={rel:.2e}")


if __name__ == "__main__":
    main()
