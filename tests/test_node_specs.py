"""The node specs without ComfyUI: ids, tooltips, and widgets that map 1:1 onto the config dataclasses."""

import dataclasses
import importlib
from pathlib import Path

import pytest
import torch

from pack_import import pack_as_package

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]
ALIAS = "latent3d_pack_specs"


@pytest.fixture(scope="module")
def pack():
    with pack_as_package(ALIAS) as module:
        assert not hasattr(module, "NODE_CLASS_MAPPINGS")  # V1 mappings would hide the V3 entry point
        yield module


@pytest.fixture(scope="module")
def specs(pack):
    return importlib.import_module(f"{ALIAS}.nodes.specs")


@pytest.fixture(scope="module")
def spec_lib(pack):
    return importlib.import_module(f"{ALIAS}.nodes.spec")


def test_ids_categories_and_tooltips(specs, spec_lib):
    ids = [s.node_id for s in specs.ALL_SPECS]
    assert len(set(ids)) == len(ids) == 8
    assert ids == [
        "Latent3DLoadSketchMesh", "Latent3DSketchPrimitive", "Latent3DSketchShapeLoss", "Latent3DLatentNeRFTrain", "Latent3DLatentToRGBRefine",
        "Latent3DExportMesh", "Latent3DLatentPaint", "Latent3DClearRuns",
    ]
    for spec in specs.ALL_SPECS:
        assert spec.category.startswith("Latent3D/") and spec.description
        names = [i.name for i in spec.inputs] + [o.name for o in spec.outputs]
        assert len(set(names)) == len(names), spec.node_id
        for item in (*spec.inputs, *spec.outputs):
            assert isinstance(item.tooltip, str) and len(item.tooltip) > 10, f"{spec.node_id}.{item.name}"


def test_widget_defaults_come_from_the_configs_and_fit_their_bounds(specs, spec_lib):
    for spec in specs.ALL_SPECS:
        for widget in spec.widgets():
            default = spec_lib.widget_default(spec, widget)
            if widget.kind == "COMBO":
                assert widget.upload or default in widget.options, f"{spec.node_id}.{widget.name}"
                continue
            assert default is not None, f"{spec.node_id}.{widget.name} has no default"
            if widget.min is not None:
                assert widget.min <= default <= widget.max, f"{spec.node_id}.{widget.name}: {default}"
        if spec.config is not None:  # every widget at its default builds exactly the default config
            values = {w.name: spec_lib.widget_default(spec, w) for w in spec.widgets()}
            assert spec_lib.build_config(spec, values) == spec.config()


def test_training_widgets_map_onto_nerf_config(specs, spec_lib, pack):
    train = importlib.import_module(f"{ALIAS}.latent3d.nerf.train")
    spec = specs.LATENT_NERF_TRAIN
    assert spec.config is train.NerfConfig
    assert spec_lib.widget_default(spec, spec.widget("guidance_scale")) == 100.0
    assert spec_lib.widget_default(spec, spec.widget("iterations")) == 5000
    config = spec_lib.build_config(spec, {"iterations": 12, "guidance_scale": 7.5, "seed": 3, "prompt": "ignored: not a config field"})
    assert (config.iterations, config.sds.guidance_scale, config.seed) == (12, 7.5, 3)
    assert config.field == train.NerfConfig().field  # untouched nested configs stay default
    with pytest.raises(ValueError, match="iterations.*0"):
        spec_lib.build_config(spec, {"iterations": 0})


def test_tuple_and_none_widgets(specs, spec_lib):
    load = specs.LOAD_SKETCH_MESH
    config = spec_lib.build_config(load, {"rotate_y": 90.0, "offset_x": 0.2, "mesh_scale": 0.5})
    assert config.rotation_deg == (0.0, 90.0, 0.0) and config.offset == (0.2, 0.0, 0.0) and config.mesh_scale == 0.5
    loss = specs.SKETCH_SHAPE_LOSS
    assert spec_lib.widget_default(loss, loss.widget("fade_end")) == 0
    assert spec_lib.build_config(loss, {"fade_start": 0, "fade_end": 0}).fade_end is None
    assert spec_lib.build_config(loss, {"fade_start": 100, "fade_end": 400}).fade_end == 400
    export = specs.EXPORT_MESH
    assert spec_lib.build_config(export, {"threshold": 0.0}).threshold is None
    assert spec_lib.build_config(export, {"threshold": 12.5, "face_budget": 5000}).face_budget == 5000
    with pytest.raises(ValueError, match="texture_size"):
        spec_lib.build_config(export, {"texture_size": 0})


def test_every_field_path_exists(specs, spec_lib):
    for spec in specs.ALL_SPECS:
        if spec.config is None:
            continue
        names = {f.name for f in dataclasses.fields(spec.config)}
        for widget in spec.widgets():
            if widget.field:
                assert widget.field.split(".")[0] in names, f"{spec.node_id}.{widget.name} -> {widget.field}"


def test_host_paths_refuse_escapes(pack, tmp_path):
    host = importlib.import_module(f"{ALIAS}.nodes.host")
    assert host.resolve_inside(tmp_path, "3d/a.obj", "mesh_file") == (tmp_path / "3d" / "a.obj").resolve()
    for bad, rule in [("../a.obj", r"\.\."), ("/etc/passwd", "absolute"), ("C:/x.obj", "absolute"), ("", "non-empty")]:
        with pytest.raises(ValueError, match=rule):
            host.resolve_inside(tmp_path, bad, "mesh_file")
    assert host.run_key({"a": 1}, "x") == host.run_key({"a": 1}, "x") != host.run_key({"a": 2}, "x")


def test_over_long_output_names_are_refused_before_anything_runs(pack):
    host = importlib.import_module(f"{ALIAS}.nodes.host")
    assert str(host.safe_relative("latent3d/mesh", "filename_prefix")) == "latent3d/mesh"
    with pytest.raises(ValueError, match=r"filename_prefix is too long: each folder or file name may have at most 200 bytes"):
        host.safe_relative("latent3d/" + "x" * 300, "filename_prefix")
    with pytest.raises(ValueError, match="too long"):
        host.safe_relative("/".join(["abc"] * 400), "filename_prefix")


def test_an_unreadable_run_checkpoint_is_a_clear_node_error(pack, tmp_path):
    host = importlib.import_module(f"{ALIAS}.nodes.host")
    assert host.checkpoint_step(tmp_path / "nerf.safetensors", "Latent-NeRF Train") == 0  # no run yet
    broken = tmp_path / "nerf.safetensors"
    broken.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match=r"Latent-NeRF Train: the checkpoint of this run cannot be read .*Turn 'resume' off"):
        host.checkpoint_step(broken, "Latent-NeRF Train")


def test_paint_widgets_map_onto_paint_config(specs, spec_lib, pack):
    train = importlib.import_module(f"{ALIAS}.latent3d.paint.train")
    spec = specs.LATENT_PAINT
    assert spec.config is train.PaintConfig and spec.output_node
    defaults = {name: spec_lib.widget_default(spec, spec.widget(name)) for name in ("iterations", "texture_size", "guidance_scale", "lr", "mesh_scale", "init")}
    assert defaults == {"iterations": 5000, "texture_size": 128, "guidance_scale": 100.0, "lr": 1e-2, "mesh_scale": 0.6, "init": "color"}
    assert spec_lib.widget_default(spec, spec.widget("mesh_file")) == specs.NO_MESH_FILE
    config = spec_lib.build_config(spec, {"iterations": 30, "rotate_y": 90.0, "offset_z": 0.1, "background": "fixed", "texture_size": 256, "prompt": "x"})
    assert (config.iterations, config.rotation_deg, config.offset, config.background, config.texture_size) == (30, (0.0, 90.0, 0.0), (0.0, 0.0, 0.1), "fixed", 256)
    assert config.camera == train.PaintConfig().camera and config.camera.fovy_range == (60.0, 60.0)
    with pytest.raises(ValueError, match="texture_size"):
        spec_lib.build_config(spec, {"texture_size": 1024})
    outputs = [(o.name, o.type) for o in spec.outputs]
    assert outputs == [("model_file", "STRING"), ("texture", "IMAGE"), ("turntable", "IMAGE"), ("textured_mesh", "MESH")]
    sockets = {i.name: i.type for i in spec.inputs if isinstance(i, spec_lib.Socket)}
    assert sockets["mesh"] == "MESH" and sockets["sketch"] == specs.SKETCH and sockets["vae"] == "VAE" and "front_conditioning" in sockets


def test_paint_mesh_inputs_without_the_host(pack, tmp_path):
    """Which mesh the node paints: the MESH socket (unbatched; its uvs, glTF's v-down convention, turned to
    ours, and its texture kept), else the sketch as placed, else the file; and clear errors for a batch or
    nothing connected."""
    import types

    import numpy as np
    import torch

    inputs = importlib.import_module(f"{ALIAS}.nodes.paint_inputs")
    mesh_lib = importlib.import_module(f"{ALIAS}.latent3d.paint.mesh")
    node_types = importlib.import_module(f"{ALIAS}.nodes.types")
    primitives = importlib.import_module(f"{ALIAS}.latent3d.shape.primitives")
    shape_loss = importlib.import_module(f"{ALIAS}.latent3d.shape.loss")
    config = mesh_lib.PaintMeshConfig()
    vertices = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]])
    faces = torch.tensor([[[0, 1, 2], [0, 2, 3]]])
    uvs = torch.tensor([[[0.0, 0], [1, 0], [1, 1], [0, 1]]])
    texture = torch.rand(1, 8, 8, 3)
    core = types.SimpleNamespace(vertices=vertices, faces=faces, uvs=uvs, texture=texture)
    painted = inputs.mesh_to_paint("none", core, None, None, config)
    flipped = np.stack([uvs[0, :, 0].numpy(), 1.0 - uvs[0, :, 1].numpy()], -1)  # glTF (0, 0) = the image's top-left
    assert painted.uv_origin == "file" and np.allclose(painted.uvs, flipped) and painted.texture.shape == (8, 8, 3)
    assert np.array_equal(painted.texture, np.round(texture[0].numpy() * 255).astype(np.uint8))
    bare = inputs.mesh_to_paint("none", types.SimpleNamespace(vertices=vertices, faces=faces), None, None, config)
    assert bare.uv_origin == "xatlas" and bare.texture is None
    with pytest.raises(ValueError, match="a batch of 2 meshes"):
        inputs.mesh_to_paint("none", types.SimpleNamespace(vertices=vertices.repeat(2, 1, 1), faces=faces.repeat(2, 1, 1)), None, None, config)
    sketch = node_types.Sketch((primitives.make_primitive("box", (0.3, 0.6, 0.3), "y", (0, 0, 0)),), shape_loss.SketchShapeConfig(rotation_deg=(0.0, 0.0, 90.0)))
    from_sketch = inputs.mesh_to_paint("none", None, sketch, None, config)
    extent = from_sketch.vertices.max(0) - from_sketch.vertices.min(0)
    assert extent[0] > extent[1]  # the sketch's 90° roll about z made the tall box wide
    with pytest.raises(ValueError, match="no mesh to paint.*connect a MESH"):
        inputs.mesh_to_paint("none", None, None, None, config)
    path = tmp_path / "quad.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nf 1 2 3\n")
    assert inputs.mesh_to_paint("3d/quad.obj", None, None, lambda name: path, config).num_faces == 1
    fmt = inputs.LatentFormat(0.13025, 0.0609)
    z = torch.randn(1, 4, 2, 2)
    assert torch.allclose(fmt.to_model(fmt.to_vae(z)), z, atol=1e-6)


def test_texture_encoder_calls_the_vae_with_an_image(pack):
    import torch

    host = importlib.import_module(f"{ALIAS}.nodes.host")
    seen = {}

    class Vae:
        def encode(self, image):
            seen["shape"] = tuple(image.shape)
            return torch.ones(1, 4, image.shape[1] // 8, image.shape[2] // 8)

    assert host.texture_encoder(None, lambda z: z) is None
    latent = host.texture_encoder(Vae(), lambda z: 0.5 * z)(torch.rand(1, 3, 16, 24))
    assert seen["shape"] == (1, 16, 24, 3) and latent.shape == (1, 4, 2, 3) and float(latent.max()) == 0.5 and not latent.is_inference()


def test_refine_widgets_map_onto_refine_config(specs, spec_lib, pack):
    train = importlib.import_module(f"{ALIAS}.latent3d.refine.train")
    spec = specs.LATENT_TO_RGB_REFINE
    assert spec.node_id == "Latent3DLatentToRGBRefine" and spec.config is train.RefineConfig
    assert [s.type for s in spec.inputs[:4]] == ["LATENT3D_NERF", "MODEL", "CLIP", "VAE"] and not spec.widget("prompt").optional
    assert [o.type for o in spec.outputs] == ["LATENT3D_NERF", "IMAGE"]  # Export Mesh takes the refined field
    assert {f"{v}_conditioning" for v in ("front", "side", "back", "overhead")} <= {i.name for i in spec.inputs}
    assert spec_lib.widget_default(spec, spec.widget("shading_start")) == -1  # None: never shade
    assert spec_lib.build_config(spec, {"shading_start": -1}).shading_start is None
    config = spec_lib.build_config(spec, {"shading_start": 0, "freeze_geometry": True, "encode_resolution": 256, "guidance_scale": 50.0, "color_init": "paper"})
    assert (config.shading_start, config.freeze_geometry, config.encode_resolution, config.sds.guidance_scale) == (0, True, 256, 50.0)
    with pytest.raises(ValueError, match="encode_resolution"):
        spec_lib.build_config(spec, {"encode_resolution": 100})


class _FakeFormat:
    latent_channels = 4
    latent_rgb_factors = [[0.35, 0.23, 0.32], [0.33, 0.5, 0.24], [-0.28, 0.18, 0.27], [-0.21, -0.26, -0.72]]


class _FakeModel:
    """The parts of a ComfyUI MODEL the refine glue reads."""

    class model:  # noqa: N801 - mirrors model.model
        latent_format = _FakeFormat()


class _Encodes(torch.nn.Module):
    def encode(self, x):
        return x


def test_refine_host_glue_without_comfyui(pack):
    glue = importlib.import_module(f"{ALIAS}.nodes.refine_host")
    types = importlib.import_module(f"{ALIAS}.nodes.types")
    assert glue.color_init(_FakeModel, "paper") is None
    assert glue.color_init(_FakeModel, "host preview") == _FakeFormat.latent_rgb_factors
    with pytest.raises(ValueError, match="color_init"):
        glue.color_init(_FakeModel, "other")
    with pytest.raises(ValueError, match="Latent-NeRF Train"):
        glue.source_nerf("not a nerf", "Refine")
    refined = types.TrainedNerf(model=type("Rgb", (), {"color_space": "rgb"})(), config=None, checkpoint=None)
    assert refined.is_rgb
    with pytest.raises(ValueError, match="already refined"):
        glue.source_nerf(refined, "Refine")
    with pytest.raises(ValueError, match="connect a VAE"):
        glue.check_vae(None, 4, "Refine")
    with pytest.raises(ValueError, match="16-channel latents"):
        glue.check_vae(type("Vae", (), {"first_stage_model": _Encodes(), "latent_channels": 16})(), 4, "Refine")
    with pytest.raises(ValueError, match="must be a ComfyUI VAE"):
        glue.check_vae(type("Vae", (), {"first_stage_model": torch.nn.Conv2d(3, 3, 1)})(), 4, "Refine")


def test_vae_copy_for_gradients_leaves_out_the_decoder(pack):
    """Weights made under inference mode (as ComfyUI loads them) refuse backward; the copy does not."""
    from latent3d.tiny import tiny_vae_config

    from diffusers import AutoencoderKL

    glue = importlib.import_module(f"{ALIAS}.nodes.refine_host")
    with torch.inference_mode():
        vae = AutoencoderKL(**tiny_vae_config())
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    with pytest.raises(RuntimeError):
        vae.encoder(x).sum().backward()
    clone = glue._copy_without_decoder(vae)
    assert clone.decoder is None and clone.post_quant_conv is None and vae.decoder is not None
    clone.encoder(x).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert not any(p.requires_grad for p in clone.parameters())
