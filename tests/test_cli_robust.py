"""The command line never fails silently or with a traceback for expected failures, survives signals, and
can be rerun (subprocesses, like a user at a shell)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from test_checkpoint import corrupt, embeddings, zero_oracle

from latent3d.nerf.train import NerfConfig, fit_latent_nerf

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
TINY = ["--model", "tiny", "--preset", "tiny", "--resolution", "16", "--turntable-frames", "0", "--preview-every", "0"]


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "latent3d", *args], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=timeout)


def assert_clear_error(result, pattern: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and pattern in lines[0], result.stderr[-3000:]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli_ckpt") / "nerf.safetensors"
    fit_latent_nerf(NerfConfig.tiny(iterations=2), zero_oracle(), embeddings(), device="cpu", checkpoint_path=path)
    return path


@pytest.mark.smoke
@pytest.mark.parametrize("kind", ["truncated", "random", "pickle", "step", "shape"])
def test_export_of_a_corrupt_checkpoint_is_one_error_line(kind, trained, tmp_path):
    result = cli("export", str(corrupt(kind, trained, tmp_path)), "--out", str(tmp_path / "mesh"), "--vae", "linear")
    assert_clear_error(result, "bad.safetensors")


@pytest.mark.smoke
def test_resume_from_an_edited_checkpoint_is_one_error_line(tmp_path):
    out = tmp_path / "run"
    assert cli("nerf", "--prompt", "x", "--out", str(out), *TINY, "--iters", "1").returncode == 0
    from test_checkpoint import rewrite

    checkpoint = out / "nerf.safetensors"
    rewrite(checkpoint, checkpoint, lambda r: r["optimizer_param_groups"][1].update(lr=-1))
    result = cli("nerf", "--prompt", "x", "--out", str(out), *TINY, "--iters", "2", "--resume")
    assert_clear_error(result, "optimizer group 1 has lr=-1")


@pytest.mark.unit
@pytest.mark.parametrize(
    "args, pattern",
    [
        (["--device", "gpu"], "--device must be a device such as cpu, cuda"),
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "cuda:99"], "--device 'cuda:"),
        (["--resolution", "20"], "--resolution must be a multiple of 8"),
        (["--iters", "0"], "--iters must be a positive integer"),
        (["--guidance-scale", "nan"], "--guidance-scale must be a finite number"),
        (["--shape-weight", "-1", "--sketch", __file__], "--shape-weight must be a finite number >= 0"),
    ],
)
def test_bad_flags_are_named_before_any_model_loads(args, pattern, tmp_path):
    start = time.perf_counter()
    result = cli("nerf", "--prompt", "x", "--out", str(tmp_path / "o"), *TINY, "--iters", "1", *args)
    assert_clear_error(result, pattern)
    assert "loading model" not in result.stderr  # refused before the model was loaded
    assert time.perf_counter() - start < 60


@pytest.mark.smoke
def test_rerun_skips_a_finished_run_and_overwrite_starts_over(tmp_path):
    out = tmp_path / "run"
    first = cli("nerf", "--prompt", "a cube", "--out", str(out), *TINY, "--iters", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "device" not in first.stderr or "cpu" in first.stderr
    assert f"output in {out}" in first.stderr and "wrote" in first.stderr.splitlines()[-1]
    again = cli("nerf", "--prompt", "a cube", "--out", str(out), *TINY, "--iters", "2")
    assert again.returncode == 0 and "nothing to do" in again.stderr and "loading model" not in again.stderr
    assert again.stdout.strip() == str(out / "nerf.safetensors")
    other = cli("nerf", "--prompt", "a sphere", "--out", str(out), *TINY, "--iters", "2")
    assert_clear_error(other, "holds another run (prompt 'a cube'")
    fresh = cli("nerf", "--prompt", "a sphere", "--out", str(out), *TINY, "--iters", "3", "--overwrite")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3]
    assert json.loads((out / "nerf.json").read_text())["meta"]["prompt"] == "a sphere"


@pytest.mark.smoke
def test_a_locked_out_folder_is_refused(tmp_path):
    from latent3d.runfolder import FolderLock

    out = tmp_path / "run"
    with FolderLock(out):
        result = cli("nerf", "--prompt", "x", "--out", str(out), *TINY, "--iters", "1")
    assert_clear_error(result, "is in use by another latent3d run")


@pytest.mark.smoke
def test_sigterm_saves_a_checkpoint_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "latent3d", "nerf", "--prompt", "x", "--out", str(out), *TINY, "--iters", "100000"]
    process = subprocess.Popen(args, env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.2)  # every line is flushed as it is written
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    assert "checkpoint kept" in stderr and "Traceback" not in stderr
    step = json.loads((out / "nerf.json").read_text())["step"]
    assert step >= 3
    logged = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert logged == list(range(1, step + 1))
    resumed = cli("nerf", "--prompt", "x", "--out", str(out), *TINY, "--iters", str(step + 1), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((out / "nerf.json").read_text())["step"] == step + 1


@pytest.mark.smoke
def test_a_diffusers_folder_with_pickled_weights_is_refused(tmp_path):
    from latent3d.tiny import save_tiny_pipeline

    folder = save_tiny_pipeline(tmp_path / "pickled")
    for weights in folder.glob("*/*.safetensors"):
        from safetensors.torch import load_file

        torch.save(load_file(str(weights)), weights.with_suffix(".bin"))
        weights.unlink()
    result = cli("nerf", "--prompt", "x", "--out", str(tmp_path / "o"), *TINY, "--iters", "1", "--model", str(folder))
    assert_clear_error(result, "holds only pickled weights")


@pytest.mark.unit
def test_out_of_memory_names_the_setting_to_lower(tmp_path, monkeypatch, capsys):
    from latent3d import cli as command_line

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("latent3d.nerf.train.fit_latent_nerf", oom)
    code = command_line.main(["nerf", "--prompt", "x", "--out", str(tmp_path / "o"), *TINY, "--iters", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "out of memory on cpu at --resolution 16: lower --resolution" in err
