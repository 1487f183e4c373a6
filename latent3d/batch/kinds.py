"""The job kinds a batch can run: a small table, so stages plug in by adding one row.

A kind names the module and two functions of its batch adapter:

- ``configure(job, settings) -> dict`` builds the kind's configs from the job line and the batch settings
  (overrides applied); it raises ValueError naming the key and value. The validator calls it for every
  line before anything runs.
- ``run(job, settings, components, job_dir, device, hooks) -> dict`` runs one job into ``job_dir`` with the
  already-loaded model ``components`` and returns its outputs (``{"checkpoint": path, "turntable": path
  or None, "mesh": [paths]}``, paths inside ``job_dir``), resuming from what ``job_dir`` already holds.
  ``hooks`` is a :class:`latent3d.batch.run.JobHooks` (progress, stop polling).

A kind whose module is missing or lacks its adapter is "not available in this version": the validator
reports every line that asks for it. ``nerf`` trains a Latent-NeRF from the prompt (and a sketch); ``paint``
paints a texture on the job's ``mesh`` (``latent3d paint``); ``refine`` refines the Latent-NeRF run its
``source`` names in RGB and exports it (``latent3d refine``, then ``latent3d export``).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class JobKind:
    name: str
    module: str
    """Module holding the batch adapter."""
    configure: str
    """Name of its ``configure(job, settings)`` function."""
    run: str
    """Name of its ``run(job, settings, components, job_dir, device, hooks)`` function."""
    inputs: tuple[str, ...]
    """The input-file keys a job of this kind may set ("sketch", "mesh")."""
    required: tuple[str, ...] = ()
    """The input-file keys it must set."""
    checkpoint: str = "nerf.safetensors"
    """The checkpoint a job of this kind writes in its folder (its ``.json`` twin gives the step reached)."""


KINDS: dict[str, JobKind] = {
    "nerf": JobKind("nerf", "latent3d.batch.run", "configure_nerf_job", "run_nerf_job", inputs=("sketch",)),
    "paint": JobKind("paint", "latent3d.cli.paint", "configure_batch_job", "run_batch_job", inputs=("mesh",), required=("mesh",),
                     checkpoint="paint.safetensors"),
    "refine": JobKind("refine", "latent3d.cli.refine", "configure_batch_job", "run_batch_job", inputs=("source",), required=("source",),
                      checkpoint="refined.safetensors"),
}
INPUTS = {
    "sketch": "a mesh file (OBJ/PLY/STL/OFF/GLB/GLTF) that guides the shape",
    "mesh": "the mesh file to paint (OBJ/GLB/GLTF/PLY/STL/OFF)",
    "source": "a Latent-NeRF run folder (e.g. a nerf job's folder of an earlier batch) or its nerf.safetensors",
}
"""Every input-file key of a job line, and what it names (a kind takes some of them)."""


def unavailable_reason(kind: JobKind) -> str | None:
    """None when ``kind`` can run here, else why not (in words for a job-file error)."""
    try:
        found = importlib.util.find_spec(kind.module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return f"kind {kind.name!r} is not available in this version ({kind.module} is missing)"
    try:
        module = importlib.import_module(kind.module)
    except Exception as e:  # a module that fails to import is as unavailable as a missing one
        return f"kind {kind.name!r} is not available in this version ({kind.module} fails to import: {e})"
    missing = [name for name in (kind.configure, kind.run) if not callable(getattr(module, name, None))]
    if missing:
        return f"kind {kind.name!r} is not available in this version ({kind.module} has no batch adapter {', '.join(missing)})"
    return None


def adapter(kind: str, which: str) -> Callable[..., Any]:
    """The ``configure`` or ``run`` function of ``kind`` (its availability checked by the validator)."""
    entry = KINDS[kind]
    return getattr(importlib.import_module(entry.module), getattr(entry, which))
