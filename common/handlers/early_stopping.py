"""Soft Dice validation metric and the paper's early-stopping rule (head CT paper, "Model Training").

"We monitored validation loss and per-class soft Dice coefficients, which were the Dice coefficients of predicted
softmax class probabilities before thresholding. We stopped training when the average soft Dice coefficient
decreased by less than 0.001 over five consecutive epochs" (Keras 2.2.4). Two pieces implement it:

* :class:`SoftDiceMetric` / :class:`MeanSoftDice`: per case and class, ``2 Σ p g / (Σ p + Σ g)`` with ``p`` the
  softmax probability of the class and ``g`` the one-hot reference, reduced like MONAI's ``MeanDice``. MONAI has no
  soft Dice metric: ``monai.metrics.DiceMetric``/``compute_dice``/``DiceHelper`` binarise ``y_pred`` (an argmax, a
  0.5 threshold, or ``y_pred[b, c].bool()`` for multi-channel input, which makes every non-zero probability a 1), so
  on softmax outputs they give the Dice of the support, not the soft Dice. ``1 - monai.losses.DiceLoss(
  smooth_nr=0, smooth_dr=0, reduction="none")`` is the same quantity per case and class (the tests check it), but
  a loss is no cumulative metric with MONAI's empty-reference rule (NaN, left out of the mean).
* :class:`SoftDicePlateauStopping`: Ignite's ``EarlyStopping`` on the mean soft Dice, with the rule below, as a
  MONAI-style handler (``attach(evaluator)``, the trainer given at construction or later with ``set_trainer``, as
  ``monai.handlers.EarlyStopHandler``).

The stopping rule, precisely: the first validation's mean soft Dice is the reference ``best``. A later validation
*improves* when its score exceeds ``best`` by more than ``min_delta`` (``score > best + 0.001``); it then becomes
``best`` and the count of non-improving validations restarts at 0. Any other validation (a gain of at most 0.001, or
a drop) leaves ``best`` unchanged and adds 1 to the count; when the count reaches ``patience`` (5) the trainer is
terminated, so the run ends after that epoch. With scores 0.500, then five times 0.5009 the run stops after the
sixth validation; 0.5011 at the second would have restarted the count. Because ``best`` moves only on an
improvement, small gains add up: 0.5006 then 0.5012 is an improvement at the second step (0.0012 over 0.500).
This is Keras's ``EarlyStopping(min_delta=0.001, patience=5, mode="max")`` (the paper's framework:
``current - min_delta > best``, ``best`` updated only then, stop when ``wait >= patience``), i.e. Ignite's
``EarlyStopping(threshold=0.001, cumulative=True)``. The paper's "decreased by less than 0.001" can only mean this
for a score that should increase. Ignite's ``cumulative=False`` (MONAI's ``EarlyStopHandler`` default) would instead
move ``best`` on every small gain, so a slow steady climb of 0.0009 per epoch would stop the run. The count is of
validations: with the paper's validation after every epoch (``val_interval`` 1) they are epochs. The counter is not
checkpointed: a resumed run starts counting afresh.

Bundle config recipe (a soft Dice on the probabilities, then the usual discrete postprocessing; the stopping handler
gets the trainer in ``initialize`` because trainer and evaluator refer to each other, which a config cannot express
directly)::

    "postprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "Activationsd", "keys": "pred", "softmax": true},
        {"_target_": "CopyItemsd", "keys": "pred", "names": "pred_prob"},
        {"_target_": "AsDiscreted", "keys": ["pred", "label"], "argmax": [true, false], "to_onehot": "@num_classes"}]},
    "validate": {
        "additional_metrics": {"val_soft_dice": {
            "_target_": "common.handlers.early_stopping.MeanSoftDice", "include_background": false,
            "output_transform": "$monai.handlers.from_engine(['pred_prob', 'label'])"}},
        "early_stopping": {"_target_": "common.handlers.early_stopping.SoftDicePlateauStopping",
                           "metric_name": "val_soft_dice", "patience": 5, "min_delta": 0.001},
        "handlers": ["@validate#early_stopping", ...]},
    "initialize": ["$@validate#early_stopping.set_trainer(@train#trainer)", ...]

(with ``"$import common.handlers.early_stopping"`` in the config's ``imports``). Under ``torch.distributed`` the
metric gathers every rank's cases (MONAI's cumulative buffers), so every rank sees the same score and stops at the
same epoch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from ignite.engine import Engine
from ignite.handlers import EarlyStopping
from monai.handlers import EarlyStopHandler, IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction
from monai.networks.utils import one_hot
from monai.utils import MetricReduction

__all__ = ["MeanSoftDice", "SoftDiceMetric", "SoftDicePlateauStopping", "soft_dice"]

_TOLERANCE = 1e-4  # how far outside [0, 1] a probability may stray (float rounding of a softmax)


def soft_dice(y_pred: torch.Tensor, y: torch.Tensor, include_background: bool = False, ignore_empty: bool = True):
    """Soft Dice per case and class: ``2 Σ p g / (Σ p + Σ g)`` over the spatial axes (paper "Model Training").

    Args:
        y_pred: class probabilities ``[B, C, *spatial]`` (softmax output, before any argmax or threshold).
        y: the reference, one-hot ``[B, C, *spatial]`` or class indices ``[B, 1, *spatial]``.
        include_background: keep channel 0.
        ignore_empty: NaN for a class absent from a case's reference (MONAI's ``DiceMetric`` rule, left out of the
            means); otherwise its soft Dice is 0 (1 when the probabilities sum to 0 as well).

    Returns:
        float tensor ``[B, C]`` (``[B, C - 1]`` without background).

    Raises:
        ValueError: ``y_pred`` has fewer than two channels or values outside [0, 1] (logits, or an argmax: soft Dice
            needs the probabilities), or ``y`` does not match it.
    """
    if y_pred.ndim < 3 or y_pred.shape[1] < 2:
        raise ValueError(
            f"y_pred must be class probabilities [B, C, *spatial] with C >= 2 (the softmax output before any argmax), "
            f"got shape {tuple(y_pred.shape)}."
        )
    p = y_pred.float()
    if p.numel() and (float(p.min()) < -_TOLERANCE or float(p.max()) > 1 + _TOLERANCE):
        raise ValueError(
            f"y_pred must hold probabilities in [0, 1], got values in [{float(p.min()):.4g}, {float(p.max()):.4g}]: "
            "apply a softmax first (SoftDiceMetric(softmax=True), or Activationsd(softmax=True) in postprocessing)."
        )
    n_classes = p.shape[1]
    if y.ndim == p.ndim and y.shape[1] == 1 and y.shape[2:] == p.shape[2:]:
        values = y.long()
        if values.numel() and (int(values.min()) < 0 or int(values.max()) >= n_classes):
            raise ValueError(
                f"y's class indices must be in 0..{n_classes - 1}, got {int(values.min())}..{int(values.max())}."
            )
        g = one_hot(values, n_classes, dim=1, dtype=torch.float32)
    elif y.shape == p.shape:
        g = y.float()
    else:
        raise ValueError(
            f"y must be one-hot {tuple(p.shape)} or class indices {(p.shape[0], 1, *p.shape[2:])}, "
            f"got shape {tuple(y.shape)}."
        )
    if not include_background:
        p, g = p[:, 1:], g[:, 1:]
    axes = tuple(range(2, p.ndim))
    intersection = (p * g).sum(dim=axes)
    sum_p, sum_g = p.sum(dim=axes), g.sum(dim=axes)
    denominator = sum_p + sum_g
    dice = torch.where(denominator > 0, 2.0 * intersection / denominator.clamp_min(1e-12), torch.ones_like(sum_p))
    if ignore_empty:
        dice = torch.where(sum_g > 0, dice, torch.full_like(dice, float("nan")))
    return dice


class SoftDiceMetric(CumulativeIterationMetric):
    """Soft Dice of softmax probabilities per case and class, as a MONAI cumulative metric (paper "Model Training").

    Each call buffers :func:`soft_dice` of the batch (``[B, C]``); ``aggregate`` reduces the buffer like MONAI's
    ``DiceMetric`` (``reduction``, NaN for a class absent from a case's reference left out), so with the default
    ``"mean"`` it is the mean over cases of the mean over classes.

    Args:
        include_background: score channel 0 too (the paper's "average soft Dice" is taken over the 11 structures
            here, as the bundles' ``MeanDice``).
        softmax: apply a softmax over the channels first (for logits); default: ``y_pred`` holds probabilities.
        ignore_empty: as for :func:`soft_dice`.
        reduction: MONAI metric reduction of ``aggregate``.
        get_not_nans: ``aggregate`` also returns the count of non-NaN values.
    """

    def __init__(
        self,
        include_background: bool = False,
        softmax: bool = False,
        ignore_empty: bool = True,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__()
        self.include_background = include_background
        self.softmax = softmax
        self.ignore_empty = ignore_empty
        self.reduction = reduction
        self.get_not_nans = get_not_nans

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """Soft Dice of one batch.

        Args:
            y_pred: probabilities (or logits with ``softmax``) ``[B, C, *spatial]``.
            y: reference, one-hot or class indices.

        Returns:
            ``[B, C]`` soft Dice values.

        Raises:
            ValueError: no reference, or as :func:`soft_dice`.
        """
        if y is None:
            raise ValueError("SoftDiceMetric needs the reference y.")
        if self.softmax:
            y_pred = torch.softmax(y_pred.float(), dim=1)
        return soft_dice(y_pred, y, self.include_background, self.ignore_empty)

    def aggregate(self, reduction: MetricReduction | str | None = None):
        """Reduce the buffered per-case, per-class soft Dice values.

        Args:
            reduction: overrides ``self.reduction``.

        Returns:
            the reduced value (and the count of non-NaN values with ``get_not_nans``).

        Raises:
            ValueError: nothing was buffered.
        """
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError(f"SoftDiceMetric has no values to aggregate (buffer {type(data).__name__}).")
        f, not_nans = do_metric_reduction(data, reduction or self.reduction)
        return (f, not_nans) if self.get_not_nans else f


class MeanSoftDice(IgniteMetricHandler):
    """Ignite metric handler of :class:`SoftDiceMetric`, used like MONAI's ``MeanDice`` (paper "Model Training").

    Give it the softmax probabilities, not the argmax: ``output_transform`` picks them from the engine output (see
    the module's config recipe, which copies them to ``pred_prob`` before the discrete postprocessing). With
    ``save_details`` the per-case, per-class values land in ``engine.state.metric_details[<name>]``, where
    :class:`common.handlers.PerClassMetrics` reads them (the paper's per-class soft Dice).

    Args:
        include_background: score channel 0 too.
        softmax: apply a softmax first (the engine output holds logits).
        ignore_empty: NaN for a class absent from a case's reference.
        reduction: MONAI metric reduction over cases and classes.
        output_transform: engine output -> ``(y_pred, y)``.
        save_details: keep the per-case values in ``engine.state.metric_details``.
    """

    def __init__(
        self,
        include_background: bool = False,
        softmax: bool = False,
        ignore_empty: bool = True,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = SoftDiceMetric(
            include_background=include_background, softmax=softmax, ignore_empty=ignore_empty, reduction=reduction
        )
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)


class SoftDicePlateauStopping(EarlyStopHandler):
    """Stop training when the mean validation soft Dice stops improving by more than 0.001 (paper "Model Training").

    The rule (module note): a validation improves when its score exceeds the best score so far by more than
    ``min_delta``; after ``patience`` validations in a row without one, the trainer is terminated. This is Ignite's
    ``EarlyStopping(patience, threshold=min_delta, cumulative=True)``, run at the evaluator's ``EPOCH_COMPLETED``
    (after its metrics are computed) on ``engine.state.metrics[metric_name]``.

    Args:
        metric_name: the evaluator metric holding the mean soft Dice (a :class:`MeanSoftDice`).
        patience: validations without improvement before stopping.
        min_delta: the smallest gain over the best score that counts as an improvement (it must be exceeded).
        trainer: the trainer to stop; ``None``: give it with :meth:`set_trainer` before training (a bundle config
            does it in ``initialize``, trainer and evaluator referring to each other).

    Raises:
        ValueError: ``patience < 1`` or a negative ``min_delta``.
    """

    def __init__(
        self,
        metric_name: str = "val_soft_dice",
        patience: int = 5,
        min_delta: float = 0.001,
        trainer: Engine | None = None,
    ) -> None:
        if int(patience) < 1:
            raise ValueError(f"patience must be at least 1 (validations without improvement), got {patience}.")
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}.")
        self.metric_name = str(metric_name)
        super().__init__(
            patience=int(patience),
            score_function=self._score,
            trainer=trainer,
            min_delta=float(min_delta),
            cumulative_delta=True,
            epoch_level=True,
        )

    def _score(self, engine: Engine) -> float:
        """The mean soft Dice of the validation that just ended.

        Args:
            engine: the evaluator.

        Returns:
            ``engine.state.metrics[metric_name]`` as a float.

        Raises:
            KeyError: the evaluator has no such metric (the message lists those it has).
        """
        metrics = engine.state.metrics
        if self.metric_name not in metrics:
            raise KeyError(
                f"SoftDicePlateauStopping: the evaluator has no metric {self.metric_name!r} (it has "
                f"{sorted(metrics)}); attach a MeanSoftDice under that name."
            )
        return float(metrics[self.metric_name])

    def set_trainer(self, trainer: Engine) -> None:
        """Set the trainer that is stopped (MONAI's ``EarlyStopHandler`` protocol), with Ignite 0.5.5's names.

        Args:
            trainer: the trainer engine.
        """
        self._handler = EarlyStopping(
            patience=self.patience,
            score_function=self.score_function,
            trainer=trainer,
            threshold=self.min_delta,
            cumulative=self.cumulative_delta,
        )

    @property
    def counter(self) -> int:
        """Validations in a row without improvement so far (0 before the trainer is set)."""
        return 0 if self._handler is None else self._handler.counter

    @property
    def best_score(self) -> float | None:
        """The score improvements are measured from (``None`` before the first validation)."""
        return None if self._handler is None else self._handler.best_score

    def __call__(self, engine: Engine) -> None:
        """Score the validation that just ended and terminate the trainer on a plateau.

        Args:
            engine: the evaluator, at ``EPOCH_COMPLETED``.

        Raises:
            RuntimeError: no trainer was given.
        """
        if self._handler is None:
            raise RuntimeError(
                "SoftDicePlateauStopping has no trainer: pass trainer=... or call set_trainer(trainer) before training "
                '(in a bundle config: "initialize": ["$@validate#early_stopping.set_trainer(@train#trainer)"]).'
            )
        self._handler(engine)
