"""The cardiac 4D CNN (paper section 3, Table 1) and its 3D baseline (section 4)."""

import pytest
import torch
from monai.networks.blocks.segresnet_block import ResBlock

from common.networks import segresnet4d as segresnet4d_module
from common.networks.conv4d import Conv4d, GroupNorm4d, UpSample4d
from common.networks.segresnet4d import SegResNet4D

DT = torch.float64


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def test_parameter_count_by_hand():
    """Bias-free 3x3x3x3 convolutions (81 weights per channel pair), two group norms (scale and shift) per block."""

    def block(c):
        return 2 * 81 * c * c + 4 * c

    expected = (
        81 * 1 * 8  # InitConv
        + block(8)  # EncoderBlock0
        + 81 * 8 * 16  # EncoderDown1
        + 2 * block(16)  # EncoderBlock1 x 2
        + 81 * 16 * 32  # EncoderDown2
        + 4 * block(32)  # EncoderBlock2 x 4
        + 32 * 16  # DecoderUp1: 1x1x1x1 conv
        + block(16)  # DecoderBlock1
        + 16 * 8  # DecoderUp0
        + block(8)  # DecoderBlock0
        + 8 * 3
        + 3  # DecoderEnd, with a bias
    )
    assert expected == 862_627
    assert n_params(SegResNet4D()) == expected


def test_table1_output_sizes():
    """Every output size of Table 1 at the paper's input 1 x 1 x 96 x 96 x 64 x 16 (on the meta device)."""
    with torch.device("meta"):
        net = SegResNet4D()
        sizes = {}

        def record(name):
            return lambda module, args, out: sizes.setdefault(name, []).append(tuple(out.shape[1:]))

        net.conv_init.register_forward_hook(record("InitConv"))
        for level, (down, blocks) in enumerate(zip(net.down_samples, net.down_layers, strict=True)):
            if level:
                down.register_forward_hook(record(f"EncoderDown{level}"))
            for block in blocks:
                block.register_forward_hook(record(f"EncoderBlock{level}"))
        for i, (up, blocks) in enumerate(zip(net.up_samples, net.up_layers, strict=True)):
            level = len(net.up_samples) - 1 - i
            up.register_forward_hook(record(f"DecoderUp{level}"))
            for block in blocks:
                block.register_forward_hook(record(f"DecoderBlock{level}"))
        out = net(torch.empty(1, 1, 96, 96, 64, 16))
    level0, level1, level2 = (8, 96, 96, 64, 16), (16, 48, 48, 32, 8), (32, 24, 24, 16, 4)
    assert sizes == {
        "InitConv": [level0],
        "EncoderBlock0": [level0],
        "EncoderDown1": [level1],
        "EncoderBlock1": [level1] * 2,
        "EncoderDown2": [level2],
        "EncoderBlock2": [level2] * 4,
        "DecoderUp1": [(16, 48, 48, 32, 8)],  # the up-sampled features before the skip is added
        "DecoderBlock1": [level1],
        "DecoderUp0": [(8, 96, 96, 64, 16)],
        "DecoderBlock0": [level0],
    }
    assert tuple(out.shape) == (1, 3, 96, 96, 64, 16)


def test_layers_are_the_papers():
    net = SegResNet4D()
    convs = [m for m in net.modules() if isinstance(m, Conv4d)]
    # 1 init + 2 down + 2 per block (1 + 2 + 4 + 1 + 1 = 9 blocks) + 2 up 1x1 + 1 end
    assert len(convs) == 1 + 2 + 18 + 2 + 1 == 24
    assert sum(c.kernel_size == [3, 3, 3, 3] for c in convs) == 21
    assert sum(c.kernel_size == [1, 1, 1, 1] for c in convs) == 3
    assert [c.stride for c in convs if c.stride != [1, 1, 1, 1]] == [[2, 2, 2, 2]] * 2
    assert [c for c in convs if c.bias is not None] == [net.conv_final.conv]
    norms = [m for m in net.modules() if isinstance(m, GroupNorm4d)]
    assert len(norms) == 18 and all(n.num_groups == 8 for n in norms)
    assert sum(isinstance(m, UpSample4d) for m in net.modules()) == 2
    assert sum(isinstance(m, ResBlock) for m in net.modules()) == 9
    assert all(c.time_padding_mode == "zeros" for c in convs)
    circular = SegResNet4D(time_padding_mode="circular")
    assert all(c.time_padding_mode == "circular" for c in circular.modules() if isinstance(c, Conv4d))


def _inputs(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=DT)


def test_time_major_inside_changes_nothing(monkeypatch):
    """Activations kept time-major give the same logits and gradients as the same network run contiguous."""
    torch.manual_seed(0)
    net = SegResNet4D(blocks_down=(1, 2), blocks_up=(1,), norm=("GROUP", {"num_groups": 2})).double()
    x = _inputs((2, 1, 8, 4, 4, 6)).requires_grad_()
    g = _inputs((2, 3, 8, 4, 4, 6), seed=1)
    y = net(x)
    grads = torch.autograd.grad(y, [x, *net.parameters()], g)
    monkeypatch.setattr(segresnet4d_module, "to_time_major", lambda t: t)
    y_plain = net(x)
    grads_plain = torch.autograd.grad(y_plain, [x, *net.parameters()], g)
    torch.testing.assert_close(y, y_plain, atol=1e-12, rtol=0)
    for a, b in zip(grads, grads_plain, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    assert y.is_contiguous()


def test_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    net = SegResNet4D(blocks_down=(1, 2), blocks_up=(1,), norm=("GROUP", {"num_groups": 2})).double()
    x = _inputs((1, 1, 4, 4, 4, 4))
    grads = torch.autograd.grad(net(x).square().sum(), list(net.parameters()))
    net.set_checkpointing(True)
    grads_ckpt = torch.autograd.grad(net(x).square().sum(), list(net.parameters()))
    for a, b in zip(grads, grads_ckpt, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_3d_baseline_is_segresnet_with_the_papers_end():
    """One more down-sampling (encoder end 12 x 12 x 8 for a 96 x 96 x 64 crop), SegResNet's depths; it has exactly
    MONAI SegResNet's parameters minus the group norm SegResNet puts before its last convolution (8 scales, 8
    shifts)."""
    from monai.networks.nets import SegResNet

    net = SegResNet4D(3, blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1))
    monai_net = SegResNet(3, 8, 1, 3, blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1))
    assert n_params(net) == n_params(monai_net) - 16 == 1_176_179
    with torch.device("meta"):
        net = SegResNet4D(3, blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1))
        deepest = []
        net.down_layers[-1][-1].register_forward_hook(lambda m, a, out: deepest.append(tuple(out.shape)))
        out = net(torch.empty(1, 1, 96, 96, 64))
    assert deepest == [(1, 64, 12, 12, 8)] and tuple(out.shape) == (1, 3, 96, 96, 64)
    assert not any(isinstance(m, Conv4d) for m in net.modules())


def test_torchscript_and_trace():
    """The zoo export scripts the network: same logits, any time length divisible by 4, errors kept."""
    torch.manual_seed(0)
    net = SegResNet4D(blocks_down=(1, 2), blocks_up=(1,), norm=("GROUP", {"num_groups": 2})).double().eval()
    scripted = torch.jit.script(net)
    for shape in ((1, 1, 8, 4, 4, 6), (2, 1, 4, 4, 8, 2)):
        x = _inputs(shape)
        torch.testing.assert_close(scripted(x), net(x), atol=1e-10, rtol=0)
    with pytest.raises(torch.jit.Error, match="divisible by 2"):
        scripted(_inputs((1, 1, 8, 4, 4, 5)))
    net3 = SegResNet4D(3, blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1)).double().eval()
    x3 = _inputs((1, 1, 8, 8, 16))
    torch.testing.assert_close(torch.jit.script(net3)(x3), net3(x3), atol=1e-10, rtol=0)


def test_learns_a_tiny_sequence():
    """A few Adam steps on one fixed sequence lower the cross-entropy (the network is trainable end to end)."""
    torch.manual_seed(0)
    net = SegResNet4D(blocks_down=(1, 1), blocks_up=(1,), norm=("GROUP", {"num_groups": 2}))
    x = torch.zeros(1, 1, 8, 8, 8, 4)
    x[:, :, 2:6, 2:6, 2:6] = 1.0
    y = (x[:, 0] > 0).long()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x + 0.1 * torch.randn_like(x))[:, :2], y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize(
    ("kwargs", "shape", "match"),
    [
        ({}, (1, 1, 8, 8, 8), r"expects \[B, 1, X, Y, Z, T\]"),
        ({}, (1, 2, 8, 8, 8, 8), r"expects \[B, 1, X, Y, Z, T\]"),
        ({}, (1, 1, 8, 8, 8, 6), "divisible by 4"),
        ({"spatial_dims": 3, "blocks_down": (1, 2, 2, 4), "blocks_up": (1, 1, 1)}, (1, 1, 16, 16, 12), "divisible"),
    ],
)
def test_bad_inputs(kwargs, shape, match):
    with torch.device("meta"):
        net = SegResNet4D(**kwargs)
        with pytest.raises(ValueError, match=match):
            net(torch.empty(*shape))


def test_bad_arguments():
    with pytest.raises(ValueError, match="spatial_dims"):
        SegResNet4D(2)
    with pytest.raises(ValueError, match="blocks_up"):
        SegResNet4D(blocks_down=(1, 2, 4), blocks_up=(1,))
