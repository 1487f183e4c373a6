"""Glue between the core and the ComfyUI host: folders, progress, interrupts, training mode, run keys.

ComfyUI modules are imported inside the functions that need them, so the host-free parts (path rules,
run keys) import and test without ComfyUI.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import time
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import torch


MESH_EXTENSIONS = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")
MAX_NAME_BYTES = 200
"""Longest folder or file name a user may give (leaves room for the appended counter and extension)."""
MAX_PATH_BYTES = 1000


# -- paths -------------------------------------------------------------------------------------------
def safe_relative(value: str, argument: str) -> PurePosixPath:
    """A user-given relative path as posix parts; refuses absolute paths and '..' with a clear error."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{argument} must be a non-empty relative path, got {value!r}")
    text = value.strip().replace("\\", "/")
    path = PurePosixPath(text)
    if path.is_absolute() or text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise ValueError(f"{argument} must be relative to ComfyUI's folder, got an absolute path {value!r}")
    if ".." in path.parts:
        raise ValueError(f"{argument} must not contain '..', got {value!r}")
    longest = max(path.parts, key=lambda part: len(part.encode()), default="")
    if len(longest.encode()) > MAX_NAME_BYTES or len(text.encode()) > MAX_PATH_BYTES:
        raise ValueError(
            f"{argument} is too long: each folder or file name may have at most {MAX_NAME_BYTES} bytes and the whole path "
            f"{MAX_PATH_BYTES} (file systems allow 255 per name, and a counter and extension are appended), got {len(text)} characters"
        )
    return path


def resolve_inside(root: str | Path, value: str, argument: str) -> Path:
    """``root/value`` after the checks of :func:`safe_relative`, and checked to stay under ``root``."""
    root = Path(root).resolve()
    path = (root / safe_relative(value, argument)).resolve()
    if root not in path.parents and path != root:
        raise ValueError(f"{argument} {value!r} points outside {root}")
    return path


def input_meshes() -> list[str]:
    """Mesh files under ComfyUI's input/3d (as Load3D lists them), relative to input/."""
    import folder_paths

    base = Path(folder_paths.get_input_directory())
    folder = base / "3d"
    folder.mkdir(parents=True, exist_ok=True)
    return sorted(p.relative_to(base).as_posix() for p in folder.rglob("*") if p.suffix.lower() in MESH_EXTENSIONS)


def input_path(value: str, argument: str = "mesh_file") -> Path:
    import folder_paths

    path = resolve_inside(folder_paths.get_input_directory(), value, argument)
    if not path.is_file():
        raise FileNotFoundError(f"{argument} {value!r} not found in ComfyUI's input folder; upload it or put it under input/3d/")
    return path


def output_path(value: str, argument: str) -> tuple[Path, str]:
    """(absolute path, path relative to output/ in posix form) for a file under ComfyUI's output folder."""
    import folder_paths

    root = Path(folder_paths.get_output_directory()).resolve()
    path = resolve_inside(root, value, argument)
    return path, path.relative_to(root).as_posix()


def unique_output(prefix: str, suffix: str) -> tuple[Path, str]:
    """A fresh file ``<prefix>_00001_<suffix>`` under output/ (counter like SaveImage)."""
    import folder_paths

    safe_relative(prefix, "filename_prefix")
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, folder_paths.get_output_directory())
    while True:
        relative = f"{subfolder}/{name}_{counter:05d}_{suffix}" if subfolder else f"{name}_{counter:05d}_{suffix}"
        path, rel = output_path(relative, "filename_prefix")
        if not path.exists():
            return path, rel
        counter += 1


def run_directory(key: str) -> Path:
    """output/latent3d/runs/<key>: where a training node keeps its checkpoint."""
    path, _ = output_path(f"latent3d/runs/{key}", "run")
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- identity of a run -----------------------------------------------------------------------------------
def model_fingerprint(model: Any) -> str:
    """A cheap identity for a ComfyUI MODEL: family, a sample of UNet weights, and its patches (LoRA)."""
    from ..latent3d.guidance.denoiser import weights_digest

    patches = sorted((key, len(value), repr([p[0] for p in value])) for key, value in getattr(model, "patches", {}).items())
    objects = sorted(getattr(model, "object_patches", {}).keys())
    return weights_digest(list(model.model.diffusion_model.parameters()), type(model.model.model_config).__name__, repr(patches), repr(objects))


def run_key(*parts: Any) -> str:
    """A stable short hash of JSON-able parts (configs as dicts, fingerprints, texts)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


# -- training inside the host ------------------------------------------------------------------------
@contextlib.contextmanager
def pip_hint(node: str):
    """Turn a missing requirement into an error that says how to install it (nodes register without it)."""
    try:
        yield
    except ModuleNotFoundError as error:
        raise RuntimeError(
            f"{node}: the Python package '{error.name}' is missing; run `pip install -r requirements.txt` "
            "in ComfyUI's Python environment (from custom_nodes/ComfyUI-Latent3D) and restart ComfyUI"
        ) from error


@contextlib.contextmanager
def training_mode():
    """Leave ComfyUI's inference mode and enable gradients for an optimization (COMFY.md)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def plain(tensor: torch.Tensor) -> torch.Tensor:
    """An ordinary (non-inference) copy of a host tensor, usable in autograd."""
    with torch.inference_mode(False):
        return tensor.detach().clone()


def jpeg_data_url(image, size: int = 160) -> str:
    thumb = image.copy()
    thumb.thumbnail((size, size))
    buffer = io.BytesIO()
    thumb.convert("RGB").save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


class HostProgress:
    """Binds the core's on_step/on_metrics/should_stop to ComfyUI's progress bar, interrupt flag and the
    web panel's "latent3d.progress" messages (throttled to one every ``min_interval`` seconds)."""

    EVENT = "latent3d.progress"

    def __init__(self, node_id: str | None, total: int, decode: Callable[[torch.Tensor], Any], start_step: int = 0, min_interval: float = 0.25) -> None:
        import comfy.utils

        self.node_id, self.total, self.decode = node_id, total, decode
        self.bar = comfy.utils.ProgressBar(total, node_id=node_id)
        self.pending: list[list[float]] = []
        self.last_sent = 0.0
        self.started = time.perf_counter()
        self.start_step = start_step
        self.skipped = 0
        self._send({"step": start_step, "total": total, "reset": True, "state": "resumed" if start_step else "started", "resumed_from": start_step or None})
        if start_step:
            self.bar.update_absolute(start_step, total)

    def _send(self, data: dict[str, Any]) -> None:
        self.send(self.node_id, data)

    @classmethod
    def send(cls, node_id: str | None, data: dict[str, Any]) -> None:
        import sys

        server = sys.modules.get("server")  # only inside a running ComfyUI server (never import it here)
        instance = getattr(getattr(server, "PromptServer", None), "instance", None)
        if node_id is not None and instance is not None:
            instance.send_sync(cls.EVENT, {"node": node_id, **data})

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.pending.append([step, metrics["loss"]])

    def on_step(self, step: int, total: int, preview: torch.Tensor | None) -> None:
        image = self.decode(preview) if preview is not None else None
        # every progress update is also ComfyUI's interrupt point (it may raise InterruptProcessingException)
        self.bar.update_absolute(step, total, ("JPEG", image, 512) if image is not None else None)
        now = time.perf_counter()
        if image is not None or step == total or now - self.last_sent >= 0.25:
            rate = (now - self.started) / max(1, step - self.start_step)
            data = {"step": step, "total": total, "losses": self.pending, "state": "running" if step < total else "done", "seconds_per_step": rate}
            if image is not None:
                data["frame"] = jpeg_data_url(image)
            self._send(data)
            self.pending, self.last_sent = [], now

    def should_stop(self) -> bool:
        import comfy.model_management

        return comfy.model_management.processing_interrupted()

    def finish(self, status: str, step: int, skipped: int) -> None:
        self._send({"step": step, "total": self.total, "losses": self.pending, "state": status, "skipped": skipped})
        self.pending = []


def stage_progress(node_id: str | None) -> Callable[[str, int, int], None]:
    """``on_progress(stage, done, total)`` for long preparations (the sketch grid): the node's progress bar
    (also an interrupt point) and a line in the live panel."""
    import comfy.utils

    bars: dict[str, Any] = {}

    def report(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            bars[stage] = comfy.utils.ProgressBar(total, node_id=node_id)
            HostProgress.send(node_id, {"state": "preparing", "stage": stage})
        bars[stage].update_absolute(done, total)

    return report


def raise_interrupted() -> None:
    """Report an interruption to ComfyUI the way its own nodes do (resets the host's flag)."""
    import comfy.model_management

    comfy.model_management.throw_exception_if_processing_interrupted()
    raise comfy.model_management.InterruptProcessingException()


# -- conditioning, decoding, meshes -------------------------------------------------------------------------
def conditioning_tensor(conditioning: Any, argument: str) -> torch.Tensor:
    """The cross-attention tensor [1, L, C] of a CONDITIONING ([[tensor, {...}], ...]; the first entry)."""
    try:
        tensor = conditioning[0][0]
    except (TypeError, IndexError, KeyError) as error:
        raise ValueError(f"{argument} must be a CONDITIONING (e.g. from CLIP Text Encode), got {type(conditioning).__name__}") from error
    if not torch.is_tensor(tensor) or tensor.dim() != 3:
        raise ValueError(f"{argument} must hold a [1, tokens, width] tensor, got {getattr(tensor, 'shape', tensor)!r}")
    return plain(tensor[:1]).float()


def view_embeddings(clip: Any, prompt: str, negative: str, view_dependent: bool, overrides: dict[str, Any], node: str = "Latent-NeRF Train"):
    """PromptEmbeddings from the prompt (encoded with ``clip``), with per-view CONDITIONING overrides;
    ``node`` names the node in errors."""
    from ..latent3d.guidance.prompts import PromptEmbeddings, view_prompt
    from ..latent3d.nerf.cameras import VIEW_LABELS
    from .comfy_denoiser import encode_with_clip, same_length

    if not isinstance(prompt, str) or not prompt.strip():
        if len([v for v in overrides.values() if v is not None]) < len(VIEW_LABELS):
            raise ValueError(f"{node}: prompt is empty; write a prompt or connect a conditioning for every view")
    labels = [label for label in VIEW_LABELS if overrides.get(label) is None]
    texts = [negative or ""] + [view_prompt(prompt, label) if view_dependent else prompt for label in labels]
    encoded = list(encode_with_clip(clip, texts).split(1))
    views = dict(zip(labels, encoded[1:]))
    views.update({label: conditioning_tensor(c, f"{label}_conditioning") for label, c in overrides.items() if c is not None})
    tensors = same_length([encoded[0]] + [views[label] for label in VIEW_LABELS])
    return PromptEmbeddings(tensors[0], dict(zip(VIEW_LABELS, tensors[1:])))


def latent_images(latents: torch.Tensor, vae: Any, nerf_to_vae: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Model-space latents [B, 4, h, w] -> IMAGE [B, 8h, 8w, 3] via the VAE, or the linear map upsampled 8×."""
    from ..latent3d.colors import linear_decode

    if vae is not None:
        from .comfy_denoiser import vae_decode

        return torch.cat([vae_decode(vae, nerf_to_vae(z[None])) for z in latents])
    rgb = linear_decode(latents.float())  # [B, 3, h, w]
    rgb = torch.nn.functional.interpolate(rgb, scale_factor=8, mode="bilinear", align_corners=False)
    return rgb.clamp(0, 1).permute(0, 2, 3, 1).contiguous()


def texture_decoder(vae: Any, nerf_to_vae: Callable[[torch.Tensor], torch.Tensor]):
    """The export's decode callable: latent [1, 4, h, w] (model space) -> image [1, 3, 8h, 8w] in 0..1."""
    if vae is None:
        return None
    from .comfy_denoiser import vae_decode

    return lambda z: vae_decode(vae, nerf_to_vae(z)).permute(0, 3, 1, 2).contiguous()


def texture_encoder(vae: Any, to_model: Callable[[torch.Tensor], torch.Tensor]):
    """Latent-Paint's encode callable: images [1, 3, H, W] in 0..1 -> model-space latents [1, 4, H/8, W/8]
    (CPU float32, ordinary tensors), through a ComfyUI VAE; None without a VAE."""
    if vae is None:
        return None

    def encode(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            latent = vae.encode(images.permute(0, 2, 3, 1)[..., :3].contiguous())
        with torch.inference_mode(False):
            return to_model(latent.detach().float().cpu().clone())

    return encode


def core_mesh(mesh) -> Any:
    """The host's MESH (vertices [1, V, 3], faces [1, F, 3]); newer hosts' extra fields when accepted."""
    import inspect

    vertices = torch.as_tensor(mesh.vertices, dtype=torch.float32)[None]
    faces = torch.as_tensor(mesh.faces, dtype=torch.int64)[None]
    try:
        from comfy_extras.nodes_hunyuan3d import MESH
    except ImportError:  # a host without core 3D nodes: a plain object with the same fields
        from types import SimpleNamespace

        return SimpleNamespace(vertices=vertices, faces=faces)
    accepted = inspect.signature(MESH).parameters
    extras = {}
    if "uvs" in accepted and mesh.uvs is not None:
        extras["uvs"] = torch.as_tensor(mesh.uvs, dtype=torch.float32)[None]
    if "vertex_colors" in accepted and mesh.colors is not None:
        extras["vertex_colors"] = torch.as_tensor(mesh.vertex_colors(), dtype=torch.float32)[None]
    if "texture" in accepted and mesh.texture is not None:
        extras["texture"] = torch.as_tensor(mesh.texture, dtype=torch.float32)[None] / 255.0
    return MESH(vertices, faces, **extras)


def write_sketch_preview(sketch) -> str:
    """Save the placed sketch as a GLB under output/latent3d/sketches (named by content); relative path."""
    import trimesh

    placed = sketch.placed()
    key = hashlib.sha256(placed.vertices.tobytes() + placed.faces.tobytes()).hexdigest()[:16]
    path, relative = output_path(f"latent3d/sketches/sketch_{key}.glb", "sketch preview")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        trimesh.Trimesh(placed.vertices, placed.faces, process=False).export(path)
    return relative


def checkpoint_step(path: Path, node: str) -> int:
    """Completed steps of an existing checkpoint (0 when there is none).

    An unreadable one raises a ValueError that says what to do: it is never silently overwritten.
    """
    from ..latent3d.checkpoint import CheckpointError, read_record

    if not path.exists():
        return 0
    try:
        return int(read_record(path).get("step", 0))
    except (CheckpointError, OSError) as error:
        raise ValueError(
            f"{node}: the checkpoint of this run cannot be read ({error}). Turn 'resume' off to start the run over "
            f"(the file is replaced), or delete {path.parent}"
        ) from error
