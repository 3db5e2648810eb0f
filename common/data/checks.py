"""Input checks: plain functions, and the MONAI dictionary transforms that apply them in a transform chain.

Each check raises :py:class:`~common.data.errors.BundleInputError` naming the file (from the MetaTensor's
``meta["filename_or_obj"]``), what was found and what was expected (BUNDLE_CONTRACT.md, "Errors"). The transforms
belong right after ``LoadImaged`` / ``EnsureChannelFirstd``; they read shapes and affines, and make one pass over
the voxels (label values, finiteness) without copying the array.

Inside a :py:class:`monai.transforms.Compose` (and again inside a MONAI ``Dataset``), MONAI's ``apply_transform``
wraps any exception as ``RuntimeError("applying transform ...")`` raised ``from`` the original, so the
``BundleInputError`` is the root ``__cause__`` of what propagates: Python prints it first in the traceback, and
:py:func:`find_bundle_input_error` retrieves it. With ``DataLoader(num_workers>0)`` only the text survives the worker:
the ``RuntimeError`` raised in the main process contains the worker's formatted traceback, message included.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImaged, MapTransform
from monai.utils import convert_to_numpy

from .errors import BundleInputError
from .io import LoadImageChecked

__all__ = [
    "CheckFiniteValuesd",
    "CheckInputd",
    "CheckLabelValuesd",
    "CheckShapeMatchd",
    "LoadImageCheckedd",
    "check_channels",
    "check_finite_values",
    "check_label_values",
    "check_spatial_match",
    "find_bundle_input_error",
]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 22  # voxels per chunk for the value checks: bounds the temporaries to a few MB
_MAX_LISTED = 10  # unexpected values listed in a message


# --- formatting ---------------------------------------------------------------------------------------------------


def _count(n: int, plural: str) -> str:
    """``"1 channel"``, ``"2 channels"``, ``"1 time point"``, ``"19 time points"``."""
    noun = plural[:-1] if n == 1 and plural.endswith("s") else plural
    return f"{n} {noun}"


def _format_value(v: float) -> str:
    v = float(v)
    return str(int(v)) if v.is_integer() else f"{v:g}"


def _format_set(values: Sequence[float]) -> str:
    return "{" + ", ".join(_format_value(v) for v in values) + "}"


def _format_allowed(values: np.ndarray) -> str:
    """Like :py:func:`_format_set`, shortening a long run of consecutive integers to ``{0, 1, ..., 99}``."""
    run = values.size > _MAX_LISTED and bool(np.all(np.diff(values) == 1))
    if run and float(values[0]).is_integer():
        return "{" + f"{_format_value(values[0])}, {_format_value(values[1])}, ..., {_format_value(values[-1])}" + "}"
    return _format_set(values)


def _source(data: Mapping, key: Hashable) -> str:
    """The file behind ``data[key]``: ``meta["filename_or_obj"]`` of a MetaTensor or of ``<key>_meta_dict``."""
    value = data[key]
    meta = value.meta if isinstance(value, MetaTensor) else data.get(f"{key}_meta_dict")
    name = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
    return str(name) if name else f"data[{key!r}] (no file name in its meta data)"


def _affine(x) -> np.ndarray | None:
    affine = getattr(x, "affine", None)
    return None if affine is None else convert_to_numpy(affine).astype(np.float64, copy=False)


# --- plain checks -------------------------------------------------------------------------------------------------


def check_channels(
    shape: Sequence[int],
    source: str,
    n_channels: int | None = None,
    spatial_dims: int = 3,
    channel_name: str = "channels",
    min_spatial_size: int | Sequence[int] | None = None,
) -> None:
    """Check a channel-first shape ``(C, *spatial)``: dimensionality, channel count and minimum spatial size.

    Args:
        shape: channel-first shape, as after ``EnsureChannelFirst``.
        source: the file named in the error.
        n_channels: expected number of channels; ``None`` accepts any.
        spatial_dims: expected number of spatial dimensions.
        channel_name: plural noun for the channels in messages, e.g. ``"time points"`` for 4D perfusion CT.
        min_spatial_size: smallest allowed size per spatial axis (an int for all axes; ``None`` or a negative entry
            skips an axis).

    Raises:
        BundleInputError: e.g. ``"<file>: found 17 time points; expected 19 time points"``.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) - 1 != spatial_dims:
        raise BundleInputError(
            source,
            f"{len(shape) - 1} spatial dimensions (channel-first shape {shape})",
            f"{spatial_dims} spatial dimensions after the channel dimension",
        )
    if n_channels is not None and shape[0] != n_channels:
        raise BundleInputError(source, _count(shape[0], channel_name), _count(n_channels, channel_name))
    if min_spatial_size is not None:
        minimum = (min_spatial_size,) * spatial_dims if isinstance(min_spatial_size, int) else tuple(min_spatial_size)
        if len(minimum) != spatial_dims:
            raise ValueError(f"min_spatial_size must have {spatial_dims} entries, got {minimum}.")
        if any(m is not None and m >= 0 and s < m for s, m in zip(shape[1:], minimum)):
            raise BundleInputError(
                source, f"spatial shape {shape[1:]}", f"at least {minimum} voxels (negative entries: any size)"
            )


def check_spatial_match(
    shape: Sequence[int],
    affine: np.ndarray | None,
    source: str,
    ref_shape: Sequence[int],
    ref_affine: np.ndarray | None,
    ref_source: str,
    affine_atol: float = 1e-3,
    name: str = "label",
    ref_name: str = "image",
) -> None:
    """Check that an image (e.g. a label map) has the spatial shape and affine of a reference image.

    Args:
        shape: channel-first shape of the checked image.
        affine: its 4x4 affine, or ``None`` to skip the affine test.
        source: its file, named in the error.
        ref_shape: channel-first shape of the reference.
        ref_affine: the reference's affine, or ``None`` to skip the affine test.
        ref_source: the reference's file.
        affine_atol: largest allowed absolute difference between affine entries (mm).
        name: what the checked image is, in messages.
        ref_name: what the reference is, in messages.

    Raises:
        BundleInputError: the spatial shapes differ, or the affines differ by more than ``affine_atol``.
    """
    spatial, ref_spatial = tuple(int(s) for s in shape[1:]), tuple(int(s) for s in ref_shape[1:])
    if spatial != ref_spatial:
        raise BundleInputError(
            source,
            f"{name} spatial shape {spatial}",
            f"the {ref_name}'s spatial shape {ref_spatial} ({ref_source})",
        )
    if affine is None or ref_affine is None:
        return
    affine, ref_affine = np.asarray(affine, dtype=np.float64), np.asarray(ref_affine, dtype=np.float64)
    if affine.shape != ref_affine.shape:
        raise BundleInputError(
            source, f"a {affine.shape} {name} affine", f"the {ref_name}'s {ref_affine.shape} affine ({ref_source})"
        )
    diff = float(np.max(np.abs(affine - ref_affine)))
    if not diff <= affine_atol:  # also catches NaN

        def _geometry(a: np.ndarray) -> str:
            n = a.shape[0] - 1
            spacing = tuple(round(float(s), 4) for s in np.linalg.norm(a[:n, :n], axis=0))
            origin = tuple(round(float(o), 4) for o in a[:n, n])
            return f"spacing {spacing}, origin {origin}"

        raise BundleInputError(
            source,
            f"a {name} affine ({_geometry(affine)}) differing from the {ref_name}'s by up to {diff:.4g}",
            f"the {ref_name}'s affine ({_geometry(ref_affine)}; {ref_source}) within {affine_atol:g}",
        )


def check_label_values(label, allowed_values: Sequence[int], source: str) -> None:
    """Check that every voxel of a label map holds one of ``allowed_values``.

    One pass over the voxels in chunks (``np.isin``); values outside the set are gathered only from the offending
    chunks. An integer label map whose values form a contiguous range needs just its minimum and maximum.

    Args:
        label: the label map (numpy array or tensor; any shape).
        allowed_values: the label values the bundle knows, e.g. ``range(8)``.
        source: the file named in the error.

    Raises:
        BundleInputError: e.g. ``"<file>: found label values {9, 12}; expected label values in {0, 1, ..., 7}"``.
    """
    allowed = np.unique(np.asarray(list(allowed_values), dtype=np.float64))
    if allowed.size == 0:
        raise ValueError("allowed_values must name at least one label value.")
    arr = convert_to_numpy(label)
    if arr.size == 0:
        return
    contiguous = bool(np.all(allowed == np.round(allowed))) and allowed[-1] - allowed[0] + 1 == allowed.size
    if contiguous and np.issubdtype(arr.dtype, np.integer) and allowed[0] <= arr.min() and arr.max() <= allowed[-1]:
        return
    flat = arr.reshape(-1)
    found: set[float] = set()
    n_nan = 0
    for start in range(0, flat.size, _CHUNK):
        chunk = flat[start : start + _CHUNK]
        ok = np.isin(chunk, allowed)
        if ok.all():
            continue
        bad = np.unique(chunk[~ok])
        n_nan += int(np.isnan(bad).any()) if np.issubdtype(bad.dtype, np.floating) else 0
        found.update(float(v) for v in bad if v == v)  # NaN != NaN: counted apart
        if len(found) > 100 * _MAX_LISTED:
            break
    if not found and not n_nan:
        return
    listed = sorted(found)[:_MAX_LISTED]
    text = _format_set(listed)
    if n_nan:
        text = text[:-1] + (", " if listed else "") + "nan}"
    if len(found) > _MAX_LISTED:
        text = f"{len(found)}{'+' if len(found) > 100 * _MAX_LISTED else ''} unexpected label values, the lowest {text}"
    else:
        text = f"label values {text}"
    raise BundleInputError(source, text, f"label values in {_format_allowed(allowed)}")


def check_finite_values(image, source: str) -> None:
    """Check that an image holds no NaN or infinite value.

    One pass: the float64 sum of a float32 image is finite exactly when every voxel is. Only when it is not are the
    NaN and infinite voxels counted (in chunks), for the message. Integer images pass at once.

    Args:
        image: the image (numpy array or tensor; any shape).
        source: the file named in the error.

    Raises:
        BundleInputError: e.g. ``"<file>: found 3 NaN and 0 infinite voxel values; expected finite values ..."``.
    """
    arr = convert_to_numpy(image)
    if not np.issubdtype(arr.dtype, np.floating) or arr.size == 0:
        return
    if np.isfinite(np.sum(arr, dtype=np.float64)):
        return
    flat = arr.reshape(-1)
    n_nan = n_inf = 0
    for start in range(0, flat.size, _CHUNK):
        chunk = flat[start : start + _CHUNK]
        n_nan += int(np.count_nonzero(np.isnan(chunk)))
        n_inf += int(np.count_nonzero(np.isinf(chunk)))
    if n_nan or n_inf:  # else only the float64 sum overflowed
        raise BundleInputError(source, f"{n_nan} NaN and {n_inf} infinite voxel values", "finite values in every voxel")


def find_bundle_input_error(exc: BaseException | None) -> BundleInputError | None:
    """The :py:class:`BundleInputError` behind ``exc``: ``exc`` itself or one of its causes/contexts, else ``None``.

    MONAI wraps transform and config errors in ``RuntimeError`` (``apply_transform``, ``ConfigExpression.evaluate``,
    ``instantiate``) raised ``from`` the original; this follows ``__cause__`` then ``__context__``.

    Args:
        exc: the exception that propagated.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, BundleInputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ if exc.__cause__ is not None else exc.__context__
    return None


# --- dictionary transforms ----------------------------------------------------------------------------------------


class LoadImageCheckedd(LoadImaged):
    """:py:class:`monai.transforms.LoadImaged` that reports a file it cannot read as a :py:class:`BundleInputError`.

    Same arguments and output as ``LoadImaged`` (its loader is a :py:class:`~common.data.io.LoadImageChecked`).
    A reader failure becomes ``BundleInputError("<file>", "an unreadable file (<reader error>)",
    "a NIfTI file or a DICOM series folder")`` with the reader's exception as ``__cause__``; a missing file is
    reported as missing.
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

    The data are channel-first ``(C, *spatial)``; only ``.shape`` is read. The file named in an error comes from the
    MetaTensor's ``meta["filename_or_obj"]``.

    Args:
        keys: keys of the images to check.
        n_channels: expected number of channels (1 for CT in HU, 19 for the perfusion CT's time points); ``None``
            accepts any.
        spatial_dims: expected number of spatial dimensions.
        channel_name: plural noun for the channels in messages, e.g. ``"time points"``.
        min_spatial_size: smallest allowed size per spatial axis (int for all axes, or a sequence; negative: any).
        allow_missing_keys: don't raise an exception if a key is missing.

    Raises:
        BundleInputError: e.g. ``"<file>: found 17 time points; expected 19 time points"``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        n_channels: int | None = None,
        spatial_dims: int = 3,
        channel_name: str = "channels",
        min_spatial_size: int | Sequence[int] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if n_channels is not None and n_channels < 1:
            raise ValueError(f"n_channels must be None or a positive int, got {n_channels}.")
        if spatial_dims < 1:
            raise ValueError(f"spatial_dims must be a positive int, got {spatial_dims}.")
        self.n_channels = n_channels
        self.spatial_dims = spatial_dims
        self.channel_name = channel_name
        self.min_spatial_size = min_spatial_size

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
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

    Only ``.shape`` and ``.affine`` are read; a key without an affine (plain tensor) has its shape checked only.

    Args:
        keys: the reference key first (the image), then the keys that must match it (label, masks).
        affine_atol: largest allowed absolute difference between affine entries (mm).
        allow_missing_keys: don't raise an exception if a key is missing.

    Raises:
        BundleInputError: naming the mismatching file, with both shapes (or spacings and origins).
    """

    def __init__(
        self, keys: KeysCollection = ("image", "label"), affine_atol: float = 1e-3, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if affine_atol < 0:
            raise ValueError(f"affine_atol must be >= 0, got {affine_atol}.")
        self.affine_atol = affine_atol

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        present = list(self.key_iterator(d))
        if len(present) < 2:
            return d
        ref = present[0]
        for key in present[1:]:
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
    """Check that every voxel of each key holds one of ``allowed_values``.

    One chunked pass over the voxels, no copy of the array (see :py:func:`check_label_values`).

    Args:
        keys: keys of the label maps.
        allowed_values: the label values the bundle knows, e.g. ``[0, 1, 2, 3, 4, 5, 6, 7]``.
        allow_missing_keys: don't raise an exception if a key is missing (inference without labels).

    Raises:
        BundleInputError: e.g. ``"<file>: found label values {9, 12}; expected label values in {0, 1, ..., 7}"``.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        allowed_values: Sequence[int] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not allowed_values:
            raise ValueError(f"allowed_values must name at least one label value, e.g. [0, 1]; got {allowed_values}.")
        self.allowed_values = [int(v) for v in allowed_values]

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            check_label_values(d[key], self.allowed_values, _source(d, key))
        return d


class CheckFiniteValuesd(MapTransform):
    """Check that each key's image holds no NaN or infinite value.

    One pass (a float64 sum) for a good image; see :py:func:`check_finite_values`.

    Args:
        keys: keys of the images to check.
        allow_missing_keys: don't raise an exception if a key is missing.

    Raises:
        BundleInputError: e.g. ``"<file>: found 3 NaN and 0 infinite voxel values; expected finite values ..."``.
    """

    def __init__(self, keys: KeysCollection = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            check_finite_values(d[key], _source(d, key))
        return d
