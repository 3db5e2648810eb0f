"""The one error type for bad input, shared by every bundle (BUNDLE_CONTRACT.md, "Errors")."""

from __future__ import annotations

from os import PathLike

__all__ = ["BundleInputError"]


class BundleInputError(ValueError):
    """Bad input to a bundle: names the file, what was found and what was expected.

    Args:
        path: the offending file (or datalist), or ``None`` when no file is involved.
        found: what was found, e.g. ``"5 channels"``.
        expected: what was expected, e.g. ``"1 channel (CT in HU)"``.

    The message reads ``"<path>: found <found>; expected <expected>"`` so a user sees the file first.
    """

    def __init__(self, path: str | PathLike | None, found: str, expected: str) -> None:
        self.path = None if path is None else str(path)
        self.found = found
        self.expected = expected
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}found {found}; expected {expected}")

    def __reduce__(self):
        # picklable, so the error crosses DataLoader worker and torchrun process boundaries intact
        return (type(self), (self.path, self.found, self.expected))
