"""Checkpoints: tensors in safetensors, everything else as JSON (no pickle anywhere).

A checkpoint is ``<stem>.safetensors`` (model, optimizer and RNG tensors; the JSON record also sits in its
header metadata so the file is self-contained) plus ``<stem>.json`` beside it for people to read. Writes go
to a temporary file that then replaces the old one, so an interrupted write never destroys the last good
checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file

FORMAT_VERSION = 1


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    state = optimizer.state_dict()
    tensors = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            tensors[f"optim.{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, state["param_groups"]


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], param_groups: list[dict[str, Any]]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for group in param_groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], record: dict[str, Any]) -> Path:
    """Write ``tensors`` and the JSON ``record`` atomically to ``path`` (.safetensors) and its .json twin."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"format": FORMAT_VERSION, **record}
    text = json.dumps(record, indent=1, sort_keys=True)
    cpu = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    _atomic_write(path, lambda tmp: save_file(cpu, str(tmp), metadata={"latent3d": text}))
    _atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(text))
    return path


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON record stored in a checkpoint's header (no tensors are read)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "latent3d" not in meta:
        raise ValueError(f"{path} is not a Latent3D checkpoint (no 'latent3d' metadata)")
    record = json.loads(meta["latent3d"])
    if record.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {record.get('format')!r} is not supported (expected {FORMAT_VERSION})")
    return record


def load_checkpoint(path: str | os.PathLike, device="cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    record = read_record(path)
    return load_file(str(path), device=str(device)), record


def subdict(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
