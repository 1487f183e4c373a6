"""The node list as data: one NodeSpec per node (ids are stable: never rename, deprecate instead)."""

from __future__ import annotations

from ..latent3d.export import ExportConfig
from ..latent3d.nerf.train import NerfConfig
from ..latent3d.paint.train import PaintConfig
from ..latent3d.refine.train import RefineConfig
from ..latent3d.shape.loss import SketchShapeConfig
from .runs import KEEP_RUNS
from .spec import NodeSpec, Socket, Widget

NERF = "LATENT3D_NERF"
SKETCH = "LATENT3D_SKETCH"
SHAPE_GUIDE = "LATENT3D_SHAPE_GUIDE"

PRIMITIVES = ("sphere", "box", "capsule", "cylinder", "teddy")
MIN_LATENT, MAX_LATENT = 8, 128
"""Latent render sizes the training nodes allow. 128 = a 1024² image for SD1.x, the most its UNet handles
sensibly (trained at 512², SD2.x at 768²); at 256 (2048², attention over 65,536 tokens) a Latent-NeRF step
did not finish in 300 s on a CPU."""
_SIZE_WHY = ("at most 128 (1024²): SD1.x/2.x were trained at 512–768 px, and at 256² one UNet call attends over 65k tokens "
             "(no step in 300 s on a CPU); the node refuses a size whose step does not fit in the device's free memory")
AXES = ("x", "y", "z")

_preview = Socket("preview_file", "STRING", "The normalized sketch as a GLB under output/: connect it to core Preview3D to check its placement.")
_sketch_out = Socket("sketch", SKETCH, "The sketch mesh and its placement (scale, rotation, offset) for Sketch Shape Loss.")


def _placement_widgets(thing: str = "sketch") -> tuple[Widget, ...]:
    rotations = tuple(
        Widget(f"rotate_{axis}", "FLOAT", f"Rotation of the {thing} about {axis} in degrees, applied after scaling (x, then y, then z).",
               field="rotation_deg", index=i, min=-360.0, max=360.0, step=1.0)
        for i, axis in enumerate(AXES)
    )
    offsets = tuple(
        Widget(f"offset_{axis}", "FLOAT", f"Shift of the {thing} along {axis} after rotation (world units; y is up, +z is the front).",
               field="offset", index=i, min=-1.0, max=1.0, step=0.01)
        for i, axis in enumerate(AXES)
    )
    scale = Widget("mesh_scale", "FLOAT", f"The {thing} is centred and scaled so its farthest vertex lies this far from the origin (the scene is [-1, 1]³).",
                   field="mesh_scale", min=0.05, max=1.0, step=0.01)
    return (scale, *rotations, *offsets)


LOAD_SKETCH_MESH = NodeSpec(
    node_id="Latent3DLoadSketchMesh",
    display_name="Load Sketch Mesh (Latent3D)",
    category="Latent3D/sketch",
    description="Load a coarse mesh (OBJ, PLY, STL, OFF, GLB, GLTF from input/3d) that will guide the shape of a Latent-NeRF.",
    inputs=(
        Widget("mesh_file", "COMBO", "A mesh file under ComfyUI's input/3d folder (Load3D's upload puts files there too).", upload=True),
        *_placement_widgets(),
    ),
    outputs=(_sketch_out, _preview),
    config=SketchShapeConfig,
)

SKETCH_PRIMITIVE = NodeSpec(
    node_id="Latent3DSketchPrimitive",
    display_name="Sketch Primitive (Latent3D)",
    category="Latent3D/sketch",
    description="Build a sketch from a primitive, optionally added to another sketch: chain a few to model a coarse shape in the graph.",
    inputs=(
        Widget("shape", "COMBO", "The primitive. 'teddy' is a ready-made teddy-like union of spheres.", options=PRIMITIVES, default="sphere"),
        Widget("size_x", "FLOAT", "Width (box), or radius (sphere, capsule, cylinder); unused by teddy.", default=0.3, min=0.01, max=2.0, step=0.01),
        Widget("size_y", "FLOAT", "Height (box), or length along the axis (capsule, cylinder).", default=0.6, min=0.01, max=2.0, step=0.01),
        Widget("size_z", "FLOAT", "Depth (box); unused by the other primitives.", default=0.3, min=0.01, max=2.0, step=0.01),
        Widget("axis", "COMBO", "Long axis of a capsule or cylinder.", options=AXES, default="y"),
        *(Widget(f"center_{a}", "FLOAT", f"Centre of the primitive along {a} (sketch units, before normalization).", default=0.0, min=-2.0, max=2.0, step=0.01) for a in AXES),
        Socket("add_to", SKETCH, "A sketch to add this primitive to (union); leave empty to start a new sketch.", optional=True),
    ),
    outputs=(_sketch_out, _preview),
)

SKETCH_SHAPE_LOSS = NodeSpec(
    node_id="Latent3DSketchShapeLoss",
    display_name="Sketch Shape Loss (Latent3D)",
    category="Latent3D/sketch",
    description="Sketch-Shape guidance: occupancy inside the sketch is pushed up, outside down, relaxed near its surface.",
    inputs=(
        Socket("sketch", SKETCH, "A sketch from Load Sketch Mesh or Sketch Primitive."),
        Widget("proximal_surface", "FLOAT", "σ_S: how free the surface region is. Larger lets the result stray further from the sketch near its surface.",
               field="proximal_surface", min=0.01, max=2.0, step=0.01),
        Widget("shape_weight", "FLOAT", "Strength of the sketch loss relative to score distillation.", field="shape_weight", min=0.0, max=100.0, step=0.01),
        Widget("mode", "COMBO", "grid: precompute winding number and distance once (fast, any device); exact: libigl queries every step (reference).",
               field="mode", options=("grid", "exact")),
        Widget("grid_resolution", "INT", "Nodes per axis of the precomputed grid. Its cost grows with the cube: at most 256 (8× the work of the default 128).",
               field="grid_resolution", min=16, max=256, step=16),
        Widget("fade_start", "INT", "Step at which the sketch loss starts fading to zero (0 with fade_end 0: never fades).", field="fade_start", none_value=0, min=0, max=100000),
        Widget("fade_end", "INT", "Step from which the sketch loss is off (0: never).", field="fade_end", none_value=0, min=0, max=100000),
    ),
    outputs=(Socket("shape_guide", SHAPE_GUIDE, "Connect to Latent-NeRF Train's shape_guide."),),
    config=SketchShapeConfig,
)

_VIEW_OVERRIDES = tuple(
    Socket(f"{view}_conditioning", "CONDITIONING", f"Optional: use this conditioning for {view} views instead of '<prompt>, {view} view'.", optional=True)
    for view in ("front", "side", "back", "overhead")
)

LATENT_NERF_TRAIN = NodeSpec(
    node_id="Latent3DLatentNeRFTrain",
    display_name="Latent-NeRF Train (Latent3D)",
    category="Latent3D/nerf",
    description="Optimize a Latent-NeRF by score distillation through the loaded SD1.x/SD2.x model. "
    "Long run: progress, previews and interrupt work; rerunning the same inputs resumes from the last checkpoint.",
    inputs=(
        Socket("model", "MODEL", "An SD1.x or SD2.x model (LoRAs applied upstream are honoured)."),
        Socket("clip", "CLIP", "The text encoder for the prompt ('embedding:name' textual inversions work)."),
        Widget("prompt", "STRING", "What to make. Each view gets ', front view' / ', side view' / ... appended.", default="a hamburger", multiline=True),
        Widget("negative", "STRING", "The unconditional (negative) prompt; the paper uses the empty prompt.", default="", multiline=True),
        Widget("view_dependent", "BOOLEAN", "Append the view direction to the prompt (front/side/back/overhead).", default=True),
        Widget("iterations", "INT", "Optimization steps (paper: 5000; a few hundred already show a shape on a GPU).", field="iterations", min=1, max=100000),
        Widget("seed", "INT", "Seed of every random draw (cameras, timesteps, noise).", field="seed", min=0, max=2**31 - 1, seed=True),
        Widget("guidance_scale", "FLOAT", "Classifier-free guidance scale of score distillation (paper: 100).", field="sds.guidance_scale", min=1.0, max=500.0, step=0.5),
        Widget("resolution", "INT", f"Latent render size per step (64 = a 512² image, the paper's); {_SIZE_WHY}.", field="resolution",
               min=MIN_LATENT, max=MAX_LATENT, step=8),
        Widget("lr_grid", "FLOAT", "Adam learning rate of the hash grid.", field="lr_grid", min=1e-5, max=1.0, step=1e-4),
        Widget("lr_mlp", "FLOAT", "Adam learning rate of the MLPs.", field="lr_mlp", min=1e-6, max=1.0, step=1e-4),
        Widget("sparsity_weight", "FLOAT", "Opacity-entropy weight: pushes every pixel to fully empty or fully solid.", field="sparsity_weight", min=0.0, max=1000.0, step=0.01),
        Widget("preview_every", "INT", "Show a preview every this many steps (0: none).", field="preview_every", min=0, max=10000),
        Widget("preview_resolution", "INT", "Latent size of previews and the turntable (64 = 512 px; smaller is faster to decode; "
               "at most 128 = 1024 px, as large as the VAE decodes without tiling on most GPUs).", field="preview_resolution", min=MIN_LATENT, max=MAX_LATENT, step=8),
        Widget("resume", "BOOLEAN", "Continue an interrupted run of the same inputs from its checkpoint (output/latent3d/runs).", default=True),
        Widget("keep_optimizer", "BOOLEAN", "Keep the optimizer state in the checkpoint of a completed run (3× its size: ≈ 150 MB instead of 57 MB "
               "for the paper's Latent-NeRF). Off: raising iterations later still continues the run, with fresh Adam moments. Interrupted runs always keep it.",
               default=False),
        Widget("turntable_frames", "INT", "Frames of the turntable IMAGE batch rendered at the end.", default=8, min=1, max=120),
        Socket("shape_guide", SHAPE_GUIDE, "Optional Sketch-Shape guidance.", optional=True),
        Socket("vae", "VAE", "Optional: decode previews and the turntable with this VAE (else a fast linear latent preview).", optional=True),
        *_VIEW_OVERRIDES,
    ),
    outputs=(
        Socket("nerf", NERF, "The trained Latent-NeRF: connect to Export Mesh."),
        Socket("turntable", "IMAGE", "Renders around the object (batch)."),
    ),
    config=NerfConfig,
    output_node=True,  # ComfyUI then replays a cached run's summary (loss curve, frames) to the panel
)

EXPORT_MESH = NodeSpec(
    node_id="Latent3DExportMesh",
    display_name="Export Mesh (Latent3D)",
    category="Latent3D/export",
    description="Marching cubes, cleanup, UV unwrap and texture bake: writes GLB/OBJ/PLY under output/ for core Preview3D.",
    inputs=(
        Socket("nerf", NERF, "A trained Latent-NeRF, or a refined one from Latent→RGB Refine (its RGB colours are written as they are)."),
        Widget("format", "COMBO", "glb (embedded texture), obj (+mtl+png) or ply (vertex colours).", options=("glb", "obj", "ply"), default="glb"),
        Widget("resolution", "INT", "Marching-cubes grid size.", field="resolution", min=16, max=512, step=16),
        Widget("threshold", "FLOAT", "Density iso-level (0: automatic, at most 10).", field="threshold", none_value=0.0, min=0.0, max=1000.0, step=0.5),
        Widget("color_mode", "COMBO", "texture: UV unwrap and bake; vertex: per-vertex colours.", field="color_mode", options=("texture", "vertex")),
        Widget("texture_size", "INT", "Texture size in pixels (a multiple of 8 with a VAE).", field="texture_size", min=64, max=4096, step=64),
        Widget("face_budget", "INT", "Decimate to at most this many faces (0: automatic, 20k before UV unwrapping).", field="face_budget", none_value=0, min=0, max=2000000, step=1000),
        Widget("filename_prefix", "STRING", "Where under output/ to write (a counter is appended).", default="latent3d/mesh"),
        Socket("vae", "VAE", "Optional: decode the baked latent texture with this VAE (sharper); else the linear map.", optional=True),
    ),
    outputs=(
        Socket("model_file", "STRING", "The written file relative to output/: connect to core Preview3D."),
        Socket("mesh", "MESH", "The mesh as core MESH (for SaveGLB and other 3D nodes)."),
    ),
    config=ExportConfig,
    output_node=True,
)

NO_MESH_FILE = "none"
"""The mesh_file choice that means "paint the connected mesh or sketch"."""

LATENT_PAINT = NodeSpec(
    node_id="Latent3DLatentPaint",
    display_name="Latent-Paint (Latent3D)",
    category="Latent3D/paint",
    description="Paint a texture on a given mesh by score distillation through the loaded SD1.x/SD2.x model (a latent UV texture, "
    "decoded by the VAE). Writes a textured GLB under output/ for core Preview3D. Long run: progress, previews and interrupt work; "
    "rerunning the same inputs resumes from the last checkpoint.",
    inputs=(
        Widget("mesh_file", "COMBO", "A mesh under ComfyUI's input/3d folder (its own UVs and texture are kept, else xatlas unwraps it); "
               "'none' paints the connected mesh or sketch instead.", options=(NO_MESH_FILE,), default=NO_MESH_FILE, upload=True),
        Socket("mesh", "MESH", "Optional: a core MESH to paint (e.g. Export Mesh's mesh); used before sketch and mesh_file.", optional=True),
        Socket("sketch", SKETCH, "Optional: a sketch from Load Sketch Mesh or Sketch Primitive to paint (as placed there); used before mesh_file.", optional=True),
        Socket("model", "MODEL", "An SD1.x or SD2.x model (LoRAs applied upstream are honoured)."),
        Socket("clip", "CLIP", "The text encoder for the prompt ('embedding:name' textual inversions work)."),
        Widget("prompt", "STRING", "What the texture shows. Each view gets ', front view' / ', side view' / ... appended.", default="a goldfish", multiline=True),
        Widget("negative", "STRING", "The unconditional (negative) prompt; the paper uses the empty prompt.", default="", multiline=True),
        Widget("view_dependent", "BOOLEAN", "Append the view direction to the prompt (front/side/back/overhead).", default=True),
        Widget("iterations", "INT", "Optimization steps (paper: 5000).", field="iterations", min=1, max=100000),
        Widget("seed", "INT", "Seed of every random draw (initial texture, cameras, timesteps, noise).", field="seed", min=0, max=2**31 - 1, seed=True),
        Widget("guidance_scale", "FLOAT", "Classifier-free guidance scale of score distillation (paper: 100).", field="sds.guidance_scale", min=1.0, max=500.0, step=0.5),
        Widget("resolution", "INT", f"Latent render size per step (64 = a 512² image, the paper's); {_SIZE_WHY}.", field="resolution",
               min=MIN_LATENT, max=MAX_LATENT, step=8),
        Widget("texture_size", "INT", "Side of the latent texture (the VAE decodes it to 8× as many pixels).", field="texture_size", min=64, max=512, step=8),
        Widget("lr", "FLOAT", "Adam learning rate of the texture and background.", field="lr", min=1e-5, max=1.0, step=1e-4),
        Widget("init", "COMBO", "color: start near red (paper); texture: start from the mesh's own texture (encoded by the VAE when connected).",
               field="init", options=("color", "texture")),
        Widget("background", "COMBO", "environment: learnable latent colours per direction (paper); learned: one learnable colour; fixed: constant white.",
               field="background", options=("environment", "learned", "fixed")),
        Widget("texture_filter", "COMBO", "Texture lookup while training (the official code uses nearest).", field="texture_filter", options=("bilinear", "nearest", "mipmap")),
        *_placement_widgets("mesh"),
        Widget("preview_every", "INT", "Show a preview every this many steps (0: none).", field="preview_every", min=0, max=10000),
        Widget("preview_resolution", "INT", "Latent size of previews (64 = 512 px); the turntable is rendered at 8× this size (at most 128 = 1024 px).",
               field="preview_resolution", min=MIN_LATENT, max=MAX_LATENT, step=8),
        Widget("resume", "BOOLEAN", "Continue an interrupted run of the same inputs from its checkpoint (output/latent3d/runs).", default=True),
        Widget("keep_optimizer", "BOOLEAN", "Keep the optimizer state in the checkpoint of a completed run (3× its size; small here: a 128² latent "
               "texture is 0.26 MB, 0.8 MB with Adam's moments). Off: raising iterations later still continues the run, with fresh Adam moments. "
               "Interrupted runs always keep it.", default=False),
        Widget("texture_resolution", "INT", "Side of the RGB texture written into the GLB (a multiple of 8 with a VAE).", default=1024, min=64, max=4096, step=8),
        Widget("turntable_frames", "INT", "Frames of the turntable IMAGE batch rendered at the end.", default=8, min=1, max=120),
        Widget("filename_prefix", "STRING", "Where under output/ to write the GLB (a counter is appended).", default="latent3d/paint"),
        Socket("vae", "VAE", "Optional: decode the texture and previews with this VAE (sharper; else the linear latent map) and encode init 'texture'.", optional=True),
        *_VIEW_OVERRIDES,
    ),
    outputs=(
        Socket("model_file", "STRING", "The textured GLB relative to output/: connect to core Preview3D."),
        Socket("texture", "IMAGE", "The RGB texture (UV space)."),
        Socket("turntable", "IMAGE", "Renders of the painted mesh around it (batch)."),
        Socket("textured_mesh", "MESH", "The textured mesh as core MESH (with UVs and texture where the host's MESH takes them)."),
    ),
    config=PaintConfig,
    output_node=True,
)


LATENT_TO_RGB_REFINE = NodeSpec(
    node_id="Latent3DLatentToRGBRefine",
    display_name="Latent→RGB Refine (Latent3D)",
    category="Latent3D/nerf",
    description="Refine a trained Latent-NeRF in RGB: a linear colour head turns its latents into colours, and score distillation "
    "through the VAE encoder makes them crisp (optional Lambertian shading). Export Mesh then writes true RGB colours, no VAE decode. "
    "Long run: progress, previews and interrupt work; rerunning the same inputs resumes from the last checkpoint.",
    inputs=(
        Socket("nerf", NERF, "The trained Latent-NeRF from Latent-NeRF Train."),
        Socket("model", "MODEL", "The SD1.x/SD2.x model it was trained with (LoRAs applied upstream are honoured)."),
        Socket("clip", "CLIP", "The text encoder for the prompt ('embedding:name' textual inversions work)."),
        Socket("vae", "VAE", "The checkpoint's VAE: a copy of its encoder (with gradients) encodes every RGB render."),
        Widget("prompt", "STRING", "What the object is (usually Latent-NeRF Train's prompt); ', front view' etc. are appended per view.", default="a hamburger", multiline=True),
        Widget("negative", "STRING", "The unconditional (negative) prompt; the paper uses the empty prompt.", default="", multiline=True),
        Widget("view_dependent", "BOOLEAN", "Append the view direction to the prompt (front/side/back/overhead).", default=True),
        Widget("iterations", "INT", "Refinement steps (official: 5000; a few hundred already sharpen colours on a GPU).", field="iterations", min=1, max=100000),
        Widget("seed", "INT", "Seed of every random draw (cameras, timesteps, noise, light).", field="seed", min=0, max=2**31 - 1, seed=True),
        Widget("guidance_scale", "FLOAT", "Classifier-free guidance scale of score distillation (paper: 100).", field="sds.guidance_scale", min=1.0, max=500.0, step=0.5),
        Widget("render_resolution", "INT", "Side of the RGB render per step (official 64); it is resized to encode_resolution for the VAE. "
               "At most 256: every ray keeps its samples for the backward pass (256² = 16× the official rays).", field="render_resolution", min=16, max=256, step=16),
        Widget("encode_resolution", "INT", "Side of the image the VAE encodes (official 512 → 64² latents); the main cost in time and memory. At most 1024 "
               "(128² latents, the UNet's limit as in Latent-NeRF Train); the encoder's backward keeps ≈ 3.1 GB at 512² in fp32 (0.7 GB with "
               "vae_checkpointing), and a size whose step does not fit in the device's free memory is refused.", field="encode_resolution", min=64, max=1024, step=64),
        Widget("lr_grid", "FLOAT", "Adam learning rate of the hash grid.", field="lr_grid", min=1e-5, max=1.0, step=1e-4),
        Widget("lr_mlp", "FLOAT", "Adam learning rate of the field and background MLPs.", field="lr_mlp", min=1e-6, max=1.0, step=1e-4),
        Widget("lr_color", "FLOAT", "Adam learning rate of the 4→3 colour head.", field="lr_color", min=1e-6, max=1.0, step=1e-4),
        Widget("freeze_geometry", "BOOLEAN", "Keep the shape exactly as trained: only colours change.", field="freeze_geometry"),
        Widget("shading_start", "INT", "Step from which renders are Lambertian-shaded in RGB (random light near the camera); -1: never.",
               field="shading_start", none_value=-1, min=-1, max=100000),
        Widget("ambient_ratio", "FLOAT", "Ambient share of the shading (paper: 0.1; 1 = no shading).", field="ambient_ratio", min=0.0, max=1.0, step=0.01),
        Widget("sparsity_weight", "FLOAT", "Opacity-entropy weight, as in Latent-NeRF Train.", field="sparsity_weight", min=0.0, max=1000.0, step=0.01),
        Widget("vae_checkpointing", "BOOLEAN", "Recompute the VAE encoder's activations in the backward pass: ≈1–2 GB less VRAM at 512², one more encoder pass per step. Always on with --lowvram.",
               field="vae_checkpointing"),
        Widget("color_init", "COMBO", "Start of the colour head: the paper's latent→RGB matrix, or this model family's latent-preview factors.",
               options=("paper", "host preview"), default="paper"),
        Widget("preview_every", "INT", "Show an RGB preview every this many steps (0: none).", field="preview_every", min=0, max=10000),
        Widget("preview_resolution", "INT", "Side in pixels of the previews.", field="preview_resolution", min=16, max=1024, step=16),
        Widget("resume", "BOOLEAN", "Continue an interrupted run of the same inputs from its checkpoint (output/latent3d/runs).", default=True),
        Widget("keep_optimizer", "BOOLEAN", "Keep the optimizer state in the checkpoint of a completed run (3× its size: ≈ 150 MB instead of 57 MB "
               "for the paper's Latent-NeRF). Off: raising iterations later still continues the run, with fresh Adam moments. Interrupted runs always keep it.",
               default=False),
        Widget("turntable_frames", "INT", "Frames of the turntable IMAGE batch rendered at the end.", default=8, min=1, max=120),
        Widget("turntable_resolution", "INT", "Side in pixels of the turntable frames.", default=256, min=32, max=1024, step=32),
        *_VIEW_OVERRIDES,
    ),
    outputs=(
        Socket("rgb_nerf", NERF, "The refined field with RGB colours: connect to Export Mesh (no VAE needed)."),
        Socket("turntable", "IMAGE", "RGB renders around the object (batch)."),
    ),
    config=RefineConfig,
    output_node=True,
)


CLEAR_RUNS = NodeSpec(
    node_id="Latent3DClearRuns",
    display_name="Clear Runs (Latent3D)",
    category="Latent3D/utils",
    description="Free the disk space of old training runs (output/latent3d/runs: checkpoints for resuming). Lists them; deletes only "
    f"with 'delete' on, keeping the most recent ones and any run in progress. Training nodes keep at most {KEEP_RUNS} runs on their own.",
    inputs=(
        Widget("keep_recent", "INT", "Runs to keep, most recently written first (0: delete every run not in progress).", default=0, min=0, max=1000),
        Widget("delete", "BOOLEAN", "Off: only list what would be deleted. On: delete it (a deleted run starts from scratch when queued again).",
               default=False),
    ),
    outputs=(Socket("report", "STRING", "What was (or would be) deleted and kept, with sizes."),),
    output_node=True,
)


ALL_SPECS = (LOAD_SKETCH_MESH, SKETCH_PRIMITIVE, SKETCH_SHAPE_LOSS, LATENT_NERF_TRAIN, LATENT_TO_RGB_REFINE, EXPORT_MESH, LATENT_PAINT, CLEAR_RUNS)
