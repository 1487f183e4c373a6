"""paint_mesh: Latent-Paint, a latent UV texture on a given mesh optimized by score distillation
(docs/method.md §3), resumable and reproducible.

The cameras, view-dependent prompts and SDS are Latent-NeRF's (``nerf.cameras``, ``guidance``), the loop
mechanics (generator, non-finite skipping, fp16 scaling, checkpoints, callbacks) are ``latent3d.loop``'s;
this module holds what is Latent-Paint's own: the parameters (a latent texture 4×R×R and the background),
the render (``paint.render``) and what identifies a run (the mesh among others).

Texture filter: the official code samples its texture with 'nearest'; we default to 'bilinear', whose
gradient reaches the four texels around each sample (smoother textures at the same cost); 'nearest' is
a config choice for the official behaviour.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

from ..checkpoint import CheckpointError, check_record_numbers, load_checkpoint, load_module_state, subdict
from ..config import check_fields, config_from_dict, config_to_dict, is_int, is_number
from ..devices import default_device
from ..guidance.denoiser import Denoiser, denoiser_fingerprint
from ..guidance.prompts import PromptEmbeddings
from ..guidance.sds import SdsConfig, sds_loss
from ..loop import Optimization, fit, make_adam
from ..nerf.cameras import CameraConfig, orbit_cameras, sample_cameras
from . import initialization as init
from .mesh import PaintMesh, place_paint_mesh
from .raster import BACKENDS
from .render import MeshTensors, render_views
from .texture import MODES

RESUMABLE_CHANGES = ("iterations", "preview_every", "preview_resolution", "checkpoint_every", "raster_backend")
"""Config fields a resumption may change without changing what is optimized (every rasterizer backend
returns the same rasterization)."""
TEXTURE_SIZES = (64, 512)
"""Allowed latent texture sides (inclusive)."""


@dataclass
class PaintConfig:
    """Latent-Paint. Defaults are the paper's (official code); see ``tiny()`` for tests."""

    iterations: int = 5000
    """Optimization steps (one random view each)."""
    resolution: int = 64
    """Latent render size (64 → a 512² image for SD1.x); a multiple of 8 for Stable Diffusion UNets."""
    texture_size: int = 128
    """Side R of the latent texture 4×R×R, in [64, 512] (the VAE decodes it to 8R×8R pixels)."""
    seed: int = 0
    """Seeds every random draw: the initial texture and background, cameras, timesteps, noise."""
    lr: float = 1e-2
    """Adam learning rate of the texture and the background."""
    adam_betas: tuple[float, float] = (0.9, 0.99)
    """Adam β1, β2."""
    adam_eps: float = 1e-15
    """Adam ε."""
    init: Literal["color", "texture"] = "color"
    """Start of the texture: near ``init_color`` (official), or the mesh's own texture (it must have one)."""
    init_color: tuple[float, float, float] = (1.0, 0.0, 0.0)
    """The colour (RGB in [0, 1]) the texture starts near with init "color" (official: red)."""
    init_color_weight: float = 0.3
    """w in w·z_colour + s·N(0, 1) (official 0.3)."""
    init_noise: float = 0.4
    """s in w·z_colour + s·N(0, 1) (official 0.4)."""
    init_regularizer: float = 1e-2
    """λ of the ridge regression that finds z_colour (official 1e-2)."""
    init_encoder: Literal["auto", "vae", "linear"] = "auto"
    """How init "texture" turns the mesh's RGB texture into latents: the VAE encoder ("vae": required),
    the linear map's inverse ("linear"), or the encoder when one is given ("auto")."""
    background: Literal["environment", "learned", "fixed"] = "environment"
    """"environment": learnable latent colours per direction (the official sphere, see ``paint.render``);
    "learned": one learnable latent colour; "fixed": the constant latent of ``background_color``."""
    background_color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """RGB the "learned" background starts at and the "fixed" one keeps (its linear preview)."""
    environment_rows: int = 64
    """Rows h of the environment map [4, h, 2h] (64: 2.8° per texel, like the official sphere's 5,120 faces)."""
    texture_filter: Literal["bilinear", "nearest", "mipmap"] = "bilinear"
    """Texture lookup during training (official: nearest; module docstring)."""
    raster_backend: Literal["auto", "torch", "embree", "nvdiffrast"] = "auto"
    """Rasterizer backend (``paint.raster.rasterize``); all return the same rasterization."""
    mesh_scale: float = 0.6
    """The mesh is centred and scaled so its farthest vertex lies this far from the origin (official 0.6)."""
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Rotation of the mesh in degrees after scaling (x, then y, then z); y is up, +z the front."""
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Shift of the mesh after rotation (the official lift of 0.25 cancels against its cameras' look-at)."""
    preview_every: int = 100
    """Render a preview latent for on_step every this many steps (and at the last step); 0 disables."""
    preview_resolution: int = 64
    """Latent size of preview renders (and, ×8, of RGB turntables)."""
    checkpoint_every: int = 250
    """Save a checkpoint every this many steps (when a checkpoint path is given); 0: only at the end."""
    mixed_precision: bool = True
    """fp16 autocast and gradient scaling on CUDA (ignored on CPU)."""
    camera: CameraConfig = dataclasses.field(default_factory=CameraConfig.paint)
    sds: SdsConfig = dataclasses.field(default_factory=SdsConfig)

    def __post_init__(self) -> None:
        _check(self)

    @classmethod
    def paper(cls) -> "PaintConfig":
        """The official Latent-Paint settings."""
        return cls()

    @classmethod
    def tiny(cls, **changes: Any) -> "PaintConfig":
        """A small, fast configuration for tests and CPU smoke runs (16² latent views, 64² texture)."""
        config = cls(iterations=20, resolution=16, texture_size=64, environment_rows=16, preview_every=10, preview_resolution=16, checkpoint_every=0)
        return dataclasses.replace(config, **changes)


def _check(c: PaintConfig) -> None:
    name = "PaintConfig"
    check_fields(
        c, positive_ints=("iterations", "resolution", "preview_resolution", "environment_rows"), non_negative_ints=("preview_every", "checkpoint_every"),
        positive_numbers=("lr", "adam_eps", "mesh_scale"), non_negative_numbers=("init_color_weight", "init_noise", "init_regularizer"),
        integers=("seed",),
        choices={"init": ("color", "texture"), "init_encoder": ("auto", "vae", "linear"), "background": ("environment", "learned", "fixed"),
                 "texture_filter": MODES, "raster_backend": BACKENDS},
    )
    low, high = TEXTURE_SIZES
    if not is_int(c.texture_size) or not low <= c.texture_size <= high:
        raise ValueError(f"{name}.texture_size must be an integer in [{low}, {high}], got {c.texture_size!r}")
    for field in ("init_color", "background_color"):
        value = getattr(c, field)
        if not (isinstance(value, (tuple, list)) and len(value) == 3 and all(is_number(x) and 0 <= x <= 1 for x in value)):
            raise ValueError(f"{name}.{field} must be three numbers in [0, 1] (r, g, b), got {value!r}")
    for field in ("rotation_deg", "offset"):
        value = getattr(c, field)
        if not (isinstance(value, (tuple, list)) and len(value) == 3 and all(is_number(x) for x in value)):
            raise ValueError(f"{name}.{field} must be three finite numbers (x, y, z), got {value!r}")


def run_identity(config: PaintConfig) -> dict[str, Any]:
    """The config fields that define a run: all but those a resumption may change (RESUMABLE_CHANGES)."""
    return {k: v for k, v in config_to_dict(config).items() if k not in RESUMABLE_CHANGES}


def mesh_fingerprint(mesh: PaintMesh, with_texture: bool = False) -> str:
    """16 hex digits of the mesh's vertices, faces, UVs and placement list (and its texture, when the run
    starts from it): a run is never resumed on another mesh."""
    digest = hashlib.sha256()
    for array in (mesh.vertices, mesh.faces, mesh.uvs, mesh.positions):
        digest.update(repr(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    if with_texture and mesh.texture is not None:
        digest.update(np.ascontiguousarray(mesh.texture).tobytes())
    return digest.hexdigest()[:16]


class PaintModel(torch.nn.Module):
    """The optimized state: ``texture`` [4, R, R] and ``background`` [4, h, w] (a buffer when fixed)."""

    def __init__(self, texture: torch.Tensor, background: torch.Tensor, learn_background: bool) -> None:
        super().__init__()
        self.texture = torch.nn.Parameter(texture)
        if learn_background:
            self.background = torch.nn.Parameter(background)
        else:
            self.register_buffer("background", background)


@dataclass
class PaintResult:
    texture: torch.Tensor
    """[4, R, R] float32 CPU latent texture (model space, v up: row 0 is the top of the UV square)."""
    background: torch.Tensor
    """[4, h, w] float32 CPU background (``paint.render``; 1×1 for a constant)."""
    mesh: PaintMesh
    """The mesh as given (its own coordinates); ``placed`` is where the cameras saw it."""
    placed: PaintMesh
    config: PaintConfig
    step: int
    """Completed steps."""
    skipped_steps: int
    """Steps skipped because their loss or gradient was not finite."""
    status: str
    """"completed" or "interrupted"."""
    history: dict[str, list[float]]
    checkpoint_path: Path | None = None


class PaintTrainer(Optimization):
    """The state of one Latent-Paint optimization and its step. ``paint_mesh`` drives it."""

    kind = "latent_paint"
    config_class = PaintConfig
    resumable_changes = RESUMABLE_CHANGES
    history_keys = ("loss", "sds", "timestep", "coverage")

    def __init__(
        self,
        config: PaintConfig,
        mesh: PaintMesh,
        denoiser: Denoiser,
        embeddings: PromptEmbeddings,
        device: torch.device | str | None = None,
        encode: init.Encoder | None = None,
    ) -> None:
        _check_inputs(config, mesh, denoiser, embeddings, encode)
        device = torch.device(device) if device is not None else default_device()
        super().__init__(config, device, config.seed, config.mixed_precision)
        self.mesh = mesh
        self.placed = place_paint_mesh(mesh, config.mesh_scale, config.rotation_deg, config.offset)
        self.tensors = MeshTensors.from_mesh(self.placed, self.device)
        self.denoiser = denoiser
        self.embeddings = embeddings.to(self.device)
        texture, background = _initial_state(config, mesh, encode)
        self.model = self.module = PaintModel(texture.to(self.device), background.to(self.device), config.background != "fixed")
        self.optimizer = make_adam([{"params": list(self.model.parameters()), "lr": config.lr}], config.adam_betas, config.adam_eps, self.device)

    def render(self, cameras, size: int, mode: str | None = None):
        """``render_views`` of the current texture and background (differentiable)."""
        m = self.model
        return render_views(self.tensors, m.texture, m.background, cameras, size, size, mode or self.config.texture_filter, self.config.raster_backend, self.section)

    def compute_loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        config = self.config
        cameras = sample_cameras(config.camera, 1, self.generator, self.device)
        cond, uncond = self.embeddings.select(cameras.labels(config.camera))
        view = self.render(cameras, config.resolution)  # fp32: the lookup is cheap and grid_sample autocasts to fp32 anyway
        with self.section("unet"), self.autocast:
            sds = sds_loss(view.image, self.denoiser, cond, uncond, config.sds, self.generator, cameras)
        metrics = {"sds": float(sds.loss.detach()), "timestep": float(sds.timesteps[0]), "coverage": float(view.mask.mean())}
        return sds.loss, metrics

    @torch.no_grad()
    def preview(self, phi: float | None = None) -> torch.Tensor:
        """A latent render [4, h, w] from the evaluation orbit (azimuth follows progress by default)."""
        cam = self.config.camera
        phi = 360.0 * self.step / self.config.iterations if phi is None else phi
        cameras = orbit_cameras([phi], cam.eval_theta, cam.eval_radius, cam.eval_fovy, self.device)
        return self.render(cameras, self.config.preview_resolution).image[0].float().cpu()

    def identity(self) -> dict[str, Any]:
        return {
            "embeddings": self.embeddings.fingerprint(),
            "mesh": mesh_fingerprint(self.mesh, self.config.init == "texture"),
            "denoiser": denoiser_fingerprint(self.denoiser),
        }

    def identity_matches(self, key: str, saved: Any, current: Any) -> bool:
        if key == "denoiser" and (saved is None or current is None):
            return True  # a denoiser that cannot fingerprint itself
        return saved == current

    def describe(self, key: str) -> str:
        names = {"embeddings": "prompt embeddings (prompt or negative prompt)", "denoiser": "model (--model / MODEL)", "mesh": "mesh (or its UVs)"}
        return names.get(key, super().describe(key))

    def state_record(self, optimizer: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The loop's record plus the mesh (its own coordinates), so ``load_painted`` needs nothing else."""
        tensors, record = super().state_record(optimizer)
        for name in ("vertices", "faces", "uvs", "positions"):
            tensors[f"mesh.{name}"] = torch.from_numpy(np.array(getattr(self.mesh, name)))
        record["mesh_source"] = self.mesh.source
        record["uv_origin"] = self.mesh.uv_origin
        return tensors, record

    def result(self, status: str, checkpoint_path: Path | None) -> PaintResult:
        m = self.model
        return PaintResult(
            m.texture.detach().float().cpu().clone(), m.background.detach().float().cpu().clone(), self.mesh, self.placed,
            self.config, self.step, self.skipped_steps, status, self.history, checkpoint_path,
        )


def _check_inputs(config, mesh, denoiser, embeddings, encode) -> None:
    if not isinstance(config, PaintConfig):
        raise ValueError(f"config must be a PaintConfig, got {type(config).__name__}")
    if not isinstance(mesh, PaintMesh):
        raise ValueError(f"mesh must be a PaintMesh (load_paint_mesh or make_paint_mesh), got {type(mesh).__name__}")
    if not isinstance(embeddings, PromptEmbeddings):
        raise ValueError(f"embeddings must be PromptEmbeddings, got {type(embeddings).__name__}")
    width = getattr(denoiser, "embedding_dim", None)
    if width is not None and embeddings.width != width:
        raise ValueError(f"embeddings width must equal the denoiser's cross-attention width {width}, got {embeddings.width}")
    if config.init == "texture":
        if mesh.texture is None:
            raise ValueError(
                f"init='texture' needs a mesh with a base-colour texture, but {mesh.source} has none (UVs from {mesh.uv_origin}); "
                "use init='color' or a textured mesh"
            )
        if config.init_encoder == "vae" and encode is None:
            raise ValueError("init_encoder='vae' needs a VAE encoder (encode=...), none was given; connect a VAE or use init_encoder='auto'/'linear'")


def _initial_state(config: PaintConfig, mesh: PaintMesh, encode: init.Encoder | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(texture [4, R, R], background [4, h, w]) on the CPU, from a CPU generator seeded with the config's
    seed (the same start on every device; the training generator's stream is left untouched)."""
    generator = torch.Generator().manual_seed(config.seed)
    if config.init == "color":
        c = config
        texture = init.color_texture(c.init_color, c.init_color_weight, c.init_noise, c.texture_size, c.init_regularizer, generator)
    else:
        encoder = None if config.init_encoder == "linear" else encode
        texture = init.texture_from_image(mesh.texture, config.texture_size, encoder, mesh.source)
    if config.background == "environment":
        background = init.environment_map(config.environment_rows, generator)
    else:
        background = init.constant_background(config.background_color)
    return texture, background


def paint_mesh(
    config: PaintConfig,
    mesh: PaintMesh,
    denoiser: Denoiser,
    embeddings: PromptEmbeddings,
    *,
    device: torch.device | str | None = None,
    encode: init.Encoder | None = None,
    on_step: Callable[[int, int, torch.Tensor | None], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_metrics: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    metadata: dict[str, Any] | None = None,
    keep_optimizer: bool = True,
) -> PaintResult:
    """Optimize a latent texture for ``mesh`` (as loaded; placed by the config's mesh_scale, rotation_deg
    and offset) with SDS from ``denoiser`` and per-view ``embeddings``.

    ``encode`` is the VAE encoder init "texture" may use (``initialization.Encoder``). Callbacks,
    checkpoints and resume behave as :func:`latent3d.loop.run_loop` documents: ``on_step`` gets (completed
    steps, total, preview latent [4, h, w] or None), ``should_stop`` is polled before every step, any
    exception first saves the last consistent state, and K steps + resume + K steps equal 2K steps bit for
    bit on CPU. A run whose recent steps are mostly non-finite raises
    :class:`latent3d.loop.NonFiniteRunError`. A checkpoint of another mesh, prompt or model is refused.
    ``keep_optimizer`` False writes a completed run's final checkpoint without the Adam moments (``run_loop``).
    """
    return fit(PaintTrainer(config, mesh, denoiser, embeddings, device, encode), config, metadata=metadata, checkpoint_path=checkpoint_path, on_step=on_step,
               should_stop=should_stop, on_metrics=on_metrics, resume=resume, keep_optimizer=keep_optimizer)


def load_painted(path: str | Path) -> PaintResult:
    """A painted mesh from a ``paint_mesh`` checkpoint (texture, background, mesh, config; no optimizer).
    Raises CheckpointError for a file that is not a readable Latent-Paint checkpoint."""
    tensors, record = load_checkpoint(path, "cpu")
    if record.get("kind") != PaintTrainer.kind:
        raise CheckpointError(f"{path} is not a Latent-Paint checkpoint (kind {record.get('kind')!r})")
    check_record_numbers(record, path)
    try:
        config = config_from_dict(PaintConfig, record["config"])
        mesh = PaintMesh(*(tensors[f"mesh.{n}"].numpy() for n in ("vertices", "faces", "uvs")), None, tensors["mesh.positions"].numpy(),
                         str(record.get("mesh_source", "mesh")), record.get("uv_origin", "file"))
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: its config or mesh cannot be read: {e}") from e
    rows, cols = (config.environment_rows, 2 * config.environment_rows) if config.background == "environment" else (1, 1)
    model = PaintModel(torch.zeros(4, config.texture_size, config.texture_size), torch.zeros(4, rows, cols), True)
    load_module_state(model, subdict(tensors, "model."), str(path))
    placed = place_paint_mesh(mesh, config.mesh_scale, config.rotation_deg, config.offset)
    step = int(record["step"])
    history = {k[len("history."):]: v.tolist() for k, v in tensors.items() if k.startswith("history.")}
    status = "completed" if step >= config.iterations else "interrupted"
    return PaintResult(model.texture.detach().clone(), model.background.detach().clone(), mesh, placed, config, step,
                       int(record["skipped_steps"]), status, history, Path(path))
