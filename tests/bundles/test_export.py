"""Model Zoo export (scripts/export_bundle.py) of every bundle, checked from the export alone.

Each check runs in a subprocess whose working directory is the export and whose ``sys.path`` does not hold the
repository (``PYTHONPATH`` cleared, ``-P`` not needed: ``python -m`` puts the working directory first), as a user
of the zoo would run it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.bundle import run as bundle_run

from tests.conftest import ROOT, SCHEMA_DIR, cli_args, fake_spatial_shape, fast_overrides
from tests.monailabel.helpers import write_case_image

sys.path.insert(0, str(ROOT / "scripts"))
from export_bundle import (
    _module_file,
    _phantom_modules,
    _phantom_tasks,
    export_bundle,
    reached_modules,
    rewrite_text,
)

from common.phantoms import PHANTOM_TASKS, get_task

SMALL_PHANTOM = {"phantom_n_train": 2, "phantom_n_validation": 1, "phantom_n_test": 1}
SCHEMA = "meta_schema_20240725.json"


def demo_parser(bundle: Path, config: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / config), str(bundle / "configs" / "demo.json")])
    return parser


def run_in_export(export: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python *args`` with the export as working directory and the repository off ``sys.path``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [sys.executable, *args],
        cwd=export,
        env=env,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
    )
    assert result.returncode == 0, (
        f"{' '.join(args)} failed in {export}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    )
    return result


@pytest.fixture(scope="module")
def exported(tmp_path_factory, request):
    """Per bundle: the export with random demo-network weights (a state_dict file), made once per module."""
    cache = {}

    def make(bundle: Path):
        if bundle.name not in cache:
            root = tmp_path_factory.mktemp(bundle.name)
            weights = root / "weights.pt"
            net = demo_parser(bundle, "inference.json").get_parsed_content("network_def")
            torch.manual_seed(0)
            with torch.no_grad():  # wide random weights: the default initialisation gives one label everywhere
                for p in net.parameters():
                    p.normal_(0.0, 0.3)
            torch.save(net.state_dict(), weights)
            export = Path(export_bundle(str(bundle), str(root / "zoo"), weights=str(weights), zip=True))
            cache[bundle.name] = (root, export, weights)
        return cache[bundle.name]

    return make


def test_export_layout_weights_and_no_machine_traces(bundle, exported):
    root, export, weights = exported(bundle)
    files = sorted(p.relative_to(export).as_posix() for p in export.rglob("*") if p.is_file())
    for required in ("LICENSE", "docs/README.md", "docs/data_license.txt", "configs/metadata.json",
                     "configs/train.json", "configs/inference.json", "configs/evaluate.json", "configs/demo.json",
                     "configs/logging.conf", "models/model.pt", "large_files.yml", "scripts/__init__.py"):  # fmt: skip
        assert required in files, f"{required} missing from the export"
    assert not any(f.startswith(("models/model_final", "eval/", "data/")) or "__pycache__" in f for f in files)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (export / "models" / "model.pt").read_bytes() == weights.read_bytes()
    large = (export / "large_files.yml").read_text()
    assert 'path: "models/model.pt"' in large and f'hash_val: "{digest}"' in large and "sha256" in large
    # every config reference to the repository's package now names the bundle's own scripts package
    for f in files:
        text = (export / f).read_bytes().decode("utf-8", errors="ignore")
        assert str(ROOT) not in text and str(root) not in text, f"{f} holds a path of this machine"
        assert socket.gethostname() not in text or len(socket.gethostname()) < 4, f"{f} holds the host name"
        if f.startswith(("configs/", "scripts/")) and f.endswith((".json", ".py")):
            assert not re.search(r"(?<![\w.])common\.[A-Za-z_]|\bimport common\b|\bfrom common\b", text), f
    for name in ("train.json", "inference.json"):
        assert json.loads((export / "configs" / name).read_text())["bundle_root"] == "."


def test_export_carries_only_the_reached_modules(bundle, exported):
    _, export, _ = exported(bundle)
    shipped = {p.relative_to(export).as_posix() for p in (export / "scripts").rglob("*.py")}
    texts = [p.read_text() for p in (bundle / "configs").rglob("*.json")]
    modules = reached_modules(texts, _phantom_modules(texts))
    expected = {"scripts" + _module_file(m).relative_to(ROOT).as_posix()[len("common") :] for m in modules}
    assert shipped == expected
    # what the configs name is there; what they do not reach is not (the phantom CLI, the demo summary)
    assert {"scripts/__init__.py", "scripts/data/__init__.py", "scripts/phantoms/registry.py"} <= shipped
    assert "scripts/phantoms/cli.py" not in shipped and "scripts/report.py" not in shipped
    # every task's generator module (their helpers, e.g. brain_anatomy.py, are checked by `expected` above)
    generators = {f"{task.generator.__module__.rsplit('.', 1)[-1]}.py" for task in PHANTOM_TASKS.values()}
    own = {f"{get_task(t).generator.__module__.rsplit('.', 1)[-1]}.py" for t in _phantom_tasks(texts)}
    assert {Path(s).name for s in shipped if s.startswith("scripts/phantoms/")} & generators == own


def test_export_is_deterministic(bundle, exported, tmp_path):
    root, export, weights = exported(bundle)
    again = Path(export_bundle(str(bundle), str(tmp_path), weights=str(weights), zip=True))
    first = {p.relative_to(export): p.read_bytes() for p in export.rglob("*") if p.is_file()}
    second = {p.relative_to(again): p.read_bytes() for p in again.rglob("*") if p.is_file()}
    assert first == second
    (zip_a,) = (root / "zoo").glob("*.zip")
    (zip_b,) = tmp_path.glob("*.zip")
    assert zip_a.name == zip_b.name and zip_a.read_bytes() == zip_b.read_bytes()
    with zipfile.ZipFile(zip_a) as zf:
        names = zf.namelist()
        assert names == sorted(names) and all(n.startswith(f"{bundle.name}/") for n in names)
        assert zf.read(f"{bundle.name}/configs/metadata.json") == first[Path("configs/metadata.json")]
    with pytest.raises(FileExistsError):
        export_bundle(str(bundle), str(tmp_path))


@pytest.mark.slow
def test_zoo_checks_from_the_export(bundle, exported, tmp_path):
    """verify_metadata (local schema), verify_net_in_out, ckpt_export to TorchScript, check_properties."""
    _, export, _ = exported(bundle)
    schema = tmp_path / SCHEMA
    shutil.copy(SCHEMA_DIR / SCHEMA, schema)  # verify_metadata downloads it only when the file is absent
    run_in_export(export, "-m", "monai.bundle", "verify_metadata", "--meta_file", "configs/metadata.json",
                  "--filepath", str(schema))  # fmt: skip
    demo_infer = "['configs/inference.json','configs/demo.json']"
    run_in_export(export, "-m", "monai.bundle", "verify_net_in_out", "network_def", "--meta_file",
                  "configs/metadata.json", "--config_file", demo_infer)  # fmt: skip
    ts = tmp_path / "model.ts"
    run_in_export(export, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(ts),
                  "--ckpt_file", "models/model.pt", "--meta_file", "configs/metadata.json",
                  "--config_file", demo_infer)  # fmt: skip
    scripted = torch.jit.load(str(ts), map_location="cpu")
    eager = demo_parser(bundle, "inference.json").get_parsed_content("network_def")
    eager.load_state_dict(torch.load(export / "models" / "model.pt", map_location="cpu", weights_only=True))
    eager.eval()
    n = json.loads((bundle / "configs" / "metadata.json").read_text())["network_data_format"]["inputs"]["image"]
    x = torch.rand(1, n["num_channels"], *fake_spatial_shape(n["spatial_shape"], least=32))
    with torch.no_grad():  # in float64: float32 rounding differs between a layer's eager and scripted paths
        assert torch.allclose(scripted.double()(x.double()), eager.double()(x.double()), atol=1e-8)
    # the zoo's property check of both workflows, on a phantom made by the export's own generator
    check = (
        "import json, sys; from monai.bundle import ConfigWorkflow\n"
        "for kind, cfg in (('train', 'configs/train.json'), ('infer', 'configs/inference.json')):\n"
        "    wf = ConfigWorkflow(config_file=[cfg, 'configs/demo.json'], meta_file='configs/metadata.json',\n"
        "                        logging_file='configs/logging.conf', workflow_type=kind, **json.loads(sys.argv[1]))\n"
        "    wf.initialize()\n"
        "    assert wf.check_properties() == [], (kind, wf.check_properties())\n"
        "print('properties ok')\n"
    )
    overrides = {"dataset_dir": str(tmp_path / "data"), "output_dir": str(tmp_path / "eval"), **SMALL_PHANTOM,
                 **fast_overrides(bundle)}  # fmt: skip
    result = run_in_export(export, "-c", check, json.dumps(overrides))
    assert "properties ok" in result.stdout
    assert (tmp_path / "data" / "dataset.json").is_file()


@pytest.mark.slow
def test_export_runs_its_demo(bundle, exported, tmp_path):
    """The demo travels with the export: ``monai.bundle run`` of train.json + demo.json from the export's folder
    makes its phantom data with the export's own generator and trains (one tiny epoch here)."""
    _, export, _ = exported(bundle)
    overrides = {
        "dataset_dir": str(tmp_path / "data"),
        "ckpt_dir": str(tmp_path / "models"),
        "output_dir": str(tmp_path / "eval"),
        "phantom_n_train": 4,
        "phantom_n_validation": 1,
        "phantom_n_test": 1,
        "train#trainer#max_epochs": 1,
        "train#trainer#epoch_length": 1,
        "val_interval": 1,
        "num_workers": 0,
        **fast_overrides(bundle),
    }
    args = cli_args(overrides)
    run_in_export(
        export, "-m", "monai.bundle", "run", "--config_file", "['configs/train.json','configs/demo.json']",
        "--logging_file", "configs/logging.conf", *args,
    )  # fmt: skip
    assert (tmp_path / "data" / "dataset.json").is_file()
    state = torch.load(tmp_path / "models" / "model_final.pt", map_location="cpu", weights_only=True)
    net = demo_parser(bundle, "train.json").get_parsed_content("network_def")
    net.load_state_dict(state)  # the demo's network, trained from the export


@pytest.mark.slow
def test_export_infers_like_the_repository(bundle, exported, tmp_path, one_thread):
    """The same phantom image and weights: the export's label map equals the in-repo one voxel for voxel (both on
    one thread, as the export's subprocess runs: another reduction order can flip the near-ties of untrained
    weights)."""
    _, export, weights = exported(bundle)
    parser = demo_parser(bundle, "inference.json")
    fast = fast_overrides(bundle)
    parser.update({"dataset_dir": str(tmp_path / "data"), **SMALL_PHANTOM, **fast})
    datalist = Path(parser.get_parsed_content("datalist"))
    case = json.loads(datalist.read_text())["test"][0]["image"]
    # one file per channel (four MRI sequences) is passed as the one 4D channel-last file the bundle also reads
    image = (
        datalist.parent / case
        if isinstance(case, str)
        else write_case_image(case, datalist.parent, tmp_path / "case.nii.gz")
    )
    configs = [str(bundle / "configs" / "inference.json"), str(bundle / "configs" / "demo.json")]
    repo_out, export_out = tmp_path / "repo", tmp_path / "export"
    bundle_run(
        run_id="run", config_file=configs, logging_file=str(bundle / "configs" / "logging.conf"),
        input=str(image), ckpt_file=str(weights), output_dir=str(repo_out), **fast,
    )  # fmt: skip
    run_in_export(
        export, "-m", "monai.bundle", "run", "--config_file", "['configs/inference.json','configs/demo.json']",
        "--logging_file", "configs/logging.conf", "--input", str(image), "--output_dir", str(export_out),
        *cli_args(fast),
    )  # fmt: skip
    (a,) = sorted(repo_out.glob("*.nii.gz"))
    (b,) = sorted(export_out.glob("*.nii.gz"))
    assert a.name == b.name
    ia, ib = nib.load(a), nib.load(b)
    assert np.array_equal(ia.affine, ib.affine) and ia.shape == ib.shape
    labels = np.asarray(ia.dataobj)
    assert len(np.unique(labels)) >= 2, "an untrained network should still give a non-constant label map"
    assert np.array_equal(labels, np.asarray(ib.dataobj))


def test_rewrite_text_renames_only_the_package():
    text = (
        "import common\nimport common.data\nfrom common.data import x\nfrom common import data\n"
        "y = common.data.CheckInputd  # in common. Sentence\n'$common.phantoms.make_dataset(1)'\nuncommon.data\n"
    )
    assert rewrite_text(text) == (
        "import scripts\nimport scripts.data\nfrom scripts.data import x\nfrom scripts import data\n"
        "y = scripts.data.CheckInputd  # in common. Sentence\n'$scripts.phantoms.make_dataset(1)'\nuncommon.data\n"
    )
