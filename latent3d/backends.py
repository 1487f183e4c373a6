"""Lazy, one-time probes for the optional CUDA accelerators.

Importing :mod:`latent3d` never imports tiny-cuda-nn or nvdiffrast; a probe runs the first time a
dispatch function asks for a backend, and its answer is cached. "auto" takes the accelerator when it
is importable *and* the work is on CUDA, otherwise the pure-PyTorch twin, with one warning the first
time an accelerator was importable-in-principle but could not be used. Asking for a missing backend
explicitly raises with the install hint.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from types import ModuleType

import torch

INSTALL_HINTS = {
    "tinycudann": "pip install git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch "
    "(needs nvcc and a CUDA build of torch)",
    "nvdiffrast": "pip install git+https://github.com/NVlabs/nvdiffrast (needs nvcc and a CUDA build of torch)",
}


@functools.cache
def probe(module: str) -> ModuleType | None:
    """Import ``module`` once; None when it is missing or fails to import."""
    try:
        return importlib.import_module(module)
    except Exception:  # a broken CUDA extension raises all sorts of errors at import
        return None


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def pick_backend(requested: str, accelerator: str, module: str, device: torch.device) -> str:
    """Resolve ``requested`` ("auto", "torch" or ``accelerator``) to the backend to use.

    Raises:
        ValueError: unknown backend name.
        RuntimeError: the accelerator was asked for explicitly but is unusable (with the install hint).
    """
    if requested not in ("auto", "torch", accelerator):
        raise ValueError(f"backend must be 'auto', 'torch' or '{accelerator}', got {requested!r}")
    if requested == "torch":
        return "torch"
    usable = device.type == "cuda" and probe(module) is not None
    if requested == accelerator:
        if device.type != "cuda":
            raise RuntimeError(f"backend '{accelerator}' needs a CUDA device, got device {device}")
        if not usable:
            raise RuntimeError(f"backend '{accelerator}' requested but `import {module}` failed; {INSTALL_HINTS[module]}")
        return accelerator
    if usable:
        return accelerator
    if device.type == "cuda":
        _warn_once(f"{module} is not importable; using the pure-PyTorch {accelerator} twin (slower). {INSTALL_HINTS[module]}")
    return "torch"
