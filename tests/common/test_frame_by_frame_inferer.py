"""FrameByFrameInferer: a 3D inferer applied to every frame of a 4D sequence (3D baseline, section 4)."""

import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SimpleInferer, SlidingWindowInferer

from common.inferers.frame_by_frame import FrameByFrameInferer

B, C, C_OUT, SPATIAL, T = 2, 2, 3, (11, 9, 10), 5


@pytest.fixture
def network():
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(C, C_OUT, kernel_size=3, padding=1).eval()
    return conv


@pytest.fixture
def inputs():
    return torch.randn(B, C, *SPATIAL, T, generator=torch.Generator().manual_seed(1))


def test_simple_inferer_equals_a_manual_loop(network, inputs):
    with torch.no_grad():
        out = FrameByFrameInferer(SimpleInferer())(inputs, network)
        manual = torch.stack([network(inputs[..., t]) for t in range(T)], dim=-1)
    assert out.shape == (B, C_OUT, *SPATIAL, T)
    assert type(out) is torch.Tensor
    torch.testing.assert_close(out, manual, rtol=1e-5, atol=1e-6)
    # frames are not mixed up: frame t of sample b depends on that frame only
    with torch.no_grad():
        one = network(inputs[1:2, ..., 3])
    torch.testing.assert_close(out[1:2, ..., 3], one, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out[..., 3], out[..., 4])


def test_default_inner_inferer_is_simple(network, inputs):
    inferer = FrameByFrameInferer()
    assert isinstance(inferer.inferer, SimpleInferer) and inferer.frame_batch == 1
    with torch.no_grad():
        torch.testing.assert_close(inferer(inputs, network), FrameByFrameInferer(SimpleInferer())(inputs, network))


def test_sliding_window_equals_per_frame_sliding_window(network, inputs):
    window = SlidingWindowInferer(roi_size=(8, 8, 8), sw_batch_size=2, overlap=0.5)
    with torch.no_grad():
        out = FrameByFrameInferer(window)(inputs, network)
        direct = [window(inputs[..., t], network) for t in range(T)]
        whole = torch.stack([network(inputs[..., t]) for t in range(T)], dim=-1)
    assert out.shape == (B, C_OUT, *SPATIAL, T)
    for t in range(T):
        torch.testing.assert_close(out[..., t], direct[t], rtol=1e-5, atol=1e-6)
    # the windows really tile the volume (a zero-padded conv differs from the whole-volume pass at window borders)
    assert not torch.allclose(out, whole, atol=1e-4)


@pytest.mark.parametrize("inner", ["simple", "sliding"])
def test_frame_batch_does_not_change_the_result(network, inputs, inner):
    calls = []

    def counting(x):
        calls.append(x.shape[0])
        return network(x)

    def make(frame_batch):
        window = SimpleInferer() if inner == "simple" else SlidingWindowInferer((8, 8, 8), sw_batch_size=4, overlap=0.5)
        return FrameByFrameInferer(window, frame_batch=frame_batch)

    with torch.no_grad():
        one = make(1)(inputs, network)
        calls.clear()
        three = make(3)(inputs, counting)
    torch.testing.assert_close(three, one, rtol=1e-5, atol=1e-6)
    if inner == "simple":
        assert calls == [3, 3, 3, 1]  # 2 samples x 5 frames, 3 at a time: the last call is short


def test_output_shape_follows_the_network(inputs):
    network = torch.nn.Conv3d(C, 4, kernel_size=3, padding=0)  # shrinks each spatial axis by 2
    with torch.no_grad():
        out = FrameByFrameInferer(frame_batch=4)(inputs, network)
    assert out.shape == (B, 4, *(s - 2 for s in SPATIAL), T)


def test_metatensor_keeps_the_input_metadata(network, inputs):
    affine = torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0]))
    meta_inputs = MetaTensor(inputs, affine=affine, meta={"filename_or_obj": "seq.nii.gz"})
    window = SlidingWindowInferer(roi_size=(8, 8, 8), overlap=0.5)
    with torch.no_grad():
        out = FrameByFrameInferer(window, frame_batch=2)(meta_inputs, network)
        plain = FrameByFrameInferer(window, frame_batch=2)(inputs, network)
        three_d = window(MetaTensor(inputs[..., 0], affine=affine), network)
    assert isinstance(three_d, MetaTensor)  # what the 3D call gives, and so the 4D one
    assert isinstance(out, MetaTensor)
    assert torch.equal(out.affine, affine) and out.meta["filename_or_obj"] == "seq.nii.gz"
    torch.testing.assert_close(out.as_tensor(), plain)


def test_bad_inputs(network):
    with pytest.raises(ValueError, match=r"\[B, C, X, Y, Z, T\]"):
        FrameByFrameInferer()(torch.zeros(1, C, 4, 4, 4), network)
    with pytest.raises(ValueError, match=r"\[B, C, X, Y, Z, T\]"):
        FrameByFrameInferer()(torch.zeros(1, 1, C, 4, 4, 4, 2), network)
    with pytest.raises(ValueError, match="at least one"):
        FrameByFrameInferer()(torch.zeros(1, C, 4, 4, 4, 0), network)
    with pytest.raises(ValueError, match="frame_batch"):
        FrameByFrameInferer(frame_batch=0)
    with pytest.raises(TypeError, match="tensor"):
        FrameByFrameInferer()(torch.zeros(1, C, 4, 4, 4, 2), lambda x: {"pred": x})
