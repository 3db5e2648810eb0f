"""Cropping the empty slices above and below a hand (Kayalıbay et al. 2017, section 3.1).

The paper down-samples the 480 x 480 x 280 hand MRI by 4 and then crops "along the z-Axis so as to discard regions
depicting empty space above and below the hand", to 120 x 120 x 64; it keeps the whole field of view in-plane,
because "the varying postures assumed by the hand do not adhere to a common and meaningful bounding box size".
MONAI's ``CropForegroundd`` does the crop (invertibly, so inference restores the input's grid) once its
``select_fn`` marks, for every slice along the crop axis, either all voxels (the slice shows the hand) or none:
:func:`slices_with_signal` builds that function. A slice shows the hand when one of its voxels exceeds ``fraction``
of the volume's maximum (MRI has no absolute scale; air is near 0 and the hand's fat and marrow bright).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SlicesWithSignal", "slices_with_signal"]


@dataclass(frozen=True)
class SlicesWithSignal:
    """``select_fn`` of :func:`slices_with_signal` (a value object: two with the same settings compare equal).

    Attributes:
        fraction: a voxel above ``fraction * max(image)`` is signal.
        axis: the spatial axis cropped.
    """

    fraction: float = 0.1
    axis: int = 2

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """The mask of the slices (along ``axis``) that hold signal, for a channel-first ``[C, X, Y, Z]`` image.

        Args:
            image: the image.

        Returns:
            a boolean mask of the image's shape.
        """
        x = torch.as_tensor(image)
        signal = x > float(self.fraction) * x.max()
        others = tuple(d for d in range(x.ndim) if d != int(self.axis) + 1)
        keep = signal.amax(dim=others)  # one flag per slice along the axis
        shape = [1] * x.ndim
        shape[int(self.axis) + 1] = -1
        return keep.reshape(shape).expand_as(x)


def slices_with_signal(fraction: float = 0.1, axis: int = 2) -> SlicesWithSignal:
    """A ``CropForegroundd`` ``select_fn`` that keeps whole slices, along ``axis``, in which the image has signal.

    Args:
        fraction: a voxel above ``fraction * max(image)`` is signal (0 < fraction < 1).
        axis: the spatial axis cropped (2: z for an RAS volume); the others are kept whole.

    Returns:
        ``select_fn(image) -> mask``: for a channel-first ``[C, X, Y, Z]`` image, a boolean mask of its shape that is
        True in every voxel of each slice (along ``axis``) holding signal in any channel, False elsewhere.

    Raises:
        ValueError: ``fraction`` outside (0, 1) or ``axis`` outside 0..2.
    """
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}.")
    if int(axis) not in (0, 1, 2):
        raise ValueError(f"axis must be a spatial axis 0, 1 or 2, got {axis}.")
    return SlicesWithSignal(float(fraction), int(axis))
