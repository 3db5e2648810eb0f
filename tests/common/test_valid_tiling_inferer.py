"""Whole-volume tiling for the valid-convolution U-Net (van de Leemput et al. 2019, end of section II-A)."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor

from common.inferers.valid_tiling import ValidTilingInferer, plan_valid_tiling, valid_tiling_inference
from common.networks.valid_unet import ValidConvUNet


def valid(n):
    return n >= 92 and (n - 92) % 8 == 0


def smallest_valid_at_least(n):
    return n if valid(n) else max(92, 92 + math.ceil((n - 92) / 8) * 8)


def lower_bound(shape, roi):
    """Fewest input voxels for any grid of non-overlapping-output windows of valid size <= roi (output >= 4)."""
    return math.prod(max(n, 4) + 88 * math.ceil(n / (roi - 88)) for n in shape)


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    net = ValidConvUNet(in_channels=2, out_channels=3, features=(2, 2, 2, 2)).double().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net


def whole_volume_forward(net, x):
    """One forward pass on the image zero-padded by 44 per side, the high side grown to a valid size."""
    pads = []
    for n in reversed(x.shape[2:]):
        pads += [44, smallest_valid_at_least(n + 88) - n - 44]
    with torch.no_grad():
        y = net(F.pad(x, pads))
    return y[(..., *[slice(0, n) for n in x.shape[2:]])]


@pytest.mark.parametrize(("shape", "tiles"), [((20, 28, 12), (2, 3, 1)), ((1, 5, 16), (1, 1, 2))])
def test_tiles_equal_one_whole_volume_pass(tiny_net, shape, tiles):
    torch.manual_seed(1)
    x = torch.randn(1, 2, *shape, dtype=torch.float64)
    inferer = ValidTilingInferer(roi_size=100, sw_batch_size=2)
    assert inferer.plan(shape).tiles == tiles  # several windows per dimension for the first shape
    with torch.no_grad():
        y = inferer(x, tiny_net)
    assert y.shape == (1, 3, *shape) and y.dtype == torch.float64
    torch.testing.assert_close(y, whole_volume_forward(tiny_net, x), rtol=0, atol=1e-12)


def test_windows_off_the_pooling_grid_change_the_result(tiny_net):
    """Why windows start on multiples of 8: the non-overlapping tiling differs where the pooling phase shifts."""
    torch.manual_seed(2)
    x = torch.randn(1, 2, 24, 12, 12, dtype=torch.float64)
    plan = plan_valid_tiling((24, 12, 12), 100, grid_aligned=False)
    assert plan.tiles == (2, 1, 1) and plan.stride[0] == 12  # second window starts at 12 = 4 (mod 8)
    with torch.no_grad():
        y = ValidTilingInferer(roi_size=100, grid_aligned=False)(x, tiny_net)
    ref = whole_volume_forward(tiny_net, x)
    torch.testing.assert_close(y[:, :, :12], ref[:, :, :12], rtol=0, atol=1e-12)  # first window: same phase
    assert (y[:, :, 12:] - ref[:, :, 12:]).abs().max() > 1e-6


class CroppingNet:
    """A stand-in valid network: output = input centre-cropped by 44 per side; records every window."""

    def __init__(self):
        self.windows = []

    def __call__(self, x, scale=1.0):
        self.windows.append(tuple(x.shape))
        return scale * x[:, :1, 44:-44, 44:-44, 44:-44]


@pytest.mark.parametrize("grid_aligned", [True, False])
@pytest.mark.parametrize(
    ("shape", "roi"), [((1, 5, 16), 124), ((37, 200, 9), 124), ((130, 64, 3), (180, 100, 92 + 8 * 4)), ((8, 8, 8), 100)]
)
def test_every_voxel_predicted_once_from_its_own_window(shape, roi, grid_aligned):
    torch.manual_seed(3)
    x = torch.randn(2, 3, *shape)
    net = CroppingNet()
    inferer = ValidTilingInferer(roi_size=roi, sw_batch_size=3, grid_aligned=grid_aligned)
    y = inferer(x, net, scale=2.0)
    assert y.shape == (2, 1, *shape)
    assert torch.equal(y, 2.0 * x[:, :1])  # each voxel came from a window centred on it
    plan = inferer.plan(shape)
    rois = (roi,) * 3 if isinstance(roi, int) else roi
    assert sum(w[0] for w in net.windows) == 2 * plan.num_windows
    assert sum(w[0] * math.prod(w[2:]) for w in net.windows) == 2 * plan.processed_voxels
    for w in net.windows:
        assert w[0] <= 6 and all(valid(s) and s <= r for s, r in zip(w[2:], rois, strict=True))


@pytest.mark.parametrize("grid_aligned", [True, False])
@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 1000), roi=st.sampled_from([124, 132, 180, 220, 300]))
def test_plan_per_dimension(grid_aligned, n, roi):
    p = plan_valid_tiling((n,), roi, grid_aligned=grid_aligned)
    (t,), (w,), (o,), (s,) = p.tiles, p.window_size, p.output_size, p.stride
    assert valid(w) and w <= roi and o == w - 88
    assert (t - 1) * s + o >= n and (t - 1) * s < n  # covered, and the last window still starts inside
    if grid_aligned:
        assert s % 8 == 0 and s >= o - 7
        best = 8 * ((roi - 88) // 8)  # the longest aligned stride
        assert t == 1 or (t - 2) * best + (roi - 88) < n  # one window fewer could not cover the image
        assert p.processed_voxels <= 1.5 * lower_bound((n,), roi)
    else:
        assert s == o and t == math.ceil(n / (roi - 88))
        assert o < math.ceil(n / t) + 8  # smallest valid output holding the share
    assert p.padded_voxels == n + 88 and p.lower_bound_voxels == lower_bound((n,), roi)


@settings(max_examples=300, deadline=None)
@given(shape=st.tuples(*[st.integers(1, 700)] * 3), roi=st.sampled_from([100, 124, 180, 220]))
def test_non_overlapping_tiling_within_one_and_a_half_of_the_lower_bound(shape, roi):
    p = plan_valid_tiling(shape, roi, grid_aligned=False)
    assert p.processed_voxels <= 1.5 * lower_bound(shape, roi)


@pytest.mark.parametrize(
    ("shape", "roi"),
    [((512, 512, 320), 124), ((512, 512, 320), 180), ((512, 512, 320), 220), ((96, 96, 96), 124), ((16, 16, 16), 124)]
    + [((256, 256, 160), r) for r in (124, 180, 220)]
    + [((n, n, n), r) for n in (1, 5, 40, 92, 150, 300) for r in (124, 180, 220)],
)
def test_grid_aligned_tiling_within_one_and_a_half_of_the_lower_bound(shape, roi):
    p = plan_valid_tiling(shape, roi)
    assert p.processed_voxels <= 1.5 * lower_bound(shape, roi)
    if all(smallest_valid_at_least(n + 88) + 8 <= roi for n in shape):  # one window per dimension
        assert p.tiles == (1, 1, 1)
        assert p.processed_voxels <= 1.5 * math.prod(n + 88 for n in shape)


def test_plan_for_a_ctp_volume_at_the_config_roi():
    p = ValidTilingInferer(roi_size=180).plan((512, 512, 320))
    # by hand: output 92 advances 88; 512 -> 1 + ceil(420 / 88) = 6 windows of 180 (5 * 88 + 92 = 532 >= 512,
    # output 84 gives 5 * 80 + 84 = 484 < 512); 320 -> 1 + ceil(228 / 88) = 4 windows of 172 (3 * 80 + 84 = 324)
    assert p.tiles == (6, 6, 4) and p.window_size == (180, 180, 172) and p.stride == (88, 88, 80)
    assert p.processed_voxels == (6 * 180) ** 2 * (4 * 172) == 802_483_200
    assert p.padded_voxels == 600 * 600 * 408
    assert p.num_windows == 144 and len(p.output_starts()) == 144 and p.output_starts()[1] == (0, 0, 80)


def test_small_image_padded_to_a_valid_size():
    p = plan_valid_tiling((16, 16, 16), 124)
    assert p.window_size == (108, 108, 108) and p.tiles == (1, 1, 1)  # 16 + 88 = 104 is not valid


def test_roi_rounded_down_or_rejected():
    assert ValidTilingInferer(roi_size=130).roi_size == 124
    assert ValidTilingInferer(roi_size=[130, 100, 181]).roi_size == (124, 100, 180)
    assert ValidTilingInferer(roi_size=95, grid_aligned=False).roi_size == 92
    with pytest.raises(ValueError, match="roi_size 99 is too small: windows must be at least 100"):
        ValidTilingInferer(roi_size=99)
    with pytest.raises(ValueError, match="roi_size 91 is too small: windows must be at least 92"):
        ValidTilingInferer(roi_size=91, grid_aligned=False)
    with pytest.raises(ValueError, match="does not match the 3 spatial dimensions"):
        ValidTilingInferer(roi_size=[124, 124]).plan((10, 10, 10))
    with pytest.raises(ValueError, match="sw_batch_size must be positive"):
        ValidTilingInferer(roi_size=124, sw_batch_size=0)


def test_meta_tensor_keeps_its_metadata():
    affine = torch.diag(torch.tensor([0.5, 0.5, 0.8, 1.0], dtype=torch.float64))
    x = MetaTensor(torch.randn(1, 2, 10, 11, 12), affine=affine, meta={"filename_or_obj": "case.nii.gz"})
    y = ValidTilingInferer(roi_size=100)(x, CroppingNet())
    assert isinstance(y, MetaTensor) and y.shape == (1, 1, 10, 11, 12) and y.dtype == torch.float32
    assert torch.equal(y.affine, affine) and y.meta["filename_or_obj"] == "case.nii.gz"
    assert torch.equal(y.as_tensor(), x.as_tensor()[:, :1])


def test_wrong_network_raises():
    x = torch.zeros(1, 1, 10, 10, 10)
    with pytest.raises(ValueError, match="is size_difference=88 right"):
        valid_tiling_inference(x, lambda w: w[..., 40:-40, 40:-40, 40:-40], 124)
    with pytest.raises(TypeError, match="network must return a tensor"):
        valid_tiling_inference(x, lambda w: {"pred": w}, 124)
