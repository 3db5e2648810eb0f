"""Facts and an end-to-end run of bundles/head_ct_neuroanatomy_segmentation (Cai et al. 2020, 2D U-Net with LN)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import run as bundle_run
from monai.inferers import SliceInferer
from monai.losses import DiceLoss

from common.data.class_weights import main as class_weights_main
from common.handlers.early_stopping import SoftDicePlateauStopping
from common.losses.class_weighted_ce import ClassWeightedCrossEntropyLoss
from common.metrics.consensus import write_consensus
from common.networks.batch_renorm import BatchRenorm2d
from common.networks.unet2d_ln import ChannelLayerNorm2d, UNet2DLayerNorm
from common.phantoms import make_dataset
from common.phantoms.head_ct import HEAD_CT_LABELS
from tests.conftest import evaluate_untrained, infer_dicom_test_case, infer_test_cases, train_in_process
from tests.conftest import parse_configs as parse

BUNDLE = Path("bundles/head_ct_neuroanatomy_segmentation")
CONFIGS = BUNDLE / "configs"
TRAIN, EVALUATE, INFER, DEMO = (
    str(CONFIGS / f) for f in ("train.json", "evaluate.json", "inference.json", "demo.json")
)
LOGGING = str(CONFIGS / "logging.conf")
VARIANTS = CONFIGS / "variants"
STRUCTURES = [HEAD_CT_LABELS[k] for k in range(1, 12)]
PARAMS = 31_043_084  # the paper's 31,042,499 + (64 + 1) x 9 for 12 outputs instead of 3: explained in the model card
SHAPE, SPACING = [96, 96, 20], [2.4, 2.4, 10.0]  # the tests' phantom heads (the demo's: 128 x 128 x 40 at 1.8 mm)


def _tiny_datalist(tmp_path: Path) -> Path:
    return make_dataset(
        "head_ct_neuroanatomy", tmp_path / "data", n_cases=2, seed=0, n_validation=1, shape=[48, 48, 12],
        spacing=[4.8, 4.8, 16.7],
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- paper facts


def test_defaults_follow_the_paper(tmp_path):
    """Network, loss, batch, optimizer, augmentation, slice sampling, early stop and inference of the paper."""
    p = parse(TRAIN, datalist=str(_tiny_datalist(tmp_path)))
    net = p.get_parsed_content("network_def")
    assert isinstance(net, UNet2DLayerNorm) and p["network_def"]["features"] == [64, 128, 256, 512, 1024]
    assert sum(x.numel() for x in net.parameters()) == PARAMS
    norms = [m for m in net.modules() if isinstance(m, ChannelLayerNorm2d)]
    assert len(norms) == 18 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    with torch.no_grad():  # a 512 x 512 axial slice in, 12 class maps of 512 x 512 out
        assert net.eval()(torch.zeros(1, 1, 512, 512)).shape == (1, 12, 512, 512)
    # categorical cross-entropy with attenuated class weights, read from the datalist's class_weights.json
    loss = p.get_parsed_content("loss")
    assert isinstance(loss, ClassWeightedCrossEntropyLoss) and loss.scheme == "attenuated"
    assert Path(loss.weight_file) == Path(p.get_parsed_content("datalist")).parent / "class_weights.json"
    opt = p.get_parsed_content("optimizer")
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["lr"] == 1e-4
    assert p["batch_size"] == 3 and p.get_parsed_content("train#dataloader").batch_size == 3
    # input in HU: no intensity transform between loading and the network
    names = [type(t).__name__ for t in p.get_parsed_content("load_transforms")]
    assert not any("Intensity" in n or "Normalize" in n for n in names), names
    # one axial slice per item, then LR and AP flips, rotation 7 degrees, scaling 8 %, translation 20 pixels
    augment = p.get_parsed_content("train#random_transforms")
    assert [type(t).__name__ for t in augment] == ["RandSpatialCropd", "SqueezeDimd", "RandFlipd", "RandFlipd",
                                                  "RandAffined"]  # fmt: skip
    assert list(augment[0].cropper.roi_size) == [-1, -1, 1]
    assert [t.flipper.spatial_axis for t in augment[2:4]] == [0, 1]
    affine = augment[4].rand_affine.rand_affine_grid
    # MONAI draws each from uniform(-r, r): an in-plane rotation, a per-axis scale and a per-axis shift
    assert affine.rotate_range == pytest.approx((math.radians(7),))
    assert tuple(affine.scale_range) == (0.08, 0.08) and tuple(affine.translate_range) == (20, 20)
    # every slice of a volume equally likely: an epoch is slices_per_volume draws per training volume
    assert p.get_parsed_content("epoch_length") == 2 * 40 // 3
    # early stop: mean validation soft Dice not improved by 0.001 over 5 epochs
    stop = p.get_parsed_content("validate#early_stopping")
    assert isinstance(stop, SoftDicePlateauStopping) and (stop.patience, stop.min_delta) == (5, 0.001)
    # slice by slice over the volume, 3 slices per batch, for validation and inference alike
    for inferer in (p.get_parsed_content("validate#inferer"), parse(INFER).get_parsed_content("inferer")):
        assert isinstance(inferer, SliceInferer) and inferer.spatial_dim == 2 and inferer.sw_batch_size == 3
        assert list(inferer.roi_size) == [-1, -1]


@pytest.mark.parametrize(
    ("variant", "norm_type", "scheme", "batch"),
    [
        ("model1_no_norm_balanced", None, "balanced", 3),
        ("model2_layer_norm_balanced", ChannelLayerNorm2d, "balanced", 3),
        (None, ChannelLayerNorm2d, "attenuated", 3),  # model 3: the default
        ("model4_no_weighting", ChannelLayerNorm2d, "none", 3),
        ("model5_dice_loss", ChannelLayerNorm2d, None, 3),
        ("model6_batch_norm_batch3", torch.nn.BatchNorm2d, "attenuated", 3),
        ("model7_batch_norm_batch12", torch.nn.BatchNorm2d, "attenuated", 12),
        ("model8_batch_renorm", BatchRenorm2d, "attenuated", 3),
    ],
)
def test_table1_models_are_overlays(variant, norm_type, scheme, batch):
    files = [TRAIN] + ([str(VARIANTS / f"{variant}.json")] if variant else [])
    p = parse(*files, **{"network_def#features": [4, 8, 16, 32, 64]})
    net = p.get_parsed_content("network_def")
    kinds = {type(m) for m in net.modules()} & {ChannelLayerNorm2d, torch.nn.BatchNorm2d, BatchRenorm2d}
    assert kinds == ({norm_type} if norm_type else set())
    loss = p.get_parsed_content("loss")
    if scheme is None:
        assert isinstance(loss, DiceLoss)
    else:
        assert isinstance(loss, ClassWeightedCrossEntropyLoss) and loss.scheme == scheme
    assert p["batch_size"] == batch


def test_class_weights_step_and_what_the_training_reads(tmp_path, capsys):
    """The documented command writes class_weights.json next to the datalist; train.json's loss uses the cube root of
    the balanced weights, computed here from the label files by hand."""
    datalist = _tiny_datalist(tmp_path)
    p = parse(TRAIN, datalist=str(datalist))
    loss = p.get_parsed_content("loss")
    with pytest.raises(FileNotFoundError, match="python -m common.data.class_weights"):
        loss.class_weights()  # before the step: the error says which command to run
    class_weights_main([str(datalist), "--n_classes", "12"])
    assert "attenuated" in capsys.readouterr().out
    entries = json.loads(datalist.read_text(encoding="utf-8"))["training"]
    labels = [np.asarray(nib.load(datalist.parent / e["label"]).dataobj) for e in entries]
    counts = np.bincount(np.concatenate([x.ravel() for x in labels]).astype(np.int64), minlength=12)
    assert (counts > 0).all(), counts  # every structure is present in the phantom training labels
    balanced = counts.sum() / (12 * counts)
    np.testing.assert_allclose(loss.class_weights(), np.cbrt(balanced), rtol=1e-9)
    model2 = parse(TRAIN, str(VARIANTS / "model2_layer_norm_balanced.json"), datalist=str(datalist))
    np.testing.assert_allclose(model2.get_parsed_content("loss").class_weights(), balanced, rtol=1e-9)


def test_demo_switches_to_the_enlarged_ventricle_test_set(tmp_path):
    """The demo's secondary test set (the paper's iNPH set): heads with enlarged ventricles, chosen by a switch that
    arrives from the command line as text."""
    small = {"dataset_dir": str(tmp_path / "phantom"), "phantom_n_train": 1, "phantom_n_validation": 0}
    chosen = {}
    for value in ("false", "true", False):
        p = parse(TRAIN, DEMO, phantom_enlarged_ventricles=value, **small)
        chosen[value] = Path(p.get_parsed_content("datalist"))
    assert chosen["false"] == chosen[False] == tmp_path / "phantom" / "dataset.json"
    assert chosen["true"] == tmp_path / "phantom_enlarged_ventricles" / "dataset.json"
    test = json.loads(chosen["true"].read_text(encoding="utf-8"))["test"]
    normal = json.loads(chosen["false"].read_text(encoding="utf-8"))["test"]
    assert len(test) == 3 and all(case["enlarged_ventricles"] for case in test)
    assert not any(case["enlarged_ventricles"] for case in normal)
    # the enlarged ventricles are about three times the normal ones (the phantom's iNPH-like anatomy)
    ratio = np.mean([c["ventricle_volume_ml"] for c in test]) / np.mean([c["ventricle_volume_ml"] for c in normal])
    assert ratio > 2


# ---------------------------------------------------------------------------------------------- end to end

TINY = {"num_epochs": 20, "slices_per_volume": 24, "num_workers": 0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Demo's code path on small phantom heads (96 x 96 x 20 at 2.4 x 2.4 x 10 mm): the class-weights step, then
    training through ``monai.bundle`` in this process."""
    root = tmp_path_factory.mktemp("head_ct")
    datalist = make_dataset(
        "head_ct_neuroanatomy", root / "data", n_cases=6, seed=1, n_validation=1, n_test=2, dicom=True,
        shape=SHAPE, spacing=SPACING,
    )  # fmt: skip
    class_weights_main([str(datalist), "--n_classes", "12"])
    common = {"datalist": str(datalist), "ckpt_dir": str(root / "models"), "output_dir": str(root / "eval"), **TINY}
    common["class_weights_file"] = str(datalist.parent / "class_weights.json")
    metrics = train_in_process([TRAIN, DEMO], LOGGING, common)
    return root, datalist, common, metrics


def _summary(folder: Path, name: str) -> dict:
    return json.loads((folder / f"test_{name}_summary.json").read_text(encoding="utf-8"))["summary"]


@pytest.mark.slow
def test_validation_monitors_loss_and_soft_dice(trained):
    _, _, _, metrics = trained
    assert 0 < metrics["val_loss"] < 5 and 0 < metrics["val_soft_dice"] < 1
    assert {f"val_soft_dice_per_class/{s}" for s in STRUCTURES} <= set(metrics)


@pytest.mark.slow
def test_evaluate_learns_well_above_an_untrained_network(trained):
    """Tables 2-3's measures (Dice, |volume difference| in cm³) per structure, Fig. 3 and Fig. 5 PNGs."""
    root, _, common, _ = trained
    common = {**common, "ckpt_file": str(root / "models" / "model_final.pt")}
    bundle_run(run_id="run", config_file=[TRAIN, EVALUATE, DEMO], logging_file=LOGGING, **common)
    dice, mvd = _summary(root / "eval", "val_dice"), _summary(root / "eval", "val_mvd")
    chance_dir = evaluate_untrained(root, [TRAIN, EVALUATE, DEMO], LOGGING, common, [TRAIN, DEMO])
    chance, chance_mvd = _summary(chance_dir, "val_dice"), _summary(chance_dir, "val_mvd")
    print({s: round(dice[s]["avg"], 3) for s in STRUCTURES}, "untrained", chance["Total Avg."]["avg"])
    assert set(STRUCTURES) <= set(dice) and set(STRUCTURES) <= set(mvd)
    assert dice["brainstem and cerebrum"]["avg"] > 0.8 > chance["brainstem and cerebrum"]["avg"] + 0.2
    assert dice["Total Avg."]["avg"] > chance["Total Avg."]["avg"] + 0.1, (dice["Total Avg."], chance["Total Avg."])
    # cm³ (phantom at 2.4 x 2.4 x 10 mm): the short demo still calls part of the cerebellum cerebrum (~300 cm³ of
    # ~1000 on a 2-core AMD EPYC), the untrained network misses by ~1100 cm³ there and ~1000 cm³ per structure
    assert 0 <= mvd["brainstem and cerebrum"]["avg"] < 0.5 * chance_mvd["brainstem and cerebrum"]["avg"]
    assert 0 <= mvd["Total Avg."]["avg"] < 0.2 * chance_mvd["Total Avg."]["avg"]
    for name in ("test_overlays.png", "test_confusion_matrix.png"):
        assert (root / "eval" / name).stat().st_size > 10_000, name
    rows = (root / "eval" / "test_val_dice_per_case.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 3  # the header and the two test heads


@pytest.mark.slow
def test_consensus_reference_skips_indeterminate_voxels(trained, tmp_path):
    """Three observers -> majority-vote consensus with 255 where all differ; the evaluation scores only the other
    voxels: its per-case Dice equals a numpy Dice over the determinate voxels of the written label map."""
    root, datalist, common, _ = trained
    entry = json.loads(Path(datalist).read_text(encoding="utf-8"))["test"][0]
    ref_img = nib.load(Path(datalist).parent / entry["label"])
    ref = np.asarray(ref_img.dataobj).astype(np.uint8)
    rng = np.random.default_rng(0)
    observers = []
    for k in range(3):  # each observer relabels a different random 10 % of the voxels
        obs = ref.copy()
        flip = rng.random(ref.shape) < 0.1
        obs[flip] = (ref[flip] + 1 + k) % 12
        observers.append(tmp_path / f"observer{k}.nii.gz")
        nib.save(nib.Nifti1Image(obs, ref_img.affine), observers[-1])
    consensus = write_consensus(observers, tmp_path / "consensus.nii.gz")
    cons = np.asarray(nib.load(consensus).dataobj)
    # all three differ where at least two relabelled a voxel: 3 x 0.1² x 0.9 + 0.1³ = 2.8 % of the voxels
    assert 0.02 < (cons == 255).mean() < 0.036
    listing = {"test": [{"image": str(Path(datalist).parent / entry["image"]), "label": str(consensus)}]}
    (tmp_path / "consensus.json").write_text(json.dumps(listing))
    out = tmp_path / "eval"
    overrides = {**common, "datalist": str(tmp_path / "consensus.json"), "output_dir": str(out)}
    overrides["ckpt_file"] = str(root / "models" / "model_final.pt")
    bundle_run(run_id="run", config_file=[TRAIN, EVALUATE, DEMO], logging_file=LOGGING, **overrides)
    bundle_run(run_id="run", config_file=[INFER, DEMO], logging_file=LOGGING, **{**overrides, "input": str(tmp_path /
               "consensus.json"), "output_dir": str(tmp_path / "seg")})  # fmt: skip
    (seg_file,) = (tmp_path / "seg").glob("*_seg.nii.gz")
    seg = np.asarray(nib.load(seg_file).dataobj)
    keep = cons != 255
    with open(out / "test_val_dice_per_case.csv", newline="", encoding="utf-8") as f:
        (row,) = list(csv.DictReader(f))
    for c, name in ((1, "brainstem and cerebrum"), (11, "ventricular system")):
        p, r = (seg == c) & keep, (cons == c) & keep
        expected = 2 * (p & r).sum() / (p.sum() + r.sum())
        assert float(row[name]) == pytest.approx(expected, abs=1e-4), name


@pytest.mark.slow
def test_infer_nifti_and_lps_dicom_keep_the_input_geometry(trained):
    """Slice-wise inference writes a 3D label map on the input's grid, from NIfTI (RAS) and from an axial DICOM
    series (LPS) of the same head alike."""
    root, datalist, common, _ = trained
    common = {**common, "ckpt_file": str(root / "models" / "model_final.pt")}
    by_name = {}
    for case, image, reference, seg in infer_test_cases(root, datalist, common, [INFER, DEMO], LOGGING):
        assert seg.shape == image.shape and np.allclose(seg.affine, image.affine, atol=1e-4)
        labels = np.asarray(seg.dataobj)
        assert set(np.unique(labels).tolist()) <= set(range(12))
        p, r = labels == 1, reference == 1
        assert 2 * (p & r).sum() / (p.sum() + r.sum()) > 0.7, case["image"]
        by_name[Path(case["image"]).name.replace(".nii.gz", "")] = seg
    from_dicom, reference = infer_dicom_test_case(root, datalist, common, [INFER, DEMO], LOGGING, by_name)
    p, r = from_dicom == 1, reference == 1
    assert 2 * (p & r).sum() / (p.sum() + r.sum()) > 0.7
