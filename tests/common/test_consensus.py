"""common.metrics.consensus: the paper's majority-vote ground truth masks, and metrics that skip their
indeterminate voxels."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest

from common.data.errors import BundleInputError
from common.metrics.consensus import main, majority_vote, masked_dice_and_volume, write_consensus
from common.metrics.sparse_measures import dice_on_annotated


def test_three_observers():
    a = np.array([1, 1, 2, 0, 5], dtype=np.uint8)
    b = np.array([1, 2, 2, 3, 6], dtype=np.uint8)
    c = np.array([1, 3, 4, 3, 7], dtype=np.uint8)
    # all agree, all differ, 2 vs 1 (first two), 2 vs 1 (last two), all differ
    np.testing.assert_array_equal(majority_vote([a, b, c]), [1, 255, 2, 3, 255])
    assert majority_vote([a, b, c]).dtype == np.uint8
    np.testing.assert_array_equal(majority_vote([a, b, c], ignore_value=300), [1, 300, 2, 3, 300])


def test_two_and_four_observers():
    np.testing.assert_array_equal(majority_vote([np.array([1, 2]), np.array([1, 3])]), [1, 255])  # tie: ignored
    four = [np.array([1, 1]), np.array([1, 1]), np.array([2, 1]), np.array([2, 3])]
    np.testing.assert_array_equal(majority_vote(four), [255, 1])  # 2-2 tie; 3 of 4


def test_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(2, 2\), \(2, 3\)"):
        majority_vote([np.zeros((2, 2)), np.zeros((2, 3))])


def save(path, array, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(array, dtype=np.uint8), np.diag([0.5, 0.5, 5.0, 1.0]) if affine is None
                             else affine), str(path))  # fmt: skip
    return str(path)


def test_write_consensus_keeps_geometry(tmp_path):
    maps = [np.array([1, 1, 2, 0]), np.array([1, 2, 2, 3]), np.array([1, 3, 4, 3])]
    files = [save(tmp_path / f"obs{i}.nii.gz", m.reshape(2, 2, 1)) for i, m in enumerate(maps)]
    out = write_consensus(files, tmp_path / "gtm.nii.gz")
    image = nib.load(out)
    assert image.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(image.affine, np.diag([0.5, 0.5, 5.0, 1.0]))
    np.testing.assert_array_equal(np.asanyarray(image.dataobj).ravel(), [1, 255, 2, 3])


def test_affine_and_shape_mismatch_name_the_file(tmp_path):
    good = [save(tmp_path / f"obs{i}.nii.gz", np.zeros((2, 2, 1))) for i in range(2)]
    moved = np.diag([0.5, 0.5, 5.0, 1.0])
    moved[0, 3] = 2.0
    shifted = save(tmp_path / "shifted.nii.gz", np.zeros((2, 2, 1)), moved)
    with pytest.raises(BundleInputError, match=r"shifted.nii.gz: found affine .*expected the affine of .*obs0"):
        write_consensus([*good, shifted], tmp_path / "gtm.nii.gz")
    small = save(tmp_path / "small.nii.gz", np.zeros((2, 1, 1)))
    with pytest.raises(BundleInputError, match=r"small.nii.gz: found shape \(2, 1, 1\)"):
        write_consensus([*good, small], tmp_path / "gtm.nii.gz")
    assert not (tmp_path / "gtm.nii.gz").exists()


def test_command_line(tmp_path, capsys):
    files = [save(tmp_path / f"obs{i}.nii.gz", np.array([1, i, 0, 0]).reshape(2, 2, 1)) for i in range(3)]
    main([str(tmp_path / "gtm.nii.gz"), *files, "--ignore_value", "9"])
    assert "1 indeterminate voxels (25.00% of 4), value 9" in capsys.readouterr().out
    np.testing.assert_array_equal(np.asanyarray(nib.load(tmp_path / "gtm.nii.gz").dataobj).ravel(), [1, 9, 0, 0])


def test_metrics_skip_ignored_voxels():
    ref = np.array([1, 1, 255, 0, 0]).reshape(5, 1, 1)
    pred = np.array([1, 1, 1, 0, 1]).reshape(5, 1, 1)
    result = masked_dice_and_volume(pred, ref, n_classes=3, voxel_volume_mm3=8.0)
    # on voxels 0, 1, 3, 4: pred class 1 = {0, 1, 4}, ref class 1 = {0, 1}: Dice 2*2/(3+2) (counting voxel 2 as a
    # class-1 prediction against a non-1 reference would give 2*2/(4+2)), volumes 3 and 2 voxels of 8 mm³
    assert result[1]["dice"] == pytest.approx(0.8)
    assert result[1]["volume_difference_cm3"] == pytest.approx(0.008)
    assert math.isnan(result[2]["dice"]) and math.isnan(result[2]["volume_difference_cm3"])  # on neither side
    assert dice_on_annotated(pred, ref, 1, ignore_value=255) == pytest.approx(0.8)  # the one implementation
