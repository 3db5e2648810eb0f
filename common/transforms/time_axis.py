"""Time points as channels for 3D pre-processing, then as the fourth spatial axis for a 4D network, and back.

The cardiac 4D CNN paper (section 3.4) resamples every sequence to 1 x 1 x 1 mm "retaining the temporal resolution"
and feeds the network 4D arrays ``1 x 96 x 96 x 64 x 16`` (section 3). A 4D NIfTI ``(X, Y, Z, T)`` loads in MONAI
as ``[T, X, Y, Z]`` (``EnsureChannelFirstd`` takes the fourth axis as channels), so MONAI's 3D spatial transforms
(``Orientationd``, ``Spacingd``) resample every frame alike with time kept; :class:`TimeAsSpatialAxisd` then makes
time the fourth spatial axis, ``[1, X, Y, Z, T]``, which MONAI's crops, pads, flips and ``sliding_window_inference``
accept. The MetaTensor keeps its 3D affine (a 4D crop or pad updates its first three axes only), so the geometry
stays that of the frames.

The transform is invertible: ``Invertd`` on a prediction ``[1, X, Y, Z, T]`` gives ``[T, X, Y, Z]`` back, and the
inverses of the 3D transforms before it then restore the input's grid, so a 4D label map is written on the input's
geometry.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import InvertibleTransform, MapTransform

__all__ = ["TimeAsSpatialAxisd"]


class TimeAsSpatialAxisd(MapTransform, InvertibleTransform):
    """Move time from the channel axis to a last spatial axis: ``[T, X, Y, Z] -> [1, X, Y, Z, T]`` (invertible).

    Args:
        keys: keys of the channel-first ``[T, X, Y, Z]`` images (time points as channels, as loaded).
        allow_missing_keys: don't raise an exception if a key is missing.

    Raises:
        ValueError: when called, for an image that is not ``[T, X, Y, Z]``, or when inverted, for one that is not
            ``[1, X, Y, Z, T]``.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """Move the axis of every key.

        Args:
            data: channel-first ``[T, X, Y, Z]`` images under the keys.

        Returns:
            a shallow copy of ``data`` with ``[1, X, Y, Z, T]`` images (views of the inputs).

        Raises:
            ValueError: an image that is not 4-D.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            if image.ndim != 4:
                raise ValueError(f"{key}: expected [T, X, Y, Z] (time points as channels), got shape {image.shape}.")
            out = image.movedim(0, -1).unsqueeze(0)
            self.push_transform(out, orig_size=tuple(image.shape[1:]))
            d[key] = out
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """Move time back to the channel axis: ``[1, X, Y, Z, T] -> [T, X, Y, Z]``.

        Args:
            data: ``[1, X, Y, Z, T]`` images (a prediction's class index map) under the keys.

        Returns:
            a shallow copy of ``data`` with ``[T, X, Y, Z]`` images.

        Raises:
            ValueError: an image that is not ``[1, X, Y, Z, T]``.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            if image.ndim != 5 or image.shape[0] != 1:
                raise ValueError(f"{key}: expected [1, X, Y, Z, T] to move time back, got shape {image.shape}.")
            self.pop_transform(image)
            d[key] = image[0].movedim(-1, 0)
        return d
