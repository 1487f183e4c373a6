"""fit_latent_nerf: optimize a Latent-NeRF by score distillation (docs/method.md §1), resumable and reproducible.

The loop mechanics (generator, non-finite skipping, fp16 scaling, checkpoints, callbacks) live in
:mod:`latent3d.loop`; this module holds what is Latent-NeRF's own: the parameters, the render and the loss.
"""

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

from ..checkpoint import CheckpointError, check_record_numbers, load_checkpoint, load_module_state, subdict
from ..config import check_fields, config_from_dict, config_to_dict
from ..devices import default_device
from ..guidance.denoiser import Denoiser, denoiser_fingerprint
from ..guidance.prompts import PromptEmbeddings
from ..guidance.sds import SdsConfig, opacity_entropy, sds_loss
from ..loop import Optimization, fit, make_adam
from .cameras import CameraConfig, eval_cameras, orbit_cameras, sample_cameras
from .field import FieldConfig
from .grid import GridConfig, TorchGridEncoding
from .model import LatentNeRF
from .render import RenderConfig

log = logging.getLogger(__name__)

# fields that may change between a run and its resumption without changing what is being optimized
RESUMABLE_CHANGES = ("iterations", "preview_every", "preview_resolution", "checkpoint_every")

OFFICIAL_SPARSITY_WEIGHT = 5e-4
"""``lambda_sparsity`` as written in the official code, on the opacity entropy in bits (log2)."""
SPARSITY_WEIGHT = OFFICIAL_SPARSITY_WEIGHT * 2**16 / math.log(2)
"""≈ 47.27: the official weight × 2^16 (its SDS gradient skipped the fp16 loss scale, so its regularizers
acted 2^16× stronger than written, docs/method.md §1) ÷ ln 2 (its entropy is in bits, ``opacity_entropy`` in nats)."""


@dataclass
class NerfConfig:
    """Latent-NeRF training. Defaults are the paper's (official code); see ``tiny()`` for tests.

    The marching step (``render.step_size``) is automatic by default: the official 2√3/1024 on CUDA, one
    occupancy cell (2/128) on CPU/MPS; checkpoints record the step a run used.
    """

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
    sparsity_weight: float = SPARSITY_WEIGHT
    """Weight of the mean opacity entropy in nats: the official 5e-4 (in bits) × 2^16 / ln 2 ≈ 47.3."""
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
        check_fields(
            self, positive_ints=("iterations", "resolution", "preview_resolution"), non_negative_ints=("preview_every", "checkpoint_every"),
            positive_numbers=("lr_grid", "lr_mlp", "adam_eps"), non_negative_numbers=("sds_weight", "sparsity_weight"), integers=("seed",),
        )

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
            render=RenderConfig(occupancy_resolution=32, step_size=2.0 / 48),
        )
        return dataclasses.replace(config, **changes)


def run_identity(config: NerfConfig) -> dict[str, Any]:
    """The config fields that define a run: all but those a resumption may change (RESUMABLE_CHANGES)."""
    return {k: v for k, v in config_to_dict(config).items() if k not in RESUMABLE_CHANGES}


class ShapeGuide(Protocol):
    """A loss on the packed samples of the current view (e.g. Sketch-Shape guidance)."""

    def __call__(self, points: torch.Tensor, sigma: torch.Tensor, deltas: torch.Tensor, step: int) -> torch.Tensor:
        """points [S, 3], sigma [S], deltas [S] (ray length each sample stands for) -> scalar loss (weighted)."""
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
    """Accumulates wall time per named section (CUDA-synchronized); used by benchmarks and export.

    ``on_start(name)``, when given, is called as each section begins (progress output of long stages).
    """

    def __init__(self, device: torch.device, on_start: Callable[[str], None] | None = None) -> None:
        self.device = device
        self.totals: dict[str, float] = {}
        self.on_start = on_start

    @contextlib.contextmanager
    def section(self, name: str):
        if self.on_start is not None:
            self.on_start(name)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - start


class NerfTrainer(Optimization):
    """The state of one Latent-NeRF optimization and its step. ``fit_latent_nerf`` drives it."""

    kind = "latent_nerf"
    config_class = NerfConfig
    resumable_changes = RESUMABLE_CHANGES
    history_keys = ("loss", "sds", "sparsity", "shape", "timestep", "samples")

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
        device = torch.device(device) if device is not None else default_device()
        self._auto_step = config.render.step_size is None
        config = dataclasses.replace(config, render=config.render.resolved(device))
        super().__init__(config, device, config.seed, config.mixed_precision)
        self.denoiser = denoiser
        self.embeddings = embeddings.to(self.device)
        self.shape_guide = shape_guide
        # parameter init draws from the global RNGs: fork them so the seed decides the init, and the
        # caller's random state is left alone
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(config.seed)
            self.model = LatentNeRF(config.field, config.render, self.device)
        self.module = self.model
        grid_params = list(self.model.field.encoding.parameters())
        mlp_params = list(self.model.field.mlp.parameters()) + list(self.model.background.parameters())
        self.optimizer = make_adam(
            [{"params": grid_params, "lr": config.lr_grid}, {"params": mlp_params, "lr": config.lr_mlp}], config.adam_betas, config.adam_eps, self.device
        )

    # -- one optimization step ------------------------------------------------------------------------
    def compute_loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        config, section = self.config, self.section
        if self.step % config.render.occupancy_update_every == 0:
            with section("occupancy"):
                self.model.update_occupancy(self.generator)
        cameras = sample_cameras(config.camera, 1, self.generator, self.device)
        cond, uncond = self.embeddings.select(cameras.labels(config.camera))
        with section("render_forward"), self.autocast:
            view, packed = self.model.render(cameras, config.resolution, config.resolution, self.generator, jitter=True)
        if config.sds_weight > 0:
            with section("unet"), self.autocast:
                sds = sds_loss(view.latent, self.denoiser, cond, uncond, config.sds, self.generator, cameras)
            sds_term, timestep = sds.loss, float(sds.timesteps[0])
        else:
            sds_term, timestep = view.latent.new_zeros(()), -1.0
        with section("losses"):
            sparsity = opacity_entropy(view.opacity)
            loss = config.sds_weight * sds_term + config.sparsity_weight * sparsity
            if self.shape_guide is not None:
                shape = self.shape_guide(packed.points, packed.sigma, packed.deltas, self.step)
            else:
                shape = loss.new_zeros(())
            loss = loss + shape
        metrics = {"sds": float(sds_term.detach()), "sparsity": float(sparsity.detach()), "shape": float(shape.detach()), "timestep": timestep, "samples": float(view.samples)}
        return loss, metrics

    @torch.no_grad()
    def preview(self, phi: float | None = None) -> torch.Tensor:
        """A latent render [C, h, w] from the evaluation orbit (azimuth follows progress by default)."""
        cam = self.config.camera
        phi = 360.0 * self.step / self.config.iterations if phi is None else phi
        cameras = orbit_cameras([phi], cam.eval_theta, cam.eval_radius, cam.eval_fovy, self.device)
        size = self.config.preview_resolution
        return self.model.render_latents(cameras, size, size).latent[0].float().cpu()

    # -- what identifies the run -----------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        return {
            "embeddings": self.embeddings.fingerprint(),
            "shape_guide": self._guide_fingerprint(),
            "grid_backend": self._grid_backend(),
            "denoiser": denoiser_fingerprint(self.denoiser) if self.config.sds_weight > 0 else None,
        }

    def identity_matches(self, key: str, saved: Any, current: Any) -> bool:
        if key == "denoiser" and (saved is None or current is None):
            return True  # a denoiser that cannot fingerprint itself (or none was used)
        if key == "grid_backend" and saved != current:
            raise ValueError(
                f"cannot resume: the run was trained with the {saved} grid backend and this one uses {current} (their optimizer "
                "states differ); resume on a machine with the same backend, or load it for rendering/export with load_latent_nerf"
            )
        return saved == current

    def describe(self, key: str) -> str:
        return {"embeddings": "prompt embeddings (prompt or negative prompt)", "denoiser": "model (--model / MODEL)"}.get(key, super().describe(key))

    def adopt_saved_config(self, saved: NerfConfig) -> None:
        """An automatic marching step continues with the step the run started with (e.g. a CUDA run
        resumed on a CPU keeps the official step)."""
        step = saved.render.step_size
        if self._auto_step and step is not None and step != self.config.render.step_size:
            self.config = dataclasses.replace(self.config, render=dataclasses.replace(self.config.render, step_size=step))
            self.model.render_config = self.config.render

    def _grid_backend(self) -> str:
        return "torch" if isinstance(self.model.field.encoding, TorchGridEncoding) else "tcnn"

    def _guide_fingerprint(self) -> str | None:
        if self.shape_guide is None:
            return None
        fingerprint = getattr(self.shape_guide, "fingerprint", None)
        return fingerprint() if callable(fingerprint) else type(self.shape_guide).__name__

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
    metadata: dict[str, Any] | None = None,
    keep_optimizer: bool = True,
) -> NerfResult:
    """Optimize a Latent-NeRF with SDS from ``denoiser`` and per-view ``embeddings``.

    Callbacks, checkpoints and resume behave as :func:`latent3d.loop.run_loop` documents: ``on_step``
    gets (completed steps, total, preview latent [C, h, w] or None), ``should_stop`` is polled before every
    step, and any exception first saves the last consistent state. A run whose recent steps are mostly
    non-finite raises :class:`latent3d.loop.NonFiniteRunError` instead of completing. ``metadata`` (JSON-able)
    is stored in the checkpoint record under "meta"; ``keep_optimizer`` False writes a completed run's final
    checkpoint without the Adam moments (see ``run_loop``).
    """
    return fit(NerfTrainer(config, denoiser, embeddings, device, shape_guide), config, metadata=metadata, checkpoint_path=checkpoint_path, on_step=on_step,
               should_stop=should_stop, on_metrics=on_metrics, resume=resume, keep_optimizer=keep_optimizer)


def load_latent_nerf(path: str | Path, device: torch.device | str = "cpu") -> tuple[LatentNeRF, NerfConfig, dict[str, Any]]:
    """Load a trained LatentNeRF from a checkpoint (model tensors only; no optimizer)."""
    tensors, record = load_checkpoint(path, device)
    if record.get("kind") != "latent_nerf":
        raise CheckpointError(f"{path} is not a Latent-NeRF checkpoint (kind {record.get('kind')!r})")
    check_record_numbers(record, path)
    try:
        config = config_from_dict(NerfConfig, record["config"])
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: its config cannot be read: {e}") from e
    # grid state dicts share one layout across backends: take whichever backend this machine has
    grid = config.field.grid
    if grid.backend == "tcnn":
        grid = dataclasses.replace(grid, backend="auto")
    model = LatentNeRF(dataclasses.replace(config.field, grid=grid), config.render, device)
    load_module_state(model, subdict(tensors, "model."), str(path))
    return model, config, record


def turntable_latents(model: LatentNeRF, config: NerfConfig, frames: int, resolution: int | None = None) -> torch.Tensor:
    """[frames, C, h, w] latent renders around the evaluation orbit."""
    size = resolution or config.preview_resolution
    cameras = eval_cameras(config.camera, frames, model.device)
    return torch.cat([model.render_latents(cameras[i], size, size).latent for i in range(frames)]).cpu()
