"""Facts and an end-to-end run of bundles/brain_ctp_tissue_segmentation (van de Leemput et al. 2019)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.bundle import run as bundle_run

from common.data.sampling import ClassBalancedDataset
from common.inferers.valid_tiling import ValidTilingInferer
from common.losses.masked_cross_entropy import MaskedCrossEntropyWithWeightDecay
from common.metrics.sparse_measures import annotated_sections
from common.networks.valid_unet import ValidConvUNet
from common.phantoms import make_dataset
from common.phantoms.brain_ctp import BRAIN_CTP_LABELS
from common.transforms.subvolume import RandSubvolumeAugmentd
from common.visualize import label_colour
from tests.common.test_visualize import overlay_panels, png_pixels
from tests.conftest import evaluate_untrained, infer_test_cases
from tests.conftest import parse_configs as parse

BUNDLE = Path("bundles/brain_ctp_tissue_segmentation")
CONFIGS = BUNDLE / "configs"
TRAIN, EVALUATE, INFER, DEMO = (
    str(CONFIGS / f) for f in ("train.json", "evaluate.json", "inference.json", "demo.json")
)
LOGGING = str(CONFIGS / "logging.conf")
VARIANTS = CONFIGS / "variants"
TISSUES = ["cerebrospinal fluid", "white matter", "grey matter", "vessel"]


# ---------------------------------------------------------------------------------------------- paper facts


def test_defaults_follow_the_paper():
    """Section II: network, loss, sampling, augmentation, optimizer and schedule, pre-processing, inference."""
    p = parse(TRAIN)
    net = p.get_parsed_content("network_def")
    assert isinstance(net, ValidConvUNet)
    assert sum(x.numel() for x in net.parameters()) == 5_853_092  # stated and explained in the model card
    assert net.in_channels == 19 and net.out_channels == 4
    assert sum(isinstance(m, torch.nn.Conv3d) for m in net.modules()) == 15
    assert sum(isinstance(m, torch.nn.LeakyReLU) and m.negative_slope == pytest.approx(1 / 3) for m in net.modules())
    assert all(pair.shortcut for pair in [*net.encoder, net.bottom, *net.decoder])
    assert [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)] == [0.5]  # before the coarsest convs
    # II-B: 124^3 sub-volumes, batch 2, 60k sub-volumes, SGD Nesterov 0.9, lr 0.1 / 10 after every 20k sub-volumes
    assert p["patch_size"] == [124, 124, 124] and p["batch_size"] == 2
    assert p.get_parsed_content("num_iterations") == 30_000
    opt = p.get_parsed_content("optimizer")
    assert isinstance(opt, torch.optim.SGD)
    assert opt.defaults["lr"] == 0.1 and opt.defaults["momentum"] == 0.9 and opt.defaults["nesterov"]
    sched = p.get_parsed_content("lr_scheduler")
    assert sched.step_size == 10_000 and sched.gamma == 0.1  # iterations of 2 sub-volumes
    trainer_epochs = p.get_parsed_content("train#trainer#max_epochs")
    assert trainer_epochs * p.get_parsed_content("epoch_length") * 2 == 60_000
    assert p.get_parsed_content("epoch_length") * 2 == 400  # validation Dice every 400 sub-volumes
    # loss: masked cross-entropy + 1e-6 L1 + 1e-5 L2
    loss = p.get_parsed_content("loss")
    assert isinstance(loss, MaskedCrossEntropyWithWeightDecay) and (loss.l1, loss.l2) == (1e-6, 1e-5)
    # class-balanced sampling: every 400 sub-volumes (one epoch) hold 100 per class
    assert p["train#dataset#_target_"].endswith("ClassBalancedDataset")
    assert p.get_parsed_content("train#dataset#num_samples") == 400
    # one of identity, sagittal mirroring, rotation U(-8, 8) deg, scaling U(1.01, 1.25), elastic N(0, 6) voxels
    aug = p.get_parsed_content("train#random_transforms")[0]
    assert isinstance(aug, RandSubvolumeAugmentd)
    assert list(aug.augmentations) == ["identity", "mirror", "rotate", "scale", "elastic"]
    assert aug.rotate_degrees == (8.0, 8.0, 8.0) and tuple(aug.scale_range) == (1.01, 1.25) and aug.elastic_sigma == 6
    assert list(aug.spatial_size) == [124] * 3 and list(aug.label_size) == [36] * 3
    # pre-processing: [-50, 400] HU to [0, 1]; registration available but off (offline step)
    assert p["hu_window"] == [-50, 400] and p["register_time_points"] is False
    # inference: valid tiling with windows larger than the training sub-volumes
    inferer = p.get_parsed_content("validate#inferer")
    assert isinstance(inferer, ValidTilingInferer) and list(inferer.roi_size) == [180] * 3
    assert p["size_difference"] == 124 - 36


def test_restated_values_agree():
    """Values several configs state: the network's size difference, the class names, the phantom's labels."""
    for overlays in ([], [DEMO]):
        p = parse(TRAIN, *overlays)
        net = p.get_parsed_content("network_def")
        n = p["patch_size"][0]
        assert net.valid_input_size(n) and n - net.output_size(n) == p["size_difference"] == 88
        assert net.valid_input_size(p["tile_roi_size"][0])
    infer = parse(INFER)
    for key in ("num_channels", "num_classes", "hu_window", "size_difference", "tile_roi_size", "network_def"):
        assert infer[key] == parse(TRAIN)[key], key
    p = parse(TRAIN)
    assert list(p["class_names"].values()) == TISSUES
    assert {int(k) for k in p["class_names"]} == set(BRAIN_CTP_LABELS) - {0}
    meta = json.loads((CONFIGS / "metadata.json").read_text(encoding="utf-8"))
    channel_def = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert channel_def == {str(k): v for k, v in p["class_names"].items()}
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == 19


@pytest.mark.parametrize(
    ("variant", "act", "shortcuts", "init"),
    [
        ("unet3d_baseline", torch.nn.ReLU, False, "xavier"),
        ("ablation_xavier", torch.nn.LeakyReLU, True, "xavier"),
        ("ablation_no_short_shortcuts", torch.nn.LeakyReLU, False, "he"),
        ("ablation_relu", torch.nn.ReLU, True, "he"),
    ],
)
def test_variant_overlays_build_the_compared_networks(variant, act, shortcuts, init):
    """Section IV-B's 3D U-Net baseline and Table 5's ablations: one change each (two more for the baseline)."""
    torch.manual_seed(0)
    net = parse(TRAIN, str(VARIANTS / f"{variant}.json")).get_parsed_content("network_def")
    acts = [m for m in net.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.LeakyReLU))]
    assert len(acts) == 14 and all(type(m) is act for m in acts)
    assert all(pair.shortcut is shortcuts for pair in [*net.encoder, net.bottom, *net.decoder])
    # Eq. 4: N(0, sqrt(9 / (5 fan_in))) = 0.0826 for the first convolution (19 x 27 inputs); Xavier uniform:
    # U(-b, b) with b = sqrt(6 / (513 + 32 * 27)) = 0.0660, std b / sqrt(3) = 0.0381
    std = float(net.encoder[0].conv_0.conv.weight.detach().std())
    expected = math.sqrt(9 / (5 * 19 * 27)) if init == "he" else math.sqrt(6 / (19 * 27 + 32 * 27)) / math.sqrt(3)
    assert std == pytest.approx(expected, rel=0.05)
    # no short shortcuts adds or removes no parameter (the sums have none)
    assert sum(x.numel() for x in net.parameters()) == 5_853_092
    # everything else as the default: the loss, the optimizer, the sampling, the sub-volumes
    p = parse(TRAIN, str(VARIANTS / f"{variant}.json"))
    assert (
        p["patch_size"] == [124] * 3
        and p["learning_rate"] == 0.1
        and p["augmentations"] == parse(TRAIN)["augmentations"]
    )


def test_no_augmentation_overlay():
    p = parse(TRAIN, str(VARIANTS / "no_augmentation.json"))
    assert list(p.get_parsed_content("train#random_transforms")[0].augmentations) == ["identity"]


def test_class_balanced_sampling_in_the_config(tmp_path):
    """Every 400 sub-volumes of one epoch hold 100 centred on each class, on annotated cranial-cavity voxels."""
    p = parse(TRAIN)
    data = [{"label": np.zeros((1, 4, 4, 4), np.uint8)}]
    data[0]["label"][0, 1, :, :] = [[1, 2, 3, 4]] * 4
    dataset = ClassBalancedDataset(
        data,
        num_samples=p.get_parsed_content("train#dataset#num_samples"),
        classes=p.get_parsed_content("train#dataset#classes"),
    )
    counts = np.bincount(
        [int(data[0]["label"][0][tuple(dataset[i]["center"])]) for i in range(len(dataset))], minlength=5
    )
    assert counts.tolist() == [0, 100, 100, 100, 100]


# ---------------------------------------------------------------------------------------------- end to end

# small and fast, the demo's code path: the demo network and phantom (3 annotated sections per case), 40 iterations
TINY = {
    "num_subvolumes": 80,  # 40 iterations of 2 x 124^3 sub-volumes (36^3 outputs)
    "subvolumes_per_epoch": 40,
    "lr_step_subvolumes": 1000,  # no decay within the short run
    "val_interval": 1,
    "num_workers": 0,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train through ``monai.bundle`` in this process on 4 phantom heads; return the run's folders and settings."""
    root = tmp_path_factory.mktemp("brain_ctp")
    datalist = make_dataset(
        "brain_ctp_tissue", root / "data", n_cases=4, seed=3, n_validation=1, n_test=2, n_sections=[3, 3]
    )
    common = {"datalist": str(datalist), "ckpt_dir": str(root / "models"), "output_dir": str(root / "eval"), **TINY}
    wf = ConfigWorkflow(config_file=[TRAIN, DEMO], logging_file=LOGGING, workflow_type="train", **common)
    wf.initialize()
    wf.run()
    history = wf.parser.get_parsed_content("validate#evaluator").state.metrics
    wf.finalize()
    return root, datalist, common, history


def _summary(folder: Path, metric: str) -> dict:
    return json.loads((folder / f"test_{metric}_summary.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_evaluate_learns_well_above_an_untrained_network(trained):
    """DSC, CMD, AVD and MVD per class on the annotated voxels of held-out phantoms, against random weights."""
    root, datalist, common, _ = trained
    common = {**common, "ckpt_file": str(root / "models" / "model_final.pt")}
    bundle_run(run_id="run", config_file=[TRAIN, EVALUATE, DEMO], logging_file=LOGGING, **common)
    chance_dir = evaluate_untrained(root, [TRAIN, EVALUATE, DEMO], LOGGING, common, [TRAIN, DEMO])
    trained_dice, chance_dice = (_summary(d, "val_mean_dice") for d in (root / "eval", chance_dir))
    assert trained_dice["n_cases"] == 2 and set(TISSUES) <= set(trained_dice["summary"])
    mean, chance = trained_dice["summary"]["Total Avg."]["avg"], chance_dice["summary"]["Total Avg."]["avg"]
    print(f"phantom test mean Dice: trained {mean:.3f}, untrained {chance:.3f}")
    # measured: 0.359 against 0.024 on the machine of issue 8, 0.287 against 0.024 on this session's (2 threads; oneDNN
    # picks CPU-specific kernels, so a 40-iteration run ends elsewhere on another CPU)
    assert mean > chance + 0.2 and mean > 0.25, (mean, chance)
    # the tissues with a distinct time course are found: CSF (no enhancement) and WM
    for tissue in ("cerebrospinal fluid", "white matter"):
        assert trained_dice["summary"][tissue]["avg"] > 0.4, (tissue, trained_dice["summary"][tissue])
    # the other measures are there, per class, with their units; AVD in % and MVD in mm3 agree in sign and size
    for metric in ("val_cmd", "val_avd", "val_mvd"):
        rows = _summary(root / "eval", metric)["summary"]
        assert set(TISSUES) <= set(rows), metric
    # the Fig. 5 overlays: temporal average, reference and prediction on each annotated cross-section
    listing = json.loads(Path(datalist).read_text(encoding="utf-8"))
    labels = [np.asarray(nib.load(Path(datalist).parent / c["label"]).dataobj) for c in listing["test"]]
    n_sections = sum(len(annotated_sections(label)) for label in labels)
    colours = [np.array(label_colour(v)[:3]) for v in range(1, 5)]
    panels = overlay_panels(png_pixels(root / "eval" / "test_overlays.png"), colours)
    assert [len(row) for row in panels] == [3] * n_sections


def _annotated_dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Mean Dice over the classes annotated in the reference, on the annotated voxels (computed here, by hand)."""
    scores = []
    for tissue in range(1, 5):
        p, r = (prediction == tissue) & (reference > 0), reference == tissue
        if r.any():
            scores.append(2 * np.logical_and(p, r).sum() / (p.sum() + r.sum()))
    return float(np.mean(scores))


@pytest.mark.slow
def test_infer_writes_label_maps_on_the_input_grid(trained):
    root, datalist, common, _ = trained
    for case, image, reference, seg in infer_test_cases(root, datalist, common, [INFER, DEMO], LOGGING):
        assert seg.shape == image.shape[:3] and np.allclose(seg.affine, image.affine, atol=1e-4)
        labels = np.asarray(seg.dataobj)
        assert set(np.unique(labels).tolist()) <= {1, 2, 3, 4}  # every voxel gets a tissue (no "not annotated")
        dice = _annotated_dice(labels, reference)
        print(f"{case['image']}: annotated Dice {dice:.3f}")
        assert dice > 0.2, (case["image"], dice)
