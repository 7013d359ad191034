#!/usr/bin/env bash
# Create .venv (when missing or stale) and install updock into it, editable.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import cli.main, pytest, hypothesis' 2>/dev/null \
    || [ pyproject.toml -nt .venv/.installed ]; then
    .venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
    touch .venv/.installed
fi
