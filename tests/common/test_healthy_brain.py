"""Tests of HealthyBrainSpecificity (Kayalıbay et al. 2017, section 4.2, Table 6) on real MONAI evaluators.

Stub networks return fixed class probabilities, so every specificity below is counted by hand: the volumes are
4 x 8 x 6 x 4 (C, X, Y, Z), the left-right axis is X (mid-sagittal plane at 3.5: voxels 0-3 low, 4-7 high), and the
image has a zero background of 8 voxels at X 0-1, Y 0 (outside the brain).
"""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import EnsembleEvaluator, SupervisedEvaluator

from common.handlers import HealthyBrainSpecificity

SHAPE = (8, 6, 4)
N_CLASSES = 5
EPS = 1e-9  # "zero" probability (its log is a finite logit)


def _image() -> np.ndarray:
    """Four channels, every voxel distinct (so a mirror is visible), zero background at X 0-1, Y 0."""
    c, x, y, z = np.meshgrid(*(np.arange(n) for n in (4, *SHAPE)), indexing="ij")
    image = (1 + c + 10 * x + 0.1 * y + 0.01 * z).astype(np.float32)
    image[:, 0:2, 0, :] = 0
    return image


def _label(x_range: tuple[int, int] | None) -> np.ndarray:
    """``[1, X, Y, Z]`` BraTS 2015 label map: edema with an enhancing voxel at X in ``x_range`` (None: no tumour)."""
    label = np.zeros((1, *SHAPE), np.int64)
    if x_range is not None:
        label[0, x_range[0] : x_range[1], 2:4, 1:3] = 2
        label[0, x_range[0], 2, 1] = 4
    return label


def _case(name: str | None, x_range: tuple[int, int] | None) -> dict:
    """One dict case; ``name`` None: plain tensors without meta data."""
    image, label = torch.from_numpy(_image()), torch.from_numpy(_label(x_range))
    if name is not None:
        image = MetaTensor(image, meta={"filename_or_obj": f"/data/brats/{name}.nii.gz"})
        label = MetaTensor(label, meta={"filename_or_obj": f"/data/brats/{name}_seg.nii.gz"})
    return {"image": image, "label": label}


def _mirrored(x_range: tuple[int, int]) -> np.ndarray:
    """The healthy image by hand: the tumour-free half flipped onto the tumour's half (plane at 3.5)."""
    image = _image()
    healthy = image.copy()
    if x_range[0] >= 4:  # tumour high: X 4..7 take X 3..0
        healthy[:, 4:] = image[:, 3::-1]
    else:  # tumour low: X 0..3 take X 7..4
        healthy[:, :4] = image[:, 7:3:-1]
    return healthy


HIGH, LOW, BOTH = (5, 7), (1, 3), (3, 5)


class FixedProbabilities(torch.nn.Module):
    """Returns log(probabilities) for every input (softmax gives them back); records what it receives."""

    def __init__(self, probabilities: np.ndarray) -> None:
        super().__init__()
        probabilities = probabilities / probabilities.sum(axis=0, keepdims=True)
        self.register_buffer("logits", torch.from_numpy(np.log(probabilities)).float())
        self.calls: list[tuple[torch.Tensor, bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plain = x.as_tensor() if isinstance(x, MetaTensor) else x
        self.calls.append((plain.detach().clone(), self.training, torch.is_grad_enabled()))
        return self.logits[None].expand(x.shape[0], *self.logits.shape).to(x.dtype)


def _probabilities(voxels: dict[tuple[int, int, int], dict[int, float]]) -> np.ndarray:
    """``[5, X, Y, Z]`` probabilities: background 1 except at ``voxels`` ({class: p}); the rest EPS."""
    p = np.full((N_CLASSES, *SHAPE), EPS)
    p[0] = 1.0
    for voxel, classes in voxels.items():
        p[(slice(None), *voxel)] = EPS
        for k, value in classes.items():
            p[(k, *voxel)] = value
    return p


def _read_csv(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_supervised_evaluator_rows_skips_and_hand_counted_specificity(tmp_path):
    """4 cases: tumour high, crossing the plane, low, absent; 2 mirrored, 2 skipped with their sides."""
    # class 2 (edema: whole only) at 3 brain voxels and at (7, 0, 0); class 4 (whole, core, enhancing) at (2, 2, 2)
    net = FixedProbabilities(
        _probabilities(
            {(4, 3, 1): {2: 1.0}, (5, 3, 1): {2: 1.0}, (6, 3, 1): {2: 1.0}, (7, 0, 0): {2: 1.0}, (2, 2, 2): {4: 1.0}}
        )
    )
    cases = [_case("high", HIGH), _case("both", BOTH), _case("low", LOW), _case("none", None)]
    handler = HealthyBrainSpecificity(tmp_path / "report", prefix="test_")
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=DataLoader(Dataset(cases), batch_size=2), network=net
    )
    handler.attach(evaluator)
    evaluator.run()
    evaluator.run()  # a second epoch starts from empty buffers

    # high: mirrored brain lacks X 0-1 and (mirrored) X 6-7 at Y 0: 192 - 16 = 176 voxels; (7, 0, 0) is outside it
    # -> whole: 3 edema + 1 enhancing; core and enhancing: 1.
    # low: X 0-3 take the background-free X 7-4: all 192 voxels are brain; (7, 0, 0) counts -> whole 5, others 1.
    expected = {
        "high": {"whole": 1 - 4 / 176, "core": 1 - 1 / 176, "enhancing": 1 - 1 / 176},
        "low": {"whole": 1 - 5 / 192, "core": 1 - 1 / 192, "enhancing": 1 - 1 / 192},
    }
    csv_path = tmp_path / "report" / "test_healthy_specificity.csv"
    rows = _read_csv(str(csv_path))
    assert [list(r) for r in rows][0] == ["case", "side", "mirrored", "whole", "core", "enhancing"]
    assert [(r["case"], r["side"], r["mirrored"]) for r in rows] == [
        ("/data/brats/high.nii.gz", "high", "yes"),
        ("/data/brats/both.nii.gz", "both", "no"),
        ("/data/brats/low.nii.gz", "low", "yes"),
        ("/data/brats/none.nii.gz", "none", "no"),
    ]
    for row, name in zip(rows, ("high", "both", "low", "none"), strict=True):
        for region in ("whole", "core", "enhancing"):
            if name in expected:
                assert float(row[region]) == pytest.approx(expected[name][region], abs=1e-12)
            else:
                assert row[region] == ""

    with open(tmp_path / "report" / "test_healthy_specificity.json") as f:
        summary = json.load(f)
    assert summary["n_cases"] == 4 and summary["n_mirrored"] == 2
    assert summary["paper_table6"] == {"whole": 0.9927, "core": 0.9992, "enhancing": 0.9993}
    assert "mirror" in summary["description"]
    for region in ("whole", "core", "enhancing"):
        a, b = expected["high"][region], expected["low"][region]
        assert summary["specificity"][region]["mean"] == pytest.approx((a + b) / 2, abs=1e-12)
        assert summary["specificity"][region]["std"] == pytest.approx(abs(a - b) / 2, abs=1e-12)
        assert evaluator.state.metrics[f"healthy_specificity_{region}"] == pytest.approx((a + b) / 2, abs=1e-12)
    assert sorted(p for p in os.listdir(tmp_path / "report")) == [
        "test_healthy_specificity.csv",
        "test_healthy_specificity.json",
    ]


def test_ensemble_evaluator_averages_softmax_probabilities(tmp_path):
    """Two networks; the label map is the argmax of their mean probabilities, not a vote nor a logit mean."""
    a, b, c, d = (5, 2, 1), (5, 3, 1), (6, 3, 2), (4, 4, 2)
    net1 = FixedProbabilities(
        _probabilities(
            {
                a: {4: 0.9, 0: 0.1},
                b: {4: 0.9, 0: 0.1},
                c: {4: 0.4, 2: 0.35, 0: 0.25},
                d: {4: 0.7, 0: 0.3},
            }
        )
    )
    net2 = FixedProbabilities(
        _probabilities(
            {
                a: {0: 1.0},
                b: {4: 0.2, 0: 0.8},
                c: {0: 0.4, 2: 0.35, 4: 0.25},
                d: {0: 0.3, 2: 0.69, 4: 0.01},
            }
        )
    )
    # mean at a: 0 .55 > 4 .45 -> background; b: 4 .55 -> enhancing; c: 2 .35 > 4 .325 = 0 .325 -> edema (neither
    # network's own argmax); d: 4 .355 > 2 .345 > 0 .3 -> enhancing (a mean of logits would pick background).
    # The mirrored brain has 176 voxels (as in the first test): whole 3, core 2, enhancing 2 false positives.
    cases = [_case("high", HIGH), _case("both", BOTH)]
    evaluator = EnsembleEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(cases), batch_size=1),
        networks=[net1, net2],
        pred_keys=["pred0", "pred1"],
    )
    HealthyBrainSpecificity(tmp_path, metric_name="healthy").attach(evaluator)
    evaluator.run()

    rows = _read_csv(str(tmp_path / "healthy_specificity.csv"))
    assert [(r["case"], r["side"], r["mirrored"]) for r in rows] == [
        ("/data/brats/high.nii.gz", "high", "yes"),
        ("/data/brats/both.nii.gz", "both", "no"),
    ]
    expected = {"whole": 1 - 3 / 176, "core": 1 - 2 / 176, "enhancing": 1 - 2 / 176}
    for region, value in expected.items():
        assert float(rows[0][region]) == pytest.approx(value, abs=1e-12)
        assert evaluator.state.metrics[f"healthy_{region}"] == pytest.approx(value, abs=1e-12)
    with open(tmp_path / "healthy_specificity.json") as f:
        summary = json.load(f)
    assert summary["n_cases"] == 2 and summary["n_mirrored"] == 1
    assert summary["specificity"]["core"] == {"mean": pytest.approx(1 - 2 / 176, abs=1e-12), "std": 0.0}
    # each network predicted once on the original batch and once on the mirrored image of the "high" case only
    assert len(net1.calls) == len(net2.calls) == 3


def test_network_receives_the_mirrored_image_in_eval_mode_without_gradients(tmp_path):
    """The handler's network input is the hand-mirrored image; cases without meta data are named case_<index>."""
    net = FixedProbabilities(_probabilities({}))
    net.train()
    cases = [_case(None, HIGH), _case(None, BOTH), _case(None, LOW), _case(None, None)]
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=DataLoader(Dataset(cases), batch_size=1), network=net
    )
    HealthyBrainSpecificity(tmp_path).attach(evaluator)
    evaluator.run()

    # per case: the evaluator's own call on the original, then (mirrored cases only) the handler's:
    # high original, high mirrored, both original, low original, low mirrored, none original
    assert len(net.calls) == 6
    original = torch.from_numpy(_image())[None]
    for index, x_range in ((1, HIGH), (4, LOW)):
        x, training, grad = net.calls[index]
        assert x.dtype == torch.float32 and tuple(x.shape) == (1, 4, *SHAPE)
        assert not training and not grad
        assert not torch.equal(x, original)
        np.testing.assert_array_equal(x[0].numpy(), _mirrored(x_range))
    for index in (0, 2, 3, 5):
        np.testing.assert_array_equal(net.calls[index][0].numpy(), original.numpy())
    assert net.training  # restored after the handler's call

    rows = _read_csv(str(tmp_path / "healthy_specificity.csv"))
    assert [(r["case"], r["side"], r["mirrored"]) for r in rows] == [
        ("case_0000", "high", "yes"),
        ("case_0001", "both", "no"),
        ("case_0002", "low", "yes"),
        ("case_0003", "none", "no"),
    ]
    # the stub predicts background everywhere: specificity 1 on both mirrored cases
    assert all(float(r[region]) == 1.0 for r in rows if r["mirrored"] == "yes" for region in ("whole", "core"))


def test_no_mirrored_case_gives_nan_metrics_and_null_summary(tmp_path):
    """Only a crossing tumour: nothing qualifies; metrics NaN, JSON null, row skipped."""
    net = FixedProbabilities(_probabilities({}))
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=DataLoader(Dataset([_case("both", BOTH)])), network=net
    )
    HealthyBrainSpecificity(tmp_path).attach(evaluator)
    evaluator.run()
    assert all(math.isnan(evaluator.state.metrics[f"healthy_specificity_{r}"]) for r in ("whole", "core", "enhancing"))
    with open(tmp_path / "healthy_specificity.json") as f:
        summary = json.load(f)
    assert summary["n_mirrored"] == 0 and summary["specificity"]["whole"] == {"mean": None, "std": None}


def test_one_hot_label_and_bad_arguments_are_refused(tmp_path):
    """A one-hot (multi-channel) label is not a BraTS label map; a prefix with a separator is not a file name."""
    case = _case("high", HIGH)
    case["label"] = torch.cat([case["label"], case["label"]])
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset([case])),
        network=FixedProbabilities(_probabilities({})),
    )
    HealthyBrainSpecificity(tmp_path).attach(evaluator)
    with pytest.raises(ValueError, match="single-channel"):
        evaluator.run()
    assert not (tmp_path / "healthy_specificity.csv").exists()
    with pytest.raises(ValueError, match="prefix"):
        HealthyBrainSpecificity(tmp_path, prefix="a/b_")
    with pytest.raises(ValueError, match="axis"):
        HealthyBrainSpecificity(tmp_path, axis=-1)
