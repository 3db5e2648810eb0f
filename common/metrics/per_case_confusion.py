"""Per-case precision, sensitivity or specificity of one-hot segmentations (Kayalıbay et al. 2017, Tables 4-5).

The paper reports, besides the Dice score, "the precision and the sensitivity achieved on the same test sets and the
same regions. Precision is defined as the probability of a positively classified sample being actually positive,
while sensitivity describes the probability of a positive sample being classified as positive" (section 4.2). MONAI's
``ConfusionMatrixMetric`` computes these from per-case confusion matrices but keeps the matrices, not the per-case
values, in its buffer, so an evaluation report (which reads ``save_details``) would get ``[cases, classes, 4]``
counts. :class:`PerCaseConfusionMetric` keeps the per-case values ``[cases, classes]`` instead, computed with
MONAI's own ``get_confusion_matrix`` and ``compute_confusion_matrix_metric``.
"""

from __future__ import annotations

import torch
from monai.metrics import CumulativeIterationMetric
from monai.metrics.confusion_matrix import compute_confusion_matrix_metric, get_confusion_matrix
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

__all__ = ["PerCaseConfusionMetric"]


class PerCaseConfusionMetric(CumulativeIterationMetric):
    """One confusion-matrix measure per case and channel; the buffer holds the values, ``aggregate`` their mean.

    Args:
        metric_name: a name ``compute_confusion_matrix_metric`` knows, e.g. ``"precision"``, ``"sensitivity"``,
            ``"specificity"``.
        include_background: whether channel 0 is scored.

    Example:
        ``IgniteMetricHandler(metric_fn=PerCaseConfusionMetric("precision"), save_details=True)``: the handler's
        value is the mean over cases and channels (NaN entries skipped), ``metric_details`` the per-case values.
    """

    def __init__(self, metric_name: str = "precision", include_background: bool = True) -> None:
        super().__init__()
        self.metric_name = metric_name
        self.include_background = include_background

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """The measure of each case and channel of a batch.

        Args:
            y_pred: binarised prediction ``[B, C, *spatial]``.
            y: one-hot reference ``[B, C, *spatial]``.

        Returns:
            ``[B, C]`` values, NaN where undefined (e.g. precision of a case with nothing predicted).
        """
        matrix = get_confusion_matrix(y_pred=y_pred, y=y, include_background=self.include_background)
        return compute_confusion_matrix_metric(self.metric_name, matrix)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        """The mean over every case and channel with a defined value.

        Returns:
            a scalar tensor (NaN when no value is defined).

        Raises:
            ValueError: when the buffer is not a tensor (nothing accumulated).
        """
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError(f"the data to aggregate must be a PyTorch Tensor, got {type(data)}.")
        mean, _ = do_metric_reduction(data, MetricReduction.MEAN)
        return mean
