"""How long a training run will take: seconds per step measured after the first steps, the ETA, and the
warning a node shows when a run is impractical on its device. Host-free (tested without ComfyUI).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

WARMUP_STEPS = 1
"""Steps left out of the rate: the first step of a run (or of a resumption) also loads the model onto its
device, warms kernels and refreshes the occupancy grid, so it is slower than the rest."""
MEASURED_STEPS = 2
"""Steps timed after the warmup before the ETA is shown (and the long-run warning decided)."""
LONG_RUN_S = 2 * 3600.0
"""A run whose remaining steps take longer than this is warned about on any device."""
PRACTICAL_RUN_S = 3600.0
"""The length the warning's suggestions aim at (an hour)."""


def format_duration(seconds: float) -> str:
    """A short human duration: '40 s', '12 min', '3 h 05 min', '2.6 days'."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        hours, minutes = divmod(round(seconds / 60), 60)
        return f"{hours} h {minutes:02d} min"
    return f"{seconds / 86400:.1f} days"


class StepClock:
    """Seconds per step of a run from ``start_step`` to ``total``, leaving out the first WARMUP_STEPS steps.

    ``rate`` is None until MEASURED_STEPS steps after the warmup are done; then it is the mean time of the
    timed steps (every step after the warmup counts, so it follows slow drifts).
    """

    def __init__(self, start_step: int, total: int, clock: Callable[[], float] = time.perf_counter) -> None:
        self.start_step, self.total, self.clock = start_step, total, clock
        self._timed_from: tuple[int, float] | None = None
        self._last: tuple[int, float] | None = None

    def tick(self, step: int) -> None:
        """Record that ``step`` steps are complete (call after every step)."""
        now = self.clock()
        if self._timed_from is None and step >= self.start_step + WARMUP_STEPS:
            self._timed_from = (step, now)
        self._last = (step, now)

    @property
    def rate(self) -> float | None:
        """Measured seconds per step, or None while fewer than MEASURED_STEPS steps were timed."""
        if self._timed_from is None or self._last is None:
            return None
        steps = self._last[0] - self._timed_from[0]
        return (self._last[1] - self._timed_from[1]) / steps if steps >= MEASURED_STEPS else None

    def eta(self, step: int) -> float | None:
        """Seconds left after ``step`` completed steps at the measured rate (None before it is measured)."""
        rate = self.rate
        return None if rate is None else rate * max(0, self.total - step)


@dataclass(frozen=True)
class SizeWidget:
    """The widget that sets a step's cost (e.g. Latent-NeRF Train's ``resolution``) and its smallest value."""

    name: str
    value: int
    minimum: int


def long_run_warning(node: str, device: str, rate: float, step: int, total: int, size: SizeWidget | None) -> str | None:
    """The warning a node shows once the rate is measured, or None when the run is practical.

    Warned: every run on a CPU (each step runs the Stable Diffusion UNet there), and any run whose remaining
    steps take longer than LONG_RUN_S. The text gives the measured rate and ETA and what would make the run
    take about PRACTICAL_RUN_S: fewer iterations, and a smaller size widget (the UNet's work per step grows
    with the latent area, so halving the side does about a quarter of the work at the largest sizes).
    """
    remaining = max(0, total - step)
    eta = rate * remaining
    on_cpu = device == "cpu"
    if remaining == 0 or (not on_cpu and eta <= LONG_RUN_S):
        return None
    fit = max(1, int(PRACTICAL_RUN_S / rate)) if rate > 0 else remaining
    parts = [f"{node}: {rate:.1f} s/step on {device}, so the remaining {remaining} steps take ≈ {format_duration(eta)}."]
    if fit < remaining:
        parts.append(f"For about {format_duration(PRACTICAL_RUN_S)}: iterations ≈ {step + fit} (rerun later with more to continue).")
    if size is not None and size.value > size.minimum:
        parts.append(f"Each step is cheaper with a smaller '{size.name}' (now {size.value}; {max(size.minimum, size.value // 2)} is ≈ ¼ of the UNet work).")
    if on_cpu:
        parts.append("On a CPU every step runs the full SD UNet: use a GPU (CUDA/MPS) for the paper's settings.")
    return " ".join(parts)
