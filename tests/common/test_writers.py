"""Atomic writes: a failure never leaves a half-written file, and never destroys the previous one."""

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from common.data import AtomicNibabelWriter, atomic_path


def _interrupted_write(target):
    with atomic_path(target) as tmp:
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("interrupted")


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="interrupted"):
        _interrupted_write(target)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    with atomic_path(target) as tmp, open(tmp, "w") as f:
        f.write("new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_atomic_nibabel_writer_writes_gzip_nifti(tmp_path):
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    data = torch.arange(24, dtype=torch.uint8).reshape(1, 2, 3, 4)
    writer = AtomicNibabelWriter(output_dtype=np.uint8)
    writer.set_data_array(MetaTensor(data, affine=torch.as_tensor(affine)), channel_dim=0)
    writer.set_metadata({"affine": affine, "original_affine": affine}, resample=False)
    out = tmp_path / "sub" / "seg.nii.gz"
    writer.write(out)
    assert out.read_bytes()[:2] == b"\x1f\x8b"  # gzip, so the temporary name kept the .nii.gz ending
    img = nib.load(out)
    assert img.shape == (2, 3, 4) and np.allclose(img.affine, affine)
    assert np.array_equal(np.asarray(img.dataobj), data[0].numpy())
    assert [p.name for p in out.parent.iterdir()] == ["seg.nii.gz"]


def test_atomic_nibabel_writer_failure_leaves_nothing(tmp_path, monkeypatch):
    writer = AtomicNibabelWriter()
    writer.set_data_array(torch.zeros(1, 2, 2, 2), channel_dim=0)
    writer.set_metadata({"affine": np.eye(4)}, resample=False)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        writer.write(tmp_path / "seg.nii.gz")
    assert list(tmp_path.iterdir()) == []
