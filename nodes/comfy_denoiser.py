"""ComfyUI's MODEL, CLIP and VAE as the core's Denoiser, text encoder and decoder.

How the host computes ε (ComfyUI's comfy/model_sampling.py): ComfyUI keeps σ = √((1−ᾱ)/ᾱ) per DDPM timestep;
``apply_model(x, σ)`` takes x = z_t·√(1+σ²) (z_t the DDPM-scaled noisy latent) and returns the denoised
x0 through the model's own parameterization (ε or v), so ε = (x − x0)/σ for either.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import torch

import comfy.model_management
import comfy.model_sampling

from ..latent3d.guidance.denoiser import PredictionType

if TYPE_CHECKING:
    from ..latent3d.nerf.cameras import Cameras

# model_config class names ComfyUI gives these families (comfy/supported_models.py).
SUPPORTED_FAMILIES = {"SD15": "Stable Diffusion 1.x", "SD20": "Stable Diffusion 2.x"}
_UNSUPPORTED_HINTS = {
    "SDXL": "it needs a pooled text vector and size conditioning ('y') besides the cross-attention context",
    "SDXLRefiner": "it needs a pooled text vector and aesthetic-score conditioning ('y')",
    "SD21UnclipL": "unCLIP models need an image embedding ('y')",
    "SD21UnclipH": "unCLIP models need an image embedding ('y')",
    "SD15_instructpix2pix": "it needs an input image concatenated to the latent",
    "SD_X4Upscaler": "it is an upscaler that needs a low-resolution image",
}


def model_family(model: Any) -> str:
    """The class name of the model's ComfyUI config (``SD15``, ``SD20``, ``SDXL``, ``Flux``, …)."""
    return type(model.model.model_config).__name__


def _sampling_prediction_type(sampling: Any) -> PredictionType | None:
    """'epsilon'/'v_prediction' for a discrete DDPM schedule with that parameterization, else None."""
    cls = type(sampling)
    discrete = comfy.model_sampling.ModelSamplingDiscrete
    if not isinstance(sampling, discrete) or cls.sigma is not discrete.sigma or cls.calculate_input is not comfy.model_sampling.EPS.calculate_input:
        return None
    if cls.calculate_denoised is comfy.model_sampling.EPS.calculate_denoised:
        return "epsilon"
    if cls.calculate_denoised is comfy.model_sampling.V_PREDICTION.calculate_denoised:
        return "v_prediction"
    return None


def check_supported_model(model: Any) -> PredictionType:
    """Raise ValueError unless ``model`` is an SD1.x/SD2.x text-to-image MODEL on a discrete ε or v schedule.

    Returns the prediction type its (possibly patched) ``model_sampling`` uses.
    """
    if not all(hasattr(model, name) for name in ("model", "get_model_object", "load_device")):
        raise ValueError(f"model must be a ComfyUI MODEL (a ModelPatcher from a checkpoint loader), got {type(model).__name__}")
    family = model_family(model)
    supported = ", ".join(f"{name} ({desc})" for name, desc in SUPPORTED_FAMILIES.items())
    if family not in SUPPORTED_FAMILIES:
        hint = _UNSUPPORTED_HINTS.get(family, "its conditioning and noise schedule differ from Stable Diffusion 1.x/2.x")
        raise ValueError(f"model family {family} is not supported by Latent3D guidance ({hint}); supported: {supported}")
    in_channels = model.model.model_config.unet_config.get("in_channels", 4)
    if in_channels != 4 or getattr(model.model, "adm_channels", 0):
        raise ValueError(
            f"model ({family}) has UNet in_channels={in_channels} and adm_channels={getattr(model.model, 'adm_channels', 0)}: "
            "an inpainting or image-conditioned variant; connect a plain text-to-image SD1.x/SD2.x checkpoint (in_channels=4, no adm)"
        )
    sampling = model.get_model_object("model_sampling")
    prediction_type = _sampling_prediction_type(sampling)
    if prediction_type is None:
        kinds = ", ".join(c.__name__ for c in type(sampling).__mro__[1:] if c not in (torch.nn.Module, object))
        raise ValueError(
            f"model ({family}) samples with {type(sampling).__name__} ({kinds}); Latent3D guidance needs a discrete DDPM "
            "schedule with eps or v_prediction (ModelSamplingDiscrete set to eps or v_prediction, zsnr allowed)"
        )
    return prediction_type


def alphas_cumprod_from_model_sampling(sampling: Any) -> torch.Tensor:
    """[T] float32 CPU ᾱ_t = 1/(1+σ_t²) for t = 0 … T−1, from ComfyUI's discrete sigmas (honours zsnr)."""
    steps = int(sampling.sigmas.shape[0])
    sigmas = sampling.sigma(torch.arange(steps, device=sampling.sigmas.device)).double().cpu()
    return (1.0 / (1.0 + sigmas**2)).float()


class ComfyDenoiser:
    """A ComfyUI MODEL (ModelPatcher) as a :class:`latent3d.guidance.denoiser.Denoiser`.

    Honours the patcher's object patches (e.g. ModelSamplingDiscrete → v_prediction), weight patches (LoRA)
    and ``transformer_options`` (attention patches, wrappers); the model is (re)loaded through ComfyUI's
    memory manager on every call, so --lowvram/--cpu and other models' loads are respected. Not honoured:
    ``model_function_wrapper`` and hooks that need ``cond_or_uncond`` (use the sampler route for those).
    """

    def __init__(self, model: Any) -> None:
        self.prediction_type: PredictionType = check_supported_model(model)
        self.model = model
        self.model_sampling = model.get_model_object("model_sampling")
        self.alphas_cumprod = alphas_cumprod_from_model_sampling(self.model_sampling)
        self.embedding_dim: int | None = int(model.model.model_config.unet_config["context_dim"])
        self.latent_channels = int(model.model.latent_format.latent_channels)

    def fingerprint(self) -> str:
        """The MODEL's identity (weights sample, family, LoRA and object patches); checkpoints record it."""
        from .host import model_fingerprint

        return model_fingerprint(self.model)

    def load(self, latent_shape: Sequence[int] | None = None) -> None:
        """Load (and patch) the model on its device; well under a millisecond when it already is.

        ``latent_shape`` [B, C, h, w] lets ComfyUI reserve the activation memory of one call (it decides
        --lowvram partial loading from that). Patching writes into the weights in place, which torch refuses
        outside inference mode when the weights were created inside it (as every loader node does), hence
        the inference-mode block.
        """
        memory = self.model.memory_required(list(latent_shape)) if latent_shape is not None else 0
        with torch.inference_mode():
            comfy.model_management.load_models_gpu([self.model], memory_required=memory)

    def _check_inputs(self, z_t: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor) -> None:
        if z_t.dim() != 4 or z_t.shape[1] != self.latent_channels:
            raise ValueError(f"z_t must have shape [B, {self.latent_channels}, h, w], got {list(z_t.shape)}")
        batch = z_t.shape[0]
        if t.shape != (batch,) or t.is_floating_point():
            raise ValueError(f"t must be an integer tensor of shape [{batch}], got {t.dtype} {list(t.shape)}")
        steps = self.alphas_cumprod.shape[0]
        if batch and (int(t.min()) < 0 or int(t.max()) >= steps):
            raise ValueError(f"t must lie in [0, {steps}), got min {int(t.min())} max {int(t.max())}")
        if embeddings.dim() != 3 or embeddings.shape[0] != batch or embeddings.shape[2] != self.embedding_dim:
            raise ValueError(f"embeddings must have shape [{batch}, L, {self.embedding_dim}] (one per latent, the model's context width), got {list(embeddings.shape)}")

    def predict_noise(
        self, z_t: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor, cameras: Cameras | None = None
    ) -> torch.Tensor:
        """z_t [B, 4, h, w] (model space), t [B] int64, embeddings [B, L, C] -> ε [B, 4, h, w] float32 on z_t's device.

        Runs under ``torch.no_grad()`` (SDS needs no UNet gradient), outside inference mode, so ε is an
        ordinary tensor a training loop can use. ``cameras`` is ignored. An interrupt requested during the
        call raises ``InterruptProcessingException`` within one UNet block (:func:`with_interrupt_points`).
        """
        self._check_inputs(z_t, t, embeddings)
        self.load(z_t.shape)
        device = self.model.load_device
        with torch.no_grad():
            sigma = self.model_sampling.sigma(t.to(device)).to(device, torch.float32)  # [B]
            x = z_t.detach().to(device, torch.float32) * (1.0 + sigma**2).sqrt().view(-1, 1, 1, 1)
            options = with_interrupt_points(self.model.model_options.get("transformer_options", {}))
            options["sigmas"] = sigma
            denoised = self.model.model.apply_model(x, sigma, c_crossattn=embeddings.to(device), transformer_options=options)
            eps = (x - denoised.float()) / sigma.view(-1, 1, 1, 1)
        return eps.to(z_t.device)


def _interrupt_after_input_block(h: torch.Tensor, transformer_options: dict) -> torch.Tensor:
    comfy.model_management.throw_exception_if_processing_interrupted()
    return h


def _interrupt_before_output_block(h: torch.Tensor, skip: torch.Tensor, transformer_options: dict) -> tuple[torch.Tensor, torch.Tensor]:
    comfy.model_management.throw_exception_if_processing_interrupted()
    return h, skip


def with_interrupt_points(transformer_options: dict) -> dict:
    """A copy of ``transformer_options`` whose UNet block patches check ComfyUI's interrupt flag after every
    input block and before every output block (25 points per call for SD1.x/2.x), so an interrupt stops a
    call within one block instead of after the whole call (minutes at large latents on a CPU). The model's
    own patch lists are copied, never changed."""
    options = dict(transformer_options)
    patches = {name: list(items) for name, items in options.get("patches", {}).items()}
    patches.setdefault("input_block_patch", []).append(_interrupt_after_input_block)
    patches.setdefault("output_block_patch", []).append(_interrupt_before_output_block)
    options["patches"] = patches
    return options


def encode_with_clip(clip: Any, texts: list[str]) -> torch.Tensor:
    """Encode prompts with a ComfyUI CLIP: [N, L, C] float32, one row per text, as CLIPTextEncode would.

    ``embedding:name`` (textual inversion) and ``(word:1.2)`` weights are resolved by ComfyUI's tokenizer.
    A prompt longer than 75 tokens gives 77·k tokens; rows of different lengths are brought to the least
    common multiple of the lengths by repeating each row's token sequence (what ComfyUI does when it
    batches conds). Repeating the whole context is exact: cross-attention's softmax over k copies of the
    keys yields the same weighted mean. Nothing is truncated. The result is an ordinary tensor (not an
    inference tensor), on the CLIP's output device.
    """
    if not isinstance(texts, (list, tuple)) or not texts or not all(isinstance(text, str) for text in texts):
        raise ValueError(f"texts must be a non-empty list of strings, got {texts!r}")
    conds = []
    with torch.inference_mode():  # loading the CLIP patches its weights in place (see ComfyDenoiser.load)
        for text in texts:
            cond, _pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)  # [1, 77·k, C]
            conds.append(cond)
    out = torch.cat(same_length(conds))
    with torch.inference_mode(False):
        return out.float().clone()


def same_length(contexts: list[torch.Tensor]) -> list[torch.Tensor]:
    """Repeat each [1, L_i, C] context to the least common multiple of the lengths (exact for
    cross-attention: k copies of the keys give the same softmax-weighted mean)."""
    length = math.lcm(*(int(c.shape[1]) for c in contexts))
    return [c.repeat(1, length // c.shape[1], 1) for c in contexts]


def latent_to_model_space(model: Any, latent: torch.Tensor) -> torch.Tensor:
    """A LATENT's samples (unscaled VAE space) -> the model's space (×0.18215 for SD1.x), where Latent-NeRF lives."""
    return model.model.process_latent_in(latent)


def model_space_to_latent(model: Any, z: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`latent_to_model_space`: model space -> LATENT samples for ``vae.decode`` and LATENT outputs."""
    return model.model.process_latent_out(z)


def vae_decode(vae: Any, latent: torch.Tensor) -> torch.Tensor:
    """Decode unscaled latents [B, 4, h, w] with a ComfyUI VAE -> IMAGE [B, 8h, 8w, 3] float32 in [0, 1].

    For model-space latents, pass ``model_space_to_latent(model, z)``. The result is an ordinary tensor.
    """
    if latent.dim() != 4:
        raise ValueError(f"latent must have shape [B, C, h, w], got {list(latent.shape)}")
    with torch.inference_mode():
        image = vae.decode(latent.detach())
    with torch.inference_mode(False):
        return image.float().clone()
