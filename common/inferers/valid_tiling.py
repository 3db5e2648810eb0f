"""Whole-volume prediction with a valid-convolution network by tiling grid-aligned windows (section II-A, end)."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type

__all__ = [
    "ValidTilingInferer",
    "ValidTilingPlan",
    "plan_valid_tiling",
    "round_down_to_valid_size",
    "valid_tiling_inference",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidTilingPlan:
    """How :py:func:`valid_tiling_inference` covers an image (van de Leemput et al. 2019, section II-A, end).

    Along each spatial dimension ``d`` there are ``tiles[d]`` windows of input size ``window_size[d]`` (a valid
    size) whose outputs (``output_size[d]`` voxels) start ``stride[d]`` voxels apart, at ``0, stride, 2 stride,
    ...`` in image coordinates; window ``i`` keeps the first ``stride`` output voxels (the last one keeps the rest),
    so every voxel gets exactly one prediction. A window's input starts half the size difference before its output.

    Attributes:
        spatial_shape: the image's spatial size ``N``.
        tiles: number of windows per dimension.
        window_size: network input size per dimension (valid, at most the rounded ``roi_size``).
        output_size: network output size per dimension (``window_size - size_difference``).
        stride: distance between consecutive window outputs per dimension, a multiple of ``size_step``.
        processed_voxels: input voxels the network processes in all (``prod(tiles * window_size)``).
        padded_voxels: the zero-padded image processed once, ``prod(N + size_difference)`` (reached only when one
            window per dimension suffices).
        lower_bound_voxels: the fewest input voxels any grid of windows no larger than ``roi_size`` needs to give
            every voxel one prediction, ``prod(max(N, min_output) + size_difference * ceil(N / max_output))``.
    """

    spatial_shape: tuple[int, ...]
    tiles: tuple[int, ...]
    window_size: tuple[int, ...]
    output_size: tuple[int, ...]
    stride: tuple[int, ...]
    processed_voxels: int
    padded_voxels: int
    lower_bound_voxels: int

    @property
    def num_windows(self) -> int:
        """Number of network windows in all.

        Returns:
            ``prod(tiles)``.
        """
        return math.prod(self.tiles)

    @property
    def padded_ratio(self) -> float:
        """Processed input voxels over the padded image processed once.

        Returns:
            ``processed_voxels / padded_voxels``.
        """
        return self.processed_voxels / self.padded_voxels

    @property
    def lower_bound_ratio(self) -> float:
        """Processed input voxels over the fewest any grid of windows of this ``roi_size`` needs.

        Returns:
            ``processed_voxels / lower_bound_voxels``.
        """
        return self.processed_voxels / self.lower_bound_voxels

    def output_starts(self) -> list[tuple[int, ...]]:
        """Image coordinates of the first output voxel of every window, in the order they are processed.

        Returns:
            one tuple per window; its input starts ``size_difference // 2`` voxels earlier in every dimension.
        """
        axes = [range(0, t * s, s) if s > 0 else range(1) for t, s in zip(self.tiles, self.stride, strict=True)]
        return list(itertools.product(*axes))


def _check_sizes(size_difference: int, size_step: int, min_input_size: int) -> None:
    if size_difference < 0 or size_difference % 2:
        raise ValueError(f"size_difference must be a non-negative even number, got {size_difference}.")
    if size_step < 1:
        raise ValueError(f"size_step must be positive, got {size_step}.")
    if min_input_size <= size_difference:
        raise ValueError(f"min_input_size ({min_input_size}) must exceed size_difference ({size_difference}).")


def round_down_to_valid_size(
    roi_size: int, size_difference: int = 88, size_step: int = 8, min_input_size: int = 92, grid_aligned: bool = True
) -> int:
    """Largest valid window size ``min_input_size + k size_step`` not above ``roi_size`` that can be tiled.

    Grid-aligned windows advance by whole multiples of ``size_step``, so their output must hold at least
    ``size_step`` voxels: the smallest usable size is then the first valid size with such an output (100 for the
    paper's network, output 12); without alignment any valid size (92) can be tiled.

    Args:
        roi_size: the largest window the memory budget allows along one dimension.
        size_difference: network input size minus output size.
        size_step: distance between valid input sizes.
        min_input_size: smallest valid input size.
        grid_aligned: whether the windows start on the network's pooling grid (see :py:func:`plan_valid_tiling`).

    Returns:
        the rounded window size.

    Raises:
        ValueError: when ``roi_size`` is below the smallest usable size, or the size arguments are inconsistent.
    """
    _check_sizes(size_difference, size_step, min_input_size)
    smallest = min_input_size
    while grid_aligned and smallest - size_difference < size_step:
        smallest += size_step
    if int(roi_size) < smallest:
        why = f" and a grid-aligned window's output must hold {size_step} voxels" if grid_aligned else ""
        raise ValueError(
            f"roi_size {roi_size} is too small: windows must be at least {smallest} voxels (valid sizes are "
            f"{min_input_size} + {size_step}k{why})."
        )
    return min_input_size + (int(roi_size) - min_input_size) // size_step * size_step


def plan_valid_tiling(
    spatial_shape: Sequence[int],
    roi_size: int | Sequence[int],
    size_difference: int = 88,
    size_step: int = 8,
    min_input_size: int = 92,
    grid_aligned: bool = True,
) -> ValidTilingPlan:
    """Choose the windows that predict an image of ``spatial_shape`` (van de Leemput et al. 2019, section II-A).

    The image is zero-padded by ``size_difference / 2`` (44) voxels per side, as in the paper, and covered by a
    grid of windows, each window's output ``o`` voxels long; every voxel takes its prediction from exactly one
    window. Per dimension, with ``M = roi - size_difference`` the largest output and ``stride(o)`` the distance
    between window starts: ``t = 1`` window when ``N <= M``, else ``t = 1 + ceil((N - M) / stride(M))``; then the
    smallest valid ``o`` with ``(t - 1) stride(o) + o >= N``. The last window may run past the image (zero input,
    output cropped).

    ``grid_aligned=True`` (default): max pooling makes a valid U-Net shift-equivariant only for shifts by
    multiples of ``size_step`` (8), and the paper's outputs are ``o = 4 + 8k`` long, so windows advance
    ``stride(o) = 8 floor(o / 8) = o - 4`` voxels and drop the 4 output voxels the next window recomputes. The
    result then equals one forward pass over the whole zero-padded image, whatever ``roi_size``: no seams between
    windows and the same prediction at any memory budget. The price is up to ``size_step`` output voxels per
    window (e.g. 4 of 36 at ``roi_size`` 124) and sometimes one more window per dimension.

    ``grid_aligned=False``: windows do not overlap (``stride(o) = o``, ``t = ceil(N / M)``, ``o`` the smallest valid
    size ``>= ceil(N / t)``), fewest voxels processed, but every other window sees a different pooling phase, so
    the result depends on ``roi_size`` and may differ slightly at window borders.

    Args:
        spatial_shape: the image's spatial size.
        roi_size: largest window (network input) per dimension, one int for all; a size that is not valid is
            rounded down to one (:py:func:`round_down_to_valid_size`).
        size_difference: network input size minus output size (88).
        size_step: distance between valid input sizes (8, the product of the pooling factors).
        min_input_size: smallest valid input size (92).
        grid_aligned: start windows on the network's pooling grid (exact whole-image equivalence).

    Returns:
        the plan.

    Raises:
        ValueError: for an empty or non-positive ``spatial_shape``, a ``roi_size`` of the wrong length or too small.
    """
    shape = tuple(int(n) for n in spatial_shape)
    if not shape or any(n < 1 for n in shape):
        raise ValueError(f"spatial_shape must list positive sizes, got {tuple(spatial_shape)}.")
    rois = (roi_size,) * len(shape) if isinstance(roi_size, Integral) else tuple(roi_size)
    if len(rois) != len(shape):
        raise ValueError(f"roi_size {tuple(rois)} does not match the {len(shape)} spatial dimensions of {shape}.")
    sizes = (size_difference, size_step, min_input_size, grid_aligned)
    rois = tuple(round_down_to_valid_size(int(r), *sizes) for r in rois)
    min_out = min_input_size - size_difference

    def stride_of(o: int) -> int:
        return size_step * (o // size_step) if grid_aligned else o

    tiles, outputs, lower = [], [], []
    for n, roi in zip(shape, rois, strict=True):
        max_out = roi - size_difference
        t = 1 if n <= max_out else 1 + math.ceil((n - max_out) / stride_of(max_out))
        o = min_out
        while (t - 1) * stride_of(o) + o < n:
            o += size_step
        tiles.append(t)
        outputs.append(o)
        lower.append(max(n, min_out) + size_difference * math.ceil(n / max_out))
    windows = tuple(o + size_difference for o in outputs)
    return ValidTilingPlan(
        spatial_shape=shape,
        tiles=tuple(tiles),
        window_size=windows,
        output_size=tuple(outputs),
        stride=tuple(stride_of(o) for o in outputs),
        processed_voxels=math.prod(t * w for t, w in zip(tiles, windows, strict=True)),
        padded_voxels=math.prod(n + size_difference for n in shape),
        lower_bound_voxels=math.prod(lower),
    )


def _window(x: torch.Tensor, starts: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """Cut a window from ``x``, with zeros where it lies outside the image.

    Args:
        x: ``[B, C, *spatial]``.
        starts: first voxel of the window per spatial dimension (may be negative).
        size: window size per spatial dimension (may run past the end).

    Returns:
        ``[B, C, *size]``.
    """
    out = x.new_zeros((*x.shape[:2], *size))
    src, dst = [slice(None)] * 2, [slice(None)] * 2
    for s, w, n in zip(starts, size, x.shape[2:], strict=True):
        lo, hi = max(s, 0), min(s + w, n)
        src.append(slice(lo, max(hi, lo)))
        dst.append(slice(lo - s, lo - s + max(hi - lo, 0)))
    out[tuple(dst)] = x[tuple(src)]
    return out


def valid_tiling_inference(
    inputs: torch.Tensor,
    network: Callable[..., torch.Tensor],
    roi_size: int | Sequence[int],
    sw_batch_size: int = 1,
    size_difference: int = 88,
    size_step: int = 8,
    min_input_size: int = 92,
    grid_aligned: bool = True,
    sw_device: torch.device | str | None = None,
    network_args: Sequence[Any] = (),
    network_kwargs: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Predict every voxel of ``inputs`` once with a valid-convolution ``network`` (section II-A, end).

    Windows follow :py:func:`plan_valid_tiling`; each is cut from ``inputs`` with zeros outside the image (the
    paper's 44-voxel zero padding, plus whatever the last window runs past), so the padded image is never built.

    Args:
        inputs: ``[B, C, *spatial]`` (a ``MetaTensor`` keeps its metadata in the result).
        network: maps ``[b, C, *window_size]`` to ``[b, C_out, *(window_size - size_difference)]``.
        roi_size: largest window per dimension (see :py:func:`plan_valid_tiling`).
        sw_batch_size: windows per network call.
        size_difference: network input size minus output size.
        size_step: distance between valid input sizes.
        min_input_size: smallest valid input size.
        grid_aligned: start windows on the network's pooling grid (see :py:func:`plan_valid_tiling`).
        sw_device: device the windows are sent to (default: the input's); the result stays on the input's device.
        network_args: extra positional arguments for ``network``.
        network_kwargs: extra keyword arguments for ``network``.

    Returns:
        ``[B, C_out, *spatial]`` on the input's device, in the input's dtype when it is floating point (else the
        network's); a ``MetaTensor`` with the input's metadata when ``inputs`` is one.

    Raises:
        ValueError: for a bad ``sw_batch_size``, an input without spatial dimensions, or a network output of the
            wrong shape.
        TypeError: when ``network`` does not return a tensor.
    """
    if sw_batch_size < 1:
        raise ValueError(f"sw_batch_size must be positive, got {sw_batch_size}.")
    if inputs.ndim < 3:
        raise ValueError(f"inputs must be [B, C, *spatial], got shape {tuple(inputs.shape)}.")
    x = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
    plan = plan_valid_tiling(x.shape[2:], roi_size, size_difference, size_step, min_input_size, grid_aligned)
    half, batch, shape, kwargs = size_difference // 2, x.shape[0], plan.spatial_shape, dict(network_kwargs or {})
    starts = plan.output_starts()
    result: torch.Tensor | None = None
    for first in range(0, len(starts), sw_batch_size):
        chunk = starts[first : first + sw_batch_size]
        windows = torch.cat([_window(x, [s - half for s in start], plan.window_size) for start in chunk])
        out = network(windows.to(sw_device) if sw_device is not None else windows, *network_args, **kwargs)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"network must return a tensor, got {type(out).__name__}.")
        expected = (len(chunk) * batch, *plan.output_size)
        if (out.shape[0], *out.shape[2:]) != expected:
            raise ValueError(
                f"network output {tuple(out.shape)} for windows {tuple(windows.shape)} does not match the expected "
                f"[{expected[0]}, C, *{plan.output_size}]: is size_difference={size_difference} right for it?"
            )
        if result is None:
            dtype = x.dtype if x.is_floating_point() else out.dtype
            result = torch.zeros((batch, out.shape[1], *shape), dtype=dtype, device=x.device)
        for k, start in enumerate(chunk):
            dst, src = [slice(None)] * 2, [slice(None)] * 2
            for s, t, stride, o, n in zip(start, plan.tiles, plan.stride, plan.output_size, shape, strict=True):
                last = stride == 0 or s // stride == t - 1
                keep = min(o if last else stride, n - s)
                dst.append(slice(s, s + keep))
                src.append(slice(0, keep))
            result[tuple(dst)] = out[k * batch : (k + 1) * batch][tuple(src)].to(result)
    if isinstance(inputs, MetaTensor):
        return convert_to_dst_type(result, inputs, dtype=result.dtype, device=result.device)[0]
    return result


class ValidTilingInferer(Inferer):
    """Whole-volume inference for valid-convolution networks (van de Leemput et al. 2019, section II-A, end).

    The paper zero-pads the image by half the receptive field (44 voxels) and applies the network repeatedly until
    every voxel has a prediction. This inferer does that with the largest windows ``roi_size`` allows; by default
    on the network's pooling grid, so the result equals a single forward pass over the whole padded image (see
    :py:func:`plan_valid_tiling`). :py:meth:`plan` reports the windows and the input voxels processed.

    A ``roi_size`` that is not a valid size is rounded down to the nearest valid one (logged at INFO); one below
    the smallest tileable size (100 for the paper's network, 92 with ``grid_aligned=False``) raises
    ``ValueError``. Use the network in eval mode.

    Args:
        roi_size: largest network input per spatial dimension (e.g. 124 as in training, or larger, memory
            permitting); one int for all dimensions or one per dimension.
        sw_batch_size: windows per network call.
        size_difference: network input size minus output size (``ValidConvUNet.size_difference``, 88).
        size_step: distance between valid input sizes (``ValidConvUNet.size_step``, 8).
        min_input_size: smallest valid input size (``ValidConvUNet.min_input_size``, 92).
        grid_aligned: start windows on the network's pooling grid (exact whole-image equivalence, default) or
            tile without any overlap.
        sw_device: device for the windows (default: the input's); the result stays on the input's device.

    Raises:
        ValueError: for a ``roi_size`` below the smallest tileable size, a bad ``sw_batch_size`` or inconsistent
            size arguments.
    """

    def __init__(
        self,
        roi_size: int | Sequence[int],
        sw_batch_size: int = 1,
        size_difference: int = 88,
        size_step: int = 8,
        min_input_size: int = 92,
        grid_aligned: bool = True,
        sw_device: torch.device | str | None = None,
    ) -> None:
        if sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be positive, got {sw_batch_size}.")
        sizes = (size_difference, size_step, min_input_size, grid_aligned)
        given = int(roi_size) if isinstance(roi_size, Integral) else tuple(int(r) for r in roi_size)
        if isinstance(given, int):
            rounded: int | tuple[int, ...] = round_down_to_valid_size(given, *sizes)
        else:
            rounded = tuple(round_down_to_valid_size(r, *sizes) for r in given)
        if rounded != given:
            logger.info("ValidTilingInferer: roi_size %s rounded down to the valid size %s.", given, rounded)
        self.roi_size = rounded
        self.sw_batch_size = sw_batch_size
        self.size_difference, self.size_step, self.min_input_size, self.grid_aligned = sizes
        self.sw_device = sw_device

    def plan(self, spatial_shape: Sequence[int]) -> ValidTilingPlan:
        """The windows used for an image of ``spatial_shape`` and the input voxels they process.

        Args:
            spatial_shape: the image's spatial size.

        Returns:
            the :py:class:`ValidTilingPlan`.
        """
        sizes = (self.size_difference, self.size_step, self.min_input_size, self.grid_aligned)
        return plan_valid_tiling(spatial_shape, self.roi_size, *sizes)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """Predict every voxel of ``inputs`` once.

        Args:
            inputs: ``[B, C, *spatial]``.
            network: the valid-convolution model.
            args: extra positional arguments for ``network``.
            kwargs: extra keyword arguments for ``network``.

        Returns:
            ``[B, C_out, *spatial]`` (see :py:func:`valid_tiling_inference`).
        """
        return valid_tiling_inference(
            inputs,
            network,
            self.roi_size,
            sw_batch_size=self.sw_batch_size,
            size_difference=self.size_difference,
            size_step=self.size_step,
            min_input_size=self.min_input_size,
            grid_aligned=self.grid_aligned,
            sw_device=self.sw_device,
            network_args=args,
            network_kwargs=kwargs,
        )
