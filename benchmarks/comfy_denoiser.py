"""Overhead of ComfyDenoiser.predict_noise over a bare ``apply_model`` call (same inputs, interleaved).

Needs ComfyUI: ``COMFYUI_ROOT=/path/to/ComfyUI $COMFYUI_PYTHON benchmarks/comfy_denoiser.py [--size 16]``.
Uses the random SD1.5 checkpoint of the host tests (built on first use). Prints RESULT lines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "host"))
from comfy_host import import_comfy, import_pack  # noqa: E402
from make_checkpoint import ensure_checkpoint  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16, help="latent side (16 → 128×128 image)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    import_comfy()
    import_pack()
    import comfy.sd
    from comfyui_latent3d.nodes.comfy_denoiser import ComfyDenoiser, encode_with_clip

    with torch.inference_mode():
        model, clip, _vae, _ = comfy.sd.load_checkpoint_guess_config(str(ensure_checkpoint()), output_vae=False, output_clip=True)
    denoiser = ComfyDenoiser(model)
    emb = encode_with_clip(clip, [""] * args.batch)
    generator = torch.Generator().manual_seed(0)
    z_t = torch.randn(args.batch, 4, args.size, args.size, generator=generator)
    t = torch.randint(20, 981, (args.batch,), generator=generator)

    def adapter() -> None:
        denoiser.predict_noise(z_t, t, emb)

    def direct() -> None:
        with torch.no_grad():
            sigma = denoiser.model_sampling.sigma(t)
            model.model.apply_model(z_t * (1 + sigma**2).sqrt().view(-1, 1, 1, 1), sigma, c_crossattn=emb)

    adapter()  # warm-up: loads the model, first-call allocations
    times: dict[str, list[float]] = {"adapter": [], "direct": []}
    for _ in range(args.repeats):
        for name, fn in (("direct", direct), ("adapter", adapter)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(values) for name, values in times.items()}
    shape = f"{args.batch}x4x{args.size}x{args.size}"
    print(f"RESULT comfy_denoiser.predict_noise {shape}: median {med['adapter']:.3f} s, min {min(times['adapter']):.3f} s")
    print(f"RESULT apply_model direct {shape}: median {med['direct']:.3f} s, min {min(times['direct']):.3f} s")
    print(f"RESULT overhead ratio (median adapter/direct): {med['adapter'] / med['direct']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
