#!/bin/sh
# One-shot initialisation for deploy/docker/compose.yaml (DEVELOPMENT ONLY).
#
# 1. Creates the SoftHSM token `keyless` in the shared volume, unless it exists.
# 2. Runs the key ceremony (`keyless ca init`: root, issuing key and CT log key inside the token,
#    the chain file and the ceremony record under /var/lib/keyless), unless the chain exists.
#
# Safe to re-run: it skips what is already done. If a previous run stopped half way (token keys
# but no chain), `keyless ca init` refuses to overwrite them: start over with `docker compose down -v`.
set -eu

: "${KEYLESS_HSM_PIN:?KEYLESS_HSM_PIN is not set}"
: "${KEYLESS_HSM_SO_PIN:?KEYLESS_HSM_SO_PIN is not set}"
: "${SOFTHSM2_CONF:?SOFTHSM2_CONF is not set}"

# The ceremony reads this configuration (compose.replicas.yaml points it at the CT log's).
config=${KEYLESS_CONFIG:-/etc/keyless/keyless.yaml}
chain=/var/lib/keyless/ca-chain.pem
label=keyless

mkdir -p /var/lib/keyless/softhsm-tokens

if softhsm2-util --show-slots | grep -Eq "^[[:space:]]*Label:[[:space:]]+${label}[[:space:]]*\$"; then
  echo "init: SoftHSM token '${label}' already exists"
else
  # The PINs on the command line are visible to other processes of this container: fine for a
  # throwaway development token, never for a real one.
  softhsm2-util --init-token --free --label "$label" --pin "$KEYLESS_HSM_PIN" --so-pin "$KEYLESS_HSM_SO_PIN"
fi

if [ -e "$chain" ]; then
  echo "init: $chain already exists; skipping the key ceremony"
else
  keyless ca init --config "$config"
fi
