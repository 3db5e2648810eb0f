"""Tests for common.phantoms.head_ct: the non-contrast head CT phantom with eleven neuroanatomical labels.

Orientation used in the assertions: arrays are [X, Y, Z] with a RAS+ affine diag(spacing) centred on 0, so a larger
x index is further to the patient's RIGHT, a larger y index more ANTERIOR, a larger z index more SUPERIOR.
Expected numbers come from the paper (Cai et al. 2020, Radiology: AI, "Terminology": BC, CE, SS and VS are 10.8 %,
2.3 %, 1.3 % and 0.6 % of all voxels, the small classes 0.01-0.28 %, background 85.5 %; the iNPH set's "severe
ventriculomegaly"), from the CT literature typed here (unenhanced brain CT: white matter 22-30 HU, grey matter
about 35-40 HU, a grey-white gap of a few HU, CSF 0-15 HU, dura and venous sinuses denser than the brain, bone
several hundred to 1500 HU; an Evans index above 0.3 in hydrocephalus), or from hand computation, never from the
generator's own constants.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

import common.phantoms.head_ct as head_ct
from common.phantoms import PHANTOM_TASKS, get_task, make_dataset
from common.phantoms.head_ct import generate_head_ct, generate_head_ct_dense

TASK = "head_ct_neuroanatomy"
SMALL = {"shape": (64, 64, 24), "spacing": (3.6, 3.6, 25.0 / 3.0)}  # the default 230 x 230 x 200 mm field of view
NAMES = {
    0: "background",
    1: "brainstem and cerebrum",
    2: "caudate nucleus",
    3: "central sulcus",
    4: "cerebellum",
    5: "dural folds and venous sinuses",
    6: "insular cortex",
    7: "internal capsule",
    8: "lentiform nucleus",
    9: "septum pellucidum",
    10: "subarachnoid space",
    11: "ventricular system",
}
BG, BC, CN, CS, CE, DV, CO, CA, LN, SP, SS, VS = range(12)
# the paper's share of all voxels (%), "Terminology"
PAPER_LARGE = {BC: 10.8, CE: 2.3, SS: 1.3, VS: 0.6}
PAPER_BACKGROUND = 85.5
SMALL_CLASSES = (CN, CS, DV, CO, CA, LN, SP)
# tissue codes of the dense output
BONE, SOFT, WM, GM, BLOOD = 2, 1, 4, 5, 8


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _fractions(label: np.ndarray) -> np.ndarray:
    """Percentage of all voxels per label value 0-11."""
    return 100.0 * np.bincount(label.ravel(), minlength=12) / label.size


def _erode_in_plane(mask: np.ndarray) -> np.ndarray:
    """One step of erosion by the in-plane 4-neighbourhood (the slices are thick; outside counts as background)."""
    out = mask.copy()
    for axis in (0, 1):
        out &= np.roll(mask, 1, axis) & np.roll(mask, -1, axis)
        edge = [slice(None)] * 3
        for index in (0, -1):
            edge[axis] = index
            out[tuple(edge)] = False
    return out


def _world(shape, spacing) -> np.ndarray:
    """World coordinates (mm) of every voxel centre, ``[X, Y, Z, 3]``, for the centred affine diag(spacing)."""
    axes = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing, strict=True)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def _evans_index(label: np.ndarray, spacing) -> float:
    """Largest left-right width of the frontal horns over the largest inner width of the cranial cavity.

    The frontal horns are the ventricle voxels more than 20 mm anterior to the ventricular system's centroid and
    less than 10 mm below it (leaving out the temporal horns); the cranial cavity's width is that of the labelled
    (intracranial) voxels.
    """
    world = _world(label.shape, spacing)
    vs = label == VS
    center = world[vs].mean(axis=0)
    front = vs & (world[..., 1] > center[1] + 20.0) & (world[..., 2] > center[2] - 10.0)
    widths, cavity = [], []
    for k in range(label.shape[2]):
        for mask, out in ((front[:, :, k], widths), (label[:, :, k] > 0, cavity)):
            xs = np.flatnonzero(mask.any(axis=1))
            out.append((xs.max() - xs.min() + 1) * spacing[0] if xs.size else 0.0)
    return max(widths) / max(cavity)


@pytest.fixture(scope="module")
def normal_cases():
    """Three default-size cases with their ground truth."""
    return [generate_head_ct_dense(_rng(seed)) for seed in range(3)]


@pytest.fixture(scope="module")
def enlarged_cases():
    """The same three heads with enlarged ventricles."""
    return [generate_head_ct_dense(_rng(seed), enlarged_ventricles=1.0) for seed in range(3)]


# ---- the declaration and the output contract ----


def test_task_declaration():
    task = get_task(TASK)
    assert TASK in PHANTOM_TASKS and task is head_ct.PHANTOM_TASK
    assert dict(task.labels) == NAMES == head_ct.HEAD_CT_LABELS
    assert head_ct.ABBREVIATIONS == {
        1: "BC",
        2: "CN",
        3: "CS",
        4: "CE",
        5: "DV",
        6: "CO",
        7: "CA",
        8: "LN",
        9: "SP",
        10: "SS",
        11: "VS",
    }
    assert task.dicom_modality == "CT" and task.supports_dicom
    assert task.spatial_dims == 3 and task.n_channels == 1 and dict(task.modality) == {"0": "CT"}
    assert task.ignore_value is None and not task.masks
    assert task.fields == ("enlarged_ventricles", "ventricle_volume_ml")
    defaults = dict(task.defaults)
    assert set(defaults) == {"shape", "spacing", "enlarged_ventricles"} and defaults["enlarged_ventricles"] == 0.0
    fov = np.multiply(defaults["shape"], defaults["spacing"])
    # a routine head CT: a 220-250 mm display field of view, 4-5 mm axial slices, skull base to vertex
    assert 220.0 <= fov[0] == fov[1] <= 250.0 and 4.0 <= defaults["spacing"][2] <= 5.0 and 150.0 <= fov[2] <= 220.0
    json.dumps(defaults)  # the defaults go into dataset.json
    assert "Cai" in task.description
    for section in ("Terminology", "Secondary test datasets", "RAS+"):
        assert section in head_ct.__doc__


def test_output_types_and_shapes():
    case = get_task(TASK).generate(_rng(0), **SMALL)  # checked against the declaration by the registry
    assert case.image.shape == SMALL["shape"] and case.image.dtype == np.int16
    assert case.label.shape == SMALL["shape"] and case.label.dtype == np.uint8
    assert set(case.fields) == {"enlarged_ventricles", "ventricle_volume_ml"}
    assert case.fields["enlarged_ventricles"] is False and isinstance(case.fields["ventricle_volume_ml"], float)
    out = generate_head_ct(_rng(0), **SMALL)
    assert set(out) == {"image", "label", "enlarged_ventricles", "ventricle_volume_ml"}
    assert out["image"].flags["C_CONTIGUOUS"] and out["label"].flags["C_CONTIGUOUS"]
    voxel_ml = np.prod(SMALL["spacing"]) / 1000.0
    assert out["ventricle_volume_ml"] == pytest.approx(np.sum(out["label"] == VS) * voxel_ml, abs=0.051)


def test_dense_function_draws_the_same_case():
    dense = generate_head_ct_dense(_rng(5), **SMALL)
    plain = generate_head_ct(_rng(5), **SMALL)
    for key in plain:
        assert np.array_equal(dense[key], plain[key]), key


def test_deterministic_per_seed():
    a = generate_head_ct(_rng(3), **SMALL)
    b = generate_head_ct(_rng(3), **SMALL)
    c = generate_head_ct(_rng(4), **SMALL)
    for key in ("image", "label"):
        assert a[key].tobytes() == b[key].tobytes(), key
    assert a["image"].tobytes() != c["image"].tobytes()
    assert (a["label"] != c["label"]).mean() > 0.01  # the anatomy differs, not only the noise


def test_every_label_in_a_default_case(normal_cases, enlarged_cases):
    for case in [*normal_cases, *enlarged_cases]:
        assert case["image"].shape == (128, 128, 40) and case["label"].shape == (128, 128, 40)
        assert set(np.unique(case["label"]).tolist()) == set(range(12))
    # and on the coarse test grid
    assert set(np.unique(generate_head_ct(_rng(1), **SMALL)["label"]).tolist()) == set(range(12))


# ---- class imbalance (the paper's "Terminology") ----


def test_class_fractions_near_the_paper(normal_cases):
    per_case = np.array([_fractions(case["label"]) for case in normal_cases])
    mean = per_case.mean(axis=0)
    assert abs(mean[BG] - PAPER_BACKGROUND) <= 5.0, mean[BG]
    for value, paper in PAPER_LARGE.items():
        assert paper / 2.0 <= mean[value] <= 2.0 * paper, (NAMES[value], mean[value], paper)
    # the large classes in the paper's order of size, every small class below them
    assert mean[BC] > mean[CE] > mean[SS] > mean[VS] > max(mean[k] for k in SMALL_CLASSES)
    for value in SMALL_CLASSES:
        assert np.all(per_case[:, value] >= 0.005), (NAMES[value], per_case[:, value])
        assert np.all(per_case[:, value] < 0.5), (NAMES[value], per_case[:, value])
        assert 0.01 <= mean[value] <= 0.35, (NAMES[value], mean[value])
    # as hard an imbalance as the paper's: the largest structure is hundreds of times the smallest
    assert mean[BC] / min(mean[k] for k in SMALL_CLASSES) > 100.0


# ---- anatomy ----


def test_structures_at_their_anatomical_positions(normal_cases):
    spacing = head_ct.DEFAULT_SPACING
    for case in normal_cases:
        label = case["label"]
        world = _world(label.shape, spacing)
        mid = world[label > 0][:, 0].mean()  # the head's midline, from the intracranial voxels
        centroid = {value: world[label == value].mean(axis=0) for value in range(1, 12)}
        lateral = {value: float(np.abs(world[label == value][:, 0] - mid).mean()) for value in range(1, 12)}
        bc, ce = centroid[BC], centroid[CE]
        assert ce[1] < bc[1] - 30.0 and ce[2] < bc[2] - 30.0  # cerebellum posterior and inferior
        assert centroid[CS][2] > centroid[VS][2] + 25.0 and lateral[CS] > 20.0  # central sulcus high and lateral
        assert lateral[SP] < 4.0 and abs(centroid[VS][0] - mid) < 4.0  # septum and ventricles in the midline
        assert centroid[SP][1] > centroid[VS][1]  # the septum between the frontal horns and bodies
        # basal ganglia level from medial to lateral: caudate and internal capsule, lentiform nucleus, insula
        assert lateral[CN] < lateral[LN] and lateral[CA] < lateral[LN] < lateral[CO]
        assert centroid[CN][1] > centroid[LN][1] + 3.0  # the caudate head in front
        for value in (CN, CA, LN, CO):
            right = np.sum((label == value) & (world[..., 0] > mid))
            left = np.sum((label == value) & (world[..., 0] < mid))
            assert 1 / 3 <= right / left <= 3.0, (NAMES[value], right, left)  # a few 5 mm slices: coarse counts
        dv = world[label == DV]
        assert np.mean(np.abs(dv[:, 0] - mid) < 10.0) > 0.5  # falx and sagittal sinuses in the midline
        # the subarachnoid space lies outside the parenchyma: further from the brain's centre on average
        distance = {v: np.linalg.norm(world[label == v] - bc, axis=1).mean() for v in (BC, SS)}
        assert distance[SS] > distance[BC]


def test_head_outside_and_air(normal_cases):
    for case in normal_cases:
        image, label, tissue = case["image"], case["label"], case["tissue"]
        assert np.median(image[:4, :4, -4:]) < -950  # air in a top corner
        bone = image[tissue == BONE]
        assert bone.size * np.prod(head_ct.DEFAULT_SPACING) / 1e3 > 200.0  # > 200 mL of skull
        # cortical bone several hundred to 1500 HU, with a less dense diploe between the tables
        assert 500.0 <= np.median(bone) <= 1200.0 and 1000.0 <= np.percentile(bone, 95) <= 1700.0
        assert 15.0 <= np.median(image[tissue == SOFT]) <= 60.0  # scalp and face soft tissue
        assert np.all(tissue[label > 0] != BONE)  # the labels are intracranial
        assert np.median(image[label > 0]) < 45.0


# ---- intensities and noise ----


def test_hounsfield_values(normal_cases):
    for case in normal_cases:
        image, label, tissue = case["image"].astype(np.float64), case["label"], case["tissue"]
        wm = float(np.median(image[_erode_in_plane((tissue == WM) & (label == BC))]))
        gm = float(np.median(image[_erode_in_plane((tissue == GM) & (label == BC))]))
        lentiform = float(np.median(image[_erode_in_plane(label == LN)]))
        csf = float(np.median(image[_erode_in_plane(label == VS)]))
        dv = float(np.median(image[label == DV]))
        sinus = float(np.median(image[(label == DV) & (tissue == BLOOD)]))
        assert 21.0 <= wm <= 32.0, wm
        assert 31.0 <= gm <= 43.0, gm
        assert 3.0 <= gm - wm <= 13.0, (gm, wm)  # a grey-white contrast of a few HU
        assert wm < lentiform <= gm + 3.0, (wm, lentiform, gm)  # deep grey nuclei are grey-like
        assert 0.0 <= csf <= 15.0, csf
        assert 40.0 <= dv <= 75.0 and 45.0 <= sinus <= 75.0 and dv >= wm + 10.0, (dv, sinus, wm)
        sigma = 1.4826 * np.median(np.abs(image[(tissue == WM) & (label == BC)] - wm))
        assert 3.5 <= sigma <= 9.0, sigma  # noise of a routine head CT


def test_cases_vary(normal_cases):
    wm = [float(np.median(c["image"][(c["tissue"] == WM) & (c["label"] == BC)])) for c in normal_cases]
    vs = [c["ventricle_volume_ml"] for c in normal_cases]
    assert max(wm) - min(wm) >= 1.0 and max(vs) > 1.1 * min(vs)
    # size: the labelled (intracranial) volume differs between cases
    volumes = [np.count_nonzero(c["label"]) for c in normal_cases]
    assert max(volumes) > 1.02 * min(volumes)


# ---- enlarged ventricles (the paper's iNPH test set) ----


def test_enlarged_ventricles(normal_cases, enlarged_cases):
    spacing = head_ct.DEFAULT_SPACING
    normal = np.array([_fractions(c["label"])[VS] for c in normal_cases])
    enlarged = np.array([_fractions(c["label"])[VS] for c in enlarged_cases])
    assert np.median(enlarged) > 2.5 * np.median(normal), (enlarged, normal)
    assert np.all(enlarged > 2.0 * normal) and np.all(enlarged < 7.0 * normal), (enlarged, normal)
    for a, b in zip(normal_cases, enlarged_cases, strict=True):
        assert a["enlarged_ventricles"] is False and b["enlarged_ventricles"] is True
        assert b["ventricle_volume_ml"] > 2.0 * a["ventricle_volume_ml"] and 80.0 <= b["ventricle_volume_ml"] <= 400
        assert 15.0 <= a["ventricle_volume_ml"] <= 90.0  # elderly adults
        # Evans index: normal below 0.3, ventriculomegaly above
        assert _evans_index(a["label"], spacing) < 0.3 < _evans_index(b["label"], spacing)
        # the same head: the posterior fossa, scalp and skull are unchanged
        ce_a, ce_b = a["label"] == CE, b["label"] == CE
        assert np.sum(ce_a ^ ce_b) < 0.05 * np.sum(ce_a)
        assert np.array_equal(a["tissue"] == BONE, b["tissue"] == BONE)
        # the caudate nuclei are pushed aside, not effaced
        world = _world(a["label"].shape, spacing)
        mid = world[a["label"] > 0][:, 0].mean()
        cn_a = np.abs(world[a["label"] == CN][:, 0] - mid).mean()
        cn_b = np.abs(world[b["label"] == CN][:, 0] - mid).mean()
        assert cn_b > cn_a + 3.0 and np.sum(b["label"] == CN) > 0.5 * np.sum(a["label"] == CN)


def test_enlarged_ventricles_probability():
    cases = [generate_head_ct(_rng(seed), enlarged_ventricles=0.5, **SMALL) for seed in range(10)]
    flags = [c["enlarged_ventricles"] for c in cases]
    assert 0 < sum(flags) < len(flags), flags
    volume = {flag: [c["ventricle_volume_ml"] for c in cases if c["enlarged_ventricles"] == flag] for flag in (0, 1)}
    assert min(volume[1]) > max(volume[0]), volume
    assert not any(generate_head_ct(_rng(s), enlarged_ventricles=False, **SMALL)["enlarged_ventricles"] for s in (0, 1))
    assert all(generate_head_ct(_rng(s), enlarged_ventricles=True, **SMALL)["enlarged_ventricles"] for s in (0, 1))


# ---- arguments and the data set writer ----


def test_bad_arguments():
    for kwargs, error in (
        ({"shape": (64, 64)}, ValueError),
        ({"shape": (64, 64, 0)}, ValueError),
        ({"shape": (64.0, 64, 24)}, ValueError),
        ({"spacing": (3.6, -1.0, 8.0)}, ValueError),
        ({"spacing": (3.6, float("nan"), 8.0)}, ValueError),
        ({"spacing": (3.6, 3.6)}, ValueError),
        ({"enlarged_ventricles": 1.5}, ValueError),
        ({"enlarged_ventricles": -0.1}, ValueError),
        ({"enlarged_ventricles": float("nan")}, ValueError),
        ({"enlarged_ventricles": "yes"}, TypeError),
        ({"enlarged_ventricles": None}, TypeError),
    ):
        with pytest.raises(error):
            generate_head_ct(_rng(0), **{**SMALL, **kwargs})
    with pytest.raises(TypeError, match="generator arguments"):
        make_dataset(TASK, "unused", n_cases=1, ventricles=2.0)


def test_make_dataset_writes_nifti_that_reload_with_the_affine(tmp_path):
    datalist = make_dataset(TASK, tmp_path / "primary", n_cases=1, n_validation=1, n_test=1, seed=3, **SMALL)
    content = json.loads(datalist.read_text())
    assert content["labels"] == {str(k): v for k, v in NAMES.items()}
    assert content["tensorImageSize"] == "3D" and content["modality"] == {"0": "CT"}
    assert content["phantom"]["generator_kwargs"]["enlarged_ventricles"] == 0.0
    # the centred RAS+ affine, by hand: diag(spacing), the volume's centre at world 0
    sx, sy, sz = SMALL["spacing"]
    expected = np.array([[sx, 0, 0, -31.5 * sx], [0, sy, 0, -31.5 * sy], [0, 0, sz, -11.5 * sz], [0, 0, 0, 1]])
    for split, stream in (("training", 0), ("validation", 1), ("test", 2)):
        (entry,) = content[split]
        assert entry["enlarged_ventricles"] is False and entry["ventricle_volume_ml"] > 0
        image = nib.load(datalist.parent / entry["image"])
        label = nib.load(datalist.parent / entry["label"])
        assert image.shape == label.shape == SMALL["shape"]
        assert image.get_data_dtype() == np.int16 and label.get_data_dtype() == np.uint8
        for img in (image, label):
            np.testing.assert_allclose(img.affine, expected, atol=1e-4)
            assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        # the file holds the case of this split's seed stream
        rng = np.random.default_rng(np.random.SeedSequence(entropy=3, spawn_key=(stream, 0)))
        case = generate_head_ct(rng, **SMALL)
        assert np.array_equal(np.asarray(image.dataobj), case["image"])
        assert np.array_equal(np.asarray(label.dataobj), case["label"])
        assert entry["ventricle_volume_ml"] == case["ventricle_volume_ml"]

    # the secondary (iNPH-like) test set: a second call, the same heads with enlarged ventricles
    secondary = make_dataset(TASK, tmp_path / "inph", n_cases=1, n_test=1, seed=3, enlarged_ventricles=1.0, **SMALL)
    inph = json.loads(secondary.read_text())
    assert inph["phantom"]["generator_kwargs"]["enlarged_ventricles"] == 1.0
    assert all(entry["enlarged_ventricles"] is True for entry in inph["training"] + inph["test"])
    assert inph["test"][0]["ventricle_volume_ml"] > 2.0 * content["test"][0]["ventricle_volume_ml"]
