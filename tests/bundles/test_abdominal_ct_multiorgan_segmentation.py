"""Facts and an end-to-end run of bundles/abdominal_ct_multiorgan_segmentation (Roth et al. 2018)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.bundle import run as bundle_run

from common.data import BundleInputError, find_bundle_input_error
from common.phantoms import make_dataset
from tests.conftest import cli_args, evaluate_untrained, infer_dicom_test_case, infer_test_cases
from tests.conftest import parse_configs as parse

BUNDLE = Path("bundles/abdominal_ct_multiorgan_segmentation")
CONFIGS = BUNDLE / "configs"
TRAIN, EVALUATE, INFER, DEMO = (
    str(CONFIGS / f) for f in ("train.json", "evaluate.json", "inference.json", "demo.json")
)
LOGGING = str(CONFIGS / "logging.conf")
ORGANS = ["artery", "portal vein", "liver", "spleen", "stomach", "gallbladder", "pancreas"]

# small and fast, same code path as the demo: a narrow network, 32^3 patches on a 6 mm grid
TINY = {
    "pixdim": [6.0, 6.0, 6.0],
    "network_def#features": [8, 16, 32, 64],
    "patch_size": [32, 32, 32],
    "sw_roi_size": [-1, -1, 32],
    "num_iterations": 240,
    "epoch_length": 80,
    "val_interval": 2,  # validates after epoch 2 of 3: the last epoch does not validate
    "num_workers": 0,
}


# ---------------------------------------------------------------------------------------------- paper facts


def test_defaults_follow_the_paper():
    p = parse(TRAIN)
    net = p.get_parsed_content("network_def")
    assert sum(x.numel() for x in net.parameters()) == 19_074_120
    assert p["patch_size"] == [64, 64, 64] and p["batch_size"] == 3
    assert p["learning_rate"] == 0.01 and p["num_iterations"] == 50_000
    opt = p.get_parsed_content("optimizer")
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["lr"] == 0.01
    assert p.get_parsed_content("train#trainer#max_epochs") * p["epoch_length"] == 50_000
    aug = p.get_parsed_content("train#random_transforms")[0]
    assert aug.max_displacement == 4 and aug.grid_spacing == 24 and aug.spatial_size == (64, 64, 64)
    assert np.allclose(aug.rand_affine_grid.rotate_range, [math.radians(20)] * 3)
    assert aug.rand_affine_grid.translate_range == (20, 20, 20)
    inferer = p.get_parsed_content("validate#inferer")
    assert list(inferer.roi_size) == [-1, -1, 64]


@pytest.mark.parametrize("overlays", [[], [DEMO]])
def test_restated_values_agree(overlays):
    """Values the configs state twice: the pad divisor is the network's, the z tile depth is the training patch's."""
    p = parse(TRAIN, *overlays)
    net = p.get_parsed_content("network_def")
    assert p["network_divisor"] == [net.divisor, net.divisor, 1] == [8, 8, 1]
    assert p["sw_roi_size"][2] == p["patch_size"][2]
    assert p["num_classes"] == len(p["class_names"]) + 1


def test_dice_loss_hand_computed():
    """Sum over all 8 classes (background included, weights 1) of 1 - 2 sum(p r) / (sum p^2 + sum r^2)."""
    loss = parse(TRAIN).get_parsed_content("loss")
    # uniform prediction (equal logits -> p = 1/8) on two background voxels:
    # background: 2 sum(p r) = 2 * 2/8 = 0.5; sum p^2 = 2/64; sum r^2 = 2  -> D = 0.5 / 2.03125
    # each of 7 absent classes: numerator 1e-5 (smoothing), denominator 2/64 + 1e-5
    logits = torch.zeros(1, 8, 2, 1, 1)
    label = torch.zeros(1, 1, 2, 1, 1)
    expected = (1 - (0.5 + 1e-5) / (2.03125 + 1e-5)) + 7 * (1 - 1e-5 / (2 / 64 + 1e-5))
    assert float(loss(logits, label)) == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(7.75160, abs=1e-4)  # 0.75385 + 7 * 0.99968
    # a confident correct prediction of two classes: loss ~ 0
    logits = torch.full((1, 8, 2, 1, 1), -30.0)
    logits[0, 3, 0], logits[0, 5, 1] = 30.0, 30.0
    label = torch.tensor([3.0, 5.0]).reshape(1, 1, 2, 1, 1)
    assert float(loss(logits, label)) == pytest.approx(0.0, abs=1e-4)
    # Dice per image volume (II.C: "voxel i of N in the current image volume"): a batch of two volumes costs the
    # sum of their own losses, which a Dice pooled over the batch would not
    a, b = torch.randn(1, 8, 3, 2, 2), torch.randn(1, 8, 3, 2, 2)
    la, lb = torch.randint(0, 8, (1, 1, 3, 2, 2)).float(), torch.zeros(1, 1, 3, 2, 2)
    both = float(loss(torch.cat([a, b]), torch.cat([la, lb])))
    assert both == pytest.approx(float(loss(a, la)) + float(loss(b, lb)), rel=1e-5)


def test_label_names_agree_with_the_phantom():
    from common.phantoms.abdominal_ct import ABDOMINAL_CT_LABELS

    p = parse(TRAIN)
    assert list(p["class_names"].values()) == ORGANS
    meta = json.loads((CONFIGS / "metadata.json").read_text(encoding="utf-8"))
    channel_def = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert channel_def == {str(k): v for k, v in ABDOMINAL_CT_LABELS.items()}
    assert p["hu_window"] == [-160, 240] and p["pixdim"] == [3.0, 3.0, 3.0]


# ---------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("abdomen")
    datalist = make_dataset(
        "abdominal_ct_multiorgan",
        root / "data",
        n_cases=8,
        seed=1,
        n_validation=2,
        n_test=2,
        dicom=True,
        shape=[80, 80, 48],
        spacing=[4.8, 4.8, 5.0],  # resampled to the 6 mm network grid and back
    )
    return root, datalist


@pytest.fixture(scope="module")
def trained(tiny_phantoms):
    """Train in this process, as ``monai.bundle run`` does, keeping the trainer's weights at the end of training."""
    root, datalist = tiny_phantoms
    common = {"datalist": str(datalist), "ckpt_dir": str(root / "models"), "output_dir": str(root / "eval"), **TINY}
    wf = ConfigWorkflow(config_file=[TRAIN, DEMO], logging_file=LOGGING, workflow_type="train", **common)
    wf.initialize()
    wf.run()
    final = {k: v.detach().clone() for k, v in wf.parser.get_parsed_content("network").state_dict().items()}
    epochs = wf.parser.get_parsed_content("train#trainer").state.epoch
    wf.finalize()
    return root, datalist, common, final, epochs


@pytest.mark.slow
def test_train_writes_plain_state_dict_and_the_final_weights(trained):
    root, _, _, final, epochs = trained
    states = {}
    for name in ("model.pt", "model_final.pt"):  # best on validation (zoo), and final (what the paper tests)
        state = torch.load(root / "models" / name, map_location="cpu", weights_only=True)
        assert isinstance(state, dict) and "head.conv.weight" in state
        assert all(isinstance(v, torch.Tensor) for v in state.values())
        states[name] = state
    # model_final.pt holds the weights at the end of training, although the last epoch (3) did not validate
    assert epochs == 3 and epochs % TINY["val_interval"] != 0
    assert states["model_final.pt"].keys() == final.keys()
    assert all(torch.equal(states["model_final.pt"][k], final[k]) for k in final)
    # model.pt is the best validated one, from epoch 2: a different set of weights
    assert not torch.equal(states["model.pt"]["head.conv.weight"], final["head.conv.weight"])


@pytest.mark.slow
def test_evaluate_dice_well_above_chance(trained):
    root, datalist, common, _, _ = trained
    common = {**common, "ckpt_file": str(root / "models" / "model_final.pt")}  # the paper tests the final model
    bundle_run(run_id="run", config_file=[TRAIN, EVALUATE, DEMO], logging_file=LOGGING, **common)
    summary = json.loads((root / "eval" / "test_val_mean_dice_summary.json").read_text(encoding="utf-8"))
    assert summary["n_cases"] == 2
    rows = summary["summary"]
    assert set(ORGANS) <= set(rows)
    total = rows["Total Avg."]["avg"]
    # chance: an untrained network evaluated the same way (the same code path, random weights)
    chance_dir = evaluate_untrained(root, [TRAIN, EVALUATE, DEMO], LOGGING, common, [TRAIN, DEMO])
    chance = json.loads((chance_dir / "test_val_mean_dice_summary.json").read_text(encoding="utf-8"))["summary"][
        "Total Avg."
    ]["avg"]
    assert chance < 0.15
    assert total > 0.35 and total > chance + 0.25, (total, chance)
    assert rows["liver"]["avg"] > 0.6
    for f in ("test_val_mean_dice_per_case.csv", "test_val_mean_dice_boxplot.png", "test_overlays.png"):
        assert (root / "eval" / f).stat().st_size > 0


def foreground_dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Mean Dice over the organs present in the reference (computed here, independently of MONAI's metric)."""
    scores = []
    for organ in range(1, 8):
        p, r = prediction == organ, reference == organ
        if r.any():
            scores.append(2 * np.logical_and(p, r).sum() / (p.sum() + r.sum()))
    return float(np.mean(scores))


@pytest.mark.slow
def test_infer_nifti_and_dicom_keep_input_geometry(trained):
    root, datalist, common, _, _ = trained
    common = {**common, "ckpt_file": str(root / "models" / "model_final.pt")}
    nifti_results = {}
    for case, image, reference, seg in infer_test_cases(root, datalist, common, [INFER, DEMO], LOGGING):
        assert seg.shape == image.shape
        assert np.allclose(seg.affine, image.affine, atol=1e-4)
        labels = np.asarray(seg.dataobj)
        assert set(np.unique(labels).tolist()) <= set(range(8))
        # the label map is on the input's voxels: it overlaps the reference there (a mirrored or shifted map, or
        # an empty one, would not), computed on the input's own grid
        assert foreground_dice(labels, reference) > 0.3, case["image"]
        nifti_results[Path(case["image"]).name.replace(".nii.gz", "")] = seg
    # a DICOM CT series in, a NIfTI label map on the same grid out, the same labels as from the NIfTI
    from_dicom, reference = infer_dicom_test_case(root, datalist, common, [INFER, DEMO], LOGGING, nifti_results)
    assert foreground_dice(from_dicom, reference) > 0.3


# ---------------------------------------------------------------------------------------------- bad input


def _write(path: Path, array: np.ndarray, affine=None) -> str:
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return str(path)


def _bad_cases(tmp: Path) -> dict[str, tuple[dict, str]]:
    good_img = _write(tmp / "img.nii.gz", np.zeros((16, 16, 16), np.int16))
    good_lab = _write(tmp / "lab.nii.gz", np.zeros((16, 16, 16), np.uint8))
    corrupt = tmp / "corrupt.nii.gz"
    corrupt.write_bytes(b"not a nifti file at all" * 10)
    return {
        "two_channels": (
            {"image": _write(tmp / "two.nii.gz", np.zeros((16, 16, 16, 2), np.int16)), "label": good_lab},
            "2 channels",
        ),
        "shape_mismatch": (
            {"image": good_img, "label": _write(tmp / "small.nii.gz", np.zeros((16, 16, 8), np.uint8))},
            "small.nii.gz",
        ),
        "label_range": (
            {"image": good_img, "label": _write(tmp / "lab9.nii.gz", np.full((16, 16, 16), 9, np.uint8))},
            "{9}",
        ),
        "unreadable": ({"image": str(corrupt), "label": good_lab}, "unreadable"),
        "nan_image": (
            {"image": _write(tmp / "nan.nii.gz", np.full((16, 16, 16), np.nan, np.float32)), "label": good_lab},
            "4096 NaN",
        ),
    }


@pytest.mark.parametrize("case", ["two_channels", "shape_mismatch", "label_range", "unreadable", "nan_image"])
def test_bad_training_input_names_file(tmp_path, case):
    item, words = _bad_cases(tmp_path)[case]
    datalist = tmp_path / "dataset.json"
    datalist.write_text(json.dumps({"training": [item], "validation": [item]}))
    p = parse(TRAIN, datalist=str(datalist), num_workers=0, cache_rate=1.0)
    with pytest.raises(Exception) as info:
        p.get_parsed_content("train#dataset")
    err = find_bundle_input_error(info.value)
    assert isinstance(err, BundleInputError), info.value
    assert words in str(err)
    bad_file = item["label"] if case in ("shape_mismatch", "label_range") else item["image"]
    assert Path(bad_file).name in str(err)


def test_missing_datalist_entry(tmp_path):
    datalist = tmp_path / "dataset.json"
    datalist.write_text(json.dumps({"training": [{"image": "a.nii.gz"}]}))
    p = parse(TRAIN, datalist=str(datalist))
    with pytest.raises(Exception) as info:
        p.get_parsed_content("train#dataset#data")
    err = find_bundle_input_error(info.value)
    assert isinstance(err, BundleInputError) and "dataset.json" in str(err) and "label" in str(err)
    with pytest.raises(Exception) as info:
        parse(TRAIN, datalist=str(datalist), val_datalist_key="validation").get_parsed_content("validate#dataset#data")
    assert "validation" in str(find_bundle_input_error(info.value))


@pytest.mark.parametrize(
    ("bad_name", "bad_array", "words"),
    [
        # caught by the header preflight, before the run starts
        ("b_two_channels.nii.gz", np.zeros((16, 16, 16, 2), np.int16), "2 channels"),
        # caught only when the case is loaded, after a_good's label map was computed: nothing may be published
        (
            "b_nan.nii.gz",
            np.where(np.arange(16**3).reshape(16, 16, 16) % 64 == 0, np.nan, 0).astype(np.float32),
            "64 NaN",
        ),
    ],
)
def test_bad_inference_input_writes_nothing(tmp_path, bad_name, bad_array, words):
    images = tmp_path / "images"
    images.mkdir()
    _write(images / "a_good.nii.gz", np.zeros((16, 16, 16), np.int16))
    _write(images / bad_name, bad_array)
    torch.save(parse(INFER).get_parsed_content("network_def").state_dict(), tmp_path / "model.pt")
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier_seg.nii.gz").write_bytes(b"an earlier run's result")
    with pytest.raises(Exception) as info:
        bundle_run(
            run_id="run",
            config_file=[INFER],
            logging_file=LOGGING,
            input=str(images),
            ckpt_dir=str(tmp_path),
            output_dir=str(out),
        )
    err = find_bundle_input_error(info.value)
    assert isinstance(err, BundleInputError) and bad_name in str(err) and words in str(err), info.value
    assert sorted(p.name for p in out.iterdir()) == ["earlier_seg.nii.gz"]
    assert (out / "earlier_seg.nii.gz").read_bytes() == b"an earlier run's result"


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(Exception) as info:
        bundle_run(run_id="run", config_file=[INFER], logging_file=LOGGING, ckpt_dir=str(tmp_path))
    err = find_bundle_input_error(info.value)
    assert isinstance(err, BundleInputError) and "model.pt" in str(err)


# ---------------------------------------------------------------------------------------------- multi-process


# appended to multi_gpu_train.json by the test: after training, each rank saves the cases of its data set and its
# final parameters, so the test can see what each process trained on and that DDP kept the replicas equal
PROBE_RUN = [
    "$@train#trainer.run()",
    "$torch.save({'images': [d['image'] for d in @train#dataset.data], "
    "'params': {k: v.detach().cpu() for k, v in @network.module.named_parameters()}}, "
    "os.path.join(@probe_dir, 'rank%d.pt' % dist.get_rank()))",
]


@pytest.mark.slow
def test_multi_gpu_config_runs_under_torchrun_on_cpu(tiny_phantoms, tmp_path):
    """multi_gpu_train.json under torchrun with 2 processes (Gloo on CPU, NCCL on GPUs): each rank trains on its own
    cases, DDP keeps the two replicas equal, and rank 0 saves its weights without the DDP prefix."""
    _, datalist = tiny_phantoms
    probe = tmp_path / "probe"
    probe.mkdir()
    (tmp_path / "probe.json").write_text(json.dumps({"probe_dir": str(probe), "run": PROBE_RUN}))
    override = {
        "datalist": str(datalist),
        "ckpt_dir": str(tmp_path / "models"),
        "output_dir": str(tmp_path / "eval"),
        **TINY,
        "num_iterations": 8,
        "epoch_length": 4,
        "val_interval": 2,
        "batch_size": 2,
    }
    args = cli_args(override)
    configs = [TRAIN, str(CONFIGS / "multi_gpu_train.json"), DEMO, str(tmp_path / "probe.json")]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
        "-m", "monai.bundle", "run", "--config_file", repr(configs), "--logging_file", LOGGING, *args,
    ]  # fmt: skip
    result = subprocess.run(
        cmd,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [torch.load(probe / f"rank{r}.pt", map_location="cpu", weights_only=True) for r in (0, 1)]
    # the two processes trained on different cases, together all of them (8 cases, 4 each)
    training = {str(Path(datalist).parent / c["image"]) for c in json.loads(Path(datalist).read_text())["training"]}
    seen = [set(r["images"]) for r in ranks]
    assert len(seen[0]) == len(seen[1]) == 4 and not seen[0] & seen[1] and seen[0] | seen[1] == training
    # DDP averaged the gradients: both replicas end with the same parameters, and the saved ones are rank 0's
    params = ranks[0]["params"]
    assert params.keys() == ranks[1]["params"].keys()
    assert all(torch.equal(params[k], ranks[1]["params"][k]) for k in params)
    state = torch.load(tmp_path / "models" / "model_final.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in state), "the saved state_dict must not carry the DDP prefix"
    assert all(torch.equal(state[k], params[k]) for k in params)
    assert (tmp_path / "models" / "model.pt").is_file()
    assert (tmp_path / "eval" / "validation" / "val_mean_dice_summary.json").is_file()
