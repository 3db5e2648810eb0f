"""Class weights of the weighted cross-entropy, computed from the training labels (head CT paper, "Experiments").

The head CT neuroanatomy paper (Model 3 of Table 1, the final model) trains with categorical cross-entropy and
*attenuated* class weights. The balanced weight of class ``c`` is

    ``w_c = Σ_i n_i / ((k + 1) n_c)``

with ``n_c`` the number of voxels of class ``c`` over the whole training label set (0 being background) and ``k``
the number of structures (11), so ``k + 1`` is the number of classes; the attenuated weight is its cube root,
``w_c ** (1/3)`` ("it reduced larger weights to a proportionately greater extent"). Model 2 uses the balanced
weights and Model 4 none.

The weights are computed from the datalist by one documented step, never typed into a config::

    python -m common.data.class_weights DATALIST --n_classes 12 [--key training] [--out PATH] [--ignore_value 255]

It reads every label of the datalist's ``key`` list, counts the voxels per class, and writes
``<datalist folder>/class_weights.json`` (or ``--out``) with the counts, both weightings, ``n_classes`` and the
datalist's SHA-256; then it prints the table. A training config reads the file with :func:`load_class_weights`::

    "class_weights_file": "$os.path.join(os.path.dirname(@datalist), 'class_weights.json')",
    "class_weighting": "attenuated",
    "class_weights": "$common.data.class_weights.load_class_weights(@class_weights_file, @class_weighting,
                       @num_classes, @datalist)",
    "loss": {"_target_": "torch.nn.CrossEntropyLoss", "weight": "$torch.tensor(@class_weights, device=@device)"}

(the config's ``imports`` need ``"$import common.data.class_weights"``: the package does not import it). With
``datalist`` given, a file computed from another version of the datalist is refused (its SHA-256 differs), and a
missing file is reported with the exact command that writes it. The hash covers the datalist file only: a label
file edited in place under the same name is not detected, so rerun the command after editing labels.

A class without any voxel in the training labels has no finite balanced weight (``Σn / 0``):
:func:`balanced_weights` raises ``ValueError`` naming the class rather than inventing a weight, since such a class
cannot be learned from that training set anyway (usually a wrong ``n_classes`` or a wrong datalist).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np

from .checks import check_label_values
from .datalist import load_datalist
from .errors import BundleInputError
from .io import read_image_array
from .writers import atomic_path

__all__ = [
    "ATTENUATION_POWER",
    "SCHEMES",
    "attenuated_weights",
    "balanced_weights",
    "count_classes",
    "default_weights_path",
    "load_class_weights",
    "main",
    "write_class_weights",
]

ATTENUATION_POWER = 1.0 / 3.0
"""The paper's attenuation: the cube root of the balanced weights."""

SCHEMES = ("attenuated", "balanced", "none")
"""The weighting schemes of the paper's Table 1 (Models 3, 2 and 4), as :func:`load_class_weights` names them."""

FILE_NAME = "class_weights.json"
EXPECTED_WEIGHTS = f"a {FILE_NAME} written by 'python -m common.data.class_weights'"
_CHUNK = 1 << 24  # voxels per bincount block (bounds the int64 copy to 128 MB)


def default_weights_path(datalist: str | PathLike) -> Path:
    """Where the weights of a datalist are written by default: ``class_weights.json`` next to it.

    Args:
        datalist: the JSON datalist.

    Returns:
        ``<datalist folder>/class_weights.json``.
    """
    return Path(datalist).parent / FILE_NAME


def _sha256(path: str | PathLike) -> str:
    """The SHA-256 of a file's bytes, as hex.

    Returns:
        the digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _command(datalist: str | PathLike | None, n_classes: int | None, out: str | PathLike | None = None) -> str:
    """The command line that writes the weights file.

    Returns:
        ``python -m common.data.class_weights ...``, with ``--out`` only when ``out`` is not the default path.
    """
    source = str(datalist) if datalist is not None else "DATALIST"
    text = f"python -m common.data.class_weights {source} --n_classes {n_classes if n_classes else 'N_CLASSES'}"
    if out is not None and (datalist is None or Path(out).resolve() != default_weights_path(datalist).resolve()):
        text += f" --out {out}"
    return text


def count_classes(label_files: Sequence[str | PathLike], n_classes: int, ignore_value: int | None = None) -> np.ndarray:
    """Count the voxels of each class over a set of label maps (the ``n_c`` of the paper's balanced weights).

    Args:
        label_files: label maps (NIfTI files, read with nibabel; DICOM or other formats through MONAI's readers).
        n_classes: number of classes including background (``k + 1``): label values are ``0..n_classes-1``.
        ignore_value: a label value marking unannotated voxels, not counted; ``None`` for none.

    Returns:
        int64 array of ``n_classes`` voxel counts, summed over all files.

    Raises:
        BundleInputError: a file is missing or unreadable, or holds a value outside ``0..n_classes-1`` (other than
            ``ignore_value``), naming the file and the values.
        ValueError: ``n_classes < 2``, no file, or ``ignore_value`` inside ``0..n_classes-1``.
    """  # noqa: DOC502 (the BundleInputError comes from the reader and the label check; listed here on purpose)
    n_classes = int(n_classes)
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2 (background and one structure), got {n_classes}.")
    if isinstance(label_files, (str, PathLike)) or len(label_files) == 0:
        raise ValueError(f"label_files must be a non-empty list of label maps, got {label_files!r}.")
    if ignore_value is not None and 0 <= ignore_value < n_classes:
        raise ValueError(f"ignore_value {ignore_value} is one of the class values 0..{n_classes - 1}.")
    counts = np.zeros(n_classes, dtype=np.int64)
    for path in label_files:
        labels = read_image_array(path)
        check_label_values(labels, range(n_classes), os.fspath(path), ignore_value)
        flat = labels.reshape(-1)
        for start in range(0, flat.size, _CHUNK):
            chunk = flat[start : start + _CHUNK]
            if ignore_value is not None:
                chunk = chunk[chunk != ignore_value]
            counts += np.bincount(chunk.astype(np.int64), minlength=n_classes)
    return counts


def _counts(counts) -> np.ndarray:
    """Voxel counts as a float64 vector of at least two finite non-negative values.

    Returns:
        the counts.

    Raises:
        ValueError: fewer than two classes, or a negative or non-finite count.
    """
    array = np.asarray(counts, dtype=np.float64)
    if array.ndim != 1 or array.size < 2 or not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"counts must be one finite non-negative voxel count per class (2 or more), got {counts!r}.")
    return array


def balanced_weights(counts) -> np.ndarray:
    """The paper's balanced class weights ``w_c = Σ_i n_i / ((k + 1) n_c)`` (Experiments, Model 2).

    ``k + 1`` is the number of classes (``len(counts)``, background included), so a perfectly balanced label set
    gets weight 1 for every class and the count-weighted mean of the weights is always 1.

    Args:
        counts: voxels per class over the whole training label set, background first (:func:`count_classes`).

    Returns:
        float64 array of one weight per class.

    Raises:
        ValueError: a class has no voxel (its weight would be infinite; the message names the class), fewer than
            two classes, or a negative or non-finite count.
    """
    n = _counts(counts)
    empty = [int(c) for c in np.flatnonzero(n == 0)]
    if empty:
        raise ValueError(
            f"class {', '.join(map(str, empty))} has no voxel in the training labels, so its balanced weight "
            f"sum(n) / ((k + 1) * n_c) is infinite; check n_classes ({n.size}) and that the datalist's labels use "
            f"every class value 0..{n.size - 1}."
        )
    return n.sum() / (n.size * n)


def attenuated_weights(counts, power: float = ATTENUATION_POWER) -> np.ndarray:
    """The paper's attenuated class weights: the balanced weights to the power 1/3 (Experiments, Model 3).

    Args:
        counts: voxels per class, background first, as for :func:`balanced_weights`.
        power: the attenuation exponent; the paper's cube root is ``1/3``, ``1`` gives the balanced weights.

    Returns:
        float64 array of one weight per class.

    Raises:
        ValueError: ``power`` is not a positive finite number, or as :func:`balanced_weights`.
    """
    if not (math.isfinite(power) and power > 0):
        raise ValueError(f"power must be a positive number (the paper's is 1/3), got {power}.")
    return balanced_weights(counts) ** power


def _label_paths(value) -> list[str]:
    """The label file(s) of one datalist entry.

    Returns:
        the paths.
    """
    return [os.fspath(value)] if isinstance(value, (str, PathLike)) else [os.fspath(v) for v in value]


def write_class_weights(
    datalist: str | PathLike,
    key: str = "training",
    n_classes: int = 12,
    out: str | PathLike | None = None,
    ignore_value: int | None = None,
) -> Path:
    """Count the classes of a datalist's labels and write both weightings to a JSON file beside it.

    The file holds ``counts``, ``balanced`` and ``attenuated`` (one entry per class), ``n_classes``, the
    ``datalist`` path, its ``datalist_key``, its ``datalist_sha256`` (so that :func:`load_class_weights` detects
    weights of an older datalist), ``ignore_value``, ``attenuation_power`` and the ``command`` that wrote it. It is
    written atomically: an interrupted run leaves the previous file (or none).

    Args:
        datalist: an MSD-style JSON datalist (read with :func:`common.data.load_datalist`).
        key: the list whose labels are counted: the training set, as in the paper.
        n_classes: number of classes including background (12 for the head CT bundle).
        out: the JSON file; default ``<datalist folder>/class_weights.json``.
        ignore_value: a label value marking unannotated voxels, not counted.

    Returns:
        the path of the written file.

    Raises:
        BundleInputError: the datalist, an entry or a label file is bad (naming it).
        ValueError: a class has no voxel, or a bad argument (as :func:`count_classes` and
            :func:`balanced_weights`).
    """  # noqa: DOC502 (raised by the datalist reader, count_classes and balanced_weights)
    entries = load_datalist(datalist, key, required_keys=("label",))
    files = [p for entry in entries for p in _label_paths(entry["label"])]
    counts = count_classes(files, n_classes, ignore_value)
    balanced = balanced_weights(counts)
    attenuated = attenuated_weights(counts)
    path = Path(out) if out is not None else default_weights_path(datalist)
    content = {
        "n_classes": int(n_classes),
        "counts": [int(c) for c in counts],
        "balanced": [float(w) for w in balanced],
        "attenuated": [float(w) for w in attenuated],
        "attenuation_power": ATTENUATION_POWER,
        "ignore_value": ignore_value,
        "datalist": os.path.abspath(datalist),
        "datalist_key": key,
        "datalist_sha256": _sha256(datalist),
        "n_label_files": len(files),
        "command": _command(datalist, n_classes, out)
        + (f" --key {key}" if key != "training" else "")
        + (f" --ignore_value {ignore_value}" if ignore_value is not None else ""),
    }
    with atomic_path(path, suffix=".json") as tmp:
        Path(tmp).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    return path


def _read_weights_file(path: Path) -> dict:
    """Read a class weights JSON file.

    Returns:
        its object.

    Raises:
        BundleInputError: not UTF-8, not valid JSON, or not a JSON object.
    """
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleInputError(path, f"a file that is not valid JSON ({e})", EXPECTED_WEIGHTS) from e
    if not isinstance(content, dict):
        raise BundleInputError(path, f"a JSON {type(content).__name__} at the top level", EXPECTED_WEIGHTS)
    return content


def load_class_weights(
    path: str | PathLike,
    scheme: str = "attenuated",
    n_classes: int | None = None,
    datalist: str | PathLike | None = None,
) -> list[float]:
    """The class weights of a training config, from the file :func:`write_class_weights` wrote.

    Args:
        path: the ``class_weights.json`` file.
        scheme: ``"attenuated"`` (the paper's final Model 3), ``"balanced"`` (Model 2) or ``"none"`` (Model 4: all
            ones; with ``n_classes`` given, the file is not read and need not exist).
        n_classes: the number of classes the network predicts; a file computed for another number is refused.
        datalist: the training datalist; a file computed from a different version of it (another SHA-256) is
            refused, and a missing file's message names the exact command with this datalist.

    Returns:
        one weight per class, background first, as Python floats (e.g. for ``torch.tensor`` in the config).

    Raises:
        FileNotFoundError: no file at ``path``; the message gives the command that writes it.
        BundleInputError: the file is not valid JSON, lacks the scheme's weights, holds weights that are not finite
            and positive, was computed for another ``n_classes`` or from another version of ``datalist`` (the
            message says to rerun the command).
        ValueError: an unknown ``scheme``.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {list(SCHEMES)} (the paper's Table 1), got {scheme!r}.")
    if scheme == "none" and n_classes is not None:
        return [1.0] * int(n_classes)
    path = Path(path)
    command = _command(datalist, n_classes, path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no class weights file. Compute the weights from the training labels first, with: {command}"
        )
    content = _read_weights_file(path)
    if datalist is not None:
        recorded, current = content.get("datalist_sha256"), _sha256(datalist)
        if recorded != current:
            raise BundleInputError(
                path,
                f"weights computed from another version of {datalist} (datalist sha256 {recorded}, now {current})",
                f"weights of the current datalist: rerun {command}",
            )
    size = content.get("n_classes")
    if n_classes is not None and size != int(n_classes):
        raise BundleInputError(
            path, f"weights for n_classes {size}", f"weights for n_classes {int(n_classes)}: rerun {command}"
        )
    if scheme == "none":
        if not isinstance(size, int) or size < 2:
            raise BundleInputError(path, f"n_classes {size!r}", f"an integer of at least 2; rerun {command}")
        return [1.0] * size
    weights = content.get(scheme)
    ok = isinstance(weights, list) and len(weights) == size and len(weights) >= 2
    ok = ok and all(isinstance(w, (int, float)) and math.isfinite(w) and w > 0 for w in weights)
    if not ok:
        raise BundleInputError(
            path,
            f"'{scheme}': {weights!r} (n_classes {size!r})",
            f"n_classes finite positive '{scheme}' weights; rerun {command}",
        )
    return [float(w) for w in weights]


def _table(path: Path) -> str:
    """The written file's weights as a text table.

    Returns:
        one line per class after a header line.
    """
    content = json.loads(path.read_text(encoding="utf-8"))
    lines = [f"wrote {path}", f"{'class':>5} {'voxels':>14} {'balanced':>12} {'attenuated':>12}"]
    for c, (n, b, a) in enumerate(zip(content["counts"], content["balanced"], content["attenuated"], strict=True)):
        lines.append(f"{c:>5} {n:>14} {b:>12.6g} {a:>12.6g}")
    return "\n".join(lines)


def class_weights_command(
    datalist: str,
    n_classes: int = 12,
    key: str = "training",
    out: str | None = None,
    ignore_value: int | None = None,
) -> str:
    """Write the class weights of a datalist's labels (:func:`write_class_weights`) and return them as a table.

    Example: ``python -m common.data.class_weights data/dataset.json --n_classes 12``.

    Args:
        datalist: the JSON datalist.
        n_classes: number of classes including background.
        key: the datalist list whose labels are counted.
        out: the JSON file; default ``<datalist folder>/class_weights.json``.
        ignore_value: a label value marking unannotated voxels, not counted.

    Returns:
        the path written and one line per class: voxels, balanced and attenuated weight (``fire`` prints it).
    """
    return _table(write_class_weights(datalist, key=key, n_classes=n_classes, out=out, ignore_value=ignore_value))


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line: ``python -m common.data.class_weights DATALIST --n_classes 12 [--key] [--out]``.

    Args:
        argv: the arguments after the program name; None reads ``sys.argv``.

    Raises:
        SystemExit: with ``error: <message>`` (exit status 1) when the datalist, a label or an argument is bad.
    """
    import fire

    try:
        fire.Fire(class_weights_command, command=None if argv is None else list(argv))
    except (ValueError, TypeError, OSError) as err:
        raise SystemExit("error: " + " ".join(str(err).split())) from None


if __name__ == "__main__":
    main()
