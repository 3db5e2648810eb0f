"""BraTS tumour regions, label numberings and the healthy-brain test (Kayalıbay et al. 2017, section 4.2).

**Regions** (Menze et al. 2015, as the paper's section 3.1 and Tables 3-6 use them), from the BraTS 2015 labels
1 necrosis, 2 edema, 3 non-enhancing tumour, 4 enhancing tumour:

* ``whole``: every tumour label (1, 2, 3, 4), "separation of healthy voxels from non-healthy ones";
* ``core``: necrosis, non-enhancing and enhancing tumour (1, 3, 4), without the edema;
* ``enhancing`` (the paper's "enhanced", Menze's "active"): label 4.

MONAI's ``ConvertToMultiChannelBasedOnBratsClasses`` assumes the BraTS 2017-2021 numbering (no label 3) and would
leave the 2015 non-enhancing tumour out of ``whole`` and ``core``; :func:`region_masks` follows the 2015 one.

**Numberings** (:data:`LABEL_SCHEMES`, source value -> 2015 value; the bundle's ``label_scheme`` option, applied
with MONAI's ``MapLabelValued``):

* ``"brats2015"`` (2013-2016, the paper's data): 1 necrosis, 2 edema, 3 non-enhancing, 4 enhancing; unchanged;
* ``"brats2017"`` (2017-2021): 1 necrotic and non-enhancing tumour core (one class), 2 edema, 4 enhancing: 1 stays
  1 (the merged class lands in "necrosis"; ``whole``, ``core`` and ``enhancing`` are unaffected), 2 -> 2, 4 -> 4;
* ``"brats2023"`` (2023-): 1 necrotic core, 2 edema, 3 enhancing: 3 -> 4.

**Healthy-brain test** (section 4.2, Table 6): "synthetic healthy brain images are produced by mirroring one
hemisphere of the brain that does not include any voxels labelled as unhealthy in the ground truth, for all images
where such an operation is possible", i.e. where the tumour lies in one hemisphere. :func:`mirror_healthy_hemisphere`
does it about a mid-sagittal plane at array position ``midplane`` along ``axis`` (default the array's centre,
``(n - 1) / 2``: the brain must be centred, as in a BraTS crop), and :func:`specificity` scores a prediction on the
result: the fraction of healthy voxels predicted healthy, per region, over the brain (voxels where any modality is
non-zero: BraTS images are skull-stripped with a zero background; the paper does not say whether it counted the
background, which would only raise the figures).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "LABEL_SCHEMES",
    "REGIONS",
    "brain_mask",
    "mirror_healthy_hemisphere",
    "region_masks",
    "specificity",
    "tumour_side",
]

REGIONS = ("whole", "core", "enhancing")
_REGION_LABELS = {"whole": (1, 2, 3, 4), "core": (1, 3, 4), "enhancing": (4,)}
LABEL_SCHEMES = {
    "brats2015": {0: 0, 1: 1, 2: 2, 3: 3, 4: 4},
    "brats2017": {0: 0, 1: 1, 2: 2, 4: 4},
    "brats2023": {0: 0, 1: 1, 2: 2, 3: 4},
}


def region_masks(label: np.ndarray) -> np.ndarray:
    """The three regions of a 2015-numbered label map.

    Args:
        label: ``[*spatial]`` label map (1 necrosis, 2 edema, 3 non-enhancing, 4 enhancing).

    Returns:
        ``[3, *spatial]`` booleans: whole, core, enhancing.
    """
    label = np.asarray(label)
    return np.stack([np.isin(label, _REGION_LABELS[r]) for r in REGIONS])


def tumour_side(label: np.ndarray, axis: int = 0, midplane: float | None = None) -> str:
    """Where the tumour lies relative to the mid-sagittal plane.

    Args:
        label: ``[*spatial]`` label map (any value > 0 is tumour).
        axis: the left-right array axis.
        midplane: the plane's array position (a whole or half index); default ``(n - 1) / 2``.

    Returns:
        ``"low"`` (every tumour voxel at an index below the plane: the subject's left in an RAS array, whose first
        index grows towards the right), ``"high"`` (all above), ``"both"`` (crossing or touching the plane) or
        ``"none"``.
    """
    label = np.asarray(label)
    n = label.shape[axis]
    c = (n - 1) / 2.0 if midplane is None else float(midplane)
    hits = np.nonzero(np.any(label > 0, axis=tuple(a for a in range(label.ndim) if a != axis)))[0]
    if hits.size == 0:
        return "none"
    if hits.max() < c:
        return "low"
    if hits.min() > c:
        return "high"
    return "both"


def mirror_healthy_hemisphere(
    image: np.ndarray, label: np.ndarray, axis: int = 0, midplane: float | None = None
) -> np.ndarray | None:
    """A synthetic healthy brain: the tumour-free hemisphere mirrored onto the other (the paper's Table 6 images).

    Voxel ``i`` on the tumour's side takes the value of voxel ``2 * midplane - i`` (its mirror image); voxels on the
    plane itself (an odd size's centre) and the healthy side are kept. Mirror positions outside the array (a plane
    off-centre) take the value of the nearest edge voxel.

    Args:
        image: ``[C, *spatial]`` channel-first image (all modalities are mirrored alike).
        label: ``[*spatial]`` reference label map (any value > 0 is tumour).
        axis: the left-right spatial axis of ``label`` (``axis + 1`` of ``image``).
        midplane: the plane's array position; default the array's centre ``(n - 1) / 2``. ``2 * midplane`` must be a
            whole number (a voxel centre or the boundary between two voxels).

    Returns:
        the healthy image (a new array), or None when the tumour is on both sides or absent (no such image).

    Raises:
        ValueError: an image whose spatial shape differs from the label's, or a midplane that is not a whole or half
            index.
    """
    image, label = np.asarray(image), np.asarray(label)
    if image.shape[1:] != label.shape:
        raise ValueError(f"image {image.shape[1:]} and label {label.shape} spatial shapes differ.")
    n = label.shape[axis]
    c = (n - 1) / 2.0 if midplane is None else float(midplane)
    if not math.isclose(2 * c, round(2 * c)):
        raise ValueError(f"midplane must be a whole or half index, got {midplane}.")
    side = tumour_side(label, axis, c)
    if side not in ("low", "high"):
        return None
    index = np.arange(n)
    mirror = np.clip(np.round(2 * c - index).astype(np.int64), 0, n - 1)
    replace = index < c if side == "low" else index > c
    source = np.where(replace, mirror, index)
    return np.take(image, source, axis=axis + 1)


def brain_mask(image: np.ndarray) -> np.ndarray:
    """Voxels where any modality is non-zero (a skull-stripped BraTS image's brain).

    Args:
        image: ``[C, *spatial]``.

    Returns:
        ``[*spatial]`` booleans.
    """
    return np.any(np.asarray(image) != 0, axis=0)


def specificity(prediction: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Per region, the fraction of the (all healthy) voxels in ``mask`` that the prediction calls healthy.

    Args:
        prediction: ``[*spatial]`` predicted label map in the 2015 numbering, on a synthetic healthy brain.
        mask: ``[*spatial]`` booleans: the voxels counted (e.g. :func:`brain_mask` of the healthy image).

    Returns:
        ``{"whole": ..., "core": ..., "enhancing": ...}``; NaN for an empty mask.
    """
    mask = np.asarray(mask, dtype=bool)
    total = int(mask.sum())
    regions = region_masks(prediction)
    return {r: (float(1.0 - (regions[k] & mask).sum() / total) if total else math.nan) for k, r in enumerate(REGIONS)}
