#!/usr/bin/env bash
# Make a Docker engine and the small local test images available.
#
# Idempotent and quick when everything is already there. When no engine
# answers and this runs as root, it installs Debian's docker.io,
# docker-compose and busybox-static (when missing), starts dockerd in the
# background (there is no systemd to do it) and waits until `docker info`
# answers. A dockerd that already answers is never restarted: restarting it
# would stop every container other users run on it.
#
# No image registry is reachable, so the base test image is a `docker import`
# of a root folder holding the static busybox binary and its applet links.
#
# Environment:
#   UPDOCK_DOCKERD_LOG   dockerd's log file (default /var/log/updock-dockerd.log)
#   UPDOCK_DOCKERD_WAIT  seconds to wait for the engine to answer (default 60)

set -euo pipefail

BASE_IMAGE="updock-test/busybox:base"
DOCKERD_LOG="${UPDOCK_DOCKERD_LOG:-/var/log/updock-dockerd.log}"
DOCKERD_WAIT="${UPDOCK_DOCKERD_WAIT:-60}"

say() { echo "docker-setup: $*" >&2; }
fail() { say "error: $*"; exit 1; }

engine_answers() { docker info >/dev/null 2>&1; }

install_packages() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
    [ -x /bin/busybox ] || missing+=(busybox-static)
    if [ ${#missing[@]} -eq 0 ]; then
        return
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
}

start_engine() {
    if engine_answers; then
        return
    fi
    if [ "$(id -u)" != 0 ]; then
        fail "no Docker engine answers and this is not root: start dockerd, \
or run this script as root"
    fi
    install_packages
    if pgrep -x dockerd >/dev/null 2>&1; then
        say "a dockerd process exists but does not answer yet; waiting for it"
    else
        say "starting dockerd (log: $DOCKERD_LOG)"
        mkdir -p "$(dirname "$DOCKERD_LOG")"
        # Its own session: killing the caller's process group (a test
        # runner's timeout) must not take the engine down with it.
        setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
    fi
    local deadline=$((SECONDS + DOCKERD_WAIT))
    until engine_answers; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 "$DOCKERD_LOG" >&2 || true
            fail "the Docker engine did not answer within ${DOCKERD_WAIT}s \
(see $DOCKERD_LOG)"
        fi
        sleep 0.2
    done
    say "the Docker engine answers"
}

build_base_image() {
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        return
    fi
    [ -x /bin/busybox ] || fail "/bin/busybox is missing: install busybox-static"
    local rootfs
    rootfs="$(mktemp -d)"
    mkdir -p "$rootfs"/{bin,etc,tmp,www,root}
    chmod 1777 "$rootfs/tmp"
    cp /bin/busybox "$rootfs/bin/busybox"
    local applet
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' \
        >"$rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
    say "importing $BASE_IMAGE"
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/bin' --change 'CMD ["sh"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
}

start_engine
build_base_image
