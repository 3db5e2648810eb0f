"""Writing files so that a failure never leaves a half-written one behind (BUNDLE_CONTRACT.md, "Errors")."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from os import PathLike
from pathlib import Path

from monai.data import NibabelWriter

__all__ = ["atomic_path", "write_files_atomically", "AtomicNibabelWriter"]


@contextmanager
def atomic_path(path: str | PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a hidden temporary path beside ``path``; move it onto ``path`` only if the block completes.

    An interrupted or failing write leaves the previous ``path`` (or none), never a truncated one: ``os.replace``
    is atomic on one file system, and the temporary file is removed in every case.

    Args:
        path: the final file path; its folder is created if needed.
        suffix: ending of the temporary name; writers that choose the format by extension need the real one
            (e.g. ``".nii.gz"``).

    Yields:
        the temporary path to write to.
    """
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=suffix)
    os.close(handle)
    try:
        yield tmp
        umask = os.umask(0)  # mkstemp creates 0600; give the file the permissions of an ordinary one
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_files_atomically(files: Mapping[str, bytes]) -> list[str]:
    """Write each ``path -> content`` through :func:`atomic_path` (the reports' CSV, JSON and PNG files).

    Args:
        files: the final file paths and their bytes; folders are created as needed.

    Returns:
        the paths written, in order.
    """
    for path, content in files.items():
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            f.write(content)
    return list(files)


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` writing through :func:`atomic_path`, in the input's own shape: whole or absent.

    Use it as ``SaveImaged(..., writer="common.data.AtomicNibabelWriter")``. A label map has exactly the spatial
    shape of the array it is given, size-1 axes included: MONAI's writers squeeze every trailing size-1 axis
    (``squeeze_end_dims``) and pad or cut to 3 spatial axes (``spatial_ndim``), so a one-slice input ``(X, Y, 1)``
    came back as a 2D ``(X, Y)`` map and a 3D+time map lost its time axis. Here only a single channel is dropped;
    several channels are written last, as MONAI writes them.
    """

    def set_data_array(self, data_array, channel_dim: int | None = 0, squeeze_end_dims: bool = True, **kwargs) -> None:
        """Keep the data channel-last with every spatial axis, dropping only a single channel.

        Args:
            data_array: the data, with its channel axis at ``channel_dim``.
            channel_dim: the channel axis; ``None`` for data without one.
            squeeze_end_dims: ignored (MONAI's ``SaveImage`` passes it): size-1 spatial axes are always kept.
            kwargs: passed to ``NibabelWriter.set_data_array``; ``spatial_ndim`` defaults to ``None`` (the data's
                own number of spatial axes).
        """
        kwargs.setdefault("spatial_ndim", None)
        super().set_data_array(data_array, channel_dim=channel_dim, squeeze_end_dims=False, **kwargs)
        if self.data_obj.shape[-1] == 1:
            self.data_obj = self.data_obj[..., 0]

    def write(self, filename, verbose: bool = False, **obj_kwargs) -> None:
        """Write the data set by ``set_data_array`` / ``set_metadata`` to ``filename``, whole or not at all.

        Args:
            filename: the NIfTI file to write (``.nii`` or ``.nii.gz``).
            verbose: as for ``NibabelWriter.write``.
            obj_kwargs: passed to ``NibabelWriter.write`` (and on to ``nibabel.save``).
        """
        suffix = ".nii.gz" if str(filename).endswith(".nii.gz") else Path(filename).suffix
        with atomic_path(filename, suffix=suffix) as tmp:
            super().write(tmp, verbose=verbose, **obj_kwargs)
