"""B-spline + rigid augmentation (Roth et al. 2018, Section II.B)."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from common.transforms.augmentation import RandBSplineAffined, bspline_basis_matrix, bspline_displacement_field


def test_basis_is_partition_of_unity_and_cubic():
    basis = bspline_basis_matrix(49, 24)
    assert basis.shape == (49, int(np.ceil(48 / 24)) + 3)
    assert np.allclose(basis.sum(1), 1.0)
    # at a knot the cubic B-spline weights are 1/6, 4/6, 1/6
    assert np.allclose(basis[24, 1:4], [1 / 6, 4 / 6, 1 / 6])
    # half way between knots: (1/48, 23/48, 23/48, 1/48)
    assert np.allclose(basis[12, 0:4], [1 / 48, 23 / 48, 23 / 48, 1 / 48])


def test_field_bounded_by_max_displacement_and_smooth():
    rng = np.random.default_rng(0)
    ctrl = rng.uniform(-4, 4, size=(3, 6, 6, 6))
    field = bspline_displacement_field(ctrl, (64, 64, 64), 24)
    assert field.shape == (3, 64, 64, 64)
    assert np.abs(field).max() <= 4.0 + 1e-6
    # smooth: neighbouring voxels differ by far less than the displacement range
    assert np.abs(np.diff(field, axis=1)).max() < 0.5


def test_constant_control_displacement_is_a_shift():
    field = bspline_displacement_field(np.full((3, 5, 5, 5), 2.5), (32, 32, 32), 16)
    assert np.allclose(field, 2.5, atol=1e-5)


def test_same_random_warp_for_image_and_label():
    img = torch.zeros(1, 48, 48, 48)
    img[:, 16:32, 16:32, 16:32] = 1.0
    data = {"image": MetaTensor(img), "label": MetaTensor(img.clone())}
    t = RandBSplineAffined(
        ["image", "label"],
        spatial_size=(32, 32, 32),
        rotate_range=[0.35] * 3,
        translate_range=[5] * 3,
        mode=("bilinear", "nearest"),
    )
    t.set_random_state(3)
    out = t(data)
    assert out["image"].shape == out["label"].shape == (1, 32, 32, 32)
    assert set(out["label"].unique().tolist()) <= {0.0, 1.0}
    # the label (nearest) and the image (bilinear) agree away from the cube's border
    agree = ((out["image"] > 0.5) == (out["label"] > 0.5)).float().mean()
    assert agree > 0.97
    assert 0 < out["label"].sum() < 32**3


def test_identity_when_not_applied_and_uniform_crop_positions():
    x = torch.arange(10 * 8 * 6, dtype=torch.float32).reshape(1, 10, 8, 6)
    t = RandBSplineAffined(["image"], spatial_size=(4, 4, 4), prob=0.0, random_center=True)
    t.set_random_state(1)
    starts = set()
    for _ in range(200):
        out = t({"image": x})["image"]
        v = int(round(float(out[0, 0, 0, 0])))
        i, j, k = v // 48, (v % 48) // 6, v % 6
        assert torch.allclose(out, x[:, i : i + 4, j : j + 4, k : k + 4], atol=1e-3)
        starts.add((i, j, k))
    assert len(starts) > 80  # of 7 * 5 * 3 = 105 valid positions


def test_deterministic_for_a_seed():
    x = {"image": torch.rand(1, 40, 40, 40)}
    a = RandBSplineAffined(["image"], spatial_size=(16, 16, 16), rotate_range=[0.3] * 3, random_center=True)
    b = RandBSplineAffined(["image"], spatial_size=(16, 16, 16), rotate_range=[0.3] * 3, random_center=True)
    a.set_random_state(7)
    b.set_random_state(7)
    assert torch.equal(a(x)["image"], b(x)["image"])


def test_negative_displacement_rejected():
    with pytest.raises(ValueError, match="max_displacement"):
        RandBSplineAffined(["image"], max_displacement=-1)


@pytest.mark.parametrize("reseed_each_draw", [True, False])
def test_rotation_draws_symmetric_and_independent_of_the_rest(reseed_each_draw):
    """Many draws with 0 < prob < 1: the applied rotations are symmetric about 0 and unrelated to the crop position.

    Both ways the transform is driven: one seed then many draws, and a fresh seed before each draw (MONAI's
    DataLoader seeds every worker's transforms through ``set_random_state`` when it starts, so each worker's first
    sample is drawn right after seeding). Seeding the inner ``RandAffineGrid`` with the outer seed made the first
    rotation after seeding repeat the apply draw: every applied rotation about the first axis fell in [-20 deg, 0].
    """
    limit = np.radians(20)
    t = RandBSplineAffined(
        ["image"], spatial_size=(4, 4, 4), random_center=True, grid_spacing=8, rotate_range=[limit] * 3, prob=0.5
    )
    t.set_random_state(0)
    x = {"image": torch.zeros(1, 24, 24, 24)}
    angles, offsets = [], []
    for seed in range(2000):
        if reseed_each_draw:
            t.set_random_state(seed)
        t(x)
        if t._do_transform:
            angles.append(np.asarray(t.rand_affine_grid.rotate_params, dtype=float))
            offsets.append(np.asarray(t.center_offset, dtype=float))
    angles, offsets = np.array(angles), np.array(offsets)
    n = len(angles)
    assert 900 < n < 1100  # prob 0.5 of 2000: 1000 +- 4.5 sigma (sigma = 22)
    assert np.all(np.abs(angles) <= limit)
    for axis in range(3):
        a = angles[:, axis]
        # uniform on [-L, L]: half positive (sigma 0.5/sqrt(n) = 0.016), mean 0 (sigma L/sqrt(3n) = 0.0064 rad)
        assert abs(np.mean(a > 0) - 0.5) < 0.06, axis
        assert abs(np.mean(a)) < 0.03, axis
        assert np.std(a) == pytest.approx(limit / np.sqrt(3), rel=0.1)
        for d in range(3):  # independent of the crop position: |correlation| ~ 1/sqrt(n) = 0.03
            assert abs(np.corrcoef(a, offsets[:, d])[0, 1]) < 0.12, (axis, d)
