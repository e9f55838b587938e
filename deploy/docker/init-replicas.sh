#!/bin/sh
# One-shot initialisation for deploy/docker/compose.replicas.yaml (DEVELOPMENT ONLY), before the
# CT log and the replicas start. Everything lands in the shared volume (/var/lib/keyless).
#
# 1. init-softhsm.sh with the CT log's configuration: the SoftHSM token `keyless`, then the key
#    ceremony once for everyone (`keyless ca init`: root and issuing keys and the CT log's key in
#    the token, the chain ca-chain.pem), each unless already done.
# 2. `keyless trusted-root`: the clients' trusted root (trusted_root.json, CA on 127.0.0.1:5555,
#    log on 127.0.0.1:6962) and, from it, the CT log's public key for the replicas (ct-log.pub).
set -eu

KEYLESS_CONFIG=/etc/keyless/ctlog.yaml sh /etc/keyless/init-softhsm.sh

root=/var/lib/keyless/trusted_root.json
pub=/var/lib/keyless/ct-log.pub
if [ -e "$pub" ]; then
  echo "init: $pub already exists"
  exit 0
fi
keyless trusted-root --config /etc/keyless/ctlog.yaml \
  --ca-url http://127.0.0.1:5555 --ct-url http://127.0.0.1:6962/keyless > "$root.tmp"
# The log's key is the trusted root's last rawBytes (its ctlogs entry follows the CA's
# certificates): a P-256 SubjectPublicKeyInfo in base64, which a PEM PUBLIC KEY wraps.
spki=$(sed -n 's/^ *"rawBytes": "\([A-Za-z0-9+/=]*\)",\{0,1\}$/\1/p' "$root.tmp" | tail -n 1)
case "$spki" in
  MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE*) ;;
  *)
    echo "init: no P-256 CT log key found in the trusted root" >&2
    exit 1
    ;;
esac
{
  echo '-----BEGIN PUBLIC KEY-----'
  printf '%s\n' "$spki" | fold -w 64
  echo '-----END PUBLIC KEY-----'
} > "$pub.tmp"
mv "$root.tmp" "$root"
mv "$pub.tmp" "$pub"
echo "init: wrote $pub and $root"
