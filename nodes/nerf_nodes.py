"""Latent-NeRF Train: SDS through the user's MODEL, resumable, with live progress."""

from __future__ import annotations

from comfy_api.latest import io

from ..latent3d.images import to_pil
from ..latent3d.nerf.train import fit_latent_nerf, run_identity, turntable_latents
from . import host
from .comfy_denoiser import ComfyDenoiser
from .schema import build_schema
from .spec import build_config
from .specs import LATENT_NERF_TRAIN
from .types import TrainedNerf

VIEWS = ("front", "side", "back", "overhead")


class LatentNeRFTrain(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return build_schema(LATENT_NERF_TRAIN, hidden_node_id=True)

    @classmethod
    def execute(cls, model, clip, prompt, negative, view_dependent, resume, turntable_frames, shape_guide=None, vae=None, **widgets) -> io.NodeOutput:
        import comfy.model_management as mm

        overrides = {view: widgets.pop(f"{view}_conditioning", None) for view in VIEWS}
        config = build_config(LATENT_NERF_TRAIN, widgets)
        device = mm.get_torch_device()
        denoiser = ComfyDenoiser(model)
        embeddings = host.view_embeddings(clip, prompt, negative, view_dependent, overrides)
        with host.pip_hint(LATENT_NERF_TRAIN.display_name):
            guide = shape_guide.build(device, host.stage_progress(cls.hidden.unique_id)) if shape_guide is not None else None
        key = host.run_key(run_identity(config), embeddings.fingerprint(), host.model_fingerprint(model), guide and guide.fingerprint())
        checkpoint = host.run_directory(key) / "nerf.safetensors"
        fmt = model.model.latent_format
        trained = TrainedNerf(None, config, checkpoint, float(fmt.scale_factor), float(getattr(fmt, "shift_factor", 0.0)))
        decode = lambda z: to_pil(host.latent_images(z[None], vae, trained.to_vae_latent)[0])  # noqa: E731
        start = host.checkpoint_step(checkpoint, LATENT_NERF_TRAIN.display_name) if resume else 0
        progress = host.HostProgress(cls.hidden.unique_id, config.iterations, decode, start)
        with host.training_mode():
            result = fit_latent_nerf(
                config, denoiser, embeddings, device=device, shape_guide=guide, on_step=progress.on_step, on_metrics=progress.on_metrics,
                should_stop=progress.should_stop, checkpoint_path=checkpoint, resume=resume,
            )
        progress.finish(result.status, result.step, result.skipped_steps)
        if result.status == "interrupted":
            host.raise_interrupted()
        trained.model = result.model.eval()
        frames = turntable_latents(result.model, config, turntable_frames, config.preview_resolution)
        return io.NodeOutput(trained, host.latent_images(frames, vae, trained.to_vae_latent))
