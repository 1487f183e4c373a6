"""Command line: ``latent3d <command>`` (or ``python -m latent3d <command>``), headless runs with diffusers
weights. ``latent3d <command> --help`` lists every option with its default.

Each command is a module with ``add_parser(subparsers)`` (which sets ``run``); ``main`` turns expected
failures into one ``error:`` line and exit code 2 (see :mod:`latent3d.cli.common`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from .common import EXIT_ERROR, EXIT_INTERRUPTED, CliError

log = logging.getLogger("latent3d")

COMMANDS = ("nerf", "paint", "refine", "export", "batch")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="latent3d", description="Text -> 3D with Latent-NeRF, headless (ComfyUI-Latent3D).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CliError, ValueError, OSError) as error:  # OSError: files, disk full, ModelLoadError, a locked folder
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
