"""Tiny random Stable-Diffusion-shaped models, built offline from configs (tests, CPU smoke runs, demos).

Same architecture families as SD1.x (UNet2DConditionModel, an 8× AutoencoderKL with 4 latent channels,
CLIPTextModel + CLIPTokenizer, the SD1.x noise schedule) with a few thousand times fewer weights, so
every code path that touches a real model can run on a CPU in milliseconds. The weights are random: the
outputs carry no meaning, only shapes, dtypes, determinism and plumbing are tested with them.

diffusers/transformers are imported inside functions: importing this module stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .loading import SdComponents

TINY_EMBEDDING_DIM = 32
"""Hidden width of the tiny CLIP text model and cross-attention width of the tiny UNet."""


def sd15_scheduler_config(prediction_type: str = "epsilon") -> dict[str, Any]:
    """The scheduler config of Stable Diffusion 1.5 (PNDM; scaled-linear β 0.00085 → 0.012, T = 1000)."""
    return {
        "_class_name": "PNDMScheduler",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
        "trained_betas": None,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "clip_sample": False,
        "prediction_type": prediction_type,
    }


def _byte_unicode_alphabet() -> list[str]:
    """The 256 printable characters CLIP's (GPT-2's) byte-level BPE uses to stand for the bytes 0…255."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    alphabet, extra = [], 0
    for byte in range(256):
        if byte in printable:
            alphabet.append(chr(byte))
        else:  # unprintable bytes map to code points past 255, in order
            alphabet.append(chr(256 + extra))
            extra += 1
    return alphabet


def tiny_tokenizer(model_max_length: int = 77):
    """A CLIPTokenizer with a byte-level vocabulary and no merges (514 ids), built without files.

    Every text tokenizes (one id per UTF-8 byte, the last byte of a word carrying CLIP's ``</w>``), with
    ``<|startoftext|>`` = 512 and ``<|endoftext|>`` = 513 (also the padding token, as in SD1.x).
    """
    from transformers import CLIPTokenizer

    alphabet = _byte_unicode_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    # transformers 5 ignores vocab_file/merges_file keywords; vocab= and merges= are honoured
    return CLIPTokenizer(vocab={tok: i for i, tok in enumerate(tokens)}, merges=[], model_max_length=model_max_length)


def tiny_unet_config() -> dict[str, Any]:
    """UNet2DConditionModel kwargs: channels 32/64, cross-attention (2 heads) only at the coarser level.

    Attention at the full-resolution level is what makes small UNets slow on a CPU (4096 tokens at 64²),
    so like diffusers' own test UNets the cross-attention blocks sit at half resolution.
    """
    return {
        "sample_size": 16,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "cross_attention_dim": TINY_EMBEDDING_DIM,
        "attention_head_dim": 2,  # diffusers' legacy name: this is the number of heads
        "norm_num_groups": 32,
    }


def tiny_vae_config() -> dict[str, Any]:
    """AutoencoderKL kwargs: 4 latent channels and 3 down-sampling stages (8×, like SD), scaling 0.18215."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "block_out_channels": (8, 16, 16, 16),
        "layers_per_block": 1,
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "norm_num_groups": 4,
        "sample_size": 128,
        "scaling_factor": 0.18215,
    }


def tiny_text_config(vocab_size: int = 514):
    """CLIPTextConfig: hidden 32, 2 layers, 2 heads, 77 positions, ids of the tiny tokenizer."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TINY_EMBEDDING_DIM,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


def build_tiny_modules(seed: int = 0, prediction_type: str = "epsilon") -> dict[str, Any]:
    """The tiny modules on the CPU in fp32: {"unet", "vae", "text_encoder", "tokenizer", "scheduler_config"}.

    Weights depend only on ``seed`` (and the torch version): they are drawn from a forked global RNG, so
    the caller's random state is left untouched.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**tiny_unet_config())
        vae = AutoencoderKL(**tiny_vae_config())
        text_encoder = CLIPTextModel(tiny_text_config(len(tokenizer)))
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler_config": sd15_scheduler_config(prediction_type),
    }


def build_tiny_components(
    seed: int = 0, device: torch.device | str = "cpu", prediction_type: str = "epsilon", dtype: torch.dtype = torch.float32
) -> "SdComponents":
    """Tiny random :class:`~latent3d.loading.SdComponents`, deterministic for a given seed.

    Weights are drawn on the CPU in fp32, then moved: the same seed gives the same weights on any device.
    """
    from .loading import components_from_modules

    modules = build_tiny_modules(seed, prediction_type)
    return components_from_modules(**modules, name="tiny", device=device, dtype=dtype)


def save_tiny_pipeline(directory: str | Path, seed: int = 0, prediction_type: str = "epsilon") -> Path:
    """Write the tiny model as a diffusers folder (model_index.json, unet/, vae/, text_encoder/, …).

    The folder loads with ``load_stable_diffusion(directory)`` or ``StableDiffusionPipeline.from_pretrained``;
    it has no safety checker. Returns the folder.
    """
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    modules = build_tiny_modules(seed, prediction_type)
    pipe = StableDiffusionPipeline(
        vae=modules["vae"],
        text_encoder=modules["text_encoder"],
        tokenizer=modules["tokenizer"],
        unet=modules["unet"],
        scheduler=PNDMScheduler.from_config(modules["scheduler_config"]),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    directory = Path(directory)
    pipe.save_pretrained(directory, safe_serialization=True)
    return directory


# -- the original (LDM / CompVis) single-file layout, so single-file loading can be tested offline ----------

_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _ldm_unet_key(key: str, layers: int, up_blocks: list[bool]) -> str:
    """One diffusers UNet key → its name in an SD1.x LDM checkpoint (below ``model.diffusion_model.``)."""
    parts = key.split(".")
    for new, old in _UNET_TOP.items():
        if key.startswith(new + "."):
            return old + key[len(new) :]
    if parts[0] == "down_blocks":
        block = int(parts[1])
        if parts[2] == "downsamplers":  # down_blocks.i.downsamplers.0.conv.* -> input_blocks.n.0.op.*
            return f"input_blocks.{(layers + 1) * (block + 1)}.0.op." + ".".join(parts[5:])
        index = (layers + 1) * block + int(parts[3]) + 1
        return _ldm_sub(f"input_blocks.{index}", parts[2], parts[4:])
    if parts[0] == "up_blocks":
        block = int(parts[1])
        if parts[2] == "upsamplers":  # the upsampler follows the resnet (and attention, when there is one)
            return f"output_blocks.{(layers + 1) * block + layers}.{2 if up_blocks[block] else 1}.conv." + ".".join(parts[5:])
        index = (layers + 1) * block + int(parts[3])
        return _ldm_sub(f"output_blocks.{index}", parts[2], parts[4:])
    if parts[0] == "mid_block":  # resnets.0 -> middle_block.0, attentions.0 -> .1, resnets.1 -> .2
        index = 1 if parts[1] == "attentions" else 2 * int(parts[2])
        return _ldm_sub(f"middle_block.{index}", parts[1], parts[3:], nested=False)
    raise ValueError(f"no LDM name for UNet key {key!r}")


def _ldm_sub(prefix: str, kind: str, rest: list[str], nested: bool = True) -> str:
    """A resnet or attention inside an LDM block: ``{prefix}.0.*`` / ``{prefix}.1.*`` (``{prefix}.*`` in the middle block)."""
    name = ".".join(rest)
    if kind == "resnets":
        for new, old in _UNET_RESNET.items():
            if name.startswith(new + "."):
                name = old + name[len(new) :]
                break
    if not nested:
        return f"{prefix}.{name}"
    return f"{prefix}.{1 if kind == 'attentions' else 0}.{name}"


def _ldm_vae_key(key: str, num_blocks: int) -> str:
    key = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
    key = key.replace("mid_block.resnets.0", "mid.block_1").replace("mid_block.resnets.1", "mid.block_2")
    if "mid_block.attentions.0" in key:
        key = key.replace("mid_block.attentions.0", "mid.attn_1")
        for new, old in _VAE_ATTENTION.items():
            key = key.replace(f"attn_1.{new}.", f"attn_1.{old}.")
    parts = key.split(".")
    if parts[1] in ("down_blocks", "up_blocks"):
        block = int(parts[2]) if parts[1] == "down_blocks" else num_blocks - 1 - int(parts[2])  # LDM numbers up by resolution
        stem = f"{parts[0]}.{'down' if parts[1] == 'down_blocks' else 'up'}.{block}"
        if parts[3] == "resnets":
            return f"{stem}.block.{'.'.join(parts[4:])}"
        return f"{stem}.{'downsample' if parts[1] == 'down_blocks' else 'upsample'}.{'.'.join(parts[5:])}"
    return key


def ldm_state_dict(components: "SdComponents") -> dict[str, torch.Tensor]:
    """An SD1.x-layout single-file state dict (``model.diffusion_model.``, ``first_stage_model.``,
    ``cond_stage_model.transformer.``) of the given components, for testing single-file loading.

    Handles the layouts the tiny and SD1.x models use (uniform ``layers_per_block``, CLIP text encoder).
    """
    unet, vae = components.unet, components.vae
    up_has_attention = [hasattr(block, "attentions") for block in unet.up_blocks]
    layers = unet.config.layers_per_block
    out = {f"model.diffusion_model.{_ldm_unet_key(k, layers, up_has_attention)}": v for k, v in unet.state_dict().items()}
    for key, value in vae.state_dict().items():
        if "mid.attn_1" in _ldm_vae_key(key, len(vae.config.block_out_channels)) and value.dim() == 2:
            value = value[:, :, None, None]  # LDM's VAE attention uses 1×1 convolutions
        out[f"first_stage_model.{_ldm_vae_key(key, len(vae.config.block_out_channels))}"] = value
    for key, value in components.text_encoder.state_dict().items():
        name = key if key.startswith("text_model.") else f"text_model.{key}"  # transformers ≥ 5.6 flattened CLIPTextModel
        out[f"cond_stage_model.transformer.{name}"] = value
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def save_tiny_single_file(path: str | Path, seed: int = 0) -> Path:
    """Write the tiny model as one SD1.x-layout checkpoint: ``.safetensors``, or ``.ckpt`` (a torch zip
    holding ``{"state_dict": ...}`` with tensors only). Load it with ``load_stable_diffusion(path,
    config=save_tiny_pipeline(folder))``; offline, single-file loading needs that config folder."""
    path = Path(path)
    state = ldm_state_dict(build_tiny_components(seed))
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    elif path.suffix == ".ckpt":
        torch.save({"state_dict": state}, path)
    else:
        raise ValueError(f"path must end in .safetensors or .ckpt, got {str(path)!r}")
    return path
