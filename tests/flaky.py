"""A denoiser that wraps another and returns NaN on chosen calls, for the skipped-step tests."""

import torch


class FlakyDenoiser:
    """``inner``'s ε, except NaN on the calls (counted from 1) in ``bad_calls``."""

    prediction_type = "epsilon"
    embedding_dim = None

    def __init__(self, inner, bad_calls):
        self.inner = inner
        self.alphas_cumprod = inner.alphas_cumprod
        self.bad_calls, self.calls = set(bad_calls), 0

    def predict_noise(self, z_t, t, embeddings, cameras=None):
        self.calls += 1
        eps = self.inner.predict_noise(z_t, t, embeddings, cameras)
        return torch.full_like(eps, float("nan")) if self.calls in self.bad_calls else eps
