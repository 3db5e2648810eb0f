"""Tests for common.phantoms.hand_mri: the hand MRI phantom with four bone labels in random postures.

Expected numbers come from the paper (Kayalibay et al. 2017, Section 3.1: a 120 x 120 x 64 grid after four-fold
down-sampling, labels (1) metacarpal, (2) proximal, (3) middle and (4) distal phalanx; Table 1's average class
frequencies for the hand, background 0.99, 5.13e-3, 2.29e-3, 6.78e-4 and 4.32e-4), from anatomy (the thumb has no
middle phalanx; adjacent bones of a digit meet at a joint space; the bones lie inside the hand's soft tissue), from
the MR literature typed here (on T1-weighted images subcutaneous fat is the brightest tissue, adult fatty marrow
nearly as bright, muscle intermediate, cortical bone and tendon dark; a magnitude image's air holds Rician noise of
mean sigma * sqrt(pi / 2)), or from hand computation, never from the generator's own constants.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

import common.phantoms.hand_mri as hand_mri
from common.phantoms import PHANTOM_TASKS, get_task, make_dataset
from common.phantoms.drawing import centered_affine
from common.phantoms.hand_mri import generate_hand_mri, generate_hand_mri_dense

TASK = "hand_mri_bone"
NAMES = {0: "background", 1: "metacarpal", 2: "proximal phalanx", 3: "middle phalanx", 4: "distal phalanx"}
FIELDS = ("mean_flexion_deg", "finger_spread_deg", "rotation_deg")
BG, MC, PROX, MID, DIST = range(5)
# the paper's Table 1, hand row
PAPER = np.array([0.99, 5.13e-3, 2.29e-3, 6.78e-4, 4.32e-4])
SMALL = {"shape": (48, 48, 32), "spacing": (5.0, 5.0, 4.0)}  # the default 240 x 240 x 128 mm field of view, coarse
DEFAULT_SHAPE = (120, 120, 64)
SEEDS = range(6)
# tissue codes of the dense output
AIR, SKIN, FAT, MUSCLE, TENDON, CARTILAGE, CORTEX, MARROW = range(8)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _frequencies(label: np.ndarray) -> np.ndarray:
    """Fraction of all voxels per label value 0-4."""
    return np.bincount(label.ravel(), minlength=5) / label.size


def _erode(mask: np.ndarray) -> np.ndarray:
    """One step of erosion by the 6-neighbourhood (outside the array counts as background)."""
    out = mask.copy()
    for axis in range(3):
        out &= np.roll(mask, 1, axis) & np.roll(mask, -1, axis)
        edge = [slice(None)] * 3
        for index in (0, -1):
            edge[axis] = index
            out[tuple(edge)] = False
    return out


def _touching_classes(label: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of different bone classes found in 6-adjacent voxels."""
    pairs = set()
    for axis in range(3):
        a = np.moveaxis(label, axis, 0)[:-1]
        b = np.moveaxis(label, axis, 0)[1:]
        touch = (a > 0) & (b > 0) & (a != b)
        pairs |= {tuple(sorted(p)) for p in np.unique(np.stack([a[touch], b[touch]], axis=1), axis=0).tolist()}
    return pairs


def _centroid_mm(mask: np.ndarray, shape, spacing) -> np.ndarray:
    affine = centered_affine(shape, spacing)
    return (affine @ np.append(np.argwhere(mask).mean(axis=0), 1.0))[:3]


@pytest.fixture(scope="module")
def default_cases():
    """Six default-size cases with their ground truth."""
    return [generate_hand_mri_dense(_rng(seed)) for seed in SEEDS]


# ---- the declaration and the output contract ----


def test_task_declaration():
    task = get_task(TASK)
    assert TASK in PHANTOM_TASKS and task is hand_mri.PHANTOM_TASK
    assert dict(task.labels) == NAMES == hand_mri.HAND_MRI_LABELS
    assert dict(task.modality) == {"0": "MRI"} and task.dicom_modality == "MR" and not task.supports_dicom
    assert task.spatial_dims == 3 and task.n_channels == 1 and task.ignore_value is None and not task.masks
    assert task.fields == FIELDS
    defaults = dict(task.defaults)
    # the paper's down-sampled, z-cropped size; 2 mm voxels hold a ~19 cm hand in a 240 x 240 x 128 mm field of view
    assert set(defaults) == {"shape", "spacing"} and defaults["shape"] == [120, 120, 64]
    assert defaults["spacing"] == [2.0, 2.0, 2.0]
    json.dumps(defaults)  # the defaults go into dataset.json
    assert "Kayalibay" in task.description
    for section in ("Section 3.1", "Table 1", "Invented"):
        assert section in hand_mri.__doc__


def test_output_types_and_shapes():
    case = get_task(TASK).generate(_rng(0), **SMALL)  # checked against the declaration by the registry
    assert case.image.shape == SMALL["shape"] and case.image.dtype == np.float32
    assert case.label.shape == SMALL["shape"] and case.label.dtype == np.uint8
    assert set(case.fields) == set(FIELDS) and all(isinstance(case.fields[k], float) for k in FIELDS)
    out = generate_hand_mri(_rng(0), **SMALL)
    assert set(out) == {"image", "label", *FIELDS}
    assert out["image"].dtype == np.float32 and out["label"].dtype == np.uint8
    assert np.isfinite(out["image"]).all() and out["image"].min() >= 0.0  # a magnitude image
    assert set(np.unique(out["label"]).tolist()) <= set(NAMES)


def test_dense_function_draws_the_same_case():
    dense = generate_hand_mri_dense(_rng(5), **SMALL)
    plain = generate_hand_mri(_rng(5), **SMALL)
    for key in plain:
        assert np.array_equal(dense[key], plain[key]), key


def test_deterministic_per_seed_and_postures_differ():
    a = generate_hand_mri(_rng(3), **SMALL)
    b = generate_hand_mri(_rng(3), **SMALL)
    c = generate_hand_mri(_rng(4), **SMALL)
    for key in ("image", "label"):
        assert a[key].tobytes() == b[key].tobytes(), key
    assert all(a[k] == b[k] for k in FIELDS)
    assert a["image"].tobytes() != c["image"].tobytes()
    # a different posture: most bone voxels of one case are not bone of the same class in the other
    bone = (a["label"] > 0) | (c["label"] > 0)
    assert np.mean(a["label"][bone] != c["label"][bone]) > 0.5


def test_default_grid_and_every_bone_class_in_every_case(default_cases):
    for case in default_cases:
        assert case["image"].shape == case["label"].shape == DEFAULT_SHAPE
        assert set(np.unique(case["label"]).tolist()) == set(NAMES)
        # the labelled skeleton lies inside the field of view: no bone on the array's faces
        faces = case["label"].copy()
        faces[1:-1, 1:-1, 1:-1] = 0
        assert not faces.any()
    for seed in range(8):  # and on the coarse grid of the CPU demo
        counts = np.bincount(generate_hand_mri(_rng(seed), **SMALL)["label"].ravel(), minlength=5)
        assert np.all(counts[1:] >= 5), (seed, counts)


# ---- class imbalance (the paper's Table 1) ----


def test_class_frequencies_near_the_paper(default_cases):
    per_case = np.array([_frequencies(case["label"]) for case in default_cases])
    mean = per_case.mean(axis=0)
    print("\nclass frequency (mean of 6 default cases) vs paper Table 1:")
    for value in range(5):
        print(
            f"  {NAMES[value]:17s} {mean[value]:.3e}  paper {PAPER[value]:.3e}  ratio {mean[value] / PAPER[value]:.2f}"
        )
    assert 0.98 <= mean[BG] <= 0.997, mean[BG]
    for value in (MC, PROX, MID, DIST):
        assert PAPER[value] / 2.5 <= mean[value] <= 2.5 * PAPER[value], (NAMES[value], mean[value], PAPER[value])
    # the paper's order of sizes, and its "nearly one order of magnitude" between the large and small bone classes
    assert mean[MC] > mean[PROX] > mean[MID] > mean[DIST]
    assert mean[MC] / mean[MID] > 4.0 and mean[PROX] / mean[DIST] > 3.0
    # the classes keep their share in every case (one hand in different postures)
    assert np.all(per_case[:, 1:] > 0.5 * mean[1:]) and np.all(per_case[:, 1:] < 1.5 * mean[1:])


# ---- anatomy and posture ----


def test_bones_inside_the_hand_soft_tissue(default_cases):
    for case in default_cases:
        label, tissue = case["label"], case["tissue"]
        bone = label > 0
        hand = tissue != AIR
        assert np.all(_erode(hand)[bone])  # every bone voxel and its six neighbours are inside the hand
        assert np.all(np.isin(tissue[bone], (CORTEX, MARROW)))
        # the hand is much larger than its labelled bones (soft tissue, carpus and forearm, background)
        assert hand.sum() > 5 * bone.sum()


def test_joint_gaps_separate_the_bone_classes():
    # at 1 mm, below the joint space, bones of different classes never touch (a digit's bones meet at joints)
    fine = {"shape": (240, 240, 128), "spacing": (1.0, 1.0, 1.0)}
    for seed in (0, 4):
        label = generate_hand_mri(_rng(seed), **fine)["label"]
        assert _touching_classes(label) == set(), seed
    # on the default grid the joint space is under a voxel: the classes of neighbouring bones may touch there,
    # but never two classes that share no joint (metacarpal with middle or distal phalanx)
    for seed in SEEDS:
        pairs = _touching_classes(generate_hand_mri(_rng(seed))["label"])
        assert not pairs & {(MC, MID), (MC, DIST)}, (seed, pairs)


def test_postures_vary(default_cases):
    flexion = [case["mean_flexion_deg"] for case in default_cases]
    spread = [case["finger_spread_deg"] for case in default_cases]
    rotation = [case["rotation_deg"] for case in default_cases]
    assert max(flexion) - min(flexion) > 15.0 and max(spread) - min(spread) > 10.0, (flexion, spread)
    assert max(rotation) - min(rotation) > 10.0, rotation
    assert all(-20.0 <= f <= 100.0 for f in flexion) and all(0.0 < s < 90.0 for s in spread)
    # flexion curls the fingers towards the palm: the fingertips' bones come closer to the metacarpals
    reach = []
    for case in default_cases:
        mc = np.argwhere(case["label"] == MC).mean(axis=0)
        distal = np.argwhere(case["label"] == DIST).mean(axis=0)
        reach.append(2.0 * float(np.linalg.norm(distal - mc)))  # mm (2 mm voxels)
    order = np.argsort(flexion)
    assert reach[order[-1]] < 0.8 * reach[order[0]], (flexion, reach)
    assert np.corrcoef(flexion, reach)[0, 1] < -0.7, (flexion, reach)


def test_same_anatomy_at_any_spacing():
    default = generate_hand_mri(_rng(2))
    small = generate_hand_mri(_rng(2), **SMALL)
    assert all(default[k] == small[k] for k in FIELDS)
    for value in (MC, PROX, MID, DIST):
        a = _centroid_mm(default["label"] == value, DEFAULT_SHAPE, (2.0, 2.0, 2.0))
        b = _centroid_mm(small["label"] == value, SMALL["shape"], SMALL["spacing"])
        assert np.linalg.norm(a - b) < 5.0, (NAMES[value], a, b)
    volume = [np.sum(default["label"] > 0) * 8.0, np.sum(small["label"] > 0) * 100.0]
    assert volume[1] == pytest.approx(volume[0], rel=0.25)


# ---- MR contrast, bias field and noise ----


def test_t1_like_contrast(default_cases):
    for case in default_cases:
        image, tissue, label = case["image"], case["tissue"], case["label"]
        median = {t: float(np.median(image[_erode(tissue == t)])) for t in (FAT, MUSCLE, MARROW)}
        median[CORTEX] = float(np.median(image[tissue == CORTEX]))
        median[TENDON] = float(np.median(image[tissue == TENDON]))
        air = float(np.median(image[tissue == AIR]))
        assert median[FAT] > median[MARROW] > median[MUSCLE] > median[CORTEX], median
        assert median[MARROW] > 0.6 * median[FAT] and median[MUSCLE] < 0.5 * median[FAT], median
        # cortex and tendon dark even with partial volume at 2 mm; air near zero
        assert median[CORTEX] < 0.35 * median[FAT] and median[TENDON] < 0.35 * median[FAT], median
        assert air < 0.06 * median[FAT], (air, median[FAT])
        # the labels see bright marrow inside dark cortex: the bones' inside is brighter than their surface
        bone = label > 0
        inner, surface = _erode(bone), bone & ~_erode(bone)
        assert np.median(image[inner]) > 1.2 * np.median(image[surface])


def test_bias_field_and_rician_noise(default_cases):
    sigmas = []
    for case in default_cases:
        image, tissue, bias = case["image"], case["tissue"], case["bias"]
        log_bias = np.log(bias)
        assert 0.03 < float(log_bias.std()) < 0.2  # a mild non-uniformity ...
        assert np.abs(np.diff(log_bias, axis=0)).max() < 0.03  # ... smooth over a 2 mm voxel
        # Rician noise: in air (far from the hand) the magnitude's mean is sigma * sqrt(pi / 2)
        corner = image[:12, :12, :][tissue[:12, :12, :] == AIR]
        sigma = float(corner.mean()) / np.sqrt(np.pi / 2)
        fat = float(np.median(case["clean"][tissue == FAT]))
        assert 0.01 < sigma / fat < 0.05, sigma / fat
        sigmas.append(sigma / fat)
        assert np.all(image >= 0.0)
    assert max(sigmas) > 1.2 * min(sigmas)  # the noise level varies per case


# ---- arguments and the data set writer ----


def test_bad_arguments():
    for kwargs in (
        {"shape": (48, 48)},
        {"shape": (48, 48, 0)},
        {"shape": (48.0, 48, 32)},
        {"spacing": (5.0, -1.0, 4.0)},
        {"spacing": (5.0, float("nan"), 4.0)},
        {"spacing": (5.0, 5.0)},
    ):
        with pytest.raises(ValueError):
            generate_hand_mri(_rng(0), **{**SMALL, **kwargs})
    with pytest.raises(TypeError, match="generator arguments"):
        make_dataset(TASK, "unused", n_cases=1, flexion=2.0)


def test_make_dataset_writes_a_valid_data_set(tmp_path):
    datalist = make_dataset(
        TASK, tmp_path / "d", n_cases=2, n_validation=1, n_test=1, shape=[48, 48, 32], spacing=[5, 5, 4]
    )
    content = json.loads(datalist.read_text())
    assert content["labels"] == {str(k): v for k, v in NAMES.items()}
    assert content["modality"] == {"0": "MRI"} and content["tensorImageSize"] == "3D"
    assert [len(content[split]) for split in ("training", "validation", "test")] == [2, 1, 1]
    expected_affine = np.array([[5, 0, 0, -117.5], [0, 5, 0, -117.5], [0, 0, 4, -62.0], [0, 0, 0, 1]], dtype=float)
    for split, stream in (("training", 0), ("validation", 1), ("test", 2)):
        for index, entry in enumerate(content[split]):
            image = nib.load(datalist.parent / entry["image"])
            label = nib.load(datalist.parent / entry["label"])
            assert image.shape == label.shape == (48, 48, 32)
            assert image.get_data_dtype() == np.float32 and label.get_data_dtype() == np.uint8
            for img in (image, label):
                np.testing.assert_allclose(img.affine, expected_affine, atol=1e-4)
            rng = np.random.default_rng(np.random.SeedSequence(entropy=0, spawn_key=(stream, index)))
            case = generate_hand_mri(rng, shape=(48, 48, 32), spacing=(5.0, 5.0, 4.0))
            np.testing.assert_array_equal(np.asarray(image.dataobj), case["image"])
            np.testing.assert_array_equal(np.asarray(label.dataobj), case["label"])
            assert set(np.unique(np.asarray(label.dataobj)).tolist()) == set(NAMES)
            assert all(entry[k] == case[k] for k in FIELDS)
