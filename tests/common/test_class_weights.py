"""common.data.class_weights: voxel counts, the paper's balanced and attenuated weights, and the JSON step between
the training labels and the training config."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from common.data.class_weights import (
    attenuated_weights,
    balanced_weights,
    count_classes,
    load_class_weights,
    main,
    write_class_weights,
)
from common.data.errors import BundleInputError


def save_label(path, values, shape):
    nib.save(nib.Nifti1Image(np.asarray(values, dtype=np.uint8).reshape(shape), np.eye(4)), str(path))
    return str(path)


@pytest.fixture
def label_set(tmp_path):
    """Two label maps whose classes 0, 1, 2, 3 have 6, 2, 1 and 3 voxels, and a datalist of them."""
    a = save_label(tmp_path / "a.nii.gz", [0, 0, 0, 0, 0, 1, 3, 3], (2, 2, 2))
    b = save_label(tmp_path / "b.nii.gz", [0, 1, 2, 3], (2, 2, 1))
    datalist = tmp_path / "dataset.json"
    entries = [{"image": "a.nii.gz", "label": "a.nii.gz"}, {"image": "b.nii.gz", "label": "b.nii.gz"}]
    datalist.write_text(json.dumps({"training": entries, "validation": entries[:1]}))
    return datalist, [a, b]


def test_counts_and_weights_by_hand(label_set):
    _, files = label_set
    counts = count_classes(files, n_classes=4)
    np.testing.assert_array_equal(counts, [6, 2, 1, 3])
    assert counts.dtype == np.int64
    # w_c = sum(n) / ((k + 1) n_c) = 12 / (4 n_c)
    np.testing.assert_allclose(balanced_weights(counts), [0.5, 1.5, 3.0, 1.0])
    np.testing.assert_allclose(attenuated_weights(counts), [0.5 ** (1 / 3), 1.5 ** (1 / 3), 3.0 ** (1 / 3), 1.0])
    np.testing.assert_allclose(attenuated_weights(counts, power=1.0), balanced_weights(counts))


def test_ignore_value_is_not_counted(tmp_path):
    f = save_label(tmp_path / "c.nii.gz", [0, 1, 255, 255], (2, 2, 1))
    np.testing.assert_array_equal(count_classes([f], 2, ignore_value=255), [1, 1])


def test_bad_label_value_names_the_file(label_set, tmp_path):
    bad = save_label(tmp_path / "bad.nii.gz", [0, 1, 7, 0], (2, 2, 1))
    with pytest.raises(BundleInputError, match=r"bad.nii.gz: found label values \{7\}") as info:
        count_classes([label_set[1][0], bad], n_classes=4)
    assert info.value.path == bad


def test_class_without_voxels_is_named():
    with pytest.raises(ValueError, match="class 2 has no voxel"):
        balanced_weights([5, 3, 0, 1])


def test_json_round_trip(label_set):
    datalist, _ = label_set
    path = write_class_weights(datalist, n_classes=4)
    assert path == datalist.parent / "class_weights.json"
    content = json.loads(path.read_text())
    assert content["counts"] == [6, 2, 1, 3] and content["n_classes"] == 4
    assert content["command"] == f"python -m common.data.class_weights {datalist} --n_classes 4"
    assert load_class_weights(path, "balanced", 4, datalist) == pytest.approx([0.5, 1.5, 3.0, 1.0])
    assert load_class_weights(path, n_classes=4, datalist=datalist) == pytest.approx(
        [w ** (1 / 3) for w in (0.5, 1.5, 3.0, 1.0)]
    )
    assert load_class_weights(path, "none") == [1.0] * 4
    assert load_class_weights(datalist.parent / "absent.json", "none", n_classes=4) == [1.0] * 4
    with pytest.raises(BundleInputError, match="n_classes 4.*rerun"):
        load_class_weights(path, "attenuated", n_classes=12)
    with pytest.raises(ValueError, match="scheme"):
        load_class_weights(path, "sqrt")


def test_missing_file_names_the_command(label_set):
    datalist, _ = label_set
    with pytest.raises(FileNotFoundError) as info:
        load_class_weights(datalist.parent / "class_weights.json", "attenuated", 12, datalist)
    assert f"python -m common.data.class_weights {datalist} --n_classes 12" in str(info.value)
    with pytest.raises(FileNotFoundError, match=r"--n_classes 12 --out .*other.json"):
        load_class_weights(datalist.parent / "other.json", "attenuated", 12, datalist)


def test_stale_weights_are_refused(label_set):
    datalist, _ = label_set
    path = write_class_weights(datalist, n_classes=4)
    content = json.loads(datalist.read_text())
    content["training"] = content["training"][:1]
    datalist.write_text(json.dumps(content))
    with pytest.raises(BundleInputError, match="another version of .*rerun python -m common.data.class_weights"):
        load_class_weights(path, "attenuated", 4, datalist)


def test_command_line(label_set, capsys):
    datalist, _ = label_set
    out = datalist.parent / "weights" / "w.json"
    main([str(datalist), "--n_classes", "4", "--out", str(out)])
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "1.44225" in printed  # 3 ** (1/3) for class 2
    assert json.loads(out.read_text())["balanced"] == pytest.approx([0.5, 1.5, 3.0, 1.0])
    with pytest.raises(SystemExit, match="error: .*class 4 has no voxel"):
        main([str(datalist), "--n_classes", "5"])
