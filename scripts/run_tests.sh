#!/usr/bin/env bash
# Install what the tests need into .venv, lint and format-check the tree (ruff, rules in pyproject.toml), then run
# the whole test suite (slow end-to-end tests included).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup_env.sh"
cd "$root"
ruff check .
ruff format --check .
exec python -m pytest "$@"
