"""Drives the real sigstore-python library against a Keyless CA for the interop tests.

    python sigstore_py.py sign --trust-config FILE [--expect-san S --expect-issuer I]  (token in $ID_TOKEN)
    python sigstore_py.py oidc-mock-token --issuer URL --sub SUB [--email E] [--claims JSON]

`sign` asks for a certificate the way `sigstore sign` does (Signer: ephemeral P-256 key, CSR, token
in the Authorization header, sign-time SCT check against the trust config's CT keys), then runs
the certificate steps of sigstore-python's Verifier against the same trusted root: the chain
(cryptography's webpki verifier), the SCT, KeyUsage/EKU and the Identity policy (SAN + issuer
extension 1.1). The Verifier's transparency-log steps need a Rekor, which this project does not
run, so its certificate steps are called one by one with "now" as the verified time. Prints what it
read back as JSON; a refusal is raised, so the client's own error reaches the test.

`oidc-mock-token` runs the authorization-code flow of PyPI `oidc-provider-mock` and prints the ID
token it returns (no `kid`, an array `aud`).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import requests
from cryptography.x509 import ExtendedKeyUsage, KeyUsage, ObjectIdentifier, SubjectAlternativeName
from cryptography.x509.oid import ExtendedKeyUsageOID

from sigstore._internal.sct import _get_signed_certificate_timestamp, verify_sct
from sigstore._internal.timestamp import TimestampSource, TimestampVerificationResult
from sigstore._internal.trust import KeyringPurpose
from sigstore.models import ClientTrustConfig
from sigstore.oidc import IdentityToken
from sigstore.sign import SigningContext
from sigstore.verify.policy import Identity
from sigstore.verify.verifier import Verifier

OID_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
OID_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")


def sign(args: argparse.Namespace) -> dict:
    config = ClientTrustConfig.from_json(Path(args.trust_config).read_text())
    token = IdentityToken(os.environ["ID_TOKEN"])
    ctx = SigningContext.from_trust_config(config)
    # cache=True makes the Signer request the certificate (and check its SCT) right away.
    with ctx.signer(token, cache=True) as signer:
        cert = signer._signing_cert()

    # The certificate steps of Verifier._verify_common_signing_cert, one by one (see module doc).
    trusted_root = config.trusted_root
    verifier = object.__new__(Verifier)
    verifier._fulcio_certificate_chain = trusted_root.get_fulcio_certs()
    verifier._trusted_root = trusted_root
    now = TimestampVerificationResult(source=TimestampSource.TRANSPARENCY_SERVICE, time=datetime.now(timezone.utc))
    chain = verifier._verify_chain_at_time(cert, now)
    verify_sct(cert, chain, trusted_root.ct_keyring(KeyringPurpose.VERIFY))
    if not cert.extensions.get_extension_for_class(KeyUsage).value.digital_signature:
        raise SystemExit("KeyUsage lacks digitalSignature")
    if ExtendedKeyUsageOID.CODE_SIGNING not in cert.extensions.get_extension_for_class(ExtendedKeyUsage).value:
        raise SystemExit("EKU lacks codeSigning")

    san_ext = cert.extensions.get_extension_for_class(SubjectAlternativeName)
    sans = [str(n.value) for n in san_ext.value]
    issuer_v1 = cert.extensions.get_extension_for_oid(OID_ISSUER_V1).value.value.decode()
    issuer_v2_der = cert.extensions.get_extension_for_oid(OID_ISSUER_V2).value.value
    if args.expect_san or args.expect_issuer:
        Identity(identity=args.expect_san, issuer=args.expect_issuer).verify(cert)
    sct = _get_signed_certificate_timestamp(cert)
    return {
        "identityTokenIdentity": token.identity,
        "subjectAlternativeNames": sans,
        "sanCritical": san_ext.critical,
        "issuerV1": issuer_v1,
        # A DER UTF8String: tag 12, then a one-byte length for these short URLs.
        "issuerV2": issuer_v2_der[2:].decode() if issuer_v2_der[0] == 12 else None,
        "chainLength": len(chain),
        "sctLogId": base64.b64encode(sct.log_id).decode(),
        "serial": format(cert.serial_number, "x"),
    }


def oidc_mock_token(args: argparse.Namespace) -> str:
    base = args.issuer.rstrip("/")
    claims = json.loads(args.claims) if args.claims else {}
    if args.email:
        claims.update({"email": args.email, "email_verified": True})
    requests.put(f"{base}/users/{args.sub}", json=claims, timeout=10).raise_for_status()
    redirect = "http://127.0.0.1/callback"
    resp = requests.post(
        f"{base}/oauth2/authorize",
        params={
            "client_id": "sigstore",
            "redirect_uri": redirect,
            "response_type": "code",
            "scope": "openid email profile",
            "state": "s",
        },
        data={"sub": args.sub},
        allow_redirects=False,
        timeout=10,
    )
    if resp.status_code != 302:
        raise SystemExit(f"authorize: {resp.status_code} {resp.text[:500]}")
    code = parse_qs(urlparse(resp.headers["Location"]).query)["code"][0]
    resp = requests.post(
        f"{base}/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect,
            "client_id": "sigstore",
            "client_secret": "unused",
        },
        timeout=10,
    )
    resp.raise_for_status()
    return resp.json()["id_token"]


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sign")
    s.add_argument("--trust-config", required=True)
    s.add_argument("--expect-san")
    s.add_argument("--expect-issuer")
    t = sub.add_parser("oidc-mock-token")
    t.add_argument("--issuer", required=True)
    t.add_argument("--sub", required=True)
    t.add_argument("--email")
    t.add_argument("--claims")
    args = parser.parse_args()
    if args.command == "sign":
        print(json.dumps(sign(args)))
    else:
        print(oidc_mock_token(args))


if __name__ == "__main__":
    sys.exit(main())
