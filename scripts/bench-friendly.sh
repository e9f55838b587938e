#!/usr/bin/env bash
# The old friendly-shape benchmark of Keyless CA alone (release builds; loopback only): ES256
# development-issuer tokens, signed challenges, plain HTTP. Kept as a footnote to
# scripts/bench.sh (the side-by-side with step-ca under real client traffic), which runs this
# with --friendly.
#
#   scripts/bench-friendly.sh [--criterion] [--hsm] [loadgen options...]
#
# 1. Builds the release `keyless` and `keyless-loadgen` binaries.
# 2. Issuance over HTTP, `keyless serve --dev --ct-log disabled`: 64 clients (file key, no CT).
# 3. Issuance over HTTP, `keyless serve --dev` with the embedded CT log (precert, durable
#    add-pre-chain, SCT verification, final certificate).
# 4. The embedded log on its own: `add-pre-chain` over HTTP with durable commits, at 64 clients
#    (group commit) and at 1 client (one commit per entry), against the server of step 3.
# 5. With --criterion: the in-process criterion bench (`cargo bench -p keyless-ca --bench issuance`).
# 6. With --hsm: a throwaway SoftHSM2 token; raw PKCS#11 signs/s (`cargo bench -p keyless-hsm`),
#    then issuance over HTTP with the CA key in the token (CT disabled, 64 clients).
#
# Extra arguments go to every keyless-loadgen run. See docs/benchmarks.md for figures and targets.
set -euo pipefail
cd "$(dirname "$0")/.."

criterion=0
hsm=0
loadgen_args=()
for arg in "$@"; do
  case "$arg" in
    --criterion) criterion=1 ;;
    --hsm) hsm=1 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) loadgen_args+=("$arg") ;;
  esac
done

cargo build --release -p keyless-cli -p keyless-tests --bin keyless --bin keyless-loadgen

target_dir="${CARGO_TARGET_DIR:-target}"
keyless="$target_dir/release/keyless"
loadgen="$target_dir/release/keyless-loadgen"

data_dir=""
server_log=""
server_pid=""
url=""
ct_url=""

stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
  [ -n "$data_dir" ] && rm -rf "$data_dir" "$server_log"
  data_dir=""
}
trap stop_server EXIT INT TERM

# Starts `keyless serve --dev --ct-log $1` on free loopback ports; sets url, ct_url, data_dir.
# With $2 = a config file: `keyless serve --config $2` instead (data_dir must be set by the caller).
start_server() {
  if [ -n "${2:-}" ]; then
    server_log="$data_dir.server.log"
    KEYLESS_LOG="${KEYLESS_LOG:-info}" "$keyless" serve --config "$2" >"$server_log" 2>&1 &
  else
    data_dir="$(mktemp -d)"
    server_log="$data_dir.server.log"
    KEYLESS_LOG="${KEYLESS_LOG:-info}" "$keyless" serve --dev --ct-log "$1" --listen 127.0.0.1:0 --data-dir "$data_dir" \
      >"$server_log" 2>&1 &
  fi
  server_pid=$!
  url=""
  for _ in $(seq 1 200); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "bench.sh: keyless serve --dev exited early:" >&2
      cat "$server_log" >&2
      exit 1
    fi
    url="$(sed -n 's|^keyless: listening on \(http://127\.0\.0\.1:[0-9]*\)$|\1|p' "$server_log" | head -n1)"
    ct_url="$(sed -n 's|^keyless: ct log listening on \(http://127\.0\.0\.1:[0-9]*/.*\)$|\1|p' "$server_log" | head -n1)"
    if [ -n "$url" ] && curl -sf "$url/healthz" >/dev/null 2>&1; then
      return
    fi
    url=""
    sleep 0.1
  done
  echo "bench.sh: the server did not answer /healthz within 20 s" >&2
  cat "$server_log" >&2
  exit 1
}

echo "== issuance, CT disabled (64 clients) =="
start_server disabled
"$loadgen" --url "$url" --data-dir "$data_dir" --clients 64 --requests 20000 --warmup 500 "${loadgen_args[@]}"
stop_server

echo "== issuance, embedded CT log (64 clients) =="
start_server embedded
"$loadgen" --url "$url" --data-dir "$data_dir" --clients 64 --requests 20000 --warmup 500 "${loadgen_args[@]}"

echo "== embedded CT log alone: add-pre-chain, durable commits (64 clients) =="
"$loadgen" --url "$url" --data-dir "$data_dir" --add-pre-chain "$ct_url" --clients 64 --requests 20000 --warmup 500 "${loadgen_args[@]}"
echo "== embedded CT log alone: add-pre-chain, one client (a commit per entry) =="
"$loadgen" --url "$url" --data-dir "$data_dir" --add-pre-chain "$ct_url" --clients 1 --requests 500 --warmup 20 "${loadgen_args[@]}"
stop_server

if [ "$hsm" -eq 1 ]; then
  hsm_dir="$(mktemp -d)"
  mkdir -p "$hsm_dir/tokens"
  printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$hsm_dir/tokens" >"$hsm_dir/softhsm2.conf"
  export SOFTHSM2_CONF="$hsm_dir/softhsm2.conf" KEYLESS_HSM_PIN=2468 KEYLESS_BENCH_PIN=2468
  softhsm2-util --init-token --free --label keyless-bench --pin 2468 --so-pin 1357 >/dev/null
  echo "== raw PKCS#11 signing (SoftHSM2, CKM_ECDSA P-256) =="
  cargo bench -p keyless-hsm --bench pkcs11 -- keyless-bench
  echo "== issuance, CA key in SoftHSM2, CT disabled (64 clients) =="
  data_dir="$(mktemp -d)"
  cat >"$data_dir/keyless.yaml" <<YAML
listen: 127.0.0.1:0
data_dir: .
ct_log: disabled
insecure_dev_issuer: true
ca:
  pkcs11: {module: /usr/lib/softhsm/libsofthsm2.so, token_label: keyless-bench, pin: env:KEYLESS_HSM_PIN, key_label: http-bench, chain: chain.pem}
YAML
  "$keyless" ca init --config "$data_dir/keyless.yaml" >/dev/null
  start_server "" "$data_dir/keyless.yaml"
  "$loadgen" --url "$url" --data-dir "$data_dir" --clients 64 --requests 20000 --warmup 500 "${loadgen_args[@]}"
  stop_server
  rm -rf "$hsm_dir"
fi

if [ "$criterion" -eq 1 ]; then
  echo "== criterion: in-process issuance vs bare crypto =="
  cargo bench -p keyless-ca --bench issuance
fi
