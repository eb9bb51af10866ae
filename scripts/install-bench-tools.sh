#!/usr/bin/env sh
# Install what `cargo bench --bench echo` needs beyond Rust: strace, for the
# syscalls-per-message columns (without it they print `-` and a loud SKIP line);
# valgrind, for the instructions-per-message column and its guard (callgrind);
# golang-go, for the Go comparison server (without it: a loud SKIP of that row).
# `cargo bench --bench protocols` also needs nginx (nginx-light), wrk,
# redis-server and redis-benchmark (redis-tools); without them it SKIPs that half.
# `cargo bench --bench tls` needs nginx built with http_ssl_module (Debian's
# nginx-light has it; its stream module is not installed, so nginx serves the
# HTTPS rows only) and wrk (built with OpenSSL, for https://); without them it
# SKIPs those rows.
# Debian/Ubuntu (apt-get). Idempotent: re-running installs nothing new.
# Uses sudo only when not already root.
set -eu

# command:package pairs; only missing commands are installed.
TOOLS="strace:strace valgrind:valgrind go:golang-go nginx:nginx-light wrk:wrk redis-server:redis-server redis-benchmark:redis-tools"
MISSING=""
for pair in $TOOLS; do
    cmd=${pair%%:*}
    pkg=${pair#*:}
    if command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ]; then
        echo "install-bench-tools: $cmd already installed"
    else
        MISSING="$MISSING $pkg"
    fi
done

if [ -z "$MISSING" ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-bench-tools: apt-get not found; install$MISSING with your package manager" >&2
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
# shellcheck disable=SC2086 # word splitting of the package list is intended
$SUDO apt-get install -y --no-install-recommends $MISSING
echo "install-bench-tools: installed$MISSING"
