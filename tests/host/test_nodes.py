"""The Latent3D nodes executed in-process against ComfyUI's real loader, CLIP, VAE and folders.

Tiny renders (8² latents) and a few steps keep each UNet call at ~1 s on CPU.
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def folders(comfy, tmp_path_factory) -> types.SimpleNamespace:
    import folder_paths

    base = tmp_path_factory.mktemp("comfy_folders")
    for name in ("input", "output", "temp"):
        (base / name).mkdir()
    old = (folder_paths.get_input_directory(), folder_paths.get_output_directory(), folder_paths.get_temp_directory())
    folder_paths.set_input_directory(str(base / "input"))
    folder_paths.set_output_directory(str(base / "output"))
    folder_paths.set_temp_directory(str(base / "temp"))
    yield types.SimpleNamespace(input=base / "input", output=base / "output")
    folder_paths.set_input_directory(old[0])
    folder_paths.set_output_directory(old[1])
    folder_paths.set_temp_directory(old[2])


@pytest.fixture(scope="module")
def n(pack) -> types.SimpleNamespace:
    from comfyui_latent3d.nodes import node_classes

    classes = {cls.__name__: cls for cls in node_classes()}
    return types.SimpleNamespace(**classes)


def execute(cls, api_prompt=None, **inputs):
    """Execute a node the way ComfyUI does: on a class clone with the hidden inputs set, in inference mode;
    returns its NodeOutput (``result`` and ``ui``)."""
    from comfy_api.v0_0_2 import io

    clone = cls.PREPARE_CLASS_CLONE({io.Hidden.unique_id: "42", io.Hidden.prompt: api_prompt})
    with torch.inference_mode():
        return clone.execute(**inputs)


def run(cls, **inputs):
    return execute(cls, **inputs).result


def widget_values(cls, **overrides):
    """Every widget at its schema default (ComfyUI sends them all), with overrides."""
    from comfy_api.v0_0_2 import io

    values = {}
    for item in cls.define_schema().inputs:
        if isinstance(item, io.WidgetInput) and not item.optional:
            values[item.id] = item.default
    values.update(overrides)
    return values


def test_every_node_registers_with_prefixed_id_and_tooltips(n, pack) -> None:
    import comfy_api.v0_0_2

    from comfyui_latent3d.nodes import api

    assert api.API_VERSION == "v0_0_2" and api.io is comfy_api.v0_0_2.io  # the versioned API, not `latest`
    ids = set()
    for cls in vars(n).values():
        schema = cls.define_schema()
        schema.validate()
        assert schema.node_id.startswith("Latent3D") and schema.category.startswith("Latent3D/")
        ids.add(schema.node_id)
        for item in list(schema.inputs) + list(schema.outputs):
            assert item.tooltip, f"{schema.node_id}.{item.id} has no tooltip"
    assert ids == {"Latent3DLoadSketchMesh", "Latent3DSketchPrimitive", "Latent3DSketchShapeLoss", "Latent3DLatentNeRFTrain", "Latent3DExportMesh",
                   "Latent3DLatentPaint", "Latent3DLatentToRGBRefine", "Latent3DClearRuns"}


def test_sketch_nodes(n, folders) -> None:
    body = run(n.SketchPrimitive, **widget_values(n.SketchPrimitive, shape="sphere", size_x=0.35))
    sketch, preview = run(n.SketchPrimitive, **widget_values(n.SketchPrimitive, shape="sphere", size_x=0.2, center_y=0.45, add_to=body[0]))
    assert len(sketch.parts) == 2 and (folders.output / preview).is_file()
    radius = float(((sketch.placed().vertices ** 2).sum(1) ** 0.5).max())
    assert abs(radius - 0.7) < 1e-4  # normalized to mesh_scale
    (guide_spec,) = run(n.SketchShapeLoss, sketch=sketch, **widget_values(n.SketchShapeLoss, proximal_surface=0.2, fade_start=0, fade_end=0))
    assert guide_spec.config.proximal_surface == 0.2 and guide_spec.config.fade_end is None


def test_load_sketch_mesh_reads_only_the_input_folder(n, folders) -> None:
    import trimesh

    (folders.input / "3d").mkdir(exist_ok=True)
    trimesh.creation.box(extents=(1.0, 2.0, 1.0)).export(folders.input / "3d" / "block.obj")
    sketch, preview = run(n.LoadSketchMesh, **widget_values(n.LoadSketchMesh, mesh_file="3d/block.obj", mesh_scale=0.5, offset_y=0.1))
    placed = sketch.placed()
    assert abs(float(placed.vertices[:, 1].mean()) - 0.1) < 1e-4
    outside = folders.input.parent / "outside.obj"
    trimesh.creation.box().export(outside)
    (folders.input / "3d" / "link.obj").symlink_to(outside)  # listed before, then refused when chosen
    options = n.LoadSketchMesh.define_schema().inputs[0].options
    assert "3d/block.obj" in options and "3d/link.obj" not in options
    for bad in ("../secret.obj", "/etc/passwd", "3d/missing.obj", "3d/link.obj"):
        message = n.LoadSketchMesh.validate_inputs(mesh_file=bad)
        assert isinstance(message, str) and "mesh_file" in message


@pytest.fixture(scope="module")
def trained(n, sd15, folders):
    sketch, _ = run(n.SketchPrimitive, **widget_values(n.SketchPrimitive, shape="teddy"))
    (guide,) = run(n.SketchShapeLoss, sketch=sketch, **widget_values(n.SketchShapeLoss, grid_resolution=32))
    inputs = widget_values(n.LatentNeRFTrain, iterations=3, resolution=8, preview_every=1, preview_resolution=8, turntable_frames=2, prompt="a lego man")
    output = execute(n.LatentNeRFTrain, model=sd15.model, clip=sd15.clip, vae=sd15.vae, shape_guide=guide, **inputs)
    return types.SimpleNamespace(outputs=output.result, ui=output.ui, inputs=inputs, guide=guide)


def test_latent_nerf_train_outputs_and_checkpoint(trained) -> None:
    nerf, frames = trained.outputs
    assert frames.shape == (2, 64, 64, 3) and 0 <= float(frames.min()) and float(frames.max()) <= 1
    assert nerf.checkpoint.is_file() and "latent3d/runs" in nerf.checkpoint.as_posix()
    from comfyui_latent3d.latent3d.checkpoint import read_record

    record = read_record(nerf.checkpoint)
    assert record["step"] == 3 and record["shape_guide"] is not None
    assert record["optimizer_state"] is False  # a completed run drops Adam's moments unless keep_optimizer
    summary = trained.ui["latent3d"][0]  # the panel's summary, with the warnings the server log alone had
    assert summary["state"] == "completed" and [p[0] for p in summary["losses"]] == [1, 2, 3] and len(summary["frames"]) == 2
    assert any("teddy_sketch is not watertight" in w for w in summary["warnings"]), summary["warnings"]


def test_keep_optimizer_keeps_adam_in_a_completed_run(n, sd15, folders) -> None:
    from comfyui_latent3d.latent3d.checkpoint import read_record

    inputs = widget_values(n.LatentNeRFTrain, iterations=1, resolution=8, preview_every=0, preview_resolution=8, turntable_frames=1,
                           prompt="a kept optimizer", keep_optimizer=True)  # fmt: skip
    nerf, _ = run(n.LatentNeRFTrain, model=sd15.model, clip=sd15.clip, **inputs)
    assert read_record(nerf.checkpoint)["optimizer_state"] is True


def test_a_step_that_does_not_fit_is_refused_before_the_run(n, sd15, folders, monkeypatch) -> None:
    """The estimate (ComfyUI's own for the UNet, ours for the render) against the device's free memory:
    refused with the widget, the estimate and a size that fits, before any run folder exists."""
    import comfy.model_management as mm

    monkeypatch.setattr(mm, "get_free_memory", lambda *a, **k: 3 * 1024**3)
    before = set((folders.output / "latent3d" / "runs").glob("*"))
    inputs = widget_values(n.LatentNeRFTrain, iterations=2, resolution=128, prompt="too big")
    unet = sd15.model.memory_required([2, 4, 128, 128]) / 1024**3  # ComfyUI's own estimate for the SDS batch
    with pytest.raises(ValueError, match=rf"resolution 128 needs ≈ [\d.]+ GB per step \(UNet \(ComfyUI's estimate\) ≈ {unet:.1f} GB, render.*cpu has 3\.0 GB free\. Lower 'resolution' to \d+ or less"):
        run(n.LatentNeRFTrain, model=sd15.model, clip=sd15.clip, **inputs)
    assert set((folders.output / "latent3d" / "runs").glob("*")) == before


def test_clear_runs_lists_then_deletes_all_but_the_recent(n, folders) -> None:
    import os
    import time

    root = folders.output / "latent3d" / "runs"
    for i in range(3):
        folder = root / f"old{i}"
        folder.mkdir(parents=True)
        (folder / "nerf.safetensors").write_bytes(b"0" * 2**20)
        for path in (folder / "nerf.safetensors", folder):
            os.utime(path, (time.time() - 1e6 * (i + 1),) * 2)
    kept_before = {p.name for p in root.iterdir()}
    (report,) = run(n.ClearRuns, keep_recent=1, delete=False)
    assert "would be deleted" in report and {p.name for p in root.iterdir()} == kept_before  # listing deletes nothing
    (report,) = run(n.ClearRuns, keep_recent=len(kept_before) - 2, delete=True)
    assert report.startswith("Deleted 2 runs, 2.0 MB") and not (root / "old1").exists() and not (root / "old2").exists()
    assert n.ClearRuns.fingerprint_inputs(keep_recent=0, delete=True) != n.ClearRuns.fingerprint_inputs(keep_recent=0, delete=True)  # never cached


def test_rerun_resumes_instead_of_starting_over(n, sd15, trained) -> None:
    from comfyui_latent3d.latent3d.checkpoint import read_record

    calls = {"n": 0}
    original = sd15.model.model.apply_model

    def counting(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    sd15.model.model.apply_model = counting
    try:
        more = dict(trained.inputs, iterations=4)
        nerf, _ = run(n.LatentNeRFTrain, model=sd15.model, clip=sd15.clip, vae=None, shape_guide=trained.guide, **more)
    finally:
        sd15.model.model.apply_model = original
    assert calls["n"] == 1  # one more step, not four
    assert read_record(nerf.checkpoint)["step"] == 4


def test_interrupt_stops_within_a_step_and_keeps_the_checkpoint(n, sd15, folders) -> None:
    import comfy.model_management as mm
    import comfy.utils

    from comfyui_latent3d.latent3d.checkpoint import read_record

    def hook(value, total, preview, node_id=None):
        if value == 2:
            mm.interrupt_current_processing(True)

    comfy.utils.set_progress_bar_global_hook(hook)
    inputs = widget_values(n.LatentNeRFTrain, iterations=50, resolution=8, preview_every=0, preview_resolution=8, turntable_frames=1, prompt="a chair", seed=5)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run(n.LatentNeRFTrain, model=sd15.model, clip=sd15.clip, **inputs)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)
    runs = sorted((folders.output / "latent3d" / "runs").glob("*/nerf.safetensors"), key=lambda p: p.stat().st_mtime)
    assert read_record(runs[-1])["step"] == 2


def test_export_mesh_writes_files_preview3d_can_load(n, trained, folders, sd15) -> None:
    import trimesh

    nerf = trained.outputs[0]
    for fmt in ("glb", "obj", "ply"):
        inputs = widget_values(n.ExportMesh, format=fmt, resolution=64, texture_size=256, filename_prefix=f"latent3d/test_{fmt}")
        relative, mesh = run(n.ExportMesh, nerf=nerf, vae=sd15.vae if fmt == "glb" else None, **inputs)
        path = folders.output / relative
        assert path.is_file() and path.suffix == f".{fmt}" and not Path(relative).is_absolute()
        loaded = trimesh.load(path, force="mesh")
        assert len(loaded.faces) > 0 and mesh.vertices.shape[0] == 1 and mesh.faces.shape[2] == 3
    with pytest.raises(ValueError, match="filename_prefix"):
        run(n.ExportMesh, nerf=nerf, **widget_values(n.ExportMesh, filename_prefix="../escape"))
