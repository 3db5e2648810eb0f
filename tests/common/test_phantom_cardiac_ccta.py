"""Tests for common.phantoms.cardiac_ccta: the 4D ECG-gated cardiac CT phantom with temporally sparse labels.

Orientation used in the assertions: arrays are [X, Y, Z, T] with a RAS+ affine diag(spacing) centred on 0, so a
larger x index is further to the patient's RIGHT, a larger y index more ANTERIOR, a larger z index more SUPERIOR;
the frames sample one cardiac cycle. Expected values come from the task's specification and cardiac CT anatomy,
typed here (contrast-enhanced LV blood pool 250-450 HU, myocardium 80-150 HU, fat about -100 HU, aerated lung
about -800 HU; LV cavity 70-95 mm long and 40-55 mm wide at end-diastole; 2 to 9 annotated frames always holding
end-diastole and end-systole, Sec. 3.4; ejection fraction 100 (V_max - V_min) / V_max, reduced below 55 %,
Sec. 4), or from hand computation, never from the generator's own constants.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from common.phantoms import PHANTOM_TASKS, cli, get_task, make_dataset
from common.phantoms.cardiac_ccta import generate_cardiac_ccta, generate_cardiac_ccta_dense

TASK = "cardiac_ccta_4d"
SMALL = {"shape": (32, 32, 24, 16), "spacing": (4.0, 4.0, 4.0, 0.05)}  # the default 128 x 128 x 96 mm view
LABELS = {0: "background", 1: "LV cavity", 2: "LV myocardium"}
FIELDS = ("ejection_fraction", "labeled_frames", "end_diastole_frame", "end_systole_frame")
IGNORE = 255


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _erode(mask: np.ndarray) -> np.ndarray:
    """One step of 3D erosion by the 6-connected cross, outside the array counted as background."""
    padded = np.pad(mask.astype(bool), 1)
    out = padded.copy()
    for axis in range(3):
        out &= np.roll(padded, 1, axis) & np.roll(padded, -1, axis)
    return out[1:-1, 1:-1, 1:-1]


def _dilate(mask: np.ndarray) -> np.ndarray:
    """One step of 3D dilation by the 6-connected cross."""
    padded = np.pad(mask.astype(bool), 1)
    out = padded.copy()
    for axis in range(3):
        out |= np.roll(padded, 1, axis) | np.roll(padded, -1, axis)
    return out[1:-1, 1:-1, 1:-1]


def _counts(label: np.ndarray, value: int) -> np.ndarray:
    """Voxels of ``value`` per frame of a [X, Y, Z, T] label."""
    return (label == value).sum(axis=(0, 1, 2))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module")
def small_cases():
    """Twenty small cases (4 mm voxels, 16 frames) with their dense ground truth."""
    return [generate_cardiac_ccta_dense(_rng(seed), **SMALL) for seed in range(20)]


@pytest.fixture(scope="module")
def default_cases():
    """Two cases at the default size (2 mm voxels, 20 frames)."""
    return [generate_cardiac_ccta_dense(_rng(seed)) for seed in (101, 102)]


# ---- the declaration and the output contract ----


def test_task_declaration():
    task = get_task(TASK)
    assert TASK in PHANTOM_TASKS
    assert task.spatial_dims == 4 and task.n_channels == 1 and task.image_ndim == 4
    assert task.dicom_modality == "CT" and not task.supports_dicom  # DICOM series are 3D only
    assert dict(task.labels) == LABELS and task.ignore_value == IGNORE
    assert task.fields == FIELDS and dict(task.modality) == {"0": "CT"}
    assert len(task.defaults["shape"]) == 4 and len(task.defaults["spacing"]) == 4
    assert task.defaults["shape"][:3] == [64, 64, 48] and task.defaults["spacing"][:3] == [2.0, 2.0, 2.0]
    assert 16 <= task.defaults["shape"][3] <= 20  # frames over the cycle (the paper's sequences have 20)
    assert 0.02 <= task.defaults["spacing"][3] <= 0.1  # a frame interval in seconds, not mm
    assert task.defaults["n_labeled"] is None
    assert "3.4" in task.description
    json.dumps(dict(task.defaults))  # the defaults go into dataset.json


def test_output_types_and_shapes():
    case = get_task(TASK).generate(_rng(0), **SMALL)  # checked against the declaration by the registry
    assert case.image.shape == SMALL["shape"] and case.image.dtype == np.int16
    assert case.label.shape == SMALL["shape"] and case.label.dtype == np.uint8
    assert set(np.unique(case.label)) <= {0, 1, 2, IGNORE}
    assert set(case.fields) == set(FIELDS)
    assert isinstance(case.fields["ejection_fraction"], float)
    assert all(isinstance(t, int) for t in case.fields["labeled_frames"])
    assert isinstance(case.fields["end_diastole_frame"], int) and isinstance(case.fields["end_systole_frame"], int)
    out = generate_cardiac_ccta(_rng(0), **SMALL)
    assert set(out) == {"image", "label", *FIELDS}
    assert out["image"].flags["C_CONTIGUOUS"] and out["label"].flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out["image"], case.image)


def test_dense_function_draws_the_same_case():
    dense = generate_cardiac_ccta_dense(_rng(5), **SMALL)
    plain = generate_cardiac_ccta(_rng(5), **SMALL)
    for key in plain:
        assert np.array_equal(dense[key], plain[key]), key


def test_deterministic_per_seed():
    a = generate_cardiac_ccta_dense(_rng(3), **SMALL)
    b = generate_cardiac_ccta_dense(_rng(3), **SMALL)
    c = generate_cardiac_ccta_dense(_rng(4), **SMALL)
    for key in ("image", "label", "dense_label"):
        assert a[key].tobytes() == b[key].tobytes(), key
    assert all(a[f] == b[f] for f in FIELDS)
    assert a["image"].tobytes() != c["image"].tobytes()
    assert ((a["dense_label"] > 0) != (c["dense_label"] > 0)).mean() > 0.01  # the anatomy differs, not the noise


def test_frames_follow_the_shape():
    for frames in (4, 11):
        case = generate_cardiac_ccta_dense(_rng(7), shape=(32, 32, 24, frames), spacing=SMALL["spacing"])
        assert case["image"].shape[-1] == case["label"].shape[-1] == frames
        assert all(0 <= t < frames for t in case["labeled_frames"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="four positive integers"):
        generate_cardiac_ccta(_rng(0), shape=(32, 32, 24), spacing=SMALL["spacing"])
    with pytest.raises(ValueError, match="at least 4"):
        generate_cardiac_ccta(_rng(0), shape=(32, 32, 24, 3), spacing=SMALL["spacing"])
    with pytest.raises(ValueError, match="spacing"):
        generate_cardiac_ccta(_rng(0), shape=SMALL["shape"], spacing=(4.0, 4.0, 4.0))
    for bad in (1, 10):
        with pytest.raises(ValueError, match="n_labeled"):
            generate_cardiac_ccta(_rng(0), n_labeled=bad, **SMALL)
    with pytest.raises(ValueError, match="n_labeled"):  # more annotated frames than frames
        generate_cardiac_ccta(_rng(0), shape=(32, 32, 24, 5), spacing=SMALL["spacing"], n_labeled=6)
    for bad in (True, 3.0):
        with pytest.raises(TypeError, match="n_labeled"):
            generate_cardiac_ccta(_rng(0), n_labeled=bad, **SMALL)


# ---- image values ----


def test_hu_of_blood_myocardium_lung_and_bone(default_cases):
    for case in default_cases:
        image, dense = case["image"], case["dense_label"]
        ed = case["end_diastole_frame"]
        frame, truth = image[..., ed].astype(np.float64), dense[..., ed]
        blood = np.median(frame[_erode(truth == 1)])
        myocardium = np.median(frame[_erode(truth == 2)])
        assert 245 <= blood <= 455
        assert 75 <= myocardium <= 155
        assert blood - myocardium >= 90  # 250 - 150 at the closest: darker than blood
        lung = frame[frame < -500]
        assert lung.size > 0.05 * frame.size  # lungs at the edges of the field of view
        assert -860 <= np.median(lung) <= -740
        fat = frame[(frame > -300) & (frame < 0)]
        assert -125 <= np.median(fat) <= -75  # epicardial and mediastinal fat, brighter than lung
        assert myocardium - np.median(fat) >= 150  # the myocardium stands out from the fat round it
        # a vertebra (bone above 500 HU) posteriorly, in the back quarter of the field of view
        bone = np.argwhere(frame > 500)
        assert len(bone) > 50 and bone[:, 1].mean() < frame.shape[1] / 4


def test_noise_level_measured_between_frames(small_cases):
    measured = []
    for case in small_cases:
        image = case["image"].astype(np.float64)
        # a posterior corner on the patient's left (lung) does not move: frame differences are noise only
        corner = image[:4, :4]
        diff = corner[..., 1:] - corner[..., :-1]
        sigma = float(diff.std() / np.sqrt(2.0))
        assert 14.0 <= sigma <= 36.0
        assert sigma == pytest.approx(case["noise_sigma"], rel=0.1)
        measured.append(sigma)
    assert min(measured) < 22.0 and max(measured) > 28.0  # the noise level varies per case


# ---- anatomy ----


def test_cavity_size_and_myocardium_shell(small_cases):
    voxel_ml = 4.0**3 / 1000.0
    for case in small_cases:
        dense = case["dense_label"]
        cavity = _counts(dense, 1)
        # a truncated spheroid 70-95 mm long and 40-55 mm wide: about 60-165 mL at end-diastole (by hand)
        assert 55.0 <= cavity.max() * voxel_ml <= 170.0
        truth = dense[..., case["end_diastole_frame"]]
        ring = _dilate(truth == 1) & (truth != 1)
        # the cavity is wrapped in myocardium except at its open base (the mitral plane)
        assert 0.75 <= (truth[ring] == 2).mean() < 0.98


def test_long_axis_points_left_anterior_inferior(small_cases):
    nominal = np.array([-0.6, 0.55, -0.45]) / np.linalg.norm([-0.6, 0.55, -0.45])
    for case in small_cases:
        points = np.argwhere(case["dense_label"][..., case["end_diastole_frame"]] == 1) * 4.0
        centred = points - points.mean(axis=0)
        _, vectors = np.linalg.eigh(centred.T @ centred)
        axis = vectors[:, -1]  # the cavity's longest direction
        assert abs(axis @ nominal) >= np.cos(np.deg2rad(35.0))  # 25 degrees of tilt plus the estimate's error
        length = np.ptp(centred @ axis)
        assert 55.0 <= length <= 100.0  # 70-95 mm at 4 mm voxels


def test_other_bright_chambers_outside_the_lv(default_cases):
    for case in default_cases:
        ed = case["end_diastole_frame"]
        frame, truth = case["image"][..., ed].astype(np.float64), case["dense_label"][..., ed]
        blood = np.median(frame[_erode(truth == 1)])
        myocardium = np.median(frame[_erode(truth == 2)])
        bright = _erode(frame > 0.5 * (blood + myocardium))  # eroded: no noise specks
        other = bright & (truth == 0)
        # right ventricle, left atrium, aorta: a threshold alone does not segment the LV cavity
        assert other.sum() >= 0.3 * (truth == 1).sum()


# ---- motion, volume curve and ejection fraction ----


def test_ejection_fraction_and_phase_frames_from_dense_truth(small_cases):
    efs = []
    for case in small_cases:
        cavity = _counts(case["dense_label"], 1).astype(np.int64)
        expected = round(100.0 * (cavity.max() - cavity.min()) / cavity.max(), 1)
        assert case["ejection_fraction"] == pytest.approx(expected, abs=0.05 + 1e-9)
        assert case["end_diastole_frame"] == int(cavity.argmax())
        assert case["end_systole_frame"] == int(cavity.argmin())
        assert 20.0 <= case["ejection_fraction"] <= 80.0
        efs.append(case["ejection_fraction"])
    reduced = sum(ef < 55.0 for ef in efs)
    assert 2 <= reduced <= 14  # about a third reduced, the rest normal
    assert any(ef < 40.0 for ef in efs) and any(ef > 65.0 for ef in efs)


def test_volume_curve_is_smooth_and_periodic(small_cases):
    for case in small_cases:
        cavity = _counts(case["dense_label"], 1).astype(np.float64)
        n = cavity.size
        stroke = cavity.max() - cavity.min()
        steps = np.diff(np.append(cavity, cavity[0]))  # the cycle closes: the last frame leads to the first
        assert np.abs(steps).max() <= 0.4 * stroke
        signs = np.sign(steps[np.abs(steps) > 0.02 * stroke])
        assert np.count_nonzero(signs != np.roll(signs, 1)) == 2  # one emptying and one filling phase
        systole = (case["end_systole_frame"] - case["end_diastole_frame"]) % n
        assert 0.2 * n <= systole <= 0.5 * n  # systole about a third of the cycle


def test_myocardium_volume_constant_and_wall_thickens(small_cases):
    for case in small_cases:
        dense = case["dense_label"]
        myo = _counts(dense, 2).astype(np.float64)
        assert (myo.max() - myo.min()) / myo.mean() <= 0.15
        ed, es = case["end_diastole_frame"], case["end_systole_frame"]
        # thickening: the same myocardial volume spread over a smaller shell is thicker; the mean thickness
        # is about volume / area, and the area of the cavity's boundary shrinks with the cavity
        area = [(_dilate(dense[..., t] == 1) & (dense[..., t] == 2)).sum() for t in (ed, es)]
        assert myo[es] / area[1] > 1.15 * myo[ed] / area[0]


def test_both_contract_radially_and_along_the_long_axis(small_cases):
    shortened = 0
    for case in small_cases:
        dense = case["dense_label"]
        ed, es = case["end_diastole_frame"], case["end_systole_frame"]
        points = np.argwhere(dense[..., ed] == 1) * 4.0
        centred = points - points.mean(axis=0)
        axis = np.linalg.eigh(centred.T @ centred)[1][:, -1]
        lengths = [np.ptp((np.argwhere(dense[..., t] == 1) * 4.0) @ axis) for t in (ed, es)]
        shortened += lengths[1] < lengths[0]
    assert shortened >= 15


# ---- sparse, slice-by-slice annotations ----


def test_annotated_and_unannotated_frames(small_cases):
    counts = set()
    for case in small_cases:
        label, frames = case["label"], case["labeled_frames"]
        assert frames == sorted(set(frames)) and 2 <= len(frames) <= 9
        assert case["end_diastole_frame"] in frames and case["end_systole_frame"] in frames
        annotated = [t for t in range(label.shape[-1]) if (label[..., t] != IGNORE).any()]
        assert annotated == frames  # the field matches the array
        for t in range(label.shape[-1]):
            values = set(np.unique(label[..., t]).tolist())
            assert values == ({0, 1, 2} if t in frames else {IGNORE}), t
        counts.add(len(frames))
    assert min(counts) == 2 and max(counts) >= 8 and len(counts) >= 4


def test_n_labeled_fixes_the_count():
    two = generate_cardiac_ccta_dense(_rng(9), n_labeled=2, **SMALL)
    assert two["labeled_frames"] == sorted({two["end_diastole_frame"], two["end_systole_frame"]})
    nine = generate_cardiac_ccta_dense(_rng(9), n_labeled=9, **SMALL)
    assert len(nine["labeled_frames"]) == 9
    assert {nine["end_diastole_frame"], nine["end_systole_frame"]} <= set(nine["labeled_frames"])


def test_annotation_jitter_is_per_slice_and_small(small_cases):
    offsets = []
    for case in small_cases[:8]:
        for t in case["labeled_frames"]:
            annotated, truth = case["label"][..., t], case["dense_label"][..., t]
            differing = (annotated != truth).sum() / (truth > 0).sum()
            assert 0.01 <= differing <= 0.15
            for k in (1, 2):
                assert _dice(annotated == k, truth == k) > 0.85
            # per axial slice, the annotated cavity is the true one shifted in-plane by well under two voxels
            for z in range(truth.shape[2]):
                a, b = np.argwhere(annotated[:, :, z] == 1), np.argwhere(truth[:, :, z] == 1)
                if len(a) >= 15 and len(b) >= 15:
                    offsets.append(a.mean(axis=0) - b.mean(axis=0))
    offsets = np.array(offsets)
    assert np.abs(offsets).max() <= 1.5
    assert offsets.std(axis=0).min() > 0.05  # jittery from slice to slice, not one common shift


def test_image_follows_the_smooth_truth_not_the_jittered_labels(small_cases):
    better = 0
    for case in small_cases[:8]:
        t = case["end_diastole_frame"]
        frame = case["image"][..., t].astype(np.float64)
        truth, annotated = case["dense_label"][..., t], case["label"][..., t]
        blood = np.median(frame[truth == 1])
        myocardium = np.median(frame[truth == 2])
        region = _dilate((truth > 0) | (annotated > 0))
        threshold = (frame > 0.5 * (blood + myocardium)) & region
        better += _dice(threshold, truth == 1) > _dice(threshold, annotated == 1)
    assert better >= 7


# ---- written data set ----


def _spawned(seed: int, split: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(split, index)))


def test_make_dataset_writes_4d_nifti_and_fields(tmp_path):
    out = tmp_path / "ccta"
    kwargs = {"shape": [32, 32, 24, 16], "spacing": [4.0, 4.0, 4.0, 0.05]}
    d = json.loads(make_dataset(TASK, out, n_cases=2, seed=3, n_validation=1, **kwargs).read_text())
    assert d["tensorImageSize"] == "4D" and d["ignore_value"] == IGNORE
    assert d["labels"] == {str(k): v for k, v in LABELS.items()} and d["modality"] == {"0": "CT"}
    assert d["phantom"]["generator_kwargs"] == {**kwargs, "n_labeled": None}
    entries = [(0, i, e) for i, e in enumerate(d["training"])] + [(1, 0, d["validation"][0])]
    assert len(entries) == 3
    for split, index, entry in entries:
        assert set(entry) == {"image", "label", *FIELDS}
        expected = generate_cardiac_ccta(_spawned(3, split, index), **kwargs)
        assert entry["labeled_frames"] == expected["labeled_frames"]
        assert isinstance(entry["ejection_fraction"], float) and isinstance(entry["end_systole_frame"], int)
        img = nib.load(out / entry["image"])
        image = np.asanyarray(img.dataobj)
        assert image.shape == (32, 32, 24, 16) and image.dtype == np.int16
        np.testing.assert_array_equal(image, expected["image"])
        np.testing.assert_allclose(img.header.get_zooms(), (4.0, 4.0, 4.0, 0.05), rtol=1e-6)
        assert img.header.get_xyzt_units() == ("mm", "sec")
        np.testing.assert_allclose(img.affine[:3, 3], [-62.0, -62.0, -46.0])  # -(n - 1) / 2 * spacing
        lab = nib.load(out / entry["label"])
        label = np.asanyarray(lab.dataobj)
        assert label.shape == (32, 32, 24, 16) and label.dtype == np.uint8
        np.testing.assert_allclose(lab.header.get_zooms()[3], 0.05, rtol=1e-6)
        others = [t for t in range(16) if t not in entry["labeled_frames"]]
        assert set(np.unique(label[..., others])) == {IGNORE}
        assert set(np.unique(label[..., entry["labeled_frames"]])) == {0, 1, 2}
        cavity = _counts(label, 1)[entry["labeled_frames"]]
        assert cavity.argmax() != cavity.argmin()


def test_command_line_make(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["make", "--task", TASK, "--out_dir", str(out), "--n_cases", "1", "--seed", "2"]
    argv += ["--shape", "[32,32,24,12]", "--spacing", "[4,4,4,0.08]", "--n_labeled", "3"]
    cli.main(argv)
    assert str(out / "dataset.json") in capsys.readouterr().out
    d = json.loads((out / "dataset.json").read_text())
    entry = d["training"][0]
    assert len(entry["labeled_frames"]) == 3 and d["phantom"]["generator_kwargs"]["n_labeled"] == 3
    img = nib.load(out / entry["image"])
    assert img.shape == (32, 32, 24, 12)
    np.testing.assert_allclose(img.header.get_zooms(), (4.0, 4.0, 4.0, 0.08), rtol=1e-6)
