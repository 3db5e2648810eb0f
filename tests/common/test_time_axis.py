"""Time points as channels for 3D resampling, then as a fourth spatial axis, and back onto the input's grid."""

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    Invertd,
    LoadImaged,
    Orientationd,
    RandSpatialCropd,
    SaveImaged,
    Spacingd,
)

from common.transforms.time_axis import TimeAsSpatialAxisd


@pytest.fixture
def sequence(tmp_path):
    """A 4D NIfTI (X, Y, Z, T) = (10, 11, 6, 5) with an oblique, anisotropic, flipped affine."""
    values = np.arange(10 * 11 * 6 * 5, dtype=np.int16).reshape(10, 11, 6, 5)
    affine = np.array([[0.0, -2.0, 0.0, 10.0], [1.5, 0.0, 0.0, -5.0], [0.0, 0.0, 2.5, 3.0], [0.0, 0.0, 0.0, 1.0]])
    path = tmp_path / "seq.nii.gz"
    nib.save(nib.Nifti1Image(values, affine), path)
    return path, values, affine


def test_moves_time_to_the_last_spatial_axis_and_back():
    image = MetaTensor(torch.arange(5 * 2 * 3 * 4).reshape(5, 2, 3, 4), affine=torch.diag(torch.tensor([2.0, 3, 4, 1])))
    transform = TimeAsSpatialAxisd("image")
    out = transform({"image": image})["image"]
    assert out.shape == (1, 2, 3, 4, 5)
    for t in range(5):
        assert torch.equal(out[0, ..., t], image[t])
    assert torch.equal(out.affine, image.affine)  # the frames' 3D geometry
    back = transform.inverse({"image": out})["image"]
    assert back.shape == (5, 2, 3, 4) and torch.equal(back.as_tensor(), image.as_tensor())
    assert len(back.applied_operations) == 0


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"expected \[T, X, Y, Z\]"):
        TimeAsSpatialAxisd("image")({"image": torch.zeros(1, 2, 3, 4, 5)})
    transform = TimeAsSpatialAxisd("image")
    out = transform({"image": MetaTensor(torch.zeros(5, 2, 3, 4))})["image"]
    with pytest.raises(ValueError, match=r"expected \[1, X, Y, Z, T\]"):
        transform.inverse({"image": torch.cat([out, out])})


def test_4d_crop_moves_the_3d_origin_only():
    image = MetaTensor(torch.zeros(6, 8, 8, 8), affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])))
    out = TimeAsSpatialAxisd("image")({"image": image})
    crop = RandSpatialCropd("image", roi_size=(4, 4, 4, 3), random_size=False)
    crop.set_random_state(0)
    cropped = crop(out)["image"]
    assert cropped.shape == (1, 4, 4, 4, 3) and cropped.affine.shape == (4, 4)
    assert torch.equal(cropped.affine[:3, :3], image.affine[:3, :3])


def test_resampled_sequence_is_written_back_on_the_input_grid(sequence, tmp_path):
    """Load a 4D NIfTI, resample its frames to 1 mm RAS, make time spatial, then invert a prediction and write it:
    same shape and affine as the input, and (for an identity 'prediction' of the nearest-resampled input) the same
    values."""
    path, values, affine = sequence
    keys = ["image"]
    pre = Compose(
        [
            LoadImaged(keys, image_only=True),
            EnsureChannelFirstd(keys),
            Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            Spacingd(keys, pixdim=(1.0, 1.0, 1.0), mode="nearest"),
            TimeAsSpatialAxisd(keys),
        ]
    )
    d = pre({"image": str(path)})
    assert d["image"].shape[0] == 1 and d["image"].shape[-1] == 5
    # every frame is resampled alike: frame t of the 4D array is frame t of the input, resampled
    assert torch.equal(d["image"][0, ..., 3] - d["image"][0, ..., 2], torch.ones_like(d["image"][0, ..., 3]))
    d["pred"] = MetaTensor(d["image"].as_tensor().clone(), meta=d["image"].meta)
    d["pred"].applied_operations = list(d["image"].applied_operations)
    out = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True)(d)
    assert out["pred"].shape == (5, 10, 11, 6)
    SaveImaged("pred", output_dir=tmp_path, output_postfix="seg", separate_folder=False, resample=False)(out)
    written = nib.load(tmp_path / "seq_seg.nii.gz")
    assert written.shape == values.shape
    np.testing.assert_allclose(written.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(written.dataobj), values)
