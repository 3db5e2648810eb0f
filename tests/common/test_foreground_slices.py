"""common.transforms.foreground: the paper's z-crop of empty space, done by MONAI's CropForegroundd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import CropForegroundd, Invertd

from common.transforms.foreground import slices_with_signal


def test_keeps_whole_slices_with_signal_along_z_only():
    image = torch.zeros(1, 6, 5, 10)
    image[0, 2, 3, 4] = 100.0  # a hand in slices 4-6 only, anywhere in-plane
    image[0, 1, 1, 6] = 20.0
    image[0, 0, 0, 8] = 5.0  # noise: below 10 % of the maximum
    mask = slices_with_signal(0.1, axis=2)(image)
    assert mask.shape == image.shape and mask.dtype == torch.bool
    assert mask[0, :, :, 4].all() and mask[0, :, :, 6].all()
    assert not mask[0, :, :, 5].any() and not mask[0, :, :, 8].any()
    with pytest.raises(ValueError, match="fraction"):
        slices_with_signal(1.5)


def test_crop_foreground_crops_z_to_a_multiple_of_8_and_inverts_onto_the_input():
    image = torch.zeros(1, 16, 16, 40)
    image[0, 3:12, 2:14, 13:25] = 1.0  # 12 slices of hand: 13..24
    label = (image > 0).to(torch.uint8)
    data = {"image": MetaTensor(image), "label": MetaTensor(label)}
    crop = CropForegroundd(keys=["image", "label"], source_key="image", select_fn=slices_with_signal(0.1),
                           margin=[0, 0, 2], k_divisible=8, allow_smaller=True)  # fmt: skip
    out = crop(data)
    # in-plane untouched (16 x 16, already divisible by 8); z: 12 + 2 x 2 margin = 16 slices, already a multiple
    assert tuple(out["image"].shape) == (1, 16, 16, 16)
    assert out["image"].sum() == image.sum()
    # the crop is recorded: a prediction on the cropped grid goes back onto the input's 40 slices
    out["pred"] = out["label"].clone()
    restored = Invertd(keys="pred", transform=crop, orig_keys="label")(out)["pred"]
    assert tuple(restored.shape) == (1, 16, 16, 40)
    np.testing.assert_array_equal(np.asarray(restored), np.asarray(label))
