"""A training node's progress in the host: ComfyUI's progress bar (also its interrupt point), one line of
progress text on the node (steps, rate, ETA, warnings), and the web panel's ``latent3d.progress`` messages
(loss curve, preview frames, warnings). The panel is the node's only image preview: the progress bar gets
no preview image, so the host does not stretch the node with a second one.

``summary`` is what a finished (or cached) run shows: the loss history and frames of the result, returned
as the node's UI output so ComfyUI replays it for a cached node.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import sys
import time
from typing import Any, Callable

import torch

from .eta import SizeWidget, StepClock, format_duration, long_run_warning

EVENT = "latent3d.progress"
UI_KEY = "latent3d"
"""Key of the node's UI output holding the run summary (web/latent3d.js reads it in onExecuted)."""
SUMMARY_POINTS = 400
"""Loss points a summary carries at most (the history is subsampled evenly)."""
SUMMARY_FRAMES = 8
TEXT_INTERVAL_S = 1.0
log = logging.getLogger(__name__)


def jpeg_data_url(image, size: int = 160) -> str:
    thumb = image.copy()
    thumb.thumbnail((size, size))
    buffer = io.BytesIO()
    thumb.convert("RGB").save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _server():
    server = sys.modules.get("server")  # only inside a running ComfyUI server (never import it here)
    return getattr(getattr(server, "PromptServer", None), "instance", None)


def send(node_id: str | None, data: dict[str, Any]) -> None:
    """A ``latent3d.progress`` message for the panel of node ``node_id`` (nothing outside a server)."""
    instance = _server()
    if node_id is not None and instance is not None:
        instance.send_sync(EVENT, {"node": node_id, **data})


def send_text(node_id: str | None, text: str) -> None:
    """ComfyUI's progress text on the node (a line under its widgets)."""
    instance = _server()
    if node_id is not None and instance is not None and hasattr(instance, "send_progress_text"):
        instance.send_progress_text(text, node_id)


def loss_points(history: dict[str, list[float]], start: int = 0, limit: int = SUMMARY_POINTS) -> list[list[float]]:
    """[[step, loss], ...] of a run's loss history (finite values), at most ``limit`` evenly spaced."""
    losses = history.get("loss", [])
    points = [[i + 1, v] for i, v in enumerate(losses) if i + 1 > start and isinstance(v, float) and math.isfinite(v)]
    if len(points) <= limit:
        return points
    stride = len(points) / limit
    return [points[int(i * stride)] for i in range(limit - 1)] + [points[-1]]


class HostProgress:
    """Binds the core's on_step/on_metrics/should_stop to the host for one run of node ``node`` (its display
    name) with id ``node_id``. ``decode`` turns a preview latent or image into a PIL image; ``device`` and
    ``size`` feed the ETA warning (:func:`latent3d nodes.eta.long_run_warning`)."""

    def __init__(self, node_id: str | None, node: str, total: int, decode: Callable[[torch.Tensor], Any], start_step: int = 0,
                 device: str = "cpu", size: SizeWidget | None = None, min_interval: float = 0.25) -> None:
        import comfy.utils

        self.node_id, self.node, self.total, self.decode = node_id, node, total, decode
        self.device, self.size, self.min_interval = device, size, min_interval
        self.bar = comfy.utils.ProgressBar(total, node_id=node_id)
        self.clock = StepClock(start_step, total)
        self.pending: list[list[float]] = []
        self.warnings: list[str] = []
        self.last_sent = self.last_text = 0.0
        self.start_step = start_step
        self._rate_checked = False
        send(node_id, {"step": start_step, "total": total, "reset": True, "state": "resumed" if start_step else "started",
                       "resumed_from": start_step or None})  # fmt: skip
        self._text(start_step, force=True)
        if start_step:
            self.bar.update_absolute(start_step, total)

    def warn(self, text: str) -> None:
        """Show ``text`` on the node (panel and progress text) and in the server log; once per text."""
        if text in self.warnings:
            return
        self.warnings.append(text)
        log.warning("%s", text)
        send(self.node_id, {"warnings": self.warnings})

    def status_line(self, step: int) -> str:
        parts = [f"{self.node}: step {step}/{self.total}"]
        rate = self.clock.rate
        if rate is not None:
            parts.append(f"{rate:.2f} s/step" + (f", ≈ {format_duration(self.clock.eta(step))} left" if step < self.total else ""))
        elif step < self.total:
            parts.append("measuring the time per step…")
        text = ", ".join(parts)
        return text + "".join(f"\n⚠ {w}" for w in self.warnings)

    def _text(self, step: int, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self.last_text >= TEXT_INTERVAL_S:
            send_text(self.node_id, self.status_line(step))
            self.last_text = now

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.pending.append([step, metrics["loss"]])

    def on_step(self, step: int, total: int, preview: torch.Tensor | None) -> None:
        self.clock.tick(step)
        measured = not self._rate_checked and self.clock.rate is not None
        if measured:
            self._rate_checked = True
            warning = long_run_warning(self.node, self.device, self.clock.rate, step, total, self.size)
            if warning:
                self.warn(warning)
        self._text(step, force=measured or step == total)
        # every progress update is also ComfyUI's interrupt point (it may raise InterruptProcessingException)
        self.bar.update_absolute(step, total)
        image = self.decode(preview) if preview is not None else None
        now = time.perf_counter()
        if image is not None or step == total or now - self.last_sent >= self.min_interval:
            data = {"step": step, "total": total, "losses": self.pending, "state": "running" if step < total else "done",
                    "seconds_per_step": self.clock.rate, "eta_s": self.clock.eta(step)}  # fmt: skip
            if image is not None:
                data["frame"] = jpeg_data_url(image)
            send(self.node_id, data)
            self.pending, self.last_sent = [], now

    def should_stop(self) -> bool:
        import comfy.model_management

        return comfy.model_management.processing_interrupted()

    def stopped(self, status: str, step: int, skipped: int) -> None:
        """The run ended without a result to show (interrupted or failed)."""
        send(self.node_id, {"step": step, "total": self.total, "losses": self.pending, "state": status, "skipped": skipped})
        self.pending = []
        send_text(self.node_id, f"{self.node}: {status} at step {step}/{self.total}" + "".join(f"\n⚠ {w}" for w in self.warnings))

    def summary(self, status: str, step: int, skipped: int, history: dict[str, list[float]], frames: list[Any]) -> dict[str, Any]:
        """Send and return the finished run's summary: its whole loss curve, ``frames`` (PIL images, e.g. the
        turntable), rate and warnings. The returned dict is the node's UI output (replayed when cached)."""
        if skipped:
            self.warn(f"{self.node}: {skipped} of {step} steps had a non-finite loss or gradient and were skipped")
        step_frames = [{"label": f"turntable {i + 1}/{len(frames)}", "src": jpeg_data_url(f, 128)} for i, f in enumerate(frames[:SUMMARY_FRAMES])]
        data = {"step": step, "total": self.total, "state": status, "skipped": skipped, "reset": True, "losses": loss_points(history),
                "frames": step_frames, "seconds_per_step": self.clock.rate, "warnings": self.warnings}  # fmt: skip
        send(self.node_id, data)
        self.pending = []
        send_text(self.node_id, self.status_line(step).replace(f"step {step}/{self.total}", f"{status}, step {step}/{self.total}", 1))
        return {UI_KEY: [data]}
