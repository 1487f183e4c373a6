"""Write the example workflows (``example_workflows/*.json``) from a running ComfyUI's ``/object_info``, and
their thumbnails (diagrams of the graphs).

Every widget value list is built from the server's own schema, by widget name (``ui_graph.py``); the
workflows themselves are in ``workflow_examples.py``, the thumbnails' drawing in ``diagram.py``.

Usage (a ComfyUI with this pack loaded must be running)::

    python tools/make_workflows.py --server http://127.0.0.1:8188 [--out example_workflows] [--check]
    python tools/make_workflows.py --thumbnails          # .jpg diagrams of the .json files (needs Pillow)

Standard library only (Pillow for ``--thumbnails``); imports nothing from ComfyUI or from this pack (it
talks HTTP). ``--check`` writes nothing and fails when the files on disk differ from what the server's
schema gives, or when a workflow is missing or a stray one is present.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

from workflow_examples import SUBTITLES, WORKFLOWS  # noqa: E402


def object_info(server: str) -> dict[str, Any]:
    with urllib.request.urlopen(server.rstrip("/") + "/object_info", timeout=60) as response:
        return json.loads(response.read())


def render(workflow: dict[str, Any]) -> str:
    return json.dumps(workflow, indent=2, ensure_ascii=False) + "\n"


def thumbnails(folder: Path) -> list[Path]:
    from diagram import draw_diagram

    return [draw_diagram(json.loads((folder / f"{name}.json").read_text()), name, folder / f"{name}.jpg", SUBTITLES[name]) for name in WORKFLOWS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="http://127.0.0.1:8188", help="a running ComfyUI with this pack loaded")
    parser.add_argument("--out", type=Path, default=REPO / "example_workflows", help="where the .json files are written")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file differs")
    parser.add_argument("--thumbnails", action="store_true", help="only draw the .jpg thumbnails of the .json files in --out (needs Pillow)")
    args = parser.parse_args(argv)
    if args.thumbnails:
        for path in thumbnails(args.out):
            print(f"wrote {path}")
        return 0
    info = object_info(args.server)
    stale = []
    for name, build in WORKFLOWS.items():
        path, text = args.out / f"{name}.json", render(build(info))
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    extra = sorted(p.name for p in args.out.glob("*.json") if p.stem not in WORKFLOWS) if args.out.is_dir() else []
    if stale or extra:
        print(f"out of date (run tools/make_workflows.py): {', '.join(stale + [f'{e} (not generated: remove it)' for e in extra])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
