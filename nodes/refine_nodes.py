"""Latent→RGB Refine: a trained Latent-NeRF refined in RGB through the user's MODEL and VAE, with live progress."""

from __future__ import annotations

import dataclasses

from ..latent3d.images import to_pil
from ..latent3d.nerf.cameras import VIEW_LABELS
from ..latent3d.refine.convert import state_fingerprint
from ..latent3d.refine.train import refine_rgb, run_identity, turntable_rgb
from . import host, memory, refine_host
from .api import io
from .comfy_denoiser import ComfyDenoiser
from .eta import SizeWidget
from .schema import build_schema
from .spec import build_config
from .specs import LATENT_TO_RGB_REFINE
from .training import TrainingRun

NAME = LATENT_TO_RGB_REFINE.display_name
MIN_ENCODE = 64


def step_estimate(model, vae, config):
    """Bytes of one refinement step at encode side e: the UNet on e/8 latents, the VAE encoder's activations
    kept for the backward pass, and the RGB render with gradients."""
    def estimate(e: int) -> memory.StepEstimate:
        return memory.StepEstimate({
            "UNet (ComfyUI's estimate)": memory.unet_bytes(model, e // 8),
            "VAE encoder backward": refine_host.activation_bytes(vae, e, config.vae_checkpointing),
            "render": memory.render_bytes(config.render_resolution),
        })  # fmt: skip

    return estimate


class LatentToRGBRefine(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return build_schema(LATENT_TO_RGB_REFINE, hidden_node_id=True, hidden_prompt=True)

    @classmethod
    def execute(cls, nerf, model, clip, vae, prompt, negative, view_dependent, color_init, resume, keep_optimizer, turntable_frames,
                turntable_resolution, **widgets) -> io.NodeOutput:
        import comfy.model_management as mm

        source = refine_host.source_nerf(nerf, NAME)
        overrides = {view: widgets.pop(f"{view}_conditioning", None) for view in VIEW_LABELS}
        run = TrainingRun(NAME, cls.hidden.unique_id, mm.get_torch_device())
        with run.collecting():
            run.check_downstream(cls.hidden.prompt)
            config = refine_host.host_config(build_config(LATENT_TO_RGB_REFINE, widgets))
            denoiser = ComfyDenoiser(model)
            refine_host.check_vae(vae, int(model.model.latent_format.latent_channels), NAME)
            run.check_memory(model, "encode_resolution", config.encode_resolution, step_estimate(model, vae, config), MIN_ENCODE, MIN_ENCODE)
            embeddings = host.view_embeddings(clip, prompt, negative, view_dependent, overrides, node=NAME)
            matrix = refine_host.color_init(model, color_init)
            key = host.run_key(run_identity(config), embeddings.fingerprint(), host.model_fingerprint(model), state_fingerprint(source.model), matrix)
            size = SizeWidget("encode_resolution", config.encode_resolution, MIN_ENCODE)
            run.start(key, "refined.safetensors", config.iterations, resume, to_pil, size)
            with refine_host.gradient_encoder(vae, model, run.device, config, NAME) as encoder, run.training():
                result = refine_rgb(config, source.model, denoiser, encoder, embeddings, device=run.device, color_matrix=matrix,
                                    **run.loop_arguments(keep_optimizer))  # fmt: skip
            run.raise_if_interrupted(result)
            refined = dataclasses.replace(source, model=result.model.eval(), checkpoint=run.checkpoint, refine_config=config)
            frames = turntable_rgb(result.model, config, turntable_frames, turntable_resolution).permute(0, 2, 3, 1).contiguous()  # [B, H, W, 3]
            ui = run.finish(result, [to_pil(f) for f in frames])
        return io.NodeOutput(refined, frames, ui=ui)
