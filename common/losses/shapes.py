"""The shape check every loss of this package makes on its two inputs (logits and one-channel label map)."""

from __future__ import annotations

import torch

__all__ = ["check_label_matches_logits"]


def check_label_matches_logits(logits: torch.Tensor, label: torch.Tensor) -> None:
    """Check that ``label`` is ``[B, 1, *spatial]`` for ``logits`` of ``[B, C, *spatial]``.

    Args:
        logits: network output ``[B, C, *spatial]``.
        label: one-channel label map.

    Raises:
        ValueError: naming both shapes and the one expected.
    """
    expected = (logits.shape[0], 1, *logits.shape[2:])
    if tuple(label.shape) != expected:
        raise ValueError(
            f"label shape {tuple(label.shape)} does not match logits shape {tuple(logits.shape)}: "
            f"expected label [B, 1, *spatial] = {expected}."
        )
