"""Datalists: reading an MSD-style JSON datalist, and checking every case up front before a dataset is built.

``load_datalist`` reads the list (through :py:func:`monai.data.load_decathlon_datalist`) after checking the file,
the key, the entries and the referenced files; ``preflight_check`` then reads the headers of every image and label
(no voxels unless label values are asked for) so that a bad case stops the run before training starts or any
inference output is written. Both raise :py:class:`~common.data.errors.BundleInputError` for what the datalist or
its files got wrong, and ``ValueError`` or ``TypeError`` for a bad argument.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path

from monai.data import load_decathlon_datalist
from monai.utils import ensure_tuple

from .checks import check_channels, check_modality, check_spatial_match
from .checks import check_label_values as _check_label_values  # the name is also an argument below
from .errors import BundleInputError
from .io import ImageHeader, _is_int, read_image_array, read_image_header, stacked_header
from .messages import describe_reader_error
from .switches import as_bool

__all__ = ["load_datalist", "preflight_check", "preflight_partition"]

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
    """Read a JSON datalist file.

    Args:
        path: the datalist.

    Returns:
        its top-level object.

    Raises:
        BundleInputError: the file is missing, a folder, not UTF-8, not valid JSON, or not a JSON object.
    """
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
    """Check the raw (unresolved) entries of ``key``: a non-empty list of dicts holding ``required_keys``.

    Args:
        path: the datalist, named in errors.
        entries: the value under ``key``.
        key: the datalist key, e.g. ``"training"``.
        required_keys: keys every entry must have, each a path or a list of paths.

    Raises:
        BundleInputError: naming the datalist, the entry and the key.
    """
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


def _gather_channels(path: Path, entry, index: int, key: str, channel_keys: tuple[str, ...]):
    """An entry with one file per channel key, seen as one with ``"image"`` the list of them (for the checks).

    Args:
        path: the datalist, named in errors.
        entry: one raw entry.
        index: its position in ``key``'s list.
        key: the datalist key.
        channel_keys: the channel keys, in order.

    Returns:
        the entry as it is when it has ``"image"`` or is not a dict; else a copy with ``"image"``.

    Raises:
        BundleInputError: an entry with some channel keys but not all, naming the missing ones.
    """
    if not isinstance(entry, dict) or "image" in entry:
        return entry
    present = [k for k in channel_keys if k in entry]
    if not present:
        return entry
    missing = [k for k in channel_keys if k not in entry]
    if missing:
        raise BundleInputError(
            path,
            f"entry {index} of '{key}' without the {_quoted(missing)} channel file(s) (it has {_quoted(entry)})",
            f"one file per channel under the keys {_quoted(channel_keys)}, or 'image' listing them in that order",
        )
    if not all(_is_path(entry[k]) for k in channel_keys):
        bad = next(k for k in channel_keys if not _is_path(entry[k]))
        raise BundleInputError(path, f"entry {index} of '{key}' with '{bad}': {entry[bad]!r}", f"'{bad}' to be a path")
    return {**entry, "image": [entry[k] for k in channel_keys]}


def load_datalist(
    datalist_path: str | PathLike,
    data_list_key: str = "training",
    base_dir: str | PathLike | None = None,
    required_keys: Sequence[str] = ("image", "label"),
    check_files: bool = True,
    channel_keys: Sequence[str] | None = None,
) -> list[dict]:
    """Read the ``data_list_key`` list of an MSD-style JSON datalist, with paths resolved and checked.

    The file follows the Medical Segmentation Decathlon's ``dataset.json`` (see
    :py:func:`monai.data.load_decathlon_datalist`, which does the reading and path resolution here)::

        {"training": [{"image": "imagesTr/case_001.nii.gz", "label": "labelsTr/case_001.nii.gz"}, ...],
         "validation": [...], "test": ["imagesTs/case_101.nii.gz", ...]}

    An image may be a NIfTI file, a DICOM series folder, or a list of files stacked as channels. With
    ``channel_keys`` (e.g. ``["flair", "t1", "t1c", "t2"]``) an entry may instead give one file per channel under
    those keys: ``{"flair": ..., "t1": ..., "t1c": ..., "t2": ..., "label": ...}`` is read as ``"image"`` the list
    of the four files in that order (an entry with ``"image"`` is read as it is).

    Args:
        datalist_path: the JSON datalist.
        data_list_key: the list to read, e.g. ``"training"``, ``"validation"``, ``"test"``.
        base_dir: folder that relative paths start from; default: the datalist's folder.
        required_keys: keys every entry must have (a str for one key); their values must be a path or a list of
            paths (``("image",)`` for inference).
        check_files: whether every path under ``required_keys`` must exist.
        channel_keys: keys of per-channel files, in channel order, gathered into ``"image"`` when an entry has no
            ``"image"``; None: no such keys.

    Returns:
        the entries, as dicts with absolute (normalised) paths.

    Raises:
        BundleInputError: naming the datalist when it is missing or not valid JSON, lacks ``data_list_key`` (the
            message lists the keys present), an entry lacks a required key (entry index and key are given; for
            ``channel_keys``, the missing channel's key), or a referenced file or folder does not exist (entry
            index and resolved path are given).
        ValueError: ``required_keys`` is empty.
    """
    required_keys = tuple(ensure_tuple(required_keys))
    if not required_keys:
        raise ValueError("required_keys must name at least one key, e.g. ('image', 'label').")
    path = Path(datalist_path)
    content = _read_json(path)
    if data_list_key not in content:
        raise BundleInputError(
            path,
            f"no '{data_list_key}' key (keys present: {_quoted(content)})",
            f"a '{data_list_key}' list of entries",
        )
    channel_keys = tuple(ensure_tuple(channel_keys)) if channel_keys else ()
    entries = content[data_list_key]
    if channel_keys and isinstance(entries, list):
        entries = [_gather_channels(path, e, i, data_list_key, channel_keys) for i, e in enumerate(entries)]
    _check_entries(path, entries, data_list_key, required_keys)
    base = Path(base_dir) if base_dir is not None else path.parent
    try:
        data = load_decathlon_datalist(path, is_segmentation=True, data_list_key=data_list_key, base_dir=base)
    except (ValueError, TypeError, KeyError, IndexError, OSError) as e:
        raise BundleInputError(
            path, f"a datalist MONAI cannot load ({describe_reader_error(e)})", EXPECTED_DATALIST
        ) from e
    for entry in data:
        if channel_keys and "image" not in entry and all(k in entry for k in channel_keys):
            entry["image"] = [os.path.normpath(os.path.join(base, entry[k])) for k in channel_keys]
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


def _entry_header(value, channel_dim: int | str | None) -> ImageHeader:
    """Read the header of one entry value: a file or folder, or a list of files stacked as channels.

    Args:
        value: a path, or a list of paths that ``LoadImage`` stacks as channels (each file read in its reader's
            layout, as ``LoadImage`` reads them).
        channel_dim: as for :py:func:`~common.data.io.read_image_header`, for a single path.

    Returns:
        the header; for a list, named after its first file with the files' channels added up.
    """
    if _is_path(value):
        return read_image_header(value, channel_dim=channel_dim)
    return stacked_header([read_image_header(p) for p in value])


def preflight_check(
    data: Sequence[Mapping],
    image_key: str = "image",
    label_key: str | None = "label",
    n_channels: int | None = None,
    spatial_dims: int = 3,
    label_values: Sequence[int] | None = None,
    check_label_values: bool = False,
    channel_name: str = "channels",
    label_channels: int | None = 1,
    min_spatial_size: int | Sequence[int | None] | None = None,
    affine_atol: float = 1e-3,
    channel_dim: int | str | None = None,
    label_ignore_value: int | None = None,
    modality: str | None = None,
    allow_any_modality: bool = False,
) -> Sequence[Mapping]:
    """Check every case of a datalist up front, from headers, and return the datalist unchanged.

    Meant to be called where the dataset is built (``"data": "$common.data.preflight_check(...)"``) so that a bad
    case stops the run before training starts or any inference output is written. Per case: the image is readable
    (NIfTI header with a truncation test and positive voxel sizes; a DICOM folder holding one series of evenly
    spaced slices; see :py:func:`~common.data.io.read_image_header`), has ``spatial_dims`` spatial dimensions and
    ``n_channels`` channels, and a DICOM series has the Modality ``modality``; the label, when the entry has one, has
    ``label_channels`` channels and the image's spatial shape and affine (within ``affine_atol``); with
    ``check_label_values``, the label's voxels are read and must all be in ``label_values`` (or be
    ``label_ignore_value``).

    Channels are counted as ``LoadImaged`` followed by ``EnsureChannelFirstd(channel_dim=channel_dim)`` counts them,
    the same ``channel_dim`` for image and label:

    - a 3D file is 1 channel; a 4D NIfTI ``(X, Y, Z, 19)`` is 19 channels by default (perfusion CT:
      ``n_channels=19, channel_name="time points"``);
    - with ``channel_dim="no_channel"`` a 4D NIfTI ``(X, Y, Z, T)`` is 1 channel and 4 spatial dimensions (3D+time:
      ``spatial_dims=4, channel_dim="no_channel"``);
    - a list of files is stacked as channels, one per single-channel file (four MRI sequences: ``n_channels=4``); the
      file that differs from the others in spatial shape, channel count or affine is named;
    - 2D images: ``spatial_dims=2`` for 2D files; a bundle that cuts 2D slices from 3D volumes checks the volumes
      here (``spatial_dims=3``) and the slices with :py:class:`~common.data.dictionary.CheckInputd`.

    :py:func:`preflight_partition` takes the same arguments and sorts the cases into good and bad instead of
    stopping at the first bad one (batch inference with ``skip_bad_inputs``).

    Args:
        data: entries as returned by :py:func:`load_datalist` or :py:func:`~common.data.inputs.list_inputs`.
        image_key: key of the image path(s).
        label_key: key of the label path; ``None``, or an entry without it, skips the label checks.
        n_channels: expected image channels (e.g. 1 for CT in HU, 19 for 4D perfusion CT); ``None`` accepts any.
        spatial_dims: number of spatial dimensions of image and label (2, 3, or 4 for 3D+time).
        label_values: the label values the bundle knows, e.g. ``range(8)``.
        check_label_values: read every label's voxels to check them against ``label_values``.
        channel_name: plural noun for the image channels in messages, e.g. ``"time points"``.
        label_channels: expected label channels (1 for a label map); ``None`` accepts any.
        min_spatial_size: smallest allowed image size per spatial axis (int for all, or one entry per axis; ``None``
            or negative: any).
        affine_atol: largest allowed absolute difference between image and label affine entries (mm).
        channel_dim: the files' channel axis, as ``EnsureChannelFirstd`` takes it: ``None`` (MONAI's readers'
            layout: a 4th NIfTI axis is channels), ``"no_channel"`` (every axis spatial) or an int; it applies to
            single files, a list of files being stacked as ``LoadImage`` stacks it.
        label_ignore_value: a label value marking voxels without annotation (e.g. 255), allowed in addition to
            ``label_values`` by the label value check.
        modality: the DICOM Modality the bundle expects of a series (e.g. ``"CT"``, metadata
            ``network_data_format.inputs.image.modality``); ``None`` accepts any. Files without a Modality tag
            (NIfTI) pass.
        allow_any_modality: let a series of another modality through (logged as a warning); the config id of the
            same name switches it on.

    Returns:
        ``data``, the same object, unchanged.

    Raises:
        BundleInputError: for the first bad case, naming its file: e.g.
            ``"<file>: found 17 time points; expected 19 time points"``.
        ValueError: a bad argument: ``check_label_values`` without ``label_values``, a non-positive
            ``spatial_dims``, ``n_channels`` or ``label_channels``, a negative ``affine_atol``, a ``min_spatial_size``
            without ``spatial_dims`` entries, a ``channel_dim`` that is not ``None``, ``"no_channel"`` or an int, a
            ``label_ignore_value`` among ``label_values``; or an entry without ``image_key``.
        TypeError: ``data`` is not a list of dicts, or an entry's image or label is not a path or a list of paths.
    """  # noqa: DOC502 (the errors come from the argument and entry checks it calls; listed here on purpose)
    options = _check_options(**_options(locals()))
    _check_data(data, image_key, label_key)
    for entry in data:
        _check_case(entry, **options)
    logger.info(
        "preflight_check: %d cases passed (%s%s)",
        len(data),
        "headers" if not check_label_values else "headers and label values",
        "" if n_channels is None else f", {n_channels} {channel_name}",
    )
    return data


def preflight_partition(
    data: Sequence[Mapping], **kwargs
) -> tuple[list[Mapping], list[tuple[Mapping, BundleInputError]]]:
    """Sort the cases of a datalist into good and bad with the checks of :py:func:`preflight_check`.

    For batch inference that runs the good cases and reports the bad ones (``skip_bad_inputs``): each bad case is
    logged as a warning, naming its file.

    Args:
        data: entries as for :py:func:`preflight_check`.
        kwargs: the keyword arguments of :py:func:`preflight_check`.

    Returns:
        the good entries (the same objects, in order), and each bad entry with its error.

    Raises:
        ValueError: a bad argument, as for :py:func:`preflight_check`.
        TypeError: ``data`` is not a list of dicts, or an entry's image or label is not a path or a list of paths.
    """  # noqa: DOC502 (the errors come from the argument and entry checks it calls; listed here on purpose)
    options = _check_options(**{**_options({}), **kwargs})
    _check_data(data, options["image_key"], options["label_key"])
    good, bad = [], []
    for entry in data:
        try:
            _check_case(entry, **options)
        except BundleInputError as e:
            logger.warning("bad input, skipped: %s", e)
            bad.append((entry, e))
        else:
            good.append(entry)
    logger.info("preflight_partition: %d good, %d bad of %d cases", len(good), len(bad), len(data))
    return good, bad


_DEFAULTS = {
    "image_key": "image",
    "label_key": "label",
    "n_channels": None,
    "spatial_dims": 3,
    "label_values": None,
    "check_label_values": False,
    "channel_name": "channels",
    "label_channels": 1,
    "min_spatial_size": None,
    "affine_atol": 1e-3,
    "channel_dim": None,
    "label_ignore_value": None,
    "modality": None,
    "allow_any_modality": False,
}


def _options(given: Mapping) -> dict:
    """The preflight options: ``given``'s values for the known names, the defaults for the rest.

    Args:
        given: e.g. ``locals()`` of :py:func:`preflight_check`.

    Returns:
        one value per option name.
    """
    return {k: given.get(k, v) for k, v in _DEFAULTS.items()}


def _check_options(**options) -> dict:
    """Check the preflight options (programming mistakes, not bad input).

    Args:
        options: the options, as named in :py:func:`preflight_check`.

    Returns:
        ``options``.

    Raises:
        ValueError: a bad value, as listed in :py:func:`preflight_check`.
        TypeError: an unknown option.
    """
    unknown = sorted(set(options) - set(_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown preflight_check arguments {unknown}; known: {sorted(_DEFAULTS)}.")
    label_values, spatial_dims = options["label_values"], options["spatial_dims"]
    if options["check_label_values"] and not label_values:
        raise ValueError("check_label_values=True needs label_values, e.g. label_values=range(8).")
    if spatial_dims < 1:
        raise ValueError(f"spatial_dims must be a positive int, got {spatial_dims}.")
    for name in ("n_channels", "label_channels"):
        if options[name] is not None and options[name] < 1:
            raise ValueError(f"{name} must be None or a positive int, got {options[name]}.")
    if not options["affine_atol"] >= 0:
        raise ValueError(f"affine_atol must be >= 0, got {options['affine_atol']}.")
    minimum = options["min_spatial_size"]
    if not (minimum is None or isinstance(minimum, int) or len(minimum) == spatial_dims):
        raise ValueError(f"min_spatial_size must have {spatial_dims} entries (spatial_dims), got {minimum}.")
    channel_dim = options["channel_dim"]
    if not (channel_dim is None or channel_dim == "no_channel" or _is_int(channel_dim)):
        raise ValueError(f"channel_dim must be None, 'no_channel' or an int axis of the file, got {channel_dim!r}.")
    ignore = options["label_ignore_value"]
    if ignore is not None and label_values is not None and ignore in list(label_values):
        raise ValueError(f"label_ignore_value {ignore} is also one of label_values {list(label_values)}.")
    return options


def _check_data(data, image_key: str, label_key: str | None) -> None:
    """Check the datalist's structure (programming mistakes: the datalist readers guarantee it for users' files).

    Args:
        data: the entries.
        image_key: key of the image path(s).
        label_key: key of the label path, or ``None``.

    Raises:
        TypeError: ``data`` is not a list of dicts, or an entry's image or label is not a path or a list of paths.
        ValueError: an entry without ``image_key``.
    """
    if isinstance(data, (str, Mapping)) or not isinstance(data, Sequence):
        raise TypeError(f"data must be a list of dicts (a datalist), got {type(data).__name__}.")
    for i, entry in enumerate(data):
        if not isinstance(entry, Mapping):
            raise TypeError(f"data entry {i} must be a dict, got {type(entry).__name__}: {entry!r}.")
        if image_key not in entry:
            raise ValueError(
                f"data entry {i} has no image_key {image_key!r} (it has {_quoted(entry)}); load the datalist with "
                f"required_keys that include it."
            )
        for key in (image_key, label_key):
            if key in entry and not _is_path_or_paths(entry[key]):
                raise TypeError(f"data entry {i} {key!r} must be a path or a list of paths, got {entry[key]!r}.")


def _check_case(entry: Mapping, **o) -> None:
    """Check one case from headers (and the label's voxels with ``check_label_values``).

    Args:
        entry: the case.
        o: the options of :py:func:`preflight_check`.

    Raises:
        BundleInputError: the case is bad, naming its file.
    """  # noqa: DOC502 (raised by the checks and readers it calls)
    image = _entry_header(entry[o["image_key"]], o["channel_dim"])
    check_channels(
        image.shape, image.path, o["n_channels"], o["spatial_dims"], o["channel_name"], o["min_spatial_size"]
    )
    if as_bool(o["allow_any_modality"], "allow_any_modality"):
        if image.modality is not None and o["modality"] is not None and image.modality != o["modality"]:
            logger.warning("%s: a %s series, run by a %s bundle (allow_any_modality)", image.path, image.modality,
                           o["modality"])  # fmt: skip
    else:
        check_modality(image.modality, o["modality"], image.path)
    label_key = o["label_key"]
    if label_key is None or label_key not in entry:
        return
    label = _entry_header(entry[label_key], o["channel_dim"])
    check_channels(label.shape, label.path, o["label_channels"], o["spatial_dims"])
    check_spatial_match(
        label.shape,
        label.affine,
        label.path,
        image.shape,
        image.affine,
        image.path,
        o["affine_atol"],
        name=label_key,
        ref_name=o["image_key"],
    )
    if o["check_label_values"]:
        for p in _paths(entry[label_key]):
            _check_label_values(read_image_array(p), o["label_values"], p, o["label_ignore_value"])


def select_channel_files(
    data: Sequence[Mapping], channels: Sequence[int], n_files: int, image_key: str = "image"
) -> list[dict]:
    """Keep the files of some channels of entries whose image is one file per channel (a modality subset).

    Kayalıbay et al. 2017, section 4.2, Table 2 train on single MRI modalities and on subsets of them: with one
    file per modality the subset is chosen here, before anything is read. All channels (``channels`` is
    ``0..n_files-1``) keeps every entry as it is, whatever its image.

    Args:
        data: the entries (absolute paths).
        channels: the channel indices kept, in order.
        n_files: the number of channel files an entry's image lists.
        image_key: the image's key.

    Returns:
        new entries with the image reduced to the chosen files.

    Raises:
        BundleInputError: an entry whose image is not a list of ``n_files`` files (e.g. one 4D file), naming it.
        ValueError: a channel index out of range.
    """
    channels = [int(c) for c in channels]
    if any(not 0 <= c < int(n_files) for c in channels):
        raise ValueError(f"channels must be indices 0..{int(n_files) - 1}, got {channels}.")
    if channels == list(range(int(n_files))):
        return [dict(e) for e in data]
    out = []
    for entry in data:
        image = entry[image_key]
        if not isinstance(image, (list, tuple)) or len(image) != int(n_files):
            raise BundleInputError(
                image if isinstance(image, str) else str(image),
                "an image that is not one file per channel",
                f"a list of {n_files} channel files (a subset of channels {channels} is chosen from the files)",
            )
        out.append({**entry, image_key: [image[c] for c in channels]})
    return out
