"""Every bundle served by a real MONAI Label 0.8.5 server (BUNDLE_CONTRACT.md, "Shared, served, resumable").

The server runs from ``.venv-monailabel`` (scripts/setup_monailabel_env.sh) on the bundles' exports, with the
repository off ``sys.path``; the fixtures are in conftest.py. The tests run in file order: inference first, then the
one-epoch training (it replaces the served weights), then the stop.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.bundle import run as bundle_run

from tests.conftest import BUNDLES, ROOT
from tests.monailabel.helpers import (
    TRAIN_BUNDLE,
    get_json,
    group_members,
    port_is_free,
    post_json,
    post_multipart,
    processes_mentioning,
)

pytestmark = [pytest.mark.monailabel, pytest.mark.slow]
NAMES = [b.name for b in BUNDLES]
INFER_TIMEOUT_S = 600
TRAIN_TIMEOUT_S = 1200
# voxels where the server's label map may differ from the bundle's own inference: the server runs torch 2.14.1,
# the project torch 2.13.0, and a near-tie between two classes can go either way
MAX_DISAGREEMENT = 1e-3


def infer(session, name: str, *, image_id: str | None = None, upload: Path | None = None) -> tuple[Path, float]:
    """``POST /infer/<name>`` with ``output=image``: the label map it returns, saved as NIfTI, and the seconds."""
    query = {"output": "image", **({"image": image_id} if image_id else {})}
    url = f"{session.server.url}/infer/{urllib.parse.quote(name)}?{urllib.parse.urlencode(query)}"
    started = time.monotonic()
    body = post_multipart(url, {"params": "{}"}, {"file": upload} if upload else None, timeout=INFER_TIMEOUT_S)
    seconds = time.monotonic() - started
    out = session.workdir / name / f"served_{image_id or 'upload'}.nii.gz"
    out.write_bytes(body)
    return out, seconds


def assert_label_map(label_file: Path, image_file: Path, channel_def: dict[str, str]) -> np.ndarray:
    """The label map has the input's shape and affine and only ``channel_def`` values; its array."""
    label, image = nib.load(label_file), nib.load(image_file)
    assert label.shape == image.shape[:3] or label.shape == image.shape, (
        f"label map shape {label.shape} != input {image.shape}"
    )
    np.testing.assert_allclose(label.affine, image.affine, atol=1e-4, err_msg="label map affine != input affine")
    data = np.asarray(label.dataobj)
    values = np.unique(data)
    assert np.array_equal(values, np.round(values)), f"non-integer label values {values[:10]}"
    allowed = {int(k) for k in channel_def}
    assert set(values.astype(int).tolist()) <= allowed, f"values {sorted(values)} outside channel_def {allowed}"
    return data


def test_info_lists_every_bundle_with_its_channel_def(served):
    """``GET /info/``: each bundle is a model and a trainer; its labels are channel_def's, background left out.

    MONAI Label's BundleInferTask lists ``{name.lower(): int(value)}`` for every channel_def entry whose name is not
    "background" (case-insensitive); the names must come out exactly as the bundle spells them.
    """
    info = get_json(f"{served.server.url}/info/")
    assert sorted(info["models"]) == sorted(NAMES), f"models served: {sorted(info['models'])}"
    assert sorted(info["trainers"]) == sorted(NAMES), f"trainers: {sorted(info['trainers'])}"
    for name, b in served.bundles.items():
        model = info["models"][name]
        expected = {label: int(value) for value, label in b.channel_def.items() if label.lower() != "background"}
        assert model["labels"] == expected, f"{name}: /info/ labels {model['labels']} != channel_def {expected}"
        # MONAI Label counts metadata.json's spatial_shape entries: 4 for a 3D+time bundle
        dims = len(json.loads((ROOT / b.bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))[
            "network_data_format"]["inputs"]["image"]["spatial_shape"])  # fmt: skip
        assert model["type"] == "segmentation" and model["dimension"] == dims and dims in (2, 3, 4), model
        # the app-level list is every model's label names in value order
        ordered = [label for label, _ in sorted(expected.items(), key=lambda item: item[1])]
        assert [x for x in info["labels"] if x in expected] == ordered


@pytest.mark.parametrize("name", NAMES)
def test_infer_a_study_like_the_bundle_itself(served, name, tmp_path):
    """``/infer/<bundle>?image=<id>``: the input's geometry, channel_def values, the bundle's own label map."""
    b = served.bundles[name]
    label_file, seconds = infer(served, name, image_id=b.study_id)
    served.timings[f"{name}: infer by id"] = seconds
    served_labels = assert_label_map(label_file, b.study_image, b.channel_def)
    assert len(np.unique(served_labels)) > 1, "one label everywhere: the value checks would prove nothing"
    # the bundle's own inference.json (project venv, in-repo configs) on the same file with the served weights
    weights = tmp_path / "model.pt"
    weights.write_bytes((b.export / "models" / "model.pt").read_bytes())
    started = time.monotonic()
    bundle_run(
        run_id="run", config_file=str(b.bundle / "configs" / "inference.json"),
        logging_file=str(b.bundle / "configs" / "logging.conf"), input=str(b.study_image),
        ckpt_file=str(weights), output_dir=str(tmp_path / "own"),
    )  # fmt: skip
    served.timings[f"{name}: bundle's own inference"] = time.monotonic() - started
    (own_file,) = (tmp_path / "own").glob("*.nii*")
    own = np.asarray(nib.load(own_file).dataobj)
    assert own.shape == served_labels.shape
    disagreement = float(np.mean(own != served_labels))
    assert disagreement <= MAX_DISAGREEMENT, f"served label map differs from the bundle's in {disagreement:.2%}"


# the upload is the server's code path, the same for every bundle once the file is saved (the by-id test above reads
# every bundle's own format): one 3D CT bundle and the four-sequence MRI one, whose upload is one channel-last file;
# the 4D and CT perfusion uploads (minutes of CPU each) would repeat their by-id inference
UPLOAD_NAMES = [n for n in NAMES if n in ("abdominal_ct_multiorgan_segmentation", "brain_tumor_mri_segmentation")]


@pytest.mark.parametrize("name", UPLOAD_NAMES)
def test_infer_an_uploaded_file(served, name):
    """``/infer/<bundle>`` with a multipart ``file`` that is not in the studies folder."""
    b = served.bundles[name]
    assert not (served.server.studies / b.upload_image.name).exists()
    label_file, seconds = infer(served, name, upload=b.upload_image)
    served.timings[f"{name}: infer upload"] = seconds
    assert_label_map(label_file, b.upload_image, b.channel_def)


def test_train_one_epoch_through_the_server(served):
    """``POST /train/<bundle>`` (1 epoch, the labelled phantom studies): it ends DONE and writes a new model.pt
    that loads (``weights_only=True``) into the bundle's network."""
    b = served.bundles[TRAIN_BUNDLE]
    model = b.export / "models" / "model.pt"
    before = hashlib.sha256(model.read_bytes()).hexdigest()
    url = f"{served.server.url}/train/{urllib.parse.quote(TRAIN_BUNDLE)}"
    request = {"max_epochs": 1, "val_split": 0.5, "device": "cpu", "multi_gpu": False, "pretrained": True}
    started = time.monotonic()
    task = post_json(url, request)
    assert task.get("status") in ("SUBMITTED", "RUNNING"), task
    deadline = started + TRAIN_TIMEOUT_S
    status = task
    while time.monotonic() < deadline:
        status = get_json(f"{served.server.url}/train/")
        if status["id"] == task["id"] and status["status"] not in ("SUBMITTED", "RUNNING"):
            break
        time.sleep(2)
    else:
        pytest.fail(f"training did not finish within {TRAIN_TIMEOUT_S} s:\n{served.server.tail()}")
    served.timings[f"{TRAIN_BUNDLE}: MONAI Label training, 1 epoch"] = time.monotonic() - started
    if status["status"] != "DONE":
        log = served.server.tail(40000).splitlines()
        errors = "\n".join([line for line in log if "Error" in line][-8:])
        details = "\n".join(status.get("details", []))
        pytest.fail(f"training ended {status['status']}; errors in the server log:\n{errors}\n\nlast lines:\n{details}")
    assert hashlib.sha256(model.read_bytes()).hexdigest() != before, "training left models/model.pt unchanged"
    parser = ConfigParser()
    parser.read_config(str(ROOT / b.bundle / "configs" / "inference.json"))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(model, map_location="cpu", weights_only=True))
    assert (b.export / "models" / "model_final.pt").is_file()


def test_server_stops_and_leaves_nothing_behind(served):
    """SIGTERM (then SIGKILL) to the server's process group: the port is free, no process of the app is left."""
    server = served.server
    started = time.monotonic()
    server.stop()
    served.timings["server stop"] = time.monotonic() - started
    assert server.process.returncode is not None
    assert not group_members(server.process.pid), f"left in the server's group: {group_members(server.process.pid)}"
    assert port_is_free(server.port), f"port {server.port} still answers"
    left = processes_mentioning(str(server.app))
    assert not left, "processes of the MONAI Label app still running:\n" + "\n".join(left)
    print(json.dumps(served.timings, indent=1))
