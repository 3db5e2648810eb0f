"""Batch renormalization (Ioffe 2017, Algorithm 1 and the r/d clipping schedule) against hand computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from common.networks.batch_renorm import BatchRenorm2d

EPS, MOMENTUM, STEP = 1e-3, 0.1, 12_000  # at step 12000: r_max = 1 + 2 * 7000 / 35000 = 1.4, d_max = 5 * 7000 / 20000


def hand_layer():
    """Two channels, float64, moving statistics and affine set to known numbers, schedule at STEP."""
    layer = BatchRenorm2d(2, eps=EPS, momentum=MOMENTUM).double()
    with torch.no_grad():
        layer.running_mean.copy_(torch.tensor([0.0, 2.5], dtype=torch.float64))
        layer.running_std.copy_(torch.tensor([0.5, 0.6], dtype=torch.float64))
        layer.weight.copy_(torch.tensor([2.0, 1.0], dtype=torch.float64))
        layer.bias.copy_(torch.tensor([0.5, -1.0], dtype=torch.float64))
        layer.num_batches_tracked.fill_(STEP)
    return layer


def hand_input():
    # [B=2, C=2, H=1, W=2]; channel 0 holds 1, 5, 1, 5 (mean 3, variance 4), channel 1 holds 2, 4, 3, 3 (mean 3,
    # variance 0.5)
    return torch.tensor([[[[1.0, 5.0]], [[2.0, 4.0]]], [[[1.0, 5.0]], [[3.0, 3.0]]]], dtype=torch.float64)


# the hand computation
SIGMA_B = (math.sqrt(4 + EPS), math.sqrt(0.5 + EPS))
# channel 0: sigma_B / sigma = 4.0005 -> clipped to r_max 1.4; (mu_B - mu) / sigma = 3 / 0.5 = 6 -> clipped to 1.75
# channel 1: sigma_B / sigma = 0.7078 / 0.6 = 1.1797 and (3 - 2.5) / 0.6 = 0.8333, both inside the bounds
R = (1.4, SIGMA_B[1] / 0.6)
D = (1.75, 0.5 / 0.6)
GAMMA, BETA = (2.0, 1.0), (0.5, -1.0)


def hand_output(x):
    y = torch.empty_like(x)
    for c in range(2):
        y[:, c] = GAMMA[c] * ((x[:, c] - 3.0) / SIGMA_B[c] * R[c] + D[c]) + BETA[c]
    return y


@pytest.mark.parametrize(
    ("step", "r_max", "d_max"),
    [
        (0, 1.0, 0.0),
        (4_999, 1.0, 0.0),
        (5_000, 1.0, 0.0),
        (12_000, 1.4, 1.75),
        (22_500, 2.0, 4.375),
        (25_000, 1 + 2 * 20_000 / 35_000, 5.0),
        (40_000, 3.0, 5.0),
        (1_000_000, 3.0, 5.0),
    ],
)
def test_schedule_of_ioffe_2017(step, r_max, d_max):
    layer = BatchRenorm2d(4).double()  # defaults: warm-up 5000, r_max 3 by 40k, d_max 5 by 25k
    r, d = layer.clip_limits(torch.tensor(step))
    assert (r.item(), d.item()) == (pytest.approx(r_max, abs=1e-12), pytest.approx(d_max, abs=1e-12))


def test_schedule_steps_are_arguments():
    layer = BatchRenorm2d(1, r_max=2.0, d_max=1.0, warmup_steps=10, r_max_steps=20, d_max_steps=30)
    assert [round(v.item(), 6) for v in layer.clip_limits(torch.tensor(15))] == [1.5, 0.25]
    assert [round(v.item(), 6) for v in layer.clip_limits(torch.tensor(30))] == [2.0, 1.0]


def test_training_step_hand_computation():
    layer, x = hand_layer().train(), hand_input()
    y = layer(x)
    assert torch.allclose(y, hand_output(x), atol=1e-12, rtol=0)
    # e.g. the first value of channel 0: 2 * ((1 - 3) / sqrt(4.001) * 1.4 + 1.75) + 0.5
    assert y[0, 0, 0, 0].item() == pytest.approx(2 * (-2 / math.sqrt(4.001) * 1.4 + 1.75) + 0.5, abs=1e-12)
    # channel 1 is unclipped, so training output equals the inference formula with the old moving statistics
    assert torch.allclose(y[:, 1], (x[:, 1] - 2.5) / 0.6 * 1.0 - 1.0, atol=1e-12, rtol=0)
    # moving averages: mu += 0.1 (mu_B - mu), sigma += 0.1 (sigma_B - sigma); the step counter advances
    assert layer.running_mean.tolist() == pytest.approx([0.3, 2.55], abs=1e-12)
    assert layer.running_std.tolist() == pytest.approx(
        [0.5 + 0.1 * (SIGMA_B[0] - 0.5), 0.6 + 0.1 * (SIGMA_B[1] - 0.6)], abs=1e-12
    )
    assert layer.num_batches_tracked.item() == STEP + 1


def test_eval_uses_moving_statistics_and_updates_nothing():
    layer, x = hand_layer().eval(), hand_input()
    y = layer(x)
    want = torch.stack([2.0 * (x[:, 0] - 0.0) / 0.5 + 0.5, 1.0 * (x[:, 1] - 2.5) / 0.6 - 1.0], dim=1)
    assert torch.allclose(y, want, atol=1e-12, rtol=0)
    assert layer.running_mean.tolist() == [0.0, 2.5] and layer.running_std.tolist() == [0.5, 0.6]
    assert layer.num_batches_tracked.item() == STEP


def test_gradient_does_not_flow_through_r_and_d():
    torch.manual_seed(0)
    w = torch.randn(2, 2, 1, 2, dtype=torch.float64)
    x = hand_input().requires_grad_(True)
    (hand_layer().train()(x) * w).sum().backward()

    x_ref = hand_input().requires_grad_(True)  # r and d as constants, mu_B and sigma_B differentiated
    mean_b = x_ref.mean(dim=(0, 2, 3), keepdim=True)
    std_b = torch.sqrt(x_ref.var(dim=(0, 2, 3), unbiased=False, keepdim=True) + EPS)
    r, d = torch.tensor(R, dtype=torch.float64).view(1, 2, 1, 1), torch.tensor(D, dtype=torch.float64).view(1, 2, 1, 1)
    g = torch.tensor(GAMMA, dtype=torch.float64).view(1, 2, 1, 1)
    b = torch.tensor(BETA, dtype=torch.float64).view(1, 2, 1, 1)
    ((g * ((x_ref - mean_b) / std_b * r + d) + b) * w).sum().backward()
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-12, rtol=0)
    # batchnorm-like: the gradient of each channel sums to zero over the batch (mu_B is differentiated) ...
    assert torch.allclose(x.grad.sum(dim=(0, 2, 3)), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    # ... unlike the gradient with r and d differentiated, which for unclipped channel 1 is just gamma * w / sigma
    assert not torch.allclose(x.grad[:, 1], w[:, 1] / 0.6)


def test_warm_up_is_plain_batch_norm():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64) * 3 + 1
    layer = BatchRenorm2d(4, momentum=0.1).double().train()
    with torch.no_grad():
        layer.running_mean.fill_(10.0)  # far from the batch: r and d would be clipped, to 1 and 0 in the warm-up
        layer.running_std.fill_(0.1)
    y = layer(x)
    assert torch.allclose(y, F.batch_norm(x, None, None, training=True, eps=1e-3), atol=1e-10)
    assert torch.allclose(layer.running_mean, 10.0 + 0.1 * (x.mean(dim=(0, 2, 3)) - 10.0), atol=1e-12)


def test_state_dict_carries_the_schedule():
    layer, x = hand_layer().train(), hand_input()
    layer(x)
    state = layer.state_dict()
    assert set(state) == {"weight", "bias", "running_mean", "running_std", "num_batches_tracked"}
    fresh = BatchRenorm2d(2, eps=EPS, momentum=MOMENTUM).double()
    fresh.load_state_dict(state)
    assert fresh.num_batches_tracked.item() == STEP + 1
    assert torch.equal(fresh.train()(x), layer(x))


def test_torchscript_matches_eager():
    eager, x = hand_layer().train(), hand_input()
    scripted = torch.jit.script(hand_layer().train())
    assert torch.allclose(scripted(x), eager(x), atol=1e-12)
    assert scripted.num_batches_tracked.item() == STEP + 1
    assert torch.allclose(scripted.running_std, eager.running_std, atol=1e-12)
    assert torch.allclose(scripted.eval()(x), eager.eval()(x), atol=1e-12)


def test_half_precision_input_keeps_its_dtype():
    layer = BatchRenorm2d(3).train()
    y = layer(torch.randn(2, 3, 4, 4).to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and layer.running_mean.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_features": 0},
        {"eps": 0.0},
        {"momentum": 0.0},
        {"r_max": 0.5},
        {"d_max": -1.0},
        {"warmup_steps": 50_000},
        {"d_max_steps": 5000},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        BatchRenorm2d(**{"num_features": 2, **kwargs})


def test_wrong_input_shape():
    with pytest.raises(ValueError, match="BatchRenorm2d expects"):
        BatchRenorm2d(3)(torch.zeros(2, 4, 5, 5))
