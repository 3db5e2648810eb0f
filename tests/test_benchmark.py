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


def run_hand_train_worker(capsys, tmp_path, iterations: int, **spec) -> dict:
    """The train worker on the hand bundle's demo phantom (4 training cases), one thread, one warm-up iteration."""
    spec = {
        "bundle": "hand_mri_bone_segmentation",
        "device": "cpu",
        "threads": 1,
        "warmup": 1,
        "iterations": iterations,
        "data_dir": str(tmp_path / "data"),
        "work_dir": str(tmp_path / "work"),
        **spec,
    }
    spec["overrides"] = {
        "phantom_n_train": 4,
        "phantom_n_validation": 1,
        "phantom_n_test": 1,
        **spec.get("overrides", {}),
    }
    bundle_benchmark.train_worker(json.dumps(spec))
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow
def test_train_worker_times_the_real_trainer_and_the_bare_step(capsys, tmp_path):
    result = run_hand_train_worker(capsys, tmp_path, 3, overrides={"num_workers": 0})
    assert len(result["iteration"]) == len(result["bare_step"]) == len(result["data_wait"]) == 3
    assert result["batch"] == [1, 1, 48, 48, 32] and result["epoch_length"] == result["loader_length"] == 4
    assert all(0 < b < 10 * i for b, i in zip(result["bare_step"], result["iteration"], strict=True))


def test_train_configs():
    assert bundle_benchmark.train_configs("paper,demo") == ["paper", "demo"]
    assert bundle_benchmark.train_configs(("demo", "paper")) == ["paper", "demo"]
    assert bundle_benchmark.train_configs("demo") == ["demo"]
    for bad in ("", "paper,fast"):
        with pytest.raises(ValueError, match="--train"):
            bundle_benchmark.train_configs(bad)


@pytest.mark.parametrize("name", sorted(bundle_benchmark.PAPER))
def test_paper_training_loop_has_the_papers_network_batch_and_loader(name, tmp_path):
    """The paper overlay drops exactly demo.json's shrinking keys: train.json's network and loader come back."""
    from monai.bundle import ConfigParser

    configs = ROOT / "bundles" / name / "configs"
    demo = json.loads((configs / "demo.json").read_text())
    drop = bundle_benchmark.PAPER_TRAIN[name]["drop"]
    assert set(drop) <= set(demo), f"{name}: PAPER_TRAIN drops keys demo.json does not have"
    train_input = bundle_benchmark.PAPER[name]["train_input"]
    overlay, overrides = bundle_benchmark.paper_train_overlay(name, train_input, tmp_path)
    assert not set(drop) & set(json.loads(Path(overlay).read_text()))

    def parsed(files, extra=None):
        parser = ConfigParser()
        parser.read_config([str(f) for f in files])
        parser["bundle_root"] = str(ROOT / "bundles" / name)
        for key, value in (extra or {}).items():
            parser[key] = value
        return parser

    paper = parsed([configs / "train.json", overlay], overrides)
    train = parsed([configs / "train.json"])
    assert paper["network_def"] == train["network_def"]
    assert paper.get_parsed_content("batch_size") == train_input[0] == train.get_parsed_content("batch_size")
    assert paper.get_parsed_content("num_workers") == train.get_parsed_content("num_workers") == 2
    assert paper["dataset_dir"] == demo["dataset_dir"]  # the demo's phantom data
    size = train_input[2:]
    if "patch_size" in overrides:  # a patch of the paper's size, as train.json has it
        assert overrides["patch_size"] == size == train.get_parsed_content("patch_size")
    elif "roi_size" in overrides:
        assert overrides["roi_size"] == size == train.get_parsed_content("roi_size")
    elif "phantom_shape" in overrides:  # whole volumes: the phantom has the paper's size
        assert overrides["phantom_shape"] == size
    else:
        assert f"shape={[*size, 40]}" in overrides["phantom_datalist"]


@pytest.mark.slow
def test_train_worker_runs_the_papers_network(capsys, tmp_path):
    """hand: the paper configuration trains the 0.41M-parameter network with train.json's two loader workers."""
    result = run_hand_train_worker(capsys, tmp_path, 2, config="paper", train_input=[1, 1, 40, 40, 24])
    assert result["batch"] == [1, 1, 40, 40, 24] and result["num_workers"] == 2
    assert result["params"] == 409_424 and len(result["iteration"]) == 2


def test_render_judges_the_paper_loop_and_reports_the_demo_loop():
    """Overheads are iteration / bare step (medians); the 1.15 target is judged on the paper's configuration."""

    def loop(iteration, bare, params):
        return {
            "iteration": iteration,
            "bare_step": bare,
            "data_wait": [0.01] * len(iteration),
            "batch": [2, 1, 8, 8, 8],
            "epoch_length": 4,
            "loader_length": 4,
            "num_workers": 2,
            "params": params,
        }

    net = {"params": 1_000_000, "macs": 2e9, "forward": [1.0], "forward_backward": [4.0], "input": [2, 1, 8, 8, 8]}
    run = {"shape": [1, 1, 8, 8, 8], "windows": {"1x1x8x8x8": 1}, "seconds": 1.1, "compute": 1.0}
    results = {
        "x": {
            "network": {**net, "peak_bytes": 2**30},
            "reference": {**net, "forward": [2.0], "forward_backward": [6.0], "peak_bytes": 2**30},
            "train": {
                "paper": loop([11.0, 10.5, 12.0], [10.0, 10.0, 10.0], 1_000_000),  # median 11.0 / 10.0
                "demo": loop([1.3, 1.2, 1.4], [1.0, 1.0, 1.0], 60_000),  # median 1.3 / 1.0
            },
            "inference": {"runs": [run, {**run, "seconds": 2.2, "compute": 2.0}]},
        }
    }
    text = bundle_benchmark.render(results, "test machine", {"network"})
    assert "training-loop overhead (paper configuration) 1.10 (median; target <= 1.15: met)" in text
    assert "; demo configuration 1.30 / 1.30;" in text
    assert "| x | paper | 1.000M | 2 x 1 x 8 x 8 x 8 | 11.000 / 11.167 / 12.000 | 10.000 |" in text
    assert "| x | demo | 0.060M |" in text
    assert "**Network at about half the paper's training input (`--quick`)**" in text
    assert "random volume of the paper's size" in text
    assert "reference / ours, multiply-adds per second 0.50 forward, 0.67 forward+backward" in text
