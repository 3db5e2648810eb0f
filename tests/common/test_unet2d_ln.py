"""Facts of the layer-normalized 2D U-Net of Cai et al. 2020 (head CT neuroanatomy), after the authors' z_unet.py."""

import math

import pytest
import torch

from common.networks.batch_renorm import BatchRenorm2d
from common.networks.unet2d_ln import NORMS, ChannelLayerNorm2d, UNet2DLayerNorm, unet2d_ln_param_count

PAPER_PARAMS = 31_042_499
SMALL = (2, 4, 8, 16, 32)  # same topology, narrow: cheap to run


def count_params(net):
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def independent_count(classes, norm_per_channel=2, f=(64, 128, 256, 512, 1024), c_in=1):
    """Sum over layers of k*k*cin*cout + cout (bias), plus norm_per_channel params per normalized channel."""
    layers = []  # (k, cin, cout, normalized)
    c = c_in
    for fk in f:  # conv1A/B ... conv5A/B: 3x3, each followed by the norm
        layers += [(3, c, fk, True), (3, fk, fk, True)]
        c = fk
    for fk in reversed(f[:-1]):  # conv6A (2x2 up-conv, no norm), conv6B on the concatenation, conv6C ...
        layers += [(2, c, fk, False), (3, 2 * fk, fk, True), (3, fk, fk, True)]
        c = fk
    layers.append((1, c, classes, False))  # conv10
    weights = sum(k * k * a * b for k, a, b, _ in layers)
    biases = sum(b for _, _, b, _ in layers)
    norms = sum(norm_per_channel * b for _, _, b, n in layers if n)
    return weights, biases, norms


@pytest.fixture(scope="module")
def full_net():
    torch.manual_seed(0)
    return UNet2DLayerNorm().eval()  # 31M parameters: built once for the module


def test_parameter_count_and_the_papers_31042499(full_net):
    weights, biases, norms = independent_count(12)
    assert (weights, biases, norms) == (31_024_448, 6_860, 11_776)
    assert count_params(full_net) == weights + biases + norms == unet2d_ln_param_count() == 31_043_084
    # the paper's count is the same network with the 3-class head of the authors' demo (nb_classes = 3 in
    # z_controlboard.py up to 2020-02): the 1x1 head loses (64 weights + 1 bias) x 9 classes = 585
    assert count_params(full_net) - PAPER_PARAMS == (64 + 1) * (12 - 3) == 585
    assert sum(independent_count(3)) == unet2d_ln_param_count(out_channels=3) == PAPER_PARAMS
    # without the learned layer-norm gamma/beta the paper's number is not reached with any head
    assert sum(independent_count(12, 0)) == unet2d_ln_param_count(norm_params_per_channel=0) == 31_031_308


@pytest.mark.parametrize("norm", NORMS)
def test_parameter_count_per_norm(norm):
    net = UNet2DLayerNorm(features=SMALL, norm=norm)
    per_channel = 0 if norm == "none" else 2
    assert count_params(net) == sum(independent_count(12, per_channel, SMALL))
    assert count_params(net) == unet2d_ln_param_count(features=SMALL, norm_params_per_channel=per_channel)


def test_level_shapes_and_bottleneck(full_net):
    shapes = {}
    hooks = [
        m.register_forward_hook(lambda m, i, o, k=k: shapes.__setitem__(k, tuple(o.shape)))
        for k, m in [
            *((f"down{i}", b) for i, b in enumerate(full_net.down)),
            *((f"upconv{i}", b) for i, b in enumerate(full_net.upconv)),
            *((f"up{i}", b) for i, b in enumerate(full_net.up)),
        ]
    ]
    with torch.no_grad():
        y = full_net(torch.rand(1, 1, 64, 64))
    for h in hooks:
        h.remove()
    assert y.shape == (1, 12, 64, 64)
    assert [shapes[f"down{i}"] for i in range(5)] == [
        (1, 64, 64, 64),
        (1, 128, 32, 32),
        (1, 256, 16, 16),
        (1, 512, 8, 8),
        (1, 1024, 4, 4),
    ]
    assert [shapes[f"upconv{i}"] for i in range(4)] == [
        (1, 512, 8, 8),
        (1, 256, 16, 16),
        (1, 128, 32, 32),
        (1, 64, 64, 64),
    ]
    assert [shapes[f"up{i}"] for i in range(4)] == [(1, 512, 8, 8), (1, 256, 16, 16), (1, 128, 32, 32), (1, 64, 64, 64)]
    # 512 x 512 x 1 -> 32 x 32 x 1024 at the bottom (paper, Model Architecture): four 2x2 poolings
    assert full_net.divisor == 16 and 512 // full_net.divisor == 32 and full_net.features[-1] == 1024


def test_512_slice_gives_512_x_512_x_12():
    net = UNet2DLayerNorm(features=SMALL).eval()  # narrow copy: the full width's 512 x 512 forward costs seconds
    with torch.no_grad():
        skips = net.encode(torch.rand(1, 1, 512, 512))
        y = net.decode(skips)
    assert [tuple(s.shape[2:]) for s in skips] == [(512, 512), (256, 256), (128, 128), (64, 64), (32, 32)]
    assert y.shape == (1, 12, 512, 512)


def test_layer_order_as_z_unet():
    net = UNet2DLayerNorm(features=SMALL)
    block = net.down[0].conv_0
    assert [type(m) for m in block.children()] == [torch.nn.Conv2d, ChannelLayerNorm2d, torch.nn.ReLU]
    assert block.conv.kernel_size == (3, 3) and block.conv.padding == (1, 1) and block.conv.bias is not None
    up = net.upconv[0]  # UpSampling2D + Conv2D(f, 2, 'same'): linear, no norm
    assert [type(m) for m in up.children()] == [torch.nn.Upsample, torch.nn.ZeroPad2d, torch.nn.Conv2d]
    assert up.upsample.mode == "nearest" and up.conv.kernel_size == (2, 2) and up.conv.bias is not None
    assert net.up[0].conv_0.conv.in_channels == 2 * SMALL[-2]
    assert net.head.kernel_size == (1, 1) and net.head.out_channels == 12
    assert isinstance(net.pool, torch.nn.MaxPool2d)


def test_up_conv_pads_bottom_right_like_tensorflow_same():
    net = UNet2DLayerNorm(in_channels=1, features=(1, 1))
    up = net.upconv[0]
    with torch.no_grad():
        up.conv.weight.fill_(1.0)
        up.conv.bias.zero_()
        y = up(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]))
    # nearest x2 -> [[1,1,2,2],[1,1,2,2],[3,3,4,4],[3,3,4,4]]; out[i,j] = sum of the 2x2 window at (i, j),
    # zeros beyond the bottom and right edges (TensorFlow puts the odd padding after)
    expected = torch.tensor(
        [[4.0, 6.0, 8.0, 4.0], [8.0, 10.0, 12.0, 6.0], [12.0, 14.0, 16.0, 8.0], [6.0, 7.0, 8.0, 4.0]]
    )
    assert torch.equal(y[0, 0], expected)


def test_channel_layer_norm_hand_computation():
    # 1 x 3 x 2 x 2: each pixel's 3 channel values
    pixels = {(0, 0): [1.0, 2.0, 3.0], (0, 1): [0.0, 0.0, 6.0], (1, 0): [-1.0, 1.0, 3.0], (1, 1): [5.0, 5.0, 5.0]}
    x = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    for (i, j), v in pixels.items():
        x[0, :, i, j] = torch.tensor(v, dtype=torch.float64)
    eps = 1e-3
    ln = ChannelLayerNorm2d(3, eps=eps).double()
    with torch.no_grad():
        ln.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        ln.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    y = ln(x)
    gamma, beta = [1.0, 2.0, 0.5], [0.0, 1.0, -1.0]
    for (i, j), v in pixels.items():
        mean = sum(v) / 3
        var = sum((a - mean) ** 2 for a in v) / 3  # biased, as Keras / tf.nn.moments
        want = [(a - mean) / math.sqrt(var + eps) * g + b for a, g, b in zip(v, gamma, beta, strict=True)]
        assert y[0, :, i, j].tolist() == pytest.approx(want, abs=1e-12)
    # e.g. pixel (0, 0): mean 2, var 2/3 -> channel 0 is (1 - 2) / sqrt(2/3 + 1e-3)
    assert y[0, 0, 0, 0].item() == pytest.approx(-1 / math.sqrt(2 / 3 + 1e-3), abs=1e-12)
    # a constant pixel normalizes to beta; GroupNorm(1, C) (over channels and space) is a different thing
    assert y[0, :, 1, 1].tolist() == pytest.approx(beta, abs=1e-12)
    assert not torch.allclose(ChannelLayerNorm2d(3).double()(x), torch.nn.GroupNorm(1, 3).double()(x))


def test_initialisation_as_keras(full_net):
    conv5b = full_net.down[4].conv_1.conv  # 1024 x 1024 x 3 x 3: he_normal, truncated at 2 std
    std = math.sqrt(2 / (9 * 1024))
    assert conv5b.weight.std().item() == pytest.approx(std, rel=0.01)
    assert conv5b.weight.abs().max().item() <= 2 * std / 0.87962566103423978 + 1e-7
    limit = math.sqrt(6 / (64 + 12))  # glorot_uniform head (no kernel_initializer in z_unet.py)
    assert full_net.head.weight.abs().max().item() <= limit
    assert all(torch.count_nonzero(m.bias) == 0 for m in full_net.modules() if isinstance(m, torch.nn.Conv2d))
    norms = [m for m in full_net.modules() if isinstance(m, ChannelLayerNorm2d)]
    assert len(norms) == 18 and all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)


@pytest.mark.parametrize(
    ("norm", "kind"),
    [
        ("layer", ChannelLayerNorm2d),
        ("batch", torch.nn.BatchNorm2d),
        ("batch_renorm", BatchRenorm2d),
        ("none", torch.nn.Identity),
    ],
)
def test_norm_variants_build_and_run(norm, kind):
    torch.manual_seed(0)
    net = UNet2DLayerNorm(features=SMALL, norm=norm)
    assert isinstance(net.down[0].conv_0.norm, kind)
    assert sum(isinstance(m, kind) for m in net.modules()) >= 18
    x = torch.rand(3, 1, 32, 48)  # batch 3 as the paper
    y = net.train()(x)
    y.sum().backward()
    assert y.shape == (3, 12, 32, 48) and torch.isfinite(y).all()
    assert net.down[0].conv_0.conv.weight.grad is not None
    with torch.no_grad():
        assert net.eval()(x).shape == (3, 12, 32, 48)
    if norm == "batch":
        assert net.down[0].conv_0.norm.eps == 1e-3 and net.down[0].conv_0.norm.momentum == 0.01


def test_norm_kwargs_reach_the_layers():
    net = UNet2DLayerNorm(features=SMALL, norm="batch_renorm", norm_kwargs={"warmup_steps": 10, "r_max_steps": 100})
    layer = net.down[0].conv_0.norm
    assert layer.warmup_steps == 10 and layer.r_max_steps == 100
    assert "down.0.conv_0.norm.num_batches_tracked" in net.state_dict()  # the schedule's step travels with it


@pytest.mark.parametrize("shape", [(1, 1, 500, 512), (1, 1, 512, 8), (1, 1, 24, 32), (1, 512, 512)])
def test_bad_input_size_raises(shape):
    net = UNet2DLayerNorm(features=SMALL)
    with pytest.raises(ValueError, match="UNet2DLayerNorm"):
        net(torch.zeros(shape))


@pytest.mark.parametrize("kwargs", [{"norm": "group"}, {"features": (8,)}, {"in_channels": 0}, {"features": (4, 0)}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        UNet2DLayerNorm(**kwargs)


@pytest.mark.parametrize("norm", ["layer", "batch_renorm"])
def test_torchscript_matches_eager(norm):
    torch.manual_seed(0)
    net = UNet2DLayerNorm(features=SMALL, norm=norm)
    if norm == "batch_renorm":  # move the moving statistics off their initial values
        with torch.no_grad():
            net.train()(torch.rand(2, 1, 32, 32))
    net = net.eval()
    scripted = torch.jit.script(net)
    x = torch.rand(1, 1, 32, 48)
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-6)
    with pytest.raises(torch.jit.Error, match="multiples of 16"):
        scripted(torch.zeros(1, 1, 40, 32))
