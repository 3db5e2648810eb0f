"""Write a file so that a process killed at any moment leaves either the previous file or the new one, whole."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["partial_path", "save_atomically"]


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries to disk, so a rename in it survives a power loss (POSIX; a no-op elsewhere)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def partial_path(path: str | os.PathLike) -> Path:
    """The temporary file :func:`save_atomically` writes before renaming it to ``path``.

    Args:
        path: the checkpoint's final path.

    Returns:
        ``<folder>/.<name>.partial``: hidden, in the same folder (a rename within one file system is atomic).
    """
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


def save_atomically(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` so that ``path`` always holds a complete file, the previous one or the new one.

    Writes :func:`partial_path` in the same folder, flushes it and syncs it to disk (``os.fsync``), renames it
    over ``path`` with ``os.replace`` (atomic) and syncs the folder. A process killed at any point leaves ``path``
    as it was (or already replaced), never half-written; a failed write removes its temporary file, a killed one
    leaves it for the next save to overwrite.

    Args:
        obj: what to save (tensors, numbers, strings, lists and dicts, so that ``weights_only=True`` loads it).
        path: the file to write; its folder is created if missing.

    Returns:
        ``path``, as a ``Path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    try:
        with open(partial, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    _fsync_folder(path.parent)
    return path
