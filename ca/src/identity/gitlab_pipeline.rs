//! `gitlab-pipeline` issuers (gitlab.com and self-managed GitLab). Unlike Fulcio, repository, owner
//! and job URLs use the issuer's own host, so a self-managed instance's certificates point at it
//! (sigstore/fulcio#1325).

use serde_json::Value;

use crate::Error;
use crate::identity::{Mapping, San, issuer_base};
use crate::profile::Fact;
use crate::token::VerifiedToken;

pub(super) fn map(token: &VerifiedToken) -> Result<Mapping, Error> {
    let url = &token.issuer().url;
    let c = |name: &str| token.string_claim(name);
    let sub = c("sub")?;
    for required in [
        "project_path",
        "pipeline_source",
        "pipeline_id",
        "ci_config_ref_uri",
        "job_id",
        "ref",
        "ref_type",
    ] {
        c(required)?;
    }
    let (project_path, ci_config_ref_uri, job_id, git_ref) =
        (c("project_path")?, c("ci_config_ref_uri")?, c("job_id")?, c("ref")?);
    let (namespace_path, namespace_id, project_id, sha) =
        (c("namespace_path")?, c("namespace_id")?, c("project_id")?, c("sha")?);
    let runner_environment = c("runner_environment")?;
    match token.claims().get("runner_id") {
        Some(Value::Number(n)) if n.as_f64().is_some_and(|v| v != 0.0) => {}
        _ => return Err(Error::claim(url, "runner_id", "must be a non-zero number")),
    }
    let full_ref = match c("ref_type")? {
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
    let optional = |name: &str| token.optional_claim(name);
    let base = issuer_base(url);
    let signer = format!("https://{ci_config_ref_uri}");
    let facts = vec![
        (Fact::BuildSignerUri, signer.clone()),
        (Fact::BuildSignerDigest, optional("ci_config_sha")?),
        (Fact::RunnerEnvironment, runner_environment.to_string()),
        (Fact::SourceRepositoryUri, format!("{base}/{project_path}")),
        (Fact::SourceRepositoryDigest, sha.to_string()),
        (Fact::SourceRepositoryRef, full_ref),
        (Fact::SourceRepositoryIdentifier, project_id.to_string()),
        (Fact::SourceRepositoryOwnerUri, format!("{base}/{namespace_path}")),
        (Fact::SourceRepositoryOwnerIdentifier, namespace_id.to_string()),
        (Fact::BuildConfigUri, signer.clone()),
        (Fact::BuildConfigDigest, optional("ci_config_sha")?),
        (Fact::BuildTrigger, c("pipeline_source")?.to_string()),
        (Fact::RunInvocationUri, format!("{base}/{project_path}/-/jobs/{job_id}")),
        (
            Fact::SourceRepositoryVisibilityAtSigning,
            optional("project_visibility")?,
        ),
        (Fact::DeploymentEnvironment, optional("environment")?),
    ];
    Ok((sub.to_string(), San::uri(url, "ci_config_ref_uri", signer)?, facts))
}
