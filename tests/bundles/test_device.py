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
