"""Soft Dice on the annotated frames of a 4D sequence plus a temporal smoothness term (cardiac 4D CNN, sec. 3.2)."""

from __future__ import annotations

import torch
from monai.losses import DiceLoss
from monai.networks.utils import one_hot

from common.losses.shapes import check_label_matches_logits

__all__ = ["SMOOTHNESS_NORMS", "SparseTemporalDiceLoss", "annotated_frames", "frames_as_batch", "temporal_smoothness"]

SMOOTHNESS_NORMS = ("l2", "l1")
"""Norms of the temporal derivative that :func:`temporal_smoothness` offers: squared (paper) or absolute."""


def frames_as_batch(x: torch.Tensor) -> torch.Tensor:
    """Move the time axis next to the batch axis and fold it in: ``[B, C, X, Y, Z, T] -> [B * T, C, X, Y, Z]``.

    Item ``b * T + t`` of the result is frame ``t`` of sample ``b``. Works on any memory layout (``reshape``, which
    copies only when it has to; a time-major tensor folds without a copy).

    Args:
        x: ``[B, C, X, Y, Z, T]`` tensor.

    Returns:
        ``[B * T, C, X, Y, Z]`` tensor.
    """
    x = x.movedim(-1, 1)  # [B, T, C, X, Y, Z]
    return x.reshape(-1, *x.shape[2:])


def annotated_frames(label: torch.Tensor, ignore_value: int = 255) -> torch.Tensor:
    """Which items (3D frames) of a ``[N, 1, X, Y, Z]`` label batch are annotated.

    An item is annotated iff none of its voxels holds ``ignore_value``. An annotated frame cropped in space is still
    annotated; a frame with some ignored voxels counts as not annotated as a whole (the data sets of this project
    never mix the two inside a frame: an unannotated frame is ``ignore_value`` everywhere).

    Args:
        label: ``[N, 1, X, Y, Z]`` (or any ``[N, ...]``) integer-valued labels.
        ignore_value: label value filling the frames that carry no annotation.

    Returns:
        boolean ``[N]`` tensor.
    """
    return (label != ignore_value).reshape(label.shape[0], -1).all(dim=1)


def temporal_smoothness(probabilities: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """Mean squared (or absolute) first-order time difference of class probabilities (sec. 3.2, Eq. 1 second term).

    ``L_smooth = mean_{b, c, v, t=0..T-2} (p[b, c, v, t+1] - p[b, c, v, t])^2`` over all frames, annotated or not,
    and all channels; consecutive frames only, no wrap-around from the last frame to the first.

    Args:
        probabilities: ``[B, C, X, Y, Z, T]`` class probabilities (any memory layout).
        norm: ``"l2"`` squares the differences (the default), ``"l1"`` takes their absolute values.

    Returns:
        scalar tensor; ``0`` (still attached to the graph) when ``T < 2``.

    Raises:
        ValueError: ``norm`` is not one of :data:`SMOOTHNESS_NORMS`.
    """
    if norm not in SMOOTHNESS_NORMS:
        raise ValueError(f"norm must be one of {SMOOTHNESS_NORMS}, got {norm!r}.")
    if probabilities.shape[-1] < 2:
        return probabilities.sum() * 0.0
    difference = probabilities[..., 1:] - probabilities[..., :-1]
    return difference.pow(2).mean() if norm == "l2" else difference.abs().mean()


class SparseTemporalDiceLoss(torch.nn.Module):
    """Sparse soft Dice over the annotated frames plus temporal smoothness of a 4D segmentation (sec. 3.2).

    Implements the loss of the cardiac 4D CCTA paper, section 3.2. The extracted text lost its Eq. 1-2; they are
    reconstructed here from the description ("a soft dice loss [6] applied only to labeled time points (3D images)",
    "a first-order derivative over time to enforce similarity between frames", "we kept the equal contributions")
    and the cited works (the V-Net soft Dice [6] with squared denominators; softmax outputs and a Dice loss as in the
    SegResNet paper [7] whose decoder the network follows):

    Eq. 1: ``L = L_dice + w * L_smooth``, ``w = smoothness_weight = 1``.

    Eq. 2: ``L_dice = 1 / (|A| |K|) sum_{(b, t) in A} sum_{c in K} (1 - (2 sum_v p g + s_nr) / (sum_v p^2 + sum_v g^2
    + s_dr))`` with ``p = softmax(logits)[b, c, :, t]`` and ``g`` the one-hot label of class ``c`` in frame ``t`` of
    sample ``b``, ``A`` the annotated frames of the batch (:func:`annotated_frames`: no voxel equals
    ``ignore_value``), ``K`` the scored classes (1 LV cavity and 2 LV myocardium unless ``include_background``),
    ``s_nr = s_dr = 1e-5``. Each annotated 3D frame is one item of MONAI's :class:`monai.losses.DiceLoss` (frames
    are moved into the batch axis, :func:`frames_as_batch`), which averages over items and classes.

    Second term: ``L_smooth = 1 / (B C |V| (T - 1)) sum_{b, c, v} sum_{t=0}^{T-2} (p[b, c, v, t+1] - p[b, c, v, t])^2``
    over all frames (this is how the unannotated frames take part in training) and all ``C`` output channels
    (background included), without wrap-around (:func:`temporal_smoothness`); ``smoothness="l1"`` uses ``|.|``.

    Reconstruction choices: the paper's text names ``K`` (= 16), the number of frames of a crop, next to Eq. 2; if its
    Eq. 2 divided the sum over annotated frames by ``K`` rather than by their number, its Dice term would shrink with
    the number of annotated frames of a crop; here it is the mean over the annotated frames. The smoothness is a
    mean (not a sum) so that ``w = 1`` balances two terms of order 1 whatever the crop size. Unannotated frames get
    exactly zero gradient from ``L_dice``. A batch without an annotated frame has ``L_dice = 0`` (kept in the graph)
    and trains on ``L_smooth`` alone.

    A 3D input ``[B, C, X, Y, Z]`` (the paper's 3D baseline, trained on annotated frames only) is plain soft Dice over
    the items whose label has no ``ignore_value``, and ``L_smooth = 0``.

    Args:
        include_background: score channel 0 (background) in ``L_dice`` too.
        squared_pred: squared denominators ``sum p^2 + sum g^2`` (V-Net); False: ``sum p + sum g``.
        smooth_nr: constant added to the Dice numerator.
        smooth_dr: constant added to the Dice denominator.
        smoothness: norm of the time derivative, ``"l2"`` (squared) or ``"l1"`` (absolute).
        smoothness_weight: ``w`` of Eq. 1.
        ignore_value: label value filling the unannotated frames.
        softmax: apply a softmax over the channels to the input (logits); False: the input is probabilities already.

    Input ``logits [B, C, X, Y, Z, T]`` (or ``[B, C, X, Y, Z]``) and ``label [B, 1, X, Y, Z, T]`` (or
    ``[B, 1, X, Y, Z]``) holding class indices ``0..C-1`` (any integer or floating dtype; the label is converted to
    one-hot internally) or ``ignore_value`` -> scalar loss.
    """

    def __init__(
        self,
        include_background: bool = False,
        squared_pred: bool = True,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        smoothness: str = "l2",
        smoothness_weight: float = 1.0,
        ignore_value: int = 255,
        softmax: bool = True,
    ) -> None:
        super().__init__()
        if smoothness not in SMOOTHNESS_NORMS:
            raise ValueError(f"smoothness must be one of {SMOOTHNESS_NORMS}, got {smoothness!r}.")
        if not smoothness_weight >= 0:
            raise ValueError(f"smoothness_weight must be a number >= 0, got {smoothness_weight!r}.")
        if smooth_nr < 0 or smooth_dr < 0:
            raise ValueError(f"smooth_nr and smooth_dr must be >= 0, got {smooth_nr} and {smooth_dr}.")
        self.include_background = bool(include_background)
        self.smoothness = smoothness
        self.smoothness_weight = float(smoothness_weight)
        self.ignore_value = int(ignore_value)
        self.softmax = bool(softmax)
        # probabilities and a one-hot label in their dtype come in: the softmax is taken once, for both terms, and
        # DiceLoss's own one-hot is float32, which its squared-norm Dice then rounds (1e-7) even in float64
        self.dice = DiceLoss(
            include_background=include_background,
            to_onehot_y=False,
            softmax=False,
            squared_pred=squared_pred,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            reduction="mean",
        )

    def _check(self, logits: torch.Tensor, label: torch.Tensor) -> None:
        """Check the shapes of the two inputs.

        Raises:
            ValueError: ``logits`` is neither 5D nor 6D, has fewer than 2 channels, or ``label`` is not
                ``[B, 1, *spatial]`` for the logits' ``B`` and ``spatial``.
        """
        if logits.ndim not in (5, 6):
            raise ValueError(
                f"logits must be [B, C, X, Y, Z, T] (4D) or [B, C, X, Y, Z] (3D), got shape {tuple(logits.shape)}."
            )
        if logits.shape[1] < 2:
            raise ValueError(f"logits must have at least 2 channels (classes), got shape {tuple(logits.shape)}.")
        check_label_matches_logits(logits, label)

    def terms(self, logits: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        """The two terms of Eq. 1, unweighted: ``forward = dice + smoothness_weight * smoothness``.

        Args:
            logits: ``[B, C, X, Y, Z, T]`` or ``[B, C, X, Y, Z]`` network outputs (any memory layout).
            label: ``[B, 1, X, Y, Z, T]`` or ``[B, 1, X, Y, Z]`` class indices, ``ignore_value`` in unannotated frames.

        Returns:
            ``{"dice": L_dice, "smoothness": L_smooth}``, scalar tensors attached to the graph of ``logits``.

        Raises:
            ValueError: bad shapes (see the class docstring), or an annotated frame with a label value outside
                ``0..C-1``.
        """
        self._check(logits, label)
        probabilities = torch.softmax(logits, dim=1) if self.softmax else logits
        if logits.ndim == 6:
            frames, frame_labels = frames_as_batch(probabilities), frames_as_batch(label)
            smooth = temporal_smoothness(probabilities, self.smoothness)
        else:
            frames, frame_labels = probabilities, label
            smooth = probabilities.sum() * 0.0
        keep = annotated_frames(frame_labels, self.ignore_value)
        if not bool(keep.any()):
            return {"dice": probabilities.sum() * 0.0, "smoothness": smooth}
        target = frame_labels[keep]
        if target.is_floating_point():
            target = torch.round(target)
        target = target.long()
        n_classes = logits.shape[1]
        if bool((target < 0).any()) or bool((target >= n_classes).any()):
            values = torch.unique(target[(target < 0) | (target >= n_classes)]).tolist()
            raise ValueError(
                f"label values {values} in annotated frames are outside the classes 0..{n_classes - 1} of the "
                f"{n_classes}-channel logits (and are not ignore_value={self.ignore_value})."
            )
        selected = frames[keep]
        return {"dice": self.dice(selected, one_hot(target, n_classes, dtype=selected.dtype)), "smoothness": smooth}

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """``L = L_dice + w * L_smooth`` (Eq. 1) of ``logits`` against the sparse ``label``.

        Args:
            logits: ``[B, C, X, Y, Z, T]`` or ``[B, C, X, Y, Z]`` network outputs (any memory layout).
            label: ``[B, 1, X, Y, Z, T]`` or ``[B, 1, X, Y, Z]`` class indices, ``ignore_value`` in unannotated frames.

        Returns:
            scalar loss.
        """
        terms = self.terms(logits, label)
        return terms["dice"] + self.smoothness_weight * terms["smoothness"]
