"""benchmarks/gpu_check.py on a CPU: it skips cleanly, its parts fit the 8-minute budget, its process
handling keeps output and kills what runs too long, and its rehearsal runs every part at tiny sizes."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("gpu_check", None)


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.unit
@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present: the check would run")
def test_without_cuda_it_says_skipped_and_exits_0():
    proc = run()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "no CUDA: skipped"


@pytest.mark.unit
@pytest.mark.skipif(torch.cuda.is_available() or sys.platform == "win32", reason="CUDA is present / no sh")
def test_shell_wrapper_runs_the_check_from_any_folder(tmp_path):
    proc = subprocess.run(["sh", str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=tmp_path, env={**os.environ, "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("no CUDA: skipped"), proc.stdout + proc.stderr


@pytest.mark.unit
def test_the_parts_fit_in_eight_minutes(gpu_check):
    assert sum(part.budget_s for part in gpu_check.PARTS) <= gpu_check.TOTAL_BUDGET_S <= 8 * 60 - 20
    names = " ".join(" ".join(part.command(False, ROOT)) for part in gpu_check.PARTS)
    assert "gpu or reference" in names and "--device cuda" in names and "sds_step.py" in names and "--nerf-run" in names


@pytest.mark.unit
def test_a_part_that_runs_too_long_is_killed_with_its_children_and_its_output_kept(gpu_check):
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print('RESULT a=1', flush=True); time.sleep(60)"
    start = time.perf_counter()
    outcome = gpu_check.run_part([sys.executable, "-c", code], timeout_s=3, echo=lambda line: None)
    assert outcome.timed_out and outcome.returncode is None and time.perf_counter() - start < 20
    assert gpu_check.result_figures(outcome.lines) == {"a": 1.0}


@pytest.mark.unit
def test_a_failing_part_or_a_spent_budget_fails_the_check(gpu_check, capsys):
    def command(code):
        return lambda rehearse, scratch: [sys.executable, "-c", code]

    parts = (
        gpu_check.Part("fails", "a_", 30, command("print('RESULT x=2'); raise SystemExit(3)"), gpu_check.result_summary),
        gpu_check.Part("passes", "b_", 30, command("print('RESULT y=1')"), gpu_check.result_summary),
    )
    assert gpu_check.run_check(True, parts) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "RESULT a_ok=0 a_x=2" in lines and "RESULT b_ok=1 b_y=1" in lines
    assert lines[-1].startswith("RESULT gpu_check_ok=0 ")

    assert gpu_check.run_check(True, parts[1:], total_budget_s=1) == 1
    out = capsys.readouterr().out
    assert "not run, the 1 s budget is spent" in out and "RESULT b_ran=0" in out


@pytest.mark.smoke
def test_rehearsal_runs_every_part_on_the_cpu():
    proc = run("--rehearse", timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("RESULT gpu_check_ok=1 ")
    results = [line for line in lines if line.startswith("RESULT ")]
    assert any(line.startswith("RESULT pytest_ok=1") and "pytest_gpu_tests=" in line for line in results)
    assert any(line.startswith("RESULT sds_ok=1") and "sds_step_over_unet=" in line for line in results)
    assert any(line.startswith("RESULT nerf_ok=1") and "nerf_wall_s=" in line for line in results)
