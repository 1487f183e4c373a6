"""``latent3d paint`` end to end with the offline tiny model (a subprocess: what a user runs), and its
argument checks (in process: they all fail before any model loads)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh

from latent3d.cli import main

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, check=True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "latent3d", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result


@pytest.fixture
def ball(tmp_path):
    """An icosphere OBJ without UVs (xatlas unwraps its 320 faces in well under a second)."""
    path = tmp_path / "ball.obj"
    trimesh.creation.icosphere(subdivisions=2).export(path)
    return path


@pytest.mark.smoke
def test_paint_resume_outputs_and_rerun(tmp_path, ball, capsys):
    out = tmp_path / "run"
    common = ["paint", "--mesh", str(ball), "--prompt", "a goldfish", "--model", "tiny", "--preset", "tiny", "--out", str(out),
              "--texture-resolution", "128", "--preview-every", "2", "--turntable-frames", "3", "--checkpoint-every", "2"]
    first = cli(*common, "--iters", "3")
    assert first.stdout.split() == [str(out / "mesh.glb")]
    assert sorted(p.name for p in (out / "previews").glob("*.png")) == ["step_00002.png", "step_00003.png"]
    for name in ("paint.safetensors", "paint.json", "mesh.obj", "mesh.mtl", "mesh.png", "turntable.gif"):
        assert (out / name).is_file(), name
    assert main([*common, "--iters", "5"]) == 2 and "--resume" in capsys.readouterr().err  # in process: fails before any model loads
    cli(*common, "--iters", "5", "--resume")
    assert json.loads((out / "paint.json").read_text())["step"] == 5
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    assert main([*common, "--iters", "5", "--resume"]) == 0 and "nothing to do" in capsys.readouterr().err

    from PIL import Image

    gif = Image.open(out / "turntable.gif")
    assert gif.n_frames == 3 and gif.size == (128, 128)
    glb = trimesh.load(out / "mesh.glb", force="mesh")
    texture = glb.visual.material.baseColorTexture
    assert texture is not None and texture.size == (128, 128)
    assert len(glb.faces) == 320 and glb.visual.uv.shape == (len(glb.vertices), 2)
    assert glb.visual.uv.min() >= 0.0 and glb.visual.uv.max() <= 1.0
    obj = trimesh.load(out / "mesh.obj", force="mesh")
    assert np.array_equal(np.asarray(obj.visual.material.image.convert("RGB")), np.asarray(Image.open(out / "mesh.png").convert("RGB")))


@pytest.mark.unit
@pytest.mark.parametrize(
    "args,message",
    [
        (["--texture-size", "32"], r"--texture-size must be an integer in [64, 512], got 32"),
        (["--texture-resolution", "1001"], "--texture-resolution must be a multiple of 8 when a VAE decodes"),
        (["--texture-resolution", "8192"], "--texture-resolution must be an integer in [64, 4096]"),
        (["--iters", "0"], "--iters must be a positive integer"),
        (["--mesh-scale", "-1"], "--mesh-scale must be a positive finite number"),
        (["--mesh", "/no/such/mesh.obj"], "--mesh /no/such/mesh.obj: no such file"),
        (["--init", "texture"], "--init texture needs a mesh with a base-colour texture"),
        (["--model", "/no/such/model"], "/no/such/model"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(tmp_path, ball, capsys, args, message):
    base = {"--mesh": str(ball), "--prompt": "x", "--model": "tiny", "--out": str(tmp_path / "o"), "--iters": "1"}
    base.update(zip(args[::2], args[1::2]))
    code = main(["paint", "--preset", "tiny", *[item for pair in base.items() for item in pair]])
    assert code == 2 and message in capsys.readouterr().err
