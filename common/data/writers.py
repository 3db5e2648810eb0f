"""Image writers that never leave a half-written file behind (BUNDLE_CONTRACT.md, "Errors")."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from monai.data import NibabelWriter

__all__ = ["AtomicNibabelWriter"]


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` that writes to a hidden temporary file in the target folder, then renames it.

    An interrupted or failed write leaves either the previous file or no file, never a truncated one. Use it
    as ``SaveImaged(..., writer="common.data.AtomicNibabelWriter")``.
    """

    def write(self, filename, verbose: bool = False, **obj_kwargs) -> None:
        target = Path(filename)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".partial-{uuid.uuid4().hex[:8]}-{target.name}")
        try:
            super().write(str(tmp), verbose=verbose, **obj_kwargs)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
