//! One issuance decision as a record, and the hash chain that links records.
//!
//! A record is stored as the exact JSON text that was hashed, so verification needs no canonical
//! re-encoding: `hash = SHA-256("keyless-audit-v1\n" ‖ prev_hash ‖ json)`. The first record's
//! `prev_hash` is 32 zero bytes.

use keyless_ca::Serial;
use serde::{Deserialize, Serialize};
use x509_parser::prelude::*;

/// The domain separator of the record hash.
const RECORD_DOMAIN: &[u8] = b"keyless-audit-v1\n";

/// What the CA decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// A certificate was issued and returned.
    Issued,
    /// The request was refused.
    Rejected,
    /// A precertificate is about to leave the CA for a CT log: written (durably) before it does,
    /// so a logged precertificate whose issuance never finished is explained, not an alarm.
    Intent,
    /// An issuance announced by an `intent` record did not complete (CT log, signer, client gone).
    Abandoned,
}

impl Decision {
    /// The name records use (`issued`, `rejected`, `intent`, `abandoned`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Issued => "issued",
            Decision::Rejected => "rejected",
            Decision::Intent => "intent",
            Decision::Abandoned => "abandoned",
        }
    }
}

/// A decoded Sigstore (or other) extension of an issued certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extension {
    /// Dotted OID.
    pub oid: String,
    /// Its name in Fulcio's OID documentation (or the X.509 name).
    pub name: String,
    /// The decoded value.
    pub value: String,
    /// Marked critical.
    pub critical: bool,
}

/// The certificate part of an `issued` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateFacts {
    /// Serial number as [`Serial`] shows it: lower-case hex without leading zeros.
    pub serial: String,
    /// SHA-256 of the DER certificate, hex.
    pub sha256: String,
    /// The SAN as `email:…`, `uri:…` or `othername:…`.
    pub san: String,
    /// Every Sigstore extension, decoded and named, in certificate order.
    pub extensions: Vec<Extension>,
    /// Validity start, seconds since the epoch.
    pub not_before: i64,
    /// Validity end, seconds since the epoch.
    pub not_after: i64,
    /// The SCT's log id (hex), when the certificate was logged.
    pub sct_log_id: Option<String>,
    /// The SCT's timestamp (ms), when the certificate was logged.
    pub sct_timestamp: Option<u64>,
    /// Position in the CT log, when the log said (the embedded log does).
    pub leaf_index: Option<u64>,
    /// The certificate itself, base64 DER.
    pub der: String,
}

/// The rejection part of a `rejected` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Reason class (`token`, `policy`, `key`, `pop`, `request`, `rate_limit`, ...).
    pub class: String,
    /// The message the client got.
    pub message: String,
}

/// What an `intent` record announces: the certificate about to be submitted to a CT log as a
/// precertificate, identified by the TBS hash the log's entry will have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// Serial number, as [`Serial`] shows it.
    pub serial: String,
    /// [`crate::tbs::tbs_sha256`] of the TBS: equal to the log entry's and the final
    /// certificate's (CT extensions are left out of the hash).
    pub tbs_sha256: String,
    /// The SAN as `email:…`, `uri:…` or `othername:…`.
    pub san: String,
    /// Validity start, seconds since the epoch.
    pub not_before: i64,
    /// Validity end, seconds since the epoch.
    pub not_after: i64,
    /// The CT log it goes to (name or URL).
    pub log: String,
}

impl Intent {
    /// The intent for a DER TBSCertificate (with or without the CT poison) about to be logged
    /// to `log`.
    pub fn of_tbs(tbs_der: &[u8], log: &str) -> Result<Intent, crate::AuditError> {
        let bad = |why: String| crate::AuditError::Setup(format!("intent: {why}"));
        let wrapped = crate::tbs::wrap_tbs(tbs_der).ok_or_else(|| bad("the TBSCertificate is not DER".into()))?;
        let (_, cert) =
            X509Certificate::from_der(&wrapped).map_err(|e| bad(format!("the TBSCertificate does not parse: {e}")))?;
        Ok(Intent {
            serial: Serial::from_be_bytes(cert.raw_serial()).to_string(),
            tbs_sha256: crate::tbs::tbs_sha256(tbs_der)?,
            san: san_text(&cert),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            log: log.to_string(),
        })
    }
}

impl Intent {
    /// The intent for a leaf the CA has just prepared, from the fields it fixed rather than from
    /// a parse of its TBS. The TBS of a [`keyless_ca::Prepared`] carries no CT extension, so its
    /// plain SHA-256 is the [`crate::tbs::tbs_sha256`]; [`Intent::of_tbs`] of the same TBS gives
    /// the same intent (checked on every issuance in debug builds, hence by the whole test suite).
    pub fn of_prepared(prepared: &keyless_ca::Prepared, log: &str) -> Intent {
        Intent {
            serial: prepared.serial().to_string(),
            tbs_sha256: hex(&keyless_ca::keys::sha256(prepared.tbs_der())),
            san: prepared.san_text().to_string(),
            not_before: prepared.not_before().unix_timestamp(),
            not_after: prepared.not_after().unix_timestamp(),
            log: log.to_string(),
        }
    }
}

/// One decision. Never holds a token, a proof or a key: only digests and what was decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the record, from 0.
    pub seq: u64,
    /// When, milliseconds since the epoch.
    pub time_ms: u64,
    /// The request id (from `X-Request-Id` or generated).
    pub request_id: String,
    /// The token's issuer, when it could be read.
    pub issuer: Option<String>,
    /// The certificate identity (SAN value) when the token verified, else the token's `sub`.
    pub subject: Option<String>,
    /// SHA-256 of the token's claims (its decoded payload), hex; never the token itself.
    pub claims_sha256: Option<String>,
    /// SHA-256 of the client's public key (DER SubjectPublicKeyInfo), hex.
    pub key_sha256: Option<String>,
    /// What was decided.
    pub decision: Decision,
    /// The rule that decided: the issuer kind's mapping for issued certificates, the refusing
    /// check otherwise.
    pub rule: String,
    /// Set for `issued`.
    pub certificate: Option<CertificateFacts>,
    /// Set for `rejected` and `abandoned` (why the issuance did not complete: `ct_log`,
    /// `signer`, `client_gone`, ...).
    pub rejection: Option<Rejection>,
    /// Set for `intent`, and repeated in `abandoned`. Absent from older records, which
    /// therefore serialize (and hash) exactly as before.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub intent: Option<Intent>,
    /// For `issued` and `abandoned`: the position of the `intent` record this outcome closes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub intent_seq: Option<u64>,
}

/// The chain hash of a record given its predecessor's.
pub fn chain_hash(prev: &[u8; 32], json: &[u8]) -> [u8; 32] {
    let mut input = Vec::with_capacity(RECORD_DOMAIN.len() + 32 + json.len());
    input.extend_from_slice(RECORD_DOMAIN);
    input.extend_from_slice(prev);
    input.extend_from_slice(json);
    keyless_ca::keys::sha256(&input)
}

pub use crate::hex::hex;

/// The name of a Sigstore extension by its last arc, from the certificate profile table.
fn sigstore_name(arc: u64) -> Option<&'static str> {
    keyless_ca::profile::SIGSTORE_EXTENSIONS
        .iter()
        .find(|r| r.arc == arc)
        .map(|r| r.name)
}

const SIGSTORE_PREFIX: &str = "1.3.6.1.4.1.57264.1.";

/// Decodes an extension value: Sigstore 1.1–1.6 are raw UTF-8, the rest DER UTF8Strings.
fn sigstore_value(arc: u64, value: &[u8]) -> String {
    if arc <= 6 {
        return String::from_utf8_lossy(value).into_owned();
    }
    match x509_parser::der_parser::parse_der(value) {
        Ok((_, obj)) => match obj.as_str() {
            Ok(s) => s.to_string(),
            Err(_) => format!("(undecodable: {})", hex(value)),
        },
        Err(_) => format!("(undecodable: {})", hex(value)),
    }
}

/// The SAN of a certificate as `email:…`, `uri:…`, `othername:…` (first name only).
pub fn san_text(cert: &X509Certificate<'_>) -> String {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return String::new();
    };
    match san.value.general_names.first() {
        Some(GeneralName::RFC822Name(e)) => format!("email:{e}"),
        Some(GeneralName::URI(u)) => format!("uri:{u}"),
        Some(GeneralName::OtherName(oid, value)) => {
            let text = x509_parser::der_parser::parse_der(value)
                .ok()
                .and_then(|(_, o)| {
                    // The [0] EXPLICIT wrapper, then the UTF8String.
                    let inner = o.as_slice().ok()?;
                    let (_, s) = x509_parser::der_parser::parse_der(inner).ok()?;
                    s.as_str().ok().map(str::to_string)
                })
                .unwrap_or_else(|| hex(value));
            format!("othername:{oid}:{text}")
        }
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// Every extension of a certificate, decoded and named: Sigstore ones by the profile table,
/// the standard ones by x509-parser.
pub fn decode_extensions(cert: &X509Certificate<'_>) -> Vec<Extension> {
    cert.extensions()
        .iter()
        .map(|e| {
            let oid = e.oid.to_id_string();
            let (name, value) = if let Some(arc) = oid.strip_prefix(SIGSTORE_PREFIX).and_then(|a| a.parse().ok()) {
                (
                    sigstore_name(arc)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("Sigstore {oid}")),
                    sigstore_value(arc, e.value),
                )
            } else {
                standard_extension(e)
            };
            Extension {
                oid,
                name,
                value,
                critical: e.critical,
            }
        })
        .collect()
}

fn standard_extension(e: &X509Extension<'_>) -> (String, String) {
    match e.parsed_extension() {
        ParsedExtension::KeyUsage(ku) => ("Key Usage".into(), ku.to_string()),
        ParsedExtension::ExtendedKeyUsage(eku) => {
            let mut uses = Vec::new();
            if eku.code_signing {
                uses.push("codeSigning".to_string());
            }
            uses.extend(eku.other.iter().map(|o| o.to_id_string()));
            ("Extended Key Usage".into(), uses.join(", "))
        }
        ParsedExtension::SubjectKeyIdentifier(k) => ("Subject Key Identifier".into(), hex(k.0)),
        ParsedExtension::AuthorityKeyIdentifier(a) => (
            "Authority Key Identifier".into(),
            a.key_identifier.as_ref().map(|k| hex(k.0)).unwrap_or_default(),
        ),
        ParsedExtension::SubjectAlternativeName(_) => ("Subject Alternative Name".into(), String::new()),
        ParsedExtension::BasicConstraints(b) => ("Basic Constraints".into(), format!("CA:{}", b.ca)),
        ParsedExtension::SCT(scts) => (
            "Signed Certificate Timestamps".into(),
            scts.iter()
                .map(|s| format!("log {} at {} ms", hex(s.id.key_id), s.timestamp))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        _ => (e.oid.to_id_string(), hex(e.value)),
    }
}

/// The facts an `issued` record keeps about a DER certificate.
pub fn certificate_facts(
    der: &[u8],
    sct: Option<(&[u8; 32], u64)>,
    leaf_index: Option<u64>,
) -> Result<CertificateFacts, String> {
    use base64::Engine as _;
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("certificate does not parse: {e}"))?;
    let mut extensions = decode_extensions(&cert);
    let san = san_text(&cert);
    for e in &mut extensions {
        if e.oid == "2.5.29.17" {
            e.value = san.clone();
        }
    }
    Ok(CertificateFacts {
        serial: Serial::from_be_bytes(cert.raw_serial()).to_string(),
        sha256: hex(&keyless_ca::keys::sha256(der)),
        san,
        extensions,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        sct_log_id: sct.map(|(id, _)| hex(id)),
        sct_timestamp: sct.map(|(_, t)| t),
        leaf_index,
        der: base64::engine::general_purpose::STANDARD.encode(der),
    })
}

impl Record {
    /// The serial this record is about: the certificate's, or the intended one's.
    pub fn serial(&self) -> Option<&str> {
        self.certificate
            .as_ref()
            .map(|c| c.serial.as_str())
            .or(self.intent.as_ref().map(|i| i.serial.as_str()))
    }

    /// The SAN this record is about: the certificate's, or the intended one's.
    pub fn san(&self) -> Option<&str> {
        self.certificate
            .as_ref()
            .map(|c| c.san.as_str())
            .or(self.intent.as_ref().map(|i| i.san.as_str()))
    }

    /// The value of an extension by dotted OID.
    pub fn extension(&self, oid: &str) -> Option<&str> {
        self.certificate
            .as_ref()?
            .extensions
            .iter()
            .find(|e| e.oid == oid)
            .map(|e| e.value.as_str())
    }
}

/// A refusal record for tests.
#[cfg(test)]
pub(crate) fn test_refusal(seq: u64) -> Record {
    Record {
        seq,
        time_ms: 1_700_000_000_000 + seq,
        request_id: format!("req-{seq}"),
        issuer: Some("https://issuer.example".into()),
        subject: Some(format!("user{seq}@example.com")),
        claims_sha256: Some("00".repeat(32)),
        key_sha256: None,
        decision: Decision::Rejected,
        rule: "token".into(),
        certificate: None,
        rejection: Some(Rejection {
            class: "token".into(),
            message: format!("refusal {seq}"),
        }),
        intent: None,
        intent_seq: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::TestCa;

    /// A record as the first release wrote it, byte for byte.
    const OLD: &str = r#"{"seq":3,"time_ms":1700000000003,"request_id":"req-3","issuer":"https://issuer.example","subject":"user3@example.com","claims_sha256":"00","key_sha256":null,"decision":"rejected","rule":"token","certificate":null,"rejection":{"class":"token","message":"refusal 3"}}"#;

    #[test]
    fn old_records_parse_and_serialize_exactly_as_before() {
        let r: Record = serde_json::from_str(OLD).unwrap();
        assert_eq!((r.intent.as_ref(), r.intent_seq), (None, None));
        assert_eq!(serde_json::to_string(&r).unwrap(), OLD);
        assert_eq!(
            chain_hash(&[0; 32], serde_json::to_string(&r).unwrap().as_bytes()),
            chain_hash(&[0; 32], OLD.as_bytes())
        );
    }

    #[test]
    fn an_intent_names_the_tbs_hash_of_the_certificate_and_its_log_entry() {
        let ca = TestCa::new("Audit Test CA");
        let leaf = ca.leaf("alice@example.com", "https://issuer.example");
        let precert_tbs = crate::testkit::tbs(&leaf.precert);
        let intent = Intent::of_tbs(&precert_tbs, "https://ct.example/log").unwrap();
        assert_eq!(
            intent.tbs_sha256,
            crate::tbs::tbs_sha256_of_certificate(&leaf.final_cert).unwrap()
        );
        assert_eq!(intent.tbs_sha256, crate::tbs::tbs_sha256(&leaf.log_tbs).unwrap());
        assert_eq!(
            Intent::of_tbs(&leaf.log_tbs, "x").unwrap().tbs_sha256,
            intent.tbs_sha256
        );
        assert_eq!(intent.serial, leaf.serial);
        assert_eq!(intent.san, "email:alice@example.com");
        assert_eq!((intent.not_before, intent.not_after), (1_750_000_000, 1_750_000_600));
        assert_eq!(intent.log, "https://ct.example/log");
        let err = Intent::of_tbs(b"not DER", "x").unwrap_err();
        assert!(err.to_string().contains("intent"), "{err}");

        // Recorded, it reads back with its kind; an outcome points at it.
        let mut r = test_refusal(7);
        r.decision = Decision::Intent;
        r.rejection = None;
        r.intent = Some(intent.clone());
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""decision":"intent""#), "{json}");
        assert!(!json.contains("intent_seq"), "{json}");
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
        assert_eq!(
            (r.serial(), r.san()),
            (Some(leaf.serial.as_str()), Some("email:alice@example.com"))
        );
        let mut outcome = test_refusal(8);
        outcome.decision = Decision::Abandoned;
        outcome.intent_seq = Some(7);
        let json = serde_json::to_string(&outcome).unwrap();
        assert!(
            json.contains(r#""decision":"abandoned""#) && json.contains(r#""intent_seq":7"#),
            "{json}"
        );
    }
}
