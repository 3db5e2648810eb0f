"""scripts/bundle_benchmark.py (issue 14): the counts and estimates it reports, checked against hand computations."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bundle_benchmark  # noqa: E402


def test_multiply_adds_of_a_convolution_counted_by_hand():
    conv = torch.nn.Conv3d(2, 5, kernel_size=3, padding=1)
    x = torch.zeros(1, 2, 6, 7, 8)
    assert bundle_benchmark.count_macs(conv, x) == 2 * 5 * 27 * 6 * 7 * 8  # every output voxel: C_in x 3^3 per C_out


@pytest.mark.parametrize("n_params", [400_000, 5_000_000])
def test_reference_unet_has_about_the_asked_parameter_count(n_params):
    net = bundle_benchmark.reference_unet(3, 1, 5, n_params)
    assert abs(sum(p.numel() for p in net.parameters()) / n_params - 1) < 0.05


def test_every_bundle_has_paper_and_quick_sizes_with_its_channel_count():
    from monai.bundle import ConfigParser

    names = bundle_benchmark.bundle_names("all")
    assert names == sorted(bundle_benchmark.PAPER) == sorted(bundle_benchmark.QUICK) and len(names) == 6
    for name in names:
        parser = ConfigParser()
        parser.read_config(str(ROOT / "bundles" / name / "configs" / "train.json"))
        channels = parser.get_parsed_content("num_channels")
        for table in (bundle_benchmark.PAPER, bundle_benchmark.QUICK):
            assert table[name]["train_input"][1] == channels and table[name]["volume"][0] == channels, name
    with pytest.raises(ValueError, match="one of"):
        bundle_benchmark.bundle_names("no_such_bundle")


def test_quick_parts():
    assert bundle_benchmark.quick_parts(True) == {"network", "inference"}
    assert bundle_benchmark.quick_parts(False) == set()
    assert bundle_benchmark.quick_parts("inference") == {"inference"}
    assert bundle_benchmark.quick_parts(("network", "inference")) == {"network", "inference"}
    with pytest.raises(ValueError, match="quick"):
        bundle_benchmark.quick_parts("train")


def test_gpu_memory_estimate_adds_weights_moments_batch_and_context():
    net = {"peak_bytes": 2**30, "params": 1_000_000, "input": [1, 4, 8, 8, 8]}
    assert bundle_benchmark.gpu_memory_estimate(net) == 2**30 + 12_000_000 + 4 * 4 * 512 + 2**30


def inference_spec(bundle: str, volume: list[int], features: int) -> str:
    """The inference worker's arguments: the bundle's inferer with a narrow network (``features`` doubling)."""
    narrow = [features * 2**i for i in range(4)]
    spec = {"bundle": bundle, "device": "cpu", "threads": 1, "amp": False, "repeats": 1, "volume": volume}
    return json.dumps({**spec, "overrides": {"network_def#features": narrow}})


def test_inference_worker_records_the_sliding_windows(capsys):
    """The abdominal inferer (whole xy, 64 along z, overlap 0.5) on 64 x 64 x 96 needs 2 windows, on 192 five."""
    bundle_benchmark.inference_worker(inference_spec("abdominal_ct_multiorgan_segmentation", [1, 64, 64, 96], 4))
    runs = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["runs"]
    assert [r["calls"] for r in runs] == [2, 5]
    assert [r["windows"] for r in runs] == [{"1x1x64x64x64": 2}, {"1x1x64x64x64": 5}]
    assert runs[1]["shape"] == [1, 1, 64, 64, 192] and runs[0]["input_voxels"] == 2 * 64**3
    assert all(r["seconds"] > 0 and r["compute"] > 0 for r in runs)


def test_valid_tiling_reports_the_ideal_input(capsys):
    """The CTP inferer pads by 88 voxels: the ideal input of a 40^3 volume is 128^3, processed in one window."""
    bundle_benchmark.inference_worker(inference_spec("brain_ctp_tissue_segmentation", [19, 40, 40, 20], 2))
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["ideal_input_voxels"] == [128 * 128 * 108, 128 * 128 * 128]
    one = result["runs"][0]
    assert one["input_voxels"] >= result["ideal_input_voxels"][0]
    assert math.prod(one["shape"][2:]) == 40 * 40 * 20


@pytest.mark.slow
def test_train_worker_times_the_real_trainer_and_the_bare_step(capsys, tmp_path):
    spec = {
        "bundle": "hand_mri_bone_segmentation",
        "device": "cpu",
        "threads": 1,
        "warmup": 1,
        "iterations": 3,
        "data_dir": str(tmp_path / "data"),
        "work_dir": str(tmp_path / "work"),
        "overrides": {"num_workers": 0, "phantom_n_train": 4, "phantom_n_validation": 1, "phantom_n_test": 1},
    }
    bundle_benchmark.train_worker(json.dumps(spec))
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(result["iteration"]) == len(result["bare_step"]) == len(result["data_wait"]) == 3
    assert result["batch"] == [1, 1, 48, 48, 32] and result["epoch_length"] == result["loader_length"] == 4
    assert all(0 < b < 10 * i for b, i in zip(result["bare_step"], result["iteration"], strict=True))
