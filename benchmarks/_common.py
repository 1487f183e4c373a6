"""Pieces every benchmark script shares: the header and RESULT lines, timing, and missing-package notices.

Not a benchmark itself (tests/test_benchmarks.py skips files whose name starts with ``_``). A benchmark
runs as a script (``python benchmarks/x.py``), so its own folder is ``sys.path[0]`` and ``from _common import
...`` finds this file; it puts the repository root on ``sys.path`` too, for ``latent3d``.
"""

from __future__ import annotations

import importlib.util
import math
import os
import statistics
import time
from typing import Callable

import torch

BENCH_INSTALL = "pip install -r requirements-bench.txt"
"""The pip line that installs what the benchmarks need beyond requirements.txt (run from the repository)."""


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages, e.g. ``"load average 1.26 2.11 1.92"``."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:  # not available on this platform (Windows)
        return "load average n/a"
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def print_header(device: torch.device | str, extra: str = "") -> None:
    """One line with what the figures depend on: device, torch, threads, CPU count and the machine's load."""
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {load_average()}"
        + (f", {extra}" if extra else ""),
        flush=True,
    )


def result_line(**figures: float) -> str:
    """``RESULT key=value ...`` (the line tests/test_benchmarks.py parses: every value a finite number)."""
    parts = []
    for key, value in figures.items():
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"RESULT figure {key} must be finite, got {value}")
        parts.append(f"{key}={int(value)}" if value.is_integer() and abs(value) < 1e12 else f"{key}={value:.4g}")
    return "RESULT " + " ".join(parts)


def print_result(**figures: float) -> None:
    """Print the load average, then the RESULT line (always a benchmark's last line)."""
    print(f"({load_average()} at the end)", flush=True)
    print(result_line(**figures), flush=True)


def skip(reason: str) -> int:
    """Say why a benchmark cannot run here (its last line) and return the exit status 0."""
    print(f"skipped: {reason}", flush=True)
    return 0


def set_threads(threads: int | None, quick: bool) -> int:
    """Set torch's CPU threads: ``threads`` when given, else 1 for --quick (on a loaded machine two threads'
    barriers made tiny workloads 10–25× slower than one thread here), else min(2, CPUs). Returns it."""
    count = threads if threads is not None else (1 if quick else min(2, os.cpu_count() or 1))
    if count < 1:
        raise ValueError(f"--threads must be >= 1, got {count}")
    torch.set_num_threads(count)
    return count


def add_threads_argument(parser) -> None:
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 with --quick, else min(2, CPUs))")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int = 3) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls (CUDA-synchronized)."""
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed_cpu(fn: Callable[[], object], device: torch.device, repeats: int = 3) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds of this process) of ``fn()``. On a loaded machine the CPU
    seconds stay close to what a quiet one would take (with one thread, to its wall time); CUDA work is not
    in them."""
    walls, cpus = [], []
    for _ in range(repeats):
        sync(device)
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def ray_casting_problem() -> str | None:
    """Why trimesh cannot cast rays here (None when it can): it needs embreex (fast) or rtree (portable)."""
    try:
        import trimesh.ray
    except ImportError as e:
        return f"trimesh is not importable ({e}): pip install -r requirements.txt"
    if trimesh.ray.has_embree or _importable("rtree"):
        return None
    return f"trimesh ray casting needs embreex (fast) or rtree (portable), neither is installed: {BENCH_INSTALL}"


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
