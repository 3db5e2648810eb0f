"""What TensorBoard, MLflow and the logs track: the loss with the learning rate, and validation measures per class.

MONAI's ``TensorBoardStatsHandler``, ``MLFlowHandler`` and ``StatsHandler`` write the scalars of
``engine.state.metrics`` at every epoch and whatever an ``output_transform`` returns at every iteration; neither
sees a measure's per-class values (``engine.state.metric_details``, a ``[n_cases, n_classes]`` array) or the
optimiser's learning rate. :class:`PerClassMetrics` turns the first into scalars of ``engine.state.metrics`` and
:func:`loss_and_learning_rate` adds the second to the iteration output, so every tracker gets both unchanged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import from_engine
from monai.utils import convert_to_numpy, ensure_tuple

__all__ = ["PerClassMetrics", "local_mlflow_store", "loss_and_learning_rate"]

logger = logging.getLogger(__name__)


def local_mlflow_store(output_dir: str | os.PathLike) -> str:
    """The URI of the run's local MLflow store, ``<output_dir>/mlruns``, opting in to MLflow's file store.

    MONAI's ``--tracking mlflow`` settings log to that folder (``tracking_uri``), but MLflow 3 keeps its file store
    in maintenance mode and refuses it unless ``MLFLOW_ALLOW_FILE_STORE`` is true; this sets it (when unset) for
    this process, so the documented command works as it is. A config's ``tracking_uri`` id calls this; a
    ``--tracking_uri`` given on the command line (a tracking server, or ``sqlite:///...``) replaces the id and this
    is never called.

    Args:
        output_dir: the workflow's output folder.

    Returns:
        ``file://.../mlruns``, as MONAI's default ``tracking_uri``.
    """
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (Path(output_dir).absolute() / "mlruns").as_uri()


def loss_and_learning_rate(
    optimizer: torch.optim.Optimizer, loss_key: str = "loss", loss_name: str = "train_loss"
) -> Callable[[Any], dict[str, float]]:
    """An ``output_transform`` giving the iteration's loss and the optimiser's current learning rate.

    For ``TensorBoardStatsHandler``/``MLFlowHandler``, which write each entry of a returned dict as a scalar.

    Args:
        optimizer: the trainer's optimiser; the rate of its first parameter group is reported.
        loss_key: key of the loss in ``engine.state.output``.
        loss_name: name under which the loss is written.

    Returns:
        a callable ``output -> {loss_name: loss, "learning_rate": lr}``.
    """
    get_loss = from_engine([loss_key], first=True)

    def transform(output: Any) -> dict[str, float]:
        loss = get_loss(output)
        value = loss.item() if isinstance(loss, torch.Tensor) else float(loss)
        return {loss_name: value, "learning_rate": float(optimizer.param_groups[0]["lr"])}

    return transform


class PerClassMetrics:
    """Ignite handler: each class's mean of a per-case measure, as scalars ``<metric>_per_class/<class>``.

    At ``EPOCH_COMPLETED`` it reads ``engine.state.metric_details[metric]`` (``[n_cases, n_classes]``, from a MONAI
    metric handler with ``save_details=True``), averages every column over the cases (NaN, a class absent from a
    case, left out) and stores ``engine.state.metrics["<metric>_per_class/<class name>"]`` (TensorBoard groups the
    classes under ``<metric>_per_class``; a name below ``<metric>/`` would clash with the metric itself in
    MLflow's file store, where each metric is a file). Attach it before the
    ``StatsHandler``/``TensorBoardStatsHandler``/``MLFlowHandler`` of the same engine (handlers run in the order
    they are attached), so they log the per-class values with the mean.

    Args:
        class_names: label value -> name (background 0 left out, as metrics computed with
            ``include_background=False`` have a column per label from 1), or a list naming the columns in order.
        metric_names: names under which the metrics were attached.

    Raises:
        ValueError: ``class_names`` or ``metric_names`` is empty.
    """

    def __init__(self, class_names: Mapping[str | int, str] | Sequence[str], metric_names: str | Sequence[str]):
        if isinstance(class_names, Mapping):
            names = [str(n) for v, n in sorted(class_names.items(), key=lambda kv: int(kv[0])) if int(v) > 0]
        else:
            names = [str(n) for n in class_names]
        if not names:
            raise ValueError(f"class_names must name at least one class, got {class_names!r}.")
        self.class_names = names
        self.metric_names = tuple(str(m) for m in ensure_tuple(metric_names))
        if not self.metric_names:
            raise ValueError("metric_names must name at least one metric.")

    def attach(self, engine: Engine) -> None:
        """Register on ``engine``'s ``EPOCH_COMPLETED``.

        Args:
            engine: an evaluator whose metrics were attached with ``save_details=True``.
        """
        if not engine.has_event_handler(self, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Store the per-class means of every metric in ``engine.state.metrics``.

        Args:
            engine: the engine at ``EPOCH_COMPLETED``.

        Raises:
            ValueError: a metric has no details, or its column count differs from the number of class names.
        """
        details = getattr(engine.state, "metric_details", None) or {}
        for metric in self.metric_names:
            if details.get(metric) is None:
                raise ValueError(
                    f"no metric_details[{metric!r}] (available: {sorted(details)}); attach the metric with "
                    "save_details=True"
                )
            values = convert_to_numpy(details[metric]).astype(np.float64)
            values = values.reshape(values.shape[0], -1)
            if values.shape[1] != len(self.class_names):
                raise ValueError(
                    f"metric_details[{metric!r}] has {values.shape[1]} columns, but {len(self.class_names)} class "
                    f"names were given: {self.class_names}"
                )
            valid = ~np.isnan(values)
            counts = valid.sum(axis=0)
            sums = np.where(valid, values, 0.0).sum(axis=0)
            for name, total, n in zip(self.class_names, sums, counts, strict=True):
                engine.state.metrics[f"{metric}_per_class/{name}"] = float(total / n) if n else float("nan")
