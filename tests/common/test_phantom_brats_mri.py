"""Tests for common.phantoms.brats_mri: the four-contrast brain-tumour MRI phantom with the BraTS 2015 labels.

Orientation used in the assertions: arrays are [X, Y, Z] with a RAS+ affine diag(spacing) centred on 0, so a larger
x index is further to the patient's RIGHT; the mid-sagittal plane is x = (nx - 1) / 2 in index coordinates (world
x = 0), so ``a[::-1]`` mirrors a volume about it.
Expected numbers come from the paper (Kayalibay et al. 2017, Section 3.1: four modalities FLAIR, T1, T1C and T2,
labels (1) necrosis, (2) edema, (3) non-enhancing and (4) enhancing tumour, images cropped to 160 x 144 x 128 "while
still containing the entire brain"; Table 1's brain row, background 0.96, necrosis 0.002, edema 0.024, enhancing
0.005 and non-enhancing 0.006 in the order of its caption; Section 4.2: a tumour-free hemisphere mirrored about the
mid-sagittal plane gives a healthy brain for images whose tumour lies in one hemisphere), from the MR literature
typed here (T1-weighted: white matter brighter than grey matter, CSF dark; T2-weighted: CSF brightest, grey matter
brighter than white matter; FLAIR: CSF suppressed, grey matter brighter than white matter, vasogenic edema
hyperintense; T1 after gadolinium: an enhancing tumour rim brighter than white matter round a dark necrotic core,
edema hypointense on T1; a magnitude image's air holds Rician noise of mean sigma * sqrt(pi / 2)), or from hand
computation, never from the generator's own constants.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

import common.phantoms.brats_mri as brats_mri
from common.phantoms import PHANTOM_TASKS, get_task, make_dataset
from common.phantoms.brats_mri import generate_brats_mri, generate_brats_mri_dense
from common.phantoms.drawing import Canvas, HalfSpace, Painter

TASK = "brats_mri"
NAMES = {0: "background", 1: "necrosis", 2: "edema", 3: "non-enhancing tumor", 4: "enhancing tumor"}
MODALITY = {"0": "FLAIR", "1": "T1", "2": "T1C", "3": "T2"}
FLAIR, T1, T1C, T2 = range(4)
FIELDS = ("tumor_hemisphere", "crosses_midline", "tumor_volume_ml", "tumor_core_volume_ml", "midsagittal_index")
BG, NECROSIS, EDEMA, NON_ENHANCING, ENHANCING = range(5)
# the paper's Table 1, brain row, by BraTS label value (caption order: 3 enhancing 0.005, 4 non-enhancing 0.006)
PAPER = {BG: 0.96, NECROSIS: 0.002, EDEMA: 0.024, NON_ENHANCING: 0.006, ENHANCING: 0.005}
DEFAULT_SHAPE = (160, 144, 128)
SMALL = {"shape": (40, 36, 32), "spacing": (4.0, 4.0, 4.0)}  # the default 160 x 144 x 128 mm field of view, coarse
SEEDS = range(6)
# tissue codes of the dense output
AIR, CSF, GM, WM, DEEP, DURA = 0, 5, 6, 7, 8, 9
TUMOUR_TISSUES = (10, 11, 12, 13)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """Dilation by the 6-neighbourhood, ``steps`` times (nothing wraps round the array's faces)."""
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        for axis in range(3):
            lead = [slice(None)] * 3
            trail = [slice(None)] * 3
            lead[axis], trail[axis] = slice(1, None), slice(None, -1)
            grown[tuple(lead)] |= out[tuple(trail)]
            grown[tuple(trail)] |= out[tuple(lead)]
        out = grown
    return out


def _erode(mask: np.ndarray) -> np.ndarray:
    """One step of erosion by the 6-neighbourhood (outside the array counts as inside)."""
    return ~_dilate(~mask, 1)


def _world_x(nx: int, spacing: float) -> np.ndarray:
    """World x (mm) of each column under the centred affine."""
    return (np.arange(nx) - (nx - 1) / 2.0) * spacing


@pytest.fixture(scope="module")
def default_cases():
    """Six default-size cases with their tissue maps (the bias and clean images dropped to save memory)."""
    cases = []
    for seed in SEEDS:
        case = generate_brats_mri_dense(_rng(seed))
        cases.append({k: v for k, v in case.items() if k not in ("clean", "bias")})
    return cases


# ---- the declaration and the output contract ----


def test_task_declaration():
    task = get_task(TASK)
    assert TASK in PHANTOM_TASKS and task is brats_mri.PHANTOM_TASK
    assert dict(task.labels) == NAMES == brats_mri.BRATS_MRI_LABELS
    assert dict(task.modality) == MODALITY and task.n_channels == 4
    assert task.channel_layout == "files" and task.image_ndim == 3  # one 3D file per modality
    assert task.dicom_modality == "MR" and not task.supports_dicom
    assert task.spatial_dims == 3 and task.ignore_value is None and not task.masks
    assert task.fields == FIELDS
    defaults = dict(task.defaults)
    # the paper's cropped size, BraTS's 1 mm voxels
    assert defaults["shape"] == [160, 144, 128] and defaults["spacing"] == [1.0, 1.0, 1.0]
    assert set(defaults) == {"shape", "spacing", "p_cross_midline", "skull_stripped"}
    assert 0.0 < defaults["p_cross_midline"] < 0.5 and defaults["skull_stripped"] is False
    json.dumps(defaults)  # the defaults go into dataset.json
    assert "Kayalibay" in task.description
    for section in ("Section 3.1", "Table 1", "Section 4.2", "Invented", "Mid-sagittal plane", "(nx - 1) / 2"):
        assert section in brats_mri.__doc__, section


def test_output_types_and_shapes():
    case = get_task(TASK).generate(_rng(0), **SMALL)  # checked against the declaration by the registry
    assert case.image.shape == (*SMALL["shape"], 4) and case.image.dtype == np.float32
    assert case.label.shape == SMALL["shape"] and case.label.dtype == np.uint8
    assert set(case.fields) == set(FIELDS)
    assert case.fields["tumor_hemisphere"] in ("left", "right", "both")
    assert isinstance(case.fields["crosses_midline"], bool)
    assert case.fields["midsagittal_index"] == 19.5
    out = generate_brats_mri(_rng(0), **SMALL)
    assert set(out) == {"image", "label", *FIELDS}
    assert out["image"].flags["C_CONTIGUOUS"] and out["label"].flags["C_CONTIGUOUS"]
    assert np.isfinite(out["image"]).all() and out["image"].min() >= 0.0  # magnitude images
    assert set(np.unique(out["label"]).tolist()) <= set(NAMES)
    voxel_ml = np.prod(SMALL["spacing"]) / 1000.0
    label = out["label"]
    assert out["tumor_volume_ml"] == pytest.approx(np.count_nonzero(label) * voxel_ml, abs=0.006)
    core = np.isin(label, (NECROSIS, NON_ENHANCING, ENHANCING))
    assert out["tumor_core_volume_ml"] == pytest.approx(np.count_nonzero(core) * voxel_ml, abs=0.006)


def test_dense_function_draws_the_same_case():
    dense = generate_brats_mri_dense(_rng(5), **SMALL)
    plain = generate_brats_mri(_rng(5), **SMALL)
    for key in plain:
        assert np.array_equal(dense[key], plain[key]), key


def test_deterministic_per_seed():
    a = generate_brats_mri(_rng(3), **SMALL)
    b = generate_brats_mri(_rng(3), **SMALL)
    c = generate_brats_mri(_rng(4), **SMALL)
    for key in ("image", "label"):
        assert a[key].tobytes() == b[key].tobytes(), key
    assert all(a[k] == b[k] for k in FIELDS)
    assert a["image"].tobytes() != c["image"].tobytes()
    tumour = (a["label"] > 0) | (c["label"] > 0)
    assert np.mean(a["label"][tumour] != c["label"][tumour]) > 0.3  # another tumour, not only other noise


def test_every_tumour_class_in_every_case(default_cases):
    for case in default_cases:
        assert case["image"].shape == (*DEFAULT_SHAPE, 4) and case["label"].shape == DEFAULT_SHAPE
        counts = np.bincount(case["label"].ravel(), minlength=5)
        assert np.all(counts[1:] >= 200), counts  # at least 0.2 mL of each class at 1 mm
    for seed in range(12):  # and on the coarse grid
        counts = np.bincount(generate_brats_mri(_rng(seed), **SMALL)["label"].ravel(), minlength=5)
        assert np.all(counts[1:] >= 3), (seed, counts)


def test_whole_brain_inside_the_field_of_view(default_cases):
    # "cropped ... while still containing the entire brain": no brain tissue on the array's faces, except the brain
    # stem leaving through the lowest face (a cross-section of a few square centimetres)
    for case in default_cases:
        brain = np.isin(case["tissue"], (GM, WM, DEEP, *TUMOUR_TISSUES))
        faces = brain.copy()
        faces[1:-1, 1:-1, :-1] = False  # the four side faces and the top
        assert not faces.any()
        assert 0 < brain[:, :, 0].sum() < 500
        # the brain fills the field of view: about 120-140 mm wide and long
        xs = np.flatnonzero(brain.any(axis=(1, 2)))
        ys = np.flatnonzero(brain.any(axis=(0, 2)))
        assert 115 <= xs.max() - xs.min() + 1 <= 145 and 115 <= ys.max() - ys.min() + 1 <= 144


# ---- class imbalance (the paper's Table 1) ----


def test_class_frequencies_near_the_paper(default_cases):
    per_case = np.array(
        [np.bincount(case["label"].ravel(), minlength=5) / case["label"].size for case in default_cases]
    )
    mean = per_case.mean(axis=0)
    print(f"\nclass frequency (mean of {len(default_cases)} default cases) vs paper Table 1:")
    for value in range(5):
        print(
            f"  {NAMES[value]:20s} {mean[value]:.4f}  paper {PAPER[value]:.4f}  ratio {mean[value] / PAPER[value]:.2f}"
        )
    assert 0.94 <= mean[BG] <= 0.98, mean[BG]
    for value in (NECROSIS, EDEMA, NON_ENHANCING, ENHANCING):
        assert PAPER[value] / 2.5 <= mean[value] <= 2.5 * PAPER[value], (NAMES[value], mean[value], PAPER[value])
    # the paper's order: edema several times any core class, necrosis the rarest
    assert mean[EDEMA] > 2.0 * max(mean[NECROSIS], mean[NON_ENHANCING], mean[ENHANCING])
    assert mean[NECROSIS] < min(mean[NON_ENHANCING], mean[ENHANCING])
    # tumour sizes vary between cases
    whole = per_case[:, 1:].sum(axis=1)
    assert whole.max() > 1.5 * whole.min(), whole


# ---- the hemispheres and the mid-sagittal plane ----


def _sides(label: np.ndarray) -> tuple[int, int]:
    """Tumour voxels left (x < 0) and right (x > 0) of the mid-sagittal plane."""
    x = (np.arange(label.shape[0]) - (label.shape[0] - 1) / 2.0)[:, None, None]
    tumour = label > 0
    return int(np.count_nonzero(tumour & (x < 0))), int(np.count_nonzero(tumour & (x > 0)))


def test_fields_match_the_labels(default_cases):
    for case in default_cases:
        left, right = _sides(case["label"])
        expected = "both" if left and right else "left" if left else "right"
        assert case["tumor_hemisphere"] == expected and case["crosses_midline"] == (expected == "both")
        assert case["midsagittal_index"] == 79.5


def test_tumour_in_one_hemisphere_unless_crossing():
    seen = set()
    for seed in range(10):
        out = generate_brats_mri(_rng(seed), p_cross_midline=0.0, **SMALL)
        left, right = _sides(out["label"])
        assert (left == 0) != (right == 0), (seed, left, right)
        hemisphere = "left" if left else "right"
        assert out["tumor_hemisphere"] == hemisphere and out["crosses_midline"] is False
        seen.add(hemisphere)
        # a tumour in one hemisphere stays off the plane (the columns next to it hold no tumour at 4 mm)
        assert not (out["label"][19:21] > 0).any()
    assert seen == {"left", "right"}  # either hemisphere
    for seed in range(6):
        out = generate_brats_mri(_rng(seed), p_cross_midline=1.0, **SMALL)
        left, right = _sides(out["label"])
        assert out["tumor_hemisphere"] == "both" and out["crosses_midline"] is True
        assert min(left, right) > 0.15 * (left + right), (seed, left, right)  # really across, not a sliver


def test_crossing_cases_at_the_configured_rate():
    # 80 cases at the default probability 0.25: 20 expected, standard deviation 3.9
    crossing = [generate_brats_mri(_rng(seed), **SMALL)["crosses_midline"] for seed in range(80)]
    print(f"\ncrossing the midline: {sum(crossing)} of 80 at p_cross_midline=0.25")
    assert 8 <= sum(crossing) <= 32
    # 40 cases at 0.75: 30 expected, standard deviation 2.7
    crossing = [generate_brats_mri(_rng(seed), p_cross_midline=0.75, **SMALL)["crosses_midline"] for seed in range(40)]
    assert 21 <= sum(crossing) <= 38


def test_tumour_free_hemisphere_mirrors_to_the_other(default_cases):
    one_sided = [case for case in default_cases if not case["crosses_midline"]]
    assert len(one_sided) >= 3
    for case in one_sided:
        tissue, label, image = case["tissue"], case["label"], case["image"]
        tumour = label > 0
        near = _dilate(tumour | tumour[::-1], 5)  # the tumour, its mirror image and 5 voxels round them
        # Section 4.2's synthetic healthy brain: the tumour-free hemisphere mirrored onto the tumour's
        x = _world_x(label.shape[0], 1.0)[:, None, None]
        tumour_side = (x > 0) if case["tumor_hemisphere"] == "right" else (x < 0)
        healthy = np.where(tumour_side, tissue[::-1], tissue)
        assert not np.isin(healthy, TUMOUR_TISSUES).any()
        # away from the tumour it is the case's own anatomy: the tissue map is symmetric there ...
        assert np.array_equal(healthy[~near], tissue[~near])
        assert np.array_equal(tissue[~near], tissue[::-1][~near])
        # ... and the tumour really is in the tissue map (the test would notice a symmetric map everywhere)
        assert np.mean(tissue[tumour] != tissue[::-1][tumour]) > 0.9
        # the images match their mirror image in the brain up to bias field and noise
        brain = np.isin(tissue, (CSF, GM, WM, DEEP)) & ~near
        for c in range(4):
            a, b = image[..., c][brain], image[::-1, ..., c][brain]
            assert np.corrcoef(a, b)[0, 1] > 0.85, (MODALITY[str(c)], np.corrcoef(a, b)[0, 1])
            assert not np.array_equal(a, b)  # noise and bias are not mirrored


def test_mid_sagittal_plane_is_the_falx(default_cases):
    # the interhemispheric fissure (CSF) and falx (dura) fill the two central columns above the corpus callosum,
    # while 10 mm to either side is brain
    for case in default_cases:
        tissue = case["tissue"]
        if case["crosses_midline"]:
            continue
        top = int(np.argwhere(np.isin(tissue, (GM, WM))).mean(axis=0)[2]) + 25
        above = case["cavity"].copy()
        above[:, :, :top] = False
        above &= ~_dilate(case["label"] > 0, 3)
        fluid = {
            columns: float(np.isin(tissue[list(columns)][above[list(columns)]], (CSF, DURA)).mean())
            for columns in ((79, 80), (69, 90))
        }
        assert fluid[79, 80] > 0.9 and fluid[69, 90] < 0.4, fluid


def test_odd_width_mirrors_about_the_central_column():
    shape = (41, 36, 32)
    case = generate_brats_mri_dense(_rng(1), shape=shape, spacing=(4.0, 4.0, 4.0), p_cross_midline=0.0)
    tumour = case["label"] > 0
    assert case["midsagittal_index"] == 20.0
    assert not tumour[20].any()  # the central column is on the plane: in neither hemisphere
    near = _dilate(tumour | tumour[::-1], 3)
    assert np.array_equal(case["tissue"][~near], case["tissue"][::-1][~near])


# ---- same anatomy at any grid ----


def test_same_anatomy_at_any_spacing(default_cases):
    default = default_cases[0]
    small = generate_brats_mri_dense(_rng(0), **SMALL)
    assert all(default[k] == small[k] for k in ("tumor_hemisphere", "crosses_midline"))
    cavity = [default["cavity"].sum() * 1.0, small["cavity"].sum() * 64.0]
    assert cavity[1] == pytest.approx(cavity[0], rel=0.05)
    # an adult's intracranial volume is about 1.1-1.7 L; fitting 144 mm front to back shortens the brain, so the
    # phantom's is at the low end
    assert 0.9e6 < cavity[0] < 1.6e6
    assert small["tumor_volume_ml"] == pytest.approx(default["tumor_volume_ml"], rel=0.2)
    centroids = []
    for case, spacing in ((default, 1.0), (small, 4.0)):
        index = np.argwhere(case["label"] > 0).mean(axis=0)
        centroids.append((index - (np.asarray(case["label"].shape) - 1) / 2.0) * spacing)
    assert np.linalg.norm(centroids[0] - centroids[1]) < 5.0, centroids


# ---- MR contrast, bias field and noise ----


def test_contrast_of_each_modality(default_cases):
    for case in default_cases:
        image, tissue, label = case["image"], case["tissue"], case["label"]
        away = ~_dilate(label > 0, 2)
        masks = {name: _erode(tissue == code) & away for name, code in (("csf", CSF), ("gm", GM), ("wm", WM))}
        masks.update(
            {name: _erode(label == value) for name, value in (("edema", EDEMA), ("enh", ENHANCING), ("nec", NECROSIS))}
        )
        masks["gm"] = (tissue == GM) & away  # the cortex is thin: not eroded
        for name, mask in masks.items():
            assert mask.sum() > 100, name

        medians = {(c, name): float(np.median(image[..., c][mask])) for c in range(4) for name, mask in masks.items()}

        def med(channel, name, medians=medians):
            return medians[channel, name]

        # T1: white > grey > CSF (dark); edema darker than white matter
        assert med(T1, "wm") > med(T1, "gm") > med(T1, "csf"), "T1"
        assert med(T1, "csf") < 0.5 * med(T1, "wm") and med(T1, "edema") < med(T1, "wm")
        # T2: CSF brightest, grey > white; edema bright
        assert med(T2, "csf") > med(T2, "gm") > med(T2, "wm"), "T2"
        assert med(T2, "csf") > 1.5 * med(T2, "wm") and med(T2, "edema") > 1.3 * med(T2, "wm")
        # FLAIR: CSF suppressed, grey > white, edema brighter than any normal tissue
        assert med(FLAIR, "csf") < med(FLAIR, "wm") < med(FLAIR, "gm"), "FLAIR"
        assert med(FLAIR, "csf") < 0.5 * med(FLAIR, "gm")
        assert med(FLAIR, "edema") > 1.3 * max(med(FLAIR, "gm"), med(FLAIR, "wm"))
        # T1C: like T1 in normal tissue; the enhancing rim brightest, the necrotic core dark
        assert med(T1C, "wm") > med(T1C, "gm") > med(T1C, "csf"), "T1C"
        assert med(T1C, "enh") > 1.2 * med(T1C, "wm") and med(T1C, "enh") > 2.0 * med(T1C, "nec")
        assert med(T1C, "nec") < med(T1C, "gm")
        # enhancement: the rim is much brighter after contrast than before, the rest of the brain is not
        assert med(T1C, "enh") / med(T1C, "wm") > 1.3 * med(T1, "enh") / med(T1, "wm")


def test_bias_field_and_rician_noise():
    sigmas = []
    for seed in range(3):
        case = generate_brats_mri_dense(_rng(seed), **SMALL)
        image, tissue = case["image"], case["tissue"]
        log_bias = np.log(case["bias"])
        for c in range(4):
            assert 0.02 < float(log_bias[..., c].std()) < 0.2  # a mild non-uniformity ...
            assert np.abs(np.diff(log_bias[..., c], axis=0)).max() < 0.04  # ... smooth over a 4 mm voxel
            # Rician noise: the magnitude's mean in air is sigma * sqrt(pi / 2); a few % of white matter
            air = image[..., c][:4, :4, :][tissue[:4, :4, :] == AIR]
            assert air.size > 100
            sigma = float(air.mean()) / np.sqrt(np.pi / 2)
            wm = float(np.median(image[..., c][tissue == WM]))
            assert 0.005 < sigma / wm < 0.08, (MODALITY[str(c)], sigma / wm)
            sigmas.append(sigma / wm)
    assert max(sigmas) > 1.2 * min(sigmas)  # the noise level varies


def test_skull_stripped_zeroes_outside_the_cranial_cavity():
    plain = generate_brats_mri_dense(_rng(7), **SMALL)
    stripped = generate_brats_mri_dense(_rng(7), skull_stripped=True, **SMALL)
    inside = plain["cavity"]
    assert np.array_equal(stripped["label"], plain["label"])
    assert np.array_equal(stripped["image"][inside], plain["image"][inside])
    assert not stripped["image"][~inside].any() and plain["image"][~inside].min() > 0.0
    # the skull and scalp were outside: bright fat and marrow in T1 before stripping
    assert np.percentile(plain["image"][~inside][:, T1], 99) > np.median(plain["image"][inside][:, T1])


# ---- arguments and the data set writer ----


def test_bad_arguments():
    for kwargs in (
        {"shape": (40, 36)},
        {"shape": (40, 36, 0)},
        {"spacing": (4.0, -1.0, 4.0)},
        {"p_cross_midline": 1.5},
        {"p_cross_midline": -0.1},
        {"p_cross_midline": float("nan")},
    ):
        with pytest.raises(ValueError):
            generate_brats_mri(_rng(0), **{**SMALL, **kwargs})
    for kwargs in ({"p_cross_midline": "0.5"}, {"skull_stripped": 1}, {"skull_stripped": "yes"}):
        with pytest.raises(TypeError):
            generate_brats_mri(_rng(0), **{**SMALL, **kwargs})
    with pytest.raises(TypeError, match="generator arguments"):
        make_dataset(TASK, "unused", n_cases=1, grade="high")


def test_make_dataset_writes_a_valid_data_set(tmp_path):
    datalist = make_dataset(
        TASK, tmp_path / "d", n_cases=2, n_validation=1, n_test=1, shape=[40, 36, 32], spacing=[4, 4, 4]
    )
    content = json.loads(datalist.read_text())
    assert content["labels"] == {str(k): v for k, v in NAMES.items()}
    assert content["modality"] == MODALITY and content["tensorImageSize"] == "3D"
    assert [len(content[split]) for split in ("training", "validation", "test")] == [2, 1, 1]
    expected_affine = np.array([[4, 0, 0, -78.0], [0, 4, 0, -70.0], [0, 0, 4, -62.0], [0, 0, 0, 1]], dtype=float)
    for split, stream in (("training", 0), ("validation", 1), ("test", 2)):
        for index, entry in enumerate(content[split]):
            rng = np.random.default_rng(np.random.SeedSequence(entropy=0, spawn_key=(stream, index)))
            case = generate_brats_mri(rng, shape=(40, 36, 32), spacing=(4.0, 4.0, 4.0))
            # one file per modality, in channel order, with nnU-Net's channel suffix
            assert isinstance(entry["image"], list) and len(entry["image"]) == 4
            for c, path in enumerate(entry["image"]):
                assert path.endswith(f"_{c:04d}.nii.gz") and path.startswith(
                    "imagesTs/" if split == "test" else "imagesTr/"
                )
                image = nib.load(datalist.parent / path)
                assert image.shape == (40, 36, 32) and image.get_data_dtype() == np.float32
                np.testing.assert_allclose(image.affine, expected_affine, atol=1e-4)
                np.testing.assert_array_equal(np.asarray(image.dataobj), case["image"][..., c])
            label = nib.load(datalist.parent / entry["label"])
            assert label.shape == (40, 36, 32) and label.get_data_dtype() == np.uint8
            np.testing.assert_allclose(label.affine, expected_affine, atol=1e-4)
            np.testing.assert_array_equal(np.asarray(label.dataobj), case["label"])
            assert set(np.unique(np.asarray(label.dataobj)).tolist()) == set(NAMES)
            assert all(entry[k] == case[k] for k in FIELDS)


def test_multi_channel_painter_paints_every_image_with_one_fraction():
    # The phantom paints its four contrasts with drawing.Painter's extra images: one partial-volume fraction,
    # a value per image (a number, an array of the region's shape, or a function of the depth), and the labels and
    # tissue codes once. A half-space x <= 0.25 mm on a 1 mm grid of x = -1.5 ... 1.5 mm: signed distance x - 0.25,
    # fraction the smoothstep of 0.5 - sdf (a 1 mm ramp, clipped to [0, 1]); covered (labelled) where sdf <= 0.
    canvas = Canvas((4, 1, 1), (1.0, 1.0, 1.0), background=10.0)
    extra = [np.full((4, 1, 1), 20.0, np.float32), np.zeros((4, 1, 1), np.float32)]
    painter = Painter(canvas, extra=extra)
    assert painter.images[0] is canvas.image and painter.images[1] is extra[0] and len(painter.images) == 3
    ramp = np.array([1.0, 1.0, 0.25, 0.0])  # 0.5 - (x - 0.25) clipped, at x = -1.5, -0.5, 0.5, 1.5
    frac = ramp * ramp * (3.0 - 2.0 * ramp)
    depth = -(np.array([-1.5, -0.5, 0.5, 1.5]) - 0.25)
    found = canvas.fraction(HalfSpace((0.25, 0.0, 0.0), (1.0, 0.0, 0.0)))
    assert found is not None
    sl, _, sdf = found
    painter.sdf(sdf, [0.0, np.full((4, 1, 1), 30.0, np.float32), lambda d: 2.0 * d], 3, 7, sl)
    np.testing.assert_allclose(canvas.image.ravel(), 10.0 + frac * (0.0 - 10.0), rtol=1e-6)
    np.testing.assert_allclose(extra[0].ravel(), 20.0 + frac * (30.0 - 20.0), rtol=1e-6)
    np.testing.assert_allclose(extra[1].ravel(), frac * 2.0 * depth, rtol=1e-6, atol=1e-6)
    assert canvas.label.ravel().tolist() == [3, 3, 0, 0] and painter.tissue.ravel().tolist() == [7, 7, 0, 0]
    # one value per image, and extra images of the canvas's shape
    with pytest.raises(ValueError, match="one per image"):
        painter.sdf(sdf, [1.0, 2.0], None, 0, sl)
    with pytest.raises(ValueError, match="one per image"):
        painter.sdf(sdf, 1.0, None, 0, sl)
    with pytest.raises(ValueError, match="canvas"):
        Painter(canvas, extra=[np.zeros((3, 1, 1), np.float32)])
    # without extra images a painter takes one value as before (a sequence is not split)
    single = Painter(Canvas((4, 1, 1), (1.0, 1.0, 1.0), background=10.0))
    single.sdf(sdf, 0.0, 3, 7, sl)
    np.testing.assert_array_equal(single.canvas.image, canvas.image)
    assert single.images == [single.canvas.image]
