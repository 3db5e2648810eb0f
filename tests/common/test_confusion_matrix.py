"""Tests of ConfusionMatrixReport (head CT paper Fig. 3) on two hand-made cases whose voxel counts are worked out here
by hand: a 2-D 4x4 case and a 3-D 2x2x2 case with two unannotated (255) reference voxels. Driven by a fake engine
(decollated output lists as MONAI engines give them) and by a real MONAI SupervisedEvaluator built from a bundle
config."""

from __future__ import annotations

import csv
import json
import logging
from types import SimpleNamespace

import ignite.distributed as idist
import numpy as np
import pytest
import torch
from matplotlib import colormaps
from matplotlib.image import imread
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator

from common.handlers.confusion_matrix import (
    ConfusionMatrixReport,
    _cell_text,
    confusion_percentages,
    figure_inches,
)

CLASS_NAMES = {"1": "brainstem and cerebrum", "2": "ventricular system"}  # background 0 is added
ABBREVIATIONS = {"1": "BC", "2": "VS"}
NAMES = ["background", "brainstem and cerebrum", "ventricular system"]

# case a, 2-D [1, 4, 4]
LABEL_A = [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 2], [2, 2, 2, 2]]
PRED_A = [[0, 0, 0, 1], [0, 1, 1, 0], [0, 1, 2, 2], [2, 2, 0, 2]]
# reference 0: 7 voxels, 6 -> 0, 1 -> 1; reference 1: 4 voxels, 3 -> 1, 1 -> 2; reference 2: 5 voxels, 4 -> 2, 1 -> 0
COUNTS_A = [[6, 1, 0], [0, 3, 1], [1, 0, 4]]
# case b, 3-D [1, 2, 2, 2], flat: two ignored voxels, then 0 -> 0, 1 -> 1, 1 -> 2, 2 -> 2, 2 -> 2, 2 -> 1
LABEL_B = [255, 255, 0, 1, 1, 2, 2, 2]
PRED_B = [1, 2, 0, 1, 2, 2, 2, 1]
COUNTS = [[7, 1, 0], [0, 4, 2], [1, 1, 6]]  # a + b
PERCENT_OF_REFERENCE = [[87.5, 12.5, 0.0], [0.0, 200 / 3, 100 / 3], [12.5, 12.5, 75.0]]  # rows of 8, 6, 8 voxels
PERCENT_OF_PREDICTION = [[87.5, 100 / 6, 0.0], [0.0, 400 / 6, 25.0], [12.5, 100 / 6, 75.0]]  # columns of 8, 6, 8


def _maps(name):
    label, pred = (LABEL_A, PRED_A) if name == "a" else (LABEL_B, PRED_B)
    shape = (1, 4, 4) if name == "a" else (1, 2, 2, 2)
    return np.reshape(label, shape).astype(np.float32), np.reshape(pred, shape).astype(np.float32)


def _one_hot(index_map, n=3):
    return np.moveaxis(np.eye(n, dtype=np.float32)[index_map[0].astype(np.int64)], -1, 0)


def _output(name, one_hot_pred=False, one_hot_label=False):
    label, pred = _maps(name)
    pred = _one_hot(pred) * 0.8 + 0.1 if one_hot_pred else pred  # a probability map: argmax-ed
    label = _one_hot(label) if one_hot_label else label
    meta = {"filename_or_obj": f"/data/{name}.nii.gz"}
    return {"pred": MetaTensor(torch.from_numpy(pred), meta=meta), "label": MetaTensor(torch.from_numpy(label))}


def _engine(*outputs):
    return SimpleNamespace(state=SimpleNamespace(batch=None, output=list(outputs)))


def _run(handler, *iterations):
    """EPOCH_STARTED, one ITERATION_COMPLETED per list of output dicts, EPOCH_COMPLETED."""
    handler._started(None)
    for outputs in iterations:
        handler.iteration_completed(_engine(*outputs))
    handler(_engine())


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _colour_pixels(rgb, colour, tol=0.01):
    return (np.abs(rgb - np.asarray(colour)[:3]) < tol).all(axis=-1)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Two iterations of the fake engine: case a alone, then case b (ignore_value 255)."""
    out = tmp_path_factory.mktemp("confusion")
    handler = ConfusionMatrixReport(out, CLASS_NAMES, prefix="test_", ignore_value=255, abbreviations=ABBREVIATIONS)
    _run(handler, [_output("a")], [_output("b")])
    return SimpleNamespace(out=out, handler=handler)


def test_csv_holds_the_exact_counts(report):
    rows = _csv(report.out / "test_confusion_matrix.csv")
    assert rows[0] == ["reference \\ prediction", *NAMES]
    assert [r[0] for r in rows[1:]] == NAMES
    assert [[int(v) for v in r[1:]] for r in rows[1:]] == COUNTS
    assert report.handler.counts.dtype == np.int64 and report.handler.counts.tolist() == COUNTS


def test_json_percentages_rows_sum_to_100(report):
    doc = json.loads((report.out / "test_confusion_matrix.json").read_text())
    assert doc["labels"] == [0, 1, 2] and doc["names"] == NAMES
    assert doc["rows"] == "reference" and doc["columns"] == "prediction"
    assert doc["counts"] == COUNTS and doc["n_cases"] == 2 and doc["n_voxels"] == 22
    assert doc["ignore_value"] == 255 and doc["ignored_voxels"] == 2  # the two 255 voxels of case b are skipped
    np.testing.assert_allclose(doc["percent_of_reference"], PERCENT_OF_REFERENCE)
    np.testing.assert_allclose(np.sum(doc["percent_of_reference"], axis=1), 100.0)
    np.testing.assert_allclose(doc["percent_of_prediction"], PERCENT_OF_PREDICTION)
    np.testing.assert_allclose(doc["percent_of_all"], np.array(COUNTS) * 100 / 22)
    assert doc["figure_normalize"] == "true"


def test_png_decodes_with_its_size_and_shows_the_row_percentages(report):
    rgb = imread(report.out / "test_confusion_matrix.png")
    # 3 cells of 0.7 in, 0.07 in per character of the longest tick label ("background", 10): 5.4 x 4.2 in at 100 dpi
    assert figure_inches(["background", "BC", "VS"]) == pytest.approx((5.4, 4.2))
    assert rgb.shape == (420, 540, 4)
    rgb = rgb[..., :3]
    assert rgb.std() > 0.1  # not blank
    blues = colormaps["Blues"]
    assert _colour_pixels(rgb, blues(0.875)).sum() > 300  # the background row's 87.5 % cell
    assert _colour_pixels(rgb, blues(0.75)).sum() > 300  # the ventricular system's 75 %
    assert not [p.name for p in report.out.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert sorted(p.name for p in report.out.iterdir()) == [
        "test_confusion_matrix.csv",
        "test_confusion_matrix.json",
        "test_confusion_matrix.png",
    ]


def test_one_hot_and_probability_maps_count_as_index_maps(tmp_path):
    index = ConfusionMatrixReport(tmp_path / "index", CLASS_NAMES, ignore_value=255)
    _run(index, [_output("a"), _output("b")])
    one_hot = ConfusionMatrixReport(tmp_path / "one_hot", CLASS_NAMES, ignore_value=255)
    # case b's reference keeps its 255 voxels only as an index map; its prediction is a probability map
    _run(one_hot, [_output("a", one_hot_pred=True, one_hot_label=True), _output("b", one_hot_pred=True)])
    assert one_hot.counts.tolist() == index.counts.tolist() == COUNTS
    assert _csv(tmp_path / "one_hot" / "confusion_matrix.csv") == _csv(tmp_path / "index" / "confusion_matrix.csv")


def test_a_dict_of_batches_is_decollated(tmp_path):
    handler = ConfusionMatrixReport(tmp_path, CLASS_NAMES)
    a = _output("a")
    handler._started(None)
    handler.iteration_completed(SimpleNamespace(state=SimpleNamespace(output={k: v[None] for k, v in a.items()})))
    handler(_engine())
    assert handler.counts.tolist() == COUNTS_A


def test_a_class_without_reference_voxels_is_a_null_row(tmp_path, caplog):
    names = {**CLASS_NAMES, "3": "septum pellucidum"}
    handler = ConfusionMatrixReport(tmp_path, names, prefix="x_")
    with caplog.at_level(logging.INFO, logger="common.handlers.confusion_matrix"):
        _run(handler, [_output("a")])
    doc = json.loads((tmp_path / "x_confusion_matrix.json").read_text())
    assert doc["counts"] == [[*row, 0] for row in COUNTS_A] + [[0, 0, 0, 0]]
    assert doc["percent_of_reference"][3] == [None] * 4  # no septum pellucidum in the reference
    assert doc["ignore_value"] is None and doc["ignored_voxels"] == 0 and doc["n_voxels"] == 16
    rgb = imread(tmp_path / "x_confusion_matrix.png")[..., :3]
    assert _colour_pixels(rgb, (0.9, 0.9, 0.9)).sum() > 300  # its row is grey
    assert "% of row" in caplog.text and "septum pellucidum" in caplog.text


def test_counts_figure_without_normalisation(tmp_path):
    handler = ConfusionMatrixReport(tmp_path, ["BC", "VS"], normalize=None)
    _run(handler, [_output("a")])
    assert imread(tmp_path / "confusion_matrix.png").shape[:2] == (420, 540)  # background, BC, VS as above
    counts = (0.0, 950.0, 12_345.0, 3_400_000.0, 2e10)
    assert [_cell_text(v, None) for v in counts] == ["0", "950", "12k", "3.4M", "20G"]
    assert [_cell_text(v, "true") for v in (0.0, 0.01, 12.345, np.nan)] == ["0", "<0.1", "12.3", "-"]


def test_confusion_percentages():
    np.testing.assert_allclose(confusion_percentages(np.array(COUNTS)), PERCENT_OF_REFERENCE)
    np.testing.assert_allclose(confusion_percentages(np.array(COUNTS), "pred"), PERCENT_OF_PREDICTION)
    with pytest.raises(ValueError, match="normalize must be"):
        confusion_percentages(np.array(COUNTS), "rows")


def test_epoch_start_clears_the_counts(tmp_path):
    handler = ConfusionMatrixReport(tmp_path, CLASS_NAMES, ignore_value=255)
    _run(handler, [_output("a"), _output("b")])
    _run(handler, [_output("a"), _output("b")])
    assert handler.counts.tolist() == COUNTS


def test_other_rank_sums_counts_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(idist, "get_world_size", lambda: 2)
    monkeypatch.setattr(idist, "get_rank", lambda: 1)
    monkeypatch.setattr(idist, "all_reduce", lambda t: t * 2)  # two ranks that saw the same cases
    handler = ConfusionMatrixReport(tmp_path, CLASS_NAMES, ignore_value=255)
    _run(handler, [_output("a"), _output("b")])
    assert handler.counts.tolist() == (2 * np.array(COUNTS)).tolist()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=r"save_rank=2 must be below the world size 2"):
        _run(ConfusionMatrixReport(tmp_path, CLASS_NAMES, save_rank=2), [_output("a")])


def test_bad_input_is_named_and_nothing_is_written(tmp_path):
    handler = ConfusionMatrixReport(tmp_path, CLASS_NAMES)
    with pytest.raises(ValueError, match=r"case '/data/b.nii.gz': 'label' holds label values \[255\] that are not"):
        handler.iteration_completed(_engine(_output("b")))  # no ignore_value
    mismatch = {"pred": _output("a")["pred"], "label": _output("b")["label"]}
    with pytest.raises(ValueError, match=r"'pred' \(4, 4\) and 'label' \(2, 2, 2\) must have the same spatial"):
        handler.iteration_completed(_engine(mismatch))
    with pytest.raises(ValueError, match=r"case 0: engine output holds \['pred'\]"):
        handler.iteration_completed(_engine({"pred": _output("a")["pred"]}))
    with pytest.raises(ValueError, match="no case"):
        _run(ConfusionMatrixReport(tmp_path, CLASS_NAMES))
    with pytest.raises(ValueError, match=r"ignore_value=2 is the label value of class 'ventricular system'"):
        ConfusionMatrixReport(tmp_path, CLASS_NAMES, ignore_value=2)
    with pytest.raises(ValueError, match=r"abbreviations name label values \[3\]"):
        ConfusionMatrixReport(tmp_path, CLASS_NAMES, abbreviations={"3": "SP"})
    with pytest.raises(TypeError, match="abbreviations: class_names must be"):
        ConfusionMatrixReport(tmp_path, CLASS_NAMES, abbreviations="BC")
    with pytest.raises(ValueError, match="normalize must be one of"):
        ConfusionMatrixReport(tmp_path, CLASS_NAMES, normalize="rows")
    with pytest.raises(ValueError, match="save_rank must be"):
        ConfusionMatrixReport(tmp_path, CLASS_NAMES, save_rank=-1)
    assert list(tmp_path.iterdir()) == []


def test_ignore_value_zero_leaves_background_out():
    handler = ConfusionMatrixReport("unused", {"1": "csf", "2": "white matter"}, ignore_value=0)
    assert handler.labels.tolist() == [1, 2] and handler.axis_names == ["csf", "white matter"]
    handler = ConfusionMatrixReport("unused", {"0": "bg", "1": "csf"}, abbreviations={"1": "CSF"})
    assert handler.axis_names == ["bg", "CSF"]


class _PredictionFromImage(torch.nn.Module):
    """A "network" whose output is known: the image holds the prediction's class indices."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.round(x[:, 0]).long(), 3).movedim(-1, 1).float()


def test_monai_evaluator_with_handler_from_a_bundle_config(tmp_path):
    """The brief's evaluate.json entry (plus the ignore value), built by ConfigParser, run twice by a
    SupervisedEvaluator: one-hot network outputs, index-map labels, batches decollated by the engine."""
    data = []
    for name in ("a", "b"):
        label, pred = _maps(name)
        data.append({"image": torch.from_numpy(pred), "label": torch.from_numpy(label)})
    parser = ConfigParser(
        {
            "output_dir": str(tmp_path),
            "class_names": CLASS_NAMES,
            "handler": {
                "_target_": "common.handlers.confusion_matrix.ConfusionMatrixReport",
                "output_dir": "@output_dir",
                "class_names": "@class_names",
                "prefix": "test_",
                "ignore_value": 255,
            },
        }
    )
    handler = parser.get_parsed_content("handler")
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(data), batch_size=1, num_workers=0),
        network=_PredictionFromImage(),
        val_handlers=[handler],
    )
    evaluator.run()
    evaluator.run()  # a second validation counts afresh
    rows = _csv(tmp_path / "test_confusion_matrix.csv")
    assert [[int(v) for v in r[1:]] for r in rows[1:]] == COUNTS
    doc = json.loads((tmp_path / "test_confusion_matrix.json").read_text())
    assert doc["n_cases"] == 2 and doc["ignored_voxels"] == 2
    np.testing.assert_allclose(doc["percent_of_reference"], PERCENT_OF_REFERENCE)
    # full names on the axes: 3 cells of 0.7 in + 0.07 in x 22 characters ("brainstem and cerebrum"): 6.24 x 5.04 in
    assert imread(tmp_path / "test_confusion_matrix.png").shape[:2] == (504, 624)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "test_confusion_matrix.csv",
        "test_confusion_matrix.json",
        "test_confusion_matrix.png",
    ]
