"""The command line, end to end with the offline tiny model (subprocesses: what a user runs)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, check=True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "latent3d", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result


@pytest.mark.smoke
def test_nerf_resume_and_export(tmp_path):
    out = tmp_path / "run"
    common = ["nerf", "--prompt", "a hamburger", "--model", "tiny", "--preset", "tiny", "--resolution", "16", "--out", str(out),
              "--preview-every", "2", "--turntable-frames", "3", "--checkpoint-every", "2"]
    cli(*common, "--iters", "3")
    assert (out / "nerf.safetensors").is_file() and (out / "nerf.json").is_file()
    assert sorted(p.name for p in (out / "previews").glob("*.png")) == ["step_00002.png", "step_00003.png"]
    from PIL import Image

    gif = Image.open(out / "turntable.gif")
    assert gif.n_frames == 3 and gif.size == (128, 128)
    refused = cli(*common, "--iters", "5", check=False)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    cli(*common, "--iters", "5", "--resume")
    record = json.loads((out / "nerf.json").read_text())
    assert record["step"] == 5
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]  # the resumed run continued at step 4
    result = cli("export", str(out / "nerf.safetensors"), "--out", str(tmp_path / "mesh"), "--format", "obj", "--resolution", "64", "--texture-size", "256")
    written = [Path(line) for line in result.stdout.split()]
    assert [p.suffix for p in written] == [".obj", ".mtl", ".png"] and all(p.is_file() for p in written)
    # without --vae the texture is decoded by the run's own model (recorded in the checkpoint), and it says so
    assert "texture decoded with the VAE of tiny (the run's model)" in result.stderr
    from PIL import Image as PILImage

    assert PILImage.open(written[2]).size == (256, 256)  # a 32² latent texture decoded 8× by the VAE


@pytest.mark.unit
def test_help_shows_defaults_and_presets_fill_their_own_values():
    from latent3d.cli import build_parser
    from latent3d.cli.nerf import _config

    parser = build_parser()
    help_text = " ".join(parser._subparsers._group_actions[0].choices["nerf"].format_help().split())
    assert "(default: 100.0)" in help_text and "(default: 0.33)" in help_text
    tiny = _config(parser.parse_args(["nerf", "--prompt", "x", "--model", "tiny", "--out", "o", "--preset", "tiny"]))
    paper = _config(parser.parse_args(["nerf", "--prompt", "x", "--model", "tiny", "--out", "o"]))
    assert (tiny.resolution, tiny.iterations) == (16, 20) and (paper.resolution, paper.iterations) == (64, 5000)


@pytest.mark.smoke
def test_sketch_guided_run(tmp_path):
    import trimesh

    sketch = tmp_path / "block.stl"
    trimesh.creation.box(extents=(0.5, 1.0, 0.5)).export(sketch)
    out = tmp_path / "guided"
    cli("nerf", "--prompt", "a tower", "--model", "tiny", "--preset", "tiny", "--resolution", "16", "--iters", "2", "--out", str(out),
        "--turntable-frames", "0", "--sketch", str(sketch), "--proximal-surface", "0.2")
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(line["shape"] > 0 for line in lines)


@pytest.mark.unit
@pytest.mark.parametrize(
    "args,message",
    [
        (["--iters", "0"], "--iters must be a positive integer"),
        (["--resolution", "-16"], "--resolution must be a positive integer"),
        (["--model", "/no/such/model"], "/no/such/model"),
        (["--sketch", "/no/such/sketch.obj"], "sketch.obj"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(tmp_path, args, message):
    base = {"--prompt": "x", "--model": "tiny", "--out": str(tmp_path / "o"), "--iters": "1", "--resolution": "16"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    argv = ["nerf", "--preset", "tiny"] + [item for pair in base.items() for item in pair]
    result = cli(*argv, check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
