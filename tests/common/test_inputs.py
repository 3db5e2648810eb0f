"""Listing inference inputs: NIfTI files, DICOM series folders, datalists; clear errors otherwise."""

import json

import nibabel as nib
import numpy as np
import pytest

from common.data import BundleInputError, is_dicom_series_dir, list_inputs, require_file
from common.phantoms import write_dicom_series


def _nifti(path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), str(path))
    return str(path)


def test_folder_lists_nifti_and_dicom_series_sorted(tmp_path):
    _nifti(tmp_path / "b.nii.gz")
    _nifti(tmp_path / "a.nii")
    (tmp_path / "notes.txt").write_text("not an image")
    write_dicom_series(np.zeros((4, 4, 3), np.int16), np.diag([1.0, 1.0, 2.0, 1.0]), tmp_path / "c_series")
    (tmp_path / "empty_dir").mkdir()
    assert is_dicom_series_dir(tmp_path / "c_series") and not is_dicom_series_dir(tmp_path / "empty_dir")
    items = list_inputs(tmp_path)
    assert [item["image"] for item in items] == [str(tmp_path / n) for n in ("a.nii", "b.nii.gz", "c_series")]


def test_single_file_dicom_folder_and_datalist(tmp_path):
    f = _nifti(tmp_path / "x.nii.gz")
    assert list_inputs(f) == [{"image": f}]
    series = write_dicom_series(np.zeros((4, 4, 3), np.int16), np.eye(4), tmp_path / "s")
    assert list_inputs(series) == [{"image": str(series)}]
    (tmp_path / "dataset.json").write_text(json.dumps({"test": [{"image": "x.nii.gz"}]}))
    assert list_inputs(tmp_path / "dataset.json", key="test") == [{"image": str(tmp_path / "x.nii.gz")}]


def test_colliding_output_names_are_refused(tmp_path):
    _nifti(tmp_path / "case.nii")
    _nifti(tmp_path / "case.nii.gz")
    with pytest.raises(BundleInputError, match=r"case\.nii.*case\.nii\.gz.*case_seg\.nii\.gz"):
        list_inputs(tmp_path)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p / "missing", "no such file or folder"),
        (lambda p: p, "no NIfTI file and no DICOM series"),
        (lambda p: (p / "x.txt").write_text("") or p / "x.txt", "neither NIfTI nor JSON"),
    ],
)
def test_bad_sources(tmp_path, make, words):
    source = make(tmp_path)
    with pytest.raises(BundleInputError, match=words) as info:
        list_inputs(source)
    assert str(source) in str(info.value)


def test_require_file(tmp_path):
    with pytest.raises(BundleInputError, match="model.pt: found no such file; expected a trained model"):
        require_file(tmp_path / "model.pt", "a trained model")
    f = tmp_path / "model.pt"
    f.write_bytes(b"x")
    assert require_file(f, "a trained model") == str(f)
