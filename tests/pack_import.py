"""Import the repository as a package, as ComfyUI loads a custom node folder (for node tests without ComfyUI)."""

import contextlib
import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def pack_as_package(alias: str):
    """The repository imported as a package named ``alias`` (as ComfyUI loads a custom node folder),
    without ComfyUI; its modules are dropped from ``sys.modules`` afterwards."""
    spec = importlib.util.spec_from_file_location(alias, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        for name in [n for n in sys.modules if n == alias or n.startswith(alias + ".")]:
            del sys.modules[name]
