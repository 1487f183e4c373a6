"""NodeSpec -> ComfyUI V3 ``io.Schema`` (the only place that knows the V3 input classes)."""

from __future__ import annotations

from typing import Any

from .api import io

from .spec import NodeSpec, Socket, Widget, widget_default

_SOCKETS = {
    "MODEL": io.Model,
    "CLIP": io.Clip,
    "VAE": io.Vae,
    "CONDITIONING": io.Conditioning,
    "IMAGE": io.Image,
    "STRING": io.String,
    "MESH": io.Mesh,
}
_CUSTOM: dict[str, Any] = {}


def socket_type(name: str):
    if name in _SOCKETS:
        return _SOCKETS[name]
    if name not in _CUSTOM:
        _CUSTOM[name] = io.Custom(name)
    return _CUSTOM[name]


def _widget_input(spec: NodeSpec, widget: Widget, options: dict[str, list[str]]):
    common = {"tooltip": widget.tooltip, "optional": widget.optional}
    default = widget_default(spec, widget)
    if widget.kind == "INT":
        return io.Int.Input(widget.name, default=default, min=widget.min, max=widget.max, step=widget.step, control_after_generate=widget.seed or None, **common)
    if widget.kind == "FLOAT":
        return io.Float.Input(widget.name, default=default, min=widget.min, max=widget.max, step=widget.step, round=False, **common)
    if widget.kind == "BOOLEAN":
        return io.Boolean.Input(widget.name, default=default, **common)
    if widget.kind == "STRING":
        return io.String.Input(widget.name, default=default, multiline=widget.multiline, **common)
    choices = list(options.get(widget.name, widget.options))
    return io.Combo.Input(
        widget.name, options=choices, default=default if default in choices else None,
        upload=io.UploadType.model if widget.upload else None, **common,
    )


def build_schema(spec: NodeSpec, options: dict[str, list[str]] | None = None, hidden_node_id: bool = False, hidden_prompt: bool = False) -> io.Schema:
    """The V3 schema of ``spec``; ``options`` fills COMBO choices known only at run time (files).
    ``hidden_node_id``/``hidden_prompt``: the node gets its id / the whole API prompt as hidden inputs."""
    options = options or {}
    inputs = []
    for item in spec.inputs:
        if isinstance(item, Socket):
            inputs.append(socket_type(item.type).Input(item.name, optional=item.optional, tooltip=item.tooltip))
        else:
            inputs.append(_widget_input(spec, item, options))
    outputs = [socket_type(o.type).Output(o.name, display_name=o.display_name or o.name, tooltip=o.tooltip) for o in spec.outputs]
    return io.Schema(
        node_id=spec.node_id,
        display_name=spec.display_name,
        category=spec.category,
        description=spec.description,
        inputs=inputs,
        outputs=outputs,
        hidden=[h for h, wanted in ((io.Hidden.unique_id, hidden_node_id), (io.Hidden.prompt, hidden_prompt)) if wanted] or None,
        is_output_node=spec.output_node,
    )
