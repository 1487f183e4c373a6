"""A workflow's thumbnail: a diagram of its graph (nodes as boxes in execution order, links as curves),
drawn from the workflow JSON with Pillow. Honest by construction: it shows what the workflow does, not a
render, and says so in its footer. A chain of nodes of one type is one box ("6 Sketch Primitives").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SIZE = 512
LABELS = {
    "CheckpointLoaderSimple": "Load Checkpoint", "Latent3DLatentNeRFTrain": "Latent-NeRF Train", "Latent3DExportMesh": "Export Mesh",
    "Latent3DLatentPaint": "Latent-Paint", "Latent3DLatentToRGBRefine": "Latent to RGB Refine", "Latent3DSketchPrimitive": "Sketch Primitive",
    "Latent3DSketchShapeLoss": "Sketch Shape Loss", "Latent3DLoadSketchMesh": "Load Sketch Mesh", "Preview3D": "Preview 3D",
    "PreviewImage": "Preview Image",
}  # fmt: skip
COLORS = {"latent3d": (47, 94, 140), "core": (78, 78, 86), "output": (52, 112, 70)}
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute"}


def _boxes(workflow: dict[str, Any]) -> tuple[dict[int, dict[str, Any]], set[tuple[int, int]]]:
    """Boxes (chains of one node type merged) and the links between them."""
    nodes = {n["id"]: n for n in workflow["nodes"] if n["type"] not in FRONTEND_ONLY}
    links = [(link[1], link[3]) for link in workflow["links"] if link[1] in nodes and link[3] in nodes]
    owner = {i: i for i in nodes}
    for a, b in sorted(links, key=lambda ab: nodes[ab[0]]["pos"][1]):
        if nodes[a]["type"] == nodes[b]["type"]:  # e.g. Sketch Primitive -> add_to -> Sketch Primitive
            owner[b] = owner[a]
    boxes: dict[int, dict[str, Any]] = {}
    for i, node in nodes.items():
        root = owner[i]
        while owner[root] != root:
            root = owner[root]
        owner[i] = root
        box = boxes.setdefault(root, {"type": node["type"], "count": 0, "title": node.get("title"), "y": node["pos"][1]})
        box["count"] += 1
        box["y"] = min(box["y"], node["pos"][1])
    edges = {(owner[a], owner[b]) for a, b in links if owner[a] != owner[b]}
    for box in boxes.values():
        label = LABELS.get(box["type"], box["type"])
        title = box["title"] if box["count"] == 1 and box["title"] else label
        box["label"] = f"{box['count']} {label}s" if box["count"] > 1 else title
    return boxes, edges


def _columns(boxes: dict[int, dict[str, Any]], edges: set[tuple[int, int]]) -> list[list[int]]:
    depth = {i: 0 for i in boxes}
    for _ in boxes:  # longest path from a source (the graph is acyclic)
        for a, b in edges:
            depth[b] = max(depth[b], depth[a] + 1)
    columns: list[list[int]] = [[] for _ in range(max(depth.values()) + 1)]
    for i in sorted(boxes, key=lambda i: boxes[i]["y"]):
        columns[depth[i]].append(i)
    return columns


def _wrap(draw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    return lines + [line]


def draw_diagram(workflow: dict[str, Any], title: str, path: Path, subtitle: str = "") -> Path:
    """Write a SIZE² JPEG diagram of ``workflow`` titled ``title`` (and ``subtitle``, what it does) to
    ``path`` (at most 100 kB)."""
    from PIL import Image, ImageDraw, ImageFont

    boxes, edges = _boxes(workflow)
    columns = _columns(boxes, edges)
    image = Image.new("RGB", (SIZE, SIZE), (30, 30, 36))
    draw = ImageDraw.Draw(image)
    big, small = ImageFont.load_default(size=24), ImageFont.load_default(size=13)
    y = 18
    for line in _wrap(draw, title, big, SIZE - 40):
        draw.text((20, y), line, font=big, fill=(235, 235, 240))
        y += 30
    for line in _wrap(draw, subtitle, small, SIZE - 40) if subtitle else []:
        draw.text((20, y + 2), line, font=small, fill=(190, 190, 200))
        y += 18
    top, bottom, margin, gap = y + 24, SIZE - 40, 18, 18
    width = int((SIZE - 2 * margin - gap * (len(columns) - 1)) / len(columns))
    places: dict[int, tuple[int, int, int, int]] = {}
    for c, column in enumerate(columns):
        heights = [22 + 16 * len(_wrap(draw, boxes[i]["label"], small, width - 12)) for i in column]
        spacing = max(10, (bottom - top - sum(heights)) // (len(column) + 1))
        y0, x0 = top + max(0, (bottom - top - sum(heights) - spacing * (len(column) - 1)) // 2), margin + c * (width + gap)
        for i, height in zip(column, heights):
            places[i] = (x0, y0, x0 + width, y0 + height)
            y0 += height + spacing
    for a, b in sorted(edges):
        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = places[a], places[b]
        start, end = (ax1, (ay0 + ay1) / 2), (bx0, (by0 + by1) / 2)
        mid = (start[0] + end[0]) / 2
        curve = [((1 - t) ** 3 * start[0] + 3 * (1 - t) ** 2 * t * mid + 3 * (1 - t) * t**2 * mid + t**3 * end[0],
                  (1 - t) ** 3 * start[1] + 3 * (1 - t) ** 2 * t * start[1] + 3 * (1 - t) * t**2 * end[1] + t**3 * end[1])
                 for t in (k / 24 for k in range(25))]  # fmt: skip
        draw.line(curve, fill=(160, 160, 170), width=2)
    for i, (x0, y0, x1, y1) in places.items():
        kind = "output" if boxes[i]["type"].startswith("Preview") else "latent3d" if boxes[i]["type"].startswith("Latent3D") else "core"
        draw.rounded_rectangle((x0, y0, x1, y1), radius=8, fill=COLORS[kind], outline=(200, 200, 210), width=1)
        for k, line in enumerate(_wrap(draw, boxes[i]["label"], small, width - 12)):
            draw.text((x0 + 6, y0 + 11 + 16 * k), line, font=small, fill=(245, 245, 245))
    draw.text((20, SIZE - 26), "Diagram of the workflow's graph (not a render) · ComfyUI-Latent3D", font=small, fill=(150, 150, 160))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=88, optimize=True)
    if path.stat().st_size > 100_000:
        raise ValueError(f"{path} is larger than 100 kB")
    return path
