"""The example workflows on a real ComfyUI server: schema as the frontend sees it, UI→API conversion, runs
to a textured GLB, interrupt within a step, and resume from the checkpoint.

Graphs are the shipped examples with tiny settings (examples.py): 8² latents, 2–3 iterations.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from comfy_host import REPO_ROOT, import_pack
from examples import NAMES, TRAIN, load_example, tiny_workflow
from workflow_api import node_widgets, set_inputs, widget_names, workflow_to_api

pytestmark = pytest.mark.host


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


def _make_workflows_module():
    path = REPO_ROOT / "tools" / "make_workflows.py"
    spec = importlib.util.spec_from_file_location("make_workflows", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_example_files_match_the_served_schema(comfy_server, capsys) -> None:
    """tools/make_workflows.py --check: the committed files are what the current schema gives."""
    assert _make_workflows_module().main(["--server", comfy_server.base_url, "--check"]) == 0, capsys.readouterr().err
    for name in NAMES:
        assert (REPO_ROOT / "example_workflows" / f"{name}.jpg").is_file(), f"{name}.jpg thumbnail missing"
        assert (REPO_ROOT / "example_workflows" / f"{name}.jpg").stat().st_size <= 100_000


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
    train = next(n for n in prompt.values() if n["class_type"] == TRAIN)
    assert train["inputs"]["seed"] == 0 and "fixed" not in train["inputs"].values()  # the control value is skipped
    assert train["inputs"]["prompt"] == ("a hamburger" if "text" in name else "a lego man")
    assert train["inputs"]["model"][1] == 0 and train["inputs"]["clip"][1] == 1 and train["inputs"]["vae"][1] == 2
    ckpt = next(n for n in prompt.values() if n["class_type"] == "CheckpointLoaderSimple")
    assert ckpt["inputs"] == {"ckpt_name": "v1-5-pruned-emaonly-fp16.safetensors"}
    previews = [n for n in prompt.values() if n["class_type"] == "Preview3D"]
    assert all(isinstance(p["inputs"]["model_file"], list) for p in previews) and len(previews) == (2 if "sketch" in name else 1)
    if "sketch" in name:
        primitives = [n for n in prompt.values() if n["class_type"] == "Latent3DSketchPrimitive"]
        assert len(primitives) == 6 and sum("add_to" in p["inputs"] for p in primitives) == 5
        assert {p["inputs"]["shape"] for p in primitives} == {"sphere", "capsule"}
        assert "shape_guide" in train["inputs"]


def test_conversion_rejects_misaligned_widget_values(object_info) -> None:
    workflow = load_example("latent3d_text_to_3d")
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


def _glb_has_texture(path: Path) -> None:
    import pygltflib
    import trimesh

    mesh = trimesh.load(path, force="mesh")
    assert len(mesh.faces) > 0 and len(mesh.vertices) > 0
    gltf = pygltflib.GLTF2().load(str(path))
    assert gltf.images and gltf.textures, f"{path.name} has no embedded texture"
    material = gltf.materials[gltf.meshes[0].primitives[0].material]
    assert material.pbrMetallicRoughness.baseColorTexture is not None, f"{path.name}: the texture is not the base colour"
    assert gltf.meshes[0].primitives[0].attributes.TEXCOORD_0 is not None


@pytest.mark.parametrize("name", NAMES)
def test_example_runs_to_a_textured_glb(comfy_server, object_info, name) -> None:
    prompt = workflow_to_api(tiny_workflow(name, object_info, seed=1), object_info)
    started = time.monotonic()
    entry = comfy_server.wait(comfy_server.queue(prompt), timeout=600)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + comfy_server.log_tail()
    previews = {key: entry["outputs"][key]["result"][0] for key, node in prompt.items() if node["class_type"] == "Preview3D"}
    output = comfy_server.base_dir / "output"
    for key, relative in previews.items():
        assert not Path(relative).is_absolute() and (output / relative).is_file(), f"Preview3D {key}: {relative!r} not under output/"
    mesh_file = next(rel for rel in previews.values() if not rel.startswith("latent3d/sketches/"))
    _glb_has_texture(output / mesh_file)
    if "sketch" in name:
        assert any(rel.startswith("latent3d/sketches/") and rel.endswith(".glb") for rel in previews.values())
    turntable = next(entry["outputs"][k]["images"] for k, n in prompt.items() if n["class_type"] == "PreviewImage")
    assert len(turntable) == 2
    print(f"{name}: {time.monotonic() - started:.1f} s")


# -------------------------------------------------------------------------------------- interrupt, resume


class Events:
    """The server's websocket messages for one client id (JSON ones; binary preview frames are dropped)."""

    def __init__(self, comfy_server) -> None:
        websocket = pytest.importorskip("websocket", reason="the interrupt test reads the websocket: pip install websocket-client")
        url = comfy_server.base_url.replace("http://", "ws://") + f"/ws?clientId={comfy_server.client_id}"
        self.socket = websocket.create_connection(url, timeout=5)
        self.timeout_error = websocket.WebSocketTimeoutException

    def messages(self, timeout: float) -> Iterator[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                raw = self.socket.recv()
            except self.timeout_error:
                continue
            if isinstance(raw, str):
                yield json.loads(raw)
        raise TimeoutError(f"no matching websocket message within {timeout} s")

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def events(comfy_server) -> Iterator[Events]:
    client = Events(comfy_server)
    yield client
    client.close()


def _checkpoint(output: Path, seed: int) -> tuple[Path, dict[str, Any]]:
    """The text-to-3D run of ``seed`` (its JSON twin says which run a folder holds)."""
    for record_path in sorted((output / "latent3d" / "runs").glob("*/nerf.json")):
        record = json.loads(record_path.read_text())
        if record["config"]["seed"] == seed and record["shape_guide"] is None:
            return record_path.with_suffix(".safetensors"), record
    raise AssertionError(f"no checkpoint of seed {seed} under {output / 'latent3d' / 'runs'}")


def test_interrupt_keeps_a_checkpoint_and_a_rerun_resumes(comfy_server, object_info, events) -> None:
    seed = 7
    prompt = workflow_to_api(tiny_workflow("latent3d_text_to_3d", object_info, iterations=200, preview_every=0, seed=seed), object_info)
    train_id = next(key for key, node in prompt.items() if node["class_type"] == TRAIN)
    prompt_id = comfy_server.queue(prompt)
    step_seconds = None
    for message in events.messages(timeout=300):
        data = message.get("data", {})
        if message["type"] == "latent3d.progress" and data.get("node") == train_id and data["step"] >= 1:
            step_seconds = data["seconds_per_step"]
            break
    comfy_server.interrupt()
    asked = time.monotonic()
    for message in events.messages(timeout=120):
        if message["type"] in ("execution_interrupted", "execution_success", "execution_error"):
            assert message["type"] == "execution_interrupted", message
            break
    latency = time.monotonic() - asked
    assert latency <= 1.5 * step_seconds + 2.0, f"interrupt took {latency:.1f} s, one step takes {step_seconds:.1f} s"
    entry = comfy_server.wait(prompt_id, timeout=30)
    assert entry["status"]["status_str"] == "error"
    assert any(kind == "execution_interrupted" for kind, _ in entry["status"]["messages"])

    checkpoint, record = _checkpoint(comfy_server.base_dir / "output", seed)
    assert checkpoint.is_file() and 1 <= record["step"] < 200, record["step"]
    stopped_at = record["step"]

    # the same graph again (only iterations changed, which a checkpoint allows): it continues, 2 steps more
    set_inputs(prompt, TRAIN, iterations=stopped_at + 2)
    started = time.monotonic()
    prompt_id = comfy_server.queue(prompt)
    progress = []
    for message in events.messages(timeout=300):
        if message["type"] == "latent3d.progress" and message["data"].get("node") == train_id:
            progress.append(message["data"])
        if message["type"] in ("execution_success", "execution_error", "execution_interrupted") and message["data"]["prompt_id"] == prompt_id:
            assert message["type"] == "execution_success", comfy_server.log_tail()
            break
    assert progress[0]["state"] == "resumed" and progress[0]["resumed_from"] == stopped_at and progress[0]["step"] == stopped_at
    assert all(stopped_at < p["step"] < stopped_at + 2 for p in progress if p["state"] == "running")  # no step from 0
    assert progress[-1]["state"] == "completed" and progress[-1]["step"] == stopped_at + 2
    assert _checkpoint(comfy_server.base_dir / "output", seed)[1]["step"] == stopped_at + 2
    print(f"interrupt after {latency:.1f} s (step {step_seconds:.1f} s) at step {stopped_at}; resumed run {time.monotonic() - started:.1f} s")
