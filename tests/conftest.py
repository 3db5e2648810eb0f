"""Shared fixtures: the repository root on sys.path, the bundle list, the schema folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p for p in (ROOT / "bundles").iterdir() if (p / "configs").is_dir())
SCHEMA_DIR = ROOT.parent / "shared" / "schemas"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# bundle configs use paths relative to the repository root, as the README's commands do
os.chdir(ROOT)


@pytest.fixture(params=[b.name for b in BUNDLES])
def bundle(request) -> Path:
    """Each bundle folder, relative to the repository root."""
    return Path("bundles") / request.param
