"""WriteServedLabelMapd: a 4D label map written whole for MONAI Label, and a no-op in a plain bundle run."""

from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from common.data import ServedLabelPath, WriteServedLabelMapd

AFFINE = np.array([[0.0, -2.0, 0.0, 10.0], [2.0, 0.0, 0.0, -20.0], [0.0, 0.0, 3.0, 5.0], [0.0, 0.0, 0.0, 1.0]])


def _pred() -> MetaTensor:
    values = torch.from_numpy(np.random.default_rng(0).integers(0, 3, size=(5, 6, 7, 4))).float()  # [T, X, Y, Z]
    return MetaTensor(values, affine=torch.from_numpy(AFFINE), meta={"filename_or_obj": "case.nii.gz"})


def test_plain_bundle_run_is_left_alone():
    pred = _pred()
    out = WriteServedLabelMapd()({"pred": pred, "image": "x"})
    assert out["pred"] is pred and "result_write_to_file" not in out


def test_served_writes_a_4d_nifti_and_hands_its_path_to_the_writer():
    pred = _pred()
    out = WriteServedLabelMapd()({"pred": pred, "image_path": "/studies/case.nii.gz"})
    path = out["pred"]
    try:
        assert isinstance(path, ServedLabelPath) and path.endswith(".nii.gz")
        assert path.shape == (6, 7, 4) and path.dtype == np.uint8  # the frame shape: Restored leaves it alone
        assert out["result_write_to_file"] is False
        with open(path, "rb") as f:
            assert f.read(2) == b"\x1f\x8b"  # gzip, not NRRD bytes
        with gzip.open(path) as f:
            assert f.read(4) in (b"\x5c\x01\x00\x00", b"\x00\x00\x01\x5c")  # NIfTI-1 header size 348
        image = nib.load(path)
        assert image.shape == (6, 7, 4, 5)  # [X, Y, Z, T]
        np.testing.assert_allclose(image.affine, AFFINE)
        data = np.asarray(image.dataobj)
        assert data.dtype == np.uint8
        np.testing.assert_array_equal(data, np.moveaxis(pred.numpy(), 0, -1).astype(np.uint8))
    finally:
        os.remove(path)
