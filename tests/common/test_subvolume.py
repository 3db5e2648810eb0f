"""Sub-volume extraction with one of five augmentations (brain CT perfusion paper, II-B.2 and II-B.3)."""

import math
from collections import Counter

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from common.transforms.subvolume import (
    AUGMENTATIONS,
    RandSubvolumeAugmentd,
    corner_displacement_field,
    crop_subvolume,
    euler_rotation_matrix,
    sample_subvolume,
    subvolume_coordinates,
)

N, M = 20, 8  # sub-volume and label sizes of the tests (the paper: 124 and 36)
S = (N - M) // 2  # where the label crop starts inside the sub-volume


def sphere_case(size=40, center=(20.0, 20.0, 20.0), radius=8.0):
    """Image (ch 0: 100 inside the sphere, ch 1: noise), label (2 inside, 1 in a shell, 0 outside) and a box mask."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * 3, indexing="ij"))
    dist = (grid - torch.tensor(center).reshape(3, 1, 1, 1)).pow(2).sum(0).sqrt()
    torch.manual_seed(0)
    image = torch.stack([100.0 * (dist <= radius), torch.rand(size, size, size)])
    label = torch.zeros(1, size, size, size, dtype=torch.int64)
    label[0][dist <= radius + 3] = 1
    label[0][dist <= radius] = 2
    mask = torch.zeros(1, size, size, size, dtype=torch.uint8)
    mask[0, 5:35, 5:35, 5:35] = 1
    return {"image": image, "label": label, "mask": mask}


def ramp_case(size=40):
    """Image whose channel k is the voxel coordinate along axis k: the output shows where each voxel was read."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float64)] * 3, indexing="ij"))
    return {"image": grid}


def transform(augmentations, **kwargs):
    kwargs.setdefault("keys", ("image", "label", "mask"))
    t = RandSubvolumeAugmentd(spatial_size=N, label_size=M, augmentations=augmentations, **kwargs)
    t.set_random_state(0)
    return t


@pytest.mark.parametrize("augmentation", AUGMENTATIONS)
def test_same_geometry_for_image_label_and_mask(augmentation):
    case = sphere_case()
    center = torch.tensor([20, 20, 28])  # on the sphere's surface: the label crop holds inside and outside
    t = transform((augmentation,))
    for _ in range(3):
        out = t({**case, "center": center})
        assert t.augmentation == augmentation
        assert out["image"].shape == (2, N, N, N) and out["image"].dtype == torch.float32
        assert out["label"].shape == out["mask"].shape == (1, M, M, M)
        assert out["label"].dtype == torch.int64 and out["mask"].dtype == torch.uint8
        assert set(out["label"].unique().tolist()) <= {0, 1, 2} and set(out["mask"].unique().tolist()) <= {0, 1}
        image = out["image"][0, S : S + M, S : S + M, S : S + M]
        inside_label = out["label"][0] == 2
        assert 0.2 < inside_label.float().mean() < 0.8
        # a voxel labelled inside read its nearest neighbour inside the sphere, which weighs >= 1/8 in the image
        assert (image[inside_label] > 0).all()
        # a voxel labelled 0 read a voxel > radius + 3 from the centre: all 8 neighbours are outside the sphere
        assert (image[out["label"][0] == 0] == 0).all()
        assert ((image > 50) == inside_label).float().mean() > 0.9  # the boundary: trilinear > 50 ~ nearest
        # the mask (nearest) holds the box [5, 35) at the rounded sampling coordinates
        coords = torch.round(t.sampling_coordinates(center.tolist())[S : S + M, S : S + M, S : S + M])
        assert torch.equal(out["mask"][0] == 1, ((coords >= 5) & (coords < 35)).all(-1))
        assert torch.equal(out["center"], center)  # other entries pass through


def test_identity_is_a_plain_crop_and_mirror_a_flipped_crop():
    case = sphere_case()
    c = (17, 22, 25)
    sl = tuple(slice(x - N // 2, x - N // 2 + N) for x in c)
    crop = {k: v[(slice(None), *sl)] for k, v in case.items()}
    out = transform(("identity",))({**case, "center": list(c)})
    assert torch.equal(out["image"], crop["image"])  # exact, not interpolated
    assert torch.equal(out["label"], crop["label"][:, S : S + M, S : S + M, S : S + M])
    assert torch.equal(out["mask"], crop["mask"][:, S : S + M, S : S + M, S : S + M])
    out = transform(("mirror",))({**case, "center": list(c)})
    flipped = {k: v.flip(1) for k, v in crop.items()}  # spatial axis 0 only
    assert torch.equal(out["image"], flipped["image"])
    assert torch.equal(out["label"], flipped["label"][:, S : S + M, S : S + M, S : S + M])
    assert torch.equal(out["mask"], flipped["mask"][:, S : S + M, S : S + M, S : S + M])


def test_mirror_and_identity_coordinates_agree_with_the_crops():
    case = ramp_case()
    for name, flip in (("identity", False), ("mirror", True)):
        t = transform((name,), keys="image", mode="bilinear")
        t.randomize()
        coords = t.sampling_coordinates((20, 20, 20), dtype=torch.float64)
        out = t({**case, "center": (20, 20, 20)})["image"]
        assert torch.equal(out, coords.permute(3, 0, 1, 2))  # what the crop read is where the coordinates point
        expected0 = torch.arange(10, 30, dtype=torch.float64)
        assert torch.equal(out[0, :, 0, 0], expected0.flip(0) if flip else expected0)


def test_rotation_by_a_known_angle_about_one_axis():
    """rotate_degrees (0, 0, 8): a rotation by the drawn theta in the plane of axes 0 and 1 about the centre."""
    case = ramp_case()
    t = transform(("rotate",), keys="image", mode="bilinear", rotate_degrees=(0, 0, 8))
    thetas = []
    for _ in range(4):
        out = t({**case, "center": (20, 20, 20)})["image"]
        theta = t.angles[2]
        assert t.angles[0] == t.angles[1] == 0
        thetas.append(theta)
        # output voxel o reads centre + R(theta)(o - p), p = 9.5, centre = 20 - 10 + 9.5 = 19.5 per axis
        for o in [(0, 0, 0), (19, 3, 7), (5, 16, 19), (10, 10, 0)]:
            u = np.array(o) - 9.5
            expected = (
                19.5 + math.cos(theta) * u[0] - math.sin(theta) * u[1],
                19.5 + math.sin(theta) * u[0] + math.cos(theta) * u[1],
                19.5 + u[2],
            )
            assert out[(slice(None), *o)].numpy() == pytest.approx(expected, abs=1e-4)
    assert all(abs(th) <= math.radians(8) for th in thetas) and len(set(thetas)) == 4


def test_euler_rotation_matrix_by_hand():
    # 90 degrees about axis 2 takes axis 0 to axis 1; about axis 0 takes axis 1 to axis 2
    assert euler_rotation_matrix((0, 0, math.pi / 2)) @ np.array([1, 0, 0]) == pytest.approx([0, 1, 0])
    assert euler_rotation_matrix((math.pi / 2, 0, 0)) @ np.array([0, 1, 0]) == pytest.approx([0, 0, 1])
    assert euler_rotation_matrix((0, math.pi / 2, 0)) @ np.array([0, 0, 1]) == pytest.approx([1, 0, 0])
    # axis 0 is applied first: R_2(90) R_0(90) takes axis 1 to axis 2 (R_0), which R_2 leaves alone
    assert euler_rotation_matrix((math.pi / 2, 0, math.pi / 2)) @ np.array([0, 1, 0]) == pytest.approx([0, 0, 1])
    r = euler_rotation_matrix((0.1, -0.12, 0.05))
    assert r @ r.T == pytest.approx(np.eye(3)) and np.linalg.det(r) == pytest.approx(1.0)


def test_three_axis_rotation_reads_rotated_coordinates_and_angles_in_range():
    case = ramp_case()
    t = transform(("rotate",), keys="image", mode="bilinear")
    angles = []
    for _ in range(200):
        t.randomize()
        angles.append(t.angles.copy())
    angles = np.degrees(np.array(angles))
    assert np.abs(angles).max() <= 8 and np.abs(angles).max() > 7  # U(-8, 8) degrees per axis
    assert np.abs(angles.mean(0)).max() < 1.5
    out = t({**case, "center": (21, 19, 20)})["image"]
    r = euler_rotation_matrix(t.angles)
    origin = np.array([21, 19, 20]) - 10 + 9.5
    for o in [(0, 0, 0), (19, 19, 19), (3, 15, 8)]:
        assert out[(slice(None), *o)].numpy() == pytest.approx(origin + r @ (np.array(o) - 9.5), abs=1e-4)


def test_scaling_zooms_in_by_s():
    t = transform(("scale",), keys="image", mode="bilinear")
    # coordinates: output voxel o reads centre + (o - p) / s, a step of 1 / s per voxel
    out = t({**ramp_case(), "center": (20, 20, 20)})["image"]
    s = t.scale
    assert 1.01 <= s <= 1.25
    assert torch.allclose(out[1, 4, :, 7].diff(), torch.full((N - 1,), 1 / s, dtype=torch.float64))
    assert out[:, 0, 0, 0].numpy() == pytest.approx(19.5 - 9.5 / s)
    # an object's extent grows by s: the sphere of radius 5 covers s^3 times the voxels of the identity crop
    case = sphere_case(radius=5.0, center=(19.5, 19.5, 19.5))
    identity = transform(("identity",))({**case, "center": (20, 20, 20)})["image"][0] > 50
    scales = []
    for _ in range(3):
        zoomed = t({**case, "center": (20, 20, 20)})["image"][0] > 50
        ratio = (zoomed.sum() / identity.sum()).item() ** (1 / 3)
        assert ratio == pytest.approx(t.scale, abs=0.03)
        scales.append(t.scale)
    draws = []
    for _ in range(300):
        t.randomize()
        draws.append(t.scale)
    assert 1.01 <= min(draws) < 1.03 and 1.23 < max(draws) <= 1.25


def test_elastic_offsets_at_corners_and_linear_in_between():
    t = transform(("elastic",), keys="image", mode="bilinear", elastic_sigma=3.0)
    case = ramp_case(48)
    for _ in range(3):
        out = t({**case, "center": (24, 24, 24)})["image"]
        offsets = t.corner_offsets
        assert not np.allclose(offsets, 0)
        for i in (0, 1):
            for j in (0, 1):
                for k in (0, 1):
                    o = np.array([i, j, k]) * (N - 1)
                    read = out[:, o[0], o[1], o[2]].numpy()
                    assert read == pytest.approx(24 - 10 + o + offsets[i, j, k], abs=1e-4)
        # the centre of the box reads the mean of the eight offsets
        field = corner_displacement_field(offsets, (21, 21, 21))
        assert field[10, 10, 10].numpy() == pytest.approx(offsets.reshape(8, 3).mean(0))


def test_corner_field_by_hand_and_offset_spread():
    offsets = np.zeros((2, 2, 2, 3))
    offsets[1, 0, 0] = (4.0, -2.0, 1.0)  # only the corner at (n0 - 1, 0, 0) moves
    field = corner_displacement_field(offsets, (5, 3, 4)).numpy()
    assert field.shape == (5, 3, 4, 3)
    assert field[4, 0, 0] == pytest.approx([4, -2, 1])
    assert field[2, 0, 0] == pytest.approx([2, -1, 0.5])  # half way along the edge
    assert field[2, 1, 0] == pytest.approx([1, -0.5, 0.25])  # and half way along axis 1
    assert np.abs(field[0]).max() == 0 and np.abs(field[:, 2]).max() == 0
    t = transform(("elastic",))
    draws = []
    for _ in range(200):
        t.randomize()
        draws.append(t.corner_offsets)
    assert np.std(draws) == pytest.approx(6.0, rel=0.1)  # N(0, 6) voxels


def test_each_augmentation_chosen_with_probability_one_fifth():
    t = transform(AUGMENTATIONS)
    counts = Counter()
    for _ in range(5000):
        t.randomize()
        counts[t.augmentation] += 1
    assert set(counts) == set(AUGMENTATIONS)
    chi2 = sum((n - 1000) ** 2 / 1000 for n in counts.values())
    assert chi2 < 18.5  # 4 degrees of freedom, p = 0.001
    # weights and subsets; an empty tuple is identity only
    t = transform(("identity", "rotate"), weights=(3, 1))
    counts = Counter()
    for _ in range(2000):
        t.randomize()
        counts[t.augmentation] += 1
    assert counts["rotate"] == pytest.approx(500, abs=80)
    t = transform(())
    t.randomize()
    assert t.augmentations == ("identity",) and t.augmentation == "identity"


@pytest.mark.parametrize("augmentation", AUGMENTATIONS)
def test_voxels_outside_the_image_are_zero(augmentation):
    case = {"image": ramp_case()["image"] + 1.0, "label": torch.ones(1, 40, 40, 40, dtype=torch.int32)}
    t = transform((augmentation,), keys=("image", "label"), mode=("bilinear", "nearest"), crop_keys=("label",))
    for _ in range(3):
        out = t({**case, "center": (2, 37, 20)})
        coords = t.sampling_coordinates((2, 37, 20), dtype=torch.float64)
        outside = ((coords < -1) | (coords > 40)).any(-1)  # farther than one voxel: no interpolation neighbour
        inside = ((coords >= 0) & (coords <= 39)).all(-1)
        assert outside.any() and inside.any()
        assert (out["image"][:, outside] == 0).all()
        assert (out["image"][:, inside] >= 1).all()
        label_coords = coords[S : S + M, S : S + M, S : S + M]
        label_outside = ((label_coords < -0.5) | (label_coords > 39.5)).any(-1)
        assert torch.equal(out["label"][0] == 0, label_outside)  # nearest: zero exactly where it reads outside


def test_crop_subvolume_pads_with_zeros():
    x = torch.arange(1, 4 * 5 * 6 + 1).reshape(1, 4, 5, 6)
    out = crop_subvolume(x, (-1, 2, 3), (3, 4, 2))
    assert out.shape == (1, 3, 4, 2) and out.dtype == x.dtype
    assert (out[0, 0] == 0).all() and (out[0, :, 3:] == 0).all()
    assert torch.equal(out[0, 1:, :3], x[0, 0:2, 2:5, 3:5])
    assert (crop_subvolume(x, (10, 0, 0), (2, 2, 2)) == 0).all()
    assert torch.equal(crop_subvolume(x, (0, 0, 0), (4, 5, 6), flip_axes=(1,)), x.flip(2))


def test_sample_subvolume_matches_manual_trilinear_interpolation():
    torch.manual_seed(1)
    volume = torch.rand(2, 6, 7, 8, dtype=torch.float64)
    points = torch.tensor([[1.25, 2.5, 3.75], [0.0, 0.0, 0.0], [4.9, 5.1, 6.2], [-0.5, 3.0, 3.0]], dtype=torch.float64)
    out = sample_subvolume(volume, points, "bilinear")
    for n, p in enumerate(points.tolist()):
        expected = torch.zeros(2, dtype=torch.float64)
        base = [math.floor(c) for c in p]
        for corner in np.ndindex(2, 2, 2):
            idx = [b + c for b, c in zip(base, corner, strict=True)]
            w = np.prod([1 - abs(q - i) for q, i in zip(p, idx, strict=True)])
            if all(0 <= i < s for i, s in zip(idx, volume.shape[1:], strict=True)):
                expected += w * volume[:, idx[0], idx[1], idx[2]]
        assert torch.allclose(out[:, n], expected)
    near = torch.tensor([[1.25, 2.8, 3.75], [4.9, 5.4, 6.2], [-0.4, 3.3, 3.0], [-0.6, 3.0, 3.0]], dtype=torch.float64)
    nearest = sample_subvolume(volume, near, "nearest")
    assert torch.equal(nearest[:, 0], volume[:, 1, 3, 4])
    assert torch.equal(nearest[:, 1], volume[:, 5, 5, 6])
    assert torch.equal(nearest[:, 2], volume[:, 0, 3, 3])  # -0.4 rounds to 0: inside
    assert torch.equal(nearest[:, 3], torch.zeros(2, dtype=torch.float64))  # -0.6 rounds to -1: outside
    # all far outside: zeros of the right shape
    assert torch.equal(sample_subvolume(volume, points - 100, "bilinear"), torch.zeros(2, 4, dtype=torch.float64))


def test_subvolume_coordinates_centre_lands_at_half_size():
    coords = subvolume_coordinates((10, 11, 12), (6, 5, 4))
    assert coords.shape == (6, 5, 4, 3)
    assert coords[3, 2, 2].tolist() == [10, 11, 12]  # the centre voxel at index n // 2
    assert coords[0, 0, 0].tolist() == [7, 9, 10]


def test_anisotropic_and_smaller_sizes_and_metatensor_input():
    case = sphere_case()
    case = {k: MetaTensor(v, affine=torch.eye(4)) for k, v in case.items()}
    t = RandSubvolumeAugmentd(
        ("image", "label", "mask"), spatial_size=(20, 16, 12), label_size=(8, 6, 2), augmentations=AUGMENTATIONS
    )
    t.set_random_state(2)
    seen = set()
    for _ in range(15):
        out = t({**case, "center": torch.tensor([20, 20, 27])})
        seen.add(t.augmentation)
        assert out["image"].shape == (2, 20, 16, 12) and out["label"].shape == out["mask"].shape == (1, 8, 6, 2)
        assert type(out["image"]) is torch.Tensor
        assert set(out["label"].unique().tolist()) <= {0, 1, 2}
        if t.augmentation != "elastic":  # the others move the centre (index n // 2 = 10, 8, 6) by < 1 voxel
            assert out["label"][0, 4, 3, 1] == 2  # inside the sphere (distance 7 < 8)
    assert len(seen) >= 4


def test_deterministic_for_a_seed():
    case = sphere_case()

    def run(seed):
        t = transform(AUGMENTATIONS)
        t.set_random_state(seed)
        return [t({**case, "center": (20, 20, 25)}) for _ in range(5)]

    a, b, c = run(4), run(4), run(5)
    assert not all(torch.equal(x["image"], y["image"]) for x, y in zip(a, c, strict=True))
    assert all(
        torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"]) for x, y in zip(a, b, strict=True)
    )


def test_arguments_checked():
    with pytest.raises(ValueError, match="augmentations"):
        RandSubvolumeAugmentd("image", 20, mode="bilinear", augmentations=("identity", "shear"))
    with pytest.raises(ValueError, match="label_size"):
        RandSubvolumeAugmentd("image", 20, mode="bilinear", label_size=24)
    with pytest.raises(ValueError, match="mode"):
        RandSubvolumeAugmentd("image", 20, mode="cubic")
    with pytest.raises(ValueError, match=r"one mode per key.*\('image',\)"):
        RandSubvolumeAugmentd("image", 20)  # the default three modes are for image, label, mask
    with pytest.raises(ValueError, match="scale_range"):
        RandSubvolumeAugmentd("image", 20, mode="bilinear", scale_range=(1.2, 1.1))
    with pytest.raises(ValueError, match="weights"):
        RandSubvolumeAugmentd("image", 20, mode="bilinear", weights=(1, 1))
    with pytest.raises(ValueError, match="elastic_sigma"):
        RandSubvolumeAugmentd("image", 20, mode="bilinear", elastic_sigma=-1)
    t = RandSubvolumeAugmentd("image", 20, mode="bilinear")
    with pytest.raises(ValueError, match="'center'"):
        t({"image": torch.zeros(1, 30, 30, 30)})
    with pytest.raises(ValueError, match="three voxel indices"):
        t({"image": torch.zeros(1, 30, 30, 30), "center": (1, 2)})
    with pytest.raises(ValueError, match=r"\[C, X, Y, Z\]"):
        t({"image": torch.zeros(30, 30, 30), "center": (1, 2, 3)})
