"""Checkpoint files that cannot be trusted (truncated, random, pickled, edited) give one clear error; a failed
write (disk full) keeps the previous checkpoint; resume refuses another model; the run lock and the
metrics log behave."""

from __future__ import annotations

import errno
import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from latent3d.checkpoint import CheckpointError, load_checkpoint, read_record, save_checkpoint
from latent3d.guidance.denoiser import OracleDenoiser
from latent3d.guidance.prompts import PromptEmbeddings
from latent3d.nerf.train import NerfConfig, NerfTrainer, fit_latent_nerf, load_latent_nerf
from latent3d.runfolder import FolderInUseError, FolderLock, MetricsLog

pytestmark = pytest.mark.unit


def embeddings(width=8):
    return PromptEmbeddings.single(torch.zeros(1, 4, width), torch.zeros(1, 4, width))


def zero_oracle():
    return OracleDenoiser(lambda cams, h, w: torch.zeros(len(cams), 4, h, w))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "nerf.safetensors"
    fit_latent_nerf(NerfConfig.tiny(iterations=2), zero_oracle(), embeddings(), device="cpu", checkpoint_path=path)
    return path


def rewrite(source, target, edit_record=None, edit_tensors=None):
    """Copy a checkpoint to ``target`` with its header record and/or tensors edited."""
    tensors = load_file(str(source))
    record = read_record(source)
    if edit_record:
        edit_record(record)
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, str(target), metadata={"latent3d": json.dumps(record)})
    return target


def corrupt(kind, trained, tmp_path):
    path = tmp_path / "bad.safetensors"
    data = trained.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        path.write_bytes(torch.randint(0, 256, (5000,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy().tobytes())
    elif kind == "pickle":
        torch.save({"model": torch.zeros(3)}, path)
    elif kind == "step":
        rewrite(trained, path, lambda r: r.update(step=-3))
    elif kind == "step_text":
        rewrite(trained, path, lambda r: r.update(step="ten"))
    elif kind == "skipped":
        rewrite(trained, path, lambda r: r.update(skipped_steps=99))
    elif kind == "lr":
        rewrite(trained, path, lambda r: r["optimizer_param_groups"][0].update(lr="fast"))
    elif kind == "config":
        rewrite(trained, path, lambda r: r["config"].update(iterations="many"))
    elif kind == "shape":
        rewrite(trained, path, edit_tensors=lambda t: t.update({"model.field.mlp.0.weight": torch.zeros(3, 3)}))
    elif kind == "nan":
        rewrite(trained, path, edit_tensors=lambda t: t["model.field.mlp.0.bias"].fill_(math.nan))
    elif kind == "history":
        rewrite(trained, path, edit_tensors=lambda t: t.update({"history.loss": torch.zeros(7, dtype=torch.float64)}))
    elif kind == "rng":
        rewrite(trained, path, edit_tensors=lambda t: t.update({"rng.train": torch.zeros(3, dtype=torch.uint8)}))
    return path


RESUME_CASES = ["truncated", "random", "pickle", "step", "step_text", "skipped", "lr", "config", "shape", "nan", "history", "rng"]
MESSAGES = {
    "truncated": "truncated or not a safetensors file", "random": "not a readable Latent3D checkpoint", "pickle": "pickle",
    "step": "step=-3", "step_text": "step='ten'", "skipped": "skipped_steps=99 > step=2", "lr": "lr='fast'",
    "config": "iterations", "shape": r"mlp\.0\.weight has shape \[3, 3\]", "nan": "NaN", "history": r"history\.loss holds \[7\]",
    "rng": "rng.train",
}


@pytest.mark.parametrize("kind", RESUME_CASES)
def test_resume_from_a_corrupt_checkpoint_raises_one_clear_error(kind, trained, tmp_path):
    path = corrupt(kind, trained, tmp_path)
    trainer = NerfTrainer(NerfConfig.tiny(iterations=4), zero_oracle(), embeddings(), "cpu")
    with pytest.raises(CheckpointError, match=MESSAGES[kind]) as info:
        trainer.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("kind", ["truncated", "pickle", "config", "shape"])
def test_loading_a_corrupt_checkpoint_for_export_raises_checkpoint_error(kind, trained, tmp_path):
    with pytest.raises(CheckpointError):
        load_latent_nerf(corrupt(kind, trained, tmp_path))


def test_a_failed_write_keeps_the_previous_checkpoint(trained, tmp_path, monkeypatch):
    path = tmp_path / "nerf.safetensors"
    path.write_bytes(trained.read_bytes())
    before = path.read_bytes()

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("latent3d.checkpoint.save_file", disk_full)
    with pytest.raises(OSError, match="no space left.*previous file is intact"):
        save_checkpoint(path, {"x": torch.zeros(2)}, {"kind": "test"})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nerf.safetensors"]  # no temporary file left behind


def test_checkpoint_temporary_files_are_unique(tmp_path, monkeypatch):
    """Two writers of one path never share a temporary file (the old fixed name crashed the second)."""
    names = []
    real = save_file

    def spy(tensors, filename, metadata=None):
        names.append(filename)
        real(tensors, filename, metadata=metadata)

    monkeypatch.setattr("latent3d.checkpoint.save_file", spy)
    for _ in range(2):
        save_checkpoint(tmp_path / "a.safetensors", {"x": torch.zeros(1)}, {"kind": "t"})
    assert len(set(names)) == 2
    tensors, record = load_checkpoint(tmp_path / "a.safetensors")
    assert record["kind"] == "t" and torch.equal(tensors["x"], torch.zeros(1))


@pytest.mark.smoke
def test_resume_refuses_another_model(tmp_path):
    from latent3d.tiny import build_tiny_components

    path = tmp_path / "nerf.safetensors"
    first, other = build_tiny_components(seed=0), build_tiny_components(seed=1)
    emb = PromptEmbeddings.single(torch.zeros(1, 77, 32), torch.zeros(1, 77, 32))
    config = NerfConfig.tiny(iterations=1)
    fit_latent_nerf(config, first.denoiser, emb, device="cpu", checkpoint_path=path)
    more = NerfConfig.tiny(iterations=2)
    with pytest.raises(ValueError, match=r"another model \(--model / MODEL\)"):
        fit_latent_nerf(more, other.denoiser, emb, device="cpu", checkpoint_path=path, resume=True)
    assert fit_latent_nerf(more, first.denoiser, emb, device="cpu", checkpoint_path=path, resume=True).step == 2


def test_folder_lock_is_exclusive_and_released(tmp_path):
    with FolderLock(tmp_path / "run"):
        with pytest.raises(FolderInUseError, match=r"in use by another run \(pid \d+\)"):
            with FolderLock(tmp_path / "run"):
                pass
    with FolderLock(tmp_path / "run"):  # released on exit
        pass


def test_metrics_log_is_flushed_per_line_json_and_truncated_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    log.write({"step": 1, "loss": float("nan"), "sds": float("inf")})
    log.write({"step": 2, "loss": 0.5})
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"step": 1, "loss": None, "sds": None}, {"step": 2, "loss": 0.5}]
    log.write({"step": 3, "loss": 0.25})
    log.close()
    with MetricsLog(path, keep_until=2) as resumed:  # the run resumes from its step-2 checkpoint
        resumed.write({"step": 3, "loss": 0.3})
    assert [json.loads(line)["loss"] for line in path.read_text().splitlines()] == [None, 0.5, 0.3]


@pytest.mark.smoke
def test_a_completed_run_can_drop_its_optimizer_state_and_still_continue(tmp_path):
    full, slim = tmp_path / "full.safetensors", tmp_path / "slim.safetensors"
    config = NerfConfig.tiny(iterations=2)
    fit_latent_nerf(config, zero_oracle(), embeddings(), device="cpu", checkpoint_path=full)
    fit_latent_nerf(config, zero_oracle(), embeddings(), device="cpu", checkpoint_path=slim, keep_optimizer=False)
    assert slim.stat().st_size < 0.5 * full.stat().st_size
    tensors, record = load_checkpoint(slim)
    assert record["optimizer_state"] is False and not any(k.startswith("optim.") for k in tensors)
    more = fit_latent_nerf(NerfConfig.tiny(iterations=3), zero_oracle(), embeddings(), device="cpu", checkpoint_path=slim, resume=True)
    assert more.step == 3 and more.status == "completed"
