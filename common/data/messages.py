"""Wording shared by the input checks' messages: counts, value sets, geometry and reader errors."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

__all__ = [
    "EXPECTED_IMAGE",
    "MAX_LISTED",
    "READ_PERMISSION",
    "count_noun",
    "describe_geometry",
    "describe_reader_error",
    "format_allowed_values",
    "format_value",
    "format_values",
    "permission_denied",
]

MAX_LISTED = 10
"""Most values listed in one message."""

EXPECTED_IMAGE = "a NIfTI file or a DICOM series folder"
"""What a bundle accepts as one image, as worded in every "unreadable" error."""

READ_PERMISSION = "read permission for the user running the bundle (e.g. chmod a+r, or run as the file's owner)"
"""What a permission error expects, as worded in every "may not read" error."""


def count_noun(n: int, plural: str) -> str:
    """Write a count with its noun in the right number.

    Args:
        n: the count.
        plural: the noun's plural, e.g. ``"channels"``, ``"time points"``.

    Returns:
        e.g. ``"1 channel"``, ``"2 channels"``, ``"1 time point"``, ``"19 time points"``.
    """
    noun = plural[:-1] if n == 1 and plural.endswith("s") else plural
    return f"{n} {noun}"


def format_value(v: float) -> str:
    """Write a label or voxel value: integers without a decimal point.

    Args:
        v: the value.

    Returns:
        e.g. ``"3"`` for ``3.0``, ``"0.5"`` for ``0.5``.
    """
    v = float(v)
    return str(int(v)) if v.is_integer() else f"{v:g}"


def format_values(values: Sequence[float]) -> str:
    """Write a set of values in braces.

    Args:
        values: the values, in the order to write them.

    Returns:
        e.g. ``"{9, 12}"``.
    """
    return "{" + ", ".join(format_value(v) for v in values) + "}"


def format_allowed_values(values: Sequence[float]) -> str:
    """Write a sorted set of allowed values, shortening a long run of consecutive integers.

    Args:
        values: the allowed values, sorted and distinct.

    Returns:
        e.g. ``"{0, 1, 2}"``, or ``"{0, 1, ..., 99}"`` for more than :py:data:`MAX_LISTED` consecutive integers.
    """
    arr = np.asarray(values, dtype=np.float64)
    run = arr.size > MAX_LISTED and bool(np.all(np.diff(arr) == 1))
    if run and float(arr[0]).is_integer():
        return "{" + f"{format_value(arr[0])}, {format_value(arr[1])}, ..., {format_value(arr[-1])}" + "}"
    return format_values(arr)


def describe_geometry(affine: np.ndarray) -> str:
    """Write the voxel spacing and origin of an affine, for messages about mismatching images.

    Args:
        affine: a square ``(n + 1, n + 1)`` affine (4x4 for 3D images).

    Returns:
        e.g. ``"spacing (0.8, 0.8, 2.5), origin (0.0, 0.0, 0.0)"``, rounded to 4 decimals.
    """
    a = np.asarray(affine, dtype=np.float64)
    n = a.shape[0] - 1
    spacing = tuple(round(float(s), 4) for s in np.linalg.norm(a[:n, :n], axis=0))
    origin = tuple(round(float(o), 4) for o in a[:n, n])
    return f"spacing {spacing}, origin {origin}"


def describe_reader_error(exc: BaseException, max_len: int = 200) -> str:
    """Summarise a reader's exception on one line: its type and the first line of its message.

    Args:
        exc: the exception raised by a reader.
        max_len: the summary is cut to this many characters.

    Returns:
        e.g. ``"EOFError: Compressed file ended before the end-of-stream marker was reached"``.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    summary = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return summary if len(summary) <= max_len else summary[: max_len - 3] + "..."


def permission_denied(what: str, exc: BaseException) -> str:
    """Describe a file or folder this user may not read, as the ``found`` part of a ``BundleInputError``.

    Args:
        what: ``"file"`` or ``"folder"``.
        exc: the ``PermissionError``.

    Returns:
        e.g. ``"a file that this user (uid 1000) may not read (PermissionError: [Errno 13] Permission denied: ...)"``.
    """
    return f"a {what} that this user (uid {os.geteuid()}) may not read ({describe_reader_error(exc)})"
