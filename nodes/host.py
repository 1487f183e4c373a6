"""Glue between the core and the ComfyUI host: folders, progress, interrupts, training mode, run keys.

ComfyUI modules are imported inside the functions that need them, so the host-free parts (path rules,
run keys) import and test without ComfyUI.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import numpy as np
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


def mesh_choices(base: str | Path) -> list[str]:
    """Mesh files under ``base``/3d (as Load3D lists them), relative to ``base``, that :func:`input_path`
    accepts: a symlink that points outside ``base`` is left out rather than listed and then refused."""
    base = Path(base)
    choices = []
    for path in (base / "3d").rglob("*"):
        if path.suffix.lower() not in MESH_EXTENSIONS:
            continue
        relative = path.relative_to(base).as_posix()
        try:
            if resolve_inside(base, relative, "mesh_file").is_file():
                choices.append(relative)
        except (ValueError, OSError):
            continue
    return sorted(choices)


def input_meshes() -> list[str]:
    """The mesh_file choices of ComfyUI's input folder (creates input/3d, where Load3D uploads to)."""
    import folder_paths

    base = Path(folder_paths.get_input_directory())
    (base / "3d").mkdir(parents=True, exist_ok=True)
    return mesh_choices(base)


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


def check_prefix(prefix: str | None) -> bool | str:
    """A node's ``validate_inputs`` answer for a ``filename_prefix`` widget: True, or the error text
    (None: the value comes from a link and is checked when the node runs)."""
    if prefix is None:
        return True
    try:
        safe_relative(prefix, "filename_prefix")
    except ValueError as error:
        return str(error)
    return True


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


def runs_root() -> Path:
    """output/latent3d/runs: the training nodes' run folders (``nodes/runs.py``)."""
    from .runs import RUNS_FOLDER

    return output_path(RUNS_FOLDER, "runs folder")[0]


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
    """Leave ComfyUI's inference mode and enable gradients for an optimization: ComfyUI runs every node under
    ``torch.inference_mode()``, in which no tensor records a graph (so a training node must leave it)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def plain(tensor: torch.Tensor) -> torch.Tensor:
    """An ordinary (non-inference) copy of a host tensor, usable in autograd."""
    with torch.inference_mode(False):
        return tensor.detach().clone()


def stage_progress(node_id: str | None) -> Callable[[str, int, int], None]:
    """``on_progress(stage, done, total)`` for long preparations (the sketch grid): the node's progress bar
    (also an interrupt point) and a line in the live panel."""
    import comfy.utils

    from .progress import send

    bars: dict[str, Any] = {}

    def report(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            bars[stage] = comfy.utils.ProgressBar(total, node_id=node_id)
            send(node_id, {"state": "preparing", "stage": stage})
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


def host_mesh_class() -> type | None:
    """The host's MESH class: ``Types.MESH`` of the comfy API (newer hosts), else the one in
    ``comfy_extras.nodes_hunyuan3d`` (0.3.64: vertices and faces only); None without either."""
    try:
        from .api import Types
    except ImportError:
        Types = None
    cls = getattr(Types, "MESH", None)
    if cls is None:
        try:
            from comfy_extras.nodes_hunyuan3d import MESH as cls
        except ImportError:
            return None
    return cls


def gltf_uvs(uvs: Any) -> torch.Tensor:
    """[V, 2] texture coordinates between our convention (v up, OBJ's) and glTF's (v down: (0, 0) is the
    image's top-left), the one core MESH uses: core "Save 3D Model" writes MESH ``uvs`` into the GLB's
    TEXCOORD_0 and its ``texture`` as the image, both unchanged. The map is its own inverse."""
    uvs = torch.tensor(np.asarray(uvs, dtype=np.float32))  # a copy: the mesh's arrays may be read-only
    return torch.stack([uvs[:, 0], 1.0 - uvs[:, 1]], dim=-1)


def core_mesh(mesh, mesh_class: type | None = None) -> Any:
    """The host's MESH (vertices [1, V, 3], faces [1, F, 3]) of a TexturedMesh, with the fields of newer
    hosts' MESH where its constructor takes them: ``uvs`` [1, V, 2] (glTF convention, :func:`gltf_uvs`),
    ``vertex_colors`` [1, V, 3] and ``texture`` [1, H, W, 3] (float in 0..1, row 0 at the top).
    ``mesh_class`` defaults to :func:`host_mesh_class`; a plain object with the same fields without one."""
    import inspect

    vertices = torch.tensor(np.asarray(mesh.vertices, dtype=np.float32))[None]  # copies: the mesh's arrays may be read-only
    faces = torch.tensor(np.asarray(mesh.faces, dtype=np.int64))[None]
    cls = mesh_class if mesh_class is not None else host_mesh_class()
    if cls is None:  # a host without core 3D nodes
        from types import SimpleNamespace

        return SimpleNamespace(vertices=vertices, faces=faces)
    accepted = inspect.signature(cls).parameters
    extras = {}
    if "uvs" in accepted and mesh.uvs is not None:
        extras["uvs"] = gltf_uvs(mesh.uvs)[None]
    if "vertex_colors" in accepted and mesh.colors is not None:
        extras["vertex_colors"] = torch.tensor(np.asarray(mesh.vertex_colors(), dtype=np.float32))[None]
    if "texture" in accepted and mesh.texture is not None:
        extras["texture"] = torch.tensor(np.asarray(mesh.texture, dtype=np.float32))[None] / 255.0
    return cls(vertices, faces, **extras)


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
