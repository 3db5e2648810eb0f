"""common.data.excepthook: a failed run's last line is its BundleInputError; other errors print as Python prints them.

The unit tests call the hook in-process with a stand-in previous hook; the ``slow`` tests run
``python -m monai.bundle run`` on the abdominal bundle's inference.json, with the config edit that installs the hook
applied through an overlay written here (a no-op once the bundle's own ``imports`` carry it).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import traceback
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

import common.data.excepthook as excepthook_module
from common.data import BundleInputError, InputErrorHook, input_error_summary, install_error_hook
from tests.conftest import BUNDLES, ROOT

HOOK_IMPORT = "$import common.data.show_input_error_last"
BUNDLE = Path("bundles/abdominal_ct_multiorgan_segmentation")
INFER = str(BUNDLE / "configs" / "inference.json")
LOGGING = str(BUNDLE / "configs" / "logging.conf")


def _bad_channels() -> BundleInputError:
    return BundleInputError("/data/case_7.nii.gz", "2 channels", "1 channel")


# the line a user must read last, written out by hand
EXPECTED_LINE = "common.data.errors.BundleInputError: /data/case_7.nii.gz: found 2 channels; expected 1 channel"


def _raised(exc: BaseException, cause: BaseException | None = None) -> BaseException:
    """``exc`` as caught after ``raise exc from cause`` (so it carries a traceback and its cause)."""
    try:
        raise exc from cause
    except BaseException as e:  # the test inspects whatever was raised
        return e


def _wrapped_twice() -> BaseException:
    """A BundleInputError as MONAI's config parser propagates it: two RuntimeErrors raised from it."""
    inner = _raised(RuntimeError("applying transform <CheckInputd>"), _raised(_bad_channels()))
    return _raised(RuntimeError("Failed to evaluate ConfigExpression: $@evaluator.run()"), inner)


class _Recorder:
    """A previous hook that records its calls and writes a marker line to stderr."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, exc_type, exc, tb) -> None:
        self.calls.append((exc_type, exc, tb))
        sys.stderr.write("previous hook\n")


# ----------------------------------------------------------------------------------------------- the summary line


def test_summary_names_the_wrapped_error():
    assert input_error_summary(_wrapped_twice()) == EXPECTED_LINE


def test_summary_is_none_when_python_already_ends_with_it_or_there_is_none():
    assert input_error_summary(_raised(_bad_channels())) is None  # Python's own last line already is it
    assert input_error_summary(_raised(KeyError("image"))) is None
    assert input_error_summary(_raised(RuntimeError("wrap"), _raised(OSError("disk full")))) is None
    assert input_error_summary(None) is None


class _BadCase(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int):
        raise _bad_channels()


def test_summary_finds_the_error_that_crossed_a_dataloader_worker_as_text():
    """PyTorch re-raises a worker's error as a RuntimeError holding the worker's traceback as text."""
    loader = torch.utils.data.DataLoader(_BadCase(), num_workers=1)
    with pytest.raises(RuntimeError, match="DataLoader worker") as info:
        next(iter(loader))
    assert not isinstance(info.value, BundleInputError)
    # its message ends with the worker's last line, so Python's last line already is the error ...
    assert input_error_summary(info.value) is None
    # ... until MONAI wraps it ("Failed to evaluate ConfigExpression: $@evaluator.run()")
    assert input_error_summary(_raised(RuntimeError("Failed to evaluate"), info.value)) == EXPECTED_LINE


# ------------------------------------------------------------------------------------------------------ the hook


def test_hook_prints_the_previous_output_then_the_line(capsys):
    previous = _Recorder()
    exc = _wrapped_twice()
    InputErrorHook(previous)(type(exc), exc, exc.__traceback__)
    assert previous.calls == [(type(exc), exc, exc.__traceback__)]
    assert capsys.readouterr().err == f"previous hook\n\n{EXPECTED_LINE}\n"


@pytest.mark.parametrize(
    "exc",
    [_raised(KeyError("image")), _raised(_bad_channels()), _raised(KeyboardInterrupt())],
    ids=["other", "bare_input_error", "keyboard_interrupt"],
)
def test_hook_adds_nothing_when_the_last_line_is_already_right(exc, capsys):
    previous = _Recorder()
    InputErrorHook(previous)(type(exc), exc, exc.__traceback__)
    assert len(previous.calls) == 1
    assert capsys.readouterr().err == "previous hook\n"


def test_hook_over_pythons_own_keeps_the_whole_traceback(capsys):
    exc = _wrapped_twice()
    InputErrorHook(sys.__excepthook__)(type(exc), exc, exc.__traceback__)
    expected = "".join(traceback.format_exception(exc)) + f"\n{EXPECTED_LINE}\n"
    assert capsys.readouterr().err == expected


def test_stacked_hooks_print_the_line_once(capsys):
    """Ours, wrapped by a third party's hook, wrapped again by ours (a reloaded module): one line, at the end."""
    inner = InputErrorHook(_Recorder())

    def third_party(exc_type, exc, tb):
        inner(exc_type, exc, tb)
        sys.stderr.write("third party\n")

    exc = _wrapped_twice()
    outer = InputErrorHook(third_party)
    outer(type(exc), exc, exc.__traceback__)
    assert capsys.readouterr().err == f"previous hook\nthird party\n\n{EXPECTED_LINE}\n"
    # the same exception shown again (a REPL, a second handler) gets its line again
    outer(type(exc), exc, exc.__traceback__)
    assert capsys.readouterr().err.endswith(f"\n{EXPECTED_LINE}\n")


def test_install_chains_to_the_hook_in_place_and_is_idempotent(monkeypatch):
    previous = _Recorder()
    monkeypatch.setattr(sys, "excepthook", previous)
    assert install_error_hook() is True
    installed = sys.excepthook
    assert isinstance(installed, InputErrorHook) and installed.previous is previous
    assert install_error_hook() is False and sys.excepthook is installed
    # MONAI Label reloads a bundle's scripts package: a second copy of the module sees the hook in place
    spec = importlib.util.spec_from_file_location("common.data._excepthook_copy", excepthook_module.__file__)
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    assert copy.InputErrorHook is not InputErrorHook
    assert copy.install_error_hook() is False and sys.excepthook is installed


def test_importing_show_input_error_last_installs_it(monkeypatch):
    previous = _Recorder()
    monkeypatch.setattr(sys, "excepthook", previous)
    monkeypatch.delitem(sys.modules, "common.data.show_input_error_last", raising=False)
    importlib.import_module("common.data.show_input_error_last")
    assert getattr(sys.excepthook, "previous", None) is previous


def test_importing_common_data_installs_nothing():
    code = (
        "import sys, common.data; plain = sys.excepthook is sys.__excepthook__; "
        "import common.data.show_input_error_last; print(plain, type(sys.excepthook).__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, encoding="utf-8", errors="replace", cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "InputErrorHook"]


@pytest.mark.parametrize("bundle_dir", BUNDLES, ids=[b.name for b in BUNDLES])
def test_bundle_configs_install_the_hook(bundle_dir):
    for name in ("train.json", "inference.json"):
        imports = json.loads((bundle_dir / "configs" / name).read_text(encoding="utf-8"))["imports"]
        assert HOOK_IMPORT in imports, f"{bundle_dir.name}/configs/{name}: imports lack {HOOK_IMPORT!r}"


# ------------------------------------------------------------------------------- python -m monai.bundle run


def _write_nifti(path: Path, array: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return str(path)


def _overlay(tmp: Path, hook: bool, **extra) -> str:
    """An overlay on inference.json: ``extra`` ids, and ``imports`` with the hook's import (``hook``) or without."""
    imports = [i for i in json.loads(Path(INFER).read_text(encoding="utf-8"))["imports"] if i != HOOK_IMPORT]
    if hook:
        imports.append(HOOK_IMPORT)
    path = tmp / f"overlay_{'hook' if hook else 'plain'}.json"
    path.write_text(json.dumps({"imports": imports, **extra}))
    return str(path)


def _run(overlay: str, image: str, ckpt_dir: Path, out_dir: Path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", repr([INFER, overlay]),
        "--logging_file", LOGGING, "--input", image, "--ckpt_dir", str(ckpt_dir), "--output_dir", str(out_dir),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        cmd, capture_output=True, encoding="utf-8", errors="replace", cwd=ROOT, env=env, timeout=300
    )
    assert result.returncode != 0, "the run was meant to fail"
    return result


def _last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


@pytest.mark.slow
def test_preflight_error_is_the_last_line(tmp_path):
    """A 2-channel image, found by the header preflight while MONAI evaluates the dataset expression."""
    bad = _write_nifti(tmp_path / "two_channels.nii.gz", np.zeros((16, 16, 16, 2), np.int16))
    (tmp_path / "model.pt").write_bytes(b"never read: the preflight fails first")
    result = _run(_overlay(tmp_path, hook=True), bad, tmp_path, tmp_path / "out")
    line = f"common.data.errors.BundleInputError: {bad}: found 2 channels; expected 1 channel"
    assert _last_line(result.stderr) == line
    # the traceback is still above it: the error where it was raised and MONAI's wrapper
    assert result.stderr.count(line) == 2
    assert "RuntimeError: Failed to evaluate ConfigExpression" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def nan_run(tmp_path_factory):
    """A run that fails while loading a case (finite-value check), after the engine started: checkpoint valid."""
    tmp = tmp_path_factory.mktemp("nan_run")
    tiny = {"network_def#features": [4, 8, 16, 32]}  # a small network, so the checkpoint is quick to write
    overlay = _overlay(tmp, hook=True, **tiny)
    parser = ConfigParser()
    parser.read_config([INFER, overlay])
    torch.save(parser.get_parsed_content("network_def").state_dict(), tmp / "model.pt")
    values = np.where(np.arange(16**3).reshape(16, 16, 16) % 64 == 0, np.nan, 0).astype(np.float32)
    bad = _write_nifti(tmp / "nan.nii.gz", values)
    return bad, _run(overlay, bad, tmp, tmp / "out")


@pytest.mark.slow
def test_error_while_running_is_the_last_line(nan_run):
    bad, result = nan_run
    line = (
        f"common.data.errors.BundleInputError: {bad}: found 64 NaN and 0 infinite voxel values; "
        "expected finite values in every voxel"
    )
    assert _last_line(result.stderr) == line
    assert "run failed: nothing was written" not in result.stderr  # the hook adds no such line of its own


@pytest.mark.slow
def test_run_failed_line_appears_once(nan_run):
    _, result = nan_run
    assert (result.stdout + result.stderr).count("run failed: nothing was written") == 1


@pytest.mark.slow
def test_other_errors_print_exactly_as_without_the_hook(tmp_path):
    """A corrupt checkpoint (not a BundleInputError): stderr is byte for byte what Python prints without the hook."""
    good = _write_nifti(tmp_path / "good.nii.gz", np.zeros((16, 16, 16), np.int16))
    (tmp_path / "model.pt").write_bytes(b"not a checkpoint")
    with_hook = _run(_overlay(tmp_path, hook=True), good, tmp_path, tmp_path / "out")
    without = _run(_overlay(tmp_path, hook=False), good, tmp_path, tmp_path / "out")

    def normalized(text: str) -> str:
        return re.sub(r"0x[0-9a-f]+", "0x?", text)

    assert "BundleInputError" not in with_hook.stderr
    assert normalized(with_hook.stderr) == normalized(without.stderr)
    assert _last_line(with_hook.stderr) == _last_line(without.stderr)
