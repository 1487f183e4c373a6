"""The example workflows on a real ComfyUI server: schema as the frontend sees it, UI→API conversion, runs
to textured GLBs, a cached rerun's replayed summary, and errors reported once before anything runs.

Graphs are the shipped examples with tiny settings (examples.py): 8² latents, 3 iterations.
Interrupt and resume of the three training nodes: test_interrupt.py.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from comfy_host import REPO_ROOT, import_pack
from events import run_and_collect
from examples import NAMES, PAINT, PAINT_SKETCH, REFINE, REFINED, SHAPE_THEN_TEXTURE, SKETCH, TEXT_TO_3D, TRAIN, TRAINING, load_example, tiny_workflow
from workflow_api import node_widgets, widget_names, workflow_to_api

pytestmark = pytest.mark.host
PROMPTS = {TEXT_TO_3D: "a hamburger", SKETCH: "a lego man", PAINT_SKETCH: "a teddy bear", SHAPE_THEN_TEXTURE: "a hamburger", REFINED: "a hamburger"}
SEEDS = {name: 1 + i for i, name in enumerate(NAMES)}


@pytest.fixture(scope="module")
def object_info(comfy_server) -> dict[str, Any]:
    return comfy_server.object_info()


def test_every_latent3d_node_is_in_object_info_with_tooltips(object_info) -> None:
    import_pack()  # the specs are plain data: no ComfyUI needed in this process
    from comfyui_latent3d.nodes.specs import ALL_SPECS

    served = {name for name in object_info if name.startswith("Latent3D")}
    assert served == {spec.node_id for spec in ALL_SPECS}
    for spec in ALL_SPECS:
        info = object_info[spec.node_id]
        assert info["category"] == spec.category and info["category"].startswith("Latent3D/")
        assert info["display_name"] == spec.display_name and info["description"]
        for section in ("required", "optional"):
            for name, entry in info["input"].get(section, {}).items():
                assert (entry[1] if len(entry) > 1 else {}).get("tooltip"), f"{spec.node_id}.{name} has no tooltip"
        assert len(info["output_tooltips"]) == len(info["output"]) and all(info["output_tooltips"]), spec.node_id
    for node in TRAINING:  # output nodes: ComfyUI replays a cached run's summary to the panel
        assert object_info[node]["output_node"], node
        assert object_info[node]["input"]["required"]["keep_optimizer"][1]["default"] is False
    for node, widget in ((TRAIN, "resolution"), (PAINT, "resolution"), (TRAIN, "preview_resolution")):
        options = object_info[node]["input"]["required"][widget][1]
        assert options["max"] == 128 and "128" in options["tooltip"], (node, widget, options)
    assert "300 s" in object_info[TRAIN]["input"]["required"]["resolution"][1]["tooltip"]  # says why


def _make_workflows_module():
    path = REPO_ROOT / "tools" / "make_workflows.py"
    spec = importlib.util.spec_from_file_location("make_workflows", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_example_files_match_the_served_schema(comfy_server, capsys) -> None:
    """tools/make_workflows.py --check: the committed files are what the current schema gives, none stray."""
    assert _make_workflows_module().main(["--server", comfy_server.base_url, "--check"]) == 0, capsys.readouterr().err
    for name in NAMES:
        thumbnail = REPO_ROOT / "example_workflows" / f"{name}.jpg"
        assert thumbnail.is_file(), f"{name}.jpg thumbnail missing"
        assert thumbnail.stat().st_size <= 100_000
    served = comfy_server.request("GET", "/workflow_templates")
    assert sorted(served["ComfyUI-Latent3D"]) == sorted(NAMES)  # the template browser's titles


@pytest.mark.parametrize("name", NAMES)
def test_ui_to_api_conversion(object_info, name) -> None:
    workflow = load_example(name)
    prompt = workflow_to_api(workflow, object_info)
    ui_nodes = {str(node["id"]): node for node in workflow["nodes"]}
    assert all(node["type"] not in object_info for key, node in ui_nodes.items() if key not in prompt)  # only the Note left out
    assert "Note" in {node["type"] for node in workflow["nodes"]} and all(n["class_type"] != "Note" for n in prompt.values())
    for key, node in prompt.items():
        info = object_info[node["class_type"]]
        names = [n for n in widget_names(info) if n is not None]
        assert set(names) <= set(node["inputs"]), f"{key}: missing widget inputs"
        accepted = set(info["input"].get("required", {})) | set(info["input"].get("optional", {}))
        assert set(node["inputs"]) <= accepted, f"{key}: inputs the schema does not know"
        for value in node["inputs"].values():
            if isinstance(value, list):  # a link: [node id, output slot] of a node that is in the prompt
                source = prompt[value[0]]
                assert 0 <= value[1] < len(object_info[source["class_type"]]["output"])
    trainers = [n for n in prompt.values() if n["class_type"] in TRAINING]
    assert trainers and all(t["inputs"]["seed"] == 0 and "fixed" not in t["inputs"].values() for t in trainers)  # the control value is skipped
    assert all(t["inputs"]["prompt"] == PROMPTS[name] for t in trainers)
    for trainer in trainers:
        assert trainer["inputs"]["model"][1] == 0 and trainer["inputs"]["clip"][1] == 1
    ckpt = next(n for n in prompt.values() if n["class_type"] == "CheckpointLoaderSimple")
    assert ckpt["inputs"] == {"ckpt_name": "v1-5-pruned-emaonly-fp16.safetensors"}
    previews = [n for n in prompt.values() if n["class_type"] == "Preview3D"]
    assert previews and all(isinstance(p["inputs"]["model_file"], list) for p in previews)
    kinds = {name: [prompt[p["inputs"]["model_file"][0]]["class_type"] for p in previews]}[name]
    expected = {TEXT_TO_3D: ["Latent3DExportMesh"], SKETCH: ["Latent3DSketchPrimitive", "Latent3DExportMesh"],
                PAINT_SKETCH: ["Latent3DSketchPrimitive", PAINT], SHAPE_THEN_TEXTURE: ["Latent3DExportMesh", PAINT],
                REFINED: ["Latent3DExportMesh"]}[name]  # fmt: skip
    assert sorted(kinds) == sorted(expected)
    if name == SKETCH:
        primitives = [n for n in prompt.values() if n["class_type"] == "Latent3DSketchPrimitive"]
        assert len(primitives) == 6 and sum("add_to" in p["inputs"] for p in primitives) == 5
        assert {p["inputs"]["shape"] for p in primitives} == {"sphere", "capsule"} and "shape_guide" in trainers[0]["inputs"]
    if name == SHAPE_THEN_TEXTURE:  # Export Mesh's core MESH feeds Latent-Paint
        paint = next(n for n in trainers if n["class_type"] == PAINT)
        assert prompt[paint["inputs"]["mesh"][0]]["class_type"] == "Latent3DExportMesh"
    if name == REFINED:
        refine = next(n for n in trainers if n["class_type"] == REFINE)
        export = next(n for n in prompt.values() if n["class_type"] == "Latent3DExportMesh")
        assert prompt[refine["inputs"]["nerf"][0]]["class_type"] == TRAIN and prompt[export["inputs"]["nerf"][0]]["class_type"] == REFINE
        assert "vae" not in export["inputs"]  # RGB colours are written as they are


def test_conversion_rejects_misaligned_widget_values(object_info) -> None:
    workflow = load_example(TEXT_TO_3D)
    node = next(n for n in workflow["nodes"] if n["type"] == TRAIN)
    assert node_widgets(node, object_info[TRAIN])["seed"] == 0
    seed_at = widget_names(object_info[TRAIN]).index("seed")
    node["widgets_values"].insert(seed_at, 5000)  # a value too many before the seed: everything after it shifts
    with pytest.raises(ValueError, match="control_after_generate"):
        workflow_to_api(workflow, object_info)


def test_conversion_follows_reroutes_and_bypass(object_info) -> None:
    """Frontend-only nodes in a hand-made graph: a Reroute is followed, a muted node dropped."""
    workflow = {
        "nodes": [
            {"id": 1, "type": "CheckpointLoaderSimple", "mode": 0, "inputs": [], "widgets_values": ["x.safetensors"]},
            {"id": 2, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 1}], "widgets_values": []},
            {"id": 3, "type": "CLIPTextEncode", "mode": 0, "inputs": [{"name": "clip", "type": "CLIP", "link": 2}], "widgets_values": ["a chair"]},
            {"id": 4, "type": "PreviewImage", "mode": 2, "inputs": [{"name": "images", "type": "IMAGE", "link": None}]},
        ],
        "links": [[1, 1, 1, 2, 0, "CLIP"], [2, 2, 0, 3, 0, "CLIP"]],
    }  # fmt: skip
    prompt = workflow_to_api(workflow, object_info)
    assert prompt == {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x.safetensors"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a chair", "clip": ["1", 1]}},
    }


# ------------------------------------------------------------------------------------ running the examples


def glb_texture(path: Path):
    """The GLB reloads (trimesh) with a baseColorTexture on TEXCOORD_0 (pygltflib); returns the texture as an array."""
    import numpy as np
    import pygltflib
    import trimesh

    mesh = trimesh.load(path, force="mesh")
    assert len(mesh.faces) > 0 and len(mesh.vertices) > 0
    assert getattr(mesh.visual, "uv", None) is not None and len(mesh.visual.uv) == len(mesh.vertices), f"{path.name} reloads without UVs"
    image = mesh.visual.material.baseColorTexture
    assert image is not None, f"{path.name} reloads without its texture"
    gltf = pygltflib.GLTF2().load(str(path))
    assert gltf.images and gltf.textures, f"{path.name} has no embedded texture"
    material = gltf.materials[gltf.meshes[0].primitives[0].material]
    assert material.pbrMetallicRoughness.baseColorTexture is not None, f"{path.name}: the texture is not the base colour"
    assert gltf.meshes[0].primitives[0].attributes.TEXCOORD_0 is not None
    return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("name", NAMES)
def test_example_runs_to_a_textured_glb(comfy_server, object_info, name) -> None:
    prompt = workflow_to_api(tiny_workflow(name, object_info, seed=SEEDS[name]), object_info)
    started = time.monotonic()
    entry = comfy_server.wait(comfy_server.queue(prompt), timeout=900)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + comfy_server.log_tail()
    previews = {key: entry["outputs"][key]["result"][0] for key, node in prompt.items() if node["class_type"] == "Preview3D"}
    output = comfy_server.base_dir / "output"
    for key, relative in previews.items():
        assert not Path(relative).is_absolute() and (output / relative).is_file(), f"Preview3D {key}: {relative!r} not under output/"
        source = prompt[prompt[key]["inputs"]["model_file"][0]]["class_type"]
        if source == "Latent3DSketchPrimitive":
            assert relative.startswith("latent3d/sketches/") and relative.endswith(".glb")
        else:
            texture = glb_texture(output / relative)
            assert texture.shape[0] == (64 if source == PAINT else 256)  # texture_resolution / Export Mesh's texture_size
    for key, node in prompt.items():  # turntables: one image per frame; Latent-Paint's texture (output 1): one
        source, slot = node["inputs"].get("images", [None, None])
        if node["class_type"] == "PreviewImage" and prompt[source]["class_type"] in TRAINING:
            expected = 1 if (prompt[source]["class_type"], slot) == (PAINT, 1) else 2
            assert len(entry["outputs"][key]["images"]) == expected, (key, entry["outputs"][key])
    trainers = {key: node for key, node in prompt.items() if node["class_type"] in TRAINING}
    for key in trainers:  # every training node returns its run's summary as UI output (history keeps it)
        summary = entry["outputs"][key]["latent3d"][0]
        assert summary["state"] == "completed" and summary["step"] == summary["total"] == 3 and len(summary["losses"]) == 3
        assert len(summary["frames"]) == 2 and summary["frames"][0]["src"].startswith("data:image/jpeg")
    if name == REFINED:
        records = [json.loads(p.read_text()) for p in (output / "latent3d" / "runs").glob("*/refined.json")]
        assert any(r["kind"] == "rgb_nerf" and r["config"]["seed"] == SEEDS[name] and r["step"] == 3 for r in records)
    print(f"{name}: {time.monotonic() - started:.1f} s")


def test_a_cached_rerun_replays_the_summary_to_the_panel(comfy_server, object_info) -> None:
    """Queue an example that already ran: nothing executes, and ComfyUI sends every training node's summary
    again ("executed" from its cache), which the panel shows."""
    prompt = workflow_to_api(tiny_workflow(SHAPE_THEN_TEXTURE, object_info, seed=SEEDS[SHAPE_THEN_TEXTURE]), object_info)
    trainers = {key for key, node in prompt.items() if node["class_type"] in TRAINING}
    comfy_server.wait(comfy_server.queue(prompt), timeout=900)  # ran already if the example test did; else now
    messages = run_and_collect(comfy_server, prompt, timeout=120)
    cached = next(m["data"]["nodes"] for m in messages if m["type"] == "execution_cached")
    assert trainers <= set(cached)
    replayed = {m["data"]["node"]: m["data"]["output"] for m in messages if m["type"] == "executed" and m["data"]["node"] in trainers}
    assert set(replayed) == trainers
    for output in replayed.values():
        summary = output["latent3d"][0]
        assert summary["state"] == "completed" and len(summary["losses"]) == 3 and len(summary["frames"]) == 2
    assert not any(m["type"] == "latent3d.progress" and m["data"].get("state") == "running" for m in messages)  # nothing trained


def test_bad_inputs_are_refused_once_before_anything_runs(comfy_server, object_info) -> None:
    """A bad Export Mesh filename_prefix is reported when the prompt is queued (once), and the training
    upstream of it refuses to start (ComfyUI still runs the outputs that validate, the training among them);
    Load Sketch Mesh reports a missing file once (not once per widget)."""
    prompt = workflow_to_api(tiny_workflow(TEXT_TO_3D, object_info, seed=99), object_info)
    export = next(key for key, node in prompt.items() if node["class_type"] == "Latent3DExportMesh")
    train = next(key for key, node in prompt.items() if node["class_type"] == TRAIN)
    prompt[export]["inputs"]["filename_prefix"] = "../outside"
    answer = comfy_server.request("POST", "/prompt", {"prompt": prompt, "client_id": comfy_server.client_id})
    errors = answer["node_errors"]
    assert list(errors) == [export] and len(errors[export]["errors"]) == 1, errors
    assert "filename_prefix" in errors[export]["errors"][0]["details"] and ".." in errors[export]["errors"][0]["details"]
    entry = comfy_server.wait(answer["prompt_id"], timeout=120)
    failed = [m for kind, m in entry["status"]["messages"] if kind == "execution_error"]
    assert failed and failed[0]["node_id"] == train and "not started" in failed[0]["exception_message"], entry["status"]
    assert "Export Mesh (Latent3D) (node" in failed[0]["exception_message"]
    runs = comfy_server.base_dir / "output" / "latent3d" / "runs"
    assert not any(json.loads(p.read_text())["config"]["seed"] == 99 for p in runs.glob("*/nerf.json"))  # no step was trained

    sketch = {"1": {"class_type": "Latent3DLoadSketchMesh", "inputs": {"mesh_file": "3d/missing.obj", "mesh_scale": 0.6,
                                                                       **{f"{k}_{a}": 0.0 for k in ("rotate", "offset") for a in "xyz"}}},
              "2": {"class_type": "Preview3D", "inputs": {"model_file": ["1", 1]}}}  # fmt: skip
    with pytest.raises(RuntimeError, match="HTTP 400") as refused:  # no output validates: nothing is queued
        comfy_server.queue(sketch)
    errors = json.loads(str(refused.value).split(": ", 1)[1])["node_errors"]
    assert len(errors["1"]["errors"]) == 1 and "missing.obj" in errors["1"]["errors"][0]["details"], errors
