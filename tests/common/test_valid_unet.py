"""Facts of the valid-convolution U-Net of van de Leemput et al. 2019 (section II-A, Figure 1; II-B1, II-B4)."""

import math

import pytest
import torch

from common.networks.valid_unet import ValidConvUNet, center_crop_to, cyclic_channel_sum

TINY = (2, 2, 2, 2)


def count_params(net):
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def hand_param_count(in_ch, out_ch, f):
    """3x3x3 convs without bias (BN follows), BN weight+shift, decoder input = up-scaled + encoder, 1x1x1 head."""
    conv = lambda c_in, c_out: 27 * c_in * c_out  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731
    total, c = 0, in_ch
    for fk in f:  # levels 1-3 and the bottom level 4
        total += conv(c, fk) + bn(fk) + conv(fk, fk) + bn(fk)
        c = fk
    for fk in reversed(f[:-1]):  # decoder levels 3, 2, 1
        total += conv(c + fk, fk) + bn(fk) + conv(fk, fk) + bn(fk)
        c = fk
    return total + c * out_ch + out_ch


def stack_output_size(n):
    """Walk the layers by hand: -2 per 3x3x3 conv, /2 per pool; None when a pool sees an odd size or a size dies."""
    for _ in range(3):
        n -= 4
        if n < 2 or n % 2:
            return None
        n //= 2
    n -= 4
    for _ in range(3):
        n = 2 * n - 4
        if n < 1:
            return None
    return n


@pytest.mark.parametrize("n", [92, 100, 108, 116, 124])
def test_output_is_input_minus_88(n):
    net = ValidConvUNet(in_channels=19, out_channels=4, features=TINY).eval()
    with torch.no_grad():
        y = net(torch.rand(1, 19, n, n, n))
    assert y.shape == (1, 4, n - 88, n - 88, n - 88)
    assert n - 88 == stack_output_size(n) == ValidConvUNet.output_size(n)


def test_non_cubic_input():
    net = ValidConvUNet(in_channels=3, out_channels=4, features=TINY).eval()
    with torch.no_grad():
        y = net(torch.rand(2, 3, 92, 108, 100))
    assert y.shape == (2, 4, 4, 20, 12)


def test_class_size_facts():
    assert (ValidConvUNet.size_difference, ValidConvUNet.size_step, ValidConvUNet.min_input_size) == (88, 8, 92)
    assert [n for n in range(60, 140) if ValidConvUNet.valid_input_size(n)] == [92, 100, 108, 116, 124, 132]
    # the rule is the one the layer walk implies: even sizes before every pool and a positive output
    for n in range(20, 300):
        assert ValidConvUNet.valid_input_size(n) == (stack_output_size(n) is not None), n


@pytest.mark.parametrize(("n", "nearest"), [(91, "92."), (93, "92 and 100"), (96, "92 and 100"), (120, "116 and 124")])
def test_invalid_sizes_raise_with_nearest(n, nearest):
    net = ValidConvUNet(in_channels=1, out_channels=2, features=TINY)
    with pytest.raises(ValueError, match=rf"size {n} \(spatial dimension 1 .*nearest valid sizes are {nearest}"):
        net(torch.zeros(1, 1, 92, n, 92))
    with pytest.raises(ValueError, match=f"size {n} is not valid"):
        ValidConvUNet.output_size(n)


def test_too_small_input_raises():
    net = ValidConvUNet(in_channels=1, out_channels=2, features=TINY)
    with pytest.raises(ValueError, match=r"size 84 \(spatial dimension 2 .*nearest valid sizes are 92\."):
        net(torch.zeros(1, 1, 92, 92, 84))
    with pytest.raises(ValueError, match=r"expected input \[B, 1, n1, n2, n3\]"):
        net(torch.zeros(1, 2, 92, 92, 92))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="spatial_dims must be 3"):
        ValidConvUNet(spatial_dims=2)
    with pytest.raises(ValueError, match="features must list 4"):
        ValidConvUNet(features=(2, 2, 2))
    with pytest.raises(ValueError, match="act must be one of"):
        ValidConvUNet(act="prelu")
    with pytest.raises(ValueError, match="init must be one of"):
        ValidConvUNet(init="kaiming")


def test_cyclic_channel_sum_three_onto_seven_with_cropping():
    a = torch.arange(3.0).view(1, 3, 1, 1, 1) * 100 + torch.arange(7.0).view(1, 1, 7, 1, 1)  # [1, 3, 7, 1, 1]
    a = a.expand(1, 3, 7, 5, 1).clone()
    b = torch.arange(7.0).view(1, 7, 1, 1, 1).expand(1, 7, 3, 5, 3).clone() * 1000  # [1, 7, 3, 5, 3]
    d = cyclic_channel_sum(a, b)
    assert d.shape == (1, 7, 3, 5, 1)
    # channel j gets shortcut channel j mod 3; spatially A is cropped 7 -> 3 (rows 2..4), B 3 -> 1 (column 1)
    for j in range(7):
        for r in range(3):
            assert torch.all(d[0, j, r] == 1000 * j + 100 * (j % 3) + (r + 2))


def test_cyclic_channel_sum_seven_onto_three_cuts():
    a = torch.arange(7.0).view(1, 7, 1, 1, 1).expand(2, 7, 6, 6, 6).clone()
    b = torch.full((2, 3, 4, 4, 4), 10.0)
    d = cyclic_channel_sum(a, b)
    assert d.shape == (2, 3, 4, 4, 4)
    assert [float(d[0, j, 0, 0, 0]) for j in range(3)] == [10.0, 11.0, 12.0]
    # the paper's example: A = (a, b, c) onto 64 maps gives f1+a, f2+b, f3+c, f4+a, ..., f64+a
    small = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1, 1)
    assert cyclic_channel_sum(small, torch.zeros(1, 64, 1, 1, 1)).flatten().tolist() == [1.0, 2.0, 3.0] * 21 + [1.0]


def test_center_crop_takes_the_middle():
    x = torch.arange(10.0).view(1, 1, 10)
    assert center_crop_to(x, [6]).flatten().tolist() == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    with pytest.raises(ValueError, match="cannot centre-crop"):
        center_crop_to(x, [11])


def test_default_parameter_count():
    net = ValidConvUNet(in_channels=19, out_channels=4)
    assert net.features == (32, 64, 128, 256)
    assert count_params(net) == hand_param_count(19, 4, (32, 64, 128, 256)) == 5_853_092


def test_fifteen_convs_three_pools_three_upscalings():
    net = ValidConvUNet(in_channels=19, out_channels=4, features=TINY)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    assert len(convs) == 15
    assert sorted(c.kernel_size for c in convs).count((3, 3, 3)) == 14
    assert all(c.padding == (0, 0, 0) for c in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm3d) for m in net.modules()) == 14
    acts = [m for m in net.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert len(acts) == 14 and all(a.negative_slope == pytest.approx(1 / 3) for a in acts)
    # the activation really is f(x) = x for x >= 0, x / 3 otherwise
    assert acts[0](torch.tensor([-3.0, 0.0, 2.0])).tolist() == pytest.approx([-1.0, 0.0, 2.0])
    # 3 pool and 3 up-scaling applications in one forward pass
    calls = {"pool": 0, "up": 0}
    net.pool.register_forward_hook(lambda *_: calls.__setitem__("pool", calls["pool"] + 1))
    net.upsample.register_forward_hook(lambda *_: calls.__setitem__("up", calls["up"] + 1))
    net.eval()(torch.zeros(1, 19, 92, 92, 92))
    assert calls == {"pool": 3, "up": 3}


def test_upscaling_is_nearest_neighbour():
    net = ValidConvUNet(in_channels=1, out_channels=1, features=TINY)
    x = torch.arange(8.0).view(1, 1, 2, 2, 2)
    y = net.upsample(x)
    assert y.shape == (1, 1, 4, 4, 4)
    assert torch.equal(y, x.repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4))


def test_relu_option():
    net = ValidConvUNet(in_channels=1, out_channels=2, features=TINY, act="relu")
    assert sum(isinstance(m, torch.nn.ReLU) for m in net.modules()) == 14
    assert not any(isinstance(m, torch.nn.LeakyReLU) for m in net.modules())


def _silence_conv_paths(net):
    """BN weight and shift zero: each 3x3x3 conv then outputs act(0) = 0, only the shortcuts carry signal."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.weight.zero_()
                m.bias.zero_()


@pytest.mark.parametrize("short_shortcuts", [True, False])
def test_short_shortcuts_carry_the_input(short_shortcuts):
    torch.manual_seed(0)
    net = ValidConvUNet(in_channels=3, out_channels=2, features=TINY, short_shortcuts=short_shortcuts).eval()
    _silence_conv_paths(net)
    x = torch.randn(1, 3, 92, 92, 92)
    with torch.no_grad():
        y = net(x)
        pair = net.encoder[0](x)
    head_bias = net.head.conv.bias.view(1, 2, 1, 1, 1)
    if short_shortcuts:
        # the first pair returns its input, cropped by 2 per side, channels cycled 3 -> 2 (cut)
        assert torch.equal(pair, x[:, :2, 2:-2, 2:-2, 2:-2])
        assert not torch.allclose(y, head_bias.expand_as(y))
    else:
        # no shortcut adds: every pair outputs zeros and the network its head bias
        assert torch.count_nonzero(pair) == 0
        assert torch.equal(y, head_bias.expand_as(y))
    assert all(m.shortcut == short_shortcuts for m in [*net.encoder, net.bottom, *net.decoder])


def test_dropout_only_at_the_coarsest_level():
    net = ValidConvUNet(in_channels=1, out_channels=2, features=TINY, dropout=0.5)
    drops = [(name, m) for name, m in net.named_modules() if isinstance(m, torch.nn.Dropout)]
    assert [name for name, _ in drops] == ["bottom.dropout"] and drops[0][1].p == 0.5
    # applied before each of the bottom's two convolutions: two calls per forward
    calls = []
    drops[0][1].register_forward_hook(lambda _m, inp, _o: calls.append(tuple(inp[0].shape[1:])))
    net.eval()(torch.zeros(1, 1, 92, 92, 92))
    assert calls == [(2, 8, 8, 8), (2, 6, 6, 6)]
    assert not any(isinstance(m, torch.nn.Dropout) for m in ValidConvUNet(features=TINY, dropout=0.0).modules())


def test_he_very_leaky_init_std():
    torch.manual_seed(0)
    net = ValidConvUNet(in_channels=19, out_channels=4, features=(8, 16, 32, 64))
    w = net.bottom.conv_1.conv.weight  # 64 x 64 x 27 = 110,592 samples
    expected = math.sqrt(9 / (5 * 64 * 27))
    # sample std of n normal draws has relative standard error 1 / sqrt(2n) ~ 0.2 %: allow 5 sigma
    assert abs(w.std().item() / expected - 1) < 5 / math.sqrt(2 * w.numel())
    assert abs(w.mean().item()) < 5 * expected / math.sqrt(w.numel())
    head = net.head.conv  # 1x1x1: fan_in = 8
    assert head.weight.std().item() == pytest.approx(math.sqrt(9 / 40), rel=0.5)
    assert torch.count_nonzero(head.bias) == 0
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)


def test_xavier_init():
    torch.manual_seed(0)
    net = ValidConvUNet(in_channels=19, out_channels=4, features=(8, 16, 32, 64), init="xavier")
    w = net.bottom.conv_1.conv.weight
    bound = math.sqrt(6 / (64 * 27 + 64 * 27))  # Glorot uniform, fan_in = fan_out = 64 * 27
    assert w.abs().max().item() <= bound
    assert abs(w.std().item() / (bound / math.sqrt(3)) - 1) < 0.02
    he = math.sqrt(9 / (5 * 64 * 27))
    assert abs(w.std().item() / he - 1) > 0.2  # distinguishable from the He variant


def test_gradients_flow_to_every_parameter():
    torch.manual_seed(0)
    net = ValidConvUNet(in_channels=2, out_channels=4, features=TINY).train()
    y = net(torch.randn(2, 2, 92, 92, 100))
    assert y.shape == (2, 4, 4, 4, 12)
    torch.nn.functional.cross_entropy(y, torch.randint(0, 4, (2, 4, 4, 12))).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert torch.count_nonzero(p.grad) > 0, name


def test_eval_mode_is_deterministic_and_train_mode_drops_out():
    torch.manual_seed(0)
    net = ValidConvUNet(in_channels=1, out_channels=4, features=TINY, dropout=0.5)
    x = torch.randn(1, 1, 100, 92, 92)
    with torch.no_grad():
        net.eval()
        a, b = net(x), net(x)
        assert torch.equal(a, b)
        net.train()
        torch.manual_seed(1)
        c = net(x)
        torch.manual_seed(2)
        d = net(x)
    assert not torch.equal(c, d)
