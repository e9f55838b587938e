//! From a verified token to a certificate identity (a [`Principal`]).
//!
//! One module per issuer kind; [`principal`] dispatches with an exhaustive match on
//! [`IssuerKind`], handing each module only its own kind's settings, so a kind added to the
//! configuration does not compile until it has a mapping.

mod buildkite_job;
mod chainguard_identity;
mod ci_provider;
mod codefresh_workflow;
mod email;
mod github_workflow;
mod gitlab_pipeline;
mod gourl;
mod kubernetes;
mod san;
mod spiffe;
mod uri;
mod username;

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;

use keyless_config::{IssuerKind, IssuerType};
use serde_json::Value;

use crate::Error;
use crate::profile::Fact;
use crate::token::{MAX_VALUE_BYTES, VerifiedToken};

pub use san::{San, UriSan};

/// What an issuer kind's module derives from a token: Fulcio's principal name (what Fulcio
/// verifies the proof of possession over), the SAN, and the facts for the Sigstore extensions.
type Mapping = (String, San, Vec<(Fact, String)>);

/// Who a certificate is for: derived only from a [`VerifiedToken`], so holding one proves the
/// token was verified.
#[derive(Debug, Clone)]
pub struct Principal {
    issuer_url: String,
    kind: IssuerType,
    /// The value of the claim `/api/v2/configuration` advertises as the challenge.
    name: String,
    /// Other strings a proof may sign, see [`Principal::challenges`].
    other_challenges: Vec<String>,
    san: San,
    facts: Vec<(Fact, String)>,
    rate_key: String,
}

impl Principal {
    /// What the proof of possession signs: the value of the issuer's advertised challenge claim
    /// (`IssuerConfig::challenge_claim`), the email for email issuers and `sub` for the others.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every string a proof of possession may sign, [`Principal::name`] first. The others:
    /// - chainguard-identity with a verified email: the email, because that is Fulcio's principal
    ///   name for these tokens and what cosign signs;
    /// - email issuers with `allow_sub_challenge`: the token's `sub`, which `@sigstore/cli` 0.8
    ///   signs for issuers it does not know. Off by default: a proof over `sub` replays across
    ///   every email that subject may hold.
    pub fn challenges(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.name.as_str()).chain(self.other_challenges.iter().map(String::as_str))
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
    pub fn kind(&self) -> IssuerType {
        self.kind
    }

    /// The key to rate-limit on: the identity that owns the token, namespaced by issuer URL. Not
    /// the SAN, which many owners can share (every repository calling one reusable GitHub
    /// workflow has that workflow's SAN): github-workflow → `repository_id` (else `repository`),
    /// gitlab-pipeline → `project_id` (else `project_path`), buildkite-job → organization and
    /// pipeline slugs, codefresh-workflow → account and pipeline ids, email → the email, every
    /// other kind (ci-provider included) → `sub`.
    pub fn rate_key(&self) -> &str {
        &self.rate_key
    }
}

/// Maps a verified token to its principal according to its issuer's kind.
pub fn principal(token: &VerifiedToken) -> Result<Principal, Error> {
    let issuer = token.issuer();
    let kind = issuer.kind.issuer_type();
    let (fulcio_name, san, mut facts) = match &issuer.kind {
        IssuerKind::Email(settings) => email::map(token, settings)?,
        IssuerKind::GithubWorkflow => github_workflow::map(token)?,
        IssuerKind::GitlabPipeline(settings) => gitlab_pipeline::map(token, settings)?,
        IssuerKind::BuildkiteJob => buildkite_job::map(token)?,
        IssuerKind::CodefreshWorkflow => codefresh_workflow::map(token)?,
        IssuerKind::ChainguardIdentity => chainguard_identity::map(token)?,
        IssuerKind::Kubernetes => kubernetes::map(token)?,
        IssuerKind::Spiffe(settings) => spiffe::map(token, settings)?,
        IssuerKind::Uri(settings) => uri::map(token, settings)?,
        IssuerKind::Username(settings) => username::map(token, settings)?,
        IssuerKind::CiProvider(provider) => ci_provider::map(token, provider)?,
    };
    // Every kind carries the issuer (1.1, 1.8) and the raw subject (1.24).
    if !facts.iter().any(|(f, _)| *f == Fact::Issuer) {
        facts.push((Fact::Issuer, issuer.url.clone()));
    }
    let sub = match token.claims().get("sub") {
        Some(Value::String(s)) => Some(token.bounded("sub", s)?),
        _ => None,
    };
    if let Some(sub) = sub {
        facts.push((Fact::Subject, sub.to_string()));
    }
    if let Some((fact, v)) = facts.iter().find(|(_, v)| v.len() > MAX_VALUE_BYTES) {
        return Err(Error::claim(
            &issuer.url,
            &format!("{fact:?}"),
            format!(
                "renders an extension value of {} bytes, over the limit of {MAX_VALUE_BYTES}",
                v.len()
            ),
        ));
    }
    // The server verifies the proof over the advertised claim (the kind's default: configuration
    // refuses any other `challenge_claim`), so a client that follows /api/v2/configuration works.
    let name = token.string_claim(kind.default_challenge_claim())?.to_string();
    let mut other_challenges = Vec::new();
    if fulcio_name != name {
        other_challenges.push(fulcio_name);
    }
    if let IssuerKind::Email(settings) = &issuer.kind
        && settings.allow_sub_challenge
        && let Some(sub) = sub
        && sub != name
    {
        other_challenges.push(sub.to_string());
    }
    // rfc822Name SANs are IA5 (ASCII); refuse here with the claim named rather than fail in
    // encoding. (URI SANs passed `San::uri`; an OtherName username is a UTF8String.)
    let ia5 = matches!(san, San::Email(_));
    if san.value().chars().any(|c| c.is_control()) || (ia5 && !san.value().is_ascii()) {
        return Err(Error::claim(
            &issuer.url,
            san_claim(kind),
            "must be ASCII to fit a certificate SAN",
        ));
    }
    let rate_key = rate_key(token, &name, sub)?;
    Ok(Principal {
        issuer_url: issuer.url.clone(),
        kind,
        name,
        other_challenges,
        san,
        facts,
        rate_key,
    })
}

/// See [`Principal::rate_key`]. Values are written with `{:?}`, so one owner's key can never be
/// spelled by another's claims.
fn rate_key(token: &VerifiedToken, name: &str, sub: Option<&str>) -> Result<String, Error> {
    let issuer = token.issuer();
    let text = |claim: &str| match token.claims().get(claim) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let first_of = |claims: &[&str]| {
        claims
            .iter()
            .find_map(|c| text(c).map(|v| format!("{c}={v:?}")))
            .ok_or_else(|| Error::claim(&issuer.url, claims[0], "is missing (it keys the rate limit)"))
    };
    let all_of = |claims: &[&str]| {
        claims
            .iter()
            .map(|c| first_of(&[c]))
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.join(" "))
    };
    let owner = match issuer.kind.issuer_type() {
        IssuerType::GithubWorkflow => first_of(&["repository_id", "repository"])?,
        IssuerType::GitlabPipeline => first_of(&["project_id", "project_path"])?,
        IssuerType::BuildkiteJob => all_of(&["organization_slug", "pipeline_slug"])?,
        IssuerType::CodefreshWorkflow => all_of(&["account_id", "pipeline_id"])?,
        IssuerType::Email => format!("email={name:?}"),
        IssuerType::ChainguardIdentity
        | IssuerType::Kubernetes
        | IssuerType::Spiffe
        | IssuerType::Uri
        | IssuerType::Username
        | IssuerType::CiProvider => match sub {
            Some(sub) => format!("sub={sub:?}"),
            None => return Err(Error::claim(&issuer.url, "sub", "is missing (it keys the rate limit)")),
        },
    };
    Ok(format!("{} {owner}", issuer.url))
}

fn san_claim(kind: IssuerType) -> &'static str {
    match kind {
        IssuerType::Email => "email",
        IssuerType::GithubWorkflow => "job_workflow_ref",
        IssuerType::GitlabPipeline => "ci_config_ref_uri",
        IssuerType::BuildkiteJob => "pipeline_slug",
        IssuerType::CodefreshWorkflow => "pipeline_name",
        IssuerType::Kubernetes => "kubernetes.io",
        IssuerType::ChainguardIdentity
        | IssuerType::Spiffe
        | IssuerType::Uri
        | IssuerType::Username
        | IssuerType::CiProvider => "sub",
    }
}

/// A claim Fulcio decodes into a Go string field that may be absent: absent or null reads as
/// empty, and anything but a string is refused, as Go's decoder refuses it.
pub(crate) fn optional_string(token: &VerifiedToken, name: &str) -> Result<String, Error> {
    match token.claims().get(name) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => token.bounded(name, s).map(str::to_string),
        Some(other) => Err(Error::claim(
            &token.issuer().url,
            name,
            format!("must be a string, found {}", crate::token::json_type(other)),
        )),
    }
}

/// Go's `url.JoinPath` of `elems` onto `base`, as Fulcio builds its URLs; an error names `claim`.
pub(crate) fn join_path(token: &VerifiedToken, claim: &str, base: &str, elems: &[&str]) -> Result<String, Error> {
    gourl::join_path(base, elems).map_err(|e| Error::claim(&token.issuer().url, claim, format!("gives no URL: {e}")))
}

/// `scheme://host[:port]` of an issuer URL (the base for self-hosted CI URLs).
pub(crate) fn issuer_base(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.split('/').next().unwrap_or_default()),
        None => url.to_string(),
    }
}
