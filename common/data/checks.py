"""Input checks as plain functions on shapes, affines and arrays.

The dictionary transforms that apply them in a transform chain are in :py:mod:`common.data.dictionary`; the
header-level run over a whole datalist is :py:func:`common.data.datalist.preflight_check`.

Each check raises :py:class:`~common.data.errors.BundleInputError` naming the file, what was found and what was
expected (BUNDLE_CONTRACT.md, "Errors"), and ``ValueError`` for a bad argument. Shapes are channel-first
``(C, *spatial)`` with any number of spatial dimensions: 2D slices, 3D volumes, 3D+time as 4 spatial dimensions; time
points given as channels (4D perfusion CT) are channels here. The value checks make one chunked pass over the voxels
without copying the array.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.utils import convert_to_numpy

from .errors import BundleInputError
from .messages import MAX_LISTED, count_noun, describe_geometry, format_allowed_values, format_value, format_values

__all__ = [
    "check_channels",
    "check_finite_values",
    "check_foreground",
    "check_label_values",
    "check_modality",
    "check_spacing",
    "check_spatial_match",
    "check_stacked_files",
]

_CHUNK = 1 << 22  # voxels per chunk for the value checks: bounds the temporaries to a few MB


def check_channels(
    shape: Sequence[int],
    source: str,
    n_channels: int | None = None,
    spatial_dims: int = 3,
    channel_name: str = "channels",
    min_spatial_size: int | Sequence[int | None] | None = None,
) -> None:
    """Check a channel-first shape ``(C, *spatial)``: dimensionality, channel count and minimum spatial size.

    Args:
        shape: channel-first shape, as after ``EnsureChannelFirst``.
        source: the file named in the error.
        n_channels: expected number of channels; ``None`` accepts any.
        spatial_dims: expected number of spatial dimensions: 2 for slices, 3 for volumes, 4 for 3D+time with time
            as the 4th spatial axis.
        channel_name: plural noun for the channels in messages, e.g. ``"time points"`` for 4D perfusion CT.
        min_spatial_size: smallest allowed size per spatial axis (an int for all axes; ``None`` or a negative entry
            skips an axis).

    Raises:
        BundleInputError: e.g. ``"<file>: found 17 time points; expected 19 time points"``.
        ValueError: ``min_spatial_size`` does not have ``spatial_dims`` entries.
    """
    shape = tuple(int(s) for s in shape)
    minimum = (min_spatial_size,) * spatial_dims if isinstance(min_spatial_size, int) else min_spatial_size
    minimum = None if minimum is None else tuple(minimum)
    if minimum is not None and len(minimum) != spatial_dims:
        raise ValueError(f"min_spatial_size must have {spatial_dims} entries (spatial_dims), got {minimum}.")
    if len(shape) - 1 != spatial_dims:
        raise BundleInputError(
            source,
            f"{len(shape) - 1} spatial dimensions (channel-first shape {shape})",
            f"{spatial_dims} spatial dimensions after the channel dimension",
        )
    if n_channels is not None and shape[0] != n_channels:
        raise BundleInputError(source, count_noun(shape[0], channel_name), count_noun(n_channels, channel_name))
    if minimum is not None and any(m is not None and m >= 0 and s < m for s, m in zip(shape[1:], minimum, strict=True)):
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

    Works for any number of spatial dimensions; channel counts are not compared. With 4 spatial dimensions (3D +
    time, ``[C, X, Y, Z, T]``) a mismatch of the last axis alone is reported as a different number of frames.

    Args:
        shape: channel-first shape of the checked image.
        affine: its affine, or ``None`` to skip the affine test.
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
    if spatial != ref_spatial and len(spatial) == len(ref_spatial) == 4 and spatial[:3] == ref_spatial[:3]:
        raise BundleInputError(
            source,
            f"{spatial[3]} frames (time points) in the {name}, spatial shape {spatial}",
            f"the {ref_name}'s {ref_spatial[3]} frames, spatial shape {ref_spatial} ({ref_source})",
        )
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
        raise BundleInputError(
            source,
            f"a {name} affine ({describe_geometry(affine)}) differing from the {ref_name}'s by up to {diff:.4g}",
            f"the {ref_name}'s affine ({describe_geometry(ref_affine)}; {ref_source}) within {affine_atol:g}",
        )


def _odd_one(items: Sequence, same) -> tuple[int, list[int]] | None:
    """Find the first item that differs from the majority of the items.

    Args:
        items: the items to compare.
        same: ``same(a, b)`` is whether two items agree.

    Returns:
        the odd item's index and the indices of the other items that agree with the majority (ties: the majority
        that holds the earliest item), or ``None`` when all items agree.
    """
    counts = [sum(bool(same(a, b)) for b in items) for a in items]
    ref = items[counts.index(max(counts))]
    agree = [bool(same(item, ref)) for item in items]
    if all(agree):
        return None
    odd = agree.index(False)
    return odd, [j for j, ok in enumerate(agree) if ok]


def _same_affine(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return True
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.allclose(a, b))


def check_stacked_files(
    shapes: Sequence[Sequence[int]], affines: Sequence[np.ndarray | None], sources: Sequence[str]
) -> None:
    """Check that files stacked as the channels of one image (e.g. four MRI sequences) agree with each other.

    MONAI's ``LoadImage`` stacks a list of files into the channels of one image; it needs the same spatial shape,
    the same affine (``numpy.allclose`` with its default tolerances, the test ``LoadImage`` applies) and the same
    number of channels in every file. The odd file is found against the majority of the files (ties: the earliest),
    so when the first file is the odd one it is the one named.

    Args:
        shapes: each file's channel-first shape ``(C, *spatial)``.
        affines: each file's affine, ``None`` to skip it in the affine test.
        sources: the files, named in the error.

    Raises:
        BundleInputError: naming the file whose spatial shape, channel count or affine differs from the others',
            e.g. ``"<flair file>: found spatial shape (8, 9, 11); expected the spatial shape (8, 9, 10) of the other
            files stacked with it as channels (<t1 file>, <t1c file>, <t2 file>)"``.
        ValueError: ``shapes``, ``affines`` and ``sources`` differ in length.
    """
    if not len(shapes) == len(affines) == len(sources):
        raise ValueError(
            f"shapes, affines and sources must have one entry per file, got {len(shapes)}, {len(affines)} "
            f"and {len(sources)}."
        )
    shapes = [tuple(int(s) for s in shape) for shape in shapes]
    where = "of the other files stacked with it as channels"

    spatial = [s[1:] for s in shapes]
    if odd := _odd_one(spatial, lambda a, b: a == b):
        i, agree = odd
        listed = ", ".join(str(sources[j]) for j in agree)
        raise BundleInputError(
            sources[i], f"spatial shape {spatial[i]}", f"the spatial shape {spatial[agree[0]]} {where} ({listed})"
        )
    channels = [s[0] for s in shapes]
    if odd := _odd_one(channels, lambda a, b: a == b):
        i, agree = odd
        listed = ", ".join(str(sources[j]) for j in agree)
        raise BundleInputError(
            sources[i],
            count_noun(channels[i], "channels"),
            f"{count_noun(channels[agree[0]], 'channels')} per file, as in the other files stacked with it as "
            f"channels ({listed})",
        )
    if odd := _odd_one(affines, _same_affine):
        i, agree = odd
        listed = ", ".join(str(sources[j]) for j in agree)
        affine, ref = np.asarray(affines[i], dtype=np.float64), np.asarray(affines[agree[0]], dtype=np.float64)
        if affine.shape != ref.shape:
            raise BundleInputError(sources[i], f"a {affine.shape} affine", f"the {ref.shape} affine {where} ({listed})")
        diff = float(np.max(np.abs(affine - ref)))
        raise BundleInputError(
            sources[i],
            f"an affine ({describe_geometry(affine)}) differing from the other files' by up to {diff:.4g}",
            f"the affine ({describe_geometry(ref)}) {where} ({listed})",
        )


def check_label_values(label, allowed_values: Sequence[float], source: str, ignore_value: float | None = None) -> None:
    """Check that every voxel of a label map holds one of ``allowed_values`` (or the ``ignore_value``).

    One pass over the voxels in chunks (``np.isin``); values outside the set are gathered only from the offending
    chunks. An integer label map whose values form a contiguous range needs just its minimum and maximum.

    Args:
        label: the label map (numpy array or tensor; any shape).
        allowed_values: the label values the bundle knows, e.g. ``range(8)``.
        source: the file named in the error.
        ignore_value: a value that marks voxels without annotation (e.g. 255 for "not annotated" in sparse
            annotations), allowed anywhere in addition to ``allowed_values`` and named apart in the message;
            ``None`` for none.

    Raises:
        BundleInputError: e.g. ``"<file>: found label values {9, 12}; expected label values in {0, 1, ..., 7}"``, or
            ``"...; expected label values in {0, 1, 2} or the ignore value 255"``.
        ValueError: ``allowed_values`` is empty, or holds ``ignore_value``.
    """
    allowed = np.unique(np.asarray(list(allowed_values), dtype=np.float64))
    if allowed.size == 0:
        raise ValueError("allowed_values must name at least one label value.")
    expected = f"label values in {format_allowed_values(allowed)}"
    if ignore_value is not None:
        if np.isin(float(ignore_value), allowed):
            raise ValueError(
                f"ignore_value {ignore_value} is also one of allowed_values; a voxel value is a class or unannotated."
            )
        expected += f" or the ignore value {format_value(ignore_value)}"
        allowed = np.union1d(allowed, [float(ignore_value)])
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
        if len(found) > 100 * MAX_LISTED:
            break
    if not found and not n_nan:
        return
    listed = sorted(found)[:MAX_LISTED]
    text = format_values(listed)
    if n_nan:
        text = text[:-1] + (", " if listed else "") + "nan}"
    if len(found) > MAX_LISTED:
        text = f"{len(found)}{'+' if len(found) > 100 * MAX_LISTED else ''} unexpected label values, the lowest {text}"
    else:
        text = f"label values {text}"
    raise BundleInputError(source, text, expected)


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


def check_foreground(label, source: str, background: float = 0, ignore_value: float | None = None) -> None:
    """Check that a label map holds at least one foreground voxel, as training on it needs.

    An empty label map (every voxel background, or not annotated) teaches only background; in a Dice loss it adds a
    case whose foreground classes are all absent. One pass over the voxels, stopping at the first chunk with
    foreground.

    Args:
        label: the label map (numpy array or tensor; any shape).
        source: the file named in the error.
        background: the background label value.
        ignore_value: a value marking voxels without annotation (e.g. 255), not foreground; ``None`` for none.

    Raises:
        BundleInputError: e.g. ``"<file>: found an empty label map (every voxel is background 0); expected at least
            one foreground voxel (a label value other than 0) for training"``.
    """
    arr = convert_to_numpy(label)
    flat = arr.reshape(-1)
    for start in range(0, flat.size, _CHUNK):
        chunk = flat[start : start + _CHUNK]
        fg = chunk != background
        if ignore_value is not None:
            fg &= chunk != ignore_value
        if fg.any():
            return
    what = f"background {format_value(background)}"
    if ignore_value is not None:
        what += f" or the ignore value {format_value(ignore_value)}"
    raise BundleInputError(
        source,
        f"an empty label map (every voxel is {what})",
        f"at least one foreground voxel (a label value other than {format_value(background)}) for training",
    )


def check_spacing(affine: np.ndarray | None, source: str, spatial_dims: int | None = None) -> None:
    """Check that an affine gives every spatial axis a finite, positive voxel spacing.

    A zero spacing (a missing header field) or a NaN puts every voxel on one plane or nowhere: ``Spacingd`` would
    resample nonsense and the label map would land in the wrong place.

    Args:
        affine: a square ``(n + 1, n + 1)`` affine, or ``None`` (nothing to check).
        source: the file named in the error.
        spatial_dims: how many leading axes to check; default all ``n``.

    Raises:
        BundleInputError: e.g. ``"<file>: found voxel spacing (0.8, 0.0, 2.5) mm from its affine; expected a
            positive, finite voxel spacing along every spatial axis"``.
    """
    if affine is None:
        return
    a = np.asarray(affine, dtype=np.float64)
    n = a.shape[0] - 1 if spatial_dims is None else min(spatial_dims, a.shape[0] - 1)
    spacing = np.linalg.norm(a[:n, :n], axis=0)  # NaN or infinite where a column holds one
    finite = bool(np.all(np.isfinite(a)))
    if finite and np.all(spacing > 0):
        return
    shown = tuple(round(float(s), 4) for s in spacing)
    found = f"voxel spacing {shown} mm from its affine"
    if not finite:
        found = f"an affine with NaN or infinite entries (voxel spacing {shown} mm)"
    raise BundleInputError(source, found, "a positive, finite voxel spacing along every spatial axis")


def check_modality(
    modality: str | None, expected: str | None, source: str, override: str = "allow_any_modality"
) -> None:
    """Check the modality a DICOM series declares (its Modality tag) against the bundle's.

    A CT network fed an MR series gets intensities it has never seen (HU windowing turns MR into noise) and answers
    with a confident, wrong label map.

    Args:
        modality: the series' Modality (0008,0060), e.g. ``"MR"``; ``None`` for files without one (NIfTI): passes.
        expected: the bundle's modality (metadata ``network_data_format.inputs.image.modality``); ``None``: any.
        source: the series folder named in the error.
        override: the config id that lets any modality through, named in the message.

    Raises:
        BundleInputError: e.g. ``"<folder>: found a DICOM series of Modality MR; expected Modality CT, the modality
            this bundle was trained on (to run it anyway: --allow_any_modality true)"``.
    """
    if modality is None or expected is None:
        return
    if modality.strip().upper() != expected.strip().upper():
        raise BundleInputError(
            source,
            f"a DICOM series of Modality {modality.strip() or '(empty)'}",
            f"Modality {expected}, the modality this bundle was trained on (to run it anyway: --{override} true)",
        )
