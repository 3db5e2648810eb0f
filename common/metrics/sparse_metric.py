"""The paper's measures as a MONAI cumulative metric, for evaluators and ``SparseSegmentationMeasure`` handlers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

from common.metrics.sparse_measures import sparse_segmentation_measures

__all__ = ["MEASURES", "SparseSegmentationMetric"]

#: measure name -> key of :func:`~common.metrics.sparse_measures.sparse_segmentation_measures`' per-class results
MEASURES = {"dice": "dice", "cmd": "cmd_mm", "avd": "avd_percent", "mvd": "mvd_mm3", "mvd_cm3": "mvd_mm3"}
_SCALE = {"mvd_cm3": 1e-3}  # measure -> factor on the computed value (mm³ -> cm³)


def _spacing(image: torch.Tensor, spatial_dims: int) -> tuple[float, ...]:
    """Voxel size (mm) of a MetaTensor from its affine; 1 mm for a plain tensor (sub-volumes carry no geometry).

    A fourth spatial axis beyond the affine's three (3D+time, ``[B, 1, X, Y, Z, T]``) counts one frame per voxel.

    Returns:
        one positive number per spatial axis.
    """
    affine = getattr(image, "affine", None)
    if affine is None:
        return (1.0,) * spatial_dims
    matrix = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    matrix = matrix[-1] if matrix.ndim == 3 else matrix  # a batch's affines: one item's
    n = min(spatial_dims, matrix.shape[0] - 1)
    return tuple(float(s) for s in np.linalg.norm(matrix[:n, :n], axis=0)) + (1.0,) * (spatial_dims - n)


class SparseSegmentationMetric(CumulativeIterationMetric):
    """One of the paper's measures per case and class, scored on the annotated voxels only (Section IV-A).

    ``measure`` is ``"dice"`` (Dice coefficient), ``"cmd"`` (contour mean distance, mm), ``"avd"`` (absolute volume
    difference, %), ``"mvd"`` (mean volume difference, mm³) or ``"mvd_cm3"`` (the same in cm³, as the head CT paper
    reports the absolute volume difference per case), computed by
    :func:`common.metrics.sparse_measures.sparse_segmentation_measures` from the predicted and reference label maps:
    ``y_pred`` and ``y`` are ``[B, 1, *spatial]`` index maps whose reference value ``ignore_value`` marks voxels
    without annotation. The voxel size comes from ``y_pred``'s (else ``y``'s) affine when they are MetaTensors (full
    volumes), else 1 mm (training sub-volumes, where only the Dice is used). ``buffer`` rows are ``[B, n_classes]``
    with NaN where a class is neither annotated nor predicted in the case; ``aggregate`` reduces them like MONAI's
    ``DiceMetric`` (``reduction``, NaN left out).

    Args:
        measure: ``"dice"``, ``"cmd"``, ``"avd"``, ``"mvd"`` or ``"mvd_cm3"``.
        classes: the label values scored, e.g. ``[1, 2, 3, 4]``.
        ignore_value: the reference label value meaning "not annotated".
        reduction: MONAI metric reduction of ``aggregate``.
        get_not_nans: ``aggregate`` also returns the count of non-NaN values.

    Raises:
        ValueError: an unknown measure, or no class.
    """

    def __init__(
        self,
        measure: str = "dice",
        classes: Sequence[int] = (1, 2, 3, 4),
        ignore_value: int = 0,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__()
        if measure not in MEASURES:
            raise ValueError(f"measure must be one of {sorted(MEASURES)}, got {measure!r}.")
        if len(classes) == 0:
            raise ValueError("classes must name at least one label value.")
        self.measure = measure
        self.classes = tuple(int(c) for c in classes)
        self.ignore_value = int(ignore_value)
        self.reduction = reduction
        self.get_not_nans = get_not_nans

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Score each case of a batch.

        Args:
            y_pred: ``[B, 1, *spatial]`` predicted label map.
            y: ``[B, 1, *spatial]`` reference label map with ``ignore_value`` where not annotated.

        Returns:
            ``[B, n_classes]`` float32 values on ``y_pred``'s device.

        Raises:
            ValueError: a missing reference, index maps that are not single-channel, or shapes that differ.
        """
        if y is None:
            raise ValueError("the sparse measures need the reference label map y.")
        if y_pred.shape != y.shape or y_pred.ndim < 4 or y_pred.shape[1] != 1:
            raise ValueError(
                f"y_pred and y must be [B, 1, *spatial] label maps of one shape, got {tuple(y_pred.shape)} and "
                f"{tuple(y.shape)}."
            )
        spatial_dims = y_pred.ndim - 2
        spacing = _spacing(y_pred if hasattr(y_pred, "affine") else y, spatial_dims)
        key = MEASURES[self.measure]
        rows = []
        for pred, ref in zip(y_pred, y, strict=True):
            found = sparse_segmentation_measures(
                pred[0].detach().cpu().numpy(),
                ref[0].detach().cpu().numpy(),
                spacing=spacing,
                classes=self.classes,
                ignore_value=self.ignore_value,
                measures=(key,),
            )
            scale = _SCALE.get(self.measure, 1.0)
            rows.append([float(found[c][key]) * scale for c in self.classes])
        return torch.as_tensor(rows, dtype=torch.float32, device=y_pred.device)

    def aggregate(
        self, reduction: MetricReduction | str | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Reduce the buffered ``[n_cases, n_classes]`` values.

        Args:
            reduction: overrides the constructor's.

        Returns:
            the reduced value (and the count of non-NaN values with ``get_not_nans``).

        Raises:
            ValueError: when the buffer holds something other than one tensor.
        """
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError(f"the data to aggregate must be a tensor, got {type(data).__name__}.")
        f, not_nans = do_metric_reduction(data, reduction or self.reduction)
        return (f, not_nans) if self.get_not_nans else f
