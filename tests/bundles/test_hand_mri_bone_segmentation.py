"""Facts and an end-to-end run of bundles/hand_mri_bone_segmentation (Kayalıbay et al. 2017, hand MRI)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import run as bundle_run
from monai.data import MetaTensor
from monai.handlers import EarlyStopHandler
from monai.inferers import SimpleInferer
from monai.losses import DiceLoss
from monai.transforms import Identityd, OneOf, RandAxisFlipd, RandRotated

from common.losses.class_weighted_ce import ClassWeightedCrossEntropyLoss
from common.networks.kayalibay_unet import KayalibayUNet3D
from common.phantoms import make_dataset
from common.phantoms.hand_mri import generate_hand_mri
from common.transforms.foreground import SlicesWithSignal
from tests.conftest import evaluate_untrained, infer_test_cases, train_in_process
from tests.conftest import parse_configs as parse

BUNDLE = Path("bundles/hand_mri_bone_segmentation")
CONFIGS = BUNDLE / "configs"
TRAIN, EVALUATE, INFER, DEMO = (
    str(CONFIGS / f) for f in ("train.json", "evaluate.json", "inference.json", "demo.json")
)
LOGGING = str(CONFIGS / "logging.conf")
VARIANTS = CONFIGS / "variants"
BONES = ["metacarpal", "proximal phalanx", "middle phalanx", "distal phalanx"]
SMALL = {"shape": [40, 40, 24], "spacing": [6.0, 6.0, 5.0]}  # the tests' phantom hands (the demo's: 48 x 48 x 32)


def _datalist(tmp_path: Path, n_cases: int = 3, **kwargs) -> Path:
    return make_dataset("hand_mri_bone", tmp_path / "data", n_cases=n_cases, seed=0, n_validation=1, **SMALL, **kwargs)


# ---------------------------------------------------------------------------------------------- paper facts


def test_defaults_follow_the_paper(tmp_path):
    """Section 3.1-3.2 and Appendix A: network, loss, optimizer, batch, schedule, early stop, pre-processing."""
    p = parse(TRAIN, datalist=str(_datalist(tmp_path)))
    net = p.get_parsed_content("network_def")
    assert isinstance(net, KayalibayUNet3D) and (net.merge, net.multiscale) == ("concat", True)
    assert sum(x.numel() for x in net.parameters()) == 409_424
    assert all(m.momentum == 0.5 for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d))  # alpha = 0.5
    # every parameter from N(0, 0.01) (section 3.2.1, the authors' train.py)
    flat = torch.cat([q.detach().flatten() for q in net.parameters()])
    assert abs(float(flat.std()) - 0.01) < 0.001
    # the Jaccard distance of Eq. 3 per class (background included), summed
    loss = p.get_parsed_content("loss")
    assert isinstance(loss, DiceLoss) and loss.jaccard and loss.squared_pred and loss.include_background
    assert (loss.smooth_nr, loss.reduction) == (0.0, "sum")
    # Adam 5e-5 with climin's decay_mom1 = 0.1, decay_mom2 = 0.001, i.e. PyTorch's betas 1 - 0.1 and 1 - 0.001
    opt = p.get_parsed_content("optimizer")
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["lr"] == 5e-5
    assert opt.defaults["betas"] == pytest.approx((1 - 0.1, 1 - 0.001)) and opt.defaults["eps"] == 1e-8
    # batch 1, every training volume once per epoch, 600 epochs or 100 without a change of the validation loss
    assert p["batch_size"] == 1 and p.get_parsed_content("epoch_length") == 3
    assert p.get_parsed_content("train#trainer#max_epochs") == 600
    stop = p.get_parsed_content("validate#early_stopping")
    assert isinstance(stop, EarlyStopHandler) and stop.patience == 100 and stop.min_delta == 0.0
    # down-sampled by 4 with linear interpolation, the empty slices cropped in z, whole volumes through the network
    names = [type(t).__name__ for t in p.get_parsed_content("load_transforms")]
    assert names[-4:] == ["Zoomd", "CropForegroundd", "NormalizeIntensityd", "DivisiblePadd"], names
    zoom = p.get_parsed_content("load_transforms")[-4]
    assert zoom.zoomer.zoom == 0.25 and list(zoom.mode) == ["trilinear", "nearest"]
    crop = p.get_parsed_content("load_transforms")[-3]
    assert crop.cropper.select_fn == SlicesWithSignal(0.1, 2)
    assert isinstance(p.get_parsed_content("validate#inferer"), SimpleInferer)
    assert isinstance(parse(INFER).get_parsed_content("inferer"), SimpleInferer)


def test_augmentation_is_one_of_identity_flip_or_rotation_in_a_random_plane():
    """Section 3.2.1: "one of three transformations": identity, a flip along a random axis, or a rotation by a
    random angle in two randomly selected axes."""
    (choice,) = parse(TRAIN).get_parsed_content("train#random_transforms")
    assert isinstance(choice, OneOf) and list(choice.weights) == pytest.approx([1 / 3] * 3)
    identity, flip, rotation = choice.transforms
    assert isinstance(identity, Identityd) and isinstance(flip, RandAxisFlipd) and flip.prob == 1.0
    assert isinstance(rotation, OneOf) and len(rotation.transforms) == 3
    planes = []
    for r in rotation.transforms:
        assert isinstance(r, RandRotated) and r.prob == 1.0
        ranges = [r.rand_rotate.range_x, r.rand_rotate.range_y, r.rand_rotate.range_z]
        planes.append([tuple(map(float, x)) != (0.0, 0.0) for x in ranges])
        assert max(abs(v) for x in ranges for v in x) == pytest.approx(math.pi)  # any angle
    assert planes == [[True, False, False], [False, True, False], [False, False, True]]


def test_each_augmentation_keeps_image_and_label_aligned():
    """Draw every kind of augmentation on a phantom hand whose image marks its bones: after the transform the bones
    of the label still sit where the image marks them (nearest for labels, linear for the image)."""
    case = generate_hand_mri(np.random.default_rng(0), **SMALL)
    label = MetaTensor(torch.as_tensor(case["label"][None].astype(np.float32)))
    image = MetaTensor((label > 0).float() * 100.0)  # the image is the bone mask, so alignment is measurable
    (choice,) = parse(TRAIN).get_parsed_content("train#random_transforms")
    seen = set()
    for seed in range(16):
        choice.set_random_state(seed)
        out = choice({"image": image.clone(), "label": label.clone()})
        seen.add(int(out["image"].applied_operations[-1]["extra_info"]["index"]))  # OneOf's choice
        bones = np.asarray(out["label"][0]) > 0
        marked = np.asarray(out["image"][0]) > 50
        dice = 2 * (bones & marked).sum() / (bones.sum() + marked.sum())
        assert dice > 0.85, (seed, dice)
        assert set(np.unique(np.asarray(out["label"])).tolist()) <= {0, 1, 2, 3, 4}
    assert seen == {0, 1, 2}  # identity, flips and rotations were all drawn


@pytest.mark.parametrize(
    ("variant", "merge", "multiscale", "loss_type"),
    [
        (None, "concat", True, DiceLoss),
        ("no_long_skips", "none", True, DiceLoss),
        ("single_map", "concat", False, DiceLoss),
        ("summation", "sum", True, DiceLoss),
        ("cross_entropy", "concat", True, ClassWeightedCrossEntropyLoss),
    ],
)
def test_section_4_1_comparisons_are_overlays(variant, merge, multiscale, loss_type):
    files = [TRAIN] + ([str(VARIANTS / f"{variant}.json")] if variant else [])
    p = parse(*files)
    net = p.get_parsed_content("network_def")
    assert (net.merge, net.multiscale) == (merge, multiscale)
    assert isinstance(p.get_parsed_content("loss"), loss_type)
    infer = parse(INFER, *files[1:]).get_parsed_content("network_def")
    assert (infer.merge, infer.multiscale) == (merge, multiscale)


def test_fold_switch_splits_the_pooled_cases(tmp_path):
    datalist = make_dataset("hand_mri_bone", tmp_path / "data", n_cases=4, seed=0, n_validation=1, n_test=1, **SMALL)
    p = parse(TRAIN, datalist=str(datalist), fold=2, n_folds=3)
    names = {k: [Path(e["image"]).name for e in p.get_parsed_content(k)] for k in ("train_data", "val_data")}
    # pooled: 4 training, 1 validation, 1 test case (numbers 000-005); blocks of 2; fold 2 tests block 2 and
    # validates on block 0, so it trains on block 1
    assert names == {
        "train_data": ["hand_mri_bone_002.nii.gz", "hand_mri_bone_003.nii.gz"],
        "val_data": ["hand_mri_bone_000.nii.gz", "hand_mri_bone_001.nii.gz"],
    }
    evaluation = parse(TRAIN, EVALUATE, datalist=str(datalist), fold=2, n_folds=3)
    tested = [Path(e["image"]).name for e in evaluation.get_parsed_content("val_data")]
    assert tested == ["hand_mri_bone_004.nii.gz", "hand_mri_bone_005.nii.gz"]


# ---------------------------------------------------------------------------------------------- end to end

TINY = {"num_epochs": 25, "num_workers": 0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The demo's code path on small phantom hands (40 x 40 x 24 at 6 x 6 x 5 mm), trained in this process."""
    root = tmp_path_factory.mktemp("hand")
    datalist = make_dataset("hand_mri_bone", root / "data", n_cases=8, seed=1, n_validation=1, n_test=2, **SMALL)
    common = {"datalist": str(datalist), "ckpt_dir": str(root / "models"), "output_dir": str(root / "eval"), **TINY}
    metrics = train_in_process([TRAIN, DEMO], LOGGING, common)
    return root, datalist, common, metrics


def _summary(folder: Path) -> dict:
    return json.loads((folder / "test_val_mean_dice_summary.json").read_text(encoding="utf-8"))["summary"]


@pytest.mark.slow
def test_evaluate_dice_per_bone_well_above_an_untrained_network(trained):
    root, _, common, metrics = trained
    assert 0 < metrics["val_loss"] < 5  # the Jaccard distance summed over 5 classes
    common = {**common, "ckpt_file": str(root / "models" / "model_final.pt")}
    bundle_run(run_id="run", config_file=[TRAIN, EVALUATE, DEMO], logging_file=LOGGING, **common)
    dice = _summary(root / "eval")
    chance = _summary(evaluate_untrained(root, [TRAIN, EVALUATE, DEMO], LOGGING, common, [TRAIN, DEMO]))
    print({b: round(dice[b]["avg"], 3) for b in BONES}, "untrained", {b: round(chance[b]["avg"], 3) for b in BONES})
    assert dice["metacarpal"]["avg"] > 0.5 and dice["metacarpal"]["avg"] > chance["metacarpal"]["avg"] + 0.3
    assert dice["Total Avg."]["avg"] > chance["Total Avg."]["avg"] + 0.2, (dice["Total Avg."], chance["Total Avg."])
    for name in ("test_val_mean_dice_boxplot.png", "test_overlays.png"):
        assert (root / "eval" / name).stat().st_size > 10_000, name


@pytest.mark.slow
def test_infer_restores_the_input_geometry_also_from_a_finer_grid(trained, tmp_path):
    """The label map has the input's shape and affine; a hand at twice the resolution, zoomed by 1/2 to the
    network's scale as the paper's 1/4 is applied to 480 x 480 x 280 volumes, comes back on its own grid."""
    root, datalist, common, _ = trained
    for case, image, reference, seg in infer_test_cases(root, datalist, common, [INFER, DEMO], LOGGING):
        assert seg.shape == image.shape and np.allclose(seg.affine, image.affine, atol=1e-4)
        labels = np.asarray(seg.dataobj)
        p, r = labels == 1, reference == 1
        assert 2 * (p & r).sum() / (p.sum() + r.sum()) > 0.5, case["image"]
    fine = make_dataset("hand_mri_bone", tmp_path / "fine", n_cases=1, seed=5, n_test=1, shape=[80, 80, 48],
                        spacing=[3.0, 3.0, 2.5])  # fmt: skip
    entry = json.loads(fine.read_text(encoding="utf-8"))["test"][0]
    out = tmp_path / "seg"
    overrides = {**common, "ckpt_file": str(root / "models" / "model_final.pt"), "output_dir": str(out)}
    bundle_run(run_id="run", config_file=[INFER, DEMO], logging_file=LOGGING, **overrides,
               input=str(fine.parent / entry["image"]), zoom=0.5)  # fmt: skip
    (seg_file,) = out.glob("*_seg.nii.gz")
    seg, image = nib.load(seg_file), nib.load(fine.parent / entry["image"])
    assert seg.shape == image.shape == (80, 80, 48) and np.allclose(seg.affine, image.affine, atol=1e-4)
    labels = np.asarray(seg.dataobj)
    reference = np.asarray(nib.load(fine.parent / entry["label"]).dataobj)
    p, r = labels == 1, reference == 1
    assert 2 * (p & r).sum() / (p.sum() + r.sum()) > 0.4
