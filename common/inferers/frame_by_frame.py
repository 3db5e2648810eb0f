"""Frame-by-frame inference of a 3D network over a 4D sequence: the 3D baseline (cardiac 4D CNN paper, section 4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer, SimpleInferer
from monai.utils import convert_to_dst_type

__all__ = ["FrameByFrameInferer"]


class FrameByFrameInferer(Inferer):
    """Run a 3D inferer on every frame of ``[B, C, X, Y, Z, T]`` and stack the outputs along a last time axis.

    Implements the inference of the 3D baseline of the cardiac 4D CNN paper, section 4: the 3D network "learns to
    predict segmentation without any temporal constraint considerations" and is applied to the sequence frame by
    frame, so its result can be scored like the 4D network's. Frames are gathered in sample-major order (all frames
    of sample 0, then of sample 1, ...) and passed to ``inferer`` ``frame_batch`` at a time along its batch axis
    (the last group may be smaller); each frame's result is the same as a separate 3D call for a network that
    treats batch items independently (e.g. in eval mode).

    Args:
        inferer: the 3D inferer, called as ``inferer(frames [b, C, X, Y, Z], network, *args, **kwargs)`` and
            returning ``[b, C_out, X', Y', Z']`` (e.g. ``SlidingWindowInferer``); default ``SimpleInferer()``.
        frame_batch: frames per call of ``inferer``.

    Raises:
        ValueError: for a ``frame_batch`` below 1.
    """

    def __init__(self, inferer: Inferer | None = None, frame_batch: int = 1) -> None:
        super().__init__()
        if int(frame_batch) < 1:
            raise ValueError(f"frame_batch must be positive, got {frame_batch}.")
        self.inferer = SimpleInferer() if inferer is None else inferer
        self.frame_batch = int(frame_batch)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        """Predict every frame of ``inputs`` with the 3D inferer.

        Args:
            inputs: ``[B, C, X, Y, Z, T]``.
            network: the 3D model, ``[b, C, X, Y, Z] -> [b, C_out, X, Y, Z]``.
            args: extra positional arguments for ``inferer`` (and so ``network``).
            kwargs: extra keyword arguments for ``inferer`` (and so ``network``).

        Returns:
            ``[B, C_out, X', Y', Z', T]`` on the device and in the dtype of the inner inferer's output; a MetaTensor
            with the metadata of ``inputs`` when ``inputs`` is one (as ``SlidingWindowInferer`` does in 3D), else a
            plain tensor.

        Raises:
            ValueError: for an input that is not 6-D or has no sample or frame, or inner results of the wrong batch
                size or differing shapes.
            TypeError: when the inner inferer does not return a tensor.
        """
        if inputs.ndim != 6:
            raise ValueError(f"inputs must be [B, C, X, Y, Z, T], got shape {tuple(inputs.shape)}.")
        if inputs.shape[0] == 0 or inputs.shape[-1] == 0:
            raise ValueError(f"inputs must hold at least one sample and one frame, got shape {tuple(inputs.shape)}.")
        x = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        batch, frames = x.shape[0], x.shape[-1]
        order = [(b, t) for b in range(batch) for t in range(frames)]
        result = torch.empty(0)
        for first in range(0, len(order), self.frame_batch):
            chunk = order[first : first + self.frame_batch]
            out = self.inferer(torch.stack([x[b, ..., t] for b, t in chunk]), network, *args, **kwargs)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"the inner inferer must return a tensor, got {type(out).__name__}.")
            out = out.as_tensor() if isinstance(out, MetaTensor) else out
            if out.ndim < 2 or out.shape[0] != len(chunk):
                raise ValueError(
                    f"the inner inferer returned shape {tuple(out.shape)} for {len(chunk)} frames; expected "
                    f"[{len(chunk)}, C_out, *spatial]."
                )
            if first == 0:
                result = out.new_empty((batch, *out.shape[1:], frames))
            elif out.shape[1:] != result.shape[1:-1]:
                raise ValueError(
                    f"the inner inferer returned frames of shape {tuple(out.shape[1:])} after "
                    f"{tuple(result.shape[1:-1])}; every frame must give the same shape."
                )
            for k, (b, t) in enumerate(chunk):
                result[b, ..., t] = out[k]
        if isinstance(inputs, MetaTensor):
            return convert_to_dst_type(result, inputs, dtype=result.dtype, device=result.device)[0]
        return result
