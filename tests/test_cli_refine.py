"""``latent3d refine`` end to end with the offline tiny model (subprocesses: what a user runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def cli(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "latent3d", *args], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="module")
def nerf_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_refine") / "nerf"
    cli("nerf", "--prompt", "a hamburger", "--model", "tiny", "--preset", "tiny", "--resolution", "16", "--iters", "2", "--out", str(out),
        "--turntable-frames", "0", "--preview-every", "0")
    return out


@pytest.mark.smoke
def test_nerf_refine_export(nerf_run, tmp_path):
    """nerf -> refine (prompt and model taken from the run) -> export: the GLB's vertex colours are the
    refined field's RGB at the surface, and a rerun of the finished refinement does nothing."""
    out = tmp_path / "refined"
    args = ["refine", str(nerf_run), "--preset", "tiny", "--iters", "3", "--out", str(out), "--preview-every", "3", "--turntable-frames", "2"]
    result = cli(*args)
    assert result.stdout.split()[-1] == str(out / "refined.safetensors")
    record = json.loads((out / "refined.json").read_text())
    assert record["kind"] == "rgb_nerf" and record["step"] == 3 and record["meta"]["prompt"] == "a hamburger"
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    from PIL import Image

    assert Image.open(out / "previews" / "step_00003.png").size == (32, 32)  # RGB renders, no 8× decode
    assert Image.open(out / "turntable.gif").n_frames == 2
    again = cli(*args)
    assert "nothing to do" in again.stderr
    mesh_dir = tmp_path / "mesh"
    exported = cli("export", str(out / "refined.safetensors"), "--out", str(mesh_dir), "--color", "vertex", "--resolution", "48")
    assert "RGB already" in exported.stderr
    import pygltflib

    from latent3d.export.writers import srgb_to_linear
    from latent3d.refine.train import load_refined

    glb = pygltflib.GLTF2().load(str(mesh_dir / "refined.glb"))
    positions, normals, colors = (_attribute(glb, name) for name in ("POSITION", "NORMAL", "COLOR_0"))
    model, _, _ = load_refined(out / "refined.safetensors")
    offset = 2.0 / 47  # one lattice spacing at --resolution 48
    _, rgb = model.query(torch.as_tensor(positions - offset * normals))
    np.testing.assert_allclose(colors, srgb_to_linear(rgb.detach().numpy()), atol=1e-5)


def _attribute(glb, name: str) -> np.ndarray:
    accessor = glb.accessors[getattr(glb.meshes[0].primitives[0].attributes, name)]
    view = glb.bufferViews[accessor.bufferView]
    data = glb.binary_blob()[view.byteOffset : view.byteOffset + view.byteLength]
    return np.frombuffer(data, dtype=np.float32).reshape(accessor.count, -1)


@pytest.mark.smoke
def test_refine_errors_are_one_line_before_any_model_loads(nerf_run, tmp_path, capsys):
    """In-process ``main`` (the same code the subprocess runs): each bad input is one error line, exit 2."""
    from latent3d.cli import main

    for argv, pattern in [
        ([str(tmp_path / "none"), "--out", str(tmp_path / "o")], "no such file"),
        ([str(nerf_run), "--out", str(nerf_run)], "holds a Latent-NeRF run"),
        ([str(nerf_run), "--out", str(tmp_path / "o"), "--encode-resolution", "60"], "--encode-resolution must be a positive multiple of 8"),
        ([str(nerf_run), "--out", str(tmp_path / "o"), "--ambient-ratio", "2"], "--ambient-ratio must lie in [0, 1]"),
        ([str(nerf_run), "--out", str(tmp_path / "o"), "--model", "/no/such/model"], "/no/such/model"),
    ]:
        code = main(["refine", *argv, "--preset", "tiny", "--iters", "1", "--turntable-frames", "0"])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("error: ")]
        assert code == 2 and len(lines) == 1 and pattern in lines[0] and "Traceback" not in err, err[-2000:]
