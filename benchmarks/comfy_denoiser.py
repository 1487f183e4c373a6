"""What the ComfyUI adapter costs: SDS steps through ComfyDenoiser vs DiffusersDenoiser on the same weights.

The random SD1.5 checkpoint of the host tests (built on first use) is loaded twice: by ComfyUI's
checkpoint loader (MODEL → ComfyDenoiser) and, converted to the diffusers layout, into a
UNet2DConditionModel (→ DiffusersDenoiser). Both must give the same ε (checked); then whole Latent-NeRF
training steps are timed, interleaved, through each. Also prints the bare predict_noise overhead over a
direct ``apply_model`` call.

    COMFYUI_ROOT=/path/to/ComfyUI $COMFYUI_PYTHON benchmarks/comfy_denoiser.py [--size 32] [--steps 3]
    COMFYUI_ROOT=/path/to/ComfyUI $COMFYUI_PYTHON benchmarks/comfy_denoiser.py --quick   # 8² renders, 1 step

Needs a ComfyUI checkout in COMFYUI_ROOT and an interpreter that imports it (tests/host/README.md); without
COMFYUI_ROOT it prints "skipped: COMFYUI_ROOT not set" and exits 0. The first run builds the ≈2 GB random
checkpoint (≈15 s). Last line: RESULT adapter_over_diffusers=<median step time ratio>.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from _common import add_threads_argument, print_header, print_result, set_threads, skip

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "host"))


def diffusers_unet(path: Path):
    """The checkpoint's UNet in the diffusers layout (random weights, SD1.5 config)."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    from safetensors.torch import load_file

    from comfyui_latent3d.latent3d.loading import sd15_unet_config

    config = sd15_unet_config()
    state = {k: v.float() for k, v in load_file(str(path)).items() if k.startswith("model.diffusion_model.")}
    converted = convert_ldm_unet_checkpoint(state, config)
    unet = UNet2DConditionModel(**config)
    missing, unexpected = unet.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"conversion left missing {missing[:5]} / unexpected {unexpected[:5]} keys")
    return unet.eval().requires_grad_(False)


def times_of(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="latent side of the training renders (64 = paper)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per adapter (interleaved)")
    parser.add_argument("--quick", action="store_true", help="8² renders of the tiny field preset, 1 timed step per adapter")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    if not os.environ.get("COMFYUI_ROOT"):
        return skip("COMFYUI_ROOT not set (point it at a ComfyUI checkout; see tests/host/README.md)")
    from comfy_host import comfyui_root_problem, import_comfy, import_pack
    from make_checkpoint import ensure_checkpoint

    problem = comfyui_root_problem()
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    set_threads(args.threads, quick=False)
    print_header("cpu", "quick" if args.quick else "")
    try:
        import_comfy()
        import_pack()
        import comfy.sd
    except ImportError as e:
        return skip(f"this interpreter cannot import ComfyUI ({e}); run the benchmark with ComfyUI's python")

    from comfyui_latent3d.latent3d.guidance.denoiser import DiffusersDenoiser, scaled_linear_alphas_cumprod
    from comfyui_latent3d.latent3d.guidance.prompts import PromptEmbeddings
    from comfyui_latent3d.latent3d.nerf.train import NerfConfig, NerfTrainer
    from comfyui_latent3d.nodes.comfy_denoiser import ComfyDenoiser, encode_with_clip

    path = ensure_checkpoint()
    with torch.inference_mode():
        model, clip, _vae, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=False, output_clip=True)
    comfy_denoiser = ComfyDenoiser(model)
    diffusers_denoiser = DiffusersDenoiser(diffusers_unet(path), scaled_linear_alphas_cumprod())
    emb = encode_with_clip(clip, ["", "a hamburger, front view"])
    z_t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([300, 700])
    a, b = comfy_denoiser.predict_noise(z_t, t, emb), diffusers_denoiser.predict_noise(z_t, t, emb)
    err = float((a - b).abs().max() / b.abs().max())
    print(f"same weights: max |ε_comfy − ε_diffusers| / max|ε| = {err:.2e}", flush=True)
    if err > 1e-2:
        raise RuntimeError("the two adapters disagree: the weight conversion is wrong")

    def direct() -> None:
        with torch.no_grad():
            sigma = comfy_denoiser.model_sampling.sigma(t)
            model.model.apply_model(z_t * (1 + sigma**2).sqrt().view(-1, 1, 1, 1), sigma, c_crossattn=emb)

    repeats = 2 if args.quick else 5
    bare = {"adapter": times_of(lambda: comfy_denoiser.predict_noise(z_t, t, emb), repeats), "direct": times_of(direct, repeats)}
    print(f"predict_noise 2x4x8x8: adapter {statistics.median(bare['adapter']):.3f} s, apply_model {statistics.median(bare['direct']):.3f} s", flush=True)

    embeddings = PromptEmbeddings.single(emb[1:], emb[:1])
    config = NerfConfig.tiny(resolution=8) if args.quick else NerfConfig(resolution=args.size)
    steps = 1 if args.quick else args.steps
    trainers = {name: NerfTrainer(config, den, embeddings, "cpu") for name, den in (("comfy", comfy_denoiser), ("diffusers", diffusers_denoiser))}
    for trainer in trainers.values():
        trainer.train_step()  # occupancy fill and warm-up
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(steps):
        for name, trainer in trainers.items():
            times[name] += times_of(trainer.train_step, 1)
    med = {name: statistics.median(values) for name, values in times.items()}
    print(f"SDS step at {config.resolution}² (median of {steps}): ComfyDenoiser {med['comfy']:.2f} s, DiffusersDenoiser {med['diffusers']:.2f} s")
    print_result(adapter_over_diffusers=med["comfy"] / med["diffusers"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
