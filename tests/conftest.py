"""Shared fixtures: the repository root on sys.path, the bundle list, the schema folder, hypothesis's settings."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p for p in (ROOT / "bundles").iterdir() if (p / "configs").is_dir())
SCHEMA_DIR = ROOT.parent / "shared" / "schemas"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# bundle configs use paths relative to the repository root, as the README's commands do
os.chdir(ROOT)

# property tests (hypothesis): the same examples on every run and machine ("ci", the default), no per-example
# deadline (CPU time on shared runners varies); HYPOTHESIS_PROFILE=dev explores with fresh random examples
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=25, database=None, print_blob=True)
settings.register_profile("dev", deadline=None, max_examples=300, database=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(params=[b.name for b in BUNDLES])
def bundle(request) -> Path:
    """Each bundle folder, relative to the repository root."""
    return Path("bundles") / request.param


# Smaller sizes for the tests that check how a bundle runs (resume, determinism, tracking, export), not what it
# learns: the same configs and code paths on less CPU. The CT perfusion demo (2 mm heads of 96 x 112 x 96 voxels,
# 124^3 sub-volumes, 188^3 tiles) takes minutes a run on 2 cores; here its heads are 4 mm (48 x 56 x 48, the same
# field of view), its sub-volumes the smallest the valid-convolution network takes (92^3, 4^3 outputs) and one
# 148^3 tile (60^3 outputs) covers a head. The learning tests (tests/bundles/test_<bundle>.py) keep the demo sizes.
FAST = {
    "brain_ctp_tissue_segmentation": {
        "phantom_shape": [48, 56, 48],
        "phantom_spacing": [4.0, 4.0, 4.0],
        "patch_size": [92, 92, 92],
        "tile_roi_size": [148, 148, 148],
    },
}


def fast_overrides(bundle: Path) -> dict:
    """:data:`FAST`'s overrides for ``bundle`` (a folder or name); none for a bundle whose demo is already small."""
    return dict(FAST.get(Path(bundle).name, {}))


@pytest.fixture
def one_thread():
    """One PyTorch thread, as the test subprocesses get (OMP_NUM_THREADS=1): the same reduction order in every run,
    and no thread fight on a loaded machine's cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cli_args(overrides: dict) -> list[str]:
    """Config overrides as ``monai.bundle run`` command-line arguments: strings as they are, the rest as JSON."""
    return [f"--{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items()]


def parse_configs(*files, **override):
    """A ``ConfigParser`` of the config files merged in order, then the overrides (config ids -> values)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(list(files))
    parser.update(override)
    return parser


def evaluate_untrained(root: Path, config_files: list, logging_file, overrides: dict, network_files: list) -> Path:
    """Evaluate a network with random weights the way a trained one is evaluated (the same configs and code path).

    Args:
        root: a folder of the test's; the random weights go to ``root/random/model.pt``.
        config_files: the evaluation's config files (train, evaluate, overlays).
        logging_file: the bundle's logging config.
        overrides: the evaluation's overrides; ``ckpt_file`` and ``output_dir`` are replaced.
        network_files: the configs (and overlays) whose ``network_def`` builds the network, parsed as they are.

    Returns:
        the evaluation's output folder, ``root/chance``: the "chance" level a trained network must beat.
    """
    from monai.bundle import run as bundle_run

    torch.manual_seed(0)
    net = parse_configs(*network_files).get_parsed_content("network_def")
    (root / "random").mkdir()
    torch.save(net.state_dict(), root / "random" / "model.pt")
    chance_dir = root / "chance"
    overrides = {**overrides, "ckpt_file": str(root / "random" / "model.pt"), "output_dir": str(chance_dir)}
    bundle_run(run_id="run", config_file=config_files, logging_file=logging_file, **overrides)
    return chance_dir


def fake_spatial_shape(spatial_shape: list, least: int) -> tuple[int, ...]:
    """The smallest shape of the metadata's ``spatial_shape`` pattern (``"8*n"``, ``"8*n+84"``, ...) with every side
    at least ``least``: the zoo's own pattern evaluation, at the first ``n`` that is large enough."""
    from monai.bundle.scripts import _get_fake_spatial_shape

    for n in range(1, 1025):
        shape = _get_fake_spatial_shape(spatial_shape, n=n)
        if min(shape) >= least:
            return shape
    raise ValueError(f"spatial_shape {spatial_shape} never reaches {least} voxels a side")


def infer_test_cases(root: Path, datalist, overrides: dict, config_files: list, logging_file):
    """Run a bundle's inference on its datalist's ``test`` cases with ``root/models/model_final.pt``.

    Args:
        root: the test's folder holding ``models/model_final.pt``; the label maps go to ``root/seg``.
        datalist: the phantom datalist (its ``test`` entries are inferred, as ``demo.json``'s ``input`` says).
        overrides: the run's overrides; ``ckpt_file`` and ``output_dir`` are replaced.
        config_files: the inference's config files (``inference.json``, ``demo.json``).
        logging_file: the bundle's logging config.

    Returns:
        per test case, ``(entry, image, reference, seg)``: the datalist entry, the input image, the reference label
        array (nibabel) and the written ``<name>_seg.nii.gz`` (nibabel image).
    """
    import nibabel as nib
    import numpy as np
    from monai.bundle import run as bundle_run

    out = root / "seg"
    overrides = {**overrides, "ckpt_file": str(root / "models" / "model_final.pt"), "output_dir": str(out)}
    bundle_run(run_id="run", config_file=config_files, logging_file=logging_file, **overrides)
    folder = Path(datalist).parent
    cases = []
    for entry in json.loads(Path(datalist).read_text(encoding="utf-8"))["test"]:
        image = nib.load(folder / entry["image"])
        reference = np.asarray(nib.load(folder / entry["label"]).dataobj)
        seg = nib.load(out / Path(entry["image"]).name.replace(".nii.gz", "_seg.nii.gz"))
        cases.append((entry, image, reference, seg))
    return cases


def infer_dicom_test_case(root: Path, datalist, overrides: dict, config_files: list, logging_file, nifti_segs: dict):
    """Infer the datalist's first ``test_dicom`` series (an LPS DICOM CT series of a ``test`` case) and check that
    its label map says, voxel for voxel in world space, what the NIfTI input of the same case gave.

    Args:
        root: the test's folder; the label map goes to ``root/seg_dicom``.
        datalist: the phantom datalist, made with ``dicom=True``.
        overrides: the run's overrides (``ckpt_file`` included); ``input`` and ``output_dir`` are replaced.
        config_files: the inference's config files (``inference.json``, ``demo.json``).
        logging_file: the bundle's logging config.
        nifti_segs: label maps (nibabel images) of the NIfTI test cases by image name without ``.nii.gz``.

    Returns:
        ``(labels, reference)``: the DICOM case's label map and its reference, as arrays in RAS order.
    """
    import nibabel as nib
    import numpy as np
    from monai.bundle import run as bundle_run

    folder = Path(datalist).parent
    case = json.loads(Path(datalist).read_text(encoding="utf-8"))["test_dicom"][0]
    dicom_dir = folder / case["image"]
    out = root / "seg_dicom"
    bundle_run(
        run_id="run", config_file=config_files, logging_file=logging_file,
        **{**overrides, "output_dir": str(out), "input": str(dicom_dir)},
    )  # fmt: skip
    (seg_file,) = out.glob("*_seg.nii.gz")
    reference = nib.load(folder / case["label"])
    seg = nib.load(seg_file)
    assert seg.shape == reference.shape
    # the DICOM series (LPS) and the NIfTI (RAS) of one case give the same label in every voxel of the world
    ras_seg, ras_ref = nib.as_closest_canonical(seg), nib.as_closest_canonical(reference)
    ras_nifti = nib.as_closest_canonical(nifti_segs[dicom_dir.name])
    assert np.allclose(ras_seg.affine, ras_ref.affine, atol=1e-3)
    assert np.allclose(ras_seg.affine, ras_nifti.affine, atol=1e-3)
    from_dicom, from_nifti = np.asarray(ras_seg.dataobj), np.asarray(ras_nifti.dataobj)
    assert np.array_equal(from_dicom, from_nifti), f"{np.mean(from_dicom != from_nifti):.2%} of voxels differ"
    return from_dicom, np.asarray(ras_ref.dataobj)


def train_in_process(config_files: list, logging_file, overrides: dict) -> dict:
    """Train a bundle through ``monai.bundle``'s ``ConfigWorkflow`` in this process, as ``monai.bundle run`` does.

    Args:
        config_files: the training's config files (``train.json``, ``demo.json``, overlays).
        logging_file: the bundle's logging config.
        overrides: config id -> value (data, folders, a shorter schedule).

    Returns:
        the validation evaluator's metrics after the last validation (``state.metrics``).
    """
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(config_file=config_files, logging_file=logging_file, workflow_type="train", **overrides)
    wf.initialize()
    wf.run()
    metrics = dict(wf.parser.get_parsed_content("validate#evaluator").state.metrics)
    wf.finalize()
    return metrics


# Rough seconds each slow test file takes on one worker (setup, calls and teardown of all its tests), for ordering
# only: MONAI Label, resume, export, tracking and the checks from a single-worker timing run on a 2-core AMD EPYC
# (the CT perfusion cuts of FAST since applied); the bundle files from --durations listings. scripts/run_tests.sh
# runs the suite on two xdist workers, one file at a time each (``--dist loadfile``), in collection order
# (``--no-loadscope-reorder``; xdist's own order is by number of tests, which started the MONAI Label file, the
# longest, near the end): the longest files go first, so that no long file starts when the other worker is nearly
# done. Files not listed take about a minute or less and keep their order after these.
FILE_SECONDS = {
    "tests/monailabel/test_monailabel_server.py": 1400,
    "tests/bundles/test_resume.py": 880,
    "tests/bundles/test_export.py": 480,
    "tests/bundles/test_brain_ctp_tissue_segmentation.py": 450,
    "tests/bundles/test_head_ct_neuroanatomy_segmentation.py": 350,
    "tests/bundles/test_tracking.py": 220,
    "tests/bundles/test_brain_tumor_mri_segmentation.py": 200,
    "tests/bundles/test_abdominal_ct_multiorgan_segmentation.py": 200,
    "tests/bundles/test_bad_inputs.py": 163,
    "tests/bundles/test_cardiac_ccta_4d_segmentation.py": 150,
    "tests/bundles/test_contract.py": 143,
    "tests/bundles/test_hand_mri_bone_segmentation.py": 100,
    "tests/bundles/test_determinism.py": 90,
}


def pytest_collection_modifyitems(session, config, items):
    """Longest test files first (:data:`FILE_SECONDS`), each file's tests in their own order (the sort is stable)."""
    items.sort(key=lambda item: -FILE_SECONDS.get(item.nodeid.split("::", 1)[0], 0))
