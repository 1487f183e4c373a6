"""Headless Stable Diffusion loading for the command line and scripts (never imported by the core).

``load_stable_diffusion`` turns a model reference into :class:`SdComponents`: the UNet as a
:class:`~latent3d.guidance.denoiser.DiffusersDenoiser`, a text encoder, and VAE encode/decode. Accepted
references: a local diffusers folder, a single-file SD1.x/SD2.x checkpoint (``.safetensors``/``.ckpt``),
a hub id (``owner/name``), or ``"tiny"`` (random tiny models built offline, see :mod:`latent3d.tiny`).

diffusers, transformers and huggingface_hub are imported inside functions so ``import latent3d`` and
the guidance core stay light. Inside ComfyUI none of this runs: the host's MODEL/CLIP/VAE are adapted.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .guidance.denoiser import DiffusersDenoiser
from .guidance.prompts import PromptEmbeddings, encode_view_prompts

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_DTYPES = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}
# the files a hub snapshot needs (no safety checker, no .ckpt/.bin duplicates, no fp16/EMA variants)
_HUB_PATTERNS = [
    "model_index.json",
    "scheduler/*.json",
    "tokenizer/*",
    *(f"{sub}/config.json" for sub in ("unet", "vae", "text_encoder")),
    *(f"{sub}/diffusion_pytorch_model{tail}" for sub in ("unet", "vae") for tail in (".safetensors", "-*.safetensors", ".safetensors.index.json")),
    *(f"text_encoder/model{tail}" for tail in (".safetensors", "-*.safetensors", ".safetensors.index.json")),
]


class ModelLoadError(OSError):
    """A model reference was well formed but could not be loaded (offline, missing files, bad checkpoint)."""


@dataclass
class SdComponents:
    """What the CLI needs from a Stable Diffusion model. All modules are in eval mode with frozen weights.

    ``denoiser`` wraps the UNet (ε or v-prediction from the scheduler config); ``encode_text``,
    ``decode_latents`` and ``encode_images`` work in the VAE's *model space* (latent × scaling factor),
    the space the UNet and the Latent-NeRF renders live in.
    """

    denoiser: DiffusersDenoiser
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: Any
    scheduler_config: dict[str, Any]
    name: str

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent pixel along each axis (8 for SD)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def embedding_dim(self) -> int:
        return int(self.denoiser.embedding_dim)

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """prompts (N strings) -> last hidden state [N, 77, C] float32 on ``device``.

        Padded to the tokenizer's 77 tokens and truncated, as SD pipelines do. SD2's "penultimate layer"
        needs nothing here: diffusers SD2 text encoders already stop one layer early (23 layers).
        """
        if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompts must be a list of strings, got {prompts!r}")
        if not prompts:
            raise ValueError("prompts must not be empty")
        length = min(int(self.tokenizer.model_max_length), int(self.text_encoder.config.max_position_embeddings))
        tokens = self.tokenizer(list(prompts), padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        device = next(self.text_encoder.parameters()).device
        return self.text_encoder(tokens.input_ids.to(device)).last_hidden_state.float()

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Model-space latents [B, C, h, w] -> images [B, 3, 8h, 8w] float32 in [0, 1] on the latents' device.

        Differentiable with respect to ``latents`` when grad is enabled (wrap previews in ``torch.no_grad``).
        """
        self._check_latents(latents)
        config = self.vae.config
        z = latents.to(self.device, self.vae.dtype) / config.scaling_factor
        if getattr(config, "shift_factor", None):
            z = z + config.shift_factor
        images = self.vae.decode(z).sample.float()
        return ((images + 1) / 2).clamp(0, 1).to(latents.device)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [0, 1] (H, W multiples of 8) -> model-space latents [B, C, H/8, W/8] float32.

        Uses the posterior mean (no sampling). Gradients flow back to ``images`` (RGB refinement, docs/method.md §4).
        """
        factor = self.vae_scale_factor
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[-1] % factor or images.shape[-2] % factor:
            raise ValueError(f"images must have shape [B, 3, H, W] with H and W multiples of {factor}, got {list(images.shape)}")
        config = self.vae.config
        x = images.to(self.device, self.vae.dtype) * 2 - 1
        mean = self.vae.encode(x).latent_dist.mean
        if getattr(config, "shift_factor", None):
            mean = mean - config.shift_factor
        return (mean * config.scaling_factor).float().to(images.device)

    def _check_latents(self, latents: torch.Tensor) -> None:
        if latents.dim() != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"latents must have shape [B, {self.latent_channels}, h, w], got {list(latents.shape)}")


def components_from_modules(
    unet: torch.nn.Module,
    vae: torch.nn.Module,
    text_encoder: torch.nn.Module,
    tokenizer: Any,
    scheduler_config: dict[str, Any],
    name: str,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
) -> SdComponents:
    """Assemble :class:`SdComponents` from loaded modules: move, cast, freeze, and check they fit together."""
    device, dtype = resolve_device_dtype(device, dtype)
    if getattr(unet.config, "addition_embed_type", None) is not None:
        raise ValueError(f"model {name!r}: UNets with addition_embed_type={unet.config.addition_embed_type!r} (SDXL-style) are not supported; use an SD1.x/SD2.x model")
    width, text_width = unet.config.cross_attention_dim, text_encoder.config.hidden_size
    if width != text_width:
        raise ValueError(f"model {name!r}: the UNet's cross_attention_dim {width} differs from the text encoder's hidden_size {text_width}")
    for module in (unet, vae, text_encoder):
        if next(module.parameters()).dtype != dtype:  # diffusers warns on every .to(dtype), even a no-op one
            module.to(dtype=dtype)
        module.to(device=device).eval().requires_grad_(False)
    scheduler_config = dict(scheduler_config)
    denoiser = DiffusersDenoiser.from_scheduler_config(unet, scheduler_config)
    return SdComponents(denoiser, unet, vae, text_encoder, tokenizer, scheduler_config, name)


def resolve_device_dtype(device: torch.device | str | None, dtype: torch.dtype | str | None) -> tuple[torch.device, torch.dtype]:
    """Default device: CUDA when available. Default dtype: fp16 on CUDA, fp32 elsewhere."""
    try:
        device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}") from e
    if dtype is None:
        return device, torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        if dtype.lower() not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)} or a torch floating dtype, got {dtype!r}")
        dtype = _DTYPES[dtype.lower()]
    if not isinstance(dtype, torch.dtype) or dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"dtype must be torch.float16, torch.bfloat16 or torch.float32, got {dtype!r}")
    return device, dtype


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) asks for no network, read at call time."""
    return any(os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE") for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def load_stable_diffusion(
    model: str | os.PathLike,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    *,
    config: str | os.PathLike | None = None,
    seed: int = 0,
) -> SdComponents:
    """Load Stable Diffusion (SD1.x/SD2.x layout) as :class:`SdComponents`.

    Args:
        model: a diffusers folder (with ``model_index.json``), a single-file ``.safetensors``/``.ckpt``
            checkpoint, a hub id ``owner/name`` (downloads only the needed files; with HF_HUB_OFFLINE=1
            only the local cache is consulted), or ``"tiny"`` (random tiny models, see ``seed``).
        device: default CUDA when available, else CPU.
        dtype: default fp16 on CUDA, fp32 elsewhere.
        config: for single-file checkpoints only: a local diffusers folder of the same model family whose
            configs and tokenizer describe the checkpoint. Required offline; online diffusers fetches it.
        seed: weights of the ``"tiny"`` model.

    Raises:
        ValueError / FileNotFoundError: a bad argument (naming it and its value).
        ModelLoadError: a well-formed reference that could not be loaded (offline, corrupt, unsafe).
    """
    if not isinstance(model, (str, os.PathLike)) or not str(model).strip():
        raise ValueError(f"model must be a folder, a .safetensors/.ckpt file, a hub id or 'tiny', got {model!r}")
    if config is not None and not Path(config).is_dir():
        raise FileNotFoundError(f"config must be a local diffusers folder, got {str(config)!r} (not a folder)")
    text = str(model).strip()
    if config is not None and not text.lower().endswith(SINGLE_FILE_SUFFIXES):
        raise ValueError(f"config is only used with single-file .safetensors/.ckpt checkpoints, got model {text!r} with config {str(config)!r}")
    if text == "tiny":
        from .tiny import build_tiny_components

        device, dtype = resolve_device_dtype(device, dtype)
        return build_tiny_components(seed, device, dtype=dtype)
    path = Path(text).expanduser()
    if path.is_dir():
        return _load_folder(path, device, dtype, name=path.name)
    if path.is_file():
        if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            raise ValueError(f"model file must end in .safetensors or .ckpt (a single-file SD checkpoint), got {text!r}")
        return _load_single_file(path, config, device, dtype)
    if _HUB_ID.match(text) and path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
        return _load_hub(text, device, dtype)
    raise FileNotFoundError(f"model {text!r} does not exist (expected a diffusers folder, a .safetensors/.ckpt file, a hub id 'owner/name' or 'tiny')")


def _read_model_index(folder: Path, argument: str) -> dict[str, Any]:
    index = folder / "model_index.json"
    if not index.is_file():
        hint = ""
        if argument == "model" and (any(folder.glob("*.safetensors")) or any(folder.glob("*.ckpt"))):
            hint = "; it holds single-file checkpoints: pass one of those files instead"
        raise ValueError(f"{argument} {str(folder)!r} is not a diffusers folder: it has no model_index.json{hint}")
    try:
        return json.loads(index.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read {index}: {e}") from e


def _require_safetensors(folder: Path, stem: str) -> None:
    """Refuse a component that ships only pickled weights (``.bin``/``.pt``/``.ckpt``): they are never loaded."""
    if any(folder.glob(f"{stem}*.safetensors")) or any(folder.glob(f"{stem}*.safetensors.index.json")):
        return
    pickled = sorted(p.name for p in folder.glob(f"{stem}*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    if pickled:
        raise ModelLoadError(
            f"{folder} holds only pickled weights ({', '.join(pickled)}); Latent3D loads diffusers folders with .safetensors "
            f"weights only (pickle can run code). Download the safetensors files of this model (most hub models have them: "
            f"{stem}.safetensors), or convert the folder once with a tool you trust"
        )
    raise ModelLoadError(f"{folder} has no weights ({stem}.safetensors missing)")


def _weights_variant(folder: Path, stem: str) -> str | None:
    """"fp16" when a component folder only ships fp16-variant weights (``<stem>.fp16.safetensors``)."""
    if any(folder.glob(f"{stem}.safetensors*")) or any(folder.glob(f"{stem}-*")) or any(folder.glob(f"{stem}.bin")):
        return None
    return "fp16" if any(folder.glob(f"{stem}.fp16.*")) else None


_SUPPORTED_CLASSES = {
    "unet": ("diffusers", ("UNet2DConditionModel",)),
    "vae": ("diffusers", ("AutoencoderKL",)),
    "text_encoder": ("transformers", ("CLIPTextModel", "CLIPTextModelWithProjection")),
    "tokenizer": ("transformers", ("CLIPTokenizer", "CLIPTokenizerFast")),
}


def _component_classes(folder: Path, index: dict[str, Any]) -> dict[str, type]:
    """The classes model_index.json names for each component, restricted to the SD1.x/SD2.x ones."""
    import importlib

    missing = [c for c in (*_SUPPORTED_CLASSES, "scheduler") if c not in index or not (folder / c).is_dir()]
    if missing:
        raise ValueError(f"model {str(folder)!r} lacks the Stable Diffusion components {missing} (needs unet, vae, text_encoder, tokenizer, scheduler)")
    classes = {}
    for component, (library, allowed) in _SUPPORTED_CLASSES.items():
        entry = index[component]
        class_name = entry[1] if isinstance(entry, list) and len(entry) == 2 else None
        if class_name not in allowed:
            raise ValueError(f"model {str(folder)!r}: {component} is {class_name!r}; supported: {allowed} (SD1.x/SD2.x layout)")
        classes[component] = getattr(importlib.import_module(library), class_name)
    return classes


def _load_folder(folder: Path, device, dtype, name: str) -> SdComponents:
    """Per-component loading of a diffusers folder (skips the safety checker and any extra components)."""
    classes = _component_classes(folder, _read_model_index(folder, "model"))
    device, dtype = resolve_device_dtype(device, dtype)
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    for component, stem in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"), ("text_encoder", "model")):
        _require_safetensors(folder / component, stem)
    try:
        unet, vae = (
            classes[c].from_pretrained(folder, subfolder=c, variant=_weights_variant(folder / c, "diffusion_pytorch_model"), torch_dtype=dtype, local_files_only=True)
            for c in ("unet", "vae")
        )
        text_variant = _weights_variant(folder / "text_encoder", "model")
        text_encoder = classes["text_encoder"].from_pretrained(folder / "text_encoder", variant=text_variant, dtype=dtype, local_files_only=True)
        tokenizer = classes["tokenizer"].from_pretrained(folder / "tokenizer", local_files_only=True)
        scheduler_config = json.loads(scheduler_file.read_text())
    except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        raise ModelLoadError(f"cannot load the diffusers folder {str(folder)!r}: {e}") from e
    return components_from_modules(unet, vae, text_encoder, tokenizer, scheduler_config, name, device, dtype)


def _load_hub(repo_id: str, device, dtype) -> SdComponents:
    """Fetch only the files a headless run needs (cache first; nothing else when offline), then load the folder."""
    offline = hub_offline()
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS, local_files_only=offline)
    except Exception as e:  # huggingface_hub raises a zoo of types (offline, 401, 404, connection)
        if offline:
            where = "it is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading; unset HF_HUB_OFFLINE to download it"
        else:
            where = f"the download failed ({type(e).__name__}: {e})"
        raise ModelLoadError(
            f"model {repo_id!r} is neither a local path nor a loadable hub model: {where}. "
            f"Or pass a local diffusers folder or a .safetensors/.ckpt file"
        ) from e
    return _load_folder(Path(folder), device, dtype, name=repo_id)


def _load_single_file(path: Path, config: str | os.PathLike | None, device, dtype) -> SdComponents:
    """diffusers ``StableDiffusionPipeline.from_single_file``; ``.ckpt`` goes through torch.load(weights_only=True)."""
    offline = hub_offline()
    if config is None and offline:
        raise ModelLoadError(
            f"single-file checkpoint {str(path)!r} needs the diffusers configs of its model family (UNet/VAE/text "
            f"encoder shapes, tokenizer, scheduler), which diffusers fetches from the hub, but HF_HUB_OFFLINE=1. "
            f"Give a local diffusers folder of the same family (e.g. a saved SD1.5 pipeline) as its config: --model-config "
            f"on the command line, config= in load_stable_diffusion; or allow hub access"
        )
    if config is not None:
        _read_model_index(Path(config), "config")
    device, dtype = resolve_device_dtype(device, dtype)
    from diffusers import StableDiffusionPipeline

    try:
        pipe = StableDiffusionPipeline.from_single_file(
            str(path),
            config=None if config is None else str(config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            local_files_only=config is not None or offline,
            torch_dtype=None if dtype == torch.float32 else dtype,  # fp32: no cast, no diffusers cast warning
        )
    except Exception as e:  # diffusers wraps unpickling and key errors in OSError/ValueError/KeyError
        raise ModelLoadError(f"cannot load single-file checkpoint {str(path)!r}: {_explain_checkpoint_failure(path) or e}") from e
    scheduler_config = dict(pipe.scheduler.config)
    return components_from_modules(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, scheduler_config, path.stem, device, dtype)


def _explain_checkpoint_failure(path: Path) -> str | None:
    """Why a .ckpt did not load: re-read it with weights_only=True (no code runs) to surface the real error."""
    if path.suffix.lower() != ".ckpt":
        return None
    import pickle

    try:
        torch.load(path, map_location="meta", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(e)).splitlines() if line.strip()]
        reason = next((line for line in lines if "Unsupported" in line or "global" in line.lower()), lines[0] if lines else type(e).__name__)
        return (
            f"it holds Python objects besides tensors ({reason}); it is loaded with torch.load(weights_only=True), "
            f"which refuses to run pickled code. Convert it to .safetensors with a tool you trust, or re-save only its state_dict"
        )
    except Exception as e:  # not a torch checkpoint at all
        return f"not a readable torch checkpoint ({type(e).__name__}: {e})"
    return None


def encode_prompt(components: SdComponents, text: str, negative: str = "", view_dependent: bool = True) -> PromptEmbeddings:
    """Per-view prompt embeddings for the trainer ("{text}, {front|side|back|overhead} view" and ``negative``)."""
    return encode_view_prompts(components.encode_text, text, negative, view_dependent)


def sd15_unet_config() -> dict[str, Any]:
    """UNet2DConditionModel kwargs of Stable Diffusion 1.5 (860M parameters)."""
    return {
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": (320, 640, 1280, 1280),
        "layers_per_block": 2,
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
        "norm_num_groups": 32,
    }


def build_sd15_unet(seed: int = 0) -> torch.nn.Module:
    """An SD1.5-shaped UNet2DConditionModel with random weights (fp32, CPU, eval, frozen), for benchmarks."""
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**sd15_unet_config())
    return unet.eval().requires_grad_(False)
