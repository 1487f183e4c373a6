"""A UI-format workflow (what the frontend saves) + ``/object_info`` -> the API prompt ``POST /prompt`` takes.

Written independently of ``tools/make_workflows.py`` so that a test of one checks the other. It does
what the frontend's graphToPrompt does for the graphs we ship:

- ``widgets_values`` are matched to widget inputs by position, in ``/object_info`` order (required, then
  optional); the extra value after an INT with ``control_after_generate`` ("fixed", "randomize", ...) is
  skipped, and values beyond the schema's widgets (widgets the frontend adds itself, e.g. Preview3D's
  viewer) are ignored;
- a link becomes ``[origin node id, origin slot]`` on the target input (a widget fed by a link included);
- nodes without a backend class (Note, MarkdownNote, Reroute, PrimitiveNode) are left out: links through a
  Reroute are followed to their source, and a PrimitiveNode's value is already in its target's widget;
- muted nodes (mode 2) are left out; a bypassed node (mode 4) passes its first input of the link's type on.
"""

from __future__ import annotations

import copy
from typing import Any

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
MUTED, BYPASSED = 2, 4


def _inputs(info: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    inputs = info["input"]
    order = info.get("input_order") or {section: list(inputs.get(section, {})) for section in ("required", "optional")}
    return [(name, inputs[section][name]) for section in ("required", "optional") for name in order.get(section, [])]


def _is_widget(spec: list[Any]) -> bool:
    options = (spec[1] if len(spec) > 1 else None) or {}
    return (isinstance(spec[0], list) or spec[0] in WIDGET_TYPES) and not options.get("forceInput")


def widget_names(info: dict[str, Any]) -> list[str | None]:
    """The names of a node's ``widgets_values`` entries by position; None marks a control_after_generate value."""
    names: list[str | None] = []
    for name, spec in _inputs(info):
        if _is_widget(spec):
            names.append(name)
            if spec[0] == "INT" and ((spec[1] if len(spec) > 1 else None) or {}).get("control_after_generate"):
                names.append(None)
    return names


def node_widgets(node: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """A UI node's widget values by name (checked against the schema: a misaligned list raises)."""
    values = node.get("widgets_values") or []
    names = widget_names(info)
    if isinstance(values, dict):  # some frontends' extensions save a dict
        return {name: values[name] for name in names if name is not None and name in values}
    if len(values) < len(names):
        raise ValueError(f"node {node['id']} ({node['type']}): {len(values)} widget values for the {len(names)} widgets {names}")
    for position, name in enumerate(names):
        if name is None and values[position] not in CONTROL_VALUES:
            raise ValueError(f"node {node['id']} ({node['type']}): value {values[position]!r} at position {position} should be a "
                             f"control_after_generate value {sorted(CONTROL_VALUES)}: widgets_values are out of order")  # fmt: skip
    return {name: value for name, value in zip(names, values) if name is not None}


def set_widgets(workflow: dict[str, Any], object_info: dict[str, Any], node_type: str, **values: Any) -> int:
    """Set widget values by name on every node of ``node_type`` in a UI workflow (in place); returns how many."""
    count = 0
    for node in workflow["nodes"]:
        if node["type"] != node_type:
            continue
        names = widget_names(object_info[node_type])
        for name, value in values.items():
            if name not in names:
                raise KeyError(f"{node_type} has no widget {name!r}; widgets: {[n for n in names if n]}")
            node["widgets_values"][names.index(name)] = value
        count += 1
    if not count:
        raise KeyError(f"the workflow has no {node_type} node")
    return count


def workflow_to_api(workflow: dict[str, Any], object_info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The API prompt {node id: {"class_type", "inputs"}} of a UI workflow (the input is not modified)."""
    workflow = copy.deepcopy(workflow)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow.get("links", [])}

    def source(link_id: int) -> tuple[int, int] | None:
        """(node id, output slot) of the backend node feeding ``link_id``; None when it is frontend-only."""
        _, origin, slot, _, _, kind = links[link_id][:6]
        node = nodes[origin]
        if node.get("mode", 0) == BYPASSED:
            through = next((i for i in node.get("inputs", []) if i.get("link") is not None and links[i["link"]][5] == kind), None)
            return source(through["link"]) if through else None
        if node["type"] == "Reroute":
            upstream = node["inputs"][0].get("link")
            return source(upstream) if upstream is not None else None
        if node["type"] not in object_info or node.get("mode", 0) == MUTED:
            return None
        return str(origin), slot

    prompt: dict[str, dict[str, Any]] = {}
    for node in workflow["nodes"]:
        info = object_info.get(node["type"])
        if info is None or node.get("mode", 0) in (MUTED, BYPASSED):
            continue
        inputs: dict[str, Any] = dict(node_widgets(node, info))
        for slot in node.get("inputs", []):
            if slot.get("link") is None:
                continue
            name = (slot.get("widget") or {}).get("name", slot["name"])
            origin = source(slot["link"])
            if origin is not None:
                inputs[name] = [origin[0], origin[1]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def set_inputs(prompt: dict[str, dict[str, Any]], class_type: str, **values: Any) -> int:
    """Set inputs on every node of ``class_type`` in an API prompt (in place); returns how many."""
    count = 0
    for node in prompt.values():
        if node["class_type"] == class_type:
            for name, value in values.items():
                if name not in node["inputs"]:
                    raise KeyError(f"{class_type} has no input {name!r} in this prompt; inputs: {sorted(node['inputs'])}")
                node["inputs"][name] = value
            count += 1
    if not count:
        raise KeyError(f"the prompt has no {class_type} node")
    return count
