"""fit_latent_nerf: optimize a Latent-NeRF by score distillation (DESIGN §1), resumable and reproducible."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from ..checkpoint import load_checkpoint, load_optimizer, optimizer_tensors, save_checkpoint, subdict
from ..config import config_from_dict, config_to_dict
from ..guidance.denoiser import Denoiser
from ..guidance.prompts import PromptEmbeddings
from ..guidance.sds import SdsConfig, opacity_entropy, sds_loss
from .cameras import CameraConfig, eval_cameras, orbit_cameras, sample_cameras
from .field import FieldConfig
from .grid import GridConfig, TorchGridEncoding
from .model import LatentNeRF
from .render import RenderConfig

log = logging.getLogger(__name__)

# fields that may change between a run and its resumption without changing what is being optimized
RESUMABLE_CHANGES = ("iterations", "preview_every", "preview_resolution", "checkpoint_every")


@dataclass
class NerfConfig:
    """Latent-NeRF training. Defaults are the paper's (official code); see ``tiny()`` for tests."""

    iterations: int = 5000
    """Optimization steps (one random view each)."""
    resolution: int = 64
    """Latent render size (64 → a 512² image for SD1.x); a multiple of 8 for Stable Diffusion UNets."""
    seed: int = 0
    """Seeds the generator behind every random draw (cameras, timesteps, noise, jitter, occupancy)."""
    lr_grid: float = 1e-2
    """Adam learning rate of the grid encoding."""
    lr_mlp: float = 1e-3
    """Adam learning rate of the MLPs (field and background)."""
    adam_betas: tuple[float, float] = (0.9, 0.99)
    """Adam β1, β2."""
    adam_eps: float = 1e-15
    """Adam ε."""
    sds_weight: float = 1.0
    """Weight of the SDS loss; 0 skips the denoiser entirely (e.g. shape-only fitting)."""
    sparsity_weight: float = 33.0
    """Weight of the mean opacity entropy (5e-4 in the official code, ×2^16 for its unscaled SDS)."""
    preview_every: int = 100
    """Render a preview latent for on_step every this many steps (and at the last step); 0 disables."""
    preview_resolution: int = 64
    """Latent size of preview renders."""
    checkpoint_every: int = 250
    """Save a checkpoint every this many steps (when a checkpoint path is given); 0: only at the end."""
    mixed_precision: bool = True
    """fp16 autocast and gradient scaling on CUDA (ignored on CPU)."""
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    render: RenderConfig = dataclasses.field(default_factory=RenderConfig)
    camera: CameraConfig = dataclasses.field(default_factory=CameraConfig)
    sds: SdsConfig = dataclasses.field(default_factory=SdsConfig)

    def __post_init__(self) -> None:
        for name in ("iterations", "resolution", "preview_resolution"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"NerfConfig.{name} must be a positive integer, got {value!r}")
        for name in ("preview_every", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"NerfConfig.{name} must be a non-negative integer, got {value!r}")
        for name in ("lr_grid", "lr_mlp", "adam_eps"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"NerfConfig.{name} must be a positive finite number, got {value!r}")
        for name in ("sds_weight", "sparsity_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"NerfConfig.{name} must be a finite number >= 0, got {value!r}")
        if not isinstance(self.seed, int):
            raise ValueError(f"NerfConfig.seed must be an integer, got {self.seed!r}")

    @classmethod
    def paper(cls) -> "NerfConfig":
        """The official Latent-NeRF settings."""
        return cls()

    @classmethod
    def tiny(cls, **changes: Any) -> "NerfConfig":
        """A small, fast configuration for tests and CPU smoke runs (16² latents, 8-level 2^14 grid)."""
        config = cls(
            iterations=20,
            resolution=16,
            preview_every=10,
            preview_resolution=16,
            checkpoint_every=0,
            field=FieldConfig(grid=GridConfig(levels=8, finest_resolution=256, log2_table_size=14), hidden_dim=32, background_hidden_dim=16),
            render=RenderConfig(occupancy_resolution=32, step_size=2.0 / 48, occupancy_update_fraction=0.25),
        )
        return dataclasses.replace(config, **changes)


def run_identity(config: NerfConfig) -> dict[str, Any]:
    """The config fields that define a run: all but those a resumption may change (RESUMABLE_CHANGES)."""
    return {k: v for k, v in config_to_dict(config).items() if k not in RESUMABLE_CHANGES}


class ShapeGuide(Protocol):
    """A loss on the packed samples of the current view (e.g. Sketch-Shape guidance)."""

    def __call__(self, points: torch.Tensor, sigma: torch.Tensor, step: int) -> torch.Tensor:
        """points [S, 3], sigma [S] -> scalar loss (already weighted)."""
        ...


@dataclass
class NerfResult:
    model: LatentNeRF
    config: NerfConfig
    step: int
    """Completed steps."""
    skipped_steps: int
    """Steps skipped because their loss or gradient was not finite."""
    status: str
    """"completed" or "interrupted"."""
    history: dict[str, list[float]]
    checkpoint_path: Path | None = None


class StepTimer:
    """Accumulates wall time per named section (CUDA-synchronized); used by benchmarks."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.totals: dict[str, float] = {}

    @contextlib.contextmanager
    def section(self, name: str):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - start


def _no_timer(name: str):
    return contextlib.nullcontext()


def make_adam(groups: list[dict[str, Any]], config: NerfConfig, device: torch.device) -> torch.optim.Adam:
    """Adam with the fused kernel where this torch has it for ``device`` (on CPU ~8x faster than the
    default for the 24M grid values; same update rule), else the default implementation."""
    kwargs = {"betas": tuple(config.adam_betas), "eps": config.adam_eps}
    if device.type in ("cpu", "cuda"):
        try:
            return torch.optim.Adam(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):  # older torch: no fused Adam for this device
            pass
    return torch.optim.Adam(groups, **kwargs)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class NerfTrainer:
    """The state of one Latent-NeRF optimization and its step. ``fit_latent_nerf`` drives it."""

    def __init__(
        self,
        config: NerfConfig,
        denoiser: Denoiser,
        embeddings: PromptEmbeddings,
        device: torch.device | str | None = None,
        shape_guide: ShapeGuide | None = None,
    ) -> None:
        if not isinstance(config, NerfConfig):
            raise ValueError(f"config must be a NerfConfig, got {type(config).__name__}")
        if not isinstance(embeddings, PromptEmbeddings):
            raise ValueError(f"embeddings must be PromptEmbeddings, got {type(embeddings).__name__}")
        width = getattr(denoiser, "embedding_dim", None)
        if width is not None and embeddings.width != width:
            raise ValueError(f"embeddings width must equal the denoiser's cross-attention width {width}, got {embeddings.width}")
        self.config = config
        self.device = torch.device(device) if device is not None else default_device()
        self.denoiser = denoiser
        self.embeddings = embeddings.to(self.device)
        self.shape_guide = shape_guide
        # parameter init draws from the global RNGs: fork them so the seed decides the init, and the
        # caller's random state is left alone
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(config.seed)
            self.model = LatentNeRF(config.field, config.render, self.device)
        grid_params = list(self.model.field.encoding.parameters())
        mlp_params = list(self.model.field.mlp.parameters()) + list(self.model.background.parameters())
        self.optimizer = make_adam(
            [{"params": grid_params, "lr": config.lr_grid}, {"params": mlp_params, "lr": config.lr_mlp}], config, self.device
        )
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.amp = config.mixed_precision and self.device.type == "cuda"
        # SDS gradients with guidance scale 100 are large: start the fp16 loss scale at 2^10, not 2^16, so
        # fewer early steps overflow (each overflow is skipped and counted like any non-finite step)
        self.scaler = torch.amp.GradScaler("cuda", init_scale=2.0**10, enabled=self.amp)
        self.step = 0
        self.skipped_steps = 0
        self.history: dict[str, list[float]] = {k: [] for k in ("loss", "sds", "sparsity", "shape", "timestep", "samples")}
        self._rng_at_step_start: torch.Tensor | None = None

    # -- one optimization step ------------------------------------------------------------------------
    def train_step(self, timer: StepTimer | None = None) -> dict[str, float]:
        section = timer.section if timer else _no_timer
        config = self.config
        self._rng_at_step_start = self.generator.get_state()
        self.optimizer.zero_grad(set_to_none=True)
        if self.step % config.render.occupancy_update_every == 0:
            with section("occupancy"):
                self.model.update_occupancy(self.generator)
        cameras = sample_cameras(config.camera, 1, self.generator, self.device)
        cond, uncond = self.embeddings.select(cameras.labels(config.camera))
        autocast = torch.autocast("cuda", dtype=torch.float16, enabled=self.amp)
        with section("render_forward"), autocast:
            view, packed = self.model.render(cameras, config.resolution, config.resolution, self.generator, jitter=True)
        if config.sds_weight > 0:
            with section("unet"), autocast:
                sds = sds_loss(view.latent, self.denoiser, cond, uncond, config.sds, self.generator, cameras)
            sds_term, timestep = sds.loss, float(sds.timesteps[0])
        else:
            sds_term, timestep = view.latent.new_zeros(()), -1.0
        with section("losses"):
            sparsity = opacity_entropy(view.opacity)
            loss = config.sds_weight * sds_term + config.sparsity_weight * sparsity
            shape = self.shape_guide(packed.points, packed.sigma, self.step) if self.shape_guide else loss.new_zeros(())
            loss = loss + shape
        finite = bool(torch.isfinite(loss))
        if finite:
            with section("render_backward"):
                self.scaler.scale(loss).backward()
            with section("optimizer"):
                self.scaler.unscale_(self.optimizer)
                finite = all(bool(torch.isfinite(p.grad).all()) for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None)
                if finite:
                    self.scaler.step(self.optimizer)
                self.scaler.update()
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_steps += 1
            log.warning("step %d skipped: non-finite loss or gradient (%d skipped so far)", self.step, self.skipped_steps)
        metrics = {
            "loss": float(loss.detach()),
            "sds": float(sds_term.detach()),
            "sparsity": float(sparsity.detach()),
            "shape": float(shape.detach()),
            "timestep": timestep,
            "samples": float(view.samples),
        }
        for key, value in metrics.items():
            self.history[key].append(value)
        self.step += 1
        self._rng_at_step_start = None
        return metrics

    @torch.no_grad()
    def preview(self, phi: float | None = None) -> torch.Tensor:
        """A latent render [C, h, w] from the evaluation orbit (azimuth follows progress by default)."""
        cam = self.config.camera
        phi = 360.0 * self.step / self.config.iterations if phi is None else phi
        cameras = orbit_cameras([phi], cam.eval_theta, cam.eval_radius, cam.eval_fovy, self.device)
        size = self.config.preview_resolution
        return self.model.render_latents(cameras, size, size).latent[0].float().cpu()

    # -- checkpoints -----------------------------------------------------------------------------------
    def state_record(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optim, groups = optimizer_tensors(self.optimizer)
        tensors.update(optim)
        rng = self._rng_at_step_start if self._rng_at_step_start is not None else self.generator.get_state()
        tensors["rng.train"] = rng
        for key, values in self.history.items():
            tensors[f"history.{key}"] = torch.tensor(values, dtype=torch.float64)
        record = {
            "kind": "latent_nerf",
            "step": self.step,
            "skipped_steps": self.skipped_steps,
            "config": config_to_dict(self.config),
            "embeddings": self.embeddings.fingerprint(),
            "shape_guide": self._guide_fingerprint(),
            "grid_backend": self._grid_backend(),
            "optimizer_param_groups": groups,
            "grad_scaler": self.scaler.state_dict() if self.amp else None,
        }
        return tensors, record

    def _grid_backend(self) -> str:
        return "torch" if isinstance(self.model.field.encoding, TorchGridEncoding) else "tcnn"

    def _guide_fingerprint(self) -> str | None:
        if self.shape_guide is None:
            return None
        fingerprint = getattr(self.shape_guide, "fingerprint", None)
        return fingerprint() if callable(fingerprint) else type(self.shape_guide).__name__

    def save(self, path: str | Path) -> Path:
        tensors, record = self.state_record()
        return save_checkpoint(path, tensors, record)

    def load(self, path: str | Path) -> None:
        """Restore a checkpoint written by ``save`` for the same run (config and prompts must match)."""
        tensors, record = load_checkpoint(path, self.device)
        saved = config_from_dict(NerfConfig, record["config"])
        differences = [
            f.name for f in dataclasses.fields(NerfConfig) if f.name not in RESUMABLE_CHANGES and getattr(saved, f.name) != getattr(self.config, f.name)
        ]
        if differences:
            raise ValueError(f"cannot resume {path}: config differs in {differences}; use another checkpoint path or the same settings")
        if record["embeddings"] != self.embeddings.fingerprint():
            raise ValueError(f"cannot resume {path}: it was trained with other prompt embeddings")
        if record.get("grid_backend", "torch") != self._grid_backend():
            raise ValueError(
                f"cannot resume {path}: it was trained with the {record.get('grid_backend')} grid backend and this run uses "
                f"{self._grid_backend()} (their optimizer states differ); resume on a machine with the same backend, "
                "or load it for rendering/export with load_latent_nerf"
            )
        if record.get("shape_guide") != self._guide_fingerprint():
            raise ValueError(f"cannot resume {path}: it was trained with another shape guide ({record.get('shape_guide')!r}, now {self._guide_fingerprint()!r})")
        self.model.load_state_dict(subdict(tensors, "model."))
        load_optimizer(self.optimizer, {k: v for k, v in tensors.items() if k.startswith("optim.")}, record["optimizer_param_groups"])
        self.generator.set_state(tensors["rng.train"].cpu())
        if self.amp and record.get("grad_scaler"):
            self.scaler.load_state_dict(record["grad_scaler"])
        self.step = int(record["step"])
        self.skipped_steps = int(record["skipped_steps"])
        self.history = {key: tensors[f"history.{key}"].tolist() for key in self.history if f"history.{key}" in tensors}
        for key in ("loss", "sds", "sparsity", "shape", "timestep", "samples"):
            self.history.setdefault(key, [])

    def result(self, status: str, checkpoint_path: Path | None) -> NerfResult:
        return NerfResult(self.model, self.config, self.step, self.skipped_steps, status, self.history, checkpoint_path)


def fit_latent_nerf(
    config: NerfConfig,
    denoiser: Denoiser,
    embeddings: PromptEmbeddings,
    *,
    device: torch.device | str | None = None,
    shape_guide: ShapeGuide | None = None,
    on_step: Callable[[int, int, torch.Tensor | None], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_metrics: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
) -> NerfResult:
    """Optimize a Latent-NeRF with SDS from ``denoiser`` and per-view ``embeddings``.

    Args:
        on_step: called after every step with (completed steps, total, preview latent [C, h, w] or None).
        should_stop: polled before every step; True stops, saves a checkpoint and returns "interrupted".
        on_metrics: called after every step with (completed steps, losses of that step).
        checkpoint_path: ``.safetensors`` path for periodic and final checkpoints.
        resume: continue from ``checkpoint_path`` if it exists (else start fresh). K steps, stop, resume and
            K more steps equal 2K uninterrupted steps bit for bit on CPU.

    Any exception raised inside the loop (including a host's interrupt exception thrown from a callback)
    first saves the last consistent state to ``checkpoint_path``, then propagates.
    """
    trainer = NerfTrainer(config, denoiser, embeddings, device, shape_guide)
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    if resume and path is not None and path.exists():
        trainer.load(path)
        log.info("resumed %s at step %d", path, trainer.step)
    total = config.iterations
    try:
        while trainer.step < total:
            if should_stop is not None and should_stop():
                if path is not None:
                    trainer.save(path)
                return trainer.result("interrupted", path)
            metrics = trainer.train_step()
            step = trainer.step
            if on_metrics is not None:
                on_metrics(step, metrics)
            if path is not None and config.checkpoint_every and step % config.checkpoint_every == 0 and step < total:
                trainer.save(path)
            if on_step is not None:
                wants_preview = config.preview_every and (step % config.preview_every == 0 or step == total)
                on_step(step, total, trainer.preview() if wants_preview else None)
    except BaseException:
        if path is not None:
            try:
                trainer.save(path)
            except Exception:  # never mask the original error
                log.exception("could not save a checkpoint after an error")
        raise
    if path is not None:
        trainer.save(path)
    return trainer.result("completed", path)


def load_latent_nerf(path: str | Path, device: torch.device | str = "cpu") -> tuple[LatentNeRF, NerfConfig, dict[str, Any]]:
    """Load a trained LatentNeRF from a checkpoint (model tensors only; no optimizer)."""
    tensors, record = load_checkpoint(path, device)
    if record.get("kind") != "latent_nerf":
        raise ValueError(f"{path} is not a Latent-NeRF checkpoint (kind {record.get('kind')!r})")
    config = config_from_dict(NerfConfig, record["config"])
    # grid state dicts share one layout across backends: take whichever backend this machine has
    grid = config.field.grid
    if grid.backend == "tcnn":
        grid = dataclasses.replace(grid, backend="auto")
    model = LatentNeRF(dataclasses.replace(config.field, grid=grid), config.render, device)
    model.load_state_dict(subdict(tensors, "model."))
    return model, config, record


def turntable_latents(model: LatentNeRF, config: NerfConfig, frames: int, resolution: int | None = None) -> torch.Tensor:
    """[frames, C, h, w] latent renders around the evaluation orbit."""
    size = resolution or config.preview_resolution
    cameras = eval_cameras(config.camera, frames, model.device)
    return torch.cat([model.render_latents(cameras[i], size, size).latent for i in range(frames)]).cpu()
