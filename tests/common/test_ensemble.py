"""common.inferers.ensemble (which checkpoints form the cross-validation ensemble) and channel-file subsets."""

from __future__ import annotations

import pytest
import torch

from common.data import BundleInputError, select_channel_files
from common.inferers.ensemble import ensemble_members, fold_dir, load_networks


def _save(net: torch.nn.Module, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)


def test_the_fold_models_form_the_ensemble_only_when_all_exist(tmp_path):
    models = tmp_path / "models"
    default = models / "model.pt"
    net = torch.nn.Conv3d(2, 3, 1)
    assert fold_dir(models, None) == str(models) and fold_dir(models, "None") == str(models)
    assert fold_dir(models, 2) == str(models / "fold2")
    for k in range(4):
        _save(net, models / f"fold{k}" / "model.pt")
    assert ensemble_members(default, models, 5) == [str(default)]  # fold 4 missing: no smaller ensemble
    _save(net, models / "fold4" / "model.pt")
    assert ensemble_members(default, models, 5) == [str(models / f"fold{k}" / "model.pt") for k in range(5)]
    assert ensemble_members(default, models, 5, ensemble=False) == [str(default)]
    other = tmp_path / "mine.pt"
    assert ensemble_members(other, models, 5) == [str(other)]  # a checkpoint named on the command line wins


def test_load_networks_gives_independent_copies_with_each_checkpoints_weights(tmp_path):
    arch = torch.nn.Conv3d(2, 3, 1)
    nets = []
    for k in range(2):
        torch.manual_seed(k)
        net = torch.nn.Conv3d(2, 3, 1)
        _save(net, tmp_path / f"m{k}.pt")
        nets.append(net)
    loaded = load_networks(arch, [tmp_path / "m0.pt", tmp_path / "m1.pt"], "cpu")
    assert len(loaded) == 2 and loaded[0] is not loaded[1] and loaded[0] is not arch
    for got, want in zip(loaded, nets, strict=True):
        assert torch.equal(got.weight, want.weight) and torch.equal(got.bias, want.bias)
    with pytest.raises(BundleInputError, match="missing.pt"):
        load_networks(arch, [tmp_path / "missing.pt"], "cpu")


def test_channel_file_subsets():
    entries = [{"image": ["f.nii.gz", "t1.nii.gz", "t1c.nii.gz", "t2.nii.gz"], "label": "l.nii.gz"}]
    assert select_channel_files(entries, [0, 2], 4)[0]["image"] == ["f.nii.gz", "t1c.nii.gz"]
    assert select_channel_files(entries, [0, 1, 2, 3], 4) == entries  # all channels: as it is
    four_d = [{"image": "case.nii.gz"}]
    assert select_channel_files(four_d, [0, 1, 2, 3], 4) == four_d  # a 4D file is fine with every channel
    with pytest.raises(BundleInputError, match="case.nii.gz.*not one file per channel"):
        select_channel_files(four_d, [2], 4)
    with pytest.raises(ValueError, match="indices 0..3"):
        select_channel_files(entries, [4], 4)
