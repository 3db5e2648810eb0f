"""Make a failed run's last line the :py:class:`~common.data.errors.BundleInputError`, under the usual traceback.

A bad input stops a bundle with a ``BundleInputError`` that names the file, what was found and what was expected.
MONAI wraps it (``ConfigExpression.evaluate``, ``apply_transform``, ``instantiate`` raise ``RuntimeError ... from``
it), so ``python -m monai.bundle run`` ends 20-30 lines further down with MONAI's generic
``RuntimeError: Failed to evaluate ConfigExpression ...``, the line a user reads. :py:func:`install_error_hook`
installs a ``sys.excepthook`` that lets the previous hook print the traceback unchanged and then, when the uncaught
exception's chain holds a ``BundleInputError``, repeats it as the very last line::

    RuntimeError: Failed to evaluate ConfigExpression: ...

    common.data.errors.BundleInputError: /data/case_7.nii.gz: found 2 channels; expected 1 channel

Nothing else is added: :py:class:`~common.handlers.StagedOutputs` has already logged its one
``run failed: nothing was written to ...`` line, and an exception that is not (or does not wrap) a
``BundleInputError`` is printed exactly as Python prints it.

The bundles install the hook from their configs' ``imports`` (``"$import common.data.show_input_error_last"``, see
:py:mod:`common.data.show_input_error_last`), the first code a config runs.
"""

from __future__ import annotations

import contextlib
import re
import sys
import traceback
from collections.abc import Callable
from types import TracebackType

from .errors import BundleInputError, find_bundle_input_error

__all__ = ["InputErrorHook", "input_error_summary", "install_error_hook"]

_MARKER = "__bundle_input_error_hook__"
"""Attribute that marks the hook (so a reloaded copy of this module still sees it installed) and an exception whose
last line an outer hook prints (so hooks stacked by a third party print it once)."""

# how a BundleInputError reads in a traceback that crossed a process as text (DataLoader workers); the class's own
# module, so an exported bundle's ``scripts.data.errors`` matches too
_QUALIFIED_NAME = f"{BundleInputError.__module__}.{BundleInputError.__qualname__}"
_LINE_IN_TEXT = re.compile(rf"^{re.escape(_QUALIFIED_NAME)}: .*$", re.MULTILINE)

ExceptHook = Callable[[type[BaseException], BaseException, TracebackType | None], object]


def input_error_summary(exc: BaseException | None) -> str | None:
    """The line to print after ``exc``'s traceback: its ``BundleInputError``, when Python's last line is another.

    The ``BundleInputError`` is found in the chain of causes and contexts (:py:func:`find_bundle_input_error`) or,
    when it crossed a DataLoader worker as text (PyTorch re-raises a worker's error as a ``RuntimeError`` holding
    the worker's formatted traceback), as a ``<module>.BundleInputError: ...`` line in the formatted traceback.

    Args:
        exc: the uncaught exception, or ``None``.

    Returns:
        ``"<module>.BundleInputError: <file>: found ...; expected ..."``, or ``None`` when there is none or when it
        already is the traceback's last line (``exc`` itself is the ``BundleInputError``).
    """
    if exc is None:
        return None
    shown = "".join(traceback.format_exception(exc)).rstrip("\n")
    err = find_bundle_input_error(exc)
    if err is not None:
        line = traceback.format_exception_only(err)[0].rstrip("\n")
    else:
        found = _LINE_IN_TEXT.findall(shown)
        if not found:
            return None
        line = found[0]
    return None if shown.endswith(line) else line


class InputErrorHook:
    """``sys.excepthook`` that prints as the previous hook does, then the :py:func:`input_error_summary` line.

    The previous hook prints the traceback (by default Python's own, to ``sys.stderr``); this one then writes an
    empty line and the ``BundleInputError`` line to ``sys.stderr``, and nothing for any other exception. Only the
    outermost of several stacked ``InputErrorHook``s writes the line.

    Args:
        previous: the hook to chain to, e.g. the ``sys.excepthook`` being replaced.
    """

    def __init__(self, previous: ExceptHook) -> None:
        self.previous = previous
        setattr(self, _MARKER, True)

    def __call__(self, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        """Print ``exc`` with the previous hook, then its ``BundleInputError`` as the last line.

        Args:
            exc_type: the exception's type.
            exc: the exception.
            tb: its traceback.
        """
        outermost = exc is not None and not getattr(exc, _MARKER, False)
        if not outermost:  # an InputErrorHook further out prints the line, after everything else
            self.previous(exc_type, exc, tb)
            return
        with contextlib.suppress(AttributeError, TypeError):  # an exception type that refuses attributes
            setattr(exc, _MARKER, True)
        try:
            self.previous(exc_type, exc, tb)
        finally:
            with contextlib.suppress(AttributeError, TypeError):
                delattr(exc, _MARKER)
        line = input_error_summary(exc)
        if line is not None and sys.stderr is not None:
            sys.stderr.write(f"\n{line}\n")
            sys.stderr.flush()


def install_error_hook() -> bool:
    """Install :py:class:`InputErrorHook` as ``sys.excepthook``, chained to the hook in place; idempotent.

    Call it (or import :py:mod:`common.data.show_input_error_last`) before a bundle run reads its inputs. Installing
    again is a no-op, also from a reloaded copy of this module (MONAI Label reloads a bundle's ``scripts`` package).

    Returns:
        ``True`` when the hook was installed now, ``False`` when it was already in place.
    """
    if getattr(sys.excepthook, _MARKER, False):
        return False
    sys.excepthook = InputErrorHook(sys.excepthook)
    return True
