"""The one error type for bad input, shared by every bundle, and its retrieval from a chain of exceptions.

:py:class:`BundleInputError` is for what a user's files or datalists got wrong (BUNDLE_CONTRACT.md, "Errors");
a bad argument to a function or a transform is a programming mistake and raises ``ValueError`` or ``TypeError``,
as MONAI does.

Inside a :py:class:`monai.transforms.Compose` (and again inside a MONAI ``Dataset``), MONAI's ``apply_transform``
wraps any exception as ``RuntimeError("applying transform ...")`` raised ``from`` the original; ``ConfigParser``
wraps instantiation errors the same way. The ``BundleInputError`` is then the root ``__cause__`` of what propagates:
Python prints it first in the traceback, and :py:func:`find_bundle_input_error` retrieves it. With
``DataLoader(num_workers>0)`` only the text survives the worker: the ``RuntimeError`` raised in the main process
contains the worker's formatted traceback, message included.
"""

from __future__ import annotations

from os import PathLike

__all__ = ["BundleInputError", "SkippedInputsError", "find_bundle_input_error"]


class BundleInputError(ValueError):
    """Bad input to a bundle: names the file, what was found and what was expected.

    The message reads ``"<path>: found <found>; expected <expected>"`` so a user sees the file first. The error is
    picklable, so it crosses DataLoader worker and torchrun process boundaries intact.

    Args:
        path: the offending file (or datalist), or ``None`` when no file is involved.
        found: what was found, e.g. ``"5 channels"``.
        expected: what was expected, e.g. ``"1 channel (CT in HU)"``.

    Attributes:
        path: the offending file as a string, or ``None``.
        found: what was found.
        expected: what was expected.
    """

    def __init__(self, path: str | PathLike | None, found: str, expected: str) -> None:
        self.path = None if path is None else str(path)
        self.found = found
        self.expected = expected
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}found {found}; expected {expected}")

    def __reduce__(self):
        return (type(self), (self.path, self.found, self.expected))


class SkippedInputsError(BundleInputError):
    """The bad inputs of a batch run that skipped them (``skip_bad_inputs``), all named in one error.

    Raised at the end of a run that wrote the label maps of the good inputs, so the run still fails (non-zero exit
    status) and its last lines list every bad file with what was found and what was expected, one line each::

        found 2 bad input(s) of 5, skipped (3 label map(s) written); expected each of them fixed or removed, as its
        line says:
          - /data/b.nii.gz: found 2 channels; expected 1 channel
          - /data/d_series: found slice positions 9.0 ... 15.0 mm (...): a gap of 6.0 mm where ...; expected ...

    Args:
        errors: one :py:class:`BundleInputError` per bad input, in input order.
        n_inputs: how many inputs the run was given.
        n_written: how many label maps it wrote.

    Attributes:
        errors: the errors, one per bad input.
    """

    def __init__(self, errors: list[BundleInputError], n_inputs: int, n_written: int) -> None:
        self.errors = list(errors)
        self.n_inputs = n_inputs
        self.n_written = n_written
        listed = "".join(f"\n  - {e}" for e in self.errors)
        super().__init__(
            None,
            f"{len(self.errors)} bad input(s) of {n_inputs}, skipped ({n_written} label map(s) written)",
            f"each of them fixed or removed, as its line says:{listed}",
        )

    def __reduce__(self):
        return (type(self), (self.errors, self.n_inputs, self.n_written))


def find_bundle_input_error(exc: BaseException | None) -> BundleInputError | None:
    """Find the :py:class:`BundleInputError` behind an exception that propagated.

    MONAI wraps transform and config errors in ``RuntimeError`` (``apply_transform``, ``ConfigExpression.evaluate``,
    ``instantiate``) raised ``from`` the original. The chain is searched breadth first, ``__cause__`` before
    ``__context__`` at each step, so the ``BundleInputError`` nearest to ``exc`` is found; cycles are not followed
    twice.

    Args:
        exc: the exception that propagated, or ``None``.

    Returns:
        ``exc`` itself when it is a ``BundleInputError``, else the nearest one among its causes and contexts, else
        ``None``.
    """
    pending: list[BaseException | None] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        if isinstance(current, BundleInputError):
            return current
        seen.add(id(current))
        pending.extend((current.__cause__, current.__context__))
    return None
