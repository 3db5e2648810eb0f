"""Rigid registration of 4D CT time points to the first one (4D CT tissue segmentation paper, Section III-B).

The phantom is a head drawn analytically in millimetres (an ellipsoidal skull shell at ~1000 HU around ~30 HU brain,
two darker ventricles, a denser blob and three vessels that enhance with a bolus curve), evaluated directly at
rigidly moved coordinates, so the moved frames carry an exactly known motion and no interpolation of ours.
"""

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from common.transforms import registration as reg
from common.transforms.registration import (
    RegisterTimePointsd,
    euler_matrix,
    register_time_points,
    rigid_parameter_map,
    rigid_transform_points,
)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from register_ctp import main, register_nifti  # noqa: E402

DEG = np.pi / 180
# moving frame = phantom sampled at S(p) = R (p - c) + c + t; the registration must recover S^-1
MOTIONS = {2: ((0.0, 0.0, 3 * DEG), (2.0, -1.5, 1.0)), 4: ((2.5 * DEG, -1.5 * DEG, 0.0), (-1.5, 2.5, -2.0))}


def _soft(f, width):
    """A smooth step: 1 inside (f < 0), 0 outside, about ``width`` mm wide."""
    return 1.0 / (1.0 + np.exp(np.clip(f / width, -50, 50)))


def _ellipsoid(p, center, radii, width):
    q = (p - center) / np.asarray(radii)
    return _soft((np.sqrt((q**2).sum(-1)) - 1.0) * np.mean(radii), width)


def _tube(p, a, b, radius, width):
    d = b - a
    s = np.clip(((p - a) @ d) / (d @ d), 0.0, 1.0)
    return _soft(np.linalg.norm(p - (a + s[..., None] * d), axis=-1) - radius, width)


def head_phantom(p, center, t, n_frames, width):
    """HU at points ``p`` ([..., 3], mm) of a head centred at ``center`` at time point ``t``, edges ``width`` wide."""
    bolus = np.exp(-0.5 * ((t - n_frames / 2) / 1.2) ** 2)
    head = _ellipsoid(p, center, (40, 44, 36), width)
    brain = _ellipsoid(p, center + [0, 1, 0], (35, 39, 31), width)
    hu = -1024 + head * (1024 + 1000) + brain * (30 - 1000) + brain * 10 * bolus
    ventricles = _ellipsoid(p, center + [-7, 4, 3], (4, 10, 5), width) + _ellipsoid(
        p, center + [6, 3, 2], (3, 9, 5), width
    )
    hu += ventricles * (5 - 30) + _ellipsoid(p, center + [0, -20, -8], (6, 5, 4), width) * 25
    for a, b in (([-20, -25, -10], [15, 20, 12]), ([10, -30, 8], [-5, 25, -14]), ([-25, 5, 15], [22, 8, 10])):
        hu += _tube(p, center + a, center + b, 1.8, width) * (10 + 300 * bolus)
    return hu


def make_ctp(shape, spacing, motions, n_frames, noise=5.0, seed=0):
    """(clean unmoved frames, moved noisy frames, grid points in mm, head centre) of a [T, X, Y, Z] phantom.

    Edges are blurred over ~0.6 voxel, as a CT's point spread function blurs them: edges much sharper than a voxel
    alias, and their interpolation artefacts pull mutual information towards grid-aligned positions.
    """
    width = 0.6 * min(spacing)
    rng = np.random.default_rng(seed)
    p = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij"), -1)
    center = np.array([(n - 1) * s / 2 for n, s in zip(shape, spacing, strict=True)])
    clean, moved = [], []
    for t in range(n_frames):
        clean.append(head_phantom(p, center, t, n_frames, width))
        q = p
        if t in motions:
            rotation, translation = motions[t]
            q = (p - center) @ euler_matrix(rotation).T + center + np.asarray(translation)
        moved.append(head_phantom(q, center, t, n_frames, width))
    moved = np.stack(moved) + rng.normal(0.0, noise, (n_frames, *shape))
    return np.stack(clean).astype(np.float32), moved.astype(np.float32), p, center


def true_inverse(points, center, motion):
    """S^-1(p) for the motion S of ``MOTIONS``: R^T (p - c - t) + c."""
    rotation, translation = motion
    return (points - center - np.asarray(translation)) @ euler_matrix(rotation) + center


# --- the rotation convention, checked by hand and against ITK's own Euler3DTransform ---


def test_euler_matrix_hand_cases():
    x, y, z = np.eye(3)
    assert np.allclose(euler_matrix((0, 0, np.pi / 2)) @ x, y)
    assert np.allclose(euler_matrix((np.pi / 2, 0, 0)) @ y, z)
    assert np.allclose(euler_matrix((0, np.pi / 2, 0)) @ z, x)
    # y first, then x, then z: Ry(90) takes z to x, Rx(90) leaves x, Rz(90) takes x to y
    assert np.allclose(euler_matrix((np.pi / 2, np.pi / 2, np.pi / 2)) @ z, y)
    with pytest.raises(ValueError, match="three angles"):
        euler_matrix((0.1, 0.2))


def test_rigid_transform_points_matches_itk_euler3d():
    import itk

    rng = np.random.default_rng(1)
    rigid = {"rotation": (0.2, -0.35, 0.5), "translation": (3.0, -2.0, 1.5), "center": (10.0, 20.0, -5.0)}
    points = rng.uniform(-50, 50, (6, 3))
    transform = itk.Euler3DTransform[itk.D].New()
    transform.SetCenter([float(c) for c in rigid["center"]])
    transform.SetRotation(*rigid["rotation"])
    transform.SetTranslation([float(v) for v in rigid["translation"]])
    expected = np.array([list(transform.TransformPoint([float(c) for c in p])) for p in points])
    assert np.allclose(rigid_transform_points(rigid, points), expected, atol=1e-9)
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        rigid_transform_points(rigid, np.zeros(3))


def test_parameter_map_defaults_overrides_and_checks():
    default = rigid_parameter_map()
    assert default["Transform"] == ["EulerTransform"]
    assert default["Metric"] == ["AdvancedMattesMutualInformation"]
    assert default["NumberOfResolutions"] == ["4"]
    assert default["FinalBSplineInterpolationOrder"] == ["3"]
    changed = rigid_parameter_map({"NumberOfResolutions": 3, "ErodeMask": True, "MaximumNumberOfIterations": [100, 50]})
    assert changed["NumberOfResolutions"] == ["3"]
    assert changed["ErodeMask"] == ["true"]
    assert changed["MaximumNumberOfIterations"] == ["100", "50"]
    assert rigid_parameter_map()["NumberOfResolutions"] == ["4"]  # the defaults are not changed in place
    with pytest.raises(ValueError, match="EulerTransform"):
        rigid_parameter_map({"Transform": "BSplineTransform"})
    with pytest.raises(TypeError, match="mapping"):
        rigid_parameter_map(["NumberOfResolutions", 3])


def test_bad_arguments():
    volume = np.zeros((2, 8, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"\[T, X, Y, Z\]"):
        register_time_points(volume[0], (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        register_time_points(volume, (1, 1))
    with pytest.raises(ValueError, match="spacing"):
        register_time_points(volume, (1, 0, 1))
    with pytest.raises(ValueError, match="fixed_index"):
        register_time_points(volume, (1, 1, 1), fixed_index=2)
    with pytest.raises(ValueError, match="number_of_threads"):
        register_time_points(volume, (1, 1, 1), number_of_threads=0)


# --- recovery of a known motion on the full default settings (4 resolutions, 250 iterations) ---


@pytest.fixture(scope="module")
def registered_phantom():
    clean, moved, points, center = make_ctp((48, 48, 48), (2.0, 2.0, 2.0), MOTIONS, n_frames=6)
    registered, rigid = register_time_points(moved, (2.0, 2.0, 2.0), number_of_threads=1)
    return clean, moved, points, center, registered, rigid


def test_recovers_known_motion_within_a_fraction_of_a_voxel(registered_phantom):
    clean, moved, points, center, registered, rigid = registered_phantom
    brain = points[(clean[0] > -200) & (clean[0] < 500)]  # inside the skull
    assert len(brain) > 20000
    for t, motion in MOTIONS.items():
        error = np.linalg.norm(rigid_transform_points(rigid[t], brain) - true_inverse(brain, center, motion), axis=1)
        assert error.mean() / 2.0 < 0.15, (t, error.mean())  # measured: 0.02-0.05 voxel
        # a motion of this size: up to 2.3 voxels at the brain's edge before registration
        before = np.linalg.norm(true_inverse(brain, center, motion) - brain, axis=1)
        assert before.mean() / 2.0 > 1.0
    for t in (1, 3, 5):  # frames that did not move stay put
        error = np.linalg.norm(rigid_transform_points(rigid[t], brain) - brain, axis=1)
        assert error.mean() / 2.0 < 0.05, (t, error.mean())  # measured: < 0.01 voxel


def test_reference_frame_is_copied_and_identity(registered_phantom):
    _, moved, _, _, registered, rigid = registered_phantom
    assert registered.shape == moved.shape
    assert registered.dtype == np.float32
    assert np.array_equal(registered[0], moved[0])
    assert rigid[0]["rotation"] == (0.0, 0.0, 0.0)
    assert rigid[0]["translation"] == (0.0, 0.0, 0.0)
    assert np.allclose(rigid[0]["center"], (47.0, 47.0, 47.0))
    assert np.allclose(rigid[2]["center"], (47.0, 47.0, 47.0))  # elastix rotates about the image centre


def test_registered_frames_match_the_unmoved_anatomy(registered_phantom):
    clean, moved, _, _, registered, _ = registered_phantom
    inner = (clean[0] > -200) & (clean[0] < 500)
    for t in MOTIONS:
        before = np.abs(moved[t] - clean[t])[inner].mean()
        after = np.abs(registered[t] - clean[t])[inner].mean()
        # noise alone gives 4 HU (5 HU sigma); misalignment gave > 100 HU
        assert before > 100, before
        assert after < 8, (t, before, after)  # measured: 3.8 HU, the noise's share


def test_outside_voxels_take_the_frame_minimum(registered_phantom):
    _, moved, points, _, registered, rigid = registered_phantom
    extent = (48 - 1) * 2.0
    for t in MOTIONS:
        mapped = rigid_transform_points(rigid[t], points.reshape(-1, 3)).reshape(points.shape)
        # ITK counts a point as inside up to half a voxel (1 mm) beyond the outer voxel centres; keep 0.5 mm clear
        outside = ((mapped < -1.5) | (mapped > extent + 1.5)).any(-1)
        inside = ((mapped > -0.5) & (mapped < extent + 0.5)).all(-1)
        assert outside.sum() > 1000 and inside.sum() > 0.8 * inside.size
        assert np.all(registered[t][outside] == moved[t].min())
        assert np.mean(registered[t][inside] == moved[t].min()) < 0.001


def test_same_result_on_every_run_with_one_thread():
    _, moved, _, _ = make_ctp((32, 32, 32), (3.0, 3.0, 3.0), {1: MOTIONS[2]}, n_frames=2, seed=4)
    kept = moved.copy()
    first, rigid_first = register_time_points(moved, (3.0, 3.0, 3.0), number_of_threads=1)
    second, rigid_second = register_time_points(moved, (3.0, 3.0, 3.0), number_of_threads=1)
    assert rigid_first == rigid_second
    assert np.array_equal(first, second)
    assert np.array_equal(moved, kept)  # the input is left alone...
    assert not np.array_equal(first, moved)
    # ...unless it is passed as ``out``: each frame is read before it is overwritten, so the result is the same
    registered, _ = register_time_points(moved, (3.0, 3.0, 3.0), number_of_threads=1, out=moved)
    assert registered is moved
    assert np.array_equal(registered, first)
    with pytest.raises(ValueError, match="out must be"):
        register_time_points(moved, (3.0, 3.0, 3.0), out=np.zeros(moved.shape, np.float64))


# --- the dictionary transform ---


def test_disabled_transform_is_an_exact_noop():
    image = MetaTensor(torch.randn(3, 6, 6, 6), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    data = {"image": image, "label": torch.zeros(1, 6, 6, 6)}
    for enabled in (False, "false", "False"):
        out = RegisterTimePointsd("image", enabled=enabled)(data)
        assert out is data
        assert out["image"] is image
        assert torch.equal(out["image"], image.clone())
    with pytest.raises(ValueError, match="enabled"):
        RegisterTimePointsd("image", enabled="maybe")
    with pytest.raises(ValueError, match="EulerTransform"):
        RegisterTimePointsd("image", parameters={"Transform": "AffineTransform"})


def test_enabled_transform_reads_spacing_from_the_affine(monkeypatch):
    seen = {}

    def spy(image, spacing, **kwargs):
        seen["spacing"], seen["kwargs"] = tuple(spacing), kwargs
        return np.asarray(image, dtype=np.float32) + 1, []

    monkeypatch.setattr(reg, "register_time_points", spy)
    # axes permuted and flipped: x along -y (0.5 mm), y along z (0.7 mm), z along x (2 mm)
    affine = torch.tensor([[0, 0, 2.0, 10], [-0.5, 0, 0, 20], [0, 0.7, 0, -30], [0, 0, 0, 1]], dtype=torch.float64)
    image = MetaTensor(torch.zeros(3, 4, 5, 6, dtype=torch.int16), affine=affine, meta={"filename_or_obj": "a.nii"})
    t = RegisterTimePointsd("image", enabled="true", fixed_index=1, number_of_threads=2, mask_threshold=-200)
    out = t({"image": image})["image"]
    assert np.allclose(seen["spacing"], (0.5, 0.7, 2.0))
    assert seen["kwargs"]["fixed_index"] == 1
    assert seen["kwargs"]["number_of_threads"] == 2
    assert seen["kwargs"]["mask_threshold"] == -200
    assert isinstance(out, MetaTensor)
    assert out.dtype == torch.float32  # integer input becomes float32
    assert torch.equal(out.as_tensor(), torch.ones(3, 4, 5, 6))
    assert torch.equal(out.affine, affine)
    assert out.meta["filename_or_obj"] == "a.nii"


def test_enabled_transform_registers_a_metatensor():
    spacing = (4.0, 4.0, 4.0)
    motions = {1: ((0.0, 0.0, 3 * DEG), (3.0, -2.0, 2.0))}
    clean, moved, _, _ = make_ctp((24, 24, 24), spacing, motions, n_frames=2, seed=3)
    affine = torch.tensor([[4.0, 0, 0, -50], [0, 4.0, 0, -40], [0, 0, 4.0, 7], [0, 0, 0, 1]], dtype=torch.float64)
    image = MetaTensor(torch.from_numpy(moved), affine=affine, meta={"filename_or_obj": "case.nii.gz"})
    out = RegisterTimePointsd("image", number_of_threads=1)({"image": image})["image"]
    assert isinstance(out, MetaTensor)
    assert out.shape == image.shape and out.dtype == torch.float32
    assert torch.equal(out.affine, affine)
    assert out.meta["filename_or_obj"] == "case.nii.gz"
    assert torch.equal(out[0], image[0])
    inner = (clean[0] > -200) & (clean[0] < 500)
    before = np.abs(moved[1] - clean[1])[inner].mean()
    after = np.abs(out[1].numpy() - clean[1])[inner].mean()
    assert after < 0.15 * before, (before, after)  # measured: 6 HU of 100


# --- the command line ---


def _write_ctp(path, dtype, slope=1.0, inter=0.0):
    spacing = (4.0, 4.0, 4.0)
    motions = {1: ((0.0, 2 * DEG, 0.0), (-3.0, 2.0, 2.0))}
    clean, moved, _, _ = make_ctp((24, 24, 24), spacing, motions, n_frames=3, seed=5)
    affine = np.array([[-4.0, 0, 0, 40], [0, 4.0, 0, -50], [0, 0, 4.0, 10], [0, 0, 0, 1]])
    data = np.moveaxis(moved, 0, -1)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        data = np.clip(np.rint((data - inter) / slope), info.min, info.max).astype(dtype)
    img = nib.Nifti1Image(data.astype(dtype), affine)
    img.header.set_zooms((4.0, 4.0, 4.0, 1.5))
    img.header.set_slope_inter(slope, inter)
    nib.save(img, path)
    return clean, nib.load(path)


@pytest.mark.parametrize(
    ("dtype", "slope", "inter"), [(np.int16, 1.0, 0.0), (np.uint16, 1.0, -1024.0), (np.float32, 1, 0)]
)
def test_cli_round_trip(tmp_path, capsys, dtype, slope, inter):
    clean, original = _write_ctp(tmp_path / "in.nii.gz", dtype, slope, inter)
    out_path = tmp_path / "out.nii.gz"
    assert main([str(tmp_path / "in.nii.gz"), str(out_path), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert len([line for line in printed.splitlines() if line.strip()[:1].isdigit()]) == 3  # one row per frame
    result = nib.load(out_path)
    assert result.shape == original.shape == (24, 24, 24, 3)
    assert result.get_data_dtype() == np.dtype(dtype)
    assert np.array_equal(result.affine, original.affine)
    assert result.header.get_zooms() == original.header.get_zooms()
    assert np.allclose([result.dataobj.slope, result.dataobj.inter], [slope, inter])
    before = original.get_fdata()
    after = result.get_fdata()
    assert np.array_equal(after[..., 0], before[..., 0])  # the reference frame is written back unchanged
    if np.issubdtype(dtype, np.integer):
        assert np.array_equal(np.asarray(result.dataobj), np.rint(np.asarray(result.dataobj)))
    inner = (clean[0] > -200) & (clean[0] < 500)
    assert np.abs(after[..., 1] - clean[1])[inner].mean() < 0.15 * np.abs(before[..., 1] - clean[1])[inner].mean()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii.gz", "out.nii.gz"]  # no temporary file left


def test_cli_refuses_to_overwrite(tmp_path):
    _, _ = _write_ctp(tmp_path / "in.nii.gz", np.int16)
    out_path = tmp_path / "out.nii.gz"
    out_path.write_bytes(b"keep me")
    # as a script (checked before anything is registered, so this is quick)
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "register_ctp.py"), str(tmp_path / "in.nii.gz"), str(out_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 2
    assert "--overwrite" in run.stderr
    assert out_path.read_bytes() == b"keep me"
    with pytest.raises(FileExistsError, match="overwrite"):
        register_nifti(tmp_path / "in.nii.gz", out_path)
    assert out_path.read_bytes() == b"keep me"
    register_nifti(tmp_path / "in.nii.gz", out_path, overwrite=True, number_of_threads=1)
    assert nib.load(out_path).shape == (24, 24, 24, 3)


def test_cli_rejects_a_3d_input(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), tmp_path / "in.nii.gz")
    with pytest.raises(ValueError, match=r"\(X, Y, Z, T\)"):
        register_nifti(tmp_path / "in.nii.gz", tmp_path / "out.nii.gz")
    assert not (tmp_path / "out.nii.gz").exists()
