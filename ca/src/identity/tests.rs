//! Golden tests per issuer kind, with claim sets shaped like real tokens.

use keyless_config::{IssuerConfig, IssuerKind};
use serde_json::{Value, json};

use super::{San, principal};
use crate::profile::Fact;
use crate::token::VerifiedToken;

fn token(url: &str, kind: IssuerKind, claims: Value, sd: Option<&str>, td: Option<&str>) -> VerifiedToken {
    let issuer = IssuerConfig {
        subject_domain: sd.map(Into::into),
        spiffe_trust_domain: td.map(Into::into),
        ..IssuerConfig::new(url, kind)
    };
    VerifiedToken::unchecked_for_tests(issuer, claims.as_object().unwrap().clone())
}

fn fact(p: &super::Principal, f: Fact) -> Option<&str> {
    p.facts()
        .iter()
        .find(|(k, v)| *k == f && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

fn gitlab_claims() -> Value {
    json!({
        "sub": "project_path:cpanato/testing-cosign:ref_type:branch:ref:main",
        "namespace_id": "1730270", "namespace_path": "cpanato", "project_id": "42831435",
        "project_path": "cpanato/testing-cosign", "pipeline_id": "757451528", "pipeline_source": "push",
        "job_id": "3659681386", "ref": "main", "ref_type": "branch", "runner_id": 1,
        "runner_environment": "gitlab-hosted", "sha": "aa7c3d1c29bc0d1f3f3dee25b8b9d2f0d5ef1b2a",
        "ci_config_ref_uri": "gitlab.example.com/cpanato/testing-cosign//.gitlab-ci.yml@refs/heads/main",
        "ci_config_sha": "bb7c3d1c29bc0d1f3f3dee25b8b9d2f0d5ef1b2a", "project_visibility": "public",
    })
}

#[test]
fn gitlab_self_managed_uses_its_own_host() {
    let p = principal(&token(
        "https://gitlab.example.com",
        IssuerKind::GitlabPipeline,
        gitlab_claims(),
        None,
        None,
    ))
    .unwrap();
    assert_eq!(
        p.san(),
        &San::Uri("https://gitlab.example.com/cpanato/testing-cosign//.gitlab-ci.yml@refs/heads/main".into())
    );
    assert_eq!(p.name(), "project_path:cpanato/testing-cosign:ref_type:branch:ref:main");
    assert_eq!(
        fact(&p, Fact::SourceRepositoryUri),
        Some("https://gitlab.example.com/cpanato/testing-cosign")
    );
    assert_eq!(
        fact(&p, Fact::SourceRepositoryOwnerUri),
        Some("https://gitlab.example.com/cpanato")
    );
    assert_eq!(
        fact(&p, Fact::RunInvocationUri),
        Some("https://gitlab.example.com/cpanato/testing-cosign/-/jobs/3659681386")
    );
    assert_eq!(fact(&p, Fact::SourceRepositoryRef), Some("refs/heads/main"));
    assert_eq!(fact(&p, Fact::BuildTrigger), Some("push"));
    assert_eq!(fact(&p, Fact::SourceRepositoryIdentifier), Some("42831435"));
    assert_eq!(
        fact(&p, Fact::BuildSignerDigest),
        Some("bb7c3d1c29bc0d1f3f3dee25b8b9d2f0d5ef1b2a")
    );
    assert_eq!(fact(&p, Fact::SourceRepositoryVisibilityAtSigning), Some("public"));
    assert_eq!(fact(&p, Fact::DeploymentEnvironment), None);

    let mut c = gitlab_claims();
    c["ref_type"] = json!("tag");
    let p = principal(&token("https://gitlab.com", IssuerKind::GitlabPipeline, c, None, None)).unwrap();
    assert_eq!(fact(&p, Fact::SourceRepositoryRef), Some("refs/tags/main"));
    let mut c = gitlab_claims();
    c["runner_id"] = json!("1");
    let e = principal(&token("https://gitlab.com", IssuerKind::GitlabPipeline, c, None, None)).unwrap_err();
    assert!(e.to_string().contains("runner_id"), "{e}");
    let mut c = gitlab_claims();
    c["ref_type"] = json!("commit");
    assert!(principal(&token("https://gitlab.com", IssuerKind::GitlabPipeline, c, None, None)).is_err());
}

#[test]
fn buildkite_codefresh_chainguard_kubernetes() {
    let bk = json!({"sub": "organization:acme:pipeline:app:ref:refs/heads/main", "organization_slug": "acme", "pipeline_slug": "app"});
    let p = principal(&token(
        "https://agent.buildkite.com",
        IssuerKind::BuildkiteJob,
        bk,
        None,
        None,
    ))
    .unwrap();
    assert_eq!(p.san().value(), "https://buildkite.com/acme/app");

    let cf = json!({"sub": "account:628a80b693a15c0f9c13ab75:pipeline:65e5a53e52853dc51a5b0cc1", "account_id": "628a80b693a15c0f9c13ab75",
        "account_name": "codefresh-account", "pipeline_id": "65e5a53e52853dc51a5b0cc1", "pipeline_name": "oidc-test/get-token",
        "workflow_id": "65e6ebe0bfbfa1782876165e", "scm_repo_url": "https://github.com/codefresh-io/fulcio", "scm_ref": "feat/codefresh-issuer",
        "runner_environment": "saas"});
    let p = principal(&token(
        "https://oidc.codefresh.io",
        IssuerKind::CodefreshWorkflow,
        cf,
        None,
        None,
    ))
    .unwrap();
    assert_eq!(
        p.san().value(),
        "https://g.codefresh.io/codefresh-account/oidc-test/get-token:628a80b693a15c0f9c13ab75/65e5a53e52853dc51a5b0cc1"
    );
    assert_eq!(
        fact(&p, Fact::BuildSignerUri),
        Some("https://g.codefresh.io/build/65e6ebe0bfbfa1782876165e")
    );
    assert_eq!(
        fact(&p, Fact::BuildConfigUri),
        Some("https://g.codefresh.io/api/pipelines/65e5a53e52853dc51a5b0cc1")
    );
    assert_eq!(fact(&p, Fact::SourceRepositoryRef), Some("feat/codefresh-issuer"));

    let cg = json!({"sub": "abc123", "email": "dev@example.com", "email_verified": true});
    let p = principal(&token(
        "https://issuer.enforce.dev",
        IssuerKind::ChainguardIdentity,
        cg,
        None,
        None,
    ))
    .unwrap();
    assert_eq!(
        (p.name(), p.san().value()),
        ("dev@example.com", "https://issuer.enforce.dev/abc123")
    );
    let cg = json!({"sub": "abc123", "email": "dev@example.com"});
    assert!(
        principal(&token(
            "https://issuer.enforce.dev",
            IssuerKind::ChainguardIdentity,
            cg,
            None,
            None
        ))
        .is_err()
    );
    let cg = json!({"sub": "abc123"});
    assert_eq!(
        principal(&token(
            "https://issuer.enforce.dev",
            IssuerKind::ChainguardIdentity,
            cg,
            None,
            None
        ))
        .unwrap()
        .name(),
        "abc123"
    );

    let k8s = json!({"sub": "system:serviceaccount:default:builder", "kubernetes.io": {"namespace": "default", "serviceaccount": {"name": "builder"}}});
    let p = principal(&token(
        "https://kubernetes.default.svc",
        IssuerKind::Kubernetes,
        k8s,
        None,
        None,
    ))
    .unwrap();
    assert_eq!(
        p.san().value(),
        "https://kubernetes.io/namespaces/default/serviceaccounts/builder"
    );
    let k8s = json!({"sub": "x", "kubernetes.io": {"namespace": "", "serviceaccount": {"name": "builder"}}});
    assert!(
        principal(&token(
            "https://kubernetes.default.svc",
            IssuerKind::Kubernetes,
            k8s,
            None,
            None
        ))
        .is_err()
    );
}

#[test]
fn spiffe_uri_username() {
    let t = |sub: &str| {
        token(
            "https://spire.example.com",
            IssuerKind::Spiffe,
            json!({"sub": sub}),
            None,
            Some("example.com"),
        )
    };
    assert_eq!(
        principal(&t("spiffe://example.com/ns/prod/sa/web"))
            .unwrap()
            .san()
            .value(),
        "spiffe://example.com/ns/prod/sa/web"
    );
    assert!(
        principal(&t("spiffe://other.com/ns/prod"))
            .unwrap_err()
            .to_string()
            .contains("trust domain")
    );
    assert!(principal(&t("spiffe://example.com")).is_err());
    assert!(principal(&t("https://example.com/x")).is_err());

    let u = |sub: &str| {
        token(
            "https://accounts.example.com",
            IssuerKind::Uri,
            json!({"sub": sub}),
            Some("https://example.com"),
            None,
        )
    };
    assert_eq!(
        principal(&u("https://example.com/users/1")).unwrap().san().value(),
        "https://example.com/users/1"
    );
    assert!(principal(&u("https://evil.com/users/1")).is_err());
    assert!(principal(&u("http://example.com/users/1")).is_err());
    assert!(principal(&u("alice@example.com")).is_err());

    let n = |sub: &str| {
        token(
            "https://accounts.example.com",
            IssuerKind::Username,
            json!({"sub": sub}),
            Some("example.com"),
            None,
        )
    };
    let p = principal(&n("alice")).unwrap();
    assert_eq!(p.san(), &San::OtherName("alice!example.com".into()));
    // SEQUENCE-less GeneralName: [0] { OID 1.3.6.1.4.1.57264.1.7, [0] { UTF8String } }.
    let gn = p.san().general_name();
    assert_eq!(
        &gn[..14],
        &[
            0xa0, 0x21, 0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x83, 0xbf, 0x30, 0x01, 0x07
        ]
    );
    assert!(gn.ends_with(b"\x0c\x11alice!example.com"));
    assert!(principal(&n("al!ce")).is_err());
    assert!(principal(&n("alice@example.com")).is_err());
}

#[test]
fn federated_issuer_claim() {
    let mut t = token(
        "https://oauth2.example.dev/auth",
        IssuerKind::Email,
        json!({"sub": "x", "email": "a@example.com", "email_verified": true,
               "federated_claims": {"connector_id": "https://github.com/login/oauth", "user_id": "1"}}),
        None,
        None,
    );
    let issuer_claim = |t: &VerifiedToken| principal(t).map(|p| fact(&p, Fact::Issuer).map(str::to_string));
    assert_eq!(
        issuer_claim(&t).unwrap().as_deref(),
        Some("https://oauth2.example.dev/auth")
    );
    t = VerifiedToken::unchecked_for_tests(
        IssuerConfig {
            issuer_claim: Some("$.federated_claims.connector_id".into()),
            ..t.issuer().clone()
        },
        t.claims().clone(),
    );
    assert_eq!(
        issuer_claim(&t).unwrap().as_deref(),
        Some("https://github.com/login/oauth")
    );
    let t = VerifiedToken::unchecked_for_tests(
        IssuerConfig {
            issuer_claim: Some("$.federated_claims.missing".into()),
            ..t.issuer().clone()
        },
        t.claims().clone(),
    );
    let e = issuer_claim(&t).unwrap_err().to_string();
    assert!(e.contains("$.federated_claims.missing"), "{e}");
}

/// The facts a certificate would carry (empty values are omitted), in a stable order.
fn rendered(p: &super::Principal) -> Vec<(Fact, String)> {
    let mut v: Vec<_> = p.facts().iter().filter(|(_, v)| !v.is_empty()).cloned().collect();
    v.sort();
    v
}

/// The public-good templates produce the same SAN and extension values as the built-in kinds.
#[test]
fn ci_provider_templates_match_built_in_kinds() {
    let issuers = keyless_config::public_good_issuers().unwrap();
    let by_url = |u: &str| issuers.iter().find(|i| i.url == u).unwrap().clone();
    let gh_claims = json!({
        "sub": "repo:octo-org/octo-repo:ref:refs/heads/main",
        "job_workflow_ref": "octo-org/octo-repo/.github/workflows/release.yml@refs/heads/main",
        "job_workflow_sha": "1111", "sha": "2222", "event_name": "push", "repository": "octo-org/octo-repo",
        "workflow": "Release", "ref": "refs/heads/main", "runner_environment": "github-hosted", "repository_id": "123456",
        "repository_owner": "octo-org", "repository_owner_id": "654321", "repository_visibility": "public",
        "workflow_ref": "octo-org/octo-repo/.github/workflows/release.yml@refs/heads/main", "workflow_sha": "3333",
        "run_id": "42", "run_attempt": "1",
    });
    let url = "https://token.actions.githubusercontent.com";
    let built_in = principal(&token(url, IssuerKind::GithubWorkflow, gh_claims.clone(), None, None)).unwrap();
    let templated = principal(&VerifiedToken::unchecked_for_tests(
        by_url(url),
        gh_claims.as_object().unwrap().clone(),
    ))
    .unwrap();
    assert_eq!(templated.san(), built_in.san());
    let (a, b) = (rendered(&built_in), rendered(&templated));
    assert_eq!(a, b, "GitHub: same extension values");
    let mut with_env = gh_claims.clone();
    with_env["environment"] = json!("production");
    let p = principal(&VerifiedToken::unchecked_for_tests(
        by_url(url),
        with_env.as_object().unwrap().clone(),
    ))
    .unwrap();
    assert_eq!(
        fact(&p, Fact::DeploymentEnvironment),
        Some("production"),
        "1.23 from templates"
    );

    let url = "https://gitlab.com";
    let built_in = principal(&token(url, IssuerKind::GitlabPipeline, gitlab_claims(), None, None)).unwrap();
    let templated = principal(&VerifiedToken::unchecked_for_tests(
        by_url(url),
        gitlab_claims().as_object().unwrap().clone(),
    ))
    .unwrap();
    assert_eq!(templated.san(), built_in.san());
    let (a, b) = (rendered(&built_in), rendered(&templated));
    assert_eq!(a, b, "GitLab: same extension values");

    let mut missing = gh_claims.clone();
    missing.as_object_mut().unwrap().remove("run_attempt");
    let e = principal(&VerifiedToken::unchecked_for_tests(
        by_url("https://token.actions.githubusercontent.com"),
        missing.as_object().unwrap().clone(),
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("map has no entry for key \"run_attempt\""), "{e}");
}
