"""Reading images for the input checks: headers without pixel data where possible, and a checked ``LoadImage``.

NIfTI files are read with nibabel (header only, plus a cheap test that the file is not truncated); DICOM series
folders and other formats with ITK's image IO (``ReadImageInformation``, no pixel data); anything these cannot
describe falls back to :py:class:`monai.transforms.LoadImage`. Shapes are reported as MONAI sees the array after
``LoadImage`` + ``EnsureChannelFirst``: channel first, the channels being the last axis of the file when the file
has more axes than the image has spatial dimensions. Affines are in RAS, as MONAI's readers return them.

Every failure raises :py:class:`~common.data.errors.BundleInputError` naming the file.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike

import nibabel as nib
import numpy as np
from monai.data.utils import orientation_ras_lps
from monai.transforms import LoadImage
from monai.utils import optional_import
from nibabel.filebasedimages import ImageFileError

from .errors import BundleInputError

itk, has_itk = optional_import("itk", allow_namespace_pkg=True)  # as monai.data.ITKReader imports it

__all__ = [
    "EXPECTED_IMAGE",
    "READER_ERRORS",
    "ImageHeader",
    "LoadImageChecked",
    "describe_reader_error",
    "read_image_array",
    "read_image_header",
    "unreadable_file_error",
]

logger = logging.getLogger(__name__)

EXPECTED_IMAGE = "a NIfTI file or a DICOM series folder"
"""What a bundle accepts as one image, as worded in every "unreadable" error."""

NIFTI_SUFFIXES = (".nii", ".nii.gz")

READER_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # missing file, gzip.BadGzipFile, short reads, "no DICOMs in"
    EOFError,  # truncated gzip stream
    ValueError,  # malformed headers (nibabel, MONAI meta data)
    RuntimeError,  # ITK exceptions, MONAI "cannot find a suitable reader"
    zlib.error,  # corrupt deflate stream
    struct.error,  # header shorter than its structure
    ImageFileError,  # nibabel: not a recognisable image file
)
"""The exceptions a reader raises for a bad file (checked against nibabel 5, ITK 5.4 and MONAI 1.5.2)."""

_GZIP_CHUNK = 1 << 20


@dataclass(frozen=True)
class ImageHeader:
    """Geometry of one image as MONAI will see it after ``LoadImage`` + ``EnsureChannelFirst``.

    Attributes:
        path: the file or DICOM series folder.
        shape: channel-first array shape ``(C, *spatial)``.
        affine: the 4x4 RAS affine, or ``None`` when the reader gives none.
        reader: which reader described the file (``"nibabel"``, ``"itk"``, ``"monai"``).
    """

    path: str
    shape: tuple[int, ...]
    affine: np.ndarray | None
    reader: str

    @property
    def n_channels(self) -> int:
        """Number of channels (the first axis of :py:attr:`shape`)."""
        return self.shape[0]

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The spatial part of :py:attr:`shape`."""
        return self.shape[1:]


def describe_reader_error(exc: BaseException, max_len: int = 200) -> str:
    """One-line summary of a reader's exception: its type and the first line of its message.

    Args:
        exc: the exception raised by a reader.
        max_len: the summary is cut to this many characters.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    summary = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return summary if len(summary) <= max_len else summary[: max_len - 3] + "..."


def unreadable_file_error(path: str | PathLike, exc: BaseException) -> BundleInputError:
    """The :py:class:`BundleInputError` for a file a reader failed on; raise it ``from exc``.

    Args:
        path: the file or DICOM series folder.
        exc: the reader's exception.
    """
    return BundleInputError(path, f"an unreadable file ({describe_reader_error(exc)})", EXPECTED_IMAGE)


def _channel_first(array_shape: Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    """Channel-first shape of an array read from a file, as MONAI lays it out.

    A file with at most ``spatial_dims`` axes has one channel; otherwise its last axis holds the channels (MONAI's
    readers mark the last axis as ``original_channel_dim`` when there are more axes than spatial ones).
    """
    shape = tuple(int(s) for s in array_shape)
    if len(shape) <= spatial_dims:
        return (1, *shape)
    return (shape[-1], *shape[:-1])


def _is_nifti(path: str) -> bool:
    return path.lower().endswith(NIFTI_SUFFIXES)


def _verify_gzip_stream(path: str, expected_bytes: int) -> None:
    """Decompress ``path`` without keeping the data, to find truncation or corruption."""
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(_GZIP_CHUNK):
                total += len(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise unreadable_file_error(path, e) from e
    if total < expected_bytes:
        raise BundleInputError(
            path, f"a truncated file ({total} bytes uncompressed)", f"at least {expected_bytes} bytes of NIfTI data"
        )


def _check_nifti_size(path: str, img) -> None:
    """Find a truncated NIfTI file without reading its voxels.

    An uncompressed file must be at least as long as its header says; a gzip file's trailer stores the uncompressed
    size (modulo 2**32), and only when that does not match is the stream decompressed (and discarded) to decide.
    """
    proxy = img.dataobj
    if not nib.is_proxy(proxy) or not hasattr(proxy, "offset"):
        return
    expected = int(proxy.offset) + int(np.prod(proxy.shape, dtype=np.int64)) * np.dtype(proxy.dtype).itemsize
    lower = path.lower()
    if lower.endswith(".nii"):
        size = os.path.getsize(path)
        if size < expected:
            raise BundleInputError(
                path, f"a truncated file ({size} bytes)", f"at least {expected} bytes for its header's shape"
            )
    elif lower.endswith(".nii.gz"):
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            stored = int.from_bytes(f.read(4), "little")
        if stored != expected % 2**32:
            logger.debug("%s: gzip trailer says %d bytes, header %d; verifying the stream", path, stored, expected)
            _verify_gzip_stream(path, expected)


def _nifti_header(path: str, spatial_dims: int) -> ImageHeader:
    try:
        img = nib.load(path)
        shape = img.shape
        affine = np.asarray(img.affine, dtype=np.float64)
    except READER_ERRORS as e:
        raise unreadable_file_error(path, e) from e
    _check_nifti_size(path, img)
    return ImageHeader(path, _channel_first(shape, spatial_dims), affine, "nibabel")


def _itk_affine(direction: np.ndarray, spacing: Sequence[float], origin: Sequence[float]) -> np.ndarray:
    """4x4 RAS affine from ITK's (LPS) direction, spacing and origin, as ``monai.data.ITKReader`` builds it."""
    sr = min(direction.shape[0], 3)
    affine = np.eye(4)
    affine[:sr, :sr] = direction[:sr, :sr] @ np.diag(np.asarray(spacing, dtype=np.float64)[:sr])
    affine[:sr, 3] = np.asarray(origin, dtype=np.float64)[:sr]
    return orientation_ras_lps(affine)  # LPS -> RAS: rows 0 and 1 negated


def _itk_io_header(path: str, spatial_dims: int) -> ImageHeader:
    """Header of a single file through ITK's image IO factory (no pixel data read)."""
    image_io = itk.ImageIOFactory.CreateImageIO(path, itk.CommonEnums.IOFileMode_ReadMode)
    if image_io is None:
        raise RuntimeError(f"Could not create IO object for reading file {path}")
    image_io.SetFileName(path)
    image_io.ReadImageInformation()
    ndim = image_io.GetNumberOfDimensions()
    size = [int(image_io.GetDimensions(i)) for i in range(ndim)]
    direction = np.array([image_io.GetDirection(i)[:ndim] for i in range(ndim)], dtype=np.float64).T
    spacing = [image_io.GetSpacing(i) for i in range(ndim)]
    origin = [image_io.GetOrigin(i) for i in range(ndim)]
    components = int(image_io.GetNumberOfComponents())
    array_shape = size + ([components] if components > 1 else [])
    return ImageHeader(path, _channel_first(array_shape, spatial_dims), _itk_affine(direction, spacing, origin), "itk")


def _dicom_series_header(folder: str, spatial_dims: int) -> ImageHeader:
    """Header of the DICOM series in ``folder``, chosen as ``monai.data.ITKReader`` chooses it (no pixel data)."""
    names = itk.GDCMSeriesFileNames.New()
    names.SetUseSeriesDetails(True)
    names.AddSeriesRestriction("0008|0021")  # series date, as ITKReader does
    names.SetDirectory(folder)
    uids = names.GetSeriesUIDs()
    if len(uids) < 1:
        raise BundleInputError(folder, "a folder without a readable DICOM series", EXPECTED_IMAGE)
    if len(uids) > 1:
        logger.warning("%s holds %d DICOM series; the first is used, as LoadImage does", folder, len(uids))
    files = list(names.GetFileNames(uids[0]))
    if len(files) == 1:
        header = _itk_io_header(files[0], spatial_dims)
        return ImageHeader(folder, header.shape, header.affine, "itk")
    image_io = itk.GDCMImageIO.New()
    reader = itk.ImageSeriesReader[itk.Image[itk.F, 3]].New(FileNames=files, ImageIO=image_io)
    reader.UpdateOutputInformation()
    out = reader.GetOutput()
    size = [int(s) for s in out.GetLargestPossibleRegion().GetSize()]
    components = int(image_io.GetNumberOfComponents())
    array_shape = size + ([components] if components > 1 else [])
    affine = _itk_affine(itk.array_from_matrix(out.GetDirection()), out.GetSpacing(), out.GetOrigin())
    return ImageHeader(folder, _channel_first(array_shape, spatial_dims), affine, "itk")


def _loadimage_header(path: str) -> ImageHeader:
    """Fallback: read the whole image with MONAI and take its channel-first shape and affine."""
    img = LoadImageChecked(image_only=True, ensure_channel_first=True)(path)
    affine = getattr(img, "affine", None)
    affine = None if affine is None else np.asarray(affine, dtype=np.float64)
    return ImageHeader(path, tuple(int(s) for s in img.shape), affine, "monai")


def read_image_header(path: str | PathLike, spatial_dims: int = 3) -> ImageHeader:
    """Read the geometry of one image without its voxels where the format allows.

    NIfTI: nibabel header, plus a test that the file is not truncated (file size, or the gzip trailer; the gzip
    stream is decompressed and discarded only when the trailer disagrees with the header). DICOM series folder:
    ITK's GDCM series reader, information only. Other files: ITK's image IO, information only. When ITK cannot
    describe the file, :py:class:`monai.transforms.LoadImage` reads it fully.

    Args:
        path: a NIfTI file, a DICOM series folder, or another file MONAI's readers accept.
        spatial_dims: number of spatial dimensions; a file with more axes has its last axis as channels.

    Returns:
        the :py:class:`ImageHeader`, with a channel-first ``shape``.

    Raises:
        BundleInputError: the path does not exist, or the file is unreadable or truncated.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise BundleInputError(path, "no file or folder at this path", EXPECTED_IMAGE)
    if os.path.isfile(path) and _is_nifti(path):
        return _nifti_header(path, spatial_dims)
    if has_itk:
        try:
            if os.path.isdir(path):
                return _dicom_series_header(path, spatial_dims)
            return _itk_io_header(path, spatial_dims)
        except BundleInputError:
            raise
        except READER_ERRORS as e:
            logger.debug("%s: ITK could not read the header (%s); trying LoadImage", path, describe_reader_error(e))
    return _loadimage_header(path)


def read_image_array(path: str | PathLike) -> np.ndarray:
    """Read the voxels of one image as a numpy array (file layout, no channel moved), e.g. to check label values.

    Args:
        path: a NIfTI file, a DICOM series folder, or another file MONAI's readers accept.

    Raises:
        BundleInputError: the path does not exist or the file is unreadable.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise BundleInputError(path, "no file or folder at this path", EXPECTED_IMAGE)
    if os.path.isfile(path) and _is_nifti(path):
        try:
            return np.asanyarray(nib.load(path).dataobj)
        except READER_ERRORS as e:
            raise unreadable_file_error(path, e) from e
    return np.asarray(LoadImageChecked(image_only=True, dtype=None)(path))


class LoadImageChecked(LoadImage):
    """:py:class:`monai.transforms.LoadImage` that reports a file it cannot read as a :py:class:`BundleInputError`.

    Same arguments and output as ``LoadImage``. A reader failure (see :py:data:`READER_ERRORS`) is re-raised as
    ``BundleInputError("<file>", "an unreadable file (<reader error>)", "a NIfTI file or a DICOM series folder")``
    with the reader's exception as ``__cause__``. A missing file is reported as missing.
    """

    def __call__(self, filename, reader=None):
        """Load ``filename`` as ``LoadImage`` does; see the class docstring for the errors."""
        try:
            return super().__call__(filename, reader)
        except BundleInputError:
            raise
        except READER_ERRORS as e:
            raise _load_failure(filename, e) from e


def _load_failure(filename, exc: BaseException) -> BundleInputError:
    """Name the file that failed: the missing one if any, else the single file, else all of them."""
    names = [os.fspath(f) for f in filename] if isinstance(filename, (list, tuple)) else [os.fspath(filename)]
    names = [os.path.expanduser(n) for n in names]
    missing = [n for n in names if not os.path.exists(n)]
    if missing:
        return BundleInputError(missing[0], "no file or folder at this path", EXPECTED_IMAGE)
    if len(names) == 1:
        return unreadable_file_error(names[0], exc)
    failed = [n for n in names if n in str(exc)]
    return unreadable_file_error(failed[0] if failed else ", ".join(names), exc)
