"""Sparse temporal Dice loss of the cardiac 4D CNN paper (sec. 3.2, Eq. 1-2): hand computations, gradients, layouts."""

import numpy as np
import pytest
import torch

from common.losses.sparse_temporal_dice import (
    SparseTemporalDiceLoss,
    annotated_frames,
    frames_as_batch,
    temporal_smoothness,
)

IGNORE = 255
SMOOTH = 1e-5


def softmax_by_hand(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 1 of a [B, C, ...] array, with explicit exponentials."""
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def dice_loss_of_frames(frames, classes, squared=True):
    """Mean over (frame, class) of 1 - (2 sum p g + s) / (sum p^2 + sum g^2 + s); frames: list of (p [C, V], g [V])."""
    values = []
    for p, g in frames:
        for c in classes:
            inter = sum(p[c][v] * (1.0 if g[v] == c else 0.0) for v in range(len(g)))
            p_term = sum((p[c][v] ** 2 if squared else p[c][v]) for v in range(len(g)))
            g_term = sum(1.0 for v in range(len(g)) if g[v] == c)
            values.append(1.0 - (2.0 * inter + SMOOTH) / (p_term + g_term + SMOOTH))
    return sum(values) / len(values)


def tiny_case():
    """Logits [1, 3, 2, 2, 1, 3]; frames 0 and 2 annotated, frame 1 not (255 everywhere)."""
    logits = np.random.default_rng(7).normal(0.0, 1.5, size=(1, 3, 2, 2, 1, 3))
    label = np.full((1, 1, 2, 2, 1, 3), IGNORE)
    label[0, 0, :, :, 0, 0] = [[0, 1], [2, 1]]
    label[0, 0, :, :, 0, 2] = [[1, 1], [0, 0]]  # no myocardium in frame 2
    return logits, label


def test_loss_by_hand_on_tiny_case():
    logits, label = tiny_case()
    p = softmax_by_hand(logits)[0]  # [3, 2, 2, 1, 3]
    frames = []
    for t in (0, 2):  # the annotated frames
        p_t = p[..., t].reshape(3, 4)
        g_t = label[0, 0, ..., t].reshape(4)
        frames.append((p_t, g_t))
    dice = dice_loss_of_frames(frames, classes=(1, 2))
    # smoothness: mean over 3 classes x 4 voxels x 2 consecutive pairs of (p_{t+1} - p_t)^2
    total = 0.0
    for c in range(3):
        for x in range(2):
            for y in range(2):
                for t in range(2):
                    total += (p[c, x, y, 0, t + 1] - p[c, x, y, 0, t]) ** 2
    smooth = total / (3 * 4 * 2)
    loss = SparseTemporalDiceLoss()
    x, y = torch.tensor(logits), torch.tensor(label)
    terms = loss.terms(x, y)
    assert terms["dice"].item() == pytest.approx(dice, rel=1e-9)
    assert terms["smoothness"].item() == pytest.approx(smooth, rel=1e-9)
    assert loss(x, y).item() == pytest.approx(dice + smooth, rel=1e-9)
    # a float label, and the background scored too
    assert loss(x, y.float()).item() == pytest.approx(dice + smooth, rel=1e-9)
    with_bg = dice_loss_of_frames(frames, classes=(0, 1, 2))
    assert SparseTemporalDiceLoss(include_background=True).terms(x, y)["dice"].item() == pytest.approx(with_bg)
    # V-Net's squared denominators are the default; plain sums on request
    plain = dice_loss_of_frames(frames, classes=(1, 2), squared=False)
    assert SparseTemporalDiceLoss(squared_pred=False).terms(x, y)["dice"].item() == pytest.approx(plain)
    assert plain != pytest.approx(dice)


def test_batch_pools_annotated_frames_of_all_samples():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 3, 2, 2, 2, 4))
    label = rng.integers(0, 3, size=(2, 1, 2, 2, 2, 4))
    label[0, ..., [0, 1, 3]] = IGNORE  # sample 0: frame 2 annotated
    label[1, ..., [1, 2]] = IGNORE  # sample 1: frames 0 and 3 annotated
    p = softmax_by_hand(logits)
    frames = [(p[b, ..., t].reshape(3, 8), label[b, 0, ..., t].reshape(8)) for b, t in ((0, 2), (1, 0), (1, 3))]
    expected = dice_loss_of_frames(frames, classes=(1, 2))  # mean over 3 frames x 2 classes, not per sample
    got = SparseTemporalDiceLoss().terms(torch.tensor(logits), torch.tensor(label))["dice"]
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_unannotated_frames_get_gradient_only_from_smoothness():
    logits, label = tiny_case()
    loss = SparseTemporalDiceLoss()
    x = torch.tensor(logits, requires_grad=True)
    loss.terms(x, torch.tensor(label))["dice"].backward()
    assert torch.all(x.grad[..., 1] == 0)  # the unannotated frame: exactly zero
    assert x.grad[..., 0].abs().sum() > 0 and x.grad[..., 2].abs().sum() > 0
    x.grad = None
    loss.terms(x, torch.tensor(label))["smoothness"].backward()
    assert x.grad[..., 1].abs().sum() > 0  # the smoothness term reaches it
    x.grad = None
    loss(x, torch.tensor(label)).backward()
    assert x.grad[..., 1].abs().sum() > 0


def test_smoothness_constant_and_step_sequences():
    # probabilities constant in time: 0
    frame = torch.tensor([0.2, 0.8]).reshape(1, 2, 1, 1, 1, 1)
    constant = frame.expand(1, 2, 3, 2, 1, 5)
    assert temporal_smoothness(constant).item() == 0.0
    # step change at t = 2 of T = 4, every voxel: (0.75, 0.25) -> (0.25, 0.75); one of 3 pairs differs by 0.5
    probs = torch.empty(1, 2, 3, 2, 1, 4)
    probs[:, 0, ..., :2], probs[:, 1, ..., :2] = 0.75, 0.25
    probs[:, 0, ..., 2:], probs[:, 1, ..., 2:] = 0.25, 0.75
    # l2: sum over 2 channels x 6 voxels of 0.5^2 = 3, over 2 x 6 x 3 = 36 terms -> 1/12; l1: 6 / 36 = 1/6
    assert temporal_smoothness(probs, "l2").item() == pytest.approx(1 / 12)
    assert temporal_smoothness(probs, "l1").item() == pytest.approx(1 / 6)
    # through the loss, with probabilities as input and no annotated frame: the loss is the smoothness alone
    label = torch.full((1, 1, 3, 2, 1, 4), IGNORE)
    assert SparseTemporalDiceLoss(softmax=False)(probs, label).item() == pytest.approx(1 / 12)
    assert SparseTemporalDiceLoss(softmax=False, smoothness="l1")(probs, label).item() == pytest.approx(1 / 6)
    weighted = SparseTemporalDiceLoss(softmax=False, smoothness_weight=3.0)(probs, label)
    assert weighted.item() == pytest.approx(3 / 12)
    # a single frame has no derivative
    assert temporal_smoothness(probs[..., :1]).item() == 0.0


def test_no_wrap_around():
    # frames 0 and 2 equal, frame 1 differs; a wrap-around would add the (2 -> 0) pair (0) and change the divisor
    probs = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]).reshape(1, 2, 1, 1, 1, 3)
    # pairs (0,1) and (1,2) each: 1 + 1 over 2 channels; mean over 2 channels x 2 pairs = 4 / 4
    assert temporal_smoothness(probs).item() == pytest.approx(1.0)


def test_dice_depends_only_on_annotated_frames():
    logits, label = tiny_case()
    loss = SparseTemporalDiceLoss()
    x, y = torch.tensor(logits), torch.tensor(label)
    dice = loss.terms(x, y)["dice"].item()
    changed = x.clone()
    changed[..., 1] = torch.randn(changed[..., 1].shape, dtype=changed.dtype)
    assert loss.terms(changed, y)["dice"].item() == pytest.approx(dice, rel=1e-12)
    # the same frames as a 3D batch (the 3D path) give the same Dice
    frames_x = torch.stack([x[..., 0], x[..., 2]])[:, 0]
    frames_y = torch.stack([y[..., 0], y[..., 2]])[:, 0]
    assert loss.terms(frames_x, frames_y)["dice"].item() == pytest.approx(dice, rel=1e-12)
    # which time points are annotated does not matter, only what they hold: reverse time
    assert loss.terms(x.flip(-1), y.flip(-1))["dice"].item() == pytest.approx(dice, rel=1e-12)
    # frame 1 annotated instead of frame 2, holding frame 2's logits and label
    moved_x, moved_y = x.clone(), y.clone()
    moved_x[..., 1], moved_y[..., 1] = x[..., 2], y[..., 2]
    moved_y[..., 2] = IGNORE
    assert loss.terms(moved_x, moved_y)["dice"].item() == pytest.approx(dice, rel=1e-12)


def test_batch_without_annotation_trains_on_smoothness():
    logits, label = tiny_case()
    label[:] = IGNORE
    loss = SparseTemporalDiceLoss()
    x = torch.tensor(logits, requires_grad=True)
    terms = loss.terms(x, torch.tensor(label))
    assert terms["dice"].item() == 0.0
    value = loss(x, torch.tensor(label))
    assert value.item() == pytest.approx(terms["smoothness"].item()) and value.item() > 0
    value.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_partially_ignored_frame_is_not_annotated():
    logits, label = tiny_case()
    label[0, 0, 0, 0, 0, 2] = IGNORE  # frame 2 now holds one ignored voxel: only frame 0 is scored
    p = softmax_by_hand(logits)[0]
    expected = dice_loss_of_frames([(p[..., 0].reshape(3, 4), label[0, 0, ..., 0].reshape(4))], classes=(1, 2))
    got = SparseTemporalDiceLoss().terms(torch.tensor(logits), torch.tensor(label))["dice"]
    assert got.item() == pytest.approx(expected, rel=1e-9)
    assert annotated_frames(frames_as_batch(torch.tensor(label))).tolist() == [True, False, False]


def test_3d_input_is_plain_dice_on_annotated_items():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(3, 3, 2, 2, 2))
    label = rng.integers(0, 3, size=(3, 1, 2, 2, 2))
    label[1] = IGNORE  # item 1 not annotated
    p = softmax_by_hand(logits)
    frames = [(p[b].reshape(3, 8), label[b, 0].reshape(8)) for b in (0, 2)]
    loss = SparseTemporalDiceLoss()
    terms = loss.terms(torch.tensor(logits), torch.tensor(label))
    assert terms["dice"].item() == pytest.approx(dice_loss_of_frames(frames, classes=(1, 2)), rel=1e-9)
    assert terms["smoothness"].item() == 0.0
    x = torch.tensor(logits, requires_grad=True)
    loss(x, torch.tensor(label)).backward()
    assert torch.all(x.grad[1] == 0) and x.grad[0].abs().sum() > 0


def test_time_major_memory_layout_gives_the_same_result():
    rng = np.random.default_rng(5)
    logits = torch.tensor(rng.normal(size=(2, 5, 3, 4, 2, 3)))  # [B, T, X, Y, Z, C] in memory
    label = torch.tensor(rng.integers(0, 3, size=(2, 5, 3, 4, 2, 1)))
    label[:, 1] = IGNORE
    label[1, 3] = IGNORE
    x, y = logits.permute(0, 5, 2, 3, 4, 1), label.permute(0, 5, 2, 3, 4, 1)  # [B, C, X, Y, Z, T], non-contiguous
    assert not x.is_contiguous() and not y.is_contiguous()
    loss = SparseTemporalDiceLoss()
    folded, dense = loss.terms(x, y), loss.terms(x.contiguous(), y.contiguous())
    assert folded["dice"].item() == pytest.approx(dense["dice"].item(), rel=1e-12)
    assert folded["smoothness"].item() == pytest.approx(dense["smoothness"].item(), rel=1e-12)
    # frames_as_batch: item b * T + t is frame t of sample b
    assert torch.equal(frames_as_batch(x)[1 * 5 + 2], x[1, ..., 2])


def test_terms_add_up_to_forward():
    logits, label = tiny_case()
    x, y = torch.tensor(logits), torch.tensor(label)
    for weight in (1.0, 0.5, 0.0):
        loss = SparseTemporalDiceLoss(smoothness_weight=weight)
        terms = loss.terms(x, y)
        assert loss(x, y).item() == pytest.approx(terms["dice"].item() + weight * terms["smoothness"].item())
        assert terms["smoothness"].item() > 0  # so the weight is seen


def test_bad_inputs():
    loss = SparseTemporalDiceLoss()
    x = torch.zeros(1, 3, 2, 2, 1, 3)
    with pytest.raises(ValueError, match="label shape"):
        loss(x, torch.zeros(1, 1, 2, 2, 1, 4))
    with pytest.raises(ValueError, match=r"\[B, C, X, Y, Z, T\]"):
        loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="at least 2 channels"):
        loss(torch.zeros(1, 1, 2, 2, 1, 3), torch.zeros(1, 1, 2, 2, 1, 3))
    bad = torch.zeros(1, 1, 2, 2, 1, 3)
    bad[..., 1] = 3
    with pytest.raises(ValueError, match=r"label values \[3\]"):
        loss(x, bad)
    with pytest.raises(ValueError, match="smoothness must be one of"):
        SparseTemporalDiceLoss(smoothness="l3")
    with pytest.raises(ValueError, match="smoothness_weight"):
        SparseTemporalDiceLoss(smoothness_weight=-1.0)
