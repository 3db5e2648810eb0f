"""Ignite handler for one of the paper's sparse-annotation measures (Dice, CMD, AVD, MVD)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from monai.handlers import IgniteMetricHandler
from monai.utils import MetricReduction

from common.metrics.sparse_metric import SparseSegmentationMetric

__all__ = ["SparseSegmentationMeasure"]


class SparseSegmentationMeasure(IgniteMetricHandler):
    """Computes :class:`common.metrics.sparse_metric.SparseSegmentationMetric` over an epoch (paper Section IV-A).

    Used like MONAI's ``MeanDice`` handler: as a key metric or an additional metric of a trainer or evaluator, on
    ``[B, 1, *spatial]`` predicted and reference label maps (``output_transform`` picks them from the engine output).
    With ``save_details`` the per-case, per-class values land in ``engine.state.metric_details[<name>]``, where
    :class:`common.handlers.SegmentationReport` reads them.

    Args:
        measure: ``"dice"``, ``"cmd"``, ``"avd"``, ``"mvd"`` (mm³) or ``"mvd_cm3"``.
        classes: the label values scored.
        ignore_value: the reference value meaning "not annotated".
        reduction: MONAI metric reduction over cases and classes.
        output_transform: engine output -> ``(y_pred, y)``.
        save_details: keep the per-case values in ``engine.state.metric_details``.
    """

    def __init__(
        self,
        measure: str = "dice",
        classes: Sequence[int] = (1, 2, 3, 4),
        ignore_value: int = 0,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = SparseSegmentationMetric(
            measure=measure, classes=classes, ignore_value=ignore_value, reduction=reduction
        )
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)
