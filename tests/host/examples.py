"""The shipped example workflows, shrunk so that they run in a minute on a CPU (shared by the server and
browser tests).

Tiny means: the random test checkpoint instead of the user's, 8² latent renders, a few iterations, a
32³ sketch grid and a 64³ export with a 256² texture. Everything else stays as the example has it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from comfy_host import CHECKPOINT_NAME, REPO_ROOT
from workflow_api import set_widgets

EXAMPLES = REPO_ROOT / "example_workflows"
NAMES = ("latent3d_text_to_3d", "latent3d_sketch_lego_man")
TRAIN = "Latent3DLatentNeRFTrain"
TINY_TRAIN = {"iterations": 3, "resolution": 8, "preview_every": 1, "preview_resolution": 8, "turntable_frames": 2}
TINY = {
    "Latent3DExportMesh": {"resolution": 64, "texture_size": 256},
    "Latent3DSketchShapeLoss": {"grid_resolution": 32},
    "CheckpointLoaderSimple": {"ckpt_name": CHECKPOINT_NAME},
}


def example_path(name: str) -> Path:
    return EXAMPLES / f"{name}.json"


def load_example(name: str) -> dict[str, Any]:
    return json.loads(example_path(name).read_text())


def tiny_workflow(name: str, object_info: dict[str, Any], **train: Any) -> dict[str, Any]:
    """The example as a UI workflow with the tiny settings; ``train`` overrides the training widgets."""
    workflow = copy.deepcopy(load_example(name))
    types = {node["type"] for node in workflow["nodes"]}
    for node_type, values in TINY.items():
        if node_type in types:
            set_widgets(workflow, object_info, node_type, **values)
    set_widgets(workflow, object_info, TRAIN, **{**TINY_TRAIN, **train})
    for node in workflow["nodes"]:  # the user's checkpoint download hint: not wanted with the test checkpoint
        node.get("properties", {}).pop("models", None)
    return workflow
