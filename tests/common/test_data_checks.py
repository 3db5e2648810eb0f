"""Tests for common.data: datalist reading, the preflight check, the check transforms and what a user sees."""

from __future__ import annotations

import copy
import gzip
import importlib
import json
import os
import pickle
import struct
import traceback
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset, MetaTensor
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

# --- helpers that break files as exports do (the bad-input matrix in tests/bundles/test_bad_inputs.py uses them) ---

_LONG_VRS = {b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"OD", b"OL", b"UC", b"UR", b"OV", b"SV", b"UV"}


def set_dicom_tags(path, tags: dict) -> None:
    """Rewrite header elements of a DICOM file that ``write_dicom_series`` wrote (GDCM: Implicit VR Little Endian
    after the explicit-VR file meta group): each ``"gggg|eeee"`` tag gets a text value, or is deleted (``None``)."""
    raw = Path(path).read_bytes()
    i = 132  # preamble and "DICM"
    while struct.unpack_from("<H", raw, i)[0] == 0x0002:
        if raw[i + 4 : i + 6] in _LONG_VRS:
            i += 12 + struct.unpack_from("<I", raw, i + 8)[0]
        else:
            i += 8 + struct.unpack_from("<H", raw, i + 6)[0]
    todo = {tuple(int(x, 16) for x in k.split("|")): v for k, v in tags.items()}
    out = bytearray(raw[:i])
    while i < len(raw):
        group, element, length = struct.unpack_from("<HHI", raw, i)
        assert length != 0xFFFFFFFF, "undefined lengths are not handled"
        if (group, element) in todo:
            value = todo.pop((group, element))
            if value is not None:
                data = value.encode("ascii")
                data += b" " * (len(data) % 2)
                out += struct.pack("<HHI", group, element, len(data)) + data
        else:
            out += raw[i : i + 8 + length]
        i += 8 + length
    assert all(v is None for v in todo.values()), f"tags not in {path}: {todo}"
    Path(path).write_bytes(bytes(out))


def nifti_with_pixdim(path, array, pixdim) -> str:
    """A NIfTI file whose header states the voxel sizes ``pixdim`` as given (nibabel refuses to write zero or
    negative ones, so the header bytes are patched), without qform or sform: the affine comes from pixdim."""
    img = nib.Nifti1Image(np.asarray(array), None)
    img.header.set_qform(None, code=0)
    img.header.set_sform(None, code=0)
    buffer = bytearray(img.header.binaryblock)
    for i, v in enumerate(pixdim):
        struct.pack_into("<f", buffer, 80 + 4 * i, v)  # pixdim[1 + i]; pixdim starts at byte 76
    data = bytes(buffer) + b"\0" * 4 + np.asarray(array).tobytes(order="F")
    path = str(path)
    if path.endswith(".gz"):
        data = gzip.compress(data)
    Path(path).write_bytes(data)
    return path


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
    raw = Path(source).read_bytes()
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
        Path(bad).write_bytes(Path(plain).read_bytes()[:1000])
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
    from common.phantoms import write_dicom_series

    folder = write_dicom_series(
        np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4), np.diag([0.8, 0.9, 2.5, 1.0]), tmp_path / "ct_series"
    )
    header = read_image_header(folder)
    loaded = LoadImageCheckedd("image", ensure_channel_first=True)({"image": str(folder)})["image"]
    assert header.shape == tuple(loaded.shape) == (1, 6, 5, 4)
    assert header.modality == "CT"
    np.testing.assert_allclose(header.affine, loaded.affine.numpy(), atol=1e-6)
    data = [{"image": str(folder)}]
    assert preflight_check(data, n_channels=1) is data
    empty = tmp_path / "not_dicom"
    empty.mkdir()
    (empty / "notes.dcm").write_bytes(b"not a DICOM file")
    with pytest.raises(BundleInputError) as e:
        preflight_check([{"image": str(empty)}], n_channels=1)
    _assert_error(e, "not_dicom", "found a folder without a readable DICOM series", UNREADABLE_EXPECTED)


def _series(folder, shape=(6, 5, 6), spacing=(0.8, 0.9, 3.0)):
    from common.phantoms import write_dicom_series

    return write_dicom_series(np.zeros(shape, np.int16), np.diag([*spacing, 1.0]), folder)


def test_dicom_missing_slice_names_the_gap(tmp_path):
    """ITK would read the 5 slices over 4 equal gaps of 3.75 mm: the slices after the gap 3 mm off."""
    folder = _series(tmp_path / "ct")
    os.remove(folder / "IM0004.dcm")  # position 9.0 mm
    with pytest.raises(BundleInputError) as e:
        read_image_header(folder)
    _assert_error(e, "ct: found slice positions 6.0 ... 12.0 mm (IM0003.dcm, IM0005.dcm)")
    _assert_error(e, "a gap of 6.0 mm where the series spacing is 3.0 mm", "expected evenly spaced slices")


@pytest.mark.parametrize(
    ("position", "words"),
    [
        ("0\\0\\10", ["slice positions 6.0 ... 10.0 mm (IM0003.dcm, IM0004.dcm): a gap of 4.0 mm"]),
        ("0\\0\\6", ["two slices at the same position 6 mm along the slice normal (IM0003.dcm, IM0004.dcm)"]),
        ("-2\\0\\9", ["IM0004.dcm: found a slice 2.00 mm off the line", "(IM0001.dcm) along the slice normal"]),
    ],
    ids=["shifted_along", "duplicated", "shifted_sideways"],
)
def test_dicom_misplaced_slice(tmp_path, position, words):
    folder = _series(tmp_path / "ct")
    set_dicom_tags(folder / "IM0004.dcm", {"0020|0032": position})
    with pytest.raises(BundleInputError) as e:
        read_image_header(folder)
    _assert_error(e, *words)


@pytest.mark.parametrize(
    ("tags", "words"),
    [
        ({"0028|0030": None}, ["IM0002.dcm: found no Pixel Spacing (0028,0030)", "readers assume 1 mm"]),
        ({"0028|0030": "0\\0.9"}, ["IM0002.dcm: found Pixel Spacing (0028,0030) '0\\\\0.9'", "two positive"]),
        ({"0020|0032": None}, ["IM0002.dcm: found no Image Position (Patient) (0020,0032)"]),
        ({"0020|0037": "1\\0\\0\\0\\0\\1"}, ["IM0002.dcm: found Image Orientation", "(1.0, 0.0, 0.0, 0.0, 0.0, 1.0)"]),
    ],
    ids=["no_pixel_spacing", "zero_pixel_spacing", "no_position", "other_orientation"],
)
def test_dicom_missing_or_bad_geometry_tags(tmp_path, tags, words):
    folder = _series(tmp_path / "ct")
    set_dicom_tags(folder / "IM0002.dcm", tags)
    with pytest.raises(BundleInputError) as e:
        read_image_header(folder)
    _assert_error(e, *words)


def test_dicom_two_series_in_one_folder(tmp_path):
    from common.phantoms import write_dicom_series

    folder = _series(tmp_path / "ct")
    other = write_dicom_series(np.ones((6, 5, 6), np.int16), AFFINE, tmp_path / "other", series_description="arterial")
    for f in other.iterdir():
        f.rename(folder / f"B{f.name}")
    with pytest.raises(BundleInputError) as e:
        read_image_header(folder)
    _assert_error(e, "ct: found 2 DICOM series (", "6 files, 'phantom'", "6 files, 'arterial'")
    _assert_error(e, "expected one DICOM series per folder (move each series to a folder of its own)")


def test_dicom_modality_and_its_override(tmp_path, caplog):
    folder = _series(tmp_path / "mr")
    for f in folder.iterdir():
        set_dicom_tags(f, {"0008|0060": "MR"})
    assert read_image_header(folder).modality == "MR"
    data = [{"image": str(folder)}]
    with pytest.raises(BundleInputError) as e:
        preflight_check(data, n_channels=1, modality="CT")
    _assert_error(e, "mr: found a DICOM series of Modality MR; expected Modality CT", "--allow_any_modality true")
    assert preflight_check(data, n_channels=1, modality="CT", allow_any_modality=True) is data
    assert "a MR series, run by a CT bundle (allow_any_modality)" in caplog.text
    assert preflight_check(data, n_channels=1) is data  # no modality asked for: any
    nifti = _ct(tmp_path / "ct.nii.gz")
    assert read_image_header(nifti).modality is None
    preflight_check([{"image": nifti}], n_channels=1, modality="CT")  # NIfTI has no Modality tag: passes


def test_dicom_one_slice_keeps_its_axis(tmp_path):
    folder = _series(tmp_path / "ct")
    one = tmp_path / "one"
    one.mkdir()
    (folder / "IM0003.dcm").rename(one / "IM0003.dcm")
    header = read_image_header(one)
    loaded = LoadImageCheckedd("image", ensure_channel_first=True)({"image": str(one)})["image"]
    assert header.shape == tuple(loaded.shape) == (1, 6, 5, 1)
    np.testing.assert_allclose(header.affine, loaded.affine.numpy(), atol=1e-6)


@pytest.mark.parametrize(
    ("pixdim", "found"),
    [((0.8, 0.0, 2.5), "(0.8, 0.0, 2.5)"), ((0.8, -0.8, 2.5), "(0.8, -0.8, 2.5)"), ((0.8, np.nan, 2.5), "nan")],
    ids=["zero", "negative", "nan"],
)
def test_nifti_voxel_spacing(tmp_path, pixdim, found):
    """nibabel would load these with 1 mm (zero) or the absolute value (negative) and only log it."""
    path = nifti_with_pixdim(tmp_path / "spacing.nii.gz", np.zeros(SHAPE, np.float32), pixdim)
    with pytest.raises(BundleInputError) as e:
        read_image_header(path)
    _assert_error(e, "spacing.nii.gz: found voxel spacing", found, "in its header (pixdim)")
    _assert_error(e, "expected a positive voxel size in mm along every spatial axis")
    good = nifti_with_pixdim(tmp_path / "good.nii.gz", np.zeros(SHAPE, np.float32), (0.8, 0.9, 2.5))
    np.testing.assert_allclose(np.linalg.norm(read_image_header(good).affine[:3, :3], axis=0), (0.8, 0.9, 2.5))
    # a 2D file: only its two axes are checked (pixdim[3] of a 2D header is often 0)
    flat = nifti_with_pixdim(tmp_path / "flat.nii.gz", np.zeros(SHAPE[:2], np.float32), (0.8, 0.9, 0.0))
    assert read_image_header(flat).shape == (1, 8, 9)


def test_check_spacing_plain():
    from common.data import check_spacing

    check_spacing(np.diag([0.8, 0.8, 2.5, 1.0]), "ok.nii.gz")
    check_spacing(None, "no_affine.png")
    flipped = np.diag([-0.8, 0.8, 2.5, 1.0])  # a negative direction is an orientation, not a negative spacing
    check_spacing(flipped, "flipped.nii.gz")
    with pytest.raises(BundleInputError) as e:
        check_spacing(np.diag([0.8, 0.0, 2.5, 1.0]), "flat.mha")
    _assert_error(e, "flat.mha: found voxel spacing (0.8, 0.0, 2.5) mm from its affine", "expected a positive")
    nan = np.eye(4)
    nan[1, 3] = np.nan
    with pytest.raises(BundleInputError) as e:
        check_spacing(nan, "nan.mha")
    _assert_error(e, "nan.mha: found an affine with NaN or infinite entries")
    check_spacing(np.diag([0.8, 0.8, 0.0, 1.0]), "slice.nii.gz", spatial_dims=2)


def test_check_foreground(tmp_path):
    from common.data import CheckForegroundd, check_foreground

    empty = np.zeros(SHAPE, np.uint8)
    with pytest.raises(BundleInputError) as e:
        check_foreground(empty, "empty.nii.gz")
    _assert_error(e, "empty.nii.gz: found an empty label map (every voxel is background 0)", "for training")
    sparse = np.full(SHAPE, 255, np.uint8)
    sparse[0, 0, 0] = 0
    with pytest.raises(BundleInputError) as e:
        check_foreground(sparse, "sparse.nii.gz", ignore_value=255)
    _assert_error(e, "every voxel is background 0 or the ignore value 255")
    sparse[1, 1, 1] = 2
    check_foreground(sparse, "sparse.nii.gz", ignore_value=255)
    path = _nifti(tmp_path / "empty_label.nii.gz", empty)
    with pytest.raises(BundleInputError) as e:
        CheckForegroundd("label")(_load("label")({"label": path}))
    _assert_error(e, "empty_label.nii.gz: found an empty label map")
    good = _label(tmp_path / "label.nii.gz")
    loaded = _load("label")({"label": good})
    assert CheckForegroundd("label")(loaded)["label"] is loaded["label"]


def test_preflight_partition(tmp_path):
    from common.data import preflight_partition

    label = _label(tmp_path / "label.nii.gz")
    cases = [
        {"image": _ct(tmp_path / "a.nii.gz"), "label": label},
        {"image": _nifti(tmp_path / "b.nii.gz", np.zeros((*SHAPE, 2), np.float32)), "label": label},
        {"image": _ct(tmp_path / "c.nii.gz"), "label": _label(tmp_path / "short.nii.gz", shape=(8, 9, 11))},
        {"image": _ct(tmp_path / "d.nii.gz"), "label": label},
    ]
    good, bad = preflight_partition(cases, n_channels=1)
    assert good == [cases[0], cases[3]] and good[0] is cases[0]
    assert [entry for entry, _ in bad] == [cases[1], cases[2]]
    _assert_error(bad[0][1], "b.nii.gz: found 2 channels")
    _assert_error(bad[1][1], "short.nii.gz: found label spatial shape (8, 9, 11)")
    with pytest.raises(TypeError, match="unknown preflight_check arguments"):
        preflight_partition(cases, n_channel=1)


def test_atomic_writer_keeps_size_one_axes(tmp_path):
    """A one-slice input comes back with its slice axis, a 3D+time map with its time axis (MONAI's writers squeeze
    trailing size-1 axes and cut to 3 spatial axes)."""
    from common.data import AtomicNibabelWriter

    for shape in ((4, 5, 1), (1, 5, 6), (4, 5, 6, 3), (4, 5)):
        writer = AtomicNibabelWriter(output_dtype=np.uint8)
        data = torch.arange(int(np.prod(shape)), dtype=torch.uint8).reshape(1, *shape)
        writer.set_data_array(data, channel_dim=0, squeeze_end_dims=True)
        writer.set_metadata({"affine": np.eye(4), "original_affine": np.eye(4)}, resample=False)
        out = tmp_path / f"seg_{len(shape)}_{shape[-1]}.nii.gz"
        writer.write(out)
        written = np.asarray(nib.load(out).dataobj)
        assert written.shape == shape
        np.testing.assert_array_equal(written, data[0].numpy())
    # data without a channel axis (SaveImage passes channel_dim=None when the meta data say so)
    writer = AtomicNibabelWriter()
    writer.set_data_array(torch.zeros(4, 5, 1), channel_dim=None)
    assert writer.data_obj.shape == (4, 5, 1)


# --- skipping bad inputs in a batch run ---------------------------------------------------------------------------


def test_input_triage_without_skipping_stops_at_the_first_bad_case(tmp_path):
    from common.data import InputTriage

    cases = [{"image": _ct(tmp_path / "a.nii.gz")}, {"image": _random_bytes(tmp_path / "b.nii.gz")}]
    triage = InputTriage()
    with pytest.raises(BundleInputError) as e:
        triage.check(cases, label_key=None, n_channels=1)
    _assert_error(e, "b.nii.gz: found an unreadable file")
    chain = Compose([LoadImageCheckedd("image")])
    assert triage.guard(chain) is chain
    triage.raise_if_any()  # nothing recorded


def test_input_triage_skips_and_names_every_bad_case(tmp_path):
    from common.data import InputTriage, SkippedInputsError
    from common.data.triage import BAD_INPUT_KEYS, is_bad_input_batch

    nan = np.zeros(SHAPE, np.float32)
    nan[0, 0, 0] = np.nan
    cases = [
        {"image": _ct(tmp_path / "a.nii.gz")},
        {"image": _random_bytes(tmp_path / "b.nii.gz")},
        {"image": _nifti(tmp_path / "c.nii.gz", nan)},
    ]
    triage = InputTriage(skip_bad_inputs=True)
    good = triage.check(cases, label_key=None, n_channels=1)
    assert good == [cases[0], cases[2]]
    chain = triage.guard(Compose([LoadImageCheckedd("image"), CheckFiniteValuesd("image")]))
    loaded = [chain(dict(c)) for c in good]
    assert tuple(loaded[0]["image"].shape) == SHAPE
    assert not is_bad_input_batch(loaded[0]) and is_bad_input_batch(loaded[1])
    assert loaded[1]["bad_input"].endswith("c.nii.gz") and "1 NaN" in loaded[1]["bad_input_found"]
    batch = next(iter(DataLoader(Dataset([cases[2]], chain), batch_size=1)))  # collates into a batch of strings
    assert list(batch) == list(BAD_INPUT_KEYS)
    assert triage.iteration(None, batch) == {}
    with pytest.raises(SkippedInputsError) as e:
        triage.raise_if_any()
    err = e.value
    assert isinstance(err, BundleInputError) and len(err.errors) == 2
    assert "found 2 bad input(s) of 3, skipped (1 label map(s) written); expected each of them fixed" in str(err)
    lines = str(err).splitlines()
    assert lines[1].startswith("  - ") and "b.nii.gz: found an unreadable file" in lines[1]
    assert "c.nii.gz: found 1 NaN and 0 infinite voxel values" in lines[2]
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and [str(x) for x in again.errors] == [str(x) for x in err.errors]


def test_input_triage_errors_that_are_not_bad_input_propagate(tmp_path):
    from common.data import InputTriage

    def crash(data):
        raise MemoryError("out of memory")

    chain = InputTriage(skip_bad_inputs=True).guard(crash)
    with pytest.raises(MemoryError):
        chain({"image": "a.nii.gz"})


def test_switches_from_the_command_line():
    from common.data import InputTriage, as_bool

    assert [as_bool(v, "x") for v in (True, "true", "True", "yes", "1", 1)] == [True] * 6
    assert [as_bool(v, "x") for v in (False, "false", "FALSE", "no", "0", 0)] == [False] * 6
    assert InputTriage(skip_bad_inputs="false").skip_bad_inputs is False  # bool("false") would be True
    with pytest.raises(ValueError, match="skip_bad_inputs must be true or false"):
        InputTriage(skip_bad_inputs="sometimes")


def test_input_triage_with_nothing_good(tmp_path):
    from common.data import InputTriage, SkippedInputsError

    with pytest.raises(SkippedInputsError) as e:
        InputTriage(skip_bad_inputs=True).check([{"image": _random_bytes(tmp_path / "b.nii.gz")}], n_channels=1)
    assert "1 bad input(s) of 1, skipped (0 label map(s) written)" in str(e.value)


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


def test_check_shape_match_of_time_points(tmp_path):
    """A 4D sequence loads with its frames as channels: with ``channels`` named, a label of another frame count is
    refused, naming both counts; without it channel counts may differ (a 4-channel MRI and its label)."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4, 20), np.int16), affine), tmp_path / "seq.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4, 18), np.uint8), affine), tmp_path / "seq_label.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4, 20), np.uint8), affine), tmp_path / "good_label.nii.gz")
    files = {"image": str(tmp_path / "seq.nii.gz"), "label": str(tmp_path / "seq_label.nii.gz")}
    loaded = _load()(files)
    assert loaded["image"].shape[0] == 20 and loaded["label"].shape[0] == 18
    CheckShapeMatchd()(loaded)  # channel counts may differ by default
    with pytest.raises(BundleInputError) as e:
        CheckShapeMatchd(channels="time points")(loaded)
    _assert_error(e, "seq_label.nii.gz", "found label with 18 time points", "expected the image's 20 time points")
    CheckShapeMatchd(channels="time points")(_load()({**files, "label": str(tmp_path / "good_label.nii.gz")}))


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


@pytest.mark.parametrize(
    ("bad", "found"), [(np.nan, "found 1 NaN and 0 infinite"), (np.inf, "found 0 NaN and 1 infinite")]
)
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


# --- module layout ------------------------------------------------------------------------------------------------


def test_public_names_and_their_modules():
    """Bundle configs name ``common.data.<Name>``: the package keeps exporting the same names, each from its home."""
    import inspect

    import common.data
    import common.data.checks

    homes = {
        "AtomicNibabelWriter": "writers",
        "atomic_path": "writers",
        "NIFTI_SUFFIXES": "io",
        "is_dicom_series_dir": "inputs",
        "list_inputs": "inputs",
        "require_file": "inputs",
        "EXPECTED_IMAGE": "io",
        "BundleInputError": "errors",
        "CheckFiniteValuesd": "dictionary",
        "CheckInputd": "dictionary",
        "CheckLabelValuesd": "dictionary",
        "CheckShapeMatchd": "dictionary",
        "ImageHeader": "io",
        "LoadImageChecked": "io",
        "LoadImageCheckedd": "dictionary",
        "check_channels": "checks",
        "check_finite_values": "checks",
        "check_label_values": "checks",
        "check_spatial_match": "checks",
        "find_bundle_input_error": "errors",
        "load_datalist": "datalist",
        "preflight_check": "datalist",
        "read_image_array": "io",
        "read_image_header": "io",
        "InputErrorHook": "excepthook",
        "input_error_summary": "excepthook",
        "install_error_hook": "excepthook",
        "CheckForegroundd": "dictionary",
        "DicomSeries": "dicom",
        "InputTriage": "triage",
        "SkipBadCase": "triage",
        "SkippedInputsError": "errors",
        "check_dicom_series": "dicom",
        "check_foreground": "checks",
        "check_modality": "checks",
        "check_spacing": "checks",
        "preflight_partition": "datalist",
        "require_output_dir": "inputs",
        "as_bool": "switches",
        "ServedLabelPath": "served_output",
        "WriteServedLabelMapd": "served_output",
        "fold_cases": "folds",
        "write_folds": "folds",
        "select_channel_files": "datalist",
        "fold_indices": "folds",
        "no_fold": "folds",
    }
    assert sorted(common.data.__all__) == sorted(homes)
    for name, module in homes.items():
        obj = getattr(common.data, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__ == f"common.data.{module}", name
        else:
            assert getattr(importlib.import_module(f"common.data.{module}"), name) is obj, name
    # checks holds plain functions only: no transform or loader class
    assert [
        n for n, c in inspect.getmembers(common.data.checks, inspect.isclass) if c.__module__ == "common.data.checks"
    ] == []


# --- 2D, 3D+time, time points as channels ---------------------------------------------------------------------------


def _meta_tensor(array, filename, affine=None):
    return MetaTensor(torch.as_tensor(array), affine=affine, meta={"filename_or_obj": filename})


def test_2d_files_and_slices(tmp_path):
    image = _nifti(tmp_path / "slice.nii.gz", np.zeros((8, 9), np.float32))
    label = _nifti(tmp_path / "slice_label.nii.gz", np.zeros((8, 9), np.uint8))
    assert read_image_header(image).shape == (1, 8, 9)
    data = [{"image": image, "label": label}]
    assert preflight_check(data, n_channels=1, spatial_dims=2, label_values=(0, 1), check_label_values=True) is data
    loaded = _load()({"image": image, "label": label})
    assert tuple(loaded["image"].shape) == (1, 8, 9)
    CheckInputd("image", n_channels=1, spatial_dims=2, min_spatial_size=(8, 9))(loaded)
    CheckShapeMatchd()(loaded)
    wide = _nifti(tmp_path / "wide_label.nii.gz", np.zeros((8, 10), np.uint8))
    with pytest.raises(BundleInputError) as e:
        preflight_check([{"image": image, "label": wide}], n_channels=1, spatial_dims=2)
    _assert_error(e, "wide_label.nii.gz", "found label spatial shape (8, 10)", "the image's spatial shape (8, 9)")
    # a 3D volume handed to a 2D check is reported as 3 spatial dimensions, not as slices taken for channels
    volume = _ct(tmp_path / "volume.nii.gz")
    with pytest.raises(BundleInputError) as e:
        preflight_check([{"image": volume}], n_channels=1, spatial_dims=2)
    _assert_error(e, "volume.nii.gz", "found 3 spatial dimensions (channel-first shape (1, 8, 9, 10))")
    _assert_error(e, "expected 2 spatial dimensions")


def test_2d_slices_in_a_chain():
    """Slices cut from volumes: (C, H, W) tensors with 3x3 or 4x4 affines, checked with spatial_dims=2."""
    image = _meta_tensor(np.zeros((1, 8, 9), np.float32), "ct_slice_12.nii.gz", np.diag([0.5, 0.5, 1.0]))
    label = _meta_tensor(np.zeros((1, 8, 9), np.uint8), "label_slice_12.nii.gz", np.diag([0.5, 0.5, 1.0]))
    data = {"image": image, "label": label}
    for t in (CheckInputd("image", n_channels=1, spatial_dims=2), CheckShapeMatchd(), CheckFiniteValuesd("image")):
        t(data)
    moved = _meta_tensor(np.zeros((1, 8, 9), np.uint8), "label_slice_13.nii.gz", np.diag([0.5, 0.6, 1.0]))
    with pytest.raises(BundleInputError) as e:
        CheckShapeMatchd()({"image": image, "label": moved})
    _assert_error(e, "label_slice_13.nii.gz", "spacing (0.5, 0.6)", "expected the image's affine (spacing (0.5, 0.5)")
    with pytest.raises(BundleInputError) as e:
        CheckInputd("image", spatial_dims=2)({"image": _meta_tensor(np.zeros((1, 8, 9, 3)), "thick.nii.gz")})
    _assert_error(e, "thick.nii.gz", "found 3 spatial dimensions", "expected 2 spatial dimensions")
    with pytest.raises(BundleInputError) as e:
        CheckInputd("image", spatial_dims=2, min_spatial_size=16)(data)
    _assert_error(e, "ct_slice_12.nii.gz", "found spatial shape (8, 9)", "at least (16, 16)")


def test_4d_nifti_as_time_points_or_as_3d_plus_time(tmp_path):
    """One (8, 9, 10, 5) file: 5 channels in MONAI's readers' layout, or 1 channel and 4 spatial axes."""
    path = _nifti(tmp_path / "cine.nii.gz", np.zeros((8, 9, 10, 5), np.float32))
    assert read_image_header(path).shape == (5, 8, 9, 10)
    assert read_image_header(path, channel_dim="no_channel").shape == (1, 8, 9, 10, 5)
    assert read_image_header(path, channel_dim=0).shape == (8, 9, 10, 5)
    assert read_image_header(path, channel_dim=-2).shape == (10, 8, 9, 5)
    # the header's shape is what LoadImaged + EnsureChannelFirstd(channel_dim=...) gives in a chain
    for channel_dim, expected in ((None, (5, 8, 9, 10)), ("no_channel", (1, 8, 9, 10, 5)), (0, (8, 9, 10, 5))):
        loaded = EnsureChannelFirstd("image", channel_dim=channel_dim)(LoadImageCheckedd("image")({"image": path}))
        assert tuple(loaded["image"].shape) == expected == read_image_header(path, channel_dim=channel_dim).shape
    with pytest.raises(BundleInputError) as e:
        read_image_header(path, channel_dim=4)
    _assert_error(e, "cine.nii.gz", "found 4 axes (shape (8, 9, 10, 5))", "expected an axis 4 holding the channels")
    with pytest.raises(ValueError, match="channel_dim must be None, 'no_channel' or an int"):
        read_image_header(path, channel_dim="last")
    with pytest.raises(TypeError):
        read_image_header(path, 3)  # the layout is a keyword: an old positional spatial_dims fails loudly


def test_preflight_3d_plus_time(tmp_path):
    """Cardiac CT 3D+time: image and label (X, Y, Z, T), time the 4th spatial axis."""
    image = _nifti(tmp_path / "cine.nii.gz", np.zeros((8, 9, 10, 5), np.float32))
    label = _nifti(tmp_path / "cine_label.nii.gz", np.zeros((8, 9, 10, 5), np.uint8))
    data = [{"image": image, "label": label}]
    kwargs = {"n_channels": 1, "spatial_dims": 4, "channel_dim": "no_channel"}
    assert preflight_check(data, **kwargs, label_values=(0, 1, 2), check_label_values=True) is data
    short = _nifti(tmp_path / "short_label.nii.gz", np.zeros((8, 9, 10, 4), np.uint8))
    with pytest.raises(BundleInputError) as e:
        preflight_check([{"image": image, "label": short}], **kwargs)
    _assert_error(e, "short_label.nii.gz", "found 4 frames (time points) in the label", "(8, 9, 10, 5)", "cine.nii.gz")
    # without channel_dim the 4th axis is channels (MONAI's default), so a 4-spatial-dims check fails on it
    with pytest.raises(BundleInputError) as e:
        preflight_check(data, n_channels=1, spatial_dims=4)
    _assert_error(e, "cine.nii.gz", "found 3 spatial dimensions (channel-first shape (5, 8, 9, 10))")
    # a 3D volume where 3D+time is expected
    volume = _ct(tmp_path / "volume.nii.gz")
    with pytest.raises(BundleInputError) as e:
        preflight_check([{"image": volume}], **kwargs)
    _assert_error(e, "volume.nii.gz", "found 3 spatial dimensions", "expected 4 spatial dimensions")


def test_3d_plus_time_in_a_chain(tmp_path):
    image = _nifti(tmp_path / "cine.nii.gz", np.zeros((8, 9, 10, 5), np.float32))
    label = _nifti(tmp_path / "cine_label.nii.gz", np.zeros((8, 9, 10, 4), np.uint8))
    chain = Compose(
        [
            LoadImageCheckedd(("image", "label")),
            EnsureChannelFirstd(("image", "label"), channel_dim="no_channel"),
            CheckInputd(("image", "label"), n_channels=1, spatial_dims=4),
            CheckShapeMatchd(("image", "label")),
        ]
    )
    with pytest.raises(RuntimeError) as e:
        chain({"image": image, "label": label})
    err = find_bundle_input_error(e.value)
    _assert_error(err, "cine_label.nii.gz", "found 4 frames (time points) in the label", "(8, 9, 10, 5)")
    out = chain({"image": image, "label": _nifti(tmp_path / "ok.nii.gz", np.zeros((8, 9, 10, 5), np.uint8))})
    assert tuple(out["image"].shape) == tuple(out["label"].shape) == (1, 8, 9, 10, 5)


def test_perfusion_time_points_with_sparse_label(tmp_path):
    """Brain CT perfusion: (X, Y, Z, 19) time points as channels; a 3D label annotated on one slice, 255 elsewhere."""
    image = _nifti(tmp_path / "ctp.nii.gz", np.zeros((*SHAPE, 19), np.float32))
    sparse = np.full(SHAPE, 255, np.uint8)
    sparse[:, :, 4] = np.arange(8 * 9).reshape(8, 9) % 4  # WM, GM, CSF, vessel on one slice
    label = _nifti(tmp_path / "ctp_label.nii.gz", sparse)
    data = [{"image": image, "label": label}]
    kwargs = {"n_channels": 19, "channel_name": "time points", "label_values": range(4), "check_label_values": True}
    assert preflight_check(data, **kwargs, label_ignore_value=255) is data
    with pytest.raises(BundleInputError) as e:
        preflight_check(data, **kwargs)
    _assert_error(e, "ctp_label.nii.gz", "found label values {255}", "expected label values in {0, 1, 2, 3}")
    loaded = _load()({"image": image, "label": label})
    assert tuple(loaded["image"].shape) == (19, *SHAPE)
    CheckInputd("image", n_channels=19, channel_name="time points")(loaded)
    CheckShapeMatchd()(loaded)
    CheckLabelValuesd("label", allowed_values=range(4), ignore_value=255)(loaded)
    with pytest.raises(BundleInputError) as e:
        CheckInputd("image", n_channels=18, channel_name="time points")(loaded)
    _assert_error(e, "ctp.nii.gz", "found 19 time points; expected 18 time points")


# --- a list of files stacked as channels --------------------------------------------------------------------------


def _sequences(folder, odd=None, odd_array=None, odd_affine=AFFINE):
    """Four MRI sequences, 1 channel each; ``odd`` (a name) is written from ``odd_array`` / ``odd_affine``."""
    paths = []
    for i, name in enumerate(("t1", "t1c", "t2", "flair")):
        array = np.random.default_rng(i).uniform(0, 1, SHAPE).astype(np.float32)
        affine = AFFINE
        if name == odd:
            array, affine = (array if odd_array is None else odd_array), odd_affine
        paths.append(_nifti(folder / f"{name}.nii.gz", array, affine))
    return paths


def test_stacked_files_good(tmp_path):
    files = _sequences(tmp_path)
    label = _label(tmp_path / "label.nii.gz", values=(0, 1, 2, 4))
    data = [{"image": files, "label": label}]
    assert preflight_check(data, n_channels=4, label_values=(0, 1, 2, 4), check_label_values=True) is data
    loaded = _load()({"image": files, "label": label})
    assert tuple(loaded["image"].shape) == (4, *SHAPE)
    CheckInputd("image", n_channels=4)(loaded)
    CheckShapeMatchd()(loaded)
    np.testing.assert_array_equal(loaded["image"][2].numpy(), nib.load(files[2]).get_fdata(dtype=np.float32))


@pytest.mark.parametrize("odd", ["t2", "t1"])  # the first file odd: still the odd one is named, not the other three
def test_stacked_files_shape_names_the_odd_file(tmp_path, odd):
    files = _sequences(tmp_path, odd=odd, odd_array=np.zeros((8, 9, 11), np.float32))
    others = [f for f in files if not f.endswith(f"/{odd}.nii.gz")]
    assert len(others) == 3
    with pytest.raises(BundleInputError) as e:
        preflight_check([{"image": files}], n_channels=4)
    _assert_error(e, f"{odd}.nii.gz: found spatial shape (8, 9, 11)", "expected the spatial shape (8, 9, 10)")
    _assert_error(e, "of the other files stacked with it as channels (" + ", ".join(others) + ")")
    with pytest.raises(BundleInputError) as e:
        _load("image")({"image": files})
    _assert_error(e, f"{odd}.nii.gz: found spatial shape (8, 9, 11)", ", ".join(others))
    assert isinstance(e.value.__cause__, RuntimeError)  # MONAI's own complaint is kept as the cause


def test_stacked_files_affine_names_the_odd_file(tmp_path):
    files = _sequences(tmp_path, odd="flair", odd_affine=np.diag([0.8, 0.8, 3.0, 1.0]))
    with pytest.raises(BundleInputError) as e:
        preflight_check([{"image": files}], n_channels=4)
    _assert_error(e, "flair.nii.gz: found an affine (spacing (0.8, 0.8, 3.0)", "by up to 0.5")
    _assert_error(e, "expected the affine (spacing (0.8, 0.8, 2.5)", os.path.join(str(tmp_path), "t1.nii.gz"))
    with pytest.raises(BundleInputError) as e:
        _load("image")({"image": files})
    _assert_error(e, "flair.nii.gz: found an affine (spacing (0.8, 0.8, 3.0)")
    assert isinstance(e.value.__cause__, RuntimeError)


def test_stacked_files_channels_names_the_odd_file(tmp_path):
    files = _sequences(tmp_path, odd="t1c", odd_array=np.zeros((*SHAPE, 2), np.float32))
    with pytest.raises(BundleInputError) as e:
        preflight_check([{"image": files}], n_channels=4)
    _assert_error(e, "t1c.nii.gz: found 2 channels; expected 1 channel per file")
    with pytest.raises(BundleInputError) as e:
        _load("image")({"image": files})
    _assert_error(e, "t1c.nii.gz: found 2 channels")


def test_stacked_files_unreadable_or_missing_is_named(tmp_path):
    files = _sequences(tmp_path)
    files[1] = _random_bytes(tmp_path / "t1c_corrupt.nii.gz")
    with pytest.raises(BundleInputError) as e:
        preflight_check([{"image": files}], n_channels=4)
    _assert_error(e, "t1c_corrupt.nii.gz: found an unreadable file (", UNREADABLE_EXPECTED)
    with pytest.raises(BundleInputError) as e:
        _load("image")({"image": files})
    _assert_error(e, "t1c_corrupt.nii.gz: found an unreadable file (", UNREADABLE_EXPECTED)
    files[1] = str(tmp_path / "t1c_missing.nii.gz")
    with pytest.raises(BundleInputError) as e:
        _load("image")({"image": files})
    _assert_error(e, "t1c_missing.nii.gz: found no file or folder at this path", UNREADABLE_EXPECTED)


def test_check_stacked_files_plain():
    from common.data.checks import check_stacked_files

    shape, affine = (1, 4, 4, 4), np.eye(4)
    check_stacked_files([shape] * 3, [affine] * 3, ["a", "b", "c"])
    check_stacked_files([shape, shape], [affine, None], ["a", "b"])  # no affine: not compared
    # two files that disagree: the first is taken as the reference, the second is named
    with pytest.raises(BundleInputError) as e:
        check_stacked_files([shape, (1, 4, 4, 5)], [affine, affine], ["a", "b"])
    _assert_error(e, "b: found spatial shape (4, 4, 5); expected the spatial shape (4, 4, 4)", "channels (a)")
    # the majority wins over the first file
    with pytest.raises(BundleInputError) as e:
        check_stacked_files([(1, 4, 4, 5), shape, shape], [affine] * 3, ["a", "b", "c"])
    _assert_error(e, "a: found spatial shape (4, 4, 5)", "channels (b, c)")
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    with pytest.raises(BundleInputError) as e:
        check_stacked_files([shape] * 3, [affine, affine, shifted], ["a", "b", "c"])
    _assert_error(e, "c: found an affine (spacing (1.0, 1.0, 1.0), origin (2.0, 0.0, 0.0))", "by up to 2", "(a, b)")
    with pytest.raises(ValueError, match="one entry per file"):
        check_stacked_files([shape] * 2, [affine], ["a", "b"])


# --- label maps with an ignore value ------------------------------------------------------------------------------


def test_check_label_values_ignore_value():
    from common.data import check_label_values

    label = np.zeros((4, 5, 6), np.uint8)
    label[0, 0, 0], label[1, 1, 1] = 255, 2
    check_label_values(label, (0, 1, 2), "sparse.nii.gz", ignore_value=255)
    with pytest.raises(BundleInputError) as e:
        check_label_values(label, (0, 1, 2), "sparse.nii.gz")
    _assert_error(e, "sparse.nii.gz", "found label values {255}; expected label values in {0, 1, 2}")
    label[2, 2, 2] = 7
    with pytest.raises(BundleInputError) as e:
        check_label_values(label, (0, 1, 2), "sparse.nii.gz", ignore_value=255)
    _assert_error(
        e, "sparse.nii.gz: found label values {7}; expected label values in {0, 1, 2} or the ignore value 255"
    )
    # an ignore value next to the classes, and a float label map
    check_label_values(np.array([0.0, 3.0, 1.0]), (0, 1, 2), "f.nii.gz", ignore_value=3)
    with pytest.raises(ValueError, match="ignore_value 2 is also one of allowed_values"):
        check_label_values(label, (0, 1, 2), "sparse.nii.gz", ignore_value=2)


def test_check_label_valuesd_ignore_value(tmp_path):
    sparse = np.full(SHAPE, 255, np.uint8)
    sparse[:, :, 0] = 1
    path = _nifti(tmp_path / "sparse_label.nii.gz", sparse)
    loaded = _load("label")({"label": path})
    assert CheckLabelValuesd("label", allowed_values=(0, 1), ignore_value=255)(loaded)["label"] is loaded["label"]
    with pytest.raises(BundleInputError) as e:
        CheckLabelValuesd("label", allowed_values=(0, 1))(loaded)
    _assert_error(e, "sparse_label.nii.gz", "found label values {255}; expected label values in {0, 1}")
    with pytest.raises(ValueError, match="ignore_value 1 is also one of allowed_values"):
        CheckLabelValuesd("label", allowed_values=(0, 1), ignore_value=1)
    with pytest.raises(ValueError, match="allowed_values must be integers"):
        CheckLabelValuesd("label", allowed_values=(0, 1.5))


def test_allowed_values_long_run_is_shortened(tmp_path):
    from common.data import check_label_values

    with pytest.raises(BundleInputError) as e:
        check_label_values(np.array([100, 3], np.int16), range(100), "many.nii.gz")
    _assert_error(e, "many.nii.gz: found label values {100}; expected label values in {0, 1, ..., 99}")


# --- programming mistakes are ValueError / TypeError, not BundleInputError ------------------------------------------


def test_bad_arguments_raise_value_or_type_error(tmp_path, dataset):
    from common.data import check_channels

    image = _ct(tmp_path / "image.nii.gz")
    with pytest.raises(ValueError, match="keys must name the reference key and at least one key"):
        CheckShapeMatchd("image")
    with pytest.raises(ValueError, match="affine_atol must be >= 0"):
        CheckShapeMatchd(affine_atol=-1.0)
    with pytest.raises(ValueError, match="min_spatial_size must have 3 entries"):
        CheckInputd("image", min_spatial_size=(8, 8))
    with pytest.raises(ValueError, match="spatial_dims must be a positive int"):
        CheckInputd("image", spatial_dims=0)
    with pytest.raises(ValueError, match="n_channels must be None or a positive int"):
        preflight_check([{"image": image}], n_channels=0)
    with pytest.raises(ValueError, match="label_channels must be None or a positive int"):
        preflight_check([{"image": image}], label_channels=0)
    with pytest.raises(ValueError, match="min_spatial_size must have 2 entries"):
        preflight_check([{"image": image}], spatial_dims=2, min_spatial_size=(1, 1, 1))
    with pytest.raises(ValueError, match="channel_dim must be None"):
        preflight_check([{"image": image}], channel_dim="last")
    with pytest.raises(ValueError, match="label_ignore_value 0 is also one of label_values"):
        preflight_check([{"image": image}], label_values=range(3), label_ignore_value=0)
    with pytest.raises(ValueError, match="has no image_key 'img'") as e:
        preflight_check([{"image": image}], image_key="img")
    assert not isinstance(e.value, BundleInputError)
    with pytest.raises(TypeError, match="data must be a list of dicts"):
        preflight_check({"training": [{"image": image}]})
    with pytest.raises(TypeError, match="data entry 0 must be a dict"):
        preflight_check([image])
    with pytest.raises(TypeError, match="data entry 0 'image' must be a path or a list of paths, got 3"):
        preflight_check([{"image": 3}])
    with pytest.raises(ValueError, match="min_spatial_size must have 3 entries") as e:
        check_channels((1, 8, 9, 10), "image.nii.gz", min_spatial_size=(1, 1))
    assert not isinstance(e.value, BundleInputError)
    # load_datalist: a str names one key, as MONAI's KeysCollection does; no key at all is a mistake
    root, datalist = dataset
    assert load_datalist(datalist, "test", required_keys="image") == [
        {"image": os.path.join(str(root), "imagesTr", "case_0.nii.gz")}
    ]
    with pytest.raises(ValueError, match="required_keys must name at least one key"):
        load_datalist(datalist, required_keys=())
