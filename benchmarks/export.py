"""Export benchmark: where NeRF → textured mesh spends its time (2 CPU cores is the target machine).

The standard scene: a paper-size LatentNeRF (16-level hash grid, table 2^19, 128³ occupancy grid) fitted by
direct regression to an analytic "creature" (ellipsoid body, head, four legs, tail, ears, bumpy skin;
log σ = 6·tanh(−sdf/0.02), latent = the least-squares latent of a striped colour), then its occupancy grid
refreshed as training would. The fit is setup, not export, and is timed apart.

Export stages timed: field (band evaluation of the density lattice), marching cubes, cleanup, decimation,
UV unwrap, bake, decode (linear map), write (GLB), each at 128³ and 256³; the coarse-pass variant of the
field stage (no occupancy grid); and separately a VAE decode of the baked latent texture by an SD-layout
AutoencoderKL decoder with random weights (block_out_channels 128/256/512/512).

    python benchmarks/export.py                    # ≈2–3 min: fit, exports, VAE decode of a 64² latent
    python benchmarks/export.py --vae-latent 128   # VAE decode of the full 1024² texture (slow on CPU)
    python benchmarks/export.py --vae-latent 0     # no VAE
    python benchmarks/export.py --quick            # seconds: tiny field, 32³/64³ exports, 256² texture

The fidelity check casts rays with trimesh, which needs embreex (fast) or rtree (portable): without
either it is skipped with the pip line that installs them (``pip install -r requirements-bench.txt``).

Last line: RESULT export_s=<x> faces=<n> (the finest resolution, texture mode, everything except the VAE
decode; iou and rgb_err of the fidelity check when it ran).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _common import add_threads_argument, print_header, print_result, ray_casting_problem, set_threads  # noqa: E402

from latent3d.colors import latents_to_rgb, rgb_to_latents  # noqa: E402
from latent3d.export import ExportConfig, extract_mesh, save_mesh  # noqa: E402
from latent3d.export.bake import bake_latent_texture, decode_texture  # noqa: E402
from latent3d.export.density import sample_density_lattice  # noqa: E402
from latent3d.export.uv import unwrap  # noqa: E402
from latent3d.nerf.cameras import CameraConfig, camera_rays, eval_cameras  # noqa: E402
from latent3d.nerf.field import FieldConfig  # noqa: E402
from latent3d.nerf.grid import GridConfig  # noqa: E402
from latent3d.nerf.model import LatentNeRF  # noqa: E402
from latent3d.nerf.render import RenderConfig  # noqa: E402

STAGES = ("field", "marching_cubes", "cleanup", "decimate", "uv_unwrap", "bake", "decode", "write")


def _capsule(p: torch.Tensor, a, b, r: float) -> torch.Tensor:
    a, b = torch.tensor(a), torch.tensor(b)
    t = ((p - a) @ (b - a) / float((b - a) @ (b - a))).clamp(0, 1)
    return (p - a - t[:, None] * (b - a)).norm(dim=-1) - r


def _ellipsoid(p: torch.Tensor, c, radii) -> torch.Tensor:
    radii = torch.tensor(radii)
    return ((p - torch.tensor(c)) / radii).norm(dim=-1).sub(1) * radii.min()


def _smooth_union(a: torch.Tensor, b: torch.Tensor, k: float = 0.05) -> torch.Tensor:
    h = (0.5 + 0.5 * (b - a) / k).clamp(0, 1)
    return b + (a - b) * h - k * h * (1 - h)


def creature_sdf(p: torch.Tensor) -> torch.Tensor:
    """Signed distance (approximately) of the standard scene, y up, +z front; p [N, 3] -> [N]."""
    parts = [
        _ellipsoid(p, (0.0, 0.0, 0.0), (0.28, 0.25, 0.45)),
        _ellipsoid(p, (0.0, 0.25, 0.45), (0.17, 0.16, 0.19)),
        _ellipsoid(p, (0.1, 0.42, 0.42), (0.05, 0.09, 0.03)),
        _ellipsoid(p, (-0.1, 0.42, 0.42), (0.05, 0.09, 0.03)),
        _capsule(p, (0.0, 0.1, -0.4), (0.0, 0.4, -0.65), 0.04),
    ]
    parts += [_capsule(p, (sx * 0.15, -0.1, sz * 0.25), (sx * 0.15, -0.55, sz * 0.25), 0.07) for sx in (-1, 1) for sz in (-1, 1)]
    sdf = parts[0]
    for part in parts[1:]:
        sdf = _smooth_union(sdf, part)
    return sdf + 0.012 * torch.sin(25 * p[:, 0]) * torch.sin(25 * p[:, 1]) * torch.sin(25 * p[:, 2])


def creature_target(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log σ [N], latent [N, 4]) of the standard scene."""
    log_sigma = 6.0 * torch.tanh(-creature_sdf(p) / 0.02)
    stripes = 0.5 + 0.5 * torch.sin(12 * (p[:, 1] + 0.5 * p[:, 2]))
    rgb = torch.stack([0.55 + 0.3 * stripes, 0.35 + 0.2 * stripes, 0.2 + 0.1 * (p[:, 0] + 0.5)], -1).clamp(0.05, 0.95)
    return log_sigma, rgb_to_latents(rgb)


def fit_scene(steps: int, batch: int, seed: int, quick: bool = False) -> LatentNeRF:
    """A paper-size LatentNeRF (--quick: an 8-level 2^14 grid, 32³ occupancy) regressed onto
    ``creature_target`` (half the points near the surface)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    if quick:
        field = FieldConfig(grid=GridConfig(levels=8, finest_resolution=256, log2_table_size=14), hidden_dim=32, background="none")
        model = LatentNeRF(field, RenderConfig(occupancy_resolution=32))
    else:
        model = LatentNeRF(FieldConfig(background="none"), RenderConfig())
    pool = torch.rand(200_000 if quick else 2_000_000, 3, generator=generator) * 2 - 1
    pool = pool[creature_sdf(pool).abs() < 0.06]
    optimizer = torch.optim.Adam(
        [{"params": model.field.encoding.parameters(), "lr": 1e-2}, {"params": model.field.mlp.parameters(), "lr": 3e-3}], betas=(0.9, 0.99), eps=1e-15
    )
    for _ in range(steps):
        near = pool[torch.randint(0, len(pool), (batch // 2,), generator=generator)]
        points = torch.cat([near, torch.rand(batch - batch // 2, 3, generator=generator) * 2 - 1])
        target_log_sigma, target_latent = creature_target(points)
        sigma, latent = model.query(points)
        loss = (sigma.clamp_min(1e-30).log() - target_log_sigma).square().mean() + 4 * (latent - target_latent).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        for _ in range(3):  # the first fill plus refreshes, as during training
            model.update_occupancy(generator)
        check = torch.rand(65536, 3, generator=generator) * 2 - 1
        sigma = model.density(check)
        agree = float(((sigma > 10) == (creature_sdf(check) < -0.008)).float().mean())
    print(f"fit: {steps} steps of {batch} points, final loss {float(loss.detach()):.3f}, inside/outside agreement {agree:.3%}, occupied cells {model.occupancy.occupied_fraction():.2%}")
    return model


def export_once(model: LatentNeRF, config: ExportConfig, out_dir: Path) -> tuple[dict[str, float], object]:
    resolution = config.resolution
    mesh = extract_mesh(model, config)
    timings = dict(mesh.info["timings"])
    start = time.perf_counter()
    save_mesh(mesh, out_dir / f"creature_{resolution}.glb")
    timings["write"] = time.perf_counter() - start
    return timings, mesh


def fidelity(model: LatentNeRF, mesh, views: int = 4, size: int = 96) -> dict[str, float]:
    """How well the textured mesh reproduces the NeRF's own renders from the evaluation orbit: silhouette
    IoU (opacity > 0.5 vs mesh hit) and mean |ΔRGB| (linear map vs texture) where both are solid.
    Printed; returns {"iou", "rgb_err"}, or {} with the pip line when trimesh cannot cast rays here."""
    problem = ray_casting_problem()
    if problem is not None:
        print(f"fidelity: skipped: {problem}")
        return {}
    import trimesh

    cameras = eval_cameras(CameraConfig(), views)
    with torch.no_grad():
        render = model.render_latents(cameras, size, size)
    opacity = render.opacity[:, 0].reshape(-1).numpy()
    nerf_rgb = latents_to_rgb(render.latent.movedim(1, -1)).reshape(-1, 3).numpy()
    origins, dirs = (t.reshape(-1, 3).numpy() for t in camera_rays(cameras, size, size))
    shape = mesh.to_trimesh()
    start = time.perf_counter()
    points, rays, faces = shape.ray.intersects_location(origins, dirs, multiple_hits=False)
    cast_s = time.perf_counter() - start
    hit = np.zeros(len(origins), dtype=bool)
    hit[rays] = True
    bary = trimesh.triangles.points_to_barycentric(shape.triangles[faces], points)
    uv = (mesh.uvs[mesh.faces[faces]] * bary[..., None]).sum(1)
    rows = np.clip(((1 - uv[:, 1]) * mesh.texture.shape[0]).astype(int), 0, mesh.texture.shape[0] - 1)
    cols = np.clip((uv[:, 0] * mesh.texture.shape[1]).astype(int), 0, mesh.texture.shape[1] - 1)
    mesh_rgb = np.zeros_like(nerf_rgb)
    mesh_rgb[rays] = mesh.texture[rows, cols] / 255.0
    solid = opacity > 0.5
    iou = (solid & hit).sum() / max(1, (solid | hit).sum())
    both = (opacity > 0.95) & hit
    error = float(np.abs(mesh_rgb[both] - nerf_rgb[both]).mean()) if both.any() else 1.0
    backend = "embree" if trimesh.ray.has_embree else "rtree"
    print(f"fidelity vs NeRF renders ({views} views {size}²): silhouette IoU {iou:.3f}, mean |ΔRGB| {error:.3f} over {both.sum()} pixels")
    print(f"ray casting {len(origins):,} rays on {len(shape.faces):,} faces: {backend} {cast_s:.2f} s" + ray_casting_rtree(shape, origins, dirs, backend))
    return {"iou": float(iou), "rgb_err": error}


def ray_casting_rtree(shape, origins: np.ndarray, dirs: np.ndarray, backend: str) -> str:
    """", rtree <s> s" when embree did the casting and rtree is importable too (the portable fallback's cost)."""
    if backend != "embree":
        return ""
    try:
        from trimesh.ray.ray_triangle import RayMeshIntersector

        start = time.perf_counter()
        RayMeshIntersector(shape).intersects_location(origins, dirs, multiple_hits=False)
    except ImportError:  # rtree missing: embree alone
        return ""
    return f", rtree {time.perf_counter() - start:.2f} s"


def vae_decoder(latent_size: int):
    """An SD1.x-layout AutoencoderKL (random weights) as an export ``decode`` callable, or None."""
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        print("vae: diffusers is not installed; skipped")
        return None
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=8 * latent_size,
    ).eval()

    def decode(latent: torch.Tensor) -> torch.Tensor:  # model space -> VAE space (÷ 0.18215)
        return ((vae.decode(latent / 0.18215).sample + 1) / 2).clamp(0, 1)

    return decode


def time_vae(mesh, model: LatentNeRF, latent_size: int) -> None:
    decode = vae_decoder(latent_size)
    if decode is None:
        return
    start = time.perf_counter()
    atlas = unwrap(mesh.vertices, mesh.faces, latent_size, 1)
    latent, _ = bake_latent_texture(
        model, mesh.vertices[atlas.vertex_map], mesh.normals[atlas.vertex_map], atlas.faces, atlas.uvs, latent_size, 2 / 255, 131072
    )
    bake_s = time.perf_counter() - start
    start = time.perf_counter()
    texture = decode_texture(latent, decode)
    decode_s = time.perf_counter() - start
    print(f"vae: unwrap+bake at {latent_size}² {bake_s:.2f} s, decode {latent_size}² -> {texture.shape[0]}² {decode_s:.2f} s (random SD-layout decoder)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="seconds: tiny field, 32³ and 64³ exports, 256² texture, 8² VAE latent")
    parser.add_argument("--fit-steps", type=int, default=None, help="regression steps of the scene fit (default 80, --quick 30)")
    parser.add_argument("--fit-batch", type=int, default=None, help="points per fit step (default 16384, --quick 4096)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-latent", type=int, default=None, help="latent side for the VAE decode timing (128 = 1024² texture; default 64, --quick 8); 0 skips")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    quick = args.quick
    fit_steps = args.fit_steps if args.fit_steps is not None else (30 if quick else 80)
    fit_batch = args.fit_batch if args.fit_batch is not None else (4096 if quick else 16384)
    vae_latent = args.vae_latent if args.vae_latent is not None else (8 if quick else 64)
    set_threads(args.threads, quick)
    logging.basicConfig(level=logging.WARNING)
    print_header("cpu", "quick" if quick else "")
    start = time.perf_counter()
    model = fit_scene(fit_steps, fit_batch, args.seed, quick)
    print(f"setup (fit + occupancy) {time.perf_counter() - start:.1f} s")
    configs = [ExportConfig(resolution=r, coarse_resolution=32, texture_size=256) for r in (32, 64)] if quick else [ExportConfig(resolution=r) for r in (128, 256)]
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for config in configs:
            resolution = config.resolution
            timings, mesh = export_once(model, config, Path(tmp))
            results[resolution] = (timings, mesh)
            split = "  ".join(f"{stage} {timings.get(stage, 0.0):.2f}" for stage in STAGES)
            info = mesh.info
            print(
                f"{resolution}³: total {sum(timings.values()):.2f} s | {split} | threshold {info['threshold']:.3g}, "
                f"band evaluations {info['field_evaluations']:,}, marching-cubes faces {info['marching_cubes_faces']:,}, "
                f"after cleanup {info['cleaned_faces']:,}, final {len(mesh.faces):,} faces / {len(mesh.vertices):,} vertices"
            )
        finest = configs[-1]
        start = time.perf_counter()
        lattice = sample_density_lattice(model, dataclasses.replace(finest, coarse_source="field"))
        print(f"{finest.resolution}³ field stage without the occupancy grid ({finest.coarse_resolution}³ coarse pass): "
              f"{time.perf_counter() - start:.2f} s, {lattice.evaluations:,} evaluations")
        timings, mesh = results[finest.resolution]
        checks = fidelity(model, mesh, *((2, 32) if quick else ()))
        if vae_latent:
            time_vae(mesh, model, vae_latent)
    print_result(export_s=sum(timings.values()), faces=len(mesh.faces), **checks)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
