"""What every subcommand of the command line shares: argument checks in the user's terms, devices, model
loading, signals, progress output and the turntable writer.

Expected failures (bad arguments, unreadable files, a run that stopped learning, out of memory, a full
disk) end with one ``error: ...`` line that names the flag or file and exit code 2; Ctrl-C and SIGTERM save
the run's checkpoint first and exit 130 / 143. No traceback is printed for any of them.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


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


def out_of_memory_types() -> tuple[type[BaseException], ...]:
    import torch

    kinds: list[type[BaseException]] = [MemoryError]
    for owner, name in ((torch, "OutOfMemoryError"), (getattr(torch, "cuda", None), "OutOfMemoryError")):
        kind = getattr(owner, name, None)
        if isinstance(kind, type) and kind not in kinds:
            kinds.append(kind)
    return tuple(kinds)
