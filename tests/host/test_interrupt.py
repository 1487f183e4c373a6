"""Interrupt and resume of the three training nodes on a real server: the ETA and the CPU warning reach the
node, an interrupt stops within a step and keeps the checkpoint, and the same graph queued again resumes
from it; the completed run's checkpoint drops its optimizer state (keep_optimizer off).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from events import Events
from examples import PAINT, PAINT_SKETCH, REFINE, REFINED, TEXT_TO_3D, TRAIN, tiny_workflow
from test_workflows import SEEDS
from workflow_api import set_inputs, workflow_to_api

pytestmark = pytest.mark.host
CASES = {TRAIN: (TEXT_TO_3D, "nerf.json"), PAINT: (PAINT_SKETCH, "paint.json"), REFINE: (REFINED, "refined.json")}
SEED = 7
ON_CPU = "--cpu" in os.environ.get("COMFYUI_SERVER_ARGS", "--cpu")


@pytest.fixture(scope="module")
def object_info(comfy_server) -> dict[str, Any]:
    return comfy_server.object_info()


@pytest.fixture
def events(comfy_server) -> Iterator[Events]:
    client = Events(comfy_server)
    yield client
    client.close()


def _record(output: Path, filename: str) -> tuple[Path, dict[str, Any]]:
    """The run of seed SEED among the run folders' JSON twins (the record says which run a folder holds)."""
    for path in sorted((output / "latent3d" / "runs").glob(f"*/{filename}")):
        record = json.loads(path.read_text())
        if record["config"]["seed"] == SEED and record.get("shape_guide") is None:
            return path, record
    raise AssertionError(f"no {filename} of seed {SEED} under {output / 'latent3d' / 'runs'}")


def _until_measured(events: Events, node: str) -> tuple[float, list[str], list[str]]:
    """Wait for the node's first measured rate; returns (seconds per step, warnings, progress texts)."""
    warnings, texts = [], []
    for message in events.messages(timeout=600):
        data = message.get("data", {})
        if message["type"] == "progress_text" and data["node"] == node:
            texts.append(data["text"])
        if message["type"] == "latent3d.progress" and data.get("node") == node:
            warnings = data.get("warnings", warnings)
            if data.get("seconds_per_step"):
                return data["seconds_per_step"], warnings, texts
        if message["type"] == "execution_error":
            raise AssertionError(json.dumps(data)[:3000])


@pytest.mark.parametrize("node_type", [TRAIN, PAINT, REFINE])
def test_interrupt_keeps_a_checkpoint_and_a_rerun_resumes(comfy_server, object_info, events, node_type) -> None:
    name, filename = CASES[node_type]
    # the refinement's upstream Latent-NeRF is the example run's (seed and settings): ComfyUI's cache has it
    workflow = tiny_workflow(name, object_info, seed=SEEDS[name] if node_type == REFINE else SEED,
                             **{node_type: {"iterations": 200, "preview_every": 0, "seed": SEED}})  # fmt: skip
    prompt = workflow_to_api(workflow, object_info)
    node = next(key for key, n in prompt.items() if n["class_type"] == node_type)
    prompt_id = comfy_server.queue(prompt)
    step_seconds, warnings, texts = _until_measured(events, node)
    comfy_server.interrupt()
    asked = time.monotonic()
    states = []
    for message in events.messages(timeout=120):
        if message["type"] == "latent3d.progress" and message["data"].get("node") == node:
            states.append(message["data"].get("state"))
        if message["type"] in ("execution_interrupted", "execution_success", "execution_error"):
            assert message["type"] == "execution_interrupted", message
            break
    latency = time.monotonic() - asked
    assert latency <= 1.5 * step_seconds + 2.0, f"interrupt took {latency:.1f} s, one step takes {step_seconds:.1f} s"
    assert "interrupted" in states
    entry = comfy_server.wait(prompt_id, timeout=30)
    assert entry["status"]["status_str"] == "error" and any(kind == "execution_interrupted" for kind, _ in entry["status"]["messages"])
    if ON_CPU:  # the ETA and the "impractical on this device" warning reached the node
        assert any("s/step on cpu" in w and "steps take ≈" in w for w in warnings), warnings
        assert any("s/step" in t and "left" in t for t in texts), texts

    output = comfy_server.base_dir / "output"
    record_path, record = _record(output, filename)
    assert 3 <= record["step"] < 200 and record["optimizer_state"] is True, record["step"]  # an interrupted run keeps Adam's moments
    stopped_at = record["step"]

    # the same graph again (only iterations changed, which a checkpoint allows): it continues, 2 steps more
    set_inputs(prompt, node_type, iterations=stopped_at + 2)
    started = time.monotonic()
    prompt_id = comfy_server.queue(prompt)
    progress = []
    for message in events.messages(timeout=600):
        if message["type"] == "latent3d.progress" and message["data"].get("node") == node:
            progress.append(message["data"])
        if message["type"] in ("execution_success", "execution_error", "execution_interrupted") and message["data"]["prompt_id"] == prompt_id:
            assert message["type"] == "execution_success", comfy_server.log_tail()
            break
    assert progress[0]["state"] == "resumed" and progress[0]["resumed_from"] == stopped_at and progress[0]["step"] == stopped_at
    assert all(stopped_at < p["step"] < stopped_at + 2 for p in progress if p.get("state") == "running")  # no step from 0
    assert progress[-1]["state"] == "completed" and progress[-1]["step"] == stopped_at + 2
    record = json.loads(record_path.read_text())
    assert record["step"] == stopped_at + 2 and record["optimizer_state"] is False  # completed: keep_optimizer off
    leftovers = sorted(p.name for p in record_path.parent.iterdir())
    assert leftovers == sorted([".latent3d.lock", filename, filename.replace(".json", ".safetensors")]), leftovers
    print(f"{node_type}: interrupt after {latency:.1f} s (step {step_seconds:.2f} s) at step {stopped_at}; resumed run {time.monotonic() - started:.1f} s")
