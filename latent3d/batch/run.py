"""One job run, the same for every executor: lock the job's folder, run its kind's adapter with a model the
process already loaded, record ``result.json``; the pieces every adapter shares (its configs from the preset,
the job and the overrides; the step to resume from; the test kill hook); and the Latent-NeRF adapter
(``nerf`` kind).

A ``nerf`` job's folder holds what ``latent3d nerf --out`` writes (``nerf.safetensors``, ``nerf.json``,
``metrics.jsonl``, ``previews/``, ``turntable.gif``) plus the exported ``mesh.<format>``; every job's folder
holds ``job.json`` (the job line and its hash), ``result.json`` (written last: status, step, outputs) and,
for a failed job, ``error.log`` (the traceback). A rerun resumes training from the kind's checkpoint and
redoes the outputs (seconds) unless ``result.json`` says the job is done.
"""

from __future__ import annotations

import json
import os
import signal
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .jobs import BatchSettings, Job, job_hash
from .kinds import KINDS, adapter

RESULT = "result.json"
JOB = "job.json"
ERROR_LOG = "error.log"
TEST_KILL_FILE = ".test-kill-at-step"
"""Test hook, read only when LATENT3D_TEST_HOOKS=1: the job's process SIGKILLs itself once at that step."""


class JobInterrupted(Exception):
    """The job stopped because ``should_stop`` asked (its checkpoint is saved); it stays pending."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped at step {step}")
        self.step = step


@dataclass
class JobHooks:
    """How an executor follows and steers a job: ``on_step(step, total)``, ``should_stop()`` polled every
    step, ``say`` for progress lines (None: silent), ``progress`` for the inner progress bars."""

    on_step: Callable[[int, int], None] | None = None
    should_stop: Callable[[], bool] | None = None
    say: Callable[[str], None] | None = None
    progress: bool = False
    resumed_from: int = 0
    """Set by the adapter: the checkpoint step this run continued from (0: a fresh start)."""


@dataclass
class JobOutcome:
    """What a job run returns to its executor (and, but for ``load_s``, what ``result.json`` holds)."""

    status: str
    """"done", "failed" or "pending" (stopped on request, resumable); a Ray worker that cannot load the model
    returns "fatal" (no job could run: the driver stops the batch)."""
    step: int = 0
    wall_s: float = 0.0
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    hash: str = ""
    resumed_from: int = 0
    """The checkpoint step the run continued from (e.g. after its worker died); 0: a fresh start."""
    load_s: float = 0.0
    """Seconds this call spent loading the model (0 when the process had it cached)."""
    pid: int = 0


# -- the per-process model cache ---------------------------------------------------------------------------
_MODELS: dict[tuple[str, str | None, str], Any] = {}


def cached_model(settings: BatchSettings, device, say: Callable[[str], None] | None = None, base: str | None = None) -> tuple[Any, float]:
    """(SdComponents, seconds spent loading now): loaded once per process and model, reused by later jobs.

    Only the latest model is kept (a worker that switches models frees the old one). ``base``: the folder a
    relative ``--model`` / ``--model-config`` path was given in (a Ray worker's own folder differs)."""
    key = (settings.model, settings.model_config, str(device))
    if key in _MODELS:
        return _MODELS[key], 0.0
    _MODELS.clear()
    from ..cli.common import load_model

    began = time.perf_counter()
    model, config = (_from(base, settings.model), _from(base, settings.model_config) if settings.model_config else None)
    components = load_model(model, config, device, say or (lambda text: None))
    _MODELS[key] = components
    return components, time.perf_counter() - began


def _from(base: str | None, reference: str) -> str:
    """``reference`` as a path under ``base`` when it is relative and exists there (else unchanged: a hub id, 'tiny')."""
    if base is None or Path(reference).expanduser().is_absolute():
        return reference
    candidate = Path(base) / reference
    return str(candidate) if candidate.exists() else reference


# -- one job ---------------------------------------------------------------------------------------------
def run_job(job: Job, settings: BatchSettings, components: Any, job_dir: Path, device, hooks: JobHooks | None = None) -> JobOutcome:
    """Run ``job`` into ``job_dir`` (locked while it runs) and write its ``result.json``.

    A job's own failure (a missing or broken input file, a run that stopped learning, out of memory, a
    folder in use) is returned as status "failed" with its error, never raised, so other jobs go on.
    KeyboardInterrupt propagates (the checkpoint is saved first); a stop request returns "pending".
    """
    from ..runfolder import FolderLock

    hooks = hooks or JobHooks()
    began, digest = time.perf_counter(), job_hash(job, settings)
    outcome = JobOutcome("failed", hash=digest, pid=os.getpid())
    threads = _set_threads(settings.cpus_per_job)
    try:
        with FolderLock(job_dir, "latent3d batch job"):
            (job_dir / ERROR_LOG).unlink(missing_ok=True)
            _write_json(job_dir / JOB, {"line": job.line, "hash": digest, "job": job.content(), "settings": settings.identity()})
            try:
                outcome.outputs = adapter(job.kind, "run")(job, settings, components, job_dir, device, hooks)
                outcome.status = "done"
            except JobInterrupted as stop:
                outcome.status, outcome.step = "pending", stop.step
            except Exception as e:  # noqa: BLE001 - a job's failure is its result; the batch goes on
                outcome.error = _describe(e)
                (job_dir / ERROR_LOG).write_text(traceback.format_exc())
            outcome.step = outcome.step or checkpoint_step(job_dir, job.kind)
            outcome.wall_s = round(time.perf_counter() - began, 3)
            if outcome.status != "pending":
                outcome.resumed_from = hooks.resumed_from
                _write_json(job_dir / RESULT, {k: v for k, v in asdict(outcome).items() if k not in ("load_s", "pid")})
    except OSError as e:  # the folder is locked by another run, or cannot be created
        outcome.error = _describe(e)
    finally:
        _set_threads(threads)
    outcome.resumed_from = hooks.resumed_from
    return outcome


def _set_threads(count: int | None) -> int | None:
    """Set torch's CPU threads to ``count`` (None: leave them); returns the previous count to restore."""
    if not count:
        return None
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    return previous


def finished_outcome(job: Job, settings: BatchSettings, job_dir: Path, out: Path) -> JobOutcome | None:
    """The recorded outcome of a job that is done (same hash, every output file still there), else None."""
    try:
        record = json.loads((job_dir / RESULT).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("status") != "done" or record.get("hash") != job_hash(job, settings):
        return None
    outputs = record.get("outputs") or {}
    files = [outputs.get("checkpoint"), outputs.get("turntable"), *(outputs.get("mesh") or [])]
    if not all((out / name).is_file() for name in files if name):
        return None
    fields = {k: record[k] for k in ("status", "step", "wall_s", "outputs", "error", "hash", "resumed_from") if k in record}
    return JobOutcome(**fields)


def _describe(error: BaseException) -> str:
    if isinstance(error, (ValueError, OSError)):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)


def checkpoint_step(job_dir: Path, kind: str = "nerf") -> int:
    """The step of the ``kind`` job's checkpoint in ``job_dir`` (0: none, or unreadable)."""
    record = (job_dir / KINDS[kind].checkpoint).with_suffix(".json")
    try:
        return int(json.loads(record.read_text()).get("step", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


# -- what every kind's adapter shares ----------------------------------------------------------------------
def job_configs(job: Job, settings: BatchSettings, main: str, config_class: type, roots: dict[str, Any]) -> dict[str, Any]:
    """{main: the stage's config, **roots} for ``job``: the batch's preset of ``config_class`` (its ``paper()``
    or ``tiny()``) with the job's seed and iterations and the batch's preview/checkpoint cadence, then the
    job's overrides (names starting with a root's name, e.g. ``export.``, go to that root). ValueError names
    the key."""
    import dataclasses

    from .overrides import apply_overrides

    for key in ("seed", "iterations"):
        if key in job.overrides:
            raise ValueError(f"override {key!r}: set the job's own {key!r} key instead")
    base = getattr(config_class, settings.preset)()
    base = dataclasses.replace(
        base, iterations=job.iterations or base.iterations, seed=job.seed, preview_every=settings.preview_every, checkpoint_every=settings.checkpoint_every
    )
    return apply_overrides({main: base, **roots}, job.overrides, main=main)


def latent_resolution(config: Any, job: Job, settings: BatchSettings) -> Any:
    """``config`` (a NerfConfig or PaintConfig) with its ``resolution`` checked as the UNet needs and, as the
    commands do, paper previews at least 64² latents (512² images) unless the job overrides them."""
    import dataclasses

    if config.resolution % 8 or not 8 <= config.resolution <= 256:
        raise ValueError(f"override 'resolution' must be a multiple of 8 in [8, 256] (the UNet halves it three times), got {config.resolution}")
    if "preview_resolution" in job.overrides:
        return config
    preview = max(config.resolution, 64) if settings.preset == "paper" else config.resolution
    return dataclasses.replace(config, preview_resolution=preview)


def resumable_step(checkpoint: Path, request) -> int:
    """The step to resume from (0: fresh); ValueError when the folder holds another run (``request.metadata()``
    differs from the checkpoint's)."""
    from ..checkpoint import read_record

    if not checkpoint.exists():
        return 0
    record = read_record(checkpoint)
    meta = record.get("meta") or {}
    differs = [k for k, v in request.metadata().items() if meta.get(k) != v]
    if differs:
        raise ValueError(f"{checkpoint.parent} holds another run ({', '.join(f'{k} {meta.get(k)!r}' for k in differs)}); move it away to rerun this job")
    return int(record.get("step", 0))


def batch_path(path: Path | None) -> str | None:
    """``<job folder>/<file>``: relative to the batch folder (where the manifest and gallery live)."""
    if path is None:
        return None
    path = Path(path)
    return f"{path.parent.name}/{path.name}"


def input_file(job: Job, key: str) -> Path:
    """The job's input file ``key`` ("sketch", "mesh", "source") resolved against the job file's folder;
    FileNotFoundError naming the key and the value when nothing is there."""
    path = job.input_path(key)
    if path is None or not path.exists():
        raise FileNotFoundError(f"{key} {getattr(job, key)}: no such file ({path})")
    return path


def read_input(job: Job, key: str, read: Callable[[Path], Any]) -> Any:
    """``read(path)`` of the job's input file ``key``; its failure as a ValueError that names the key and value."""
    path = input_file(job, key)
    try:
        return read(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"{key} {getattr(job, key)}: {e}") from e


def quiet(hooks: JobHooks) -> Callable[[str], None]:
    """``hooks.say``, or a callable that drops the line."""
    return hooks.say or (lambda text: None)


# -- the "nerf" kind -------------------------------------------------------------------------------------
def configure_nerf_job(job: Job, settings: BatchSettings) -> dict[str, Any]:
    """{"nerf": NerfConfig, "export": ExportConfig, "sketch": SketchShapeConfig} for ``job``: the preset,
    the job's seed and iterations, the batch's preview/checkpoint cadence and export size, then the job's
    overrides (``export.*`` and ``sketch.*`` go to the export and sketch configs). ValueError names the key."""
    from ..export import ExportConfig
    from ..nerf.train import NerfConfig
    from ..shape.loss import SketchShapeConfig

    if job.sketch is None and any(k.startswith("sketch.") for k in job.overrides):
        raise ValueError("sketch.* overrides need a sketch: the job sets no 'sketch' file")
    export = ExportConfig(resolution=settings.export_resolution, texture_size=settings.texture_size)
    configs = job_configs(job, settings, "nerf", NerfConfig, {"export": export, "sketch": SketchShapeConfig()})
    configs["nerf"] = latent_resolution(configs["nerf"], job, settings)
    return configs


def run_nerf_job(job: Job, settings: BatchSettings, components: Any, job_dir: Path, device, hooks: JobHooks) -> dict[str, Any]:
    """Train (or resume) the job's Latent-NeRF with ``latent3d.cli.nerf.train_nerf``, write its turntable and
    export its mesh with ``latent3d.export.export_checkpoint``; returns the outputs (paths relative to the
    batch folder, ``job_dir``'s parent)."""
    from ..cli.nerf import CHECKPOINT, NerfRequest, train_nerf, write_turntable
    from ..export import export_checkpoint
    from ..nerf.train import load_latent_nerf

    configs = configure_nerf_job(job, settings)
    config = configs["nerf"]
    request = NerfRequest(
        job.prompt, job.negative, settings.model, settings.model_config, config, job_dir, job.sketch,
        configs["sketch"] if job.sketch else None, settings.view_prompts, {"batch_job": job_hash(job, settings)},
    )
    checkpoint = job_dir / CHECKPOINT
    start = hooks.resumed_from = resumable_step(checkpoint, request)
    model = None
    if start < config.iterations:
        sketch = read_input(job, "sketch", _load_mesh) if job.sketch else None
        on_step = step_hook(job_dir, hooks)
        result = train_nerf(components, request, device, start=start, sketch=sketch, should_stop=hooks.should_stop, on_step=on_step, progress=hooks.progress)
        if result.status == "interrupted":
            raise JobInterrupted(result.step)
        model = result.model
    outputs: dict[str, Any] = {"checkpoint": batch_path(checkpoint), "turntable": None, "mesh": []}
    if settings.turntable_frames > 0:
        model = model if model is not None else load_latent_nerf(checkpoint, device)[0]
        path = write_turntable(model, config, components, device, settings.turntable_frames, job_dir, progress=hooks.progress)
        outputs["turntable"] = batch_path(path)
    export = configs["export"]
    decode = components.decode_latents if export.color_mode == "texture" and job.format != "ply" else None
    written = export_checkpoint(checkpoint, job_dir, format=job.format, config=export, decode=decode, name="mesh", device=device)
    outputs["mesh"] = [batch_path(p) for p in written]
    return outputs


def _load_mesh(path: Path):
    from ..shape.mesh_io import load_mesh

    return load_mesh(path)


def step_hook(job_dir: Path, hooks: JobHooks) -> Callable[[int, int], None] | None:
    """``hooks.on_step``, wrapped by the test kill hook when LATENT3D_TEST_HOOKS=1 and the job folder asks."""
    kill_at = _test_kill_step(job_dir)
    if kill_at is None:
        return hooks.on_step

    def on_step(step: int, total: int) -> None:
        if step == kill_at:
            (job_dir / TEST_KILL_FILE).unlink(missing_ok=True)
            os.kill(os.getpid(), signal.SIGKILL)
        if hooks.on_step is not None:
            hooks.on_step(step, total)

    return on_step


def _test_kill_step(job_dir: Path) -> int | None:
    if os.environ.get("LATENT3D_TEST_HOOKS") != "1":
        return None
    try:
        return int((job_dir / TEST_KILL_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
