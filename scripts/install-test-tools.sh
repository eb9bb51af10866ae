#!/usr/bin/env bash
# Installs the system tools that some tests and benches drive for real.
# Tests that need one of them print a loud SKIP naming this script when it
# is missing, and fail instead when CI is set. Safe to run again.
set -euo pipefail

packages=(
  strace            # syscalls-per-message column of `cargo bench --bench echo`
)

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-test-tools: all present (${packages[*]})"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update
$sudo apt-get install -y --no-install-recommends "${missing[@]}"
echo "install-test-tools: installed ${missing[*]}"
