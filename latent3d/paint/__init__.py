"""Latent-Paint: texturing a given mesh through rasterized latent views (the method: docs/method.md §3).

``mesh`` loads the mesh to paint (own UVs and texture kept, xatlas otherwise) and places it; ``raster``
rasterizes it with nvdiffrast's contract, ``texture`` samples the latent texture.

Import the modules directly, e.g. ``from latent3d.paint.mesh import load_paint_mesh, place_paint_mesh``.
"""
