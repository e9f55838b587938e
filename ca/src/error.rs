/// Everything that can stop an issuance. Client mistakes carry a detail naming the problem (which
/// issuer, which claim, which key rule); server faults carry the cause for the operator's log only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The token is malformed, unverifiable or fails a standard claim check.
    #[error("identity token: {0}")]
    Token(String),
    /// The token names a key id the issuer's cached key set does not have: refresh and retry.
    #[error("identity token: issuer {issuer} has no signing key with kid {kid:?}")]
    UnknownKeyId {
        /// Issuer URL.
        issuer: String,
        /// The token's `kid`.
        kid: String,
    },
    /// A claim the issuer kind needs is missing, mistyped or not acceptable.
    #[error("identity token: issuer {issuer}: claim {claim:?} {problem}")]
    Claim {
        /// Issuer URL.
        issuer: String,
        /// Claim name.
        claim: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The token is valid but the issuer's policy refuses it.
    #[error("policy: issuer {issuer}: {detail}")]
    Policy {
        /// Issuer URL.
        issuer: String,
        /// Which rule refused, in words.
        detail: String,
    },
    /// The public key could not be decoded.
    #[error("public key: {0}")]
    KeyParse(String),
    /// The public key is of a type, size or curve the key policy refuses.
    #[error("insecure public key: {0}")]
    InsecureKey(String),
    /// The CSR could not be decoded.
    #[error("CSR: {0}")]
    CsrParse(String),
    /// The proof of possession (or CSR self-signature) does not verify.
    #[error("proof of possession: {0}")]
    Possession(String),
    /// The key and hash pair is not on the allow-list.
    #[error("signing algorithm not permitted: {0}")]
    AlgorithmNotPermitted(String),
    /// The CA key failed to sign, or produced a signature that does not verify. Server fault.
    #[error("CA signer: {0}")]
    Signer(String),
    /// The CT log did not return a usable SCT in time. Server-side, retryable; names the log.
    #[error("CT log {log}: {cause}")]
    CtLog {
        /// The log's name (URL or `embedded`).
        log: String,
        /// What went wrong, for the operator's log.
        cause: String,
    },
    /// The CA's key or chain is unusable. Server fault, found at start-up.
    #[error("CA setup: {0}")]
    Setup(String),
    /// The CA chain cannot cover a new leaf's validity (expired, expiring, not yet valid).
    /// Server fault: the operator must rotate the CA.
    #[error("CA validity: {0}")]
    CaValidity(String),
}

/// Coarse reason classes, for metrics, audit records and the HTTP mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Token verification or claims.
    Token,
    /// Key parsing or key policy.
    Key,
    /// The issuer's claim policy refused the identity.
    Policy,
    /// Proof of possession / CSR signature / algorithm allow-list.
    Possession,
    /// The request itself (CSR structure).
    Request,
    /// A fault on the CA's side.
    Server,
    /// The CT log is unavailable or misbehaving.
    CtLog,
}

impl Error {
    /// Fulcio's client-facing message for this error; clients and scripts match on these prefixes.
    pub fn fulcio_message(&self) -> &'static str {
        match self {
            Error::Token(_) | Error::UnknownKeyId { .. } | Error::Claim { .. } => {
                "There was an error processing the identity token"
            }
            Error::Policy { .. } => "The identity is not allowed by this CA's policy",
            Error::KeyParse(_) => "The public key supplied in the request could not be parsed",
            Error::InsecureKey(_) => "The public key supplied in the request is insecure",
            Error::CsrParse(_) => "The certificate signing request could not be parsed",
            Error::Possession(_) => "The signature supplied in the request could not be verified",
            Error::AlgorithmNotPermitted(_) => "signing algorithm not permitted",
            Error::Signer(_) | Error::Setup(_) | Error::CaValidity(_) => "error communicating with CA backend",
            Error::CtLog { .. } => "Error entering certificate in CTL",
        }
    }

    /// The reason class.
    pub fn class(&self) -> Class {
        match self {
            Error::Token(_) | Error::UnknownKeyId { .. } | Error::Claim { .. } => Class::Token,
            Error::KeyParse(_) | Error::InsecureKey(_) => Class::Key,
            Error::Policy { .. } => Class::Policy,
            Error::Possession(_) | Error::AlgorithmNotPermitted(_) => Class::Possession,
            Error::CsrParse(_) => Class::Request,
            Error::Signer(_) | Error::Setup(_) | Error::CaValidity(_) => Class::Server,
            Error::CtLog { .. } => Class::CtLog,
        }
    }

    /// The detail after the Fulcio prefix, safe to show a client. `None` for server faults, whose
    /// cause stays in the operator's log.
    pub fn client_detail(&self) -> Option<String> {
        match self {
            Error::Token(d)
            | Error::KeyParse(d)
            | Error::InsecureKey(d)
            | Error::CsrParse(d)
            | Error::Possession(d)
            | Error::AlgorithmNotPermitted(d) => Some(d.clone()),
            Error::UnknownKeyId { issuer, kid } => Some(format!("issuer {issuer} has no signing key with kid {kid:?}")),
            Error::Policy { issuer, detail } => Some(format!("issuer {issuer}: {detail}")),
            Error::Claim { issuer, claim, problem } => Some(format!("issuer {issuer}: claim {claim:?} {problem}")),
            Error::Signer(_) | Error::Setup(_) | Error::CaValidity(_) | Error::CtLog { .. } => None,
        }
    }

    pub(crate) fn claim(issuer: &str, claim: &str, problem: impl Into<String>) -> Error {
        Error::Claim {
            issuer: issuer.to_string(),
            claim: claim.to_string(),
            problem: problem.into(),
        }
    }
}
