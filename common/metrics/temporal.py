"""Frame-by-frame Dice, temporal smoothness and ejection fraction of 4D segmentations (cardiac 4D CNN, sec. 4).

The cardiac 4D CCTA paper evaluates (section 4, Table 2) the Dice score "frame by frame" on the annotated frames,
the temporal continuity of the produced label maps ("the L2 norm of the first-order time derivative of segmentation
labels, as well as the average surface distance between the consecutive frames"), and the ejection fraction "based
on the ratio of minimum and maximum LV cavity volume throughout the cardiac cycle", with a reduced EF (< 55 %,
section 3.4) detected against the clinical reports.

Inputs are integer class maps ``[X, Y, Z, T]`` (time last, as the networks' outputs), numpy arrays or torch tensors
(any device; they are copied to numpy), optionally with a leading channel of 1 (``[1, X, Y, Z, T]``); whole-valued
float maps (an argmax) are accepted. Classes: 0 background, 1 LV cavity, 2 LV myocardium; ``ignore_value`` (255)
fills the reference's unannotated frames. ``spacing`` is the voxel size in mm (one value or one per spatial axis).

Surface distances follow MONAI's ``compute_average_surface_distance(symmetric=True)``: the surface of a mask is
MONAI's edge (``get_mask_edges``: the voxels its 6-neighbour cross erosion removes, the outside of the volume counted
as background) and the symmetric average is the mean over the pooled distances of both surfaces' voxels to the other
surface. MONAI's function needs ``scipy.ndimage``, which the project's pinned requirements do not include, so the
numpy re-implementation of :mod:`common.metrics.sparse_measures` (checked there to match MONAI 1.5.2) is used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from common.metrics.sparse_measures import as_numpy, label_map, nearest_points, plain_contour, points_mm, spacing_vector

__all__ = [
    "EF_REDUCED_THRESHOLD",
    "consecutive_frame_surface_distance",
    "ef_detection",
    "ejection_fraction",
    "frame_dice",
    "lv_volume_curve",
    "temporal_smoothness_l2",
]

EF_REDUCED_THRESHOLD = 55.0
"""An ejection fraction below this (in %) is "reduced" (paper section 3.4, after its reference [4])."""

_MM3_PER_ML = 1000.0


def _sequence(x, name: str) -> np.ndarray:
    """A 4D label map ``[X, Y, Z, T]`` (a leading channel of 1 dropped); ValueError if not 4D or not whole values.

    Returns:
        the map as a numpy array.
    """
    return label_map(x, name, ndims=(4,))


def _voxel_ml(spacing) -> float:
    """Volume of one voxel in ml; 1 (a voxel count) when ``spacing`` is None; ValueError for a bad spacing.

    Returns:
        the volume.
    """
    if spacing is None:
        return 1.0
    return float(np.prod(spacing_vector(spacing, 3))) / _MM3_PER_ML


def _classes(classes: Sequence[int]) -> list[int]:
    """The classes as a list of ints.

    Returns:
        the list.

    Raises:
        ValueError: no class given.
    """
    values = [int(c) for c in classes]
    if not values:
        raise ValueError("classes must name at least one class, got an empty sequence.")
    return values


def _vector(values) -> np.ndarray:
    """Numbers (a sequence, numpy array or torch tensor) as a float64 numpy array.

    Returns:
        the array, of the input's shape.
    """
    if isinstance(values, torch.Tensor):
        values = as_numpy(values, "values")
    return np.asarray(values, dtype=np.float64)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    """``2|A∩B| / (|A| + |B|)`` of two boolean masks; 1.0 when both are empty.

    Returns:
        the Dice score.
    """
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def frame_dice(pred, label, classes: Sequence[int] = (1, 2), ignore_value: int = 255) -> dict:
    """Dice per class, frame by frame, on the annotated frames of the reference (section 4, Table 2).

    "The dice score is estimated frame by frame": each annotated 3D frame of ``label`` (one with no voxel equal to
    ``ignore_value``; a frame with some ignored voxels is not annotated) is scored on its own, and the frames' scores
    are averaged with equal weights. A class absent from both the prediction and the reference of a frame scores
    1.0 in that frame (nothing to find, nothing found); absent from exactly one of them it scores 0.0.

    Args:
        pred: predicted class map ``[X, Y, Z, T]``, numpy or torch.
        label: reference class map of the same shape, ``ignore_value`` in its unannotated frames.
        classes: the classes scored (1 LV cavity, 2 LV myocardium).
        ignore_value: the reference's value of unannotated frames.

    Returns:
        ``{"frames": [t, ...], "dice": {c: mean over the annotated frames}, "per_frame": {c: [dice per frame]}}``;
        the per-frame lists follow ``"frames"``, the annotated frame indices in increasing order.

    Raises:
        ValueError: a map that is not 4D, maps of different shapes, no class given, or no annotated frame.
    """
    pred_np, ref_np = _sequence(pred, "pred"), _sequence(label, "label")
    if pred_np.shape != ref_np.shape:
        raise ValueError(f"pred and label must have one shape [X, Y, Z, T], got {pred_np.shape} and {ref_np.shape}.")
    scored = _classes(classes)
    frames = [t for t in range(ref_np.shape[-1]) if not np.any(ref_np[..., t] == ignore_value)]
    if not frames:
        raise ValueError(
            f"label has no annotated frame: each of its {ref_np.shape[-1]} frames holds ignore_value={ignore_value}."
        )
    per_frame = {c: [_dice(pred_np[..., t] == c, ref_np[..., t] == c) for t in frames] for c in scored}
    return {"frames": frames, "dice": {c: float(np.mean(v)) for c, v in per_frame.items()}, "per_frame": per_frame}


def temporal_smoothness_l2(labels, classes: Sequence[int] = (1, 2), spacing=None) -> dict[int, float]:
    """L2 norm of the first-order time derivative of a label sequence, per class (section 4, Table 2).

    For class ``c`` with ``y_t`` the binary map of ``c`` in frame ``t``:
    ``S_c = sqrt( sum_{t=0}^{T-2} sum_v (y_{t+1, v} - y_{t, v})^2 * dV / (T - 1) )``, ``dV`` the voxel volume in ml
    (``spacing`` in mm; 1, i.e. voxels, when ``spacing`` is None): the square root of the mean volume that changes
    class membership per frame step, in sqrt(ml) (sqrt(voxels) without spacing). Lower is smoother. Consecutive
    frames only, no wrap-around.

    The paper's normalisation of this measure is not given, so only comparisons between runs of this project (the
    4D against the 3D network, as in Table 2) are meaningful, not the paper's absolute numbers (1.28 / 1.05).

    Args:
        labels: class map ``[X, Y, Z, T]``, numpy or torch (a prediction: no ignore value).
        classes: the classes measured.
        spacing: voxel size in mm (one value or three); None: volumes in voxels.

    Returns:
        ``{c: S_c}``.

    Raises:
        ValueError: a map that is not 4D or has fewer than 2 frames, no class given, or a bad spacing.
    """
    seq = _sequence(labels, "labels")
    n_frames = seq.shape[-1]
    if n_frames < 2:
        raise ValueError(f"labels must have at least 2 frames to differentiate in time, got shape {seq.shape}.")
    dv = _voxel_ml(spacing)
    result = {}
    for c in _classes(classes):
        y = (seq == c).astype(np.int8)
        changed = int(np.abs(np.diff(y, axis=-1)).sum())  # sum over t and v of (y_{t+1} - y_t)^2, y binary
        result[c] = math.sqrt(changed * dv / (n_frames - 1))
    return result


def _symmetric_asd(a: np.ndarray, b: np.ndarray, spacing: np.ndarray) -> float:
    """MONAI's symmetric average surface distance of two non-empty 3D masks, in mm.

    Returns:
        mean of the distances of both surfaces' voxels to the other surface.
    """
    points_a, points_b = points_mm(plain_contour(a), spacing), points_mm(plain_contour(b), spacing)
    a_to_b, b_to_a = nearest_points(points_a, points_b)
    return float(np.concatenate([a_to_b, b_to_a]).mean())


def consecutive_frame_surface_distance(labels, classes: Sequence[int] = (1, 2), *, spacing) -> dict[int, float]:
    """Average symmetric surface distance between consecutive frames, averaged over the frame pairs (section 4).

    For class ``c``: ``D_c = mean_t ASD(y_t, y_{t+1})`` over ``t = 0..T-2`` (no wrap-around), ``ASD`` being MONAI's
    ``compute_average_surface_distance(symmetric=True, spacing=spacing)`` (see the module note). A pair in which
    either frame has no voxel of ``c`` has no surface to measure to and is skipped; ``D_c`` is the mean over the
    remaining pairs, NaN when none remains.

    Args:
        labels: class map ``[X, Y, Z, T]``, numpy or torch.
        classes: the classes measured.
        spacing: voxel size in mm (one value or three).

    Returns:
        ``{c: D_c}`` in mm.

    Raises:
        ValueError: a map that is not 4D or has fewer than 2 frames, no class given, or a bad spacing.
    """
    seq = _sequence(labels, "labels")
    if seq.shape[-1] < 2:
        raise ValueError(f"labels must have at least 2 frames to compare, got shape {seq.shape}.")
    sp = spacing_vector(spacing, 3)
    result = {}
    for c in _classes(classes):
        masks = [seq[..., t] == c for t in range(seq.shape[-1])]
        distances = [
            _symmetric_asd(first, second, sp)
            for first, second in zip(masks[:-1], masks[1:], strict=True)
            if first.any() and second.any()
        ]
        result[c] = float(np.mean(distances)) if distances else math.nan
    return result


def lv_volume_curve(labels, lv_class: int = 1, *, spacing) -> np.ndarray:
    """LV cavity volume of each frame of a sequence, in ml (section 4, ejection fraction).

    Args:
        labels: class map ``[X, Y, Z, T]``, numpy or torch.
        lv_class: the class of the LV cavity.
        spacing: voxel size in mm (one value or three).

    Returns:
        float64 array ``[T]``: voxel count of ``lv_class`` per frame times the voxel volume.

    Raises:
        ValueError: ``spacing`` is None, a bad spacing, or a map that is not 4D.
    """
    if spacing is None:
        raise ValueError("spacing (voxel size in mm) is required to give volumes in ml, got None.")
    seq = _sequence(labels, "labels")
    counts = (seq == int(lv_class)).reshape(-1, seq.shape[-1]).sum(axis=0)
    return counts.astype(np.float64) * _voxel_ml(spacing)


def ejection_fraction(volumes) -> float:
    """Ejection fraction ``EF = 100 (V_max - V_min) / V_max`` of an LV cavity volume curve, in % (section 4).

    "Based on the ratio of minimum and maximum LV cavity volume throughout the cardiac cycle": ``V_max`` stands for
    the end-diastolic, ``V_min`` for the end-systolic volume.

    Args:
        volumes: LV cavity volume per frame (any unit), a 1D sequence, numpy array or torch tensor.

    Returns:
        EF in percent, in ``[0, 100]``.

    Raises:
        ValueError: not 1D, fewer than 2 frames, a non-finite or negative volume, or an all-zero curve.
    """
    curve = _vector(volumes)
    if curve.ndim != 1 or curve.size < 2:
        raise ValueError(f"volumes must be a 1D curve of at least 2 frames, got shape {curve.shape}.")
    if not np.all(np.isfinite(curve)) or np.any(curve < 0):
        raise ValueError(f"volumes must be finite and >= 0, got {curve.tolist()}.")
    v_max = float(curve.max())
    if v_max == 0:
        raise ValueError(f"volumes are all zero (no LV cavity in any of the {curve.size} frames): EF is undefined.")
    return 100.0 * (v_max - float(curve.min())) / v_max


def ef_detection(predicted_ef, reference_ef, threshold: float = EF_REDUCED_THRESHOLD) -> dict:
    """Agreement of predicted with reference ejection fractions, and detection of a reduced EF (section 4).

    A case is positive (reduced EF) when its EF is below ``threshold`` (strictly). Sensitivity is the fraction of
    the reference-positive cases predicted positive, specificity that of the reference-negative cases predicted
    negative.

    Args:
        predicted_ef: EF per case in %, a 1D sequence.
        reference_ef: reference EF per case in % (clinical report), same length.
        threshold: EF below which a case is reduced (55 %).

    Returns:
        ``{"absolute_error": [|pred - ref| per case, percentage points], "mae": mean of them, "sensitivity",
        "specificity" (NaN when there is no reference-positive / reference-negative case), "tp", "fn", "tn",
        "fp": counts}``.

    Raises:
        ValueError: the two are not 1D of one non-zero length, or hold a non-finite value.
    """
    pred, ref = _vector(predicted_ef), _vector(reference_ef)
    if pred.ndim != 1 or ref.shape != pred.shape or pred.size == 0:
        raise ValueError(
            f"predicted_ef and reference_ef must be 1D of one non-zero length, got shapes {pred.shape} and {ref.shape}."
        )
    if not (np.all(np.isfinite(pred)) and np.all(np.isfinite(ref))):
        raise ValueError(f"ejection fractions must be finite, got {pred.tolist()} and {ref.tolist()}.")
    pred_pos, ref_pos = pred < threshold, ref < threshold
    tp, fn = int(np.sum(pred_pos & ref_pos)), int(np.sum(~pred_pos & ref_pos))
    tn, fp = int(np.sum(~pred_pos & ~ref_pos)), int(np.sum(pred_pos & ~ref_pos))
    errors = np.abs(pred - ref)
    return {
        "absolute_error": errors.tolist(),
        "mae": float(errors.mean()),
        "sensitivity": tp / (tp + fn) if tp + fn else math.nan,
        "specificity": tn / (tn + fp) if tn + fp else math.nan,
        "tp": tp,
        "fn": fn,
        "tn": tn,
        "fp": fp,
    }
