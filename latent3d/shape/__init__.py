"""Sketch-Shape guidance (docs/method.md §2): mesh loading and primitives (``mesh_io``, ``primitives``),
winding-number and distance queries (``winding``), and the shape loss the trainer calls (``loss``).

Import the modules directly, e.g. ``from latent3d.shape.loss import SketchShapeConfig, make_shape_guide``.
"""
