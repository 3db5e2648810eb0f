"""Datalists: reading an MSD-style JSON datalist, and checking every case up front before a dataset is built.

``load_datalist`` reads the list (through :py:func:`monai.data.load_decathlon_datalist`) after checking the file,
the key, the entries and the referenced files; ``preflight_check`` then reads the headers of every image and label
(no voxels unless label values are asked for) so that a bad case stops the run before training starts or any
inference output is written. Both raise :py:class:`~common.data.errors.BundleInputError`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

from monai.data import load_decathlon_datalist

from .checks import check_channels, check_spatial_match
from .checks import check_label_values as _check_label_values  # the name is also an argument below
from .errors import BundleInputError
from .io import ImageHeader, describe_reader_error, read_image_array, read_image_header

__all__ = ["load_datalist", "preflight_check"]

logger = logging.getLogger(__name__)

EXPECTED_DATALIST = "an MSD-style JSON datalist (an object whose list entries hold 'image' and 'label' paths)"


def _is_path(value) -> bool:
    return isinstance(value, (str, PathLike))


def _is_path_or_paths(value) -> bool:
    return _is_path(value) or (isinstance(value, list) and len(value) > 0 and all(_is_path(v) for v in value))


def _paths(value) -> list[str]:
    return [os.fspath(value)] if _is_path(value) else [os.fspath(v) for v in value]


def _quoted(keys) -> str:
    return ", ".join(repr(str(k)) for k in keys) if keys else "none"


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise BundleInputError(path, "no file at this path", EXPECTED_DATALIST)
    if not path.is_file():
        raise BundleInputError(path, "a folder", EXPECTED_DATALIST)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BundleInputError(
            path, f"invalid JSON ({e.msg} at line {e.lineno}, column {e.colno})", EXPECTED_DATALIST
        ) from e
    except UnicodeDecodeError as e:
        raise BundleInputError(path, "a file that is not UTF-8 text", EXPECTED_DATALIST) from e
    except OSError as e:
        raise BundleInputError(path, f"an unreadable file ({describe_reader_error(e)})", EXPECTED_DATALIST) from e
    if not isinstance(content, dict):
        raise BundleInputError(path, f"a JSON {type(content).__name__} at the top level", EXPECTED_DATALIST)
    return content


def _check_entries(path: Path, entries, key: str, required_keys: Sequence[str]) -> None:
    """Check the raw (unresolved) entries of ``key``: a non-empty list of dicts holding ``required_keys``."""
    if not isinstance(entries, list):
        raise BundleInputError(
            path, f"'{key}' holding a JSON {type(entries).__name__}", f"'{key}' to be a list of entries"
        )
    if not entries:
        raise BundleInputError(path, f"an empty '{key}' list", f"at least one entry under '{key}'")
    if key == "test" and all(_is_path(e) for e in entries):
        entries = [{"image": e} for e in entries]  # MSD test lists may be bare image paths
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise BundleInputError(
                path,
                f"entry {i} of '{key}' being a JSON {type(entry).__name__}",
                f"every entry to be an object with keys {_quoted(required_keys)}",
            )
        for k in required_keys:
            if k not in entry:
                raise BundleInputError(
                    path,
                    f"entry {i} of '{key}' without a '{k}' key (it has {_quoted(entry)})",
                    f"every entry to have keys {_quoted(required_keys)}",
                )
            if not _is_path_or_paths(entry[k]):
                raise BundleInputError(
                    path, f"entry {i} of '{key}' with '{k}': {entry[k]!r}", f"'{k}' to be a path or a list of paths"
                )


def load_datalist(
    datalist_path: str | PathLike,
    data_list_key: str = "training",
    base_dir: str | PathLike | None = None,
    required_keys: Sequence[str] = ("image", "label"),
    check_files: bool = True,
) -> list[dict]:
    """Read the ``data_list_key`` list of an MSD-style JSON datalist, with paths resolved and checked.

    The file follows the Medical Segmentation Decathlon's ``dataset.json`` (see
    :py:func:`monai.data.load_decathlon_datalist`, which does the reading and path resolution here)::

        {"training": [{"image": "imagesTr/case_001.nii.gz", "label": "labelsTr/case_001.nii.gz"}, ...],
         "validation": [...], "test": ["imagesTs/case_101.nii.gz", ...]}

    An image may be a NIfTI file, a DICOM series folder, or a list of files stacked as channels.

    Args:
        datalist_path: the JSON datalist.
        data_list_key: the list to read, e.g. ``"training"``, ``"validation"``, ``"test"``.
        base_dir: folder that relative paths start from; default: the datalist's folder.
        required_keys: keys every entry must have; their values must be a path or a list of paths
            (``("image",)`` for inference).
        check_files: whether every path under ``required_keys`` must exist.

    Returns:
        the entries, as dicts with absolute (normalised) paths.

    Raises:
        BundleInputError: naming the datalist when it is missing or not valid JSON, lacks ``data_list_key`` (the
            message lists the keys present), an entry lacks a required key (entry index and key are given), or a
            referenced file or folder does not exist (entry index and resolved path are given).
    """
    path = Path(datalist_path)
    content = _read_json(path)
    if data_list_key not in content:
        raise BundleInputError(
            path,
            f"no '{data_list_key}' key (keys present: {_quoted(content)})",
            f"a '{data_list_key}' list of entries",
        )
    required_keys = tuple(required_keys)
    _check_entries(path, content[data_list_key], data_list_key, required_keys)
    base = Path(base_dir) if base_dir is not None else path.parent
    try:
        data = load_decathlon_datalist(path, is_segmentation=True, data_list_key=data_list_key, base_dir=base)
    except (ValueError, TypeError, KeyError, IndexError, OSError) as e:
        raise BundleInputError(
            path, f"a datalist MONAI cannot load ({describe_reader_error(e)})", EXPECTED_DATALIST
        ) from e
    for entry in data:
        # load_decathlon_datalist joins only 'image' and 'label' unconditionally; join the other required keys too
        for k in required_keys:
            if k not in ("image", "label"):
                resolved = [os.path.normpath(os.path.join(base, p)) for p in _paths(entry[k])]
                entry[k] = resolved[0] if _is_path(entry[k]) else resolved
    if check_files:
        if not base.is_dir():
            raise BundleInputError(base, "no folder at this path", f"the data folder that {path}'s paths start from")
        for i, entry in enumerate(data):
            for k in required_keys:
                for p in _paths(entry[k]):
                    if not os.path.exists(p):
                        raise BundleInputError(
                            path,
                            f"entry {i} of '{data_list_key}' with '{k}' pointing to {p}, which does not exist",
                            f"an existing file or DICOM series folder (relative paths start from {base})",
                        )
    logger.info("%s: %d entries in '%s'", path, len(data), data_list_key)
    return data


def _entry_header(value, spatial_dims: int, where: str) -> ImageHeader:
    """Header of one entry value: a file or folder, or a list of files stacked as channels (as LoadImage does)."""
    if not _is_path_or_paths(value):
        raise BundleInputError(None, f"{where} = {value!r}", "a path or a list of paths")
    if _is_path(value):
        return read_image_header(value, spatial_dims)
    headers = [read_image_header(p, spatial_dims) for p in value]
    first = headers[0]
    for h in headers:
        # LoadImage stacks the files on a new first axis, so each must hold one channel
        check_channels(h.shape, h.path, n_channels=1, spatial_dims=spatial_dims)
        check_spatial_match(
            h.shape, h.affine, h.path, first.shape, first.affine, first.path, name="file", ref_name="first file"
        )
    return ImageHeader(first.path, (len(headers), *first.spatial_shape), first.affine, first.reader)


def preflight_check(
    data: list[dict],
    image_key: str = "image",
    label_key: str | None = "label",
    n_channels: int | None = None,
    spatial_dims: int = 3,
    label_values: Sequence[int] | None = None,
    check_label_values: bool = False,
    channel_name: str = "channels",
    label_channels: int | None = 1,
    min_spatial_size: int | Sequence[int] | None = None,
    affine_atol: float = 1e-3,
) -> list[dict]:
    """Check every case of a datalist up front, from headers, and return the datalist unchanged.

    Meant to be called where the dataset is built (``"data": "$common.data.preflight_check(...)"``) so that a bad
    case stops the run before training starts or any inference output is written. Per case: the image is readable
    (NIfTI header with a truncation test, DICOM series information; see :py:func:`~common.data.io.read_image_header`),
    has ``spatial_dims`` spatial dimensions and ``n_channels`` channels (a 3D NIfTI is 1 channel, a 4D NIfTI's 4th
    axis holds the channels / time points; a list of files is one channel per file); the label, when the entry has
    one, has ``label_channels`` channels and the image's spatial shape and affine (within ``affine_atol``); with
    ``check_label_values``, the label's voxels are read and must all be in ``label_values``.

    Args:
        data: entries as returned by :py:func:`load_datalist`.
        image_key: key of the image path(s).
        label_key: key of the label path; ``None``, or an entry without it, skips the label checks.
        n_channels: expected image channels (e.g. 1 for CT in HU, 19 for 4D perfusion CT); ``None`` accepts any.
        spatial_dims: number of spatial dimensions of image and label.
        label_values: the label values the bundle knows, e.g. ``range(8)``.
        check_label_values: read every label's voxels to check them against ``label_values``.
        channel_name: plural noun for the image channels in messages, e.g. ``"time points"``.
        label_channels: expected label channels (1 for a label map); ``None`` accepts any.
        min_spatial_size: smallest allowed image size per spatial axis (int for all, or a sequence; negative: any).
        affine_atol: largest allowed absolute difference between image and label affine entries (mm).

    Returns:
        ``data``, the same object, unchanged.

    Raises:
        BundleInputError: for the first bad case, naming its file: e.g.
            ``"<file>: found 17 time points; expected 19 time points"``.
        ValueError: ``check_label_values`` without ``label_values``.
    """
    if check_label_values and not label_values:
        raise ValueError("check_label_values=True needs label_values, e.g. label_values=range(8).")
    if spatial_dims < 1:
        raise ValueError(f"spatial_dims must be a positive int, got {spatial_dims}.")
    for i, entry in enumerate(data):
        if image_key not in entry:
            raise BundleInputError(
                None, f"entry {i} without '{image_key}' (it has {_quoted(entry)})", f"'{image_key}' in every entry"
            )
        image = _entry_header(entry[image_key], spatial_dims, f"entry {i} '{image_key}'")
        check_channels(image.shape, image.path, n_channels, spatial_dims, channel_name, min_spatial_size)
        if label_key is None or label_key not in entry:
            continue
        label = _entry_header(entry[label_key], spatial_dims, f"entry {i} '{label_key}'")
        check_channels(label.shape, label.path, label_channels, spatial_dims)
        check_spatial_match(
            label.shape,
            label.affine,
            label.path,
            image.shape,
            image.affine,
            image.path,
            affine_atol,
            name=label_key,
            ref_name=image_key,
        )
        if check_label_values:
            for p in _paths(entry[label_key]):
                _check_label_values(read_image_array(p), label_values, p)
    logger.info(
        "preflight_check: %d cases passed (%s%s)",
        len(data),
        "headers" if not check_label_values else "headers and label values",
        "" if n_channels is None else f", {n_channels} {channel_name}",
    )
    return data
