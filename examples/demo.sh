#!/usr/bin/env bash
# The demo: build release 1.1.0 of the example shop from its two trees, serve it
# from a local folder, and upgrade a fresh copy of the 1.0.0 deployment to it
# with a real `updock upgrade apply`. No Docker engine is needed: the example
# runs with --no-services (files only). The deployment lands in work-example/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
updock=.venv/bin/updock
demo=examples/demo
work=work-example

rm -rf "$work"
mkdir -p "$work/docker"
cp -a "$demo/v1/." "$work/docker/"
cp "$demo/config.toml" "$work/config.toml"

echo "== building release 1.1.0 from $demo/v1 -> $demo/v2"
$updock release build --from "$demo/v1" --to "$demo/v2" --version 1.1.0 \
    --from-version 1.0.0 --out "$work/releases"

echo "== upgrading $work (installed: 1.0.0) with the patch package"
$updock upgrade apply --root "$work" --manifest "$work/releases/manifest.json" \
    --yes --no-services

echo "== status"
$updock status --root "$work"
echo "== journal"
$updock journal inspect --root "$work"
echo "== deployed front page"
cat "$work/docker/front/index.html"
