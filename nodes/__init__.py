"""ComfyUI adapters. Modules here may import ComfyUI (``comfy``); ``latent3d/`` never does.

Inside ComfyUI the pack is a package, so adapters import the core relatively (``from ..latent3d …``).
A process that also has ComfyUI imported must not import this folder as a top-level ``nodes`` (that name
is ComfyUI's own module): the in-process host tests load the pack under the alias ``comfyui_latent3d``
(``tests/host/comfy_host.py``).
"""
