"""Facts of the Çiçek-style 3D U-Net (Roth et al. 2018, Section II.A)."""

import pytest
import torch

from common.networks.unet3d import UNet3D


def count_params(net):
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def cicek_param_count(in_ch, out_ch, f=(32, 64, 128, 256)):
    """Independent count: conv3 weights+bias, BN (2 per channel), deconv 2x2x2 weights+bias, 1x1x1 head."""

    def conv(c_in, c_out, k=27):
        return c_in * c_out * k + c_out

    def bn(c):
        return 2 * c

    total, c = 0, in_ch
    for fk in f:  # analysis: c -> fk -> 2fk
        total += conv(c, fk) + bn(fk) + conv(fk, 2 * fk) + bn(2 * fk)
        c = 2 * fk
    for fk in reversed(f[:-1]):  # synthesis: up-conv keeps c, concat 2fk, two convs to 2fk
        total += conv(c, c, 8) + conv(c + 2 * fk, 2 * fk) + bn(2 * fk) + conv(2 * fk, 2 * fk) + bn(2 * fk)
        c = 2 * fk
    return total + conv(c, out_ch, 1)


def test_parameter_count_matches_paper():
    net = UNet3D(spatial_dims=3, in_channels=1, out_channels=8)
    assert count_params(net) == cicek_param_count(1, 8) == 19_074_120
    assert 18.5e6 < count_params(net) < 19.5e6  # the paper's "~19M trainable parameters"


def test_output_shape_and_same_size_convolutions():
    net = UNet3D(in_channels=1, out_channels=8, features=(4, 8, 16, 32)).eval()
    x = torch.rand(2, 1, 16, 24, 32)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 8, 16, 24, 32)


def test_four_levels_three_poolings():
    net = UNet3D(features=(2, 4, 8, 16))
    assert len(net.down) == 4 and len(net.up) == 3 and net.divisor == 8
    skips = net.encode(torch.rand(1, 1, 16, 16, 16))
    assert [s.shape[1] for s in skips] == [4, 8, 16, 32]
    assert [s.shape[-1] for s in skips] == [16, 8, 4, 2]


def test_batchnorm_relu_after_each_conv():
    net = UNet3D(features=(2, 4))
    block = net.down[0].conv_0
    kinds = [type(m).__name__ for m in block.modules()]
    assert "Conv3d" in kinds and "BatchNorm3d" in kinds and "ReLU" in kinds
    assert type(net.upsample[0].deconv).__name__ == "ConvTranspose3d"
    assert net.upsample[0].deconv.kernel_size == (2, 2, 2) and net.upsample[0].deconv.stride == (2, 2, 2)


def test_torchscript_matches_eager():
    net = UNet3D(features=(2, 4, 8)).eval()
    x = torch.rand(1, 1, 8, 8, 8)
    with torch.no_grad():
        assert torch.allclose(torch.jit.script(net)(x), net(x), atol=1e-6)


@pytest.mark.parametrize("kwargs", [{"spatial_dims": 4}, {"features": (8,)}, {"in_channels": 0}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        UNet3D(**kwargs)
