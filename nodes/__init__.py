"""ComfyUI adapters of Latent3D: node classes (imported only inside ComfyUI), specs and host glue."""


def node_classes() -> list[type]:
    """Every Latent3D node class, in menu order (imports ComfyUI's API: call inside the host only)."""
    from .export_nodes import ExportMesh
    from .nerf_nodes import LatentNeRFTrain
    from .paint_nodes import LatentPaint
    from .refine_nodes import LatentToRGBRefine
    from .runs_nodes import ClearRuns
    from .sketch_nodes import LoadSketchMesh, SketchPrimitive, SketchShapeLoss

    return [LoadSketchMesh, SketchPrimitive, SketchShapeLoss, LatentNeRFTrain, LatentToRGBRefine, ExportMesh, LatentPaint, ClearRuns]
