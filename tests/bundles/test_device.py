"""The device can be given as a string, as MONAI Label's training and ``--device cpu`` on the command line do."""

from __future__ import annotations

import pytest
from monai.bundle import ConfigParser


@pytest.mark.parametrize("config", ["train.json", "inference.json"])
@pytest.mark.parametrize(("device", "amp"), [("cpu", False), ("cuda:0", True)])
def test_amp_follows_a_device_given_as_a_string(bundle, config, device, amp):
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / config))
    parser["device"] = device  # MONAI Label overrides the id with a plain string
    assert parser.get_parsed_content("amp") is amp


@pytest.mark.parametrize("config", ["train.json", "inference.json"])
@pytest.mark.parametrize(("device", "on_gpu"), [("cpu", False), ("cuda:0", True)])
def test_pinned_memory_non_blocking_copies_and_cudnn_benchmark_follow_the_device(bundle, config, device, on_gpu):
    """GPU readiness (issue 14): page-locked batches copied asynchronously and cuDNN's autotuner, on CUDA only."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / config))
    parser["device"] = device
    assert parser.get_parsed_content("pin_memory") is on_gpu
    assert parser.get_parsed_content("cudnn_benchmark") is on_gpu
    raw = parser.get()
    loaders = ["train#dataloader", "validate#dataloader"] if config == "train.json" else ["dataloader"]
    engines = ["train#trainer", "validate#evaluator"] if config == "train.json" else ["evaluator"]
    for key in loaders:
        assert parser[f"{key}#pin_memory"] == "@pin_memory", key
    for key in engines:
        assert parser[f"{key}#non_blocking"] == "@pin_memory", key
    cudnn = [x for x in raw["initialize"] if "cudnn" in x]
    determinism = [i for i, x in enumerate(raw["initialize"]) if "set_determinism" in x]
    assert len(cudnn) == 1 and raw["initialize"].index(cudnn[0]) == determinism[0] + 1  # set_determinism turns it off
