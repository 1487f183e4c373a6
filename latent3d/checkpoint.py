"""Checkpoints: tensors in safetensors, everything else as JSON (no pickle anywhere).

A checkpoint is ``<stem>.safetensors`` (model, optimizer and RNG tensors; the JSON record also sits in its
header metadata so the file is self-contained) plus ``<stem>.json`` beside it for people to read. Writes go
to a temporary file (a unique name in the same folder) that then replaces the old one, so an interrupted or
failed write (disk full, kill -9) never destroys the last good checkpoint.

Reading is defensive: a truncated, random or pickled file, or a header whose numbers were edited into
nonsense, raises :class:`CheckpointError` (a ValueError) naming the file and what is wrong, never a
library's internal error.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, safe_open, save_file

FORMAT_VERSION = 2
"""2: field MLPs with biases, per-step 'skipped' history, identity fingerprints (0.2). 1: 0.1."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, not ours, or internally inconsistent."""


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(error.errno, f"no space left on the disk while writing {path}; the previous file is intact. Free some space") from error
        raise


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    state = optimizer.state_dict()
    tensors = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            tensors[f"optim.{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, state["param_groups"]


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], param_groups: list[dict[str, Any]], source: str = "checkpoint") -> None:
    """Restore ``optimizer`` from :func:`optimizer_tensors` output, checking groups and shapes first."""
    current = optimizer.state_dict()["param_groups"]
    if not isinstance(param_groups, list) or len(param_groups) != len(current):
        raise CheckpointError(f"{source}: optimizer_param_groups must be a list of {len(current)} groups, got {param_groups!r:.200}")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for number, (saved, now) in enumerate(zip(param_groups, current)):
        if not isinstance(saved, dict) or sorted(saved.get("params", [])) != sorted(now["params"]):
            raise CheckpointError(f"{source}: optimizer group {number} does not hold the parameters of this model")
        for key in ("lr", "eps"):
            value = saved.get(key)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
                raise CheckpointError(f"{source}: optimizer group {number} has {key}={value!r}; it must be a positive finite number")
        betas = saved.get("betas")
        if not (isinstance(betas, (list, tuple)) and len(betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas)):
            raise CheckpointError(f"{source}: optimizer group {number} has betas={betas!r}; they must be two numbers in [0, 1)")
        saved["betas"] = tuple(betas)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        if not index.isdigit() or int(index) >= len(params):
            raise CheckpointError(f"{source}: optimizer tensor {name} refers to no parameter of this model")
        if key in ("exp_avg", "exp_avg_sq") and value.shape != params[int(index)].shape:
            raise CheckpointError(f"{source}: {name} has shape {list(value.shape)}, the parameter has {list(params[int(index)].shape)}")
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


def load_module_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """``module.load_state_dict(tensors)`` after checking names and shapes (CheckpointError naming them)."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{source}: model tensors do not match this model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise CheckpointError(f"{source}: model tensor {key} has shape {list(value.shape)}, this model needs {list(expected[key].shape)}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{source}: model tensor {key} holds NaN or infinite values")
    module.load_state_dict(tensors)


def check_record_numbers(record: dict[str, Any], source: str | os.PathLike) -> None:
    """The counters of a record are sane: 0 <= skipped_steps <= step, integers."""
    step, skipped = record.get("step"), record.get("skipped_steps")
    for name, value in (("step", step), ("skipped_steps", skipped)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CheckpointError(f"{source}: its header has {name}={value!r}; it must be a non-negative integer")
    if skipped > step:
        raise CheckpointError(f"{source}: its header has skipped_steps={skipped} > step={step}")
    if not isinstance(record.get("config"), dict):
        raise CheckpointError(f"{source}: its header has no config")


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], record: dict[str, Any]) -> Path:
    """Write ``tensors`` and the JSON ``record`` atomically to ``path`` (.safetensors) and its .json twin."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"format": FORMAT_VERSION, **record}
    text = json.dumps(record, indent=1, sort_keys=True, allow_nan=False)
    cpu = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    _atomic_write(path, lambda tmp: save_file(cpu, str(tmp), metadata={"latent3d": text}))
    _atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(text))
    return path


def _unreadable(path: Path, error: Exception) -> CheckpointError:
    with path.open("rb") as f:
        head = f.read(2)
    what = "a pickle/torch.save file" if head in (b"PK", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") else "truncated or not a safetensors file"
    return CheckpointError(f"{path} is not a readable Latent3D checkpoint ({what}: {error}); checkpoints are never unpickled")


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON record stored in a checkpoint's header (no tensors are read)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own SafetensorError for any malformed header
        raise _unreadable(path, e) from e
    if "latent3d" not in meta:
        raise CheckpointError(f"{path} is not a Latent3D checkpoint (no 'latent3d' metadata)")
    try:
        record = json.loads(meta["latent3d"])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: its header record is not valid JSON ({e})") from e
    if not isinstance(record, dict):
        raise CheckpointError(f"{path}: its header record must be a JSON object, got {type(record).__name__}")
    if record.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {record.get('format')!r} is not supported by this version (it reads format {FORMAT_VERSION}); "
            "format 1 came from Latent3D 0.1, whose field MLP had no biases: train the run again"
        )
    return record


def load_checkpoint(path: str | os.PathLike, device="cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    record = read_record(path)
    try:
        tensors = load_file(str(path), device=str(device))
    except Exception as e:
        raise _unreadable(Path(path), e) from e
    return tensors, record


def subdict(tensors: dict[str, torch.Tensor], prefix: str, keep_prefix: bool = False) -> dict[str, torch.Tensor]:
    return {(k if keep_prefix else k[len(prefix) :]): v for k, v in tensors.items() if k.startswith(prefix)}
