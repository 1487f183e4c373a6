"""Latent-Paint (DESIGN §3): texturing a given mesh through rasterized latent views."""
