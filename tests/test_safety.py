"""Every checkpoint load in the repository passes ``weights_only=True`` and ``map_location`` (BUNDLE_CONTRACT.md).

``torch.load`` unpickles: without ``weights_only=True`` a checkpoint can run code, and without ``map_location`` a
checkpoint written on a GPU does not load on a CPU-only machine (and under DDP every rank loads onto GPU 0). Checked:

- Python files under ``common/``, ``scripts/``, ``tests/`` and ``bundles/`` (parsed with ``ast``): every call of
  ``torch.load`` (``torch.serialization.load``, ``from torch import load``, any alias) has the keyword
  ``weights_only=True``, literally, and a ``map_location`` keyword; a reference that is not a call (e.g. passed to
  ``functools.partial``) cannot be checked and is refused.
- Config expressions: in bundle JSON configs, and in Python string constants that start with ``$`` (configs built by
  tests), every ``torch.load(`` has ``weights_only=True`` and ``map_location=`` among its arguments.
- Config components in bundle JSON configs: ``"_target_": "torch.load"`` with ``"weights_only": true`` and a
  ``map_location``; every MONAI ``CheckpointLoader`` with a ``map_location``. (MONAI 1.5.2's ``CheckpointLoader``
  calls ``torch.load(load_path, map_location=self.map_location, weights_only=True)``: ``weights_only`` is fixed,
  ``map_location`` is whatever the config gives, ``None`` when it gives none.)

A failure lists every offending ``file:line``. Each rule has a negative test on a small broken example.
"""

from __future__ import annotations

import ast
import json
import json.decoder
import json.scanner
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

PY_DIRS = ("common", "scripts", "tests", "bundles")
LOADERS = {"torch.load", "torch.serialization.load"}
# this file's negative tests hold broken config expressions on purpose: its string constants are not scanned
SELF = Path(__file__).resolve()


# ------------------------------------------------------------------------------------------------------- Python


def _import_names(tree: ast.AST) -> dict[str, str]:
    """Local name -> the dotted name it stands for, from the module's imports (``import torch as t`` -> t: torch)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(node: ast.AST, names: dict[str, str]) -> str | None:
    """The dotted name an expression such as ``torch.serialization.load`` resolves to through the imports."""
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, names)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _call_problem(call: ast.Call) -> str | None:
    keywords = {k.arg: k.value for k in call.keywords if k.arg is not None}
    missing = []
    weights_only = keywords.get("weights_only")
    if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
        missing.append("weights_only=True")
    if "map_location" not in keywords:
        missing.append("map_location")
    return f"torch.load without {' and '.join(missing)}" if missing else None


def _balanced_args(text: str, open_paren: int) -> str:
    """The text between the parenthesis at ``open_paren`` and its match (the rest of ``text`` if unmatched)."""
    depth = 0
    for i in range(open_paren, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[open_paren + 1 : i]
    return text[open_paren + 1 :]


_LOAD_IN_TEXT = re.compile(r"\btorch\.(?:serialization\.)?load\b(\s*\()?")


def expression_problems(text: str) -> list[str]:
    """What is wrong with each ``torch.load`` in a config expression (its arguments read as text).

    Args:
        text: a config expression such as ``"$torch.load(@ckpt, map_location=@device, weights_only=True)"``.

    Returns:
        one message per offending ``torch.load``; empty when all are safe.
    """
    problems = []
    for match in _LOAD_IN_TEXT.finditer(text):
        if match.group(1) is None:
            problems.append("torch.load referenced, not called: its arguments cannot be checked")
            continue
        args = _balanced_args(text, match.end() - 1)
        missing = [want for want in ("weights_only=True", "map_location=") if want not in re.sub(r"\s", "", args)]
        if missing:
            problems.append(f"torch.load( without {' and '.join(m.rstrip('=') for m in missing)}")
    return problems


def _string_texts(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, text)`` of every string constant; an f-string's parts joined with ``{}`` for its placeholders."""
    in_fstring = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = [v.value if isinstance(v, ast.Constant) else "{}" for v in node.values]
            texts.append((node.lineno, "".join(str(p) for p in parts)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in in_fstring:
            texts.append((node.lineno, node.value))
    return texts


def python_problems(source: str, filename: str, scan_strings: bool = True) -> list[str]:
    """``file:line: problem`` for each unsafe ``torch.load`` in a Python source.

    Args:
        source: the module's text.
        filename: the name to report.
        scan_strings: also check string constants that start with ``$`` (config expressions).

    Returns:
        the problems, in line order.
    """
    tree = ast.parse(source, filename=filename)
    names = _import_names(tree)
    problems: list[tuple[int, str]] = []
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _dotted(node.func, names) in LOADERS:
            called.add(id(node.func))
            problem = _call_problem(node)
            if problem:
                problems.append((node.lineno, problem))
    for node in ast.walk(tree):
        referenced = isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Load)
        if referenced and id(node) not in called and _dotted(node, names) in LOADERS:
            problems.append((node.lineno, "torch.load referenced, not called: its arguments cannot be checked"))
    if scan_strings:
        for line, text in _string_texts(tree):
            if text.lstrip().startswith("$"):
                problems.extend((line, f"config expression: {p}") for p in expression_problems(text))
    return [f"{filename}:{line}: {problem}" for line, problem in sorted(problems)]


def _python_files() -> list[Path]:
    return sorted(f for d in PY_DIRS if (ROOT / d).is_dir() for f in (ROOT / d).rglob("*.py"))


# ---------------------------------------------------------------------------------------------------- JSON configs


class _Located(dict):
    """A JSON object that remembers the line of its opening brace."""

    line = 0


class _LocatingDecoder(json.JSONDecoder):
    """``json`` decoder whose objects are :class:`_Located` (the pure-Python scanner, so objects can be wrapped)."""

    def __init__(self) -> None:
        super().__init__()

        def parse_object(s_and_end, *args, **kwargs):
            text, end = s_and_end
            obj, new_end = json.decoder.JSONObject(s_and_end, *args, **kwargs)
            located = _Located(obj)
            located.line = text.count("\n", 0, end) + 1
            return located, new_end

        self.parse_object = parse_object
        self.scan_once = json.scanner.py_make_scanner(self)


def _components(value):
    if isinstance(value, dict):
        if isinstance(value.get("_target_"), str):
            yield value
        for v in value.values():
            yield from _components(v)
    elif isinstance(value, list):
        for v in value:
            yield from _components(v)


_JSON_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def config_problems(text: str, filename: str) -> list[str]:
    """``file:line: problem`` for each unsafe checkpoint load in a bundle JSON config.

    Args:
        text: the config file's text.
        filename: the name to report.

    Returns:
        the problems, in line order.
    """
    problems: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        for string in _JSON_STRING.findall(line):
            if string.startswith("$"):
                problems.extend((number, f"config expression: {p}") for p in expression_problems(string))
    for component in _components(_LocatingDecoder().decode(text)):
        target = component["_target_"]
        if target in LOADERS and (component.get("weights_only") is not True or "map_location" not in component):
            problems.append((component.line, 'a "torch.load" component without weights_only true and map_location'))
        if target.split(".")[-1] == "CheckpointLoader" and component.get("map_location") is None:
            problems.append((component.line, "CheckpointLoader without map_location"))
    return [f"{filename}:{line}: {problem}" for line, problem in sorted(problems)]


def _config_files() -> list[Path]:
    return sorted((ROOT / "bundles").glob("*/configs/**/*.json"))


# ---------------------------------------------------------------------------------------------------------- tests


def test_every_python_torch_load_is_safe():
    files = _python_files()
    assert any(f.name == "test_abdominal_ct_multiorgan_segmentation.py" for f in files), "the scan found no tests"
    problems = []
    for f in files:
        name = str(f.relative_to(ROOT))
        problems += python_problems(f.read_text(encoding="utf-8"), name, scan_strings=f.resolve() != SELF)
    assert not problems, "unsafe torch.load:\n" + "\n".join(problems)


def test_every_config_checkpoint_load_is_safe():
    files = _config_files()
    assert any(f.name == "inference.json" for f in files), "the scan found no bundle configs"
    problems = []
    for f in files:
        problems += config_problems(f.read_text(encoding="utf-8"), str(f.relative_to(ROOT)))
    assert not problems, "unsafe checkpoint loads in bundle configs:\n" + "\n".join(problems)


def test_the_configs_do_load_checkpoints_through_checkpoint_loader():
    """The config rule is not vacuous: the bundles' inference and evaluation load their weights this way."""
    loaders = [
        (f.name, c)
        for f in _config_files()
        for c in _components(json.loads(f.read_text(encoding="utf-8")))
        if c["_target_"].split(".")[-1] == "CheckpointLoader"
    ]
    assert {"inference.json", "evaluate.json"} <= {name for name, _ in loaders}


SAFE_PY = """
import torch
state = torch.load(path, map_location="cpu", weights_only=True)
"""


@pytest.mark.parametrize(
    ("source", "line", "words"),
    [
        ("import torch\ntorch.load(path)\n", 2, "without weights_only=True and map_location"),
        ("import torch\ntorch.load(path, map_location='cpu')\n", 2, "without weights_only=True"),
        ("import torch\ntorch.load(path, map_location='cpu', weights_only=flag)\n", 2, "weights_only=True"),
        ("import torch\nx = 1\ntorch.load(path, weights_only=True)\n", 3, "without map_location"),
        ("import torch as t\nt.load(path)\n", 2, "without"),
        ("from torch import load\nload(path, weights_only=True)\n", 2, "without map_location"),
        ("from torch import load as ld\nld(path, map_location='cpu')\n", 2, "without weights_only"),
        ("import torch.serialization\ntorch.serialization.load(path)\n", 2, "without"),
        ("from torch import serialization as s\ns.load(path)\n", 2, "without"),
        ("import functools, torch\nf = functools.partial(torch.load, weights_only=True)\n", 2, "not called"),
        ('x = "$torch.load(@ckpt, weights_only=True)"\n', 1, "config expression: torch.load( without map_location"),
        ('p = "/tmp/m.pt"\nx = f"$torch.load({p!r}, weights_only=True)"\n', 2, "without map_location"),
    ],
)
def test_python_check_names_file_and_line(source, line, words):
    problems = python_problems(source, "pkg/mod.py")
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"pkg/mod.py:{line}: ") and words in problems[0]


def test_python_check_passes_safe_code_and_other_loads():
    assert python_problems(SAFE_PY, "ok.py") == []
    others = (
        "import numpy, json\nnumpy.load(p)\njson.load(f)\nnet.load_state_dict(s)\nimport nibabel\nnibabel.load(p)\n"
    )
    assert python_problems(others, "ok.py") == []
    safe_expression = 'x = "$torch.load(@ckpt, map_location=@device, weights_only=True)"\n'
    assert python_problems(safe_expression, "ok.py") == []
    # a docstring that mentions torch.load( is not a config expression
    assert python_problems('"""Calls torch.load(path) somewhere."""\n', "ok.py") == []


SAFE_CONFIG = {
    "load": "$torch.load(@ckpt_file, map_location=@device, weights_only=True)",
    "handlers": [{"_target_": "CheckpointLoader", "load_path": "@ckpt_file", "load_dict": {}, "map_location": "cpu"}],
}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"load": "$torch.load(@ckpt_file)"}, "torch.load( without weights_only=True and map_location"),
        ({"load": "$torch.load(@ckpt_file, map_location=@device)"}, "without weights_only=True"),
        ({"load": "$torch.load(@ckpt_file, weights_only=False, map_location='cpu')"}, "without weights_only=True"),
        ({"load": "$functools.partial(torch.load, weights_only=True)"}, "not called"),
        ({"handlers": [{"_target_": "CheckpointLoader", "load_path": "x", "load_dict": {}}]}, "CheckpointLoader"),
        (
            {"handlers": [{"_target_": "monai.handlers.CheckpointLoader", "load_path": "x", "map_location": None}]},
            "CheckpointLoader without map_location",
        ),
        ({"weights": {"_target_": "torch.load", "f": "@ckpt_file", "weights_only": True}}, "torch.load"),
    ],
)
def test_config_check_names_file_and_line(change, words):
    text = json.dumps({**SAFE_CONFIG, **change}, indent=4)
    problems = config_problems(text, "configs/inference.json")
    assert len(problems) == 1, problems
    located = re.match(r"configs/inference\.json:(\d+): ", problems[0])
    assert located and words in problems[0], problems[0]
    line = int(located.group(1))
    # the line named is the offending expression's, or the opening brace of the offending component
    assert "torch.load" in text.splitlines()[line - 1] or text.splitlines()[line - 1].rstrip().endswith("{")


def test_config_check_passes_a_safe_config():
    assert config_problems(json.dumps(SAFE_CONFIG, indent=4), "configs/inference.json") == []
