"""Phantom data sets on disk: NIfTI images, labels and masks, an MSD-style ``dataset.json``, optional DICOM series.

``make_dataset`` is what bundles' ``demo.json`` and the tests call; ``python -m common.phantoms make ...`` is its
command line. Generation is deterministic (each case has its own ``SeedSequence``), idempotent (an existing data
set made with the same arguments is returned as it is) and atomic (cases are written into a hidden sibling folder
that is renamed into place at the end, so an interrupted run leaves nothing behind).

Layout under ``out_dir`` (paths in ``dataset.json`` are relative to it)::

    dataset.json
    imagesTr/<task>_<NNN>.nii.gz  labelsTr/<task>_<NNN>.nii.gz     training, then validation cases
    imagesTs/<task>_<NNN>.nii.gz  labelsTs/<task>_<NNN>.nii.gz     test cases (labels included)
    <mask>sTr/<task>_<NNN>.nii.gz ...                              each of the task's masks (e.g. masksTr)
    imagesTs_dicom/<task>_<NNN>/IM0001.dcm ...                     test images as DICOM series (``dicom=True``)

A datalist entry is ``{"image": ..., "label": ..., <mask key>: ..., <field>: <value>, ...}``. With the task's
``channel_layout="files"`` each channel is its own file ``<task>_<NNN>_<CCCC>.nii.gz`` and ``"image"`` is the
list of them in channel order. Files: images int16 HU for CT (float32 or the generator's integer type otherwise),
labels and masks uint8; the affine is ``centered_affine`` of the three spatial axes (RAS+, volume centred on 0).
A 3D+time file (``spatial_dims=4``) carries the frame interval in ``pixdim[4]`` with the time unit seconds.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from common.data.errors import BundleInputError
from common.phantoms.dicom import write_dicom_series
from common.phantoms.drawing import centered_affine
from common.phantoms.registry import PhantomCase, PhantomTask, get_task, normalise_sizes

__all__ = ["make_dataset", "save_nifti", "DATALIST_NAME"]

logger = logging.getLogger(__name__)

DATALIST_NAME = "dataset.json"
# (split, seed stream, folder suffix)
_SPLITS = (("training", 0, "Tr"), ("validation", 1, "Tr"), ("test", 2, "Ts"))


def _check_count(name: str, value: Any, least: int) -> int:
    """Return ``value`` as an int if it is an integer of at least ``least``.

    Args:
        name: the argument's name, for the message.
        value: the argument.
        least: the smallest allowed value.

    Returns:
        the value as a Python int.

    Raises:
        TypeError: not an integer.
        ValueError: below ``least``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}={value!r}; expected an integer >= {least}")
    if value < least:
        raise ValueError(f"{name}={value!r}; expected an integer >= {least}")
    return int(value)


def _resolve(task: str, n_cases: int, seed: int, n_validation: int, n_test: int, dicom: bool, kwargs: Mapping) -> dict:
    """Check the arguments and return the ``phantom`` record that identifies the data set.

    Args:
        task: the task's name.
        n_cases: training cases.
        seed: the data set's seed.
        n_validation: validation cases.
        n_test: test cases.
        dicom: whether to write DICOM series of the test images.
        kwargs: the generator's keyword arguments given by the caller.

    Returns:
        the record: the arguments, normalised, with the generator's defaults filled in and its version.

    Raises:
        TypeError: an argument of the wrong type, or a keyword argument the generator does not take.
        ValueError: an unknown task, a count out of range, a bad ``shape``/``spacing``, or DICOM that the task
            cannot have.
    """
    spec = get_task(task)
    counts = {
        name: _check_count(name, value, least)
        for name, value, least in (("n_cases", n_cases, 1), ("n_validation", n_validation, 0), ("n_test", n_test, 0))
    }
    seed = _check_count("seed", seed, 0)
    if not isinstance(dicom, bool):
        raise TypeError(f"dicom={dicom!r}; expected True or False")
    if dicom and not spec.supports_dicom:
        raise ValueError(
            f"dicom=True for phantom task {task!r} ({spec.dicom_modality}, {spec.n_channels} channel(s), "
            f"{spec.spatial_dims} spatial dims); DICOM series are written only for one-channel 3D CT"
        )
    if dicom and counts["n_test"] == 0:
        raise ValueError("dicom=True with n_test=0; expected n_test >= 1 (the DICOM series are the test images)")
    unknown = sorted(set(kwargs) - set(spec.defaults))
    if unknown:
        raise TypeError(
            f"generator arguments {unknown} for phantom task {task!r}; expected only {sorted(spec.defaults)}"
        )
    resolved = {**spec.defaults, **{k: v for k, v in kwargs.items() if v is not None}}
    for name in ("shape", "spacing"):
        resolved[name] = normalise_sizes(name, resolved[name], spec.spatial_dims, integer=name == "shape")
    return {
        "task": task,
        **counts,
        "seed": seed,
        "dicom": dicom,
        "generator_kwargs": resolved,
        "generator_version": spec.version,
    }


def _case_rng(seed: int, split: int, index: int) -> np.random.Generator:
    """Return the random generator of case ``index`` of a split, independent of the other splits' sizes.

    Args:
        seed: the data set's seed.
        split: the split's seed stream (0 training, 1 validation, 2 test).
        index: the case's index in its split.

    Returns:
        ``default_rng(SeedSequence(seed, spawn_key=(split, index)))``.
    """
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(split, index)))


def save_nifti(
    array: np.ndarray, affine: np.ndarray, path: str | PathLike, frame_interval: float | None = None
) -> None:
    """Write an array as NIfTI-1 with its dtype, the affine as qform and sform (code 1) and mm units.

    Args:
        array: ``[X, Y, Z]``, ``[X, Y, Z, C]`` (channels last) or ``[X, Y, Z, T]`` (3D+time).
        affine: 4 x 4 voxel-to-world affine of the three spatial axes (RAS+, mm).
        path: the ``.nii.gz`` file.
        frame_interval: for a 3D+time array, the time between frames in seconds: stored in ``pixdim[4]`` with
            the time unit seconds. None leaves ``pixdim[4]`` at 1 and the time unit unknown.
    """
    img = nib.Nifti1Image(array, affine)
    img.header.set_data_dtype(array.dtype)
    if frame_interval is None:
        img.header.set_xyzt_units("mm")
    else:
        img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    if frame_interval is not None:
        img.header.set_zooms((*img.header.get_zooms()[:3], float(frame_interval)))
    nib.save(img, str(path))


def _read_existing(datalist: Path, expected: dict) -> Path | None:
    """Return ``datalist`` if it was made with ``expected``, or None if there is no data set yet.

    Args:
        datalist: the ``dataset.json`` path in the output folder.
        expected: the ``phantom`` record the data set must have been made with.

    Returns:
        ``datalist``, or None when it is absent and its folder is missing or empty.

    Raises:
        BundleInputError: the folder holds something else: files without a datalist, an unreadable datalist, or a
            data set made with other arguments (it is the user's folder, so it is never overwritten).
    """
    if not datalist.is_file():
        folder = datalist.parent
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise BundleInputError(folder, f"a non-empty folder without {DATALIST_NAME}", "a missing or empty folder")
        return None
    try:
        found = json.loads(datalist.read_text()).get("phantom")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise BundleInputError(datalist, f"an unreadable datalist ({err})", "a phantom dataset.json") from err
    if found != expected:
        raise BundleInputError(
            datalist,
            f"a phantom data set made with {json.dumps(found, sort_keys=True)}",
            f"one made with {json.dumps(expected, sort_keys=True)} (remove the folder or choose another out_dir)",
        )
    return datalist


def make_dataset(
    task: str,
    out_dir: str | PathLike,
    n_cases: int,
    seed: int = 0,
    n_validation: int = 0,
    n_test: int = 0,
    dicom: bool = False,
    **generator_kwargs: Any,
) -> Path:
    """Write a phantom data set (NIfTI + MSD-style ``dataset.json``) and return the path of its datalist.

    Refusing an ``out_dir`` that holds something else is a :class:`~common.data.errors.BundleInputError` naming
    the folder, not a ``FileExistsError``: the folder is the user's input (often a bundle's ``dataset_dir``), and
    bundles report bad input with that one error type. Mistakes in the arguments themselves are ``ValueError`` or
    ``TypeError``, as in MONAI.

    Args:
        task: a task name of :data:`~common.phantoms.registry.PHANTOM_TASKS`, e.g. ``"abdominal_ct_multiorgan"``.
        out_dir: the data set folder; created, or reused when it holds the same data set.
        n_cases: number of training cases (>= 1).
        seed: the data set's seed; case ``i`` of a split always comes from ``SeedSequence(seed, spawn_key=(split, i))``.
        n_validation: extra held-out validation cases (labelled), listed under ``"validation"``.
        n_test: extra held-out test cases (labelled), listed under ``"test"``.
        dicom: also write the test images as DICOM CT series, listed under ``"test_dicom"`` (one-channel 3D CT
            tasks only).
        generator_kwargs: the generator's arguments, e.g. ``shape=(96, 96, 48)``, ``spacing=(4, 4, 5)``; ``shape``
            and ``spacing`` take as many entries as the task has spatial dimensions (for 3D+time the last spacing
            entry is the frame interval in seconds).

    Returns:
        the path of ``dataset.json`` in ``out_dir``.

    Raises:
        TypeError: an argument of the wrong type, or a generator argument the task does not take.
        ValueError: an unknown task, counts out of range, a bad ``shape``/``spacing``, DICOM for a task that
            cannot have it, or a generator whose output does not match its task.
        BundleInputError: ``out_dir`` holds something else (it is never overwritten).
        OSError: the finished data set could not be moved into place, and no identical one is there.
    """  # noqa: DOC502 (the checks live in helpers; the interface's exceptions are listed here on purpose)
    record = _resolve(task, n_cases, seed, n_validation, n_test, dicom, generator_kwargs)
    spec = get_task(task)
    out = Path(out_dir).expanduser().absolute()
    datalist = out / DATALIST_NAME
    if _read_existing(datalist, record) is not None:
        logger.info("phantom data set %s already exists with the same arguments", out)
        return datalist

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        content = _write_cases(tmp, record, spec)
        (tmp / DATALIST_NAME).write_text(json.dumps(content, indent=2) + "\n")
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        try:
            os.rename(tmp, out)
        except OSError as err:
            # Another process finished the same data set first: accept it if it is the same, else refuse.
            if _read_existing(datalist, record) is None:
                raise OSError(f"could not move the phantom data set into {out}: {err}") from err
            logger.info("phantom data set %s was written concurrently; keeping it", out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    logger.info("wrote phantom data set %s (%d training, %d validation, %d test)", out, n_cases, n_validation, n_test)
    return datalist


def _write_case(root: Path, name: str, suffix: str, case: PhantomCase, spec: PhantomTask, kwargs: Mapping) -> dict:
    """Write one case's image(s), label and masks under ``root``.

    Args:
        root: the data set folder being written.
        name: the case's name, ``<task>_<NNN>``.
        suffix: ``"Tr"`` or ``"Ts"``, the folder suffix of its split.
        case: the generated case.
        spec: its task.
        kwargs: the generator's arguments (``spacing`` gives the affine and frame interval).

    Returns:
        the datalist entry, paths relative to ``root``.
    """
    spacing = kwargs["spacing"]
    affine = centered_affine(case.label.shape[:3], spacing[:3])
    interval = spacing[3] if spec.spatial_dims == 4 else None
    files: list[tuple[str, np.ndarray]] = []
    if spec.n_channels > 1 and spec.channel_layout == "files":
        images = [f"images{suffix}/{name}_{c:04d}.nii.gz" for c in range(spec.n_channels)]
        files += [(path, case.image[..., c]) for c, path in enumerate(images)]
        entry: dict[str, Any] = {"image": images}
    else:
        entry = {"image": f"images{suffix}/{name}.nii.gz"}
        files.append((entry["image"], case.image))
    entry["label"] = f"labels{suffix}/{name}.nii.gz"
    files.append((entry["label"], case.label))
    for key, mask in case.masks.items():
        entry[key] = f"{key}s{suffix}/{name}.nii.gz"
        files.append((entry[key], mask))
    for rel, array in files:
        (root / rel).parent.mkdir(exist_ok=True)
        save_nifti(np.ascontiguousarray(array), affine, root / rel, interval)
    entry.update(case.fields)
    return entry


def _write_cases(root: Path, record: dict, spec: PhantomTask) -> dict:
    """Generate and write every case under ``root``.

    Args:
        root: the (temporary) data set folder.
        record: the ``phantom`` record from :func:`_resolve`.
        spec: the task.

    Returns:
        the ``dataset.json`` content.
    """
    task, kwargs = record["task"], record["generator_kwargs"]
    counts = {"training": record["n_cases"], "validation": record["n_validation"], "test": record["n_test"]}
    lists: dict[str, list[dict[str, Any]]] = {"training": [], "validation": [], "test": []}
    if record["dicom"]:
        lists["test_dicom"] = []
    number = 0
    for split, split_id, suffix in _SPLITS:
        for index in range(counts[split]):
            name = f"{task}_{number:03d}"
            number += 1
            case = spec.generate(_case_rng(record["seed"], split_id, index), **kwargs)
            entry = _write_case(root, name, suffix, case, spec, kwargs)
            lists[split].append(entry)
            if record["dicom"] and split == "test":
                affine = centered_affine(case.image.shape, kwargs["spacing"])
                write_dicom_series(case.image, affine, root / "imagesTs_dicom" / name, series_description=name)
                lists["test_dicom"].append({**entry, "image": f"imagesTs_dicom/{name}"})
            logger.debug("phantom case %s (%s) written", name, split)
    extra: dict[str, Any] = {}
    if spec.ignore_value is not None:
        extra["ignore_value"] = spec.ignore_value
    if spec.masks:
        extra["masks"] = dict(spec.masks)
    return {
        "name": task,
        "description": spec.description,
        "reference": "synthetic phantom generated by common.phantoms",
        "licence": "CC0-1.0",
        "tensorImageSize": f"{spec.image_ndim}D",
        "modality": dict(spec.modality),
        "labels": {str(k): v for k, v in spec.labels.items()},
        **extra,
        "numTraining": record["n_cases"],
        "numValidation": record["n_validation"],
        "numTest": record["n_test"],
        **lists,
        "phantom": record,
    }
