"""Listing of inference inputs: a folder of NIfTI files and DICOM series, or a datalist JSON."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

from .datalist import load_datalist
from .errors import BundleInputError
from .io import NIFTI_SUFFIXES
from .messages import READ_PERMISSION, permission_denied

__all__ = ["is_dicom_series_dir", "list_inputs", "require_file", "require_output_dir"]

logger = logging.getLogger(__name__)


def is_dicom_series_dir(path: str | PathLike) -> bool:
    """Tell whether ``path`` is a folder holding DICOM files (``*.dcm`` or files with the ``DICM`` preamble).

    Only the first 8 entries of the folder, by name, are looked at; a file this user may not read is passed over.

    Args:
        path: a file or folder.

    Returns:
        ``True`` for a folder with such a file among its first entries, else ``False``.

    Raises:
        PermissionError: this user may not list the folder.
    """  # noqa: DOC502 (raised by iterdir)
    path = Path(path)
    if not path.is_dir():
        return False
    for f in sorted(path.iterdir())[:8]:
        if not f.is_file():
            continue
        if f.suffix.lower() == ".dcm":
            return True
        try:
            with open(f, "rb") as fh:
                head = fh.read(132)
        except PermissionError:
            continue  # cannot tell from this file; the preflight names it if it is listed
        if head[128:132] == b"DICM":
            return True
    return False


def list_inputs(
    source: str | PathLike, key: str = "test", image_key: str = "image", channel_keys: Sequence[str] | None = None
) -> list[dict]:
    """List the images an inference run should process, as ``[{"image": path}, ...]``.

    Args:
        source: a folder (every ``*.nii``/``*.nii.gz`` file and every sub-folder holding a DICOM series, sorted by
            name; the folder itself when it is one DICOM series), a single NIfTI file, or an MSD-style datalist
            JSON whose ``key`` list is read (paths relative to the JSON's folder).
        key: the datalist key to read when ``source`` is a JSON file.
        image_key: the dictionary key of each item.
        channel_keys: a datalist's per-channel file keys (see :func:`common.data.load_datalist`).

    Returns:
        one ``{image_key: path}`` per image, in the order above.

    Raises:
        BundleInputError: ``source`` does not exist, is not one of these, holds no image, or is a folder this user
            may not read. A sub-folder this user may not read is listed as an input, so that the preflight names it.
    """
    source = Path(source)
    if not source.exists():
        raise BundleInputError(source, "no such file or folder", "a folder of NIfTI files/DICOM series, or a datalist")
    if source.is_file() and source.suffix == ".json":
        items = load_datalist(source, data_list_key=key, required_keys=(image_key,), channel_keys=channel_keys)
        paths = [item[image_key] for item in items]
    elif source.is_file():
        if not source.name.endswith(NIFTI_SUFFIXES):
            raise BundleInputError(source, "a file that is neither NIfTI nor JSON", "a .nii/.nii.gz file or a datalist")
        paths = [str(source)]
    elif is_dicom_series_dir(source):
        paths = [str(source)]
    else:
        try:
            entries = sorted(source.iterdir())
        except PermissionError as e:
            raise BundleInputError(source, permission_denied("folder", e), READ_PERMISSION) from e
        paths = [str(p) for p in entries if (p.is_file() and p.name.endswith(NIFTI_SUFFIXES)) or _may_be_series(p)]
        if not paths:
            raise BundleInputError(
                source, "a folder with no NIfTI file and no DICOM series", "at least one input image"
            )
    _check_distinct_outputs(source, paths)
    logger.info("%d input image(s) from %s", len(paths), source)
    return [{image_key: p} for p in paths]


def _may_be_series(path: Path) -> bool:
    """Tell whether a folder entry is (or, unreadable, may be) a DICOM series folder.

    Args:
        path: an entry of the input folder.

    Returns:
        whether it is a DICOM series folder, or a folder this user may not read (listed so the preflight names it).
    """
    try:
        return is_dicom_series_dir(path)
    except PermissionError:
        logger.debug("%s: may not be read; listed as an input so that the preflight reports it", path)
        return True


def _output_stem(path: str) -> str:
    """Give the name a label map is written under (``SaveImaged`` drops the folder and the NIfTI ending).

    Args:
        path: the input image.

    Returns:
        its file or folder name without ``.nii.gz`` / ``.nii``.
    """
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _check_distinct_outputs(source: Path, paths: list[str]) -> None:
    """Refuse inputs whose label maps would overwrite each other (e.g. ``a.nii`` and ``a.nii.gz``).

    Args:
        source: where the inputs were listed from, named in the error.
        paths: the inputs.

    Raises:
        BundleInputError: two inputs share an output name.
    """
    seen: dict[str, str] = {}
    for path in paths:
        stem = _output_stem(path[0] if isinstance(path, list) else path)  # channel files: named after the first
        if stem in seen:
            raise BundleInputError(
                source,
                f"two inputs, {seen[stem]} and {path}, whose label maps would both be written as {stem}_seg.nii.gz",
                "input names that differ after dropping the folder and the .nii/.nii.gz ending",
            )
        seen[stem] = path


def require_file(path: str | PathLike, what: str) -> str:
    """Check that a file a run needs (e.g. a trained model) exists.

    Args:
        path: the file.
        what: what it should be, for the message, e.g. ``"a trained model: run train.json first"``.

    Returns:
        ``path`` as a string.

    Raises:
        BundleInputError: ``path`` is not an existing file.
    """
    if not Path(path).is_file():
        raise BundleInputError(path, "no such file", what)
    return str(path)


def require_output_dir(path: str | PathLike, what: str = "an output folder") -> str:
    """Check, before a run, that a folder it will write into can be created and written by this user.

    Nothing is created: the folder, or its nearest existing parent, must be a folder this user may write into
    (``os.access`` with the effective user and capabilities, so a read-only file system fails too).

    Args:
        path: the folder, e.g. a bundle's ``output_dir`` or ``ckpt_dir``.
        what: what the folder is, in the message, e.g. ``"a checkpoint folder (ckpt_dir)"``.

    Returns:
        ``path`` as a string.

    Raises:
        BundleInputError: a file is in the way (``path`` or one of its parents is a regular file), or this user may
            not write into the folder or its nearest existing parent.
    """
    target = Path(path)
    expected = f"{what} that this user (uid {os.geteuid()}) can create and write"
    probe = target
    while not probe.is_dir():
        if probe.exists() or probe.is_symlink():
            found = "a file" if probe == target else f"a path under a file that is not a folder ({probe})"
            raise BundleInputError(path, found, expected)
        if probe.parent == probe:
            break
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        where = "a folder" if probe == target else f"a path whose nearest existing folder {probe} is"
        raise BundleInputError(path, f"{where} not writable by this user", expected)
    return str(path)
