//! `codefresh-workflow` issuers, with Fulcio's built-in Codefresh mapping: `account_id`,
//! `pipeline_id` and `workflow_id` are required; names and SCM facts are optional (an absent one is
//! empty, and its extension is left out); URLs are joined onto `platform_url` (default
//! `https://g.codefresh.io`) as Go's `url.JoinPath` joins them.

use crate::Error;
use crate::identity::{Mapping, San, join_path, optional_string};
use crate::profile::Fact;
use crate::token::VerifiedToken;

const DEFAULT_PLATFORM_URL: &str = "https://g.codefresh.io";

pub(super) fn map(token: &VerifiedToken) -> Result<Mapping, Error> {
    let c = |name: &str| token.string_claim(name);
    let o = |name: &str| optional_string(token, name);
    let sub = c("sub")?;
    // Every claim Fulcio decodes must be a string when present.
    let (account_name, pipeline_name) = (o("account_name")?, o("pipeline_name")?);
    for other in ["initiator", "scm_user_name", "scm_pull_request_target_branch"] {
        o(other)?;
    }
    let runner_environment = o("runner_environment")?;
    let (scm_repo_url, scm_ref) = (o("scm_repo_url")?, o("scm_ref")?);
    let platform = match o("platform_url")? {
        p if p.is_empty() => DEFAULT_PLATFORM_URL.to_string(),
        p => p,
    };
    let (account_id, pipeline_id, workflow_id) = (c("account_id")?, c("pipeline_id")?, c("workflow_id")?);
    let join = |elems: &[&str]| join_path(token, "platform_url", &platform, elems);
    let san = join(&[&account_name, &format!("{pipeline_name}:{account_id}/{pipeline_id}")])?;
    let build = join(&["build", workflow_id])?;
    let facts = vec![
        (Fact::BuildSignerUri, build.clone()),
        (Fact::RunnerEnvironment, runner_environment),
        (Fact::SourceRepositoryUri, scm_repo_url),
        (Fact::SourceRepositoryRef, scm_ref),
        (Fact::BuildConfigUri, join(&["api/pipelines", pipeline_id])?),
        (Fact::RunInvocationUri, build),
    ];
    let san = San::uri(
        &token.issuer().url,
        "platform_url/account_name/pipeline_name/account_id/pipeline_id",
        san,
    )?;
    Ok((sub.to_string(), san, facts))
}
