// Drives the real sigstore-js libraries against a Keyless CA for the interop tests.
//
//   node sigstore-js.mjs sign   --ca URL --trusted-root FILE [--bundle-out FILE]   (token in $ID_TOKEN)
//   node sigstore-js.mjs verify --bundle FILE --artifact FILE --trusted-root FILE
//
// `sign` gets a certificate through @sigstore/sign's FulcioSigner (publicKeyRequest + proof of
// possession, token in the body) and signs a message with it; both commands then verify the
// bundle's certificate with @sigstore/verify against the trusted root: chain, SCTs (threshold 1)
// and the artifact signature. There is no Rekor here, so the tlog timestamp is replaced by the
// current time. Prints what the verifier read back as JSON; on a refusal the client's own error
// goes to stderr and the exit status is 1.
import fs from 'node:fs';
import { bundleFromJSON, bundleToJSON } from '@sigstore/bundle';
import { X509Certificate } from '@sigstore/core';
import { TrustedRoot } from '@sigstore/protobuf-specs';
import { FulcioSigner, MessageSignatureBundleBuilder } from '@sigstore/sign';
import { Verifier, toSignedEntity, toTrustMaterial } from '@sigstore/verify';

function args() {
  const out = { _: process.argv[2] };
  for (let i = 3; i < process.argv.length; i += 2) out[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
  return out;
}

function verify(bundle, artifact, trustedRootFile) {
  const trustedRoot = TrustedRoot.fromJSON(JSON.parse(fs.readFileSync(trustedRootFile, 'utf8')));
  const verifier = new Verifier(toTrustMaterial(trustedRoot), { ctlogThreshold: 1, tlogThreshold: 0 });
  const entity = toSignedEntity(bundle, artifact);
  // Verifier.verify minus the tlog timestamps: the same steps with "now" as the signing time.
  const signer = verifier.verifySigningKey(entity, [new Date()]);
  verifier.verifySignature(entity, signer);
  const material = bundle.verificationMaterial.content;
  const der = material.$case === 'x509CertificateChain' ? material.x509CertificateChain.certificates[0].rawBytes : material.certificate.rawBytes;
  const leaf = X509Certificate.parse(der);
  const ext = (oid) => leaf.extension(oid);
  return {
    subjectAltName: signer.identity.subjectAlternativeName,
    issuer: signer.identity.extensions.issuer,
    issuerV1: ext('1.3.6.1.4.1.57264.1.1')?.value.toString('utf8'),
    scts: leaf.extSCT?.signedCertificateTimestamps.length ?? 0,
    sctLogIds: (leaf.extSCT?.signedCertificateTimestamps ?? []).map((s) => s.logID.toString('base64')),
    sanCritical: leaf.extSubjectAltName?.critical ?? false,
    hasAuthorityKeyId: leaf.extAuthorityKeyID !== undefined,
    serial: leaf.serialNumber.toString('hex'),
  };
}

async function main() {
  const a = args();
  if (a._ === 'sign') {
    const token = process.env.ID_TOKEN;
    if (!token) throw new Error('ID_TOKEN is not set');
    const signer = new FulcioSigner({ fulcioBaseURL: a.ca, identityProvider: { getToken: async () => token } });
    const builder = new MessageSignatureBundleBuilder({ signer, witnesses: [] });
    const artifact = { data: Buffer.from('keyless interop artifact\n') };
    const bundle = await builder.create(artifact);
    if (a['bundle-out']) fs.writeFileSync(a['bundle-out'], JSON.stringify(bundleToJSON(bundle)));
    console.log(JSON.stringify(verify(bundle, artifact.data, a['trusted-root'])));
  } else if (a._ === 'verify') {
    const bundle = bundleFromJSON(JSON.parse(fs.readFileSync(a.bundle, 'utf8')));
    const artifact = fs.readFileSync(a.artifact);
    const result = verify(bundle, artifact, a['trusted-root']);
    result.mediaType = bundle.mediaType;
    console.log(JSON.stringify(result));
  } else {
    throw new Error(`unknown command ${a._}`);
  }
}

main().catch((err) => {
  console.error(`${err.name ?? 'Error'}: ${err.code ?? ''} ${err.message}`);
  if (err.cause) console.error(`cause: ${err.cause.message ?? err.cause}`);
  process.exit(1);
});
