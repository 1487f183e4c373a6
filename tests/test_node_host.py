"""The host glue's logic without ComfyUI: ETA and the long-run warning, run-folder pruning, the memory
refusal, downstream filename checks, mesh choices, core MESH texture coordinates, widget bounds, and the
versioned comfy_api import."""

import importlib
import os
import re
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from pack_import import pack_as_package

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]
ALIAS = "latent3d_pack_host"


@pytest.fixture(scope="module")
def pack():
    with pack_as_package(ALIAS):
        yield types.SimpleNamespace(**{name: importlib.import_module(f"{ALIAS}.nodes.{name}") for name in ("eta", "runs", "memory", "host", "training", "specs")})


def test_step_clock_leaves_out_the_warmup_step(pack):
    times = iter([130.0, 132.0, 134.0, 136.0])  # step 11 ends after a slow first step (model load), then 2 s per step
    clock = pack.eta.StepClock(start_step=10, total=100, clock=lambda: next(times))
    clock.tick(11)
    clock.tick(12)
    assert clock.rate is None and clock.eta(12) is None  # one timed step is not a measurement yet
    clock.tick(13)
    assert clock.rate == pytest.approx(2.0) and clock.eta(13) == pytest.approx(2.0 * 87)
    clock.tick(14)
    assert clock.rate == pytest.approx(2.0)


def test_durations_read_like_a_person_writes_them(pack):
    assert [pack.eta.format_duration(s) for s in (40, 12 * 60, 3 * 3600 + 5 * 60, 62 * 3600)] == ["40 s", "12 min", "3 h 05 min", "2.6 days"]


def test_long_run_warning(pack):
    size = pack.eta.SizeWidget("resolution", 64, 8)
    # the case: 5000 iterations at 64² on a CPU, ≈ 45 s per step
    text = pack.eta.long_run_warning("Latent-NeRF Train", "cpu", 45.0, 3, 5000, size)
    assert "45.0 s/step on cpu" in text and "≈ 2.6 days" in text
    assert "iterations ≈ 83" in text  # 3 done + 3600 / 45
    assert "'resolution' (now 64; 32" in text and "GPU" in text
    assert pack.eta.long_run_warning("x", "cuda", 0.2, 3, 5000, size) is None  # 17 min on a GPU: fine
    slow_gpu = pack.eta.long_run_warning("x", "cuda", 2.0, 0, 5000, size)
    assert "2 h 47 min" in slow_gpu and "GPU (CUDA" not in slow_gpu
    assert pack.eta.long_run_warning("x", "cpu", 2.0, 100, 100, size) is None  # nothing left to run
    assert "'resolution'" not in pack.eta.long_run_warning("x", "cpu", 2.0, 0, 100, pack.eta.SizeWidget("resolution", 8, 8))


def _run(root: Path, key: str, age_s: float, checkpoint: bool = True, size: int = 1000, lock: bool = False) -> Path:
    folder = root / key
    folder.mkdir(parents=True)
    if lock:
        (folder / ".latent3d.lock").write_text("123")
    if checkpoint:
        (folder / "nerf.safetensors").write_bytes(b"x" * size)
        (folder / "nerf.json").write_text("{}")
    stamp = time.time() - age_s
    for path in [*folder.iterdir(), folder]:
        os.utime(path, (stamp, stamp))
    return folder


def test_pruning_keeps_the_recent_runs_and_removes_killed_ones(pack, tmp_path):
    from latent3d.runfolder import FolderLock

    runs = pack.runs
    for i in range(5):
        _run(tmp_path, f"run{i}", age_s=1000 * (i + 1))  # run0 newest
    _run(tmp_path, "killed", age_s=3600, checkpoint=False, lock=True)  # a dead process's lock: the OS released it
    _run(tmp_path, "starting", age_s=5, checkpoint=False)  # another run just created its folder
    removed = runs.prune_runs(tmp_path, current="run4", keep=2)
    assert sorted(r.key for r in removed) == ["killed", "run2", "run3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run0", "run1", "run4", "starting"]
    with FolderLock(tmp_path / "run1"):  # a run in progress (this process holds its lock) is never deleted
        removed = runs.remove_runs(tmp_path, keep=0)
        assert sorted(r.key for r in removed) == ["run0", "run4", "starting"] and (tmp_path / "run1").is_dir()
    assert runs.summary(runs.list_runs(tmp_path)) == "1 run, 0.0 MB"


def test_keep_runs_setting(pack, monkeypatch):
    monkeypatch.delenv("LATENT3D_KEEP_RUNS", raising=False)
    assert pack.runs.keep_runs_setting() == pack.runs.KEEP_RUNS
    monkeypatch.setenv("LATENT3D_KEEP_RUNS", "3")
    assert pack.runs.keep_runs_setting() == 3
    monkeypatch.setenv("LATENT3D_KEEP_RUNS", "zero")
    with pytest.raises(ValueError, match="LATENT3D_KEEP_RUNS must be an integer >= 1.*'zero'"):
        pack.runs.keep_runs_setting()


def test_memory_refusal_names_the_widget_and_a_size_that_fits(pack):
    memory = pack.memory
    gb = memory.GB

    def estimate(r):  # ComfyUI's CPU formula for a batch of 2: 0.15 MB per latent pixel per latent
        return memory.StepEstimate({"UNet": 2 * r * r * 0.15 * 2**20, "render": memory.render_bytes(r)})

    assert memory.refusal("Latent-NeRF Train", "resolution", 64, estimate(64), 8 * gb, "cpu", estimate, 8, 8) is None
    text = memory.refusal("Latent-NeRF Train", "resolution", 128, estimate(128), 3 * gb, "cpu", estimate, 8, 8)
    # 128: UNet 2·128²·0.15 MiB = 4.8 GiB, render 128²·64·1800 B + 1 GiB = 2.8 GiB; 64 fits: 1.2 + 1.4 GiB; 72 does not (3.1 GiB)
    assert text.startswith("Latent-NeRF Train: resolution 128 needs ≈ 7.6 GB per step (UNet ≈ 4.8 GB, render ≈ 2.8 GB)")
    assert "cpu has 3.0 GB free" in text and "Lower 'resolution' to 64 or less (≈ 2.6 GB)" in text
    hopeless = memory.refusal("Latent-NeRF Train", "resolution", 16, estimate(16), 0.5 * gb, "cpu", estimate, 8, 8)
    assert "Lower" not in hopeless and "Free memory" in hopeless
    # the render part from the measured bytes per sample
    assert memory.render_bytes(64) == pytest.approx(64 * 64 * 64 * 1800 + gb)


def test_a_bad_prefix_after_a_training_stops_it_before_it_starts(pack):
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x"}},
        "2": {"class_type": "Latent3DLatentNeRFTrain", "inputs": {"model": ["1", 0]}},
        "3": {"class_type": "Latent3DExportMesh", "inputs": {"nerf": ["2", 0], "filename_prefix": "../up"}},
        "4": {"class_type": "Latent3DLatentPaint", "inputs": {"mesh": ["3", 1], "filename_prefix": "/abs/paint"}},
        "5": {"class_type": "Latent3DExportMesh", "inputs": {"nerf": ["9", 0], "filename_prefix": "../elsewhere"}},  # not downstream
        "6": {"class_type": "Latent3DExportMesh", "inputs": {"nerf": ["2", 0], "filename_prefix": ["7", 0]}},  # from a link: later
    }
    problems = pack.training.downstream_prefix_errors(prompt, "2")
    assert len(problems) == 2 and problems[0].startswith("Export Mesh (Latent3D) (node 3): filename_prefix must not contain '..'")
    assert problems[1].startswith("Latent-Paint (Latent3D) (node 4): filename_prefix must be relative")
    assert pack.training.downstream_prefix_errors(prompt, "4") == [] and pack.training.downstream_prefix_errors(None, "2") == []
    run = pack.training.TrainingRun("Latent-NeRF Train", "2", torch.device("cpu"))
    with pytest.raises(ValueError, match="Latent-NeRF Train: not started, because a node after it would fail"):
        run.check_downstream(prompt)


def test_mesh_choices_leave_out_links_that_point_outside(pack, tmp_path):
    base, outside = tmp_path / "input", tmp_path / "secret"
    (base / "3d" / "sub").mkdir(parents=True)
    outside.mkdir()
    (base / "3d" / "a.obj").write_text("v 0 0 0\n")
    (base / "3d" / "sub" / "b.GLB").write_bytes(b"glTF")
    (base / "3d" / "notes.txt").write_text("x")
    (outside / "c.obj").write_text("v 0 0 0\n")
    (base / "3d" / "c.obj").symlink_to(outside / "c.obj")
    (base / "3d" / "inside.obj").symlink_to(base / "3d" / "a.obj")
    assert pack.host.mesh_choices(base) == ["3d/a.obj", "3d/inside.obj", "3d/sub/b.GLB"]


def test_core_mesh_uvs_follow_gltf(pack):
    """Core "Save 3D Model" writes MESH uvs as TEXCOORD_0 unchanged, and glTF puts (0, 0) at the image's
    top-left: a texel in the top half of the image must be at MESH v < 0.5. Our meshes keep v up (OBJ)."""
    from latent3d.export.mesh import TexturedMesh

    texture = np.zeros((8, 8, 3), np.uint8)
    texture[:4] = (255, 0, 0)  # top half red (row 0 is the top)
    uvs = np.array([[0.5, 0.9], [0.9, 0.9], [0.5, 0.6]], np.float32)  # v up: near the top
    mesh = TexturedMesh(np.eye(3, dtype=np.float32), np.array([[0, 1, 2]]), np.tile([[0, 0, 1.0]], (3, 1)).astype(np.float32), uvs=uvs, texture=texture)

    class NewerMesh:  # the constructor of newer hosts (ComfyUI PR #13824 and later)
        def __init__(self, vertices, faces, uvs=None, vertex_colors=None, texture=None, vertex_counts=None, face_counts=None):
            self.vertices, self.faces, self.uvs, self.vertex_colors, self.texture = vertices, faces, uvs, vertex_colors, texture

    class OldMesh:  # 0.3.64
        def __init__(self, vertices, faces):
            self.vertices, self.faces = vertices, faces

    core = pack.host.core_mesh(mesh, NewerMesh)
    rows = (core.uvs[0, :, 1] * 8).long()  # glTF: image row = v · height
    assert bool((core.texture[0, rows, (core.uvs[0, :, 0] * 8).long(), 0] == 1.0).all())
    assert core.vertices.shape == (1, 3, 3) and core.texture.shape == (1, 8, 8, 3)
    assert not hasattr(pack.host.core_mesh(mesh, OldMesh), "uvs")
    inputs = importlib.import_module(f"{ALIAS}.nodes.paint_inputs")
    mesh_lib = importlib.import_module(f"{ALIAS}.latent3d.paint.mesh")
    painted = inputs.from_core_mesh(core, mesh_lib.PaintMeshConfig())  # and back: the same v-up uvs
    assert np.allclose(painted.uvs, uvs, atol=1e-6) and np.array_equal(painted.texture, texture)


def test_training_widgets_are_bounded(pack):
    specs = pack.specs
    for spec in (specs.LATENT_NERF_TRAIN, specs.LATENT_PAINT):
        for name in ("resolution", "preview_resolution"):
            widget = spec.widget(name)
            assert widget.max == 128 and "128" in widget.tooltip, (spec.node_id, name)
        assert spec.widget("keep_optimizer").default is False and spec.output_node
    refine = specs.LATENT_TO_RGB_REFINE
    assert refine.widget("render_resolution").max == 256 and refine.widget("encode_resolution").max == 1024 and refine.output_node
    assert specs.SKETCH_SHAPE_LOSS.widget("grid_resolution").max == 256


def test_node_modules_import_the_versioned_api():
    """``comfy_api.latest`` changes without notice: only nodes/api.py names it, as the fallback."""
    names = {}
    for path in [ROOT / "__init__.py", *sorted((ROOT / "nodes").glob("*.py"))]:
        for match in re.finditer(r"^\s*(?:from|import)\s+(comfy_api[\w.]*)", path.read_text(), re.MULTILINE):
            names.setdefault(path.name, set()).add(match.group(1))
    assert names == {"api.py": {"comfy_api.v0_0_2", "comfy_api.latest"}}, names
