"""Reading images for the input checks: headers without pixel data where possible, and a checked ``LoadImage``.

NIfTI files are read with nibabel (header only, plus a cheap test that the file is not truncated); DICOM series
folders and other formats with ITK's image IO (``ReadImageInformation``, no pixel data); anything these cannot
describe falls back to :py:class:`monai.transforms.LoadImage`. Shapes are reported as MONAI sees the array after
``LoadImage`` + ``EnsureChannelFirst(channel_dim=channel_dim)``, channel first. With the default ``channel_dim=None``
that is MONAI's readers' layout: a file's first three axes are spatial and a further axis holds the channels (a 4D
NIfTI ``(X, Y, Z, 19)`` is 19 channels, e.g. the time points of perfusion CT); ``channel_dim="no_channel"`` makes
every axis spatial (a 4D NIfTI ``(X, Y, Z, T)`` is one channel with 4 spatial dimensions, 3D+time), and an int names
the file's channel axis. Affines are in RAS, as MONAI's readers return them.

Every failure of a file raises :py:class:`~common.data.errors.BundleInputError` naming the file.
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
from monai.transforms import EnsureChannelFirst, LoadImage
from monai.utils import optional_import
from nibabel.filebasedimages import ImageFileError

from .checks import check_spacing, check_stacked_files
from .dicom import check_dicom_series
from .errors import BundleInputError
from .messages import EXPECTED_IMAGE, READ_PERMISSION, describe_reader_error, permission_denied

itk, has_itk = optional_import("itk", allow_namespace_pkg=True)  # as monai.data.ITKReader imports it

__all__ = [
    "EXPECTED_IMAGE",
    "NIFTI_SUFFIXES",
    "READER_ERRORS",
    "ImageHeader",
    "LoadImageChecked",
    "read_image_array",
    "read_image_header",
    "stacked_header",
    "unreadable",
]

logger = logging.getLogger(__name__)

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
        modality: the DICOM Modality (0008,0060) of a series, e.g. ``"CT"``; ``None`` for other formats.
    """

    path: str
    shape: tuple[int, ...]
    affine: np.ndarray | None
    reader: str
    modality: str | None = None

    @property
    def n_channels(self) -> int:
        """Number of channels (the first axis of :py:attr:`shape`)."""
        return self.shape[0]

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The spatial part of :py:attr:`shape`."""
        return self.shape[1:]


def unreadable(exc: BaseException) -> str:
    """Describe a file a reader failed on, as the ``found`` part of a :py:class:`BundleInputError`.

    Args:
        exc: the reader's exception.

    Returns:
        ``"an unreadable file (<exception type>: <first line of its message>)"``, or for a ``PermissionError``
        ``"a file that this user (uid <uid>) may not read (...)"``.
    """
    if isinstance(exc, PermissionError):
        return permission_denied("file", exc)
    return f"an unreadable file ({describe_reader_error(exc)})"


def _expected_for(exc: BaseException) -> str:
    return READ_PERMISSION if isinstance(exc, PermissionError) else EXPECTED_IMAGE


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _channel_first(
    path: str, file_shape: Sequence[int], spatial_rank: int, channel_dim: int | str | None
) -> tuple[int, ...]:
    """Channel-first shape of an array read from a file, as ``EnsureChannelFirst(channel_dim)`` lays it out.

    Args:
        path: the file, named in the error.
        file_shape: the array's shape as the reader returns it (channels, if any, last).
        spatial_rank: how many of the file's axes the reader counts as spatial (``min(image axes, 3)``); with
            ``channel_dim=None`` a further axis is the channel axis, as MONAI's readers mark it.
        channel_dim: ``None`` (the readers' layout), ``"no_channel"`` (every axis spatial) or the channel axis.

    Returns:
        ``(C, *spatial)``.

    Raises:
        BundleInputError: ``channel_dim`` names an axis the file does not have.
    """
    shape = tuple(int(s) for s in file_shape)
    if channel_dim is None:
        channel_dim = -1 if len(shape) > spatial_rank else "no_channel"
    if channel_dim == "no_channel":
        return (1, *shape)
    if not -len(shape) <= channel_dim < len(shape):
        raise BundleInputError(
            path, f"{len(shape)} axes (shape {shape})", f"an axis {channel_dim} holding the channels (channel_dim)"
        )
    axis = channel_dim % len(shape)
    return (shape[axis], *shape[:axis], *shape[axis + 1 :])


def _is_nifti(path: str) -> bool:
    return path.lower().endswith(NIFTI_SUFFIXES)


def _verify_gzip_stream(path: str, expected_bytes: int) -> None:
    """Decompress ``path`` without keeping the data, to find truncation or corruption.

    Args:
        path: a ``.nii.gz`` file.
        expected_bytes: the uncompressed size its header implies.

    Raises:
        BundleInputError: the stream is corrupt or shorter than ``expected_bytes``.
    """
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(_GZIP_CHUNK):
                total += len(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise BundleInputError(path, unreadable(e), EXPECTED_IMAGE) from e
    if total < expected_bytes:
        raise BundleInputError(
            path, f"a truncated file ({total} bytes uncompressed)", f"at least {expected_bytes} bytes of NIfTI data"
        )


def _check_nifti_size(path: str, img) -> None:
    """Find a truncated NIfTI file without reading its voxels.

    An uncompressed file must be at least as long as its header says; a gzip file's trailer stores the uncompressed
    size (modulo 2**32), and only when that does not match is the stream decompressed (and discarded) to decide.

    Args:
        path: the NIfTI file.
        img: its nibabel image.

    Raises:
        BundleInputError: an uncompressed file shorter than its header says (a gzip file: see
            :py:func:`_verify_gzip_stream`).
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


def _nifti_header(path: str, channel_dim: int | str | None) -> ImageHeader:
    """Header of a NIfTI file through nibabel (``NibabelReader``: up to 3 spatial axes, a 4th axis is channels).

    Args:
        path: the NIfTI file.
        channel_dim: as for :py:func:`read_image_header`.

    Returns:
        its :py:class:`ImageHeader`.

    Raises:
        BundleInputError: nibabel cannot read the header.
    """
    try:
        img = nib.load(path)
        shape = img.shape
        affine = np.asarray(img.affine, dtype=np.float64)
    except READER_ERRORS as e:
        raise BundleInputError(path, unreadable(e), _expected_for(e)) from e
    _check_nifti_size(path, img)
    _check_nifti_pixdim(path, img, min(len(shape), 3))
    return ImageHeader(path, _channel_first(path, shape, min(len(shape), 3), channel_dim), affine, "nibabel")


def _check_nifti_pixdim(path: str, img, spatial_rank: int) -> None:
    """Refuse a NIfTI header whose voxel sizes (``pixdim``) are zero, negative or not numbers.

    nibabel "fixes" such a header as it loads it (zero becomes 1 mm, a negative size its absolute value) with only a
    log line, and MONAI then resamples with the invented spacing; the header is therefore read again here, unfixed.

    Args:
        path: the NIfTI file.
        img: its nibabel image.
        spatial_rank: how many spatial axes to check (``pixdim[1]`` to ``pixdim[spatial_rank]``).

    Raises:
        BundleInputError: e.g. ``"<file>: found voxel spacing (0.8, 0.0, 2.5) in its header (pixdim); expected a
            positive voxel size in mm along every spatial axis"``.
    """
    header_class = type(img.header)
    try:
        with nib.openers.ImageOpener(path) as f:
            raw = header_class.from_fileobj(f, check=False)
    except READER_ERRORS as e:
        raise BundleInputError(path, unreadable(e), _expected_for(e)) from e
    pixdim = np.asarray(raw["pixdim"][1 : spatial_rank + 1], dtype=np.float64)
    if np.all(np.isfinite(pixdim)) and np.all(pixdim > 0):
        return
    shown = tuple(float(v) if not np.isfinite(v) else round(float(v), 4) for v in pixdim)
    raise BundleInputError(
        path,
        f"voxel spacing {shown} in its header (pixdim)",
        "a positive voxel size in mm along every spatial axis (a zero, negative or missing size is a broken header: "
        "readers would silently use 1 mm or the absolute value)",
    )


def _itk_affine(direction: np.ndarray, spacing: Sequence[float], origin: Sequence[float]) -> np.ndarray:
    """Build the 4x4 RAS affine from ITK's (LPS) direction, spacing and origin, as ``monai.data.ITKReader`` does.

    Args:
        direction: ITK's direction matrix.
        spacing: voxel spacing per axis.
        origin: the first voxel's position.

    Returns:
        the 4x4 RAS affine.
    """
    sr = min(direction.shape[0], 3)
    affine = np.eye(4)
    affine[:sr, :sr] = direction[:sr, :sr] @ np.diag(np.asarray(spacing, dtype=np.float64)[:sr])
    affine[:sr, 3] = np.asarray(origin, dtype=np.float64)[:sr]
    return orientation_ras_lps(affine)  # LPS -> RAS: rows 0 and 1 negated


def _itk_array_shape(size: Sequence[int], components: int) -> list[int]:
    """Give the array shape ``ITKReader`` returns for an image.

    Args:
        size: the image's size per axis.
        components: pixel components (3 for RGB).

    Returns:
        the image axes, then the pixel components when there are several.
    """
    return [int(s) for s in size] + ([components] if components > 1 else [])


def _itk_io_header(path: str, channel_dim: int | str | None) -> ImageHeader:
    """Read the header of a single file through ITK's image IO factory (no pixel data read).

    Args:
        path: the file.
        channel_dim: as for :py:func:`read_image_header`.

    Returns:
        its :py:class:`ImageHeader`.

    Raises:
        RuntimeError: ITK has no image IO for the file.
    """
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
    array_shape = _itk_array_shape(size, int(image_io.GetNumberOfComponents()))
    shape = _channel_first(path, array_shape, min(ndim, 3), channel_dim)
    return ImageHeader(path, shape, _itk_affine(direction, spacing, origin), "itk")


def _dicom_series_header(folder: str, channel_dim: int | str | None) -> ImageHeader:
    """Read the header of the DICOM series in ``folder``, chosen as ``monai.data.ITKReader`` chooses it.

    Args:
        folder: the DICOM series folder.
        channel_dim: as for :py:func:`read_image_header`.

    Returns:
        its :py:class:`ImageHeader`, named after the folder, with the series' modality.

    Raises:
        BundleInputError: the folder holds no readable DICOM series, several series, or slices that do not make
            one evenly spaced volume (see :py:func:`~common.data.dicom.check_dicom_series`).
    """  # noqa: DOC502 (the BundleInputErrors come from check_dicom_series; listed here on purpose)
    series = check_dicom_series(folder)
    files = list(series.files)
    if len(files) == 1:
        header = _itk_io_header(files[0], channel_dim)
        return ImageHeader(folder, header.shape, header.affine, "itk", series.modality)
    image_io = itk.GDCMImageIO.New()
    reader = itk.ImageSeriesReader[itk.Image[itk.F, 3]].New(FileNames=files, ImageIO=image_io)
    reader.UpdateOutputInformation()
    out = reader.GetOutput()
    size = [int(s) for s in out.GetLargestPossibleRegion().GetSize()]
    array_shape = _itk_array_shape(size, int(image_io.GetNumberOfComponents()))
    affine = _itk_affine(itk.array_from_matrix(out.GetDirection()), out.GetSpacing(), out.GetOrigin())
    shape = _channel_first(folder, array_shape, 3, channel_dim)
    return ImageHeader(folder, shape, affine, "itk", series.modality)


def _loadimage_header(path: str, channel_dim: int | str | None) -> ImageHeader:
    """Fall back on reading the whole image with MONAI, and take its channel-first shape and affine.

    Args:
        path: the file.
        channel_dim: as for :py:func:`read_image_header`.

    Returns:
        its :py:class:`ImageHeader`.
    """
    img = LoadImageChecked(image_only=True)(path)
    img = EnsureChannelFirst(channel_dim=channel_dim)(img)
    affine = getattr(img, "affine", None)
    affine = None if affine is None else np.asarray(affine, dtype=np.float64)
    return ImageHeader(path, tuple(int(s) for s in img.shape), affine, "monai")


def read_image_header(path: str | PathLike, *, channel_dim: int | str | None = None) -> ImageHeader:
    """Read the geometry of one image without its voxels where the format allows.

    NIfTI: nibabel header, plus a test that the file is not truncated (file size, or the gzip trailer; the gzip
    stream is decompressed and discarded only when the trailer disagrees with the header). DICOM series folder:
    ITK's GDCM series reader, information only. Other files: ITK's image IO, information only. When ITK cannot
    describe the file, :py:class:`monai.transforms.LoadImage` reads it fully.

    Args:
        path: a NIfTI file, a DICOM series folder, or another file MONAI's readers accept.
        channel_dim: the file's channel axis, as ``EnsureChannelFirst`` takes it: ``None`` for MONAI's readers'
            layout (the first three axes spatial, a further axis the channels: a 4D NIfTI ``(X, Y, Z, 19)`` is
            ``(19, X, Y, Z)``); ``"no_channel"`` for every axis spatial (a 4D NIfTI ``(X, Y, Z, T)`` is
            ``(1, X, Y, Z, T)``, 3D+time); an int for that axis of the file.

    Returns:
        the :py:class:`ImageHeader`, with the channel-first ``shape`` that ``LoadImage`` followed by
        ``EnsureChannelFirst(channel_dim=channel_dim)`` gives.

    Raises:
        BundleInputError: the path does not exist or this user may not read it; the file is unreadable or
            truncated; its voxel spacing is zero, negative or missing; it lacks the axis ``channel_dim`` names; a
            DICOM folder holds several series, or slices that do not make one evenly spaced volume.
        ValueError: ``channel_dim`` is not ``None``, ``"no_channel"`` or an int.
    """
    if not (channel_dim is None or channel_dim == "no_channel" or _is_int(channel_dim)):
        raise ValueError(f"channel_dim must be None, 'no_channel' or an int axis of the file, got {channel_dim!r}.")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise BundleInputError(path, "no file or folder at this path", EXPECTED_IMAGE)
    if os.path.isfile(path):
        _check_readable(path)
    if os.path.isfile(path) and _is_nifti(path):
        header = _nifti_header(path, channel_dim)
    else:
        header = _other_header(path, channel_dim)
    check_spacing(header.affine, path, spatial_dims=min(len(header.spatial_shape), 3))
    return header


def _check_readable(path: str) -> None:
    """Open a file for reading, so that a permission problem is reported as one, not as an unreadable file.

    Args:
        path: the file.

    Raises:
        BundleInputError: this user may not read the file.
    """
    try:
        with open(path, "rb"):
            pass
    except PermissionError as e:
        raise BundleInputError(path, permission_denied("file", e), READ_PERMISSION) from e


def _other_header(path: str, channel_dim: int | str | None) -> ImageHeader:
    """Read the header of a DICOM series folder or a non-NIfTI file: ITK where it can, else ``LoadImage``.

    Args:
        path: the folder or file.
        channel_dim: as for :py:func:`read_image_header`.

    Returns:
        its :py:class:`ImageHeader`.

    Raises:
        BundleInputError: the file or folder is bad, as found by the DICOM checks or ``LoadImage``.
    """
    if has_itk:
        try:
            if os.path.isdir(path):
                return _dicom_series_header(path, channel_dim)
            return _itk_io_header(path, channel_dim)
        except BundleInputError:
            raise
        except READER_ERRORS as e:
            logger.debug("%s: ITK could not read the header (%s); trying LoadImage", path, describe_reader_error(e))
    return _loadimage_header(path, channel_dim)


def read_image_array(path: str | PathLike) -> np.ndarray:
    """Read the voxels of one image as a numpy array (file layout, no channel moved), e.g. to check label values.

    Args:
        path: a NIfTI file, a DICOM series folder, or another file MONAI's readers accept.

    Returns:
        the voxels, in the reader's layout.

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
            raise BundleInputError(path, unreadable(e), _expected_for(e)) from e
    return np.asarray(LoadImageChecked(image_only=True, dtype=None)(path))


def stacked_header(headers: Sequence[ImageHeader]) -> ImageHeader:
    """Combine the headers of files that ``LoadImage`` stacks into the channels of one image.

    Each file is read in its reader's layout, as ``LoadImage`` reads the files of a list; the files must agree in
    spatial shape, channel count and affine (:py:func:`~common.data.checks.check_stacked_files`).

    Args:
        headers: one header per file, in the list's order.

    Returns:
        a header named after the first file (as ``LoadImage`` names the stacked image), with the files' channels
        added up: ``(n_files, *spatial)`` for single-channel files.

    Raises:
        BundleInputError: a file differs from the others, naming it (raised by ``check_stacked_files``).
        ValueError: ``headers`` is empty.
    """  # noqa: DOC502 (the BundleInputError comes from check_stacked_files; listed here on purpose)
    if not headers:
        raise ValueError("headers must hold at least one file's header.")
    check_stacked_files([h.shape for h in headers], [h.affine for h in headers], [h.path for h in headers])
    first = headers[0]
    n_channels = sum(h.n_channels for h in headers)
    return ImageHeader(first.path, (n_channels, *first.spatial_shape), first.affine, first.reader)


class LoadImageChecked(LoadImage):
    """:py:class:`monai.transforms.LoadImage` that reports a file it cannot read as a :py:class:`BundleInputError`.

    Same arguments and output as ``LoadImage``. A reader failure (see :py:data:`READER_ERRORS`) is re-raised as
    ``BundleInputError("<file>", "an unreadable file (<reader error>)", "a NIfTI file or a DICOM series folder")``
    with the reader's exception as ``__cause__``; a missing file is reported as missing. For a list of files (stacked
    as channels), the file that differs from the others in spatial shape, channel count or affine is named.
    """

    def __call__(self, filename, reader=None):
        """Load ``filename`` as ``LoadImage`` does.

        Args:
            filename: a file or DICOM series folder, or a list of files to stack as channels.
            reader: a reader to use for this call, as for ``LoadImage``.

        Returns:
            what ``LoadImage`` returns.

        Raises:
            BundleInputError: a file is missing, unreadable, or (in a list) differs from the others; the reader's
                exception is the ``__cause__``.
        """
        try:
            return super().__call__(filename, reader)
        except BundleInputError:
            raise
        except READER_ERRORS as e:
            names = _file_names(filename)
            missing = [n for n in names if not os.path.exists(n)]
            if missing:
                raise BundleInputError(missing[0], "no file or folder at this path", EXPECTED_IMAGE) from e
            if len(names) > 1:
                headers = [read_image_header(n) for n in names]  # an unreadable file raises here, naming it
                try:
                    stacked_header(headers)
                except BundleInputError as mismatch:
                    raise mismatch from e
            failed = [n for n in names if n in str(e)]
            where = names[0] if len(names) == 1 else failed[0] if failed else ", ".join(names)
            raise BundleInputError(where, unreadable(e), _expected_for(e)) from e


def _file_names(filename) -> list[str]:
    names = [os.fspath(f) for f in filename] if isinstance(filename, (list, tuple)) else [os.fspath(filename)]
    return [os.path.expanduser(n) for n in names]
