"""The shipped example workflows, built from a server's ``/object_info`` (see ``ui_graph.py``).

File names are the titles the template browser shows (ComfyUI lists a custom node pack's templates by file
name and derives the description from it), so they are written as titles: no '-' or '_' (the browser turns
those into spaces), nothing a file system refuses. Each workflow's "Read me" note says what it does.
"""

from __future__ import annotations

from typing import Any, Callable

from ui_graph import CHECKPOINT, Graph

PAPER = "Paper settings: 5000 iterations of 64² latent renders, a GPU job (tens of minutes). On a CPU the node shows the ETA and what to lower."
RESUME = ("Interrupt keeps a checkpoint under output/latent3d/runs; queue again with the same settings (seed 'fixed') to resume, "
          "or raise iterations to train further.")  # fmt: skip

TEXT_NOTE = (
    "Latent-NeRF text → 3D (Latent3D)\n\n"
    f"1. Pick your SD1.5 checkpoint in Load Checkpoint ({CHECKPOINT} or any SD1.x/SD2.x model).\n"
    "2. Queue. The training node shows the loss curve, preview frames and the ETA live; the mesh appears in Preview 3D.\n\n"
    f"{PAPER} Trying it out: lower iterations (e.g. 500) first.\n{RESUME}"
)
SKETCH_NOTE = (
    "Sketch-Shape guided Latent-NeRF (Latent3D)\n\n"
    "The sketch is built in the graph: six Sketch Primitive nodes (body, head, arms, legs), chained with add_to. "
    "The left Preview 3D shows where the sketch sits in the scene ([-1, 1]³, y up, +z front).\n"
    "Sketch Shape Loss keeps the NeRF's density near the sketch; proximal_surface lets details grow near its surface.\n\n"
    f"Pick your SD1.5 checkpoint in Load Checkpoint ({CHECKPOINT}). {PAPER}"
)
PAINT_NOTE = (
    "Latent-Paint a mesh the graph builds (Latent3D)\n\n"
    "Sketch Primitive makes the ready-made teddy (a union of spheres); Latent-Paint learns a latent UV texture for it by score "
    "distillation and the VAE decodes it into the GLB's texture. Any mesh works: connect a core MESH, or pick a file under input/3d.\n\n"
    f"Pick your SD1.5 checkpoint ({CHECKPOINT}). {PAPER}\n{RESUME}"
)
SHAPE_THEN_TEXTURE_NOTE = (
    "Shape first, then a crisp texture (Latent3D)\n\n"
    "Latent-NeRF Train finds the shape; Export Mesh turns it into a mesh (left Preview 3D: its colours baked from the latent field); "
    "Latent-Paint then paints that mesh with a UV texture of its own, sharper than the field's colours (right Preview 3D).\n\n"
    f"Pick your SD1.5 checkpoint ({CHECKPOINT}). {PAPER} Both training nodes resume on their own."
)
REFINE_NOTE = (
    "Text to 3D refined in RGB (Latent3D)\n\n"
    "Latent-NeRF Train learns the field in SD's latent space; Latent→RGB Refine turns its latents into RGB colours and sharpens them "
    "by score distillation through the VAE encoder; Export Mesh writes those colours as they are (no VAE decode).\n\n"
    f"Pick your SD1.5 checkpoint ({CHECKPOINT}). {PAPER} The refinement's official length is another 5000 steps."
)

# (title, shape, size_x, size_y, axis, centre): a teddy-like figure, ≈ 1.1 tall, facing +z
LEGO_MAN_PARTS = (
    ("Body", "capsule", 0.27, 0.7, "y", (0.0, -0.08, 0.0)),
    ("Head", "sphere", 0.2, 0.6, "y", (0.0, 0.42, 0.0)),
    ("Left arm", "capsule", 0.1, 0.5, "y", (-0.36, -0.02, 0.06)),
    ("Right arm", "capsule", 0.1, 0.5, "y", (0.36, -0.02, 0.06)),
    ("Left leg", "capsule", 0.12, 0.45, "y", (-0.14, -0.48, 0.04)),
    ("Right leg", "capsule", 0.12, 0.45, "y", (0.14, -0.48, 0.04)),
)
TRAIN_SIZE = (420, 1010)
PAINT_SIZE = (420, 1200)
REFINE_SIZE = (420, 1180)


def _checkpoint(g: Graph, pos: tuple[float, float]):
    return g.add("CheckpointLoaderSimple", pos, (330, 98), ckpt_name=CHECKPOINT)


def _model_inputs(g: Graph, ckpt, node, vae: bool = True) -> None:
    g.link(ckpt, "MODEL", node, "model")
    g.link(ckpt, "CLIP", node, "clip")
    if vae:
        g.link(ckpt, "VAE", node, "vae")


def text_to_3d(info: dict[str, Any]) -> dict[str, Any]:
    g = Graph(info)
    g.note(TEXT_NOTE, (40, 380), (330, 320), "Read me")
    ckpt = _checkpoint(g, (40, 200))
    train = g.add("Latent3DLatentNeRFTrain", (410, 80), TRAIN_SIZE, prompt="a hamburger")
    export = g.add("Latent3DExportMesh", (870, 80), (340, 290))
    preview = g.add("Preview3D", (1250, 80), (560, 620), title="Preview 3D (textured mesh)")
    turntable = g.add("PreviewImage", (870, 420), (340, 380), title="Turntable")
    _model_inputs(g, ckpt, train)
    g.link(ckpt, "VAE", export, "vae")
    g.link(train, "nerf", export, "nerf")
    g.link(train, "turntable", turntable, "images")
    g.link(export, "model_file", preview, "model_file")
    return g.to_json(TEXT_TO_3D)


def sketch_lego_man(info: dict[str, Any]) -> dict[str, Any]:
    g = Graph(info)
    previous = None
    for i, (title, shape, size_x, size_y, axis, (x, y, z)) in enumerate(LEGO_MAN_PARTS):
        column, row = divmod(i, 3)
        part = g.add("Latent3DSketchPrimitive", (40 + 300 * column, 80 + 305 * row), (280, 262), title=f"Sketch: {title.lower()}",
                     shape=shape, size_x=size_x, size_y=size_y, axis=axis, center_x=x, center_y=y, center_z=z)  # fmt: skip
        if previous is not None:
            g.link(previous, "sketch", part, "add_to")
        previous = part
    g.group("Sketch: a teddy-like figure from primitives", (20, 0, 620, 980))
    sketch_view = g.add("Preview3D", (680, 80), (400, 420), title="Preview 3D (sketch)")
    loss = g.add("Latent3DSketchShapeLoss", (680, 560), (400, 220))
    ckpt = _checkpoint(g, (680, 850))
    train = g.add("Latent3DLatentNeRFTrain", (1120, 80), TRAIN_SIZE, prompt="a lego man")
    export = g.add("Latent3DExportMesh", (1580, 80), (340, 290))
    turntable = g.add("PreviewImage", (1580, 420), (340, 300), title="Turntable")
    g.note(SKETCH_NOTE, (1580, 760), (340, 280), "Read me")
    preview = g.add("Preview3D", (1960, 80), (480, 560), title="Preview 3D (textured mesh)")
    g.link(previous, "preview_file", sketch_view, "model_file")
    g.link(previous, "sketch", loss, "sketch")
    _model_inputs(g, ckpt, train)
    g.link(loss, "shape_guide", train, "shape_guide")
    g.link(ckpt, "VAE", export, "vae")
    g.link(train, "nerf", export, "nerf")
    g.link(train, "turntable", turntable, "images")
    g.link(export, "model_file", preview, "model_file")
    return g.to_json(SKETCH_LEGO_MAN)


def paint_a_sketch(info: dict[str, Any]) -> dict[str, Any]:
    g = Graph(info)
    teddy = g.add("Latent3DSketchPrimitive", (40, 80), (320, 262), title="Sketch: teddy", shape="teddy")
    sketch_view = g.add("Preview3D", (40, 400), (320, 340), title="Preview 3D (the mesh to paint)")
    ckpt = _checkpoint(g, (40, 820))
    paint = g.add("Latent3DLatentPaint", (400, 80), PAINT_SIZE, prompt="a teddy bear")
    preview = g.add("Preview3D", (860, 80), (560, 620), title="Preview 3D (painted mesh)")
    turntable = g.add("PreviewImage", (860, 760), (340, 400), title="Turntable")
    texture = g.add("PreviewImage", (1240, 760), (300, 300), title="Texture")
    g.note(PAINT_NOTE, (1460, 80), (330, 400), "Read me")
    g.link(teddy, "preview_file", sketch_view, "model_file")
    g.link(teddy, "sketch", paint, "sketch")
    _model_inputs(g, ckpt, paint)
    g.link(paint, "model_file", preview, "model_file")
    g.link(paint, "turntable", turntable, "images")
    g.link(paint, "texture", texture, "images")
    return g.to_json(PAINT_A_SKETCH)


def shape_then_texture(info: dict[str, Any]) -> dict[str, Any]:
    g = Graph(info)
    g.note(SHAPE_THEN_TEXTURE_NOTE, (40, 380), (330, 360), "Read me")
    ckpt = _checkpoint(g, (40, 200))
    train = g.add("Latent3DLatentNeRFTrain", (410, 80), TRAIN_SIZE, prompt="a hamburger")
    export = g.add("Latent3DExportMesh", (870, 80), (340, 290))
    shape_view = g.add("Preview3D", (870, 420), (340, 420), title="Preview 3D (shape)")
    paint = g.add("Latent3DLatentPaint", (1250, 80), PAINT_SIZE, prompt="a hamburger")
    preview = g.add("Preview3D", (1710, 80), (520, 600), title="Preview 3D (painted)")
    turntable = g.add("PreviewImage", (1710, 740), (340, 380), title="Turntable (painted)")
    _model_inputs(g, ckpt, train)
    g.link(ckpt, "VAE", export, "vae")
    g.link(train, "nerf", export, "nerf")
    g.link(export, "model_file", shape_view, "model_file")
    g.link(export, "mesh", paint, "mesh")
    _model_inputs(g, ckpt, paint)
    g.link(paint, "model_file", preview, "model_file")
    g.link(paint, "turntable", turntable, "images")
    return g.to_json(SHAPE_THEN_TEXTURE)


def refined_in_rgb(info: dict[str, Any]) -> dict[str, Any]:
    g = Graph(info)
    g.note(REFINE_NOTE, (40, 380), (330, 360), "Read me")
    ckpt = _checkpoint(g, (40, 200))
    train = g.add("Latent3DLatentNeRFTrain", (410, 80), TRAIN_SIZE, prompt="a hamburger")
    refine = g.add("Latent3DLatentToRGBRefine", (870, 80), REFINE_SIZE, prompt="a hamburger")
    export = g.add("Latent3DExportMesh", (1330, 80), (340, 290))
    turntable = g.add("PreviewImage", (1330, 420), (340, 380), title="Turntable (RGB)")
    preview = g.add("Preview3D", (1710, 80), (520, 600), title="Preview 3D (RGB colours)")
    _model_inputs(g, ckpt, train)
    g.link(train, "nerf", refine, "nerf")
    _model_inputs(g, ckpt, refine)
    g.link(refine, "rgb_nerf", export, "nerf")
    g.link(refine, "turntable", turntable, "images")
    g.link(export, "model_file", preview, "model_file")
    return g.to_json(REFINED_IN_RGB)


TEXT_TO_3D = "Text to 3D with Latent NeRF"
SKETCH_LEGO_MAN = "Sketch guided 3D, a lego man"
PAINT_A_SKETCH = "Paint a mesh with Latent Paint"
SHAPE_THEN_TEXTURE = "Shape first, then a crisp texture"
REFINED_IN_RGB = "Text to 3D refined in RGB"

WORKFLOWS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    TEXT_TO_3D: text_to_3d,
    SKETCH_LEGO_MAN: sketch_lego_man,
    PAINT_A_SKETCH: paint_a_sketch,
    SHAPE_THEN_TEXTURE: shape_then_texture,
    REFINED_IN_RGB: refined_in_rgb,
}
"""File name (= the template browser's title) -> builder."""

SUBTITLES = {
    TEXT_TO_3D: "A prompt becomes a 3D object: Latent-NeRF trained by score distillation, exported as a textured GLB.",
    SKETCH_LEGO_MAN: "A coarse shape built from primitives in the graph guides the Latent-NeRF (Sketch-Shape loss).",
    PAINT_A_SKETCH: "A UV texture for a given mesh (here the teddy primitive) by score distillation: Latent-Paint.",
    SHAPE_THEN_TEXTURE: "Latent-NeRF finds the shape, Export Mesh makes it a mesh, Latent-Paint gives it a texture of its own.",
    REFINED_IN_RGB: "A trained Latent-NeRF refined in RGB through the VAE encoder; Export Mesh writes its RGB colours.",
}
"""One line each: what the workflow does (drawn under the title in its thumbnail)."""
