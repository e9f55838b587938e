//! The leaf certificate profile as one table.
//!
//! Every Sigstore extension (OID arc `1.3.6.1.4.1.57264.1.*`) is one row: which fact of the
//! identity it carries and how it is encoded. The rows are in emission order, which is Fulcio's
//! order, so verifiers that compare extension lists see what they expect. Adding an extension is
//! adding a row.

use crate::der;

/// A fact about the identity that a certificate can carry. The identity modules fill these in;
/// the table below decides where each one goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fact {
    /// The OIDC issuer (or the federated upstream issuer).
    Issuer,
    /// The token's raw `sub`.
    Subject,
    /// GitHub `event_name` (deprecated raw form).
    GithubWorkflowTrigger,
    /// GitHub `sha` (deprecated raw form).
    GithubWorkflowSha,
    /// GitHub `workflow` (deprecated raw form).
    GithubWorkflowName,
    /// GitHub `repository` (deprecated raw form).
    GithubWorkflowRepository,
    /// GitHub `ref` (deprecated raw form).
    GithubWorkflowRef,
    /// The workflow or pipeline definition that signed.
    BuildSignerUri,
    /// Digest of the build signer definition.
    BuildSignerDigest,
    /// `github-hosted`, `self-hosted`, ...
    RunnerEnvironment,
    /// Repository URL.
    SourceRepositoryUri,
    /// Commit digest of the source.
    SourceRepositoryDigest,
    /// Git ref of the source.
    SourceRepositoryRef,
    /// Immutable repository identifier.
    SourceRepositoryIdentifier,
    /// Repository owner URL.
    SourceRepositoryOwnerUri,
    /// Immutable owner identifier.
    SourceRepositoryOwnerIdentifier,
    /// The build configuration (workflow file) URL.
    BuildConfigUri,
    /// Digest of the build configuration.
    BuildConfigDigest,
    /// What started the build.
    BuildTrigger,
    /// URL of this run.
    RunInvocationUri,
    /// `public`, `private` or `internal` when signed.
    SourceRepositoryVisibilityAtSigning,
    /// Deployment environment, when the job has one.
    DeploymentEnvironment,
}

/// How an extension's value is written into `extnValue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The raw UTF-8 bytes, no ASN.1 tag: Fulcio's historical 1.1–1.6 mistake, kept for clients.
    Raw,
    /// A DER UTF8String.
    Utf8String,
}

/// One Sigstore extension.
#[derive(Debug, Clone, Copy)]
pub struct ExtensionRow {
    /// Last arc under `1.3.6.1.4.1.57264.1`.
    pub arc: u64,
    /// The fact it carries.
    pub fact: Fact,
    /// Its encoding.
    pub encoding: Encoding,
    /// Name as in Fulcio's OID documentation.
    pub name: &'static str,
}

const fn row(arc: u64, fact: Fact, encoding: Encoding, name: &'static str) -> ExtensionRow {
    ExtensionRow {
        arc,
        fact,
        encoding,
        name,
    }
}

use Encoding::{Raw, Utf8String as Der};
use Fact::*;

/// The Sigstore extensions, in emission order.
pub const SIGSTORE_EXTENSIONS: &[ExtensionRow] = &[
    row(1, Issuer, Raw, "Issuer (deprecated)"),
    row(2, GithubWorkflowTrigger, Raw, "GitHub Workflow Trigger (deprecated)"),
    row(3, GithubWorkflowSha, Raw, "GitHub Workflow SHA (deprecated)"),
    row(4, GithubWorkflowName, Raw, "GitHub Workflow Name (deprecated)"),
    row(
        5,
        GithubWorkflowRepository,
        Raw,
        "GitHub Workflow Repository (deprecated)",
    ),
    row(6, GithubWorkflowRef, Raw, "GitHub Workflow Ref (deprecated)"),
    row(8, Issuer, Der, "Issuer (V2)"),
    row(9, BuildSignerUri, Der, "Build Signer URI"),
    row(10, BuildSignerDigest, Der, "Build Signer Digest"),
    row(11, RunnerEnvironment, Der, "Runner Environment"),
    row(12, SourceRepositoryUri, Der, "Source Repository URI"),
    row(13, SourceRepositoryDigest, Der, "Source Repository Digest"),
    row(14, SourceRepositoryRef, Der, "Source Repository Ref"),
    row(15, SourceRepositoryIdentifier, Der, "Source Repository Identifier"),
    row(16, SourceRepositoryOwnerUri, Der, "Source Repository Owner URI"),
    row(
        17,
        SourceRepositoryOwnerIdentifier,
        Der,
        "Source Repository Owner Identifier",
    ),
    row(18, BuildConfigUri, Der, "Build Config URI"),
    row(19, BuildConfigDigest, Der, "Build Config Digest"),
    row(20, BuildTrigger, Der, "Build Trigger"),
    row(21, RunInvocationUri, Der, "Run Invocation URI"),
    row(
        22,
        SourceRepositoryVisibilityAtSigning,
        Der,
        "Source Repository Visibility At Signing",
    ),
    row(23, DeploymentEnvironment, Der, "Deployment Environment"),
    row(24, Subject, Der, "Token Subject"),
];

/// The Sigstore OID prefix `1.3.6.1.4.1.57264.1`.
pub const SIGSTORE_ARC: [u64; 8] = [1, 3, 6, 1, 4, 1, 57264, 1];

/// OtherName type-id for `username` identities (not an extension).
pub const OTHERNAME_USERNAME_ARC: u64 = 7;

/// Encodes one `Extension ::= SEQUENCE { extnID, critical DEFAULT FALSE, extnValue }`.
pub fn extension(oid_arcs: &[u64], critical: bool, value: &[u8]) -> Vec<u8> {
    let oid = der::oid(oid_arcs);
    let v = der::octet_string(value);
    if critical {
        der::seq(&[&oid, &der::boolean_true(), &v])
    } else {
        der::seq(&[&oid, &v])
    }
}

/// Renders the Sigstore extensions for the given facts, skipping facts that are absent or empty.
pub(crate) fn render(facts: &[(Fact, String)]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for r in SIGSTORE_EXTENSIONS {
        let Some((_, value)) = facts.iter().find(|(f, v)| *f == r.fact && !v.is_empty()) else {
            continue;
        };
        let mut arcs = SIGSTORE_ARC.to_vec();
        arcs.push(r.arc);
        let content = match r.encoding {
            Raw => value.as_bytes().to_vec(),
            Der => der::utf8_string(value),
        };
        out.push(extension(&arcs, false, &content));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_ordered_and_unique() {
        for w in SIGSTORE_EXTENSIONS.windows(2) {
            assert!(w[0].arc < w[1].arc, "rows out of order at 1.{}", w[1].arc);
        }
        assert!(SIGSTORE_EXTENSIONS.iter().all(|r| r.arc != OTHERNAME_USERNAME_ARC));
        assert!(SIGSTORE_EXTENSIONS.iter().all(|r| (r.arc <= 6) == (r.encoding == Raw)));
    }

    #[test]
    fn issuer_goes_raw_and_der() {
        let exts = render(&[
            (Fact::Issuer, "https://i".into()),
            (Fact::Subject, "s".into()),
            (Fact::BuildTrigger, String::new()),
        ]);
        assert_eq!(exts.len(), 3);
        // 1.1 raw bytes
        assert!(exts[0].ends_with(b"\x04\x09https://i"));
        // 1.8 UTF8String inside the OCTET STRING
        assert!(exts[1].ends_with(b"\x04\x0b\x0c\x09https://i"));
        assert!(exts[2].ends_with(b"\x04\x03\x0c\x01s"));
    }
}
