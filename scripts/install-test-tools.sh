#!/usr/bin/env bash
# Installs the system tools that some tests and benches drive for real.
# Tests that need one of them print a loud SKIP naming this script when it
# is missing, and fail instead when CI is set. Safe to run again.
set -euo pipefail

packages=(
  strace            # syscalls-per-message column of `cargo bench --bench echo`
  valgrind          # `cargo bench --bench echo -- --quick`: the instructions-per-message guard
  systemd           # cli/tests/systemd.rs: systemd-socket-activate starts the real binary
  haproxy           # cli/tests/haproxy.rs: a real HAProxy in front of two backends (PROXY v1/v2)
  curl              # cli/tests/http.rs: GET/HEAD/POST and connection reuse (`curl -v` twice)
  wrk               # cli/tests/http.rs: keep-alive load, 0 socket errors and 0 non-2xx
  apache2-utils     # cli/tests/http.rs: `ab -k`, 0 failed requests
  redis-server      # cli/tests/pubsub.rs: pub/sub frames diffed against a real redis-server
  redis-tools       # cli/tests/resp.rs: `redis-cli PING`, `redis-benchmark -t ping`; cli/tests/tls.rs: `redis-cli --tls`
  openssl           # cli/tests/tls.rs: `openssl s_client` echo round trip and clean close
  python3           # cli/tests/tls.rs: Python's ssl reads close_notify (suppress_ragged_eofs=False)
  prometheus        # cli/tests/metrics.rs: `promtool check metrics`, a real Prometheus scraping --metrics
  goaccess          # cli/tests/access_log.rs: `goaccess --log-format=COMBINED` parses every line, 0 failed
  jq                # cli/tests/access_log.rs: every `--access-log-format json` line is one object jq reads
  libmemcached-tools # tests/examples.rs: `memccapable -a`, memcached's conformance checker, against examples/memcached.rs
  python3-pymemcache # tests/examples.rs: pymemcache round-trips 1 MiB values through examples/memcached.rs
  iperf3            # cli/tests/forward.rs: iperf3 both ways through --upstream
  nginx-light       # cli/tests/forward.rs: curl and wrk through --upstream to nginx
  libnginx-mod-stream # cargo bench --bench proxy: nginx `stream` as a comparison proxy
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
