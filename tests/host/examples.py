"""The shipped example workflows, shrunk so that they run in a minute on a CPU (shared by the server and
browser tests).

Tiny means: the random test checkpoint instead of the user's, 8² latent renders (64² RGB encodes for the
refinement), a few iterations, a 64² latent texture decoded to 64², a 32³ sketch grid and a 64³ export
with a 256² texture. Everything else stays as the example has it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from comfy_host import CHECKPOINT_NAME, REPO_ROOT
from workflow_api import set_widgets

EXAMPLES = REPO_ROOT / "example_workflows"
TEXT_TO_3D = "Text to 3D with Latent NeRF"
SKETCH = "Sketch guided 3D, a lego man"
PAINT_SKETCH = "Paint a mesh with Latent Paint"
SHAPE_THEN_TEXTURE = "Shape first, then a crisp texture"
REFINED = "Text to 3D refined in RGB"
NAMES = (TEXT_TO_3D, SKETCH, PAINT_SKETCH, SHAPE_THEN_TEXTURE, REFINED)
TRAIN, PAINT, REFINE = "Latent3DLatentNeRFTrain", "Latent3DLatentPaint", "Latent3DLatentToRGBRefine"
TRAINING = (TRAIN, PAINT, REFINE)
TINY = {
    TRAIN: {"iterations": 3, "resolution": 8, "preview_every": 1, "preview_resolution": 8, "turntable_frames": 2},
    PAINT: {"iterations": 3, "resolution": 8, "texture_size": 64, "preview_every": 1, "preview_resolution": 8, "texture_resolution": 64,
            "turntable_frames": 2},
    REFINE: {"iterations": 3, "render_resolution": 16, "encode_resolution": 64, "preview_every": 1, "preview_resolution": 16,
             "turntable_frames": 2, "turntable_resolution": 32},
    "Latent3DExportMesh": {"resolution": 64, "texture_size": 256},
    "Latent3DSketchShapeLoss": {"grid_resolution": 32},
    "CheckpointLoaderSimple": {"ckpt_name": CHECKPOINT_NAME},
}  # fmt: skip


def example_path(name: str) -> Path:
    return EXAMPLES / f"{name}.json"


def load_example(name: str) -> dict[str, Any]:
    return json.loads(example_path(name).read_text())


def node_types(workflow: dict[str, Any]) -> set[str]:
    return {node["type"] for node in workflow["nodes"]}


def tiny_workflow(name: str, object_info: dict[str, Any], seed: int | None = None, **by_type: dict[str, Any]) -> dict[str, Any]:
    """The example as a UI workflow with the tiny settings; ``seed`` goes to every training node, and
    ``by_type`` ({node type: {widget: value}}) overrides widgets of the nodes of that type."""
    workflow = copy.deepcopy(load_example(name))
    present = node_types(workflow)
    for node_type, values in TINY.items():
        if node_type in present:
            extra = {"seed": seed} if seed is not None and node_type in TRAINING else {}
            set_widgets(workflow, object_info, node_type, **{**values, **extra, **by_type.get(node_type, {})})
    for node in workflow["nodes"]:  # the user's checkpoint download hint: not wanted with the test checkpoint
        node.get("properties", {}).pop("models", None)
    return workflow
