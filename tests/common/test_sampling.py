"""Class-balanced sub-volume centres among annotated voxels in the cranial cavity (brain CT perfusion, II-B.2)."""

import pickle
from collections import Counter

import numpy as np
import pytest
import torch
from monai.data import DataLoader, MetaTensor
from monai.data.utils import set_rnd
from monai.transforms import Randomizable
from monai.utils import MAX_SEED

from common.data.sampling import ClassBalancedDataset, sampling_candidates

SHAPE = (10, 9, 8)


def make_case(name, voxels, mask_box=None):
    """A case whose label has the given {(x, y, z): class} voxels; mask = box of (lo, hi) per axis (else none)."""
    label = torch.zeros(1, *SHAPE)
    for xyz, c in voxels.items():
        label[(0, *xyz)] = c
    case = {"name": name, "image": torch.rand(2, *SHAPE), "label": label}
    if mask_box is not None:
        mask = torch.zeros(1, *SHAPE, dtype=torch.uint8)
        mask[(0, *(slice(lo, hi) for lo, hi in mask_box))] = 1
        case["mask"] = mask
    return case


def make_cases():
    """Three cases; class 4 only in cases 0 and 1; mask excludes the x >= 8 part of cases 0 and 1."""
    box = ((0, 8), (0, 9), (0, 8))
    case0 = make_case(
        "a", {(1, 1, 1): 1, (2, 1, 1): 1, (3, 3, 3): 2, (4, 4, 4): 3, (5, 5, 5): 4, (9, 1, 1): 1, (8, 2, 2): 4}, box
    )
    case1 = make_case("b", {(0, 0, 0): 1, (6, 6, 6): 2, (6, 6, 7): 2, (7, 0, 0): 3, (2, 8, 7): 4, (9, 8, 7): 3}, box)
    case2 = make_case("c", {(3, 2, 1): 1, (1, 2, 3): 2, (0, 8, 0): 3, (5, 5, 1): 3})  # no mask, no class 4
    return [case0, case1, case2]


# the candidates by hand: annotated and (no mask, or inside the box x < 8)
EXPECTED = {
    "a": {1: {(1, 1, 1), (2, 1, 1)}, 2: {(3, 3, 3)}, 3: {(4, 4, 4)}, 4: {(5, 5, 5)}},
    "b": {1: {(0, 0, 0)}, 2: {(6, 6, 6), (6, 6, 7)}, 3: {(7, 0, 0)}, 4: {(2, 8, 7)}},
    "c": {1: {(3, 2, 1)}, 2: {(1, 2, 3)}, 3: {(0, 8, 0), (5, 5, 1)}, 4: set()},
}


def as_voxels(flat):
    return {tuple(int(i) for i in np.unravel_index(f, SHAPE)) for f in flat}


def test_candidates_are_annotated_voxels_inside_the_mask():
    for case in make_cases():
        cand = sampling_candidates(case["label"], case.get("mask"))
        assert {c: as_voxels(v) for c, v in cand.items()} == EXPECTED[case["name"]]
    # MetaTensor and numpy inputs, integer label
    case = make_cases()[0]
    cand = sampling_candidates(MetaTensor(case["label"].long()), case["mask"].numpy(), classes=(4,))
    assert list(cand) == [4] and as_voxels(cand[4]) == {(5, 5, 5)}


def test_candidate_arguments_checked():
    with pytest.raises(ValueError, match=r"\[1, \*spatial\]"):
        sampling_candidates(torch.zeros(2, 4, 4, 4))
    with pytest.raises(ValueError, match="mask shape"):
        sampling_candidates(torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 4, 3))


def test_exactly_balanced_and_every_center_a_candidate_of_its_class():
    ds = ClassBalancedDataset(make_cases(), num_samples=400)
    ds.set_random_state(0)
    counts = Counter()
    for i in range(len(ds)):
        item = ds[i]
        c = item["center_class"]
        counts[c] += 1
        assert c == (1, 2, 3, 4)[i % 4]
        assert item["center"].dtype == torch.long and item["center"].shape == (3,)
        assert tuple(item["center"].tolist()) in EXPECTED[item["name"]][c]
        assert item["label"][(0, *item["center"].tolist())] == c
        assert "mask" not in item or item["mask"][(0, *item["center"].tolist())] == 1
        assert item["image"] is ds.data[["a", "b", "c"].index(item["name"])]["image"]  # not copied
    assert counts == {1: 100, 2: 100, 3: 100, 4: 100}


def test_uniform_over_cases_and_over_candidates():
    ds = ClassBalancedDataset(make_cases(), num_samples=4 * 3000)
    ds.set_random_state(1)
    per_case = {c: Counter() for c in (1, 2, 3, 4)}
    per_voxel = Counter()
    for i in range(len(ds)):
        item = ds[i]
        per_case[item["center_class"]][item["name"]] += 1
        if item["center_class"] == 3 and item["name"] == "c":
            per_voxel[tuple(item["center"].tolist())] += 1

    def chi2(observed, n_cells):
        total = sum(observed.values())
        expected = total / n_cells
        return sum((o - expected) ** 2 / expected for o in observed.values()) + (n_cells - len(observed)) * expected

    # class 1 is in all three cases: 1000 each expected; chi-square with 2 dof, 13.8 = p 0.001
    assert set(per_case[1]) == {"a", "b", "c"} and chi2(per_case[1], 3) < 13.8
    # class 4 is only in cases a and b: never c, 1500 each (1 dof, 10.8 = p 0.001)
    assert set(per_case[4]) == {"a", "b"} and chi2(per_case[4], 2) < 10.8
    # class 2 in case a has one candidate, in b two: the case is chosen first (uniform over cases, not voxels)
    assert chi2(per_case[2], 3) < 13.8
    # the two class-3 candidates of case c, about 500 each
    assert set(per_voxel) == {(0, 8, 0), (5, 5, 1)} and chi2(per_voxel, 2) < 10.8


def test_deterministic_for_a_seed_and_different_for_another():
    def draws(seed):
        ds = ClassBalancedDataset(make_cases(), num_samples=40)
        ds.set_random_state(seed)
        return [(ds[i]["name"], tuple(ds[i]["center"].tolist())) for i in range(40)]

    assert draws(3) == draws(3)
    assert draws(3) != draws(4)


class RecordDraw(Randomizable):
    """A random transform that adds one draw of its generator to the item."""

    def randomize(self, data=None):
        self.value = self.R.randint(1 << 30)

    def __call__(self, item):
        self.randomize()
        return {"center": item["center"], "center_class": item["center_class"], "draw": self.value}


def test_set_rnd_reaches_the_data_set_and_its_transform():
    a = ClassBalancedDataset(make_cases(), num_samples=8, transform=RecordDraw())
    b = ClassBalancedDataset(make_cases(), num_samples=8, transform=RecordDraw())
    set_rnd(a, 5)
    set_rnd(b, 5)
    # set_rnd seeded self.R with 5 (whose first draw went to seed the transform)
    reference = np.random.RandomState(5)
    assert a.transform.R.randint(1 << 30) == np.random.RandomState(reference.randint(MAX_SEED, dtype="uint32")).randint(
        1 << 30
    )
    assert a.R.randint(1 << 30) == reference.randint(1 << 30)
    set_rnd(a, 5)
    first = [a[i]["draw"] for i in range(8)]
    assert first == [b[i]["draw"] for i in range(8)]
    set_rnd(b, 6)
    assert first != [b[i]["draw"] for i in range(8)]
    # the transform's stream is not a copy of the data set's
    c = ClassBalancedDataset(make_cases(), num_samples=8, transform=RecordDraw())
    c.set_random_state(7)
    assert c.transform.R.randint(1 << 30) != np.random.RandomState(7).randint(1 << 30)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_pass_is_balanced(num_workers):
    ds = ClassBalancedDataset(make_cases(), num_samples=400, transform=RecordDraw())
    loader = DataLoader(ds, batch_size=8, shuffle=True, num_workers=num_workers)
    classes, draws = [], []
    for batch in loader:
        classes += batch["center_class"].tolist()
        draws += batch["draw"].tolist()
        assert batch["center"].shape == (8, 3)
    assert Counter(classes) == {1: 100, 2: 100, 3: 100, 4: 100}
    assert len(set(draws)) > 390  # the transform is seeded per worker, not repeating one stream


def test_picklable_with_its_index():
    ds = ClassBalancedDataset(make_cases(), num_samples=8)
    copy = pickle.loads(pickle.dumps(ds))
    assert as_voxels(copy.candidates(1)[2]) == EXPECTED["b"][2]
    copy.set_random_state(2)
    ds.set_random_state(2)
    assert [copy[i]["center"].tolist() for i in range(8)] == [ds[i]["center"].tolist() for i in range(8)]


def test_lazy_index():
    cases = make_cases()
    ds = ClassBalancedDataset(cases, num_samples=8, precompute=False)
    assert ds._candidates is None
    assert ds[0]["center_class"] == 1
    assert ds._candidates is not None


def test_arguments_checked():
    with pytest.raises(ValueError, match="multiple of the 4 classes"):
        ClassBalancedDataset(make_cases(), num_samples=402)
    with pytest.raises(ValueError, match="distinct non-zero"):
        ClassBalancedDataset(make_cases(), classes=(0, 1))
    with pytest.raises(ValueError, match="distinct non-zero"):
        ClassBalancedDataset(make_cases(), classes=(1, 1))
    with pytest.raises(ValueError, match="at least one case"):
        ClassBalancedDataset([])
    with pytest.raises(IndexError):
        ClassBalancedDataset(make_cases(), num_samples=4)[4]


def test_class_absent_from_all_cases_names_class_and_cases():
    cases = make_cases()
    with pytest.raises(ValueError, match=r"\[5\].*3 cases: 0, 1, 2"):
        ClassBalancedDataset(cases, num_samples=5, classes=(1, 2, 3, 4, 5))
    # class 4 only outside the mask of case a and absent elsewhere
    cases = [cases[0], cases[2]]
    cases[0]["label"][cases[0]["label"] == 4] = 0
    cases[0]["label"][0, 9, 5, 5] = 4
    cases[0]["label"] = MetaTensor(cases[0]["label"], meta={"filename_or_obj": "case_a.nii.gz"})
    with pytest.raises(ValueError, match=r"\[4\].*inside the mask.*0 \(case_a\.nii\.gz\), 1"):
        ClassBalancedDataset(cases, num_samples=4)
    # it is only an error when the candidates are looked for
    lazy = ClassBalancedDataset(cases, num_samples=4, precompute=False)
    with pytest.raises(ValueError, match=r"\[4\]"):
        lazy.prepare()
