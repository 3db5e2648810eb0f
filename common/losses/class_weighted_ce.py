"""Categorical cross-entropy with the class weights of a ``class_weights.json`` (head CT paper, "Experiments", Eq. 1).

The head CT neuroanatomy paper trains with categorical cross-entropy weighted per class: balanced weights (Table 1
Model 2), their cube root, "attenuated" (Model 3, the final model), or none (Models 1's baseline without weighting is
Model 4). The weights are computed from the training labels by ``python -m common.data.class_weights`` (see
:mod:`common.data.class_weights`); this loss reads them when it is first *used*, not when the config is parsed, so a
training config can be parsed, checked and exported without the data set, and a missing weights file is reported (with
the command that writes it) when training starts.

The loss is the weighted mean of PyTorch's cross-entropy, ``Σ_v w_{y_v} (-log p_{y_v}) / Σ_v w_{y_v}``, which is
Keras's ``categorical_crossentropy`` with ``class_weight`` as the authors used it, and MONAI's ``DiceCELoss`` with
``lambda_dice=0`` and the same ``weight``. With ``inputs="probabilities"`` it takes softmax probabilities (``log`` of
them as logits: ``softmax(log p) = p``), which makes the same loss a validation metric of the network's thresholded
outputs' probabilities (``monai.handlers.LossMetric``), as the paper monitors the validation loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

import torch

from common.data.class_weights import load_class_weights

from .shapes import check_label_matches_logits

__all__ = ["ClassWeightedCrossEntropyLoss"]

_INPUTS = ("logits", "probabilities")


class ClassWeightedCrossEntropyLoss(torch.nn.Module):
    """Cross-entropy over class indices with per-class weights loaded on first use.

    Args:
        n_classes: the number of output channels (12: background and the 11 structures).
        weight_file: the ``class_weights.json`` written by ``python -m common.data.class_weights``; not read with
            ``scheme="none"`` or when ``weights`` is given.
        scheme: ``"attenuated"`` (Model 3), ``"balanced"`` (Model 2) or ``"none"`` (unweighted, Model 4).
        datalist: the training datalist; a weights file computed from another version of it is refused.
        weights: explicit weights (background first) instead of a file, e.g. for tests.
        inputs: ``"logits"`` (training) or ``"probabilities"`` (softmax outputs, for a validation loss metric).

    ``forward(input, target)``: ``input`` is ``[B, C, *spatial]``, ``target`` ``[B, 1, *spatial]`` or ``[B, *spatial]``
    with class indices ``0..C-1``, or one-hot ``[B, C, *spatial]`` (as a validation's post-processing leaves it);
    returns the scalar weighted mean.
    """

    def __init__(
        self,
        n_classes: int,
        weight_file: str | PathLike | None = None,
        scheme: str = "attenuated",
        datalist: str | PathLike | None = None,
        weights: Sequence[float] | None = None,
        inputs: str = "logits",
    ) -> None:
        super().__init__()
        if inputs not in _INPUTS:
            raise ValueError(f"inputs must be one of {list(_INPUTS)}, got {inputs!r}.")
        if weights is None and scheme != "none" and weight_file is None:
            raise ValueError(f"class weighting {scheme!r} needs a weight_file (or explicit weights).")
        if weights is not None and len(weights) != int(n_classes):
            raise ValueError(f"{len(weights)} class weights given for {n_classes} classes.")
        self.n_classes = int(n_classes)
        self.weight_file = weight_file
        self.scheme = scheme
        self.datalist = datalist
        self.inputs = inputs
        self._weights = None if weights is None else [float(w) for w in weights]
        self._on_device: dict[torch.device, torch.Tensor] = {}

    def class_weights(self) -> list[float]:
        """The weights, read from ``weight_file`` the first time they are needed.

        Returns:
            one weight per class, background first (all ones for ``scheme="none"``).
        """
        if self._weights is None:
            self._weights = load_class_weights(self.weight_file or "", self.scheme, self.n_classes, self.datalist)
        return self._weights

    def _weight_on(self, device: torch.device) -> torch.Tensor:
        if device not in self._on_device:
            self._on_device[device] = torch.tensor(self.class_weights(), dtype=torch.float32, device=device)
        return self._on_device[device]

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Weighted mean cross-entropy of ``input`` (logits or probabilities) against class indices ``target``.

        Args:
            input: ``[B, C, *spatial]`` logits (or probabilities with ``inputs="probabilities"``).
            target: ``[B, 1, *spatial]`` or ``[B, *spatial]`` class indices, or ``[B, C, *spatial]`` one-hot.

        Returns:
            the scalar weighted mean over all pixels.

        Raises:
            ValueError: ``input`` with another channel count than ``n_classes``, or a target of another shape.
        """
        if target.ndim == input.ndim and target.shape[1] == self.n_classes > 1 and target.shape == input.shape:
            target = target.argmax(1, keepdim=True)
        if target.ndim == input.ndim:
            check_label_matches_logits(input, target)
            target = target[:, 0]
        if input.shape[1] != self.n_classes:
            raise ValueError(f"input has {input.shape[1]} channels, the loss was built for {self.n_classes} classes.")
        logits = input.float()
        if self.inputs == "probabilities":
            logits = torch.log(logits.clamp_min(torch.finfo(torch.float32).tiny))
        weight = self._weight_on(input.device)
        return torch.nn.functional.cross_entropy(logits, target.long(), weight=weight)
