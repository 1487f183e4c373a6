"""Latent-Paint step benchmark: where a step on blub.obj (14,208 faces) spends its time.

Prints, for the paper's configuration (texture 4×128², environment background, bilinear lookup):
- the per-step split into rasterize, texture lookup forward + backward (with the background), UNet
  (the SDS call: noise, UNet, guidance), optimizer and other, at 64² and 512² latent views, with a
  denoiser that costs nothing (the machinery alone, both sizes) and with a UNet at 64²: the tiny one and
  the SD1.5-shaped one (random weights); a 512² latent view is a 4096² image, which no SD UNet is run on;
- every CPU rasterizer backend against trimesh ray casting on the same rays, at 64² and 512²
  (``benchmarks/paint_raster.py``'s functions when that file is present);
- peak memory: the process's peak RSS on CPU; on CUDA peak allocated VRAM and the step / bare fp16
  UNet forward ratio (targets: ≤ 1.10, ≤ 6 GB with SD1.5 fp16).

    python benchmarks/paint_step.py            # full run (~2-4 min on 2 CPU cores; builds the SD1.5 UNet)
    python benchmarks/paint_step.py --quick    # tiny UNet only, rasterizers with 3 repeats (< 1 min)

Last line: RESULT paint_machinery_ms=<x> raster64_ms=<y> raster512_ms=<z> (machinery: mean step with
the free denoiser at 64², everything but the UNet; raster: ``rasterize(backend="auto")`` medians).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from latent3d.guidance.denoiser import DiffusersDenoiser, scaled_linear_alphas_cumprod  # noqa: E402
from latent3d.guidance.prompts import PromptEmbeddings  # noqa: E402
from latent3d.nerf.train import StepTimer  # noqa: E402
from latent3d.paint.mesh import load_paint_mesh  # noqa: E402
from latent3d.paint.train import PaintConfig, PaintTrainer  # noqa: E402

BLUB = Path("/work/shared/assets/shapes/blub.obj")
SECTIONS = ("rasterize", "texture", "render_backward", "unet", "optimizer")

try:  # the rasterizer benchmark's helpers, when that file is present
    from paint_raster import load_blub, loadavg, raster_calls, time_round_robin, trimesh_engine
except ImportError:  # pragma: no cover - a checkout without benchmarks/paint_raster.py
    load_blub = raster_calls = None

    def loadavg() -> str:
        try:
            return Path("/proc/loadavg").read_text().strip()
        except OSError:
            return "n/a"


class FreeDenoiser:
    """ε = 0 at no cost: isolates the machinery."""

    prediction_type = "epsilon"
    embedding_dim = None
    alphas_cumprod = scaled_linear_alphas_cumprod()

    def predict_noise(self, z_t, t, embeddings, cameras=None):
        return torch.zeros_like(z_t)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def embeddings(width: int, device) -> PromptEmbeddings:
    g = torch.Generator().manual_seed(0)
    return PromptEmbeddings.single(torch.randn(1, 77, width, generator=g), torch.randn(1, 77, width, generator=g)).to(device)


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def step_split(mesh, denoiser, width: int, resolution: int, device, steps: int, bare=None) -> dict[str, float]:
    """Mean (and median) step ms and the mean ms of each section over ``steps`` steps after a warm-up step;
    ``bare`` (a callable) is timed after every step (the bare UNet call, same load)."""
    trainer = PaintTrainer(PaintConfig(resolution=resolution), mesh, denoiser, embeddings(width, device), device)
    trainer.train_step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timer = StepTimer(device)
    times, bare_times = [], []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        trainer.train_step(timer)
        sync(device)
        times.append(1000 * (time.perf_counter() - start))
        if bare is not None:
            start = time.perf_counter()
            bare()
            sync(device)
            bare_times.append(1000 * (time.perf_counter() - start))
    row = {k: 1000 * timer.totals.get(k, 0.0) / steps for k in SECTIONS}  # means, like the step below
    row["step"], row["median"] = statistics.fmean(times), statistics.median(times)
    row["other"] = row["step"] - sum(row[k] for k in SECTIONS)
    # all but the UNet: with a free denoiser the whole step; with a UNet every section but the SDS call
    # (step − bare UNet would subtract two large numbers that the machine's load moves independently)
    row["machinery"] = row["step"] - (row["unet"] if bare_times else 0.0)
    if bare_times:
        row["unet_alone"] = statistics.fmean(bare_times)
        row["ratio"] = row["step"] / row["unet_alone"]
    if device.type == "cuda":
        row["peak_vram_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def show(name: str, resolution: int, row: dict[str, float]) -> None:
    lookup = row["texture"] + row["render_backward"]
    parts = [f"step {row['step']:8.1f} (median {row['median']:.1f})", f"rasterize {row['rasterize']:6.1f}", f"lookup fwd+bwd {lookup:6.1f}", f"unet {row['unet']:8.1f}",
             f"optimizer {row['optimizer']:5.1f}", f"other {row['other']:5.1f}", f"machinery {row['machinery']:6.1f}"]
    if "ratio" in row:
        parts.append(f"bare unet {row['unet_alone']:.1f}, step/unet {row['ratio']:.3f}")
    if "peak_vram_gb" in row:
        parts.append(f"peak VRAM {row['peak_vram_gb']:.2f} GB")
    print(f"  {name:24s} {resolution:3d}²  " + "  ".join(parts) + f"   (ms; loadavg {loadavg().split(' ')[0]})", flush=True)


def prepared(unet, device, dtype):
    """The UNet on ``device`` in ``dtype``, frozen (no cast when it already has the dtype: diffusers warns)."""
    unet = unet.to(device)
    if next(unet.parameters()).dtype != dtype:
        unet = unet.to(dtype)
    return unet.eval().requires_grad_(False)


def unet_denoiser(unet, resolution: int, device, dtype):
    """(denoiser, bare call) for a diffusers UNet: the bare call is one batch-2 forward like SDS's."""
    width = unet.config.cross_attention_dim
    z = torch.randn(2, 4, resolution, resolution, device=device, dtype=dtype)
    t = torch.tensor([500, 500], device=device)
    cond = embeddings(width, device).views["front"].expand(2, -1, -1).to(dtype)

    def bare() -> None:
        with torch.no_grad():
            unet(z, t, encoder_hidden_states=cond)

    bare()  # warm-up (cuDNN autotuning, allocator)
    return DiffusersDenoiser(unet, scaled_linear_alphas_cumprod()), bare


def rasterizers(sizes: tuple[int, ...], repeats: int) -> dict[int, float]:
    """Each CPU backend vs trimesh ray casting (medians); returns rasterize[auto]'s ms per size."""
    if raster_calls is None:
        print("  (benchmarks/paint_raster.py is not present: rasterizer comparison skipped)")
        return {}
    mesh = load_blub(BLUB)
    engine = trimesh_engine(mesh)
    print(f"  trimesh ray engine: {engine}")
    auto = {}
    for size in sizes:
        calls, cast = raster_calls(mesh, size)
        if engine.startswith("embree"):  # rtree's fallback takes 10-30 s a view: left to paint_raster.py
            calls["trimesh ray casting"] = cast
        results = time_round_robin(calls, repeats if size == 64 else max(3, repeats // 3))
        for name, (first, median) in results.items():
            print(f"  {size:4d}²  {name:24s} median {median:8.2f} ms   first {first:8.2f} ms", flush=True)
        auto[size] = results["rasterize[auto]"][1]
    return auto


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny UNet only, rasterizers with 3 repeats")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--steps", type=int, default=20, help="measured steps per row with a free or tiny denoiser")
    parser.add_argument("--sd-steps", type=int, default=3, help="measured steps with the SD1.5-shaped UNet")
    parser.add_argument("--mesh", type=Path, default=BLUB, help="the mesh to paint (default blub.obj)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    if not args.mesh.is_file():
        sys.exit(f"mesh {args.mesh} not found (pass --mesh)")
    mesh = load_paint_mesh(args.mesh)
    print(f"mesh {args.mesh.name}: {mesh.num_faces} faces, UVs from {mesh.uv_origin}; device {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, UNet dtype {dtype}; loadavg {loadavg()}", flush=True)
    sizes = (64,) if args.quick else (64, 512)

    print("per-step split, paper config (texture 4×128², environment background), ms:", flush=True)
    free = {}
    for size in sizes:
        free[size] = step_split(mesh, FreeDenoiser(), 8, size, device, args.steps)
        show("free denoiser", size, free[size])
    if args.threads > 1:  # small ops: on a busy machine one thread can beat two (they wait for each other)
        torch.set_num_threads(1)
        show("free denoiser, 1 thread", 64, step_split(mesh, FreeDenoiser(), 8, 64, device, args.steps))
        torch.set_num_threads(args.threads)
    from latent3d.tiny import build_tiny_modules

    tiny = prepared(build_tiny_modules()["unet"], device, dtype)
    denoiser, bare = unet_denoiser(tiny, 64, device, dtype)
    show("tiny UNet", 64, step_split(mesh, denoiser, tiny.config.cross_attention_dim, 64, device, max(3, args.steps // 4), bare))
    print(f"  peak RSS so far {peak_rss_gb():.2f} GB", flush=True)
    if not args.quick:
        from latent3d.loading import build_sd15_unet

        start = time.perf_counter()
        unet = prepared(build_sd15_unet(), device, dtype)
        print(f"  (built the SD1.5-shaped UNet in {time.perf_counter() - start:.1f} s)", flush=True)
        denoiser, bare = unet_denoiser(unet, 64, device, dtype)
        show("SD1.5 UNet", 64, step_split(mesh, denoiser, unet.config.cross_attention_dim, 64, device, args.sd_steps, bare))
        del unet, denoiser, bare
        print(f"  peak RSS {peak_rss_gb():.2f} GB", flush=True)

    print("rasterizers on blub.obj, one training camera (ms):", flush=True)
    auto = rasterizers((64, 512), 3 if args.quick else 15)  # both sizes always: RESULT holds no nan
    print(f"loadavg after: {loadavg()}")
    print(f"RESULT paint_machinery_ms={free[64]['machinery']:.1f} raster64_ms={auto.get(64, float('nan')):.2f} raster512_ms={auto.get(512, float('nan')):.2f}")


if __name__ == "__main__":
    main()
