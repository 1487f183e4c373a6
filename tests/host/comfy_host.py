"""Where ComfyUI is, how to import it in-process, and where the random test checkpoint lives.

Shared by ``conftest.py`` and ``make_checkpoint.py``. Environment:

- ``COMFYUI_ROOT``: a ComfyUI checkout (has ``main.py`` and ``comfy/``). Without it every host test skips.
- ``COMFYUI_PYTHON``: the interpreter that runs the server subprocess (default: this one). In-process
  tests import ComfyUI into *this* interpreter, so it needs ComfyUI's requirements too.
- ``LATENT3D_CHECKPOINT_DIR``: where the random SD1.5 checkpoint is cached
  (default ``$COMFYUI_ROOT/models/checkpoints``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT_NAME = "latent3d_random_sd15.safetensors"
PACKAGE_ALIAS = "comfyui_latent3d"


def comfyui_root_problem() -> str | None:
    """Why COMFYUI_ROOT is unusable (None when it points at a ComfyUI checkout)."""
    value = os.environ.get("COMFYUI_ROOT", "")
    if not value:
        return "COMFYUI_ROOT is not set (point it at a ComfyUI checkout to run the host tests)"
    root = Path(value).expanduser()
    missing = [name for name in ("main.py", "comfy", "folder_paths.py") if not (root / name).exists()]
    if missing:
        return f"COMFYUI_ROOT={value!r} is not a ComfyUI checkout: missing {', '.join(missing)}"
    return None


def comfyui_root() -> Path:
    problem = comfyui_root_problem()
    if problem is not None:
        raise RuntimeError(problem)
    return Path(os.environ["COMFYUI_ROOT"]).expanduser().resolve()


def comfyui_python() -> str:
    return os.environ.get("COMFYUI_PYTHON") or sys.executable


def checkpoint_path() -> Path:
    directory = os.environ.get("LATENT3D_CHECKPOINT_DIR")
    base = Path(directory).expanduser() if directory else comfyui_root() / "models" / "checkpoints"
    return base / CHECKPOINT_NAME


def import_comfy() -> types.ModuleType:
    """Import ComfyUI's ``comfy`` package (through ``comfy.sd``) into this process; returns ``comfy.model_management``.

    ComfyUI parses no command line when imported (``comfy.options.args_parsing`` is False), so its
    defaults apply; we set what ``--cpu --use-pytorch-cross-attention`` would, before
    ``model_management`` and the attention module read them. Raises ImportError (or RuntimeError from a
    torchvision built for another torch) when this interpreter lacks ComfyUI's requirements.
    """
    root = str(comfyui_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    import torch

    cli_args = importlib.import_module("comfy.cli_args")
    if "comfy.model_management" not in sys.modules:
        if not torch.cuda.is_available():
            cli_args.args.cpu = True
        cli_args.args.use_pytorch_cross_attention = True
    importlib.import_module("comfy.sd")  # imports the model zoo, so every core requirement (torchvision, einops, …)
    return importlib.import_module("comfy.model_management")


def import_pack() -> types.ModuleType:
    """Import this repository as a package, the way ComfyUI loads a custom node directory.

    ComfyUI executes ``<pack>/__init__.py`` as a package named after its path, so the pack's modules use
    relative imports (``from ..latent3d import …``). The alias keeps ``nodes/`` from being imported as a
    top-level ``nodes``, which is ComfyUI's own module.
    """
    if PACKAGE_ALIAS in sys.modules:
        return sys.modules[PACKAGE_ALIAS]
    spec = importlib.util.spec_from_file_location(PACKAGE_ALIAS, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)])
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the pack from {REPO_ROOT / '__init__.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE_ALIAS] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[PACKAGE_ALIAS]
        raise
    return module
