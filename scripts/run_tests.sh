#!/usr/bin/env bash
# Install what the tests need into .venv, then run the whole test suite (slow end-to-end tests included).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup_env.sh"
cd "$root"
exec python -m pytest "$@"
