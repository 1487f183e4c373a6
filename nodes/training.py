"""What the three training nodes (Latent-NeRF Train, Latent-Paint, Latent→RGB Refine) share in the host,
in one place: the run folder (pruned, locked while training), resume, progress with ETA and warnings on the
node, the memory check, interrupts, and the summary a finished or cached run shows.

A node's ``execute`` reads::

    run = TrainingRun(NAME, cls.hidden.unique_id, device)
    with run.collecting():                      # Python and log warnings go to the node too
        ...build the config, check memory (run.check_memory), compute the run key...
        run.start(key, "nerf.safetensors", config.iterations, resume, decode, size)
        with run.training():                    # lock, training mode, interrupt bookkeeping
            result = fit_latent_nerf(..., **run.loop_arguments(keep_optimizer))
        run.raise_if_interrupted(result)
        ui = run.finish(result, frames)
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from . import host, memory, runs
from .eta import SizeWidget
from .progress import HostProgress
from .specs import ALL_SPECS

_PACK_LOGGER = __name__.rsplit(".", 2)[0]
"""The logger of this pack's package (the core's modules log below it)."""


class _ToRun(logging.Handler):
    def __init__(self, run: "TrainingRun") -> None:
        super().__init__(logging.WARNING)
        self.run = run

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.endswith(".progress"):  # HostProgress logs what it shows itself
            self.run.warn(record.getMessage(), log=False)


PREFIX_NODES = ("Latent3DExportMesh", "Latent3DLatentPaint")
"""Nodes whose ``filename_prefix`` is only used after a training upstream of them has finished."""


def downstream_prefix_errors(prompt: dict[str, Any] | None, node_id: str | None) -> list[str]:
    """Problems of the nodes fed (directly or not) by ``node_id`` in an API ``prompt`` that would only show
    after the training: a ``filename_prefix`` that ``host.safe_relative`` refuses. ComfyUI reports those at
    queue time but still runs the outputs that do validate, this training among them."""
    if not prompt or node_id is None:
        return []
    children: dict[str, set[str]] = {}
    for key, node in prompt.items():
        for value in node.get("inputs", {}).values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                children.setdefault(value[0], set()).add(key)
    seen, todo, problems = set(), [str(node_id)], []
    while todo:
        for child in children.get(todo.pop(), ()):
            if child in seen:
                continue
            seen.add(child)
            todo.append(child)
            node = prompt[child]
            prefix = node.get("inputs", {}).get("filename_prefix")
            if node.get("class_type") in PREFIX_NODES and isinstance(prefix, str):
                answer = host.check_prefix(prefix)
                if answer is not True:
                    names = {spec.node_id: spec.display_name for spec in ALL_SPECS}
                    problems.append(f"{names[node['class_type']]} (node {child}): {answer}")
    return sorted(problems)


class TrainingRun:
    """One execution of a training node (``node`` is its display name, ``node_id`` ComfyUI's id)."""

    def __init__(self, node: str, node_id: str | None, device: torch.device) -> None:
        self.node, self.node_id, self.device = node, node_id, device
        self.progress: HostProgress | None = None
        self.early: list[str] = []
        self.directory: Path | None = None
        self.checkpoint: Path | None = None
        self.start_step = 0
        self.resume = True

    # -- warnings --------------------------------------------------------------------------------------------
    def warn(self, text: str, log: bool = True) -> None:
        """Show ``text`` on the node (panel, progress text) and in the log."""
        if self.progress is not None:
            self.progress.warn(text)
        elif text not in self.early:
            self.early.append(text)
            if log:
                logging.getLogger(__name__).warning("%s", text)

    @contextlib.contextmanager
    def collecting(self) -> Iterator[None]:
        """Python warnings and the pack's log warnings raised inside go to the node too (and still to the log)."""
        handler = _ToRun(self)
        logger = logging.getLogger(_PACK_LOGGER)
        logger.addHandler(handler)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            shown = warnings.showwarning

            def show(message, category, filename, lineno, file=None, line=None) -> None:
                self.warn(str(message), log=False)
                shown(message, category, filename, lineno, file, line)

            warnings.showwarning = show
            try:
                yield
            finally:
                logger.removeHandler(handler)

    # -- before the run ------------------------------------------------------------------------------------
    def check_downstream(self, prompt: dict[str, Any] | None) -> None:
        """Refuse to start when a node fed by this one would fail after the training (:func:`downstream_prefix_errors`)."""
        problems = downstream_prefix_errors(prompt, self.node_id)
        if problems:
            raise ValueError(f"{self.node}: not started, because a node after it would fail once the training is done: "
                             f"{'; '.join(problems)}. Fix it and queue again.")  # fmt: skip

    def check_memory(self, model: Any, widget: str, value: int, estimate: Callable[[int], memory.StepEstimate], minimum: int = 8, step: int = 8) -> None:
        """Refuse (ValueError naming ``widget``) a step that would not fit in the device's free memory."""
        memory.check_step_memory(self.node, model, self.device, widget, value, estimate, minimum, step)

    def start(self, key: str, filename: str, total: int, resume: bool, decode: Callable[[torch.Tensor], Any], size: SizeWidget | None) -> None:
        """Prune old run folders, find the checkpoint of run ``key`` and the step it resumes from, start progress."""
        root = host.runs_root()
        for removed in runs.prune_runs(root, key):
            logging.getLogger(__name__).info("%s: removed the old run folder %s (%.1f MB)", self.node, removed.path, removed.bytes / 2**20)
        self.directory = root / key
        self.checkpoint = self.directory / filename
        self.resume = resume
        self.start_step = host.checkpoint_step(self.checkpoint, self.node) if resume else 0
        self.progress = HostProgress(self.node_id, self.node, total, decode, self.start_step, self.device.type, size)
        for text in self.early:
            self.progress.warn(text)

    def loop_arguments(self, keep_optimizer: bool) -> dict[str, Any]:
        """The core stage function's callbacks and checkpoint arguments."""
        p = self.progress
        return {"on_step": p.on_step, "on_metrics": p.on_metrics, "should_stop": p.should_stop, "checkpoint_path": self.checkpoint,
                "resume": self.resume, "keep_optimizer": keep_optimizer}  # fmt: skip

    # -- the run -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def training(self) -> Iterator[None]:
        """Hold the run folder's lock, leave inference mode, and tell the panel when the run stops early."""
        import comfy.model_management as mm

        from ..latent3d.runfolder import FolderLock

        try:
            with FolderLock(self.directory, "Latent3D run"), host.training_mode():
                yield
        except mm.InterruptProcessingException:
            self.progress.stopped("interrupted", self._step(), 0)
            raise
        except Exception as error:
            self.progress.stopped("failed", self._step(), 0)
            self.warn(f"{self.node}: {type(error).__name__}: {error}", log=False)
            raise

    def _step(self) -> int:
        return self.progress.clock._last[0] if self.progress.clock._last else self.start_step

    def raise_if_interrupted(self, result: Any) -> None:
        """Report an interrupted result to ComfyUI (its checkpoint is saved) the way its own nodes do."""
        if result.status == "interrupted":
            self.progress.stopped("interrupted", result.step, result.skipped_steps)
            host.raise_interrupted()

    def finish(self, result: Any, frames: list[Any]) -> dict[str, Any]:
        """The node's UI output: the run's loss curve, ``frames`` (PIL images), rate and warnings."""
        return self.progress.summary(result.status, result.step, result.skipped_steps, result.history, frames)
