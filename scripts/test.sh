#!/usr/bin/env bash
# The project's test command: installs what the tests need and is missing
# (nats-server, for offload-nats and the lab's remote scenarios), then runs
# `cargo test --workspace` with any extra arguments passed through.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -p offload-nats # extra args go to cargo test
set -euo pipefail
cd "$(dirname "$0")/.."

have_nats_server() {
    [ -n "${OFFLOAD_NATS_SERVER:-}" ] && [ -x "${OFFLOAD_NATS_SERVER}" ] && return 0
    command -v nats-server >/dev/null 2>&1 && return 0
    # Debian installs it in /usr/sbin, which is not on a user's PATH.
    [ -x /usr/sbin/nats-server ] || [ -x /usr/local/sbin/nats-server ]
}

if ! have_nats_server; then
    echo "scripts/test.sh: installing nats-server (Debian package)" >&2
    if [ "$(id -u)" -eq 0 ]; then
        sudo=""
    elif command -v sudo >/dev/null 2>&1; then
        sudo="sudo"
    else
        echo "scripts/test.sh: nats-server is missing and we are not root (no sudo): install it with 'apt-get install -y nats-server'" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update
    $sudo apt-get install -y nats-server
fi

exec cargo test --workspace "$@"
