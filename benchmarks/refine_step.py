"""Latent → RGB refinement step benchmark: where a step spends its time and memory.

Per step (one 64² RGB render of the official field, resized to 512², VAE-encoded with gradient, SDS through
the UNet at 64² latents): render (forward + its backward), upsample, VAE encode (forward + backward),
UNet, other (losses, optimizer, amortized occupancy refresh). Rows: SD1.5-shaped UNet + SD-shaped VAE
(random weights), and the tiny UNet + tiny VAE, both encoding 512² images. Each step is followed by a bare
UNet call and a bare VAE encode forward + backward on the same shapes, so the target ratio

    refine_step_s / (unet_s + vae_fwd_bwd_s)   (target ≤ 1.15: no second render pass, no duplicated work)

compares like with like under the same machine load. Also: the tensors a step keeps for its backward
(saved-tensor bytes), those of the VAE encode alone with and without per-block gradient checkpointing, and
the peak memory.

    python benchmarks/refine_step.py            # full run (SD-shaped models; ≈5 min on 2 quiet CPU cores, 8 GB RAM)
    python benchmarks/refine_step.py --quick    # tiny models only (< 60 s)

Last line: RESULT refine_step_s=<x> vae_share=<y> peak_rss_gb=<z> (the SD-shaped row; in --quick mode the
tiny row). On CUDA the models run in fp16 with autocast and peak_vram_gb is printed too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from latent3d.guidance.denoiser import DiffusersDenoiser, scaled_linear_alphas_cumprod  # noqa: E402
from latent3d.guidance.prompts import PromptEmbeddings  # noqa: E402
from latent3d.nerf.model import LatentNeRF  # noqa: E402
from latent3d.nerf.train import NerfConfig, StepTimer  # noqa: E402
from latent3d.refine.encoder import ModuleEncoder  # noqa: E402
from latent3d.refine.train import RefineConfig, RefineTrainer  # noqa: E402

SD_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2,
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4, "norm_num_groups": 32,
    "sample_size": 512, "scaling_factor": 0.18215,
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


class MarkedTimer(StepTimer):
    """StepTimer that also splits the backward pass: the VAE's part ends when the gradient reaches the image."""

    def __init__(self, device: torch.device) -> None:
        super().__init__(device)
        self.backward_start = 0.0
        self.vae_backward = 0.0

    @contextlib.contextmanager
    def section(self, name: str):
        if name == "render_backward":
            sync(self.device)
            self.backward_start = time.perf_counter()
        with super().section(name):
            yield

    def mark(self) -> None:
        sync(self.device)
        self.vae_backward += time.perf_counter() - self.backward_start


def vae_encoder(vae) -> ModuleEncoder:
    """images in [0, 1] -> posterior mean × scaling factor (what SdComponents.encode_images computes)."""
    param = next(vae.parameters())
    return ModuleEncoder(lambda images: (vae.encode((images * 2 - 1).to(param.dtype)).latent_dist.mean * vae.config.scaling_factor).float(), vae.encoder)


def saved_gb(forward, trainer: RefineTrainer) -> float:
    """GB of tensors the graph of ``forward()`` (a tensor) keeps for its backward, by saved-tensor hooks;
    then runs that backward and clears the gradients."""
    total = [0]

    def pack(tensor):
        total[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    out.float().sum().backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    return total[0] / 2**30


def row(name: str, unet, vae, device: torch.device, dtype: torch.dtype, steps: int) -> dict[str, float]:
    width = unet.config.cross_attention_dim
    g = torch.Generator().manual_seed(0)
    emb = PromptEmbeddings.single(torch.randn(1, 77, width, generator=g), torch.randn(1, 77, width, generator=g)).to(device)
    paper = NerfConfig()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        field = LatentNeRF(paper.field, paper.render, device)
    encoder = vae_encoder(vae)
    trainer = RefineTrainer(RefineConfig.paper(), field, DiffusersDenoiser(unet, scaled_linear_alphas_cumprod()), encoder, emb, device)
    trainer.train_step()  # warm-up; step 0 also holds the first occupancy refresh
    occupancy_s = timed(lambda: trainer.model.update_occupancy(trainer.generator), device) / paper.render.occupancy_update_every
    z = torch.randn(2, 4, 64, 64, device=device, dtype=dtype)
    t = torch.tensor([500, 500], device=device)
    cond = torch.cat([emb.uncond, emb.views["front"]]).to(dtype)
    image = torch.rand(1, 3, 512, 512, device=device)

    def bare_unet():
        with torch.no_grad(), trainer.autocast:
            unet(z, t, encoder_hidden_states=cond)

    def bare_vae():
        x = image.clone().requires_grad_(True)
        with trainer.autocast:
            latents = encoder(x)
        latents.float().square().sum().backward()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rows = []
    for _ in range(steps):  # each step's split, then the median of every figure over the steps
        timer = MarkedTimer(device)
        trainer.on_image_gradient = timer.mark
        step = timed(lambda: trainer.train_step(timer), device) + occupancy_s
        s = timer.totals
        split = {"render": s["render_forward"] + s["render_backward"] - timer.vae_backward, "upsample": s.get("upsample", 0.0),
                 "vae_fwd_bwd": s["vae_encode"] + timer.vae_backward, "unet": s["unet"]}
        split.update(other=step - sum(split.values()), step=step, unet_alone=timed(bare_unet, device), vae_alone=timed(bare_vae, device))
        rows.append(split)
    out = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    out["ratio"] = out["step"] / (out["unet_alone"] + out["vae_alone"])
    out["vae_share"] = out["vae_fwd_bwd"] / out["step"]
    if device.type == "cuda":
        out["peak_vram_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    out["saved_step"] = saved_gb(lambda: trainer.compute_loss()[0], trainer)
    pixels = image.clone().requires_grad_(True)
    with trainer.autocast:
        out["saved_vae"] = saved_gb(lambda: encoder(pixels), trainer)
        out["saved_vae_checkpointed"] = saved_gb(lambda: encoder.with_checkpointing(True)(pixels), trainer)
    keys = ("render", "upsample", "vae_fwd_bwd", "unet", "other", "step", "unet_alone", "vae_alone")
    print(f"  {name}: " + "  ".join(f"{k}={out[k]:.3f}s" for k in keys) + f"  ratio={out['ratio']:.3f} vae_share={out['vae_share']:.2f}", flush=True)
    print(f"  {name}: kept for backward: one step {out['saved_step']:.2f} GB; the VAE encode of 512² alone {out['saved_vae']:.2f} GB, "
          f"{out['saved_vae_checkpointed']:.2f} GB with per-block checkpointing ({str(dtype).replace('torch.', '')} weights)"
          + (f"; peak VRAM {out['peak_vram_gb']:.2f} GB" if "peak_vram_gb" in out else ""), flush=True)
    return out


def cast(module, device: torch.device, dtype: torch.dtype):
    """Frozen, in eval mode, on ``device``; cast only when the dtype changes (diffusers warns on every cast)."""
    if dtype != torch.float32:
        module = module.to(dtype=dtype)
    return module.to(device).eval().requires_grad_(False)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny models only")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=2, help="measured steps per row (after one warm-up step)")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, dtype {dtype}, load {os.getloadavg()}", flush=True)
    from diffusers import AutoencoderKL

    from latent3d.tiny import build_tiny_modules

    tiny = build_tiny_modules()
    result = row("tiny UNet + tiny VAE", *(cast(tiny[k], device, dtype) for k in ("unet", "vae")), device, dtype, args.steps)
    if not args.quick:
        from latent3d.loading import build_sd15_unet

        start = time.perf_counter()
        unet = cast(build_sd15_unet(), device, dtype)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            vae = cast(AutoencoderKL(**SD_VAE), device, dtype)
        print(f"  (built SD1.5-shaped UNet and SD-shaped VAE in {time.perf_counter() - start:.1f} s)", flush=True)
        result = row("SD1.5 UNet + SD VAE", unet, vae, device, dtype, args.steps)
        verdict = "meets" if result["ratio"] <= 1.15 else "misses"
        print(f"target refine_step ≤ 1.15 × (unet + vae_fwd_bwd): ratio {result['ratio']:.3f} {verdict} it", flush=True)
    print(f"load {os.getloadavg()}", flush=True)
    print(f"RESULT refine_step_s={result['step']:.3f} vae_share={result['vae_share']:.3f} peak_rss_gb={peak_rss_gb():.2f}")


if __name__ == "__main__":
    main()
