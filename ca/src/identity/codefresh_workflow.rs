//! `codefresh-workflow` issuers.

use crate::Error;
use crate::identity::{Mapping, San};
use crate::profile::Fact;
use crate::token::VerifiedToken;

pub(super) fn map(token: &VerifiedToken) -> Result<Mapping, Error> {
    let c = |name: &str| token.string_claim(name);
    let sub = c("sub")?;
    let (account_id, pipeline_id, workflow_id) = (c("account_id")?, c("pipeline_id")?, c("workflow_id")?);
    let (account_name, pipeline_name) = (c("account_name")?, c("pipeline_name")?);
    let optional = |name: &str| token.optional_claim(name);
    let platform = match optional("platform_url")? {
        p if p.is_empty() => "https://g.codefresh.io".to_string(),
        p => p.trim_end_matches('/').to_string(),
    };
    let san = format!("{platform}/{account_name}/{pipeline_name}:{account_id}/{pipeline_id}");
    let build = format!("{platform}/build/{workflow_id}");
    let facts = vec![
        (Fact::BuildSignerUri, build.clone()),
        (Fact::RunnerEnvironment, optional("runner_environment")?),
        (Fact::SourceRepositoryUri, optional("scm_repo_url")?),
        (Fact::SourceRepositoryRef, optional("scm_ref")?),
        (Fact::BuildConfigUri, format!("{platform}/api/pipelines/{pipeline_id}")),
        (Fact::RunInvocationUri, build),
    ];
    let san = San::uri(
        &token.issuer().url,
        "platform_url/account_name/pipeline_name/account_id/pipeline_id",
        san,
    )?;
    Ok((sub.to_string(), san, facts))
}
