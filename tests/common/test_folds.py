"""common.data.folds: the documented cross-validation rule (Kayalibay et al. 2017, 6 hand folds, 5 BraTS folds)."""

from __future__ import annotations

import json

import pytest

from common.data import BundleInputError, fold_cases, fold_indices, write_folds


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


def test_brats_folds_hold_out_halves_of_one_block_as_the_paper_220_27_27():
    """274 BraTS 2015 images, 5 folds, ``split_block``: 219-220 training, 27-28 test, 27 validation per fold."""
    folds = [fold_indices(274, k, 5, "split_block") for k in range(5)]
    sizes = [(len(f["training"]), len(f["validation"]), len(f["test"])) for f in folds]
    assert sizes == [(219, 27, 28)] * 4 + [(220, 27, 27)]
    for f in folds:  # disjoint and covering within a fold
        assert sorted(f["training"] + f["validation"] + f["test"]) == list(range(274))
    tested = [i for f in folds for i in f["test"]]
    assert len(tested) == len(set(tested)) == 139  # the five test sets are disjoint
    assert folds[1]["test"] == list(range(55, 83)) and folds[1]["validation"] == list(range(83, 110))
    assert fold_indices(274, 3, 5, "split_block") == folds[3]  # deterministic
    with pytest.raises(ValueError, match="validation must be one of"):
        fold_indices(10, 0, 5, "random")
    with pytest.raises(ValueError, match="at least 2"):
        fold_indices(10, 0, 1, "split_block")


def _datalist(tmp_path, n_train=6, n_val=2, **extra):
    names = [f"c{i}.nii.gz" for i in range(n_train + n_val + 1)]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    entries = [{"image": n, "label": n, **extra} for n in names]
    path = tmp_path / "dataset.json"
    content = {"name": "t", "training": entries[:n_train], "validation": entries[n_train:-1], "test": entries[-1:]}
    path.write_text(json.dumps(content))
    return path, names


def _names(datalist, fold, n_folds, split, **kw):
    return [e["image"].rsplit("/", 1)[1] for e in fold_cases(datalist, fold, n_folds, split, **kw)]


def test_write_folds_puts_the_split_in_the_datalist_and_fold_cases_reads_it(tmp_path):
    datalist, names = _datalist(tmp_path)
    keys = ("training", "validation")
    before = {s: _names(datalist, 1, 4, s, keys=keys, validation="split_block") for s in ("training", "test")}
    write_folds(datalist, 4, keys)
    content = json.loads(datalist.read_text())
    # 8 pooled cases in 4 blocks of 2; the other keys and the test list are kept as they were
    assert [e["fold"] for e in content["training"] + content["validation"]] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert content["name"] == "t" and "fold" not in content["test"][0]
    after = {s: _names(datalist, 1, 4, s, keys=keys, validation="split_block") for s in ("training", "test")}
    assert after == before == {"training": [names[i] for i in (0, 1, 4, 5, 6, 7)], "test": [names[2]]}
    # a user's own split wins: reassign case 0 to fold 1 and rewrite; write_folds leaves it as it is
    content["training"][0]["fold"] = 1
    datalist.write_text(json.dumps(content))
    write_folds(datalist, 4, keys)
    assert json.loads(datalist.read_text())["training"][0]["fold"] == 1
    assert _names(datalist, 1, 4, "test", keys=keys, validation="split_block") == [names[0], names[2]]
    assert _names(datalist, 1, 4, "validation", keys=keys, validation="split_block") == [names[3]]


@pytest.mark.parametrize(
    ("folds", "match"),
    [
        ([0, 1, None], "without a 'fold' field"),
        ([0, 1, 7], "'fold': 7"),
        ([0, 0, 0], r"no entry in fold\(s\) \[1, 2\]"),
    ],
)
def test_incomplete_or_bad_fold_fields_name_the_datalist(tmp_path, folds, match):
    datalist, _ = _datalist(tmp_path, n_train=3, n_val=0)
    content = json.loads(datalist.read_text())
    content["validation"] = content["test"]
    for entry, k in zip(content["training"], folds, strict=True):
        if k is not None:
            entry["fold"] = k
    content["training"][0]["fold"] = folds[0]
    datalist.write_text(json.dumps(content))
    with pytest.raises(BundleInputError, match=match) as err:
        fold_cases(datalist, 0, 3, "training", keys=("training",))
    assert "dataset.json" in str(err.value)


def test_no_fold_is_none_or_the_command_lines_none():
    from common.data.folds import no_fold

    assert no_fold(None) and no_fold("None")
    assert not no_fold(0) and not no_fold("0") and not no_fold("none")
