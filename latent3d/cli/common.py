"""What every subcommand of the command line shares: argument checks in the user's terms, devices, model
loading, signals, progress output and the turntable writer.

Expected failures (bad arguments, unreadable files, a run that stopped learning, out of memory, a full
disk) end with one ``error: ...`` line that names the flag or file and exit code 2; Ctrl-C and SIGTERM save
the run's checkpoint first and exit 130 / 143. No traceback is printed for any of them.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

Result = TypeVar("Result")


class CliError(ValueError):
    """An expected failure, worded for the command line (names the flag and the value)."""


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows every default, and descriptions keep their line breaks."""


def positive_int(flag: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CliError(f"{flag} must be a positive integer, got {value}")
    return value


def non_negative_int(flag: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CliError(f"{flag} must be an integer >= 0, got {value}")
    return value


def latent_size(flag: str, value: int, low: int = 8, high: int = 256) -> int:
    """A latent render size: a multiple of 8 (Stable Diffusion's UNet halves it three times)."""
    positive_int(flag, value)
    if value % 8 or not low <= value <= high:
        raise CliError(f"{flag} must be a multiple of 8 in [{low}, {high}] (the UNet halves it three times), got {value}")
    return value


def device_from(flag: str, name: str | None):
    """The torch device a ``--device`` value names, checked to be usable here (CliError otherwise)."""
    from ..devices import parse_device

    try:
        return parse_device(name, flag)
    except ValueError as e:
        raise CliError(str(e)) from e


def add_model_arguments(parser: argparse.ArgumentParser, required: bool = True, help_extra: str = "") -> None:
    parser.add_argument(
        "--model", required=required, default=None,
        help="Stable Diffusion 1.x/2.x weights: a diffusers folder, a single .safetensors/.ckpt file (e.g. "
        "v1-5-pruned-emaonly.safetensors), a hub id (runwayml/stable-diffusion-v1-5), or 'tiny' (random, offline)" + help_extra,
    )
    parser.add_argument(
        "--model-config", default=None,
        help="for a single-file --model without hub access: a local diffusers folder of the same family (its configs and tokenizer)",
    )


VIEW_PROMPTS_HELP = "one prompt for every view (no ', front/side/back/overhead view')"


def add_run_arguments(parser: argparse.ArgumentParser, preview: str = "a preview PNG", turntable: str = "the final turntable GIF",
                      view_prompts: str = VIEW_PROMPTS_HELP) -> None:
    """The flags every stage command has for its run: seed, resume/overwrite, previews, checkpoints, turntable,
    device, view prompting (``preview``, ``turntable``, ``view_prompts``: the words of their help)."""
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    parser.add_argument("--resume", action="store_true", help="continue the unfinished run in --out")
    parser.add_argument("--overwrite", action="store_true", help="delete the run in --out and start over")
    parser.add_argument("--preview-every", type=int, default=100, help=f"write {preview} every N steps (0: never)")
    parser.add_argument("--checkpoint-every", type=int, default=250, help="save a checkpoint every N steps (0: only at the end)")
    parser.add_argument("--turntable-frames", type=int, default=24, help=f"frames of {turntable} (0: none)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: cuda when available)")
    parser.add_argument("--no-view-prompts", action="store_true", help=view_prompts)


def guidance_from(args: argparse.Namespace):
    """The SdsConfig of ``--guidance-scale`` (CliError when it is not a finite number)."""
    from ..guidance.sds import SdsConfig

    try:
        return SdsConfig(guidance_scale=args.guidance_scale)
    except ValueError as e:
        raise CliError(f"--guidance-scale must be a finite number, got {args.guidance_scale}") from e


def load_model(model: str, model_config: str | None, device, say: Callable[[str], None]):
    """SdComponents for ``--model`` on ``device``, with a line before and after (loading takes seconds to minutes)."""
    from ..loading import load_stable_diffusion

    say(f"loading model {model} on {device} ...")
    start = time.perf_counter()
    components = load_stable_diffusion(model, device, config=model_config)
    say(f"model loaded in {time.perf_counter() - start:.1f} s")
    return components


def check_readable_file(flag: str, value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise CliError(f"{flag} {value}: no such file")
    return path


@contextlib.contextmanager
def stop_on_signals() -> Iterator[Callable[[], bool]]:
    """Yield ``should_stop()``: True once SIGTERM (or SIGHUP) arrived, so a loop saves and stops like Ctrl-C.

    A second signal raises KeyboardInterrupt at once (the loop still saves its last consistent state).
    Installed only in the main thread (Python's rule); elsewhere ``should_stop`` is always False.
    """
    received: list[int] = []

    def handler(signum, frame) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    names = [name for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for name in names:
            number = getattr(signal, name)
            previous[number] = signal.signal(number, handler)
    try:
        yield lambda: bool(received)
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def say(text: str) -> None:
    """A progress line on stderr (stdout carries only results, e.g. written paths)."""
    print(text, file=sys.stderr, flush=True)


def save_turntable(frames, path: Path) -> None:
    """frames [N, 3, H, W] in 0..1 -> looping GIF."""
    from ..images import to_pil

    images = [to_pil(frame) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=80, loop=0)


@contextlib.contextmanager
def run_folder_hooks(
    out: Path, start: int, preview_image: Callable[[Any], Any], on_step: Callable[[int, int], None] | None = None,
    on_metrics: Callable[[int, dict], None] | None = None,
) -> Iterator[tuple[Callable[[int, int, Any], None], Callable[[int, dict], None]]]:
    """(on_step, on_metrics) for a stage's loop that write its run folder: ``previews/step_NNNNN.png`` of each
    preview (``preview_image(preview)`` -> an RGB image [3, H, W] in [0, 1]) and ``metrics.jsonl`` (its lines
    after ``start`` dropped: a resumed run continues the log), then call the caller's own hooks."""
    from ..images import to_pil
    from ..runfolder import MetricsLog

    (out / "previews").mkdir(parents=True, exist_ok=True)
    with MetricsLog(out / "metrics.jsonl", keep_until=start) as metrics:
        def step_hook(step: int, total: int, preview) -> None:
            if preview is not None:
                to_pil(preview_image(preview)).save(out / "previews" / f"step_{step:05d}.png")
            if on_step is not None:
                on_step(step, total)

        def metrics_hook(step: int, values: dict) -> None:
            metrics.write({"step": step, **values})
            if on_metrics is not None:
                on_metrics(step, values)

        yield step_hook, metrics_hook


def view_embeddings(components, request):
    """The per-view prompt embeddings of ``request``'s prompt, negative prompt and view prompting (no gradient)."""
    import torch

    from ..guidance.prompts import encode_view_prompts

    with torch.no_grad():
        return encode_view_prompts(components.encode_text, request.prompt, request.negative, view_dependent=request.view_prompts)


def decoded(components, device) -> Callable[[Any], Any]:
    """A preview latent [4, h, w] -> its RGB image [3, 8h, 8w] by ``components``' VAE (no gradient)."""
    import torch

    def decode(latent):
        with torch.no_grad():
            return components.decode_latents(latent[None].to(device))[0]

    return decode


def out_of_memory_types() -> tuple[type[BaseException], ...]:
    import torch

    kinds: list[type[BaseException]] = [MemoryError]
    for owner, name in ((torch, "OutOfMemoryError"), (getattr(torch, "cuda", None), "OutOfMemoryError")):
        kind = getattr(owner, name, None)
        if isinstance(kind, type) and kind not in kinds:
            kinds.append(kind)
    return tuple(kinds)


def existing_run(
    out: Path, checkpoint: str, run_files: Sequence[str], metadata: dict, iterations: int, *, resume: bool, overwrite: bool,
    shown: Sequence[str] = ("prompt", "model"), kind: str | None = None,
) -> tuple[bool, int]:
    """(finished, resume_from): what a stage command's ``--out`` holds decides between skipping, resuming and refusing.

    ``overwrite``: ``run_files`` and ``previews/`` are deleted, a fresh start. No ``checkpoint`` file there: a
    fresh start. A checkpoint of another run (another ``kind`` when given, or ``metadata`` that differs in a
    key but ``model_config``, which may be spelt differently for the same model) is refused with the ``shown``
    keys of what it holds; a finished one (step >= ``iterations``) is (True, step); an unfinished one needs
    ``resume``. Every refusal is a CliError that says which flag to pass.
    """
    from ..checkpoint import CheckpointError, read_record

    if overwrite:
        for name in run_files:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "previews", ignore_errors=True)
        return False, 0
    path = out / checkpoint
    if not path.exists():
        return False, 0
    try:
        record = read_record(path)
    except CheckpointError as e:
        raise CliError(f"{e}. Pass --overwrite to start over in --out {out}, or choose another --out") from e
    step, meta = int(record.get("step", 0)), record.get("meta") or {}
    same = all(meta.get(k) == v for k, v in metadata.items() if k != "model_config")
    if (kind is not None and record.get("kind") != kind) or not same:
        holds = ", ".join(f"{key} {meta.get(key)!r}" for key in shown)
        raise CliError(f"--out {out} holds another run ({holds}); choose another --out or pass --overwrite")
    if step >= iterations:
        return True, step
    if not resume:
        total = record["config"].get("iterations")
        raise CliError(f"--out {out} holds an unfinished run ({step} of {total} steps); pass --resume to continue it or --overwrite to start over")
    return False, step


def say_finished(out: Path, step: int, result: Path) -> int:
    """The line and stdout path of a rerun that finds its run finished; exit code 0."""
    say(f"--out {out} already holds this run, finished at step {step} ({result}); nothing to do")
    print(result)
    return 0


def run_stage(
    stage: Callable[[Callable[[], bool], Callable[[int, int], None], Callable[[int, dict], None]], Result],
    *, desc: str, total: int, start: int, checkpoint: Path, out_of_memory: str,
) -> Result | int:
    """Run ``stage(should_stop, on_step, on_metrics)`` (a stage function bound to its request and model) the
    way every stage command does: a progress bar from ``start`` of ``total`` steps, SIGTERM/SIGHUP polled.

    Returns the stage's result, or the exit code of a run that stopped with its checkpoint kept (Ctrl-C: 130;
    a signal: 143; both say to continue with --resume). A run that stopped learning, or ran out of memory, is
    a CliError: ``out_of_memory`` says what to lower (the checkpoint's path and the error's type are added).
    """
    from tqdm import tqdm

    from ..loop import NonFiniteRunError

    with stop_on_signals() as terminated, tqdm(total=total, initial=start, desc=desc, unit="step", dynamic_ncols=True) as bar:
        def on_step(step: int, total: int) -> None:
            bar.n = step
            bar.refresh()

        def on_metrics(step: int, values: dict) -> None:
            bar.set_postfix(loss=f"{values['loss']:.3g}", t=int(values["timestep"]))

        try:
            result = stage(terminated, on_step, on_metrics)
        except KeyboardInterrupt:
            say(f"\ninterrupted; checkpoint kept at {checkpoint} (continue with --resume)")
            return EXIT_INTERRUPTED
        except NonFiniteRunError as e:
            raise CliError(str(e)) from e
        except out_of_memory_types() as e:
            raise CliError(f"{out_of_memory}; the checkpoint is kept at {checkpoint} ({type(e).__name__})") from e
    if result.status == "interrupted":
        say(f"stopped by a signal at step {result.step}; checkpoint kept at {checkpoint} (continue with --resume)")
        return EXIT_TERMINATED
    return result
