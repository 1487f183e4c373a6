"""A UI-format workflow (what ComfyUI's frontend saves) built from a server's ``/object_info``, by widget name.

The frontend stores a node's widget values as a list in the order of its widgets, which is the order of
the node's inputs in ``/object_info`` (required, then optional) with one extra value after every INT that
has ``control_after_generate`` (the seed's "fixed"/"randomize"). Writing that list by hand drifts as soon
as a widget is added; here every list is built from the server's own schema. Standard library only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

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
