"""Build a random-weight checkpoint in the SD1.5 single-file layout, which ComfyUI loads as SD15.

The modules are ComfyUI's own classes (UNetModel, AutoencoderKL, CLIPTextModel), so the key names are
exactly what its checkpoint loader expects. ComfyUI's layers skip weight initialisation (weights are
overwritten on load), so every layer is initialised here with the ``reset_parameters`` of its torch base
class. Weights are stored in fp16 (≈2 GB); nothing is downloaded.

Run with ComfyUI importable (COMFYUI_ROOT set, an interpreter with ComfyUI's requirements):

    COMFYUI_ROOT=/path/to/ComfyUI python tests/host/make_checkpoint.py [--output PATH] [--force]

The host tests call :func:`ensure_checkpoint`, which builds the file once and reuses it afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import torch

from comfy_host import checkpoint_path, import_comfy  # this folder is on sys.path as a script and under pytest

BUILDER_VERSION = "1"
METADATA = {"latent3d_random_checkpoint": "sd15", "latent3d_builder_version": BUILDER_VERSION}

# The SD1.5 UNet (as ComfyUI's model detection reads it off a real SD1.5 checkpoint).
SD15_UNET = {
    "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 2, 4, 4],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_middle": 1,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_spatial_transformer": True, "use_linear_in_transformer": False, "context_dim": 768,
    "num_heads": 8, "legacy": False, "adm_in_channels": None, "use_checkpoint": False,
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
SD_VAE = {
    "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
    "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
}


def reset_weights(module: torch.nn.Module) -> None:
    """Initialise every layer with its torch base class's ``reset_parameters``.

    Parameters no torch layer owns would keep ``torch.empty`` garbage, so they are marked NaN first and
    any that remain get N(0, 0.02).
    """
    with torch.no_grad():
        for param in module.parameters():
            param.fill_(float("nan"))
        for sub in module.modules():
            for cls in type(sub).__mro__:
                if cls.__module__.startswith("torch.nn.modules") and "reset_parameters" in vars(cls):
                    cls.reset_parameters(sub)
                    break
        for param in module.parameters():
            if torch.isnan(param).any():
                param.normal_(0.0, 0.02)


def _half_state(module: torch.nn.Module, prefix: str, keep: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().to(torch.float16).contiguous() for k, v in module.state_dict().items() if k.startswith(keep)}


def build_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The three components under the SD1.5 single-file prefixes, fp16, one module in memory at a time."""
    import_comfy()
    import comfy.clip_model
    import comfy.ops
    import comfy.sd1_clip
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    torch.manual_seed(seed)
    ops = comfy.ops.disable_weight_init
    state: dict[str, torch.Tensor] = {}

    unet = UNetModel(**SD15_UNET, dtype=torch.float32, device="cpu", operations=ops)
    reset_weights(unet)
    state.update(_half_state(unet, "model.diffusion_model."))
    del unet

    vae = AutoencoderKL(ddconfig=SD_VAE, embed_dim=4)
    reset_weights(vae)
    state.update(_half_state(vae, "first_stage_model."))
    del vae

    config_file = Path(comfy.sd1_clip.__file__).with_name("sd1_clip_config.json")
    clip = comfy.clip_model.CLIPTextModel(json.loads(config_file.read_text()), torch.float32, "cpu", ops)
    reset_weights(clip)
    # An SD1.5 checkpoint carries the text transformer only (no projection).
    state.update(_half_state(clip, "cond_stage_model.transformer.", keep="text_model."))
    del clip
    return state


def make_checkpoint(path: Path, seed: int = 0) -> Path:
    """Write the checkpoint to ``path`` atomically (a partial file never takes the final name)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = build_state_dict(seed)
    partial = path.with_name(path.name + f".partial-{os.getpid()}")
    try:
        save_file(state, str(partial), metadata={**METADATA, "seed": str(seed)})
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def is_current(path: Path) -> bool:
    """True when ``path`` is a checkpoint this builder (same version) wrote."""
    from safetensors import safe_open

    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception:  # a truncated or foreign file: rebuild
        return False
    return all(metadata.get(k) == v for k, v in METADATA.items())


def ensure_checkpoint(path: Path | None = None) -> Path:
    """The cached random checkpoint, built on first use (≈1–2 min, peak a few GB of RAM)."""
    path = path or checkpoint_path()
    if not is_current(path):
        make_checkpoint(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=None, help="default: $LATENT3D_CHECKPOINT_DIR or $COMFYUI_ROOT/models/checkpoints")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even when a current file exists")
    args = parser.parse_args(argv)
    path = args.output or checkpoint_path()
    if is_current(path) and not args.force:
        print(f"up to date: {path}")
        return 0
    start = time.perf_counter()
    make_checkpoint(path, args.seed)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux
    size_gib = path.stat().st_size / 2**30
    print(f"wrote {path}: {size_gib:.2f} GiB in {time.perf_counter() - start:.1f} s, peak RSS {peak_gib:.1f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
