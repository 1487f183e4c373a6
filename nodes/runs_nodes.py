"""Clear Runs: list or delete the training nodes' run folders (output/latent3d/runs)."""

from __future__ import annotations

from . import host, runs
from .api import io
from .progress import send_text
from .schema import build_schema
from .specs import CLEAR_RUNS


def report(root, keep_recent: int, delete: bool) -> str:
    """Delete (or, without ``delete``, list) every run folder under ``root`` but the ``keep_recent`` most
    recent and those in use; the text says what and how much."""
    before = runs.list_runs(root)
    if delete:
        removed = runs.remove_runs(root, keep_recent)
        left = runs.list_runs(root)
        return f"Deleted {runs.summary(removed)} from {root}; kept {runs.summary(left)}."
    doomed = before[keep_recent:]
    return (f"{root} holds {runs.summary(before)}. With 'delete' on, {runs.summary(doomed)} would be deleted "
            f"(all but the {keep_recent} most recent, and never a run in progress).")  # fmt: skip


class ClearRuns(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return build_schema(CLEAR_RUNS, hidden_node_id=True)

    @classmethod
    def fingerprint_inputs(cls, keep_recent: int, delete: bool) -> float:
        return float("nan")  # the folder changes between queues: never answer from ComfyUI's cache

    @classmethod
    def execute(cls, keep_recent: int, delete: bool) -> io.NodeOutput:
        text = report(host.runs_root(), keep_recent, delete)
        send_text(cls.hidden.unique_id, text)
        return io.NodeOutput(text, ui={"text": [text]})
