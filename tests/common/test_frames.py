"""RandAnnotatedFramed: one annotated 3D frame of a sparsely annotated 4D sequence (3D baseline, section 4)."""

import pytest
import torch
from monai.data import CacheDataset, MetaTensor
from monai.transforms import Compose, Lambdad

from common.transforms.frames import RandAnnotatedFramed, annotated_frames

SHAPE = (1, 4, 5, 3, 7)  # [C, X, Y, Z, T]
ANNOTATED = (2, 5)


def _sample(filename="case_007.nii.gz"):
    affine = torch.tensor([[0.0, -2.0, 0.0, 10.0], [1.5, 0.0, 0.0, -5.0], [0.0, 0.0, 2.5, 3.0], [0.0, 0.0, 0.0, 1.0]])
    image = MetaTensor(torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)), affine=affine)
    image.meta["filename_or_obj"] = filename
    label = torch.full(SHAPE, 255, dtype=torch.uint8)
    for t in ANNOTATED:
        label[..., t] = torch.randint(0, 3, SHAPE[:-1], generator=torch.Generator().manual_seed(t), dtype=torch.uint8)
    label[0, 0, 0, 0, 3] = 1  # a frame with one labelled voxel is still unannotated (the others are 255)
    label = MetaTensor(label, affine=affine)
    label.meta["filename_or_obj"] = filename.replace("case", "label")
    return {"image": image, "label": label, "other": "kept"}


def test_annotated_frames():
    assert annotated_frames(_sample()["label"]) == list(ANNOTATED)
    assert annotated_frames(torch.zeros(1, 2, 2, 2, 3)) == [0, 1, 2]
    assert annotated_frames(torch.full((1, 2, 2, 2, 3), 9), ignore_value=9) == []


def test_only_annotated_frames_are_drawn_and_both_occur():
    data = _sample()
    transform = RandAnnotatedFramed(["image", "label"])
    chosen = []
    for seed in range(40):
        transform.set_random_state(seed)
        out = transform(data)
        t = out["frame_index"]
        assert isinstance(t, int)
        chosen.append(t)
        assert out["image"].shape == SHAPE[:-1] and out["label"].shape == SHAPE[:-1]
        assert torch.equal(out["image"].as_tensor(), data["image"][..., t].as_tensor())
        assert torch.equal(out["label"].as_tensor(), data["label"][..., t].as_tensor())
        assert not (out["label"] == 255).any()
    assert set(chosen) == set(ANNOTATED)
    assert 10 <= chosen.count(2) <= 30  # uniform over the two frames


def test_metadata_and_shallow_copy():
    data = _sample()
    out = RandAnnotatedFramed(["image", "label"])(data)
    assert isinstance(out["image"], MetaTensor) and isinstance(out["label"], MetaTensor)
    assert torch.equal(out["image"].affine, data["image"].affine)
    assert out["image"].meta["filename_or_obj"] == "case_007.nii.gz"
    assert out["label"].dtype == torch.uint8
    assert out["other"] == "kept"
    assert data["image"].shape == SHAPE and "frame_index" not in data  # the input is not modified
    assert out["image"].is_contiguous()


def test_same_seed_same_frame():
    data = _sample()
    a, b = RandAnnotatedFramed(["image", "label"]), RandAnnotatedFramed(["image", "label"])
    for seed in range(10):
        a.set_random_state(seed)
        b.set_random_state(seed)
        sequence_a = [a(data)["frame_index"] for _ in range(8)]
        sequence_b = [b(data)["frame_index"] for _ in range(8)]
        assert sequence_a == sequence_b
    a.set_random_state(3)
    first = [a(data)["frame_index"] for _ in range(20)]
    a.set_random_state(3)
    assert [a(data)["frame_index"] for _ in range(20)] == first
    assert set(first) == set(ANNOTATED)  # not stuck on one frame within a run


def test_after_cache_dataset():
    data = [_sample("case_001.nii.gz"), _sample("case_002.nii.gz")]
    pipeline = Compose([Lambdad("image", lambda x: x * 2), RandAnnotatedFramed(["image", "label"])])
    pipeline.set_random_state(seed=1)
    dataset = CacheDataset(data, pipeline, num_workers=0, progress=False)
    seen = set()
    for _ in range(10):
        for i in range(len(dataset)):
            out = dataset[i]
            t = out["frame_index"]
            seen.add(t)
            assert torch.equal(out["image"].as_tensor(), 2 * data[i]["image"][..., t].as_tensor())
            assert out["image"].meta["filename_or_obj"] == f"case_00{i + 1}.nii.gz"
    assert seen == set(ANNOTATED)
    assert dataset._cache[0]["image"].shape == SHAPE  # the cached sequence is left whole


def test_no_annotated_frame_names_the_file():
    data = _sample()
    data["label"][..., 2] = 255
    data["label"][0, 1, 1, 1, 5] = 255
    with pytest.raises(ValueError, match=r"label_007\.nii\.gz: no annotated frame"):
        RandAnnotatedFramed(["image", "label"])(data)
    data["label"] = data["label"].as_tensor()  # no metadata on the label: the image's file is named
    with pytest.raises(ValueError, match=r"case_007\.nii\.gz: no annotated frame"):
        RandAnnotatedFramed(["image", "label"])(data)


def test_bad_shapes():
    data = _sample()
    with pytest.raises(ValueError, match=r"label: expected \[C, X, Y, Z, T\].*label_007"):
        RandAnnotatedFramed(["image", "label"])({"image": data["image"], "label": data["label"][..., 2]})
    with pytest.raises(ValueError, match=r"image: expected \[C, X, Y, Z, T\]"):
        RandAnnotatedFramed(["image", "label"])({"image": data["image"][..., 2], "label": data["label"]})
    with pytest.raises(ValueError, match=r"T=7"):
        RandAnnotatedFramed(["image", "label"])({"image": data["image"][..., :6], "label": data["label"]})
    with pytest.raises(KeyError, match="label"):
        RandAnnotatedFramed(["image"])({"image": data["image"]})
