"""Weighted temporal average (WTA) and weighted temporal variance (WTV) images of a 4D CT (paper section III-C).

The observers annotated WM, GM and CSF on the WTA image (highest signal-to-noise ratio, best soft-tissue contrast)
and the vessels on the WTV image (sensitive to contrast passing through), Fig. 3. With frame weights ``w_t >= 0``
normalised to ``Σ_t w_t = 1``, per voxel ``x``::

    WTA(x) = Σ_t w_t I_t(x)
    WTV(x) = Σ_t w_t (I_t(x) - WTA(x))²

Sources for the weights. Manniesing et al. [22] (Sci Rep 7:119, 2017, doi:10.1038/s41598-017-00239-z) compute "a
3D temporal average image optimally weighted according to the exposures of the individual time points of the 4D CT
acquisition" (abstract); Meijs et al. [24] (Sci Rep 2017, doi:10.1038/s41598-017-15617-w) use the "weighted temporal
variance image" as a vessel feature; neither formula was available to us beyond that. The Toshiba Aquilion ONE
protocol of this data acquires its 19 volumes at different exposures (sec. III-A; van den Boom et al., ECR 2013,
describe the clinical head protocol as one scan at 200 mAs, 13 at 100 mAs and 5 at 75 mAs, 80 kV). CT quantum noise
variance is inversely proportional to the exposure, and the minimum-variance weighted mean of measurements with
independent noise weighs each by its inverse noise variance, so "optimal" exposure weights are
``w_t ∝ mAs_t ∝ 1/σ_t²``. Passing the exposures as ``weights`` reproduces that directly. Without them (exposure tags
are often lost after conversion), :func:`frame_weights` estimates ``σ_t`` from each frame: the robust standard
deviation (1.4826 × median absolute deviation) of the second differences ``I(x-1) - 2 I(x) + I(x+1)`` of
neighbouring voxels along every spatial axis, divided by √6. Second differences cancel smooth intensity trends (as in
Immerkær's fast noise estimate), so what is left is noise, and tissue edges are outliers the median ignores. Voxels
at the frame's minimum or maximum (air or bone clipped to the intensity window, sec. III-B, or padding) are left out,
since clipped voxels carry no noise. The estimate's absolute scale is off for a smooth reconstruction kernel's
correlated noise, but every frame shares the kernel, so the ratios that set the weights hold. The WTV uses the same
weights: a variance about the WTA, weighted alike (the biased, population form; the normalisation of [24] is not
known to us and only scales the image).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.utils import convert_to_dst_type

__all__ = ["frame_noise_std", "frame_weights", "weighted_temporal_average", "weighted_temporal_variance"]

_MAD_TO_STD = 1.4826  # standard deviation of a normal distribution per unit of median absolute deviation


def _check_image(image, time_axis: int) -> int:
    """Validate a 4D image and its time axis.

    Returns:
        the time axis as a non-negative index.

    Raises:
        TypeError: ``image`` is neither a numpy array nor a torch tensor.
        ValueError: fewer than two dimensions, or a time axis outside them.
    """
    if not isinstance(image, (np.ndarray, torch.Tensor)):
        raise TypeError(f"image must be a numpy array or a torch tensor, got {type(image).__name__}.")
    if image.ndim < 2:
        raise ValueError(f"image must have a time axis and spatial axes, got shape {tuple(image.shape)}.")
    if not -image.ndim <= time_axis < image.ndim:
        raise ValueError(f"time_axis {time_axis} is outside an image of {image.ndim} dimensions.")
    return time_axis % image.ndim


def _float_frames(image, time_axis: int):
    """The image with time moved first, as floating point (integers, e.g. HU, become float32).

    Returns:
        array or tensor ``[T, *spatial]``.
    """
    if isinstance(image, torch.Tensor):
        frames = torch.movedim(image, time_axis, 0)
        return frames if frames.is_floating_point() else frames.float()
    frames = np.moveaxis(image, time_axis, 0)
    return frames if np.issubdtype(frames.dtype, np.floating) else frames.astype(np.float32)


def _lower_median(values):
    """The lower median of a non-empty 1-D array or tensor (the same element for numpy and torch).

    Returns:
        a Python float.
    """
    k = (values.shape[0] - 1) // 2
    if isinstance(values, torch.Tensor):
        return float(torch.kthvalue(values, k + 1).values)
    return float(np.partition(values, k)[k])


def _frame_noise(frame, mask) -> float:
    """Robust noise standard deviation of one frame from second differences of neighbouring voxels (module note).

    Returns:
        ``σ`` (0 when the frame has no run of three neighbouring unclipped voxels in the mask).
    """
    valid = (frame != frame.min()) & (frame != frame.max())
    if mask is not None:
        valid = valid & mask
    differences = []
    for axis in range(frame.ndim):
        runs = [
            tuple(slice(k, frame.shape[axis] - 2 + k) if a == axis else slice(None) for a in range(frame.ndim))
            for k in range(3)
        ]
        inside = valid[runs[0]] & valid[runs[1]] & valid[runs[2]]
        differences.append((frame[runs[0]] - 2 * frame[runs[1]] + frame[runs[2]])[inside])
    joined = torch.cat(differences) if isinstance(frame, torch.Tensor) else np.concatenate(differences)
    if joined.shape[0] == 0:
        return 0.0
    centre = _lower_median(joined)
    deviation = abs(joined - centre)
    # I(x-1) - 2 I(x) + I(x+1) of independent noise has 1 + 4 + 1 = 6 times one voxel's noise variance
    return _MAD_TO_STD * _lower_median(deviation) / math.sqrt(6.0)


def frame_noise_std(image, time_axis: int = 0, mask=None):
    """Robust noise standard deviation of every time point of a 4D CT, the basis of the default WTA/WTV weights.

    Implements the noise estimate behind :func:`frame_weights` (paper sec. III-C, after Manniesing et al. [22]): per
    frame, 1.4826 × the median absolute deviation of the second differences ``I(x-1) - 2 I(x) + I(x+1)`` along each
    spatial axis, divided by √6, over runs of voxels that are not at the frame's minimum or maximum (clipped) and
    lie inside ``mask``.

    Args:
        image: ``[T, X, Y, Z]`` (time first; any number of spatial axes) numpy array or torch tensor.
        time_axis: the axis holding the time points.
        mask: optional boolean ``[X, Y, Z]`` (numpy or torch) of the voxels to estimate the noise in (e.g. the
            brain).

    Returns:
        numpy float64 array ``[T]`` of standard deviations in the image's intensity unit.

    Raises:
        TypeError: an image that is neither a numpy array nor a torch tensor.
        ValueError: an image without spatial axes, a time axis outside it, or a mask whose shape is not the image's
            spatial shape.
    """  # noqa: DOC502 (the image checks live in a helper; listed here on purpose)
    axis = _check_image(image, time_axis)
    frames = _float_frames(image, axis)
    if mask is not None:
        mask = convert_to_dst_type(mask, frames, dtype=torch.bool if isinstance(frames, torch.Tensor) else bool)[0]
        if tuple(mask.shape) != tuple(frames.shape[1:]):
            raise ValueError(f"mask must have the spatial shape {tuple(frames.shape[1:])}, got {tuple(mask.shape)}.")
    return np.asarray([_frame_noise(frame, mask) for frame in frames], dtype=np.float64)


def frame_weights(image, time_axis: int = 0, mask=None):
    """Default WTA/WTV frame weights: inverse noise variance per time point, normalised to sum 1 (sec. III-C).

    Manniesing et al. [22] weight the time points "optimally ... according to the exposures"; the noise variance of
    a CT frame is inversely proportional to its exposure, so ``w_t ∝ 1/σ_t²`` with ``σ_t`` from
    :func:`frame_noise_std` gives the same weights when the exposures are not at hand (module note). When every
    frame's noise estimate is 0 (a noise-free or constant image) the weights are uniform.

    Args:
        image: ``[T, X, Y, Z]`` numpy array or torch tensor (any number of spatial axes).
        time_axis: the axis holding the time points.
        mask: optional boolean spatial mask of the voxels to estimate the noise in.

    Returns:
        ``[T]`` weights summing to 1: numpy float64 for a numpy image, else a tensor on the image's device with its
        floating dtype.

    Raises:
        TypeError: an image that is neither a numpy array nor a torch tensor.
        ValueError: some frames, but not all, have a noise estimate of 0 (constant, fully clipped, or mostly flat
            frames): pass ``weights`` (e.g. the exposures in mAs) explicitly instead; or a bad time axis or mask.
    """  # noqa: DOC502 (the image checks live in a helper; listed here on purpose)
    sigma = frame_noise_std(image, time_axis, mask)
    if np.all(sigma == 0):
        weights = np.full(sigma.shape, 1.0 / sigma.size)
    elif np.any(sigma == 0):
        raise ValueError(
            f"the noise of time points {np.flatnonzero(sigma == 0).tolist()} estimates as 0 (constant, clipped or "
            "flat frames), so inverse-variance weights are undefined; pass weights explicitly (e.g. the exposures)."
        )
    else:
        weights = 1.0 / sigma**2
        weights = weights / weights.sum()
    return _weights_like(weights, image)


def _weights_like(weights: np.ndarray, image):
    """Weights in the image's array type (device, floating dtype).

    Returns:
        numpy float64 for numpy images, else a tensor like the image (float32 for integer images).
    """
    if isinstance(image, np.ndarray):
        return weights
    dtype = image.dtype if image.is_floating_point() else torch.float32
    return torch.as_tensor(weights, dtype=dtype, device=image.device)


def _normalised_weights(weights, n_frames: int) -> np.ndarray:
    """User weights validated and normalised to sum 1.

    Returns:
        float64 numpy array ``[T]``.

    Raises:
        ValueError: not one finite non-negative weight per time point, or all zero.
    """
    values = np.asarray(
        weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights, dtype=np.float64
    ).ravel()
    if values.size != n_frames or not np.all(np.isfinite(values)) or np.any(values < 0) or values.sum() <= 0:
        raise ValueError(
            f"weights must be {n_frames} finite non-negative numbers (one per time point), not all zero; got "
            f"{np.asarray(values).tolist()}."
        )
    return values / values.sum()


def _weighted_moments(image, weights, time_axis: int, variance: bool):
    """The weighted temporal mean (and variance about it), accumulated frame by frame.

    Returns:
        ``mean`` or ``(mean, variance)``, each ``[*spatial]`` like the image.
    """
    axis = _check_image(image, time_axis)
    frames = _float_frames(image, axis)
    w = frame_weights(image, axis) if weights is None else weights
    w = [float(v) for v in _normalised_weights(w, frames.shape[0])]  # Python floats keep the frames' dtype
    mean = frames[0] * w[0]
    for t in range(1, frames.shape[0]):
        mean = mean + frames[t] * w[t]
    if not variance:
        return mean
    spread = (frames[0] - mean) ** 2 * w[0]
    for t in range(1, frames.shape[0]):
        spread = spread + (frames[t] - mean) ** 2 * w[t]
    return mean, spread


def weighted_temporal_average(
    image, weights: Sequence[float] | np.ndarray | torch.Tensor | None = None, time_axis: int = 0
):
    """Weighted temporal average (WTA) of a 4D CT, ``Σ_t w_t I_t``: the image WM, GM and CSF were annotated on.

    Implements the WTA of paper sec. III-C (Fig. 3, left), after Manniesing et al. [22]: the time points weighted by
    their exposure, i.e. by inverse noise variance (module note), which gives the highest signal-to-noise ratio.

    Args:
        image: ``[T, X, Y, Z]`` (time points as channels; any number of spatial axes) numpy array or torch tensor.
        weights: one non-negative weight per time point, normalised here (e.g. the exposures in mAs);
            ``None``: :func:`frame_weights` (inverse estimated noise variance).
        time_axis: the axis holding the time points.

    Returns:
        ``[X, Y, Z]`` of the image's type and device; floating images keep their dtype, integer ones give float32.

    Raises:
        TypeError: an image that is neither a numpy array nor a torch tensor.
        ValueError: weights that are not one finite non-negative number per time point, or all zero; a bad time
            axis; default weights that are undefined (see :func:`frame_weights`).
    """  # noqa: DOC502 (raised by the image and weight checks it calls)
    return _weighted_moments(image, weights, time_axis, variance=False)


def weighted_temporal_variance(
    image, weights: Sequence[float] | np.ndarray | torch.Tensor | None = None, time_axis: int = 0
):
    """Weighted temporal variance (WTV) of a 4D CT, ``Σ_t w_t (I_t - WTA)²``: the image vessels were annotated on.

    Implements the WTV of paper sec. III-C (Fig. 3, right), after Meijs et al. [24]: the spread of each voxel's
    time-intensity curve about its weighted average, large where contrast agent passes (vessels), with the same
    weights as :func:`weighted_temporal_average` (the population form; module note).

    Args:
        image: ``[T, X, Y, Z]`` numpy array or torch tensor (any number of spatial axes).
        weights: one non-negative weight per time point, normalised here; ``None``: :func:`frame_weights`.
        time_axis: the axis holding the time points.

    Returns:
        ``[X, Y, Z]`` non-negative values of the image's type and device (integer images give float32).

    Raises:
        TypeError: an image that is neither a numpy array nor a torch tensor.
        ValueError: weights that are not one finite non-negative number per time point, or all zero; a bad time
            axis; default weights that are undefined (see :func:`frame_weights`).
    """  # noqa: DOC502 (raised by the image and weight checks it calls)
    return _weighted_moments(image, weights, time_axis, variance=True)[1]
