"""Latent-Paint: texturing a given mesh through rasterized latent views (the method: docs/method.md §3).

``mesh`` loads the mesh to paint (own UVs and texture kept, xatlas otherwise) and places it; ``raster``
rasterizes it with nvdiffrast's contract, ``texture`` samples the latent texture, ``render`` composes a
view (texture + background on directions); ``train`` optimizes the texture (``paint_mesh``), ``output``
decodes it and writes the textured mesh; ``scenes`` holds known answers for tests and benchmarks.

Import the modules directly, e.g. ``from latent3d.paint.train import PaintConfig, paint_mesh``.
"""
