"""The five cross-validation models as one ensemble (Kayalıbay et al. 2017, section 4.2).

"The five networks obtained in this way were then used as an ensemble to segment the BRATS 2015 test set." The paper
does not say how the members were combined; as in MONAI's ensemble tutorials and ``MeanEnsembled``, the members'
softmax probabilities are averaged and the mean is argmax-ed. The bundle runs the members with MONAI's
``EnsembleEvaluator`` (one ``pred_<k>`` per member) and averages with ``MeanEnsembled``; this module only says which
checkpoints form the ensemble and loads them.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import torch
from ignite.handlers import Checkpoint

from common.data.folds import no_fold
from common.data.inputs import require_file

__all__ = ["ensemble_members", "fold_dir", "load_networks"]

logger = logging.getLogger(__name__)


def fold_dir(root: str | PathLike, fold: int | None) -> str:
    """The folder of one fold's checkpoints or results: ``root`` itself without a fold, else ``root/fold<k>``.

    Args:
        root: the bundle's models (or eval) folder.
        fold: the fold, or None (also the string ``"None"``, as a command line gives it).

    Returns:
        the folder path.
    """
    if no_fold(fold):
        return str(root)
    return str(Path(root) / f"fold{int(fold)}")


def ensemble_members(
    ckpt_file: str | PathLike, models_dir: str | PathLike, n_folds: int, ensemble: bool = True, name: str = "model.pt"
) -> list[str]:
    """The checkpoints an inference uses: every fold's model when all ``n_folds`` exist, else ``ckpt_file`` alone.

    The fold models (``models_dir/fold<k>/<name>``, ``k = 0..n_folds-1``) are used only when ``ensemble`` is true,
    ``ckpt_file`` is the default ``models_dir/<name>`` (a checkpoint named on the command line is used alone) and
    every one of them exists (a half-trained cross-validation does not silently give a smaller ensemble).

    Args:
        ckpt_file: the single model's checkpoint.
        models_dir: the bundle's models folder.
        n_folds: the number of folds.
        ensemble: whether to use the fold models when they exist.
        name: the checkpoint file name in each fold folder.

    Returns:
        the checkpoint paths, one per network.
    """
    members = [str(Path(fold_dir(models_dir, k)) / name) for k in range(int(n_folds))]
    default = Path(ckpt_file).resolve() == (Path(models_dir) / name).resolve()
    if ensemble and default and all(Path(m).is_file() for m in members):
        logger.info("ensemble of the %d fold models in %s", len(members), models_dir)
        return members
    return [str(ckpt_file)]


def load_networks(network: torch.nn.Module, files: Sequence[str | PathLike], device: str | torch.device) -> list:
    """One copy of ``network`` per checkpoint, weights loaded, on ``device``.

    Args:
        network: the architecture (its weights are not used).
        files: checkpoints as ``CheckpointSaver``/``CheckpointLoader`` write and read them (the model's state dict,
            or a dict with a ``"model"`` entry).
        device: where the copies go.

    Returns:
        the networks, in ``files`` order.

    Raises:
        BundleInputError: a checkpoint that does not exist (naming it).
    """  # noqa: DOC502 (raised by require_file)
    networks = []
    for f in files:
        require_file(f, "a trained model: run train.json first")
        net = copy.deepcopy(network).to(device)
        checkpoint = torch.load(str(f), map_location=device, weights_only=True)
        Checkpoint.load_objects(to_load={"model": net}, checkpoint=checkpoint)
        networks.append(net)
    return networks
