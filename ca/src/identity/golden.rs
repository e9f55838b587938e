//! Golden tests ported from the cases of Fulcio's `pkg/identity/*/principal_test.go`: the same
//! claims in, the same accept/refuse decision, and the same SAN, principal name and extension
//! bytes out. Issuers come from Fulcio issuer files (JSON, as an operator brings them), and a token
//! is matched to its issuer by `iss` first, so "no issuer for this token" is a refusal too.
//!
//! Keyless CA decides in one step what Fulcio splits over building the principal and embedding it
//! in the certificate; either failing refuses the request in both, so the decision compared is
//! "is a certificate issued".

use keyless_config::IssuerConfig;
use serde_json::{Value, json};

use super::{Principal, San, principal};
use crate::profile::{SIGSTORE_ARC, render};
use crate::token::VerifiedToken;

/// The issuers of a Fulcio issuer file.
fn fulcio_file(file: Value) -> Vec<IssuerConfig> {
    keyless_config::parse_issuers_file(&file.to_string()).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// One exact issuer, as a Fulcio file lists it.
fn one_issuer(url: &str, settings: Value) -> Vec<IssuerConfig> {
    let mut entry = json!({"IssuerURL": url, "ClientID": "sigstore"});
    entry
        .as_object_mut()
        .unwrap()
        .extend(settings.as_object().unwrap().clone());
    fulcio_file(json!({"OIDCIssuers": {url: entry}}))
}

/// The decision for a token with `claims` (its `iss` picks the issuer): the principal, or why not.
fn decide(issuers: &[IssuerConfig], claims: &Value) -> Result<Principal, String> {
    let iss = claims["iss"].as_str().expect("claims name their issuer");
    let issuer = issuers
        .iter()
        .find(|i| i.matches(iss))
        .ok_or_else(|| format!("no issuer is configured for {iss}"))?;
    principal(&VerifiedToken::unchecked_for_tests(
        issuer.for_issuer(iss),
        claims.as_object().unwrap().clone(),
    ))
    .map_err(|e| e.to_string())
}

fn accepted(issuers: &[IssuerConfig], claims: &Value) -> Principal {
    decide(issuers, claims).unwrap_or_else(|e| panic!("{claims}: {e}"))
}

/// `claims` without `name`.
fn without(claims: &Value, name: &str) -> Value {
    let mut c = claims.clone();
    c.as_object_mut().unwrap().remove(name);
    c
}

/// The `extnValue` contents of Sigstore extension `1.3.6.1.4.1.57264.1.<arc>`, as the certificate
/// will carry them, or `None` when the certificate will not carry it.
fn extension(p: &Principal, arc: u64) -> Option<Vec<u8>> {
    let mut oid = SIGSTORE_ARC.to_vec();
    oid.push(arc);
    let oid = crate::der::oid(&oid);
    render(p.facts()).into_iter().find_map(|ext| {
        let (seq, _) = crate::der::read_tlv(&ext)?;
        let parts = crate::der::read_all(seq.content)?;
        (parts[0].raw == oid.as_slice()).then(|| parts.last().unwrap().content.to_vec())
    })
}

/// Fulcio's deprecated raw encoding (1.1–1.6): the bytes themselves.
fn raw(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

/// Fulcio's DER encoding (1.8 on): a UTF8String (tag 12), short-form length.
fn utf8(s: &str) -> Option<Vec<u8>> {
    assert!(s.len() < 128, "short-form lengths only");
    let mut v = vec![0x0c, s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    Some(v)
}

/// Checks every listed extension's bytes, and that no other Sigstore extension is present except
/// 1.24 (the raw `sub`, which Fulcio 1.8.6+ adds to every certificate when `sub` is set).
fn assert_extensions(p: &Principal, expected: &[(u64, Option<Vec<u8>>)]) {
    for (arc, bytes) in expected {
        assert_eq!(&extension(p, *arc), bytes, "extension 1.3.6.1.4.1.57264.1.{arc}");
    }
    for row in crate::profile::SIGSTORE_EXTENSIONS {
        if row.arc != 24 && !expected.iter().any(|(a, _)| *a == row.arc) {
            assert_eq!(
                extension(p, row.arc),
                None,
                "unexpected 1.3.6.1.4.1.57264.1.{}",
                row.arc
            );
        }
    }
}

fn uri(p: &Principal) -> &str {
    match p.san() {
        San::Uri(u) => u.as_str(),
        other => panic!("expected a URI SAN, got {other:?}"),
    }
}

/// Fulcio's principal name is one of the strings a proof of possession may sign.
fn signs(p: &Principal, name: &str) -> bool {
    p.challenges().any(|c| c == name)
}

fn github_claims() -> Value {
    json!({
        "aud": "sigstore", "event_name": "push", "exp": 0, "iss": "https://token.actions.githubusercontent.com",
        "job_workflow_ref": "sigstore/fulcio/.github/workflows/foo.yaml@refs/heads/main",
        "job_workflow_sha": "example-sha", "ref": "refs/heads/main", "repository": "sigstore/fulcio",
        "repository_id": "12345", "repository_owner": "username", "repository_owner_id": "345",
        "repository_visibility": "public", "run_attempt": "1", "run_id": "42", "runner_environment": "cloud-hosted",
        "sha": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "sub": "repo:sigstore/fulcio:ref:refs/heads/main",
        "workflow": "foo", "workflow_ref": "sigstore/other/.github/workflows/foo.yaml@refs/heads/main",
        "workflow_sha": "example-sha-other",
    })
}

/// `github/principal_test.go` (the built-in `github-workflow` type).
#[test]
fn github_workflow() {
    let issuers = one_issuer(
        "https://token.actions.githubusercontent.com",
        json!({"Type": "github-workflow"}),
    );
    let claims = github_claims();
    let p = accepted(&issuers, &claims);
    assert!(signs(&p, "repo:sigstore/fulcio:ref:refs/heads/main"));
    assert_eq!(
        uri(&p),
        "https://github.com/sigstore/fulcio/.github/workflows/foo.yaml@refs/heads/main"
    );
    for missing in [
        "job_workflow_ref",
        "sha",
        "event_name",
        "repository",
        "workflow",
        "ref",
        "job_workflow_sha",
        "runner_environment",
        "repository_id",
        "repository_owner",
        "repository_owner_id",
        "workflow_ref",
        "workflow_sha",
        "run_id",
        "run_attempt",
        "repository_visibility",
    ] {
        let e = decide(&issuers, &without(&claims, missing)).unwrap_err();
        assert!(e.contains(&format!("claim {missing:?}")), "{missing}: {e}");
    }
    // Embed: the principal's values, as claims.
    let embed = json!({
        "iss": "https://token.actions.githubusercontent.com", "sub": "doesntmatter", "sha": "sha",
        "event_name": "trigger", "workflow": "workflowname", "repository": "repository", "ref": "ref",
        "job_workflow_ref": "jobWorkflowRef", "job_workflow_sha": "jobWorkflowSha", "runner_environment": "runnerEnv",
        "repository_id": "repoID", "repository_owner": "repoOwner", "repository_owner_id": "repoOwnerID",
        "repository_visibility": "public", "workflow_ref": "workflowRef", "workflow_sha": "workflowSHA",
        "run_id": "runID", "run_attempt": "runAttempt",
    });
    let p = accepted(&issuers, &embed);
    assert_eq!(uri(&p), "https://github.com/jobWorkflowRef");
    assert_extensions(
        &p,
        &[
            (1, raw("https://token.actions.githubusercontent.com")),
            (2, raw("trigger")),
            (3, raw("sha")),
            (4, raw("workflowname")),
            (5, raw("repository")),
            (6, raw("ref")),
            (8, utf8("https://token.actions.githubusercontent.com")),
            (9, utf8("https://github.com/jobWorkflowRef")),
            (10, utf8("jobWorkflowSha")),
            (11, utf8("runnerEnv")),
            (12, utf8("https://github.com/repository")),
            (13, utf8("sha")),
            (14, utf8("ref")),
            (15, utf8("repoID")),
            (16, utf8("https://github.com/repoOwner")),
            (17, utf8("repoOwnerID")),
            (18, utf8("https://github.com/workflowRef")),
            (19, utf8("workflowSHA")),
            (20, utf8("trigger")),
            (
                21,
                utf8("https://github.com/repository/actions/runs/runID/attempts/runAttempt"),
            ),
            (22, utf8("public")),
            (23, None),
        ],
    );
    assert_eq!(extension(&p, 24), utf8("doesntmatter"));
    // Claims Fulcio decodes into strings: a number is refused, as Go's decoder refuses it.
    let mut numeric = claims.clone();
    numeric["run_id"] = json!(42);
    assert!(decide(&issuers, &numeric).unwrap_err().contains("claim \"run_id\""));
}

fn gitlab_claims() -> Value {
    json!({
        "aud": "sigstore", "exp": 0, "iss": "https://gitlab.com",
        "sub": "project_path:cpanato/testing-cosign:ref_type:branch:ref:main", "project_id": "42831435",
        "project_path": "cpanato/testing-cosign", "namespace_path": "cpanato", "namespace_id": "1730270",
        "pipeline_id": "757451528", "pipeline_source": "push",
        "ci_config_ref_uri": "gitlab.com/cpanto/testing-cosign//.gitlab-ci.yml@refs/head/main",
        "ci_config_sha": "714a629c0b401fdce83e847fc9589983fc6f46bc", "job_id": "3659681386", "ref": "main",
        "ref_type": "branch", "sha": "714a629c0b401fdce83e847fc9589983fc6f46bc", "runner_id": 1,
        "runner_environment": "gitlab-hosted", "project_visibility": "public",
    })
}

/// `gitlabcom/principal_test.go` (the built-in `gitlab-pipeline` type).
#[test]
fn gitlab_pipeline() {
    let issuers = one_issuer("https://gitlab.com", json!({"Type": "gitlab-pipeline"}));
    let claims = gitlab_claims();
    let p = accepted(&issuers, &claims);
    assert!(signs(
        &p,
        "project_path:cpanato/testing-cosign:ref_type:branch:ref:main"
    ));
    let config = "https://gitlab.com/cpanto/testing-cosign//.gitlab-ci.yml@refs/head/main";
    assert_eq!(uri(&p), config, "the // is kept");
    let sha = "714a629c0b401fdce83e847fc9589983fc6f46bc";
    let expected = [
        (1, raw("https://gitlab.com")),
        (8, utf8("https://gitlab.com")),
        (9, utf8(config)),
        (10, utf8(sha)),
        (11, utf8("gitlab-hosted")),
        (12, utf8("https://gitlab.com/cpanato/testing-cosign")),
        (13, utf8(sha)),
        (14, utf8("refs/heads/main")),
        (15, utf8("42831435")),
        (16, utf8("https://gitlab.com/cpanato")),
        (17, utf8("1730270")),
        (18, utf8(config)),
        (19, utf8(sha)),
        (20, utf8("push")),
        (21, utf8("https://gitlab.com/cpanato/testing-cosign/-/jobs/3659681386")),
        (22, utf8("public")),
    ];
    assert_extensions(&p, &expected);
    let mut tag = claims.clone();
    tag["ref_type"] = json!("tag");
    assert_eq!(extension(&accepted(&issuers, &tag), 14), utf8("refs/tags/main"));
    // The refusals, each missing the claims its Go case lacks.
    let lacking = |names: &[&str]| names.iter().fold(claims.clone(), |c, n| without(&c, n));
    let base = ["sha", "runner_id", "runner_environment"];
    for (missing, named) in [
        (&["pipeline_source"][..], "pipeline_source"),
        (&["project_path"][..], "project_path"),
        (&["ci_config_ref_uri", "ci_config_sha"][..], "ci_config_ref_uri"),
    ] {
        let c = lacking(&[missing, &base[..]].concat());
        let e = decide(&issuers, &c).unwrap_err();
        assert!(e.contains(&format!("claim {named:?}")), "{named}: {e}");
    }
    // Optional: ci_config_sha (its extensions are left out) and project_visibility.
    let mut c = without(&claims, "ci_config_sha");
    c["ci_config_ref_uri"] = json!("example.com/ci/config.yml");
    let p = accepted(&issuers, &c);
    assert_eq!(uri(&p), "https://example.com/ci/config.yml");
    assert_eq!((extension(&p, 10), extension(&p, 19)), (None, None));
    let p = accepted(&issuers, &without(&claims, "project_visibility"));
    assert_eq!(extension(&p, 22), None);
    // runner_id is a Go int64: a string or a fraction is refused.
    for bad in [json!("1"), json!(1.5), json!(0)] {
        let mut c = claims.clone();
        c["runner_id"] = bad;
        assert!(decide(&issuers, &c).unwrap_err().contains("runner_id"));
    }
}

/// A self-managed GitLab: Keyless CA's URLs use the issuer's host; `GitlabBaseURL` (native:
/// `gitlab_base_url`) gives Fulcio's gitlab.com values.
#[test]
fn gitlab_self_managed_keeps_fulcios_value_available() {
    let mut claims = gitlab_claims();
    claims["iss"] = json!("https://gitlab.example.com");
    let own = one_issuer("https://gitlab.example.com", json!({"Type": "gitlab-pipeline"}));
    let p = accepted(&own, &claims);
    assert_eq!(
        extension(&p, 12),
        utf8("https://gitlab.example.com/cpanato/testing-cosign")
    );
    assert_eq!(
        extension(&p, 21),
        utf8("https://gitlab.example.com/cpanato/testing-cosign/-/jobs/3659681386")
    );
    let fulcio = one_issuer(
        "https://gitlab.example.com",
        json!({"Type": "gitlab-pipeline", "GitlabBaseURL": "https://gitlab.com"}),
    );
    let p = accepted(&fulcio, &claims);
    assert_eq!(extension(&p, 12), utf8("https://gitlab.com/cpanato/testing-cosign"));
    assert_eq!(extension(&p, 16), utf8("https://gitlab.com/cpanato"));
    assert_eq!(
        extension(&p, 21),
        utf8("https://gitlab.com/cpanato/testing-cosign/-/jobs/3659681386")
    );
}

/// `buildkite/principal_test.go`.
#[test]
fn buildkite_job() {
    let issuers = one_issuer("https://agent.buildkite.com", json!({"Type": "buildkite-job"}));
    let sub = "organization:acme-inc:pipeline:bash-example:ref:refs/heads/main:commit:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:step:build";
    let claims = json!({"aud": "sigstore", "exp": 0, "iss": "https://agent.buildkite.com",
        "organization_slug": "acme-inc", "pipeline_slug": "bash-example", "sub": sub});
    let p = accepted(&issuers, &claims);
    assert!(signs(&p, sub));
    assert_eq!(uri(&p), "https://buildkite.com/acme-inc/bash-example");
    assert_extensions(
        &p,
        &[
            (1, raw("https://agent.buildkite.com")),
            (8, utf8("https://agent.buildkite.com")),
        ],
    );
    for missing in ["organization_slug", "pipeline_slug"] {
        let e = decide(&issuers, &without(&claims, missing)).unwrap_err();
        assert!(e.contains(&format!("claim {missing:?}")), "{e}");
    }
}

/// `codefresh/principal_test.go`: only `account_id`, `pipeline_id` and `workflow_id` are required.
#[test]
fn codefresh_workflow() {
    let issuers = one_issuer("https://oidc.codefresh.io", json!({"Type": "codefresh-workflow"}));
    let manual = json!({
        "sub": "account:628a80b693a15c0f9c13ab75:pipeline:65e5a53e52853dc51a5b0cc1:initiator:codefresh-user",
        "account_id": "628a80b693a15c0f9c13ab75", "account_name": "codefresh-account",
        "pipeline_id": "65e5a53e52853dc51a5b0cc1", "pipeline_name": "oidc-test/get-token",
        "workflow_id": "65e5c23d706f166c4e8985ed", "initiator": "codefresh-user", "runner_environment": "hybrid",
        "aud": "sigstore", "exp": 1709556619, "iat": 1709556319, "iss": "https://oidc.codefresh.io",
        "platform_url": "https://pre-prod.codefresh.io",
    });
    let p = accepted(&issuers, &manual);
    assert_eq!(
        uri(&p),
        "https://pre-prod.codefresh.io/codefresh-account/oidc-test/get-token:628a80b693a15c0f9c13ab75/65e5a53e52853dc51a5b0cc1"
    );
    assert_eq!(
        extension(&p, 9),
        utf8("https://pre-prod.codefresh.io/build/65e5c23d706f166c4e8985ed")
    );
    let push = json!({
        "sub": "account:628a80b693a15c0f9c13ab75:pipeline:65e5a53e52853dc51a5b0cc1:initiator:codefresh-user:scm_repo_url:https://github.com/codefresh-user/fulcio:scm_user_name:git-user-name:scm_ref:main",
        "account_id": "628a80b693a15c0f9c13ab75", "account_name": "codefresh-account",
        "pipeline_id": "65e5a53e52853dc51a5b0cc1", "pipeline_name": "oidc-test/get-token",
        "workflow_id": "65e6bcf7c2af1f228fa97f80", "initiator": "codefresh-user", "scm_user_name": "git-user-name",
        "scm_repo_url": "https://github.com/codefresh-io/fulcio-oidc", "scm_ref": "main", "runner_environment": "hybrid",
        "aud": "sigstore", "exp": 1709620814, "iat": 1709620514, "iss": "https://oidc.codefresh.io",
    });
    let p = accepted(&issuers, &push);
    assert!(signs(&p, push["sub"].as_str().unwrap()));
    assert_eq!(
        uri(&p),
        "https://g.codefresh.io/codefresh-account/oidc-test/get-token:628a80b693a15c0f9c13ab75/65e5a53e52853dc51a5b0cc1"
    );
    assert_extensions(
        &p,
        &[
            (1, raw("https://oidc.codefresh.io")),
            (8, utf8("https://oidc.codefresh.io")),
            (9, utf8("https://g.codefresh.io/build/65e6bcf7c2af1f228fa97f80")),
            (11, utf8("hybrid")),
            (12, utf8("https://github.com/codefresh-io/fulcio-oidc")),
            (14, utf8("main")),
            (
                18,
                utf8("https://g.codefresh.io/api/pipelines/65e5a53e52853dc51a5b0cc1"),
            ),
            (21, utf8("https://g.codefresh.io/build/65e6bcf7c2af1f228fa97f80")),
        ],
    );
    let pull_request = json!({
        "sub": "account:628a80b693a15c0f9c13ab75:pipeline:65e6d5551e47e5bc243ca93f:scm_repo_url:https://github.com/test-codefresh/fulcio:scm_user_name:test-codefresh:scm_ref:feat/codefresh-issuer:scm_pull_request_target_branch:main",
        "account_id": "628a80b693a15c0f9c13ab75", "account_name": "test-codefresh", "pipeline_id": "65e6d5551e47e5bc243ca93f",
        "pipeline_name": "oidc-test/oidc-test-2", "workflow_id": "65e6ebe0bfbfa1782876165e", "scm_user_name": "test-codefresh",
        "scm_repo_url": "https://github.com/test-codefresh/fulcio", "scm_ref": "feat/codefresh-issuer",
        "scm_pull_request_target_branch": "main", "runner_environment": "hybrid", "aud": "sigstore",
        "exp": 1709633177, "iat": 1709632877, "iss": "https://oidc.codefresh.io",
    });
    let p = accepted(&issuers, &pull_request);
    assert_eq!(extension(&p, 14), utf8("feat/codefresh-issuer"));
    // Refusals, each missing what its Go case lacks (runner_environment is optional).
    let base = json!({
        "sub": "account:628a80b693a15c0f9c13ab75:pipeline:65e5a53e52853dc51a5b0cc1:initiator:codefresh-user",
        "account_id": "628a80b693a15c0f9c13ab75", "account_name": "codefresh-oidc", "pipeline_id": "65e5a53e52853dc51a5b0cc1",
        "pipeline_name": "oidc-test/get-token", "workflow_id": "65e6bcf7c2af1f228fa97f80", "initiator": "codefresh-user",
        "aud": "sigstore", "exp": 1709556619, "iat": 1709556319, "iss": "https://oidc.codefresh.io",
    });
    for (lacks, named) in [
        (&["workflow_id"][..], "workflow_id"),
        (&["account_id", "workflow_id"][..], "account_id"),
        (&["pipeline_id"][..], "pipeline_id"),
    ] {
        let c = lacks.iter().fold(base.clone(), |c, n| without(&c, n));
        let e = decide(&issuers, &c).unwrap_err();
        assert!(e.contains(&format!("claim {named:?}")), "{named}: {e}");
    }
    // Names are optional, as in Fulcio: absent, they are empty path elements, which Go drops.
    let p = accepted(&issuers, &without(&without(&base, "account_name"), "pipeline_name"));
    assert_eq!(
        uri(&p),
        "https://g.codefresh.io/:628a80b693a15c0f9c13ab75/65e5a53e52853dc51a5b0cc1"
    );
    assert_eq!(extension(&p, 11), None, "no runner_environment: no 1.11");
}

/// `chainguard/principal_test.go`.
#[test]
fn chainguard_identity() {
    let issuers = one_issuer("https://issuer.enforce.dev", json!({"Type": "chainguard-identity"}));
    // A UIDP group and a child of it, as `uidp.NewUIDP("")` makes them.
    let group = "6a4e5f3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f";
    let id = format!("{group}/1a2b3c4d5e6f7a8b");
    let service = json!({"iss": "https://issuer.enforce.dev", "sub": id,
        "act": {"iss": "https://iss.example.com/", "sub": format!("catalog-syncer:{group}"), "aud": "chainguard"},
        "internal": {"service-principal": "CATALOG_SYNCER"}});
    let p = accepted(&issuers, &service);
    assert!(signs(&p, &id));
    assert_eq!(uri(&p), format!("https://issuer.enforce.dev/{id}"));
    assert_extensions(
        &p,
        &[
            (1, raw("https://issuer.enforce.dev")),
            (8, utf8("https://issuer.enforce.dev")),
        ],
    );
    let human = json!({"iss": "https://issuer.enforce.dev", "sub": group,
        "act": {"iss": "https://auth.chainguard.dev/", "sub": "google-oauth2|1234567890", "aud": "fdsaldfkjhasldf"}});
    let p = accepted(&issuers, &human);
    assert!(signs(&p, group));
    assert_eq!(uri(&p), format!("https://issuer.enforce.dev/{group}"));
    let mut with_email = human.clone();
    with_email["email"] = json!("jane@doe.dev");
    with_email["email_verified"] = json!(true);
    let p = accepted(&issuers, &with_email);
    assert!(signs(&p, "jane@doe.dev"), "Fulcio's name is the verified email");
    assert_eq!(uri(&p), format!("https://issuer.enforce.dev/{group}"));
    // Shapes Go's decoder refuses.
    let mut bad = human.clone();
    bad["act"] = json!({"iat": 1});
    assert!(decide(&issuers, &bad).unwrap_err().contains("claim \"act\""));
}

/// `email/principal_test.go`.
#[test]
fn email() {
    let plain = one_issuer("https://iss.example.com", json!({"Type": "email"}));
    let dex = one_issuer(
        "https://dex.other.com",
        json!({"Type": "email", "IssuerClaim": "$.federated.issuer"}),
    );
    let internal = one_issuer(
        "https://internal.example.com",
        json!({"Type": "email", "SkipEmailVerification": true}),
    );
    let claims = |iss: &str, extra: Value| {
        let mut c = json!({"aud": "sigstore", "iss": iss, "sub": "doesntmatter", "email": "alice@example.com"});
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        c
    };
    let p = accepted(
        &plain,
        &claims("https://iss.example.com", json!({"email_verified": true})),
    );
    assert_eq!(p.san(), &San::Email("alice@example.com".into()));
    assert!(signs(&p, "alice@example.com") && p.name() == "alice@example.com");
    assert_extensions(
        &p,
        &[
            (1, raw("https://iss.example.com")),
            (8, utf8("https://iss.example.com")),
        ],
    );
    let federated = json!({"email_verified": true, "federated": {"issuer": "https://example.com"}});
    let p = accepted(&dex, &claims("https://dex.other.com", federated));
    assert_extensions(&p, &[(1, raw("https://example.com")), (8, utf8("https://example.com"))]);
    let as_string = json!({"email_verified": "true", "federated": {"issuer": "https://example.com"}});
    assert!(decide(&dex, &claims("https://dex.other.com", as_string)).is_ok());
    let refused = [
        (&dex, claims("https://dex.other.com", json!({"email_verified": true}))),
        (
            &plain,
            claims("https://iss.example.com", json!({"email_verified": false})),
        ),
        (
            &plain,
            without(
                &claims("https://iss.example.com", json!({"email_verified": true})),
                "email",
            ),
        ),
        (
            &plain,
            claims(
                "https://iss.example.com",
                json!({"email_verified": true, "email": "foo.com"}),
            ),
        ),
        (
            &plain,
            claims("https://nope.example.com", json!({"email_verified": true})),
        ),
    ];
    for (issuers, c) in refused {
        assert!(decide(issuers, &c).is_err(), "{c}");
    }
    for verified in [
        json!({}),
        json!({"email_verified": false}),
        json!({"email_verified": true}),
    ] {
        let p = accepted(&internal, &claims("https://internal.example.com", verified));
        assert_eq!(p.san(), &San::Email("alice@example.com".into()));
    }
}

/// `kubernetes/principal_test.go`, and Fulcio's unvalidated empty segments.
#[test]
fn kubernetes() {
    let issuers = one_issuer("https://iss.example.com", json!({"Type": "kubernetes"}));
    let claims = json!({"aud": ["sigstore"], "iss": "https://iss.example.com",
        "kubernetes.io": {"namespace": "foo", "pod": {"name": "bar", "uid": "2ff0bae1-6b8a-445b-ae03-1f8d2a08d031"},
                          "serviceaccount": {"name": "baz", "uid": "5cb6264f-e283-4365-9a1f-d5a15090527e"}},
        "sub": "system:serviceaccount:foo:baz"});
    let p = accepted(&issuers, &claims);
    assert!(signs(&p, "system:serviceaccount:foo:baz"));
    assert_eq!(uri(&p), "https://kubernetes.io/namespaces/foo/serviceaccounts/baz");
    assert_extensions(
        &p,
        &[
            (1, raw("https://iss.example.com")),
            (8, utf8("https://iss.example.com")),
        ],
    );
    let p = accepted(
        &issuers,
        &json!({"iss": "https://iss.example.com", "sub": "x", "kubernetes.io": {"serviceaccount": {"name": "bar"}}}),
    );
    assert_eq!(uri(&p), "https://kubernetes.io/namespaces//serviceaccounts/bar");
    let p = accepted(&issuers, &json!({"iss": "https://iss.example.com", "sub": "x"}));
    assert_eq!(uri(&p), "https://kubernetes.io/namespaces//serviceaccounts/");
    let e = decide(
        &issuers,
        &json!({"iss": "https://iss.example.com", "sub": "x", "kubernetes.io": {"namespace": 7}}),
    )
    .unwrap_err();
    assert!(e.contains("kubernetes.io.namespace"), "{e}");
}

/// `spiffe/principal_test.go`, and go-spiffe's trust-domain-only IDs.
#[test]
fn spiffe() {
    let issuers = one_issuer(
        "https://issuer.example.com",
        json!({"Type": "spiffe", "SPIFFETrustDomain": "example.com"}),
    );
    let t = |iss: &str, sub: &str| json!({"iss": iss, "sub": sub});
    let p = accepted(
        &issuers,
        &t("https://issuer.example.com", "spiffe://example.com/foo/bar"),
    );
    assert!(signs(&p, "spiffe://example.com/foo/bar"));
    assert_eq!(uri(&p), "spiffe://example.com/foo/bar");
    assert_extensions(
        &p,
        &[
            (1, raw("https://issuer.example.com")),
            (8, utf8("https://issuer.example.com")),
        ],
    );
    assert_eq!(
        uri(&accepted(
            &issuers,
            &t("https://issuer.example.com", "spiffe://example.com")
        )),
        "spiffe://example.com"
    );
    for (iss, sub) in [
        ("https://foo.example.com", "spiffe://example.com/foo/bar"),
        ("https://issuer.example.com", "spiffe://foo.example.com/foo/bar"),
        ("https://issuer.example.com", "not-a-spiffe-id"),
        ("https://issuer.example.com", "spiffe://example.com/"),
    ] {
        assert!(decide(&issuers, &t(iss, sub)).is_err(), "{sub}");
    }
}

/// `uri/principal_test.go`.
#[test]
fn uri_subjects() {
    let issuers = one_issuer(
        "https://accounts.example.com",
        json!({"Type": "uri", "SubjectDomain": "https://example.com"}),
    );
    let t = |iss: &str, sub: &str| json!({"iss": iss, "sub": sub});
    let p = accepted(
        &issuers,
        &t("https://accounts.example.com", "https://example.com/users/1"),
    );
    assert!(signs(&p, "https://example.com/users/1"));
    assert_eq!(uri(&p), "https://example.com/users/1");
    assert_extensions(
        &p,
        &[
            (1, raw("https://accounts.example.com")),
            (8, utf8("https://accounts.example.com")),
        ],
    );
    for (iss, sub) in [
        ("https://notaccounts.example.com", "https://example.com/users/1"),
        ("https://accounts.example.com", "user@example.com"),
        ("https://accounts.example.com", "https://notexample.com/users/1"),
        ("https://accounts.example.com", "http://example.com/users/1"),
        ("https://accounts.example.com", "not\n#a#uri"),
    ] {
        assert!(decide(&issuers, &t(iss, sub)).is_err(), "{sub}");
    }
}

/// `username/principal_test.go`: the OtherName SAN `alice!example.com`.
#[test]
fn username() {
    let issuers = one_issuer(
        "https://accounts.example.com",
        json!({"Type": "username", "SubjectDomain": "example.com"}),
    );
    let t = |iss: &str, sub: &str| json!({"iss": iss, "sub": sub});
    let p = accepted(&issuers, &t("https://accounts.example.com", "alice"));
    assert!(signs(&p, "alice"));
    assert_eq!(p.san(), &San::OtherName("alice!example.com".into()));
    // [0] { OID 1.3.6.1.4.1.57264.1.7, [0] { UTF8String "alice!example.com" } }
    let mut expected = vec![
        0xa0, 0x21, 0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x83, 0xbf, 0x30, 0x01, 0x07,
    ];
    expected.extend_from_slice(&[0xa0, 0x13, 0x0c, 0x11]);
    expected.extend_from_slice(b"alice!example.com");
    assert_eq!(p.san().general_name(), expected);
    assert_extensions(
        &p,
        &[
            (1, raw("https://accounts.example.com")),
            (8, utf8("https://accounts.example.com")),
        ],
    );
    for (iss, sub) in [
        ("https://accounts.example.com", "alice!"),
        ("https://accounts.example.com", "alice@example.com"),
        ("https://notaccounts.example.com", "alice"),
    ] {
        assert!(decide(&issuers, &t(iss, sub)).is_err(), "{sub}");
    }
}

/// The GitHub templates of `ciprovider/principal_test.go` (`TestEmbed`), through a Fulcio file.
fn github_templates() -> Vec<IssuerConfig> {
    fulcio_file(json!({
        "OIDCIssuers": {"https://token.actions.githubusercontent.com": {
            "IssuerURL": "https://token.actions.githubusercontent.com", "ClientID": "sigstore",
            "Type": "ci-provider", "CIProvider": "github-workflow"}},
        "CIIssuerMetadata": {"github-workflow": {
            "DefaultTemplateValues": {"url": "https://github.com", "environment": ""},
            "SubjectAlternativeNameTemplate": "{{.url}}/{{.job_workflow_ref}}",
            "ExtensionTemplates": {
                "GithubWorkflowTrigger": "event_name", "GithubWorkflowSHA": "sha", "GithubWorkflowName": "workflow",
                "GithubWorkflowRepository": "repository", "GithubWorkflowRef": "ref",
                "BuildSignerURI": "{{ .url }}/{{ .job_workflow_ref }}", "BuildSignerDigest": "job_workflow_sha",
                "RunnerEnvironment": "runner_environment", "SourceRepositoryURI": "{{ .url }}/{{ .repository }}",
                "SourceRepositoryDigest": "sha", "SourceRepositoryRef": "ref", "SourceRepositoryIdentifier": "repository_id",
                "SourceRepositoryOwnerURI": "{{ .url }}/{{ .repository_owner }}",
                "SourceRepositoryOwnerIdentifier": "repository_owner_id", "BuildConfigURI": "{{ .url }}/{{ .workflow_ref }}",
                "BuildConfigDigest": "workflow_sha", "BuildTrigger": "event_name",
                "RunInvocationURI": "{{ .url }}/{{ .repository }}/actions/runs/{{ .run_id }}/attempts/{{ .run_attempt }}",
                "SourceRepositoryVisibilityAtSigning": "repository_visibility", "DeploymentEnvironment": "environment"}}}
    }))
}

/// `ciprovider/principal_test.go`: the GitHub facts via templates, with and without 1.23.
#[test]
fn ci_provider_github_templates() {
    let issuers = github_templates();
    // Fulcio's test token has no `sub`; OIDC requires one, and Keyless CA requires it.
    let claims = json!({
        "iss": "https://token.actions.githubusercontent.com", "sub": "repo:repository:ref:ref",
        "event_name": "trigger", "sha": "sha", "workflow": "workflowname", "repository": "repository", "ref": "ref",
        "job_workflow_sha": "jobWorkflowSha", "job_workflow_ref": "jobWorkflowRef", "runner_environment": "runnerEnv",
        "repository_id": "repoID", "repository_owner": "repoOwner", "repository_owner_id": "repoOwnerID",
        "workflow_ref": "workflowRef", "workflow_sha": "workflowSHA", "run_id": "runID", "run_attempt": "runAttempt",
        "repository_visibility": "public", "environment": "production",
    });
    let mut expected = vec![
        (1, raw("https://token.actions.githubusercontent.com")),
        (2, raw("trigger")),
        (3, raw("sha")),
        (4, raw("workflowname")),
        (5, raw("repository")),
        (6, raw("ref")),
        (8, utf8("https://token.actions.githubusercontent.com")),
        (9, utf8("https://github.com/jobWorkflowRef")),
        (10, utf8("jobWorkflowSha")),
        (11, utf8("runnerEnv")),
        (12, utf8("https://github.com/repository")),
        (13, utf8("sha")),
        (14, utf8("ref")),
        (15, utf8("repoID")),
        (16, utf8("https://github.com/repoOwner")),
        (17, utf8("repoOwnerID")),
        (18, utf8("https://github.com/workflowRef")),
        (19, utf8("workflowSHA")),
        (20, utf8("trigger")),
        (
            21,
            utf8("https://github.com/repository/actions/runs/runID/attempts/runAttempt"),
        ),
        (22, utf8("public")),
        (23, utf8("production")),
    ];
    let p = accepted(&issuers, &claims);
    assert!(signs(&p, "repo:repository:ref:ref"));
    assert_eq!(uri(&p), "https://github.com/jobWorkflowRef");
    assert_extensions(&p, &expected);
    expected.pop();
    expected.push((23, None));
    let p = accepted(&issuers, &without(&claims, "environment"));
    assert_extensions(&p, &expected);
    // A template naming a claim the token lacks refuses the token (Go's missingkey=error).
    let e = decide(&issuers, &without(&claims, "run_attempt")).unwrap_err();
    assert!(e.contains("map has no entry for key \"run_attempt\""), "{e}");
}

/// `ciprovider/principal_test.go`: `TestGetTokenClaims` and `TestApplyTemplateOrReplace`, the
/// template semantics the ci-provider mapping relies on.
#[test]
fn ci_provider_template_semantics() {
    use keyless_config::template::{Template, claim_text};
    for (claim, text) in [
        (json!("bar"), "bar"),
        (json!(""), ""),
        (json!(true), "true"),
        (json!(1), "1"),
        (json!(1.0), "1"),
        (json!(1.4), "1.4"),
        (json!(1.7), "1.7"),
        (json!(1000000.0), "1000000"),
        (json!(1753000000.0), "1753000000"),
    ] {
        assert_eq!(claim_text(&claim), text, "{claim}");
    }
    let claims = json!({
        "aud": "sigstore", "event_name": "push", "exp": "0", "iss": "https://token.actions.githubusercontent.com",
        "job_workflow_ref": "sigstore/fulcio/.github/workflows/foo.yaml@refs/heads/main", "job_workflow_sha": "example-sha",
        "ref": "refs/heads/main", "repository": "sigstore/fulcio", "repository_id": "12345", "repository_owner": "username",
        "repository_owner_id": "345", "repository_visibility": "public", "run_attempt": "1", "run_id": "42",
        "runner_environment": "cloud-hosted", "sha": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "sub": "repo:sigstore/fulcio:ref:refs/heads/main", "workflow": "foo",
        "workflow_ref": "sigstore/other/.github/workflows/foo.yaml@refs/heads/main", "workflow_sha": "example-sha-other",
        "ref_type": "branch", "ref_gitlab": "main", "ref_type_tag": "tag", "ref_tag": "1.0.0",
        "html_claim": "<alert()/>", "claim_foo": "bar", "with.dot.and/slash": "cat",
    });
    // Defaults, then the token's claims over them, as the ci-provider mapping builds its data.
    let mut data: keyless_config::template::Data = [
        ("url", "https://github.com"),
        ("claim_foo", "default"),
        ("default_foo", "default_bar"),
        ("empty_value", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in claims.as_object().unwrap() {
        data.insert(k.clone(), claim_text(v));
    }
    let render = |t: &str| Template::parse(t).and_then(|t| t.render(&data));
    for (template, expected) in [
        (
            "{{ .url }}/{{ .repository }}/actions/runs/{{ .run_id }}/attempts/{{ .run_attempt }}",
            Some("https://github.com/sigstore/fulcio/actions/runs/42/attempts/1"),
        ),
        ("{{ .html_claim }}", Some("<alert()/>")),
        ("{{}}", None),
        ("{{ .foo }}", None),
        ("", None),
        (
            "job_workflow_ref",
            Some("sigstore/fulcio/.github/workflows/foo.yaml@refs/heads/main"),
        ),
        ("bar", None),
        (
            r#"refs/{{if eq .ref_type "branch"}}heads/{{ else }}tags/{{end}}{{ .ref_gitlab }}"#,
            Some("refs/heads/main"),
        ),
        (
            r#"refs/{{if eq .ref_type_tag "branch"}}heads/{{ else }}tags/{{end}}{{ .ref_tag }}"#,
            Some("refs/tags/1.0.0"),
        ),
        (r#"{{ .aud }}/{{(index . "with.dot.and/slash")}}"#, Some("sigstore/cat")),
        (r#"{{if eq . ""}}foo{{else}}bar{{end}}"#, None),
        ("default_foo", Some("default_bar")),
        ("claim_foo", Some("bar")),
        ("empty_value", Some("")),
        ("{{ .empty_value }}", Some("")),
        ("{{ .empty_value }}/123", Some("/123")),
    ] {
        assert_eq!(render(template).ok().as_deref(), expected, "{template:?}");
    }
}

/// Every issuer type has golden cases above.
#[test]
fn every_kind_is_covered() {
    let covered = [
        "email",
        "github-workflow",
        "gitlab-pipeline",
        "buildkite-job",
        "codefresh-workflow",
        "chainguard-identity",
        "kubernetes",
        "spiffe",
        "uri",
        "username",
        "ci-provider",
    ];
    for k in keyless_config::ALL_KINDS {
        assert!(covered.contains(&k.as_str()), "{k:?} has no golden cases");
    }
}
