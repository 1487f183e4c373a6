"""Latent-NeRF Train: SDS through the user's MODEL, resumable, with live progress."""

from __future__ import annotations

from ..latent3d.images import to_pil
from ..latent3d.nerf.train import fit_latent_nerf, run_identity, turntable_latents
from . import host, memory
from .api import io
from .comfy_denoiser import ComfyDenoiser
from .eta import SizeWidget
from .schema import build_schema
from .spec import build_config
from .specs import LATENT_NERF_TRAIN, MIN_LATENT
from .training import TrainingRun
from .types import TrainedNerf

VIEWS = ("front", "side", "back", "overhead")
NAME = LATENT_NERF_TRAIN.display_name


def step_estimate(model):
    """Bytes of one training step at latent side r: the UNet call and the render with gradients."""
    return lambda r: memory.StepEstimate({"UNet (ComfyUI's estimate)": memory.unet_bytes(model, r), "render": memory.render_bytes(r)})


class LatentNeRFTrain(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return build_schema(LATENT_NERF_TRAIN, hidden_node_id=True, hidden_prompt=True)

    @classmethod
    def execute(cls, model, clip, prompt, negative, view_dependent, resume, keep_optimizer, turntable_frames, shape_guide=None, vae=None,
                **widgets) -> io.NodeOutput:
        import comfy.model_management as mm

        overrides = {view: widgets.pop(f"{view}_conditioning", None) for view in VIEWS}
        run = TrainingRun(NAME, cls.hidden.unique_id, mm.get_torch_device())
        with run.collecting():
            run.check_downstream(cls.hidden.prompt)
            config = build_config(LATENT_NERF_TRAIN, widgets)
            denoiser = ComfyDenoiser(model)
            run.check_memory(model, "resolution", config.resolution, step_estimate(model), MIN_LATENT)
            embeddings = host.view_embeddings(clip, prompt, negative, view_dependent, overrides)
            with host.pip_hint(NAME):
                guide = shape_guide.build(run.device, host.stage_progress(cls.hidden.unique_id)) if shape_guide is not None else None
            key = host.run_key(run_identity(config), embeddings.fingerprint(), host.model_fingerprint(model), guide and guide.fingerprint())
            fmt = model.model.latent_format
            trained = TrainedNerf(None, config, None, float(fmt.scale_factor), float(getattr(fmt, "shift_factor", 0.0)))
            decode = lambda z: to_pil(host.latent_images(z[None], vae, trained.to_vae_latent)[0])  # noqa: E731
            run.start(key, "nerf.safetensors", config.iterations, resume, decode, SizeWidget("resolution", config.resolution, MIN_LATENT))
            with run.training():
                result = fit_latent_nerf(config, denoiser, embeddings, device=run.device, shape_guide=guide, **run.loop_arguments(keep_optimizer))
            run.raise_if_interrupted(result)
            trained.model, trained.checkpoint = result.model.eval(), run.checkpoint
            frames = host.latent_images(turntable_latents(result.model, config, turntable_frames, config.preview_resolution), vae, trained.to_vae_latent)
            ui = run.finish(result, [to_pil(f) for f in frames])
        return io.NodeOutput(trained, frames, ui=ui)
