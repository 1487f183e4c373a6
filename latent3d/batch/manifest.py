"""The batch folder's ``manifest.json`` (every job's status, rewritten atomically as jobs start and end) and
``index.html`` (a static gallery: turntables, prompts, status, mesh links; no scripts, no network).

Only the driver process writes them, so they are never written concurrently; each write goes to a
temporary file in the same folder that replaces the old one (``os.replace``), so a reader (or a crash)
never sees half a file.
"""

from __future__ import annotations

import html
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .jobs import BatchSettings, Job, job_dir_name, job_hash
from .kinds import adapter
from .run import JobOutcome

MANIFEST = "manifest.json"
GALLERY = "index.html"
STATUSES = ("pending", "running", "done", "failed")


@dataclass
class Entry:
    """One job's line in the manifest."""

    job: Job
    dir: str
    hash: str
    total: int | None = None
    """Steps the job trains for (None when its kind has no step count)."""
    status: str = "pending"
    step: int = 0
    wall_s: float | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    resumed_from: int = 0

    def record(self) -> dict[str, Any]:
        return {
            "line": self.job.line, "kind": self.job.kind, "prompt": self.job.prompt, "hash": self.hash, "status": self.status,
            "dir": self.dir, "step": self.step, "iterations": self.total, "wall_s": self.wall_s, "resumed_from": self.resumed_from,
            "outputs": self.outputs, "error": self.error,
        }


class Manifest:
    """The jobs of one batch folder and their status; ``write()`` saves manifest.json and index.html."""

    def __init__(self, out: Path, jobs: list[Job], settings: BatchSettings, jobs_file: str) -> None:
        self.out, self.settings, self.jobs_file = Path(out), settings, jobs_file
        self.entries = [Entry(job, job_dir_name(job, settings), job_hash(job, settings), _total(job, settings)) for job in jobs]

    def job_dir(self, entry: Entry) -> Path:
        return self.out / entry.dir

    def set(self, entry: Entry, status: str, outcome: JobOutcome | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        entry.status = status
        if outcome is not None:
            entry.step, entry.wall_s, entry.outputs, entry.error = outcome.step, outcome.wall_s, outcome.outputs, outcome.error
            entry.resumed_from = outcome.resumed_from

    def counts(self) -> dict[str, int]:
        return {status: sum(e.status == status for e in self.entries) for status in STATUSES}

    def write(self) -> None:
        data = {
            "jobs_file": self.jobs_file, "model": self.settings.model, "preset": self.settings.preset,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "counts": self.counts(), "jobs": [e.record() for e in self.entries],
        }
        _atomic_write(self.out / MANIFEST, json.dumps(data, indent=1, allow_nan=False) + "\n")
        _atomic_write(self.out / GALLERY, gallery_html(self))


def _total(job: Job, settings: BatchSettings) -> int | None:
    config = adapter(job.kind, "configure")(job, settings).get(job.kind)
    return getattr(config, "iterations", None)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
h1{font-size:1.3em}.summary{margin-bottom:1em;color:#555}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:1em}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em;overflow-wrap:anywhere}
.card img{width:100%;image-rendering:pixelated;background:#eee;border-radius:4px}
.noimg{height:120px;display:flex;align-items:center;justify-content:center;background:#eee;color:#999;border-radius:4px}
.prompt{font-weight:600;margin:.4em 0}.meta{font-size:.85em;color:#666}
.badge{display:inline-block;padding:0 .5em;border-radius:1em;font-size:.8em;color:#fff}
.done{background:#2e7d32}.failed{background:#c62828}.running{background:#1565c0}.pending{background:#888}
.error{font-size:.8em;color:#c62828;white-space:pre-wrap}
"""


def gallery_html(manifest: Manifest) -> str:
    """index.html for ``manifest``: one card per job; every user string escaped, every link relative."""
    counts = manifest.counts()
    active = counts["pending"] + counts["running"] > 0
    refresh = '<meta http-equiv="refresh" content="30">' if active else ""
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    cards = "\n".join(_card(e, manifest.out) for e in manifest.entries)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{refresh}<title>latent3d batch: {_e(manifest.jobs_file)}</title>'
        f"<style>{_CSS}</style></head><body>\n<h1>latent3d batch: {_e(manifest.jobs_file)}</h1>\n"
        f'<div class="summary">{_e(summary)} · model {_e(manifest.settings.model)} · <a href="{MANIFEST}">manifest.json</a></div>\n'
        f'<div class="grid">\n{cards}\n</div></body></html>\n'
    )


def _card(entry: Entry, out: Path) -> str:
    turntable = entry.outputs.get("turntable")
    if turntable and (out / turntable).is_file():
        image = f'<img src="{_href(turntable)}" alt="turntable of line {entry.job.line}">'
    else:
        image = f'<div class="noimg">{_e(entry.status)}</div>'
    links = [f'<a href="{_href(p)}">{_e(Path(p).name)}</a>' for p in entry.outputs.get("mesh") or [] if (out / p).is_file()]
    checkpoint = entry.outputs.get("checkpoint")
    if checkpoint and (out / checkpoint).is_file():
        links.append(f'<a href="{_href(checkpoint)}">checkpoint</a>')
    total = entry.total
    steps = f"step {entry.step}" + (f" of {total}" if total else "")
    wall = f" · {entry.wall_s:.0f} s" if entry.wall_s else ""
    error = f'<div class="error">{_e(entry.error)}</div>' if entry.error else ""
    return (
        f'<div class="card">{image}<div class="prompt">{_e(entry.job.prompt)}</div>'
        f'<div class="meta"><span class="badge {_e(entry.status)}">{_e(entry.status)}</span> line {entry.job.line} · {_e(entry.job.kind)}'
        f" · seed {entry.job.seed} · {steps}{wall}</div>"
        f'<div class="meta">{" · ".join(links)}</div>{error}</div>'
    )


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _href(relative: str) -> str:
    """A relative URL for a path inside the batch folder (each part percent-encoded)."""
    return "/".join(quote(part) for part in Path(relative).parts)
