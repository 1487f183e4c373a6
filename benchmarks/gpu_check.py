"""One command for the CUDA checks, the day a GPU is lent: under 8 minutes on one GPU.

    python benchmarks/gpu_check.py             # CUDA: the three parts below; no CUDA: "no CUDA: skipped", exit 0
    sh benchmarks/gpu_check.sh                 # the same, from anywhere
    python benchmarks/gpu_check.py --plan      # the parts, their commands and time budgets
    python benchmarks/gpu_check.py --rehearse  # the same parts on the CPU at tiny sizes (tests/test_gpu_check.py)

Parts, each in its own process group with a time limit (the whole at most TOTAL_BUDGET_S):
1. ``pytest -m "gpu or reference"``: the CUDA tests (tests/test_gpu.py) and the twin-equivalence tests
   (tiny-cuda-nn grid vs the torch grid, ...), with pass/fail/skip counts.
2. ``sds_step.py --device cuda``: fp16 autocast with gradient scaling, the tiny-cuda-nn grid when importable
   (the torch grid's throughput beside it); step / bare-UNet-call ratio and peak VRAM
   (``torch.cuda.max_memory_allocated``) per row.
3. A short Latent-NeRF run: 200 steps at 64² through an SD1.5-shaped UNet with random weights (fp16), its
   wall time, skipped steps, final loss scale and peak VRAM.

Each part's output is printed as it comes, then one ``RESULT`` line per part (figures prefixed pytest_,
sds_, nerf_) and a last ``RESULT gpu_check_ok=<1|0> wall_s=<s>``; the exit status is 1 when a part failed
or ran out of time. Needs what the tests need: ``pip install -r requirements-dev.txt``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOTAL_BUDGET_S = 450
"""Upper limit of the whole check (8 minutes = 480 s, less process start-up and slack)."""
NERF_STEPS, NERF_RESOLUTION = 200, 64


@dataclasses.dataclass(frozen=True)
class Part:
    name: str
    prefix: str
    budget_s: int
    """Time limit of the part's process (also bounded by what is left of TOTAL_BUDGET_S)."""
    command: Callable[[bool, Path], list[str]]
    """(rehearse, scratch folder) -> argv."""
    summarize: Callable[["Outcome", bool, Path], tuple[bool, dict[str, float]]]
    """(outcome, rehearse, scratch folder) -> (passed, figures)."""


@dataclasses.dataclass
class Outcome:
    returncode: int | None
    timed_out: bool
    seconds: float
    lines: list[str]


def run_part(command: list[str], timeout_s: float, echo: Callable[[str], None] = print) -> Outcome:
    """Run ``command`` in its own process group, echoing its output lines; kill the whole group after
    ``timeout_s`` seconds (children included). The output so far is kept either way."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            echo("    " + line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=max(0.1, timeout_s))
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    reader.join(timeout=5)
    return Outcome(None if timed_out else proc.returncode, timed_out, time.perf_counter() - start, lines)


def result_figures(lines: list[str]) -> dict[str, float]:
    """Figures of the last ``RESULT k=v ...`` line among ``lines`` ({} when there is none)."""
    for line in reversed(lines):
        if line.startswith("RESULT "):
            figures = {}
            for item in line.split()[1:]:
                key, _, value = item.partition("=")
                try:
                    figures[key] = float(value)
                except ValueError:
                    continue
            return figures
    return {}


# -- the parts ------------------------------------------------------------------------------------------------


def pytest_command(rehearse: bool, scratch: Path) -> list[str]:
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu or reference"]
    return base + (["--collect-only"] if rehearse else ["-rs", f"--junitxml={scratch / 'gpu.xml'}"])


def pytest_summary(outcome: Outcome, rehearse: bool, scratch: Path) -> tuple[bool, dict[str, float]]:
    if rehearse:  # collection only: the tier must not be empty and must hold the CUDA tests
        counted = [re.search(r"(\d+)(?:/\d+)? tests? collected", line) for line in outcome.lines]
        collected = next((int(m.group(1)) for m in reversed(counted) if m), 0)
        gpu_tests = sum(1 for line in outcome.lines if line.startswith("tests/test_gpu.py::"))
        return outcome.returncode == 0 and gpu_tests > 0, {"collected": collected, "gpu_tests": gpu_tests}
    report = scratch / "gpu.xml"
    if not report.is_file():
        return False, {}
    suite = ElementTree.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    figures = {"tests": counts["tests"], "failed": counts["failures"] + counts["errors"], "skipped": counts["skipped"], "s": float(suite.get("time", 0))}
    figures["passed"] = counts["tests"] - figures["failed"] - counts["skipped"]
    return outcome.returncode == 0 and figures["passed"] > 0, figures


def sds_command(rehearse: bool, scratch: Path) -> list[str]:
    script = str(ROOT / "benchmarks" / "sds_step.py")
    if rehearse:
        return [sys.executable, script, "--device", "cpu", "--quick", "--fit-steps", "0", "--other-step-steps", "0"]
    return [sys.executable, script, "--device", "cuda", "--rows", "tiny,sd32,sd64", "--steps", "10", "--fit-steps", "300"]


def nerf_command(rehearse: bool, scratch: Path) -> list[str]:
    script = str(Path(__file__).resolve())
    if rehearse:
        return [sys.executable, script, "--nerf-run", "--device", "cpu", "--model", "tiny", "--preset", "tiny", "--steps", "3", "--resolution", "16"]
    return [sys.executable, script, "--nerf-run", "--device", "cuda", "--model", "sd15", "--steps", str(NERF_STEPS), "--resolution", str(NERF_RESOLUTION)]


def result_summary(outcome: Outcome, rehearse: bool, scratch: Path) -> tuple[bool, dict[str, float]]:
    figures = result_figures(outcome.lines)
    return outcome.returncode == 0 and bool(figures), figures


PARTS = (
    Part("pytest -m 'gpu or reference'", "pytest_", 150, pytest_command, pytest_summary),
    Part("sds_step.py (CUDA paths)", "sds_", 180, sds_command, result_summary),
    Part(f"Latent-NeRF run ({NERF_STEPS} steps at {NERF_RESOLUTION}², SD1.5-shaped UNet)", "nerf_", 110, nerf_command, result_summary),
)


def nerf_run(device_name: str, model: str, preset: str, steps: int, resolution: int) -> int:
    """Part 3 in this process: ``steps`` Latent-NeRF steps at ``resolution``² through an SD1.5-shaped random
    UNet ("sd15", fp16 on CUDA) or the tiny one; prints the wall time (trainer built + loop, UNet build
    apart), skipped steps, final loss scale and peak VRAM, then a RESULT line."""
    import torch

    from latent3d.guidance.denoiser import DiffusersDenoiser, scaled_linear_alphas_cumprod
    from latent3d.guidance.prompts import PromptEmbeddings
    from latent3d.loop import run_loop
    from latent3d.nerf.train import NerfConfig, NerfTrainer

    device = torch.device(device_name)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    if device.type == "cpu":
        torch.set_num_threads(1)  # a CPU run is a plumbing rehearsal: one thread is fastest on a loaded machine
    start = time.perf_counter()
    if model == "sd15":
        from latent3d.loading import build_sd15_unet

        denoiser = DiffusersDenoiser(build_sd15_unet().to(device, dtype), scaled_linear_alphas_cumprod())
    else:
        from latent3d.tiny import build_tiny_components

        denoiser = build_tiny_components(device=device, dtype=dtype).denoiser
    print(f"built the {model} UNet ({dtype}) in {time.perf_counter() - start:.1f} s", flush=True)
    g = torch.Generator().manual_seed(0)
    width = denoiser.embedding_dim
    embeddings = PromptEmbeddings.single(torch.randn(1, 77, width, generator=g), torch.randn(1, 77, width, generator=g))
    changes = dict(iterations=steps, resolution=resolution, preview_every=0, checkpoint_every=0)
    config = NerfConfig.tiny(**changes) if preset == "tiny" else NerfConfig(**changes)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    trainer = NerfTrainer(config, denoiser, embeddings, device)
    run_loop(trainer, steps, preview_every=0, checkpoint_every=0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - start
    figures = {"wall_s": wall, "ms_per_step": 1000 * wall / steps, "steps": trainer.step, "skipped": trainer.skipped_steps,
               "loss_scale": trainer.scaler.get_scale(), "final_loss": trainer.history["loss"][-1]}
    if device.type == "cuda":
        figures["peak_vram_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    backend = "torch" if type(trainer.model.field.encoding).__name__ == "TorchGridEncoding" else "tcnn"
    print(f"Latent-NeRF run: {trainer.step} steps at {resolution}² ({preset} preset, {backend} grid, step {trainer.config.render.step_size:.5f}, "
          f"mixed precision {trainer.amp}) in {wall:.1f} s = {figures['ms_per_step']:.0f} ms/step; {trainer.skipped_steps} skipped; "
          f"loss scale {figures['loss_scale']:g}; final loss {figures['final_loss']:.4g}", flush=True)
    print(format_result(figures), flush=True)
    return 0 if trainer.skipped_steps <= steps // 2 else 1


def format_result(figures: dict[str, float]) -> str:
    return "RESULT " + " ".join(f"{key}={int(value)}" if float(value).is_integer() and abs(value) < 1e12 else f"{key}={value:.4g}" for key, value in figures.items())


def run_check(rehearse: bool, parts: tuple[Part, ...] = PARTS, total_budget_s: float = TOTAL_BUDGET_S) -> int:
    """Run ``parts`` in order within ``total_budget_s``; print a RESULT line per part and a last one."""
    start = time.perf_counter()
    ok = True
    summaries = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        for part in parts:
            left = total_budget_s - (time.perf_counter() - start)
            if left < 5:
                print(f"== {part.name}: not run, the {total_budget_s:.0f} s budget is spent", flush=True)
                ok = False
                summaries.append({f"{part.prefix}ran": 0})
                continue
            limit = min(part.budget_s, left)
            command = part.command(rehearse, Path(scratch))
            print(f"== {part.name} (limit {limit:.0f} s): {shlex.join(command)}", flush=True)
            outcome = run_part(command, limit)
            passed, figures = part.summarize(outcome, rehearse, Path(scratch))
            state = "timed out" if outcome.timed_out else ("ok" if passed else f"FAILED (exit {outcome.returncode})")
            print(f"== {part.name}: {state} in {outcome.seconds:.1f} s", flush=True)
            ok &= passed and not outcome.timed_out
            summaries.append({f"{part.prefix}ok": float(passed and not outcome.timed_out), **{part.prefix + k: v for k, v in figures.items()}})
    for figures in summaries:
        print(format_result(figures), flush=True)
    print(format_result({"gpu_check_ok": float(ok), "wall_s": time.perf_counter() - start}), flush=True)
    return 0 if ok else 1


def print_plan() -> None:
    scratch = Path(tempfile.gettempdir()) / "gpu_check"
    for part in PARTS:
        print(f"{part.name}: limit {part.budget_s} s: {shlex.join(part.command(False, scratch))}")
    print(f"total budget {TOTAL_BUDGET_S} s (parts sum to {sum(p.budget_s for p in PARTS)} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", action="store_true", help="print the parts, commands and budgets, run nothing")
    parser.add_argument("--rehearse", action="store_true", help="run the parts on the CPU at tiny sizes (checks the plumbing)")
    parser.add_argument("--nerf-run", action="store_true", help="(part 3) only the short Latent-NeRF run, in this process")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", choices=("sd15", "tiny"), default="sd15")
    parser.add_argument("--preset", choices=("paper", "tiny"), default="paper")
    parser.add_argument("--steps", type=int, default=NERF_STEPS)
    parser.add_argument("--resolution", type=int, default=NERF_RESOLUTION)
    args = parser.parse_args(argv)
    if args.plan:
        print_plan()
        return 0
    if args.nerf_run:
        return nerf_run(args.device, args.model, args.preset, args.steps, args.resolution)
    import torch

    if not args.rehearse and not torch.cuda.is_available():
        print("no CUDA: skipped", flush=True)
        return 0
    return run_check(args.rehearse)


if __name__ == "__main__":
    raise SystemExit(main())
