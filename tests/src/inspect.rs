//! Certificate checks with parsers that share no code with the CA: RustCrypto's `x509-cert` for
//! structure and the `openssl` command for chain verification.

use der::asn1::{Ia5StringRef, Utf8StringRef};
use der::{Decode, DecodePem, Encode};
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, ExtendedKeyUsage, KeyUsage, SubjectAltName, SubjectKeyIdentifier};

/// Parses a PEM certificate.
pub fn parse(pem: &str) -> Certificate {
    Certificate::from_pem(pem.as_bytes()).unwrap_or_else(|e| panic!("certificate does not parse: {e}\n{pem}"))
}

/// `(critical, extnValue bytes)` of the extension with `oid`, if present.
pub fn extension(cert: &Certificate, oid: &str) -> Option<(bool, Vec<u8>)> {
    let oid: der::asn1::ObjectIdentifier = oid.parse().unwrap();
    cert.tbs_certificate()
        .extensions()?
        .iter()
        .find(|e| e.extn_id == oid)
        .map(|e| (e.critical, e.extn_value.as_bytes().to_vec()))
}

/// The extension OIDs in order.
pub fn extension_oids(cert: &Certificate) -> Vec<String> {
    cert.tbs_certificate()
        .extensions()
        .map(|e| e.iter().map(|x| x.extn_id.to_string()).collect())
        .unwrap_or_default()
}

/// A Sigstore extension `1.3.6.1.4.1.57264.1.<arc>` decoded by its encoding: raw bytes for 1.1–1.6,
/// DER UTF8String from 1.8 on (panics if the encoding is wrong).
pub fn sigstore(cert: &Certificate, arc: u32) -> Option<String> {
    let (critical, value) = extension(cert, &format!("1.3.6.1.4.1.57264.1.{arc}"))?;
    assert!(!critical, "Sigstore extension 1.{arc} must not be critical");
    if arc <= 6 {
        Some(String::from_utf8(value).expect("raw UTF-8"))
    } else {
        Some(
            Utf8StringRef::from_der(&value)
                .expect("DER UTF8String")
                .as_str()
                .to_string(),
        )
    }
}

/// The SAN: `(critical, "email:..." | "uri:...")`. Panics unless there is exactly one name.
pub fn san(cert: &Certificate) -> (bool, String) {
    let (critical, value) = extension(cert, "2.5.29.17").expect("SAN present");
    let names = SubjectAltName::from_der(&value).expect("SAN decodes").0;
    assert_eq!(names.len(), 1, "exactly one SAN");
    let text = match &names[0] {
        GeneralName::Rfc822Name(e) => format!("email:{}", Ia5StringRef::from(e).as_str()),
        GeneralName::UniformResourceIdentifier(u) => format!("uri:{}", Ia5StringRef::from(u).as_str()),
        GeneralName::OtherName(o) => {
            let inner = o.value.to_der().unwrap();
            // The otherName value (its [0] EXPLICIT wrapper already removed by the parser).
            let utf8 = Utf8StringRef::from_der(&inner).expect("UTF8String otherName value");
            format!("othername:{}:{}", o.type_id, utf8.as_str())
        }
        other => format!("other:{other:?}"),
    };
    (critical, text)
}

/// Asserts the leaf profile of Fulcio §5.1 against the issuing CA certificate.
pub fn assert_leaf_profile(leaf: &Certificate, issuing_ca: &Certificate, validity_secs: u64) {
    let tbs = leaf.tbs_certificate();
    assert_eq!(tbs.version(), x509_cert::Version::V3);
    assert!(tbs.subject().is_empty(), "subject must be empty");
    assert_eq!(
        tbs.issuer().to_der().unwrap(),
        issuing_ca.tbs_certificate().subject().to_der().unwrap()
    );
    let serial = tbs.serial_number().as_bytes();
    assert!(
        serial.len() <= 20 && serial[0] & 0x80 == 0,
        "serial must be positive and at most 159 bits"
    );
    let nb = tbs.validity().not_before.to_unix_duration().as_secs();
    let na = tbs.validity().not_after.to_unix_duration().as_secs();
    assert_eq!(na - nb, validity_secs, "validity");
    let now = crate::now();
    assert!(nb <= now + 1 && nb + 120 >= now, "notBefore is now (no back-dating)");

    let (ku_crit, ku) = extension(leaf, "2.5.29.15").expect("KU");
    assert!(ku_crit, "KU critical");
    let ku = KeyUsage::from_der(&ku).unwrap();
    assert!(ku.digital_signature() && !ku.key_cert_sign() && !ku.crl_sign() && !ku.key_encipherment());
    let (eku_crit, eku) = extension(leaf, "2.5.29.37").expect("EKU");
    assert!(!eku_crit);
    let eku = ExtendedKeyUsage::from_der(&eku).unwrap();
    assert_eq!(
        eku.0.iter().map(|o| o.to_string()).collect::<Vec<_>>(),
        ["1.3.6.1.5.5.7.3.3"]
    );
    assert!(extension(leaf, "2.5.29.19").is_none(), "no BasicConstraints on leaves");
    let (_, ski) = extension(leaf, "2.5.29.14").expect("SKI");
    assert_eq!(SubjectKeyIdentifier::from_der(&ski).unwrap().0.as_bytes().len(), 20);
    let (_, aki) = extension(leaf, "2.5.29.35").expect("AKI");
    let aki = AuthorityKeyIdentifier::from_der(&aki).unwrap();
    let (_, ca_ski) = extension(issuing_ca, "2.5.29.14").expect("CA SKI");
    assert_eq!(
        aki.key_identifier.unwrap().as_bytes(),
        SubjectKeyIdentifier::from_der(&ca_ski).unwrap().0.as_bytes()
    );
    let (san_crit, _) = san(leaf);
    assert!(san_crit, "SAN critical (empty subject)");
}

/// Verifies a chain (leaf first, root last) with `openssl verify`.
pub fn openssl_verify(chain: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, pems: &[String]| {
        let text: String = pems.iter().map(|p| format!("{}\n", p.trim_end())).collect();
        std::fs::write(dir.path().join(name), text).unwrap();
    };
    write("leaf.pem", &chain[..1]);
    write("root.pem", &chain[chain.len() - 1..]);
    write("inter.pem", &chain[1..chain.len() - 1]);
    let mut args = vec!["verify", "-CAfile", "root.pem", "-purpose", "any"];
    if chain.len() > 2 {
        args.extend(["-untrusted", "inter.pem"]);
    }
    args.push("leaf.pem");
    let out = String::from_utf8(crate::openssl(&args, dir.path())).unwrap();
    assert!(out.contains("leaf.pem: OK"), "openssl verify: {out}");
}
