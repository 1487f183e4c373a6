"""ComfyUI-Latent3D core: Latent-NeRF, Sketch-Shape guidance and mesh export in pure PyTorch.

Host-agnostic: this package never imports ComfyUI. Import submodules directly, e.g.
``from latent3d.nerf.train import fit_latent_nerf, NerfConfig``.
"""

__version__ = "0.1.0"
