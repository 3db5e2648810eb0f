"""Facts of the multi-scale 3D U-Net of Kayalıbay et al. 2017 (Table 7, Fig. 4/17, Appendix A), as ``fcn_rffc4``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.networks.kayalibay_unet import KayalibayUNet3D, table7_receptive_fields

TABLE7 = [  # (number, input size, output size, receptive field, features) for a 128 x 128 x 96 input
    (1, (128, 128, 96), (128, 128, 96), 3, 8),
    (2, (128, 128, 96), (64, 64, 48), 5, 8),
    (3, (64, 64, 48), (64, 64, 48), 9, 16),
    (4, (64, 64, 48), (32, 32, 24), 13, 32),
    (5, (32, 32, 24), (32, 32, 24), 21, 32),
    (6, (32, 32, 24), (16, 16, 12), 29, 64),
    (7, (16, 16, 12), (16, 16, 12), 45, 64),
    (9, (16, 16, 12), (32, 32, 24), 53, 32),
    (10, (32, 32, 24), (32, 32, 24), 61, 64),
    (12, (32, 32, 24), (64, 64, 48), 65, 16),
    (13, (64, 64, 48), (64, 64, 48), 69, 32),
    (15, (64, 64, 48), (128, 128, 96), 71, 8),
    (16, (128, 128, 96), (128, 128, 96), 73, 16),
]


def table7_convs(net: KayalibayUNet3D) -> list[torch.nn.Conv3d]:
    """The 3x3x3 convolutions of Table 7, in its order (deconvolutions = the conv after the nearest up-sampling)."""
    down = [net.conv1, net.conv2, net.conv3, net.conv4, net.conv5, net.conv6, net.conv7]
    up = [m for level in (net.up3, net.up2, net.up1) for m in (level.deconv, level.conv)]
    return [block.conv for block in down + up]


def test_table7_receptive_fields_by_eq7():
    assert table7_receptive_fields() == [row[3] for row in TABLE7]


def test_table7_sizes_and_features_for_a_128x128x96_input():
    net = KayalibayUNet3D(in_channels=1, out_channels=5).eval()
    seen = []
    hooks = [
        conv.register_forward_hook(lambda m, i, o: seen.append((tuple(i[0].shape[2:]), tuple(o.shape[1:]))))
        for conv in table7_convs(net)
    ]
    with torch.no_grad():
        out = net(torch.zeros(1, 1, 128, 128, 96))
    for h in hooks:
        h.remove()
    assert out.shape == (1, 5, 128, 128, 96)
    convs = table7_convs(net)
    assert all(c.kernel_size == (3, 3, 3) and c.bias is None for c in convs)
    # a deconvolution's convolution sees the up-sampled volume, which is the table's output size
    for (number, size_in, size_out, _, features), (seen_in, seen_out) in zip(TABLE7, seen, strict=True):
        assert seen_out == (features, *size_out), number
        expected_in = size_out if number in (9, 12, 15) else size_in
        assert seen_in == expected_in, number


def test_receptive_fields_measured_by_gradients_bracket_eq7():
    """Eq. 7 against the network: the input voxels that reach one voxel of each Table 7 layer (gradient support along
    the first axis), at four neighbouring positions. Down the contracting path, up to layer 10 and at layer 13 every
    position sees exactly Eq. 7's field. At the 1/2-resolution deconvolution (layer 12) the field depends on the
    voxel's parity, 61 or 69 around Eq. 7's 65, and at full resolution (layers 15 and 16) it is 69 where Eq. 7 says 71
    and 73: a nearest-neighbour "deconvolution" lets three fine taps reach two coarse voxels only, which Eq. 7 counts
    as a full step of growth; the paper warns that "Eq. (7) is not a general formulation"."""
    torch.manual_seed(0)
    net = KayalibayUNet3D(in_channels=1, out_channels=2, multiscale=False, init="torch").double().eval()
    x = torch.randn(1, 1, 96, 8, 8, dtype=torch.float64, requires_grad=True)  # fields measured along the first axis
    outputs = []
    for conv in table7_convs(net):
        conv.register_forward_hook(lambda m, i, o: outputs.append(o))
    net(x)
    measured = []
    for out in outputs:
        centre, fields = out.shape[2] // 2, set()
        for p in range(centre - 2, centre + 2):
            (grad,) = torch.autograd.grad(out[0, 0, p, 0, 0], x, retain_graph=True)
            support = np.nonzero(grad[0, 0].abs().sum(dim=(1, 2)).numpy())[0]
            fields.add(int(support.max() - support.min() + 1))
        measured.append(sorted(fields))
    eq7 = table7_receptive_fields()
    assert measured[:9] == [[f] for f in eq7[:9]]  # layers 1-10: exactly Eq. 7
    assert measured[9:] == [[61, 69], [69], [69], [69]]  # layers 12, 13, 15, 16
    assert eq7[9:] == [65, 69, 71, 73]


def count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def independent_count(c_in: int, classes: int = 5, merge: str = "concat", multiscale: bool = True) -> int:
    """Conv weights (no biases) + per conv: BN scale and shift and a PReLU slope per output channel (3 per channel)."""
    convs = [(3, c_in, 8), (3, 8, 8), (3, 8, 16), (3, 16, 32), (3, 32, 32), (3, 32, 64), (3, 64, 64)]
    for c, skip in ((64, 32), (64, 16), (32, 8)):  # 1x1 halving, deconvolution, merge, conv to 2 skip
        merged = 2 * skip if merge == "concat" else skip
        convs += [(1, c, c // 2), (3, c // 2, skip), (3, merged, 2 * skip)]
    total = sum(k**3 * a * b + 3 * b for k, a, b in convs)
    maps = [16] + ([64, 32] if multiscale else [])
    return total + sum(ch * classes for ch in maps)


@pytest.mark.parametrize("merge", ["concat", "sum", "none"])
@pytest.mark.parametrize("c_in", [1, 4])
def test_parameter_counts(c_in, merge):
    net = KayalibayUNet3D(in_channels=c_in, out_channels=5, merge=merge)
    assert count(net) == independent_count(c_in, merge=merge)
    assert count(KayalibayUNet3D(c_in, 5, merge=merge, multiscale=False)) == independent_count(
        c_in, merge=merge, multiscale=False
    )


def test_parameter_counts_stated_in_the_model_cards():
    assert count(KayalibayUNet3D(1, 5)) == 409_424  # hand MRI
    assert count(KayalibayUNet3D(4, 5)) == 410_072  # BraTS: 27 x 8 x 3 more first-layer weights
    assert count(KayalibayUNet3D(1, 5, merge="sum")) == count(KayalibayUNet3D(1, 5, merge="none")) == 336_848
    assert count(KayalibayUNet3D(1, 5, multiscale=False)) == 409_424 - (64 + 32) * 5


def upsample_by_hand(x: np.ndarray) -> np.ndarray:
    """Linear up-sampling by 2 along each of the last three axes, border replicated (align_corners=False):
    out[2i] = 3/4 x[i] + 1/4 x[i-1], out[2i+1] = 3/4 x[i] + 1/4 x[i+1]."""
    for axis in (-3, -2, -1):
        n = x.shape[axis]
        prev = np.take(x, np.clip(np.arange(n) - 1, 0, n - 1), axis=axis)
        nxt = np.take(x, np.clip(np.arange(n) + 1, 0, n - 1), axis=axis)
        even, odd = 0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt
        x = (
            np.stack([even, odd], axis=axis).reshape(*x.shape[:axis], 2 * n, *x.shape[axis:][1:])
            if axis != -1
            else (np.stack([even, odd], axis=-1).reshape(*x.shape[:-1], 2 * n))
        )
    return x


def test_three_maps_combined_as_section_2_1_says():
    """out = full + up(half + up(quarter)), with a hand-written linear up-sampling."""
    torch.manual_seed(1)
    net = KayalibayUNet3D(1, 3, init="torch").double().eval()
    maps = {}
    for name in ("map_quarter", "map_half", "map_full"):
        getattr(net, name).register_forward_hook(lambda m, i, o, n=name: maps.update({n: o.detach().numpy()}))
    with torch.no_grad():
        out = net(torch.randn(1, 1, 32, 24, 16, dtype=torch.float64)).numpy()
    assert maps["map_quarter"].shape[2:] == (8, 6, 4) and maps["map_half"].shape[2:] == (16, 12, 8)
    expected = maps["map_full"] + upsample_by_hand(maps["map_half"] + upsample_by_hand(maps["map_quarter"]))
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    single = KayalibayUNet3D(1, 3, multiscale=False)
    assert not hasattr(single, "map_half") and not hasattr(single, "map_quarter")


def test_merges_change_only_the_skip_joins():
    concat, summed, none = (KayalibayUNet3D(1, 5, merge=m) for m in ("concat", "sum", "none"))
    assert concat.up3.conv.conv.in_channels == 64 and summed.up3.conv.conv.in_channels == 32
    assert none.up1.conv.conv.in_channels == 8
    x = torch.randn(1, 1, 16, 16, 16)
    for net in (concat, summed, none):
        with torch.no_grad():
            assert net.eval()(x).shape == (1, 5, 16, 16, 16)


def test_batch_norm_running_average_alpha_one_half():
    """Appendix A: alpha = 0.5 -> PyTorch momentum 0.5; after one batch the running mean is half the batch mean."""
    net = KayalibayUNet3D(1, 5)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert bns and all(m.momentum == 0.5 and m.eps == 1e-5 for m in bns)
    captured = {}
    net.conv1.conv.register_forward_hook(lambda m, i, o: captured.update(out=o.detach()))
    net.train()(torch.randn(1, 1, 16, 16, 16) * 3 + 1)
    batch_mean = captured["out"].mean(dim=(0, 2, 3, 4))
    # Eq. 6 with mu*_0 = 0 and alpha = 0.5: 0.5 * 0 + 0.5 * mu (either way round at alpha = 0.5)
    torch.testing.assert_close(net.conv1.norm.running_mean, 0.5 * batch_mean, rtol=1e-5, atol=1e-6)


def test_initialisation_of_the_authors_code():
    torch.manual_seed(0)
    net = KayalibayUNet3D(1, 5)  # every parameter from N(0, 0.01), as train.py draws the whole parameter vector
    flat = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert abs(float(flat.std()) - 0.01) < 0.0005 and abs(float(flat.mean())) < 0.0005
    weights_only = KayalibayUNet3D(1, 5, init="weights")
    assert torch.equal(weights_only.conv1.norm.weight, torch.ones(8))
    assert float(weights_only.conv3.conv.weight.detach().std()) == pytest.approx(0.01, rel=0.1)


def test_sizes_not_divisible_by_8_are_refused_clearly():
    net = KayalibayUNet3D(1, 5).eval()
    with pytest.raises(ValueError, match=r"divisible by 8.*\[1, 1, 16, 20, 16\].*DivisiblePadd"):
        net(torch.zeros(1, 1, 16, 20, 16))
    with pytest.raises(ValueError, match="merge must be one of"):
        KayalibayUNet3D(merge="add")
