"""Facts and an end-to-end run of bundles/brain_tumor_mri_segmentation (Kayalıbay et al. 2017, BraTS)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import run as bundle_run
from monai.data import MetaTensor
from monai.losses import DiceLoss
from monai.transforms import MeanEnsembled, NormalizeIntensityd, ResizeWithPadOrCropd, Zoomd

from common.data import BundleInputError, find_bundle_input_error
from common.networks.kayalibay_unet import KayalibayUNet3D
from common.phantoms import make_dataset
from tests.conftest import evaluate_untrained
from tests.conftest import parse_configs as parse

BUNDLE = Path("bundles/brain_tumor_mri_segmentation")
CONFIGS = BUNDLE / "configs"
TRAIN, EVALUATE, INFER, DEMO = (
    str(CONFIGS / f) for f in ("train.json", "evaluate.json", "inference.json", "demo.json")
)
LOGGING = str(CONFIGS / "logging.conf")
VARIANTS = CONFIGS / "variants"
REGIONS = ["whole", "core", "enhancing"]
SMALL = {"shape": [40, 36, 32], "spacing": [4.0, 4.0, 4.0], "skull_stripped": True}  # the demo's phantom heads
ROI = {"roi_size": [40, 40, 32]}


def _datalist(tmp_path: Path, n_cases: int = 3, **kwargs) -> Path:
    return make_dataset("brats_mri", tmp_path / "data", n_cases=n_cases, seed=0, n_validation=1, **SMALL, **kwargs)


# ---------------------------------------------------------------------------------------------- paper facts


def test_defaults_follow_the_paper(tmp_path):
    """Sections 3.1-3.2: the hand network with 4 input channels, its loss, optimizer and augmentation; 50 epochs;
    the 160 x 144 x 128 crop round the brain, per-modality normalisation over the brain."""
    p = parse(TRAIN, datalist=str(_datalist(tmp_path)))
    net = p.get_parsed_content("network_def")
    assert isinstance(net, KayalibayUNet3D) and (net.merge, net.multiscale) == ("concat", True)
    assert sum(x.numel() for x in net.parameters()) == 410_072  # the hand network's 409,424 + 3 input channels
    loss = p.get_parsed_content("loss")
    assert isinstance(loss, DiceLoss) and loss.jaccard and loss.squared_pred and loss.reduction == "sum"
    opt = p.get_parsed_content("optimizer")
    assert opt.defaults["lr"] == 5e-5 and opt.defaults["betas"] == pytest.approx((0.9, 0.999))
    assert p.get_parsed_content("train#trainer#max_epochs") == 50 and p["batch_size"] == 1
    hand = parse("bundles/hand_mri_bone_segmentation/configs/train.json")
    assert p.get("train#random_transforms") == hand.get("train#random_transforms")  # same augmentation
    transforms = p.get_parsed_content("load_transforms")
    names = [type(t).__name__ for t in transforms]
    assert names[-5:] == ["CropForegroundd", "ResizeWithPadOrCropd", "Zoomd", "NormalizeIntensityd", "DivisiblePadd"]
    resize = next(t for t in transforms if isinstance(t, ResizeWithPadOrCropd))
    assert list(resize.padder.cropper.roi_size) == [144, 160, 128]  # x, y, z: the paper's 160 x 144 x 128
    norm = next(t for t in transforms if isinstance(t, NormalizeIntensityd))
    assert norm.normalizer.nonzero and norm.normalizer.channel_wise  # each modality over its brain voxels
    assert next(t for t in transforms if isinstance(t, Zoomd)).zoomer.zoom == 1.0
    assert p["n_folds"] == 5 and p["fold_validation"] == "split_block"


def test_preprocessing_crops_round_the_brain_and_normalises_each_modality_over_it(tmp_path):
    datalist = _datalist(tmp_path)
    p = parse(TRAIN, DEMO, datalist=str(datalist))
    out = p.get_parsed_content("validate#preprocessing")(p.get_parsed_content("val_data")[0])
    image, label = out["image"], out["label"]
    assert image.shape == (4, 40, 40, 32) and label.shape == (1, 40, 40, 32)
    brain = (image != 0).any(0)
    for c in range(4):
        values = image[c][brain]
        assert abs(float(values.mean())) < 0.05 and abs(float(values.std()) - 1) < 0.05
    # the brain is centred left-right (the healthy-brain test mirrors about the array's centre)
    xs = torch.nonzero(brain.any(-1).any(-1)).flatten().float()
    assert abs(float(xs.min() + xs.max()) / 2 - (40 - 1) / 2) <= 1.0
    assert set(torch.unique(label).tolist()) == {0, 1, 2, 3, 4}


@pytest.mark.parametrize(("scheme", "values", "expected"), [
    ("brats2015", [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]),
    ("brats2017", [0, 1, 2, 4], [0, 1, 2, 4]),
    ("brats2023", [0, 1, 2, 3], [0, 1, 2, 4]),
])  # fmt: skip
def test_label_schemes_map_onto_the_2015_numbering(scheme, values, expected):
    """Later BraTS years renumber the classes; ``label_scheme`` maps them onto the paper's (docs/README.md)."""
    p = parse(TRAIN, label_scheme=scheme)
    check = next(t for t in p.get_parsed_content("load_transforms") if type(t).__name__ == "CheckLabelValuesd")
    assert sorted(check.allowed_values) == sorted(values)
    mapper = next(t for t in p.get_parsed_content("load_transforms") if type(t).__name__ == "MapLabelValued")
    label = MetaTensor(torch.tensor(values, dtype=torch.uint8).reshape(1, -1, 1, 1))
    assert mapper({"label": label})["label"].flatten().tolist() == expected


@pytest.mark.parametrize(("variant", "channels"), [
    ("modalities_flair", [0]), ("modalities_t1", [1]), ("modalities_t1c", [2]), ("modalities_t2", [3]),
    ("modalities_flair_t1c", [0, 2]), ("modalities_flair_t1c_t2", [0, 2, 3]),
    ("modalities_all_modalities", [0, 1, 2, 3]),
])  # fmt: skip
def test_table_2_modality_subsets_are_overlays_at_half_size(tmp_path, variant, channels):
    datalist = _datalist(tmp_path, n_cases=1)
    p = parse(TRAIN, str(VARIANTS / f"{variant}.json"), datalist=str(datalist))
    net = p.get_parsed_content("network_def")
    assert next(net.parameters()).shape[1] == len(channels) == p["num_channels"]
    assert p["zoom"] == 0.5 and p["fold"] is None
    entry = p.get_parsed_content("train_data")[0]
    assert [Path(f).name[-11:-7] for f in entry["image"]] == [f"{c:04d}" for c in channels]
    out = p.get_parsed_content("validate#preprocessing")(p.get_parsed_content("val_data")[0])
    assert out["image"].shape == (len(channels), 72, 80, 64)  # the paper's 80 x 72 x 64 (x, y, z here)
    infer = parse(INFER, str(VARIANTS / f"{variant}.json"))
    assert infer["channels"] == channels and infer["num_channels"] == len(channels)


def test_fold_switch_holds_out_halves_of_one_block_and_writes_no_file(tmp_path):
    datalist = make_dataset("brats_mri", tmp_path / "data", n_cases=8, seed=0, n_validation=2, n_test=1, **SMALL)
    before = datalist.read_bytes()
    p = parse(TRAIN, datalist=str(datalist), fold=1, n_folds=5)
    got = {k: [Path(e["image"][0]).name[:13] for e in p.get_parsed_content(k)] for k in ("train_data", "val_data")}
    # 10 pooled (8 training + 2 validation; the test case is the ensemble's), blocks of 2: fold 1 holds out 2-3
    assert got["val_data"] == ["brats_mri_003"]
    assert got["train_data"] == [f"brats_mri_{i:03d}" for i in (0, 1, 4, 5, 6, 7, 8, 9)]
    tested = parse(TRAIN, EVALUATE, datalist=str(datalist), fold=1, n_folds=5).get_parsed_content("val_data")
    assert [Path(e["image"][0]).name[:13] for e in tested] == ["brats_mri_002"]
    assert parse(TRAIN, fold=1)["ckpt_dir"].endswith("fold_dir(@models_dir, @fold)")
    assert parse(TRAIN, fold=1).get_parsed_content("ckpt_dir") == str(BUNDLE / "models" / "fold1")
    assert datalist.read_bytes() == before


def test_ensemble_postprocessing_averages_the_members_probabilities():
    """Section 4.2: the five fold networks as an ensemble: the mean of their softmax probabilities, argmax-ed."""
    p = parse(TRAIN, EVALUATE, model_files=["a.pt", "b.pt", "c.pt"])
    assert p.get_parsed_content("pred_keys") == ["pred_0", "pred_1", "pred_2"]
    post = p.get_parsed_content("validate#postprocessing")
    assert any(isinstance(t, MeanEnsembled) for t in post.transforms)
    # two voxels, classes 0 and 2 only (the others at -20); logits (class 0, class 2) per member:
    # voxel 0: (4, 0), (0, 0.5), (0, 0.5): p0 = 0.982, 0.378, 0.378, mean 0.579 -> class 0 (a vote would say 2)
    # voxel 1: (10, 0), (0, 2), (0, 2): p0 = 1.000, 0.119, 0.119, mean 0.413 -> class 2 (mean logits would say 0)
    members = [((4.0, 0.0), (10.0, 0.0)), ((0.0, 0.5), (0.0, 2.0)), ((0.0, 0.5), (0.0, 2.0))]
    item = {"label": MetaTensor(torch.zeros(1, 2, 1, 1))}
    for k, voxels in enumerate(members):
        logits = torch.full((5, 2, 1, 1), -20.0)
        for v, (class0, class2) in enumerate(voxels):
            logits[0, v], logits[2, v] = class0, class2
        item[f"pred_{k}"] = logits
    out = post(item)
    assert out["pred"].argmax(0)[:, 0, 0].tolist() == [0, 2]
    single = parse(TRAIN, EVALUATE, model_files=["a.pt"])
    assert single.get_parsed_content("pred_keys") == ["pred"]
    assert not any(
        isinstance(t, MeanEnsembled) for t in single.get_parsed_content("validate#postprocessing").transforms
    )


# ---------------------------------------------------------------------------------------------- modality files


def _modality_datalist(tmp_path: Path) -> tuple[Path, dict]:
    """The phantom's first training case rewritten with one datalist key per modality (the issue's first layout)."""
    datalist = _datalist(tmp_path, n_cases=1)
    content = json.loads(datalist.read_text(encoding="utf-8"))
    entry = content["training"][0]
    case = {key: entry["image"][c] for c, key in enumerate(["flair", "t1", "t1c", "t2"])}
    case["label"] = entry["label"]
    content["training"] = [case]
    datalist.write_text(json.dumps(content), encoding="utf-8")
    return datalist, case


def test_one_file_per_modality_key_is_read_in_channel_order(tmp_path):
    datalist, case = _modality_datalist(tmp_path)
    (entry,) = parse(TRAIN, datalist=str(datalist)).get_parsed_content("train_data")
    assert [Path(f).name for f in entry["image"]] == [Path(case[k]).name for k in ("flair", "t1", "t1c", "t2")]


def _error(parser, config_id: str) -> BundleInputError:
    with pytest.raises(Exception) as info:
        parser.get_parsed_content(config_id)
    err = find_bundle_input_error(info.value)
    assert err is not None, info.value
    return err


def test_a_missing_modality_names_the_datalist_and_the_modality(tmp_path):
    datalist, _ = _modality_datalist(tmp_path)
    content = json.loads(datalist.read_text(encoding="utf-8"))
    del content["training"][0]["t2"]
    datalist.write_text(json.dumps(content), encoding="utf-8")
    err = _error(parse(TRAIN, datalist=str(datalist)), "train_data")
    assert "dataset.json" in str(err) and "'t2'" in str(err), err


@pytest.mark.parametrize("what", ["shape", "geometry", "missing"])
def test_a_modality_of_another_shape_or_geometry_names_its_file(tmp_path, what):
    datalist, case = _modality_datalist(tmp_path)
    t2 = datalist.parent / case["t2"]
    if what == "missing":
        t2.unlink()
    else:
        img = nib.load(t2)
        data, affine = np.asarray(img.dataobj), img.affine.copy()
        if what == "shape":
            data = data[:-2]
        else:
            affine[:3, 3] += 10.0  # moved by 10 mm
        nib.save(nib.Nifti1Image(data, affine), t2)
    err = _error(parse(TRAIN, datalist=str(datalist)), "train_data")
    assert t2.name in str(err), err


def test_a_4d_file_with_the_wrong_channel_count_names_it(tmp_path):
    datalist = _datalist(tmp_path, n_cases=1)
    content = json.loads(datalist.read_text(encoding="utf-8"))
    entry = content["training"][0]
    stack = np.stack([np.asarray(nib.load(datalist.parent / f).dataobj) for f in entry["image"][:3]], -1)
    four_d = datalist.parent / "three_channels.nii.gz"
    nib.save(nib.Nifti1Image(stack, nib.load(datalist.parent / entry["image"][0]).affine), four_d)
    entry["image"] = four_d.name
    datalist.write_text(json.dumps(content), encoding="utf-8")
    err = _error(parse(TRAIN, datalist=str(datalist)), "train_data")
    assert "three_channels.nii.gz" in str(err) and "3" in str(err) and "4" in str(err), err


# ---------------------------------------------------------------------------------------------- end to end

TINY = {"num_epochs": 20, "num_workers": 0, "n_folds": 2}


@pytest.fixture(scope="module")
def two_folds(tmp_path_factory):
    """Cross-validation on phantom heads: ``python -m common.cross_validation`` trains 2 folds, one process each."""
    from common.cross_validation import train_all_folds

    root = tmp_path_factory.mktemp("brats")
    datalist = make_dataset("brats_mri", root / "data", n_cases=8, seed=1, n_validation=2, n_test=3, **SMALL)
    common = {"datalist": str(datalist), "models_dir": str(root / "models"), **ROI, **TINY}
    trained = train_all_folds([TRAIN, DEMO], logging_file=LOGGING, **common)
    return root, datalist, common, trained


def _summary(folder: Path, metric: str = "val_region_dice") -> dict:
    return json.loads((folder / f"test_{metric}_summary.json").read_text(encoding="utf-8"))["summary"]


@pytest.mark.slow
def test_two_fold_cross_validation_then_the_ensemble_well_above_an_untrained_network(two_folds):
    root, datalist, common, trained = two_folds
    assert trained == [0, 1]
    content = json.loads(datalist.read_text(encoding="utf-8"))  # the split is written into the datalist
    assert [e["fold"] for e in content["training"] + content["validation"]] == [0] * 5 + [1] * 5
    for k in (0, 1):
        assert (root / "models" / f"fold{k}" / "model.pt").is_file()
        bundle_run(run_id="run", config_file=[TRAIN, EVALUATE, DEMO], logging_file=LOGGING, **common,
                   fold=k, output_dir=str(root / "eval" / f"fold{k}"))  # fmt: skip
        assert _summary(root / "eval" / f"fold{k}")["whole"]["n"] == 3  # fold k tests on 3 of its 5 cases
    ensemble = {**common, "output_dir": str(root / "eval" / "ensemble")}
    bundle_run(run_id="run", config_file=[TRAIN, EVALUATE, DEMO], logging_file=LOGGING, **ensemble)
    dice = _summary(root / "eval" / "ensemble")
    assert dice["whole"]["n"] == 3  # the datalist's own test cases
    chance = _summary(evaluate_untrained(root, [TRAIN, EVALUATE, DEMO], LOGGING, ensemble, [TRAIN, DEMO]))
    print({r: round(dice[r]["avg"], 3) for r in REGIONS}, "untrained", {r: round(chance[r]["avg"], 3) for r in REGIONS})
    assert dice["whole"]["avg"] > 0.6 and dice["whole"]["avg"] > chance["whole"]["avg"] + 0.3
    assert dice["Total Avg."]["avg"] > chance["Total Avg."]["avg"] + 0.2
    for metric in ("val_region_precision", "val_region_sensitivity"):
        assert _summary(root / "eval" / "ensemble", metric)["whole"]["avg"] > 0.5, metric
    out = root / "eval" / "ensemble"
    with open(out / "test_healthy_specificity.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(float(r["whole"]) > 0.9 for r in rows if r["mirrored"] == "yes")
    assert (out / "test_modalities.png").stat().st_size > 10_000


@pytest.mark.slow
def test_ensemble_inference_on_one_4d_channel_last_file(two_folds, tmp_path):
    """The 4D channel-last layout (MSD Task01, and what MONAI Label passes): the ensemble's label map comes back in
    the input's geometry."""
    root, datalist, common, _ = two_folds
    entry = json.loads(datalist.read_text(encoding="utf-8"))["test"][0]
    files = [datalist.parent / f for f in entry["image"]]
    four_d = tmp_path / "case.nii.gz"
    first = nib.load(files[0])
    nib.save(nib.Nifti1Image(np.stack([np.asarray(nib.load(f).dataobj) for f in files], -1), first.affine), four_d)
    out = tmp_path / "seg"
    bundle_run(run_id="run", config_file=[INFER, DEMO], logging_file=LOGGING, models_dir=common["models_dir"],
               n_folds=2, input=str(four_d), output_dir=str(out), **ROI)  # fmt: skip
    seg = nib.load(out / "case_seg.nii.gz")
    assert seg.shape == first.shape and np.allclose(seg.affine, first.affine, atol=1e-4)
    reference = np.asarray(nib.load(datalist.parent / entry["label"]).dataobj) > 0
    labels = np.asarray(seg.dataobj) > 0
    assert 2 * (labels & reference).sum() / (labels.sum() + reference.sum()) > 0.6
    shutil.rmtree(out)
