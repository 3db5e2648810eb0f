"""Cross-validation folds of a datalist (Kayalıbay et al. 2017, section 3.2.2: 6 folds on hand MRI, 5 on BraTS).

The paper compares networks "averaged over 6 cross-validation folds" on the 30 hand volumes (20 training, 5
validation, 5 test per fold) and reports BraTS over 5 folds, without saying how the folds were drawn. The rule here
is fixed and documented, so that a fold number means the same cases on every machine:

1. the cases are the datalist's ``keys`` lists concatenated in that order (by default ``training``, ``validation``,
   ``test``: every labelled case), each in its listed order; no shuffling (shuffle the datalist once, yourself, if
   its order is meaningful, e.g. sorted by patient);
2. they are cut into ``n_folds`` contiguous blocks of (almost) equal size, as ``numpy.array_split`` does (the
   first ``n % n_folds`` blocks have one case more);
3. fold ``k`` tests on block ``k``, validates on block ``(k + 1) % n_folds`` and trains on all other blocks.

For 30 hand volumes and 6 folds: 5 test, 5 validation and 20 training cases per fold, as the paper's split; every
case is tested exactly once over the folds. ``fold=None`` keeps the datalist's own lists (the paper's single split).
A bundle config uses it as ``"train_data": "$common.data.fold_cases(@datalist, @fold, @n_folds, 'training')"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

import numpy as np

from .datalist import load_datalist

__all__ = ["SPLITS", "fold_cases", "fold_indices"]

SPLITS = ("training", "validation", "test")


def fold_indices(n_cases: int, fold: int, n_folds: int) -> dict[str, list[int]]:
    """The case indices of each split of ``fold`` (the rule in the module docstring).

    Args:
        n_cases: the number of pooled cases.
        fold: the fold, ``0 <= fold < n_folds``.
        n_folds: the number of folds (at least 3: one block each for testing and validation, the rest training).

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``, indices into the pooled cases, ascending.

    Raises:
        ValueError: ``n_folds < 3``, ``fold`` out of range, or fewer cases than folds.
    """
    if int(n_folds) < 3:
        raise ValueError(f"n_folds must be at least 3 (test, validation and training blocks), got {n_folds}.")
    if not 0 <= int(fold) < int(n_folds):
        raise ValueError(f"fold must be in 0..{int(n_folds) - 1} for {n_folds} folds, got {fold}.")
    if n_cases < n_folds:
        raise ValueError(f"{n_cases} cases cannot be split into {n_folds} folds.")
    blocks = [b.tolist() for b in np.array_split(np.arange(n_cases), int(n_folds))]
    test, validation = int(fold), (int(fold) + 1) % int(n_folds)
    training = [i for k, block in enumerate(blocks) if k not in (test, validation) for i in block]
    return {"training": training, "validation": blocks[validation], "test": blocks[test]}


def fold_cases(
    datalist: str | PathLike,
    fold: int | None,
    n_folds: int,
    split: str,
    keys: Sequence[str] = SPLITS,
) -> list[dict]:
    """The entries of one split of a cross-validation fold, or the datalist's own list when ``fold`` is None.

    Args:
        datalist: the MSD-style JSON datalist (read with :func:`common.data.load_datalist`, paths checked).
        fold: the fold (``0..n_folds-1``), or None for the datalist's ``split`` list as it is.
        n_folds: the number of folds.
        split: ``"training"``, ``"validation"`` or ``"test"``.
        keys: the datalist lists pooled for the folds, in order.

    Returns:
        the split's entries, with absolute paths.

    Raises:
        ValueError: an unknown ``split`` or a bad fold (see :func:`fold_indices`).
        BundleInputError: the datalist or one of ``keys`` is missing or malformed (naming the file).
    """  # noqa: DOC502 (raised by load_datalist; part of this function's interface)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}.")
    if fold is None or fold == "None":
        return load_datalist(datalist, split)
    cases = [entry for key in keys for entry in load_datalist(datalist, key)]
    return [cases[i] for i in fold_indices(len(cases), int(fold), int(n_folds))[split]]
