"""The bad-input matrix (issue 7, BUNDLE_CONTRACT.md "Errors"): every kind of bad input a hospital export holds,
for every bundle, in every workflow where it applies.

Each row runs the workflow for real with ``monai.bundle.run`` (training and evaluation fail where their datasets are
built, before a trainer exists; inference runs with untrained weights saved to a temporary checkpoint) and checks
that it raises a ``BundleInputError`` naming the file, with what was found and what was expected, and that nothing
was written: ``output_dir`` unchanged (an earlier result still there, no ``.partial``), ``ckpt_dir`` untouched.

The rows follow from what each bundle declares, so a new bundle gets every row that applies to it:

- ``metadata.json`` ``network_data_format.inputs.image``: ``num_channels`` (channels or time points), ``modality``
  (CT or MR: DICOM series of another modality are refused by inference), the length of ``spatial_shape`` (spatial
  dimensions); ``data_type`` containing ``dicom`` (the DICOM rows); ``outputs.pred.channel_def``: the label values;
- optional ids in ``inference.json``: ``channel_name`` (e.g. ``"time points"``; default ``"channels"``),
  ``input_channel_dim`` (as ``EnsureChannelFirstd``'s ``channel_dim``; ``"no_channel"`` for 3D+time),
  ``input_files`` (files stacked as channels per image, e.g. 4 MRI sequences; default 1), ``input_spatial_dims``
  (the files' spatial dimensions where they differ from the network's, e.g. 3D volumes for a 2D network),
  ``min_spatial_size``
  (a network minimum that inference refuses below; absent: inference pads, so a small image must work).

The bad files are built once per bundle (16 voxels a side); the whole matrix for one bundle takes well under a
minute. Rows that need a file this user may not read drop the root user's read override (``CAP_DAC_OVERRIDE``,
``CAP_DAC_READ_SEARCH``) from the test thread's effective capabilities for the run, so the kernel refuses root too
(as it refuses any other user); where that is impossible they skip, saying why.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.bundle import run as bundle_run

from common.data import BundleInputError, SkippedInputsError, find_bundle_input_error, read_image_header
from common.phantoms import write_dicom_series
from tests.common.test_data_checks import nifti_with_pixdim, set_dicom_tags
from tests.conftest import BUNDLES

TRAIN, EVALUATE, INFER = "train", "evaluate", "infer"
WORKFLOWS = (TRAIN, EVALUATE, INFER)
SIDE = 16  # voxels per side of the test images
SPACING = 3.0  # mm: the abdominal bundle's grid, so resampling is cheap
SLICES = 8  # slices of the DICOM series


# ---------------------------------------------------------------------------------------------- what a bundle declares


@dataclass(frozen=True)
class Facts:
    """What the matrix needs to know of a bundle, read from its configs."""

    configs: Path
    num_channels: int
    channel_name: str
    spatial_dims: int
    channel_dim: str | int | None
    input_files: int
    label_values: tuple[int, ...]
    modality: str
    dicom: bool
    min_spatial_size: tuple[int, ...] | None

    @property
    def config_files(self) -> dict[str, list[str]]:
        c = self.configs
        return {
            TRAIN: [str(c / "train.json")],
            EVALUATE: [str(c / "train.json"), str(c / "evaluate.json")],
            INFER: [str(c / "inference.json")],
        }


def bundle_facts(bundle: Path) -> Facts:
    configs = bundle / "configs"
    meta = json.loads((configs / "metadata.json").read_text(encoding="utf-8"))
    infer = json.loads((configs / "inference.json").read_text(encoding="utf-8"))
    image = meta["network_data_format"]["inputs"]["image"]
    spatial_dims = int(infer.get("input_spatial_dims", len(image["spatial_shape"])))
    minimum = infer.get("min_spatial_size")
    if isinstance(minimum, int):
        minimum = [minimum] * spatial_dims
    return Facts(
        configs=configs,
        num_channels=int(image["num_channels"]),
        channel_name=infer.get("channel_name", "channels"),
        spatial_dims=spatial_dims,
        channel_dim=infer.get("input_channel_dim"),
        input_files=int(infer.get("input_files", 1)),
        label_values=tuple(sorted(int(k) for k in meta["network_data_format"]["outputs"]["pred"]["channel_def"])),
        modality=image.get("modality", ""),
        dicom="dicom" in meta.get("data_type", "").lower() and spatial_dims == 3 and image["num_channels"] == 1,
        min_spatial_size=None if minimum is None else tuple(minimum),
    )


FACTS = {b.name: bundle_facts(Path("bundles") / b.name) for b in BUNDLES}


# ---------------------------------------------------------------------------------------------- the bad files


def _nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> str:
    nib.save(nib.Nifti1Image(array, np.diag([SPACING] * 3 + [1.0]) if affine is None else affine), str(path))
    return str(path)


@dataclass
class Materials:
    """A bundle's good and bad files, built once per module in ``root``, and untrained weights in ``models``."""

    facts: Facts
    root: Path
    models: Path = field(init=False)

    def __post_init__(self) -> None:
        self.models = self.root / "models"
        self.models.mkdir()
        parser = ConfigParser()
        parser.read_config(self.facts.config_files[INFER])
        torch.save(parser.get_parsed_content("network_def").state_dict(), self.models / "model.pt")
        self.good = self.case("a_good")

    @property
    def spatial(self) -> tuple[int, ...]:
        return (SIDE,) * self.facts.spatial_dims

    def image(self, name: str, array: np.ndarray | None = None, channels: int | None = None, affine=None):
        """An image file (or files, stacked as channels) as the bundle reads it; ``array`` is one channel's voxels."""
        f = self.facts
        channels = f.num_channels if channels is None else channels
        rng = np.random.default_rng(len(name))
        if array is None:
            array = rng.uniform(-100, 200, self.spatial).astype(np.float32)
        if f.input_files > 1:
            return [_nifti(self.root / f"{name}_{i}.nii.gz", array, affine) for i in range(channels)]
        if f.channel_dim == "no_channel" or channels == 1:
            return _nifti(self.root / f"{name}.nii.gz", array, affine)
        return _nifti(self.root / f"{name}.nii.gz", np.stack([array] * channels, axis=-1), affine)

    def label(self, name: str, array: np.ndarray | None = None, affine=None) -> str:
        if array is None:
            array = np.zeros(self.spatial, np.uint8)
            fg = self.facts.label_values[1:] or self.facts.label_values
            array[(slice(4, 12),) * len(self.spatial)] = fg[0]
            array[(slice(6, 8),) * len(self.spatial)] = fg[-1]
        return _nifti(self.root / f"{name}.nii.gz", array, affine)

    def case(self, name: str, **image_kwargs) -> dict:
        return {"image": self.image(name, **image_kwargs), "label": self.label(f"{name}_label")}

    def series(self, name: str, seed: int = 1, **kwargs) -> Path:
        """A good CT series of ``SLICES`` slices, ``SPACING`` mm apart (positions 0, 3, ..., 21 mm); its UIDs derive
        from its voxels, so another ``seed`` makes another series."""
        volume = np.random.default_rng(seed).integers(-100, 200, (SIDE, SIDE, SLICES)).astype(np.int16)
        return write_dicom_series(volume, np.diag([SPACING] * 3 + [1.0]), self.root / name, **kwargs)

    @property
    def good_series(self) -> Path:
        folder = self.root / "a_good_series"
        if not folder.exists():
            self.series(folder.name)
            header = read_image_header(folder)
            label = np.zeros(header.spatial_shape, np.uint8)
            label[4:12, 4:12, 2:6] = self.facts.label_values[-1]
            _nifti(self.root / "a_good_series_label.nii.gz", label, header.affine)
        return folder

    def series_item(self, name: str) -> dict:
        """A series folder (the good one, or one broken as ``DAMAGES[name]`` says) with the good series' label map."""
        good = self.good_series  # made first: its label map goes with every series
        folder = good if name == good.name else self.root / name
        if not folder.exists():
            self.series(name)
            DAMAGES[name](folder, self)
        return {"image": str(folder), "label": str(self.root / "a_good_series_label.nii.gz")}


@dataclass
class Setup:
    """One bad input, as each workflow gets it."""

    named: str  # what the error must name (a file name, or the datalist's)
    words: tuple[str, ...]  # what else the message must say
    item: dict | None = None  # the bad training / evaluation entry (image and label)
    infer_datalist: bool = False  # give inference a datalist (the input folder lists only NIfTI and DICOM)
    datalist: Path | None = None  # a broken datalist, given as is to every workflow
    locked: tuple[Path, ...] = ()  # made unreadable (chmod 000) for the run
    read_only: tuple[Path, ...] = ()  # made read-only (chmod 555) for the run
    output_dir: Path | None = None  # a folder the run cannot write
    ckpt_dir: Path | None = None


def _corrupt(m: Materials, tmp: Path) -> Setup:
    path = m.root / "b_corrupt.nii.gz"
    path.write_bytes(np.random.default_rng(2).bytes(600))
    return Setup(
        "b_corrupt.nii.gz", ("found an unreadable file (", "expected a NIfTI file"), {**m.good, "image": str(path)}
    )


def _truncated_gzip(m: Materials, tmp: Path) -> Setup:
    raw = Path(m.image("b_whole")).read_bytes()
    path = m.root / "b_truncated.nii.gz"
    path.write_bytes(raw[: len(raw) // 2])
    return Setup("b_truncated.nii.gz", ("found an unreadable file (EOFError",), {**m.good, "image": str(path)})


def _truncated_nii(m: Materials, tmp: Path) -> Setup:
    whole = m.root / "b_whole.nii"
    nib.save(nib.Nifti1Image(np.zeros(m.spatial, np.float32), np.eye(4)), str(whole))
    path = m.root / "b_truncated.nii"
    path.write_bytes(whole.read_bytes()[:1000])
    return Setup("b_truncated.nii", ("found a truncated file (1000 bytes)",), {**m.good, "image": str(path)})


def _not_an_image(m: Materials, tmp: Path) -> Setup:
    path = m.root / "b_report.txt"
    path.write_text("Patient report: no images in this file.\n")
    item = {**m.good, "image": str(path)}
    return Setup("b_report.txt", ("found an unreadable file (", "expected a NIfTI file"), item, infer_datalist=True)


def _wrong_dims(m: Materials, tmp: Path) -> Setup:
    n = m.facts.spatial_dims
    bad = n - 1 if n > 2 else n + 1
    path = _nifti(m.root / "b_dims.nii.gz", np.zeros((SIDE,) * bad, np.float32))
    words = (f"found {bad} spatial dimensions", f"expected {n} spatial dimensions")
    return Setup("b_dims.nii.gz", words, {**m.good, "image": path})


def _wrong_channels(m: Materials, tmp: Path) -> Setup:
    f = m.facts
    n = f.num_channels - 1 if f.input_files > 1 else f.num_channels + 1
    image = m.image("b_channels", channels=n)
    named = Path(image[0] if isinstance(image, list) else image).name

    def noun(k: int) -> str:
        return f"{k} {f.channel_name[:-1] if k == 1 else f.channel_name}"

    return Setup(named, (f"found {noun(n)}", f"expected {noun(f.num_channels)}"), {**m.good, "image": image})


def _label_shape(m: Materials, tmp: Path) -> Setup:
    shape = (SIDE - 4, *m.spatial[1:])  # the first axis: a 3D+time label of another frame count has its own message
    label = m.label("b_short_label", np.zeros(shape, np.uint8))
    return Setup("b_short_label.nii.gz", (f"found label spatial shape {shape}",), {**m.good, "label": label})


def _label_affine(m: Materials, tmp: Path) -> Setup:
    affine = np.diag([SPACING, SPACING, SPACING + 1, 1.0])
    label = m.label("b_moved_label", np.zeros(m.spatial, np.uint8), affine)
    return Setup(
        "b_moved_label.nii.gz",
        ("differing from the image's", "expected the image's affine"),
        {**m.good, "label": label},
    )


def _label_values(m: Materials, tmp: Path) -> Setup:
    value = max(m.facts.label_values) + 2
    array = np.zeros(m.spatial, np.uint8)
    array[3, 3] = value
    label = m.label("b_values_label", array)
    return Setup("b_values_label.nii.gz", (f"found label values {{{value}}}",), {**m.good, "label": label})


def _non_finite(value: float, words: str) -> Callable[[Materials, Path], Setup]:
    def make(m: Materials, tmp: Path) -> Setup:
        array = np.zeros(m.spatial, np.float32)
        array[(slice(0, 2),) * len(m.spatial)] = value
        image = m.image(f"b_{words.split()[-1]}", array)
        named = Path(image[0] if isinstance(image, list) else image).name
        return Setup(named, (words, "expected finite values in every voxel"), {**m.good, "image": image})

    return make


def _empty_label(m: Materials, tmp: Path) -> Setup:
    label = m.label("b_empty_label", np.zeros(m.spatial, np.uint8))
    return Setup("b_empty_label.nii.gz", ("found an empty label map", "for training"), {**m.good, "label": label})


def _missing_file(m: Materials, tmp: Path) -> Setup:
    item = {**m.good, "image": str(m.root / "b_missing.nii.gz")}
    return Setup("b_missing.nii.gz", ("does not exist",), item, infer_datalist=True)


def _datalist(content: str, words: tuple[str, ...]) -> Callable[[Materials, Path], Setup]:
    def make(m: Materials, tmp: Path) -> Setup:
        path = tmp / "dataset.json"
        path.write_text(content, encoding="utf-8")
        return Setup("dataset.json", words, datalist=path)

    return make


def _spacing(pixdim: tuple[float, ...], shown: str) -> Callable[[Materials, Path], Setup]:
    def make(m: Materials, tmp: Path) -> Setup:
        name = f"b_spacing_{'zero' if 0.0 in pixdim else 'negative'}.nii.gz"
        path = nifti_with_pixdim(m.root / name, np.zeros(m.spatial, np.float32), pixdim)
        return Setup(name, (f"found voxel spacing {shown} in its header (pixdim)",), {**m.good, "image": path})

    return make


def _second_series(folder: Path, m: Materials) -> None:
    other = m.series(f"{folder.name}_other", seed=2, series_description="arterial phase")
    for f in sorted(other.iterdir()):
        f.rename(folder / f"B{f.name}")
    other.rmdir()


def _set_all(folder: Path, tags: dict) -> None:
    for f in sorted(folder.iterdir()):
        set_dicom_tags(f, tags)


# how each bad series is broken, from a good one (slice IM000k at position 3 (k - 1) mm)
DAMAGES: dict[str, Callable[[Path, Materials], None]] = {
    "b_two_series": _second_series,
    "b_gap_series": lambda folder, m: (folder / "IM0005.dcm").unlink(),
    "b_uneven_series": lambda folder, m: set_dicom_tags(folder / "IM0004.dcm", {"0020|0032": "0\\0\\10"}),
    "b_duplicate_series": lambda folder, m: set_dicom_tags(folder / "IM0004.dcm", {"0020|0032": "0\\0\\6"}),
    "b_no_spacing_series": lambda folder, m: set_dicom_tags(folder / "IM0003.dcm", {"0028|0030": None}),
    "b_mr_series": lambda folder, m: _set_all(folder, {"0008|0060": "MR"}),
}


def _dicom(name: str, named: str, *words: str) -> Callable[[Materials, Path], Setup]:
    return lambda m, tmp: Setup(named, words, m.series_item(name))


def _unreadable_file(m: Materials, tmp: Path) -> Setup:
    image = tmp / "b_locked.nii.gz"
    shutil.copy(m.good["image"], image)
    return Setup(
        "b_locked.nii.gz",
        ("may not read (PermissionError", "expected read permission"),
        {**m.good, "image": str(image)},
        locked=(image,),
    )


def _unreadable_folder(m: Materials, tmp: Path) -> Setup:
    folder = Path(shutil.copytree(m.good_series, tmp / "b_locked_series"))
    item = {**m.series_item("a_good_series"), "image": str(folder)}
    return Setup("b_locked_series", ("found a folder that this user", "may not read"), item, locked=(folder,))


def _unreadable_slice(m: Materials, tmp: Path) -> Setup:
    folder = Path(shutil.copytree(m.good_series, tmp / "b_series_locked_slice"))
    item = {**m.series_item("a_good_series"), "image": str(folder)}
    return Setup("IM0004.dcm", ("found a file that this user", "may not read"), item, locked=(folder / "IM0004.dcm",))


def _output_under_a_file(m: Materials, tmp: Path) -> Setup:
    blocker = tmp / "results.txt"
    blocker.write_text("a file where a folder should be")
    words = ("found a path under a file that is not a folder", "can create and write")
    return Setup("results.txt", words, dict(m.good), output_dir=blocker / "out")


def _ckpt_under_a_file(m: Materials, tmp: Path) -> Setup:
    blocker = tmp / "models.txt"
    blocker.write_text("a file where a folder should be")
    words = ("found a path under a file that is not a folder", "checkpoint folder")
    return Setup("models.txt", words, dict(m.good), ckpt_dir=blocker / "models")


def _output_read_only(m: Materials, tmp: Path) -> Setup:
    folder = tmp / "read_only"
    folder.mkdir()
    return Setup(
        "read_only", ("not writable by this user",), dict(m.good), output_dir=folder / "out", read_only=(folder,)
    )


def _too_small(m: Materials, tmp: Path) -> Setup:
    minimum = m.facts.min_spatial_size
    shape = tuple(max(1, k - 1) for k in minimum)
    image = m.image("b_small", np.zeros(shape, np.float32))
    label = m.label("b_small_label", np.zeros(shape, np.uint8))
    named = Path(image[0] if isinstance(image, list) else image).name
    return Setup(named, (f"found spatial shape {shape}", "at least"), {"image": image, "label": label})


def _always(f: Facts) -> bool:
    return True


@dataclass(frozen=True)
class Row:
    """One kind of bad input: where it applies and how to make it."""

    id: str
    workflows: tuple[str, ...]
    make: Callable[[Materials, Path], Setup]
    applies: Callable[[Facts], bool] = _always


SINGLE_FILE = lambda f: f.input_files == 1  # noqa: E731
DICOM = lambda f: f.dicom  # noqa: E731
ROWS = [
    Row("unreadable_random_bytes", WORKFLOWS, _corrupt),
    Row("truncated_gzip", WORKFLOWS, _truncated_gzip, SINGLE_FILE),
    Row("truncated_nii", WORKFLOWS, _truncated_nii),
    Row("not_an_image", WORKFLOWS, _not_an_image),
    Row("wrong_dimensionality", WORKFLOWS, _wrong_dims),
    Row("wrong_channel_count", WORKFLOWS, _wrong_channels, lambda f: f.channel_dim is None or f.input_files > 1),
    Row("label_shape_mismatch", (TRAIN, EVALUATE), _label_shape),
    Row("label_affine_mismatch", (TRAIN, EVALUATE), _label_affine),
    Row("label_values_outside_channel_def", (TRAIN, EVALUATE), _label_values),
    Row("nan_intensities", WORKFLOWS, _non_finite(np.nan, "NaN")),
    Row("infinite_intensities", WORKFLOWS, _non_finite(np.inf, "infinite")),
    Row("empty_label", (TRAIN,), _empty_label),
    Row("datalist_entry_file_missing", WORKFLOWS, _missing_file),
    Row("datalist_not_json", WORKFLOWS, _datalist("image,label\nct.nii.gz,seg.nii.gz\n", ("found invalid JSON",))),
    Row(
        "datalist_lacks_its_key",
        WORKFLOWS,
        _datalist('{"name": "export", "images": []}', ("key (keys present: 'name', 'images')",)),
    ),
    Row("zero_voxel_spacing", WORKFLOWS, _spacing((SPACING, 0.0, SPACING), "(3.0, 0.0, 3.0)"), SINGLE_FILE),
    Row("negative_voxel_spacing", WORKFLOWS, _spacing((SPACING, -SPACING, SPACING), "(3.0, -3.0, 3.0)"), SINGLE_FILE),
    Row(
        "dicom_two_series_in_one_folder",
        WORKFLOWS,
        _dicom("b_two_series", "b_two_series", "found 2 DICOM series (", "'arterial phase'"),
        DICOM,
    ),
    Row(
        "dicom_missing_slice",
        WORKFLOWS,
        _dicom(
            "b_gap_series",
            "b_gap_series",
            "slice positions 9.0 ... 15.0 mm (IM0004.dcm, IM0006.dcm)",
            "a gap of 6.0 mm where the series spacing is 3.0 mm",
        ),
        DICOM,
    ),
    Row(
        "dicom_uneven_slices",
        WORKFLOWS,
        _dicom("b_uneven_series", "b_uneven_series", "a gap of 4.0 mm where the series spacing is 3.0 mm"),
        DICOM,
    ),
    Row(
        "dicom_duplicated_slice_position",
        WORKFLOWS,
        _dicom("b_duplicate_series", "b_duplicate_series", "two slices at the same position 6 mm"),
        DICOM,
    ),
    Row(
        "dicom_missing_voxel_spacing",
        WORKFLOWS,
        _dicom("b_no_spacing_series", "IM0003.dcm", "found no Pixel Spacing (0028,0030)"),
        DICOM,
    ),
    Row(
        "dicom_other_modality",
        (INFER,),
        _dicom("b_mr_series", "b_mr_series", "found a DICOM series of Modality MR", "--allow_any_modality true"),
        lambda f: f.dicom and f.modality == "CT",
    ),
    Row("file_user_may_not_read", WORKFLOWS, _unreadable_file, SINGLE_FILE),
    Row("folder_user_may_not_read", WORKFLOWS, _unreadable_folder, DICOM),
    Row("series_slice_user_may_not_read", WORKFLOWS, _unreadable_slice, DICOM),
    Row("output_dir_under_a_regular_file", WORKFLOWS, _output_under_a_file),
    Row("ckpt_dir_under_a_regular_file", (TRAIN,), _ckpt_under_a_file),
    Row("output_dir_read_only", WORKFLOWS, _output_read_only),
    Row("smaller_than_the_network_minimum", WORKFLOWS, _too_small, lambda f: f.min_spatial_size is not None),
]

MATRIX = [
    pytest.param(name, row, workflow, id=f"{name}-{row.id}-{workflow}")
    for name, facts in FACTS.items()
    for row in ROWS
    if row.applies(facts)
    for workflow in row.workflows
]


@pytest.fixture(scope="module")
def materials(tmp_path_factory) -> Callable[[str], Materials]:
    """Each bundle's files, built on first use and shared by the module's tests."""
    built: dict[str, Materials] = {}

    def get(name: str) -> Materials:
        if name not in built:
            built[name] = Materials(FACTS[name], tmp_path_factory.mktemp(name))
        return built[name]

    return get


# ---------------------------------------------------------------------------------------------- running a workflow


# train.json and evaluate.json edits the lead applies; until then the tests lay them over the configs (only what a
# config still lacks), so these rows test the edits themselves
def pending_overlay(facts: Facts, workflow: str, tmp: Path) -> list[str]:
    """An overlay with the edits ``workflow``'s configs still lack (none once they are applied), as a file list."""
    train = json.loads((facts.configs / "train.json").read_text(encoding="utf-8"))
    overlay: dict = {}
    if workflow == TRAIN:
        transforms = train["train"]["preprocessing"]["transforms"]
        if "CheckForegroundd" not in json.dumps(train) and "@load_transforms" in transforms:
            check = "@load_transforms + [common.data.CheckForegroundd(keys='label')]"
            overlay["train#preprocessing#transforms"] = transforms.replace("@load_transforms", check, 1)
        checks = [
            "$common.data.require_output_dir(@output_dir)",
            "$common.data.require_output_dir(@ckpt_dir, 'a checkpoint folder (ckpt_dir)')",
        ]
        init = train["initialize"]
    elif workflow == EVALUATE:
        checks = ["$common.data.require_output_dir(@output_dir)"]
        init = json.loads((facts.configs / "evaluate.json").read_text(encoding="utf-8"))["initialize"]
    else:
        return []
    if not any("require_output_dir" in e for e in init):
        overlay["initialize"] = init + checks
    if not overlay:
        return []
    path = tmp / f"pending_{workflow}.json"
    path.write_text(json.dumps(overlay, indent=4), encoding="utf-8")
    return [str(path)]


def _snapshot(folder: Path) -> list | None:
    if not folder.exists():
        return None
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def _copy_into(folder: Path, source) -> None:
    for s in source if isinstance(source, list) else [source]:
        s = Path(s)
        if s.is_dir():
            shutil.copytree(s, folder / s.name)
        else:
            shutil.copy(s, folder / s.name)


def _prepare(m: Materials, setup: Setup, workflow: str, tmp: Path) -> dict:
    """The overrides that run ``workflow`` on the bad input (and a good case before it)."""
    f = m.facts
    out = setup.output_dir or tmp / "out"
    ckpt = setup.ckpt_dir or tmp / "models"
    if setup.output_dir is None:
        out.mkdir()
        (out / "earlier_seg.nii.gz").write_bytes(b"an earlier run's result")
    if setup.ckpt_dir is None:
        ckpt.mkdir()
        if workflow == TRAIN:
            (ckpt / "earlier.pt").write_bytes(b"an earlier model")
        else:
            os.link(m.models / "model.pt", ckpt / "model.pt")
            os.link(m.models / "model.pt", ckpt / "model_final.pt")  # what an evaluation of the final model loads
    override = {"output_dir": str(out), "ckpt_dir": str(ckpt)}
    if workflow == INFER:
        if setup.datalist is not None:
            override["input"] = str(setup.datalist)
        elif setup.infer_datalist:
            path = tmp / "inputs.json"
            path.write_text(json.dumps({"test": [{"image": m.good["image"]}, {"image": setup.item["image"]}]}))
            override["input"] = str(path)
        else:
            images = tmp / "images"
            images.mkdir()
            bad = setup.item["image"]  # copied beside a good one
            if f.input_files > 1:  # several files per image need a datalist
                path = tmp / "inputs.json"
                path.write_text(json.dumps({"test": [{"image": m.good["image"]}, {"image": bad}]}))
                override["input"] = str(path)
            else:
                _copy_into(images, m.good["image"])
                _copy_into(images, bad)
                # the copies in the input folder are the ones to lock
                setup.locked = tuple(images / p.relative_to(tmp) if p.is_relative_to(tmp) else p for p in setup.locked)
                override["input"] = str(images)
        return override
    if setup.datalist is not None:
        override["datalist"] = str(setup.datalist)
    else:
        path = tmp / "dataset.json"
        good = m.good
        lists = {"training": [good], "validation": [good], "test": [good]}
        lists["training" if workflow == TRAIN else "test"] = [good, setup.item]
        path.write_text(json.dumps(lists), encoding="utf-8")
        override["datalist"] = str(path)
    # should a bad input slip through, training stops after one step instead of the paper's 50,000
    override.update({"num_workers": 0, "num_iterations": 1, "epoch_length": 1, "batch_size": 1, "val_interval": 1})
    return override


def run_workflow(facts: Facts, workflow: str, override: dict, tmp: Path) -> None:
    configs = facts.config_files[workflow] + pending_overlay(facts, workflow, tmp)
    bundle_run(run_id="run", config_file=configs, logging_file=str(facts.configs / "logging.conf"), **override)


# ---------------------------------------------------------------------------------------------- permissions


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_READ_OVERRIDES = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH


@contextmanager
def as_an_ordinary_user() -> Iterator[None]:
    """Let file permissions apply to this thread as to any user: for root, drop the read and write override
    capabilities from the thread's effective set (they stay permitted and come back afterwards)."""
    if os.geteuid() != 0:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = _CapHeader(0x20080522, 0), (_CapData * 2)()  # _LINUX_CAPABILITY_VERSION_3
    if libc.capget(ctypes.byref(header), data) != 0:
        pytest.skip(f"capget failed (errno {ctypes.get_errno()}): cannot make a file unreadable for root here")
    saved = data[0].effective
    data[0].effective &= ~_READ_OVERRIDES
    if libc.capset(ctypes.byref(header), data) != 0:
        pytest.skip(f"capset failed (errno {ctypes.get_errno()}): cannot make a file unreadable for root here")
    try:
        yield
    finally:
        data[0].effective = saved
        assert libc.capset(ctypes.byref(header), data) == 0, "could not restore this thread's capabilities"


@contextmanager
def permissions(setup: Setup) -> Iterator[None]:
    """Lock ``setup.locked`` (no access) and ``setup.read_only`` for the block, as an ordinary user sees them."""
    changed = [(p, stat.S_IMODE(p.stat().st_mode), 0) for p in setup.locked]
    changed += [(p, stat.S_IMODE(p.stat().st_mode), 0o555) for p in setup.read_only]
    if not changed:
        yield
        return
    for p, _, mode in changed:
        p.chmod(mode)
    try:
        with as_an_ordinary_user():
            for p, _, mode in changed:  # the precondition: the kernel refuses this thread now
                try:
                    if mode == 0o555:
                        (p / ".probe").mkdir()
                    elif p.is_dir():
                        os.listdir(p)
                    else:
                        p.open("rb").close()
                except PermissionError:
                    continue
                pytest.skip(f"{p} stays accessible to this user (mode {mode:o}): cannot test the permission check")
            yield
    finally:
        for p, old, _ in changed:
            p.chmod(old)


# ---------------------------------------------------------------------------------------------- the matrix


@pytest.mark.parametrize(("name", "row", "workflow"), MATRIX)
def test_bad_input(materials, tmp_path, name, row, workflow):
    m = materials(name)
    setup = row.make(m, tmp_path)
    override = _prepare(m, setup, workflow, tmp_path)
    out, ckpt = Path(override["output_dir"]), Path(override["ckpt_dir"])
    before = (_snapshot(out), _snapshot(ckpt), _snapshot(m.root))
    with pytest.raises(Exception) as info, permissions(setup):
        run_workflow(m.facts, workflow, override, tmp_path)
    err = find_bundle_input_error(info.value)
    assert isinstance(err, BundleInputError), info.value
    message = str(err)
    assert message == (f"{err.path}: " if err.path else "") + f"found {err.found}; expected {err.expected}"
    assert err.found and err.expected
    assert setup.named in message, message
    for words in setup.words:
        assert words in message, f"{words!r} not in {message!r}"
    # nothing written: an earlier result unchanged, no staging folder left, checkpoints untouched, inputs unchanged
    assert (_snapshot(out), _snapshot(ckpt), _snapshot(m.root)) == before
    assert not (out / ".partial").exists()


def test_matrix_covers_every_bundle():
    """Every bundle gets the rows that apply to it; the abdominal CT bundle gets every row but the minimum size."""
    for name in FACTS:
        assert any(p.values[0] == name for p in MATRIX), name
    abdominal = {p.values[1].id for p in MATRIX if p.values[0] == "abdominal_ct_multiorgan_segmentation"}
    assert abdominal == {r.id for r in ROWS} - {"smaller_than_the_network_minimum"}


@pytest.mark.parametrize("name", FACTS)
def test_inference_declares_its_switches(name):
    facts = FACTS[name]
    infer = json.loads((facts.configs / "inference.json").read_text(encoding="utf-8"))
    assert infer["skip_bad_inputs"] is False and infer["allow_any_modality"] is False
    assert infer["input_modality"] == facts.modality  # the metadata's, restated for MONAI Label (reads inference.json)


# ---------------------------------------------------------------------------------------------- inputs that must work


def _infer(m: Materials, images: Path, tmp: Path, **override) -> Path:
    out = tmp / "out"
    ckpt = tmp / "models"
    ckpt.mkdir()
    os.link(m.models / "model.pt", ckpt / "model.pt")
    run_workflow(m.facts, INFER, {"input": str(images), "ckpt_dir": str(ckpt), "output_dir": str(out), **override}, tmp)
    return out


def _assert_same_grid(seg: Path, source, time_axis: bool = False) -> None:
    """A label map has exactly its input's shape (size-1 axes included) and affine, and channel_def values; with
    ``time_axis`` (a 3D+time bundle) the input's fourth axis is time, kept in the label map, not channels."""
    header = read_image_header(source)
    written = nib.load(seg)
    expected = tuple(nib.load(source).shape) if time_axis else header.spatial_shape
    assert written.shape == expected, (seg.name, written.shape, expected)
    np.testing.assert_allclose(written.affine, header.affine, atol=1e-4)
    return written


@pytest.mark.parametrize("name", [n for n, f in FACTS.items() if f.min_spatial_size is None and f.input_files == 1])
def test_small_and_one_slice_inputs_come_back_in_their_own_shape(materials, tmp_path, name):
    """Inference pads an image smaller than the network's minimum input; a single slice (a one-file DICOM folder or
    an ``(X, Y, 1)`` NIfTI) comes back with its size-1 axis, not as a 2D map."""
    m = materials(name)
    images = tmp_path / "images"
    images.mkdir()
    small = (5, 7, 3, 2, 2)[: m.facts.spatial_dims]
    channels = () if m.facts.num_channels == 1 or m.facts.channel_dim == "no_channel" else (m.facts.num_channels,)
    _nifti(images / "a_small.nii.gz", np.zeros((*small, *channels), np.float32))
    if m.facts.spatial_dims == 3:
        _nifti(images / "b_flat.nii.gz", np.zeros((SIDE, SIDE, 1, *channels), np.float32))
        if m.facts.dicom:
            (images / "c_one_slice").mkdir()
            shutil.copy(m.good_series / "IM0003.dcm", images / "c_one_slice")
    out = _infer(m, images, tmp_path)
    sources = sorted(images.iterdir())
    assert sorted(p.name for p in out.iterdir()) == sorted(
        p.name.replace(".nii.gz", "") + "_seg.nii.gz" for p in sources
    )
    for source in sources:
        seg = out / (source.name.replace(".nii.gz", "") + "_seg.nii.gz")
        written = _assert_same_grid(seg, source, time_axis=m.facts.channel_dim == "no_channel")
        assert set(np.unique(np.asarray(written.dataobj)).tolist()) <= set(m.facts.label_values)


@pytest.mark.parametrize("name", [n for n, f in FACTS.items() if f.dicom and f.modality == "CT"])
def test_allow_any_modality_runs_an_mr_series(materials, tmp_path, name):
    m = materials(name)
    mr = m.series_item("b_mr_series")["image"]
    images = tmp_path / "images"
    images.mkdir()
    shutil.copytree(mr, images / "mr_series")
    out = _infer(m, images, tmp_path, allow_any_modality=True)
    _assert_same_grid(out / "mr_series_seg.nii.gz", images / "mr_series")


def _mixed_inputs(m: Materials, images: Path) -> tuple[list[str], list[str]]:
    """Good inputs and bad ones of both kinds: found by the header preflight and found only when loading."""
    images.mkdir()
    good = ["a_good.nii.gz"]
    _copy_into(images, m.good["image"])
    _nifti(images / "b_two_channels.nii.gz", np.zeros((SIDE, SIDE, SIDE, 2), np.float32))
    nan = np.zeros((SIDE,) * 3, np.float32)
    nan[0, 0, 0] = np.nan
    _nifti(images / "d_nan.nii.gz", nan)
    _nifti(images / "f_flat.nii.gz", np.zeros((SIDE, SIDE, 1), np.float32))
    bad = ["b_two_channels.nii.gz", "d_nan.nii.gz"]
    minimum = m.facts.min_spatial_size
    # a one-slice image is good where the bundle pads small inputs, bad below a declared minimum size
    fits = minimum is None or all(k is None or s >= k for s, k in zip((SIDE, SIDE, 1), minimum, strict=False))
    (good if fits else bad).append("f_flat.nii.gz")
    if m.facts.dicom:
        shutil.copytree(m.good_series, images / "c_series")
        good.append("c_series")
        shutil.copytree(m.series_item("b_gap_series")["image"], images / "e_gap")
        bad.append("e_gap")
    return sorted(good), sorted(bad)


SKIPPABLE = [n for n, f in FACTS.items() if f.input_files == 1 and f.spatial_dims == 3 and f.num_channels == 1]


@pytest.mark.parametrize("name", SKIPPABLE)
def test_skip_bad_inputs_writes_the_good_and_names_every_bad(materials, tmp_path, name):
    m = materials(name)
    images = tmp_path / "images"
    good, bad = _mixed_inputs(m, images)
    with pytest.raises(Exception) as info:
        _infer(m, images, tmp_path, skip_bad_inputs=True)
    err = find_bundle_input_error(info.value)
    assert isinstance(err, SkippedInputsError), info.value
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(g.replace(".nii.gz", "") + "_seg.nii.gz" for g in good)
    for g in good:
        _assert_same_grid(out / (g.replace(".nii.gz", "") + "_seg.nii.gz"), images / g)
    # every bad input named, one error each, in the inputs' order
    assert [e.path for e in err.errors] == [str(images / b) for b in bad]
    message = str(err)
    assert f"{len(bad)} bad input(s) of {len(good) + len(bad)}, skipped ({len(good)} label map(s) written)" in message
    assert "found 2 channels" in message and "1 NaN" in message
    if m.facts.dicom:
        assert "a gap of 6.0 mm where the series spacing is 3.0 mm" in message


@pytest.mark.parametrize("name", SKIPPABLE)
def test_skip_bad_inputs_with_nothing_good_writes_nothing(materials, tmp_path, name):
    m = materials(name)
    images = tmp_path / "images"
    images.mkdir()
    _nifti(images / "b_two_channels.nii.gz", np.zeros((SIDE, SIDE, SIDE, 2), np.float32))
    with pytest.raises(Exception) as info:
        _infer(m, images, tmp_path, skip_bad_inputs=True)
    err = find_bundle_input_error(info.value)
    assert isinstance(err, SkippedInputsError) and "1 bad input(s) of 1, skipped (0 label map(s) written)" in str(err)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", SKIPPABLE)
def test_skip_bad_inputs_from_the_command_line(materials, tmp_path, name):
    """``--skip_bad_inputs true`` as a user types it: the good label maps are written, the run exits non-zero and
    its output names every bad file; ``--skip_bad_inputs false`` stops at the first bad input and writes nothing."""
    m = materials(name)
    images = tmp_path / "images"
    good, bad = _mixed_inputs(m, images)
    (tmp_path / "models").mkdir()
    os.link(m.models / "model.pt", tmp_path / "models" / "model.pt")
    base = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", str(m.facts.configs / "inference.json"),
        "--input", str(images), "--ckpt_dir", str(tmp_path / "models"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kwargs = {"capture_output": True, "encoding": "utf-8", "errors": "replace", "timeout": 600, "env": env}
    stopped = subprocess.run(
        [*base, "--output_dir", str(tmp_path / "out_stop"), "--skip_bad_inputs", "false"], **kwargs
    )
    assert stopped.returncode != 0 and "b_two_channels.nii.gz: found 2 channels" in stopped.stdout + stopped.stderr
    assert not (tmp_path / "out_stop").exists()
    result = subprocess.run([*base, "--output_dir", str(tmp_path / "out"), "--skip_bad_inputs", "true"], **kwargs)
    assert result.returncode != 0, result.stdout[-2000:]
    text = result.stdout + result.stderr
    for b in bad:
        assert b in text, (b, text[-3000:])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        g.replace(".nii.gz", "") + "_seg.nii.gz" for g in good
    )
