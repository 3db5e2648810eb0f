"""Phantom data sets on disk: NIfTI images and labels, an MSD-style ``dataset.json``, optional DICOM CT series.

``make_dataset`` is what bundles' ``demo.json`` and the tests call; ``python -m common.phantoms make ...`` is its
command line. Generation is deterministic (each case has its own ``SeedSequence``), idempotent (an existing data
set made with the same arguments is returned as it is) and atomic (cases are written into a hidden sibling folder
that is renamed into place at the end, so an interrupted run leaves nothing behind).

Layout under ``out_dir`` (paths in ``dataset.json`` are relative to it)::

    dataset.json
    imagesTr/<task>_<NNN>.nii.gz  labelsTr/<task>_<NNN>.nii.gz     training, then validation cases
    imagesTs/<task>_<NNN>.nii.gz  labelsTs/<task>_<NNN>.nii.gz     test cases (labels included)
    imagesTs_dicom/<task>_<NNN>/IM0001.dcm ...                     test images as DICOM series (``dicom=True``)

Images are int16 HU, labels uint8; the affine is the generator's (``diag(spacing)``, centred origin, RAS+).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from common.data.errors import BundleInputError
from common.phantoms.abdominal_ct import ABDOMINAL_CT_LABELS, DEFAULT_SHAPE, DEFAULT_SPACING, generate_abdominal_ct
from common.phantoms.drawing import centered_affine

__all__ = ["PhantomTask", "PHANTOM_TASKS", "make_dataset", "write_dicom_series", "make", "tasks", "main"]

logger = logging.getLogger(__name__)

DATALIST_NAME = "dataset.json"
# (split, seed stream, image folder, label folder)
_SPLITS = (
    ("training", 0, "imagesTr", "labelsTr"),
    ("validation", 1, "imagesTr", "labelsTr"),
    ("test", 2, "imagesTs", "labelsTs"),
)


@dataclass(frozen=True)
class PhantomTask:
    """A registered phantom generator and what its data set declares.

    Args:
        generator: ``generator(rng, **kwargs) -> (image, label)``, arrays ``[X, Y, Z]``.
        labels: label value -> name.
        modality: channel index (as a string) -> modality name, as in MSD's ``dataset.json``.
        description: one line for ``dataset.json``.
        defaults: the generator's keyword arguments and their defaults (``shape``, ``spacing``, ...).
        version: bumped whenever the generator's output changes, so stale data sets are not reused.
    """

    generator: Callable[..., tuple[np.ndarray, np.ndarray]]
    labels: Mapping[int, str]
    modality: Mapping[str, str]
    description: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    version: int = 1


PHANTOM_TASKS: dict[str, PhantomTask] = {
    "abdominal_ct_multiorgan": PhantomTask(
        generator=generate_abdominal_ct,
        labels=ABDOMINAL_CT_LABELS,
        modality={"0": "CT"},
        description=(
            "Synthetic portal-venous abdominal CT phantom (HU) with artery, portal vein, liver, spleen, stomach, "
            "gallbladder and pancreas labels, standing in for the data of Roth et al. 2018, Sec. III.A"
        ),
        defaults={"shape": list(DEFAULT_SHAPE), "spacing": [float(s) for s in DEFAULT_SPACING]},
        version=1,
    ),
}


def _normalise_triplet(name: str, value: Any, integer: bool) -> list:
    """Return ``value`` as a list of three positive ints (``integer``) or floats, else raise BundleInputError."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    expected = f"{name} as three positive {'integers' if integer else 'numbers'}, e.g. [96, 96, 48]"
    if not isinstance(value, (list, tuple, np.ndarray)) or len(value) != 3:
        raise BundleInputError(None, f"{name}={value!r}", expected)
    out = []
    for v in value:
        number = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        if not number or not math.isfinite(v) or v <= 0:
            raise BundleInputError(None, f"{name}={list(value)!r}", expected)
        if integer and float(v) != int(v):
            raise BundleInputError(None, f"{name}={list(value)!r}", expected)
        out.append(int(v) if integer else float(v))
    return out


def _resolve(task: str, n_cases: int, seed: int, n_validation: int, n_test: int, dicom: bool, kwargs: Mapping) -> dict:
    """Check the arguments and return the ``phantom`` record that identifies the data set."""
    if task not in PHANTOM_TASKS:
        raise BundleInputError(None, f"unknown phantom task {task!r}", f"one of {sorted(PHANTOM_TASKS)}")
    spec = PHANTOM_TASKS[task]
    counts = (("n_cases", n_cases, 1), ("n_validation", n_validation, 0), ("n_test", n_test, 0), ("seed", seed, 0))
    for name, value, least in counts:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise BundleInputError(None, f"{name}={value!r}", f"an integer >= {least}")
    if not isinstance(dicom, bool):
        raise BundleInputError(None, f"dicom={dicom!r}", "True or False")
    if dicom and n_test == 0:
        raise BundleInputError(None, "dicom=True with n_test=0", "n_test >= 1 (the DICOM series are the test images)")
    unknown = sorted(set(kwargs) - set(spec.defaults))
    if unknown:
        raise BundleInputError(
            None, f"generator arguments {unknown} for task {task!r}", f"only {sorted(spec.defaults)}"
        )
    resolved = {**spec.defaults, **{k: v for k, v in kwargs.items() if v is not None}}
    for name in ("shape", "spacing"):
        if name in resolved:
            resolved[name] = _normalise_triplet(name, resolved[name], integer=name == "shape")
    return {
        "task": task,
        "n_cases": int(n_cases),
        "n_validation": int(n_validation),
        "n_test": int(n_test),
        "seed": int(seed),
        "dicom": dicom,
        "generator_kwargs": resolved,
        "generator_version": spec.version,
    }


def _case_rng(seed: int, split: int, index: int) -> np.random.Generator:
    """The generator of case ``index`` of a split: independent of the other splits' sizes."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(split, index)))


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(array, affine)
    img.header.set_data_dtype(array.dtype)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def _read_existing(datalist: Path, expected: dict) -> Path | None:
    """Return ``datalist`` if it was made with ``expected``; None if it is absent; else raise BundleInputError."""
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

    Args:
        task: a key of :data:`PHANTOM_TASKS`, e.g. ``"abdominal_ct_multiorgan"``.
        out_dir: the data set folder; created, or reused when it holds the same data set.
        n_cases: number of training cases (>= 1).
        seed: the data set's seed; case ``i`` of a split always comes from ``SeedSequence(seed, spawn_key=(split, i))``.
        n_validation: extra held-out validation cases (labelled), listed under ``"validation"``.
        n_test: extra held-out test cases (labelled), listed under ``"test"``.
        dicom: also write the test images as DICOM CT series, listed under ``"test_dicom"``.
        generator_kwargs: the generator's arguments, e.g. ``shape=(96, 96, 48)``, ``spacing=(4, 4, 5)``.

    Raises:
        BundleInputError: unknown task or arguments, or ``out_dir`` holds something else (it is never overwritten).
    """
    record = _resolve(task, n_cases, seed, n_validation, n_test, dicom, generator_kwargs)
    spec = PHANTOM_TASKS[task]
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
        except OSError:
            # Another process finished the same data set first: accept it if it is the same, else refuse.
            if _read_existing(datalist, record) is None:
                raise
            logger.info("phantom data set %s was written concurrently; keeping it", out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    logger.info("wrote phantom data set %s (%d training, %d validation, %d test)", out, n_cases, n_validation, n_test)
    return datalist


def _write_cases(root: Path, record: dict, spec: PhantomTask) -> dict:
    """Generate and write every case under ``root``; return the ``dataset.json`` content."""
    task, kwargs = record["task"], record["generator_kwargs"]
    counts = {"training": record["n_cases"], "validation": record["n_validation"], "test": record["n_test"]}
    lists: dict[str, list[dict[str, str]]] = {"training": [], "validation": [], "test": []}
    if record["dicom"]:
        lists["test_dicom"] = []
    number = 0
    for split, split_id, image_dir, label_dir in _SPLITS:
        for index in range(counts[split]):
            name = f"{task}_{number:03d}"
            number += 1
            image, label = spec.generator(_case_rng(record["seed"], split_id, index), **kwargs)
            affine = centered_affine(image.shape, kwargs.get("spacing", (1.0, 1.0, 1.0)))
            for folder, array in ((image_dir, image), (label_dir, label)):
                (root / folder).mkdir(exist_ok=True)
                _save_nifti(array, affine, root / folder / f"{name}.nii.gz")
            entry = {"image": f"{image_dir}/{name}.nii.gz", "label": f"{label_dir}/{name}.nii.gz"}
            lists[split].append(entry)
            if record["dicom"] and split == "test":
                write_dicom_series(image, affine, root / "imagesTs_dicom" / name, series_description=name)
                lists["test_dicom"].append({"image": f"imagesTs_dicom/{name}", "label": entry["label"]})
            logger.debug("phantom case %s (%s) written", name, split)
    return {
        "name": task,
        "description": spec.description,
        "reference": "synthetic phantom generated by common.phantoms",
        "licence": "CC0-1.0",
        "tensorImageSize": "3D",
        "modality": dict(spec.modality),
        "labels": {str(k): v for k, v in spec.labels.items()},
        "numTraining": record["n_cases"],
        "numValidation": record["n_validation"],
        "numTest": record["n_test"],
        **lists,
        "phantom": record,
    }


def _uid(digest: str, part: str) -> str:
    """A DICOM UID under the UUID root ``2.25`` derived from a content digest (deterministic, <= 64 chars)."""
    return "2.25." + str(int(hashlib.sha256(f"{digest}/{part}".encode()).hexdigest()[:32], 16))


def write_dicom_series(
    image_hu: np.ndarray,
    affine: np.ndarray,
    out_dir: str | PathLike,
    series_description: str = "phantom",
    patient_id: str = "PHANTOM",
) -> Path:
    """Write a CT volume as a DICOM series (one file per axial slice) with ITK's GDCMImageIO and ImageSeriesWriter.

    The geometry follows the RAS ``affine`` (converted to DICOM's LPS), so ITK- and MONAI-based readers recover
    the same world coordinates as from the NIfTI. Pixels are stored as int16 with RescaleIntercept -1024 and
    RescaleSlope 1 (HU = stored - 1024); Modality CT, CT Image Storage SOP class; UIDs derive from the content.
    DICOM stacks slices along row x column, so for a left-handed voxel frame readers return the slices in reverse
    order with a matching affine: every voxel keeps its world position.

    Args:
        image_hu: ``[X, Y, Z]`` integer HU values within the int16 range.
        affine: 4 x 4 RAS voxel-to-world affine with orthogonal axes (e.g. ``diag(spacing)`` with an origin).
        out_dir: the series folder; created, must be empty or absent.
        series_description: DICOM SeriesDescription.
        patient_id: DICOM PatientID and PatientName.

    Returns:
        the series folder.
    """
    import itk  # imported here: slow to load and only needed for DICOM

    out = Path(out_dir)
    image = np.asarray(image_hu)
    if image.ndim != 3 or not np.issubdtype(image.dtype, np.integer):
        found = f"an image of shape {image.shape} and dtype {image.dtype}"
        raise BundleInputError(out, found, "a 3D integer HU volume")
    if image.size and (image.min() < -32768 + 1024 or image.max() > 32767 - 1024):
        raise BundleInputError(out, f"HU values in [{image.min()}, {image.max()}]", "values in [-31744, 31743]")
    matrix = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)[:3, :4]  # RAS -> LPS
    spacing = np.linalg.norm(matrix[:, :3], axis=0)
    direction = matrix[:, :3] / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-6):
        raise BundleInputError(out, "an affine with non-orthogonal axes", "orthogonal voxel axes")
    origin = matrix[:, 3]
    if out.exists() and any(out.iterdir()):
        raise BundleInputError(out, "a non-empty folder", "an empty or missing folder for the DICOM series")
    out.mkdir(parents=True, exist_ok=True)

    stored = np.ascontiguousarray(image.astype(np.int16).transpose(2, 1, 0))  # ITK arrays are [z, y, x]
    itk_image = itk.image_from_array(stored)
    itk_image.SetSpacing([float(s) for s in spacing])
    itk_image.SetOrigin([float(o) for o in origin])
    itk_image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(direction)))

    digest = hashlib.sha256(stored.tobytes() + np.asarray(affine, dtype=np.float64).tobytes()).hexdigest()
    shared = {
        "0008|0008": "DERIVED\\SECONDARY\\AXIAL",
        "0008|0016": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
        "0008|0020": "20000101",
        "0008|0060": "CT",
        "0008|0070": "synthetic phantom",
        "0008|103e": series_description,
        "0010|0010": patient_id,
        "0010|0020": patient_id,
        "0018|0050": f"{spacing[2]:.6g}",
        "0018|0088": f"{spacing[2]:.6g}",
        "0020|000d": _uid(digest, "study"),
        "0020|000e": _uid(digest, "series"),
        "0020|0011": "1",
        "0020|0052": _uid(digest, "frame"),
        "0020|0037": "\\".join(f"{v:.6f}" for v in (*direction[:, 0], *direction[:, 1])),
        "0028|1052": "-1024",
        "0028|1053": "1",
        "0028|1054": "HU",
    }
    dictionaries, names = [], []
    for k in range(image.shape[2]):
        position = origin + direction[:, 2] * spacing[2] * k
        d = itk.MetaDataDictionary()
        for key, value in shared.items():
            d[key] = value
        d["0008|0018"] = _uid(digest, f"slice{k}")
        d["0020|0013"] = str(k + 1)
        d["0020|0032"] = "\\".join(f"{v:.6f}" for v in position)
        d["0020|1041"] = f"{position @ np.cross(direction[:, 0], direction[:, 1]):.6f}"
        dictionaries.append(d)
        names.append(str(out / f"IM{k + 1:04d}.dcm"))
    array = itk.vectoritkMetaDataDictionary()
    for d in dictionaries:
        array.push_back(d)

    io = itk.GDCMImageIO.New()
    io.KeepOriginalUIDOn()
    writer = itk.ImageSeriesWriter[itk.Image[itk.SS, 3], itk.Image[itk.SS, 2]].New()
    writer.SetInput(itk_image)
    writer.SetImageIO(io)
    writer.SetFileNames(names)
    writer.SetMetaDataDictionaryArray(array)
    writer.Update()
    logger.debug("wrote DICOM series of %d slices to %s", image.shape[2], out)
    return out


# ---- command line (``python -m common.phantoms``) ----


def make(
    task: str,
    out_dir: str,
    n_cases: int,
    seed: int = 0,
    n_validation: int = 0,
    n_test: int = 0,
    dicom: bool = False,
    shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
) -> str:
    """Make a phantom data set and return the path of its ``dataset.json`` (``fire`` prints it).

    Example: ``python -m common.phantoms make --task abdominal_ct_multiorgan --out_dir DIR --n_cases 8
    --n_validation 2 --shape "[96,96,48]" --spacing "[4,4,5]"``.
    """
    kwargs = {k: v for k, v in (("shape", shape), ("spacing", spacing)) if v is not None}
    return str(make_dataset(task, str(out_dir), n_cases, seed, n_validation, n_test, dicom, **kwargs))


def tasks() -> list[str]:
    """List the registered phantom tasks."""
    return sorted(PHANTOM_TASKS)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the phantom command line: ``make`` or ``tasks``; bad input exits with status 1 and the error's message."""
    import fire

    try:
        fire.Fire({"make": make, "tasks": tasks}, command=None if argv is None else list(argv))
    except BundleInputError as err:
        raise SystemExit(f"error: {err}") from None
