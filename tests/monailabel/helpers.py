"""What the MONAI Label tests share: HTTP over the standard library, the server process, phantom cases.

Only 127.0.0.1 is ever contacted, and every wait has a bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from tests.conftest import BUNDLES

HOST = "127.0.0.1"
# every demo.json makes its phantom data set from these ids; a few cases are enough here
SMALL_PHANTOM = {"phantom_n_train": 2, "phantom_n_validation": 1, "phantom_n_test": 1}
# the tiny weights: one epoch of two iterations, validated once (which writes models/model.pt)
TINY_RUN = {"num_iterations": 2, "epoch_length": 2, "val_interval": 1, "num_workers": 0, "batch_size": 1}
# the bundle whose training runs through MONAI Label (one is enough: every bundle takes the same code path)
TRAIN_BUNDLE = BUNDLES[0].name


# ------------------------------------------------------------------------------------------------------------ HTTP
class HTTPFailure(AssertionError):
    """A request that did not answer 2xx: the status and the body, for the test's message."""


def request(url: str, data: bytes | None = None, headers: Mapping[str, str] | None = None, timeout: float = 60):
    """``(status, headers, body)`` of one request; a non-2xx answer raises :class:`HTTPFailure` with its body."""
    assert urllib.parse.urlsplit(url).hostname == HOST, f"{url}: the tests talk to {HOST} only"
    req = urllib.request.Request(url, data=data, headers=dict(headers or {}), method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        raise HTTPFailure(f"{req.method} {url} -> {e.code}: {e.read()[-4000:].decode(errors='replace')}") from e


def get_json(url: str, timeout: float = 60) -> Any:
    return json.loads(request(url, timeout=timeout)[2])


def post_json(url: str, body: Any, timeout: float = 60) -> Any:
    data = json.dumps(body).encode()
    return json.loads(request(url, data, {"Content-Type": "application/json"}, timeout=timeout)[2])


def post_multipart(
    url: str, fields: Mapping[str, str], files: Mapping[str, Path] | None = None, timeout: float = 600
) -> bytes:
    """POST ``fields`` (text) and ``files`` (name -> path) as ``multipart/form-data``; the response body."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, path in (files or {}).items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{Path(path).name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + Path(path).read_bytes() + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return request(url, b"".join(parts), headers, timeout=timeout)[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        return s.connect_ex((HOST, port)) != 0


# ---------------------------------------------------------------------------------------------------------- server
def processes_mentioning(text: str) -> list[str]:
    """``"pid: command line"`` of every live process whose command line contains ``text`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # the process ended meanwhile
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline[:300]}")
    return found


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


class MonaiLabelServer:
    """``monailabel start_server`` in its own process group, its log in a file; :meth:`stop` ends the group."""

    def __init__(self, python: Path, app: Path, studies: Path, models: list[str], workdir: Path):
        self.python, self.app, self.studies, self.models = python, app, studies, models
        self.workdir = workdir
        self.log = workdir / "server.log"
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.process: subprocess.Popen | None = None
        self.start_seconds: float | None = None

    def command(self) -> list[str]:
        # `python -m monailabel.main`, not the `monailabel` launcher: the launcher puts the folder two levels above
        # its own bin/ (the repository root, for .venv-monailabel) on PYTHONPATH, and the export must stand alone
        return [
            str(self.python), "-m", "monailabel.main", "start_server",
            "--app", str(self.app), "--studies", str(self.studies),
            "--conf", "models", ",".join(self.models),
            "--conf", "zoo_source", "ngc",  # the default source asks GitHub for the zoo list even for local bundles
            "--conf", "sam2", "false",
            "--conf", "preload", "false",
            "--host", HOST, "--port", str(self.port),
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        # start_server appends the app folder to PYTHONPATH for its training and inference subprocesses; from an
        # unset PYTHONPATH that leaves an empty entry (the working directory) in front. The app folder alone:
        env["PYTHONPATH"] = str(self.app)
        env["MONAI_LABEL_SESSION_PATH"] = str(self.workdir / "sessions")
        env["PATH"] = f"{self.python.parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def start(self, timeout: float = 300) -> None:
        """Start the server and wait for ``GET /info/``; on failure or timeout, raise with the log's tail."""
        started = time.monotonic()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=self.workdir, env=self.environment(), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"MONAI Label exited with {self.process.returncode} while starting:\n{self.tail()}"
                )
            try:
                get_json(f"{self.url}/info/", timeout=10)
            except (OSError, HTTPFailure):
                time.sleep(1)
                continue
            self.start_seconds = time.monotonic() - started
            return
        raise AssertionError(f"MONAI Label did not answer GET /info/ within {timeout:.0f} s:\n{self.tail()}")

    def tail(self, n: int = 12000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return "(no server log)"

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to the whole process group, SIGKILL after ``timeout`` s; idempotent."""
        if self.process is None:
            return
        pgid = self.process.pid  # start_new_session: the server leads its own group
        if self._group_gone(pgid, 0):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(ProcessLookupError):  # also the server itself, should it have left its group
            self.process.terminate()
        if not self._group_gone(pgid, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            assert self._group_gone(pgid, timeout), f"process group {pgid} survived SIGKILL"

    def _group_gone(self, pgid: int, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every process of the group to end (reaping the server itself)."""
        deadline = time.monotonic() + timeout
        while True:
            exited = self.process.poll() is not None  # a finished server stays a zombie until reaped
            if exited and not group_members(pgid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


# ---------------------------------------------------------------------------------------------------------- images
def write_case_image(image: str | list[str], root: Path, out: Path) -> Path:
    """Write a datalist entry's image as one NIfTI file ``out``.

    A single file is copied as it is; a list of files (one per channel, e.g. MRI sequences) is stacked on a last
    axis with the first file's affine, the multi-channel NIfTI that MONAI Label's datastore holds as one image.
    """
    if isinstance(image, str):
        out.write_bytes((root / image).read_bytes())
        return out
    images = [nib.load(root / p) for p in image]
    data = np.stack([np.asarray(i.dataobj) for i in images], axis=-1)
    nib.save(nib.Nifti1Image(data, images[0].affine), out)
    return out


def nifti_stem(path: Path | str) -> str:
    """``a/b.nii.gz`` -> ``b``: the id MONAI Label's local datastore gives the file."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem
