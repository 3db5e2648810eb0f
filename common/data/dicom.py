"""DICOM series folders: which series a folder holds, and whether its slices make one evenly spaced volume.

``monai.data.ITKReader`` reads the first series of a folder (GDCM's series helper) and stacks its files by
position; it neither says that a folder holds several series nor notices a missing or misplaced slice: ITK then
takes one spacing for the whole stack, so every slice after a gap, and the label map with it, lands in the wrong
place. :py:func:`check_dicom_series` reads every file's header (no pixel data) and refuses such folders, naming the
files and the positions. It needs only ITK (GDCM), which MONAI's DICOM reading needs anyway.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from monai.utils import optional_import

from .errors import BundleInputError
from .messages import EXPECTED_IMAGE, READ_PERMISSION, describe_reader_error, permission_denied

itk, has_itk = optional_import("itk", allow_namespace_pkg=True)  # as monai.data.ITKReader imports it

__all__ = ["DicomSeries", "check_dicom_series", "list_readable_files"]

logger = logging.getLogger(__name__)

EXPECTED_SERIES = "one DICOM series per folder"

SERIES_UID = "0020|000e"
SERIES_DESCRIPTION = "0008|103e"
MODALITY = "0008|0060"
POSITION = "0020|0032"
ORIENTATION = "0020|0037"
PIXEL_SPACING = "0028|0030"

_TAG_NAMES = {
    POSITION: "Image Position (Patient) (0020,0032)",
    ORIENTATION: "Image Orientation (Patient) (0020,0037)",
    PIXEL_SPACING: "Pixel Spacing (0028,0030)",
}


@dataclass(frozen=True)
class DicomSeries:
    """The series a folder holds, as ``monai.data.ITKReader`` would read it.

    Attributes:
        folder: the series folder.
        files: its files, in GDCM's order (by position along the slice normal).
        modality: the Modality tag (0008,0060), e.g. ``"CT"``; ``None`` when absent.
        slice_positions: each file's position along the slice normal (mm), in the order of ``files``.
    """

    folder: str
    files: tuple[str, ...]
    modality: str | None
    slice_positions: tuple[float, ...]


def list_readable_files(folder: str) -> list[str]:
    """List the regular files of a folder, checking that this user may read the folder and each file.

    GDCM skips files it cannot open without a word, which would turn an unreadable slice into a missing one.

    Args:
        folder: the folder.

    Returns:
        the paths of its regular files, sorted by name.

    Raises:
        BundleInputError: the folder or one of its files may not be read by this user.
    """
    try:
        entries = sorted(e.path for e in os.scandir(folder) if e.is_file())
    except PermissionError as e:
        raise BundleInputError(folder, permission_denied("folder", e), READ_PERMISSION) from e
    for path in entries:
        try:
            with open(path, "rb") as f:
                f.read(1)
        except PermissionError as e:
            raise BundleInputError(path, permission_denied("file", e), READ_PERMISSION) from e
    return entries


def _tag(dictionary, key: str) -> str | None:
    return str(dictionary[key]).strip() if dictionary.HasKey(key) else None


def _numbers(text: str | None) -> np.ndarray | None:
    if text is None:
        return None
    try:
        return np.asarray([float(v) for v in text.replace(" ", "").split("\\") if v != ""], dtype=np.float64)
    except ValueError:
        return None


def _read_tags(path: str) -> dict[str, str | None]:
    """Read the header tags the checks need from one DICOM file (no pixel data).

    Args:
        path: the file.

    Returns:
        the tag values as text (``None`` for an absent tag).

    Raises:
        BundleInputError: GDCM cannot read the file's header.
    """
    image_io = itk.GDCMImageIO.New()
    image_io.LoadPrivateTagsOff()
    image_io.SetFileName(path)
    try:
        image_io.ReadImageInformation()
    except RuntimeError as e:
        raise BundleInputError(path, f"an unreadable DICOM file ({describe_reader_error(e)})", "a DICOM file") from e
    d = image_io.GetMetaDataDictionary()
    return {k: _tag(d, k) for k in (SERIES_UID, SERIES_DESCRIPTION, MODALITY, POSITION, ORIENTATION, PIXEL_SPACING)}


def _series_names(folder: str):
    names = itk.GDCMSeriesFileNames.New()
    names.SetUseSeriesDetails(True)
    names.AddSeriesRestriction("0008|0021")  # series date, as ITKReader does
    names.SetDirectory(folder)
    return names


def _check_one_series(folder: str, names, uids: Sequence[str]) -> None:
    """Refuse a folder holding several series (``ITKReader`` would read only the first).

    Args:
        folder: the folder.
        names: its ``GDCMSeriesFileNames``.
        uids: the series GDCM found.

    Raises:
        BundleInputError: naming each series, its file count and description.
    """
    if len(uids) <= 1:
        return
    described = []
    for uid in uids:
        files = list(names.GetFileNames(uid))
        description = _read_tags(files[0])[SERIES_DESCRIPTION] or "no description"
        described.append(f"{uid}: {len(files)} files, {description!r}")
    raise BundleInputError(
        folder,
        f"{len(uids)} DICOM series ({'; '.join(described)})",
        f"{EXPECTED_SERIES} (move each series to a folder of its own)",
    )


def _check_geometry(folder: str, files: Sequence[str], tags: Sequence[dict], tolerance: float) -> tuple[float, ...]:
    """Check the slices of one series: spacing present and positive, one orientation, positions evenly spaced.

    Args:
        folder: the series folder, named for problems between slices.
        files: the series' files.
        tags: each file's tags (:py:func:`_read_tags`).
        tolerance: largest allowed deviation of a slice gap from the series' spacing, as a fraction of it.

    Returns:
        each file's position along the slice normal (mm).

    Raises:
        BundleInputError: naming the file or the slices at fault.
    """
    for path, t in zip(files, tags, strict=True):
        for key in (PIXEL_SPACING, POSITION, ORIENTATION):
            if t[key] is None:
                raise BundleInputError(
                    path,
                    f"no {_TAG_NAMES[key]}",
                    f"{_TAG_NAMES[key]} in every file of a series (without it readers assume 1 mm or stack the "
                    "slices in the wrong place)",
                )
        spacing = _numbers(t[PIXEL_SPACING])
        if spacing is None or spacing.size != 2 or not np.all(np.isfinite(spacing)) or not np.all(spacing > 0):
            raise BundleInputError(
                path,
                f"{_TAG_NAMES[PIXEL_SPACING]} {t[PIXEL_SPACING]!r}",
                "two positive numbers: the in-plane voxel spacing in mm",
            )
    orientations = [_numbers(t[ORIENTATION]) for t in tags]
    positions = [_numbers(t[POSITION]) for t in tags]
    for path, o, p, t in zip(files, orientations, positions, tags, strict=True):
        if o is None or o.size != 6 or not np.all(np.isfinite(o)):
            raise BundleInputError(path, f"{_TAG_NAMES[ORIENTATION]} {t[ORIENTATION]!r}", "six numbers")
        if p is None or p.size != 3 or not np.all(np.isfinite(p)):
            raise BundleInputError(path, f"{_TAG_NAMES[POSITION]} {t[POSITION]!r}", "three numbers (mm)")
    for path, o in zip(files[1:], orientations[1:], strict=True):
        if not np.allclose(o, orientations[0], atol=1e-4):
            raise BundleInputError(
                path,
                f"{_TAG_NAMES[ORIENTATION]} {tuple(o.round(4).tolist())}",
                f"the orientation of the rest of the series, {tuple(orientations[0].round(4).tolist())} "
                f"({os.path.basename(files[0])})",
            )
    normal = np.cross(orientations[0][:3], orientations[0][3:])
    normal /= np.linalg.norm(normal) or 1.0
    along = np.asarray([float(p @ normal) for p in positions])
    if len(files) < 2:
        return tuple(along.tolist())
    order = np.argsort(along, kind="stable")
    s, names = along[order], [os.path.basename(files[i]) for i in order]
    gaps = np.diff(s)
    for k, g in enumerate(gaps):
        if g < 1e-3:
            raise BundleInputError(
                folder,
                f"two slices at the same position {s[k]:.4g} mm along the slice normal ({names[k]}, {names[k + 1]})",
                "one slice per position in a series (a duplicated file, or two series with one series UID?)",
            )
    values, counts = np.unique(np.round(gaps, 2), return_counts=True)
    spacing = float(values[np.argmax(counts)])  # the most common gap; ties: the smallest
    bad = np.flatnonzero(np.abs(gaps - spacing) > tolerance * spacing)
    if bad.size:
        k = int(bad[0])
        raise BundleInputError(
            folder,
            f"slice positions {s[k]:.1f} ... {s[k + 1]:.1f} mm ({names[k]}, {names[k + 1]}): a gap of "
            f"{gaps[k]:.1f} mm where the series spacing is {spacing:.1f} mm",
            "evenly spaced slices (a missing or misplaced slice: readers would stretch the series over one average "
            "spacing, and the label map would land in the wrong place)",
        )
    origin = positions[order[0]]
    for i in order[1:]:
        offset = positions[i] - origin
        off_axis = float(np.linalg.norm(offset - (offset @ normal) * normal))
        if off_axis > max(tolerance * spacing, 1e-2):
            raise BundleInputError(
                files[i],
                f"a slice {off_axis:.2f} mm off the line through the series' first slice ({names[0]}) along the "
                "slice normal",
                "slice positions along the slice normal (a tilted gantry or a shifted slice is not read correctly)",
            )
    return tuple(along.tolist())


def check_dicom_series(folder: str, tolerance: float = 0.01) -> DicomSeries:
    """Check that a folder holds exactly one readable DICOM series whose slices make one evenly spaced volume.

    Refused, each naming the folder or file and what was found: a folder or file this user may not read; a folder
    without a series; several series in one folder; a file without Image Position, Image Orientation or Pixel
    Spacing; a Pixel Spacing that is not two positive numbers; slices of different orientations; two slices at one
    position; a gap between slices that differs from the series' most common gap by more than ``tolerance`` (a
    missing slice: ``"slice positions 12.0 ... 18.0 mm (IM0005.dcm, IM0006.dcm): a gap of 6.0 mm where the series
    spacing is 3.0 mm"``); a slice off the line through the first slice along the slice normal.

    Args:
        folder: the DICOM series folder.
        tolerance: largest allowed deviation of a gap from the series' spacing, as a fraction of the spacing.

    Returns:
        the :py:class:`DicomSeries` (files in reading order, modality, slice positions).

    Raises:
        BundleInputError: for the first problem found, as above.
        RuntimeError: ITK is not installed.
    """
    if not has_itk:
        raise RuntimeError("reading DICOM series needs ITK (pip install itk), as monai.data.ITKReader does.")
    folder = os.fspath(folder)
    list_readable_files(folder)
    names = _series_names(folder)
    uids = list(names.GetSeriesUIDs())
    if not uids:
        raise BundleInputError(folder, "a folder without a readable DICOM series", EXPECTED_IMAGE)
    _check_one_series(folder, names, uids)
    files = tuple(names.GetFileNames(uids[0]))
    tags = [_read_tags(f) for f in files]
    positions = _check_geometry(folder, files, tags, tolerance)
    modalities = {t[MODALITY] for t in tags}
    if len(modalities) > 1:
        raise BundleInputError(
            folder, f"one series with several modalities {sorted(str(m) for m in modalities)}", "one modality"
        )
    logger.debug("%s: one %s series of %d files", folder, tags[0][MODALITY], len(files))
    return DicomSeries(folder, files, tags[0][MODALITY], positions)
