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


def run(cls, **inputs):
    """Execute a node the way ComfyUI does: on a class clone with the hidden inputs set, in inference mode."""
    from comfy_api.latest import io

    clone = cls.PREPARE_CLASS_CLONE({io.Hidden.unique_id: "42"})
    with torch.inference_mode():
        return clone.execute(**inputs).result


def widget_values(cls, **overrides):
    """Every widget at its schema default (ComfyUI sends them all), with overrides."""
    from comfy_api.latest import io

    values = {}
    for item in cls.define_schema().inputs:
        if isinstance(item, io.WidgetInput) and not item.optional:
            values[item.id] = item.default
    values.update(overrides)
    return values


def test_every_node_registers_with_prefixed_id_and_tooltips(n) -> None:
    from comfy_api.latest import io

    ids = set()
    for cls in vars(n).values():
        schema = cls.define_schema()
        schema.validate()
        assert schema.node_id.startswith("Latent3D") and schema.category.startswith("Latent3D/")
        ids.add(schema.node_id)
        for item in list(schema.inputs) + list(schema.outputs):
            assert item.tooltip, f"{schema.node_id}.{item.id} has no tooltip"
    assert ids == {"Latent3DLoadSketchMesh", "Latent3DSketchPrimitive", "Latent3DSketchShapeLoss", "Latent3DLatentNeRFTrain", "Latent3DExportMesh", "Latent3DLatentPaint"}


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
    assert "3d/block.obj" in n.LoadSketchMesh.define_schema().inputs[0].options
    for bad in ("../secret.obj", "/etc/passwd", "3d/missing.obj"):
        message = n.LoadSketchMesh.validate_inputs(mesh_file=bad)
        assert isinstance(message, str) and "mesh_file" in message


@pytest.fixture(scope="module")
def trained(n, sd15, folders):
    sketch, _ = run(n.SketchPrimitive, **widget_values(n.SketchPrimitive, shape="teddy"))
    (guide,) = run(n.SketchShapeLoss, sketch=sketch, **widget_values(n.SketchShapeLoss, grid_resolution=32))
    inputs = widget_values(n.LatentNeRFTrain, iterations=3, resolution=8, preview_every=1, preview_resolution=8, turntable_frames=2, prompt="a lego man")
    outputs = run(n.LatentNeRFTrain, model=sd15.model, clip=sd15.clip, vae=sd15.vae, shape_guide=guide, **inputs)
    return types.SimpleNamespace(outputs=outputs, inputs=inputs, guide=guide)


def test_latent_nerf_train_outputs_and_checkpoint(trained) -> None:
    nerf, frames = trained.outputs
    assert frames.shape == (2, 64, 64, 3) and 0 <= float(frames.min()) and float(frames.max()) <= 1
    assert nerf.checkpoint.is_file() and "latent3d/runs" in nerf.checkpoint.as_posix()
    from comfyui_latent3d.latent3d.checkpoint import read_record

    record = read_record(nerf.checkpoint)
    assert record["step"] == 3 and record["shape_guide"] is not None


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
