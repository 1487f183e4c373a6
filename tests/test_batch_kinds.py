"""The paint and refine job kinds of the batch runner over tiny-model jobs: their overrides reach PaintConfig /
RefineConfig (unit); one job of each kind runs to done with what its command writes, a refine job with a
missing source fails alone, and a rerun skips the finished ones (smoke). The validator's rules for these
lines are in test_batch.py's BAD_LINES, the Ray executor's paint job in test_batch_ray.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from test_batch import TINY, check_gallery, manifest, write_jobs

from latent3d.batch import read_jobs, run_batch


# -- the paint and refine kinds --------------------------------------------------------------------------------
@pytest.mark.unit
def test_paint_and_refine_overrides_reach_their_configs(tmp_path):
    from latent3d.cli import paint, refine

    painted = read_jobs(write_jobs(tmp_path, [{"kind": "paint", "prompt": "x", "mesh": "m.obj", "seed": 5, "iterations": 3, "overrides": {
        "texture_size": 128, "background": "learned", "sds.guidance_scale": 7.5, "mesh_scale": 0.5, "export.texture_size": 256}}]), TINY)[0]
    configs = paint.configure_batch_job(painted, TINY)
    config = configs["paint"]
    assert (config.seed, config.iterations, config.texture_size, config.background, config.sds.guidance_scale, config.mesh_scale) == (5, 3, 128, "learned", 7.5, 0.5)
    assert (config.checkpoint_every, config.preview_every, config.environment_rows, configs["export"].texture_size) == (2, 0, 16, 256)
    assert paint.configure_batch_job(dataclasses.replace(painted, overrides={}), TINY)["export"].texture_size == 64  # the batch's --texture-size
    refined = read_jobs(write_jobs(tmp_path, [{"kind": "refine", "prompt": "x", "source": "run", "seed": 2, "iterations": 4, "overrides": {
        "shading_start": 2, "freeze_geometry": True, "lr_color": 0.01, "export.color_mode": "vertex"}}]), TINY)[0]
    configs = refine.configure_batch_job(refined, TINY)
    config = configs["refine"]
    assert (config.seed, config.iterations, config.shading_start, config.freeze_geometry, config.lr_color) == (2, 4, 2, True, 0.01)
    assert (config.render_resolution, config.encode_resolution, configs["export"].color_mode, configs["export"].resolution) == (32, 64, "vertex", 32)


@pytest.fixture(scope="module")
def kinds_batch(tmp_path_factory):
    """One job of each kind, run by the local executor: a nerf job, a paint job on a box written here, a
    refine job whose source is the job folder of an earlier one-job batch (the documented way to refine),
    and a refine job whose source is missing. (job file, batch folder, report, the source run's folder)"""
    import trimesh

    folder = tmp_path_factory.mktemp("batch_kinds")
    trimesh.creation.box(extents=(0.6, 0.8, 0.5)).export(folder / "box.obj")
    earlier = run_batch(write_jobs(folder, [{"prompt": "a hamburger", "iterations": 3}], name="earlier.jsonl"), folder / "earlier", TINY, device="cpu", progress=False)
    assert earlier.counts["done"] == 1
    source = f"earlier/{manifest(folder / 'earlier')['jobs'][0]['dir']}"
    path = write_jobs(folder, [
        {"prompt": "a lamp", "seed": 2, "iterations": 3},
        {"kind": "paint", "prompt": "a wooden crate", "mesh": "box.obj", "iterations": 4, "overrides": {"background": "learned", "export.texture_size": 128}},
        {"kind": "refine", "prompt": "a hamburger", "source": source, "iterations": 3, "format": "obj"},
        {"kind": "refine", "prompt": "a lost run", "source": "runs/missing"},
    ], name="kinds.jsonl")
    report = run_batch(path, folder / "out", TINY, device="cpu", progress=False)
    return path, folder / "out", report, folder / source


@pytest.mark.smoke
def test_paint_and_refine_jobs_write_what_their_commands_write(kinds_batch):
    import trimesh
    from PIL import Image

    _, out, report, source = kinds_batch
    assert report.status == "completed" and report.counts == {"pending": 0, "running": 0, "done": 3, "failed": 1}
    nerf, paint, refine, lost = manifest(out)["jobs"]
    assert [(r["kind"], r["status"], r["step"], r["iterations"]) for r in (nerf, paint, refine)] == [("nerf", "done", 3, 3), ("paint", "done", 4, 4), ("refine", "done", 3, 3)]
    assert Path(nerf["outputs"]["checkpoint"]).name == "nerf.safetensors" and (out / nerf["outputs"]["mesh"][0]).is_file()

    folder = out / paint["dir"]
    assert [Path(p).name for p in paint["outputs"]["mesh"]] == ["mesh.glb", "mesh.obj", "mesh.mtl", "mesh.png"]
    record = json.loads((folder / "paint.json").read_text())
    assert (record["kind"], record["step"], record["config"]["background"], record["meta"]["mesh"]) == ("latent_paint", 4, "learned", "box.obj")
    glb = trimesh.load(folder / "mesh.glb", force="mesh")
    assert len(glb.faces) == 12 and glb.visual.material.baseColorTexture.size == (128, 128)  # the box's faces; export.texture_size
    assert Image.open(out / paint["outputs"]["turntable"]).n_frames == 2
    assert [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]

    folder = out / refine["dir"]
    record = json.loads((folder / "refined.json").read_text())
    assert (record["kind"], record["step"], record["meta"]["source"]) == ("rgb_nerf", 3, str((source / "nerf.safetensors").resolve()))
    assert [Path(p).name for p in refine["outputs"]["mesh"]] == ["mesh.obj", "mesh.mtl", "mesh.png"]
    assert len(trimesh.load(folder / "mesh.obj", force="mesh").faces) > 0
    assert Image.open(out / refine["outputs"]["turntable"]).n_frames == 2
    assert lost["status"] == "failed" and "source runs/missing: no such file" in lost["error"]
    check_gallery(out)


@pytest.mark.smoke
def test_rerun_skips_finished_paint_and_refine_jobs(kinds_batch):
    path, out, _, _ = kinds_batch
    records = manifest(out)["jobs"][:3]
    stamps = {r["dir"]: (out / r["outputs"]["checkpoint"]).stat().st_mtime_ns for r in records}
    again = run_batch(path, out, TINY, device="cpu", progress=False)
    assert again.skipped == 3 and [t["line"] for t in again.timings] == [4]  # only the failed job ran again
    assert {r["dir"]: (out / r["outputs"]["checkpoint"]).stat().st_mtime_ns for r in records} == stamps
