"""Batch inference that writes the good inputs and reports the bad ones (the ``skip_bad_inputs`` switch).

By default a bundle stops at the first bad input and writes nothing (BUNDLE_CONTRACT.md, "Errors"). A hospital's
batch export often holds a few bad series among hundreds of good ones; with ``skip_bad_inputs`` the run

1. sorts the listed inputs into good and bad with the header preflight (:py:func:`~common.data.datalist.
   preflight_partition`), before the run, so no time is spent on a case known to be bad;
2. runs the good ones; a case that fails only when its voxels are read (NaN intensities, a file truncated after its
   header) is caught by :py:class:`SkipBadCase` around the dataset's transform and passed on as a placeholder that
   :py:meth:`InputTriage.iteration` skips, so nothing is written for it;
3. publishes the good label maps (``StagedOutputs``), then raises :py:class:`~common.data.errors.SkippedInputsError`
   naming every bad file, so the run still exits with a non-zero status.

In a config::

    "input_triage": "$common.data.InputTriage(skip_bad_inputs=@skip_bad_inputs)",
    "dataset": {"_target_": "Dataset", "data": "$@input_triage.check(common.data.list_inputs(@input), ...)",
                "transform": "$@input_triage.guard(@preprocessing)"},
    "evaluator": {..., "iteration_update": "$@input_triage.iteration"},
    "run": ["$@evaluator.run()", "$@input_triage.raise_if_any()"]

Without ``skip_bad_inputs`` each piece passes through: the preflight raises on the first bad case, the transform is
not wrapped, and the iteration is the evaluator's own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from monai.transforms import Transform

from .datalist import preflight_check, preflight_partition
from .errors import BundleInputError, SkippedInputsError, find_bundle_input_error
from .switches import as_bool

__all__ = ["BAD_INPUT_KEYS", "InputTriage", "SkipBadCase"]

logger = logging.getLogger(__name__)

BAD_INPUT_KEYS = ("bad_input", "bad_input_found", "bad_input_expected")
"""The keys of the placeholder that stands for a case that failed to load: its file, what was found and expected."""


class SkipBadCase(Transform):
    """Run a transform chain; for a case whose input is bad, return a placeholder instead of raising.

    Only a :py:class:`~common.data.errors.BundleInputError` (found anywhere in the chain of MONAI's wrapping
    ``RuntimeError``) is turned into a placeholder; any other error propagates. The placeholder holds only strings
    (see :py:data:`BAD_INPUT_KEYS`), so it crosses DataLoader workers and collates into a batch of its own kind.

    Args:
        transform: the chain to run, e.g. the inference ``preprocessing``.
        image_key: the key of the image path, named when the error names no file.
    """

    def __init__(self, transform: Callable, image_key: str = "image") -> None:
        self.transform = transform
        self.image_key = image_key

    def __call__(self, data: Mapping) -> Any:
        """Apply the transform, or return the placeholder of a bad case.

        Args:
            data: one case.

        Returns:
            the transformed case, or ``{"bad_input": <file>, "bad_input_found": ..., "bad_input_expected": ...}``.

        Raises:
            Exception: any error of the transform that is not a bad input, unchanged.
        """  # noqa: DOC502 (re-raised from the transform)
        try:
            return self.transform(data)
        except Exception as e:
            err = find_bundle_input_error(e)
            if err is None:
                raise
            path = err.path if err.path is not None else str(data.get(self.image_key))
            logger.warning("bad input, skipped: %s", err)
            return dict(zip(BAD_INPUT_KEYS, (path, err.found, err.expected), strict=True))


def is_bad_input_batch(batch: Any) -> bool:
    """Tell whether a batch is the placeholder of a case that failed to load.

    Args:
        batch: a batch from the data loader.

    Returns:
        ``True`` for a placeholder batch.
    """
    return isinstance(batch, Mapping) and BAD_INPUT_KEYS[0] in batch


class InputTriage:
    """Sort a batch inference run's inputs into good and bad; with ``skip_bad_inputs``, run the good ones.

    See the module docstring for the config. One object per run: :py:meth:`check` (the preflight) resets it.

    Args:
        skip_bad_inputs: run the good inputs and report the bad ones at the end, instead of stopping at the first
            bad one (a bool, or "true"/"false" as the command line gives it); the data loader must then use
            ``batch_size=1`` (a placeholder does not collate with a case).
        image_key: the key of the image path(s) in each entry.

    Attributes:
        errors: the bad inputs found so far, one error each.

    Raises:
        ValueError: ``skip_bad_inputs`` is not a yes/no value.
    """

    def __init__(self, skip_bad_inputs: bool = False, image_key: str = "image") -> None:
        self.skip_bad_inputs = as_bool(skip_bad_inputs, "skip_bad_inputs")
        self.image_key = image_key
        self.errors: list[BundleInputError] = []
        self.n_inputs = 0
        self._inputs: list = []

    def check(self, data: Sequence[Mapping], **kwargs) -> Sequence[Mapping]:
        """Run the header preflight over the listed inputs.

        Args:
            data: the entries, e.g. from :py:func:`~common.data.inputs.list_inputs`.
            kwargs: the keyword arguments of :py:func:`~common.data.datalist.preflight_check` (``image_key`` is
                this object's).

        Returns:
            without ``skip_bad_inputs``, ``data`` unchanged (the preflight raised on the first bad entry); with it,
            the good entries.

        Raises:
            BundleInputError: without ``skip_bad_inputs``, for the first bad entry.
            SkippedInputsError: with it, when no entry is good (there is nothing to run).
        """  # noqa: DOC502 (the BundleInputError comes from preflight_check)
        kwargs.setdefault("image_key", self.image_key)
        self.errors, self.n_inputs = [], len(data)
        self._inputs = [entry.get(self.image_key) if isinstance(entry, Mapping) else None for entry in data]
        if not self.skip_bad_inputs:
            return preflight_check(data, **kwargs)
        good, bad = preflight_partition(data, **kwargs)
        self.errors = [e for _, e in bad]
        if not good:
            raise SkippedInputsError(self.errors, self.n_inputs, 0)
        return good

    def guard(self, transform: Callable) -> Callable:
        """Wrap the dataset's transform so that a case failing to load becomes a placeholder (``skip_bad_inputs``).

        Args:
            transform: the dataset's transform chain.

        Returns:
            ``transform`` itself without ``skip_bad_inputs``, else a :py:class:`SkipBadCase` around it.
        """
        return SkipBadCase(transform, self.image_key) if self.skip_bad_inputs else transform

    def iteration(self, engine, batch: Any) -> Any:
        """An evaluator's ``iteration_update``: record a placeholder batch and skip it, else run the evaluator's own.

        Args:
            engine: a MONAI ``SupervisedEvaluator``.
            batch: the batch.

        Returns:
            the evaluator's output, or an empty dict for a placeholder (no model run, no postprocessing: nothing is
            written for the case).
        """
        if not is_bad_input_batch(batch):
            return engine._iteration(engine, batch)
        for path, found, expected in zip(*(batch[k] for k in BAD_INPUT_KEYS), strict=True):
            self.errors.append(BundleInputError(path, found, expected))
        return {}

    def raise_if_any(self) -> None:
        """End a run: raise when bad inputs were skipped, so the run exits with a non-zero status.

        Raises:
            SkippedInputsError: naming every bad input, after the good ones were written.
        """
        if self.errors:
            errors = sorted(self.errors, key=self._input_index)
            raise SkippedInputsError(errors, self.n_inputs, self.n_inputs - len(self.errors))

    def _input_index(self, err: BundleInputError) -> int:
        """Position of the input an error is about, so the final list follows the inputs' order.

        Args:
            err: the error; its path is the input, a file of a listed series folder, or one of stacked files.

        Returns:
            the input's index, or the number of inputs when it is none of them.
        """
        for i, value in enumerate(self._inputs):
            paths = [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
            if any(err.path == p or (err.path or "").startswith(p.rstrip(os.sep) + os.sep) for p in paths):
                return i
        return len(self._inputs)
