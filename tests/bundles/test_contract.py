"""BUNDLE_CONTRACT.md checks, run for every folder under bundles/ (a new bundle is covered the day it lands)."""

from __future__ import annotations

import enum
import inspect
import json
import pydoc
import re
import shutil
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from monai.bundle import ConfigComponent, ConfigParser, ConfigWorkflow, ckpt_export, verify_net_in_out
from monai.transforms import DivisiblePadd
from monai.utils import ensure_tuple

from common.networks.conv4d import Conv4d
from tests.conftest import ROOT, SCHEMA_DIR, fake_spatial_shape

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
    "docs/data_license.txt",
]
TOP_LEVEL_IDS = ["imports", "bundle_root", "device", "dataset_dir", "output_dir", "ckpt_dir", "network_def", "network"]
TRAIN_IDS = ["loss", "optimizer"]
SECTION_IDS = ["preprocessing", "dataset", "dataloader", "inferer", "postprocessing", "key_metric", "handlers"]
INFER_IDS = ["dataset", "evaluator", "network_def", "inferer", "preprocessing", "postprocessing", "handlers"]
# values train.json and inference.json must share (STYLE.md): pinned equal here
SHARED_IDS = [
    "network_def",
    "num_channels",
    "num_classes",
    "pixdim",
    "hu_window",
    "sw_roi_size",
    "sw_overlap",
    "network_divisor",
]


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
    import jsonschema  # pinned in requirements.txt: a missing package must fail, not skip

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
    # a bundle trained on sparse annotations (train.json "ignore_value": 0, "not annotated") has no background
    # channel: output channel c is label value c + 1, and every voxel gets a class
    first = 1 if train.get("ignore_value") == 0 else 0
    assert sorted(int(k) for k in out["channel_def"]) == list(range(first, train["num_classes"] + first))
    # the class names used in evaluation are the channel_def names (background excluded)
    assert {k: v for k, v in out["channel_def"].items() if k != "0"} == train["class_names"]
    assert "image" in meta["network_data_format"]["inputs"]


CHANNEL_ARGS = ("in_channels", "n_channels")


def channel_count_problems(configs: Path) -> list[str]:
    """The input channel count is one id, ``num_channels``, used everywhere and equal to the metadata's.

    Every ``in_channels``/``n_channels`` argument in train.json and inference.json (components and ``n_channels=``
    inside expressions) must say ``@num_channels``, and ``num_channels`` must equal metadata.json's
    ``network_data_format.inputs.image.num_channels`` in both files.
    """
    meta = json.loads((configs / "metadata.json").read_text(encoding="utf-8"))
    expected = meta["network_data_format"]["inputs"]["image"]["num_channels"]
    problems = []

    def walk(value: Any, where: str, name: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k in CHANNEL_ARGS and v != "@num_channels":
                    problems.append(f"{name}: {where}#{k} is {v!r}, not '@num_channels'")
                walk(v, f"{where}#{k}" if where else k, name)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{where}#{i}", name)
        elif isinstance(value, str) and value.startswith("$"):
            for found in re.findall(r"\b(?:in|n)_channels\s*=\s*([^,)\s]+)", value):
                if found != "@num_channels":
                    problems.append(f"{name}: {where} passes a channel count {found!r}, not @num_channels")

    for name in ("train.json", "inference.json"):
        cfg = json.loads((configs / name).read_text(encoding="utf-8"))
        if cfg.get("num_channels") != expected:
            problems.append(f"{name}: num_channels {cfg.get('num_channels')!r} != metadata.json's {expected}")
        walk(cfg, "", name)
    return problems


def test_channel_count_is_one_id_pinned_to_metadata(bundle):
    problems = channel_count_problems(bundle / "configs")
    assert not problems, "\n".join(problems)
    net = parse_configs(bundle / "configs" / "train.json").get_parsed_content("network_def")
    first_conv = next(m for m in net.modules() if isinstance(m, (torch.nn.modules.conv._ConvNd, Conv4d)))
    assert first_conv.in_channels == load(bundle, "train.json")["num_channels"]


def bundle_root_problems(configs: Path, bundle_name: str) -> list[str]:
    """Every config that sets ``bundle_root`` names the bundle's own folder (a copied config must not write into
    another bundle's folder)."""
    expected = f"bundles/{bundle_name}"
    problems = []
    for cfg_file in sorted(configs.rglob("*.json")):
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        if isinstance(cfg, dict) and "bundle_root" in cfg and cfg["bundle_root"] != expected:
            problems.append(f"{cfg_file.name}: bundle_root {cfg['bundle_root']!r}, expected {expected!r}")
    return problems


def test_bundle_root_names_the_bundle(bundle):
    assert "bundle_root" in load(bundle, "train.json") and "bundle_root" in load(bundle, "inference.json")
    problems = bundle_root_problems(bundle / "configs", bundle.name)
    assert not problems, "\n".join(problems)


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
    for name, cfg in (("train.json", train), ("inference.json", infer)):
        for key in ("initialize", "run", "finalize"):  # the contract's initialize/run/finalize
            assert key in cfg, f"{name} lacks {key}"


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


@pytest.mark.parametrize(("workflow_type", "config"), [("train", "train.json"), ("infer", "inference.json")])
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


# ------------------------------------------------------------------------------------------ overlays, variants
# The checks are functions of config files returning their findings, so that the negative tests at the end can run
# them on broken copies of the configs (written to tmp_path) and show that each check does fail.

# (overlay, base): an id "a#b#c" the overlay sets needs "a#b" in the base; top-level ids may be new (an overlay adds
# ids). ConfigParser adds any new leaf or top-level id silently; a missing parent makes it raise a bare
# "KeyError: 'query key: b'" only when that very pair of files is merged. Variants may not add ids at all.
OVERLAY_BASES = [
    ("evaluate.json", "train.json"),
    ("multi_gpu_train.json", "train.json"),
    ("demo.json", "train.json"),
    ("demo.json", "inference.json"),
]
DESCRIPTION_KEYS = {"_desc_"}


def parse_configs(*files: str | Path) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    return parser


def overlay_keys(overlay: Path) -> list[tuple[str, bool]]:
    """(id with '#' separators, whether it is a '+' merge key) for each key the overlay sets."""
    keys = json.loads(overlay.read_text(encoding="utf-8"))
    return [(k.lstrip("+").replace("::", "#"), k.startswith("+")) for k in keys]


def overlay_id_problems(base: Path, overlay: Path) -> list[str]:
    parser = parse_configs(base)
    problems = []
    for key, merge in overlay_keys(overlay):
        if merge and key not in parser:
            problems.append(f"{overlay.name}: '+{key}' merges into {key!r}, which {base.name} does not have")
        elif "#" in key and key.rsplit("#", 1)[0] not in parser:
            parent = key.rsplit("#", 1)[0]
            problems.append(f"{overlay.name}: {key!r} needs {parent!r}, which {base.name} does not have")
    return problems


def variant_id_problems(configs: Path, variant: Path) -> list[str]:
    """Variants only change existing values: each id must exist, with its full path, in train.json + evaluate.json."""
    parser = parse_configs(configs / "train.json", configs / "evaluate.json")
    return [
        f"variants/{variant.name}: {key!r} is not an id of train.json + evaluate.json"
        for key, _ in overlay_keys(variant)
        if key not in DESCRIPTION_KEYS and key not in parser
    ]


@pytest.mark.parametrize(("overlay", "base"), OVERLAY_BASES)
def test_overlay_ids_exist_in_base(bundle, overlay, base):
    configs = bundle / "configs"
    problems = overlay_id_problems(configs / base, configs / overlay)
    assert not problems, "\n".join(problems)
    parser = parse_configs(configs / base, configs / overlay)
    assert isinstance(parser.get_parsed_content("network_def"), torch.nn.Module)
    assert "run" in parser


def test_variants_only_change_existing_ids(bundle):
    configs = bundle / "configs"
    variants = sorted((configs / "variants").glob("*.json"))
    problems = [p for variant in variants for p in variant_id_problems(configs, variant)]
    assert not problems, "\n".join(problems)
    for variant in variants:
        parser = parse_configs(configs / "train.json", variant)
        assert isinstance(parser.get_parsed_content("network_def"), torch.nn.Module), variant
        parser.get_parsed_content("loss")


def sandboxed(parser: ConfigParser, tmp_path: Path) -> ConfigParser:
    """Point every folder (and the datalist) into tmp_path: nothing is written into the repository, and a missing
    data set makes whatever tries to read it fail."""
    overrides = {
        "ckpt_dir": str(tmp_path / "models"),
        "output_dir": str(tmp_path / "eval"),
        "dataset_dir": str(tmp_path / "no_data"),
        "datalist": str(tmp_path / "no_data" / "dataset.json"),
    }
    parser.update({k: v for k, v in overrides.items() if k in parser})
    return parser


def resolve_validation(parser: ConfigParser) -> tuple[list, dict]:
    """The validation handlers and key metric, instantiated (no data set needed)."""
    handlers = [h for h in parser.get_parsed_content("validate#handlers") if h is not None]
    metric_id = "validate#evaluator#key_val_metric"
    metric = parser.get_parsed_content(metric_id if metric_id in parser else "validate#key_metric")
    return handlers, metric


@pytest.mark.parametrize("overlays", [[], ["evaluate.json"]], ids=["train", "train+evaluate"])
def test_validation_handlers_and_metric_resolve(bundle, overlays, tmp_path):
    from ignite.metrics import Metric

    configs = bundle / "configs"
    parser = sandboxed(parse_configs(configs / "train.json", *(configs / o for o in overlays)), tmp_path)
    try:
        handlers, metric = resolve_validation(parser)
    except Exception as err:
        files = " + ".join(["train.json", *overlays])
        pytest.fail(
            f"{files}: validate#handlers / key metric do not resolve (the datalist points to a missing file, "
            f"so this also fails if they need the data set): {err}"
        )
    assert handlers and all(callable(getattr(h, "attach", None)) for h in handlers), handlers
    assert isinstance(metric, dict) and metric, metric
    assert all(isinstance(m, Metric) for m in metric.values()), metric
    assert not (tmp_path / "no_data").exists(), "resolving the validation handlers touched the data set folder"


def ddp_problems(parser: ConfigParser) -> list[str]:
    def expressions(key: str) -> list[str]:
        value = parser.get(key, [])
        return [e for e in (value if isinstance(value, list) else [value]) if isinstance(e, str) and e.startswith("$")]

    problems = []
    if not any("init_process_group" in e for e in expressions("initialize")):
        problems.append("initialize has no init_process_group expression")
    finalize = expressions("finalize")
    destroy = [i for i, e in enumerate(finalize) if "destroy_process_group" in e]
    if not destroy:
        problems.append("finalize has no destroy_process_group expression")
    elif not any("barrier()" in e for e in finalize[: destroy[0] + 1]):
        # without it a Gloo worker may still free the last collective's tensors when Python exits: SIGABRT
        problems.append("finalize does not wait at dist.barrier() before destroy_process_group (PyTorch #190489)")
    if "LOCAL_RANK" not in str(parser.get("device", "")):
        problems.append(f"device does not use LOCAL_RANK: {parser.get('device')!r}")
    return problems


def sync_batchnorm_problems(configs: Path) -> list[str]:
    """Under DDP a network with batch norm converts it to ``SyncBatchNorm`` (on GPUs, where torch supports it).

    Each GPU would otherwise normalise its own few volumes (one, for the paper's batch spread over GPUs). The
    contract: multi_gpu_train.json defines ``sync_batchnorm`` (true on CUDA) and the DDP ``network`` wraps a module
    in which, with ``sync_batchnorm`` true, no plain batch-norm layer is left.
    """
    parser = parse_configs(configs / "train.json", configs / "multi_gpu_train.json")
    net = parser.get_parsed_content("network_def")
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        return []
    if "sync_batchnorm" not in parser:
        return ["multi_gpu_train.json has no sync_batchnorm id, but the network has batch norm"]
    parser["sync_batchnorm"] = True
    module_expr = parser.get("network#module", None)
    if not isinstance(module_expr, str) or not module_expr.startswith("$"):
        return [f"multi_gpu_train.json: network#module is {module_expr!r}, expected an expression"]
    # the DDP wrapper needs a process group; build only the module it wraps
    parser["network#module"] = module_expr.replace(".to(@device)", "")
    module = parser.get_parsed_content("network#module")
    plain_bn = [n for n, m in module.named_modules() if type(m).__name__.startswith("BatchNorm")]
    if plain_bn:
        return [f"multi_gpu_train.json with sync_batchnorm true keeps plain batch norm in {plain_bn[:3]} ..."]
    if not any(isinstance(m, torch.nn.SyncBatchNorm) for m in module.modules()):
        return ["multi_gpu_train.json with sync_batchnorm true has no SyncBatchNorm layer"]
    return []


def test_multi_gpu_synchronises_batch_norm(bundle, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")
    problems = sync_batchnorm_problems(bundle / "configs")
    assert not problems, "\n".join(problems)


def test_multi_gpu_overlay_sets_up_and_tears_down_ddp(bundle):
    configs = bundle / "configs"
    problems = ddp_problems(parse_configs(configs / "train.json", configs / "multi_gpu_train.json"))
    assert not problems, "multi_gpu_train.json over train.json: " + "; ".join(problems)


# ------------------------------------------------------------------------- inference pre-processing = training's

LABEL_ONLY = {"CheckShapeMatchd", "CheckLabelValuesd"}  # act on the image too, but only to check it against the label
# not compared: config keywords, the keys, and bookkeeping that does not change the image's values
NOT_ARGS = {"_target_", "_desc_", "_requires_", "_disabled_", "_mode_", "keys", "allow_missing_keys"}
NOT_ARGS |= {"track_meta", "lazy", "meta_keys", "meta_key_postfix"}
PER_KEY_ARGS = {"mode", "padding_mode", "align_corners", "dtype", "scale_extent"}  # one value per key allowed


class _Unset:
    def __repr__(self) -> str:
        return "<not set, no default>"


UNSET = _Unset()


def short_name(target: str) -> str:
    return target.rsplit(".", 1)[-1]


def module_of(target: str) -> str:
    return ConfigComponent({"_target_": target}).resolve_module_name()


def plain(value: Any) -> Any:
    """A comparable plain-Python form: tuples/arrays/tensors as lists, enums as their values."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, enum.Enum):
        return value.value
    return value


def transform_list(parser: ConfigParser, list_id: str) -> list[tuple[str, dict]]:
    """(id, config) of each transform of the list `list_id`, or of the lists its "$@a + @b" expression adds up."""
    value = parser[list_id]
    if isinstance(value, list):
        return [(f"{list_id}#{i}", t) for i, t in enumerate(value) if isinstance(t, dict) and "_target_" in t]
    if isinstance(value, str) and value[:1] == "%" and value[1:] in parser:
        return transform_list(parser, value[1:])
    found: list[tuple[str, dict]] = []
    if isinstance(value, str) and value.startswith("$"):
        for ref in re.findall(r"@([\w#:]+)", value):
            ref = ref.replace("::", "#").rstrip("#:")
            sub = parser.get(ref, None)
            if isinstance(sub, list) and sub and all(isinstance(t, dict) and "_target_" in t for t in sub):
                found += transform_list(parser, ref)
    return found


def transform_keys(parser: ConfigParser, tid: str, cfg: dict) -> list:
    return list(ensure_tuple(parser.get_parsed_content(f"{tid}#keys"))) if "keys" in cfg else []


def image_transforms(parser: ConfigParser, list_id: str) -> list[tuple[str, dict]]:
    return [
        (tid, cfg)
        for tid, cfg in transform_list(parser, list_id)
        if short_name(cfg["_target_"]) not in LABEL_ONLY and "image" in transform_keys(parser, tid, cfg)
    ]


def arg_value(parser: ConfigParser, tid: str, cfg: dict, arg: str) -> Any:
    """What the transform gets for `arg`: resolved (@refs, $expressions), else the signature's default; for an
    argument given per key, the image's entry."""
    if arg in cfg:
        raw = cfg[arg]
        value = raw if ConfigComponent.is_instantiable(raw) else parser.get_parsed_content(f"{tid}#{arg}")
    else:
        cls = pydoc.locate(module_of(cfg["_target_"]))
        param = inspect.signature(cls).parameters.get(arg) if cls is not None else None
        if param is None or param.default is inspect.Parameter.empty:
            return UNSET
        value = param.default
    keys = transform_keys(parser, tid, cfg)
    if arg in PER_KEY_ARGS and isinstance(value, (list, tuple)) and len(value) == len(keys):
        value = value[keys.index("image")]
    return value


def pad_sizes(transforms: list) -> list:
    return [plain(t.padder.k) for t in transforms if isinstance(t, DivisiblePadd) and "image" in t.keys]


def preprocessing_mismatch(train: ConfigParser, infer: ConfigParser) -> str | None:
    """The first difference, for the image, between inference.json's preprocessing#transforms and the transform
    list train.json's validate#preprocessing builds on (None when they match)."""
    val_list = "validate#preprocessing#transforms"
    if not transform_list(train, val_list):
        return f"cannot find the transform list train.json's {val_list} builds on"
    t_list, i_list = image_transforms(train, val_list), image_transforms(infer, "preprocessing#transforms")
    extra: list[tuple[str, dict]] = []
    for n, (t, i) in enumerate(zip_longest(t_list, i_list)):
        if i is None:
            return f"image transform #{n}: inference.json lacks train.json's {t[1]['_target_']} ({t[0]})"
        if t is None:
            extra.append(i)
            continue
        (tid, tcfg), (iid, icfg) = t, i
        if module_of(tcfg["_target_"]) != module_of(icfg["_target_"]):
            return (
                f"image transform #{n}: train.json {tid} is {tcfg['_target_']}, "
                f"inference.json {iid} is {icfg['_target_']}"
            )
        for arg in [a for a in [*tcfg, *(a for a in icfg if a not in tcfg)] if a not in NOT_ARGS]:
            tval, ival = arg_value(train, tid, tcfg, arg), arg_value(infer, iid, icfg, arg)
            if plain(tval) != plain(ival):
                return (
                    f"image transform #{n} {tcfg['_target_']}: {arg} is {plain(tval)!r} in train.json ({tid}#{arg}) "
                    f"but {plain(ival)!r} in inference.json ({iid}#{arg})"
                )
    # inference may end with the DivisiblePadd that validate#preprocessing's expression adds to the list
    not_pads = [(iid, icfg["_target_"]) for iid, icfg in extra if short_name(icfg["_target_"]) != "DivisiblePadd"]
    if not_pads:
        return f"inference.json {not_pads[0][0]} ({not_pads[0][1]}) has no counterpart in train.json's {val_list}"
    val_pads = pad_sizes(train.get_parsed_content("validate#preprocessing").transforms)
    for tid, tcfg in t_list:  # pads already in the list were compared above
        k = plain(arg_value(train, tid, tcfg, "k")) if short_name(tcfg["_target_"]) == "DivisiblePadd" else None
        if k in val_pads:
            val_pads.remove(k)
    infer_pads = [plain(arg_value(infer, iid, icfg, "k")) for iid, icfg in extra]
    if infer_pads != val_pads:
        return f"validate#preprocessing pads the image to multiples of {val_pads}, inference.json to {infer_pads}"
    return None


@pytest.mark.parametrize("overlays", [[], ["demo.json"]], ids=["default", "demo"])
def test_inference_preprocessing_matches_training(bundle, overlays):
    configs = bundle / "configs"
    demo = [configs / o for o in overlays]
    train, infer = parse_configs(configs / "train.json", *demo), parse_configs(configs / "inference.json", *demo)
    mismatch = preprocessing_mismatch(train, infer)
    assert mismatch is None, mismatch


# ----------------------------------------------------------------------- resume, seed, non-finite loss guard

CHECKPOINT_HANDLER = "common.handlers.TrainingCheckpoint"
NON_FINITE_HANDLER = "common.handlers.StopOnNonFinite"
DETERMINISM_CONFIGS = ("train.json", "evaluate.json", "multi_gpu_train.json")


def resume_problems(configs: Path) -> list[str]:
    """train.json resumes with one switch and keeps everything a resumed run needs.

    Top-level ``resume`` (default false) and ``checkpoint_interval``; exactly one ``TrainingCheckpoint`` in
    ``train#handlers``, on every rank, taking ``@resume`` and ``@checkpoint_interval``, saving the network, the
    optimizer and (when train.json has one) the learning-rate scheduler, and keeping the validator's best metric and
    its key-metric savers; a ``StopOnNonFinite`` guard; no trainer ``CheckpointSaver`` with ``save_final`` (it would
    also save the final model when the run fails, e.g. with NaN weights: TrainingCheckpoint writes it on completion).
    """
    train = json.loads((configs / "train.json").read_text(encoding="utf-8"))
    problems = []
    if train.get("resume", None) is not False:
        problems.append(f"train.json: top-level resume must exist and be false, got {train.get('resume')!r}")
    if "checkpoint_interval" not in train:
        problems.append("train.json: no top-level checkpoint_interval")
    handlers = [h for h in train.get("train", {}).get("handlers", []) if isinstance(h, dict)]
    found = [h for h in handlers if h.get("_target_") == CHECKPOINT_HANDLER]
    if len(found) != 1:
        problems.append(f"train#handlers has {len(found)} {CHECKPOINT_HANDLER}, expected 1")
    else:
        handler = found[0]
        expected = {
            "resume": "@resume",
            "interval": "@checkpoint_interval",
            "validator": "@validate#evaluator",
            "validator_handlers": "@validate#handlers",
        }
        for arg, ref in expected.items():
            if handler.get(arg) != ref:
                problems.append(f"train#handlers {CHECKPOINT_HANDLER}: {arg} is {handler.get(arg)!r}, not {ref!r}")
        saved = list(handler.get("save_dict", {}).values())
        for ref in ["@network", "@optimizer"] + (["@lr_scheduler"] if "lr_scheduler" in train else []):
            if ref not in saved:
                problems.append(f"train#handlers {CHECKPOINT_HANDLER}: save_dict lacks {ref} ({saved})")
        if "_disabled_" in handler:
            problems.append(f"train#handlers {CHECKPOINT_HANDLER} must run on every rank (no _disabled_)")
    if not any(h.get("_target_") == NON_FINITE_HANDLER for h in handlers):
        problems.append(f"train#handlers has no {NON_FINITE_HANDLER}")
    if any(h.get("_target_") == "CheckpointSaver" and h.get("save_final") for h in handlers):
        problems.append("train#handlers has a CheckpointSaver with save_final (it also saves when the run fails)")
    return problems


def seed_problems(configs: Path) -> list[str]:
    """A top-level integer ``seed`` in train.json, and every ``set_determinism`` of train.json and of the overlays
    that set determinism takes its seed from ``@seed``."""
    problems = []
    seed = json.loads((configs / "train.json").read_text(encoding="utf-8")).get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        problems.append(f"train.json: top-level seed must be an integer, got {seed!r}")
    for name in DETERMINISM_CONFIGS:
        cfg = json.loads((configs / name).read_text(encoding="utf-8"))
        calls = [e for e in cfg.get("initialize", []) if isinstance(e, str) and "set_determinism(" in e]
        if name == "train.json" and not calls:
            problems.append("train.json: initialize does not call monai.utils.set_determinism")
        for call in calls:
            if not re.search(r"set_determinism\(\s*seed\s*=\s*@seed\b", call):
                problems.append(f"{name}: {call!r} does not take its seed from @seed")
    return problems


def test_train_resumes_and_seeds_from_config_ids(bundle):
    problems = resume_problems(bundle / "configs") + seed_problems(bundle / "configs")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- the checks above fail on broken configs


def broken_copy(bundle: Path, tmp_path: Path) -> Path:
    """A copy of the bundle's configs in tmp_path, to break."""
    return Path(shutil.copytree(bundle / "configs", tmp_path / "configs"))


def edit(path: Path, change) -> None:
    cfg = json.loads(path.read_text(encoding="utf-8"))
    change(cfg)
    path.write_text(json.dumps(cfg, indent=4), encoding="utf-8")


@pytest.mark.parametrize(
    ("overlay", "base", "key"),
    [("evaluate.json", "train.json", "validate#evalutor#amp"), ("demo.json", "inference.json", "netwrk_def#features")],
)
def test_negative_misspelt_overlay_section_is_caught(bundle, tmp_path, overlay, base, key):
    configs = broken_copy(bundle, tmp_path)
    edit(configs / overlay, lambda cfg: cfg.update({key: 1}))
    problems = overlay_id_problems(configs / base, configs / overlay)
    assert any(repr(key.rsplit("#", 1)[0]) in p for p in problems), problems


def test_negative_misspelt_variant_id_is_caught(bundle, tmp_path):
    configs = broken_copy(bundle, tmp_path)
    variant = configs / "variants" / "misspelt.json"
    variant.write_text(json.dumps({"_desc_": "typos", "lerning_rate": 0.1, "loss#sqaured_pred": False}))
    problems = variant_id_problems(configs, variant)
    for key in ("'lerning_rate'", "'loss#sqaured_pred'"):
        assert any(key in p for p in problems), problems


def _inference_transforms(cfg: dict) -> list[dict]:
    transforms = cfg["preprocessing"]["transforms"]
    if not isinstance(transforms, list):
        pytest.skip("inference.json's preprocessing#transforms is not a plain list")
    return transforms


def _first(cfg: dict, target: str) -> dict:
    found = [t for t in _inference_transforms(cfg) if short_name(t.get("_target_", "")) == target]
    if not found:
        pytest.skip(f"inference.json has no {target}")
    return found[0]


def _change_referenced_pixdim(cfg: dict) -> None:
    """Change the top-level value Spacingd's "@pixdim" refers to: the check must resolve the reference."""
    if _first(cfg, "Spacingd").get("pixdim") != "@pixdim" or "pixdim" not in cfg:
        pytest.skip('inference.json\'s Spacingd does not take "@pixdim"')
    cfg["pixdim"] = [9.0] * len(cfg["pixdim"])


# (what to break in inference.json, words the mismatch message must contain; a tuple: any one of them)
BREAKS = {
    "a_min": (lambda cfg: _first(cfg, "ScaleIntensityRanged").update(a_min=-1234), ["ScaleIntensityRanged", "a_min"]),
    "pixdim_ref": (lambda cfg: _change_referenced_pixdim(cfg), ["Spacingd", "pixdim", "9.0"]),
    "axcodes": (lambda cfg: _first(cfg, "Orientationd").update(axcodes="LPS"), ["Orientationd", "axcodes"]),
    "dropped": (lambda cfg: _inference_transforms(cfg).remove(_first(cfg, "Orientationd")), ["Orientationd"]),
    "pad": (lambda cfg: _first(cfg, "DivisiblePadd").update(k=[32, 32, 32]), [("pads", "DivisiblePadd"), "32"]),
}


@pytest.mark.parametrize("what", list(BREAKS))
def test_negative_inference_preprocessing_change_is_caught(bundle, tmp_path, what):
    configs = broken_copy(bundle, tmp_path)
    change, words = BREAKS[what]
    edit(configs / "inference.json", change)
    mismatch = preprocessing_mismatch(parse_configs(configs / "train.json"), parse_configs(configs / "inference.json"))
    assert mismatch is not None, what
    assert all(any(w in mismatch for w in ((word,) if isinstance(word, str) else word)) for word in words), mismatch


def test_negative_broken_overlays_are_caught(bundle, tmp_path):
    configs = broken_copy(bundle, tmp_path)
    edit(configs / "evaluate.json", lambda cfg: cfg.update({"validate#handlers": [{"_target_": "StatsHandlr"}]}))
    with pytest.raises(Exception, match="StatsHandlr"):
        resolve_validation(sandboxed(parse_configs(configs / "train.json", configs / "evaluate.json"), tmp_path))

    def no_ddp_teardown_or_rank(cfg: dict) -> None:
        cfg.pop("finalize", None)
        cfg["device"] = "$torch.device('cpu')"

    edit(configs / "multi_gpu_train.json", no_ddp_teardown_or_rank)
    problems = ddp_problems(parse_configs(configs / "train.json", configs / "multi_gpu_train.json"))
    assert len(problems) == 2 and "finalize" in problems[0] and "LOCAL_RANK" in problems[1], problems

    edit(configs / "multi_gpu_train.json", lambda cfg: cfg.update({"finalize": ["$dist.destroy_process_group()"]}))
    problems = ddp_problems(parse_configs(configs / "train.json", configs / "multi_gpu_train.json"))
    assert len(problems) == 2 and "barrier" in problems[0], problems


def test_negative_channel_count_bundle_root_and_sync_bn_are_caught(bundle, tmp_path, monkeypatch):
    configs = broken_copy(bundle, tmp_path)

    def typed_channel_count(cfg: dict) -> None:
        cfg["network_def"]["in_channels"] = 1
        cfg["train_data"] = cfg["train_data"].replace("n_channels=@num_channels", "n_channels=1")

    edit(configs / "train.json", typed_channel_count)
    edit(configs / "inference.json", lambda cfg: cfg.update(num_channels=cfg["num_channels"] + 1))
    problems = channel_count_problems(configs)
    assert any("network_def#in_channels is 1" in p for p in problems), problems
    assert any("train_data passes a channel count '1'" in p for p in problems), problems
    assert any(p.startswith("inference.json: num_channels") for p in problems), problems

    edit(configs / "inference.json", lambda cfg: cfg.update(bundle_root="bundles/some_other_segmentation"))
    problems = bundle_root_problems(configs, bundle.name)
    assert problems == [
        f"inference.json: bundle_root 'bundles/some_other_segmentation', expected 'bundles/{bundle.name}'"
    ]

    monkeypatch.setenv("LOCAL_RANK", "0")
    if sync_batchnorm_problems(bundle / "configs") or not any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        for m in parse_configs(configs / "train.json").get_parsed_content("network_def").modules()
    ):
        return  # the positive test reports it, or the network has no batch norm
    edit(configs / "multi_gpu_train.json", lambda cfg: cfg.update(ddp_network_def="@network_def"))
    problems = sync_batchnorm_problems(configs)
    assert len(problems) == 1 and "keeps plain batch norm" in problems[0], problems


def test_negative_resume_and_seed_breaks_are_caught(bundle, tmp_path):
    configs = broken_copy(bundle, tmp_path)

    def handler(cfg: dict) -> dict:
        return next(h for h in cfg["train"]["handlers"] if h.get("_target_") == CHECKPOINT_HANDLER)

    def break_resume(cfg: dict) -> None:
        cfg.pop("resume")
        cfg["lr_scheduler"] = {"_target_": "torch.optim.lr_scheduler.StepLR", "optimizer": "@optimizer", "step_size": 1}
        handler(cfg)["save_dict"].pop("optimizer")
        handler(cfg)["save_dict"].pop("lr_scheduler", None)  # a bundle with a scheduler already saves it
        handler(cfg)["resume"] = True
        handler(cfg)["_disabled_"] = "@is_not_rank0"
        cfg["train"]["handlers"] = [h for h in cfg["train"]["handlers"] if h.get("_target_") != NON_FINITE_HANDLER]
        cfg["train"]["handlers"].append({"_target_": "CheckpointSaver", "save_final": True})

    edit(configs / "train.json", break_resume)
    problems = "\n".join(resume_problems(configs))
    for words in (
        "top-level resume must exist and be false, got None",
        "resume is True, not '@resume'",
        "save_dict lacks @optimizer",
        "save_dict lacks @lr_scheduler",
        "must run on every rank",
        f"no {NON_FINITE_HANDLER}",
        "CheckpointSaver with save_final",
    ):
        assert words in problems, (words, problems)
    edit(configs / "train.json", lambda cfg: cfg["train"]["handlers"].remove(handler(cfg)))
    assert f"train#handlers has 0 {CHECKPOINT_HANDLER}, expected 1" in resume_problems(configs)

    def break_seed(cfg: dict) -> None:
        cfg["seed"] = "0"
        cfg["initialize"] = [e for e in cfg["initialize"] if "set_determinism" not in e]

    edit(configs / "train.json", break_seed)
    edit(configs / "evaluate.json", lambda cfg: cfg.update(initialize=["$monai.utils.set_determinism(seed=0)"]))
    problems = seed_problems(configs)
    assert problems == [
        "train.json: top-level seed must be an integer, got '0'",
        "train.json: initialize does not call monai.utils.set_determinism",
        "evaluate.json: '$monai.utils.set_determinism(seed=0)' does not take its seed from @seed",
    ], problems


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
    x = torch.rand(1, meta["num_channels"], *fake_spatial_shape(meta["spatial_shape"], least=16))
    with torch.no_grad():
        # in float64, so that float32 rounding (a scripted layer may sum in another order: Conv4d's export path,
        # 2e-5 apart over the cardiac network's 24 layers) cannot hide or fake a difference
        assert torch.allclose(scripted.double()(x.double()), net.double()(x.double()), atol=1e-8)
