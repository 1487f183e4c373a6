"""Batch generation: the job-file validator, folder names, overrides, the manifest and gallery (unit), and
the local executor over tiny-model jobs (smoke): a bad input fails alone, reruns skip, a killed job resumes."""

from __future__ import annotations

import dataclasses
import html.parser
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from latent3d.batch import BatchSettings, JobFileError, job_dir_name, job_hash, read_jobs, run_batch

ROOT = Path(__file__).resolve().parents[1]
TINY = BatchSettings(
    model="tiny", preset="tiny", turntable_frames=2, preview_every=0, checkpoint_every=2,
    export_resolution=32, texture_size=64, cpus_per_job=1,
)
CLI_FLAGS = ["--model", "tiny", "--preset", "tiny", "--turntable-frames", "2", "--preview-every", "0", "--checkpoint-every", "2",
             "--export-resolution", "32", "--texture-size", "64", "--cpus-per-job", "1"]


def write_jobs(folder: Path, lines: list, name: str = "jobs.jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def three_jobs(folder: Path) -> Path:
    """Two jobs that run (one sketch-guided) and one whose sketch file does not exist."""
    import trimesh

    folder.mkdir(parents=True, exist_ok=True)
    trimesh.creation.box(extents=(0.5, 1.0, 0.5)).export(folder / "block.stl")
    return write_jobs(folder, [
        {"prompt": "a hamburger", "seed": 1, "iterations": 4},
        {"prompt": "a tower", "sketch": "block.stl", "iterations": 4, "format": "obj", "overrides": {"sketch.grid_resolution": 32}},
        {"prompt": "a lost sketch", "sketch": "missing/chair.obj", "iterations": 4},
    ])


def checkpoint_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_same_tensors(a: Path, b: Path) -> None:
    import torch

    ta, tb = checkpoint_tensors(a), checkpoint_tensors(b)
    assert ta.keys() == tb.keys()
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, f"tensors differ: {different[:5]}"


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


# -- the validator -----------------------------------------------------------------------------------------
BAD_LINES = [
    ('{"prompt": "a cat", ', "not valid JSON"),
    ('["a cat"]', "must be a JSON object"),
    ({"prompt": "a cat", "colour": "red"}, "unknown key 'colour'"),
    ({"negative": "blurry"}, "prompt is required"),
    ({"prompt": "   "}, "prompt is required"),
    ({"prompt": "a cat", "seed": "7"}, "seed must be an integer"),
    ({"prompt": "a cat", "seed": True}, "seed must be an integer"),
    ({"prompt": "a cat", "seed": -1}, "seed must be an integer in [0, 2^63)"),
    ({"prompt": "a cat", "iterations": 0}, "iterations must be a positive integer"),
    ({"prompt": "a cat", "iterations": 2.5}, "iterations must be a positive integer"),
    ({"prompt": "a cat", "format": "fbx"}, "format must be one of glb, obj, ply"),
    ({"prompt": "a cat", "kind": "video"}, "kind must be one of"),
    ({"prompt": "a cat", "mesh": "cat.obj"}, "mesh is not an input of kind 'nerf'"),
    ({"prompt": "a cat", "sketch": 3}, "sketch must be a path (a non-empty string)"),
    ({"prompt": "a cat", "overrides": [1, 2]}, "overrides must be an object"),
    ({"prompt": "a cat", "overrides": {"sds.guidanse_scale": 50}}, "override 'sds.guidanse_scale': SdsConfig has no field 'guidanse_scale'"),
    ({"prompt": "a cat", "overrides": {"sds.guidance_scale": "big"}}, "override 'sds.guidance_scale' must be a finite number, got 'big'"),
    ({"prompt": "a cat", "overrides": {"sds": 50}}, "override 'sds' names a group of settings"),
    ({"prompt": "a cat", "overrides": {"lr_grid": -1}}, "override 'lr_grid' = -1: NerfConfig.lr_grid must be a positive finite number"),
    ({"prompt": "a cat", "overrides": {"sds.weighting": "cubic"}}, "override 'sds.weighting' must be one of"),
    ({"prompt": "a cat", "overrides": {"camera.radius_range": [1.0]}}, "override 'camera.radius_range' must be a list of 2 numbers"),
    ({"prompt": "a cat", "overrides": {"resolution": 20}}, "override 'resolution' must be a multiple of 8"),
    ({"prompt": "a cat", "overrides": {"seed": 3}}, "set the job's own 'seed' key"),
    ({"prompt": "a cat", "overrides": {"export.texture_size": 100}}, "ExportConfig.texture_size must be a multiple of 8"),
    ({"prompt": "a cat", "overrides": {"sketch.mesh_scale": 0.5}}, "sketch.* overrides need a sketch"),
    ('{"prompt": "a cat", "seed": 1, "seed": 2}', "key 'seed' appears twice"),
    ({"prompt": "a cat", "source": "runs/cat"}, "source is not an input of kind 'nerf'"),
    # paint lines: the mesh, PaintConfig's names and rules, what a paint job writes
    ({"kind": "paint", "prompt": "a vase"}, "kind 'paint' needs mesh: the mesh file to paint"),
    ({"kind": "paint", "prompt": "a vase", "mesh": "vase.obj", "sketch": "s.obj"}, "sketch is not an input of kind 'paint' (it takes: mesh)"),
    ({"kind": "paint", "prompt": "a vase", "mesh": "vase.obj", "overrides": {"texture_sise": 64}}, "override 'texture_sise': PaintConfig has no field 'texture_sise'"),
    ({"kind": "paint", "prompt": "a vase", "mesh": "vase.obj", "overrides": {"texture_size": 32}}, "PaintConfig.texture_size must be an integer in [64, 512], got 32"),
    ({"kind": "paint", "prompt": "a vase", "mesh": "vase.obj", "overrides": {"init": "textured"}}, "override 'init' must be one of 'color', 'texture'"),
    ({"kind": "paint", "prompt": "a vase", "mesh": "vase.obj", "overrides": {"resolution": 20}}, "override 'resolution' must be a multiple of 8"),
    ({"kind": "paint", "prompt": "a vase", "mesh": "vase.obj", "overrides": {"export.texture_size": 100}}, "export.texture_size must be a multiple of 8"),
    ({"kind": "paint", "prompt": "a vase", "mesh": "vase.obj", "overrides": {"seed": 1}}, "set the job's own 'seed' key"),
    ({"kind": "paint", "prompt": "a vase", "mesh": "vase.obj", "format": "ply"}, "format 'ply' cannot hold a texture"),
    # refine lines: the source, RefineConfig's names and rules
    ({"kind": "refine", "prompt": "a vase"}, "kind 'refine' needs source: a Latent-NeRF run folder"),
    ({"kind": "refine", "prompt": "a vase", "source": ""}, "source must be a path (a non-empty string)"),
    ({"kind": "refine", "prompt": "a vase", "source": "run", "mesh": "vase.obj"}, "mesh is not an input of kind 'refine' (it takes: source)"),
    ({"kind": "refine", "prompt": "a vase", "source": "run", "overrides": {"lr_colour": 0.1}}, "override 'lr_colour': RefineConfig has no field 'lr_colour'"),
    ({"kind": "refine", "prompt": "a vase", "source": "run", "overrides": {"encode_resolution": 60}}, "RefineConfig.encode_resolution must be a positive multiple of 8"),
    ({"kind": "refine", "prompt": "a vase", "source": "run", "overrides": {"export.resolution": 3}}, "ExportConfig.resolution must be an integer in [16, 512]"),
]


@pytest.mark.unit
@pytest.mark.parametrize("line, message", BAD_LINES, ids=[m[:30] for _, m in BAD_LINES])
def test_a_bad_line_is_named_with_its_line_number_and_rule(tmp_path, line, message):
    path = write_jobs(tmp_path, [{"prompt": "fine"}, "", line])
    with pytest.raises(JobFileError) as caught:
        read_jobs(path, TINY)
    assert [number for number, _ in caught.value.problems] == [3], caught.value.problems
    assert message in caught.value.problems[0][1], caught.value.problems


@pytest.mark.unit
def test_every_bad_line_is_reported_and_nothing_runs(tmp_path):
    path = write_jobs(tmp_path, [{"prompt": "fine"}, {"prompt": 3}, "# a comment", {"prompt": "ok", "iterations": -2}, {"prompt": "good too"}])
    out = tmp_path / "out"
    with pytest.raises(JobFileError) as caught:
        run_batch(path, out, TINY, progress=False)
    assert [number for number, _ in caught.value.problems] == [2, 4]
    assert f"{path}:2: prompt is required" in str(caught.value) and "nothing was run" in str(caught.value)
    assert not out.exists()  # refused before the batch folder (or any job folder) was made


@pytest.mark.unit
def test_unavailable_kinds_are_refused_per_line(tmp_path, monkeypatch):
    from latent3d.batch import kinds

    monkeypatch.setitem(kinds.KINDS, "paint", dataclasses.replace(kinds.KINDS["paint"], module="latent3d.cli.no_such_module"))
    monkeypatch.setitem(kinds.KINDS, "refine", dataclasses.replace(kinds.KINDS["refine"], configure="no_such_adapter"))
    path = write_jobs(tmp_path, [{"kind": "paint", "prompt": "a vase", "mesh": "vase.obj"}, {"kind": "refine", "prompt": "a vase", "source": "run"}])
    with pytest.raises(JobFileError) as caught:
        read_jobs(path, TINY)
    assert caught.value.problems == [
        (1, "kind 'paint' is not available in this version (latent3d.cli.no_such_module is missing)"),
        (2, "kind 'refine' is not available in this version (latent3d.cli.refine has no batch adapter no_such_adapter)"),
    ]


@pytest.mark.unit
def test_a_job_without_source_keeps_the_hash_it_had_before_source_existed(tmp_path):
    """The documented hash: SHA-256 over the job's keys (those of the first job files) and the hashed settings."""
    import hashlib

    job = read_jobs(write_jobs(tmp_path, [{"prompt": "a hamburger", "seed": 3, "sketch": "s.obj"}]), TINY)[0]
    first_keys = {"kind": "nerf", "prompt": "a hamburger", "negative": "", "seed": 3, "iterations": None, "sketch": "s.obj", "mesh": None,
                  "format": "glb", "overrides": {}}
    settings = {"model": "tiny", "model_config": None, "preset": "tiny", "view_prompts": True}
    text = json.dumps({"job": first_keys, "settings": settings}, sort_keys=True, ensure_ascii=True)
    assert job_hash(job, TINY) == hashlib.sha256(text.encode()).hexdigest()[:8]
    refine = read_jobs(write_jobs(tmp_path, [{"kind": "refine", "prompt": "a hamburger", "source": "run"}]), TINY)[0]
    assert refine.content()["source"] == "run"


@pytest.mark.unit
def test_csv_reads_like_jsonl(tmp_path):
    rows = [{"prompt": "a red chair", "seed": 4, "iterations": 7, "overrides": {"sds.guidance_scale": 50}}, {"prompt": "a lamp, brass", "negative": "blurry"}]
    jsonl = read_jobs(write_jobs(tmp_path, rows), TINY)
    (tmp_path / "jobs.csv").write_text(
        'prompt,seed,iterations,negative,overrides\n"a red chair",4,7,,"{""sds.guidance_scale"": 50}"\n"a lamp, brass",,,blurry,\n'
    )
    csv_jobs = read_jobs(tmp_path / "jobs.csv", TINY)
    assert [(j.prompt, j.seed, j.iterations, j.negative, j.overrides) for j in csv_jobs] == [
        ("a red chair", 4, 7, "", {"sds.guidance_scale": 50}), ("a lamp, brass", 0, None, "blurry", {})]
    # the same content hashes alike; CSV line 2/3 vs JSONL line 1/2 changes only the number in the name
    assert [job_dir_name(j, TINY)[5:] for j in csv_jobs] == [job_dir_name(j, TINY)[5:] for j in jsonl]


@pytest.mark.unit
def test_csv_errors_name_the_line(tmp_path):
    (tmp_path / "jobs.csv").write_text("prompt,seed,colour\nx,1,red\n")
    with pytest.raises(JobFileError, match=r"jobs.csv:1: unknown column 'colour'"):
        read_jobs(tmp_path / "jobs.csv", TINY)
    (tmp_path / "jobs.csv").write_text('prompt,seed\n"a\nmultiline prompt",1\nb,seven\n')
    with pytest.raises(JobFileError) as caught:
        read_jobs(tmp_path / "jobs.csv", TINY)
    assert caught.value.problems == [(4, "seed must be an integer in [0, 2^63), got 'seven'")]


@pytest.mark.unit
def test_folder_names_are_safe_stable_and_change_with_the_job(tmp_path):
    a = read_jobs(write_jobs(tmp_path, ['{"prompt": "Ünïcode / ../../etc ✓", "seed": 0}', '{"seed": 0, "prompt": "Ünïcode / ../../etc ✓"}']), TINY)
    names = [job_dir_name(job, TINY) for job in a]
    assert re.fullmatch(r"0001-unicode-etc-[0-9a-f]{8}", names[0]), names
    assert names[0][5:] == names[1][5:]  # key order and an explicit default do not change the hash
    edited = read_jobs(write_jobs(tmp_path, [{"prompt": "Ünïcode / ../../etc ✓", "seed": 1}]), TINY)[0]
    other_model = BatchSettings(**{**TINY.__dict__, "model": "/models/sd15"})
    assert len({names[0], job_dir_name(edited, TINY), job_dir_name(a[0], other_model)}) == 3


@pytest.mark.unit
def test_overrides_reach_the_configs(tmp_path):
    from latent3d.batch.run import configure_nerf_job

    overrides = {"sds.guidance_scale": 50, "render.step_size": 0.02, "lr_grid": 0.005, "camera.radius_range": [1.0, 2.0],
                 "export.texture_size": 128, "mixed_precision": False}
    job = read_jobs(write_jobs(tmp_path, [{"prompt": "x", "seed": 9, "iterations": 3, "overrides": overrides}]), TINY)[0]
    configs = configure_nerf_job(job, TINY)
    nerf, export = configs["nerf"], configs["export"]
    assert (nerf.sds.guidance_scale, nerf.render.step_size, nerf.lr_grid, nerf.camera.radius_range) == (50.0, 0.02, 0.005, (1.0, 2.0))
    assert (nerf.seed, nerf.iterations, nerf.checkpoint_every, nerf.mixed_precision) == (9, 3, 2, False)
    assert (export.texture_size, export.resolution) == (128, 32)
    assert nerf.field.hidden_dim == 32  # the rest is the tiny preset's


# -- manifest and gallery -----------------------------------------------------------------------------------
class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [value for name, value in attrs if name in ("src", "href") and value]


def check_gallery(out: Path) -> _Links:
    text = (out / "index.html").read_text()
    assert "http://" not in text and "https://" not in text and "//" not in text.replace("://", "")
    parser = _Links()
    parser.feed(text)
    from urllib.parse import unquote

    for ref in parser.refs:
        assert not ref.startswith("/") and (out / unquote(ref)).is_file(), ref
    assert "script" not in parser.tags
    return parser


@pytest.mark.unit
def test_gallery_escapes_prompts_and_links_only_existing_files(tmp_path):
    from latent3d.batch.manifest import Manifest
    from latent3d.batch.run import JobOutcome

    jobs = read_jobs(write_jobs(tmp_path, [{"prompt": '<script>alert("x")</script> & a "cat"'}, {"prompt": "a dog"}]), TINY)
    out = tmp_path / "out"
    book = Manifest(out, jobs, TINY, "jobs.jsonl")
    done, failed = book.entries
    (out / done.dir).mkdir(parents=True)
    for name in ("turntable.gif", "mesh.glb", "nerf.safetensors"):
        (out / done.dir / name).write_bytes(b"x")
    outputs = {"checkpoint": f"{done.dir}/nerf.safetensors", "turntable": f"{done.dir}/turntable.gif", "mesh": [f"{done.dir}/mesh.glb"]}
    book.set(done, "done", JobOutcome("done", step=20, wall_s=3.0, outputs=outputs))
    book.set(failed, "failed", JobOutcome("failed", error="sketch <b>chair.obj</b>: no such file"))
    book.write()
    links = check_gallery(out)
    assert sorted(links.refs) == sorted(["manifest.json", *outputs["mesh"], outputs["turntable"], outputs["checkpoint"]])
    text = (out / "index.html").read_text()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; a &quot;cat&quot;" in text and "&lt;b&gt;chair.obj" in text
    records = manifest(out)["jobs"]
    assert [(r["line"], r["status"], r["step"]) for r in records] == [(1, "done", 20), (2, "failed", 0)]


@pytest.mark.unit
def test_manifest_write_never_leaves_a_torn_file(tmp_path, monkeypatch):
    from latent3d.batch.manifest import Manifest

    out = tmp_path / "out"
    out.mkdir()
    book = Manifest(out, read_jobs(write_jobs(tmp_path, [{"prompt": "a cat"}]), TINY), TINY, "jobs.jsonl")
    book.write()
    before = (out / "manifest.json").read_text()
    book.entries[0].status = "running"

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        book.write()
    assert (out / "manifest.json").read_text() == before  # the old manifest stays whole


# -- the local executor --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_batch(tmp_path_factory):
    """The three jobs run once by the local executor (shared by the tests below and test_batch_ray)."""
    folder = tmp_path_factory.mktemp("batch_local")
    jobs = three_jobs(folder)
    report = run_batch(jobs, folder / "out", TINY, device="cpu", progress=False)
    return jobs, folder / "out", report


@pytest.mark.smoke
def test_local_executor_runs_every_job_and_records_the_failure(local_batch):
    import trimesh
    from PIL import Image

    _, out, report = local_batch
    assert report.status == "completed" and report.counts == {"pending": 0, "running": 0, "done": 2, "failed": 1}
    records = manifest(out)["jobs"]
    assert [(r["line"], r["status"], r["step"]) for r in records] == [(1, "done", 4), (2, "done", 4), (3, "failed", 0)]
    assert "missing/chair.obj: no such file" in records[2]["error"]
    for record in records[:2]:
        assert Image.open(out / record["outputs"]["turntable"]).n_frames == 2
        assert json.loads((out / record["dir"] / "nerf.json").read_text())["step"] == 4
        mesh = trimesh.load(out / record["outputs"]["mesh"][0], force="mesh")
        assert len(mesh.faces) > 0
    assert [Path(p).suffix for p in records[1]["outputs"]["mesh"]] == [".obj", ".mtl", ".png"]
    metrics = [json.loads(line) for line in (out / records[1]["dir"] / "metrics.jsonl").read_text().splitlines()]
    assert all(m["shape"] > 0 for m in metrics)  # the sketch guided the run
    check_gallery(out)


@pytest.mark.smoke
def test_rerun_skips_finished_jobs_and_retries_failed_ones(local_batch):
    jobs, out, _ = local_batch
    records = manifest(out)["jobs"]
    stamps = {r["dir"]: (out / r["dir"] / "nerf.safetensors").stat().st_mtime_ns for r in records[:2]}
    again = run_batch(jobs, out, TINY, device="cpu", progress=False)
    assert again.skipped == 2 and [t["line"] for t in again.timings] == [3]  # only the failed job ran again
    assert again.counts["done"] == 2 and again.counts["failed"] == 1
    assert {d: (out / d / "nerf.safetensors").stat().st_mtime_ns for d in stamps} == stamps


@pytest.mark.smoke
def test_a_killed_job_resumes_from_its_checkpoint(local_batch, tmp_path):
    jobs, reference_out, _ = local_batch
    reference = manifest(reference_out)["jobs"][0]
    folder = tmp_path / "killed"
    path = write_jobs(folder, [jobs.read_text().splitlines()[0]])
    out = folder / "out"
    (out / reference["dir"]).mkdir(parents=True)
    (out / reference["dir"] / ".test-kill-at-step").write_text("3")  # dies after step 3; the last checkpoint is step 2
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "LATENT3D_TEST_HOOKS": "1"}
    command = [sys.executable, "-m", "latent3d", "batch", str(path), "--out", str(out), "--device", "cpu", *CLI_FLAGS]
    killed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert manifest(out)["jobs"][0]["status"] == "running"  # what the manifest said when the process died
    resumed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = manifest(out)["jobs"][0]
    assert (record["status"], record["step"], record["resumed_from"]) == ("done", 4, 2)
    assert_same_tensors(out / record["outputs"]["checkpoint"], reference_out / reference["outputs"]["checkpoint"])
    steps = [json.loads(line)["step"] for line in (out / record["dir"] / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


@pytest.mark.unit
def test_ray_worker_count_follows_the_cluster_resources():
    from latent3d.batch.ray_executor import plan_workers

    cluster = {"CPU": 16.0, "GPU": 4.0}
    assert plan_workers(cluster, gpus=1, cpus=2, jobs=10, requested=None) == 4  # one per GPU
    assert plan_workers(cluster, gpus=0.5, cpus=2, jobs=10, requested=None) == 8  # two jobs per GPU
    assert plan_workers(cluster, gpus=0.5, cpus=2, jobs=3, requested=None) == 3  # never more than the jobs
    assert plan_workers({"CPU": 2.0}, gpus=0, cpus=1, jobs=10, requested=None) == 2
    assert plan_workers({"CPU": 2.0}, gpus=1, cpus=1, jobs=10, requested=None) == 0  # no GPU: the caller refuses
    assert plan_workers({"CPU": 2.0}, gpus=0, cpus=1, jobs=10, requested=5) == 5


@pytest.mark.unit
def test_cli_reports_a_bad_job_file_and_a_missing_ray(tmp_path, capsys, monkeypatch):
    from latent3d import cli

    path = write_jobs(tmp_path, [{"prompt": "a"}, {"prompt": "b", "format": "fbx"}])
    code = cli.main(["batch", str(path), "--out", str(tmp_path / "out"), *CLI_FLAGS])
    err = capsys.readouterr().err
    assert code == 2 and f"{path}:2: format must be one of glb, obj, ply" in err and "loading model" not in err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    code = cli.main(["batch", str(path), "--out", str(tmp_path / "out"), "--executor", "ray", *CLI_FLAGS])
    err = capsys.readouterr().err
    assert code == 2 and "pip install -r requirements-batch.txt" in err
    code = cli.main(["batch", str(path), "--out", str(tmp_path / "out"), "--address", "auto", *CLI_FLAGS])
    assert code == 2 and "--address is for --executor ray" in capsys.readouterr().err
