"""Dice, contour mean distance and volume differences scored on sparse 2D annotations (paper section IV-A).

The reference standard of the 4D CT tissue paper is sparse: a few 2D cross-sections per 3D volume (one per patient,
all three orthogonal planes for six patients, sec. III-C), densely labelled CSF (1), WM (2), GM (3) and vessel (4)
inside a selected area; label 0 means "not annotated". Every measure here looks only at annotated voxels, as the
paper does ("Only voxels annotated ... were used", sec. IV-A):

* **Dice** (DSC): ``2|A∩B| / (|A|+|B|)`` with ``A`` the predicted and ``B`` the reference class-``c`` voxels, both
  restricted to the annotated voxels of the case.
* **MVD** (mean volume difference): ``MVD(A,B) = 1/n² Σ_i Σ_j |A_i - B_j|`` in mm³ over the volumes of ``n``
  observers or runs (:func:`mean_volume_difference`); for one prediction against one reference it is
  ``|V_pred - V_ref|``, volumes being annotated-voxel counts times the voxel volume.
* **AVD** (absolute volume difference): ``MVD(A,B) / mean(A)`` in %, ``A`` being the reference
  (:func:`absolute_volume_difference`).
* **CMD** (contour mean distance): ``CMD(A,B) = max(h(A,B), h(B,A))``, ``h(A,B) = mean_{a∈∂A} min_{b∈∂B} ||a-b||``
  in mm, "the mean distance between boundaries of non-zero pixel regions". Unlike MONAI's symmetric average surface
  distance, which averages the two directions' distances together, the larger directed mean is taken.

How CMD is computed on sparse annotations (choices the paper leaves open, and why):

1. **In the annotated cross-sections, in 2D.** :func:`annotated_sections` finds the axis-aligned planes holding the
   annotations; in each, the class-``c`` contours of prediction and reference are extracted in 2D within that plane
   and distances are measured within the plane: the observers drew 2D contours on 2D images, and a distance from an
   axial contour point to a sagittal one is no contour distance.
2. **A contour only where two annotated voxels meet.** A voxel of class ``c`` is a contour point when one of its
   four in-plane neighbours is annotated with a different class. The edge of the annotated area (and of the image,
   and of the small unannotated islands the observers left out) is *not* a contour: the reference does not know what
   lies beyond it, so a contour there would be an artefact of where the observer stopped, not of the anatomy. The
   prediction is treated the same way, restricted to the annotated voxels, so (like Dice) CMD depends only on the
   prediction at annotated voxels, a prediction equal to the reference there scores exactly 0, and the measure is
   symmetric, which the paper needs for its observer-against-observer variability (Table 1) where both sides are
   sparse. Only when a class has voxels in a plane but no such contour (it fills whole annotated components of the
   plane) does its plain region edge (MONAI's rule: the voxels the 4-neighbour cross erosion removes, outside counted
   as background) stand in, so a wholly missed or wholly over-segmented component still scores a distance.
3. **Pooled over the case's sections.** The contour points of all sections of a case form one set per side, and
   ``h`` is the mean over all of them, as the paper writes the measure over the point sets of a case; a section thus
   weighs by its contour length, not equally (a small third plane does not outweigh a large one). A contour point
   whose plane holds no contour of the other side is measured, in 3D mm, to the other side's nearest contour point
   in any section: the literal ``min over b ∈ B`` of the pooled set, and finite while the class exists on both sides.
4. **Empty classes.** A class neither annotated nor predicted (on the annotated voxels) is not scored: every measure
   is NaN, as MONAI's ``DiceMetric`` marks an absent class, and :func:`common.metrics.summary.summarize_per_class`
   leaves NaN out. A class on one side only has Dice 0, CMD ``inf`` (no contour to measure to; MONAI's surface
   distances give ``inf`` too), finite MVD and AVD ``inf`` when the reference is the empty side.

Distances are exact Euclidean distances between contour-voxel centres in mm (the voxel spacing), computed by brute
force over the contour points. The contour rule for a plain mask is MONAI's (``monai.metrics.utils.get_mask_edges``:
mask XOR its erosion by the 4/6-neighbour cross, outside background) and the distances are those of
``monai.metrics.utils.get_surface_distance``; both are re-done here in numpy because MONAI's versions need
``scipy.ndimage`` (or cuCIM), which the project's pinned requirements do not include (on random 2D and 3D masks
with anisotropic spacing the edges match MONAI 1.5.2's exactly and the distances to its float32 precision).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.utils import convert_to_numpy

__all__ = [
    "SPARSE_MEASURES",
    "absolute_volume_difference",
    "annotated_sections",
    "as_numpy",
    "contour_mean_distance",
    "dice_on_annotated",
    "label_map",
    "mean_volume_difference",
    "nearest_points",
    "plain_contour",
    "points_mm",
    "spacing_vector",
    "sparse_contour_mean_distance",
    "sparse_segmentation_measures",
]

SPARSE_MEASURES = ("dice", "cmd_mm", "avd_percent", "mvd_mm3")
"""Keys of each class's entry in :func:`sparse_segmentation_measures`: Dice in [0, 1], CMD in mm, AVD in %, MVD in
mm³ (the paper's DSC, CMD, AVD and MVD)."""

_PAIRS_PER_CHUNK = 1 << 20  # point pairs per block of the brute-force nearest-distance search (~24 MB of float64)


# --------------------------------------------------------------------------------------------------- input checks
def as_numpy(x, name: str) -> np.ndarray:
    """A numpy copy of a numpy array or torch tensor (any device).

    Returns:
        the array.

    Raises:
        TypeError: ``x`` is neither.
    """
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}.")
    return np.asarray(convert_to_numpy(x))


def label_map(x, name: str, ndims: tuple[int, ...] = (2, 3)) -> np.ndarray:
    """An integer label map of ``ndims`` dimensions; a leading singleton channel (``[1, X, Y, Z]``) is dropped.

    Returns:
        the map: integer and boolean arrays as they are, whole-valued floats (an argmax) as int32.

    Raises:
        ValueError: wrong number of dimensions, or values that are not whole numbers.
    """
    array = as_numpy(x, name)
    if array.ndim == max(ndims) + 1 and array.shape[0] == 1:
        array = array[0]
    if array.ndim not in ndims:
        raise ValueError(
            f"{name} must be a label map with {' or '.join(map(str, ndims))} spatial dimensions (optionally a "
            f"leading channel of 1), got shape {tuple(array.shape)}."
        )
    if array.dtype == bool or np.issubdtype(array.dtype, np.integer):
        return array
    if not np.issubdtype(array.dtype, np.floating) or not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must hold whole class indices, got dtype {array.dtype} with non-finite values.")
    if not np.array_equal(array, np.rint(array)):
        raise ValueError(f"{name} must hold whole class indices (an argmax label map), got fractional values.")
    return array.astype(np.int32)


def _label_map_or_sequence(x, name: str) -> np.ndarray:
    """A 2D or 3D label map as :func:`label_map` reads it, or a 3D+time ``[X, Y, Z, T]`` one.

    A 4-D array with a leading 1 stays a 3D map with its channel (``[1, X, Y, Z]``); ``[1, X, Y, Z, T]`` drops it.

    Returns:
        the map.

    Raises:
        ValueError: as :func:`label_map`.
    """  # noqa: DOC502 (raised by label_map)
    array = as_numpy(x, name)
    if (array.ndim == 5 and array.shape[0] == 1) or (array.ndim == 4 and array.shape[0] != 1):
        return label_map(array, name, (4,))
    return label_map(array, name)


def spacing_vector(spacing, ndim: int) -> np.ndarray:
    """Voxel spacing as one positive float per axis.

    Returns:
        float64 array of length ``ndim``.

    Raises:
        ValueError: a count other than 1 or ``ndim``, or a value that is not a positive finite number.
    """
    values = np.atleast_1d(np.asarray(1.0 if spacing is None else spacing, dtype=np.float64)).ravel()
    if values.size == 1:
        values = np.repeat(values, ndim)
    if values.size != ndim or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"spacing must be one positive number or {ndim} of them (mm per axis), got {spacing!r}.")
    return values


# ------------------------------------------------------------------------------------------------------ contours
def _erode_cross(mask: np.ndarray, border_value: bool) -> np.ndarray:
    """Binary erosion by the 4- (2D) or 6-neighbour (3D) cross, ``border_value`` assumed outside the array.

    Returns:
        the eroded mask (scipy.ndimage.binary_erosion's result with its default structure).
    """
    padded = np.pad(mask, 1, constant_values=border_value)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    eroded = padded[inner].copy()
    for axis in range(mask.ndim):
        for lo, hi in ((0, -2), (2, None)):
            shifted = list(inner)
            shifted[axis] = slice(lo, hi)
            eroded &= padded[tuple(shifted)]
    return eroded


def plain_contour(mask: np.ndarray) -> np.ndarray:
    """MONAI's edge of a mask (``get_mask_edges``): the voxels its cross erosion removes, outside as background.

    Returns:
        boolean contour mask.
    """
    return mask & ~_erode_cross(mask, border_value=False)


def _annotated_contour(mask: np.ndarray, annotated: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a cross neighbour that is annotated and outside ``mask`` (module note, point 2).

    Unannotated voxels and the outside of the array count as "could be the class", so they never make a contour;
    a non-empty mask with no such voxel (it fills whole annotated components) falls back to its plain edge.

    Returns:
        boolean contour mask (a subset of ``mask & annotated``).
    """
    mask = mask & annotated
    if not mask.any():
        return mask
    contour = mask & ~_erode_cross(mask | ~annotated, border_value=True)
    return contour if contour.any() else plain_contour(mask)


# ------------------------------------------------------------------------------------------------------ distances
def nearest_points(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest-neighbour distances between two point sets, both ways, by blocks of point pairs.

    Args:
        source: ``[n, d]`` coordinates in mm.
        target: ``[m, d]`` coordinates in mm, ``m >= 1``.

    Returns:
        ``([n] distance of each source point to the target set, [m] of each target point to the source set)``.
    """
    n, m = len(source), len(target)
    to_target = np.empty(n, dtype=np.float64)
    to_source = np.full(m, np.inf, dtype=np.float64)
    rows = max(1, _PAIRS_PER_CHUNK // max(m, 1))
    for start in range(0, n, rows):
        block = source[start : start + rows]
        squared = ((block[:, None, :] - target[None, :, :]) ** 2).sum(-1)
        to_target[start : start + rows] = squared.min(1)
        np.minimum(to_source, squared.min(0), out=to_source)
    return np.sqrt(to_target), np.sqrt(to_source)


def points_mm(contour: np.ndarray, spacing: np.ndarray, axis: int | None = None, index: int = 0) -> np.ndarray:
    """Centres of a contour's voxels in mm; a 2D section's points placed at ``index`` along ``axis`` of the volume.

    Returns:
        ``[n, ndim]`` float64 coordinates.
    """
    coords = np.argwhere(contour).astype(np.float64)
    if axis is not None:
        coords = np.insert(coords, axis, float(index), axis=1)
    return coords * spacing


def _pooled_cmd(points_a: list[np.ndarray], points_b: list[np.ndarray]) -> float:
    """CMD of per-section contour point sets pooled over the sections (module note, points 3 and 4).

    Returns:
        ``max(h(A,B), h(B,A))`` in mm; NaN when both sides have no contour point, ``inf`` when one side has none.
    """
    n_a, n_b = sum(len(p) for p in points_a), sum(len(p) for p in points_b)
    if n_a == 0 and n_b == 0:
        return math.nan
    if n_a == 0 or n_b == 0:
        return math.inf
    all_a, all_b = np.concatenate(points_a), np.concatenate(points_b)
    a_to_b, b_to_a = [], []
    for section_a, section_b in zip(points_a, points_b, strict=True):
        if len(section_a) and len(section_b):
            d_ab, d_ba = nearest_points(section_a, section_b)
            a_to_b.append(d_ab)
            b_to_a.append(d_ba)
        elif len(section_a):  # no B contour in this plane: the nearest B contour point of the case
            a_to_b.append(nearest_points(section_a, all_b)[0])
        elif len(section_b):
            b_to_a.append(nearest_points(section_b, all_a)[0])
    return float(max(np.concatenate(a_to_b).mean(), np.concatenate(b_to_a).mean()))


def contour_mean_distance(a, b, spacing=None, annotated=None) -> float:
    """Contour mean distance ``CMD(A,B) = max(h(A,B), h(B,A))`` between two masks (paper sec. IV-A), in mm.

    ``h(A,B)`` is the mean over the contour voxels of ``A`` of the Euclidean distance to the nearest contour voxel of
    ``B``. Without ``annotated`` the contour is MONAI's edge (``get_mask_edges``: what the 4/6-neighbour cross
    erosion removes, outside the array as background). With ``annotated``, both masks are restricted to it and a
    contour runs only between two annotated voxels (see the module note); the sparse, per-section evaluation of a
    case is :func:`sparse_contour_mean_distance`.

    Args:
        a: boolean (or 0/1) mask ``[X, Y]`` or ``[X, Y, Z]``, numpy or torch.
        b: mask of the same shape.
        spacing: voxel size in mm, one value or one per axis; ``None``: 1.
        annotated: optional mask of the same shape of the voxels that carry annotations.

    Returns:
        the distance in mm; NaN when both masks are empty, ``inf`` when exactly one is.

    Raises:
        ValueError: masks of different shapes or not 2D/3D, or a bad spacing.
    """
    mask_a, mask_b = as_numpy(a, "a").astype(bool), as_numpy(b, "b").astype(bool)
    if mask_a.shape != mask_b.shape or mask_a.ndim not in (2, 3):
        raise ValueError(f"a and b must be 2D or 3D masks of one shape, got {mask_a.shape} and {mask_b.shape}.")
    sp = spacing_vector(spacing, mask_a.ndim)
    if annotated is None:
        contour_a, contour_b = plain_contour(mask_a), plain_contour(mask_b)
    else:
        region = as_numpy(annotated, "annotated").astype(bool)
        if region.shape != mask_a.shape:
            raise ValueError(f"annotated must have the masks' shape {mask_a.shape}, got {region.shape}.")
        contour_a, contour_b = _annotated_contour(mask_a, region), _annotated_contour(mask_b, region)
    return _pooled_cmd([points_mm(contour_a, sp)], [points_mm(contour_b, sp)])


# ------------------------------------------------------------------------------------------------ annotated planes
def annotated_sections(label, ignore_value: int = 0, min_voxels: int = 1) -> list[tuple[int, int]]:
    """The axis-aligned 2D cross-sections that hold a sparse annotation (paper sec. III-C), as ``(axis, index)``.

    The annotated voxels (``label != ignore_value``) are taken to be a union of whole-plane regions along any of the
    three axes. Planes are chosen greedily: the plane (of any axis) holding the most not-yet-covered annotated
    voxels is taken, its voxels are marked covered, and so on until every annotated voxel is covered (or the best
    plane would cover fewer than ``min_voxels``). A plane crossing an annotated plane of another axis holds only the
    1D line of intersection, which the larger plane covers first, so one axial plus one sagittal annotation gives
    exactly those two planes. A densely labelled volume comes out as all its planes along one axis (a slice-by-slice
    evaluation). Ties go to the lower axis, then the lower index.

    Args:
        label: reference label map ``[X, Y, Z]`` (or ``[1, X, Y, Z]``), numpy or torch; a boolean annotation mask
            works too (``False`` equals ``ignore_value=0``).
        ignore_value: the label value of voxels without annotation.
        min_voxels: a plane covering fewer new annotated voxels than this is not reported (stray voxels).

    Returns:
        sorted list of ``(axis, index)`` pairs; empty when nothing is annotated.

    Raises:
        ValueError: a label map that is not 3D, or ``min_voxels < 1``.
    """
    if min_voxels < 1:
        raise ValueError(f"min_voxels must be at least 1, got {min_voxels}.")
    return _greedy_sections(label_map(label, "label", ndims=(3,)) != ignore_value, min_voxels)


def _greedy_sections(annotated: np.ndarray, min_voxels: int = 1) -> list[tuple[int, int]]:
    """The greedy plane cover of :func:`annotated_sections` on a 3D boolean annotation mask.

    Returns:
        sorted ``(axis, index)`` pairs.
    """
    remaining = annotated.copy()
    counts = [remaining.sum(axis=tuple(k for k in range(3) if k != axis)).astype(np.int64) for axis in range(3)]
    sections = []
    while True:
        best = [int(c.max()) for c in counts]
        axis = int(np.argmax(best))
        if best[axis] < min_voxels:
            break
        index = int(np.argmax(counts[axis]))
        sections.append((axis, index))
        plane = np.take(remaining, index, axis=axis)  # the not-yet-covered voxels of the chosen plane, 2D
        for other in range(3):
            if other != axis:
                position = other if other < axis else other - 1  # where ``other`` sits among the plane's two axes
                counts[other] -= plane.sum(axis=1 - position)
        counts[axis][index] = 0
        selector = [slice(None)] * 3
        selector[axis] = index
        remaining[tuple(selector)] = False
    return sorted(sections)


def _check_sections(sections: Sequence[tuple[int, int]], shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """Validated ``(axis, index)`` pairs of a 3D volume.

    Returns:
        the pairs as int tuples.

    Raises:
        ValueError: an axis outside 0..2 or an index outside the volume.
    """
    checked = []
    for section in sections:
        axis, index = (int(v) for v in section)
        if not 0 <= axis < 3 or not 0 <= index < shape[axis]:
            raise ValueError(f"section {tuple(section)} is not an (axis, index) plane of a volume of shape {shape}.")
        checked.append((axis, index))
    return checked


def _region(pred: np.ndarray, ref: np.ndarray, ignore_value: int, pred_ignore_value: int | None) -> np.ndarray:
    """The evaluated voxels: annotated in the reference (and in ``pred`` when it is an annotation too).

    Returns:
        boolean mask.
    """
    region = ref != ignore_value
    if pred_ignore_value is not None:
        region &= pred != pred_ignore_value
    return region


def _section_contour_points(
    pred: np.ndarray, ref: np.ndarray, region: np.ndarray, class_index: int, sections, spacing: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per section, the class's annotation-aware 2D contour points of prediction and reference, in mm.

    Returns:
        ``(points of pred per section, points of ref per section)``; a 2D map is one section.
    """
    if ref.ndim == 2:
        planes = [(None, 0, pred, ref, region)]
    else:
        planes = [
            (axis, index, np.take(pred, index, axis), np.take(ref, index, axis), np.take(region, index, axis))
            for axis, index in sections
        ]
    points_pred, points_ref = [], []
    for axis, index, pred_2d, ref_2d, region_2d in planes:
        points_pred.append(points_mm(_annotated_contour(pred_2d == class_index, region_2d), spacing, axis, index))
        points_ref.append(points_mm(_annotated_contour(ref_2d == class_index, region_2d), spacing, axis, index))
    return points_pred, points_ref


def sparse_contour_mean_distance(
    pred,
    label,
    class_index: int,
    spacing=None,
    ignore_value: int = 0,
    sections: Sequence[tuple[int, int]] | None = None,
    pred_ignore_value: int | None = None,
) -> float:
    """CMD (paper sec. IV-A) of one class on the annotated 2D cross-sections of a case, in mm.

    Contours are extracted per annotated section, in 2D, only between annotated voxels, and pooled over the case's
    sections (the module note gives the reasons).

    Args:
        pred: predicted label map ``[X, Y, Z]`` or ``[X, Y]`` (optionally a leading channel of 1), numpy or torch.
        label: reference label map of the same shape; ``ignore_value`` marks voxels without annotation.
        class_index: the class scored.
        spacing: voxel size in mm, one value or one per axis; ``None``: 1.
        ignore_value: the reference's "not annotated" value.
        sections: the annotated planes as ``(axis, index)``; ``None``: found by :func:`annotated_sections`. A 2D map
            is its own single section.
        pred_ignore_value: when ``pred`` is a second observer's annotation, its "not annotated" value: only voxels
            annotated in both are scored (the paper's observer variability).

    Returns:
        the distance in mm; NaN when the class has no voxel on either side, ``inf`` when on one side only.

    Raises:
        ValueError: maps of different shapes, a bad spacing, or a section outside the volume.
    """
    pred_np, ref_np = label_map(pred, "pred"), label_map(label, "label")
    if pred_np.shape != ref_np.shape:
        raise ValueError(f"pred and label must have one shape, got {pred_np.shape} and {ref_np.shape}.")
    sp = spacing_vector(spacing, ref_np.ndim)
    region = _region(pred_np, ref_np, ignore_value, pred_ignore_value)
    if ref_np.ndim == 3:
        sections = _greedy_sections(region) if sections is None else _check_sections(sections, ref_np.shape)
    points_pred, points_ref = _section_contour_points(pred_np, ref_np, region, int(class_index), sections, sp)
    return _pooled_cmd(points_pred, points_ref)


# ------------------------------------------------------------------------------------------------ overlap, volume
def dice_on_annotated(pred, label, class_index: int, ignore_value: int = 0) -> float:
    """Dice coefficient of one class on the annotated voxels only (paper sec. IV-A, DSC).

    Args:
        pred: predicted label map, numpy or torch, any shape.
        label: reference label map of the same shape; ``ignore_value`` marks voxels without annotation, which are
            left out whatever ``pred`` says there.
        class_index: the class scored.
        ignore_value: the reference's "not annotated" value.

    Returns:
        ``2|A∩B| / (|A|+|B|)`` on the annotated voxels; NaN when the class is on neither side there.

    Raises:
        ValueError: maps of different shapes.
    """
    pred_np, ref_np = as_numpy(pred, "pred"), as_numpy(label, "label")
    if pred_np.shape != ref_np.shape:
        raise ValueError(f"pred and label must have one shape, got {pred_np.shape} and {ref_np.shape}.")
    annotated = ref_np != ignore_value
    a, b = (pred_np == class_index) & annotated, (ref_np == class_index) & annotated
    total = int(a.sum()) + int(b.sum())
    return math.nan if total == 0 else 2.0 * int((a & b).sum()) / total


def _volumes(values, name: str) -> np.ndarray:
    """Volumes as a 1-D float64 array of finite non-negative numbers.

    Returns:
        the array.

    Raises:
        ValueError: empty, or a value that is negative or not finite.
    """
    array = np.atleast_1d(np.asarray(convert_to_numpy(values), dtype=np.float64)).ravel()
    if array.size == 0 or not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"{name} must be one or more finite non-negative volumes, got {values!r}.")
    return array


def mean_volume_difference(volumes_a, volumes_b) -> float:
    """MVD (paper sec. IV-A): the mean absolute difference over all pairs of volumes, ``1/n² Σ_i Σ_j |A_i - B_j|``.

    ``A_i`` and ``B_j`` are the volumes of one class measured by ``n`` observers (or runs) on each side; with one
    volume per side it is ``|A_1 - B_1|``. Sides of different lengths ``n``, ``m`` average over the ``n·m`` pairs.

    Args:
        volumes_a: one volume or a sequence of them (e.g. mm³).
        volumes_b: likewise.

    Returns:
        the mean volume difference, in the volumes' unit.

    Raises:
        ValueError: an empty side, or a volume that is negative or not finite.
    """  # noqa: DOC502 (raised by the volume check it calls)
    a, b = _volumes(volumes_a, "volumes_a"), _volumes(volumes_b, "volumes_b")
    return float(np.abs(a[:, None] - b[None, :]).mean())


def absolute_volume_difference(volumes_a, volumes_b) -> float:
    """AVD (paper sec. IV-A): ``MVD(A,B) / (1/n Σ_i A_i)`` in percent, ``A`` being the reference side.

    Args:
        volumes_a: the reference volume(s), the denominator.
        volumes_b: the compared volume(s).

    Returns:
        the relative volume difference in %; NaN when every volume is 0, ``inf`` when only the reference's are.

    Raises:
        ValueError: an empty side, or a volume that is negative or not finite.
    """  # noqa: DOC502 (raised by the volume check it calls)
    mvd = mean_volume_difference(volumes_a, volumes_b)
    reference = float(_volumes(volumes_a, "volumes_a").mean())
    if reference == 0:
        return math.nan if mvd == 0 else math.inf
    return 100.0 * mvd / reference


# ---------------------------------------------------------------------------------------------------- per case
def sparse_segmentation_measures(
    pred,
    label,
    spacing=None,
    classes: Sequence[int] = (1, 2, 3, 4),
    ignore_value: int = 0,
    pred_ignore_value: int | None = None,
    sections: Sequence[tuple[int, int]] | None = None,
    measures: Sequence[str] = SPARSE_MEASURES,
) -> dict[int, dict[str, float]]:
    """The paper's DSC, CMD, AVD and MVD of one case, per class, on the annotated voxels only (sec. IV-A, Tables 1-5).

    Dice, MVD and AVD use every annotated voxel of the case; CMD uses the annotated 2D cross-sections (see
    :func:`sparse_contour_mean_distance` and the module note). Volumes are annotated-voxel counts times the voxel
    volume; AVD is relative to the reference. A class neither annotated nor predicted on the annotated voxels gets
    NaN for every measure (not scored).

    Args:
        pred: predicted label map ``[X, Y, Z]`` (or ``[X, Y]``, or a 3D+time ``[X, Y, Z, T]`` for every measure but
            CMD; optionally with a leading channel of 1), numpy or torch on any device; values outside the annotated
            voxels are ignored. Over time, Dice pools the annotated frames' voxels and volumes add up over them.
        label: reference label map of the same shape; ``ignore_value`` marks voxels without annotation.
        spacing: voxel size in mm, one value or one per axis; ``None``: 1.
        classes: the label values scored (the paper's 1 CSF, 2 WM, 3 GM, 4 vessel).
        ignore_value: the reference's "not annotated" value.
        pred_ignore_value: when ``pred`` is a second observer's annotation, its "not annotated" value: only voxels
            annotated in both are scored (sec. IV-A, observer variability).
        sections: annotated planes ``(axis, index)`` for CMD; ``None``: found by :func:`annotated_sections`.
        measures: which of :data:`SPARSE_MEASURES` to compute (the rest are left out of the result); leaving out
            ``"cmd_mm"`` skips the contour work, e.g. for Dice-only validation.

    Returns:
        ``{class: {"dice": ..., "cmd_mm": ..., "avd_percent": ..., "mvd_mm3": ...}}`` as Python floats.

    Raises:
        ValueError: maps of different shapes, a bad spacing, an unknown measure, no class, ``ignore_value`` among
            the classes, or CMD asked of a 3D+time map.
    """
    unknown = sorted(set(measures) - set(SPARSE_MEASURES))
    if unknown or len(measures) == 0:
        raise ValueError(f"measures must be a non-empty subset of {list(SPARSE_MEASURES)}, got {list(measures)}.")
    class_list = [int(c) for c in classes]
    if len(class_list) == 0 or ignore_value in class_list:
        raise ValueError(f"classes must be non-empty and exclude ignore_value={ignore_value}, got {class_list}.")
    pred_np, ref_np = _label_map_or_sequence(pred, "pred"), _label_map_or_sequence(label, "label")
    if pred_np.shape != ref_np.shape:
        raise ValueError(f"pred and label must have one shape, got {pred_np.shape} and {ref_np.shape}.")
    if ref_np.ndim == 4 and "cmd_mm" in measures:
        raise ValueError("CMD is measured on 2D cross-sections of 2D or 3D maps; a 3D+time map takes the others.")
    sp = spacing_vector(spacing, ref_np.ndim)
    voxel_volume = float(np.prod(sp))
    region = _region(pred_np, ref_np, ignore_value, pred_ignore_value)
    pred_in, ref_in = pred_np[region], ref_np[region]
    if "cmd_mm" in measures and ref_np.ndim == 3:
        sections = _greedy_sections(region) if sections is None else _check_sections(sections, ref_np.shape)

    results: dict[int, dict[str, float]] = {}
    for c in class_list:
        a, b = pred_in == c, ref_in == c
        n_pred, n_ref, n_both = int(a.sum()), int(b.sum()), int((a & b).sum())
        if n_pred == 0 and n_ref == 0:
            results[c] = {m: math.nan for m in SPARSE_MEASURES if m in measures}
            continue
        row = {}
        if "dice" in measures:
            row["dice"] = 2.0 * n_both / (n_pred + n_ref)
        if "cmd_mm" in measures:
            points_pred, points_ref = _section_contour_points(pred_np, ref_np, region, c, sections, sp)
            row["cmd_mm"] = _pooled_cmd(points_pred, points_ref)
        if "avd_percent" in measures:
            row["avd_percent"] = absolute_volume_difference(n_ref * voxel_volume, n_pred * voxel_volume)
        if "mvd_mm3" in measures:
            row["mvd_mm3"] = mean_volume_difference(n_ref * voxel_volume, n_pred * voxel_volume)
        results[c] = row
    return results
