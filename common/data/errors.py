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

__all__ = ["BundleInputError", "find_bundle_input_error"]


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
