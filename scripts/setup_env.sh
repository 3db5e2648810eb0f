#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install requirements.txt into it.
# Sourced by scripts/demo.sh and scripts/run_tests.sh; safe to run again (it reinstalls only when
# requirements.txt changed). Needs Python 3.11 (set PYTHON=/path/to/python3.11 if it is not `python3`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$root/.venv}"
py="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if ! "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "error: $py is Python $("$py" -c 'import platform; print(platform.python_version())'); this project needs Python 3.11 (set PYTHON=...)" >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    echo "creating virtual environment $venv"
    "$py" -m venv "$venv"
fi
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$root/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing requirements.txt into $venv"
    start=$(date +%s)
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    # torch first, by exact version, so no other package can pull a different (CUDA) build
    "$venv/bin/python" -m pip install --quiet "$(grep -E '^torch==' "$root/requirements.txt")"
    "$venv/bin/python" -m pip install --quiet -r "$root/requirements.txt"
    echo "$want" > "$stamp"
    echo "installed in $(( $(date +%s) - start )) s"
fi
export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
