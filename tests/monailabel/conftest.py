"""A real MONAI Label 0.8.5 server on every bundle's export, built once per session.

The session fixture ``served``: builds ``.venv-monailabel`` (scripts/setup_monailabel_env.sh), makes each bundle's
phantom data (the call its demo.json makes, with a few cases), trains tiny weights with the project venv, exports
the bundle with them into the monaibundle app's ``model/`` folder, lays out a studies folder of phantom images, and
starts ``monailabel start_server`` on 127.0.0.1 with the repository off ``sys.path``. It stops the server (its whole
process group) at the end of the session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from tests.conftest import BUNDLES, ROOT
from tests.monailabel.helpers import (
    SMALL_PHANTOM,
    TINY_RUN,
    TRAIN_BUNDLE,
    MonaiLabelServer,
    nifti_stem,
    write_case_image,
)

ENV_TIMEOUT_S = 1800  # a fresh build takes about 2 minutes
SERVER_START_TIMEOUT_S = 300


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` with the output captured as text (UTF-8 whatever the locale) and no standard input."""
    return subprocess.run(
        cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", stdin=subprocess.DEVNULL, **kwargs
    )


def _venv() -> Path:
    return Path(os.environ.get("MONAILABEL_VENV", ROOT / ".venv-monailabel"))


def load_config(bundle: Path, name: str) -> dict:
    return json.loads((ROOT / bundle / "configs" / name).read_text(encoding="utf-8"))


def channel_def(bundle: Path) -> dict[str, str]:
    """metadata.json's ``network_data_format.outputs.pred.channel_def``: label value (a string) -> name."""
    return load_config(bundle, "metadata.json")["network_data_format"]["outputs"]["pred"]["channel_def"]


def demo_sizes(bundle: Path) -> dict:
    """demo.json's plain values (spacing, patch and window sizes, run lengths): the CPU-sized run, without its
    network change (served weights are inference.json's network) and without its data set."""
    demo, train = load_config(bundle, "demo.json"), load_config(bundle, "train.json")
    return {
        k: v
        for k, v in demo.items()
        if k in train and "#" not in k and not k.startswith(("_", "phantom_"))
        and not (isinstance(v, str) and v[:1] in "$@%") and k not in ("dataset_dir", "datalist", "input")
    }  # fmt: skip


@dataclass
class ServedBundle:
    """One bundle as the server holds it, and the phantom files the tests send it."""

    name: str
    bundle: Path  # the in-repo folder, relative to the repository root
    export: Path  # <app>/model/<name>
    channel_def: dict[str, str]
    study_id: str  # an image in the studies folder
    study_image: Path
    upload_image: Path  # an image that is not in the studies folder
    tiny_weights: Path  # what the export was made with


@dataclass
class Session:
    server: MonaiLabelServer
    bundles: dict[str, ServedBundle]
    timings: dict[str, float]
    workdir: Path


def _ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def timings(tmp_path_factory):
    """Seconds per step, printed and written to ``timings.json`` in the session's temporary folder at the end."""
    found: dict[str, float] = {}
    yield found
    out = tmp_path_factory.getbasetemp() / "monailabel_timings.json"
    out.write_text(json.dumps(found, indent=2))
    print("\nMONAI Label test timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in found.items()) + f" ({out})")


@pytest.fixture(scope="session")
def monailabel_python(timings) -> Path:
    """The MONAI Label environment's python, built (or reused) by scripts/setup_monailabel_env.sh.

    A build that fails fails every test here with the script's output; only outside CI (``CI`` unset) may it skip.
    """
    started = time.monotonic()
    try:
        result = _run(
            ["bash", str(ROOT / "scripts" / "setup_monailabel_env.sh")],
            cwd=ROOT, timeout=ENV_TIMEOUT_S,
        )  # fmt: skip
        failure = None if result.returncode == 0 else f"exit {result.returncode}"
        output = f"{result.stdout[-6000:]}\n{result.stderr[-8000:]}"
    except subprocess.TimeoutExpired as e:
        failure, output = f"no end within {ENV_TIMEOUT_S} s", f"{e.stdout or ''}\n{e.stderr or ''}"[-14000:]
    if failure:
        message = f"scripts/setup_monailabel_env.sh failed ({failure}):\n{output}"
        if _ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(f"the MONAI Label environment could not be built here (CI would fail): {message}")
    timings["env_build_or_check"] = time.monotonic() - started
    python = _venv() / "bin" / "python"
    assert python.is_file(), f"{python} missing after a successful setup_monailabel_env.sh"
    return python


def make_phantoms(bundle: Path, data_dir: Path) -> dict:
    """The bundle's phantom data set, by the call its demo.json makes (``datalist``), with :data:`SMALL_PHANTOM`."""
    parser = ConfigParser()
    parser.read_config([str(ROOT / bundle / "configs" / c) for c in ("train.json", "demo.json")])
    parser.update({"dataset_dir": str(data_dir), **SMALL_PHANTOM})
    datalist = Path(parser.get_parsed_content("datalist"))
    return json.loads(datalist.read_text(encoding="utf-8"))


def train_tiny_weights(bundle: Path, data_dir: Path, work: Path) -> Path:
    """Two iterations of train.json + demo.json with the project venv; the ``models/model.pt`` it writes.

    The network is inference.json's (what MONAI Label builds), not demo.json's narrower one, and it starts from wide
    random weights (as tests/bundles/test_export.py uses) so that the served model predicts many labels: weights
    trained for two iterations from the default initialisation give one label everywhere, which would make the
    label-value checks below vacuous. The two iterations run at a learning rate of 1e-6: the demos' rates (up to 3e-3
    with Adam) move every scale and shift of a network at once and can tip the wide random weights into one label
    everywhere too (the hand bundle's, served at its paper zoom of 1/4); the training still runs for real.
    """
    network_def = load_config(bundle, "inference.json")["network_def"]
    parser = ConfigParser()
    parser.read_config(str(ROOT / bundle / "configs" / "inference.json"))
    net = parser.get_parsed_content("network_def")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.3)
    init = work / "init.pt"
    torch.save(net.state_dict(), init)
    merged = {**load_config(bundle, "train.json"), **load_config(bundle, "demo.json")}
    args = {
        **{k: v for k, v in TINY_RUN.items() if k in merged},
        **({"learning_rate": 1e-6} if "learning_rate" in merged else {}),
        **SMALL_PHANTOM,
        "dataset_dir": str(data_dir),
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / "eval"),
        "network_def": network_def,
        "network": f"$[@network_def.load_state_dict(torch.load({str(init)!r}, map_location='cpu', weights_only=True)), "
        "@network_def.to(@device)][-1]",
    }
    (work / "args.json").write_text(json.dumps(args, indent=2))
    configs = "[" + ",".join(repr(str(bundle / "configs" / c)) for c in ("train.json", "demo.json")) + "]"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = _run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", configs,
         "--logging_file", str(bundle / "configs" / "logging.conf"), "--args_file", str(work / "args.json")],
        cwd=ROOT, env=env, timeout=900,
    )  # fmt: skip
    weights = work / "models" / "model.pt"
    assert result.returncode == 0 and weights.is_file(), (
        f"tiny training of {bundle.name} failed (exit {result.returncode}, model.pt "
        f"{'written' if weights.is_file() else 'missing'}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    )
    return weights


def export(bundle: Path, out_dir: Path, weights: Path) -> Path:
    """``scripts/export_bundle.py`` (the project venv) into ``out_dir``; the exported folder."""
    result = _run(
        [sys.executable, str(ROOT / "scripts" / "export_bundle.py"), str(bundle), str(out_dir), "--weights",
         str(weights)],
        cwd=ROOT, timeout=300,
    )  # fmt: skip
    folder = out_dir / bundle.name
    assert result.returncode == 0 and folder.is_dir(), (
        f"scripts/export_bundle.py {bundle} failed (exit {result.returncode}):\n{result.stdout[-3000:]}\n"
        f"{result.stderr[-6000:]}"
    )
    return folder


def tiny_served_training(export_dir: Path, bundle: Path) -> None:
    """Make the served copy's train.json CPU-sized for the one-epoch MONAI Label training.

    A MONAI Label train request sets only ``train#trainer#max_epochs``, the data lists, ``device`` and
    ``train#handlers`` (plus a bundle's ``displayable_configs``); an epoch is still ``epoch_length`` iterations at
    the paper's sizes. This writes demo.json's sizes and :data:`TINY_RUN` into the copy, and nothing else.
    """
    path = export_dir / "configs" / "train.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config.update(demo_sizes(bundle))
    config.update({k: v for k, v in TINY_RUN.items() if k in config})
    path.write_text(json.dumps(config, indent=4) + "\n", encoding="ascii")


@pytest.fixture(scope="session")
def served(monailabel_python, tmp_path_factory, timings):
    """Every bundle exported into a monaibundle app, phantom studies, and the running server (see the module doc)."""
    session_started = time.monotonic()
    work = tmp_path_factory.mktemp("monailabel")
    apps = work / "apps"
    result = _run(
        [str(monailabel_python), "-m", "monailabel.main", "apps", "--download", "--name", "monaibundle", "--output",
         str(apps)],
        cwd=work, timeout=300,
    )  # fmt: skip
    app = apps / "monaibundle"
    assert result.returncode == 0 and (app / "main.py").is_file(), (
        f"monailabel apps --download --name monaibundle failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    studies = work / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    bundles: dict[str, ServedBundle] = {}
    for folder in BUNDLES:
        bundle = Path("bundles") / folder.name
        own = work / folder.name
        own.mkdir()
        started = time.monotonic()
        data_dir = own / "data"
        datalist = make_phantoms(bundle, data_dir)
        timings[f"{folder.name}: phantoms"] = time.monotonic() - started
        started = time.monotonic()
        weights = train_tiny_weights(bundle, data_dir, own)
        timings[f"{folder.name}: tiny training"] = time.monotonic() - started
        exported = export(bundle, app / "model", weights)
        # the images MONAI Label serves: the test case (unlabelled), plus labelled training cases for the one
        # bundle that trains; file names start with the bundle's, so ids never clash between bundles
        test_case = datalist["test"][0]
        study = write_case_image(
            test_case["image"], data_dir, studies / f"{folder.name}-{nifti_stem(_first(test_case['image']))}.nii.gz"
        )
        upload = write_case_image(datalist["validation"][0]["image"], data_dir, own / "upload.nii.gz")
        if folder.name == TRAIN_BUNDLE:
            tiny_served_training(exported, bundle)
            for case in datalist["training"]:
                name = f"{folder.name}-{nifti_stem(_first(case['image']))}.nii.gz"
                write_case_image(case["image"], data_dir, studies / name)
                shutil.copy(data_dir / case["label"], studies / "labels" / "final" / name)
        bundles[folder.name] = ServedBundle(
            name=folder.name, bundle=bundle, export=exported, channel_def=channel_def(bundle),
            study_id=nifti_stem(study), study_image=study, upload_image=upload, tiny_weights=weights,
        )  # fmt: skip
    timings["data, weights and exports"] = time.monotonic() - session_started
    run_dir = work / "run"
    run_dir.mkdir()
    server = MonaiLabelServer(monailabel_python, app, studies, sorted(bundles), run_dir)
    try:
        server.start(timeout=SERVER_START_TIMEOUT_S)
        timings["server start"] = server.start_seconds
        yield Session(server=server, bundles=bundles, timings=timings, workdir=work)
    finally:
        server.stop()
        timings["session total (after the env)"] = time.monotonic() - session_started


def _first(image: str | list[str]) -> str:
    return image if isinstance(image, str) else image[0]
