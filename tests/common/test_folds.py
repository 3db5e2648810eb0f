"""common.data.folds: the documented cross-validation rule (Kayalibay et al. 2017, 6 hand folds, 5 BraTS folds)."""

from __future__ import annotations

import json

import pytest

from common.data import BundleInputError, fold_cases, fold_indices


def test_thirty_hand_volumes_in_six_folds_as_the_paper():
    folds = [fold_indices(30, k, 6) for k in range(6)]
    for k, f in enumerate(folds):
        assert (len(f["training"]), len(f["validation"]), len(f["test"])) == (20, 5, 5)
        assert f["test"] == list(range(5 * k, 5 * k + 5))
        assert f["validation"] == list(range(5 * ((k + 1) % 6), 5 * ((k + 1) % 6) + 5))
        assert sorted(f["training"] + f["validation"] + f["test"]) == list(range(30))
    # every case tested exactly once, validated exactly once
    assert sorted(i for f in folds for i in f["test"]) == list(range(30))
    assert sorted(i for f in folds for i in f["validation"]) == list(range(30))


def test_uneven_blocks_follow_array_split():
    # blocks [0, 1, 2], [3, 4], [5, 6]
    assert fold_indices(7, 0, 3) == {"training": [5, 6], "validation": [3, 4], "test": [0, 1, 2]}
    assert fold_indices(7, 2, 3) == {"training": [3, 4], "validation": [0, 1, 2], "test": [5, 6]}


@pytest.mark.parametrize(("n", "fold", "folds", "match"), [(10, 0, 2, "at least 3"), (10, 5, 5, "0..4"),
                                                           (2, 0, 3, "cannot be split")])  # fmt: skip
def test_bad_folds(n, fold, folds, match):
    with pytest.raises(ValueError, match=match):
        fold_indices(n, fold, folds)


def test_fold_cases_pool_the_datalist_lists_in_order(tmp_path):
    names = [f"c{i}.nii.gz" for i in range(9)]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    entries = [{"image": n, "label": n} for n in names]
    datalist = tmp_path / "dataset.json"
    datalist.write_text(json.dumps({"training": entries[:5], "validation": entries[5:7], "test": entries[7:]}))
    # fold None: the datalist's own lists
    assert [e["image"] for e in fold_cases(datalist, None, 3, "validation")] == [str(tmp_path / n) for n in names[5:7]]
    # fold 1 of 3: blocks [0-2], [3-5], [6-8]; test block 1, validation block 2, training block 0
    got = {
        s: [e["image"].rsplit("/", 1)[1] for e in fold_cases(datalist, 1, 3, s)]
        for s in ("training", "validation", "test")
    }
    assert got == {"training": names[0:3], "validation": names[6:9], "test": names[3:6]}
    with pytest.raises(ValueError, match="split must be one of"):
        fold_cases(datalist, 0, 3, "train")
    with pytest.raises(BundleInputError, match="dataset.json"):
        fold_cases(tmp_path / "dataset.json", 0, 3, "training", keys=("training", "extra"))
