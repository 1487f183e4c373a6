"""The Ray executor on a local 2-CPU Ray cluster: the local executor's outputs bit for bit (nerf and paint
jobs), one model load per worker, a killed worker's job retried and resumed, a stop request that keeps the
manifest current."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -r requirements-batch.txt): the Ray executor is optional")

from test_batch import TINY, assert_same_tensors, check_gallery, local_batch, manifest, write_jobs  # noqa: E402,F401
from test_batch_kinds import kinds_batch  # noqa: E402,F401

from latent3d.batch import run_batch  # noqa: E402
from latent3d.batch.ray_executor import RayOptions, runtime_env  # noqa: E402

pytestmark = pytest.mark.smoke


@pytest.fixture(scope="module", autouse=True)
def cluster():
    env = {**runtime_env(), "env_vars": {"LATENT3D_TEST_HOOKS": "1", "HF_HUB_OFFLINE": "1"}}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env=env, logging_level="WARNING", log_to_driver=False)
    yield
    ray.shutdown()


def ray_batch(jobs: Path, out: Path, settings=TINY, **options):
    return run_batch(jobs, out, settings, executor="ray", ray_options=RayOptions(**{"workers": 2, "max_retries": 1, **options}), progress=False)


def test_ray_runs_the_jobs_to_the_local_executors_outputs(local_batch, tmp_path):
    jobs, local_out, _ = local_batch
    out = tmp_path / "ray"
    report = ray_batch(jobs, out)
    assert report.status == "completed" and report.counts == {"pending": 0, "running": 0, "done": 2, "failed": 1}
    local, remote = manifest(local_out)["jobs"], manifest(out)["jobs"]
    assert [(r["dir"], r["status"], r["step"]) for r in remote] == [(r["dir"], r["status"], r["step"]) for r in local]
    assert "missing/chair.obj: no such file" in remote[2]["error"]
    for a, b in zip(local[:2], remote[:2]):
        assert_same_tensors(out / b["outputs"]["checkpoint"], local_out / a["outputs"]["checkpoint"])
        assert [Path(p).name for p in b["outputs"]["mesh"]] == [Path(p).name for p in a["outputs"]["mesh"]]
    check_gallery(out)
    loads: dict[int, list[float]] = {}
    for timing in report.timings:
        loads.setdefault(timing["pid"], []).append(timing["load_s"])
    assert all(sum(load > 0 for load in per_worker) == 1 for per_worker in loads.values()), loads  # one load per worker
    assert ray_batch(jobs, out).skipped == 2


def test_a_paint_job_on_ray_gives_the_local_checkpoint_bit_for_bit(kinds_batch):
    path, local_out, _, _ = kinds_batch
    local = manifest(local_out)["jobs"][1]
    assert local["kind"] == "paint" and local["status"] == "done"
    alone = write_jobs(path.parent, [path.read_text().splitlines()[1]], name="paint_alone.jsonl")  # beside box.obj, which it names
    out = path.parent / "paint_ray"
    report = ray_batch(alone, out, workers=1)
    remote = manifest(out)["jobs"][0]
    assert report.counts["done"] == 1 and (remote["status"], remote["step"]) == ("done", 4), remote
    assert remote["dir"][5:] == local["dir"][5:]  # the same job (hash); only the line number differs
    assert_same_tensors(out / remote["outputs"]["checkpoint"], local_out / local["outputs"]["checkpoint"])
    assert [Path(p).name for p in remote["outputs"]["mesh"]] == ["mesh.glb", "mesh.obj", "mesh.mtl", "mesh.png"]


def test_a_killed_worker_is_retried_and_resumes(local_batch, tmp_path):
    jobs, local_out, _ = local_batch
    reference = manifest(local_out)["jobs"][0]
    path = write_jobs(tmp_path, [jobs.read_text().splitlines()[0]])
    out = tmp_path / "ray"
    (out / reference["dir"]).mkdir(parents=True)
    (out / reference["dir"] / ".test-kill-at-step").write_text("3")  # the worker SIGKILLs itself after step 3, once
    report = ray_batch(path, out, workers=1)
    record = manifest(out)["jobs"][0]
    assert (record["status"], record["step"], record["resumed_from"]) == ("done", 4, 2), record
    assert not (out / reference["dir"] / ".test-kill-at-step").exists()  # the kill happened
    assert_same_tensors(out / record["outputs"]["checkpoint"], local_out / reference["outputs"]["checkpoint"])
    steps = [json.loads(line)["step"] for line in (out / record["dir"] / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4] and report.counts["done"] == 1


def test_a_job_whose_worker_keeps_dying_fails_alone(tmp_path):
    path = write_jobs(tmp_path, [{"prompt": "a doomed cube", "iterations": 4}, {"prompt": "a cube", "iterations": 2}])
    from latent3d.batch import job_dir_name, read_jobs

    doomed = job_dir_name(read_jobs(path, TINY)[0], TINY)
    (tmp_path / "out" / doomed).mkdir(parents=True)
    (tmp_path / "out" / doomed / ".test-kill-at-step").write_text("1")
    report = ray_batch(path, tmp_path / "out", workers=1, max_retries=0)
    records = manifest(tmp_path / "out")["jobs"]
    assert [r["status"] for r in records] == ["failed", "done"], records
    assert "worker died 1 times (retries exhausted)" in records[0]["error"]
    assert report.status == "completed"


def test_a_stop_request_cancels_running_jobs_with_checkpoints_saved(tmp_path):
    path = write_jobs(tmp_path, [{"prompt": "a long job", "iterations": 100000}, {"prompt": "never started", "iterations": 2}])
    out = tmp_path / "out"
    settings = dataclasses.replace(TINY, checkpoint_every=0)  # no periodic checkpoint: only the stop saves one
    deadline = time.time() + 240

    def should_stop() -> bool:
        logs = list(out.glob("0001-*/metrics.jsonl"))
        return time.time() > deadline or (bool(logs) and len(logs[0].read_text().splitlines()) >= 3)

    report = run_batch(path, out, settings, executor="ray", ray_options=RayOptions(workers=1), should_stop=should_stop, progress=False)
    assert report.status == "stopped"
    records = manifest(out)["jobs"]
    assert [r["status"] for r in records] == ["pending", "pending"]
    saved = json.loads((out / records[0]["dir"] / "nerf.json").read_text())["step"]
    assert saved >= 3 and records[0]["step"] == saved  # the cancelled job saved its state; the manifest says so
    assert not (out / records[1]["dir"]).exists()
