#!/usr/bin/env bash
# A long property-fuzzing campaign on stable Rust: runs every target of tests/tests/fuzz.rs in a
# release build, one after the other (so each has the machine to itself), niced, and prints a
# Markdown table of inputs, wall time and failures per target for docs/security.md.
#
#   scripts/fuzz.sh [CASES] [SECONDS]
#
# CASES: generated inputs per target (default 1000000); SECONDS: stop each target after this long
# (default: no time limit). A failing input is saved under tests/fuzz-regressions/<target>/ and
# the script exits non-zero; commit the file with the fix.
set -euo pipefail
cd "$(dirname "$0")/.."

cases="${1:-1000000}"
seconds="${2:-}"
report="$(mktemp)"
log="$(mktemp)"
trap 'rm -f "$report" "$log"' EXIT

run() { nice -n 10 cargo test --release --locked -q -p keyless-tests --test fuzz "$@"; }

run --no-run
targets=$(run -- --list 2>/dev/null | sed -n 's/: test$//p')

# The entry point each target feeds (for the table).
entry() {
  case "$1" in
    identity_token) echo '`keyless_ca::token::parse` + `token::verify`' ;;
    jwks) echo '`keyless_oidc::parse_jwks` (`IssuerKeys::from_jwks`)' ;;
    discovery) echo '`keyless_oidc::parse_discovery`' ;;
    csr) echo '`keyless_ca::possession::prove_csr`' ;;
    public_key) echo '`keyless_ca::keys::PublicKey::from_pem_or_der` + `verify`' ;;
    signing_request) echo '`keyless_api::decode_v2` / `decode_v1`' ;;
    ct_submission) echo '`keyless_ctlog::http::router` add-chain / add-pre-chain' ;;
    ct_sct_response) echo '`AddChainResponse::to_sct`' ;;
    ct_sth) echo '`keyless_ctlog::wire::GetSthResponse::verify`' ;;
    ct_entries) echo '`keyless_audit::sync::read_entry`' ;;
    config) echo '`keyless_config::Config::from_yaml`' ;;
    fulcio_issuer_file) echo '`keyless_config::parse_issuers_file`' ;;
    template) echo '`keyless_config::template::Template::parse` + `render`' ;;
    *) echo '' ;;
  esac
}

status=0
for t in $targets; do
  echo "fuzz: $t (cases $cases${seconds:+, at most ${seconds}s})" >&2
  if ! KEYLESS_FUZZ_CASES="$cases" KEYLESS_FUZZ_SECONDS="$seconds" KEYLESS_FUZZ_REPORT="$report" \
    run -- --exact "$t" --test-threads=1 >"$log" 2>&1; then
    status=1
    grep -E "^fuzz $t|minimal input|saved to|overflow|fatal" "$log" | head -20 >&2 || true
    # A crash (stack overflow, abort) leaves no report line: record it.
    grep -q "^$t	" "$report" || printf '%s\t-\t-\t-\tcrashed\t-\n' "$t" >>"$report"
  fi
done

echo
echo "Property fuzzing, $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(rustc --version | cut -d' ' -f1-2), release build, $(nproc) CPUs, cases per target $cases${seconds:+, at most ${seconds} s per target}:"
echo
echo "| Target | Entry point | Inputs | Accepted | Wall time (s) | Inputs/s | Failures | Slowest input (ms) |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
total_inputs=0
total_secs=0
while IFS=$'\t' read -r t inputs accepted secs failures slowest; do
  if [ "$inputs" = "-" ]; then
    rate="-"
  else
    rate=$(awk -v n="$inputs" -v s="$secs" 'BEGIN { printf "%d", (s > 0 ? n / s : n) }')
    total_inputs=$((total_inputs + inputs))
    total_secs=$(awk -v a="$total_secs" -v b="$secs" 'BEGIN { print a + b }')
  fi
  echo "| \`$t\` | $(entry "$t") | $inputs | $accepted | $secs | $rate | $failures | $slowest |"
done <"$report"
echo "| **total** | | $total_inputs | | $total_secs | | | |"
exit "$status"
