"""Sketch nodes: load or build a sketch mesh, and turn it into Sketch-Shape guidance."""

from __future__ import annotations

from .api import io

from ..latent3d.shape.mesh_io import load_mesh
from ..latent3d.shape.primitives import make_primitive
from ..latent3d.shape.loss import SketchShapeConfig
from . import host
from .schema import build_schema
from .spec import build_config
from .specs import LOAD_SKETCH_MESH, SKETCH_PRIMITIVE, SKETCH_SHAPE_LOSS
from .types import ShapeGuideSpec, Sketch


class LoadSketchMesh(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return build_schema(LOAD_SKETCH_MESH, {"mesh_file": host.input_meshes()})

    @classmethod
    def validate_inputs(cls, mesh_file: str) -> bool | str:
        """Checked before the graph runs; only ``mesh_file`` is named (ComfyUI repeats a failure once per input
        named here, and ``**kwargs`` would name them all and switch off its own range checks)."""
        try:
            host.input_path(mesh_file)
        except (ValueError, FileNotFoundError) as error:
            return str(error)
        return True

    @classmethod
    def execute(cls, mesh_file: str, **widgets) -> io.NodeOutput:
        placement = build_config(LOAD_SKETCH_MESH, widgets)
        with host.pip_hint(LOAD_SKETCH_MESH.display_name):
            sketch = Sketch((load_mesh(host.input_path(mesh_file)),), placement)
            return io.NodeOutput(sketch, host.write_sketch_preview(sketch))


class SketchPrimitive(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return build_schema(SKETCH_PRIMITIVE)

    @classmethod
    def execute(cls, shape, size_x, size_y, size_z, axis, center_x, center_y, center_z, add_to=None) -> io.NodeOutput:
        with host.pip_hint(SKETCH_PRIMITIVE.display_name):
            part = make_primitive(shape, (size_x, size_y, size_z), axis, (center_x, center_y, center_z))
            sketch = add_to.plus(part) if add_to is not None else Sketch((part,), SketchShapeConfig())
            return io.NodeOutput(sketch, host.write_sketch_preview(sketch))


class SketchShapeLoss(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return build_schema(SKETCH_SHAPE_LOSS)

    @classmethod
    def execute(cls, sketch: Sketch, **widgets) -> io.NodeOutput:
        if not isinstance(sketch, Sketch):
            raise ValueError("Sketch Shape Loss: connect 'sketch' to Load Sketch Mesh or Sketch Primitive")
        return io.NodeOutput(ShapeGuideSpec.from_sketch(sketch, build_config(SKETCH_SHAPE_LOSS, widgets)))
