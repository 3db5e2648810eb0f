"""Tests for common.phantoms: the abdominal CT generator, the task registry, the data set writer (every file
layout the bundles need), DICOM output and the command line.

Orientation used in the assertions: arrays are [X, Y, Z] with a RAS+ affine diag(spacing), so a larger x index is
further to the patient's RIGHT, a larger y index more ANTERIOR, a larger z index more SUPERIOR.
Expected numbers come from anatomy and the radiology literature (organ volumes, portal-venous HU ranges, cited
where they are typed) or from hand computation, never from the generator's own constants. The new file layouts
are exercised with small stand-in tasks defined here, not with the future generators.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import common.phantoms
from common.data.errors import BundleInputError
from common.phantoms import PHANTOM_TASKS, PhantomTask, abdominal_ct, cli, make_dataset, write_dicom_series
from common.phantoms.abdominal_ct import generate_abdominal_ct
from common.phantoms.drawing import Canvas, Ellipsoid, Tube, centered_affine, soft_edge
from common.phantoms.registry import TaskRegistry, discover_tasks


def binary_erosion(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Erosion by the 6-connected cross, outside the array counted as background (scipy.ndimage's default)."""
    out = mask.astype(bool)
    for _ in range(iterations):
        eroded = out.copy()
        for axis in range(out.ndim):
            eroded &= np.roll(out, 1, axis) & np.roll(out, -1, axis)
            edge = [slice(None)] * out.ndim
            for index in (0, -1):
                edge[axis] = index
                eroded[tuple(edge)] = False
        out = eroded
    return out


TASK = "abdominal_ct_multiorgan"
LABELS = {
    0: "background",
    1: "artery",
    2: "portal vein",
    3: "liver",
    4: "spleen",
    5: "stomach",
    6: "gallbladder",
    7: "pancreas",
}
SMALL = {"shape": (64, 64, 32), "spacing": (6.0, 6.0, 7.5)}  # the default 384 x 384 x 240 mm field of view
REAL = {"shape": (192, 192, 96), "spacing": (2.0, 2.0, 2.5)}  # same field of view at a clinical-like spacing
REPO = Path(__file__).resolve().parents[2]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _centroid_mm(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return (affine @ np.append(np.argwhere(mask).mean(axis=0), 1.0))[:3]


def _in_range_fraction(values: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of ``values`` inside the 5-95 percentile range of ``reference``."""
    lo, hi = np.percentile(reference, [5, 95])
    return float(np.mean((values >= lo) & (values <= hi)))


def _best_threshold_accuracy(a: np.ndarray, b: np.ndarray) -> float:
    """Best balanced accuracy of any single threshold separating samples ``a`` from ``b`` (either direction)."""
    values = np.concatenate([a, b])
    is_a = np.concatenate([np.ones(a.size, bool), np.zeros(b.size, bool)])
    order = np.argsort(values, kind="stable")
    below_a = np.cumsum(is_a[order]) / a.size  # fraction of a at or below each threshold
    below_b = np.cumsum(~is_a[order]) / b.size
    acc = 0.5 * (below_a + (1 - below_b))
    return float(max(acc.max(), (1 - acc).max()))


@pytest.fixture(scope="module")
def real_cases():
    """Two cases at a clinical-like spacing, with their affine."""
    affine = centered_affine(REAL["shape"], REAL["spacing"])
    return [(*generate_abdominal_ct(_rng(seed), **REAL), affine) for seed in (0, 1)]


# ---- drawing helpers ----


def test_soft_edge_partial_volume():
    # smoothstep of the ramp 0.5 - d/w: 0.5 on the surface, 1 / 0 beyond half a width, symmetric around the surface
    d = np.array([-2.0, -0.5, -0.25, 0.0, 0.25, 0.5, 2.0], dtype=np.float32)
    f = soft_edge(d, 1.0)
    np.testing.assert_allclose(f, [1.0, 1.0, 0.84375, 0.5, 0.15625, 0.0, 0.0], atol=1e-6)


def test_shapes_volume_and_spacing_independence():
    # a sphere of radius 30 mm holds 4/3 pi 30^3 = 113097 mm^3;
    # a tube r=5 mm, 50 mm long with round caps: pi 25 50 + 4/3 pi 125 = 3927 + 524 mm^3
    for spacing in ((2.0, 2.0, 2.0), (3.0, 3.0, 5.0)):
        canvas = Canvas((60, 60, 40), spacing)
        canvas.draw(Ellipsoid([5.0, -3.0, 2.0], [30.0, 30.0, 30.0]), 1.0, 1)
        canvas.draw(Tube(np.array([[-40.0, 22.5, -30.0], [-40.0, 22.5, 20.0]]), 5.0), 1.0, 2)
        voxel = float(np.prod(spacing))
        assert (canvas.label == 1).sum() * voxel == pytest.approx(113097, rel=0.05)
        assert canvas.image.sum() * voxel == pytest.approx(113097 + (np.pi * 25 * 50 + 4 / 3 * np.pi * 125), rel=0.05)


# ---- the generator ----


def test_generator_is_deterministic_per_seed():
    a_img, a_lab = generate_abdominal_ct(_rng(7), **SMALL)
    b_img, b_lab = generate_abdominal_ct(_rng(7), **SMALL)
    c_img, c_lab = generate_abdominal_ct(_rng(8), **SMALL)
    assert a_img.tobytes() == b_img.tobytes() and a_lab.tobytes() == b_lab.tobytes()
    assert a_img.tobytes() != c_img.tobytes()
    assert (a_lab != c_lab).mean() > 0.005  # anatomy differs, not only the noise


def test_generator_types_and_all_labels_present():
    image, label = generate_abdominal_ct(_rng(0), **SMALL)
    assert image.dtype == np.int16 and label.dtype == np.uint8
    assert image.shape == label.shape == SMALL["shape"]
    assert set(np.unique(label)) == set(LABELS)
    assert image.min() >= -1024 and image.max() > 300  # air outside, bone inside


def test_default_shape_and_spacing():
    image, label = generate_abdominal_ct(_rng(0))
    assert image.shape == label.shape == (256, 256, 120)
    assert set(np.unique(label)) == set(LABELS)


def test_organ_volumes_plausible(real_cases):
    # adult ranges in litres (liver 1.0-2.5, spleen 0.1-0.4, ...); the aorta alone over 240 mm is pi 10^2 240 = 75 mL
    ranges = {
        1: (0.04, 0.2),
        2: (0.01, 0.08),
        3: (1.0, 2.5),
        4: (0.1, 0.4),
        5: (0.2, 1.5),
        6: (0.01, 0.08),
        7: (0.04, 0.15),
    }
    voxel_l = np.prod(REAL["spacing"]) / 1e6
    for _, label, _ in real_cases:
        for value, (lo, hi) in ranges.items():
            volume = (label == value).sum() * voxel_l
            assert lo <= volume <= hi, (LABELS[value], volume)


# Portal-venous phase (about 60-80 s after an intravenous bolus) CT numbers of real patients, in HU, typed here from
# the literature (wide bands: scanner, kV, dose and timing move real values by tens of HU). Sources:
# - Hounsfield scale: water 0 HU, air -1000 HU by definition; fat about -100 HU (-120 to -80 covers the usual
#   -120..-90 and -100..-50 of the tables in Prokop & Galanski, "Spiral and Multislice Computed Tomography of the
#   Body", Thieme 2003, and Radiopaedia's "Hounsfield unit"); skeletal muscle 35-55 HU unenhanced (same tables),
#   a few to about 15 HU more after contrast (van Vugt et al., Clin Nutr 2018;37:1707, "Contrast-enhancement
#   influences skeletal muscle density...").
# - Liver: 50-70 HU unenhanced (about 8-10 HU above the spleen: Piekarski et al., Radiology 1980;137:727) plus the
#   40-70 HU portal-venous enhancement that protocols aim at (>= 50 HU: Heiken et al., Radiology 1995;195:353;
#   Bae, Radiology 2010;256:32) -> 90-140 HU.
# - Spleen: 40-55 HU unenhanced, homogeneous in the portal-venous phase and a little brighter than the liver
#   (Bae 2010; standard body-CT texts) -> 100-150 HU.
# - Pancreas: 40-50 HU unenhanced; it peaks in the pancreatic phase and is lower in the hepatic/portal-venous
#   phase (Lu et al., Radiology 1996;199:697) -> 80-130 HU.
# - Aorta and portal vein: about 150-200 HU at 60-80 s with standard doses (Bae 2010's aortic and portal curves;
#   Kanematsu et al., Open J Radiol 2013;3:112 for the portal trunk) -> 140-250 HU for both.
# - Gallbladder bile: simple fluid, 0-20 HU -> -10 to 25 HU.
# - Stomach (label = enhancing wall, about 60-100 HU, around fasting fluid contents of 0-20 HU and possibly gas):
#   median of the label dominated by the fluid -> -10 to 60 HU.
PORTAL_VENOUS_HU = {
    1: (140, 250),  # artery (aorta-dominated)
    2: (140, 250),  # portal vein
    3: (90, 140),  # liver
    4: (100, 150),  # spleen
    5: (-10, 60),  # stomach (wall + fluid contents)
    6: (-10, 25),  # gallbladder (bile)
    7: (80, 130),  # pancreas
}
FAT_HU = (-120, -80)
MUSCLE_HU = (35, 70)


def test_hu_medians_in_portal_venous_ranges(real_cases):
    for image, label, _ in real_cases:
        for value, (lo, hi) in PORTAL_VENOUS_HU.items():
            median = float(np.median(image[label == value]))
            assert lo <= median <= hi, (LABELS[value], median)
        assert np.median(image[0:5, 0:5, :]) < -950  # air in the corner


def test_fat_and_muscle_hu_in_literature_ranges(real_cases):
    for image, label, affine in real_cases:
        # fat: the commonest unlabelled value between -300 and 0 HU (subcutaneous and visceral fat), 5 HU bins
        values = image[(label == 0) & (image > -300) & (image < 0)]
        counts, edges = np.histogram(values, bins=np.arange(-300, 5, 5))
        fat_mode = edges[counts.argmax()] + 2.5
        assert FAT_HU[0] <= fat_mode <= FAT_HU[1], fat_mode
        # muscle: the paraspinal (erector spinae) muscles, 30-46 mm either side of the midline and about 100 mm
        # behind the centre of the field of view, beside the vertebral arch
        x = affine[0, 0] * np.arange(image.shape[0]) + affine[0, 3]
        y = affine[1, 1] * np.arange(image.shape[1]) + affine[1, 3]
        box = ((np.abs(x) >= 30) & (np.abs(x) <= 46))[:, None] & ((y >= -106) & (y <= -98))[None, :]
        muscle = float(np.median(image[box[:, :, None] & (label == 0)]))
        assert MUSCLE_HU[0] <= muscle <= MUSCLE_HU[1], muscle


def test_noise_level_in_homogeneous_region(real_cases):
    sigmas = []
    for image, label, _ in real_cases:
        interior = binary_erosion(label == 3, iterations=3)
        assert interior.sum() > 10000
        sigmas.append(float(image[interior].std()))
    assert all(10.0 <= s <= 40.0 for s in sigmas), sigmas


def test_noise_level_varies_per_case():
    sigmas = []
    for seed in range(4):
        image, label = generate_abdominal_ct(_rng(seed), **SMALL)
        sigmas.append(float(image[binary_erosion(label == 3, iterations=2)].std()))
    assert max(sigmas) - min(sigmas) > 3.0, sigmas


def test_intensities_overlap_between_organs(real_cases):
    pairs = [(3, 4), (4, 3), (7, 3), (3, 7), (1, 2), (2, 1)]
    for image, label, _ in real_cases:
        values = {k: image[label == k].astype(np.float64) for k in (1, 2, 3, 4, 7)}
        overlapping = [(a, b) for a, b in pairs if _in_range_fraction(values[a], values[b]) > 0.25]
        assert len({frozenset(p) for p in overlapping}) >= 2, overlapping
        # no single threshold separates liver from spleen, or artery from portal vein, reasonably well
        assert _best_threshold_accuracy(values[3], values[4]) < 0.8
        assert _best_threshold_accuracy(values[1], values[2]) < 0.85


def test_left_right_and_anterior_posterior_layout(real_cases):
    for image, label, affine in real_cases:
        assert nib.aff2axcodes(affine) == ("R", "A", "S")
        c = {k: _centroid_mm(label == k, affine) for k in (1, 3, 4, 5, 6, 7)}
        x0 = np.argwhere(label == 3)[:, 0].mean()
        assert x0 > REAL["shape"][0] / 2  # liver: larger x index = patient right
        assert c[3][0] > 30 and c[4][0] < -50 and c[5][0] < -10  # liver right; spleen and stomach left
        spine = (label == 0) & (image > 400)
        spine[: REAL["shape"][0] // 2 - 20] = False
        spine[REAL["shape"][0] // 2 + 20 :] = False
        s = _centroid_mm(spine, affine)
        assert c[5][1] > s[1] + 50 and c[4][1] < c[5][1]  # stomach anterior; spleen posterior to it
        assert c[1][0] < s[0] and c[1][1] > s[1]  # aorta-dominated artery label: left of and anterior to the spine
        assert abs(c[7][0]) < 40 and c[7][1] > s[1] + 30  # pancreas across the midline, anterior to the spine
        assert c[6][2] < c[3][2] and c[6][0] > 0  # gallbladder under the liver, on the right


def test_same_anatomy_at_any_spacing():
    coarse = generate_abdominal_ct(_rng(5), **SMALL)[1]
    fine_spec = {"shape": (128, 128, 64), "spacing": (3.0, 3.0, 3.75)}
    fine = generate_abdominal_ct(_rng(5), **fine_spec)[1]
    a_coarse, a_fine = centered_affine(SMALL["shape"], SMALL["spacing"]), centered_affine(**fine_spec)
    for k in (3, 4, 5):
        v_coarse = (coarse == k).sum() * np.prod(SMALL["spacing"])
        v_fine = (fine == k).sum() * np.prod(fine_spec["spacing"])
        assert v_coarse == pytest.approx(v_fine, rel=0.15), LABELS[k]
        np.testing.assert_allclose(_centroid_mm(coarse == k, a_coarse), _centroid_mm(fine == k, a_fine), atol=6.0)


# ---- data sets on disk ----


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom") / "abdomen"
    path = make_dataset(
        TASK, out, n_cases=2, seed=3, n_validation=1, n_test=1, dicom=True, shape=(48, 48, 24), spacing=(8, 8, 10)
    )
    return out, path


def test_datalist_structure(dataset):
    out, path = dataset
    assert path == out / "dataset.json"
    d = json.loads(path.read_text())
    assert d["name"] == TASK and d["modality"] == {"0": "CT"}
    assert d["labels"] == {str(k): v for k, v in LABELS.items()}
    assert d["numTraining"] == 2 and len(d["training"]) == 2 and len(d["validation"]) == 1 and len(d["test"]) == 1
    assert [e["image"] for e in d["training"]] == [f"imagesTr/{TASK}_000.nii.gz", f"imagesTr/{TASK}_001.nii.gz"]
    assert d["validation"][0] == {"image": f"imagesTr/{TASK}_002.nii.gz", "label": f"labelsTr/{TASK}_002.nii.gz"}
    assert d["test"][0] == {"image": f"imagesTs/{TASK}_003.nii.gz", "label": f"labelsTs/{TASK}_003.nii.gz"}
    assert d["test_dicom"] == [{"image": f"imagesTs_dicom/{TASK}_003", "label": f"labelsTs/{TASK}_003.nii.gz"}]
    assert d["phantom"]["generator_kwargs"] == {"shape": [48, 48, 24], "spacing": [8.0, 8.0, 10.0]}
    assert d["phantom"]["seed"] == 3 and d["phantom"]["n_validation"] == 1
    for split in ("training", "validation", "test", "test_dicom"):
        for entry in d[split]:
            for rel in entry.values():
                assert not os.path.isabs(rel) and ".." not in rel
                assert (out / rel).exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_nifti_affine_dtype_shape(dataset):
    out, _ = dataset
    # origin = -(n - 1) / 2 * spacing: -(47 / 2) * 8 = -188, -(23 / 2) * 10 = -115
    expected = np.array([[8, 0, 0, -188], [0, 8, 0, -188], [0, 0, 10, -115], [0, 0, 0, 1]], dtype=float)
    kinds = (("imagesTr", np.int16), ("labelsTr", np.uint8), ("imagesTs", np.int16), ("labelsTs", np.uint8))
    for folder, dtype in kinds:
        for f in sorted((out / folder).glob("*.nii.gz")):
            img = nib.load(f)
            assert img.shape == (48, 48, 24)
            assert img.get_data_dtype() == dtype
            np.testing.assert_allclose(img.affine, expected)
            assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
            assert np.asanyarray(img.dataobj).dtype == dtype
    label = np.asanyarray(nib.load(out / "labelsTr" / f"{TASK}_000.nii.gz").dataobj)
    assert set(np.unique(label)) <= set(LABELS) and (label == 3).any()


def _arrays(out: Path, name: str, folder: str = "Tr") -> tuple[np.ndarray, np.ndarray]:
    paths = [out / f"{kind}{folder}" / f"{name}.nii.gz" for kind in ("images", "labels")]
    return tuple(np.asanyarray(nib.load(p).dataobj) for p in paths)


def test_dataset_is_deterministic_and_splits_independent(dataset, tmp_path):
    out, _ = dataset
    again = make_dataset(TASK, tmp_path / "same", n_cases=2, seed=3, shape=(48, 48, 24), spacing=(8, 8, 10)).parent
    other = make_dataset(TASK, tmp_path / "other", n_cases=1, seed=4, shape=(48, 48, 24), spacing=(8, 8, 10)).parent
    for i in (0, 1):  # same training cases whatever the number of validation/test cases
        for a, b in zip(_arrays(out, f"{TASK}_00{i}"), _arrays(again, f"{TASK}_00{i}"), strict=True):
            assert a.tobytes() == b.tobytes()
    assert _arrays(out, f"{TASK}_000")[0].tobytes() != _arrays(other, f"{TASK}_000")[0].tobytes()
    assert _arrays(out, f"{TASK}_000")[0].tobytes() != _arrays(out, f"{TASK}_001")[0].tobytes()


def _failing_task(calls_before_failure: int) -> PhantomTask:
    calls = {"n": 0}

    def generator(rng, **kwargs):
        calls["n"] += 1
        if calls["n"] > calls_before_failure:
            raise RuntimeError("interrupted")
        return generate_abdominal_ct(rng, **kwargs)

    return dataclasses.replace(PHANTOM_TASKS[TASK], generator=generator, description="failing")


def test_idempotent_without_regenerating(dataset, monkeypatch):
    out, path = dataset
    before = path.stat().st_mtime_ns
    monkeypatch.setitem(PHANTOM_TASKS, TASK, _failing_task(0))  # would raise if anything were generated
    # the same arguments spelled differently (lists, floats) name the same data set
    again = make_dataset(
        TASK, out, n_cases=2, seed=3, n_validation=1, n_test=1, dicom=True, shape=[48, 48, 24], spacing=[8.0, 8.0, 10.0]
    )
    assert again == path and path.stat().st_mtime_ns == before


def test_refuses_to_overwrite_a_different_dataset(dataset, tmp_path):
    out, path = dataset
    before = path.read_bytes()
    with pytest.raises(BundleInputError, match="phantom data set made with .*n_cases.: 2"):
        make_dataset(TASK, out, n_cases=3, seed=3, shape=(48, 48, 24), spacing=(8, 8, 10))
    assert path.read_bytes() == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(BundleInputError, match="non-empty folder without dataset.json"):
        make_dataset(TASK, foreign, n_cases=1, shape=(32, 32, 16), spacing=(12, 12, 15))
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(PHANTOM_TASKS, TASK, _failing_task(1))
    with pytest.raises(RuntimeError, match="interrupted"):
        make_dataset(TASK, tmp_path / "ds", n_cases=3, shape=(32, 32, 16), spacing=(12, 12, 15))
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_raise_value_or_type_error(tmp_path):
    # mistakes in the call are programming errors (ValueError / TypeError, as in MONAI), not bad user data
    cases = [
        (ValueError, "unknown phantom task 'liver_mri'.*abdominal_ct_multiorgan", ("liver_mri", "a"), {}),
        (ValueError, "shape", (TASK, "b"), {"shape": (0, 32, 16)}),
        (ValueError, "shape", (TASK, "b2"), {"shape": (32, 32, 16, 4)}),  # four entries for a 3D task
        (ValueError, "spacing", (TASK, "b3"), {"spacing": "[2, 2]"}),
        (TypeError, "contrast", (TASK, "c"), {"contrast": "arterial"}),
        (ValueError, "n_test", (TASK, "e"), {"dicom": True}),
        (TypeError, "dicom", (TASK, "f"), {"dicom": "yes"}),
    ]
    for error, words, (task, folder), kwargs in cases:
        with pytest.raises(error, match=words) as info:
            make_dataset(task, tmp_path / folder, n_cases=1, **kwargs)
        assert not isinstance(info.value, BundleInputError), info.value
    with pytest.raises(ValueError, match="n_cases") as info:
        make_dataset(TASK, tmp_path / "d", n_cases=0)
    assert not isinstance(info.value, BundleInputError)
    with pytest.raises(TypeError, match="n_cases"):
        make_dataset(TASK, tmp_path / "d", n_cases=1.5)
    assert list(tmp_path.iterdir()) == []


# ---- DICOM ----


def test_dicom_series_round_trip(dataset):
    import itk
    from monai.transforms import LoadImage

    out, path = dataset
    entry = json.loads(path.read_text())["test_dicom"][0]
    series = out / entry["image"]
    files = sorted(series.glob("*.dcm"))
    assert len(files) == 24  # one file per axial slice
    from_dicom = LoadImage(reader="ITKReader", image_only=True)(str(series))
    from_nifti = LoadImage(reader="NibabelReader", image_only=True)(str(out / "imagesTs" / f"{TASK}_003.nii.gz"))
    assert tuple(from_dicom.shape) == (48, 48, 24)
    np.testing.assert_array_equal(np.asarray(from_dicom), np.asarray(from_nifti))
    np.testing.assert_allclose(np.asarray(from_dicom.affine), np.asarray(from_nifti.affine), atol=1e-4)
    np.testing.assert_allclose(np.asarray(from_dicom.pixdim[:3]), [8, 8, 10])

    io = itk.GDCMImageIO.New()
    reader = itk.ImageFileReader[itk.Image[itk.SS, 3]].New(FileName=str(files[0]), ImageIO=io)
    reader.Update()
    tags = io.GetMetaDataDictionary()
    assert tags["0008|0060"].strip() == "CT"
    assert float(tags["0028|1052"]) == -1024.0 and float(tags["0028|1053"]) == 1.0
    # DICOM is LPS: the RAS origin (-188, -188, -115) is (188, 188, -115); rows run to -x, columns to -y
    np.testing.assert_allclose([float(v) for v in tags["0020|0032"].split("\\")], [188, 188, -115], atol=1e-3)
    np.testing.assert_allclose([float(v) for v in tags["0020|0037"].split("\\")], [-1, 0, 0, 0, -1, 0], atol=1e-6)


def test_write_dicom_series_oblique_free_flipped_affine(tmp_path):
    from monai.transforms import LoadImage

    rng = np.random.default_rng(0)
    image = rng.integers(-1024, 2000, size=(12, 10, 6), dtype=np.int16)
    affine = np.array([[-2.0, 0, 0, 30.0], [0, 1.5, 0, -20.0], [0, 0, 3.0, 7.0], [0, 0, 0, 1]])  # x runs to the left
    series = write_dicom_series(image, affine, tmp_path / "s")
    loaded = LoadImage(reader="ITKReader", image_only=True)(str(series))
    # A left-handed voxel frame comes back with the slice order reversed (readers stack slices along
    # row x column); what must hold is that every voxel keeps its value at its world position.
    to_original = np.linalg.inv(affine) @ np.asarray(loaded.affine, dtype=float)
    np.testing.assert_allclose(to_original, np.round(to_original), atol=1e-4)  # a pure flip/permutation of indices
    idx = np.indices(loaded.shape[:3]).reshape(3, -1)
    mapped = np.rint(to_original @ np.vstack([idx, np.ones(idx.shape[1])])).astype(int)[:3]
    np.testing.assert_array_equal(np.asarray(loaded).reshape(-1), image[mapped[0], mapped[1], mapped[2]])
    assert not np.allclose(to_original, np.eye(4))  # this affine does exercise the flipped case
    with pytest.raises(BundleInputError, match="non-empty"):  # the folder is the user's: never overwritten
        write_dicom_series(image, affine, series)
    with pytest.raises(ValueError, match="integer") as info:  # a wrong array is a programming error
        write_dicom_series(image.astype(np.float32), affine, tmp_path / "f")
    assert not isinstance(info.value, BundleInputError)
    with pytest.raises(ValueError, match="3D"):
        write_dicom_series(image[..., None], affine, tmp_path / "g")


# ---- command line ----


def test_command_line_make(tmp_path):
    out = tmp_path / "cli"
    cmd = [
        sys.executable,
        "-m",
        "common.phantoms",
        "make",
        "--task",
        TASK,
        "--out_dir",
        str(out),
        "--n_cases",
        "1",
        "--n_validation",
        "1",
        "--shape",
        "[32,32,16]",
        "--spacing",
        "[12,12,15]",
    ]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, encoding="utf-8", errors="replace", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(out / "dataset.json")
    d = json.loads((out / "dataset.json").read_text())
    assert d["phantom"]["generator_kwargs"] == {"shape": [32, 32, 16], "spacing": [12.0, 12.0, 15.0]}
    assert len(d["validation"]) == 1


def test_command_line_reports_bad_input(tmp_path):
    with pytest.raises(SystemExit, match="^error: unknown phantom task 'nope'.*abdominal_ct_multiorgan"):
        cli.main(["make", "--task", "nope", "--out_dir", str(tmp_path / "x"), "--n_cases", "1"])
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit, match="^error: shape"):
        cli.main(["make", "--task", TASK, "--out_dir", str(tmp_path / "y"), "--n_cases", "1", "--shape", "[4,4]"])
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="^error: .*foreign: found a non-empty folder") as info:
        cli.main(["make", "--task", TASK, "--out_dir", str(foreign), "--n_cases", "1"])
    assert "\n" not in str(info.value)
    assert cli.tasks() == sorted(PHANTOM_TASKS) and TASK in cli.tasks()


def test_command_line_exit_status(tmp_path):
    cmd = [sys.executable, "-m", "common.phantoms", "make", "--task", "nope", "--out_dir", str(tmp_path / "z")]
    result = subprocess.run(
        [*cmd, "--n_cases", "1"], cwd=REPO, capture_output=True, encoding="utf-8", errors="replace", timeout=120
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown phantom task 'nope'")


# ---- the task registry ----


def test_registry_finds_the_abdominal_task_in_its_module():
    found = discover_tasks("common.phantoms")
    assert found[TASK] is abdominal_ct.PHANTOM_TASK is PHANTOM_TASKS[TASK]
    assert dict(found[TASK].labels) == LABELS and found[TASK].supports_dicom
    assert sorted(PHANTOM_TASKS) == sorted(found)


GENERATOR_MODULE = """
import numpy as np
from common.phantoms.registry import PhantomTask


def generate(rng, shape=(4, 4, 3), spacing=(1.0, 1.0, 1.0)):
    image = rng.normal(size=tuple(shape)).astype(np.float32)
    return {{"image": image, "label": (image > 0).astype(np.uint8)}}


PHANTOM_TASK = PhantomTask(
    name="{name}", generator=generate, labels={{0: "background", 1: "bright"}}, modality={{"0": "MRI"}},
    description="test stand-in", dicom_modality="MR", defaults={{"shape": [4, 4, 3], "spacing": [1.0, 1.0, 1.0]}},
)
"""


@pytest.fixture
def extra_package_dir(tmp_path, monkeypatch):
    """A folder added to the ``common.phantoms`` package path, so modules written there belong to the package."""
    folder = tmp_path / "extra_modules"
    folder.mkdir()
    monkeypatch.setattr(common.phantoms, "__path__", [*common.phantoms.__path__, str(folder)])
    written = []

    def write(module: str, task_name: str) -> None:
        (folder / f"{module}.py").write_text(textwrap.dedent(GENERATOR_MODULE.format(name=task_name)))
        written.append(f"common.phantoms.{module}")
        importlib.invalidate_caches()

    yield write
    for module in written:
        sys.modules.pop(module, None)
    monkeypatch.undo()  # restore the package path before the registry looks again
    PHANTOM_TASKS.refresh()


def test_registry_discovers_a_new_generator_module(extra_package_dir, tmp_path):
    extra_package_dir("zz_stand_in_generator", "stand_in_mri")
    registry = TaskRegistry("common.phantoms")
    assert repr(registry).endswith("not yet discovered)")  # nothing is imported before the first lookup
    assert {"stand_in_mri", TASK} <= set(registry)
    assert registry["stand_in_mri"].dicom_modality == "MR"
    # the shared registry and the writer pick it up with no edit to shared code
    PHANTOM_TASKS.refresh()
    datalist = make_dataset("stand_in_mri", tmp_path / "ds", n_cases=1)
    entry = json.loads(datalist.read_text())["training"][0]
    assert nib.load(tmp_path / "ds" / entry["image"]).shape == (4, 4, 3)
    assert "stand_in_mri" in cli.tasks()
    # a registered task replaced by hand must keep its name
    with pytest.raises(ValueError, match="key must be the task's name"):
        registry["other_name"] = registry["stand_in_mri"]
    with pytest.raises(TypeError, match="PhantomTask"):
        registry["stand_in_mri"] = "not a task"


def test_registry_refuses_duplicate_task_names(extra_package_dir):
    extra_package_dir("zz_stand_in_a", "stand_in_twice")
    extra_package_dir("zz_stand_in_b", "stand_in_twice")
    with pytest.raises(ValueError, match="'stand_in_twice' is declared by both .*zz_stand_in_a and .*zz_stand_in_b"):
        discover_tasks("common.phantoms")
    with pytest.raises(ValueError, match="declared by both"):
        list(TaskRegistry("common.phantoms"))


def test_declaration_errors_are_caught_when_declared():
    base = {
        "name": "stand_in",
        "generator": lambda rng, shape, spacing: None,
        "labels": {0: "background", 1: "thing"},
        "modality": {"0": "CT"},
        "description": "stand-in",
        "dicom_modality": "CT",
        "defaults": {"shape": [4, 4, 3], "spacing": [1.0, 1.0, 1.0]},
    }
    PhantomTask(**base)  # the base is valid
    bad = [
        ({"name": "Bad Name"}, ValueError, "name"),
        ({"generator": "not callable"}, TypeError, "callable"),
        ({"dicom_modality": "PET"}, ValueError, "dicom_modality"),
        ({"spatial_dims": 2}, ValueError, "spatial_dims"),
        ({"n_channels": 2}, ValueError, "modality keys"),  # two channels need two modality entries
        ({"n_channels": 2, "modality": {"0": "a", "1": "b"}, "channel_layout": "planar"}, ValueError, "layout"),
        ({"labels": {0: "background", 300: "too big"}}, ValueError, "labels"),
        ({"ignore_value": 256}, ValueError, "ignore_value"),
        ({"masks": {"image": "clash"}}, ValueError, "distinct"),
        ({"masks": {"mask": "m"}, "fields": ("mask",)}, ValueError, "distinct"),
        ({"fields": ["ef"]}, TypeError, "tuple"),
        ({"defaults": {"shape": [4, 4, 3]}}, ValueError, "spacing"),
        ({"spatial_dims": 4}, ValueError, "shape"),  # defaults with three entries for a 3D+time task
        (
            {"spatial_dims": 4, "n_channels": 2, "modality": {"0": "a", "1": "b"}, "channel_layout": "last"},
            ValueError,
            "5D",
        ),
    ]
    for change, error, words in bad:
        with pytest.raises(error, match=words):
            PhantomTask(**{**base, **change})


# ---- the file layouts of the coming bundles, on small stand-in tasks ----


def _spawned(seed: int, split: int, index: int) -> np.random.Generator:
    """The generator a case must be drawn from: SeedSequence(seed, spawn_key=(split, index)), split 0/1/2."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(split, index)))


def _perfusion_like(rng, shape, spacing):
    """5 time points as channels, sparse 2D annotations (0 = not annotated) and a cranial-cavity mask."""
    image = rng.integers(-50, 150, size=(*shape, 5)).astype(np.int32)  # integer HU of a wider type
    label = np.zeros(shape, np.uint8)
    label[:, :, 1] = rng.integers(1, 3, size=shape[:2])  # one annotated slice
    mask = np.zeros(shape, bool)
    mask[1:-1, 1:-1, :] = True
    return {"image": image, "label": label, "mask": mask}


PERFUSION_LIKE = PhantomTask(
    name="stand_in_perfusion",
    generator=_perfusion_like,
    labels={0: "not annotated", 1: "grey matter", 2: "white matter"},
    modality={str(t): f"CT t{t}" for t in range(5)},
    description="stand-in: CT perfusion with time points as channels",
    dicom_modality="CT",
    defaults={"shape": [6, 5, 4], "spacing": [2.0, 2.0, 5.0]},
    n_channels=5,
    channel_layout="last",
    ignore_value=0,
    masks={"mask": "cranial cavity"},
)


def _four_modalities(rng, shape, spacing):
    """Four MRI modalities (float64 here; written float32) and a three-class label."""
    image = rng.normal(100.0, 20.0, size=(*shape, 4))
    return {"image": image, "label": rng.integers(0, 4, size=shape).astype(np.uint8)}


TUMOUR_MRI_LIKE = PhantomTask(
    name="stand_in_tumour_mri",
    generator=_four_modalities,
    labels={0: "background", 1: "necrosis", 2: "oedema", 3: "enhancing"},
    modality={"0": "FLAIR", "1": "T1", "2": "T1C", "3": "T2"},
    description="stand-in: four MRI modalities, one file each",
    dicom_modality="MR",
    defaults={"shape": [5, 4, 3], "spacing": [1.0, 1.0, 1.0]},
    n_channels=4,
    channel_layout="files",
)

LABELED_FRAMES = (0, 2)


def _cardiac_like(rng, shape, spacing):
    """3D+time CT; frames other than LABELED_FRAMES unannotated (255); ejection fraction as a datalist field."""
    image = rng.integers(-100, 400, size=shape).astype(np.int16)
    label = np.full(shape, 255, np.uint8)
    for t in LABELED_FRAMES:
        label[..., t] = rng.integers(0, 3, size=shape[:3])
    return {
        "image": image,
        "label": label,
        "ejection_fraction": np.float64(rng.uniform(0.4, 0.7)),
        "labeled_frames": np.array(LABELED_FRAMES),
    }


CARDIAC_LIKE = PhantomTask(
    name="stand_in_cardiac_4d",
    generator=_cardiac_like,
    labels={0: "background", 1: "left ventricle", 2: "myocardium"},
    modality={"0": "CT"},
    description="stand-in: 3D+time cardiac CT with sparse temporal labels",
    dicom_modality="CT",
    defaults={"shape": [6, 6, 4, 5], "spacing": [1.5, 1.5, 3.0, 0.08]},
    spatial_dims=4,
    ignore_value=255,
    fields=("ejection_fraction", "labeled_frames"),
)

HAND_MRI_LIKE = PhantomTask(
    name="stand_in_hand_mri",
    generator=lambda rng, shape, spacing: (rng.normal(size=shape).astype(np.float32), np.zeros(shape, np.uint8)),
    labels={0: "background"},
    modality={"0": "MRI"},
    description="stand-in: one-channel 3D MRI",
    dicom_modality="MR",
    defaults={"shape": [4, 4, 3], "spacing": [1.0, 1.0, 1.0]},
)


@pytest.fixture
def stand_in_tasks(monkeypatch):
    for task in (PERFUSION_LIKE, TUMOUR_MRI_LIKE, CARDIAC_LIKE, HAND_MRI_LIKE):
        monkeypatch.setitem(PHANTOM_TASKS, task.name, task)


def _load(root: Path, rel: str) -> tuple[nib.Nifti1Image, np.ndarray]:
    img = nib.load(root / rel)
    return img, np.asanyarray(img.dataobj)


def test_channels_last_file_with_mask_and_ignore_value(stand_in_tasks, tmp_path):
    out = tmp_path / "ctp"
    d = json.loads(make_dataset(PERFUSION_LIKE.name, out, n_cases=1, seed=5, n_validation=1).read_text())
    assert d["tensorImageSize"] == "4D"  # MSD: one 4D file (X, Y, Z, C) per case
    assert d["modality"] == {str(t): f"CT t{t}" for t in range(5)} and d["labels"]["0"] == "not annotated"
    assert d["ignore_value"] == 0 and d["masks"] == {"mask": "cranial cavity"}
    name = f"{PERFUSION_LIKE.name}_001"
    assert d["validation"] == [
        {"image": f"imagesTr/{name}.nii.gz", "label": f"labelsTr/{name}.nii.gz", "mask": f"masksTr/{name}.nii.gz"}
    ]
    expected = _perfusion_like(_spawned(5, 1, 0), (6, 5, 4), None)  # validation case 0: spawn key (1, 0)
    img, image = _load(out, d["validation"][0]["image"])
    assert image.shape == (6, 5, 4, 5) and image.dtype == np.int16  # CT is written as int16 HU
    np.testing.assert_array_equal(image, expected["image"])
    # spatial header: 2 x 2 x 5 mm, centred: origin -(n - 1) / 2 * spacing = -5, -4, -7.5
    np.testing.assert_allclose(img.affine, [[2, 0, 0, -5], [0, 2, 0, -4], [0, 0, 5, -7.5], [0, 0, 0, 1]])
    assert img.header.get_zooms()[:3] == (2.0, 2.0, 5.0) and img.header.get_xyzt_units()[0] == "mm"
    _, label = _load(out, d["validation"][0]["label"])
    _, mask = _load(out, d["validation"][0]["mask"])
    assert label.dtype == mask.dtype == np.uint8
    np.testing.assert_array_equal(label, expected["label"])
    np.testing.assert_array_equal(mask, expected["mask"].astype(np.uint8))
    assert set(np.unique(mask)) == {0, 1} and not label[:, :, [0, 2, 3]].any()  # only slice 1 annotated


def test_one_file_per_modality(stand_in_tasks, tmp_path):
    out = tmp_path / "brats"
    d = json.loads(make_dataset(TUMOUR_MRI_LIKE.name, out, n_cases=1, n_test=1, seed=2).read_text())
    assert d["tensorImageSize"] == "3D" and d["modality"] == {"0": "FLAIR", "1": "T1", "2": "T1C", "3": "T2"}
    name = f"{TUMOUR_MRI_LIKE.name}_001"
    entry = d["test"][0]
    # the Model Zoo's BraTS datalist: "image" lists the modalities' files in channel order (nnU-Net suffixes)
    assert entry == {"image": [f"imagesTs/{name}_{c:04d}.nii.gz" for c in range(4)], "label": f"labelsTs/{name}.nii.gz"}
    expected = _four_modalities(_spawned(2, 2, 0), (5, 4, 3), None)  # test case 0: spawn key (2, 0)
    for c, rel in enumerate(entry["image"]):
        img, channel = _load(out, rel)
        assert channel.shape == (5, 4, 3) and channel.dtype == np.float32
        np.testing.assert_array_equal(channel, expected["image"][..., c].astype(np.float32))
        assert img.get_data_dtype() == np.float32
    assert "ignore_value" not in d and "masks" not in d


def test_three_d_plus_time_with_sparse_frames_and_fields(stand_in_tasks, tmp_path):
    out = tmp_path / "cardiac"
    d = json.loads(make_dataset(CARDIAC_LIKE.name, out, n_cases=2, seed=1).read_text())
    assert d["tensorImageSize"] == "4D" and d["ignore_value"] == 255
    assert d["phantom"]["generator_kwargs"] == {"shape": [6, 6, 4, 5], "spacing": [1.5, 1.5, 3.0, 0.08]}
    for index, entry in enumerate(d["training"]):
        expected = _cardiac_like(_spawned(1, 0, index), (6, 6, 4, 5), None)
        assert entry["labeled_frames"] == [0, 2]  # plain JSON lists and numbers, not numpy
        assert entry["ejection_fraction"] == pytest.approx(float(expected["ejection_fraction"]))
        assert isinstance(entry["ejection_fraction"], float)
        img, image = _load(out, entry["image"])
        assert image.shape == (6, 6, 4, 5) and image.dtype == np.int16
        np.testing.assert_array_equal(image, expected["image"])
        # pixdim[4] is the frame interval, in seconds; the affine is the 3D spatial one, centred
        np.testing.assert_allclose(img.header.get_zooms(), (1.5, 1.5, 3.0, 0.08), rtol=1e-6)
        assert img.header.get_xyzt_units() == ("mm", "sec")
        np.testing.assert_allclose(img.affine[:3, 3], [-3.75, -3.75, -4.5])
        _, label = _load(out, entry["label"])
        assert label.shape == (6, 6, 4, 5) and label.dtype == np.uint8
        assert set(np.unique(label[..., [1, 3, 4]])) == {255}  # unannotated frames carry the ignore value
        assert set(np.unique(label[..., [0, 2]])) <= {0, 1, 2}


def test_shape_and_spacing_take_the_task_spatial_dims(stand_in_tasks, tmp_path):
    with pytest.raises(ValueError, match="shape as 4 positive integers"):
        make_dataset(CARDIAC_LIKE.name, tmp_path / "a", n_cases=1, shape=[6, 6, 4])
    with pytest.raises(ValueError, match="spacing as 4 positive numbers"):
        make_dataset(CARDIAC_LIKE.name, tmp_path / "b", n_cases=1, spacing=[1.5, 1.5, 3.0])
    with pytest.raises(ValueError, match="spacing"):
        make_dataset(CARDIAC_LIKE.name, tmp_path / "c", n_cases=1, spacing=[1.5, 1.5, 3.0, 0.0])
    datalist = make_dataset(CARDIAC_LIKE.name, tmp_path / "d", n_cases=1, shape="[4, 4, 2, 3]")  # CLI spelling
    entry = json.loads(datalist.read_text())["training"][0]
    assert nib.load(datalist.parent / entry["image"]).shape == (4, 4, 2, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_dicom_only_for_one_channel_3d_ct(stand_in_tasks, tmp_path):
    assert PHANTOM_TASKS[TASK].supports_dicom
    for task in (PERFUSION_LIKE, TUMOUR_MRI_LIKE, CARDIAC_LIKE, HAND_MRI_LIKE):
        assert not task.supports_dicom
        with pytest.raises(ValueError, match="DICOM series are written only for one-channel 3D CT") as info:
            make_dataset(task.name, tmp_path / task.name, n_cases=1, n_test=1, dicom=True)
        assert not isinstance(info.value, BundleInputError)
    assert list(tmp_path.iterdir()) == []


def _broken(output):
    return dataclasses.replace(HAND_MRI_LIKE, name="stand_in_broken", generator=lambda rng, shape, spacing: output)


def test_generator_output_is_checked_against_the_declaration(tmp_path, monkeypatch):
    image, label = np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 3), np.uint8)
    bad = [
        ({"image": image, "label": label, "extra": label}, ValueError, "keys"),
        ({"image": image, "label": label + 9}, ValueError, r"label values \[9\]"),
        ({"image": image, "label": label.astype(np.float32)}, ValueError, "label of dtype"),
        ({"image": image[:, :, :2], "label": label}, ValueError, "image of shape"),
        ({"image": image, "label": label[:, :, :2]}, ValueError, "label of shape"),
        ({"image": np.full_like(image, np.nan), "label": label}, ValueError, "non-finite"),
        ({"image": image.tolist(), "label": label}, TypeError, "numpy array"),
        ([image, label, label], TypeError, "mapping"),
    ]
    for output, error, words in bad:
        task = _broken(output)
        monkeypatch.setitem(PHANTOM_TASKS, task.name, task)
        with pytest.raises(error, match=words):
            make_dataset(task.name, tmp_path / "x", n_cases=1)
    ct = dataclasses.replace(PHANTOM_TASKS[TASK], generator=lambda rng, shape, spacing: (image, label))
    monkeypatch.setitem(PHANTOM_TASKS, TASK, ct)
    with pytest.raises(ValueError, match="CT image of dtype float32; expected integer HU"):
        make_dataset(TASK, tmp_path / "x", n_cases=1, shape=(4, 4, 3))
    fields = dataclasses.replace(
        CARDIAC_LIKE,
        generator=lambda rng, shape, spacing: {
            **_cardiac_like(rng, shape, spacing),
            "ejection_fraction": {"not": "json"},
        },
    )
    monkeypatch.setitem(PHANTOM_TASKS, fields.name, fields)
    with pytest.raises(TypeError, match="field 'ejection_fraction'"):
        make_dataset(fields.name, tmp_path / "x", n_cases=1)
    assert list(tmp_path.iterdir()) == []
