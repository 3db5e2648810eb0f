"""Export an in-repo bundle as a self-contained MONAI Model Zoo bundle.

    python scripts/export_bundle.py bundles/abdominal_ct_multiorgan_segmentation /tmp/zoo \
        --weights bundles/abdominal_ct_multiorgan_segmentation/models/model.pt --zip

writes ``/tmp/zoo/abdominal_ct_multiorgan_segmentation/`` (and, with ``--zip``,
``/tmp/zoo/abdominal_ct_multiorgan_segmentation_v<version>.zip`` holding that folder), laid out as the zoo's bundles:

    LICENSE
    configs/*.json, configs/logging.conf, configs/variants/*.json   (``common.`` rewritten to ``scripts.``)
    docs/README.md, docs/data_license.txt
    scripts/...          the modules of ``common`` the configs reach (imports followed; nothing more)
    models/model.pt      with ``--weights``, listed with its SHA-256 in large_files.yml

``bundle_root`` becomes ``"."``: the export runs from its own folder (``python -m monai.bundle run --config_file
configs/train.json``), as zoo bundles do, and MONAI Label overrides ``bundle_root`` with the folder it loads it from.
The phantom generator of the bundle's ``demo.json`` travels with it, so its demo runs from the export too.

The export is deterministic (files in sorted order; the zip with fixed timestamps and permissions), holds no
absolute path, and is written to a temporary sibling folder renamed into place, so a failed export leaves nothing.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

import fire

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "common"  # the in-repo package the configs name
TARGET = "scripts"  # the zoo's name for a bundle's own code
BUNDLE_FILES = ("LICENSE", "configs", "docs")  # what is copied from the bundle folder (models/, eval/ are not)
SKIP_SUFFIXES = (".pyc",)
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold: same bytes on every export

_DOTTED = re.compile(rf"(?<![\w.]){PACKAGE}((?:\.[A-Za-z_]\w*)+)")
_IMPORT_BARE = re.compile(rf"^(\s*(?:\$)?import\s+){PACKAGE}\s*$", re.MULTILINE)
_PHANTOM_TASK = re.compile(r"make_dataset\(\s*['\"]([\w-]+)['\"]")

__all__ = ["export_bundle", "reached_modules", "rewrite_text"]


def _module_file(dotted: str) -> Path | None:
    """The source file of the in-repo module ``dotted`` (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``), if any.

    Args:
        dotted: a dotted module name under :data:`PACKAGE`.

    Returns:
        the file, or ``None`` when ``dotted`` names no module (e.g. a class inside a module).
    """
    base = ROOT.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _longest_module(dotted: str) -> str | None:
    """The longest prefix of ``dotted`` that is a module: ``common.data.CheckInputd`` -> ``common.data``.

    Args:
        dotted: a dotted name, possibly ending in attributes.

    Returns:
        the module name, or ``None`` when not even the package exists.
    """
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if _module_file(name) is not None:
            return name
    return None


def _imports_of(module: str) -> set[str]:
    """The in-repo modules that ``module``'s source imports (absolute and relative imports, submodules included).

    Args:
        module: a dotted module name under :data:`PACKAGE`.

    Returns:
        dotted module names under :data:`PACKAGE`.
    """
    path = _module_file(module)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # ``from a import b`` imports a, and a.b when b is a submodule
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                resolved = _longest_module(name)
                if resolved is not None:
                    found.add(resolved)
    return found


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]


def reached_modules(config_texts: Iterable[str], phantom_modules: Iterable[str] = ()) -> list[str]:
    """Every in-repo module the configs reach: those they name, the packages above them, and what those import.

    Args:
        config_texts: the text of every config file of the bundle.
        phantom_modules: extra start modules (the demo's phantom generator, which is named by task, not imported).

    Returns:
        sorted dotted module names.
    """
    todo: set[str] = set(phantom_modules)
    for text in config_texts:
        todo |= {m for m in (_longest_module(PACKAGE + d) for d in _DOTTED.findall(text)) if m}
        if _IMPORT_BARE.search(text) or re.search(rf"\$import\s+{PACKAGE}\b", text):
            todo.add(PACKAGE)
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo |= (_imports_of(module) | set(_parents(module))) - seen
    return sorted(seen)


def rewrite_text(text: str) -> str:
    """Rename the package: ``common.x`` -> ``scripts.x`` and ``import common`` -> ``import scripts``.

    Args:
        text: Python source or config text.

    Returns:
        the text with every dotted reference to :data:`PACKAGE` renamed to :data:`TARGET`.
    """
    text = _DOTTED.sub(lambda m: TARGET + m.group(1), text)
    text = re.sub(rf"(\bimport\s+){PACKAGE}\b(?!\.)", rf"\g<1>{TARGET}", text)
    return re.sub(rf"(\bfrom\s+){PACKAGE}(\s+import\b)", rf"\g<1>{TARGET}\g<2>", text)


def _rewrite_config(value, bundle_name: str):
    """A config value with the package renamed in every string and the bundle's own ``bundle_root`` set to ``"."``.

    Args:
        value: a parsed JSON config value (dict, list, string, number).
        bundle_name: the bundle's folder name (its in-repo ``bundle_root`` is ``bundles/<bundle_name>``).

    Returns:
        the rewritten value; the input is not modified.
    """
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "bundle_root" and item == f"bundles/{bundle_name}":
                out[key] = "."
            else:
                out[key] = _rewrite_config(item, bundle_name)
        return out
    if isinstance(value, list):
        return [_rewrite_config(v, bundle_name) for v in value]
    if isinstance(value, str):
        return rewrite_text(value)
    return value


def _phantom_tasks(config_texts: Iterable[str]) -> set[str]:
    """The phantom tasks the configs make (``make_dataset('<task>', ...)``).

    Args:
        config_texts: the text of every config file of the bundle.

    Returns:
        task names.
    """
    return {t for text in config_texts for t in _PHANTOM_TASK.findall(text)}


def _phantom_modules(config_texts: Iterable[str]) -> list[str]:
    """The generator modules of the phantom tasks the configs make (``make_dataset('<task>', ...)``).

    Args:
        config_texts: the text of every config file of the bundle.

    Returns:
        dotted module names of the generators.
    """
    tasks = _phantom_tasks(config_texts)
    if not tasks:
        return []
    sys.path.insert(0, str(ROOT))
    try:
        from common.phantoms import get_task
    finally:
        sys.path.remove(str(ROOT))
    return sorted({get_task(t).generator.__module__ for t in tasks})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def export_bundle(bundle: str, out_dir: str, weights: str | None = None, zip: bool = False) -> str:
    """Write the zoo form of ``bundle`` into ``out_dir/<bundle name>`` and return that folder.

    Args:
        bundle: the in-repo bundle folder, e.g. ``bundles/abdominal_ct_multiorgan_segmentation``.
        out_dir: where to put the export; created if missing. ``out_dir/<bundle name>`` must not exist yet.
        weights: a ``state_dict`` file to ship as ``models/model.pt`` (listed in ``large_files.yml``).
        zip: also write ``out_dir/<bundle name>_v<version>.zip`` with the folder inside.

    Returns:
        the path of the exported bundle folder.

    Raises:
        FileNotFoundError: the bundle or the weights file does not exist.
        FileExistsError: ``out_dir/<bundle name>`` exists already (an export never overwrites).
    """
    src = Path(bundle).resolve()
    if not (src / "configs" / "metadata.json").is_file():
        raise FileNotFoundError(f"{bundle}: not a bundle folder (no configs/metadata.json)")
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"{weights}: weights file not found")
    name = src.name
    out = Path(out_dir).resolve()
    dest = out / name
    if dest.exists():
        raise FileExistsError(f"{dest} exists: choose another out_dir or remove it")
    out.mkdir(parents=True, exist_ok=True)

    files: dict[str, bytes] = {}  # relative path in the export -> content
    config_texts = []
    for top in BUNDLE_FILES:
        for path in sorted([src / top] if (src / top).is_file() else (src / top).rglob("*")):
            if not path.is_file() or path.suffix in SKIP_SUFFIXES:
                continue
            rel = path.relative_to(src).as_posix()
            if path.suffix == ".json" and rel.startswith("configs/"):
                text = path.read_text(encoding="utf-8")
                config_texts.append(text)
                cfg = _rewrite_config(json.loads(text), name)
                files[rel] = (json.dumps(cfg, indent=4, ensure_ascii=True) + "\n").encode()
            else:
                files[rel] = path.read_bytes()
    for module in reached_modules(config_texts, _phantom_modules(config_texts)):
        path = _module_file(module)
        rel = path.relative_to(ROOT).as_posix()
        rel = TARGET + rel[len(PACKAGE) :]
        files[rel] = rewrite_text(path.read_text(encoding="utf-8")).encode()
    if weights is not None:
        files["models/model.pt"] = Path(weights).read_bytes()
        files["large_files.yml"] = (
            "large_files:\n"
            '  - path: "models/model.pt"\n'
            '    url: ""\n'
            f'    hash_val: "{_sha256(Path(weights))}"\n'
            '    hash_type: "sha256"\n'
        ).encode()

    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=out))
    try:
        for rel in sorted(files):
            _write(tmp / rel, files[rel])
        if zip:
            version = json.loads(files["configs/metadata.json"])["version"]
            archive = out / f"{name}_v{version}.zip"
            staged = tmp.with_suffix(".zip")
            with zipfile.ZipFile(staged, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for rel in sorted(files):
                    info = zipfile.ZipInfo(f"{name}/{rel}", date_time=ZIP_DATE)
                    info.external_attr = 0o644 << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    zf.writestr(info, files[rel])
            os.replace(staged, archive)
        os.rename(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return str(dest)


if __name__ == "__main__":
    fire.Fire(export_bundle)
