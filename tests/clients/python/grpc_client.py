"""Drives Keyless CA's gRPC front door with the official gRPC Python stack, for tests/tests/grpc.rs.

    python grpc_client.py --target HOST:PORT --proto-dir DIR [--root-ca PEM] COMMAND ...

    sign --mode csr|challenge --challenge NAME [--token-in body|oidcidentitytoken|authorization]
                                             (token in $ID_TOKEN; a fresh P-256 key of its own)
    sign-raw HEX                             CreateSigningCertificate with these bytes as the message
    trust-bundle | configuration             the answer as protojson (camelCase, unpopulated fields too)
    health [--service NAME]                  grpc.health.v1 Check with gRPC's own health stubs

Stubs for fulcio.proto are generated at run time with grpcio-tools' protoc from --proto-dir, so
the client shares no code with the server. The key, proof and CSR are made with `cryptography`.
Prints one JSON line: {"ok": true, ...} or, for a refused call, {"ok": false, "code": NAME,
"message": DETAILS, "trailers": {...}}.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

PROTOS = [
    "fulcio.proto",
    "google/api/annotations.proto",
    "google/api/http.proto",
    "google/api/field_behavior.proto",
    "protoc-gen-openapiv2/options/annotations.proto",
    "protoc-gen-openapiv2/options/openapiv2.proto",
]


def stubs(proto_dir: str):
    out = tempfile.mkdtemp(prefix="fulcio-stubs-")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}", f"--python_out={out}",
         f"--grpc_python_out={out}", *PROTOS],
        check=True,
    )
    sys.path.insert(0, out)
    return importlib.import_module("fulcio_pb2"), importlib.import_module("fulcio_pb2_grpc")


def channel(args):
    if args.root_ca:
        with open(args.root_ca, "rb") as f:
            return grpc.secure_channel(args.target, grpc.ssl_channel_credentials(root_certificates=f.read()))
    return grpc.insecure_channel(args.target)


def as_json(message) -> dict:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def sign(pb, stub, args) -> dict:
    token = os.environ["ID_TOKEN"]
    key = ec.generate_private_key(ec.SECP256R1())
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    creds = pb.Credentials(oidc_identity_token=token if args.token_in == "body" else "")
    metadata = [("x-request-id", args.request_id)] if args.request_id else []
    if args.token_in == "oidcidentitytoken":
        metadata.append(("oidcidentitytoken", token))
    elif args.token_in == "authorization":
        metadata.append(("authorization", f"Bearer {token}"))
    if args.mode == "csr":
        csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
        req = pb.CreateSigningCertificateRequest(
            credentials=creds, certificate_signing_request=csr.public_bytes(serialization.Encoding.PEM)
        )
    else:
        proof = key.sign(args.challenge.encode(), ec.ECDSA(hashes.SHA256()))
        req = pb.CreateSigningCertificateRequest(
            credentials=creds,
            public_key_request=pb.PublicKeyRequest(
                public_key=pb.PublicKey(algorithm=pb.ECDSA, content=public_pem), proof_of_possession=proof
            ),
        )
    resp = stub.CreateSigningCertificate(req, metadata=metadata, timeout=30)
    which = resp.WhichOneof("certificate")
    chain = list(getattr(resp, which).chain.certificates)
    return {"ok": True, "oneof": which, "chain": chain, "public_key_pem": public_pem}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True)
    p.add_argument("--proto-dir", required=True)
    p.add_argument("--root-ca")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sign")
    s.add_argument("--mode", choices=["csr", "challenge"], required=True)
    s.add_argument("--challenge", default="")
    s.add_argument("--token-in", choices=["body", "oidcidentitytoken", "authorization"], default="body")
    s.add_argument("--request-id")
    r = sub.add_parser("sign-raw")
    r.add_argument("hex")
    r.add_argument("--request-id")
    sub.add_parser("trust-bundle")
    sub.add_parser("configuration")
    h = sub.add_parser("health")
    h.add_argument("--service", default="")
    args = p.parse_args()

    pb, pb_grpc = stubs(args.proto_dir)
    with channel(args) as ch:
        stub = pb_grpc.CAStub(ch)
        try:
            if args.cmd == "sign":
                out = sign(pb, stub, args)
            elif args.cmd == "sign-raw":
                call = ch.unary_unary("/dev.sigstore.fulcio.v2.CA/CreateSigningCertificate")
                metadata = [("x-request-id", args.request_id)] if args.request_id else []
                call(bytes.fromhex(args.hex), metadata=metadata, timeout=30)
                out = {"ok": True}
            elif args.cmd == "trust-bundle":
                out = {"ok": True, "json": as_json(stub.GetTrustBundle(pb.GetTrustBundleRequest(), timeout=30))}
            elif args.cmd == "configuration":
                out = {"ok": True, "json": as_json(stub.GetConfiguration(pb.GetConfigurationRequest(), timeout=30))}
            else:
                resp = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=args.service), timeout=30
                )
                out = {"ok": True, "status": health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}
        except grpc.RpcError as e:
            trailers = {k: v for k, v in (e.trailing_metadata() or ()) if isinstance(v, str)}
            out = {"ok": False, "code": e.code().name, "message": e.details(), "trailers": trailers}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
