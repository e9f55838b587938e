#!/usr/bin/env bash
# Keyless CA side by side with step-ca 0.19.0, under the traffic real clients send (issue 16).
#
#   scripts/bench.sh                 # the side-by-side table (builds the peer on first use)
#   scripts/bench.sh --sustained     # 5 minutes, 16 clients, embedded CT log: drift and RSS curve
#   scripts/bench.sh --smoke         # a few hundred requests against Keyless only, no peer build
#   scripts/bench.sh --friendly      # the old friendly-shape bench (ES256 dev tokens, plain HTTP)
#   scripts/bench.sh --replicas      # one replica on SQLite against one and three on PostgreSQL (issue 17)
#
# Options: --clients N (64)  --duration S (10)  --csr-percent P (50)  --warmup S (2)
#          --sustained-seconds S (300)  --sustained-clients N (16)  --no-build
#          --friendly-args "..." (passed to keyless-loadgen in --friendly mode)
#          --perf (side-by-side: a `perf record --call-graph dwarf` profile of each Keyless timed run, its report
#          written to $CARGO_TARGET_DIR/bench-profiles/<system>.txt beside its perf.data; profiling
#          slows the server by 10-20%, so --perf figures are not the benchmark's)
#
# Every run: a loopback OIDC issuer (discovery + JWKS, RS256) that both systems trust; request
# bodies written BEFORE the clock, one per request, each with its own RS256 ID token (distinct
# identity) and its own fresh P-256 key; Keyless bodies mix CSRs (sigstore-python's shape) and
# signed challenges at --csr-percent, step-ca's are CSRs (it has no other form). The same Go
# closed-loop generator (the peer's `loadgen`: one keep-alive TLS connection per client) drives
# every system over TLS. Server CPU is utime+stime from /proc over the timed window; RSS is VmRSS
# after it. Any non-2xx response or transport error flags the run. See docs/benchmarks.md.
#
# Environment: PEER_DIR (default ../shared/peers/step-ca), PEER_SCRATCH (default
# $CARGO_TARGET_DIR/peer, else target/peer: reused across runs), KEYLESS_LOG (default info).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

mode=side
clients=64
duration=10
csr_percent=50
warmup=2
sus_seconds=300
sus_clients=16
build=1
friendly_args=""
perf=0
while [ $# -gt 0 ]; do
  case "$1" in
    --sustained) mode=sustained ;;
    --smoke) mode=smoke ;;
    --friendly) mode=friendly ;;
    --replicas) mode=replicas ;;
    --clients) clients="$2"; shift ;;
    --duration) duration="$2"; shift ;;
    --csr-percent) csr_percent="$2"; shift ;;
    --warmup) warmup="$2"; shift ;;
    --sustained-seconds) sus_seconds="$2"; shift ;;
    --sustained-clients) sus_clients="$2"; shift ;;
    --no-build) build=0 ;;
    --perf) perf=1 ;;
    --friendly-args) friendly_args="$2"; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for n in "$clients" "$duration" "$csr_percent" "$warmup" "$sus_seconds" "$sus_clients"; do
  [[ "$n" =~ ^[0-9]+$ ]] || { echo "bench.sh: numeric option expected, got '$n'" >&2; exit 2; }
done
[ "$csr_percent" -le 100 ] || { echo "bench.sh: --csr-percent must be 0..100" >&2; exit 2; }

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$repo/$target_dir" ;; esac

if [ "$mode" = friendly ]; then
  exec "$repo/scripts/bench-friendly.sh" $friendly_args
fi

# --- binaries: built once, then copied to a private folder (the target dir may be shared) ---
work="$(mktemp -d "${TMPDIR:-/tmp}/keyless-bench.XXXXXX")"
pids=()
pg_stop=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "$pg_stop" ]; then eval "$pg_stop" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$build" -eq 1 ]; then
  cargo build --release -p keyless-cli -p keyless-tests --bin keyless --bin keyless-benchkit
fi
mkdir -p "$work/bin"
cp "${KEYLESS_BIN:-$target_dir/release/keyless}" "$work/bin/keyless"
cp "${BENCHKIT_BIN:-$target_dir/release/keyless-benchkit}" "$work/bin/keyless-benchkit"
keyless="$work/bin/keyless"
kit="$work/bin/keyless-benchkit"

# --- the peer: step-ca 0.19.0 and the Go load generator, built by its own script ---
peer_dir="${PEER_DIR:-$repo/../shared/peers/step-ca}"
scratch="${PEER_SCRATCH:-$target_dir/peer}"
loadgen="$scratch/bin/loadgen"
if [ "$mode" = smoke ]; then
  loadgen=""   # smoke sends each body once with benchkit's small replay client: no peer needed
else
  if true; then
    if [ ! -f "$peer_dir/setup-peer.sh" ]; then
      echo "bench.sh: the step-ca peer is missing: no $peer_dir/setup-peer.sh" >&2
      echo "  (it ships beside the repository as ../shared/peers/step-ca; set PEER_DIR to its folder)" >&2
      exit 1
    fi
    if [ ! -x "$scratch/bin/step-ca" ] || [ ! -x "$scratch/bin/loadgen" ]; then
      mkdir -p "$scratch"
      echo "== building the peer (step-ca 0.19.0 + loadgen) into $scratch =="
      SCRATCH="$scratch" bash "$peer_dir/setup-peer.sh" >"$scratch/setup.log" 2>&1 \
        || { tail -30 "$scratch/setup.log" >&2; echo "bench.sh: setup-peer.sh failed (log: $scratch/setup.log)" >&2; exit 1; }
    fi
  fi
fi
if [ -n "$loadgen" ]; then cp "$loadgen" "$work/bin/loadgen"; loadgen="$work/bin/loadgen"; fi

# --- the loopback OIDC issuer, shared by every system of the run ---
"$kit" issuer --dir "$work" >"$work/issuer.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$work/issuer-url" ] && break; sleep 0.1; done
[ -s "$work/issuer-url" ] || { cat "$work/issuer.log" >&2; echo "bench.sh: the OIDC issuer did not start" >&2; exit 1; }
issuer_url="$(cat "$work/issuer-url")"
"$kit" tls --dir "$work"

cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

server_pid=""
server_url=""
server_ca=""
stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
}

# start_keyless NAME CT(disabled|embedded) HSM(0|1): a fresh data dir, issuance record on (the
# default), TLS with the loopback certificate, trusting only the bench issuer.
start_keyless() {
  local name="$1" ct="$2" hsm="$3" d="$work/$1"
  mkdir -p "$d"
  cp "$work/tls.crt" "$work/tls.key" "$d/"
  {
    echo "listen: 127.0.0.1:0"
    echo "data_dir: ."
    echo "tls: {cert: tls.crt, key: tls.key}"
    if [ "$ct" = embedded ]; then echo "ct_log: {embedded: {listen: 127.0.0.1:0}}"; else echo "ct_log: disabled"; fi
    echo "issuers:"
    echo "  - {url: \"$issuer_url\", type: email}"
  } >"$d/keyless.yaml"
  local env=()
  if [ "$hsm" -eq 1 ]; then
    command -v softhsm2-util >/dev/null || { echo "bench.sh: softhsm2-util is missing (apt-get install softhsm2)" >&2; exit 1; }
    local module; module="$(ls /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so 2>/dev/null | head -n1)"
    mkdir -p "$d/tokens"
    printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$d/tokens" >"$d/softhsm2.conf"
    env=(SOFTHSM2_CONF="$d/softhsm2.conf" KEYLESS_HSM_PIN=2468)
    env "${env[@]}" softhsm2-util --init-token --free --label keyless-bench --pin 2468 --so-pin 1357 >/dev/null
    echo "ca: {pkcs11: {module: $module, token_label: keyless-bench, pin: env:KEYLESS_HSM_PIN, key_label: bench-ca, chain: chain.pem}}" >>"$d/keyless.yaml"
    (cd "$d" && env "${env[@]}" "$keyless" ca init --config keyless.yaml >"$d/ca-init.log" 2>&1) \
      || { cat "$d/ca-init.log" >&2; echo "bench.sh: keyless ca init (SoftHSM2) failed" >&2; exit 1; }
  fi
  (cd "$d" && exec env "${env[@]}" KEYLESS_LOG="${KEYLESS_LOG:-info}" "$keyless" serve --config keyless.yaml >"$d/server.log" 2>&1) &
  server_pid=$!
  pids+=("$server_pid")
  server_url=""
  server_ca="$work/tls-ca.pem"
  for _ in $(seq 1 200); do
    kill -0 "$server_pid" 2>/dev/null || { cat "$d/server.log" >&2; echo "bench.sh: keyless ($name) exited early" >&2; exit 1; }
    server_url="$(sed -n 's|^keyless: listening on \(https://127\.0\.0\.1:[0-9]*\)$|\1|p' "$d/server.log" | head -n1)"
    if [ -n "$server_url" ] && curl -sf --cacert "$server_ca" "$server_url/healthz" >/dev/null 2>&1; then
      server_url="$server_url/api/v2/signingCert"
      return
    fi
    sleep 0.1
  done
  cat "$d/server.log" >&2; echo "bench.sh: keyless ($name) did not answer /healthz within 20 s" >&2; exit 1
}

start_stepca() {
  local d="$work/stepca" port
  port="$("$kit" stepca --dir "$work" --out "$d")"
  "$scratch/bin/step-ca" "$d/ca.json" >"$d/step-ca.log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  server_ca="$d/root_ca.crt"
  for _ in $(seq 1 200); do
    kill -0 "$server_pid" 2>/dev/null || { tail -20 "$d/step-ca.log" >&2; echo "bench.sh: step-ca exited early" >&2; exit 1; }
    if curl -sf --cacert "$server_ca" "https://127.0.0.1:$port/health" >/dev/null 2>&1; then
      server_url="https://127.0.0.1:$port/1.0/sign"
      return
    fi
    sleep 0.1
  done
  tail -20 "$d/step-ca.log" >&2; echo "bench.sh: step-ca did not answer /health within 20 s" >&2; exit 1
}

# drive SHAPE CLIENTS SECONDS BODIES OUT: one closed-loop run; the JSON result goes to OUT.
drive() {
  local shape="$1" c="$2" secs="$3" bodies="$4" out="$5" warm=/healthz expect=0
  [ "$shape" = stepca ] && warm=/health && expect=201
  "$loadgen" -url "$server_url" -bodies "$bodies" -c "$c" -d "${secs}s" -cafile "$server_ca" \
    -warm "$warm" -expect "$expect" -pid "$server_pid" >"$out"
}

jget() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r.get(sys.argv[2], 0))' "$1" "$2"; }

# measure NAME SHAPE CLIENTS: warm-up (calibrates how many bodies the timed run needs), bodies
# for the timed run written while the server idles, then the timed run; appends a result line.
results="$work/results.tsv"
: >"$results"
measure() {
  local name="$1" shape="$2" c="$3" tag; tag="$(echo "$name" | tr 'A-Z' 'a-z' | tr -cs 'a-z0-9\n' '-')"
  "$kit" bodies --dir "$work" --count 4000 --csr-percent "$csr_percent" --shape "$shape" --tag "$tag-warm" --out "$work/warm.jsonl"
  drive "$shape" "$c" "$warmup" "$work/warm.jsonl" "$work/warm.json"
  local rate n; rate="$(jget "$work/warm.json" ok_per_s)"
  n="$(python3 -c "import sys; print(int(max(float(sys.argv[1]), 500) * int(sys.argv[2]) * 1.6))" "$rate" "$duration")"
  echo "   $name: warm-up $(printf '%.0f' "$rate") certs/s; writing $n bodies before the clock"
  "$kit" bodies --dir "$work" --count "$n" --csr-percent "$csr_percent" --shape "$shape" --tag "$tag-run" --out "$work/run.jsonl"
  local c0 perf_pid=""; c0="$(cpu_ticks "$server_pid")"
  if [ "$perf" -eq 1 ] && [ "$shape" != stepca ]; then
    command -v perf >/dev/null || { echo "bench.sh: --perf needs perf (apt-get install linux-perf)" >&2; exit 1; }
    mkdir -p "$target_dir/bench-profiles"
    perf record -q -F 199 --call-graph dwarf,16384 -p "$server_pid" -o "$target_dir/bench-profiles/$tag.perf.data" 2>/dev/null &
    perf_pid=$!
  fi
  drive "$shape" "$c" "$duration" "$work/run.jsonl" "$work/$tag.json"
  local c1 rss; c1="$(cpu_ticks "$server_pid")"; rss="$(rss_kb "$server_pid")"
  if [ -n "$perf_pid" ]; then
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    mkdir -p "$target_dir/bench-profiles"
    perf report -i "$target_dir/bench-profiles/$tag.perf.data" --no-children --sort symbol --percent-limit 0.7 --stdio -g none 2>/dev/null \
      | grep -v '^#' | grep -v '^$' | sed -E 's/[[:space:]]+(-[[:space:]]+)*$//' >"$target_dir/bench-profiles/$tag.txt" || true
    echo "   $name: profile in $target_dir/bench-profiles/$tag.txt"
  fi
  python3 - "$work/$tag.json" "$name" "$rss" >>"$results" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
bad = sum(v for k, v in r["statuses"].items() if not k.startswith("2")) + r["transport_errors"]
flags = []
if bad: flags.append(f"ERRORS {bad}: {r.get('sample_response') or r.get('first_error', '')}"[:160])
if r["wrapped"]: flags.append("WRAPPED (bodies reused)")
print("\t".join(map(str, [sys.argv[2], r["ok_per_s"], r["lat_p50_ms"], r["lat_p99_ms"],
      r["server_cpu_us_per_ok"] / 1000, int(sys.argv[3]) / 1024, bad, r["ok"], r["machine_busy_frac"],
      r["gen_cpu_cores"], "; ".join(flags)])))
PY
  rm -f "$work/run.jsonl"
}

machine_facts() {
  echo "machine: $(nproc) cores, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n1), load average $(cut -d' ' -f1-3 /proc/loadavg)"
}

# --- smoke: Keyless only, a few hundred requests, checks the plumbing end to end ---
if [ "$mode" = smoke ]; then
  for cfg in "CT disabled:disabled" "embedded CT:embedded"; do
    start_keyless "smoke-${cfg#*:}" "${cfg#*:}" 0
    "$kit" bodies --dir "$work" --count 300 --csr-percent "$csr_percent" --tag "smoke-${cfg#*:}" --out "$work/smoke.jsonl"
    ok="$("$kit" replay --url "$server_url" --cafile "$server_ca" --bodies "$work/smoke.jsonl" --clients 8)"
    stop_server
    echo "smoke: Keyless, ${cfg%%:*}: $ok certificates"
    [ "$ok" -ge 300 ] || { echo "bench.sh: smoke: expected 300 certificates, got $ok" >&2; exit 1; }
  done
  echo "smoke: ok"
  exit 0
fi

# --- sustained: 10-s windows back to back on one server, RSS after each ---
if [ "$mode" = sustained ]; then
  machine_facts
  windows=$(( (sus_seconds + 9) / 10 ))
  start_keyless sustained embedded 0
  "$kit" bodies --dir "$work" --count 4000 --csr-percent "$csr_percent" --tag sus-warm --out "$work/warm.jsonl"
  drive fulcio "$sus_clients" "$warmup" "$work/warm.jsonl" "$work/warm.json"
  rate="$(jget "$work/warm.json" ok_per_s)"
  per="$(python3 -c "import sys; print(int(max(float(sys.argv[1]), 500) * 10 * 1.4))" "$rate")"
  echo "== sustained: $windows x 10 s, $sus_clients clients, embedded CT; writing $((per * windows)) bodies before the clock =="
  for w in $(seq 1 "$windows"); do
    "$kit" bodies --dir "$work" --count "$per" --csr-percent "$csr_percent" --tag "sus-$w" --out "$work/sus-$w.jsonl"
  done
  echo "window	certs/s	p99 ms	CPU-ms/cert	RSS MB	errors"
  for w in $(seq 1 "$windows"); do
    drive fulcio "$sus_clients" 10 "$work/sus-$w.jsonl" "$work/sus-$w.json"
    rss="$(rss_kb "$server_pid")"
    python3 - "$work/sus-$w.json" "$w" "$rss" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
bad = sum(v for k, v in r["statuses"].items() if not k.startswith("2")) + r["transport_errors"]
print(f"{sys.argv[2]}\t{r['ok_per_s']:.0f}\t{r['lat_p99_ms']:.1f}\t{r['server_cpu_us_per_ok']/1000:.3f}\t{int(sys.argv[3])/1024:.1f}\t{bad}{'  WRAPPED' if r['wrapped'] else ''}")
PY
    rm -f "$work/sus-$w.jsonl"
  done | tee "$work/sustained.tsv"
  stop_server
  python3 - "$work/sustained.tsv" <<'PY'
import sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
f, l = rows[0], rows[-1]
rss = [float(r[4]) for r in rows]
print(f"first window: {f[1]} certs/s, {f[3]} CPU-ms/cert; last window: {l[1]} certs/s, {l[3]} CPU-ms/cert")
print(f"held: {float(l[1]) / float(f[1]):.2f} of the first window's certs/s; RSS {rss[0]:.1f} -> {rss[-1]:.1f} MB (max {max(rss):.1f})")
print("target: holds the 10-s figures and RSS flat (< 64 MB):",
      "MET" if float(l[1]) >= 0.9 * float(f[1]) and max(rss) < 64 else "NOT MET",
      "(held = last window >= 90% of the first)")
PY
  exit 0
fi

# --- replicas: the cost of the shared record (issue 17) ---
# The same bodies and generator; CT disabled so the record is what differs. Every configuration
# sits behind the same layer-4 balancer (benchkit balance: connections round-robin over the
# replicas, TLS passed through), so the balancer's cost is in every row. CPU is every keyless
# process plus every PostgreSQL process, from /proc, over the timed window.
if [ "$mode" = replicas ]; then
  machine_facts
  pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
  [ -n "$pgbin" ] && [ -x "$pgbin/initdb" ] || { echo "bench.sh: PostgreSQL is missing (apt-get install postgresql)" >&2; exit 1; }
  pgdir="$(mktemp -d "${TMPDIR:-/tmp}/keyless-bench-pg.XXXXXX")"
  as_pg=()
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$pgdir"; as_pg=(runuser -u postgres --); fi
  "${as_pg[@]}" "$pgbin/initdb" --auth=trust --username=postgres -D "$pgdir/data" >"$work/initdb.log" 2>&1 \
    || { cat "$work/initdb.log" >&2; exit 1; }
  pgport="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" -w \
    -o "-p $pgport -k $pgdir -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
  pg_stop="${as_pg[*]} $pgbin/pg_ctl -D $pgdir/data -m immediate stop; rm -rf $pgdir"
  psql() { "$pgbin/psql" -q -h 127.0.0.1 -p "$pgport" -U postgres "$@"; }
  shared="$work/shared"
  mkdir -p "$shared"
  printf 'data_dir: .\nca:\n  file: {key: pki/key.pem, chain: pki/chain.pem}\n' >"$shared/ca.yaml"
  (cd "$shared" && "$keyless" ca init --config ca.yaml >"$shared/ca-init.log" 2>&1) \
    || { cat "$shared/ca-init.log" >&2; echo "bench.sh: keyless ca init failed" >&2; exit 1; }

  # start_replica NAME RECORD(sqlite|postgres): appends to replica_pids and replica_addrs.
  start_replica() {
    local name="$1" record="$2" d="$work/$1" url=""
    mkdir -p "$d"
    cp "$work/tls.crt" "$work/tls.key" "$d/"
    {
      echo "listen: 127.0.0.1:0"
      echo "data_dir: ."
      echo "tls: {cert: tls.crt, key: tls.key}"
      echo "ct_log: disabled"
      echo "ca:"
      echo "  file: {key: $shared/pki/key.pem, chain: $shared/pki/chain.pem}"
      if [ "$record" = postgres ]; then
        echo "audit: {key: $shared/audit-key.pem, postgres: {url: \"env:KEYLESS_AUDIT_DB\"}}"
      fi
      echo "issuers:"
      echo "  - {url: \"$issuer_url\", type: email}"
      if [ -n "${KEYLESS_BENCH_EXTRA:-}" ]; then printf '%s\n' "$KEYLESS_BENCH_EXTRA"; fi
    } >"$d/keyless.yaml"
    (cd "$d" && exec env KEYLESS_AUDIT_DB="postgres://postgres@127.0.0.1:$pgport/ca" KEYLESS_LOG="${KEYLESS_LOG:-info}" \
      "$keyless" serve --config keyless.yaml >"$d/server.log" 2>&1) &
    local pid=$!
    pids+=("$pid")
    for _ in $(seq 1 200); do
      kill -0 "$pid" 2>/dev/null || { cat "$d/server.log" >&2; echo "bench.sh: keyless ($name) exited early" >&2; exit 1; }
      url="$(sed -n 's|^keyless: listening on https://\(127\.0\.0\.1:[0-9]*\)$|\1|p' "$d/server.log" | head -n1)"
      if [ -n "$url" ] && curl -sf --cacert "$work/tls-ca.pem" "https://$url/healthz" >/dev/null 2>&1; then
        replica_pids+=("$pid"); replica_addrs+=("$url")
        return
      fi
      sleep 0.1
    done
    cat "$d/server.log" >&2; echo "bench.sh: keyless ($name) did not answer /healthz within 20 s" >&2; exit 1
  }
  # cpu_ms PIDS...: utime+stime of these processes, in ms; pg_cpu_ms: of every PostgreSQL process.
  cpu_ms() {
    local total=0 p t
    for p in "$@"; do
      t="$(cpu_ticks "$p" 2>/dev/null || echo 0)"
      total=$((total + t))
    done
    echo $((total * 1000 / $(getconf CLK_TCK)))
  }
  pg_cpu_ms() {
    local pg_main; pg_main="$(head -n1 "$pgdir/data/postmaster.pid" 2>/dev/null || true)"
    cpu_ms $pg_main $(pgrep -P "${pg_main:-1}" 2>/dev/null || true)
  }
  # replica_run NAME N RECORD: N replicas behind the balancer, warm-up, then the timed run.
  replica_run() {
    local name="$1" n="$2" record="$3" tag i
    tag="$(echo "$name" | tr 'A-Z' 'a-z' | tr -cs 'a-z0-9\n' '-')"
    replica_pids=(); replica_addrs=()
    if [ "$record" = postgres ]; then
      psql -c "DROP DATABASE IF EXISTS ca" -c "CREATE DATABASE ca"
    fi
    rm -f "$shared/audit-key.pem"
    for i in $(seq 1 "$n"); do start_replica "$tag-$i" "$record"; done
    local backends=() a
    for a in "${replica_addrs[@]}"; do backends+=(--backend "$a"); done
    "$kit" balance "${backends[@]}" >"$work/lb-$tag.addr" 2>"$work/lb-$tag.log" &
    local lb=$!
    pids+=("$lb")
    for _ in $(seq 1 100); do [ -s "$work/lb-$tag.addr" ] && break; sleep 0.05; done
    server_url="https://$(head -n1 "$work/lb-$tag.addr")/api/v2/signingCert"
    server_pid="${replica_pids[0]}"
    server_ca="$work/tls-ca.pem"
    "$kit" bodies --dir "$work" --count 4000 --csr-percent "$csr_percent" --tag "$tag-warm" --out "$work/warm.jsonl"
    drive fulcio "$clients" "$warmup" "$work/warm.jsonl" "$work/warm.json"
    local rate nb; rate="$(jget "$work/warm.json" ok_per_s)"
    nb="$(python3 -c "import sys; print(int(max(float(sys.argv[1]), 500) * int(sys.argv[2]) * 1.6))" "$rate" "$duration")"
    echo "   $name: warm-up $(printf '%.0f' "$rate") certs/s; writing $nb bodies before the clock"
    "$kit" bodies --dir "$work" --count "$nb" --csr-percent "$csr_percent" --tag "$tag-run" --out "$work/run.jsonl"
    local c0 c1 p0 p1 lb0 lb1; c0="$(cpu_ms "${replica_pids[@]}")"; p0="$(pg_cpu_ms)"; lb0="$(cpu_ms "$lb")"
    drive fulcio "$clients" "$duration" "$work/run.jsonl" "$work/$tag.json"
    c1="$(cpu_ms "${replica_pids[@]}")"; p1="$(pg_cpu_ms)"; lb1="$(cpu_ms "$lb")"
    python3 - "$work/$tag.json" "$name" "$((c1 - c0))" "$((lb1 - lb0))" "$((p1 - p0))" >>"$results" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
bad = sum(v for k, v in r["statuses"].items() if not k.startswith("2")) + r["transport_errors"]
ok = max(r["ok"], 1)
flag = f"ERRORS {bad}: {r.get('sample_response') or r.get('first_error', '')}"[:160] if bad else ""
if r["wrapped"]: flag += " WRAPPED (bodies reused)"
print("\t".join(map(str, [sys.argv[2], r["ok_per_s"], r["lat_p50_ms"], r["lat_p99_ms"],
      int(sys.argv[3]) / ok, int(sys.argv[4]) / ok, bad, r["machine_busy_frac"], flag, int(sys.argv[5]) / ok])))
PY
    rm -f "$work/run.jsonl"
    for p in "${replica_pids[@]}" "$lb"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  }

  echo "bodies: RS256 ID token + fresh P-256 key per request, ${csr_percent}% CSR; $clients clients, ${duration} s, TLS through a layer-4 balancer; CT disabled"
  echo "== one replica, record on SQLite =="
  replica_run "1 replica, SQLite" 1 sqlite
  echo "== one replica, record on PostgreSQL =="
  replica_run "1 replica, PostgreSQL" 1 postgres
  echo "== three replicas, one record on PostgreSQL =="
  replica_run "3 replicas, PostgreSQL" 3 postgres
  python3 - "$results" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
base = rows[0]
print()
print("| configuration | certs/s | p50 ms | p99 ms | CPU-ms/cert: keyless | PostgreSQL | both | balancer | errors | certs/s vs 1 on SQLite | CPU/cert vs 1 on SQLite |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
total = lambda r: float(r[4]) + float(r[9])
for r in rows:
    name, cps, p50, p99, cpu, lb, bad, pgc = r[0], float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5]), int(r[6]), float(r[9])
    flag = f" ({r[8]})" if r[8] else ""
    print(f"| {name}{flag} | {cps:,.0f} | {p50:.1f} | {p99:.1f} | {cpu:.3f} | {pgc:.3f} | {cpu + pgc:.3f} | {lb:.3f} | {bad} | "
          f"{cps / float(base[1]):.2f} | {total(r) / total(base):.2f} |")
print("\nmachine busy during each timed window: " + ", ".join(f"{r[0]}: {float(r[7])*100:.0f}%" for r in rows))
extra = total(rows[-1]) - total(base)
print(f"the shared record's cost: {extra:+.3f} CPU-ms per certificate (three replicas on PostgreSQL against one on SQLite)")
PY
  exit 0
fi

# --- the side-by-side ---
machine_facts
echo "bodies: RS256 ID token + fresh P-256 key per request; Keyless: ${csr_percent}% CSR / $((100 - csr_percent))% signed challenge; step-ca: CSR; $clients clients, ${duration} s, TLS"
echo "== step-ca 0.19.0 (software key, no database) =="
start_stepca
measure "step-ca 0.19.0" stepca "$clients"
stop_server
echo "== Keyless, CT disabled =="
start_keyless ct-disabled disabled 0
measure "Keyless, CT disabled" fulcio "$clients"
stop_server
echo "== Keyless, embedded CT log =="
start_keyless ct-embedded embedded 0
measure "Keyless, embedded CT" fulcio "$clients"
stop_server
echo "== Keyless, SoftHSM2 CA key + embedded CT log =="
start_keyless hsm embedded 1
measure "Keyless, SoftHSM + CT" fulcio "$clients"
stop_server

python3 - "$results" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
base = rows[0]
targets = {"Keyless, CT disabled": (4.0, 25.0), "Keyless, embedded CT": (2.5, 40.0), "Keyless, SoftHSM + CT": (1.5, None)}
print()
print("| system | certs/s | p50 ms | p99 ms | CPU-ms/cert | RSS MB | errors | x step-ca certs/s | x step-ca CPU/cert | target | met |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    name, cps, p50, p99, cpu, rss, bad = r[0], float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5]), int(r[6])
    ratio = cps / float(base[1]) if float(base[1]) else 0.0
    cratio = cpu / float(base[4]) if float(base[4]) else 0.0
    t, met = "", ""
    if name in targets:
        need, p99max = targets[name]
        t = f">= {need}x" + (f", p99 < {p99max:.0f} ms" if p99max else "")
        ok = ratio >= need and (p99max is None or p99 < p99max) and bad == 0
        met = "yes" if ok else "NO"
    flag = f" ({r[10]})" if len(r) > 10 and r[10] else ""
    print(f"| {name}{flag} | {cps:,.0f} | {p50:.1f} | {p99:.1f} | {cpu:.3f} | {rss:.1f} | {bad} | "
          f"{ratio:.2f} | {cratio:.2f} | {t} | {met} |")
busy = ", ".join(f"{r[0]}: {float(r[8])*100:.0f}%" for r in rows)
gen = ", ".join(f"{float(r[9]):.2f}" for r in rows)
print(f"\nmachine busy during each timed window: {busy}; generator cores: {gen}")
print("ratios: certs/s over step-ca's (higher is better); CPU-ms/cert over step-ca's (lower is better)")
if any(int(r[6]) for r in rows) or any(len(r) > 10 and r[10] for r in rows):
    print("WARNING: a run has errors or reused bodies (flagged above); its figures do not count")
PY
