"""The denoiser protocol: how the core talks to diffusion, and its two in-core implementations.

Everything the 3D code needs from a diffusion model is "ε from (z_t, t, text embeddings)" plus the noise
schedule ᾱ_t. ComfyUI's MODEL (nodes/), a diffusers UNet and the analytic oracle all satisfy it.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Callable, Literal, Protocol, runtime_checkable

import torch

from ..nerf.cameras import Cameras

PredictionType = Literal["epsilon", "v_prediction"]


@runtime_checkable
class Denoiser(Protocol):
    """ε-predictor at DDPM timesteps.

    Attributes:
        alphas_cumprod: [T] float32 CPU tensor, ᾱ_t for integer t in [0, T).
        prediction_type: what the wrapped model predicts; ``predict_noise`` always returns ε.
        embedding_dim: width C of the text embeddings the model takes (None: not checked).
    """

    alphas_cumprod: torch.Tensor
    prediction_type: PredictionType
    embedding_dim: int | None

    def predict_noise(
        self, z_t: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor, cameras: Cameras | None = None
    ) -> torch.Tensor:
        """z_t [B, 4, h, w] (model space), t [B] int64, embeddings [B, L, C] -> ε [B, 4, h, w] float32.

        ``cameras`` (len B) is per-view context; real models ignore it, the oracle needs it.
        """
        ...


def denoiser_fingerprint(denoiser: Any) -> str | None:
    """``denoiser.fingerprint()`` when it has one (checkpoints record it so a run is not resumed with another
    model), else None."""
    fingerprint = getattr(denoiser, "fingerprint", None)
    return fingerprint() if callable(fingerprint) else None


def weights_digest(parameters: list[torch.Tensor], *extra: str, sample: int = 4096) -> str:
    """16 hex digits identifying a set of weights cheaply: sha256 of the first ``sample`` values of the
    first, middle and last tensor (a different checkpoint differs there), their shapes, and ``extra``."""
    digest = hashlib.sha256("|".join(extra).encode())
    chosen = [parameters[0], parameters[len(parameters) // 2], parameters[-1]] if parameters else []
    for tensor in chosen:
        digest.update(repr(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().flatten()[:sample].float().cpu().numpy().tobytes())
    digest.update(repr(len(parameters)).encode())
    return digest.hexdigest()[:16]


def scaled_linear_alphas_cumprod(beta_start: float = 0.00085, beta_end: float = 0.012, steps: int = 1000) -> torch.Tensor:
    """ᾱ of Stable Diffusion 1.x/2.x: β linear in √β from beta_start to beta_end over ``steps``."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def alphas_cumprod_from_scheduler_config(config: dict[str, Any]) -> torch.Tensor:
    """ᾱ from a diffusers scheduler config (``scheduler/scheduler_config.json``)."""
    steps = int(config.get("num_train_timesteps", 1000))
    start, end = float(config.get("beta_start", 0.00085)), float(config.get("beta_end", 0.012))
    kind = config.get("beta_schedule", "scaled_linear")
    if config.get("trained_betas") is not None:
        betas = torch.tensor(config["trained_betas"], dtype=torch.float64)
    elif kind == "scaled_linear":
        return scaled_linear_alphas_cumprod(start, end, steps)
    elif kind == "linear":
        betas = torch.linspace(start, end, steps, dtype=torch.float64)
    elif kind == "squaredcos_cap_v2":
        f = lambda i: math.cos((i / steps + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        betas = torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(steps)], dtype=torch.float64)
    else:
        raise ValueError(f"scheduler config beta_schedule must be scaled_linear, linear or squaredcos_cap_v2, got {kind!r}")
    return torch.cumprod(1 - betas, 0).float()


def epsilon_from_prediction(output: torch.Tensor, z_t: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """Convert a model output to ε. alpha_bar broadcasts against z_t ([B, 1, 1, 1])."""
    if prediction_type == "epsilon":
        return output
    if prediction_type == "v_prediction":  # v = √ᾱ ε − √(1−ᾱ) x0  ⇒  ε = √ᾱ v + √(1−ᾱ) z_t
        return alpha_bar.sqrt() * output + (1 - alpha_bar).sqrt() * z_t
    raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")


class DiffusersDenoiser:
    """A diffusers ``UNet2DConditionModel`` as a :class:`Denoiser`.

    The UNet runs in its own dtype and device; inputs are cast to them and ε is returned as float32 on the
    input's device. Gradients never flow through the UNet (SDS does not need them).
    """

    def __init__(self, unet: torch.nn.Module, alphas_cumprod: torch.Tensor, prediction_type: PredictionType = "epsilon") -> None:
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
        self.unet = unet
        self.alphas_cumprod = alphas_cumprod.detach().float().cpu()
        self.prediction_type = prediction_type
        self.embedding_dim = getattr(getattr(unet, "config", None), "cross_attention_dim", None)

    @classmethod
    def from_scheduler_config(cls, unet: torch.nn.Module, scheduler_config: dict[str, Any]) -> "DiffusersDenoiser":
        return cls(unet, alphas_cumprod_from_scheduler_config(scheduler_config), scheduler_config.get("prediction_type", "epsilon"))

    def fingerprint(self) -> str:
        """Identity of the UNet weights, its prediction type and noise schedule (see ``weights_digest``)."""
        alphas = hashlib.sha256(self.alphas_cumprod.numpy().tobytes()).hexdigest()[:8]
        return weights_digest(list(self.unet.parameters()), self.prediction_type, alphas)

    @torch.no_grad()
    def predict_noise(self, z_t, t, embeddings, cameras=None):
        param = next(self.unet.parameters())
        out = self.unet(z_t.to(param), t.to(param.device), encoder_hidden_states=embeddings.to(param)).sample
        alpha_bar = self.alphas_cumprod.to(z_t.device)[t.to(z_t.device)].view(-1, 1, 1, 1)
        return epsilon_from_prediction(out.float().to(z_t.device), z_t.float(), alpha_bar, self.prediction_type)


class OracleDenoiser:
    """An analytic denoiser that knows the answer: ε* = (z_t − √ᾱ·target)/√(1 − ᾱ).

    ``target_render(cameras, height, width)`` returns the target's latent views [B, C, h, w]; the oracle's
    ε* points every z_t exactly at the target view, so SDS with it drives renders toward the target.
    Text embeddings are ignored (so classifier-free guidance returns ε* unchanged).
    """

    prediction_type: PredictionType = "epsilon"
    embedding_dim = None

    def __init__(self, target_render: Callable[[Cameras, int, int], torch.Tensor], alphas_cumprod: torch.Tensor | None = None) -> None:
        self.target_render = target_render
        self.alphas_cumprod = (alphas_cumprod if alphas_cumprod is not None else scaled_linear_alphas_cumprod()).float().cpu()

    @torch.no_grad()
    def predict_noise(self, z_t, t, embeddings, cameras=None):
        if cameras is None or len(cameras) != z_t.shape[0]:
            raise ValueError(f"OracleDenoiser needs one camera per latent: got {None if cameras is None else len(cameras)} for batch {z_t.shape[0]}")
        target = self.target_render(cameras, z_t.shape[-2], z_t.shape[-1]).to(z_t)
        alpha_bar = self.alphas_cumprod.to(z_t.device)[t.to(z_t.device)].view(-1, 1, 1, 1)
        return ((z_t - alpha_bar.sqrt() * target) / (1 - alpha_bar).sqrt()).float()
