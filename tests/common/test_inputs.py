"""Listing inference inputs: NIfTI files, DICOM series folders, datalists; clear errors otherwise."""

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from common.data import BundleInputError, is_dicom_series_dir, list_inputs, require_file, require_output_dir
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


def test_require_output_dir(tmp_path):
    assert require_output_dir(tmp_path) == str(tmp_path)
    assert require_output_dir(tmp_path / "new" / "deeper") == str(tmp_path / "new" / "deeper")  # to be created
    assert not (tmp_path / "new").exists()  # nothing is created by the check
    blocker = tmp_path / "report.txt"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(BundleInputError) as info:
        require_output_dir(blocker / "out", "a checkpoint folder (ckpt_dir)")
    assert str(info.value) == (
        f"{blocker / 'out'}: found a path under a file that is not a folder ({blocker}); expected a checkpoint folder "
        f"(ckpt_dir) that this user (uid {os.geteuid()}) can create and write"
    )
    with pytest.raises(BundleInputError, match=r"report\.txt: found a file; expected an output folder"):
        require_output_dir(blocker)


def test_not_writable_output_dir(tmp_path, monkeypatch):
    """``os.access`` answers for the effective user and capabilities (a read-only mount answers no, even for root);
    here it is told to answer no."""
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(tmp_path) else real_access(p, mode))
    with pytest.raises(BundleInputError) as info:
        require_output_dir(tmp_path / "out")
    assert f"found a path whose nearest existing folder {tmp_path} is not writable by this user" in str(info.value)


def test_unreadable_subfolder_is_listed_for_the_preflight(tmp_path, monkeypatch):
    """A sub-folder the user may not read might be a DICOM series: it is listed, so the preflight names it, rather
    than silently left out of the run."""
    import common.data.inputs as inputs

    _nifti(tmp_path / "a.nii.gz")
    (tmp_path / "b_locked").mkdir()
    (tmp_path / "c_notes").mkdir()
    real = inputs.is_dicom_series_dir

    def is_dicom(path):
        if Path(path).name == "b_locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(inputs, "is_dicom_series_dir", is_dicom)
    assert [item["image"] for item in list_inputs(tmp_path)] == [str(tmp_path / "a.nii.gz"), str(tmp_path / "b_locked")]
