"""Cross-validation folds of a datalist (Kayalıbay et al. 2017, section 3.2.2: 6 folds on hand MRI, 5 on BraTS).

The paper compares networks "averaged over 6 cross-validation folds" on the 30 hand volumes (20 training, 5
validation, 5 test per fold) and reports BraTS over 5 folds of 220 training, 27 validation and 27 test images
(section 3.2.1), without saying how the folds were drawn. The rule here is fixed and documented, so that a fold
number means the same cases on every machine:

1. the cases are the datalist's ``keys`` lists concatenated in that order (by default ``training``, ``validation``,
   ``test``: every labelled case), each in its listed order; no shuffling (shuffle the datalist once, yourself, if
   its order is meaningful, e.g. sorted by patient);
2. they are cut into ``n_folds`` blocks: the blocks the entries' own ``"fold"`` fields name when every pooled entry
   has one (MONAI Auto3DSeg's datalist convention; :func:`write_folds` writes them, and a user may set their own,
   e.g. to keep a patient's scans together), otherwise contiguous blocks of (almost) equal size, as
   ``numpy.array_split`` does (the first ``n % n_folds`` blocks have one case more);
3. fold ``k`` holds out block ``k``. With ``validation="next_block"`` (the hand bundle) it tests on block ``k``,
   validates on block ``(k + 1) % n_folds`` and trains on the others; with ``validation="split_block"`` (the BraTS
   bundle) it tests on the first half of block ``k`` (the larger half when odd), validates on the second half and
   trains on every other block.

For 30 hand volumes, 6 folds, ``next_block``: 5 test, 5 validation and 20 training cases per fold, as the paper's
split; every case is tested exactly once. For the 274 BraTS 2015 training images, 5 folds, ``split_block``: blocks
of 55, 55, 55, 55 and 54 cases, so 28 (27) test, 27 validation and 219 (220) training cases per fold, the paper's
220/27/27 within a case; the five test sets are disjoint. ``fold=None`` keeps the datalist's own lists (the
paper's single split). A bundle config uses it as
``"train_data": "$common.data.fold_cases(@datalist, @fold, @n_folds, 'training')"``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np

from .datalist import load_datalist
from .errors import BundleInputError
from .writers import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["SPLITS", "VALIDATION_RULES", "fold_cases", "fold_indices", "no_fold", "write_folds"]

SPLITS = ("training", "validation", "test")
VALIDATION_RULES = ("next_block", "split_block")
FOLD_FIELD = "fold"


def _split_blocks(blocks: list[list[int]], fold: int, validation: str) -> dict[str, list[int]]:
    """Rule 3 of the module docstring on blocks of case indices.

    Args:
        blocks: ``n_folds`` lists of case indices.
        fold: the held-out block.
        validation: ``"next_block"`` or ``"split_block"``.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``, each ascending.
    """
    n_folds = len(blocks)
    if validation == "next_block":
        test, val = blocks[fold], blocks[(fold + 1) % n_folds]
        held = {fold, (fold + 1) % n_folds}
    else:
        halves = np.array_split(np.asarray(blocks[fold], dtype=int), 2)
        test, val = halves[0].tolist(), halves[1].tolist()
        held = {fold}
    training = sorted(i for k, block in enumerate(blocks) if k not in held for i in block)
    return {"training": training, "validation": sorted(val), "test": sorted(test)}


def _check_rule(fold: int, n_folds: int, validation: str) -> None:
    """Refuse a fold, fold count or validation rule the module's rule cannot use.

    Args:
        fold: the fold.
        n_folds: the number of folds.
        validation: the validation rule.

    Raises:
        ValueError: an unknown rule, too few folds for it, or a fold out of range.
    """
    if validation not in VALIDATION_RULES:
        raise ValueError(f"validation must be one of {list(VALIDATION_RULES)}, got {validation!r}.")
    least = 3 if validation == "next_block" else 2
    if int(n_folds) < least:
        raise ValueError(
            f"n_folds must be at least {least} with validation={validation!r} (test, validation and training "
            f"blocks), got {n_folds}."
        )
    if not 0 <= int(fold) < int(n_folds):
        raise ValueError(f"fold must be in 0..{int(n_folds) - 1} for {n_folds} folds, got {fold}.")


def no_fold(fold: int | str | None) -> bool:
    """Whether ``fold`` means "no fold" (train or infer on the whole split).

    Args:
        fold: a fold index, or None; a command line (``--fold None``) gives the string ``"None"``.

    Returns:
        True for None and ``"None"``.
    """
    return fold is None or fold == "None"


def fold_indices(n_cases: int, fold: int, n_folds: int, validation: str = "next_block") -> dict[str, list[int]]:
    """The case indices of each split of ``fold`` with contiguous blocks (the rule in the module docstring).

    Args:
        n_cases: the number of pooled cases.
        fold: the fold, ``0 <= fold < n_folds``.
        n_folds: the number of folds (at least 3 for ``next_block``, 2 for ``split_block``).
        validation: ``"next_block"`` or ``"split_block"`` (rule 3).

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``, indices into the pooled cases, ascending.

    Raises:
        ValueError: too few folds, ``fold`` out of range, an unknown rule, or fewer cases than folds.
    """
    _check_rule(fold, n_folds, validation)
    if n_cases < n_folds:
        raise ValueError(f"{n_cases} cases cannot be split into {n_folds} folds.")
    blocks = [b.tolist() for b in np.array_split(np.arange(n_cases), int(n_folds))]
    return _split_blocks(blocks, int(fold), validation)


def _pooled(datalist: str | PathLike, keys: Sequence[str], channel_keys: Sequence[str] | None) -> list[dict]:
    """The datalist's ``keys`` lists concatenated (rule 1), read with :func:`load_datalist`.

    Returns:
        the entries, paths absolute.
    """
    return [entry for key in keys for entry in load_datalist(datalist, key, channel_keys=channel_keys)]


def _field_blocks(datalist: str | PathLike, cases: list[dict], n_folds: int) -> list[list[int]] | None:
    """The blocks the entries' ``"fold"`` fields name, or None when no entry has one.

    Returns:
        ``n_folds`` lists of indices into ``cases``, or None.

    Raises:
        BundleInputError: some entries have the field and others not, or a value is not a fold number.
    """
    marked = [FOLD_FIELD in c for c in cases]
    if not any(marked):
        return None
    if not all(marked):
        first = marked.index(False)
        raise BundleInputError(
            datalist,
            f"pooled entry {first} without a '{FOLD_FIELD}' field while {sum(marked)} others have one",
            f"a '{FOLD_FIELD}' field on every pooled entry or on none",
        )
    blocks: list[list[int]] = [[] for _ in range(int(n_folds))]
    for i, c in enumerate(cases):
        value = c[FOLD_FIELD]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < int(n_folds):
            raise BundleInputError(
                datalist,
                f"pooled entry {i} with '{FOLD_FIELD}': {value!r}",
                f"a whole number 0..{int(n_folds) - 1} for {n_folds} folds",
            )
        blocks[value].append(i)
    empty = [k for k, b in enumerate(blocks) if not b]
    if empty:
        raise BundleInputError(
            datalist,
            f"no entry in fold(s) {empty} of its '{FOLD_FIELD}' fields",
            f"at least one case in each of {n_folds} folds (remove the '{FOLD_FIELD}' fields to have them written "
            f"again for {n_folds} folds)",
        )
    return blocks


def fold_cases(
    datalist: str | PathLike,
    fold: int | None,
    n_folds: int,
    split: str,
    keys: Sequence[str] = SPLITS,
    validation: str = "next_block",
    channel_keys: Sequence[str] | None = None,
) -> list[dict]:
    """The entries of one split of a cross-validation fold, or the datalist's own list when ``fold`` is None.

    Args:
        datalist: the MSD-style JSON datalist (read with :func:`common.data.load_datalist`, paths checked).
        fold: the fold (``0..n_folds-1``), or None for the datalist's ``split`` list as it is.
        n_folds: the number of folds.
        split: ``"training"``, ``"validation"`` or ``"test"``.
        keys: the datalist lists pooled for the folds, in order.
        validation: ``"next_block"`` or ``"split_block"`` (rule 3 of the module docstring).
        channel_keys: per-channel file keys gathered into ``"image"`` (see :func:`common.data.load_datalist`).

    Returns:
        the split's entries, with absolute paths.

    Raises:
        ValueError: an unknown ``split`` or a bad fold (see :func:`fold_indices`).
        BundleInputError: the datalist or one of ``keys`` is missing or malformed, or the entries' ``"fold"``
            fields are incomplete or out of range (naming the file).
    """  # noqa: DOC502 (raised by load_datalist; part of this function's interface)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}.")
    if no_fold(fold):
        return load_datalist(datalist, split, channel_keys=channel_keys)
    cases = _pooled(datalist, keys, channel_keys)
    blocks = _field_blocks(datalist, cases, n_folds)
    if blocks is None:
        chosen = fold_indices(len(cases), int(fold), int(n_folds), validation)[split]
    else:
        _check_rule(int(fold), int(n_folds), validation)
        chosen = _split_blocks(blocks, int(fold), validation)[split]
    return [cases[i] for i in chosen]


def write_folds(datalist: str | PathLike, n_folds: int, keys: Sequence[str] = SPLITS) -> Path:
    """Write each pooled entry's fold (its block, rule 2) into the datalist as a ``"fold"`` field.

    The split is then on disk, beside the cases, for every later run and for other tools (Auto3DSeg reads the same
    field). Entries that already carry ``"fold"`` fields are left as they are (a user's own split wins); otherwise
    the contiguous blocks are written. The file is replaced atomically; every other key and value is kept.

    Args:
        datalist: the MSD-style JSON datalist.
        n_folds: the number of folds.
        keys: the pooled lists.

    Returns:
        the datalist's path.

    Raises:
        BundleInputError: the datalist is unreadable, lacks one of ``keys``, or has incomplete ``"fold"`` fields.
        ValueError: fewer pooled cases than folds.
    """  # noqa: DOC502 (BundleInputError raised by load_datalist/_field_blocks)
    path = Path(datalist)
    cases = _pooled(path, keys, None)
    if _field_blocks(path, cases, n_folds) is not None:
        return path
    if len(cases) < int(n_folds):
        raise ValueError(f"{len(cases)} cases cannot be split into {n_folds} folds.")
    content = json.loads(path.read_text(encoding="utf-8"))
    blocks = np.array_split(np.arange(len(cases)), int(n_folds))
    fold_of = {int(i): k for k, block in enumerate(blocks) for i in block}
    index = 0
    for key in keys:
        for entry in content[key]:
            entry[FOLD_FIELD] = fold_of[index]
            index += 1
    with atomic_path(path, suffix=".json") as tmp:
        Path(tmp).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    logger.info("%s: %d cases in %d folds written ('%s' fields)", path, len(cases), n_folds, FOLD_FIELD)
    return path
