"""Tests for common.phantoms: the abdominal CT generator, the data set writer, DICOM output and the command line.

Orientation used in the assertions: arrays are [X, Y, Z] with a RAS+ affine diag(spacing), so a larger x index is
further to the patient's RIGHT, a larger y index more ANTERIOR, a larger z index more SUPERIOR.
Expected numbers come from anatomy (organ volumes, portal-venous HU ranges) or from hand computation, not from the
generator's own constants.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from common.data.errors import BundleInputError
from common.phantoms import api
from common.phantoms.abdominal_ct import generate_abdominal_ct
from common.phantoms.api import PHANTOM_TASKS, PhantomTask, make_dataset, write_dicom_series
from common.phantoms.drawing import Canvas, Ellipsoid, Tube, centered_affine, soft_edge


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


def test_hu_medians_in_portal_venous_ranges(real_cases):
    ranges = {1: (170, 220), 2: (150, 190), 3: (100, 120), 4: (110, 130), 5: (0, 40), 6: (0, 20), 7: (90, 110)}
    for image, label, _ in real_cases:
        for value, (lo, hi) in ranges.items():
            median = float(np.median(image[label == value]))
            assert lo <= median <= hi, (LABELS[value], median)
        assert np.median(image[0:5, 0:5, :]) < -950  # air in the corner


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
        for a, b in zip(_arrays(out, f"{TASK}_00{i}"), _arrays(again, f"{TASK}_00{i}")):
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

    real = PHANTOM_TASKS[TASK]
    return PhantomTask(generator, LABELS, {"0": "CT"}, "failing", real.defaults, real.version)


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


def test_bad_arguments_raise_bundle_input_error(tmp_path):
    with pytest.raises(BundleInputError, match="unknown phantom task 'liver_mri'.*abdominal_ct_multiorgan"):
        make_dataset("liver_mri", tmp_path / "a", n_cases=1)
    with pytest.raises(BundleInputError, match="shape"):
        make_dataset(TASK, tmp_path / "b", n_cases=1, shape=(0, 32, 16))
    with pytest.raises(BundleInputError, match="contrast"):
        make_dataset(TASK, tmp_path / "c", n_cases=1, contrast="arterial")
    with pytest.raises(BundleInputError, match="n_cases"):
        make_dataset(TASK, tmp_path / "d", n_cases=0)
    with pytest.raises(BundleInputError, match="n_test"):
        make_dataset(TASK, tmp_path / "e", n_cases=1, dicom=True)
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
    with pytest.raises(BundleInputError, match="non-empty"):
        write_dicom_series(image, affine, series)
    with pytest.raises(BundleInputError, match="integer"):
        write_dicom_series(image.astype(np.float32), affine, tmp_path / "f")


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
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(out / "dataset.json")
    d = json.loads((out / "dataset.json").read_text())
    assert d["phantom"]["generator_kwargs"] == {"shape": [32, 32, 16], "spacing": [12.0, 12.0, 15.0]}
    assert len(d["validation"]) == 1


def test_command_line_reports_bad_input(tmp_path):
    with pytest.raises(SystemExit, match="unknown phantom task 'nope'.*abdominal_ct_multiorgan"):
        api.main(["make", "--task", "nope", "--out_dir", str(tmp_path / "x"), "--n_cases", "1"])
    assert not (tmp_path / "x").exists()
