//! `github-workflow` issuers (GitHub Actions): the workflow is the identity and the run's facts
//! become extensions, with the values Fulcio's built-in GitHub mapping produces (its URLs are
//! joined onto `https://github.com/` as Go's `url.JoinPath` joins them).

use crate::Error;
use crate::identity::{Mapping, San, join_path};
use crate::profile::Fact;
use crate::token::VerifiedToken;

const BASE: &str = "https://github.com/";

pub(super) fn map(token: &VerifiedToken) -> Result<Mapping, Error> {
    let c = |name: &str| token.string_claim(name);
    let sub = c("sub")?;
    let job_workflow_ref = c("job_workflow_ref")?;
    let sha = c("sha")?;
    let event_name = c("event_name")?;
    let repository = c("repository")?;
    let workflow = c("workflow")?;
    let git_ref = c("ref")?;
    let job_workflow_sha = c("job_workflow_sha")?;
    let runner_environment = c("runner_environment")?;
    let repository_id = c("repository_id")?;
    let repository_owner = c("repository_owner")?;
    let repository_owner_id = c("repository_owner_id")?;
    let repository_visibility = c("repository_visibility")?;
    let workflow_ref = c("workflow_ref")?;
    let workflow_sha = c("workflow_sha")?;
    let run_id = c("run_id")?;
    let run_attempt = c("run_attempt")?;

    let join = |claim: &str, elems: &[&str]| join_path(token, claim, BASE, elems);
    let signer_uri = join("job_workflow_ref", &[job_workflow_ref])?;
    let san = San::uri(&token.issuer().url, "job_workflow_ref", signer_uri.clone())?;
    let facts = vec![
        (Fact::GithubWorkflowTrigger, event_name.to_string()),
        (Fact::GithubWorkflowSha, sha.to_string()),
        (Fact::GithubWorkflowName, workflow.to_string()),
        (Fact::GithubWorkflowRepository, repository.to_string()),
        (Fact::GithubWorkflowRef, git_ref.to_string()),
        (Fact::BuildSignerUri, signer_uri.clone()),
        (Fact::BuildSignerDigest, job_workflow_sha.to_string()),
        (Fact::RunnerEnvironment, runner_environment.to_string()),
        (Fact::SourceRepositoryUri, join("repository", &[repository])?),
        (Fact::SourceRepositoryDigest, sha.to_string()),
        (Fact::SourceRepositoryRef, git_ref.to_string()),
        (Fact::SourceRepositoryIdentifier, repository_id.to_string()),
        (
            Fact::SourceRepositoryOwnerUri,
            join("repository_owner", &[repository_owner])?,
        ),
        (Fact::SourceRepositoryOwnerIdentifier, repository_owner_id.to_string()),
        (Fact::BuildConfigUri, join("workflow_ref", &[workflow_ref])?),
        (Fact::BuildConfigDigest, workflow_sha.to_string()),
        (Fact::BuildTrigger, event_name.to_string()),
        (
            Fact::RunInvocationUri,
            join(
                "repository",
                &[repository, "actions/runs", run_id, "attempts", run_attempt],
            )?,
        ),
        (
            Fact::SourceRepositoryVisibilityAtSigning,
            repository_visibility.to_string(),
        ),
    ];
    Ok((sub.to_string(), san, facts))
}
