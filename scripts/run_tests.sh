#!/usr/bin/env bash
# Install what the tests need into .venv, lint and format-check the tree (ruff, rules in pyproject.toml), then run
# the whole test suite (slow end-to-end tests included).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup_env.sh"
cd "$root"
ruff check .
ruff format --check .
# two workers, one PyTorch thread each (the suite is mostly single-threaded work: subprocesses, data, Python);
# --dist loadfile keeps each test file on one worker, so a file's trained demo or the MONAI Label server (one file)
# is built once; --no-loadscope-reorder keeps the collection order, longest files first (tests/conftest.py)
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
