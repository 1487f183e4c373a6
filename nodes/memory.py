"""The memory a training step will need, checked against the device before a run starts.

An estimate per step is the sum of named parts: the UNet call (ComfyUI's own ``model.memory_required`` for
the SDS batch of 2: conditional and unconditional), the field's render with gradients, and stage extras
(the VAE encoder's activations in RGB refinement). A run whose estimate exceeds what the device has free is
refused before it starts, naming the widget that sets the size, the estimate and a value that fits.
The arithmetic here is host-free; :func:`device_free_bytes` and :func:`unet_bytes` ask ComfyUI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

GB = 1024**3

RENDER_BYTES_PER_SAMPLE = 1_800
"""Bytes a ray sample keeps for the backward pass of a Latent-NeRF render (hash grid, MLPs, compositing):
1.6–1.8 KB measured on CPU in fp32 with the paper's field (64² and 32² renders)."""
SAMPLES_PER_RAY = 64
"""Samples per ray assumed by the estimate: 20–28 were measured at the start of training (a compact
density blob); a grown object has more, so the estimate leaves room for about three times that."""
OCCUPANCY_REFRESH_BYTES = 1.0 * GB
"""The occupancy grid refresh (128³ cells, chunked, every 16 steps): 0.6–0.9 GB peak measured on CPU."""
SDS_BATCH = 2
"""Latents per UNet call in score distillation: the view's conditional and unconditional prediction."""


def render_bytes(side: int) -> float:
    """Estimated bytes of one training render of ``side``² rays with gradients (plus the occupancy refresh)."""
    return side * side * SAMPLES_PER_RAY * RENDER_BYTES_PER_SAMPLE + OCCUPANCY_REFRESH_BYTES


def gigabytes(n: float) -> str:
    return f"{n / GB:.1f} GB"


@dataclass(frozen=True)
class StepEstimate:
    """Named parts of a step's memory, in bytes."""

    parts: dict[str, float]

    @property
    def total(self) -> float:
        return float(sum(self.parts.values()))

    def describe(self) -> str:
        return ", ".join(f"{name} ≈ {gigabytes(value)}" for name, value in self.parts.items() if value >= 0.05 * GB)


def refusal(node: str, widget: str, value: int, estimate: StepEstimate, free: float, device: str,
            smaller: Callable[[int], StepEstimate] | None, minimum: int, step: int) -> str | None:
    """The error text when ``estimate`` exceeds ``free`` bytes, else None.

    ``smaller(v)`` estimates another value of ``widget``; the text names the largest value from ``value``
    down to ``minimum`` (in steps of ``step``) that fits, when one does.
    """
    if estimate.total <= free:
        return None
    text = (f"{node}: {widget} {value} needs ≈ {gigabytes(estimate.total)} per step ({estimate.describe()}), "
            f"but {device} has {gigabytes(free)} free.")  # fmt: skip
    fits = None
    if smaller is not None:
        for candidate in range(value - step, minimum - 1, -step):
            if smaller(candidate).total <= free:
                fits = candidate
                break
    if fits is not None:
        text += f" Lower '{widget}' to {fits} or less (≈ {gigabytes(smaller(fits).total)}), or free memory (close other models or programs)."
    else:
        text += " Free memory (close other models or programs) or use a device with more memory."
    return text


# -- what ComfyUI knows ------------------------------------------------------------------------------------
def unet_bytes(model: Any, side: int, batch: int = SDS_BATCH) -> float:
    """ComfyUI's estimate of one UNet call's activation memory for ``batch`` latents of ``side``²."""
    channels = int(model.model.latent_format.latent_channels)
    return float(model.memory_required([batch, channels, side, side]))


def device_free_bytes(model: Any, device: Any) -> float:
    """What a step may use on ``device``: the free memory, plus (on an accelerator) what ComfyUI would
    unload for this model, minus this model's weights that still have to be loaded there (unless the host
    runs with --lowvram/--novram, which streams them)."""
    import comfy.model_management as mm

    free = float(mm.get_free_memory(device))
    if getattr(device, "type", "cpu") in ("cpu", "mps"):
        return free
    others = [m for m in mm.current_loaded_models if m.model is not None and m.model is not model and m.device == device]
    free += sum(float(m.model_loaded_memory()) for m in others)
    low = getattr(mm, "vram_state", None) in (getattr(mm.VRAMState, "LOW_VRAM", None), getattr(mm.VRAMState, "NO_VRAM", None))
    if not low:
        free -= float(model.model_size() - model.loaded_size())
    return free


def check_step_memory(node: str, model: Any, device: Any, widget: str, value: int, estimate: Callable[[int], StepEstimate],
                      minimum: int = 8, step: int = 8) -> StepEstimate:
    """Raise ValueError (with :func:`refusal`'s text) when a step at ``widget`` = ``value`` does not fit
    on ``device``; returns the estimate otherwise."""
    current = estimate(value)
    message = refusal(node, widget, value, current, device_free_bytes(model, device), str(device), estimate, minimum, step)
    if message is not None:
        raise ValueError(message)
    return current
