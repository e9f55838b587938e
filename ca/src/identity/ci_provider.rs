//! `ci-provider` issuers: any CI system, described as data by Fulcio's `CIIssuerMetadata`
//! templates (parsed when the configuration loads). The data a template sees is the provider's
//! defaults overlaid by the token's top-level claims.

use keyless_config::CiProvider;
use keyless_config::template::{Data, Template, claim_text};

use crate::Error;
use crate::identity::{Mapping, San};
use crate::profile::Fact;
use crate::token::{MAX_VALUE_BYTES, VerifiedToken};

/// Template field (folded name) → the fact it fills.
fn fact(field: &str) -> Option<Fact> {
    Some(match field {
        "githubworkflowtrigger" => Fact::GithubWorkflowTrigger,
        "githubworkflowsha" => Fact::GithubWorkflowSha,
        "githubworkflowname" => Fact::GithubWorkflowName,
        "githubworkflowrepository" => Fact::GithubWorkflowRepository,
        "githubworkflowref" => Fact::GithubWorkflowRef,
        "buildsigneruri" => Fact::BuildSignerUri,
        "buildsignerdigest" => Fact::BuildSignerDigest,
        "runnerenvironment" => Fact::RunnerEnvironment,
        "sourcerepositoryuri" => Fact::SourceRepositoryUri,
        "sourcerepositorydigest" => Fact::SourceRepositoryDigest,
        "sourcerepositoryref" => Fact::SourceRepositoryRef,
        "sourcerepositoryidentifier" => Fact::SourceRepositoryIdentifier,
        "sourcerepositoryowneruri" => Fact::SourceRepositoryOwnerUri,
        "sourcerepositoryowneridentifier" => Fact::SourceRepositoryOwnerIdentifier,
        "buildconfiguri" => Fact::BuildConfigUri,
        "buildconfigdigest" => Fact::BuildConfigDigest,
        "buildtrigger" => Fact::BuildTrigger,
        "runinvocationuri" => Fact::RunInvocationUri,
        "sourcerepositoryvisibilityatsigning" => Fact::SourceRepositoryVisibilityAtSigning,
        "deploymentenvironment" => Fact::DeploymentEnvironment,
        _ => return None,
    })
}

/// `provider` comes from the issuer's kind, so an issuer without templates cannot reach here.
pub(super) fn map(token: &VerifiedToken, provider: &CiProvider) -> Result<Mapping, Error> {
    let url = &token.issuer().url;
    let sub = token.string_claim("sub")?;
    let mut data: Data = provider.defaults().clone();
    // Every claim is converted (linear in the token, which is capped); what the templates make of
    // them is bounded below.
    for (k, v) in token.claims() {
        data.insert(k.clone(), claim_text(v));
    }
    let render = |what: &str, t: &Template| {
        let text = t.render(&data).map_err(|e| {
            Error::claim(
                url,
                what,
                format!("cannot be rendered by provider {}: {e}", provider.name()),
            )
        })?;
        // Templates may repeat a claim; the output, not only each claim, is bounded.
        if text.len() > MAX_VALUE_BYTES {
            return Err(Error::claim(
                url,
                what,
                format!(
                    "renders {} bytes with provider {}, over the limit of {MAX_VALUE_BYTES}",
                    text.len(),
                    provider.name()
                ),
            ));
        }
        Ok(text)
    };
    // A provider whose SAN template is empty or missing loaded with a warning (as Fulcio loads it);
    // its tokens are refused here (as Fulcio refuses them).
    let san_template = provider.san().map_err(|why| {
        Error::claim(
            url,
            "subject alternative name",
            format!("cannot be rendered by provider {:?}: {why}", provider.name()),
        )
    })?;
    let san = San::uri(
        url,
        "subject alternative name",
        render("subject alternative name", san_template)?,
    )?;
    let mut facts = Vec::new();
    for (field, template) in provider.extensions() {
        if let Some(f) = fact(field) {
            let value = render(field, template)?;
            if !value.is_empty() {
                facts.push((f, value));
            }
        }
    }
    Ok((sub.to_string(), san, facts))
}
