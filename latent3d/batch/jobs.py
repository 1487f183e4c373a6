"""Job files: JSONL (one JSON object a line) or CSV (a header row of the same names), read and validated
whole before anything runs.

Keys: ``kind`` ("nerf"; "paint"/"refine" where available; default "nerf"), ``prompt`` (required),
``negative``, ``seed`` (integer >= 0, default 0), ``iterations`` (positive integer, default the preset's),
``sketch`` / ``mesh`` / ``source`` (input files, which kinds take which in ``kinds.KINDS``: a sketch for
``nerf``, the mesh to paint for ``paint``, the Latent-NeRF run folder or checkpoint to refine for ``refine``;
relative paths are relative to the job file's folder), ``format``
(export format: glb, obj, ply; default glb) and ``overrides`` (an object of dotted config names → values,
e.g. ``{"sds.guidance_scale": 50}``; in CSV a JSON object in the cell). Blank lines, and JSONL lines
starting with ``#``, are skipped. Every bad line is reported with its line number and the rule it breaks
(:class:`JobFileError`); whether an input file exists and reads is checked when its job runs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .kinds import INPUTS, KINDS, adapter, unavailable_reason

KEYS = ("kind", "prompt", "negative", "seed", "iterations", "sketch", "mesh", "source", "format", "overrides")
LATER_KEYS = ("source",)
"""Keys added after the first job files: part of a job's hash only when set, so older jobs keep their folders."""
FORMATS = ("glb", "obj", "ply")  # latent3d.export.FORMATS, named here so validating needs no torch import


class JobFileError(ValueError):
    """A job file that cannot run: ``problems`` lists (line, message) for every bad line."""

    def __init__(self, path: Path, problems: list[tuple[int, str]]) -> None:
        self.path, self.problems = path, problems
        lines = "\n".join(f"  {path}:{line}: {message}" for line, message in problems)
        count = len({line for line, _ in problems})
        super().__init__(f"job file {path} has {count} bad line{'s' * (count != 1)}; nothing was run:\n{lines}")


@dataclass(frozen=True)
class BatchSettings:
    """What the batch command's flags set for every job (a job's ``overrides`` can change the config ones)."""

    model: str
    model_config: str | None = None
    preset: Literal["paper", "tiny"] = "paper"
    turntable_frames: int = 24
    preview_every: int = 100
    checkpoint_every: int = 250
    export_resolution: int = 256
    texture_size: int = 1024
    view_prompts: bool = True
    cpus_per_job: int | None = None
    """Torch threads per job (and CPUs reserved per Ray task); None: torch's default locally, 1 on Ray."""

    def identity(self) -> dict[str, Any]:
        """The settings that change what a job trains: part of every job's hash (its folder name)."""
        return {"model": self.model, "model_config": self.model_config, "preset": self.preset, "view_prompts": self.view_prompts}


@dataclass(frozen=True)
class Job:
    """One validated line of a job file."""

    line: int
    prompt: str
    kind: str = "nerf"
    negative: str = ""
    seed: int = 0
    iterations: int | None = None
    sketch: str | None = None
    mesh: str | None = None
    source: str | None = None
    format: str = "glb"
    overrides: dict[str, Any] = field(default_factory=dict)
    base: str = "."
    """The job file's folder: relative input paths are read from there."""

    def content(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in KEYS if k not in LATER_KEYS or getattr(self, k) is not None}

    def input_path(self, key: str) -> Path | None:
        value = getattr(self, key)
        if value is None:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else Path(self.base) / path


def job_hash(job: Job, settings: BatchSettings) -> str:
    """8 hex digits of SHA-256 over the job's content and the settings that change its result."""
    text = json.dumps({"job": job.content(), "settings": settings.identity()}, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def job_dir_name(job: Job, settings: BatchSettings) -> str:
    """``0003-a-hamburger-1a2b3c4d``: line number, the prompt's first words in safe characters, hash."""
    ascii_text = unicodedata.normalize("NFKD", job.prompt).encode("ascii", "ignore").decode().lower()
    slug = "-".join(re.findall(r"[a-z0-9]+", ascii_text))[:40].strip("-") or "job"
    return f"{job.line:04d}-{slug}-{job_hash(job, settings)}"


def read_jobs(path: str | Path, settings: BatchSettings) -> list[Job]:
    """Every job of the file at ``path``, or JobFileError listing every bad line (nothing half-read)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise JobFileError(path, [(1, f"not UTF-8 text ({e.reason} at byte {e.start})")]) from e
    except OSError as e:
        raise OSError(f"job file {path}: {e.strerror or e}") from e
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        records, problems = _jsonl_records(text)
    elif suffix == ".csv":
        records, problems = _csv_records(text)
    else:
        raise ValueError(f"job file {path} must end in .jsonl (one JSON object a line) or .csv, got {path.suffix or 'no suffix'!r}")
    jobs = []
    base = str(path.resolve().parent)
    for line, record in records:
        job, errors = _job(line, record, base, settings)
        problems.extend((line, message) for message in errors)
        if job is not None:
            jobs.append(job)
    if not records and not problems:
        problems.append((1, "no jobs: the file holds no job lines"))
    if problems:
        raise JobFileError(path, sorted(problems, key=lambda p: p[0]))
    return jobs


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"key {repeated[0]!r} appears twice")
    return dict(pairs)


def _jsonl_records(text: str) -> tuple[list[tuple[int, Any]], list[tuple[int, str]]]:
    records, problems = [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            records.append((number, json.loads(stripped, object_pairs_hook=_no_duplicates)))
        except json.JSONDecodeError as e:
            problems.append((number, f"not valid JSON: {e.msg} at column {e.colno}"))
        except ValueError as e:
            problems.append((number, str(e)))
    return records, problems


def _csv_records(text: str) -> tuple[list[tuple[int, Any]], list[tuple[int, str]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        return [], []
    except csv.Error as e:
        return [], [(1, f"not valid CSV: {e}")]
    problems = [(1, f"unknown column {name!r} (columns: {', '.join(KEYS)})") for name in header if name not in KEYS]
    problems += [(1, f"column {name!r} appears twice") for name in sorted(set(header)) if header.count(name) > 1]
    if problems:
        return [], problems
    records, last = [], reader.line_num
    try:
        for row in reader:
            line, last = last + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(header):
                problems.append((line, f"{len(row)} cells but the header names {len(header)} columns"))
                continue
            records.append((line, _csv_values(dict(zip(header, row)), line, problems)))
    except csv.Error as e:
        problems.append((reader.line_num, f"not valid CSV: {e}"))
    return records, problems


def _csv_values(row: dict[str, str], line: int, problems: list[tuple[int, str]]) -> dict[str, Any]:
    """CSV cells → the JSON types the validator expects; empty cells are absent keys."""
    values: dict[str, Any] = {}
    for key, cell in row.items():
        if cell.strip() == "":
            continue
        if key in ("seed", "iterations"):
            try:
                values[key] = int(cell.strip())
            except ValueError:
                values[key] = cell  # the validator names the rule
        elif key == "overrides":
            try:
                values[key] = json.loads(cell, object_pairs_hook=_no_duplicates)
            except ValueError as e:
                problems.append((line, f"overrides must be a JSON object, e.g. {{\"sds.guidance_scale\": 50}}: {e}"))
        else:
            values[key] = cell
    return values


def _job(line: int, record: Any, base: str, settings: BatchSettings) -> tuple[Job | None, list[str]]:
    if not isinstance(record, dict):
        return None, [f"a job must be a JSON object like {{\"prompt\": \"a hamburger\"}}, got {type(record).__name__}"]
    errors = [f"unknown key {key!r} (keys: {', '.join(KEYS)})" for key in record if key not in KEYS]
    values = {key: value for key, value in record.items() if key in KEYS and value is not None}
    kind = values.get("kind", "nerf")
    if not isinstance(kind, str) or kind not in KINDS:
        errors.append(f"kind must be one of {', '.join(repr(k) for k in KINDS)}, got {kind!r}")
    elif (reason := unavailable_reason(KINDS[kind])) is not None:
        errors.append(reason)
    prompt = values.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        errors.append("prompt is required: a non-empty string" + (f", got {prompt!r}" if "prompt" in values else ""))
    if not isinstance(values.get("negative", ""), str):
        errors.append(f"negative must be a string, got {values['negative']!r}")
    seed = values.get("seed", 0)
    if not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**63):
        errors.append(f"seed must be an integer in [0, 2^63), got {seed!r}")
    iterations = values.get("iterations")
    if iterations is not None and not (isinstance(iterations, int) and not isinstance(iterations, bool) and iterations > 0):
        errors.append(f"iterations must be a positive integer, got {iterations!r}")
    if values.get("format", "glb") not in FORMATS:
        errors.append(f"format must be one of {', '.join(FORMATS)}, got {values['format']!r}")
    overrides = values.get("overrides", {})
    if not isinstance(overrides, dict):
        errors.append(f"overrides must be an object of dotted config names to values, e.g. {{\"sds.guidance_scale\": 50}}, got {overrides!r}")
    errors += _input_errors(values, kind)
    if errors:
        return None, errors
    job = Job(line=line, base=base, **values)
    try:
        adapter(job.kind, "configure")(job, settings)
    except ValueError as e:
        return None, [str(e)]
    return job, []


def _input_errors(values: dict[str, Any], kind: Any) -> list[str]:
    entry = KINDS.get(kind) if isinstance(kind, str) else None
    errors = []
    for key in INPUTS:
        if key in values and not (isinstance(values[key], str) and values[key].strip()):
            errors.append(f"{key} must be a path (a non-empty string): {INPUTS[key]}, got {values[key]!r}")
        elif key in values and entry is not None and key not in entry.inputs:
            errors.append(f"{key} is not an input of kind {kind!r} (it takes: {', '.join(entry.inputs) or 'no input files'})")
    if entry is not None:
        errors += [f"kind {kind!r} needs {key}: {INPUTS[key]}" for key in entry.required if key not in values]
    return errors

