"""BUNDLE_CONTRACT.md checks, run for every folder under bundles/ (a new bundle is covered the day it lands)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, verify_net_in_out

from tests.conftest import ROOT, SCHEMA_DIR

REQUIRED_FILES = [
    "LICENSE",
    "configs/metadata.json",
    "configs/train.json",
    "configs/evaluate.json",
    "configs/inference.json",
    "configs/multi_gpu_train.json",
    "configs/logging.conf",
    "configs/demo.json",
    "docs/README.md",
]
TOP_LEVEL_IDS = ["imports", "bundle_root", "device", "dataset_dir", "output_dir", "ckpt_dir", "network_def", "network"]
TRAIN_IDS = ["loss", "optimizer"]
SECTION_IDS = ["preprocessing", "dataset", "dataloader", "inferer", "postprocessing", "key_metric", "handlers"]
INFER_IDS = ["dataset", "evaluator", "network_def", "inferer", "preprocessing", "postprocessing", "handlers"]
# values train.json and inference.json must share (STYLE.md): pinned equal here
SHARED_IDS = ["network_def", "num_classes", "pixdim", "hu_window", "sw_roi_size", "sw_overlap", "network_divisor"]


def load(bundle: Path, name: str) -> dict:
    return json.loads((bundle / "configs" / name).read_text(encoding="utf-8"))


def requirements() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_layout(bundle):
    missing = [f for f in REQUIRED_FILES if not (bundle / f).is_file()]
    assert not missing, f"{bundle}: missing {missing}"
    assert "Apache License" in (bundle / "LICENSE").read_text(encoding="utf-8")
    assert re.fullmatch(r"[a-z0-9_]+_segmentation", bundle.name)
    assert list((bundle / "configs" / "variants").glob("*.json")), "the paper's variants live in configs/variants/"


def test_metadata_valid_against_zoo_schema(bundle):
    jsonschema = pytest.importorskip("jsonschema")
    schema_file = SCHEMA_DIR / "meta_schema_20240725.json"
    if not schema_file.is_file():
        pytest.skip(f"{schema_file} is absent (the shared/ folder is not beside this checkout)")
    meta = load(bundle, "metadata.json")
    jsonschema.validate(meta, json.loads(schema_file.read_text(encoding="utf-8")))
    assert meta["schema"].endswith("meta_schema_20240725.json")


def test_metadata_versions_match_requirements(bundle):
    meta, pins = load(bundle, "metadata.json"), requirements()
    assert meta["monai_version"] == pins["monai"]
    assert meta["pytorch_version"] == pins["torch"]
    assert meta["numpy_version"] == pins["numpy"]
    for name, version in meta["required_packages_version"].items():
        assert pins.get(name.lower()) == version, f"{name}: metadata {version} vs requirements {pins.get(name.lower())}"
    assert meta["version"] in meta["changelog"]


def test_channel_def_names_every_label(bundle):
    meta, train = load(bundle, "metadata.json"), load(bundle, "train.json")
    out = meta["network_data_format"]["outputs"]["pred"]
    assert out["num_channels"] == train["num_classes"]
    assert sorted(int(k) for k in out["channel_def"]) == list(range(train["num_classes"]))
    # the class names used in evaluation are the channel_def names (background excluded)
    assert {k: v for k, v in out["channel_def"].items() if k != "0"} == train["class_names"]
    assert "image" in meta["network_data_format"]["inputs"]


def test_config_ids(bundle):
    train, infer = load(bundle, "train.json"), load(bundle, "inference.json")
    for key in TOP_LEVEL_IDS + TRAIN_IDS:
        assert key in train, f"train.json lacks {key}"
    for section in ("train", "validate"):
        for key in SECTION_IDS:
            assert key in train[section], f"train.json lacks {section}#{key}"
    assert "max_epochs" in train["train"]["trainer"] and "evaluator" in train["validate"]
    assert "trainer" in train["train"]
    val_handlers = [h for h in train["train"]["handlers"] if h.get("_target_") == "ValidationHandler"]
    assert len(val_handlers) == 1 and val_handlers[0]["interval"] == "@val_interval"
    for key in INFER_IDS + ["imports", "bundle_root", "device", "dataset_dir", "output_dir", "ckpt_dir"]:
        assert key in infer, f"inference.json lacks {key}"
    for cfg in (train, infer):
        for key in ("initialize", "run"):
            assert key in cfg


def test_train_and_inference_share_values(bundle):
    train, infer = load(bundle, "train.json"), load(bundle, "inference.json")
    for key in SHARED_IDS:
        if key in train or key in infer:
            assert train.get(key) == infer.get(key), f"{key} differs between train.json and inference.json"


def test_no_absolute_paths_and_custom_targets_in_common(bundle):
    for cfg_file in (bundle / "configs").rglob("*.json"):
        text = cfg_file.read_text(encoding="utf-8")
        assert not re.search(r'"(/|[A-Za-z]:\\)[^"]*"', text), f"{cfg_file}: absolute path"
        for target in re.findall(r'"_target_":\s*"([^"]+)"', text):
            if "." in target and not target.startswith(("torch.", "monai.", "ignite.")):
                assert target.startswith("common."), f"{cfg_file}: custom component {target} not in common/"


# every demo.json makes its phantom data set from these ids; the contract checks shrink it to a few cases
SMALL_PHANTOM = {"phantom_n_train": 2, "phantom_n_validation": 1, "phantom_n_test": 1}


@pytest.mark.parametrize("workflow_type, config", [("train", "train.json"), ("infer", "inference.json")])
def test_check_properties(bundle, workflow_type, config, tmp_path):
    """The zoo's property check; it instantiates the datasets, so it runs on a small phantom data set."""
    configs = [str(bundle / "configs" / c) for c in (config, "demo.json")]
    # inference.json's initialize insists on a trained model: give it untrained weights of the demo network
    parser = ConfigParser()
    parser.read_config(configs)
    (tmp_path / "models").mkdir()
    torch.save(parser.get_parsed_content("network_def").state_dict(), tmp_path / "models" / "model.pt")
    wf = ConfigWorkflow(
        config_file=configs,
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        workflow_type=workflow_type,
        dataset_dir=str(tmp_path / "data"),
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "eval"),
        **SMALL_PHANTOM,
    )
    wf.initialize()
    assert wf.check_properties() == []


@pytest.mark.parametrize("overlay", ["evaluate.json", "multi_gpu_train.json", "demo.json"])
def test_overlays_merge_and_build_network(bundle, overlay):
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "train.json"), str(bundle / "configs" / overlay)])
    assert isinstance(parser.get_parsed_content("network_def"), torch.nn.Module)
    assert "run" in parser


def test_variants_merge_and_build(bundle):
    for variant in sorted((bundle / "configs" / "variants").glob("*.json")):
        parser = ConfigParser()
        parser.read_config([str(bundle / "configs" / "train.json"), str(variant)])
        assert isinstance(parser.get_parsed_content("network_def"), torch.nn.Module), variant
        parser.get_parsed_content("loss")


def test_demo_overlay_applies_to_inference(bundle):
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "inference.json"), str(bundle / "configs" / "demo.json")])
    assert isinstance(parser.get_parsed_content("network_def"), torch.nn.Module)


def test_model_card_sections(bundle):
    card = (bundle / "docs" / "README.md").read_text(encoding="utf-8").lower()
    for word in ("torchrun", "inference.json", "evaluate.json", "variants", "phantom", "limit", "datalist"):
        assert word in card, f"model card lacks {word!r}"


def test_verify_net_in_out(bundle):
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
        n=2,
        device="cpu",
    )


def test_torchscript_export(bundle, tmp_path):
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    net = parser.get_parsed_content("network_def").eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    ckpt_export(
        net_id="network_def",
        filepath=str(tmp_path / "model.ts"),
        ckpt_file=str(tmp_path / "model.pt"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
    )
    scripted = torch.jit.load(str(tmp_path / "model.ts"))
    meta = load(bundle, "metadata.json")["network_data_format"]["inputs"]["image"]
    x = torch.rand(1, meta["num_channels"], *([16] * len(meta["spatial_shape"])))
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-5)
