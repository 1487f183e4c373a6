"""Write the example workflows (``example_workflows/*.json``) from a running ComfyUI's ``/object_info``.

The frontend stores a node's widget values as a list in the order of its widgets, which is the order of
the node's inputs in ``/object_info`` (required, then optional) with one extra value after every INT that
has ``control_after_generate`` (the seed's "fixed"/"randomize"). Writing that list by hand drifts as soon
as a widget is added; here every list is built from the server's own schema, by widget *name*.

Usage (a ComfyUI with this pack loaded must be running)::

    python tools/make_workflows.py --server http://127.0.0.1:8188 [--out example_workflows] [--check]
    python tools/make_workflows.py --thumbnails test-artifacts   # after tests/host/test_browser.py ran

Standard library only (Pillow for ``--thumbnails``); imports nothing from ComfyUI or from this pack (it
talks HTTP). ``--check`` writes nothing and fails when the files on disk differ from what the server's
schema gives.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"
CHECKPOINT_URL = "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly-fp16.safetensors?download=true"
SEED_CONTROL = "fixed"  # a fixed seed keeps the run key, so a re-queued workflow resumes instead of restarting
# Widgets the frontend adds on its own after the schema's, as (name, type, saved value). Preview3D's 3D
# viewer is one: ComfyUI 0.3.64's frontend (1.27) saves it as an input slot and an empty string.
FRONTEND_EXTRA_WIDGETS = {"Preview3D": [("image", "PREVIEW_3D", "")]}
TITLE_HEIGHT = 30  # LiteGraph draws a node's title bar above its pos
LOW_QUALITY_SCALE = 0.6  # the frontend's default low-quality rendering threshold
CORE_NODES = {"CheckpointLoaderSimple", "PreviewImage", "Preview3D"}


# -- the schema ---------------------------------------------------------------------------------------
def input_specs(info: dict[str, Any]) -> list[tuple[str, list[Any], bool]]:
    """(name, [type, options], optional) of every input of a node, in the frontend's order."""
    inputs = info["input"]
    order = info.get("input_order") or {section: list(inputs.get(section, {})) for section in ("required", "optional")}
    return [(name, inputs[section][name], section == "optional") for section in ("required", "optional") for name in order.get(section, [])]


def is_widget(spec: list[Any]) -> bool:
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {}) or {}
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput")


def widget_default(spec: list[Any]) -> Any:
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {}) or {}
    if "default" in options:
        return options["default"]
    choices = kind if isinstance(kind, list) else options.get("options") or []
    return choices[0] if choices else {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind)


def widgets_values(node_type: str, info: dict[str, Any], values: dict[str, Any]) -> list[Any]:
    """The node's ``widgets_values``: ``values`` by name, the schema default elsewhere."""
    unknown = set(values) - {name for name, spec, _ in input_specs(info) if is_widget(spec)}
    if unknown:
        raise KeyError(f"{node_type} has no widget(s) {sorted(unknown)}; its widgets: {[n for n, s, _ in input_specs(info) if is_widget(s)]}")
    result: list[Any] = []
    for name, spec, _ in input_specs(info):
        if not is_widget(spec):
            continue
        result.append(values.get(name, widget_default(spec)))
        if spec[0] == "INT" and (spec[1] or {}).get("control_after_generate"):
            result.append(SEED_CONTROL)
    return result + [value for _, _, value in FRONTEND_EXTRA_WIDGETS.get(node_type, [])]


# -- a UI-format graph ---------------------------------------------------------------------------------
@dataclass
class Node:
    id: int
    type: str
    pos: tuple[float, float]
    size: tuple[float, float]
    values: dict[str, Any]
    title: str | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)


class Graph:
    """Builds the JSON the frontend saves (LiteGraph "version": 0.4) from node types and named links."""

    def __init__(self, object_info: dict[str, Any]) -> None:
        self.info = object_info
        self.nodes: list[Node] = []
        self.notes: list[dict[str, Any]] = []
        self.links: list[list[Any]] = []
        self.groups: list[dict[str, Any]] = []

    def _next_id(self) -> int:
        return len(self.nodes) + len(self.notes) + 1

    def add(self, node_type: str, pos: tuple[float, float], size: tuple[float, float], title: str | None = None, **values: Any) -> Node:
        if node_type not in self.info:
            raise KeyError(f"the server has no node {node_type!r}: is the pack loaded?")
        info = self.info[node_type]
        node = Node(self._next_id(), node_type, pos, size, values, title)
        widgets_values(node_type, info, values)  # fail early on a misspelt widget
        # the frontend (1.27) saves sockets first, then one slot per widget (a link can feed a widget)
        specs = input_specs(info)
        for name, spec, optional in specs:
            if not is_widget(spec):
                slot = {"name": name, "type": spec[0], "link": None}
                node.inputs.append({**slot, "shape": 7} if optional else slot)
        widgets = [(name, "COMBO" if isinstance(spec[0], list) else spec[0]) for name, spec, _ in specs if is_widget(spec)]
        for name, kind in widgets + [(name, kind) for name, kind, _ in FRONTEND_EXTRA_WIDGETS.get(node_type, [])]:
            node.inputs.append({"name": name, "type": kind, "widget": {"name": name}, "link": None})
        for name, kind in zip(info["output_name"], info["output"]):
            node.outputs.append({"name": name, "type": kind, "links": None})
        self.nodes.append(node)
        return node

    def note(self, text: str, pos: tuple[float, float], size: tuple[float, float], title: str) -> None:
        """A frontend-only Note (no backend class: API conversion skips it)."""
        self.notes.append({
            "id": self._next_id(), "type": "Note", "pos": list(pos), "size": list(size), "flags": {}, "order": 0, "mode": 0,
            "inputs": [], "outputs": [], "title": title, "properties": {}, "widgets_values": [text],
            "color": "#432", "bgcolor": "#653",
        })  # fmt: skip

    def group(self, title: str, bounding: tuple[float, float, float, float], color: str = "#3f789e") -> None:
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": list(bounding), "color": color, "font_size": 24, "flags": {}})

    def link(self, source: Node, output: str, target: Node, input_name: str) -> None:
        out_index = next((i for i, o in enumerate(source.outputs) if o["name"] == output), None)
        if out_index is None:
            raise KeyError(f"{source.type} has no output {output!r}")
        slot = next((s for s in target.inputs if s["name"] == input_name), None)
        if slot is None:
            raise KeyError(f"{target.type} has no input {input_name!r}")
        if slot["link"] is not None:
            raise ValueError(f"{target.type}.{input_name} is already linked")
        link_id = len(self.links) + 1
        slot["link"] = link_id
        source.outputs[out_index]["links"] = (source.outputs[out_index]["links"] or []) + [link_id]
        self.links.append([link_id, source.id, out_index, target.id, target.inputs.index(slot), source.outputs[out_index]["type"]])

    def _order(self) -> dict[int, int]:
        """Execution order (the frontend's "order"): notes first, then nodes topologically."""
        parents = {n.id: {link[1] for link in self.links if link[3] == n.id} for n in self.nodes}
        done: list[int] = [note["id"] for note in self.notes]
        while len(done) < len(self.notes) + len(self.nodes):
            ready = [n.id for n in self.nodes if n.id not in done and parents[n.id] <= set(done)]
            if not ready:
                raise ValueError("the graph has a cycle")
            done.extend(ready)
        return {node_id: i for i, node_id in enumerate(done)}

    def _view(self, width: float = 1536, height: float = 920, margin: float = 24) -> dict[str, Any]:
        """The canvas view (scale, offset) that shows the whole graph, top-left aligned, in a ``width`` ×
        ``height`` canvas (a 1600 × 1000 window less the side bar): the frontend maps a graph point p to
        (p + offset) · scale on screen. Below LOW_QUALITY_SCALE the frontend drops text and shrinks the 3D
        viewers, so a layout that needs less is refused."""
        boxes = [(n.pos[0], n.pos[1] - TITLE_HEIGHT, n.size[0], n.size[1] + TITLE_HEIGHT) for n in self.nodes]
        boxes += [(*note["pos"], *note["size"]) for note in self.notes] + [tuple(group["bounding"]) for group in self.groups]
        x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        x1, y1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
        scale = min(1.0, (width - 2 * margin) / (x1 - x0), (height - 2 * margin) / (y1 - y0))
        if scale < LOW_QUALITY_SCALE:
            raise ValueError(f"the layout ({x1 - x0:.0f} × {y1 - y0:.0f}) needs zoom {scale:.2f} < {LOW_QUALITY_SCALE} to fit: make it smaller")
        return {"scale": round(scale, 4), "offset": [round(margin / scale - x0, 1), round(margin / scale - y0, 1)]}

    def to_json(self, name: str) -> dict[str, Any]:
        order = self._order()
        nodes = [dict(note, order=order[note["id"]]) for note in self.notes]
        for node in self.nodes:
            properties: dict[str, Any] = {"Node name for S&R": node.type}
            properties["cnr_id"] = "comfy-core" if node.type in CORE_NODES else "comfyui-latent3d"
            if node.type == "CheckpointLoaderSimple":
                properties["models"] = [{"name": CHECKPOINT, "url": CHECKPOINT_URL, "directory": "checkpoints"}]
            entry = {
                "id": node.id, "type": node.type, "pos": list(node.pos), "size": list(node.size), "flags": {},
                "order": order[node.id], "mode": 0, "inputs": node.inputs, "outputs": node.outputs, "properties": properties,
                "widgets_values": widgets_values(node.type, self.info[node.type], node.values),
            }  # fmt: skip
            if node.title:
                entry["title"] = node.title
            nodes.append(entry)
        nodes.sort(key=lambda n: n["id"])
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-latent3d/{name}")), "revision": 0, "last_node_id": max(n["id"] for n in nodes), "last_link_id": len(self.links),
            "nodes": nodes, "links": self.links, "groups": self.groups, "config": {},
            "extra": {"ds": self._view()}, "version": 0.4,
        }  # fmt: skip


# -- the two examples ---------------------------------------------------------------------------------
TEXT_NOTE = (
    "Latent-NeRF text → 3D (Latent3D)\n\n"
    f"1. Pick your SD1.5 checkpoint in Load Checkpoint ({CHECKPOINT} or any SD1.x/SD2.x model).\n"
    "2. Queue. The training node shows the loss curve and preview frames live; the mesh appears in Preview 3D.\n\n"
    "Paper settings: 5000 iterations at resolution 64, a GPU job (tens of minutes). Trying it out: "
    "lower iterations (e.g. 500) first.\n"
    "Interrupt keeps a checkpoint under output/latent3d/runs; queue again with the same settings "
    "(seed 'fixed') to resume. Raise iterations later to train further."
)
SKETCH_NOTE = (
    "Sketch-Shape guided Latent-NeRF (Latent3D)\n\n"
    "The sketch is built in the graph: six Sketch Primitive nodes (body, head, arms, legs), chained with add_to. "
    "The left Preview 3D shows where the sketch sits in the scene ([-1, 1]³, y up, +z front).\n"
    "Sketch Shape Loss keeps the NeRF's density near the sketch; proximal_surface lets details grow near its surface.\n\n"
    f"Pick your SD1.5 checkpoint in Load Checkpoint ({CHECKPOINT}). Paper settings: 5000 iterations at resolution 64."
)


def wire_training(g: "Graph", ckpt, train, export, turntable, preview, shape_guide=None) -> None:
    """The links both examples share: checkpoint -> train (-> export -> Preview3D, turntable)."""
    g.link(ckpt, "MODEL", train, "model")
    g.link(ckpt, "CLIP", train, "clip")
    if shape_guide is not None:
        g.link(shape_guide, "shape_guide", train, "shape_guide")
    g.link(ckpt, "VAE", train, "vae")
    g.link(ckpt, "VAE", export, "vae")
    g.link(train, "nerf", export, "nerf")
    g.link(train, "turntable", turntable, "images")
    g.link(export, "model_file", preview, "model_file")


def text_to_3d(info: dict[str, Any]) -> dict[str, Any]:
    g = Graph(info)
    g.note(TEXT_NOTE, (40, 380), (330, 300), "Read me")
    ckpt = g.add("CheckpointLoaderSimple", (40, 200), (330, 98), ckpt_name=CHECKPOINT)
    train = g.add("Latent3DLatentNeRFTrain", (410, 80), (420, 900), prompt="a hamburger")
    export = g.add("Latent3DExportMesh", (870, 80), (340, 290))
    preview = g.add("Preview3D", (1250, 80), (560, 620), title="Preview 3D (textured mesh)")
    turntable = g.add("PreviewImage", (870, 420), (340, 380), title="Turntable")
    wire_training(g, ckpt, train, export, turntable, preview)
    return g.to_json("latent3d_text_to_3d")


# (title, shape, size_x, size_y, axis, centre): a teddy-like figure, ≈ 1.1 tall, facing +z
LEGO_MAN_PARTS = (
    ("Body", "capsule", 0.27, 0.7, "y", (0.0, -0.08, 0.0)),
    ("Head", "sphere", 0.2, 0.6, "y", (0.0, 0.42, 0.0)),
    ("Left arm", "capsule", 0.1, 0.5, "y", (-0.36, -0.02, 0.06)),
    ("Right arm", "capsule", 0.1, 0.5, "y", (0.36, -0.02, 0.06)),
    ("Left leg", "capsule", 0.12, 0.45, "y", (-0.14, -0.48, 0.04)),
    ("Right leg", "capsule", 0.12, 0.45, "y", (0.14, -0.48, 0.04)),
)


def sketch_lego_man(info: dict[str, Any]) -> dict[str, Any]:
    g = Graph(info)
    previous = None
    for i, (title, shape, size_x, size_y, axis, (x, y, z)) in enumerate(LEGO_MAN_PARTS):
        column, row = divmod(i, 3)
        part = g.add("Latent3DSketchPrimitive", (40 + 300 * column, 80 + 305 * row), (280, 262), title=f"Sketch: {title.lower()}",
                     shape=shape, size_x=size_x, size_y=size_y, axis=axis, center_x=x, center_y=y, center_z=z)  # fmt: skip
        if previous is not None:
            g.link(previous, "sketch", part, "add_to")
        previous = part
    g.group("Sketch: a teddy-like figure from primitives", (20, 0, 620, 980))
    sketch_view = g.add("Preview3D", (680, 80), (400, 420), title="Preview 3D (sketch)")
    loss = g.add("Latent3DSketchShapeLoss", (680, 560), (400, 220))
    ckpt = g.add("CheckpointLoaderSimple", (680, 850), (400, 98), ckpt_name=CHECKPOINT)
    train = g.add("Latent3DLatentNeRFTrain", (1120, 80), (400, 880), prompt="a lego man")
    export = g.add("Latent3DExportMesh", (1560, 80), (340, 290))
    turntable = g.add("PreviewImage", (1560, 420), (340, 300), title="Turntable")
    g.note(SKETCH_NOTE, (1560, 740), (340, 240), "Read me")
    preview = g.add("Preview3D", (1940, 80), (480, 560), title="Preview 3D (textured mesh)")
    g.link(previous, "preview_file", sketch_view, "model_file")
    g.link(previous, "sketch", loss, "sketch")
    wire_training(g, ckpt, train, export, turntable, preview, shape_guide=loss)
    return g.to_json("latent3d_sketch_lego_man")


WORKFLOWS = {"latent3d_text_to_3d": text_to_3d, "latent3d_sketch_lego_man": sketch_lego_man}


def object_info(server: str) -> dict[str, Any]:
    with urllib.request.urlopen(server.rstrip("/") + "/object_info", timeout=60) as response:
        return json.loads(response.read())


def write_thumbnail(screenshot: Path, path: Path, width: int = 768, max_bytes: int = 100_000) -> Path:
    """A JPEG of at most ``max_bytes``, ``width`` pixels wide, from a screenshot of the workflow."""
    from PIL import Image

    image = Image.open(screenshot).convert("RGB")
    image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    for quality in range(85, 30, -5):
        image.save(path, "JPEG", quality=quality, optimize=True, progressive=True)
        if path.stat().st_size <= max_bytes:
            return path
    raise ValueError(f"{path} stays above {max_bytes} bytes")


def render(workflow: dict[str, Any]) -> str:
    return json.dumps(workflow, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="http://127.0.0.1:8188", help="a running ComfyUI with this pack loaded")
    parser.add_argument("--out", type=Path, default=REPO / "example_workflows", help="where to write the .json files")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file differs")
    parser.add_argument("--thumbnails", type=Path, metavar="DIR",
                        help="only make the .jpg thumbnails from the browser test's screenshots DIR/<name>_graph.png (needs Pillow)")
    args = parser.parse_args(argv)
    if args.thumbnails:
        for name in WORKFLOWS:
            print(f"wrote {write_thumbnail(args.thumbnails / f'{name}_graph.png', args.out / f'{name}.jpg')}")
        return 0
    info = object_info(args.server)
    stale = []
    for name, build in WORKFLOWS.items():
        path, text = args.out / f"{name}.json", render(build(info))
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print(f"out of date (run tools/make_workflows.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
