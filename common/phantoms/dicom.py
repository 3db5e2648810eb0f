"""DICOM CT series from HU volumes, with the same world geometry as the NIfTI written beside them."""

from __future__ import annotations

import hashlib
import logging
from os import PathLike
from pathlib import Path

import numpy as np

from common.data.errors import BundleInputError

__all__ = ["write_dicom_series"]

logger = logging.getLogger(__name__)


def _uid(digest: str, part: str) -> str:
    """Derive a DICOM UID under the UUID root ``2.25`` from a content digest (deterministic, <= 64 chars).

    Args:
        digest: the hex digest of the series' pixels and geometry.
        part: what the UID is for (``"study"``, ``"series"``, ``"slice3"``, ...).

    Returns:
        the UID.
    """
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

    Raises:
        ValueError: the image is not a 3D integer array in the storable HU range, or the affine's axes are not
            orthogonal.
        BundleInputError: ``out_dir`` exists and is not empty (it is never overwritten).
    """
    import itk  # imported here: slow to load and only needed for DICOM

    out = Path(out_dir)
    image = np.asarray(image_hu)
    if image.ndim != 3 or not np.issubdtype(image.dtype, np.integer):
        found = f"an image of shape {image.shape} and dtype {image.dtype}"
        raise ValueError(f"{out}: {found}; expected a 3D integer HU volume")
    if image.size and (image.min() < -32768 + 1024 or image.max() > 32767 - 1024):
        raise ValueError(f"{out}: HU values in [{image.min()}, {image.max()}]; expected values in [-31744, 31743]")
    matrix = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)[:3, :4]  # RAS -> LPS
    spacing = np.linalg.norm(matrix[:, :3], axis=0)
    direction = matrix[:, :3] / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-6):
        raise ValueError(f"{out}: an affine with non-orthogonal axes; expected orthogonal voxel axes")
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
