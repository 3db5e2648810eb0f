"""Dictionary transforms of ``common.data``: a checked ``LoadImaged`` and the input checks for a transform chain.

The checks belong right after ``LoadImageCheckedd`` / ``EnsureChannelFirstd``. They wrap the plain functions of
:py:mod:`common.data.checks`, read shapes and affines, and make one pass over the voxels (label values, finiteness)
without copying the array. Each raises :py:class:`~common.data.errors.BundleInputError` naming the file, taken from
the MetaTensor's ``meta["filename_or_obj"]`` (for a list of files stacked as channels, MONAI records the first file
there; the files' agreement with each other is checked when they are loaded, naming the odd file). A bad constructor
argument raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImaged, MapTransform
from monai.utils import convert_to_numpy

from .checks import check_channels, check_finite_values, check_foreground, check_label_values, check_spatial_match
from .errors import BundleInputError
from .io import LoadImageChecked

__all__ = [
    "CheckFiniteValuesd",
    "CheckForegroundd",
    "CheckInputd",
    "CheckLabelValuesd",
    "CheckShapeMatchd",
    "LoadImageCheckedd",
]


def _source(data: Mapping, key: Hashable) -> str:
    """Name the file behind ``data[key]``.

    Args:
        data: the data dictionary.
        key: the key of the image.

    Returns:
        ``meta["filename_or_obj"]`` of the MetaTensor (or of ``<key>_meta_dict``), or a description of the key when
        there is none.
    """
    value = data[key]
    meta = value.meta if isinstance(value, MetaTensor) else data.get(f"{key}_meta_dict")
    name = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
    return str(name) if name else f"data[{key!r}] (no file name in its meta data)"


def _affine(x) -> np.ndarray | None:
    affine = getattr(x, "affine", None)
    return None if affine is None else convert_to_numpy(affine).astype(np.float64, copy=False)


class LoadImageCheckedd(LoadImaged):
    """:py:class:`monai.transforms.LoadImaged` that reports a file it cannot read as a :py:class:`BundleInputError`.

    Same arguments and output as ``LoadImaged``; its loader is a :py:class:`~common.data.io.LoadImageChecked`. A
    reader failure becomes ``BundleInputError("<file>", "an unreadable file (<reader error>)", "a NIfTI file or a
    DICOM series folder")`` with the reader's exception as ``__cause__``; a missing file is reported as missing; in a
    list of files stacked as channels (e.g. four MRI sequences), the file whose spatial shape, channel count or affine
    differs from the others is named.

    Raises:
        BundleInputError: when called, for a missing, unreadable or (in a list) mismatching file.
    """

    def __init__(
        self,
        keys: KeysCollection,
        reader=None,
        dtype=np.float32,
        meta_keys: KeysCollection | None = None,
        meta_key_postfix: str = "meta_dict",
        overwriting: bool = False,
        image_only: bool = True,
        ensure_channel_first: bool = False,
        simple_keys: bool = False,
        prune_meta_pattern: str | None = None,
        prune_meta_sep: str = ".",
        allow_missing_keys: bool = False,
        expanduser: bool = True,
        *args,
        **kwargs,
    ) -> None:
        super().__init__(
            keys,
            reader,
            dtype,
            meta_keys,
            meta_key_postfix,
            overwriting,
            image_only,
            ensure_channel_first,
            simple_keys,
            prune_meta_pattern,
            prune_meta_sep,
            allow_missing_keys,
            expanduser,
            *args,
            **kwargs,
        )
        self._loader = LoadImageChecked(
            reader,
            image_only,
            dtype,
            ensure_channel_first,
            simple_keys,
            prune_meta_pattern,
            prune_meta_sep,
            expanduser,
            *args,
            **kwargs,
        )


class CheckInputd(MapTransform):
    """Check each key's channel count and dimensionality, right after ``LoadImaged`` + ``EnsureChannelFirstd``.

    The data are channel-first ``(C, *spatial)``; only ``.shape`` is read. How a file's axes become channels is
    ``EnsureChannelFirstd``'s ``channel_dim``: a 4D NIfTI ``(X, Y, Z, 19)`` is 19 channels by default (perfusion CT:
    ``n_channels=19, spatial_dims=3, channel_name="time points"``), and one channel with 4 spatial dimensions after
    ``EnsureChannelFirstd(channel_dim="no_channel")`` (3D+time: ``n_channels=1, spatial_dims=4``).

    Args:
        keys: keys of the images to check.
        n_channels: expected number of channels (1 for CT in HU, 4 for four MRI sequences, 19 for the perfusion CT's
            time points); ``None`` accepts any.
        spatial_dims: expected number of spatial dimensions (2 for slices, 3 for volumes, 4 for 3D+time).
        channel_name: plural noun for the channels in messages, e.g. ``"time points"``.
        min_spatial_size: smallest allowed size per spatial axis (int for all axes, or one entry per axis; ``None``
            or negative: any).
        allow_missing_keys: don't raise an exception if a key is missing.

    Raises:
        BundleInputError: when called, e.g. ``"<file>: found 17 time points; expected 19 time points"``.
        ValueError: ``n_channels`` or ``spatial_dims`` is not positive, or ``min_spatial_size`` has not
            ``spatial_dims`` entries.
    """

    def __init__(
        self,
        keys: KeysCollection,
        n_channels: int | None = None,
        spatial_dims: int = 3,
        channel_name: str = "channels",
        min_spatial_size: int | Sequence[int | None] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if n_channels is not None and n_channels < 1:
            raise ValueError(f"n_channels must be None or a positive int, got {n_channels}.")
        if spatial_dims < 1:
            raise ValueError(f"spatial_dims must be a positive int, got {spatial_dims}.")
        if not (min_spatial_size is None or isinstance(min_spatial_size, int) or len(min_spatial_size) == spatial_dims):
            raise ValueError(
                f"min_spatial_size must have {spatial_dims} entries (spatial_dims), got {min_spatial_size}."
            )
        self.n_channels = n_channels
        self.spatial_dims = spatial_dims
        self.channel_name = channel_name
        self.min_spatial_size = min_spatial_size

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """Check every key; see the class docstring.

        Args:
            data: the data dictionary, channel-first images under the keys.

        Returns:
            a shallow copy of ``data``; the images are the same objects.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            check_channels(
                d[key].shape,
                _source(d, key),
                self.n_channels,
                self.spatial_dims,
                self.channel_name,
                self.min_spatial_size,
            )
        return d


class CheckShapeMatchd(MapTransform):
    """Check that all keys share the first key's spatial shape and (within ``affine_atol``) its affine.

    Only ``.shape`` and ``.affine`` are read, for any number of spatial dimensions; channel counts may differ (a
    4-channel MRI image and its 1-channel label). A key without an affine (plain tensor) has its shape checked only.
    With ``allow_missing_keys``, fewer than two present keys (inference without a label) pass.

    Args:
        keys: the reference key first (the image), then the keys that must match it (label, masks).
        affine_atol: largest allowed absolute difference between affine entries (mm).
        allow_missing_keys: don't raise an exception if a key is missing.
        channels: what the channels are where their counts must match too, e.g. ``"time points"`` for a 4D
            sequence loaded with its frames as channels (a label file of another frame count is an error naming
            both counts); None (default) lets channel counts differ.

    Raises:
        BundleInputError: when called, naming the mismatching file, with both shapes (or spacings and origins, or
            channel counts).
        ValueError: fewer than two keys, or a negative ``affine_atol``.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        affine_atol: float = 1e-3,
        allow_missing_keys: bool = False,
        channels: str | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.channels = channels
        if len(self.keys) < 2:
            raise ValueError(f"keys must name the reference key and at least one key to match it, got {self.keys}.")
        if not affine_atol >= 0:
            raise ValueError(f"affine_atol must be >= 0, got {affine_atol}.")
        self.affine_atol = affine_atol

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """Check every key against the first present one; see the class docstring.

        Args:
            data: the data dictionary, channel-first images under the keys.

        Returns:
            a shallow copy of ``data``; the images are the same objects.

        Raises:
            BundleInputError: channel counts differ where ``channels`` is set (shape and affine mismatches are raised
                by :py:func:`~common.data.checks.check_spatial_match`).
        """
        d = dict(data)
        present = list(self.key_iterator(d))
        if len(present) < 2:
            return d
        ref = present[0]
        for key in present[1:]:
            if self.channels is not None and d[key].shape[0] != d[ref].shape[0]:
                raise BundleInputError(
                    _source(d, key),
                    f"{key} with {d[key].shape[0]} {self.channels}",
                    f"the {ref}'s {d[ref].shape[0]} {self.channels} ({_source(d, ref)})",
                )
            check_spatial_match(
                d[key].shape,
                _affine(d[key]),
                _source(d, key),
                d[ref].shape,
                _affine(d[ref]),
                _source(d, ref),
                self.affine_atol,
                name=str(key),
                ref_name=str(ref),
            )
        return d


class CheckLabelValuesd(MapTransform):
    """Check that every voxel of each key holds one of ``allowed_values`` (or the ``ignore_value``).

    One chunked pass over the voxels, no copy of the array (see :py:func:`~common.data.checks.check_label_values`).

    Args:
        keys: keys of the label maps.
        allowed_values: the label values the bundle knows, e.g. ``[0, 1, 2, 3, 4, 5, 6, 7]``.
        ignore_value: a value marking voxels without annotation (e.g. 255 in sparse annotations), allowed anywhere in
            addition to ``allowed_values``; ``None`` for none. The loss must ignore it too.
        allow_missing_keys: don't raise an exception if a key is missing (inference without labels).

    Raises:
        BundleInputError: when called, e.g. ``"<file>: found label values {9, 12}; expected label values in
            {0, 1, ..., 7}"``.
        ValueError: ``allowed_values`` is empty or holds a non-integer, or ``ignore_value`` is a non-integer or one
            of ``allowed_values``.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        allowed_values: Sequence[int] | None = None,
        ignore_value: int | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not allowed_values:
            raise ValueError(f"allowed_values must name at least one label value, e.g. [0, 1]; got {allowed_values}.")
        if any(float(v) != int(v) for v in allowed_values):
            raise ValueError(f"allowed_values must be integers, got {list(allowed_values)}.")
        if ignore_value is not None and float(ignore_value) != int(ignore_value):
            raise ValueError(f"ignore_value must be an integer or None, got {ignore_value}.")
        self.allowed_values = [int(v) for v in allowed_values]
        self.ignore_value = None if ignore_value is None else int(ignore_value)
        if self.ignore_value in self.allowed_values:
            raise ValueError(f"ignore_value {self.ignore_value} is also one of allowed_values {self.allowed_values}.")

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """Check every key; see the class docstring.

        Args:
            data: the data dictionary, label maps under the keys.

        Returns:
            a shallow copy of ``data``; the label maps are the same objects.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            check_label_values(d[key], self.allowed_values, _source(d, key), self.ignore_value)
        return d


class CheckFiniteValuesd(MapTransform):
    """Check that each key's image holds no NaN or infinite value.

    One pass (a float64 sum) for a good image; see :py:func:`~common.data.checks.check_finite_values`.

    Args:
        keys: keys of the images to check.
        allow_missing_keys: don't raise an exception if a key is missing.

    Raises:
        BundleInputError: when called, e.g. ``"<file>: found 3 NaN and 0 infinite voxel values; expected finite
            values ..."``.
    """

    def __init__(self, keys: KeysCollection = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """Check every key; see the class docstring.

        Args:
            data: the data dictionary, images under the keys.

        Returns:
            a shallow copy of ``data``; the images are the same objects.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            check_finite_values(d[key], _source(d, key))
        return d


class CheckForegroundd(MapTransform):
    """Check that each key's label map holds at least one foreground voxel, for training.

    Put it in the training chain only: an empty reference is a legitimate evaluation case (an organ that was removed)
    but teaches a segmentation network nothing except background. One pass that stops at the first foreground chunk
    (see :py:func:`~common.data.checks.check_foreground`).

    Args:
        keys: keys of the label maps.
        background: the background label value.
        ignore_value: a value marking voxels without annotation (e.g. 255), not foreground; ``None`` for none.
        allow_missing_keys: don't raise an exception if a key is missing.

    Raises:
        BundleInputError: when called, e.g. ``"<file>: found an empty label map (every voxel is background 0);
            expected at least one foreground voxel (a label value other than 0) for training"``.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        background: int = 0,
        ignore_value: int | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.background = background
        self.ignore_value = ignore_value

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """Check every key; see the class docstring.

        Args:
            data: the data dictionary, label maps under the keys.

        Returns:
            a shallow copy of ``data``; the label maps are the same objects.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            check_foreground(d[key], _source(d, key), self.background, self.ignore_value)
        return d
