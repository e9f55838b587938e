//! `gitlab-pipeline` issuers (gitlab.com and self-managed GitLab), with the claim rules and values
//! of Fulcio's built-in GitLab mapping, save one deliberate difference: Fulcio joins the
//! repository, owner and job URLs onto `https://gitlab.com/` even for a self-managed instance
//! (sigstore/fulcio#1325); Keyless CA uses the issuer's own `scheme://host`, unless the issuer's
//! `gitlab_base_url` names another base (`https://gitlab.com` gives Fulcio's values).

use keyless_config::GitlabSettings;
use serde_json::Value;

use crate::Error;
use crate::identity::{Mapping, San, issuer_base, join_path, optional_string};
use crate::profile::Fact;
use crate::token::VerifiedToken;

pub(super) fn map(token: &VerifiedToken, settings: &GitlabSettings) -> Result<Mapping, Error> {
    let url = &token.issuer().url;
    let c = |name: &str| token.string_claim(name);
    let sub = c("sub")?;
    // Checked in Fulcio's order, so a token missing several claims is refused naming the same one.
    let project_path = c("project_path")?;
    let pipeline_source = c("pipeline_source")?;
    c("pipeline_id")?;
    let ci_config_ref_uri = c("ci_config_ref_uri")?;
    let job_id = c("job_id")?;
    let git_ref = c("ref")?;
    let ref_type = c("ref_type")?;
    let namespace_path = c("namespace_path")?;
    let namespace_id = c("namespace_id")?;
    let project_id = c("project_id")?;
    let sha = c("sha")?;
    let runner_environment = c("runner_environment")?;
    // A Go int64: an integral JSON number, not zero.
    match token.claims().get("runner_id") {
        Some(Value::Number(n)) if n.as_i64().is_some_and(|v| v != 0) => {}
        _ => return Err(Error::claim(url, "runner_id", "must be a non-zero integer")),
    }
    let ci_config_sha = optional_string(token, "ci_config_sha")?;
    let project_visibility = optional_string(token, "project_visibility")?;
    let full_ref = match ref_type {
        "branch" => format!("refs/heads/{git_ref}"),
        "tag" => format!("refs/tags/{git_ref}"),
        other => {
            return Err(Error::claim(
                url,
                "ref_type",
                format!("must be \"branch\" or \"tag\", not {other:?}"),
            ));
        }
    };
    let base = match settings.base_url() {
        Some(b) => b.to_string(),
        None => issuer_base(url),
    };
    let signer = format!("https://{ci_config_ref_uri}");
    let facts = vec![
        (Fact::BuildSignerUri, signer.clone()),
        (Fact::BuildSignerDigest, ci_config_sha.clone()),
        (Fact::RunnerEnvironment, runner_environment.to_string()),
        (
            Fact::SourceRepositoryUri,
            join_path(token, "project_path", &base, &[project_path])?,
        ),
        (Fact::SourceRepositoryDigest, sha.to_string()),
        (Fact::SourceRepositoryRef, full_ref),
        (Fact::SourceRepositoryIdentifier, project_id.to_string()),
        (
            Fact::SourceRepositoryOwnerUri,
            join_path(token, "namespace_path", &base, &[namespace_path])?,
        ),
        (Fact::SourceRepositoryOwnerIdentifier, namespace_id.to_string()),
        (Fact::BuildConfigUri, signer.clone()),
        (Fact::BuildConfigDigest, ci_config_sha),
        (Fact::BuildTrigger, pipeline_source.to_string()),
        (
            Fact::RunInvocationUri,
            join_path(token, "project_path", &base, &[project_path, "/-/jobs/", job_id])?,
        ),
        (Fact::SourceRepositoryVisibilityAtSigning, project_visibility),
    ];
    Ok((sub.to_string(), San::uri(url, "ci_config_ref_uri", signer)?, facts))
}
