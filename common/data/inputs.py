"""Listing of inference inputs: a folder of NIfTI files and DICOM series, or a datalist JSON."""

from __future__ import annotations

import json
import logging
from os import PathLike
from pathlib import Path

from common.data.datalist import load_datalist
from common.data.errors import BundleInputError

__all__ = ["NIFTI_SUFFIXES", "is_dicom_series_dir", "list_inputs", "require_file"]

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_dicom_series_dir(path: str | PathLike) -> bool:
    """Whether ``path`` is a folder holding DICOM files (``*.dcm`` or files with the ``DICM`` preamble)."""
    path = Path(path)
    if not path.is_dir():
        return False
    for f in sorted(path.iterdir())[:8]:
        if not f.is_file():
            continue
        if f.suffix.lower() == ".dcm":
            return True
        with open(f, "rb") as fh:
            head = fh.read(132)
        if head[128:132] == b"DICM":
            return True
    return False


def list_inputs(source: str | PathLike, key: str = "test", image_key: str = "image") -> list[dict]:
    """List the images an inference run should process, as ``[{"image": path}, ...]``.

    Args:
        source: a folder (every ``*.nii``/``*.nii.gz`` file and every sub-folder holding a DICOM series, sorted by
            name; the folder itself when it is one DICOM series), a single NIfTI file, or an MSD-style datalist
            JSON whose ``key`` list is read (paths relative to the JSON's folder).
        key: the datalist key to read when ``source`` is a JSON file.
        image_key: the dictionary key of each item.

    Raises:
        BundleInputError: ``source`` does not exist, is not one of these, or holds no image.
    """
    source = Path(source)
    if not source.exists():
        raise BundleInputError(source, "no such file or folder", "a folder of NIfTI files/DICOM series, or a datalist")
    if source.is_file() and source.suffix == ".json":
        items = load_datalist(source, data_list_key=key, required_keys=(image_key,))
        return [{image_key: item[image_key]} for item in items]
    if source.is_file():
        if not source.name.endswith(NIFTI_SUFFIXES):
            raise BundleInputError(source, "a file that is neither NIfTI nor JSON", "a .nii/.nii.gz file or a datalist")
        return [{image_key: str(source)}]
    if is_dicom_series_dir(source):
        return [{image_key: str(source)}]
    found = [
        p for p in sorted(source.iterdir()) if (p.is_file() and p.name.endswith(NIFTI_SUFFIXES)) or is_dicom_series_dir(p)
    ]
    if not found:
        raise BundleInputError(source, "a folder with no NIfTI file and no DICOM series", "at least one input image")
    logger.info("%d input image(s) in %s", len(found), source)
    return [{image_key: str(p)} for p in found]


def require_file(path: str | PathLike, what: str) -> str:
    """Return ``path`` if it is an existing file, else raise ``BundleInputError`` saying what it should be."""
    if not Path(path).is_file():
        raise BundleInputError(path, "no such file", what)
    return str(path)
