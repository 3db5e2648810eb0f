"""Facts of the 4D convolution and its companions (cardiac 4D CNN paper, section 3.1 and the sizes of Table 1)."""

import io
import itertools
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.checkpoint import checkpoint

from common.networks import conv4d as conv4d_module
from common.networks.conv4d import (
    TIME_PADDING_MODES,
    Conv4d,
    GroupNorm4d,
    UpSample4d,
    conv4d,
    group_norm4d,
    register_monai_4d,
    set_time_padding_mode,
    to_time_major,
    upsample_nearest4d,
)

DT = torch.float64
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread (OpenMP start-up and spinning dominate them on shared CPUs), then back."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def reference_conv4d(x, weight, bias, stride, padding, mode):
    """Independent 4D convolution: pad (time with F.pad's own modes, space with zeros), unfold all four dimensions,
    contract with the kernel by einsum. No conv3d, no shifted sums."""
    b, c, nx, ny, nz, nt = x.shape
    s = [stride] * 4 if isinstance(stride, int) else list(stride)
    p = [padding] * 4 if isinstance(padding, int) else list(padding)
    if mode == "zeros":
        xp = F.pad(x, (p[3], p[3]))
    else:  # F.pad's reflect/replicate/circular take 3-D input for one padded dimension
        xp = F.pad(x.reshape(-1, 1, nt), (p[3], p[3]), mode=mode).reshape(b, c, nx, ny, nz, nt + 2 * p[3])
    xp = F.pad(xp, (0, 0, p[2], p[2], p[1], p[1], p[0], p[0]))
    k = weight.shape[2:]
    u = xp.unfold(2, k[0], s[0]).unfold(3, k[1], s[1]).unfold(4, k[2], s[2]).unfold(5, k[3], s[3])
    y = torch.einsum("bcxyztijkl,ocijkl->boxyzt", u, weight)
    return y if bias is None else y + bias.view(1, -1, 1, 1, 1, 1)


def loop_reference(x, weight, bias, padding):
    """A second independent form for zero padding, stride 1: nested loops over output frames and kernel time
    offsets, each a conv3d of one frame."""
    p = padding
    xp = F.pad(x, (p[3], p[3]))
    k_t = weight.shape[5]
    frames = []
    for t in range(xp.shape[5] - k_t + 1):
        y = sum(F.conv3d(xp[..., t + g], weight[..., g], None, 1, p[:3]) for g in range(k_t))
        frames.append(y + bias.view(1, -1, 1, 1, 1))
    return torch.stack(frames, dim=-1)


def make(shape, c_out, kernel, bias=True, seed=0, dtype=DT):
    gen = torch.Generator().manual_seed(seed)
    k = [kernel] * 4 if isinstance(kernel, int) else list(kernel)
    x = torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_()
    w = torch.randn(c_out, shape[1], *k, generator=gen, dtype=dtype).requires_grad_()
    b = torch.randn(c_out, generator=gen, dtype=dtype).requires_grad_() if bias else None
    return x, w, b


def assert_matches_reference(x, w, b, stride, padding, mode, atol=1e-10):
    y = conv4d(x, w, b, stride, padding, mode)
    ref = reference_conv4d(x, w, b, stride, padding, mode)
    assert y.shape == ref.shape and y.dtype == x.dtype
    torch.testing.assert_close(y, ref, atol=atol, rtol=0)
    leaves = [t for t in (x, w, b) if t is not None]
    grad = torch.randn_like(ref)
    got = torch.autograd.grad(y, leaves, grad)
    want = torch.autograd.grad(ref, leaves, grad)
    for g, r in zip(got, want, strict=True):
        torch.testing.assert_close(g, r, atol=atol, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# equality with the independent reference: forward and the gradients of input, weight and bias
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", TIME_PADDING_MODES)
@pytest.mark.parametrize("frames", [4, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [1, 3])
def test_matches_reference(mode, frames, stride, kernel):
    x, w, b = make((2, 2, 5, 4, 3, frames), 3, kernel)
    assert_matches_reference(x, w, b, stride, kernel // 2, mode)


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "frames"),
    [
        ((3, 1, 2, 3), (2, 1, 1, 2), (1, 0, 1, 2), 5),  # wide time padding (pure-padding frames at the ends)
        ((1, 3, 3, 2), (1, 2, 1, 1), (0, 1, 1, 1), 4),  # even time kernel: asymmetric reach
        ((2, 2, 1, 3), (1, 1, 2, 2), (0, 1, 0, 0), 7),  # no time padding, stride 2 in time
        ((3, 3, 3, 3), (2, 2, 2, 2), (1, 1, 1, 1), 1),  # one frame: zero padding keeps only the centre offset
        ((1, 1, 1, 1), (1, 1, 1, 2), (0, 0, 0, 1), 1),  # no frame reaches the kernel: the output is the bias
        ((3, 3, 3, 4), (1, 1, 1, 3), (1, 1, 1, 1), 8),  # time stride 3, kernel 4
    ],
)
@pytest.mark.parametrize("mode", TIME_PADDING_MODES)
def test_matches_reference_per_dimension(kernel, stride, padding, frames, mode):
    if (mode == "reflect" and padding[3] >= frames) or (mode == "circular" and padding[3] > frames):
        with pytest.raises(ValueError, match="time padding"):
            conv4d(*make((1, 2, 4, 4, 3, frames), 2, kernel), stride, padding, mode)
        return
    x, w, b = make((2, 2, 5, 4, 4, frames), 2, kernel)
    assert_matches_reference(x, w, b, stride, padding, mode)


def test_matches_the_frame_loop_without_bias_gradients_mixed_up():
    x, w, b = make((1, 3, 6, 5, 4, 6), 2, 3)
    y = conv4d(x, w, b, 1, 1)
    torch.testing.assert_close(y, loop_reference(x, w, b, [1, 1, 1, 1]), atol=1e-10, rtol=0)
    y.sum().backward()
    # d(sum y)/d bias = number of output voxels per channel, for every channel
    assert torch.equal(b.grad, torch.full_like(b, 6 * 5 * 4 * 6))


def test_without_bias():
    x, w, _ = make((2, 2, 4, 4, 3, 5), 3, 3, bias=False)
    assert_matches_reference(x, w, None, (1, 2, 1, 2), 1, "circular")
    layer = Conv4d(2, 3, 3, padding=1, bias=False)
    assert layer.bias is None and len(list(layer.parameters())) == 1


@given(
    frames=st.integers(1, 7),
    k_t=st.integers(1, 4),
    p_t=st.integers(0, 3),
    s_t=st.integers(1, 3),
    mode=st.sampled_from(TIME_PADDING_MODES),
    batch=st.integers(1, 2),
)
def test_time_axis_property(frames, k_t, p_t, s_t, mode, batch):
    """Any time length, kernel, padding and stride the arguments allow: equal to the reference, or a ValueError."""
    x, w, b = make((batch, 2, 3, 3, 2, frames), 2, (2, 1, 2, k_t), seed=frames + 7 * k_t)
    too_short = (mode == "reflect" and p_t >= frames) or (mode == "circular" and p_t > frames)
    if too_short or frames + 2 * p_t < k_t:
        with pytest.raises(ValueError):
            conv4d(x, w, b, (1, 1, 1, s_t), (1, 0, 1, p_t), mode)
        return
    assert_matches_reference(x, w, b, (1, 1, 1, s_t), (1, 0, 1, p_t), mode)


def test_the_grid_reaches_every_code_path():
    """The parametrised cases above go through the frame gather (not a range) and the overlapping-frames backward,
    not only through slices; pinned here so a refactor cannot silently stop exercising them."""
    replicate = conv4d_module._time_plan(4, 3, 2, 1, "replicate")  # in test_matches_reference
    assert any(call.frame_slice is None for call in replicate.calls) and not replicate.frames_partitioned
    zeros = conv4d_module._time_plan(5, 3, 2, 1, "zeros")
    assert len(zeros.calls) == 2 and zeros.frames_partitioned
    assert conv4d_module._time_plan(1, 1, 2, 1, "zeros").calls == ()  # bias-only case in the per-dimension grid


@pytest.mark.parametrize(
    ("shape", "c_out", "kernel", "stride", "padding", "mode"),
    [
        ((1, 2, 3, 2, 2, 4), 2, (2, 1, 2, 3), 1, (1, 0, 0, 1), "reflect"),
        ((1, 2, 3, 3, 2, 5), 2, (1, 2, 1, 3), 2, (0, 1, 0, 1), "zeros"),
        ((2, 1, 2, 2, 2, 3), 2, (1, 1, 2, 2), (1, 1, 1, 2), (0, 0, 1, 1), "circular"),
        ((1, 2, 2, 2, 2, 4), 1, (2, 1, 1, 3), (2, 1, 1, 2), (1, 0, 0, 1), "replicate"),
    ],
)
def test_gradcheck(shape, c_out, kernel, stride, padding, mode):
    x, w, b = make(shape, c_out, kernel)
    assert torch.autograd.gradcheck(lambda *a: conv4d(*a, stride, padding, mode), (x, w, b), atol=1e-8)


def test_linear_in_input_and_weight():
    x1, w1, _ = make((1, 2, 4, 3, 3, 6), 3, 3, bias=False, seed=1)
    x2, w2, _ = make((1, 2, 4, 3, 3, 6), 3, 3, bias=False, seed=2)
    for mode in TIME_PADDING_MODES:

        def f(x, w, mode=mode):
            return conv4d(x, w, None, (1, 1, 2, 2), 1, mode)

        torch.testing.assert_close(f(2.5 * x1 - 0.5 * x2, w1), 2.5 * f(x1, w1) - 0.5 * f(x2, w1))
        torch.testing.assert_close(f(x1, 3.0 * w1 + w2), 3.0 * f(x1, w1) + f(x1, w2))
    # a single non-zero kernel tap at time offset 0 shifts the input by one frame (zero padding 1): not circular
    w = torch.zeros(1, 1, 1, 1, 1, 3, dtype=DT)
    w[..., 0] = 1.0
    x = torch.arange(4, dtype=DT).view(1, 1, 1, 1, 1, 4)
    assert conv4d(x, w, None, 1, (0, 0, 0, 1)).flatten().tolist() == [0.0, 0.0, 1.0, 2.0]
    assert conv4d(x, w, None, 1, (0, 0, 0, 1), "circular").flatten().tolist() == [3.0, 0.0, 1.0, 2.0]
    assert conv4d(x, w, None, 1, (0, 0, 0, 1), "reflect").flatten().tolist() == [1.0, 0.0, 1.0, 2.0]
    assert conv4d(x, w, None, 1, (0, 0, 0, 1), "replicate").flatten().tolist() == [0.0, 0.0, 1.0, 2.0]


def test_few_large_calls_not_a_loop_over_frames(monkeypatch):
    """One conv3d for time stride 1 and one per parity for time stride 2, for any number of frames; one
    convolution_backward per conv3d."""
    calls = []
    original = F.conv3d

    def counting(*args, **kwargs):
        calls.append((args[0].shape[0], args[1].shape[0]))
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "conv3d", counting)
    for frames, stride, expected in [(4, 1, 1), (16, 1, 1), (16, 2, 2), (7, 2, 2)]:
        calls.clear()
        x, w, b = make((1, 2, 4, 4, 4, frames), 5, 3, dtype=torch.float32)
        y = conv4d(x, w, b, stride, 1)
        assert len(calls) == expected, (frames, stride, calls)
        # each input frame is convolved once, and only (output frame, kernel offset) pairs that are kept are
        # computed: stride 2 does not compute the stride-1 output and drop half of it
        assert sum(n_frames for n_frames, _ in calls) == frames
        assert sum(n_frames * rows // 5 for n_frames, rows in calls) <= y.shape[-1] * 3
    monkeypatch.undo()
    x, w, b = make((1, 2, 4, 4, 4, 16), 2, 3, dtype=torch.float32)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        conv4d(x, w, b, 1, 1).sum().backward()
    counts = {e.key: e.count for e in prof.key_averages()}
    assert counts.get("aten::conv3d") == 1 and counts.get("aten::convolution_backward") == 1


# ---------------------------------------------------------------------------------------------------------------
# the module, its arguments and its input checks
# ---------------------------------------------------------------------------------------------------------------


def test_module_equals_functional_and_initialises_like_conv3d():
    torch.manual_seed(0)
    layer = Conv4d(4, 6, (3, 3, 3, 1), stride=(2, 1, 1, 1), padding=(1, 1, 1, 0), time_padding_mode="reflect")
    assert layer.weight.shape == (6, 4, 3, 3, 3, 1) and layer.bias.shape == (6,)
    bound = 1 / math.sqrt(4 * 27)  # Conv3d's: kaiming_uniform(a=sqrt(5)) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
    assert layer.bias.abs().max() <= bound
    x = torch.randn(2, 4, 6, 5, 4, 3)
    torch.testing.assert_close(layer(x), conv4d(x, layer.weight, layer.bias, (2, 1, 1, 1), (1, 1, 1, 0), "reflect"))
    assert "time_padding_mode='reflect'" in repr(layer)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kernel_size": 0}, "kernel_size"),
        ({"kernel_size": (3, 3, 3)}, "kernel_size"),
        ({"kernel_size": 3, "stride": 0}, "stride"),
        ({"kernel_size": 3, "padding": -1}, "padding"),
        ({"kernel_size": 3, "time_padding_mode": "mirror"}, "time_padding_mode"),
        ({"kernel_size": 3, "dilation": 2}, "dilation 1 and groups 1"),
        ({"kernel_size": 3, "groups": 2}, "dilation 1 and groups 1"),
        ({"kernel_size": 3, "in_channels": 0}, "in_channels"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Conv4d(**{"in_channels": 2, "out_channels": 2, **kwargs})


def test_bad_inputs():
    layer = Conv4d(2, 3, 3, padding=(1, 1, 1, 2), time_padding_mode="reflect")
    with pytest.raises(ValueError, match="6-D"):
        layer(torch.randn(1, 2, 4, 4, 4))
    with pytest.raises(ValueError, match="2 input channels"):
        layer(torch.randn(1, 3, 4, 4, 4, 4))
    with pytest.raises(ValueError, match="reflect time padding of 2 needs more than 2 frames"):
        layer(torch.randn(1, 2, 4, 4, 4, 2))
    assert layer(torch.randn(1, 2, 4, 4, 4, 3)).shape == (1, 3, 4, 4, 4, 5)  # 3 frames are enough
    with pytest.raises(ValueError, match="circular time padding of 2 needs at least 2 frames"):
        conv4d(torch.randn(1, 2, 4, 4, 4, 1), layer.weight, None, 1, (1, 1, 1, 2), "circular")
    with pytest.raises(ValueError, match="smaller than the kernel"):
        Conv4d(2, 3, 3)(torch.randn(1, 2, 4, 2, 4, 4))
    with pytest.raises(ValueError, match="bias of shape"):
        conv4d(torch.randn(1, 2, 4, 4, 4, 4), layer.weight, torch.zeros(2))
    with pytest.raises(ValueError, match="time_padding_mode"):
        set_time_padding_mode(layer, "wrap")


@pytest.mark.parametrize(
    ("stride", "mode"),
    [(1, "circular"), (2, "zeros"), (2, "reflect"), (2, "circular")],  # stride 2 reflect: frames read twice
)
def test_time_major_layout_follows_the_input(stride, mode):
    x, w, b = make((2, 3, 4, 5, 3, 6), 4, 3)
    xt = to_time_major(x.detach()).requires_grad_()
    assert torch.equal(xt, x) and xt.permute(0, 5, 2, 3, 4, 1).is_contiguous()
    y, yt = conv4d(x, w, b, stride, 1, mode), conv4d(xt, w, b, stride, 1, mode)
    assert y.is_contiguous() and yt.permute(0, 5, 2, 3, 4, 1).is_contiguous() and not yt.is_contiguous()
    torch.testing.assert_close(yt, y, atol=1e-12, rtol=0)
    torch.testing.assert_close(y, reference_conv4d(x, w, b, stride, 1, mode), atol=1e-10, rtol=0)
    g = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, w), g)
    gxt, gwt = torch.autograd.grad(yt, (xt, w), g)
    torch.testing.assert_close(gxt, gx, atol=1e-12, rtol=0)
    torch.testing.assert_close(gwt, gw, atol=1e-12, rtol=0)
    # the input gradient comes back in the input's layout
    assert gx.is_contiguous() and gxt.permute(0, 5, 2, 3, 4, 1).is_contiguous()
    # a folded output is a tensor of its own, not a view: a residual "+=" on it is allowed and differentiates
    yt2 = conv4d(xt, w, b, stride, 1, mode)
    yt2 += 1.0
    torch.testing.assert_close(torch.autograd.grad(yt2, xt, g)[0], gx, atol=1e-12, rtol=0)
    # a non-contiguous input of neither layout (a slice) works too, gradients included
    sliced = x[:, :, ::2]
    dense = x.detach()[:, :, ::2].contiguous().requires_grad_()
    ys, yd = conv4d(sliced, w, b, stride, 1, mode), conv4d(dense, w, b, stride, 1, mode)
    torch.testing.assert_close(ys, yd)
    gs = torch.randn_like(ys)
    torch.testing.assert_close(torch.autograd.grad(ys, x, gs)[0][:, :, ::2], torch.autograd.grad(yd, dense, gs)[0])


# ---------------------------------------------------------------------------------------------------------------
# the paper's network sizes (section 3, Table 1): 1x96x96x64x16 in, 8/16/32 channels, two stride-2 down-samplings
# ---------------------------------------------------------------------------------------------------------------


def test_table1_shapes_on_meta_tensors():
    with torch.device("meta"):
        stem = Conv4d(1, 8, 3, padding=1)
        down1 = Conv4d(8, 16, 3, stride=2, padding=1)
        down2 = Conv4d(16, 32, 3, stride=2, padding=1)
        reduce = Conv4d(32, 16, 1)
        x = torch.empty(1, 1, 96, 96, 64, 16, requires_grad=True)
    level0 = stem(x)
    level1 = down1(level0)
    level2 = down2(level1)
    assert level0.shape == (1, 8, 96, 96, 64, 16)
    assert level1.shape == (1, 16, 48, 48, 32, 8)
    assert level2.shape == (1, 32, 24, 24, 16, 4)
    up = upsample_nearest4d(reduce(level2))
    assert up.shape == (1, 16, 48, 48, 32, 8)
    (up + level1).sum().backward()  # the backward runs at full size too (shapes only)
    assert x.grad.shape == x.shape and down2.weight.grad.shape == (32, 16, 3, 3, 3, 3)


@pytest.mark.parametrize("n", [16, 15, 5, 4, 1])
def test_stride_two_output_size(n):
    """(n + 2 - 3) // 2 + 1 = ceil(n / 2) in every dimension, odd sizes included."""
    y = Conv4d(1, 1, 3, stride=2, padding=1)(torch.randn(1, 1, n, 3, 2, n))
    assert y.shape[2:] == (math.ceil(n / 2), 2, 1, math.ceil(n / 2))


# ---------------------------------------------------------------------------------------------------------------
# 4D companions: up-sampling and group normalization
# ---------------------------------------------------------------------------------------------------------------


def test_upsample_nearest4d():
    x = torch.randn(2, 3, 3, 4, 2, 5)
    y = UpSample4d()(x)
    ref = x
    for dim in range(2, 6):
        ref = ref.repeat_interleave(2, dim=dim)
    assert y.shape == (2, 3, 6, 8, 4, 10) and torch.equal(y, ref)
    for t in range(10):  # each output frame is F.interpolate's 3D nearest up-sampling of input frame t // 2
        assert torch.equal(y[..., t], F.interpolate(x[..., t // 2], scale_factor=2, mode="nearest"))
    z = upsample_nearest4d(x, (1, 2, 3, 1))
    assert z.shape == (2, 3, 3, 8, 6, 5) and torch.equal(z[:, :, :, 5, 4, :], x[:, :, :, 2, 1, :])
    x.requires_grad_()
    upsample_nearest4d(x).sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 16.0))  # each voxel copied 2^4 times
    with pytest.raises(ValueError, match="6-D"):
        upsample_nearest4d(torch.randn(1, 1, 2, 2, 2))
    with pytest.raises(ValueError, match="scale_factor"):
        UpSample4d((2, 2))


@pytest.mark.parametrize("scale", [2, (1, 2, 3, 2)])
def test_upsample_keeps_a_time_major_input_time_major(scale):
    x = torch.randn(2, 3, 3, 4, 2, 5, dtype=DT)
    xt = to_time_major(x).requires_grad_()
    y = upsample_nearest4d(xt, scale)
    assert torch.equal(y, upsample_nearest4d(x, scale))
    assert y.permute(0, 5, 2, 3, 4, 1).is_contiguous() and not y.is_contiguous()
    y.sum().backward()
    assert torch.equal(xt.grad, torch.full_like(x, float(math.prod(_quad(scale)))))


def _quad(scale):
    return [scale] * 4 if isinstance(scale, int) else list(scale)


@pytest.mark.parametrize("shape", [(2, 4, 3, 3, 2, 5), (1, 8, 4, 2, 3, 1)])
def test_group_norm4d_keeps_a_time_major_input_time_major(shape):
    """Same values and gradients as torch.nn.GroupNorm on the contiguous tensor, and the folded layout kept."""
    torch.manual_seed(0)
    norm = GroupNorm4d(2, shape[1]).double()
    plain = torch.nn.GroupNorm(2, shape[1]).double()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    plain.load_state_dict(norm.state_dict())
    x = (torch.randn(*shape, dtype=DT) * 3 + 1).requires_grad_()
    xt = to_time_major(x.detach()).requires_grad_()
    y, yt = plain(x), norm(xt)
    assert yt.permute(0, 5, 2, 3, 4, 1).is_contiguous() and not yt.is_contiguous()
    torch.testing.assert_close(yt, y, atol=1e-12, rtol=0)
    torch.testing.assert_close(norm(x), y, atol=1e-12, rtol=0)  # a contiguous input: plain group norm
    assert norm(x).is_contiguous()
    g = torch.randn_like(y)
    want = torch.autograd.grad(y, (x, plain.weight, plain.bias), g)
    got = torch.autograd.grad(yt, (xt, norm.weight, norm.bias), g)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="6-D"):
        group_norm4d(torch.randn(1, 4, 2, 2, 2), 2)
    assert torch.jit.script(norm)(xt).allclose(y)


def test_group_norm_works_on_6d_tensors():
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(2, 4)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        norm.bias.copy_(torch.tensor([0.0, 1.0, 0.0, -1.0]))
    x = (torch.randn(2, 4, 3, 3, 2, 5, dtype=DT) * 3 + 1).requires_grad_()
    y = norm.double()(x)
    groups = x.reshape(2, 2, -1)  # statistics over (channels of the group, X, Y, Z, T)
    mean = groups.mean(-1, keepdim=True)
    var = groups.var(-1, unbiased=False, keepdim=True)
    ref = ((groups - mean) / torch.sqrt(var + norm.eps)).reshape_as(x)
    ref = ref * norm.weight.view(1, -1, 1, 1, 1, 1) + norm.bias.view(1, -1, 1, 1, 1, 1)
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(ref, x, g)[0])


# ---------------------------------------------------------------------------------------------------------------
# MONAI's layer factories
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def monai_4d():
    """register_monai_4d() for one test, then MONAI's own factory back (other tests see MONAI unchanged)."""
    from monai.networks.layers.factories import Conv, Norm

    saved, saved_norm = Conv.components["CONV"], Norm.components["GROUP"]
    register_monai_4d()
    yield Conv
    Conv.components["CONV"], Norm.components["GROUP"] = saved, saved_norm


def test_monai_factory_builds_conv4d(monai_4d):
    from monai.networks.blocks import Convolution, ResidualUnit

    conv_factory = monai_4d.components["CONV"].value
    register_monai_4d()  # idempotent: the second call keeps the first wrapper
    assert monai_4d.components["CONV"].value is conv_factory
    assert monai_4d[monai_4d.CONV, 4] is Conv4d
    assert [monai_4d[monai_4d.CONV, d] for d in (1, 2, 3)] == [torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d]
    from monai.networks.layers.factories import Norm

    assert Norm[Norm.GROUP, 4] is GroupNorm4d and [Norm[Norm.GROUP, d] for d in (1, 2, 3)] == [torch.nn.GroupNorm] * 3

    torch.manual_seed(0)
    block = Convolution(4, 2, 4, strides=2, kernel_size=3, norm=("group", {"num_groups": 2}), act="relu")
    assert isinstance(block.conv, Conv4d) and block.conv.padding == [1, 1, 1, 1]
    assert isinstance(block.adn.N, GroupNorm4d)
    x = torch.randn(1, 2, 6, 5, 4, 6)
    by_hand = F.relu(F.group_norm(conv4d(x, block.conv.weight, block.conv.bias, 2, 1), 2))
    torch.testing.assert_close(block(x), by_hand)
    assert block(x).shape == (1, 4, 3, 3, 2, 3)

    assert set_time_padding_mode(block, "circular") == 1 and block.conv.time_padding_mode == "circular"
    circular = F.relu(F.group_norm(conv4d(x, block.conv.weight, block.conv.bias, 2, 1, "circular"), 2))
    torch.testing.assert_close(block(x), circular)
    assert not torch.allclose(circular, by_hand)

    unit = ResidualUnit(4, 2, 4, strides=2, subunits=2, norm=("group", {"num_groups": 2}))
    assert sum(isinstance(m, Conv4d) for m in unit.modules()) == 3  # two subunits and the strided residual
    unit(x).sum().backward()
    assert unit(x).shape == (1, 4, 3, 3, 2, 3)


def test_registration_is_explicit():
    """Importing the module leaves MONAI's factory alone (in a fresh interpreter: other tests may register)."""
    code = (
        "import common.networks.conv4d\n"
        "from monai.networks.layers.factories import Conv\n"
        "assert not getattr(Conv.components['CONV'].value, 'conv4d_registered', False)\n"
        "from monai.networks.layers.factories import Norm\n"
        "assert not getattr(Norm.components['GROUP'].value, 'conv4d_registered', False)\n"
        "try:\n    Conv[Conv.CONV, 4]\nexcept IndexError:\n    print('no 4D entry')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "no 4D entry"


# ---------------------------------------------------------------------------------------------------------------
# autocast, checkpointing, devices, export
# ---------------------------------------------------------------------------------------------------------------


def test_autocast_cpu_bfloat16():
    torch.manual_seed(0)
    layer = Conv4d(2, 3, 3, stride=(1, 1, 2, 2), padding=1, time_padding_mode="replicate")
    x = torch.randn(1, 2, 5, 4, 4, 6, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    with torch.no_grad():  # exactly what autocast does for conv3d: the same computation on bfloat16 copies
        same = conv4d(x.bfloat16(), layer.weight.bfloat16(), layer.bias.bfloat16(), (1, 1, 2, 2), 1, "replicate")
    assert torch.equal(y.detach(), same)
    torch.testing.assert_close(y.float(), layer(x), atol=0.05, rtol=0.05)
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and layer.weight.grad.dtype == torch.float32
    assert torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_checkpoint(use_reentrant):
    torch.manual_seed(0)
    layer = Conv4d(2, 2, 3, stride=(2, 1, 1, 2), padding=1, time_padding_mode="reflect")
    x = torch.randn(1, 2, 5, 4, 3, 5, requires_grad=True)
    layer(x).square().sum().backward()
    want = [t.grad.clone() for t in (x, layer.weight, layer.bias)]
    for t in (x, layer.weight, layer.bias):
        t.grad = None
    checkpoint(layer, x, use_reentrant=use_reentrant).square().sum().backward()
    for t, w in zip((x, layer.weight, layer.bias), want, strict=True):
        torch.testing.assert_close(t.grad, w)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_matches_cpu():
    x, w, b = make((1, 2, 6, 5, 4, 6), 3, 3, dtype=torch.float32)
    for stride, mode in [(1, "zeros"), (2, "reflect")]:
        cpu = conv4d(x, w, b, stride, 1, mode)
        xc, wc, bc = (t.detach().cuda().requires_grad_() for t in (x, w, b))
        gpu = conv4d(xc, wc, bc, stride, 1, mode)
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)
        gpu.sum().backward()
        assert xc.grad.device.type == "cuda" and wc.grad.shape == w.shape


def export_cases():
    return [(3, 1, 1, "zeros"), (3, 2, 1, "reflect"), ((3, 1, 3, 2), (1, 2, 1, 2), (1, 0, 1, 1), "circular")]


@pytest.mark.parametrize(("kernel", "stride", "padding", "mode"), export_cases())
def test_torchscript(kernel, stride, padding, mode):
    """TorchScript (what the Model Zoo ships) takes the plain-autograd path: same values and gradients."""
    torch.manual_seed(0)
    layer = Conv4d(2, 3, kernel, stride, padding, time_padding_mode=mode).double()
    scripted = torch.jit.script(layer)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    for frames in (5, 6):  # the scripted layer is not tied to one time length
        x = torch.randn(1, 2, 5, 4, 4, frames, dtype=DT, requires_grad=True)
        y = layer(x)
        torch.testing.assert_close(loaded(x), y)
        g = torch.randn_like(y)
        torch.testing.assert_close(torch.autograd.grad(loaded(x), x, g)[0], torch.autograd.grad(y, x, g)[0])
    with pytest.raises(torch.jit.Error, match="6-D"):
        loaded(torch.randn(1, 2, 5, 4, 4, dtype=DT))
    up = torch.jit.script(UpSample4d(2))
    z = torch.randn(1, 2, 2, 2, 2, 2)
    assert torch.equal(up(z), upsample_nearest4d(z))
    zt = to_time_major(z)  # the scripted layer keeps a time-major input time-major too
    assert torch.equal(up(zt), upsample_nearest4d(z)) and up(zt).permute(0, 5, 2, 3, 4, 1).is_contiguous()


@pytest.mark.parametrize(("kernel", "stride", "padding", "mode"), export_cases())
def test_trace_and_torch_export(kernel, stride, padding, mode):
    """torch.jit.trace and torch.export (the front end of the ONNX exporters) record standard aten ops only."""
    torch.manual_seed(0)
    layer = Conv4d(2, 3, kernel, stride, padding, time_padding_mode=mode)
    x = torch.randn(1, 2, 5, 4, 4, 6)
    with warnings.catch_warnings():  # shape checks become constants: trace at the deployment shape
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(layer, x)
    torch.testing.assert_close(traced(x), layer(x))
    assert "PythonOp" not in str(traced.graph)  # not the custom autograd Function
    program = torch.export.export(layer, (x,))
    torch.testing.assert_close(program.module()(x), layer(x))
    ops = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert any("conv3d" in op or "convolution" in op for op in ops)
    assert all(op.startswith("aten.") for op in ops), ops


def test_onnx_export(tmp_path):
    """ONNX export (dynamo exporter) where onnx and onnxscript are installed; compared with onnxruntime if present."""
    pytest.importorskip("onnx", reason="onnx is not installed in this environment")
    pytest.importorskip("onnxscript", reason="onnxscript is not installed in this environment")
    import onnx

    layer = Conv4d(2, 3, 3, 2, 1, time_padding_mode="reflect").eval()
    x = torch.randn(1, 2, 6, 5, 4, 6)
    path = tmp_path / "conv4d.onnx"
    torch.onnx.export(layer, (x,), str(path), dynamo=True)
    onnx.checker.check_model(onnx.load(str(path)))
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed in this environment")
    session = ort.InferenceSession(str(path))
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), layer(x).detach(), atol=1e-5, rtol=1e-5)


def test_every_padding_mode_and_parity_through_the_module():
    """The public Conv4d (not only the functional form) over the grid of modes, time parities and strides."""
    for mode, frames, stride in itertools.product(TIME_PADDING_MODES, (6, 7), (1, 2)):
        torch.manual_seed(frames)
        layer = Conv4d(2, 2, 3, stride, 1, time_padding_mode=mode).double()
        x = torch.randn(1, 2, 4, 3, 3, frames, dtype=DT)
        torch.testing.assert_close(layer(x), reference_conv4d(x, layer.weight, layer.bias, stride, 1, mode))
