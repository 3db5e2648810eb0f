"""Config switches that may arrive from the command line as text (``--skip_bad_inputs true`` is the string "true")."""

from __future__ import annotations

from typing import Any

__all__ = ["as_bool"]

_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


def as_bool(value: Any, name: str) -> bool:
    """Read a yes/no switch given in a config or on the command line.

    ``python -m monai.bundle run ... --skip_bad_inputs true`` passes the string ``"true"`` (Fire turns only
    ``True`` into a bool), and ``bool("false")`` is ``True``: every switch is read through this function.

    Args:
        value: a bool, 0 or 1, or one of true/false/yes/no/1/0 in any case.
        name: the config id, for the message.

    Returns:
        the switch's value.

    Raises:
        ValueError: anything else, naming the id and the accepted values.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{name} must be true or false (or yes/no, 1/0), got {value!r}.")
