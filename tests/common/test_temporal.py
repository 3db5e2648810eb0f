"""Weighted temporal average and variance of a 4D CT (sec. III-C, Fig. 3): hand-computed values, weights, backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.transforms.temporal import (
    frame_noise_std,
    frame_weights,
    weighted_temporal_average,
    weighted_temporal_variance,
)


def _smooth_volume(n: int = 20) -> np.ndarray:
    """A smooth 'anatomy' (values 80..130) on an n^3 grid."""
    x, y, z = np.meshgrid(*[np.linspace(0.0, 1.0, n)] * 3, indexing="ij")
    return 100.0 + 20.0 * np.sin(3 * x) * np.cos(2 * y) + 10.0 * z


def _noisy_frames(sigmas, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = _smooth_volume()
    return np.stack([base + rng.normal(0.0, s, base.shape) for s in sigmas])


def test_constant_in_time_image():
    frame = np.random.default_rng(1).normal(40.0, 15.0, size=(6, 7, 8))
    image = np.stack([frame] * 5)  # [T, X, Y, Z]
    weights = frame_weights(image)  # identical frames -> identical noise -> uniform weights
    assert weights == pytest.approx(np.full(5, 0.2))
    np.testing.assert_allclose(weighted_temporal_average(image), frame, rtol=0, atol=1e-12)
    np.testing.assert_allclose(weighted_temporal_variance(image), 0.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(weighted_temporal_average(image, weights=[5, 1, 0, 2, 3]), frame, rtol=0, atol=1e-12)
    np.testing.assert_allclose(weighted_temporal_variance(image, weights=[5, 1, 0, 2, 3]), 0.0, rtol=0, atol=1e-12)


def test_hand_computed_weighted_mean_and_variance():
    image = np.zeros((3, 2, 2, 2))
    image[:, 0, 0, 0] = [1.0, 2.0, 4.0]
    image[:, 1, 1, 1] = [0.0, 0.0, 3.0]
    weights = [1.0, 1.0, 2.0]  # normalised: 0.25, 0.25, 0.5
    wta = weighted_temporal_average(image, weights)
    wtv = weighted_temporal_variance(image, weights)
    assert wta.shape == wtv.shape == (2, 2, 2)
    # voxel 1: 0.25*1 + 0.25*2 + 0.5*4 = 2.75; 0.25*1.75^2 + 0.25*0.75^2 + 0.5*1.25^2 = 1.6875
    assert wta[0, 0, 0] == pytest.approx(2.75)
    assert wtv[0, 0, 0] == pytest.approx(1.6875)
    # voxel 2: 0.5*3 = 1.5; (0.25 + 0.25 + 0.5) * 1.5^2 = 2.25
    assert wta[1, 1, 1] == pytest.approx(1.5)
    assert wtv[1, 1, 1] == pytest.approx(2.25)
    assert wta[0, 1, 0] == 0.0 and wtv[0, 1, 0] == 0.0
    # exposures in mAs work as weights directly (only their ratios matter)
    np.testing.assert_allclose(
        weighted_temporal_average(image, [200, 100, 75]), weighted_temporal_average(image, [8, 4, 3])
    )


def test_default_weights_favour_the_low_noise_frame():
    image = _noisy_frames([1.0, 3.0])
    sigma = frame_noise_std(image)
    assert sigma == pytest.approx([1.0, 3.0], rel=0.1)  # second differences ignore the smooth anatomy
    weights = frame_weights(image)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[0] > weights[1]
    assert weights[0] / weights[1] == pytest.approx(9.0, rel=0.25)  # inverse variance: (3 / 1)^2
    # the weighted average is less noisy than the plain mean of the two frames
    truth = _smooth_volume()
    weighted_error = np.std(weighted_temporal_average(image) - truth)
    plain_error = np.std(weighted_temporal_average(image, [1, 1]) - truth)
    assert weighted_error < 0.85 * plain_error


def test_clipped_background_does_not_hide_the_noise():
    # window clipping (sec. III-B) turns the air around the head into one constant value: left out of the estimate
    image = _noisy_frames([1.0, 2.0])
    image[:, :, :12, :] = 0.0  # 60 % of every frame clipped to the frame minimum
    sigma = frame_noise_std(image)
    assert sigma == pytest.approx([1.0, 2.0], rel=0.1)
    mask = np.zeros(image.shape[1:], dtype=bool)
    mask[:, 12:, :] = True
    assert frame_noise_std(image, mask=mask) == pytest.approx(sigma, rel=0.05)


def test_torch_and_numpy_agree_and_keep_device_and_dtype():
    image = _noisy_frames([1.0, 2.0, 1.5])
    tensor = torch.from_numpy(image)
    np.testing.assert_allclose(frame_weights(tensor).numpy(), frame_weights(image), rtol=1e-12)
    np.testing.assert_allclose(weighted_temporal_average(tensor).numpy(), weighted_temporal_average(image), rtol=1e-12)
    np.testing.assert_allclose(
        weighted_temporal_variance(tensor).numpy(), weighted_temporal_variance(image), rtol=1e-12
    )
    single = weighted_temporal_average(tensor.float())
    assert isinstance(single, torch.Tensor) and single.dtype == torch.float32 and single.device == tensor.device
    assert frame_weights(tensor.float()).dtype == torch.float32
    # integer HU frames give float32
    assert weighted_temporal_variance(tensor.round().to(torch.int16)).dtype == torch.float32
    assert weighted_temporal_average(np.rint(image).astype(np.int16)).dtype == np.float32


def test_time_axis_last():
    image = _noisy_frames([1.0, 2.0])
    last = np.moveaxis(image, 0, -1)  # [X, Y, Z, T]
    np.testing.assert_allclose(weighted_temporal_average(last, time_axis=-1), weighted_temporal_average(image))
    np.testing.assert_allclose(weighted_temporal_variance(last, time_axis=3), weighted_temporal_variance(image))
    np.testing.assert_allclose(frame_weights(last, time_axis=-1), frame_weights(image))


def test_bad_arguments_raise():
    image = _noisy_frames([1.0, 2.0])
    with pytest.raises(ValueError, match="2 finite non-negative"):
        weighted_temporal_average(image, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="non-negative"):
        weighted_temporal_average(image, [1.0, -1.0])
    with pytest.raises(ValueError, match="not all zero"):
        weighted_temporal_variance(image, [0.0, 0.0])
    with pytest.raises(ValueError, match="time_axis"):
        weighted_temporal_average(image, time_axis=4)
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        weighted_temporal_average(image.tolist())
    with pytest.raises(ValueError, match="spatial shape"):
        frame_noise_std(image, mask=np.ones((3, 3, 3), dtype=bool))
    mixed = image.copy()
    mixed[1] = 7.0  # a constant frame among noisy ones: its noise is undefined
    with pytest.raises(ValueError, match=r"time points \[1\]"):
        frame_weights(mixed)
