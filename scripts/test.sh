#!/usr/bin/env bash
# Set up everything the tests need, then run them all.
# As root on a machine without a running Docker engine, this installs Debian's
# docker.io, docker-compose and busybox-static, starts dockerd and builds the
# small local test images (scripts/docker-setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if [ "$(id -u)" = 0 ] && [ -f scripts/docker-setup.sh ]; then
    bash scripts/docker-setup.sh
fi
exec .venv/bin/python -m pytest "$@"
