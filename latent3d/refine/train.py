"""refine_rgb: Latent → RGB refinement of a trained Latent-NeRF (docs/method.md §4), resumable and reproducible.

Each step renders one RGB view of the converted field (:mod:`latent3d.refine.convert`), resizes it
bilinearly to the VAE's input size, encodes it with the VAE encoder *with* gradient (posterior mean × the
model's latent scale) and applies the same SDS as Latent-NeRF (same cameras, view prompts, guidance 100,
t ∈ [20, 980], w = √ᾱ(1−ᾱ)) to those latents, plus Latent-NeRF's sparsity loss. From ``shading_start`` on,
the field's samples are lit (Lambertian, ambient ratio 0.1, one random light per step). The loop mechanics
(generator, fp16 scaling, non-finite skipping, checkpoints, callbacks) are :mod:`latent3d.loop`'s.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..checkpoint import CheckpointError, check_record_numbers, load_checkpoint, load_module_state, subdict
from ..config import config_from_dict, config_to_dict
from ..devices import default_device
from ..guidance.denoiser import Denoiser, denoiser_fingerprint
from ..guidance.prompts import PromptEmbeddings
from ..guidance.sds import SdsConfig, opacity_entropy, sds_loss
from ..loop import Optimization, fit, make_adam
from ..nerf.cameras import CameraConfig, eval_cameras, orbit_cameras, sample_cameras
from ..nerf.field import FieldConfig
from ..nerf.model import LatentNeRF
from ..nerf.render import RenderConfig
from ..nerf.train import SPARSITY_WEIGHT
from .convert import ColorHead, RgbNeRF, matrix_list, state_fingerprint, to_rgb_nerf
from .encoder import ImageEncoder, checkpointed
from .shading import Shading, random_light
from .validation import check_config, probe_encoder

KIND = "rgb_nerf"
"""The checkpoint kind of a refined field."""
RESUMABLE_CHANGES = ("iterations", "preview_every", "preview_resolution", "checkpoint_every", "vae_checkpointing")
"""Config fields a resumption may change: they change what is logged or how memory is spent, not the result."""


@dataclass
class RefineConfig:
    """Latent → RGB refinement. Defaults are the official ``latent_tune`` settings; ``tiny()`` for tests."""

    iterations: int = 5000
    """Optimization steps (one random view each); the official default ``optim.iters``."""
    render_resolution: int = 64
    """Side of the RGB render per step (official 64): the field's cost scales with its square."""
    encode_resolution: int = 512
    """Side of the image the VAE encodes (the render is resized bilinearly to it): 512 → 64² latents for
    SD1.x, as the official code; the VAE encoder's forward + backward at this size dominates a step's time
    and memory. A multiple of 8 whose latent side (÷ the VAE's factor) is a multiple of 8 too."""
    seed: int = 0
    """Seeds the generator behind every random draw (cameras, timesteps, noise, jitter, light, occupancy)."""
    lr_grid: float = 1e-2
    """Adam learning rate of the grid encoding (official: 10× the MLP rate)."""
    lr_mlp: float = 1e-3
    """Adam learning rate of the field's MLP and the background MLP (official lr)."""
    lr_color: float = 1e-3
    """Adam learning rate of the 4 → 3 colour head (official: the MLP rate)."""
    freeze_geometry: bool = False
    """Keep the density exactly as trained: the grid, the MLP's hidden layers and its density output do not
    train (nor does the occupancy grid refresh); the MLP's latent outputs, the head and the background do."""
    adam_betas: tuple[float, float] = (0.9, 0.99)
    """Adam β1, β2."""
    adam_eps: float = 1e-15
    """Adam ε."""
    sds_weight: float = 1.0
    """Weight of the SDS loss on the encoded latents; 0 skips the VAE and the denoiser."""
    sparsity_weight: float = SPARSITY_WEIGHT
    """Weight of the mean opacity entropy in nats, as in Latent-NeRF (≈ 47.3)."""
    shading_start: int | None = None
    """From this step on, Lambertian shading in RGB (official ``start_shading_iter``); None: never (albedo)."""
    ambient_ratio: float = 0.1
    """Ambient share r of the Lambertian shading, colour = albedo·(r + (1 − r)·max(0, n·l)) (official 0.1)."""
    normal_epsilon: float = 1e-2
    """Central-difference step (world units) of the density gradient that gives the shading normals."""
    vae_checkpointing: bool = False
    """Recompute the VAE encoder's activations block by block in the backward pass: at 512² the encoder keeps
    0.69 GB instead of 3.13 GB for its backward (fp32; about half in fp16), for one more encoder forward."""
    preview_every: int = 100
    """Render an RGB preview for on_step every this many steps (and at the last step); 0 disables."""
    preview_resolution: int = 128
    """Side in pixels of preview renders (RGB, no decode)."""
    checkpoint_every: int = 250
    """Save a checkpoint every this many steps (when a checkpoint path is given); 0: only at the end."""
    mixed_precision: bool = True
    """fp16 autocast and gradient scaling on CUDA (ignored on CPU)."""
    camera: CameraConfig = dataclasses.field(default_factory=CameraConfig)
    sds: SdsConfig = dataclasses.field(default_factory=SdsConfig)

    def __post_init__(self) -> None:
        check_config(self)

    @classmethod
    def paper(cls) -> "RefineConfig":
        """The official settings (64² renders encoded at 512²)."""
        return cls()

    @classmethod
    def tiny(cls, **changes: Any) -> "RefineConfig":
        """Small and fast, for tests and CPU smoke runs: 32² renders encoded at 64² (8² latents with an 8× VAE)."""
        config = cls(iterations=20, render_resolution=32, encode_resolution=64, preview_every=10, preview_resolution=32, checkpoint_every=0)
        return dataclasses.replace(config, **changes)


def run_identity(config: RefineConfig) -> dict[str, Any]:
    """The config fields that define a run: all but RESUMABLE_CHANGES."""
    return {k: v for k, v in config_to_dict(config).items() if k not in RESUMABLE_CHANGES}


@dataclass
class RefineResult:
    model: RgbNeRF
    config: RefineConfig
    step: int
    """Completed steps."""
    skipped_steps: int
    """Steps skipped because their loss or gradient was not finite."""
    status: str
    """"completed" or "interrupted"."""
    history: dict[str, list[float]]
    checkpoint_path: Path | None = None


class RefineTrainer(Optimization):
    """The state of one refinement and its step. ``refine_rgb`` drives it."""

    kind = KIND
    config_class = RefineConfig
    resumable_changes = RESUMABLE_CHANGES
    history_keys = ("loss", "sds", "sparsity", "timestep", "samples", "shaded")

    def __init__(
        self,
        config: RefineConfig,
        trained_field: LatentNeRF,
        denoiser: Denoiser,
        vae_encoder: ImageEncoder,
        embeddings: PromptEmbeddings,
        device: torch.device | str | None = None,
        color_matrix=None,
    ) -> None:
        if not isinstance(config, RefineConfig):
            raise ValueError(f"config must be a RefineConfig, got {type(config).__name__}")
        if not isinstance(embeddings, PromptEmbeddings):
            raise ValueError(f"embeddings must be PromptEmbeddings, got {type(embeddings).__name__}")
        width = getattr(denoiser, "embedding_dim", None)
        if width is not None and embeddings.width != width:
            raise ValueError(f"embeddings width must equal the denoiser's cross-attention width {width}, got {embeddings.width}")
        device = torch.device(device) if device is not None else default_device()
        model = to_rgb_nerf(trained_field, color_matrix)  # checks the kind of field first
        super().__init__(config, device, config.seed, config.mixed_precision)
        self.source_fingerprint = state_fingerprint(trained_field)
        self.model = model.to(device)
        self.module = self.model
        self.color_init = matrix_list(self.model.head.matrix)
        channels = int(self.model.field_config.latent_channels)
        probe_encoder(vae_encoder, channels, getattr(denoiser, "latent_channels", None), config.encode_resolution, device)
        self.encoder = checkpointed(vae_encoder) if config.vae_checkpointing else vae_encoder
        self.denoiser = denoiser
        self.embeddings = embeddings.to(device)
        self.on_image_gradient: Callable[[], None] | None = None
        """Benchmarks: called when the backward pass reaches the upsampled image (the VAE's backward is done)."""
        self.optimizer = make_adam(self._param_groups(), config.adam_betas, config.adam_eps, device)

    def _param_groups(self) -> list[dict[str, Any]]:
        config, field = self.config, self.model.latent.field
        background = list(self.model.latent.background.parameters())
        head = list(self.model.head.parameters())
        if config.freeze_geometry:
            field.requires_grad_(False)
            last = field.mlp[-1]  # row 0 is the density pre-activation, rows 1.. the latent channels
            last.requires_grad_(True)
            last.weight.register_hook(lambda g: g * _density_row_mask(g))
            last.bias.register_hook(lambda g: g * _density_row_mask(g))
            groups = [(list(last.parameters()) + background, config.lr_mlp), (head, config.lr_color)]
        else:
            mlp = list(field.mlp.parameters()) + background
            groups = [(list(field.encoding.parameters()), config.lr_grid), (mlp, config.lr_mlp), (head, config.lr_color)]
        return [{"params": params, "lr": lr} for params, lr in groups if params]

    # -- one optimization step ------------------------------------------------------------------------
    def shading_at(self, step: int) -> bool:
        """Whether step ``step`` (0-based) is shaded (Lambertian) rather than albedo."""
        return self.config.shading_start is not None and step >= self.config.shading_start

    def compute_loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        config, section = self.config, self.section
        if not config.freeze_geometry and self.step % self.model.render_config.occupancy_update_every == 0:
            with section("occupancy"):
                self.model.update_occupancy(self.generator)
        cameras = sample_cameras(config.camera, 1, self.generator, self.device)
        cond, uncond = self.embeddings.select(cameras.labels(config.camera))
        shaded = self.shading_at(self.step)
        shading = Shading(random_light(cameras.positions()[0], self.generator), config.ambient_ratio, config.normal_epsilon) if shaded else None
        size = config.render_resolution
        with section("render_forward"), self.autocast:
            view, _ = self.model.render(cameras, size, size, self.generator, jitter=True, shading=shading)
        if config.sds_weight > 0:
            with section("upsample"):
                images = upsample(view.latent, config.encode_resolution)
            if self.on_image_gradient is not None and images.requires_grad:
                images.register_hook(self._image_gradient_hook)
            with section("vae_encode"), self.autocast:
                latents = self.encoder(images)
            with section("unet"), self.autocast:
                sds = sds_loss(latents, self.denoiser, cond, uncond, config.sds, self.generator, cameras)
            sds_term, timestep = sds.loss, float(sds.timesteps[0])
        else:
            sds_term, timestep = view.latent.new_zeros((), dtype=torch.float32), -1.0
        with section("losses"):
            sparsity = opacity_entropy(view.opacity)
            loss = config.sds_weight * sds_term + config.sparsity_weight * sparsity
        metrics = {"sds": float(sds_term.detach()), "sparsity": float(sparsity.detach()), "timestep": timestep, "samples": float(view.samples), "shaded": float(shaded)}
        return loss, metrics

    def _image_gradient_hook(self, grad: torch.Tensor) -> torch.Tensor:
        if self.on_image_gradient is not None:
            self.on_image_gradient()
        return grad

    @torch.no_grad()
    def preview(self, phi: float | None = None) -> torch.Tensor:
        """An RGB render [3, h, w] in [0, 1] (albedo) from the evaluation orbit; azimuth follows progress."""
        cam = self.config.camera
        phi = 360.0 * self.step / self.config.iterations if phi is None else phi
        cameras = orbit_cameras([phi], cam.eval_theta, cam.eval_radius, cam.eval_fovy, self.device)
        size = self.config.preview_resolution
        return self.model.render_rgb(cameras, size, size)[0].float().cpu()

    # -- what identifies the run -----------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        return {
            "source": self.source_fingerprint,
            "embeddings": self.embeddings.fingerprint(),
            "denoiser": denoiser_fingerprint(self.denoiser) if self.config.sds_weight > 0 else None,
            "vae_encoder": denoiser_fingerprint(self.encoder) if self.config.sds_weight > 0 else None,
            "color_init": self.color_init,
        }

    def identity_matches(self, key: str, saved: Any, current: Any) -> bool:
        if key in ("denoiser", "vae_encoder") and (saved is None or current is None):
            return True  # a model that cannot fingerprint itself (or none was used)
        return saved == current

    def describe(self, key: str) -> str:
        names = {
            "source": "source Latent-NeRF (trained_field)",
            "embeddings": "prompt embeddings (prompt or negative prompt)",
            "denoiser": "model (--model / MODEL)",
            "vae_encoder": "VAE",
            "color_init": "colour-head initialisation (color_matrix)",
        }
        return names.get(key, super().describe(key))

    def state_record(self, optimizer: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, record = super().state_record(optimizer)
        record["source_field"] = config_to_dict(self.model.field_config)
        record["source_render"] = config_to_dict(self.model.render_config)
        return tensors, record

    def result(self, status: str, checkpoint_path: Path | None) -> RefineResult:
        return RefineResult(self.model, self.config, self.step, self.skipped_steps, status, self.history, checkpoint_path)


def _density_row_mask(grad: torch.Tensor) -> torch.Tensor:
    mask = torch.ones_like(grad)
    mask[0] = 0
    return mask


def upsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """[B, 3, h, w] -> [B, 3, size, size], bilinear (align_corners=False, as the official code); a no-op at size."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def refine_rgb(
    config: RefineConfig,
    trained_field: LatentNeRF,
    denoiser: Denoiser,
    vae_encoder: ImageEncoder,
    embeddings: PromptEmbeddings,
    *,
    device: torch.device | str | None = None,
    color_matrix=None,
    on_step: Callable[[int, int, torch.Tensor | None], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_metrics: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    metadata: dict[str, Any] | None = None,
    keep_optimizer: bool = True,
) -> RefineResult:
    """Refine a trained Latent-NeRF in RGB by SDS through ``vae_encoder`` and ``denoiser``.

    Args:
        trained_field: the trained :class:`LatentNeRF` (copied; the original is left untouched).
        vae_encoder: images [B, 3, H, W] in [0, 1] -> model-space latents [B, 4, H/8, W/8], differentiable
            (e.g. ``SdComponents.encode_images``, or a :class:`latent3d.refine.encoder.ModuleEncoder`, which
            adds per-block checkpointing and a fingerprint).
        color_matrix: the colour head's initial [4][3] matrix (e.g. the host's latent-preview factors);
            default ``LATENT_RGB_MATRIX``.
        on_step, should_stop, on_metrics, checkpoint_path, resume, metadata, keep_optimizer: as for
            :func:`latent3d.nerf.train.fit_latent_nerf`; previews are RGB [3, h, w] in [0, 1].

    Raises:
        ValueError: a field of the wrong kind, a missing VAE encoder or one of another latent size, bad config.
        latent3d.loop.NonFiniteRunError: most recent steps were non-finite.
    """
    return fit(RefineTrainer(config, trained_field, denoiser, vae_encoder, embeddings, device, color_matrix), config, metadata=metadata, checkpoint_path=checkpoint_path, on_step=on_step,
               should_stop=should_stop, on_metrics=on_metrics, resume=resume, keep_optimizer=keep_optimizer)


def load_refined(path: str | Path, device: torch.device | str = "cpu") -> tuple[RgbNeRF, RefineConfig, dict[str, Any]]:
    """Load a refined RGB field from a checkpoint (model tensors only; no optimizer)."""
    tensors, record = load_checkpoint(path, device)
    if record.get("kind") != KIND:
        raise CheckpointError(f"{path} is not a refined RGB checkpoint (kind {record.get('kind')!r}, expected {KIND!r})")
    check_record_numbers(record, path)
    try:
        config = config_from_dict(RefineConfig, record["config"])
        field = config_from_dict(FieldConfig, record["source_field"])
        render = config_from_dict(RenderConfig, record["source_render"])
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: its config cannot be read: {e}") from e
    if field.grid.backend == "tcnn":  # grid state dicts share one layout across backends
        field = dataclasses.replace(field, grid=dataclasses.replace(field.grid, backend="auto"))
    head = ColorHead(torch.zeros(field.latent_channels, 3), device)
    model = RgbNeRF(LatentNeRF(field, render, device), head)
    load_module_state(model, subdict(tensors, "model."), str(path))
    return model, config, record


def turntable_rgb(model: RgbNeRF, config: RefineConfig, frames: int, resolution: int | None = None) -> torch.Tensor:
    """[frames, 3, h, w] RGB renders in [0, 1] around the evaluation orbit."""
    size = resolution or config.preview_resolution
    cameras = eval_cameras(config.camera, frames, model.device)
    return torch.cat([model.render_rgb(cameras[i], size, size) for i in range(frames)]).float().cpu()

