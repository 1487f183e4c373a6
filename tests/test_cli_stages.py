"""What the stage commands (nerf, paint, refine) share in ``latent3d.cli.common``: ``existing_run`` decides
between a fresh start, a skip, a resume and a refusal from what --out holds; ``run_stage`` turns a stage's
interruptions and failures into exit codes and one error line. Then each command's own wording through
``main`` (in process, tiny model, the stage function replaced by one that fails)."""

from __future__ import annotations

import pytest
import torch
import trimesh

from test_checkpoint import embeddings, zero_oracle

from latent3d.cli import main
from latent3d.cli.common import EXIT_INTERRUPTED, EXIT_TERMINATED, CliError, existing_run, run_stage
from latent3d.loop import NonFiniteRunError
from latent3d.nerf.train import NerfConfig, fit_latent_nerf

META = {"command": "nerf", "prompt": "a cube", "model": "tiny", "model_config": "/models/a"}


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """--out holding a Latent-NeRF checkpoint at step 2 (of 2) with META."""
    out = tmp_path_factory.mktemp("stage_run")
    fit_latent_nerf(NerfConfig.tiny(iterations=2), zero_oracle(), embeddings(), device="cpu", checkpoint_path=out / "nerf.safetensors", metadata=META)
    return out


def decide(out, metadata=META, iterations=2, resume=False, overwrite=False, kind=None):
    return existing_run(out, "nerf.safetensors", ("nerf.safetensors", "nerf.json"), metadata, iterations, resume=resume, overwrite=overwrite,
                        shown=("prompt", "model"), kind=kind)


@pytest.mark.smoke
def test_existing_run_skips_resumes_refuses(run_folder, tmp_path):
    assert decide(tmp_path / "empty") == (False, 0)
    assert decide(run_folder) == (True, 2)
    assert decide(run_folder, {**META, "model_config": "/models/b"}) == (True, 2)  # another spelling of the same model
    with pytest.raises(CliError, match=r"holds an unfinished run \(2 of 2 steps\); pass --resume"):
        decide(run_folder, iterations=5)
    assert decide(run_folder, iterations=5, resume=True) == (False, 2)
    with pytest.raises(CliError, match=r"holds another run \(prompt 'a cube', model 'tiny'\)"):
        decide(run_folder, {**META, "prompt": "a sphere"})
    with pytest.raises(CliError, match="holds another run"):
        decide(run_folder, kind="latent_paint")
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("nerf.safetensors", "nerf.json"):
        (copy / name).write_bytes((run_folder / name).read_bytes())
    (copy / "previews").mkdir()
    assert decide(copy, {**META, "prompt": "a sphere"}, overwrite=True) == (False, 0)
    assert sorted(p.name for p in copy.iterdir()) == []


class Result:
    def __init__(self, status: str, step: int = 3) -> None:
        self.status, self.step = status, step


@pytest.mark.unit
@pytest.mark.parametrize("outcome, expected", [
    (Result("completed"), "result"), (Result("interrupted"), EXIT_TERMINATED), (KeyboardInterrupt(), EXIT_INTERRUPTED),
    (NonFiniteRunError("the run stopped learning"), "the run stopped learning"), (torch.OutOfMemoryError("CUDA"), "lower X; the checkpoint is kept at"),
])
def test_run_stage_maps_each_ending(outcome, expected, tmp_path, capsys):
    def stage(should_stop, on_step, on_metrics):
        assert should_stop() is False
        on_step(1, 3)
        on_metrics(1, {"loss": 0.5, "timestep": 500})
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    call = lambda: run_stage(stage, desc="x", total=3, start=0, checkpoint=tmp_path / "c.safetensors", out_of_memory="out of memory: lower X")  # noqa: E731
    if isinstance(expected, str) and expected != "result":
        with pytest.raises(CliError, match=expected):
            call()
        return
    got = call()
    if expected == "result":
        assert got is outcome
    else:
        err = capsys.readouterr().err
        assert got == expected and f"checkpoint kept at {tmp_path / 'c.safetensors'} (continue with --resume)" in err


@pytest.mark.smoke
def test_paint_and_refine_commands_name_what_to_lower_when_out_of_memory(run_folder, tmp_path, monkeypatch, capsys):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("latent3d.paint.train.paint_mesh", oom)
    monkeypatch.setattr("latent3d.refine.train.refine_rgb", oom)
    trimesh.creation.box().export(tmp_path / "box.obj")
    tiny = ["--model", "tiny", "--preset", "tiny", "--iters", "1", "--turntable-frames", "0", "--preview-every", "0"]
    code = main(["paint", "--mesh", str(tmp_path / "box.obj"), "--prompt", "x", "--out", str(tmp_path / "p"), *tiny])
    assert code == 2 and "out of memory on cpu at --resolution 16: lower --resolution or --texture-size" in capsys.readouterr().err
    code = main(["refine", str(run_folder), "--prompt", "x", "--out", str(tmp_path / "r"), *tiny])
    err = capsys.readouterr().err
    assert code == 2 and "out of memory on cpu encoding 64² images: pass --vae-checkpointing" in err
    assert f"the checkpoint is kept at {tmp_path / 'r' / 'refined.safetensors'} (OutOfMemoryError)" in err
