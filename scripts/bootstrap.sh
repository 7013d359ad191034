#!/usr/bin/env bash
# Create .venv (when missing or stale) and install updock into it, editable.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import cli.main, pytest, hypothesis' 2>/dev/null \
    || [ pyproject.toml -nt .venv/.installed ]; then
    # This machine's pip configuration names local mirrors that may be
    # absent; pip warns about each one, which says nothing about updock.
    .venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]' \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    touch .venv/.installed
fi
