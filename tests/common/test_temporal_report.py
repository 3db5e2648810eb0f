"""Tests of the temporal (4D) segmentation report: TemporalSegmentationReport driven by a real Ignite Engine and by a
fake engine on hand-made 8x8x6 x 6-frame sequences (spacing 2 mm, so one voxel is 0.008 ml) whose LV cavity is a box
[1:1+lx, 1:5, 1:4] (12 lx voxels) changing over the frames and whose myocardium is a fixed box [:, 6:8, 0:2].
Expected numbers are computed by hand here; the surface distances by a brute-force implementation in this file."""

from __future__ import annotations

import csv
import json
import logging
import math
import statistics
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from matplotlib.image import imread
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.handlers import StatsHandler
from monai.transforms import AsDiscreted

from common.handlers.temporal_report import TemporalSegmentationReport, temporal_case_measures
from tests.common.test_visualize import BLUE, label_pixels

CLASS_NAMES = {"1": "LV cavity", "2": "LV myocardium"}
SHAPE = (8, 8, 6, 6)  # X, Y, Z, T
SPACING = 2.0
ML = SPACING**3 / 1000.0  # ml per voxel
ANNOTATED = (0, 3)
REF_LX_T3 = 3  # reference cavity length along x at frame 3


def _hu_to_image(hu: float) -> float:
    """The preprocessing's ScaleIntensityRanged: [-1024, 1024] HU -> [-1, 1]."""
    return -1.0 + 2.0 * (hu + 1024.0) / 2048.0


def _prediction(lx) -> np.ndarray:
    pred = np.zeros(SHAPE, np.int64)
    for t, length in enumerate(lx):
        pred[1 : 1 + length, 1:5, 1:4, t] = 1
        pred[:, 6:8, 0:2, t] = 2
    return pred


def _reference(pred: np.ndarray, half_myocardium: bool = False) -> np.ndarray:
    """255 everywhere but frames 0 (= the prediction) and 3 (cavity lx = 3; myocardium halved in z if asked)."""
    ref = np.full(SHAPE, 255, np.int64)
    ref[..., 0] = pred[..., 0]
    frame = np.zeros(SHAPE[:3], np.int64)
    frame[1 : 1 + REF_LX_T3, 1:5, 1:4] = 1
    frame[:, 6:8, 0 : 1 if half_myocardium else 2] = 2
    ref[..., 3] = frame
    return ref


def _meta(array: np.ndarray, name: str) -> MetaTensor:
    affine = torch.diag(torch.tensor([SPACING, SPACING, SPACING, 1.0], dtype=torch.float64))
    return MetaTensor(torch.from_numpy(array[None]).float(), affine=affine, meta={"filename_or_obj": name})


def _case(name, lx, ref_ef=None, half_myocardium=False, reference=None):
    """(batch item, output item) of one case as a MONAI evaluator yields them after decollation."""
    pred = _prediction(lx)
    ref = _reference(pred, half_myocardium) if reference is None else reference
    hu = np.select([pred == 1, pred == 2], [400.0, 100.0], -1000.0)
    image = _meta(np.vectorize(_hu_to_image)(hu), name)
    batch = {"image": image}
    if ref_ef is not None:
        batch["ejection_fraction"] = torch.tensor(ref_ef)
    return batch, {"image": image, "pred": _meta(pred.astype(np.float64), name), "label": _meta(ref, name)}


# name, predicted cavity lengths per frame, reference EF (%), reference myocardium halved at frame 3
CASES = [
    ("/data/a.nii.gz", [6, 5, 3, 2, 4, 6], 62.0, False),
    ("/data/b.nii.gz", [5, 5, 4, 4, 3, 4], 45.0, True),
    ("/data/c.nii.gz", [6, 4, 2, 2, 4, 6], 50.0, False),
]
# hand computations, per case
DICE_CAVITY = [(1 + 2 * 2 / (2 + 3)) / 2, (1 + 2 * 3 / (4 + 3)) / 2, (1 + 2 * 2 / (2 + 3)) / 2]  # frame 3: 2 min/sum
DICE_MYO = [1.0, (1 + 2 * 16 / (32 + 16)) / 2, 1.0]
SMOOTH_CAVITY = [math.sqrt(12 * n * ML / 5) for n in (8, 3, 8)]  # 12 voxels per unit of lx changed, 5 frame steps
EF = [100 * (6 - 2) / 6, 100 * (5 - 3) / 5, 100 * (6 - 2) / 6]
ED_ES = [(0, 3), (0, 4), (0, 2)]  # first largest / smallest volume
EDV = [72 * ML, 60 * ML, 72 * ML]
ESV = [24 * ML, 36 * ML, 24 * ML]
REF_EF = [62.0, 45.0, 50.0]
# reduced (< 55 %): a TN (66.7 vs 62), b TP (40 vs 45), c FN (66.7 vs 50)
MAE = (abs(EF[0] - 62) + abs(EF[1] - 45) + abs(EF[2] - 50)) / 3


def _edge(mask: np.ndarray) -> np.ndarray:
    """Voxels of a mask with a 6-neighbour outside it (outside the array counts as outside)."""
    padded = np.pad(mask, 1)
    interior = mask.copy()
    for axis in range(3):
        for shift in (-1, 1):
            interior &= np.roll(padded, shift, axis)[1:-1, 1:-1, 1:-1]
    return mask & ~interior


def _asd(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric average surface distance (mm) by brute force over all pairs of edge voxels."""
    pa, pb = np.argwhere(_edge(a)) * SPACING, np.argwhere(_edge(b)) * SPACING
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return float(np.concatenate([d.min(1), d.min(0)]).mean())


def _consecutive_asd(labels: np.ndarray, c: int) -> float:
    return float(np.mean([_asd(labels[..., t] == c, labels[..., t + 1] == c) for t in range(labels.shape[-1] - 1)]))


SD_CAVITY = [_consecutive_asd(_prediction(lx), 1) for _, lx, _, _ in CASES]


def _stats(values):
    return statistics.fmean(values), statistics.pstdev(values)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A run of the handler on a real Ignite Engine (batches of 2 then 1 case), with StatsHandler after it."""
    out = tmp_path_factory.mktemp("temporal")
    data = [[_case(n, lx, ef, half)[0] for n, lx, ef, half in CASES[:2]], [_case(*CASES[2])[0]]]
    outputs = {n: _case(n, lx, ef, half)[1] for n, lx, ef, half in CASES}

    def step(_engine, batch):
        return [outputs[item["image"].meta["filename_or_obj"]] for item in batch]

    engine = Engine(step)
    handler = TemporalSegmentationReport(out, CLASS_NAMES, prefix="test_temporal")
    handler.attach(engine)
    messages = []
    stats = StatsHandler(iteration_log=False, name="temporal_report_test_stats")
    stats.attach(engine)
    stats.logger.setLevel(logging.INFO)
    stats.logger.addHandler(_ListHandler(messages))
    engine.run(data, max_epochs=1)
    return SimpleNamespace(out=out, engine=engine, messages=messages)


class _ListHandler(logging.Handler):
    def __init__(self, messages):
        super().__init__()
        self.messages = messages

    def emit(self, record):
        self.messages.append(record.getMessage())


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_case_measures_plain_function():
    _, lx, _, half = CASES[1]
    pred = _prediction(lx)
    m = temporal_case_measures(pred, _reference(pred, half), (SPACING,) * 3)
    assert m["annotated_frames"] == [0, 3] and m["n_frames"] == 6 and not m["reference_dense"]
    assert m["frame_dice"][1] == pytest.approx(DICE_CAVITY[1]) and m["frame_dice"][2] == pytest.approx(DICE_MYO[1])
    assert m["smoothness_l2"][1] == pytest.approx(SMOOTH_CAVITY[1]) and m["smoothness_l2"][2] == 0.0
    assert m["surface_distance"][1] == pytest.approx(SD_CAVITY[1]) and m["surface_distance"][2] == 0.0
    assert math.isnan(m["ref_smoothness_l2"][1]) and math.isnan(m["ref_surface_distance"][2])  # sparse reference
    np.testing.assert_allclose(m["lv_volume_ml"], [12 * n * ML for n in lx])
    np.testing.assert_allclose(m["ref_lv_volume_ml"], [12 * lx[0] * ML, 12 * REF_LX_T3 * ML])
    assert (m["ed_frame"], m["es_frame"]) == ED_ES[1] and m["ef_percent"] == pytest.approx(EF[1])


def test_per_case_csv(report):
    rows = _rows(report.out / "test_temporal_per_case.csv")
    assert [r["filename"] for r in rows] == [n for n, *_ in CASES]
    for i, row in enumerate(rows):
        assert row["annotated_frames"] == "0 3" and row["n_frames"] == "6"
        assert float(row["frame_dice_lv_cavity"]) == pytest.approx(DICE_CAVITY[i])
        assert float(row["frame_dice_lv_myocardium"]) == pytest.approx(DICE_MYO[i])
        assert float(row["smoothness_l2_lv_cavity"]) == pytest.approx(SMOOTH_CAVITY[i])
        assert float(row["smoothness_l2_lv_myocardium"]) == 0.0
        assert float(row["surface_distance_lv_cavity"]) == pytest.approx(SD_CAVITY[i])
        assert float(row["surface_distance_lv_myocardium"]) == 0.0
        assert row["ref_smoothness_l2_lv_cavity"] == "nan" and row["ref_surface_distance_lv_cavity"] == "nan"
        assert (int(row["ed_frame"]), int(row["es_frame"])) == ED_ES[i]
        assert float(row["edv_ml"]) == pytest.approx(EDV[i]) and float(row["esv_ml"]) == pytest.approx(ESV[i])
        assert float(row["ef_percent"]) == pytest.approx(EF[i])
        assert float(row["ref_ef_percent"]) == REF_EF[i]
        assert float(row["ef_abs_error"]) == pytest.approx(abs(EF[i] - REF_EF[i]))
        curve = [float(v) for v in row["lv_volume_ml"].split()]
        np.testing.assert_allclose(curve, [12 * n * ML for n in CASES[i][1]])
        ref_curve = [float(v) for v in row["ref_lv_volume_ml"].split()]
        np.testing.assert_allclose(ref_curve, [12 * CASES[i][1][0] * ML, 12 * REF_LX_T3 * ML])


def test_summary_json_and_ef_detection(report):
    doc = json.loads((report.out / "test_temporal_summary.json").read_text())
    assert doc["n_cases"] == 3 and doc["std_ddof"] == 0 and doc["lv_class"] == 1
    measures = doc["measures"]
    for measure, name, values in [
        ("frame_dice", "LV cavity", DICE_CAVITY),
        ("frame_dice", "LV myocardium", DICE_MYO),
        ("smoothness_l2", "LV cavity", SMOOTH_CAVITY),
        ("surface_distance", "LV cavity", SD_CAVITY),
    ]:
        mean, std = _stats(values)
        row = measures[measure]["summary"][name]
        assert row["avg"] == pytest.approx(mean) and row["std"] == pytest.approx(std) and row["n"] == 3
    assert measures["frame_dice"]["unit"] is None and measures["surface_distance"]["unit"] == "mm"
    assert measures["smoothness_l2"]["summary"]["LV myocardium"]["avg"] == 0.0
    assert measures["ref_smoothness_l2"]["summary"]["LV cavity"]["n"] == 0  # no dense reference
    ef_mean, ef_std = _stats(EF)
    assert measures["ef_percent"]["summary"]["EF"]["avg"] == pytest.approx(ef_mean)
    assert measures["ef_percent"]["summary"]["EF"]["std"] == pytest.approx(ef_std)
    assert measures["edv_ml"]["summary"]["EDV"]["avg"] == pytest.approx(statistics.fmean(EDV))
    assert measures["ref_ef_percent"]["summary"]["reference EF"]["avg"] == pytest.approx(statistics.fmean(REF_EF))
    detection = doc["ef_detection"]
    assert detection["threshold"] == 55.0 and detection["n_cases"] == 3
    assert (detection["tp"], detection["fn"], detection["tn"], detection["fp"]) == (1, 1, 1, 0)
    assert detection["sensitivity"] == 0.5 and detection["specificity"] == 1.0
    assert detection["mae"] == pytest.approx(MAE)


def test_engine_metrics_are_logged_by_stats_handler(report):
    metrics = report.engine.state.metrics
    assert metrics["frame_dice_lv_cavity"] == pytest.approx(statistics.fmean(DICE_CAVITY))
    assert metrics["frame_dice_lv_myocardium"] == pytest.approx(statistics.fmean(DICE_MYO))
    assert metrics["smoothness_l2_lv_cavity"] == pytest.approx(statistics.fmean(SMOOTH_CAVITY))
    assert metrics["surface_distance_lv_cavity"] == pytest.approx(statistics.fmean(SD_CAVITY))
    assert metrics["surface_distance_lv_myocardium"] == 0.0
    assert metrics["ef_mae"] == pytest.approx(MAE)
    assert metrics["ef_sensitivity"] == 0.5 and metrics["ef_specificity"] == 1.0
    logged = " ".join(report.messages)
    assert "frame_dice_lv_cavity" in logged and "ef_mae" in logged


def test_figures_decode_and_show_prediction_and_reference(report):
    volume = imread(report.out / "test_temporal_lv_volume.png")
    assert volume.shape[0] >= 600 and volume.shape[1] >= 800  # 2 x 2 panels of 5 x 3.6 in at 100 dpi
    frames = imread(report.out / "test_temporal_through_time.png")[..., :3]
    assert frames.shape[1] >= 6 * 100 and frames.shape[0] >= 3 * 100  # 3 rows of 6 frames
    assert label_pixels(frames, BLUE).sum() > 100  # predicted cavity filled in its label colour
    lime = (frames[..., 1] > 0.8) & (frames[..., 0] < 0.4) & (frames[..., 2] < 0.4)
    assert lime.sum() > 50  # reference outlines on the annotated frames
    assert not [p.name for p in report.out.iterdir() if p.name.startswith(".")]  # no temporary file left


def _engine(cases):
    batch = [b for b, _ in cases]
    output = [o for _, o in cases]
    return SimpleNamespace(state=SimpleNamespace(batch=batch, output=output, metrics={}))


def test_single_case_with_dense_reference_and_no_reference_ef(tmp_path):
    lx = [6, 5, 3, 2, 4, 6]
    pred = _prediction(lx)
    batch, output = _case("/data/dense.nii.gz", lx, reference=pred.copy())
    engine = _engine([(batch, output)])
    handler = TemporalSegmentationReport(tmp_path, CLASS_NAMES, n_plots=4)
    handler._started(engine)
    handler.iteration_completed(engine)
    handler(engine)
    doc = json.loads((tmp_path / "temporal_summary.json").read_text())
    assert "ef_detection" not in doc and "ref_ef_percent" not in doc["measures"]
    assert doc["n_cases"] == 1
    assert doc["measures"]["frame_dice"]["summary"]["LV cavity"]["avg"] == 1.0
    # the reference is dense and equal to the prediction: its smoothness is the prediction's
    ref_row = doc["measures"]["ref_smoothness_l2"]["summary"]["LV cavity"]
    assert ref_row["avg"] == pytest.approx(SMOOTH_CAVITY[0]) and ref_row["n"] == 1
    (row,) = _rows(tmp_path / "temporal_per_case.csv")
    assert row["annotated_frames"] == "0 1 2 3 4 5" and row["ref_ef_percent"] == "nan"
    assert float(row["ref_surface_distance_lv_cavity"]) == pytest.approx(SD_CAVITY[0])
    assert set(engine.state.metrics) == {
        f"{m}_{c}" for m in ("frame_dice", "smoothness_l2", "surface_distance") for c in ("lv_cavity", "lv_myocardium")
    }
    for name in ("temporal_lv_volume.png", "temporal_through_time.png"):
        assert imread(tmp_path / name).shape[0] > 100


def test_no_plots_no_surface_distance_and_no_image(tmp_path):
    batch, output = _case("/data/a.nii.gz", CASES[0][1], 62.0)
    del batch["image"], output["image"]
    engine = _engine([(batch, output)])
    handler = TemporalSegmentationReport(tmp_path, ["cavity", "myo"], n_plots=0, surface_distance=False, prefix="x")
    handler.iteration_completed(engine)
    handler(engine)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_per_case.csv", "x_summary.json"]
    assert "surface_distance_cavity" not in _rows(tmp_path / "x_per_case.csv")[0]
    assert "surface_distance" not in json.loads((tmp_path / "x_summary.json").read_text())["measures"]
    assert engine.state.metrics["ef_mae"] == pytest.approx(abs(EF[0] - 62.0))
    assert engine.state.metrics["ef_specificity"] == 1.0 and math.isnan(engine.state.metrics["ef_sensitivity"])


def test_bad_input_is_named(tmp_path):
    batch, output = _case("/data/a.nii.gz", CASES[0][1])
    batch["ejection_fraction"] = torch.tensor(float("nan"))
    handler = TemporalSegmentationReport(tmp_path, CLASS_NAMES)
    with pytest.raises(ValueError, match=r"case '/data/a.nii.gz': 'ejection_fraction' must be one finite"):
        handler.iteration_completed(_engine([(batch, output)]))
    batch, output = _case("/data/a.nii.gz", CASES[0][1])
    del batch["image"], output["image"]
    with pytest.raises(ValueError, match=r"no 'image' in the engine output or batch"):
        handler.iteration_completed(_engine([(batch, output)]))
    with pytest.raises(ValueError, match=r"lv_class must be one of the classes"):
        TemporalSegmentationReport(tmp_path, CLASS_NAMES, lv_class=3)
    with pytest.raises(ValueError, match=r"display_window_hu must be two finite numbers"):
        TemporalSegmentationReport(tmp_path, CLASS_NAMES, display_window_hu=(600, -200))
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_display_window_maps_hu_to_the_scaled_image():
    handler = TemporalSegmentationReport("unused", CLASS_NAMES, display_window_hu=(-1024, 0))
    assert handler.display_window == pytest.approx((-1.0, 0.0))
    handler = TemporalSegmentationReport("unused", CLASS_NAMES, display_window_hu=(-200, 600), hu_range=None)
    assert handler.display_window == (-200.0, 600.0)


class _PredictionFromImage(torch.nn.Module):
    """A "network" whose output is known: the image holds the prediction as class * 100."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = torch.round(x[:, 0] / 100).long()
        return torch.nn.functional.one_hot(index, 3).permute(0, 5, 1, 2, 3, 4).float()


def test_monai_evaluator_with_handler_from_a_bundle_config(tmp_path):
    """Built by MONAI's ConfigParser as a bundle would, run by a SupervisedEvaluator: decollated batches carry the
    datalist's ejection_fraction (a 0-d tensor after collation) and argmax-ed MetaTensor predictions."""
    data = []
    for name, lx, ef, half in CASES:
        _, output = _case(name, lx, ef, half)
        data.append({"image": output["pred"] * 100.0, "label": output["label"], "ejection_fraction": ef})
    config = {
        "_target_": "common.handlers.temporal_report.TemporalSegmentationReport",
        "output_dir": str(tmp_path),
        "class_names": CLASS_NAMES,
        "prefix": "test_temporal",
        "display_window_hu": [0, 200],
        "hu_range": None,
    }
    handler = ConfigParser({"handler": config}).get_parsed_content("handler")
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(data), batch_size=2, num_workers=0),
        network=_PredictionFromImage(),
        postprocessing=AsDiscreted(keys="pred", argmax=True),
        val_handlers=[handler],
    )
    evaluator.run()
    assert evaluator.state.metrics["ef_mae"] == pytest.approx(MAE)
    assert evaluator.state.metrics["frame_dice_lv_myocardium"] == pytest.approx(statistics.fmean(DICE_MYO))
    rows = _rows(tmp_path / "test_temporal_per_case.csv")
    assert [r["filename"] for r in rows] == [n for n, *_ in CASES]
    assert [float(r["ref_ef_percent"]) for r in rows] == REF_EF
    assert [float(r["edv_ml"]) for r in rows] == pytest.approx(EDV)  # 2 mm spacing read from the affine
