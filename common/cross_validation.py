"""Train every cross-validation fold of a bundle in turn (Kayalıbay et al. 2017, sections 3.2.2 and 4.2).

"Training was done on five cross-validation folds ... The five networks obtained in this way were then used as an
ensemble." One command does the five trainings::

    python -m common.cross_validation --config_file "['configs/train.json']" [--folds "[0, 2]"] [--key value ...]

run from the bundle's folder (or with ``--bundle_root``). It first writes the split into the datalist (each pooled
entry's ``"fold"`` field, :func:`common.data.write_folds`; a split already there is kept), then runs
``python -m monai.bundle run --config_file <...> --fold <k> [--key value ...]`` for each fold, one process after
the other (each fold gets a fresh process: its own memory, seed and logs). Each fold writes
``<models>/fold<k>/model.pt``; once all exist, the bundle's inference and evaluation use them as an ensemble. A fold
whose ``model_final.pt`` exists is skipped (``--retrain true`` trains it again), so an interrupted run resumes with
the next unfinished fold. Extra ``--key value`` pairs are passed to every fold's run (e.g. ``--num_epochs 10``).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fire
from monai.bundle import ConfigParser

from common.data.folds import SPLITS, write_folds
from common.data.switches import as_bool

__all__ = ["train_all_folds"]

logger = logging.getLogger(__name__)


def _fold_parser(config_files: Sequence[str], overrides: dict[str, Any], fold: int | None) -> ConfigParser:
    """The merged configs with the overrides and ``fold``.

    Returns:
        the parser.
    """
    parser = ConfigParser()
    parser.read_config(list(config_files))
    parser.update({**overrides, "fold": fold})
    return parser


def train_all_folds(
    config_file: str | Sequence[str],
    folds: Sequence[int] | int | None = None,
    retrain: bool | str = False,
    **overrides: Any,
) -> list[int]:
    """Write the split into the datalist, then train each fold in its own ``monai.bundle run`` process.

    Args:
        config_file: the training config(s), as ``monai.bundle run`` takes them (a file or a list).
        folds: the folds to train; default every fold, ``0..n_folds-1`` (``n_folds`` from the configs).
        retrain: train a fold again even when its ``model_final.pt`` exists.
        overrides: ``--key value`` pairs for every fold's run (and for reading the configs here).

    Returns:
        the folds trained (skipped ones left out).

    Raises:
        subprocess.CalledProcessError: a fold's training failed (the folds after it are not started).
    """  # noqa: DOC502 (raised by subprocess.run(check=True))
    files = [config_file] if isinstance(config_file, str) else [str(f) for f in config_file]
    parser = _fold_parser(files, overrides, None)
    n_folds = int(parser.get_parsed_content("n_folds"))
    keys = parser.get_parsed_content("fold_keys", default=list(SPLITS))
    write_folds(parser.get_parsed_content("datalist"), n_folds, keys)
    chosen = list(range(n_folds)) if folds is None else [int(f) for f in ([folds] if isinstance(folds, int) else folds)]
    trained = []
    for k in chosen:
        ckpt_dir = Path(_fold_parser(files, overrides, k).get_parsed_content("ckpt_dir"))
        if (ckpt_dir / "model_final.pt").is_file() and not as_bool(retrain, "retrain"):
            logger.info("fold %d: %s exists, skipped (--retrain true trains it again)", k, ckpt_dir / "model_final.pt")
            continue
        command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", repr(files), "--fold", str(k)]
        for key, value in overrides.items():
            command += [f"--{key}", value if isinstance(value, str) else repr(value)]
        logger.info("fold %d of %d: %s", k, n_folds, " ".join(command))
        subprocess.run(command, check=True)
        trained.append(k)
    return trained


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    fire.Fire(train_all_folds)
