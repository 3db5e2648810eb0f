"""common.handlers.report_base.meta_name / case_name: the one way every report names its cases."""

from __future__ import annotations

import torch
from monai.data import MetaTensor

from common.handlers.report_base import case_name, meta_name


def test_first_meta_with_a_name_wins_and_a_one_item_list_is_unwrapped():
    assert meta_name([None, {}, {"filename_or_obj": ["/d/b.nii.gz"]}, {"filename_or_obj": "c"}], 7) == "/d/b.nii.gz"
    assert meta_name([{"filename_or_obj": ""}, {"filename_or_obj": "c"}], 7) == "c"
    assert meta_name([{"filename_or_obj": ["a", "b"]}], 7) == "['a', 'b']"  # two cases: not one name
    assert meta_name([None, {"spacing": 1}], 12) == "case_0012"
    assert meta_name([], 3) == "case_0003"


def test_case_name_reads_the_image_then_its_meta_dict():
    image = MetaTensor(torch.zeros(1, 2, 2), meta={"filename_or_obj": "/d/img.nii.gz"})
    assert case_name({"image": image}, "image", 0) == "/d/img.nii.gz"
    plain = {"image": torch.zeros(1, 2, 2), "image_meta_dict": {"filename_or_obj": ["/d/x.nii"]}}
    assert case_name(plain, "image", 0) == "/d/x.nii"
    unnamed = {"image": MetaTensor(torch.zeros(1, 2, 2), meta={"spacing": 1}), "image_meta_dict": {}}
    assert case_name(unnamed, "image", 5) == "case_0005"
    assert case_name(torch.zeros(2), "image", 42) == "case_0042"  # not a dict: no name
