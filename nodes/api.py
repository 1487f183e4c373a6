"""The ComfyUI node API this pack is written against, imported in one place.

ComfyUI's ``comfy_api.latest`` changes without notice; the versioned modules (``comfy_api.v0_0_2``, present
since ComfyUI 0.3.64) keep their names. A host without them gets ``latest``. Import ``io``, ``ui`` and
``ComfyExtension`` from here, never from ``comfy_api`` directly.
"""

from __future__ import annotations

try:
    from comfy_api.v0_0_2 import ComfyExtension, Types, io, ui

    API_VERSION = "v0_0_2"
except ImportError:  # a host from before the versioned API modules
    from comfy_api.latest import ComfyExtension, io, ui

    try:
        from comfy_api.latest import Types
    except ImportError:
        Types = None
    API_VERSION = "latest"

__all__ = ["API_VERSION", "ComfyExtension", "Types", "io", "ui"]
