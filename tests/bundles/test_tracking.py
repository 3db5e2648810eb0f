"""What a person watching a run sees, for every bundle: TensorBoard scalars, an MLflow run, progress bars with ETA.

Each bundle trains for two tiny epochs on a small phantom through the real command line
(``python -m monai.bundle run ... --tracking mlflow``), then infers two cases; the test reads the TensorBoard event
files and the MLflow run back, and checks the console: a progress bar with an ETA, one log line per epoch.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from monai.bundle import ConfigWorkflow

from tests.conftest import cli_args, fast_overrides

SMALL_PHANTOM = {"phantom_n_train": 4, "phantom_n_validation": 1, "phantom_n_test": 2}  # 4 >= any batch size
TINY_RUN = {"train#trainer#max_epochs": 2, "train#trainer#epoch_length": 2, "val_interval": 1, "num_workers": 0}


def bundle_run(configs: list[Path], overrides: dict, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", repr([str(c) for c in configs])]
    cmd += ["--logging_file", str(configs[0].parent / "logging.conf"), *cli_args(overrides), *extra]
    result = subprocess.run(
        cmd,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return result


def foreground_names(bundle: Path) -> list[str]:
    meta = json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))
    channel_def = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    return [name for value, name in sorted(channel_def.items(), key=lambda kv: int(kv[0])) if int(value) > 0]


@pytest.mark.slow
def test_tensorboard_mlflow_and_progress(bundle, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    configs = bundle / "configs"
    common = {
        "dataset_dir": str(tmp_path / "data"),
        "output_dir": str(tmp_path / "eval"),
        "ckpt_dir": str(tmp_path / "models"),
        **SMALL_PHANTOM,
        **fast_overrides(bundle),
    }
    # MONAI 1.5.2 names the executed-config artifact by appending to the raw output_dir, which works for the
    # configs' own "$@bundle_root + '/eval'" but not for a plain path given on the command line: name it here
    executed = tmp_path / "eval" / "config_executed.json"
    train = bundle_run(
        [configs / "train.json", configs / "demo.json"],
        {**common, **TINY_RUN, "save_execute_config": str(executed)},
        "--tracking",
        "mlflow",
    )

    # TensorBoard: the loss and learning rate per iteration, the validation Dice and each class's Dice per epoch
    events = EventAccumulator(str(tmp_path / "eval"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train_loss", "learning_rate"} <= tags, tags
    assert len(events.Scalars("train_loss")) == 4 and len(events.Scalars("learning_rate")) == 4  # 2 epochs x 2
    assert len(events.Scalars("train_epoch_loss")) == 2
    train_cfg = json.loads((configs / "train.json").read_text(encoding="utf-8"))
    (val_metric,) = train_cfg["validate"]["key_metric"]  # the key metric (a bundle may log others, e.g. val_loss)
    per_class = {f"{val_metric}_per_class/{name}" for name in foreground_names(bundle)}
    assert per_class <= tags, sorted(tags)
    assert [e.step for e in events.Scalars(val_metric)] == [1, 2]

    # MLflow: a run in the output folder's mlruns, with params, the metrics and the executed config as artifact
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads its file store only when told to
    client = MlflowClient(tracking_uri=(tmp_path / "eval" / "mlruns").as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "monai_experiment"]
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["max_epochs"] == "2" and run.data.params["epoch_length"] == "2"
    assert {"train_loss", val_metric} | per_class <= set(run.data.metrics), run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 4
    assert executed.name in [a.path for a in client.list_artifacts(run.info.run_id)], "no executed config"
    assert json.loads(executed.read_text())["dataset_dir"] == common["dataset_dir"]

    # the console: a progress bar with ETA ([n/total] and elapsed<remaining), one log line per epoch, none per
    # iteration
    console = train.stdout + train.stderr
    assert re.search(r"\[2/2\].*\[\d\d:\d\d<\d\d:\d\d", console), console[-2000:]
    assert not re.search(r"Iter: \d+/\d+", console), "a log line per iteration"
    assert len(re.findall(r"Epoch\[\d+\] Metrics", console)) >= 2

    # inference over several cases: one bar over the cases
    infer = bundle_run(
        [configs / "inference.json", configs / "demo.json"], {**common, "output_dir": str(tmp_path / "seg")}
    )
    assert re.search(r"infer.*\[2/2\]", infer.stderr + infer.stdout), (infer.stderr + infer.stdout)[-2000:]


def test_tracking_uri_switches_the_mlflow_server(bundle, tmp_path):
    """``--tracking_uri`` replaces the local mlruns folder (e.g. a server); without it the run goes under output_dir."""
    configs = [str(bundle / "configs" / "train.json"), str(bundle / "configs" / "demo.json")]
    overrides = {"output_dir": str(tmp_path / "eval"), "dataset_dir": str(tmp_path / "data")}
    default = ConfigWorkflow(config_file=configs, workflow_type="train", tracking="mlflow", **overrides)
    assert default.parser.get_parsed_content("tracking_uri") == (tmp_path / "eval").as_uri() + "/mlruns"
    server = ConfigWorkflow(
        config_file=configs, workflow_type="train", tracking="mlflow", tracking_uri="http://127.0.0.1:5000", **overrides
    )
    assert server.parser.get_parsed_content("tracking_uri") == "http://127.0.0.1:5000"
    handlers = server.parser["train#handlers"]
    (mlflow_handler,) = [h for h in handlers if h.get("_target_") == "MLFlowHandler"]
    assert mlflow_handler["tracking_uri"] == "@tracking_uri"
