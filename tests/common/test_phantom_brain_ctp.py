"""Tests for common.phantoms.brain_ctp: the 4D CT perfusion phantom of the brain with sparse 2D annotations.

Orientation used in the assertions: arrays are [X, Y, Z] (image [X, Y, Z, 19]) with a RAS+ affine diag(spacing)
centred on 0. Expected values come from the task's specification and the CT literature, typed here (unenhanced
brain CT: white matter 25-30 HU, grey matter 33-38 HU, CSF 5-10 HU, blood about 40 HU; first-pass peaks of about
+300-500 HU in arteries, +10-20 HU in grey and +4-8 HU in white matter; 80 mL bolus, arteries peaking around
18-22 s, veins 4-6 s later), or from hand computation, never from the generator's own constants.
"""

from __future__ import annotations

import itertools
import json

import nibabel as nib
import numpy as np
import pytest

from common.phantoms import PHANTOM_TASKS, get_task, make_dataset
from common.phantoms.brain_ctp import generate_brain_ctp, generate_brain_ctp_dense, rigidly_move_volume
from common.phantoms.drawing import rotation_matrix

TASK = "brain_ctp_tissue"
SMALL = {"shape": (48, 56, 48), "spacing": (4.0, 4.0, 4.0)}  # the default 192 x 224 x 192 mm field of view
N_FRAMES = 19
# Frame times of the phantom's protocol (s): baseline, 13 frames every 2 s from 8 s, 5 frames every 5 s from 37 s.
FRAME_TIMES = [0.0, *range(8, 33, 2), *range(37, 58, 5)]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _best_threshold_accuracy(a: np.ndarray, b: np.ndarray) -> float:
    """Best balanced accuracy of one threshold separating samples ``a`` from ``b`` (either direction)."""
    values = np.concatenate([a, b])
    is_a = np.concatenate([np.ones(a.size, bool), np.zeros(b.size, bool)])
    order = np.argsort(values, kind="stable")
    below_a = np.cumsum(is_a[order]) / a.size
    below_b = np.cumsum(~is_a[order]) / b.size
    acc = 0.5 * (below_a + (1 - below_b))
    return float(max(acc.max(), (1 - acc).max()))


def _annotated_planes(label: np.ndarray) -> list[tuple[int, int]] | None:
    """The fewest axis-aligned planes (at most one per axis) holding every annotated voxel, or None."""
    where = np.argwhere(label > 0)
    if where.size == 0:
        return None
    # a plane holds >= 10 % of its voxels; lines where other planes cross it hold at most one row each
    best = [int(np.bincount(where[:, a]).argmax()) for a in range(3)]
    for size in (1, 2, 3):
        for axes in itertools.combinations(range(3), size):
            if np.all(np.any([where[:, a] == best[a] for a in axes], axis=0)):
                return [(a, best[a]) for a in axes]
    return None


def _plane(axis: int, index: int) -> tuple:
    sl = [slice(None)] * 3
    sl[axis] = index
    return tuple(sl)


@pytest.fixture(scope="module")
def small_cases():
    """Eight small cases with their dense ground truth."""
    return [generate_brain_ctp_dense(_rng(seed), **SMALL) for seed in range(8)]


@pytest.fixture(scope="module")
def default_case():
    """One case at the default size (2 mm voxels)."""
    return generate_brain_ctp_dense(_rng(11))


# ---- the declaration and the output contract ----


def test_task_declaration():
    task = get_task(TASK)
    assert TASK in PHANTOM_TASKS
    assert task.n_channels == N_FRAMES and task.channel_layout == "last" and task.spatial_dims == 3
    assert task.dicom_modality == "CT" and not task.supports_dicom
    assert dict(task.labels) == {0: "not annotated", 1: "CSF", 2: "white matter", 3: "grey matter", 4: "vessel"}
    assert task.ignore_value == 0
    assert dict(task.masks) == {"mask": "cranial cavity"}
    assert list(task.modality) == [str(t) for t in range(N_FRAMES)]
    assert {"shape", "spacing", "motion_mm", "n_sections"} <= set(task.defaults)
    assert task.defaults["motion_mm"] == 0.0
    assert "Sec. III" in task.description
    json.dumps(dict(task.defaults))  # the defaults go into dataset.json


def test_output_types_and_shapes():
    case = get_task(TASK).generate(_rng(0), **SMALL)  # checked against the declaration by the registry
    assert case.image.shape == (*SMALL["shape"], N_FRAMES) and case.image.dtype == np.int16
    assert case.label.shape == SMALL["shape"] and case.label.dtype == np.uint8
    assert set(np.unique(case.label)) <= {0, 1, 2, 3, 4}
    assert set(case.masks) == {"mask"} and set(np.unique(case.masks["mask"])) == {0, 1}
    out = generate_brain_ctp(_rng(0), **SMALL)
    assert set(out) == {"image", "label", "mask"}
    assert out["image"].flags["C_CONTIGUOUS"]


def test_default_shape(default_case):
    image = default_case["image"]
    assert image.shape == (96, 112, 96, N_FRAMES)
    assert set(np.unique(default_case["label"])) == {0, 1, 2, 3, 4}


def test_dense_function_draws_the_same_case():
    dense = generate_brain_ctp_dense(_rng(5), **SMALL)
    plain = generate_brain_ctp(_rng(5), **SMALL)
    for key in ("image", "label", "mask"):
        assert np.array_equal(dense[key], plain[key]), key


def test_deterministic_per_seed():
    a = generate_brain_ctp(_rng(3), **SMALL)
    b = generate_brain_ctp(_rng(3), **SMALL)
    c = generate_brain_ctp(_rng(4), **SMALL)
    for key in ("image", "label", "mask"):
        assert a[key].tobytes() == b[key].tobytes(), key
    assert a["image"].tobytes() != c["image"].tobytes()
    assert (a["mask"] != c["mask"]).mean() > 0.005  # the anatomy differs, not only the noise


# ---- anatomy and sparse annotations ----


def test_cranial_cavity_volume_and_head_values(small_cases):
    voxel_l = np.prod(SMALL["spacing"]) / 1e6
    for case in small_cases:
        # adult intracranial volume about 1.1-1.9 L
        assert 1.1 <= case["mask"].sum() * voxel_l <= 1.95
        t0 = case["image"][..., 0]
        assert np.median(t0[:3, :3, -3:]) < -950  # air in a top corner
        assert (t0 > 700).sum() * voxel_l > 0.1  # > 100 mL of skull at bone values
        assert t0.max() >= 1000
        # the dense label covers the cavity and nothing else
        assert np.array_equal(case["dense_label"] > 0, case["mask"] > 0)


def test_annotations_on_one_to_three_planes_inside_the_mask(small_cases):
    counts = set()
    for case in small_cases:
        label, mask = case["label"], case["mask"]
        planes = _annotated_planes(label)
        assert planes is not None and 1 <= len(planes) <= 3
        counts.add(len(planes))
        assert sorted(planes) == sorted(case["sections"])
        assert np.all(mask[label > 0] == 1)
        for axis, index in planes:
            sl = _plane(axis, index)
            # the paper's rule: at least 10 % of the cross section inside the (annotation) mask
            assert mask[sl].mean() >= 0.10
            # every annotation-region voxel of the plane is labelled, with its dense label
            region = case["annotation_region"][sl]
            assert np.array_equal(label[sl], np.where(region, case["dense_label"][sl], 0))
        # nothing below the tentorium: the lowest annotated voxels are above the lowest cavity voxels
        assert np.argwhere(label > 0)[:, 2].min() > np.argwhere(mask > 0)[:, 2].min() + 2
    assert len(counts) >= 2  # the number of sections varies between cases


def test_every_class_on_the_annotated_planes_in_most_cases(small_cases):
    present = np.zeros(5)
    for case in small_cases:
        present += np.bincount(case["label"].ravel(), minlength=5) > 0
    assert np.all(present[1:] >= 0.8 * len(small_cases)), present


def test_n_sections_argument():
    for seed in range(3):
        assert len(generate_brain_ctp_dense(_rng(seed), n_sections=1, **SMALL)["sections"]) == 1
        sections = generate_brain_ctp_dense(_rng(seed), n_sections=(3, 3), **SMALL)["sections"]
        assert sorted(a for a, _ in sections) == [0, 1, 2]


def test_posterior_fossa_annotated_when_asked():
    kept = generate_brain_ctp_dense(_rng(2), exclude_posterior_fossa=False, **SMALL)
    left = generate_brain_ctp_dense(_rng(2), **SMALL)
    assert kept["annotation_region"].sum() > 1.08 * left["annotation_region"].sum()
    assert np.all(left["annotation_region"] <= kept["annotation_region"])


# ---- contrast passage, intensities and noise ----


def _pure(case, value: int, purity: float = 0.9) -> np.ndarray:
    return (case["dense_label"] == value) & (case["purity"] >= purity)


def test_unenhanced_values(default_case, small_cases):
    for case in [default_case, *small_cases[:3]]:
        base = case["image"][..., :2].astype(np.float64).mean(axis=-1)  # frames at 0 and 8 s: before arrival
        wm = float(np.median(base[_pure(case, 2)]))
        gm = float(np.median(base[_pure(case, 3)]))
        csf = float(np.median(base[_pure(case, 1, 0.95)]))
        assert 24.0 <= wm <= 31.0, wm
        assert 32.0 <= gm <= 39.0, gm
        assert 4.0 <= gm - wm <= 9.0, (gm, wm)
        assert 2.0 <= csf <= 13.0, csf


def test_arteries_peak_before_veins(small_cases, default_case):
    for case in [default_case, *small_cases]:
        image = case["image"].astype(np.float64)
        artery = image[case["artery"]].mean(axis=0)
        vein = image[case["vein"]].mean(axis=0)
        a_peak, v_peak = int(artery.argmax()), int(vein.argmax())
        assert 6 <= a_peak <= 8, a_peak  # 18-22 s
        assert 8 <= v_peak <= 11, v_peak
        assert v_peak > a_peak
        # unenhanced blood (about 40 HU, blurred with its surroundings) before the bolus
        assert 15.0 <= artery[0] <= 70.0 and 15.0 <= vein[0] <= 70.0


def test_vessel_peak_enhancement(default_case):
    image = default_case["image"].astype(np.float64)
    vessel = default_case["dense_label"] == 4
    rise = image[vessel].max(axis=1) - image[vessel][:, 0]
    assert np.percentile(rise, 95) >= 280.0  # the lumen of the large vessels: +300-500 HU
    assert np.percentile(rise, 95) <= 650.0


def test_grey_matter_enhances_more_than_white_and_csf_not_at_all(default_case, small_cases):
    for case in [default_case, *small_cases[:3]]:
        image = case["image"].astype(np.float64)
        curves = {k: image[_pure(case, k, 0.95 if k == 1 else 0.9)].mean(axis=0) for k in (1, 2, 3)}
        rise = {k: c - c[:2].mean() for k, c in curves.items()}
        assert rise[3].mean() > rise[2].mean() + 1.0
        assert 8.0 <= rise[3].max() <= 23.0, rise[3].max()
        assert 2.0 <= rise[2].max() <= 11.0, rise[2].max()
        csf = image[_pure(case, 1, 0.95)]
        assert abs(float(np.median(csf[:, 5:12].mean(axis=1) - csf[:, :2].mean(axis=1)))) < 3.0


def test_single_frame_noise_exceeds_the_grey_white_gap(small_cases):
    sample = np.random.default_rng(0)
    for case in small_cases[:4]:
        image = case["image"].astype(np.float64)
        gm, wm = image[_pure(case, 3)], image[_pure(case, 2)]
        gm = gm[sample.choice(len(gm), min(len(gm), 3000), replace=False)]
        wm = wm[sample.choice(len(wm), min(len(wm), 3000), replace=False)]
        gap = abs(np.median(gm[:, 0]) - np.median(wm[:, 0]))
        # noise sigma in each frame from the robust spread of pure white matter (enhancement is uniform there)
        sigma = 1.4826 * np.median(np.abs(wm - np.median(wm, axis=0)), axis=0)
        assert np.all(sigma > gap), (sigma.min(), gap)
        assert sigma.max() > 1.2 * sigma.min()  # exposures differ between time points
        single = [_best_threshold_accuracy(gm[:, t], wm[:, t]) for t in range(N_FRAMES)]
        temporal = _best_threshold_accuracy(gm.mean(axis=1), wm.mean(axis=1))
        assert single[0] < 0.7 and np.mean(single) < 0.7, single
        assert temporal > 0.8, temporal


# ---- head motion ----


def test_rigidly_move_volume_hand_cases():
    volume = np.arange(6 * 7 * 5, dtype=np.float32).reshape(6, 7, 5)
    # +2 mm along x on a 2 mm grid: one voxel; the first slice comes from outside
    moved = rigidly_move_volume(volume, (2.0, 3.0, 4.0), np.eye(3), (2.0, 0.0, 0.0), fill=-5.0)
    np.testing.assert_allclose(moved[1:], volume[:-1], atol=1e-4)
    np.testing.assert_allclose(moved[0], -5.0, atol=1e-4)
    moved = rigidly_move_volume(volume, (2.0, 3.0, 4.0), np.eye(3), (0.0, -3.0, 4.0))
    np.testing.assert_allclose(moved[:, :-1, 1:], volume[:, 1:, :-1], atol=1e-4)
    # 90 degrees about z around the centre: a point on +x goes to +y (RAS: right -> anterior)
    dot = np.zeros((5, 5, 3), np.float32)
    dot[4, 2, 1] = 1.0
    moved = rigidly_move_volume(dot, (1.0, 1.0, 1.0), rotation_matrix((0.0, 0.0, 90.0)), (0.0, 0.0, 0.0))
    assert [tuple(p) for p in np.argwhere(moved > 0.5)] == [(2, 4, 1)]
    # the same rotation about the point (1, 0, 0) mm: (2, 0, 0) -> (1, 1, 0) -> voxel (3, 3)
    moved = rigidly_move_volume(dot, (1.0, 1.0, 1.0), rotation_matrix((0.0, 0.0, 90.0)), (0, 0, 0), (1.0, 0, 0))
    assert [tuple(p) for p in np.argwhere(moved > 0.5)] == [(3, 3, 1)]
    with pytest.raises(ValueError, match="X, Y, Z"):
        rigidly_move_volume(volume[0], (1.0, 1.0), np.eye(3), (0.0, 0.0))


def test_motion_moves_later_frames_only():
    still = generate_brain_ctp_dense(_rng(6), **SMALL)
    moving = generate_brain_ctp_dense(_rng(6), motion_mm=3.0, **SMALL)
    assert np.array_equal(still["image"][..., 0], moving["image"][..., 0])
    assert np.array_equal(still["label"], moving["label"]) and np.array_equal(still["mask"], moving["mask"])
    checked = 0
    for t in range(1, N_FRAMES):
        rotation, translation = moving["motion"][t - 1]
        angle = np.degrees(np.arccos(np.clip((np.trace(rotation) - 1) / 2, -1, 1)))
        assert angle <= 3.0 + 1e-6 and np.linalg.norm(translation) <= 3.0 + 1e-6
        if np.linalg.norm(translation) < 1.5:
            continue
        checked += 1
        moved = moving["image"][..., t].astype(np.float64)
        free = still["image"][..., t].astype(np.float64)
        realigned = rigidly_move_volume(free, SMALL["spacing"], rotation, translation, moving["motion_center"], -1000)
        # the same noise was added after the motion: moving the still frame explains the moving one up to noise
        error_moved = np.sqrt(np.mean((moved - realigned) ** 2))
        error_still = np.sqrt(np.mean((moved - free) ** 2))
        assert error_moved < 0.5 * error_still, (t, error_moved, error_still)
        assert error_still > 30.0
    assert checked >= 3


# ---- arguments and the data set writer ----


def test_bad_arguments():
    for kwargs, error in (
        ({"motion_mm": -1.0}, ValueError),
        ({"motion_mm": "1"}, TypeError),
        ({"n_sections": (2, 1)}, ValueError),
        ({"n_sections": (0, 2)}, ValueError),
        ({"n_sections": (1, 4)}, ValueError),
        ({"n_sections": 1.5}, TypeError),
        ({"shape": (48, 56)}, ValueError),
        ({"spacing": (4.0, 0.0, 4.0)}, ValueError),
        ({"exclude_posterior_fossa": "yes"}, TypeError),
    ):
        with pytest.raises(error):
            generate_brain_ctp(_rng(0), **{**SMALL, **kwargs})


def test_make_dataset_writes_images_labels_and_masks(tmp_path):
    datalist = make_dataset(TASK, tmp_path / "ds", n_cases=2, n_validation=1, n_test=1, seed=0, **SMALL)
    content = json.loads(datalist.read_text())
    assert content["tensorImageSize"] == "4D"
    assert content["masks"] == {"mask": "cranial cavity"} and content["ignore_value"] == 0
    assert len(content["modality"]) == N_FRAMES
    assert content["phantom"]["generator_kwargs"]["motion_mm"] == 0.0
    entries = content["training"] + content["validation"] + content["test"]
    assert [len(content[k]) for k in ("training", "validation", "test")] == [2, 1, 1]
    for entry in entries:
        image = nib.load(datalist.parent / entry["image"])
        label = nib.load(datalist.parent / entry["label"])
        mask = nib.load(datalist.parent / entry["mask"])
        assert image.shape == (*SMALL["shape"], N_FRAMES) and image.get_data_dtype() == np.int16
        assert label.shape == mask.shape == SMALL["shape"]
        assert label.get_data_dtype() == mask.get_data_dtype() == np.uint8
        np.testing.assert_allclose(image.header.get_zooms()[:3], SMALL["spacing"])
        lab, msk = np.asarray(label.dataobj), np.asarray(mask.dataobj)
        assert lab.any() and np.all(msk[lab > 0] == 1)
    first = entries[0]
    assert first["mask"].startswith("masksTr/") and entries[-1]["mask"].startswith("masksTs/")
