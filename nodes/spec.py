"""Node specifications without ComfyUI: ids, sockets, widgets, and how widgets map onto config fields.

Each node is described once here as data. ``nodes/schema.py`` turns a spec into a ComfyUI V3 schema, and
tests check the specs without the host: every widget has a tooltip, every widget that sets a config field
takes its default from the config dataclass (so the graph and the headless CLI agree), and
``build_config`` turns widget values into the config the core function takes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

WidgetKind = Literal["INT", "FLOAT", "BOOLEAN", "STRING", "COMBO"]


@dataclass(frozen=True)
class Socket:
    """A typed connection (MODEL, CLIP, VAE, IMAGE, STRING, MESH, or a private LATENT3D_* type)."""

    name: str
    type: str
    tooltip: str
    optional: bool = False
    display_name: str | None = None


@dataclass(frozen=True)
class Widget:
    """A value set on the node. ``field`` (dotted, e.g. "sds.guidance_scale") names the config field it
    sets; its default then comes from the config dataclass. Widgets without a field carry ``default``."""

    name: str
    kind: WidgetKind
    tooltip: str
    field: str | None = None
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    options: tuple[str, ...] = ()
    multiline: bool = False
    optional: bool = False
    seed: bool = False
    """INT seeds get ComfyUI's "control after generate" widget."""
    upload: bool = False
    """COMBO of files with an upload button (options are filled in by the host at schema time)."""
    index: int | None = None
    """The widget sets element ``index`` of a tuple field (e.g. rotation_deg's x, y, z)."""
    none_value: Any = None
    """The widget value that stands for the field's None (e.g. 0 for "no fade", "auto" threshold)."""


@dataclass(frozen=True)
class NodeSpec:
    node_id: str
    display_name: str
    category: str
    description: str
    inputs: tuple[Socket | Widget, ...]
    outputs: tuple[Socket, ...]
    config: type | None = None
    output_node: bool = False

    def widgets(self) -> list[Widget]:
        return [i for i in self.inputs if isinstance(i, Widget)]

    def widget(self, name: str) -> Widget:
        for item in self.widgets():
            if item.name == name:
                return item
        raise KeyError(f"{self.node_id} has no widget {name!r}")


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _field_value(config: Any, widget: Widget, value: Any) -> Any:
    """The value the config field takes when ``widget`` shows ``value``."""
    if widget.none_value is not None and value == widget.none_value:
        return None
    if widget.index is not None:
        items = list(_get(config, widget.field))
        items[widget.index] = value
        return tuple(items)
    return value


def _set(obj: Any, dotted: str, value: Any) -> Any:
    """A copy of dataclass ``obj`` with the dotted field replaced (nested dataclasses copied, not mutated)."""
    head, _, rest = dotted.partition(".")
    if not rest:
        return dataclasses.replace(obj, **{head: value})
    return dataclasses.replace(obj, **{head: _set(getattr(obj, head), rest, value)})


def widget_default(spec: NodeSpec, widget: Widget) -> Any:
    """The default a widget shows: its config field's default, else its own ``default``."""
    if widget.field is None:
        return widget.default
    if spec.config is None:
        raise ValueError(f"{spec.node_id}.{widget.name} maps onto {widget.field!r} but the node has no config class")
    value = _get(spec.config(), widget.field)
    if value is None:
        return widget.none_value
    return value[widget.index] if widget.index is not None else value


def build_config(spec: NodeSpec, values: dict[str, Any]) -> Any:
    """The node's config dataclass with every field-mapped widget set from ``values``.

    Raises ValueError naming the node, the widget and the value when the config rejects it.
    """
    if spec.config is None:
        raise ValueError(f"{spec.node_id} has no config class")
    config = spec.config()
    for widget in spec.widgets():
        if widget.field is None or widget.name not in values or values[widget.name] is None:
            continue
        value = values[widget.name]
        try:
            config = _set(config, widget.field, _field_value(config, widget, value))
        except (ValueError, TypeError) as error:
            raise ValueError(f"{spec.display_name}: widget '{widget.name}' = {value!r} is not allowed: {error}") from error
    return config
