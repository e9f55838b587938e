#!/usr/bin/env bash
# Runs every test of Keyless CA on a fresh Debian machine: installs what the tests need, builds the
# `keyless` binary the black-box tests start, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests use: openssl (independent certificate checks), certspotter (an
# independent CT monitor run against the embedded log), softhsm2 (the PKCS#11 token the CA key
# lives in; tests make throwaway tokens through SOFTHSM2_CONF) and opensc (pkcs11-tool).
missing=()
for pkg in openssl certspotter softhsm2 opensc; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# The black-box tests run this binary as a subprocess.
cargo build --locked --bin keyless

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace --no-fail-fast "$@"
else
  cargo test --locked --workspace --no-fail-fast "$@"
fi
