"""What a Latent-NeRF Train step costs inside ComfyUI, how fast an interrupt stops it, and how the memory
estimate the training nodes check before a run compares with what a step takes.

On ComfyUI's own loader and the random SD1.5 checkpoint of the host tests (fp32 on CPU): per latent side
R, a bare UNet call through ComfyDenoiser at [2, 4, R, R] (the SDS batch), a whole training step (the
paper's field and settings, only ``resolution`` changed), the delay between setting ComfyUI's interrupt
flag in the middle of a UNet call and the call raising (the per-block interrupt points), and peak resident
memory during a call and a step (Linux: /proc/self/statm polled every 5 ms) beside the estimates
(``memory_required`` of ComfyUI for the UNet; ``nodes/memory.py`` for the step).

    COMFYUI_ROOT=/path/to/ComfyUI $COMFYUI_PYTHON benchmarks/host_step.py [--sizes 16 32 64] [--threads 1]
    COMFYUI_ROOT=/path/to/ComfyUI $COMFYUI_PYTHON benchmarks/host_step.py --quick   # 8² only

Without COMFYUI_ROOT it prints "skipped: …" and exits 0. Last line: RESULT unet_s=… step_s=… interrupt_s=…
unet_peak_gb=… unet_estimate_gb=… step_peak_gb=… step_estimate_gb=… (the largest size).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
from _common import add_threads_argument, print_header, print_result, set_threads, skip

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "host"))
GB = 1024**3


class PeakMemory:
    """Peak resident memory above the level at entry, polled from /proc/self/statm (Linux)."""

    def __enter__(self) -> "PeakMemory":
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.base = self.peak = self._rss()
        self.running = True
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _poll(self) -> None:
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join()

    @property
    def gb(self) -> float:
        return (self.peak - self.base) / GB


def interrupt_delay(denoiser, z_t, t, emb, after_s: float) -> tuple[float, float]:
    """(seconds from setting the interrupt flag to the call raising, seconds the call ran)."""
    import comfy.model_management as mm

    asked = []
    timer = threading.Timer(after_s, lambda: (asked.append(time.perf_counter()), mm.interrupt_current_processing(True)))
    start = time.perf_counter()
    timer.start()
    try:
        denoiser.predict_noise(z_t, t, emb)
        raised = None
    except mm.InterruptProcessingException:
        raised = time.perf_counter()
    finally:
        timer.cancel()
        mm.interrupt_current_processing(False)
    if raised is None or not asked:
        raise RuntimeError("the call finished before the interrupt was set: measure with a larger size")
    return raised - asked[0], raised - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64], help="latent sides R to measure")
    parser.add_argument("--quick", action="store_true", help="8² only, one repeat")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    if not os.environ.get("COMFYUI_ROOT"):
        return skip("COMFYUI_ROOT not set (point it at a ComfyUI checkout; see tests/host/README.md)")
    if not Path("/proc/self/statm").exists():
        return skip("needs Linux (/proc/self/statm) for the memory figures")
    from comfy_host import comfyui_root_problem, import_comfy, import_pack
    from make_checkpoint import ensure_checkpoint

    problem = comfyui_root_problem()
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    set_threads(args.threads, quick=False)
    try:
        import_comfy()
        import_pack()
        import comfy.sd
    except ImportError as e:
        return skip(f"this interpreter cannot import ComfyUI ({e}); run the benchmark with ComfyUI's python")
    from comfyui_latent3d.latent3d.guidance.prompts import PromptEmbeddings
    from comfyui_latent3d.latent3d.nerf.train import NerfConfig, NerfTrainer
    from comfyui_latent3d.nodes import memory
    from comfyui_latent3d.nodes.comfy_denoiser import ComfyDenoiser, encode_with_clip

    print_header("cpu", "quick" if args.quick else "")
    with torch.inference_mode():
        model, clip, _vae, _ = comfy.sd.load_checkpoint_guess_config(str(ensure_checkpoint()), output_vae=False, output_clip=True)
    denoiser = ComfyDenoiser(model)
    emb = encode_with_clip(clip, ["", "a hamburger, front view"])
    embeddings = PromptEmbeddings.single(emb[1:], emb[:1])
    generator = torch.Generator().manual_seed(0)
    sizes, repeats = ([8], 1) if args.quick else (sorted(args.sizes), 2)
    denoiser.predict_noise(torch.randn(2, 4, 8, 8, generator=generator), torch.tensor([300, 700]), emb[[1, 0]])  # load and warm up
    figures = {}
    for r in sizes:
        z_t, t, pair = torch.randn(2, 4, r, r, generator=generator), torch.tensor([300, 700]), emb[[1, 0]]
        with PeakMemory() as unet_peak:
            calls = []
            for _ in range(repeats):
                start = time.perf_counter()
                denoiser.predict_noise(z_t, t, pair)
                calls.append(time.perf_counter() - start)
        unet_s = statistics.median(calls)
        delay, ran = interrupt_delay(denoiser, z_t, t, pair, after_s=0.4 * unet_s)
        trainer = NerfTrainer(NerfConfig(resolution=r, checkpoint_every=0, preview_every=0), denoiser, embeddings, "cpu")
        trainer.train_step()  # the occupancy fill and its warm-up
        with PeakMemory() as step_peak:
            steps = []
            for _ in range(repeats):
                start = time.perf_counter()
                trainer.train_step()
                steps.append(time.perf_counter() - start)
        step_s = statistics.median(steps)
        unet_estimate = memory.unet_bytes(model, r) / GB
        step_estimate = unet_estimate + memory.render_bytes(r) / GB
        print(f"{r:3d}²: UNet call {unet_s:6.2f} s, step {step_s:6.2f} s ({trainer.history['samples'][-1] / r / r:.0f} samples/ray); "
              f"interrupt set {ran - delay:.2f} s into a call stopped it {delay:.2f} s later; "
              f"peak memory above the model: UNet call {unet_peak.gb:.2f} GB (ComfyUI estimate {unet_estimate:.2f}), "
              f"step {step_peak.gb:.2f} GB (node estimate {step_estimate:.2f})", flush=True)  # fmt: skip
        figures = {"unet_s": unet_s, "step_s": step_s, "interrupt_s": delay, "unet_peak_gb": unet_peak.gb, "unet_estimate_gb": unet_estimate,
                   "step_peak_gb": step_peak.gb, "step_estimate_gb": step_estimate}  # fmt: skip
    print_result(**figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
