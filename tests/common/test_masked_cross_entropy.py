"""Sparse-annotation cross-entropy with L1/L2 weight regularisation (brain CT perfusion paper, II-B.1, Eq. 2-3)."""

import math
import pickle

import numpy as np
import pytest
import torch

from common.losses.masked_cross_entropy import (
    MaskedCrossEntropyWithWeightDecay,
    masked_cross_entropy,
    regularized_weights,
    weight_penalty,
)


def tiny_network():
    """Conv(2->1, 1x1x1) with kernel (0.5, -2) and bias 3, then BatchNorm: sum|W| = 2.5, sum W^2 = 4.25."""
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 1, kernel_size=1), torch.nn.BatchNorm3d(1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([0.5, -2.0]).reshape(1, 2, 1, 1, 1))
        net[0].bias.fill_(3.0)
        net[1].weight.fill_(7.0)  # BN scale: not a "weight parameter" (Lasagne: regularizable=False)
        net[1].bias.fill_(-5.0)
    return net


def tiny_batch():
    """Two samples, 3 classes, 2x1x1 voxels; 3 of the 4 voxels annotated."""
    logits = torch.tensor(
        [
            [[[[1.0]], [[0.0]]], [[[2.0]], [[0.0]]], [[[0.0]], [[0.0]]]],  # sample 0: voxel a, voxel b
            [[[[0.0]], [[5.0]]], [[[0.0]], [[-1.0]]], [[[3.0]], [[2.0]]]],  # sample 1: voxel c, voxel d
        ]
    )
    # a: class 2 (channel 1); b: not annotated; c: class 3 (channel 2); d: class 1 (channel 0)
    label = torch.tensor([[[[[2]], [[0]]]], [[[[3]], [[1]]]]])
    return logits, label


def test_cross_entropy_by_hand():
    logits, label = tiny_batch()
    assert logits.shape == (2, 3, 2, 1, 1) and label.shape == (2, 1, 2, 1, 1)
    # a: logits (1, 2, 0), target 2nd: -log(e^2 / (e + e^2 + 1))
    ce_a = -2.0 + math.log(math.e + math.e**2 + 1)
    # c: logits (0, 0, 3), target 3rd
    ce_c = -3.0 + math.log(2 + math.e**3)
    # d: logits (5, -1, 2), target 1st
    ce_d = -5.0 + math.log(math.e**5 + math.e**-1 + math.e**2)
    expected = (ce_a + ce_c + ce_d) / 3  # mean over the 3 annotated voxels of the whole batch
    assert masked_cross_entropy(logits, label).item() == pytest.approx(expected, rel=1e-6)
    # a float label is accepted
    assert masked_cross_entropy(logits, label.float()).item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_matches_numpy_on_random_batch():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 3, 4, 5))
    label = rng.integers(0, 5, size=(2, 1, 3, 4, 5))
    # independent reference: log-softmax per voxel, pick the target channel, average over label > 0
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    total, count = 0.0, 0
    for b, x, y, z in np.argwhere(label[:, 0] > 0):
        total -= log_p[b, label[b, 0, x, y, z] - 1, x, y, z]
        count += 1
    loss = masked_cross_entropy(torch.tensor(logits, dtype=torch.float64), torch.tensor(label))
    assert count > 50
    assert loss.item() == pytest.approx(total / count, rel=1e-10)


def test_penalty_by_hand_excludes_biases_and_batchnorm():
    net = tiny_network()
    assert [tuple(p.shape) for p in regularized_weights(net)] == [(1, 2, 1, 1, 1)]
    assert weight_penalty(net, 0.1, 0.01).item() == pytest.approx(0.1 * 2.5 + 0.01 * 4.25)
    assert weight_penalty(net, 0.0, 0.0).item() == 0.0
    # DataParallel / DistributedDataParallel wrappers: the wrapped module's weights
    assert weight_penalty(torch.nn.DataParallel(net), 0.1, 0.01).item() == pytest.approx(0.1 * 2.5 + 0.01 * 4.25)


def test_loss_is_cross_entropy_plus_penalties():
    logits, label = tiny_batch()
    net = tiny_network()
    ce = masked_cross_entropy(logits, label).item()
    loss = MaskedCrossEntropyWithWeightDecay(net, l1=0.1, l2=0.01)(logits, label)
    assert loss.item() == pytest.approx(ce + 0.1 * 2.5 + 0.01 * 4.25, rel=1e-6)
    default = MaskedCrossEntropyWithWeightDecay(net)
    assert (default.l1, default.l2) == (1e-6, 1e-5)  # the paper's lambda1, lambda2
    assert default(logits, label).item() == pytest.approx(ce + 1e-6 * 2.5 + 1e-5 * 4.25, rel=1e-7)


def test_penalty_gradient_on_weights():
    logits, label = tiny_batch()
    net = tiny_network()
    MaskedCrossEntropyWithWeightDecay(net, l1=0.1, l2=0.01)(logits, label).backward()
    # d/dW (0.1 |W| + 0.01 W^2) = 0.1 sign(W) + 0.02 W at W = (0.5, -2)
    expected = torch.tensor([0.1 + 0.02 * 0.5, -0.1 + 0.02 * -2.0]).reshape(1, 2, 1, 1, 1)
    assert torch.allclose(net[0].weight.grad, expected)
    assert net[0].bias.grad is None and net[1].weight.grad is None


def test_gradient_zero_outside_annotations_and_softmax_minus_onehot_inside():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    label = torch.zeros(2, 1, 3, 3, 2, dtype=torch.long)
    label[0, 0, 1, 1, 0] = 1
    label[0, 0, 2, 0, 1] = 4
    label[1, 0, 0, 2, 1] = 3
    label[1, 0, 1, 1, 1] = 2
    label[1, 0, 2, 2, 0] = 4
    loss = MaskedCrossEntropyWithWeightDecay(torch.nn.Linear(2, 2), l1=1e-3, l2=1e-3)(logits, label)
    loss.backward()
    grad = logits.grad
    annotated = label[:, 0] > 0
    n = int(annotated.sum())
    assert n == 5
    assert torch.count_nonzero(grad.permute(0, 2, 3, 4, 1)[~annotated]) == 0  # exactly zero, not just small
    softmax = torch.softmax(logits.detach(), dim=1)
    for b, x, y, z in annotated.nonzero().tolist():
        onehot = torch.zeros(4, dtype=torch.float64)
        onehot[label[b, 0, x, y, z] - 1] = 1.0
        assert torch.allclose(grad[b, :, x, y, z], (softmax[b, :, x, y, z] - onehot) / n)


def test_no_annotation_gives_zero_cross_entropy_and_finite_gradient():
    logits = torch.randn(2, 4, 3, 3, 3, requires_grad=True)
    label = torch.zeros(2, 1, 3, 3, 3)
    net = tiny_network()
    ce = masked_cross_entropy(logits, label)
    assert ce.item() == 0.0
    loss = MaskedCrossEntropyWithWeightDecay(net, l1=0.1, l2=0.01)(logits, label)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(0.1 * 2.5 + 0.01 * 4.25)
    loss.backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_other_ignore_value():
    logits, label = tiny_batch()
    relabelled = torch.where(label == 0, torch.full_like(label, 9), label)
    assert masked_cross_entropy(logits, relabelled, ignore_value=9).item() == pytest.approx(
        masked_cross_entropy(logits, label).item()
    )


def test_shape_mismatch_names_both_shapes():
    logits = torch.zeros(2, 4, 6, 6, 6)
    with pytest.raises(ValueError, match=r"\(2, 1, 5, 6, 6\).*\(2, 4, 6, 6, 6\)"):
        masked_cross_entropy(logits, torch.zeros(2, 1, 5, 6, 6))
    with pytest.raises(ValueError, match=r"\(2, 6, 6, 6\)"):
        masked_cross_entropy(logits, torch.zeros(2, 6, 6, 6))  # no channel axis
    with pytest.raises(ValueError, match="logits must be"):
        masked_cross_entropy(torch.zeros(4), torch.zeros(4))


def test_label_outside_classes_rejected():
    logits = torch.zeros(1, 4, 2, 2, 2)
    label = torch.zeros(1, 1, 2, 2, 2)
    label[0, 0, 0, 0, 0] = 5
    with pytest.raises(ValueError, match=r"\[5\].*1\.\.4"):
        masked_cross_entropy(logits, label)
    label[0, 0, 0, 0, 0] = -1
    with pytest.raises(ValueError, match=r"\[-1\]"):
        masked_cross_entropy(logits, label)


def test_arguments_checked_and_network_not_a_submodule():
    net = tiny_network()
    with pytest.raises(TypeError, match="network"):
        MaskedCrossEntropyWithWeightDecay(object())
    with pytest.raises(ValueError, match="l1"):
        MaskedCrossEntropyWithWeightDecay(net, l1=-1.0)
    loss = MaskedCrossEntropyWithWeightDecay(net)
    assert list(loss.parameters()) == [] and loss.state_dict() == {}
    assert loss.network is net
    # picklable (configs may deep-copy or send it to workers); the copy penalises its own copy of the network
    copy = pickle.loads(pickle.dumps(loss))
    assert weight_penalty(copy.network, 0.1, 0.01).item() == pytest.approx(0.1 * 2.5 + 0.01 * 4.25)
