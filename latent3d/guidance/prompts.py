"""View-dependent prompts and the per-view text embeddings the trainer picks from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..nerf.cameras import VIEW_LABELS


def view_prompt(text: str, label: str) -> str:
    """"{text}, {label} view" (the official wording)."""
    if label not in VIEW_LABELS:
        raise ValueError(f"view label must be one of {VIEW_LABELS}, got {label!r}")
    return f"{text}, {label} view"


@dataclass
class PromptEmbeddings:
    """Text embeddings per view label, plus the unconditional (negative) one.

    uncond: [1, L, C]; views: label -> [1, L, C] for every label in VIEW_LABELS (the same tensor for all
    labels when view-dependent prompting is off).
    """

    uncond: torch.Tensor
    views: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        missing = [label for label in VIEW_LABELS if label not in self.views]
        if missing:
            raise ValueError(f"PromptEmbeddings.views needs an entry for every view label {VIEW_LABELS}; missing {missing}")
        shapes = {tuple(t.shape[-1:]) for t in [self.uncond, *self.views.values()]}
        if len(shapes) != 1:
            raise ValueError(f"PromptEmbeddings: all embeddings must have the same width, got widths {sorted(s[0] for s in shapes)}")
        for name, tensor in [("uncond", self.uncond), *self.views.items()]:
            if tensor.dim() != 3 or tensor.shape[0] != 1:
                raise ValueError(f"PromptEmbeddings.{name} must have shape [1, L, C], got {list(tensor.shape)}")
            if not torch.isfinite(tensor).all():
                raise ValueError(f"PromptEmbeddings.{name} contains non-finite values")

    @property
    def width(self) -> int:
        return int(self.uncond.shape[-1])

    @classmethod
    def single(cls, cond: torch.Tensor, uncond: torch.Tensor) -> "PromptEmbeddings":
        """One conditional embedding for every view (no view-dependent prompting)."""
        return cls(uncond=uncond, views={label: cond for label in VIEW_LABELS})

    def select(self, labels: list[str], device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(cond [B, L, C], uncond [B, L, C]) for the given view labels."""
        cond = torch.cat([self.views[label] for label in labels])
        uncond = self.uncond.expand(len(labels), -1, -1)
        if device is not None:
            cond, uncond = cond.to(device), uncond.to(device)
        return cond, uncond

    def to(self, device) -> "PromptEmbeddings":
        return PromptEmbeddings(self.uncond.to(device), {k: v.to(device) for k, v in self.views.items()})

    def fingerprint(self) -> str:
        """A short hash of the embeddings' values (to refuse resuming a run made for other prompts)."""
        import hashlib

        digest = hashlib.sha256()
        for name in ("uncond", *VIEW_LABELS):
            tensor = self.uncond if name == "uncond" else self.views[name]
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


def encode_view_prompts(
    encode: Callable[[list[str]], torch.Tensor], text: str, negative: str = "", view_dependent: bool = True
) -> PromptEmbeddings:
    """Build :class:`PromptEmbeddings` with a text encoder ``encode(list of prompts) -> [N, L, C]``."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"prompt text must be a non-empty string, got {text!r}")
    labels = list(VIEW_LABELS)
    prompts = [view_prompt(text, label) for label in labels] if view_dependent else [text]
    embedded = encode([negative] + prompts)
    uncond, conds = embedded[:1], embedded[1:]
    if view_dependent:
        return PromptEmbeddings(uncond, {label: conds[i : i + 1] for i, label in enumerate(labels)})
    return PromptEmbeddings.single(conds[:1], uncond)
