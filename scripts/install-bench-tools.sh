#!/usr/bin/env sh
# Install what `cargo bench --bench echo` needs beyond Rust: strace, for the
# syscalls-per-message columns (without it they print `-` and a loud SKIP line).
# Debian/Ubuntu (apt-get). Idempotent: re-running installs nothing new.
# Uses sudo only when not already root.
set -eu

if command -v strace >/dev/null 2>&1; then
    echo "install-bench-tools: strace already installed ($(strace -V | head -n 1))"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-bench-tools: apt-get not found; install strace with your package manager" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "install-bench-tools: not root and sudo not found; run as root" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends strace
echo "install-bench-tools: $(strace -V | head -n 1)"
