"""SDS step benchmark: where a Latent-NeRF step spends its time.

Prints, for an SD1.5-shaped UNet with random weights (64² and 32² latents) and the tiny UNet, the
per-step split into UNet forward, render forward, render backward (with the losses' backward), losses,
optimizer and occupancy refresh (amortized over its 16-step period), plus grid-encoding throughput and
the mean samples per ray after empty-space skipping (initial density blob; after an oracle fit).

    python benchmarks/sds_step.py            # full run (~5 min on 2 CPU cores)
    python benchmarks/sds_step.py --quick    # tiny UNet only, fewer steps

Last line: RESULT step_over_unet=<x> machinery_ms=<y> samples_per_ray=<z> (full-size UNet at 64²;
samples_per_ray on the initial blob; in --quick mode the tiny UNet's figures).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from latent3d.guidance.denoiser import DiffusersDenoiser, scaled_linear_alphas_cumprod  # noqa: E402
from latent3d.guidance.prompts import PromptEmbeddings  # noqa: E402
from latent3d.nerf.cameras import sample_cameras  # noqa: E402
from latent3d.nerf.grid import GridConfig, make_grid_encoding  # noqa: E402
from latent3d.nerf.train import NerfConfig, NerfTrainer, StepTimer  # noqa: E402
from latent3d.scenes import TwoBlobs, oracle_for  # noqa: E402

SECTIONS = ("unet", "render_forward", "render_backward", "losses", "optimizer", "occupancy")


class ZeroDenoiser:
    """Costs nothing: isolates the 3D machinery."""

    prediction_type = "epsilon"
    embedding_dim = None
    alphas_cumprod = scaled_linear_alphas_cumprod()

    def predict_noise(self, z_t, t, embeddings, cameras=None):
        return torch.zeros_like(z_t)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats=3) -> float:
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def embeddings(width: int, device) -> PromptEmbeddings:
    g = torch.Generator().manual_seed(0)
    return PromptEmbeddings.single(torch.randn(1, 77, width, generator=g), torch.randn(1, 77, width, generator=g)).to(device)


def grid_throughput(device) -> float:
    encoding = make_grid_encoding(GridConfig(), device)
    x = torch.rand(262144, 3, device=device)

    def step():
        encoding.zero_grad(set_to_none=True)
        encoding(x).square().sum().backward()

    step()
    return x.shape[0] / timed(step, device)


def samples_per_ray(trainer: NerfTrainer, res: int = 64, views: int = 8) -> float:
    g = torch.Generator(device=trainer.device).manual_seed(123)
    total = 0
    with torch.no_grad():
        for _ in range(views):
            cams = sample_cameras(trainer.config.camera, 1, g, trainer.device)
            total += trainer.model.render(cams, res, res, g, jitter=True)[0].samples
    return total / (views * res * res)


def machinery(config: NerfConfig, device, steps: int) -> tuple[dict[str, float], float, NerfTrainer]:
    """Per-step ms of each section with a free denoiser, over whole occupancy periods."""
    trainer = NerfTrainer(config, ZeroDenoiser(), embeddings(8, device), device)
    trainer.train_step()  # the first occupancy fill and warm-up are not part of the steady state
    timer = StepTimer(torch.device(device))
    sync(torch.device(device))
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(timer)
    sync(torch.device(device))
    per_step = {k: 1000 * v / steps for k, v in timer.totals.items()}
    return per_step, 1000 * (time.perf_counter() - start) / steps, trainer


def unet_row(name, unet, resolution, device, dtype, steps, occupancy_ms) -> dict[str, float]:
    """Training steps through ``unet``, each followed by a bare UNet call on the same shapes, so the
    ratio compares like with like under the same machine load."""
    denoiser = DiffusersDenoiser(unet, scaled_linear_alphas_cumprod())
    config = NerfConfig(resolution=resolution)
    emb = embeddings(unet.config.cross_attention_dim, device)
    z = torch.randn(2, 4, resolution, resolution, device=device, dtype=dtype)
    t = torch.tensor([500, 500], device=device)
    cond = torch.cat([emb.uncond, emb.views["front"]]).to(dtype)
    trainer = NerfTrainer(config, denoiser, emb, device)
    trainer.train_step()  # step 0 holds the first occupancy fill: warm-up
    with torch.no_grad():
        unet(z, t, encoder_hidden_states=cond)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timer = StepTimer(device)
    step_times, bare_times = [], []
    for _ in range(steps):
        step_times.append(timed(lambda: trainer.train_step(timer), device, repeats=1))
        with torch.no_grad():
            bare_times.append(timed(lambda: unet(z, t, encoder_hidden_states=cond), device, repeats=1))
    unet_alone = 1000 * statistics.median(bare_times)
    step_ms = 1000 * statistics.median(step_times) + occupancy_ms  # the 16-step refresh, amortized
    row = {k: 1000 * timer.totals.get(k, 0.0) / steps for k in SECTIONS if k != "occupancy"}
    row["occupancy"] = occupancy_ms
    row["other"] = step_ms - sum(row.values())
    row.update(step=step_ms, unet_alone=unet_alone, ratio=step_ms / unet_alone)
    row["machinery"] = row["render_forward"] + row["render_backward"] + row["losses"] + row["optimizer"] + occupancy_ms
    if device.type == "cuda":
        row["peak_vram_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    print(f"  {name} {resolution}²: " + "  ".join(f"{k}={v:.0f}" if k not in ("ratio", "peak_vram_gb") else f"{k}={v:.3f}" for k, v in row.items()), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny UNet only")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=3, help="measured steps per full-size UNet row")
    parser.add_argument("--fit-steps", type=int, default=300, help="oracle-fit steps before the second samples/ray figure")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, dtype {dtype}", flush=True)

    rate = grid_throughput(device)
    print(f"grid encoding (16 levels, 2^19 table): {rate / 1e6:.2f} M samples/s forward+backward", flush=True)

    config = NerfConfig()
    period = config.render.occupancy_update_every
    split, mach_total, blob_trainer = machinery(config, device, 2 * period)
    occupancy_ms = split.get("occupancy", 0.0)
    spr_blob = samples_per_ray(blob_trainer)
    print(f"3D machinery at 64² (free denoiser, {2 * period} steps): {mach_total:.0f} ms/step = "
          + ", ".join(f"{k} {v:.0f}" for k, v in split.items()), flush=True)
    print(f"samples per ray, initial density blob: {spr_blob:.1f} (occupied cells {blob_trainer.model.occupancy.occupied_fraction():.1%})", flush=True)

    fit = NerfTrainer(NerfConfig(resolution=32), oracle_for(TwoBlobs()), embeddings(8, device), device)
    for _ in range(args.fit_steps):
        fit.train_step()
    spr_fit = samples_per_ray(fit, 64)
    print(f"samples per ray after a {args.fit_steps}-step oracle fit (two blobs): {spr_fit:.1f} "
          f"(occupied cells {fit.model.occupancy.occupied_fraction():.1%})", flush=True)

    print("per-step split (ms):", flush=True)
    from latent3d.tiny import build_tiny_modules

    tiny_unet = build_tiny_modules()["unet"].to(device, dtype).eval().requires_grad_(False)
    tiny = unet_row("tiny UNet", tiny_unet, 64, device, dtype, 8, occupancy_ms)
    if args.quick:
        print(f"RESULT step_over_unet={tiny['ratio']:.3f} machinery_ms={tiny['machinery']:.0f} samples_per_ray={spr_blob:.1f}")
        return
    from latent3d.loading import build_sd15_unet

    start = time.perf_counter()
    unet = build_sd15_unet().to(device, dtype)
    print(f"  (built SD1.5-shaped UNet in {time.perf_counter() - start:.1f} s)", flush=True)
    unet_row("SD1.5 UNet", unet, 32, device, dtype, args.steps + 1, occupancy_ms)
    full = unet_row("SD1.5 UNet", unet, 64, device, dtype, args.steps, occupancy_ms)
    print(f"RESULT step_over_unet={full['ratio']:.3f} machinery_ms={full['machinery']:.0f} samples_per_ray={spr_blob:.1f}")


if __name__ == "__main__":
    main()
