//! From a verified token to a certificate identity (a [`Principal`]).
//!
//! One module per issuer kind; [`principal`] dispatches with an exhaustive match on
//! [`IssuerKind`], so a kind added to the configuration does not compile until it has a mapping.

mod buildkite_job;
mod chainguard_identity;
mod ci_provider;
mod codefresh_workflow;
mod email;
mod github_workflow;
mod gitlab_pipeline;
mod kubernetes;
mod spiffe;
mod uri;
mod username;

#[cfg(test)]
mod tests;

use keyless_config::IssuerKind;

use crate::Error;
use crate::der;
use crate::profile::Fact;
use crate::token::VerifiedToken;

/// What an issuer kind's module derives from a token: the name the proof of possession signs, the
/// SAN, and the facts for the Sigstore extensions.
type Mapping = (String, San, Vec<(Fact, String)>);

/// The certificate's one Subject Alternative Name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    /// rfc822Name.
    Email(String),
    /// uniformResourceIdentifier.
    Uri(String),
    /// otherName of type 1.3.6.1.4.1.57264.1.7 (a `user!domain` username), UTF8String.
    OtherName(String),
}

impl San {
    /// DER GeneralName.
    pub(crate) fn general_name(&self) -> Vec<u8> {
        match self {
            San::Email(e) => der::wrap(0x81, &[e.as_bytes()]),
            San::Uri(u) => der::wrap(0x86, &[u.as_bytes()]),
            San::OtherName(v) => {
                let mut arcs = crate::profile::SIGSTORE_ARC.to_vec();
                arcs.push(crate::profile::OTHERNAME_USERNAME_ARC);
                let value = der::context(0, true, &der::utf8_string(v));
                der::context(0, true, &[der::oid(&arcs), value].concat())
            }
        }
    }

    /// The value, whatever its type.
    pub fn value(&self) -> &str {
        match self {
            San::Email(v) | San::Uri(v) | San::OtherName(v) => v,
        }
    }
}

/// Who a certificate is for: derived only from a [`VerifiedToken`], so holding one proves the
/// token was verified.
#[derive(Debug, Clone)]
pub struct Principal {
    issuer_url: String,
    kind: IssuerKind,
    name: String,
    /// A second string the proof may sign: the token's `sub` for email issuers, because
    /// sigstore-js 3.x (shipped inside `@sigstore/cli` 0.8) signs `sub` for every issuer it does
    /// not know by URL. Either proves possession of the key equally well.
    alternate_name: Option<String>,
    san: San,
    facts: Vec<(Fact, String)>,
}

impl Principal {
    /// What the proof of possession signs: the email for email issuers, otherwise `sub`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every string a proof of possession may sign: [`Principal::name`] first.
    pub fn challenges(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.name.as_str()).chain(self.alternate_name.as_deref())
    }

    /// The SAN the certificate will carry.
    pub fn san(&self) -> &San {
        &self.san
    }

    /// The facts the Sigstore extensions will carry.
    pub fn facts(&self) -> &[(Fact, String)] {
        &self.facts
    }

    /// The configured issuer URL that verified the token.
    pub fn issuer_url(&self) -> &str {
        &self.issuer_url
    }

    /// The issuer kind.
    pub fn kind(&self) -> IssuerKind {
        self.kind
    }
}

/// Maps a verified token to its principal according to its issuer's kind.
pub fn principal(token: &VerifiedToken) -> Result<Principal, Error> {
    let issuer = token.issuer();
    let (name, san, mut facts) = match issuer.kind {
        IssuerKind::Email => email::map(token)?,
        IssuerKind::GithubWorkflow => github_workflow::map(token)?,
        IssuerKind::GitlabPipeline => gitlab_pipeline::map(token)?,
        IssuerKind::BuildkiteJob => buildkite_job::map(token)?,
        IssuerKind::CodefreshWorkflow => codefresh_workflow::map(token)?,
        IssuerKind::ChainguardIdentity => chainguard_identity::map(token)?,
        IssuerKind::Kubernetes => kubernetes::map(token)?,
        IssuerKind::Spiffe => spiffe::map(token)?,
        IssuerKind::Uri => uri::map(token)?,
        IssuerKind::Username => username::map(token)?,
        IssuerKind::CiProvider => ci_provider::map(token)?,
    };
    // Every kind carries the issuer (1.1, 1.8) and the raw subject (1.24).
    if !facts.iter().any(|(f, _)| *f == Fact::Issuer) {
        facts.push((Fact::Issuer, issuer.url.clone()));
    }
    let sub = token.claims().get("sub").and_then(|v| v.as_str());
    if let Some(sub) = sub {
        facts.push((Fact::Subject, sub.to_string()));
    }
    let alternate_name = match (issuer.kind, sub) {
        (IssuerKind::Email, Some(sub)) if sub != name => Some(sub.to_string()),
        _ => None,
    };
    // rfc822Name and URI SANs are IA5 (ASCII); refuse here with the claim named rather than fail
    // in encoding. (An OtherName username is a UTF8String.)
    let ia5 = !matches!(san, San::OtherName(_));
    if san.value().chars().any(|c| c.is_control()) || (ia5 && !san.value().is_ascii()) {
        return Err(Error::claim(
            &issuer.url,
            san_claim(issuer.kind),
            "must be ASCII to fit a certificate SAN",
        ));
    }
    Ok(Principal {
        issuer_url: issuer.url.clone(),
        kind: issuer.kind,
        name,
        alternate_name,
        san,
        facts,
    })
}

fn san_claim(kind: IssuerKind) -> &'static str {
    match kind {
        IssuerKind::Email => "email",
        IssuerKind::GithubWorkflow => "job_workflow_ref",
        IssuerKind::GitlabPipeline => "ci_config_ref_uri",
        IssuerKind::BuildkiteJob => "pipeline_slug",
        IssuerKind::CodefreshWorkflow => "pipeline_name",
        IssuerKind::Kubernetes => "kubernetes.io",
        IssuerKind::ChainguardIdentity
        | IssuerKind::Spiffe
        | IssuerKind::Uri
        | IssuerKind::Username
        | IssuerKind::CiProvider => "sub",
    }
}

/// `scheme://host[:port]` of an issuer URL (the base for self-hosted CI URLs).
pub(crate) fn issuer_base(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.split('/').next().unwrap_or_default()),
        None => url.to_string(),
    }
}
