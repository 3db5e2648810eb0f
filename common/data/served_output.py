"""A 3D+time label map returned whole by MONAI Label 0.8.5's ``/infer/<bundle>`` (4D in, 4D out).

MONAI Label appends ``Restored`` to a bundle's postprocessing and then hands ``data["pred"]`` to its ``Writer``,
which sends every 4D array whose first axis is not 1 to ``write_seg_nrrd`` (whatever the extension), so a
``[T, X, Y, Z]`` label map comes back as NRRD bytes in a ``.nii.gz`` name. The ``Writer`` does, however, return
``data["pred"]`` itself when ``data["result_write_to_file"]`` is false, and the server sends back whatever file that
names. This transform, last in the postprocessing, writes the NIfTI ``(X, Y, Z, T)`` itself (the same writer and
dtype as the bundle's own ``SaveImaged``) and leaves its path there.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Hashable, Mapping

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

from .writers import AtomicNibabelWriter  # the export has it as scripts.data.writers

__all__ = ["ServedLabelPath", "WriteServedLabelMapd"]


class ServedLabelPath(str):
    """The path of a label map already written, as MONAI Label's ``Restored`` and ``Writer`` will handle it.

    MONAI Label reads ``.shape`` and ``.dtype`` of ``data["pred"]``: its transform log (``shape_info``, after every
    post transform) both, ``Restored`` the shape (it compares ``shape[1:]`` with the last axes of the input's
    ``spatial_shape`` and keeps a value of at most 3 dimensions as it is), the ``Writer`` logs the shape. The frame
    shape ``(X, Y, Z)`` makes ``Restored`` a no-op for any number of time points (a 4D shape would make it index
    ``[0]`` when ``T == 1``, i.e. take the path's first character).
    """

    shape: tuple[int, ...]
    dtype: np.dtype

    def __new__(cls, path: str, shape: tuple[int, ...], dtype=np.uint8) -> ServedLabelPath:
        """Make the path string with its array facts.

        Args:
            path: the written file.
            shape: the label map's frame shape ``(X, Y, Z)``.
            dtype: its data type.

        Returns:
            the path, a ``str`` with ``shape`` and ``dtype`` attributes.
        """
        obj = super().__new__(cls, path)
        obj.shape = tuple(int(s) for s in shape)
        obj.dtype = np.dtype(dtype)
        return obj


class WriteServedLabelMapd(MapTransform):
    """Under MONAI Label only: write ``pred`` (``[T, X, Y, Z]`` on the input's grid) as a NIfTI and return its path.

    Args:
        keys: the prediction key (MONAI Label's ``Writer`` reads ``"pred"``).
        output_dtype: the NIfTI's data type (as the bundle's ``SaveImaged``).
        served_key: a key MONAI Label's ``BasicInferTask`` puts in the data dict (``image_path``, the request's
            image file) and a bundle run never does; without it the transform does nothing.
        write_to_file_key: the key MONAI Label's ``Writer`` reads to skip writing (``result_write_to_file``).
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        output_dtype=np.uint8,
        served_key: str = "image_path",
        write_to_file_key: str = "result_write_to_file",
    ) -> None:
        super().__init__(keys)
        self.output_dtype = output_dtype
        self.served_key = served_key
        self.write_to_file_key = write_to_file_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        """Write each key's label map when served by MONAI Label; otherwise return the data unchanged.

        Args:
            data: the data dictionary after ``Invertd``, ``[T, X, Y, Z]`` MetaTensors under the keys.

        Returns:
            a shallow copy of ``data``; when served, the keys hold :class:`ServedLabelPath` values and
            ``write_to_file_key`` is False.
        """
        d = dict(data)
        if not isinstance(d.get(self.served_key), str):
            return d  # not served by MONAI Label: leave the prediction to SaveImaged
        for key in self.key_iterator(d):
            pred = d[key]  # MetaTensor [T, X, Y, Z] after Invertd, its affine the input's
            handle, path = tempfile.mkstemp(suffix=".nii.gz")  # where MONAI Label's own Writer writes; the
            os.close(handle)  # server deletes the file once it has sent it (endpoints/infer.py send_response)
            writer = AtomicNibabelWriter(output_dtype=self.output_dtype)
            writer.set_data_array(pred, channel_dim=0)
            writer.set_metadata(pred.meta, resample=False)
            writer.write(path)
            d[key] = ServedLabelPath(path, pred.shape[1:], self.output_dtype)
        d[self.write_to_file_key] = False
        return d
