//! Golden tests per issuer kind, with claim sets shaped like real tokens.

use keyless_config::{Config, EmailSettings, IssuerConfig, IssuerKind, IssuerType, JsonPath};
use serde_json::{Value, json};

use super::{San, principal};
use crate::possession::{KeyRequest, prove};
use crate::profile::Fact;
use crate::signer::{SignatureAlgorithm, Signer, SoftwareSigner};
use crate::token::{MAX_CLAIM_BYTES, VerifiedToken};

/// An issuer as the configuration loader builds it (its kind's settings validated there).
fn issuer(url: &str, kind: IssuerType, sd: Option<&str>, td: Option<&str>) -> IssuerConfig {
    let mut entry = format!("{{url: {url:?}, type: {}", kind.as_str());
    if let Some(sd) = sd {
        entry.push_str(&format!(", subject_domain: {sd:?}"));
    }
    if let Some(td) = td {
        entry.push_str(&format!(", spiffe_trust_domain: {td:?}"));
    }
    let yaml = format!("issuers:\n - {entry}}}\n");
    let mut config = Config::from_yaml(&yaml, std::path::Path::new("/")).unwrap_or_else(|e| panic!("{yaml}: {e}"));
    config.issuers.remove(0)
}

fn token(url: &str, kind: IssuerType, claims: Value, sd: Option<&str>, td: Option<&str>) -> VerifiedToken {
    VerifiedToken::unchecked_for_tests(issuer(url, kind, sd, td), claims.as_object().unwrap().clone())
}

fn email_issuer(url: &str, settings: EmailSettings) -> IssuerConfig {
    IssuerConfig::new(url, IssuerKind::Email(settings))
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
        IssuerType::GitlabPipeline,
        gitlab_claims(),
        None,
        None,
    ))
    .unwrap();
    assert!(matches!(p.san(), San::Uri(_)));
    assert_eq!(
        p.san().value(),
        "https://gitlab.example.com/cpanato/testing-cosign//.gitlab-ci.yml@refs/heads/main"
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
    let p = principal(&token("https://gitlab.com", IssuerType::GitlabPipeline, c, None, None)).unwrap();
    assert_eq!(fact(&p, Fact::SourceRepositoryRef), Some("refs/tags/main"));
    let mut c = gitlab_claims();
    c["runner_id"] = json!("1");
    let e = principal(&token("https://gitlab.com", IssuerType::GitlabPipeline, c, None, None)).unwrap_err();
    assert!(e.to_string().contains("runner_id"), "{e}");
    let mut c = gitlab_claims();
    c["ref_type"] = json!("commit");
    assert!(principal(&token("https://gitlab.com", IssuerType::GitlabPipeline, c, None, None)).is_err());
}

#[test]
fn buildkite_codefresh_chainguard_kubernetes() {
    let bk = json!({"sub": "organization:acme:pipeline:app:ref:refs/heads/main", "organization_slug": "acme", "pipeline_slug": "app"});
    let p = principal(&token(
        "https://agent.buildkite.com",
        IssuerType::BuildkiteJob,
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
        IssuerType::CodefreshWorkflow,
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
        IssuerType::ChainguardIdentity,
        cg,
        None,
        None,
    ))
    .unwrap();
    assert_eq!(
        (p.name(), p.san().value()),
        ("abc123", "https://issuer.enforce.dev/abc123"),
        "the advertised challenge claim is sub"
    );
    assert_eq!(
        p.challenges().collect::<Vec<_>>(),
        ["abc123", "dev@example.com"],
        "Fulcio's name (what cosign signs) is accepted too"
    );
    let cg = json!({"sub": "abc123", "email": "dev@example.com"});
    assert!(
        principal(&token(
            "https://issuer.enforce.dev",
            IssuerType::ChainguardIdentity,
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
            IssuerType::ChainguardIdentity,
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
        IssuerType::Kubernetes,
        k8s,
        None,
        None,
    ))
    .unwrap();
    assert_eq!(
        p.san().value(),
        "https://kubernetes.io/namespaces/default/serviceaccounts/builder"
    );
    // As in Fulcio, an empty namespace is an empty path segment.
    let k8s = json!({"sub": "x", "kubernetes.io": {"namespace": "", "serviceaccount": {"name": "builder"}}});
    assert_eq!(
        principal(&token(
            "https://kubernetes.default.svc",
            IssuerType::Kubernetes,
            k8s,
            None,
            None
        ))
        .unwrap()
        .san()
        .value(),
        "https://kubernetes.io/namespaces//serviceaccounts/builder"
    );
}

#[test]
fn spiffe_uri_username() {
    let t = |sub: &str| {
        token(
            "https://spire.example.com",
            IssuerType::Spiffe,
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
    assert_eq!(
        principal(&t("spiffe://example.com")).unwrap().san().value(),
        "spiffe://example.com",
        "a trust domain alone is a SPIFFE ID"
    );
    assert!(principal(&t("spiffe://example.com/")).is_err());
    assert!(principal(&t("https://example.com/x")).is_err());

    let u = |sub: &str| {
        token(
            "https://accounts.example.com",
            IssuerType::Uri,
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
            IssuerType::Username,
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
        IssuerType::Email,
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
    let federated = |path: &str| EmailSettings {
        issuer_claim: Some(JsonPath::parse(path).unwrap()),
        ..EmailSettings::default()
    };
    t = VerifiedToken::unchecked_for_tests(
        email_issuer(
            "https://oauth2.example.dev/auth",
            federated("$.federated_claims.connector_id"),
        ),
        t.claims().clone(),
    );
    assert_eq!(
        issuer_claim(&t).unwrap().as_deref(),
        Some("https://github.com/login/oauth")
    );
    let t = VerifiedToken::unchecked_for_tests(
        email_issuer(
            "https://oauth2.example.dev/auth",
            federated("$.federated_claims.missing"),
        ),
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
    let built_in = principal(&token(url, IssuerType::GithubWorkflow, gh_claims.clone(), None, None)).unwrap();
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
    let built_in = principal(&token(url, IssuerType::GitlabPipeline, gitlab_claims(), None, None)).unwrap();
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

fn github_claims(repository: &str, repository_id: &str) -> Value {
    json!({
        "sub": format!("repo:{repository}:ref:refs/heads/main"),
        "job_workflow_ref": "octo-org/shared/.github/workflows/release.yml@refs/heads/main",
        "job_workflow_sha": "1111", "sha": "2222", "event_name": "push", "repository": repository,
        "workflow": "Release", "ref": "refs/heads/main", "runner_environment": "github-hosted",
        "repository_id": repository_id, "repository_owner": "octo-org", "repository_owner_id": "654321",
        "repository_visibility": "public", "workflow_ref": format!("{repository}/.github/workflows/ci.yml@refs/heads/main"),
        "workflow_sha": "3333", "run_id": "42", "run_attempt": "1",
    })
}

/// One issuer and one realistic claim set per kind.
fn example(kind: IssuerType) -> VerifiedToken {
    let t = |url: &str, claims: Value| token(url, kind, claims, None, None);
    match kind {
        IssuerType::Email => t(
            "https://accounts.example.com",
            json!({"sub": "1234", "email": "dev@example.com", "email_verified": true}),
        ),
        IssuerType::GithubWorkflow => t(
            "https://token.actions.githubusercontent.com",
            github_claims("octo-org/app", "101"),
        ),
        IssuerType::GitlabPipeline => t("https://gitlab.com", gitlab_claims()),
        IssuerType::BuildkiteJob => t(
            "https://agent.buildkite.com",
            json!({"sub": "organization:acme:pipeline:app:ref:refs/heads/main", "organization_slug": "acme", "pipeline_slug": "app"}),
        ),
        IssuerType::CodefreshWorkflow => t(
            "https://oidc.codefresh.io",
            json!({"sub": "account:a1:pipeline:p1", "account_id": "a1", "account_name": "acct", "pipeline_id": "p1",
                   "pipeline_name": "proj/build", "workflow_id": "w1"}),
        ),
        IssuerType::ChainguardIdentity => t(
            "https://issuer.enforce.dev",
            json!({"sub": "abc123", "email": "dev@example.com", "email_verified": true}),
        ),
        IssuerType::Kubernetes => t(
            "https://kubernetes.default.svc",
            json!({"sub": "system:serviceaccount:default:builder", "kubernetes.io": {"namespace": "default", "serviceaccount": {"name": "builder"}}}),
        ),
        IssuerType::Spiffe => token(
            "https://spire.example.com",
            kind,
            json!({"sub": "spiffe://example.com/ns/prod/sa/web"}),
            None,
            Some("example.com"),
        ),
        IssuerType::Uri => token(
            "https://accounts.example.com",
            kind,
            json!({"sub": "https://example.com/users/1"}),
            Some("https://example.com"),
            None,
        ),
        IssuerType::Username => token(
            "https://accounts.example.com",
            kind,
            json!({"sub": "alice"}),
            Some("example.com"),
            None,
        ),
        IssuerType::CiProvider => {
            let issuers = keyless_config::public_good_issuers().unwrap();
            let gh = issuers
                .iter()
                .find(|i| i.url == "https://token.actions.githubusercontent.com")
                .unwrap();
            assert_eq!(gh.kind.issuer_type(), IssuerType::CiProvider);
            VerifiedToken::unchecked_for_tests(
                gh.clone(),
                github_claims("octo-org/app", "101").as_object().unwrap().clone(),
            )
        }
    }
}

/// For every kind, the claim `/api/v2/configuration` advertises is the claim whose value the
/// proof must sign: a real signature over that value proves possession, and a signature over any
/// other claim of the token does not (save Fulcio's email name for chainguard-identity).
#[test]
fn the_advertised_challenge_claim_is_what_the_proof_signs() {
    for &kind in keyless_config::ALL_KINDS {
        let token = example(kind);
        let p = principal(&token).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        let advertised = token.issuer().challenge_claim();
        let value = token.claims()[advertised].as_str().unwrap();
        assert_eq!(p.name(), value, "{kind:?}");
        let (key, _) = SoftwareSigner::generate(SignatureAlgorithm::EcdsaP256Sha256).unwrap();
        let proof_over = |msg: &str| {
            let sig = key.sign(msg.as_bytes()).unwrap();
            prove(
                &p,
                KeyRequest::Signature {
                    public_key: key.public_key_spki(),
                    proof: &sig,
                },
                &crate::possession::AlgorithmPolicy::default(),
            )
        };
        assert!(proof_over(value).is_ok(), "{kind:?}: proof over {advertised}");
        for (claim, other) in token.claims() {
            let Some(other) = other.as_str() else { continue };
            let fulcio_name = kind == IssuerType::ChainguardIdentity && claim == "email";
            if other != value && !fulcio_name {
                assert!(
                    proof_over(other).is_err(),
                    "{kind:?}: a proof over {claim} must not count"
                );
            }
        }
        let expected = if kind == IssuerType::ChainguardIdentity { 2 } else { 1 };
        assert_eq!(p.challenges().count(), expected, "{kind:?}");
    }
}

/// A proof over `sub` counts for an email issuer only when the issuer opts in.
#[test]
fn sub_challenge_is_opt_in_for_email_issuers() {
    let claims = json!({"sub": "1234", "email": "dev@example.com", "email_verified": true});
    let off = principal(&token(
        "https://accounts.example.com",
        IssuerType::Email,
        claims.clone(),
        None,
        None,
    ))
    .unwrap();
    assert_eq!(off.challenges().collect::<Vec<_>>(), ["dev@example.com"]);
    let issuer = email_issuer(
        "https://accounts.example.com",
        EmailSettings {
            allow_sub_challenge: true,
            ..EmailSettings::default()
        },
    );
    let on = principal(&VerifiedToken::unchecked_for_tests(
        issuer,
        claims.as_object().unwrap().clone(),
    ))
    .unwrap();
    assert_eq!(on.challenges().collect::<Vec<_>>(), ["dev@example.com", "1234"]);
    assert_eq!(
        on.san().value(),
        "dev@example.com",
        "the certificate still names the email"
    );
}

/// The rate limit is keyed on who owns the token, per issuer, not on the SAN.
#[test]
fn rate_keys_name_the_owner() {
    let gh = "https://token.actions.githubusercontent.com";
    let a = principal(&token(
        gh,
        IssuerType::GithubWorkflow,
        github_claims("octo-org/a", "101"),
        None,
        None,
    ))
    .unwrap();
    let b = principal(&token(
        gh,
        IssuerType::GithubWorkflow,
        github_claims("octo-org/b", "202"),
        None,
        None,
    ))
    .unwrap();
    assert_eq!(a.san(), b.san(), "one reusable workflow: one SAN");
    assert_eq!(a.rate_key(), format!("{gh} repository_id=\"101\""));
    assert_ne!(a.rate_key(), b.rate_key(), "two repositories: two buckets");
    let expected = [
        (
            IssuerType::Email,
            "https://accounts.example.com email=\"dev@example.com\"",
        ),
        (
            IssuerType::GithubWorkflow,
            "https://token.actions.githubusercontent.com repository_id=\"101\"",
        ),
        (IssuerType::GitlabPipeline, "https://gitlab.com project_id=\"42831435\""),
        (
            IssuerType::BuildkiteJob,
            "https://agent.buildkite.com organization_slug=\"acme\" pipeline_slug=\"app\"",
        ),
        (
            IssuerType::CodefreshWorkflow,
            "https://oidc.codefresh.io account_id=\"a1\" pipeline_id=\"p1\"",
        ),
        (
            IssuerType::ChainguardIdentity,
            "https://issuer.enforce.dev sub=\"abc123\"",
        ),
        (
            IssuerType::Kubernetes,
            "https://kubernetes.default.svc sub=\"system:serviceaccount:default:builder\"",
        ),
        (
            IssuerType::Spiffe,
            "https://spire.example.com sub=\"spiffe://example.com/ns/prod/sa/web\"",
        ),
        (
            IssuerType::Uri,
            "https://accounts.example.com sub=\"https://example.com/users/1\"",
        ),
        (IssuerType::Username, "https://accounts.example.com sub=\"alice\""),
        (
            IssuerType::CiProvider,
            "https://token.actions.githubusercontent.com sub=\"repo:octo-org/app:ref:refs/heads/main\"",
        ),
    ];
    assert_eq!(expected.len(), keyless_config::ALL_KINDS.len());
    for (kind, key) in expected {
        assert_eq!(principal(&example(kind)).unwrap().rate_key(), key, "{kind:?}");
    }
    // Quoting keeps one owner's claims from spelling another's key.
    let bk = |org: &str, pipeline: &str| {
        let c = json!({"sub": "x", "organization_slug": org, "pipeline_slug": pipeline});
        super::rate_key(
            &token("https://agent.buildkite.com", IssuerType::BuildkiteJob, c, None, None),
            "x",
            Some("x"),
        )
        .unwrap()
    };
    assert_ne!(bk("a\" pipeline_slug=\"b", "c"), bk("a", "b\" pipeline_slug=\"c"));
}

/// Every URI SAN passes `San::uri`: built-in kinds, `uri` and `ci-provider` alike refuse what Go
/// refuses and what parsers read differently, naming the claim.
#[test]
fn uri_sans_from_claims_are_parsed() {
    let refused = |t: VerifiedToken, claim: &str, rule: &str| {
        let e = principal(&t).unwrap_err().to_string();
        assert!(
            e.contains(&format!("claim {claim:?}")) && e.contains(rule),
            "{e} should name {claim} and {rule:?}"
        );
    };
    let u = |sub: &str| {
        token(
            "https://accounts.example.com",
            IssuerType::Uri,
            json!({"sub": sub}),
            Some("https://example.com"),
            None,
        )
    };
    // The review's case: one parser reads `evil.example`, the other `example.com`.
    refused(u("https://evil.example\\@example.com/x"), "sub", "backslash");
    refused(u("https://evil.example@example.com/x"), "sub", "userinfo");
    refused(u("https://example.com:8443@evil.example/x"), "sub", "userinfo");
    refused(
        u("https://example.com.evil.example/x"),
        "sub",
        "not under the subject domain",
    );
    refused(u("https:example.com/x"), "sub", "differently");
    refused(u("urn:example.com:x"), "sub", "not a URI with a host");
    assert_eq!(
        principal(&u("https://Example.COM:8443/users/1")).unwrap().san().value(),
        "https://Example.COM:8443/users/1",
        "scheme and host compared as parsed; the SAN kept verbatim"
    );

    let gh = |field: &str, value: &str| {
        let mut c = github_claims("octo-org/app", "101");
        c[field] = json!(value);
        token(
            "https://token.actions.githubusercontent.com",
            IssuerType::GithubWorkflow,
            c,
            None,
            None,
        )
    };
    refused(
        gh("job_workflow_ref", "o/r/.github/workflows/x.yml@refs/heads/%zz"),
        "job_workflow_ref",
        "percent-escape",
    );
    // Go's url.JoinPath escapes what a path cannot hold, as Fulcio's certificates show.
    assert_eq!(
        principal(&gh("job_workflow_ref", "o/r/x.yml@refs/heads/a b"))
            .unwrap()
            .san()
            .value(),
        "https://github.com/o/r/x.yml@refs/heads/a%20b"
    );
    let mut c = gitlab_claims();
    c["ci_config_ref_uri"] = json!("evil.example\\@gitlab.com/g/p//.gitlab-ci.yml@refs/heads/main");
    refused(
        token("https://gitlab.com", IssuerType::GitlabPipeline, c, None, None),
        "ci_config_ref_uri",
        "backslash",
    );
    let k8s = json!({"sub": "x", "kubernetes.io": {"namespace": "de\u{1}fault", "serviceaccount": {"name": "b"}}});
    refused(
        token("https://k8s.example.com", IssuerType::Kubernetes, k8s, None, None),
        "kubernetes.io",
        "control byte 0x01",
    );
    let cg = json!({"sub": "abc%4"});
    refused(
        token(
            "https://issuer.enforce.dev",
            IssuerType::ChainguardIdentity,
            cg,
            None,
            None,
        ),
        "sub",
        "percent-escape",
    );
    let cf = json!({"sub": "s", "account_id": "a", "account_name": "n", "pipeline_id": "p", "pipeline_name": "q",
                    "workflow_id": "w", "platform_url": "https://g.codefresh.io:port"});
    refused(
        token(
            "https://oidc.codefresh.io",
            IssuerType::CodefreshWorkflow,
            cf,
            None,
            None,
        ),
        "platform_url/account_name/pipeline_name/account_id/pipeline_id",
        "invalid port",
    );

    // ci-provider: the rendered SAN is parsed too (claims override the template's `url` default).
    let issuers = keyless_config::public_good_issuers().unwrap();
    let gh = issuers
        .iter()
        .find(|i| i.url == "https://token.actions.githubusercontent.com")
        .unwrap();
    let mut c = github_claims("octo-org/app", "101");
    c["url"] = json!("https://evil.example\\@github.com");
    let e = principal(&VerifiedToken::unchecked_for_tests(
        gh.clone(),
        c.as_object().unwrap().clone(),
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("subject alternative name") && e.contains("backslash"), "{e}");
}

/// A claim over the size limit is refused by name before it can reach a certificate.
#[test]
fn oversized_claims_are_refused_by_name() {
    let big = "a".repeat(MAX_CLAIM_BYTES + 1);
    let mut c = github_claims("octo-org/app", "101");
    c["workflow"] = json!(big);
    let e = principal(&token(
        "https://token.actions.githubusercontent.com",
        IssuerType::GithubWorkflow,
        c,
        None,
        None,
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("claim \"workflow\"") && e.contains("over the limit"), "{e}");
    assert!(e.len() < 300, "the value is not echoed: {}", e.len());
    let mut c = gitlab_claims();
    c["project_visibility"] = json!(big);
    let e = principal(&token("https://gitlab.com", IssuerType::GitlabPipeline, c, None, None)).unwrap_err();
    assert!(e.to_string().contains("claim \"project_visibility\""), "{e}");
    let e = principal(&token(
        "https://accounts.example.com",
        IssuerType::Email,
        json!({"sub": big, "email": "a@example.com", "email_verified": true}),
        None,
        None,
    ))
    .unwrap_err();
    assert!(e.to_string().contains("claim \"sub\""), "{e}");
    // Templates may repeat a claim: what they render is bounded too.
    let issuers = keyless_config::public_good_issuers().unwrap();
    let gh = issuers
        .iter()
        .find(|i| i.url == "https://token.actions.githubusercontent.com")
        .unwrap();
    let mut c = github_claims("octo-org/app", "101");
    c["job_workflow_ref"] = json!(format!("o/r/{}", "b".repeat(crate::token::MAX_VALUE_BYTES)));
    let e = principal(&VerifiedToken::unchecked_for_tests(
        gh.clone(),
        c.as_object().unwrap().clone(),
    ))
    .unwrap_err();
    assert!(e.to_string().contains("over the limit"), "{e}");
}

/// Each module reads its own kind's settings, as the configuration loader built them.
#[test]
fn kind_settings_reach_their_module() {
    let url = "https://accounts.example.com";
    let unverified = json!({"sub": "1", "email": "dev@example.com"});
    let with = |settings: EmailSettings| {
        principal(&VerifiedToken::unchecked_for_tests(
            email_issuer(url, settings),
            unverified.as_object().unwrap().clone(),
        ))
    };
    let e = with(EmailSettings::default()).unwrap_err().to_string();
    assert!(e.contains("email_verified"), "{e}");
    let lenient = EmailSettings {
        skip_email_verification: true,
        ..EmailSettings::default()
    };
    assert_eq!(with(lenient).unwrap().san().value(), "dev@example.com");
    // The uri subject domain was parsed at load: its host compares as parsed, not as written.
    let u = token(
        url,
        IssuerType::Uri,
        json!({"sub": "https://example.com/users/1"}),
        Some("https://EXAMPLE.com"),
        None,
    );
    assert_eq!(principal(&u).unwrap().san().value(), "https://example.com/users/1");
    let n = token(
        url,
        IssuerType::Username,
        json!({"sub": "alice"}),
        Some("example.org.example.com"),
        None,
    );
    assert_eq!(principal(&n).unwrap().san().value(), "alice!example.org.example.com");
}
