"""Lazy, one-time probes for the optional accelerators (CUDA extensions; embreex on CPU).

Importing :mod:`latent3d` never imports tiny-cuda-nn, nvdiffrast or embreex; a probe runs the first time a
dispatch function asks for a backend, and its answer is cached. "auto" takes the accelerator when it
is importable *and* the work is on CUDA, otherwise the pure-PyTorch twin, with one warning the first
time an accelerator was importable-in-principle but could not be used. Asking for a missing backend
explicitly raises with the install hint.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import re
import warnings
from types import ModuleType

import torch

INSTALL_HINTS = {
    "tinycudann": "pip install git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch "
    "(needs nvcc and a CUDA build of torch)",
    "nvdiffrast": "pip install git+https://github.com/NVlabs/nvdiffrast (needs nvcc and a CUDA build of torch)",
    "embreex": "pip install 'embreex>=4' (binary wheels; the CPU ray caster trimesh uses too)",
}


@functools.cache
def probe(module: str) -> ModuleType | None:
    """Import ``module`` once; None when it is missing or fails to import."""
    try:
        return importlib.import_module(module)
    except Exception:  # a broken CUDA extension raises all sorts of errors at import
        return None


@functools.cache
def probe_version(distribution: str) -> tuple[int, ...] | None:
    """The installed version of pip ``distribution`` as its leading integers, e.g. (4, 4, 0); None if absent."""
    try:
        text = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    match = re.match(r"\d+(\.\d+)*", text)
    return tuple(int(part) for part in match.group().split(".")) if match else ()


def install_hint(module: str) -> str:
    """The pip line for ``module`` or its top-level package ("nvdiffrast.torch" -> nvdiffrast's)."""
    return INSTALL_HINTS.get(module) or INSTALL_HINTS.get(module.split(".")[0], f"pip install {module}")


def require(module: str, backend: str) -> ModuleType:
    """The probed ``module`` for an explicitly requested ``backend``; RuntimeError with the hint if missing."""
    found = probe(module)
    if found is None:
        raise RuntimeError(f"backend '{backend}' requested but `import {module}` failed; {install_hint(module)}")
    return found


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
            raise RuntimeError(f"backend '{accelerator}' requested but `import {module}` failed; {install_hint(module)}")
        return accelerator
    if usable:
        return accelerator
    if device.type == "cuda":
        _warn_once(f"{module} is not importable; using the pure-PyTorch {accelerator} twin (slower). {install_hint(module)}")
    return "torch"
