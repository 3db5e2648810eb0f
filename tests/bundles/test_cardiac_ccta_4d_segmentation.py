"""Facts and an end-to-end run of bundles/cardiac_ccta_4d_segmentation (Myronenko et al. 2020, 4D CNN)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import run as bundle_run
from monai.inferers import SlidingWindowInferer

from common.data import BundleInputError, find_bundle_input_error
from common.inferers.frame_by_frame import FrameByFrameInferer
from common.losses.sparse_temporal_dice import SparseTemporalDiceLoss
from common.metrics.temporal import ejection_fraction, lv_volume_curve
from common.networks.conv4d import Conv4d
from common.networks.segresnet4d import SegResNet4D
from common.phantoms import make_dataset
from common.phantoms.cardiac_ccta import generate_cardiac_ccta_dense
from common.transforms.frames import RandAnnotatedFramed
from common.transforms.time_axis import TimeAsSpatialAxisd
from tests.conftest import evaluate_untrained, infer_test_cases, train_in_process
from tests.conftest import parse_configs as parse

BUNDLE = Path("bundles/cardiac_ccta_4d_segmentation")
CONFIGS = BUNDLE / "configs"
TRAIN, EVALUATE, INFER, DEMO = (
    str(CONFIGS / f) for f in ("train.json", "evaluate.json", "inference.json", "demo.json")
)
LOGGING = str(CONFIGS / "logging.conf")
VARIANTS = CONFIGS / "variants"
BASELINE_3D = str(VARIANTS / "baseline_3d.json")
CLASSES = ["left ventricle", "myocardium"]
PARAMS_4D = 862_627  # stated and explained in the model card
PARAMS_3D = 1_176_179


def _datalist(tmp_path: Path, n_cases: int = 2) -> Path:
    """A tiny phantom data set (16 x 16 x 12 voxels of 8 mm, 8 frames) for parsing ids that read the datalist."""
    return make_dataset(
        "cardiac_ccta_4d", tmp_path / "data", n_cases=n_cases, seed=0, n_validation=1, n_test=1,
        shape=[16, 16, 12, 8], spacing=[8.0, 8.0, 8.0, 0.125],
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- paper facts


def test_defaults_follow_the_paper(tmp_path):
    """Sections 3.1-3.4 and 4: network, loss, crops, batch, epochs, optimizer and schedule, intensities, inferer."""
    datalist = _datalist(tmp_path, n_cases=3)
    p = parse(TRAIN, datalist=str(datalist))
    net = p.get_parsed_content("network_def")
    assert isinstance(net, SegResNet4D) and net.spatial_dims == 4
    assert sum(x.numel() for x in net.parameters()) == PARAMS_4D
    # 3.3: batch 1, each training sequence once per epoch, 96x96x64x16 crops centred on foreground with p = 0.6
    assert p["patch_size"] == [96, 96, 64, 16] and p["batch_size"] == 1
    assert p.get_parsed_content("epoch_length") == 3  # the three training sequences
    assert p.get_parsed_content("train#trainer#max_epochs") == 500
    crop = next(t for t in p.get_parsed_content("train#random_transforms") if type(t).__name__.startswith("RandCrop"))
    assert list(crop.cropper.spatial_size) == [96, 96, 64, 16]
    assert crop.cropper.pos_ratio == pytest.approx(0.6)
    assert p.get_parsed_content("frame_sampling") == []  # whole sequences, every frame
    # 3.2: sparse soft Dice on the annotated frames + first-order temporal smoothness, equal weights
    loss = p.get_parsed_content("loss")
    assert isinstance(loss, SparseTemporalDiceLoss)
    assert loss.smoothness == "l2" and loss.smoothness_weight == 1.0 and loss.ignore_value == 255
    # 3.3: Adam from 1e-4, lr (1 - e / N)^0.9 per epoch (checked below); 4: the final model is evaluated
    opt = p.get_parsed_content("optimizer")
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["lr"] == 1e-4
    assert parse(TRAIN, EVALUATE)["ckpt_file"].endswith("/model_final.pt'")
    # 3.4 and 4: resampled to 1 mm with time kept; [-1024, 1024] HU -> [-1, 1]
    assert p["pixdim"] == [1.0, 1.0, 1.0] and p["hu_range"] == [-1024, 1024]
    scale = next(t for t in p.get_parsed_content("load_transforms") if type(t).__name__ == "ScaleIntensityRanged")
    assert (scale.scaler.b_min, scale.scaler.b_max, scale.scaler.clip) == (-1.0, 1.0, True)
    assert isinstance(p.get_parsed_content("load_transforms")[-1], TimeAsSpatialAxisd)
    # whole sequences by 4D sliding windows
    inferer = p.get_parsed_content("validate#inferer")
    assert isinstance(inferer, SlidingWindowInferer) and list(inferer.roi_size) == [96, 96, 64, 16]
    assert parse(INFER).get_parsed_content("inferer").roi_size == inferer.roi_size
    # no augmentation other than the crop
    names = [type(t).__name__ for t in p.get_parsed_content("train#random_transforms")]
    assert names == ["SpatialPadd", "CopyItemsd", "Lambdad", "RandCropByPosNegLabeld", "DeleteItemsd"]


def test_learning_rate_schedule_of_reference_7(tmp_path):
    """lr(e) = 1e-4 (1 - e / 500)^0.9 at the start of epoch e (Myronenko 2018, section 2.4)."""
    p = parse(TRAIN, datalist=str(_datalist(tmp_path)))
    scheduler = p.get_parsed_content("lr_scheduler")
    optimizer = p.get_parsed_content("optimizer")
    seen = {}
    for epoch in range(500):
        seen[epoch] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    for epoch in (0, 1, 100, 250, 499):
        assert seen[epoch] == pytest.approx(1e-4 * (1 - epoch / 500) ** 0.9, rel=1e-9), epoch
    assert optimizer.param_groups[0]["lr"] == 0.0


def test_sliding_windows_reassemble_a_sequence_exactly():
    """The 4D windows (time covered in overlapping windows when T > 16) put an identity network's input back."""
    inferer = parse(TRAIN, patch_size=[16, 16, 12, 8]).get_parsed_content("inferer")
    x = torch.randn(1, 1, 40, 30, 20, 20, dtype=torch.float64)  # 20 frames: three overlapping windows of 8 in time
    out = inferer(x, lambda patch: patch.clone())
    torch.testing.assert_close(out, x, rtol=0, atol=1e-12)
    # a window that does not fit inside the sequence (fewer frames than the window): padded, then cropped back
    short = torch.randn(1, 1, 20, 20, 12, 5, dtype=torch.float64)
    torch.testing.assert_close(inferer(short, lambda patch: patch.clone()), short, rtol=0, atol=1e-12)


def test_baseline_3d_variant():
    """Section 4's 3D network: one more level, 96x96x64 crops of annotated frames, inferred frame by frame."""
    p = parse(TRAIN, BASELINE_3D)
    net = p.get_parsed_content("network_def")
    assert isinstance(net, SegResNet4D) and net.spatial_dims == 3 and net.levels == 4
    assert sum(x.numel() for x in net.parameters()) == PARAMS_3D
    # the encoder ends at 12 x 12 x 8 for a 96 x 96 x 64 crop (paper section 4)
    sizes = []
    hook = net.down_layers[-1].register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[2:])))
    with torch.no_grad():
        net(torch.zeros(1, 1, 96, 96, 64))
    hook.remove()
    assert sizes == [(12, 12, 8)]
    assert p["patch_size"] == [96, 96, 64]
    (sampling,) = p.get_parsed_content("frame_sampling")
    assert isinstance(sampling, RandAnnotatedFramed) and sampling.ignore_value == 255
    inferer = p.get_parsed_content("validate#inferer")
    assert isinstance(inferer, FrameByFrameInferer) and list(inferer.inferer.roi_size) == [96, 96, 64]
    infer = parse(INFER, BASELINE_3D).get_parsed_content("inferer")
    assert isinstance(infer, FrameByFrameInferer)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_time_padding_variants(mode):
    p = parse(TRAIN, str(VARIANTS / f"time_padding_{mode}.json"))
    net = p.get_parsed_content("network_def")
    modes = {m.time_padding_mode for m in net.modules() if isinstance(m, Conv4d)}
    assert modes == {mode}
    assert sum(x.numel() for x in net.parameters()) == PARAMS_4D


def test_no_smoothness_variant():
    loss = parse(TRAIN, str(VARIANTS / "no_smoothness.json")).get_parsed_content("loss")
    assert loss.smoothness_weight == 0.0


def test_activation_checkpointing_switch():
    net = parse(TRAIN, activation_checkpointing=True).get_parsed_content("network_def")
    assert net.checkpoint is True
    assert parse(TRAIN).get_parsed_content("network_def").checkpoint is False


def test_ejection_fraction_survives_the_bundle_preprocessing(tmp_path):
    """A phantom with a known EF: its dense ground truth, loaded and resampled by the bundle's own transforms to
    1 mm, gives the EF the phantom was drawn with (within the resampling's partial volume)."""
    case = generate_cardiac_ccta_dense(np.random.default_rng(7), shape=[40, 40, 32, 12], spacing=[3, 3, 3, 0.08])
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    for key, dtype in (("image", np.int16), ("label", np.uint8)):
        nib.save(
            nib.Nifti1Image(case[key if key == "image" else "dense_label"].astype(dtype), affine),
            tmp_path / f"{key}.nii.gz",
        )
    p = parse(TRAIN)
    data = {k: str(tmp_path / f"{k}.nii.gz") for k in ("image", "label")}
    for t in p.get_parsed_content("load_transforms"):
        data = t(data)
    label = data["label"]
    assert tuple(label.shape) == (
        1,
        118,
        118,
        94,
        12,
    )  # 3 mm -> 1 mm (39 steps of 3 mm), time kept as the last spatial axis
    volumes = lv_volume_curve(np.asarray(label[0]), spacing=[1.0, 1.0, 1.0])
    assert ejection_fraction(volumes) == pytest.approx(case["ejection_fraction"], abs=1.0)
    assert int(np.argmax(volumes)) == case["end_diastole_frame"]
    assert int(np.argmin(volumes)) == case["end_systole_frame"]


def test_label_of_another_frame_count_is_refused_naming_both(tmp_path):
    """Issue 10: a label whose frame count differs from the image's is a clear error, before anything is written."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 12, 8), np.int16), affine), tmp_path / "image.nii.gz")
    label = np.full((16, 16, 12, 6), 255, np.uint8)
    label[..., 0] = 0
    label[4:8, 4:8, 4:8, 0] = 1
    nib.save(nib.Nifti1Image(label, affine), tmp_path / "label.nii.gz")
    entry = {"image": "image.nii.gz", "label": "label.nii.gz"}
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [entry]}))
    with pytest.raises(Exception) as info:  # ConfigParser wraps the error; its cause is checked below
        parse(TRAIN, dataset_dir=str(tmp_path)).get_parsed_content("train_data")
    error = find_bundle_input_error(info.value)
    assert isinstance(error, BundleInputError), info.value
    message = str(error)
    assert message.startswith(str(tmp_path / "label.nii.gz"))
    assert "found 6 frames (time points) in the label" in message and "expected the image's 8 frames" in message


# ---------------------------------------------------------------------------------------------- end to end

# the demo's code path, shorter: 4 phantom sequences (4 mm, 32 x 32 x 24 x 16), 20 epochs of 4 iterations. 12 were
# enough on the earlier CPUs; on an AVX-512 AMD EPYC (Zen 5) the run's loss jumps at epoch 8 and at 12 the test LV Dice
# is 0.38; after 20 it is 0.84 (myocardium 0.68)
TINY = {"num_epochs": 20, "val_interval": 20, "num_workers": 0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train through ``monai.bundle`` in this process on 4 phantom sequences; return the run's folders."""
    root = tmp_path_factory.mktemp("cardiac")
    datalist = make_dataset(
        "cardiac_ccta_4d", root / "data", n_cases=4, seed=1, n_validation=1, n_test=2,
        shape=[32, 32, 24, 16], spacing=[4.0, 4.0, 4.0, 0.0625],
    )  # fmt: skip
    common = {"datalist": str(datalist), "ckpt_dir": str(root / "models"), "output_dir": str(root / "eval"), **TINY}
    history = train_in_process([TRAIN, DEMO], LOGGING, common)
    return root, datalist, common, history


def _temporal_summary(folder: Path) -> dict:
    return json.loads((folder / "test_temporal_summary.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_evaluate_learns_well_above_an_untrained_network(trained):
    """Table 2's measures and the EF on held-out phantom sequences, against random weights."""
    root, datalist, common, _ = trained
    common = {**common, "ckpt_file": str(root / "models" / "model_final.pt")}
    bundle_run(run_id="run", config_file=[TRAIN, EVALUATE, DEMO], logging_file=LOGGING, **common)
    chance_dir = evaluate_untrained(root, [TRAIN, EVALUATE, DEMO], LOGGING, common, [TRAIN, DEMO])
    trained_doc, chance_doc = (_temporal_summary(d) for d in (root / "eval", chance_dir))
    assert trained_doc["n_cases"] == 2
    dice = {c: trained_doc["measures"]["frame_dice"]["summary"][c]["avg"] for c in CLASSES}
    chance = {c: chance_doc["measures"]["frame_dice"]["summary"][c]["avg"] for c in CLASSES}
    print(f"phantom test frame Dice: trained {dice}, untrained {chance}")
    assert dice["left ventricle"] > chance["left ventricle"] + 0.3 and dice["left ventricle"] > 0.5, (dice, chance)
    assert dice["myocardium"] > chance["myocardium"] + 0.1, (dice, chance)  # measured: 0.84 / 0.68 against 0.22 / 0.10
    # the EF per sequence against the datalist's reference EF, and the reduced-EF detection table
    listing = json.loads(Path(datalist).read_text(encoding="utf-8"))
    with open(root / "eval" / "test_temporal_per_case.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(float(r["ref_ef_percent"]) for r in rows) == sorted(c["ejection_fraction"] for c in listing["test"])
    assert all(len(r["lv_volume_ml"].split()) == 16 for r in rows)
    detection = trained_doc["ef_detection"]
    assert detection["n_cases"] == 2 and detection["threshold"] == 55.0
    assert detection["mae"] == pytest.approx(np.mean([float(r["ef_abs_error"]) for r in rows]))
    for name in ("test_temporal_lv_volume.png", "test_temporal_through_time.png"):
        assert (root / "eval" / name).stat().st_size > 10_000, name
    dice_rows = (root / "eval" / "test_val_mean_dice_per_case.csv").read_text(encoding="utf-8").splitlines()
    assert len(dice_rows) == 3  # the header and the two test sequences


@pytest.mark.slow
def test_infer_writes_4d_label_maps_on_the_input_grid(trained):
    root, datalist, common, _ = trained
    for case, image, reference, seg in infer_test_cases(root, datalist, common, [INFER, DEMO], LOGGING):
        assert seg.shape == image.shape and len(seg.shape) == 4
        np.testing.assert_allclose(seg.affine, image.affine, atol=1e-4)
        labels = np.asarray(seg.dataobj)
        assert set(np.unique(labels).tolist()) <= {0, 1, 2}
        # every frame is segmented; on the annotated ones the cavity overlaps the reference
        assert all((labels[..., t] == 1).any() for t in range(labels.shape[-1]))
        annotated = case["labeled_frames"]
        p, r = labels[..., annotated] == 1, reference[..., annotated] == 1
        assert 2 * (p & r).sum() / (p.sum() + r.sum()) > 0.5, case["image"]
