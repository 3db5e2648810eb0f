"""Tests of common.report, the demo's closing summary, on hand-made report folders.

The metric names, prefix and folders must come from the bundle's configs: once from a copy of the abdominal
bundle's real configs, once from hand-made configs with other names, a unit and a disabled handler.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.report import EvaluationOutputs, demo_summary, find_evaluation_outputs

REPO = Path(__file__).resolve().parents[2]
ABDOMINAL = REPO / "bundles" / "abdominal_ct_multiorgan_segmentation"


def _write_json(path: Path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2))


def _row(avg, std, lo, hi, n):
    return {"avg": avg, "std": std, "min": lo, "max": hi, "n": n}


@pytest.fixture
def abdominal_copy(tmp_path) -> Path:
    """The abdominal bundle's configs in a temporary bundle folder, with a hand-made evaluation report."""
    bundle = tmp_path / "abdominal"
    for name in ("train.json", "evaluate.json", "demo.json", "inference.json"):
        (bundle / "configs").mkdir(parents=True, exist_ok=True)
        shutil.copy(ABDOMINAL / "configs" / name, bundle / "configs" / name)
    # written in the format before units were recorded (no "measure"/"unit"): read as a ratio
    summary = {
        "liver": _row(0.9, 0.05, 0.85, 0.95, 4),
        "gallbladder": _row(None, None, None, None, 0),
        "Total Avg.": _row(0.9, 0.05, 0.85, 0.95, 4),
    }
    _write_json(
        bundle / "eval" / "test_val_mean_dice_summary.json",
        {"metric": "val_mean_dice", "n_cases": 4, "summary": summary},
    )
    for name in ("test_val_mean_dice_per_case.csv", "test_val_mean_dice_boxplot.png", "test_overlays.png"):
        (bundle / "eval" / name).write_text("x")
    (bundle / "eval" / "validation").mkdir()
    (bundle / "eval" / "validation" / "val_mean_dice_summary.json").write_text("{}")
    (bundle / "eval" / "inference").mkdir()
    for name in ("a_seg.nii.gz", "b_seg.nii.gz"):
        (bundle / "eval" / "inference" / name).write_text("x")
    return bundle


def test_finds_the_abdominal_report_from_its_configs(abdominal_copy):
    outputs = find_evaluation_outputs(str(abdominal_copy))
    # evaluate.json: SegmentationReport(output_dir=@output_dir, metric_names=["val_mean_dice"],
    # prefix=eval_datalist_key + "_" with eval_datalist_key "test"); train.json: output_dir bundle_root + "/eval"
    assert outputs == EvaluationOutputs(
        report_dir=abdominal_copy / "eval",
        prefix="test_",
        metric_names=("val_mean_dice",),
        log_dir=abdominal_copy / "eval",
        model_file=abdominal_copy / "models" / "model.pt",
        inference_dir=abdominal_copy / "eval" / "inference",
    )


def test_train_json_alone_gives_the_validation_report_with_the_default_metric(abdominal_copy):
    outputs = find_evaluation_outputs(str(abdominal_copy), [str(abdominal_copy / "configs" / "train.json")])
    # train.json's validate handler names no metric_names (the handler's default) and no prefix
    assert outputs.report_dir == abdominal_copy / "eval" / "validation"
    assert outputs.prefix == "" and outputs.metric_names == ("val_mean_dice",)
    assert outputs.model_file is None  # ckpt_file is defined in evaluate.json only


def test_demo_summary_of_the_abdominal_report(abdominal_copy):
    text = demo_summary(str(abdominal_copy), train_seconds=61.4, eval_seconds=9, infer_seconds=None)
    lines = text.splitlines()
    assert lines[0] == "Phantom held-out cases (n=4), val_mean_dice"
    assert lines[1].split() == ["Dice", "(%)", "Avg.", "Std.", "Min.", "Max.", "n"]
    assert lines[2].split() == ["liver", "90.0%", "5.0%", "85.0%", "95.0%", "4"]
    assert lines[3].split() == ["gallbladder", "n/a", "n/a", "n/a", "n/a", "0"]
    assert lines[4].split()[:3] == ["Total", "Avg.", "90.0%"]
    assert "time: train 61 s, evaluate 9 s" in lines
    eval_dir = abdominal_copy / "eval"
    assert f"  model (state_dict)   {abdominal_copy / 'models' / 'model.pt'}" in lines
    reports = [line.split()[-1] for line in lines if line.startswith("  report")]
    assert reports == [
        str(eval_dir / name)
        for name in (
            "test_overlays.png",
            "test_val_mean_dice_boxplot.png",
            "test_val_mean_dice_per_case.csv",
            "test_val_mean_dice_summary.json",
        )
    ]
    assert f"  label maps ( 2)      {eval_dir / 'inference'}/" in lines
    assert lines[-1] == f"  TensorBoard logs     {eval_dir}  (tensorboard --logdir {eval_dir})"


@pytest.fixture
def other_bundle(tmp_path) -> Path:
    """A hand-made bundle: other metric names, a unit, a computed prefix and folder, a disabled report first."""
    bundle = tmp_path / "other"
    _write_json(
        bundle / "configs" / "train.json",
        {
            "bundle_root": "/nowhere",  # replaced by the bundle folder given to common.report
            "output_dir": "$@bundle_root + '/runs'",
            "never_evaluated": "$1 / 0",
            "network": {"_target_": "does.not.Exist"},
            "validate": {"handlers": [{"_target_": "StatsHandler"}]},
        },
    )
    _write_json(
        bundle / "configs" / "evaluate.json",
        {
            "split": "holdout",
            "report_metrics": ["val_cmd", "val_ef"],
            "validate#handlers": [
                {"_target_": "CheckpointLoader", "load_path": "@never_evaluated", "load_dict": {"m": "@network"}},
                {"_target_": "common.handlers.SegmentationReport", "_disabled_": "true", "output_dir": "$1 / 0"},
                {
                    "_target_": "common.handlers.segmentation_report.SegmentationReport",
                    "output_dir": "$@output_dir + '/reports'",
                    "class_names": "@never_evaluated",
                    "metric_names": "@report_metrics",
                    "metric_specs": {"val_cmd": {"label": "CMD", "unit": "mm"}},
                    "prefix": "$@split + '_'",
                },
            ],
        },
    )
    summary = {"liver": _row(2.25, 0.5, 1.5, 3.0, 3), "Total Avg.": _row(2.25, 0.5, 1.5, 3.0, 3)}
    _write_json(
        bundle / "runs" / "reports" / "holdout_val_cmd_summary.json",
        {"metric": "val_cmd", "measure": "CMD", "unit": "mm", "n_cases": 3, "std_ddof": 0, "summary": summary},
    )
    return bundle


def test_demo_summary_reads_names_prefix_folder_and_unit_from_other_configs(other_bundle):
    outputs = find_evaluation_outputs(str(other_bundle))
    assert outputs.report_dir == other_bundle / "runs" / "reports"
    assert outputs.prefix == "holdout_" and outputs.metric_names == ("val_cmd", "val_ef")
    assert outputs.model_file is None and outputs.inference_dir is None  # no ckpt_file, no inference.json

    lines = demo_summary(str(other_bundle)).splitlines()
    assert lines[0] == "Phantom held-out cases (n=3), val_cmd"
    assert lines[1].split() == ["CMD", "(mm)", "Avg.", "Std.", "Min.", "Max.", "n"]
    assert lines[2].split() == ["liver", "2.2", "0.5", "1.5", "3.0", "3"]  # as is, no percent (2.25 rounds to even)
    summary_ef = other_bundle / "runs" / "reports" / "holdout_val_ef_summary.json"
    assert f"no evaluation summary for val_ef at {summary_ef}" in lines
    assert not any("model" in line or "label maps" in line for line in lines)


def test_no_report_handler_is_an_error(tmp_path):
    bundle = tmp_path / "b"
    _write_json(bundle / "configs" / "train.json", {"validate": {"handlers": [{"_target_": "StatsHandler"}]}})
    _write_json(bundle / "configs" / "evaluate.json", {})
    with pytest.raises(ValueError, match="no enabled SegmentationReport in 'validate#handlers'"):
        find_evaluation_outputs(str(bundle))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        find_evaluation_outputs(str(bundle), [str(bundle / "configs" / "missing.json")])


def test_command_line(abdominal_copy):
    c = abdominal_copy / "configs"
    configs = f"['{c / 'train.json'}','{c / 'evaluate.json'}','{c / 'demo.json'}']"  # as scripts/demo.sh passes them
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "common.report",
            str(abdominal_copy),
            "--config_files",
            configs,
            "--train_seconds",
            "12",
        ],
        cwd=REPO,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Phantom held-out cases (n=4), val_mean_dice"
    assert "time: train 12 s" in lines
    assert any(line.endswith("test_overlays.png") for line in lines)


def test_demo_summary_shows_a_temporal_report(other_bundle):
    """A TemporalSegmentationReport in validate#handlers: Table 2's measures per class and the EF line."""
    evaluate = other_bundle / "configs" / "evaluate.json"
    config = json.loads(evaluate.read_text())
    config["validate#handlers"].append(
        {
            "_target_": "common.handlers.temporal_report.TemporalSegmentationReport",
            "output_dir": "$@output_dir + '/reports'",
            "class_names": "@never_evaluated",
            "prefix": "$@split + '_temporal'",
        }
    )
    evaluate.write_text(json.dumps(config))
    cavity, total = _row(0.9, 0.1, 0.8, 1.0, 2), _row(0.8, 0.1, 0.7, 0.9, 2)
    measures = {
        "frame_dice": {"summary": {"LV cavity": cavity, "Total Avg.": total}},
        "smoothness_l2": {"summary": {"LV cavity": _row(3.126, 0.1, 3.0, 3.2, 2)}},
        "surface_distance": {"summary": {"LV cavity": _row(None, None, None, None, 0)}},
    }
    detection = {"threshold": 55.0, "n_cases": 2, "mae": 4.44, "sensitivity": 1.0, "specificity": 0.5}
    _write_json(
        other_bundle / "runs" / "reports" / "holdout_temporal_summary.json",
        {"n_cases": 2, "measures": measures, "ef_detection": detection},
    )
    outputs = find_evaluation_outputs(str(other_bundle))
    assert outputs.temporal_summaries == (other_bundle / "runs" / "reports" / "holdout_temporal_summary.json",)
    lines = demo_summary(str(other_bundle)).splitlines()
    start = lines.index("Phantom held-out sequences (n=2), Table 2's measures (mean over sequences)")
    assert lines[start + 1].split() == ["Dice", "smoothness", "L2", "surface", "(mm)"]
    assert lines[start + 2].split() == ["LV", "cavity", "0.900", "3.13", "n/a"]
    assert lines[start + 3] == (
        "ejection fraction: mean absolute error 4.4 percentage points over 2 sequences; reduced EF (< 55 %) detected "
        "with sensitivity 1.00, specificity 0.50"
    )
    assert f"  report               {outputs.temporal_summaries[0]}" in lines
