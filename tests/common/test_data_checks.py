"""Tests for common.data: datalist reading, the preflight check, the check transforms and what a user sees."""

from __future__ import annotations

import copy
import gzip
import json
import os
import traceback

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, EnsureChannelFirstd

from common.data import (
    BundleInputError,
    CheckFiniteValuesd,
    CheckInputd,
    CheckLabelValuesd,
    CheckShapeMatchd,
    LoadImageCheckedd,
    find_bundle_input_error,
    load_datalist,
    preflight_check,
    read_image_header,
)

SHAPE = (8, 9, 10)
AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])
UNREADABLE_EXPECTED = "a NIfTI file or a DICOM series folder"


def _nifti(path, array, affine=AFFINE):
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
    return str(path)


def _ct(path, shape=SHAPE, seed=0):
    rng = np.random.default_rng(seed)
    return _nifti(path, rng.uniform(-1000, 1000, shape).astype(np.float32))


def _label(path, shape=SHAPE, values=range(8), seed=1, affine=AFFINE):
    rng = np.random.default_rng(seed)
    return _nifti(path, rng.choice(list(values), size=shape).astype(np.uint8), affine)


def _random_bytes(path, n=600, seed=2):
    path.write_bytes(np.random.default_rng(seed).bytes(n))
    return str(path)


def _truncated_gzip(path, source):
    raw = open(source, "rb").read()
    path.write_bytes(raw[: len(raw) // 2])
    return str(path)


def _assert_error(excinfo, *words):
    """The message names every word (file name, found, expected), and the error carries found/expected apart."""
    err = excinfo.value if isinstance(excinfo, pytest.ExceptionInfo) else excinfo
    msg = str(err)
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    assert msg == (f"{err.path}: " if err.path else "") + f"found {err.found}; expected {err.expected}"


@pytest.fixture
def dataset(tmp_path):
    """A good two-case abdominal-CT data set: 1-channel CT in HU, labels 0..7, datalist with relative paths."""
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for i in range(2):
        _ct(tmp_path / "imagesTr" / f"case_{i}.nii.gz", seed=i)
        _label(tmp_path / "labelsTr" / f"case_{i}.nii.gz", seed=10 + i)
    entries = [
        {"image": f"imagesTr/case_{i}.nii.gz", "label": f"labelsTr/case_{i}.nii.gz", "fold": i} for i in range(2)
    ]
    datalist = tmp_path / "dataset.json"
    datalist.write_text(json.dumps({"name": "phantom", "training": entries, "test": ["imagesTr/case_0.nii.gz"]}))
    return tmp_path, datalist


# --- load_datalist ------------------------------------------------------------------------------------------------


def test_load_datalist_resolves_paths(dataset):
    root, datalist = dataset
    data = load_datalist(datalist)
    assert data == [
        {
            "image": os.path.join(str(root), "imagesTr", f"case_{i}.nii.gz"),
            "label": os.path.join(str(root), "labelsTr", f"case_{i}.nii.gz"),
            "fold": i,
        }
        for i in range(2)
    ]
    test = load_datalist(datalist, "test", required_keys=("image",))
    assert test == [{"image": os.path.join(str(root), "imagesTr", "case_0.nii.gz")}]


def test_load_datalist_base_dir(dataset, tmp_path_factory):
    root, datalist = dataset
    moved = tmp_path_factory.mktemp("elsewhere") / "list.json"
    moved.write_text(datalist.read_text())
    data = load_datalist(moved, base_dir=root)
    assert data[0]["image"] == os.path.join(str(root), "imagesTr", "case_0.nii.gz")
    with pytest.raises(BundleInputError) as e:
        load_datalist(moved)  # relative to its own folder the files do not exist
    _assert_error(e, "list.json", "entry 0", "case_0.nii.gz", "does not exist", "expected an existing file")


def test_missing_datalist(tmp_path):
    with pytest.raises(BundleInputError) as e:
        load_datalist(tmp_path / "nowhere.json")
    _assert_error(e, "nowhere.json", "found no file at this path", "expected an MSD-style JSON datalist")


def test_bad_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"training": [{"image": "a.nii.gz",}]}')
    with pytest.raises(BundleInputError) as e:
        load_datalist(bad)
    _assert_error(e, "bad.json", "found invalid JSON", "line 1", "expected an MSD-style JSON datalist")
    assert isinstance(e.value.__cause__, json.JSONDecodeError)


def test_missing_key_lists_existing_keys(dataset):
    _, datalist = dataset
    with pytest.raises(BundleInputError) as e:
        load_datalist(datalist, "validation")
    _assert_error(e, "dataset.json", "found no 'validation' key", "'name'", "'training'", "'test'")
    _assert_error(e, "expected a 'validation' list")


def test_missing_entry_key(tmp_path):
    _ct(tmp_path / "a.nii.gz")
    _label(tmp_path / "a_seg.nii.gz")
    datalist = tmp_path / "dl.json"
    entries = [{"image": "a.nii.gz", "label": "a_seg.nii.gz"}, {"image": "a.nii.gz"}]
    datalist.write_text(json.dumps({"training": entries}))
    with pytest.raises(BundleInputError) as e:
        load_datalist(datalist)
    _assert_error(e, "dl.json", "found entry 1 of 'training' without a 'label' key", "expected every entry to have")


def test_empty_list_and_non_dict_entry(tmp_path):
    datalist = tmp_path / "dl.json"
    datalist.write_text(json.dumps({"training": []}))
    with pytest.raises(BundleInputError) as e:
        load_datalist(datalist)
    _assert_error(e, "dl.json", "found an empty 'training' list", "expected at least one entry")
    datalist.write_text(json.dumps({"training": ["a.nii.gz"]}))
    with pytest.raises(BundleInputError) as e:
        load_datalist(datalist)
    _assert_error(e, "dl.json", "entry 0 of 'training' being a JSON str")


def test_missing_file(dataset):
    root, datalist = dataset
    os.remove(root / "labelsTr" / "case_1.nii.gz")
    with pytest.raises(BundleInputError) as e:
        load_datalist(datalist)
    _assert_error(e, "dataset.json", "entry 1 of 'training'", "'label'", os.path.join("labelsTr", "case_1.nii.gz"))
    _assert_error(e, "does not exist", "expected an existing file or DICOM series folder")
    assert load_datalist(datalist, check_files=False)[1]["label"].endswith("case_1.nii.gz")


# --- preflight_check ----------------------------------------------------------------------------------------------


def test_preflight_good_returns_data_unchanged(dataset):
    _, datalist = dataset
    data = load_datalist(datalist)
    before = copy.deepcopy(data)
    out = preflight_check(data, n_channels=1, label_values=range(8), check_label_values=True)
    assert out is data
    assert out == before


def test_preflight_header_matches_loadimage(dataset):
    root, _ = dataset
    path = str(root / "imagesTr" / "case_0.nii.gz")
    header = read_image_header(path)
    loaded = LoadImageCheckedd("image", ensure_channel_first=True)({"image": path})["image"]
    assert header.shape == tuple(loaded.shape) == (1, *SHAPE)
    np.testing.assert_allclose(header.affine, loaded.affine.numpy())


def test_preflight_wrong_channel_count(tmp_path):
    image = _nifti(tmp_path / "two_channel.nii.gz", np.zeros((*SHAPE, 2), np.float32))
    label = _label(tmp_path / "label.nii.gz")
    with pytest.raises(BundleInputError) as e:
        preflight_check([{"image": image, "label": label}], n_channels=1)
    _assert_error(e, "two_channel.nii.gz", "found 2 channels; expected 1 channel")


def test_preflight_time_points(tmp_path):
    image = _nifti(tmp_path / "perfusion.nii.gz", np.zeros((*SHAPE, 17), np.float32))
    label = _label(tmp_path / "label.nii.gz", values=(0, 1))
    with pytest.raises(BundleInputError) as e:
        preflight_check([{"image": image, "label": label}], n_channels=19, channel_name="time points")
    _assert_error(e, "perfusion.nii.gz", "found 17 time points; expected 19 time points")
    good = _nifti(tmp_path / "perfusion19.nii.gz", np.zeros((*SHAPE, 19), np.float32))
    data = [{"image": good, "label": label}]
    assert preflight_check(data, n_channels=19, channel_name="time points") is data


def test_preflight_wrong_dimensionality(tmp_path):
    image = _nifti(tmp_path / "slice.nii.gz", np.zeros(SHAPE[:2], np.float32))
    with pytest.raises(BundleInputError) as e:
        preflight_check([{"image": image}], n_channels=1)
    _assert_error(e, "slice.nii.gz", "found 2 spatial dimensions", "expected 3 spatial dimensions")


def test_preflight_shape_mismatch(tmp_path):
    image = _ct(tmp_path / "image.nii.gz")
    label = _label(tmp_path / "short_label.nii.gz", shape=(8, 9, 11))
    with pytest.raises(BundleInputError) as e:
        preflight_check([{"image": image, "label": label}], n_channels=1)
    _assert_error(e, "short_label.nii.gz", "found label spatial shape (8, 9, 11)", "(8, 9, 10)", "image.nii.gz")


def test_preflight_affine_mismatch(tmp_path):
    image = _ct(tmp_path / "image.nii.gz")
    label = _label(tmp_path / "shifted_label.nii.gz", affine=np.diag([0.8, 0.8, 3.0, 1.0]))
    with pytest.raises(BundleInputError) as e:
        preflight_check([{"image": image, "label": label}], n_channels=1)
    _assert_error(e, "shifted_label.nii.gz", "spacing (0.8, 0.8, 3.0)", "expected the image's affine")
    _assert_error(e, "spacing (0.8, 0.8, 2.5)", "image.nii.gz")
    # within tolerance passes
    label_ok = _label(tmp_path / "label_ok.nii.gz", affine=np.diag([0.8, 0.8, 2.5 + 1e-4, 1.0]))
    preflight_check([{"image": image, "label": label_ok}], n_channels=1)


def test_preflight_label_values(tmp_path):
    image = _ct(tmp_path / "image.nii.gz")
    label = np.zeros(SHAPE, np.uint8)
    label[0, 0, 0] = 9
    path = _nifti(tmp_path / "bad_label.nii.gz", label)
    data = [{"image": image, "label": path}]
    assert preflight_check(data, n_channels=1, label_values=range(8)) is data  # headers only: values not read
    with pytest.raises(BundleInputError) as e:
        preflight_check(data, n_channels=1, label_values=range(8), check_label_values=True)
    _assert_error(e, "bad_label.nii.gz", "found label values {9}", "expected label values in {0, 1, 2, 3, 4, 5, 6, 7}")
    with pytest.raises(ValueError, match="needs label_values"):
        preflight_check(data, check_label_values=True)


@pytest.mark.parametrize("kind", ["random_bytes", "truncated_gzip", "truncated_nii"])
def test_preflight_unreadable(tmp_path, kind):
    good = _ct(tmp_path / "good.nii.gz")
    if kind == "random_bytes":
        bad = _random_bytes(tmp_path / "corrupt.nii.gz")
        words = ("corrupt.nii.gz", "found an unreadable file (", UNREADABLE_EXPECTED)
    elif kind == "truncated_gzip":
        bad = _truncated_gzip(tmp_path / "corrupt.nii.gz", good)
        words = ("corrupt.nii.gz", "found an unreadable file (EOFError", UNREADABLE_EXPECTED)
    else:
        plain = _nifti(tmp_path / "plain.nii", np.zeros(SHAPE, np.float32))
        bad = str(tmp_path / "corrupt.nii")
        open(bad, "wb").write(open(plain, "rb").read()[:1000])
        expected_bytes = 352 + 4 * int(np.prod(SHAPE))  # NIfTI-1 header + float32 voxels
        words = ("corrupt.nii", "found a truncated file (1000 bytes)", f"at least {expected_bytes} bytes")
    label = _label(tmp_path / "label.nii.gz")
    with pytest.raises(BundleInputError) as e:
        preflight_check([{"image": good, "label": label}, {"image": bad, "label": label}], n_channels=1)
    _assert_error(e, *words)


def test_preflight_reports_first_bad_case(tmp_path):
    label = _label(tmp_path / "label.nii.gz")
    cases = [{"image": _ct(tmp_path / "good.nii.gz"), "label": label}]
    cases.append({"image": _nifti(tmp_path / "first_bad.nii.gz", np.zeros((*SHAPE, 3), np.float32)), "label": label})
    cases.append({"image": _random_bytes(tmp_path / "second_bad.nii.gz"), "label": label})
    with pytest.raises(BundleInputError) as e:
        preflight_check(cases, n_channels=1)
    _assert_error(e, "first_bad.nii.gz", "found 3 channels")


def test_preflight_list_of_files_is_channels(tmp_path):
    files = [_ct(tmp_path / f"mod{i}.nii.gz", seed=i) for i in range(4)]
    label = _label(tmp_path / "label.nii.gz", values=(0, 1, 2, 4))
    data = [{"image": files, "label": label}]
    assert preflight_check(data, n_channels=4, label_values=(0, 1, 2, 4), check_label_values=True) is data
    with pytest.raises(BundleInputError) as e:
        preflight_check(data, n_channels=2)
    _assert_error(e, "mod0.nii.gz", "found 4 channels; expected 2 channels")


def test_preflight_dicom_series(tmp_path):
    import itk  # pinned in requirements.txt: a missing itk must fail, not skip

    folder = tmp_path / "ct_series"
    folder.mkdir()
    volume = itk.image_from_array(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6))  # (z, y, x)
    writer = itk.ImageSeriesWriter[itk.Image[itk.SS, 3], itk.Image[itk.SS, 2]].New()
    writer.SetInput(volume)
    writer.SetImageIO(itk.GDCMImageIO.New())
    writer.SetFileNames([str(folder / f"slice{i:03d}.dcm") for i in range(4)])
    writer.Update()
    header = read_image_header(folder)
    loaded = LoadImageCheckedd("image", ensure_channel_first=True)({"image": str(folder)})["image"]
    assert header.shape == tuple(loaded.shape) == (1, 6, 5, 4)
    np.testing.assert_allclose(header.affine, loaded.affine.numpy(), atol=1e-6)
    data = [{"image": str(folder)}]
    assert preflight_check(data, n_channels=1) is data
    empty = tmp_path / "not_dicom"
    empty.mkdir()
    (empty / "notes.dcm").write_bytes(b"not a DICOM file")
    with pytest.raises(BundleInputError) as e:
        preflight_check([{"image": str(empty)}], n_channels=1)
    _assert_error(e, "not_dicom", "found a folder without a readable DICOM series", UNREADABLE_EXPECTED)


# --- transforms ---------------------------------------------------------------------------------------------------


def _load(keys=("image", "label")):
    return LoadImageCheckedd(keys, ensure_channel_first=True)


def test_transforms_pass_good_input_unchanged(dataset):
    root, _ = dataset
    image, label = str(root / "imagesTr" / "case_0.nii.gz"), str(root / "labelsTr" / "case_0.nii.gz")
    loaded = _load()({"image": image, "label": label})
    checks = [
        CheckInputd("image", n_channels=1, min_spatial_size=8),
        CheckInputd("label", n_channels=1),
        CheckShapeMatchd(("image", "label")),
        CheckLabelValuesd("label", allowed_values=range(8)),
        CheckFiniteValuesd("image"),
    ]
    out = loaded
    for t in checks:
        out = t(out)
        assert out["image"] is loaded["image"] and out["label"] is loaded["label"]  # no copies
    np.testing.assert_array_equal(out["image"][0].numpy(), nib.load(image).get_fdata(dtype=np.float32))


def test_check_input_channels_and_time_points(tmp_path):
    two = _nifti(tmp_path / "two_channel.nii.gz", np.zeros((*SHAPE, 2), np.float32))
    with pytest.raises(BundleInputError) as e:
        CheckInputd("image", n_channels=1)(_load("image")({"image": two}))
    _assert_error(e, "two_channel.nii.gz", "found 2 channels; expected 1 channel")
    perf = _nifti(tmp_path / "perfusion.nii.gz", np.zeros((*SHAPE, 17), np.float32))
    with pytest.raises(BundleInputError) as e:
        CheckInputd("image", n_channels=19, channel_name="time points")(_load("image")({"image": perf}))
    _assert_error(e, "perfusion.nii.gz", "found 17 time points; expected 19 time points")


def test_check_input_dimensionality_and_size(tmp_path):
    image = _ct(tmp_path / "image.nii.gz")
    loaded = _load("image")({"image": image})
    with pytest.raises(BundleInputError) as e:
        CheckInputd("image", n_channels=1, spatial_dims=2)(loaded)
    _assert_error(e, "image.nii.gz", "found 3 spatial dimensions", "expected 2 spatial dimensions")
    with pytest.raises(BundleInputError) as e:
        CheckInputd("image", n_channels=1, min_spatial_size=(16, -1, -1))(loaded)
    _assert_error(e, "image.nii.gz", "found spatial shape (8, 9, 10)", "at least (16, -1, -1)")


def test_check_shape_match(tmp_path):
    image = _ct(tmp_path / "image.nii.gz")
    label = _label(tmp_path / "short_label.nii.gz", shape=(8, 9, 11))
    with pytest.raises(BundleInputError) as e:
        CheckShapeMatchd()(_load()({"image": image, "label": label}))
    _assert_error(e, "short_label.nii.gz", "found label spatial shape (8, 9, 11)", "expected the image's spatial shape")
    moved = _label(tmp_path / "moved_label.nii.gz", affine=np.diag([1.0, 0.8, 2.5, 1.0]))
    with pytest.raises(BundleInputError) as e:
        CheckShapeMatchd()(_load()({"image": image, "label": moved}))
    _assert_error(e, "moved_label.nii.gz", "spacing (1.0, 0.8, 2.5)", "expected the image's affine")


def test_check_label_values(tmp_path):
    label = np.zeros(SHAPE, np.uint8)
    label[1, 2, 3], label[4, 5, 6], label[7, 8, 9] = 9, 12, 7
    path = _nifti(tmp_path / "bad_label.nii.gz", label)
    with pytest.raises(BundleInputError) as e:
        CheckLabelValuesd("label", allowed_values=range(8))(_load("label")({"label": path}))
    _assert_error(e, "bad_label.nii.gz", "found label values {9, 12}")
    _assert_error(e, "expected label values in {0, 1, 2, 3, 4, 5, 6, 7}")
    # non-integer values in a float label map are reported too
    soft = _nifti(tmp_path / "soft_label.nii.gz", np.full(SHAPE, 0.5, np.float32))
    with pytest.raises(BundleInputError) as e:
        CheckLabelValuesd("label", allowed_values=(0, 1))(_load("label")({"label": soft}))
    _assert_error(e, "soft_label.nii.gz", "found label values {0.5}", "expected label values in {0, 1}")
    with pytest.raises(ValueError, match="allowed_values"):
        CheckLabelValuesd("label")


@pytest.mark.parametrize("bad, found", [(np.nan, "found 1 NaN and 0 infinite"), (np.inf, "found 0 NaN and 1 infinite")])
def test_check_finite_values(tmp_path, bad, found):
    image = np.zeros(SHAPE, np.float32)
    image[3, 3, 3] = bad
    path = _nifti(tmp_path / "nan_image.nii.gz", image)
    with pytest.raises(BundleInputError) as e:
        CheckFiniteValuesd("image")(_load("image")({"image": path}))
    _assert_error(e, "nan_image.nii.gz", found, "expected finite values in every voxel")


@pytest.mark.parametrize("kind", ["random_bytes", "truncated_gzip", "missing"])
def test_load_image_checked_unreadable(tmp_path, kind):
    good = _ct(tmp_path / "good.nii.gz")
    if kind == "random_bytes":
        bad, words = _random_bytes(tmp_path / "corrupt.nii.gz"), ("found an unreadable file (",)
    elif kind == "truncated_gzip":
        bad, words = _truncated_gzip(tmp_path / "corrupt.nii.gz", good), ("found an unreadable file (EOFError",)
    else:
        bad, words = str(tmp_path / "corrupt.nii.gz"), ("found no file or folder at this path",)
    with pytest.raises(BundleInputError) as e:
        _load()({"image": good, "label": bad})
    _assert_error(e, "corrupt.nii.gz", *words, UNREADABLE_EXPECTED)
    assert e.value.__cause__ is not None  # the reader's own exception is kept
    assert not isinstance(e.value.__cause__, BundleInputError)


def test_compose_what_the_user_sees(tmp_path):
    """MONAI wraps a transform's exception in RuntimeError("applying transform ...") ``from`` it, once in Compose and
    again in Dataset; the BundleInputError is the root cause, printed first in the traceback."""
    image = _ct(tmp_path / "image.nii.gz")
    label = np.zeros(SHAPE, np.uint8)
    label[0, 0, 0] = 9
    label_path = _nifti(tmp_path / "bad_label.nii.gz", label)
    chain = Compose(
        [
            LoadImageCheckedd(("image", "label")),
            EnsureChannelFirstd(("image", "label")),
            CheckInputd("image", n_channels=1),
            CheckShapeMatchd(("image", "label")),
            CheckLabelValuesd("label", allowed_values=range(8)),
            CheckFiniteValuesd("image"),
        ]
    )
    with pytest.raises(RuntimeError, match="applying transform") as e:
        chain({"image": image, "label": label_path})
    cause = e.value.__cause__
    assert isinstance(cause, BundleInputError) and find_bundle_input_error(e.value) is cause
    _assert_error(cause, "bad_label.nii.gz", "found label values {9}")
    printed = "".join(traceback.format_exception(e.value))
    assert printed.index("BundleInputError: ") < printed.index("RuntimeError: applying transform")

    # in a Dataset: wrapped twice, the BundleInputError is still the root cause
    with pytest.raises(RuntimeError) as e:
        next(iter(DataLoader(Dataset([{"image": image, "label": label_path}], chain), batch_size=1)))
    assert find_bundle_input_error(e.value) is not None
    _assert_error(find_bundle_input_error(e.value), "bad_label.nii.gz", "found label values {9}")


def test_dataloader_worker_keeps_the_message(tmp_path):
    """With ``num_workers > 0`` torch re-raises a RuntimeError holding the worker's traceback text: the chain is lost,
    the BundleInputError message is not. (torch then takes ~5 s to shut the failed worker down.)"""
    image = _ct(tmp_path / "image.nii.gz")
    bad = _random_bytes(tmp_path / "corrupt.nii.gz")
    chain = Compose([LoadImageCheckedd(("image", "label")), CheckShapeMatchd(("image", "label"))])
    loader = DataLoader(Dataset([{"image": image, "label": bad}], chain), batch_size=1, num_workers=1)
    with pytest.raises(RuntimeError, match=r"corrupt\.nii\.gz: found an unreadable file \(") as e:
        next(iter(loader))
    assert "BundleInputError" in str(e.value) and UNREADABLE_EXPECTED in str(e.value)


def test_config_usage_from_bundle(dataset):
    """The JSON a bundle writes: dataset ``data`` from load_datalist + preflight_check, checks after loading."""
    root, _ = dataset
    config = {
        "dataset_dir": str(root),
        "train": {
            "datalist": {
                "_target_": "common.data.load_datalist",
                "datalist_path": "$@dataset_dir + '/dataset.json'",
                "data_list_key": "training",
            },
            "preprocessing": {
                "_target_": "Compose",
                "transforms": [
                    {"_target_": "common.data.LoadImageCheckedd", "keys": ["image", "label"]},
                    {"_target_": "EnsureChannelFirstd", "keys": ["image", "label"]},
                    {"_target_": "common.data.CheckInputd", "keys": "image", "n_channels": 1},
                    {"_target_": "common.data.CheckShapeMatchd", "keys": ["image", "label"]},
                    {"_target_": "common.data.CheckLabelValuesd", "keys": "label", "allowed_values": list(range(8))},
                    {"_target_": "common.data.CheckFiniteValuesd", "keys": "image"},
                ],
            },
            "dataset": {
                "_target_": "Dataset",
                "data": {
                    "_target_": "common.data.preflight_check",
                    "data": "@train#datalist",
                    "n_channels": 1,
                    "label_values": list(range(8)),
                    "check_label_values": True,
                },
                "transform": "@train#preprocessing",
            },
        },
    }
    ds = ConfigParser(config).get_parsed_content("train#dataset")
    assert len(ds) == 2 and ds[0]["image"].shape == (1, *SHAPE)

    with gzip.open(root / "labelsTr" / "case_1.nii.gz", "wb") as f:  # now an unreadable label
        f.write(b"not a NIfTI header")
    with pytest.raises(RuntimeError, match="Failed to instantiate") as e:
        ConfigParser(config).get_parsed_content("train#dataset")
    _assert_error(find_bundle_input_error(e.value), "case_1.nii.gz", "found an unreadable file (", UNREADABLE_EXPECTED)


def test_find_bundle_input_error_none():
    assert find_bundle_input_error(RuntimeError("unrelated")) is None
    assert find_bundle_input_error(None) is None


def test_check_values_large_volume_chunks():
    """More voxels than one chunk: an offending value in the last chunk is still found (hand-placed values)."""
    from common.data import check_finite_values, check_label_values

    label = torch.zeros((1, 160, 160, 180), dtype=torch.float32)  # 4.6 M voxels > 4.19 M per chunk
    label[0, -1, -1, -1] = 3
    check_label_values(label, (0, 3), "big_label.nii.gz")
    with pytest.raises(BundleInputError) as e:
        check_label_values(label, (0, 1), "big_label.nii.gz")
    _assert_error(e, "big_label.nii.gz", "found label values {3}")
    label[0, -1, -1, -1] = float("inf")
    with pytest.raises(BundleInputError) as e:
        check_finite_values(label, "big_image.nii.gz")
    _assert_error(e, "big_image.nii.gz", "found 0 NaN and 1 infinite")
