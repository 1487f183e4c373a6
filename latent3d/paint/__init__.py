"""Latent-Paint (DESIGN §3): texturing a given mesh. ``mesh`` loads the mesh to paint (own UVs and
texture kept, xatlas otherwise) and places it; rasterization and the texture come in sibling modules.

Import the modules directly, e.g. ``from latent3d.paint.mesh import load_paint_mesh, place_paint_mesh``.
"""
