"""SDS step benchmark: where a Latent-NeRF step spends its time, with the default settings.

Prints grid-encoding throughput (per available backend), the 3D machinery's per-step split with a free
denoiser (render forward/backward, losses, optimizer, and the occupancy refresh amortized over its 16-step
period), what the defaults cost (a full occupancy refresh vs the old 12.5 % one, MLP biases, the official
marching step vs the device default), samples per ray at the device's step and at the official one (initial
density blob; after an oracle fit), and for the tiny UNet and an SD1.5-shaped UNet (random weights, 32²
and 64² latents) the step split and the step / bare-UNet-call ratio (peak VRAM on CUDA).

    python benchmarks/sds_step.py                      # full run (≈10 min on 2 loaded CPU cores)
    python benchmarks/sds_step.py --rows tiny,sd32     # skip the slow 64² SD1.5 row
    python benchmarks/sds_step.py --quick              # seconds: tiny field, tiny UNet at 16²
    python benchmarks/sds_step.py --device cuda        # fp16 autocast; tiny-cuda-nn grid when importable

On CUDA the UNet runs in fp16 and the step under fp16 autocast with gradient scaling (the training
default). Last line: RESULT step_over_unet=… machinery_ms=… samples_per_ray=… samples_per_ray_official=…
occupancy_ms=… (the last UNet row: SD1.5 at 64² when it ran; peak_vram_gb on CUDA).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from _common import add_threads_argument, print_header, print_result, set_threads, sync, timed, timed_cpu  # noqa: E402

from latent3d.backends import probe  # noqa: E402
from latent3d.guidance.denoiser import DiffusersDenoiser, scaled_linear_alphas_cumprod  # noqa: E402
from latent3d.guidance.prompts import PromptEmbeddings  # noqa: E402
from latent3d.nerf.cameras import sample_cameras  # noqa: E402
from latent3d.nerf.field import mlp  # noqa: E402
from latent3d.nerf.grid import TorchGridEncoding, make_grid_encoding  # noqa: E402
from latent3d.nerf.model import LatentNeRF  # noqa: E402
from latent3d.nerf.render import CPU_STEP_SIZE, OFFICIAL_STEP_SIZE  # noqa: E402
from latent3d.nerf.train import NerfConfig, NerfTrainer, StepTimer  # noqa: E402
from latent3d.scenes import TwoBlobs, oracle_for  # noqa: E402

SECTIONS = ("unet", "render_forward", "render_backward", "losses", "optimizer", "occupancy")
ROWS = {"tiny": ("tiny UNet", None), "sd32": ("SD1.5 UNet", 32), "sd64": ("SD1.5 UNet", 64)}


class ZeroDenoiser:
    """Costs nothing: isolates the 3D machinery."""

    prediction_type = "epsilon"
    embedding_dim = None
    alphas_cumprod = scaled_linear_alphas_cumprod()

    def predict_noise(self, z_t, t, embeddings, cameras=None):
        return torch.zeros_like(z_t)


def grid_backend(trainer: NerfTrainer) -> str:
    return "torch" if isinstance(trainer.model.field.encoding, TorchGridEncoding) else "tcnn"


def base_config(quick: bool) -> NerfConfig:
    """The paper's NerfConfig (step size automatic per device), or the tiny test preset for --quick."""
    return NerfConfig.tiny(resolution=16) if quick else NerfConfig()


def with_step(config: NerfConfig, step: float | None) -> NerfConfig:
    return dataclasses.replace(config, render=dataclasses.replace(config.render, step_size=step))


def embeddings(width: int, device) -> PromptEmbeddings:
    g = torch.Generator().manual_seed(0)
    return PromptEmbeddings.single(torch.randn(1, 77, width, generator=g), torch.randn(1, 77, width, generator=g)).to(device)


def grid_throughput(config: NerfConfig, device: torch.device, points: int) -> None:
    """Forward+backward samples/s of the grid encoding, for torch and (CUDA, importable) tiny-cuda-nn."""
    backends = ["torch"] + (["tcnn"] if device.type == "cuda" and probe("tinycudann") is not None else [])
    grid = config.field.grid
    x = torch.rand(points, 3, device=device)
    for backend in backends:
        encoding = make_grid_encoding(dataclasses.replace(grid, backend=backend), device)

        def step():
            encoding.zero_grad(set_to_none=True)
            encoding(x).float().square().sum().backward()

        step()
        rate = points / timed(step, device)
        print(f"grid encoding ({grid.levels} levels, 2^{grid.log2_table_size} table, {backend}): {rate / 1e6:.2f} M samples/s forward+backward", flush=True)


def samples_per_ray(model: LatentNeRF, config: NerfConfig, step: float, res: int = 64, views: int = 8) -> float:
    """Mean field evaluations per ray (all rays, misses included) of jittered training views at ``step``."""
    saved = model.render_config
    model.render_config = dataclasses.replace(saved, step_size=step)
    g = torch.Generator(device=model.device).manual_seed(123)
    total = 0
    try:
        with torch.no_grad():
            for _ in range(views):
                cams = sample_cameras(config.camera, 1, g, model.device)
                total += model.render(cams, res, res, g, jitter=True)[0].samples
    finally:
        model.render_config = saved
    return total / (views * res * res)


def machinery(config: NerfConfig, device, steps: int) -> tuple[dict[str, float], float, NerfTrainer]:
    """Per-step ms of each section with a free denoiser over ``steps`` steps after the first (the first
    occupancy fill and warm-up); whole occupancy periods amortize the refresh."""
    trainer = NerfTrainer(config, ZeroDenoiser(), embeddings(8, device), device)
    trainer.train_step()
    timer = StepTimer(torch.device(device))
    sync(torch.device(device))
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(timer)
    sync(torch.device(device))
    per_step = {k: 1000 * v / steps for k, v in timer.totals.items()}
    return per_step, 1000 * (time.perf_counter() - start) / steps, trainer


def refresh_ms(model: LatentNeRF, fraction: float, device: torch.device) -> tuple[float, float]:
    """(wall ms, CPU ms) of one occupancy refresh evaluating ``fraction`` of the cells (plus the occupied
    ones below 1); the grid is restored afterwards."""
    saved = {k: v.clone() for k, v in model.occupancy.state_dict().items()}
    config = dataclasses.replace(model.render_config, occupancy_update_fraction=fraction)
    g = torch.Generator(device=device).manual_seed(7)
    with torch.no_grad():
        wall, cpu = timed_cpu(lambda: model.occupancy.update(model.field.density, config, g), device, repeats=2)
    model.occupancy.load_state_dict(saved)
    return 1000 * wall, 1000 * cpu


def mlp_bias_ms(config: NerfConfig, samples: int, device: torch.device) -> dict[bool, tuple[float, float]]:
    """{bias: (wall ms, CPU ms)} of the field MLP's forward+backward on ``samples`` grid features."""
    field = config.field
    x = torch.randn(samples, field.grid.output_dim, device=device)
    nets = {bias: mlp(field.grid.output_dim, field.hidden_dim, field.hidden_layers, 1 + field.latent_channels, bias).to(device) for bias in (True, False)}

    def step(net) -> None:
        net.zero_grad(set_to_none=True)
        net(x).square().sum().backward()

    times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for net in nets.values():
        step(net)
    for _ in range(5):  # interleaved, so a change of machine load hits both alike
        for bias, net in nets.items():
            times[bias].append(timed_cpu(lambda: step(net), device, repeats=1))
    return {bias: (1000 * statistics.median(t[0] for t in ts), 1000 * statistics.median(t[1] for t in ts)) for bias, ts in times.items()}


def render_step_ms(config: NerfConfig, device: torch.device, step: float, steps: int) -> dict[str, float]:
    """Per-step ms at marching step ``step`` with a free denoiser, occupancy refresh excluded: the median
    step (wall and CPU) and the mean of each section."""
    trainer = NerfTrainer(with_step(config, step), ZeroDenoiser(), embeddings(8, device), device)
    trainer.train_step()
    timer = StepTimer(device)
    walls, cpus = [], []
    for _ in range(steps):
        wall, cpu = timed_cpu(lambda: trainer.train_step(timer), device, repeats=1)
        walls.append(wall)
        cpus.append(cpu)
    split = {k: 1000 * v / steps for k, v in timer.totals.items() if k not in ("occupancy", "unet")}
    split.update(step=1000 * statistics.median(walls), cpu=1000 * statistics.median(cpus))
    return split


def unet_row(name, unet, config: NerfConfig, resolution, device, dtype, steps, occupancy_ms) -> dict[str, float]:
    """Training steps through ``unet``, each followed by a bare UNet call on the same shapes, so the
    ratio compares like with like under the same machine load."""
    denoiser = DiffusersDenoiser(unet, scaled_linear_alphas_cumprod())
    emb = embeddings(unet.config.cross_attention_dim, device)
    z = torch.randn(2, 4, resolution, resolution, device=device, dtype=dtype)
    t = torch.tensor([500, 500], device=device)
    cond = torch.cat([emb.uncond, emb.views["front"]]).to(dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer = NerfTrainer(dataclasses.replace(config, resolution=resolution), denoiser, emb, device)
    trainer.train_step()  # step 0 holds the first occupancy fill: warm-up
    with torch.no_grad():
        unet(z, t, encoder_hidden_states=cond)
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
    figures = "  ".join(f"{k}={v:.3f}" if k in ("ratio", "peak_vram_gb") else f"{k}={v:.0f}" for k, v in row.items())
    print(f"  {name} {resolution}² ({grid_backend(trainer)} grid, {trainer.config.render.step_size:.5f} step): {figures}", flush=True)
    return row


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="seconds: tiny field and UNet at 16², fewer steps (plumbing check)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_threads_argument(parser)
    parser.add_argument("--rows", default=None, help="comma list of UNet rows from tiny,sd32,sd64 (default: all; --quick: tiny)")
    parser.add_argument("--steps", type=int, default=None, help="measured steps per UNet row (default 3; tiny row 8)")
    parser.add_argument("--fit-steps", type=int, default=None, help="oracle-fit steps before the second samples/ray figure (default 300, --quick 20; 0 skips)")
    parser.add_argument("--other-step-steps", type=int, default=None, help="steps timed at each marching step, the device default and the other one (default 4, --quick 2; 0 skips)")
    args = parser.parse_args(argv)
    rows = (args.rows or ("tiny" if args.quick else "tiny,sd32,sd64")).split(",")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"--rows must name rows from {','.join(ROWS)}, got {','.join(unknown)}")
    args.rows = rows
    args.fit_steps = args.fit_steps if args.fit_steps is not None else (20 if args.quick else 300)
    args.other_step_steps = args.other_step_steps if args.other_step_steps is not None else (2 if args.quick else 4)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.threads, args.quick)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # casting a UNet with .to(dtype) warns about nothing here
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    config = base_config(args.quick)
    print_header(device, f"UNet dtype {dtype}, {'quick (tiny field)' if args.quick else 'paper field'}")
    grid_throughput(config, device, 16384 if args.quick else 262144)

    period = config.render.occupancy_update_every
    split, mach_total, blob = machinery(config, device, period if args.quick else 2 * period)
    occupancy_ms = split.get("occupancy", 0.0)
    step = blob.config.render.step_size
    print(f"3D machinery at {config.resolution}², step {step:.5f} ({grid_backend(blob)} grid, free denoiser): {mach_total:.0f} ms/step = "
          + ", ".join(f"{k} {v:.0f}" for k, v in split.items()), flush=True)
    defaults_cost(config, blob, device, args)
    views = dict(res=32, views=2) if args.quick else {}
    spr = samples_per_ray(blob.model, config, step, **views)
    spr_official = samples_per_ray(blob.model, config, OFFICIAL_STEP_SIZE, **views)
    print(f"samples per ray, initial density blob (occupied cells {blob.model.occupancy.occupied_fraction():.1%}): "
          f"{spr:.1f} at step {step:.5f}, {spr_official:.1f} at the official step {OFFICIAL_STEP_SIZE:.5f}", flush=True)
    if args.fit_steps:
        fit = NerfTrainer(dataclasses.replace(config, resolution=min(32, config.resolution)), oracle_for(TwoBlobs()), embeddings(8, device), device)
        for _ in range(args.fit_steps):
            fit.train_step()
        print(f"samples per ray after a {args.fit_steps}-step oracle fit (two blobs, occupied cells {fit.model.occupancy.occupied_fraction():.1%}): "
              f"{samples_per_ray(fit.model, config, step, **views):.1f} at step {step:.5f}, "
              f"{samples_per_ray(fit.model, config, OFFICIAL_STEP_SIZE, **views):.1f} at the official step", flush=True)

    row = unet_rows(config, device, dtype, args, occupancy_ms)
    figures = dict(step_over_unet=row["ratio"], machinery_ms=row["machinery"], samples_per_ray=spr, samples_per_ray_official=spr_official, occupancy_ms=occupancy_ms)
    if "peak_vram_gb" in row:
        figures["peak_vram_gb"] = row["peak_vram_gb"]
    print_result(**figures)
    return 0


def defaults_cost(config: NerfConfig, trainer: NerfTrainer, device: torch.device, args: argparse.Namespace) -> None:
    """What the default settings cost per step (wall and CPU ms): full vs 12.5 % occupancy refresh, MLP
    biases, the device's marching step vs the other one."""
    period = config.render.occupancy_update_every
    cells = config.render.occupancy_resolution
    (full, full_cpu), (partial, partial_cpu) = refresh_ms(trainer.model, 1.0, device), refresh_ms(trainer.model, 0.125, device)
    print(f"occupancy refresh ({cells}³ cells), per refresh and per step over {period} steps, wall (CPU): full {full:.0f} ({full_cpu:.0f}) ms = "
          f"{full / period:.1f} ({full_cpu / period:.1f}) ms/step; 12.5 % + occupied cells {partial:.0f} ({partial_cpu:.0f}) ms = "
          f"{partial / period:.1f} ({partial_cpu / period:.1f}) ms/step", flush=True)
    samples = max(1, int(statistics.mean(trainer.history["samples"])))  # mean field evaluations per step
    mlp_ms = mlp_bias_ms(config, samples, device)
    print(f"field MLP forward+backward on one step's {samples} samples, wall (CPU): {mlp_ms[True][0]:.1f} ({mlp_ms[True][1]:.1f}) ms with biases, "
          f"{mlp_ms[False][0]:.1f} ({mlp_ms[False][1]:.1f}) ms without", flush=True)
    print("sparsity weight: a scalar on the opacity entropy, which is computed at any weight: no cost", flush=True)
    if args.other_step_steps:
        own = trainer.config.render.step_size
        other = CPU_STEP_SIZE if own == OFFICIAL_STEP_SIZE else OFFICIAL_STEP_SIZE
        for step in (own, other):
            split = render_step_ms(config, device, step, args.other_step_steps)
            print(f"3D machinery at step {step:.5f} (occupancy refresh excluded, median of {args.other_step_steps}): {split['step']:.0f} ms/step "
                  f"wall ({split['cpu']:.0f} CPU) = " + ", ".join(f"{k} {v:.0f}" for k, v in split.items() if k not in ("step", "cpu")), flush=True)


def unet_rows(config: NerfConfig, device: torch.device, dtype: torch.dtype, args: argparse.Namespace, occupancy_ms: float) -> dict[str, float]:
    """Run the requested UNet rows; returns the last one's figures."""
    print("per-step split (ms):", flush=True)
    row: dict[str, float] = {}
    sd_unet = None
    for key in args.rows:
        name, resolution = ROWS[key]
        if key == "tiny":
            from latent3d.tiny import build_tiny_modules

            unet = build_tiny_modules()["unet"].to(device, dtype).eval().requires_grad_(False)
            steps = args.steps if args.steps is not None else (3 if args.quick else 8)
            row = unet_row(name, unet, config, config.resolution, device, dtype, steps, occupancy_ms)
            continue
        if sd_unet is None:
            from latent3d.loading import build_sd15_unet

            start = time.perf_counter()
            sd_unet = build_sd15_unet().to(device, dtype)
            print(f"  (built SD1.5-shaped UNet in {time.perf_counter() - start:.1f} s)", flush=True)
        row = unet_row(name, sd_unet, config, resolution, device, dtype, args.steps or 3, occupancy_ms)
    return row


if __name__ == "__main__":
    raise SystemExit(main())
