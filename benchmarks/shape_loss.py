"""Sketch-Shape loss per step: exact (libigl per sample, as the official code) vs precomputed grid.

Sample points are real: a LatentNeRF with the default NerfConfig() (fresh weights, so its occupancy grid
holds the density blob) renders 64×64 training views with jitter, and the packed samples (points, σ, δ) are
taken from ``model.render`` at the device's default marching step. A second point set re-renders the same cameras with the occupancy grid set to
the sketch dilated by 0.05, as a field that has learned the shape would sample (many near-surface points).

Meshes: teddy.obj (5,760 faces) and a ~92k-face smooth sketch (teddy.obj after two Loop subdivisions).
``--large`` adds a 1.47M-face mesh (four Loop subdivisions): decimation to ``max_faces`` plus grid build
time, and peak memory.

The loss is per unit ray length (each sample weighted by δ/δ_official): the same field's views rendered at
the CPU step (2/128) and at the official step (2√3/1024) give nearly the same loss although the second has
≈4.6× more samples; the ratio is printed.

Prints a table, the per-unit-length check, the grid-resolution sweep for teddy, and finally
``RESULT grid_speedup=<x> loss_rel_err=<y> step_loss_ratio=<z>`` for teddy on the fresh-model samples.

    python benchmarks/shape_loss.py [--views 3] [--large]   # ≈ 1–2 minutes on 2 CPU cores
    python benchmarks/shape_loss.py --quick                 # seconds: primitive teddy, tiny field, 32² views
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import add_threads_argument, print_header, print_result, set_threads  # noqa: E402

from latent3d.nerf.cameras import sample_cameras  # noqa: E402
from latent3d.nerf.model import LatentNeRF  # noqa: E402
from latent3d.nerf.render import CPU_STEP_SIZE, OFFICIAL_STEP_SIZE  # noqa: E402
from latent3d.nerf.train import NerfConfig  # noqa: E402
from latent3d.shape.loss import SketchShapeConfig, SketchShapeGuide, make_shape_guide  # noqa: E402
from latent3d.shape.mesh_io import Mesh, load_mesh  # noqa: E402
from latent3d.shape.primitives import make_teddy_sketch  # noqa: E402

TEDDY = Path("/work/shared/assets/shapes/teddy.obj")


def loop_subdivided(mesh: Mesh, iterations: int) -> Mesh:
    import trimesh

    vertices, faces = trimesh.remesh.subdivide_loop(mesh.vertices.astype(np.float64), mesh.faces, iterations=iterations)
    return Mesh(vertices, faces, source=f"{Path(mesh.source).stem} + {iterations}× Loop")


Samples = list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
"""Per view: packed (points [S, 3], sigma [S], deltas [S])."""


def fresh_model(device: torch.device, quick: bool) -> LatentNeRF:
    """A default LatentNeRF (fresh weights, seed 0; --quick: the tiny preset's field) with its first occupancy
    update done (all cells)."""
    config = NerfConfig.tiny() if quick else NerfConfig()
    torch.manual_seed(0)
    model = LatentNeRF(config.field, config.render, device)
    model.update_occupancy(torch.Generator(device=device).manual_seed(0))
    return model


def render_samples(model: LatentNeRF, views: int, size: int, mask: torch.Tensor | None = None, step: float | None = None) -> Samples:
    """Packed samples of ``views`` jittered size×size training views (seeded cameras), with the model's own
    occupancy grid or, given ``mask``, that occupancy mask instead; at the model's step or ``step``."""
    saved, saved_config = model.occupancy.mask.clone(), model.render_config
    if mask is not None:
        model.occupancy.mask.copy_(mask.to(model.device))
    if step is not None:
        model.render_config = dataclasses.replace(saved_config, step_size=step)
    generator = torch.Generator(device=model.device).manual_seed(1)
    samples = []
    for _ in range(views):
        cameras = sample_cameras(NerfConfig().camera, 1, generator, model.device)
        _, packed = model.render(cameras, size, size, generator, jitter=True)
        samples.append((packed.points.detach(), packed.sigma.detach(), packed.deltas.detach()))
    model.occupancy.mask.copy_(saved)
    model.render_config = saved_config
    return samples


def sketch_occupancy(guide: SketchShapeGuide, resolution: int, margin: float = 0.05) -> torch.Tensor:
    """Occupancy mask (flat, the renderer's x + r·y + r²·z order) of the sketch's inside dilated by ``margin``."""
    r = resolution
    ijk = torch.stack(torch.meshgrid(*(torch.arange(r),) * 3, indexing="ij"), -1).reshape(-1, 3)  # (z, y, x)
    centers = (ijk.flip(-1).float() + 0.5) * (2.0 / r) - 1.0
    inside, distance = guide.field.query(centers)  # grid guide: winding, distance
    return (inside > 0.5) | (distance < margin)


def time_step(guide: SketchShapeGuide, points: torch.Tensor, sigma: torch.Tensor, deltas: torch.Tensor, repeats: int) -> tuple[float, float]:
    """(median seconds of loss forward + backward, loss value)."""
    times, value = [], 0.0
    for _ in range(repeats):
        leaf = sigma.clone().requires_grad_(True)
        if points.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = guide(points, leaf, deltas, 0)
        loss.backward()
        if points.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        value = float(loss)
    return statistics.median(times), value


def compare(
    name: str, mesh: Mesh, sample_sets: dict[str, Samples], config: SketchShapeConfig, device: torch.device, rows: list, repeats: int
) -> dict[str, tuple[float, float]]:
    start = time.perf_counter()
    grid = make_shape_guide(mesh, config, device)
    build = time.perf_counter() - start
    exact = make_shape_guide(mesh, dataclasses.replace(config, mode="exact"), device)
    results = {}
    for label, samples in sample_sets.items():
        t_exact = t_grid = l_exact = l_grid = 0.0
        count = 0
        for points, sigma, deltas in samples:
            te, le = time_step(exact, points, sigma, deltas, max(1, repeats // 2))
            tg, lg = time_step(grid, points, sigma, deltas, repeats)
            t_exact, t_grid, l_exact, l_grid, count = t_exact + te, t_grid + tg, l_exact + le, l_grid + lg, count + points.shape[0]
        n = len(samples)
        speedup, rel = t_exact / t_grid, abs(l_grid - l_exact) / l_exact
        rows.append((name, mesh.num_faces, label, count // n, build, 1e3 * t_exact / n, 1e3 * t_grid / n, speedup, rel))
        results[label] = (speedup, rel)
    return results


def resolution_sweep(mesh: Mesh, samples: Samples, resolutions: tuple[int, ...], device: torch.device) -> None:
    exact = make_shape_guide(mesh, SketchShapeConfig(mode="exact"), device)
    reference = sum(float(exact.loss(p, s, d)) for p, s, d in samples)
    print("\ngrid resolution sweep (teddy, fresh-model samples):")
    print(f"{'N':>5} {'build s':>8} {'MB':>6} {'loss rel err':>13}")
    for resolution in resolutions:
        start = time.perf_counter()
        guide = make_shape_guide(mesh, SketchShapeConfig(grid_resolution=resolution), device)
        build = time.perf_counter() - start
        value = sum(float(guide.loss(p, s, d)) for p, s, d in samples)
        print(f"{resolution:>5} {build:>8.2f} {guide.field.nbytes / 2**20:>6.1f} {abs(value - reference) / reference:>13.2e}")


def per_unit_length(model: LatentNeRF, guide: SketchShapeGuide, views: int, size: int) -> float:
    """Loss of the same field's views at the CPU step over the loss at the official step (≈ 1: per unit
    length), printed with the sample counts (whose ratio an unweighted sum would follow)."""
    result = {}
    for label, step in (("CPU step 2/128", CPU_STEP_SIZE), ("official step 2√3/1024", OFFICIAL_STEP_SIZE)):
        samples = render_samples(model, views, size, step=step)
        result[label] = (sum(float(guide.loss(p, s, d)) for p, s, d in samples) / views, sum(p.shape[0] for p, _, _ in samples) / views)
    (cpu_loss, cpu_count), (official_loss, official_count) = result.values()
    print(f"\nper unit length (fresh-model views, teddy grid): loss per view {cpu_loss:.1f} at the CPU step ({cpu_count:.0f} samples), "
          f"{official_loss:.1f} at the official step ({official_count:.0f} samples): ratio {cpu_loss / official_loss:.3f} "
          f"(sample-count ratio {cpu_count / official_count:.3f})")
    return cpu_loss / official_loss


def large_mesh(base: Mesh, device: torch.device) -> None:
    import resource  # Unix only

    mesh = loop_subdivided(base, 4)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    start = time.perf_counter()
    guide = make_shape_guide(mesh, SketchShapeConfig(), device)
    build = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"\nlarge sketch: {mesh.num_faces:,} faces, decimated to {guide.mesh.num_faces:,} (max_faces {guide.config.max_faces:,}) "
          f"and grid {guide.config.grid_resolution}³ built in {build:.1f} s; peak RSS {peak:.0f} MB (was {before:.0f} MB before the build)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=None, help="training views whose samples are scored (default 3, --quick 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repetitions per view (median; default 5, --quick 2)")
    parser.add_argument("--large", action="store_true", help="also build the grid of a 1.47M-face mesh (decimated to max_faces)")
    parser.add_argument("--quick", action="store_true", help="seconds: primitive teddy, tiny field, 32² views, 32³ sketch grid")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    views = args.views or (1 if args.quick else 3)
    repeats = args.repeats or (2 if args.quick else 5)
    size = 32 if args.quick else 64
    set_threads(args.threads, args.quick)
    warnings.simplefilter("ignore")  # open/overlapping sketch notices
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print_header(device, "quick" if args.quick else "")
    if args.quick:
        teddy = make_teddy_sketch(subdivisions=1)
    elif TEDDY.is_file():
        teddy = load_mesh(TEDDY)
    else:
        print(f"note: {TEDDY} not found; using the primitive teddy sketch instead")
        teddy = make_teddy_sketch()
    config = SketchShapeConfig(grid_resolution=32) if args.quick else SketchShapeConfig()
    start = time.perf_counter()
    model = fresh_model(device, args.quick)
    fresh = render_samples(model, views, size)
    print(f"rendered {views} fresh-model views ({size}², step {model.render_config.step_size:.5f}) in {time.perf_counter() - start:.1f} s (incl. the first occupancy update)")
    occupancy = sketch_occupancy(make_shape_guide(teddy, SketchShapeConfig(grid_resolution=32 if args.quick else 64)), model.occupancy.resolution)
    shaped = render_samples(model, views, size, occupancy)
    rows: list = []
    results = compare(teddy.source if args.quick else "teddy.obj", teddy, {"fresh": fresh, "shape-like": shaped}, config, device, rows, repeats)
    if not args.quick:
        compare("teddy 2× Loop", loop_subdivided(teddy, 2), {"fresh": fresh, "shape-like": shaped}, config, device, rows, repeats)
    header = ("sketch", "faces", "samples", "S/view", "grid build s", "exact ms", "grid ms", "speedup", "loss rel err")
    print("\n{:<15} {:>8} {:<10} {:>8} {:>12} {:>9} {:>8} {:>8} {:>13}".format(*header))
    for name, faces, label, count, build, t_exact, t_grid, speedup, rel in rows:
        print(f"{name:<15} {faces:>8} {label:<10} {count:>8} {build:>12.2f} {t_exact:>9.1f} {t_grid:>8.2f} {speedup:>7.1f}x {rel:>13.2e}")
    step_ratio = per_unit_length(model, make_shape_guide(teddy, config, device), views, size)
    resolution_sweep(teddy, fresh, (24, 32) if args.quick else (48, 64, 96, 128, 160), device)
    if args.large:
        large_mesh(teddy, device)
    speedup, rel = results["fresh"]
    print_result(grid_speedup=speedup, loss_rel_err=rel, step_loss_ratio=step_ratio)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
