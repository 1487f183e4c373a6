"""The mechanics every optimization stage shares (Latent-NeRF, Latent-Paint, RGB refinement).

A stage subclasses :class:`Optimization` and supplies only what differs: its parameters (an optimizer and
the module whose ``state_dict`` is checkpointed), its loss for one step, its preview and what identifies
the run (prompt, model, shape guide fingerprints). The base class owns the seeded generator, fp16 loss
scaling, non-finite step skipping, the history, and checkpoint records with validated, exact resume;
:func:`run_loop` drives it with the callbacks ``on_step``, ``on_metrics`` and ``should_stop``.

Non-finite steps: a step whose loss or gradient is NaN/inf changes nothing (parameters, optimizer state)
and is counted. A run that keeps producing them is not learning; when more than half of the last
``NONFINITE_WINDOW`` steps were skipped (or, for shorter runs, more than half of all steps at the end),
the loop stops with :class:`NonFiniteRunError` instead of reporting "completed", after saving the state of
the last finite step.
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path
from typing import Any, Callable, ContextManager

import torch

from .checkpoint import (
    CheckpointError,
    check_record_numbers,
    load_checkpoint,
    load_optimizer,
    load_module_state,
    optimizer_tensors,
    save_checkpoint,
    subdict,
)
from .config import config_from_dict, config_to_dict

NONFINITE_WINDOW = 32
"""Steps looked at when deciding that a run has stopped learning (see the module docstring)."""
NONFINITE_LIMIT = 0.5
"""Fraction of skipped steps in that window above which the run stops with NonFiniteRunError."""
INITIAL_LOSS_SCALE = 2.0**10
"""fp16 loss scale at the start. SDS gradients at guidance scale 100 are large: starting at 2^10 rather
than torch's 2^16 makes fewer early steps overflow (each overflow is skipped and counted)."""


class NonFiniteRunError(RuntimeError):
    """Most recent steps had a non-finite loss or gradient: the run stopped instead of "completing"."""


def _no_section(name: str) -> ContextManager[None]:
    return contextlib.nullcontext()


def make_adam(groups: list[dict[str, Any]], betas: tuple[float, float], eps: float, device: torch.device) -> torch.optim.Adam:
    """Adam with the fused kernel where this torch has it for ``device`` (on CPU ~8x faster than the
    default for the 24M grid values; same update rule), else the default implementation."""
    kwargs = {"betas": tuple(betas), "eps": eps}
    if device.type in ("cpu", "cuda"):
        try:
            return torch.optim.Adam(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):  # older torch: no fused Adam for this device
            pass
    return torch.optim.Adam(groups, **kwargs)


class Optimization:
    """The state of one stage's optimization; subclasses define the parameters and the loss.

    A subclass sets ``kind`` (the checkpoint's kind), ``config_class`` and ``resumable_changes`` (config
    fields a resumption may change), calls ``super().__init__`` and then sets ``self.optimizer``; it
    implements ``compute_loss`` (and, when it needs them, ``model_state``/``load_model_state``,
    ``identity`` and ``adopt_saved_config``).
    """

    kind: str = "optimization"
    config_class: type = object
    resumable_changes: tuple[str, ...] = ("iterations", "preview_every", "preview_resolution", "checkpoint_every")
    history_keys: tuple[str, ...] = ("loss",)
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer

    def __init__(self, config: Any, device: torch.device, seed: int, mixed_precision: bool) -> None:
        self.config = config
        self.device = device
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.amp = bool(mixed_precision) and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", init_scale=INITIAL_LOSS_SCALE, enabled=self.amp)
        self.step = 0
        self.skipped_steps = 0
        self.history: dict[str, list[float]] = {key: [] for key in (*self.history_keys, "skipped")}
        self.metadata: dict[str, Any] = {}
        """Free-form, JSON-able facts about the run saved in the record under "meta" (e.g. the prompt text
        and model name a command line used); never compared on resume."""
        self._rng_at_step_start: torch.Tensor | None = None
        self.section: Callable[[str], ContextManager[None]] = _no_section

    # -- what a stage supplies -------------------------------------------------------------------------
    def compute_loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        """The total loss of one step (scalar) and its metrics (plain floats, keys in ``history_keys``)."""
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """Fingerprints a resumption must match besides the config (e.g. prompt embeddings)."""
        return {}

    def identity_matches(self, key: str, saved: Any, current: Any) -> bool:
        return saved == current

    def adopt_saved_config(self, saved: Any) -> None:
        """Called before configs are compared on resume: take saved values the caller left automatic."""

    def preview(self) -> torch.Tensor:
        """A preview latent/image [C, h, w] for ``on_step``."""
        raise NotImplementedError

    def model_state(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_model_state(self, tensors: dict[str, torch.Tensor], source: str) -> None:
        load_module_state(self.module, tensors, source)

    def describe(self, key: str) -> str:
        """How an identity key is named in a refusal to resume."""
        return key.replace("_", " ")

    # -- one step --------------------------------------------------------------------------------------
    @property
    def autocast(self) -> ContextManager[None]:
        return torch.autocast("cuda", dtype=torch.float16, enabled=self.amp)

    def train_step(self, timer: Any | None = None) -> dict[str, float]:
        """One optimization step; returns its metrics (also appended to ``history``)."""
        self.section = timer.section if timer is not None else _no_section
        self._rng_at_step_start = self.generator.get_state()
        self.optimizer.zero_grad(set_to_none=True)
        loss, metrics = self.compute_loss()
        finite = self.apply_gradients(loss)
        if not finite:
            self.skipped_steps += 1
        metrics = {**metrics, "loss": float(loss.detach()), "skipped": 0.0 if finite else 1.0}
        for key in self.history:
            self.history[key].append(float(metrics.get(key, math.nan)))
        self.step += 1
        self._rng_at_step_start = None
        self.section = _no_section
        return metrics

    def apply_gradients(self, loss: torch.Tensor) -> bool:
        """Backward (scaled), then an optimizer step only if loss and every gradient are finite."""
        finite = bool(torch.isfinite(loss))
        if finite:
            with self.section("render_backward"):
                self.scaler.scale(loss).backward()
            with self.section("optimizer"):
                self.scaler.unscale_(self.optimizer)
                params = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
                finite = all(bool(torch.isfinite(p.grad).all()) for p in params)
                if finite:
                    self.scaler.step(self.optimizer)
                self.scaler.update()  # an overflow lowers the fp16 loss scale
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
        return finite

    def recent_skipped(self, final: bool) -> tuple[int, int]:
        """(skipped, steps) over the last NONFINITE_WINDOW steps; (0, 0) while the window is not full,
        unless ``final`` (the end of a run), when whatever steps there are count."""
        flags = self.history["skipped"][-NONFINITE_WINDOW:]
        if not flags or (len(flags) < NONFINITE_WINDOW and not final):
            return 0, 0
        return int(sum(1 for f in flags if f != 0.0)), len(flags)

    # -- checkpoints -----------------------------------------------------------------------------------
    def state_record(self, optimizer: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, JSON record) of a checkpoint; ``optimizer`` False leaves out the Adam moments (two
        copies of the parameters' size: ≈ 2/3 of a Latent-NeRF checkpoint)."""
        tensors = {f"model.{k}": v for k, v in self.model_state().items()}
        optim, groups = optimizer_tensors(self.optimizer)
        if optimizer:
            tensors.update(optim)
        rng = self._rng_at_step_start if self._rng_at_step_start is not None else self.generator.get_state()
        tensors["rng.train"] = rng
        for key, values in self.history.items():
            tensors[f"history.{key}"] = torch.tensor(values, dtype=torch.float64)
        record = {
            "kind": self.kind,
            "step": self.step,
            "skipped_steps": self.skipped_steps,
            "config": config_to_dict(self.config),
            "optimizer_param_groups": groups,
            "optimizer_state": bool(optimizer),
            "grad_scaler": self.scaler.state_dict() if self.amp else None,
            "meta": self.metadata,
            **self.identity(),
        }
        return tensors, record

    def save(self, path: str | Path, optimizer: bool = True) -> Path:
        tensors, record = self.state_record(optimizer)
        return save_checkpoint(path, tensors, record)

    def load(self, path: str | Path) -> None:
        """Restore a checkpoint of the same run; refuses (ValueError naming the difference) another run's,
        and raises CheckpointError for an unreadable or inconsistent file."""
        tensors, record = load_checkpoint(path, self.device)
        if record.get("kind") != self.kind:
            raise CheckpointError(f"{path} is a {record.get('kind')!r} checkpoint, not a {self.kind!r} one")
        check_record_numbers(record, path)
        try:
            saved = config_from_dict(self.config_class, record["config"])
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{path}: its config cannot be read: {e}") from e
        self.adopt_saved_config(saved)
        differences = [
            name for name in config_to_dict(self.config) if name not in self.resumable_changes and getattr(saved, name) != getattr(self.config, name)
        ]
        if differences:
            raise ValueError(f"cannot resume {path}: config differs in {differences}; use another checkpoint path or the same settings")
        for key, current in self.identity().items():
            if not self.identity_matches(key, record.get(key), current):
                raise ValueError(f"cannot resume {path}: it was trained with another {self.describe(key)} ({record.get(key)!r}, now {current!r})")
        step = int(record["step"])
        self._check_tensors(tensors, path, step)
        self.load_model_state(subdict(tensors, "model."), str(path))
        if record.get("optimizer_state", True):
            load_optimizer(self.optimizer, subdict(tensors, "optim.", keep_prefix=True), record["optimizer_param_groups"], str(path))
        else:  # a finished run saved without its Adam moments: continuing restarts them (not bit-identical)
            logging.getLogger(__name__).warning("%s holds no optimizer state (dropped when the run finished): Adam starts afresh", path)
        self.generator.set_state(tensors["rng.train"].cpu())
        if self.amp and record.get("grad_scaler"):
            self.scaler.load_state_dict(record["grad_scaler"])
        self.step = step
        self.skipped_steps = int(record["skipped_steps"])
        self.history = {key: tensors[f"history.{key}"].tolist() if f"history.{key}" in tensors else [math.nan] * step for key in self.history}

    def _check_tensors(self, tensors: dict[str, torch.Tensor], path: str | Path, step: int) -> None:
        rng = tensors.get("rng.train")
        expected = self.generator.get_state()
        if rng is None or rng.dtype != torch.uint8 or rng.shape != expected.shape:
            got = None if rng is None else f"{rng.dtype} {list(rng.shape)}"
            raise CheckpointError(f"{path}: its generator state 'rng.train' is missing or malformed (got {got}, expected uint8 {list(expected.shape)})")
        for key in self.history:
            values = tensors.get(f"history.{key}")
            if values is not None and (values.dim() != 1 or values.shape[0] != step):
                raise CheckpointError(f"{path}: history.{key} holds {list(values.shape)} values for {step} recorded steps")


def _check_finite(state: Optimization, path: Path | None, final: bool) -> None:
    skipped, steps = state.recent_skipped(final)
    if steps and skipped > NONFINITE_LIMIT * steps:
        where = f"; the checkpoint {path} holds the state after the last finite step" if path is not None else ""
        raise NonFiniteRunError(
            f"{skipped} of the last {steps} steps had a non-finite loss or gradient and were skipped "
            f"({state.skipped_steps} of {state.step} in the run): the run stopped instead of reporting a result that "
            f"is not learning{where}. Lower the learning rates or the guidance scale, or turn off mixed precision"
        )


def run_loop(
    state: Optimization,
    total: int,
    *,
    preview_every: int,
    checkpoint_every: int,
    on_step: Callable[[int, int, torch.Tensor | None], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_metrics: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    keep_optimizer: bool = True,
) -> str:
    """Run ``state`` to ``total`` completed steps; returns "completed" or "interrupted".

    Args:
        on_step: after every step, (completed steps, total, preview [C, h, w] or None); a preview is made
            every ``preview_every`` steps and at the last step (0: never).
        should_stop: polled before every step; True saves a checkpoint and returns "interrupted".
        on_metrics: after every step, (completed steps, that step's metrics).
        checkpoint_path: ``.safetensors`` path for periodic (every ``checkpoint_every`` steps) and final
            checkpoints.
        resume: continue from ``checkpoint_path`` if it exists (else start fresh). K steps, stop, resume
            and K more steps equal 2K uninterrupted steps bit for bit on CPU.
        keep_optimizer: False writes the final checkpoint of a completed run without the optimizer state
            (≈ 1/3 of the size). Continuing such a run later restarts Adam's moments (not bit-identical);
            interrupted runs always keep it.

    Any exception raised inside the loop (a host's interrupt thrown from a callback, NonFiniteRunError,
    out of memory) first saves the last consistent state to ``checkpoint_path``, then propagates.
    """
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    if resume and path is not None and path.exists():
        state.load(path)
    try:
        while state.step < total:
            if should_stop is not None and should_stop():
                if path is not None:
                    state.save(path)
                return "interrupted"
            metrics = state.train_step()
            step = state.step
            if on_metrics is not None:
                on_metrics(step, metrics)
            _check_finite(state, path, final=False)
            if path is not None and checkpoint_every and step % checkpoint_every == 0 and step < total:
                state.save(path)
            if on_step is not None:
                wants_preview = preview_every and (step % preview_every == 0 or step == total)
                on_step(step, total, state.preview() if wants_preview else None)
        _check_finite(state, path, final=True)
    except BaseException:
        if path is not None:
            try:
                state.save(path)
            except Exception:  # never mask the original error
                logging.getLogger(__name__).exception("could not save a checkpoint after an error")
        raise
    if path is not None:
        state.save(path, optimizer=keep_optimizer)
    return "completed"


def fit(
    trainer: Optimization,
    config: Any,
    *,
    metadata: dict[str, Any] | None = None,
    checkpoint_path: str | Path | None = None,
    **loop_arguments: Any,
) -> Any:
    """Run ``trainer`` for ``config.iterations`` steps (previews and checkpoints as ``config`` says) and
    return ``trainer.result(status, checkpoint path)``: the body the stage functions (``fit_latent_nerf``,
    ``paint_mesh``, ``refine_rgb``) share. ``metadata`` (JSON-able) goes into the checkpoint record under
    "meta"; ``loop_arguments`` are :func:`run_loop`'s callbacks, ``resume`` and ``keep_optimizer``."""
    trainer.metadata = dict(metadata or {})
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    status = run_loop(trainer, config.iterations, preview_every=config.preview_every, checkpoint_every=config.checkpoint_every,
                      checkpoint_path=path, **loop_arguments)  # fmt: skip
    return trainer.result(status, path)
