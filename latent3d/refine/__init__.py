"""Latent → RGB refinement (docs/method.md §4): a trained Latent-NeRF gets a linear colour head and is
fine-tuned in RGB by score distillation through the VAE encoder.

``convert`` turns a latent field into an RGB one (same geometry, same renderer); ``shading`` holds the
optional Lambertian shading; ``encoder`` the differentiable VAE-encoder wrapper; ``train`` the stage
(``RefineConfig``, ``refine_rgb``, ``load_refined``). Import the modules directly, e.g.
``from latent3d.refine.train import RefineConfig, refine_rgb``.
"""
