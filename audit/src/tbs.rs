//! The TBS hash that ties the issuance record to CT log entries: SHA-256 of a TBSCertificate
//! with the CT poison and SCT-list extensions removed. An `intent` record, the final
//! certificate, its precertificate and the log's precertificate entry all give the same value.

use keyless_ca::ct;
use keyless_ca::der::{self, Tlv, read_all, read_tlv};
use keyless_ca::keys::sha256;

use crate::AuditError;
use crate::hex::hex;

/// `tbs` re-encoded without the CT poison and SCT-list extensions (an extensions field left empty
/// is dropped), or `None` if it is not a DER TBSCertificate.
pub(crate) fn strip_ct_extensions(tbs: &[u8]) -> Option<Vec<u8>> {
    let (outer, rest) = read_tlv(tbs)?;
    if outer.tag != der::SEQUENCE || !rest.is_empty() {
        return None;
    }
    let poison = ct::oid_der(ct::POISON_OID);
    let sct_list = ct::oid_der(ct::SCT_LIST_OID);
    let mut parts: Vec<Vec<u8>> = Vec::new();
    for field in read_all(outer.content)? {
        if field.tag != 0xa3 {
            parts.push(field.raw.to_vec());
            continue;
        }
        let (list, rest) = read_tlv(field.content)?;
        if list.tag != der::SEQUENCE || !rest.is_empty() {
            return None;
        }
        let mut kept: Vec<&[u8]> = Vec::new();
        for ext in read_all(list.content)? {
            let (id, _) = read_tlv(ext.content)?;
            if id.raw != poison.as_slice() && id.raw != sct_list.as_slice() {
                kept.push(ext.raw);
            }
        }
        if !kept.is_empty() {
            parts.push(der::context(3, true, &der::seq(&kept)));
        }
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    Some(der::seq(&refs))
}

/// Hex SHA-256 of a DER TBSCertificate without its CT extensions (poison, SCT list): the value
/// an `intent` record carries, equal to [`tbs_sha256_of_certificate`] of the final certificate
/// and of its precertificate, and to the CT log entry's.
pub fn tbs_sha256(tbs_der: &[u8]) -> Result<String, AuditError> {
    let stripped =
        strip_ct_extensions(tbs_der).ok_or_else(|| AuditError::Setup("a TBSCertificate is not valid DER".into()))?;
    Ok(hex(&sha256(&stripped)))
}

/// The TBS of a DER certificate.
pub(crate) fn tbs_of(cert: &[u8]) -> Option<Tlv<'_>> {
    let (outer, _) = read_tlv(cert)?;
    if outer.tag != der::SEQUENCE {
        return None;
    }
    Some(read_tlv(outer.content)?.0)
}

/// Hex SHA-256 of a certificate's TBS with the CT poison and SCT-list extensions removed and the
/// rest re-encoded in order: a final certificate (which carries the SCT list) and the
/// precertificate entry a log holds for it (neither poison nor SCT list) give the same value.
pub fn tbs_sha256_of_certificate(der: &[u8]) -> Result<String, AuditError> {
    let tbs = tbs_of(der).ok_or_else(|| AuditError::Setup("the certificate is not DER".into()))?;
    tbs_sha256(tbs.raw).map_err(|_| AuditError::Setup("the certificate's TBS is not valid DER".into()))
}

/// A TBS wrapped as a certificate with an empty signature, so x509-parser can decode it.
pub(crate) fn wrap_tbs(tbs: &[u8]) -> Option<Vec<u8>> {
    let (outer, _) = read_tlv(tbs)?;
    let fields = read_all(outer.content)?;
    let alg = if fields.first()?.tag == 0xa0 {
        fields.get(2)?
    } else {
        fields.get(1)?
    };
    Some(der::seq(&[tbs, alg.raw, &[der::BIT_STRING, 1, 0]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::TestCa;

    const ISSUER: &str = "https://issuer.example";

    #[test]
    fn final_certificate_and_logged_precertificate_hash_alike() {
        let ca = TestCa::new("Audit Test CA");
        let leaf = ca.leaf("alice@example.com", ISSUER);
        let from_final = tbs_sha256_of_certificate(&leaf.final_cert).unwrap();
        assert_eq!(tbs_sha256_of_certificate(&leaf.precert).unwrap(), from_final);
        assert_eq!(tbs_sha256(&leaf.log_tbs).unwrap(), from_final);
        // The log's TBS is the embedded log's own rebuild: the precertificate TBS minus the poison.
        let rebuilt =
            der::tbs_without_extension(tbs_of(&leaf.precert).unwrap().raw, &ct::oid_der(ct::POISON_OID)).unwrap();
        assert_eq!(rebuilt, leaf.log_tbs);
        assert_eq!(tbs_sha256(&rebuilt).unwrap(), from_final);
        // Without CT extensions nothing changes: the hash is the plain TBS hash.
        assert_eq!(from_final, hex(&sha256(&leaf.log_tbs)));
        // Another leaf, another hash; a CA certificate hashes its TBS as is.
        let other = ca.leaf("alice@example.com", ISSUER);
        assert_ne!(tbs_sha256_of_certificate(&other.final_cert).unwrap(), from_final);
        assert_eq!(
            tbs_sha256_of_certificate(&ca.issuing_der).unwrap(),
            hex(&sha256(tbs_of(&ca.issuing_der).unwrap().raw))
        );
        assert!(tbs_sha256_of_certificate(b"\x30\x03\x02\x01").is_err());
        assert!(tbs_sha256_of_certificate(b"not DER").is_err());
    }

    #[test]
    fn a_tbs_with_only_ct_extensions_loses_its_extensions_field() {
        let tbs = der::seq(&[
            &der::small_integer(5),
            &der::context(
                3,
                true,
                &der::seq(&[&keyless_ca::profile::extension(ct::POISON_OID, true, &[5, 0])]),
            ),
        ]);
        assert_eq!(strip_ct_extensions(&tbs).unwrap(), der::seq(&[&der::small_integer(5)]));
        let empty = der::seq(&[&der::small_integer(5), &der::context(3, true, &der::seq(&[]))]);
        assert_eq!(strip_ct_extensions(&empty), strip_ct_extensions(&tbs));
    }
}
