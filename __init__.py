"""ComfyUI entry point of ComfyUI-Latent3D (V3 node schema).

Importing this file without ComfyUI (the core's tests, tools) works: the ComfyUI API import is guarded.
Define no ``NODE_CLASS_MAPPINGS`` here: ComfyUI would then take the V1 route and silently ignore
``comfy_entrypoint``.
"""

WEB_DIRECTORY = "./web"

try:
    from .nodes.api import ComfyExtension, io  # the versioned comfy_api (v0_0_2) where the host has it
except ImportError:  # not running inside ComfyUI
    ComfyExtension = None

if ComfyExtension is not None:

    class Latent3DExtension(ComfyExtension):
        async def get_node_list(self) -> list[type[io.ComfyNode]]:
            from .nodes import node_classes

            return node_classes()

    async def comfy_entrypoint() -> Latent3DExtension:
        return Latent3DExtension()
