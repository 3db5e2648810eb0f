"""common.handlers.random_state: every generator a training run draws from is found, saved and put back."""

from __future__ import annotations

import random

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, RandAffined, RandFlipd, RandGaussianNoised

from common.handlers.random_state import capture_random_state, find_random_generators, restore_random_state


def draws(root=None) -> list:
    """One draw from each global generator and from each generator reachable from root."""
    values = [random.random(), float(np.random.rand()), float(torch.rand(()))]  # noqa: NPY002
    for generator in (find_random_generators(root) if root is not None else {}).values():
        if isinstance(generator, torch.Generator):
            values.append(float(torch.rand((), generator=generator)))
        else:
            values.append(float(generator.rand()))
    return values


def pipeline(num_workers: int = 0) -> DataLoader:
    transform = Compose(
        [
            RandGaussianNoised(keys="image", prob=1.0),
            RandAffined(keys="image", prob=1.0, rotate_range=0.3),
            RandFlipd(keys="image", prob=0.5),
        ]
    )
    data = [{"image": torch.zeros(1, 4, 4)} for _ in range(5)]
    return DataLoader(
        Dataset(data, transform), batch_size=2, shuffle=True, num_workers=num_workers, generator=torch.Generator()
    )


def test_finds_nested_generators_once_each():
    loader = pipeline()
    found = find_random_generators(loader)
    transforms = loader.dataset.transform.transforms
    # each transform's own R, the RandAffine inside RandAffined and its RandAffineGrid, the loader's generator
    expected = {
        id(transforms[0].R),
        id(transforms[1].R),
        id(transforms[1].rand_affine.R),
        id(transforms[1].rand_affine.rand_affine_grid.R),
        id(transforms[2].R),
        id(loader.generator),
    }
    assert expected <= {id(g) for g in found.values()}
    assert len({id(g) for g in found.values()}) == len(found)  # the sampler's generator is the loader's: once
    assert "dataset.transform.transforms.1.rand_affine.rand_affine_grid.R" in found
    assert id(torch.default_generator) not in {id(g) for g in found.values()}


def test_unseeded_transform_class_generator_is_found():
    flip = RandFlipd(keys="image", prob=0.5)  # never seeded: uses the R every Randomizable shares
    assert "R" not in vars(flip)
    assert find_random_generators([flip]) == {"0.R": flip.R}


def test_round_trip_through_weights_only_load(tmp_path):
    loader = pipeline()
    draws(loader)  # move every generator away from its seed
    state = capture_random_state(loader)
    torch.save(state, tmp_path / "state.pt")
    expected = draws(loader)
    draws(loader)
    loaded = torch.load(tmp_path / "state.pt", map_location="cpu", weights_only=True)
    assert restore_random_state(loaded, loader) == []
    assert draws(loader) == expected


def test_restore_puts_back_the_batches_of_a_data_loader():
    loader = pipeline()
    state = capture_random_state(loader)
    first = [b["image"].clone() for b in loader]
    second = [b["image"].clone() for b in loader]
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))  # a new shuffle and new noise
    restore_random_state(state, loader)
    again = [b["image"] for b in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_restore_names_what_it_could_not_restore():
    loader = pipeline()
    state = capture_random_state(loader)
    other = Compose([RandFlipd(keys="image", prob=0.5)])
    missed = restore_random_state(state, other)
    assert "transforms.0.R" in missed  # in the new pipeline, not in the state
    assert "dataset.transform.transforms.1.rand_affine.rand_affine_grid.R" in missed  # the reverse
    assert restore_random_state(capture_random_state()) == []  # globals only
