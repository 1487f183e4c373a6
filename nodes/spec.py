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


def _field_value(widget: Widget, value: Any) -> Any:
    """The value the config field takes when ``widget`` shows ``value``."""
    if widget.none_value is not None and value == widget.none_value:
        return None
    return value


def _apply(obj: Any, changes: dict[str, Any]) -> Any:
    """A copy of dataclass ``obj`` with dotted fields replaced; each dataclass is rebuilt once, so its
    validation sees all its new values together (fade_start and fade_end, say)."""
    direct: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for dotted, value in changes.items():
        head, _, rest = dotted.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    for head, sub in nested.items():
        direct[head] = _apply(getattr(obj, head), sub)
    return dataclasses.replace(obj, **direct)


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
    changes: dict[str, Any] = {}
    used = [w for w in spec.widgets() if w.field is not None and values.get(w.name) is not None]
    for widget in used:
        current = changes.get(widget.field, _get(config, widget.field))
        if widget.index is not None and current is not None:
            items = list(current)
            items[widget.index] = values[widget.name]
            changes[widget.field] = tuple(items)
        else:
            changes[widget.field] = _field_value(widget, values[widget.name])
    try:
        return _apply(config, changes)
    except (ValueError, TypeError) as error:
        named = [f"{w.name}={values[w.name]!r}" for w in used if w.field.split(".")[-1] in str(error)]
        raise ValueError(f"{spec.display_name}: {error} (widgets: {', '.join(named) or 'see above'})") from error
