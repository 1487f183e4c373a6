"""Which device a run uses: the default, and checking a user's choice before anything is loaded."""

from __future__ import annotations

import torch


def default_device() -> torch.device:
    """CUDA when available, else the CPU (MPS only when asked for: several ops fall back to the CPU there)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def parse_device(name: str | torch.device | None, argument: str = "device") -> torch.device:
    """``name`` as a usable torch device (None: ``default_device()``).

    Raises ValueError naming ``argument`` when the name is not a device ("gpu", "cuda:x") or the device is
    not usable here (CUDA without a CUDA build or GPU, an index past the GPU count, MPS off a Mac).
    """
    if name is None:
        return default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"{argument} must be a device such as cpu, cuda, cuda:1 or mps, got {str(name)!r}") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"{argument} {str(name)!r} is not available: {build} (torch {torch.__version__}); use cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"{argument} {str(name)!r} is not available: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"{argument} {str(name)!r} is not available: MPS needs a Mac with Apple silicon and a torch built with MPS; use cpu")
    elif device.type != "cpu":
        raise ValueError(f"{argument} must be cpu, cuda, cuda:N or mps, got {str(name)!r}")
    return device
