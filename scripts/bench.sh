#!/usr/bin/env bash
# Benchmarks Keyless CA on this machine.
#
#   scripts/bench.sh [--criterion] [loadgen options...]
#
# 1. Builds the release `keyless` and `keyless-loadgen` binaries (all benchmark output below is
#    from optimized builds).
# 2. Starts `keyless serve --dev` on a free loopback port with a fresh data directory (generated
#    file CA, CT disabled, the insecure development issuer), and waits for /healthz.
# 3. Runs keyless-loadgen against it (64 concurrent clients, 20,000 timed requests after 500
#    warm-up requests by default; extra arguments are passed to keyless-loadgen).
# 4. Stops the server and removes the data directory.
# 5. With --criterion: runs the in-process criterion bench (`cargo bench -p keyless-ca --bench issuance`).
#
# See docs/benchmarks.md for the figures measured and the targets.
set -euo pipefail
cd "$(dirname "$0")/.."

criterion=0
loadgen_args=()
for arg in "$@"; do
  case "$arg" in
    --criterion) criterion=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) loadgen_args+=("$arg") ;;
  esac
done

cargo build --release -p keyless-api -p keyless-tests --bin keyless --bin keyless-loadgen

target_dir="${CARGO_TARGET_DIR:-target}"
keyless="$target_dir/release/keyless"
loadgen="$target_dir/release/keyless-loadgen"

data_dir="$(mktemp -d)"
server_log="$data_dir.server.log"
server_pid=""

cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$data_dir"
  rm -f "$server_log"
}
trap cleanup EXIT INT TERM

# Port 0: the kernel picks a free port and the server prints the address it listens on. The log
# level is the server's default (info: one audit line per certificate) unless KEYLESS_LOG is set.
KEYLESS_LOG="${KEYLESS_LOG:-info}" "$keyless" serve --dev --listen 127.0.0.1:0 --data-dir "$data_dir" \
  >"$server_log" 2>&1 &
server_pid=$!

url=""
for _ in $(seq 1 200); do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "bench.sh: keyless serve --dev exited early:" >&2
    cat "$server_log" >&2
    exit 1
  fi
  url="$(sed -n 's|^keyless: listening on \(http://127\.0\.0\.1:[0-9]*\)$|\1|p' "$server_log" | head -n1)"
  if [ -n "$url" ] && curl -sf "$url/healthz" >/dev/null 2>&1; then
    break
  fi
  url=""
  sleep 0.1
done
if [ -z "$url" ]; then
  echo "bench.sh: the server did not answer /healthz within 20 s" >&2
  cat "$server_log" >&2
  exit 1
fi

echo "== keyless-loadgen against $url (server log level: ${KEYLESS_LOG:-info}) =="
"$loadgen" --url "$url" --data-dir "$data_dir" --clients 64 --requests 20000 --warmup 500 "${loadgen_args[@]}"

cleanup
server_pid=""
trap - EXIT INT TERM

if [ "$criterion" -eq 1 ]; then
  echo "== criterion: in-process issuance vs bare crypto =="
  cargo bench -p keyless-ca --bench issuance
fi
