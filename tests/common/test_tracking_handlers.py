"""PerClassMetrics, loss_and_learning_rate and ProgressBar on small hand-made engines."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from common.handlers import PerClassMetrics, ProgressBar, local_mlflow_store, loss_and_learning_rate


def engine_with_details(details: dict) -> Engine:
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_STARTED)
    def _set(e):
        e.state.metric_details = details

    return engine


def test_per_class_means_skip_nan_and_name_the_classes():
    values = torch.tensor([[0.5, float("nan"), 1.0], [0.7, float("nan"), 0.0], [0.9, float("nan"), 0.5]])
    engine = engine_with_details({"val_mean_dice": values})
    PerClassMetrics({"0": "background", "1": "liver", "2": "spleen", "3": "portal vein"}, "val_mean_dice").attach(
        engine
    )
    engine.run([0], max_epochs=1)
    metrics = engine.state.metrics
    assert metrics["val_mean_dice_per_class/liver"] == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert math.isnan(metrics["val_mean_dice_per_class/spleen"])  # absent from every case
    assert metrics["val_mean_dice_per_class/portal vein"] == pytest.approx(0.5)
    assert "val_mean_dice_per_class/background" not in metrics


def test_per_class_refuses_a_column_count_that_does_not_match():
    engine = engine_with_details({"val_mean_dice": np.zeros((2, 3))})
    PerClassMetrics(["a", "b"], ["val_mean_dice"]).attach(engine)
    with pytest.raises(ValueError, match="3 columns, but 2 class names"):
        engine.run([0], max_epochs=1)
    engine = engine_with_details({})
    PerClassMetrics(["a"], "val_dice").attach(engine)
    with pytest.raises(ValueError, match="save_details=True"):
        engine.run([0], max_epochs=1)
    with pytest.raises(ValueError, match="class_names"):
        PerClassMetrics({"0": "background"}, "m")


def test_loss_and_learning_rate_follow_the_optimiser():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    transform = loss_and_learning_rate(optimizer)
    assert transform([{"loss": torch.tensor(2.5)}]) == {"train_loss": 2.5, "learning_rate": pytest.approx(0.1)}
    optimizer.step()
    scheduler.step()
    assert transform([{"loss": 1.0}])["learning_rate"] == pytest.approx(0.05)


def test_progress_bar_shows_output_and_eta_from_constructor_arguments():
    out = io.StringIO()
    engine = Engine(lambda e, b: {"loss": 0.25 * b})
    ProgressBar(output_transform=lambda o: o["loss"], desc="train", file=out, mininterval=0).attach(engine)
    engine.run([1, 2, 3, 4], max_epochs=1)
    text = out.getvalue()
    assert "train" in text and "[4/4]" in text and "100%" in text
    assert "output=1" in text.replace(" ", "")  # the last loss, 0.25 * 4
    assert "<00:00" in text  # elapsed<remaining: the ETA


def test_progress_bar_shows_the_final_state_of_a_quick_run():
    """tqdm's default 0.1 s refresh interval skips the last iterations of a fast run; the bar still shows [n/n]
    before it is cleared at the end of the epoch (a quick inference over two small cases)."""
    out = io.StringIO()
    engine = Engine(lambda e, b: None)
    ProgressBar(desc="infer", file=out, mininterval=3600).attach(engine)  # no refresh would come by itself
    engine.run([1, 2], max_epochs=1)
    assert "infer: [2/2] 100%" in out.getvalue(), out.getvalue()


def test_local_mlflow_store_opts_in_and_returns_the_folder_uri(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    assert local_mlflow_store(tmp_path / "eval") == (tmp_path / "eval" / "mlruns").as_uri()
    import os

    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "false")  # a user's explicit choice is kept
    local_mlflow_store(tmp_path)
    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "false"
