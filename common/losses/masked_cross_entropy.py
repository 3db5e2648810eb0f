"""Cross-entropy over sparsely annotated voxels plus L1 and L2 weight regularisation (brain CT perfusion, II-B.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common.losses.shapes import check_label_matches_logits

__all__ = ["MaskedCrossEntropyWithWeightDecay", "masked_cross_entropy", "regularized_weights", "weight_penalty"]

# F.cross_entropy's default ignore_index; unannotated voxels get it so they contribute no loss and no gradient
_IGNORE_INDEX = -100


def masked_cross_entropy(logits: torch.Tensor, label: torch.Tensor, ignore_value: int = 0) -> torch.Tensor:
    """Weighted categorical cross-entropy over the annotated voxels of a batch.

    Implements ``WCCE`` of the brain CT perfusion paper, Section II-B.1, Eq. 3:
    ``WCCE = sum_i w_i CCE_i / sum_i w_i`` with ``CCE_i = -sum_j t_ij log p_ij`` and ``w_i = 1`` where voxel ``i``
    is annotated, 0 otherwise ("thereby only learning from labeled voxels"). The mean runs over the annotated voxels
    of the whole batch, not per sample. ``p = softmax(logits)`` over the channel axis, computed as ``log_softmax``
    inside ``F.cross_entropy`` for numerical stability (the paper's network ends in a soft-max; ours returns logits).

    Label value ``k`` in ``1..C`` is class ``k``, predicted by output channel ``k - 1``; ``ignore_value`` (0) marks a
    voxel as not annotated. Unannotated voxels get exactly zero gradient. A batch without any annotated voxel gives
    a cross-entropy of exactly 0 (not ``0 / 0 = NaN``) and zero gradients, so such a batch only applies the weight
    regularisation instead of poisoning the weights with NaN.

    Args:
        logits: ``[B, C, *spatial]`` raw network outputs (before soft-max).
        label: ``[B, 1, *spatial]`` integer-valued labels (any integer or floating dtype; floats are rounded).
        ignore_value: label value of unannotated voxels.

    Returns:
        scalar tensor, the mean cross-entropy over annotated voxels (0 if there are none).

    Raises:
        ValueError: ``logits`` has fewer than 3 dimensions, ``label`` is not ``[B, 1, *spatial]`` for the logits'
            ``B`` and ``spatial``, or an annotated voxel's label is outside ``1..C``.
    """
    if logits.ndim < 3:
        raise ValueError(f"logits must be [B, C, *spatial], got shape {tuple(logits.shape)}.")
    check_label_matches_logits(logits, label)
    n_classes = logits.shape[1]
    label = label[:, 0]
    if label.is_floating_point():
        label = torch.round(label)
    label = label.long()
    annotated = label != ignore_value
    target = torch.where(annotated, label - 1, torch.full_like(label, _IGNORE_INDEX))
    bad = annotated & ((target < 0) | (target >= n_classes))
    if bool(bad.any()):
        values = torch.unique(label[bad]).tolist()
        raise ValueError(
            f"label values {values} are outside the classes 1..{n_classes} of the {n_classes}-channel logits "
            f"(and are not ignore_value={ignore_value})."
        )
    total = F.cross_entropy(logits, target, ignore_index=_IGNORE_INDEX, reduction="sum")
    n_annotated = annotated.sum().clamp_min(1).to(total.dtype)
    return total / n_annotated


def regularized_weights(network: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters that the L1/L2 terms of Section II-B.1, Eq. 2 penalise: trainable weights with ``ndim > 1``.

    The paper penalises the "weight parameters"; it was implemented in Lasagne, whose ``regularize_network_params``
    takes the parameters tagged ``regularizable``: convolution and dense kernels, but not biases nor batch-norm
    ``beta``/``gamma``. Here that is every trainable parameter with more than one dimension (convolution and linear
    kernels); biases and normalisation scales/shifts are one-dimensional and left out. A network wrapped in
    ``DistributedDataParallel`` or ``DataParallel`` is unwrapped through ``.module``.

    Args:
        network: the network, possibly wrapped.

    Returns:
        the kernels, in ``named_parameters`` order.
    """
    module = getattr(network, "module", network)
    return [p for p in module.parameters() if p.requires_grad and p.ndim > 1]


def weight_penalty(network: torch.nn.Module, l1: float, l2: float) -> torch.Tensor:
    """``l1 * sum |W| + l2 * sum W^2`` over the network's kernels (Section II-B.1, Eq. 2, ``lambda1 L1 + lambda2 L2``).

    Args:
        network: the network whose kernels (see :func:`regularized_weights`) are penalised.
        l1: weight of the L1 norm (paper: 1e-6).
        l2: weight of the squared L2 norm (paper: 1e-5; Lasagne's ``l2`` is ``sum W^2``, without a factor 1/2).

    Returns:
        scalar tensor on the weights' device (a 0 on the CPU if the network has no kernel).
    """
    weights = regularized_weights(network)
    if not weights or (l1 == 0 and l2 == 0):
        device = weights[0].device if weights else None
        return torch.zeros((), device=device)
    penalty = torch.zeros((), device=weights[0].device, dtype=weights[0].dtype)
    if l1:
        penalty = penalty + l1 * torch.stack([w.abs().sum() for w in weights]).sum()
    if l2:
        penalty = penalty + l2 * torch.stack([w.pow(2).sum() for w in weights]).sum()
    return penalty


class MaskedCrossEntropyWithWeightDecay(torch.nn.Module):
    """Sparse-annotation cross-entropy plus L1 and L2 regularisation of a network's weights.

    Implements the training objective of the brain CT perfusion paper, Section II-B.1, Eq. 2:
    ``L = lambda0 WCCE + lambda1 L1(Theta) + lambda2 L2(Theta)`` with ``lambda0 = 1``, ``lambda1 = 1e-6``,
    ``lambda2 = 1e-5``. ``WCCE`` is :func:`masked_cross_entropy` (mean over the annotated voxels of the batch, 0 for
    a batch without annotations); the penalties are :func:`weight_penalty` over the network's convolution/linear
    kernels (biases and batch-norm parameters excluded, as Lasagne's ``regularizable`` tag does).

    The network is held by reference, not registered as a sub-module, so the loss has no parameters of its own, its
    ``state_dict`` is empty and moving or checkpointing the loss leaves the network alone. Give it the network the
    optimizer updates (a ``DistributedDataParallel`` wrapper is fine: its ``.module`` is used).

    Args:
        network: the network whose weights are penalised.
        l1: ``lambda1``, weight of ``sum |W|``.
        l2: ``lambda2``, weight of ``sum W^2``.
        ignore_value: label value of unannotated voxels.

    Input ``logits [B, C, *spatial]`` and ``label [B, 1, *spatial]`` (values ``ignore_value`` or ``1..C``) ->
    scalar loss.
    """

    def __init__(self, network: torch.nn.Module, l1: float = 1e-6, l2: float = 1e-5, ignore_value: int = 0) -> None:
        super().__init__()
        if not isinstance(network, torch.nn.Module):
            raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}.")
        if l1 < 0 or l2 < 0:
            raise ValueError(f"l1 and l2 must be >= 0, got l1={l1}, l2={l2}.")
        # a list keeps nn.Module.__setattr__ from registering the network as a sub-module of the loss
        self._network = [network]
        self.l1 = float(l1)
        self.l2 = float(l2)
        self.ignore_value = int(ignore_value)

    @property
    def network(self) -> torch.nn.Module:
        """The network whose weights are penalised."""
        return self._network[0]

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Masked cross-entropy of ``logits`` against ``label`` plus the weight penalties.

        Args:
            logits: ``[B, C, *spatial]`` raw network outputs.
            label: ``[B, 1, *spatial]`` labels, ``ignore_value`` for unannotated voxels, ``1..C`` for the classes.

        Returns:
            scalar loss.
        """
        ce = masked_cross_entropy(logits, label, self.ignore_value)
        return ce + weight_penalty(self.network, self.l1, self.l2).to(ce.dtype)
