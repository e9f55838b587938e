#!/usr/bin/env bash
# Runs every test of Keyless CA on a fresh Debian machine: installs what the tests need, builds the
# `keyless` binary the black-box tests start, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests use: openssl (independent certificate checks), certspotter (an
# independent CT monitor run against the embedded log), softhsm2 (the PKCS#11 token the CA key
# lives in; tests make throwaway tokens through SOFTHSM2_CONF), opensc (pkcs11-tool), chromium
# (the audit review page is tested in a real browser, driven by playwright-core) and postgresql
# (the issuance record shared by replicas; tests run private throwaway clusters as the `postgres`
# user, so the service the package starts is not used) and haproxy (checks the load balancer
# configuration of the three-replica compose file).
missing=()
for pkg in openssl certspotter softhsm2 opensc chromium postgresql haproxy; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# The real Sigstore clients and third-party OIDC issuers the interop tests run, pinned and kept
# inside the project: three Python venvs under target/venv (sigstore-python apart from
# oidc-provider-mock, whose dependencies differ, and the gRPC client) and node_modules from the
# committed lockfile.
# Each is reinstalled only when its pin file changes.
install_venv() { # <venv dir> <requirements file>
  local venv="$1" req="$2" stamp="$1/.installed-from"
  local want; want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$req"
    echo "$want" > "$stamp"
  fi
}
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm
fi
node -e 'const [a, b] = process.versions.node.split(".").map(Number);
  if (a < 20 || (a === 20 && b < 19)) { console.error(`Node.js >= 20.19 is needed, found ${process.version}`); process.exit(1); }'
install_venv target/venv/sigstore tests/clients/python/sigstore-requirements.txt
install_venv target/venv/oidc-mock tests/clients/python/oidc-mock-requirements.txt
install_venv target/venv/grpc tests/clients/python/grpc-requirements.txt
lock="$(sha256sum tests/clients/package-lock.json | cut -d' ' -f1)"
if [ "$(cat tests/clients/node_modules/.installed-from 2>/dev/null)" != "$lock" ]; then
  (cd tests/clients && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock" > tests/clients/node_modules/.installed-from
fi

# Lints, enforced like the tests: formatting, clippy with warnings as errors, and the cargo-fuzz
# targets compiled (they run on nightly only, see fuzz/README.md) so they cannot rot.
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo build --locked --manifest-path fuzz/Cargo.toml --target-dir target

# The black-box tests run this binary as a subprocess, built with the test-only hooks (the HSM
# fault-injection test logs the CA out of its token with SIGUSR1); the shipped binary never has them.
cargo build --locked --bin keyless --features keyless-cli/insecure-test-hooks
# The container image's build step (deploy/docker/Dockerfile), run here too so every CI run proves
# the release build the image ships works from a fresh clone.
cargo build --release --locked --bin keyless

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace --no-fail-fast "$@"
else
  cargo test --locked --workspace --no-fail-fast "$@"
fi
