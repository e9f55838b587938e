//! Issuer kinds beyond email and GitHub, end to end through the binary, checked with an
//! independent parser: a self-managed GitLab, and username identities (OtherName SAN).

use keyless_tests::inspect::{self, openssl_verify, sigstore};
use keyless_tests::{ClientKey, Keyless, TestIssuer};
use serde_json::json;

#[tokio::test]
async fn self_managed_gitlab_and_username() {
    let gitlab = TestIssuer::start("/gitlab").await;
    let users = TestIssuer::start("/users").await;
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nissuers:\n  - {{url: \"{}\", type: gitlab-pipeline}}\n  - {{url: \"{}\", type: username, subject_domain: \"127.0.0.1\"}}\n",
        gitlab.url, users.url
    )).start();
    let base = gitlab.url.trim_end_matches("/gitlab").to_string();
    let mut c = gitlab.email_claims("unused@example.com");
    let o = c.as_object_mut().unwrap();
    for k in ["email", "email_verified"] {
        o.remove(k);
    }
    let sub = "project_path:group/app:ref_type:tag:ref:v1.2.3";
    for (k, v) in [
        ("sub", json!(sub)),
        ("namespace_id", json!("11")),
        ("namespace_path", json!("group")),
        ("project_id", json!("22")),
        ("project_path", json!("group/app")),
        ("pipeline_id", json!("33")),
        ("pipeline_source", json!("push")),
        ("job_id", json!("44")),
        ("ref", json!("v1.2.3")),
        ("ref_type", json!("tag")),
        ("runner_id", json!(7)),
        ("runner_environment", json!("self-hosted")),
        ("sha", json!("c0ffee")),
        (
            "ci_config_ref_uri",
            json!("gitlab.internal.example/group/app//.gitlab-ci.yml@refs/tags/v1.2.3"),
        ),
    ] {
        o.insert(k.into(), v);
    }
    let key = ClientKey::p256();
    let body =
        json!({"credentials": {"oidcIdentityToken": gitlab.mint(&c)}, "publicKeyRequest": key.public_key_request(sub)});
    let chain = ks.sign_v2(&body, None).await.chain();
    openssl_verify(&chain);
    let leaf = inspect::parse(&chain[0]);
    assert_eq!(
        inspect::san(&leaf).1,
        "uri:https://gitlab.internal.example/group/app//.gitlab-ci.yml@refs/tags/v1.2.3"
    );
    assert_eq!(
        sigstore(&leaf, 12),
        Some(format!("{base}/group/app")),
        "the issuer's own host, not gitlab.com"
    );
    assert_eq!(sigstore(&leaf, 14).as_deref(), Some("refs/tags/v1.2.3"));
    assert_eq!(sigstore(&leaf, 21), Some(format!("{base}/group/app/-/jobs/44")));
    assert_eq!(sigstore(&leaf, 2), None, "no GitHub-only raw extensions");

    let mut c = users.email_claims("x@example.com");
    c["sub"] = json!("alice");
    let body = json!({"credentials": {"oidcIdentityToken": users.mint(&c)}, "publicKeyRequest": key.public_key_request("alice")});
    let chain = ks.sign_v2(&body, None).await.chain();
    openssl_verify(&chain);
    let leaf = inspect::parse(&chain[0]);
    let (critical, san) = inspect::san(&leaf);
    assert!(critical);
    assert_eq!(san, "othername:1.3.6.1.4.1.57264.1.7:alice!127.0.0.1");
    let conf = ks.get("/api/v2/configuration").await.json();
    let kinds: Vec<&str> = conf["issuers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["issuerType"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"gitlab-pipeline") && kinds.contains(&"username"));
}

/// Meta issuers: a wildcard pattern admits matching issuers (fetched only because they match),
/// and nothing that merely contains a matching URL.
#[tokio::test]
async fn meta_issuer_wildcards() {
    let a = TestIssuer::start("/tenant-a").await;
    let nested = TestIssuer::start("/tenant-b/extra").await;
    let ks = Keyless::builder("ct_log: disabled\nissuers:\n  - {url: \"http://127.0.0.1:*/tenant-*\", type: email}\n")
        .start();
    let key = ClientKey::p256();
    let body = |idp: &TestIssuer| {
        json!({"credentials": {"oidcIdentityToken": idp.mint(&idp.email_claims("m@example.com"))},
               "publicKeyRequest": key.public_key_request("m@example.com")})
    };
    let chain = ks.sign_v2(&body(&a), None).await.chain();
    let leaf = inspect::parse(&chain[0]);
    assert_eq!(
        sigstore(&leaf, 8).as_deref(),
        Some(a.url.as_str()),
        "the certificate names the concrete issuer"
    );
    let r = ks.sign_v2(&body(&nested), None).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.message().contains("is not configured"), "{}", r.body);
    assert_eq!(nested.jwks_fetches(), 0, "a non-matching issuer is never contacted");
    let conf = ks.get("/api/v2/configuration").await.json();
    assert_eq!(conf["issuers"][0]["wildcardIssuerUrl"], "http://127.0.0.1:*/tenant-*");
}

/// Claim policy: deny rules first, then allow rules; a refusal is 403 naming the rule, and the
/// decision is logged with issuer, subject and rule.
#[tokio::test]
async fn claim_policy_allow_and_deny() {
    let gh = TestIssuer::start("/gh").await;
    let ks = Keyless::builder(&format!(
        r#"ct_log: disabled
issuers:
  - url: "{}"
    type: github-workflow
    policy:
      deny:
        - name: no-self-hosted
          when: {{runner_environment: self-hosted}}
      allow:
        - name: acme-release-tags
          when:
            repository_owner: acme
            ref: "refs/tags/*"
        - name: acme-main
          when:
            repository_owner: {{in: [acme, acme-labs]}}
            ref: {{equals: refs/heads/main}}
"#,
        gh.url
    ))
    .start();
    let key = ClientKey::p256();
    let send = |claims: serde_json::Value| {
        let sub = claims["sub"].as_str().unwrap().to_string();
        let body = json!({"credentials": {"oidcIdentityToken": gh.mint(&claims)}, "publicKeyRequest": key.public_key_request(&sub)});
        let ks = &ks;
        async move { ks.sign_v2(&body, None).await }
    };
    let with = |pairs: &[(&str, &str)]| {
        let mut c = gh.github_claims();
        c["repository_owner"] = json!("acme");
        for (k, v) in pairs {
            c[*k] = json!(v);
        }
        c
    };
    assert_eq!(send(with(&[("ref", "refs/tags/v1.0.0")])).await.status, 200);
    assert_eq!(
        send(with(&[("ref", "refs/heads/main"), ("repository_owner", "acme-labs")]))
            .await
            .status,
        200
    );

    let r = send(with(&[("ref", "refs/heads/feature")])).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.message()
            .starts_with("The identity is not allowed by this CA's policy"),
        "{}",
        r.body
    );
    assert!(
        r.message().contains("acme-release-tags") && r.message().contains("acme-main"),
        "{}",
        r.body
    );

    let r = send(with(&[
        ("ref", "refs/tags/v1.0.0"),
        ("runner_environment", "self-hosted"),
    ]))
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.message().contains("denied by rule \"no-self-hosted\""), "{}", r.body);

    let r = send(with(&[("ref", "refs/tags/v1.0.0"), ("repository_owner", "evil")])).await;
    assert_eq!(r.status, 403);
    let log = ks.log();
    assert!(
        log.contains("refused by policy") && log.contains("no-self-hosted"),
        "{log}"
    );
    assert_eq!(log.matches("certificate issued").count(), 2);
}

/// Per-issuer settings: extra audiences, allowed algorithms, maximum token age.
#[tokio::test]
async fn per_issuer_audiences_algorithms_and_token_age() {
    let idp = TestIssuer::start("/idp").await;
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nissuers:\n  - {{url: \"{}\", type: email, audiences: [fleet-ci], algorithms: [RS256], max_token_age: 5m}}\n",
        idp.url
    )).start();
    let key = ClientKey::p256();
    let send = |token: String| {
        let body = json!({"credentials": {"oidcIdentityToken": token}, "publicKeyRequest": key.public_key_request("o@example.com")});
        let ks = &ks;
        async move { ks.sign_v2(&body, None).await }
    };
    let claims = || idp.email_claims("o@example.com");
    assert_eq!(send(idp.mint(&claims())).await.status, 200);
    let mut c = claims();
    c["aud"] = json!("fleet-ci");
    assert_eq!(send(idp.mint(&c)).await.status, 200, "an extra audience is accepted");
    let r = send(keyless_tests::mint_with(&idp.ec, &claims())).await;
    assert_eq!(r.status, 400);
    assert!(
        r.message().contains("\"ES256\" is not allowed for issuer"),
        "{}",
        r.body
    );
    let mut c = claims();
    c["iat"] = json!(keyless_tests::now() - 3600);
    let r = send(idp.mint(&c)).await;
    assert_eq!(r.status, 400);
    assert!(r.message().contains("older than max_token_age 300s"), "{}", r.body);
    let mut c = claims();
    c.as_object_mut().unwrap().remove("iat");
    assert!(send(idp.mint(&c)).await.message().contains("no \"iat\""));
}

/// `keyless config check`: path-named errors for a broken file; for a good one, probes issuers and
/// explains a token (SAN, every extension, the policy decision) without issuing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_explains_files_and_tokens() {
    let gh = TestIssuer::start("/gh").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("good.yaml"),
        format!(
            "issuers:\n  - url: \"{}\"\n    type: github-workflow\n    policy: {{deny: [{{name: no-self-hosted, when: {{runner_environment: self-hosted}}}}]}}\n  - {{url: \"http://127.0.0.1:9/down\", type: email}}\n",
            gh.url
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("broken.yaml"),
        "issuers:\n  - {url: https://a.example, type: email}\n  - {url: https://b.example, type: gitlab-ci}\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = keyless_tests::run_keyless(args, d, &[]);
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (ok, out) = run(&["config", "check", "broken.yaml"]);
    assert!(!ok);
    assert!(
        out.contains(r#"issuers[1].type: unknown issuer type "gitlab-ci""#),
        "{out}"
    );

    let token = gh.mint(&gh.github_claims());
    let (ok, out) = run(&["config", "check", "good.yaml", "--token", &token, "--json"]);
    assert!(ok, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let t = &report["token"];
    assert_eq!(t["would_issue"], true);
    assert_eq!(t["policy"], "allowed");
    assert_eq!(
        t["san"],
        "https://github.com/octo-org/octo-repo/.github/workflows/release.yml@refs/heads/main"
    );
    let exts = t["extensions"].as_array().unwrap();
    let get = |oid: &str| {
        exts.iter()
            .find(|e| e["oid"] == oid)
            .map(|e| e["value"].as_str().unwrap().to_string())
    };
    assert_eq!(
        get("1.3.6.1.4.1.57264.1.21").as_deref(),
        Some("https://github.com/octo-org/octo-repo/actions/runs/42/attempts/1")
    );
    assert_eq!(
        get("1.3.6.1.4.1.57264.1.24").as_deref(),
        Some("repo:octo-org/octo-repo:ref:refs/heads/main")
    );

    let mut c = gh.github_claims();
    c["runner_environment"] = serde_json::json!("self-hosted");
    let (ok, out) = run(&["config", "check", "good.yaml", "--token", &gh.mint(&c)]);
    assert!(!ok);
    assert!(
        out.contains("no-self-hosted") && out.contains("would issue: no"),
        "{out}"
    );

    let mut c = gh.github_claims();
    c["aud"] = serde_json::json!("other");
    let (ok, out) = run(&["config", "check", "good.yaml", "--token", &gh.mint(&c)]);
    assert!(!ok && out.contains("audience"), "{out}");

    let (ok, out) = run(&["config", "check", "good.yaml", "--online"]);
    assert!(!ok, "one issuer is down");
    assert!(
        out.contains("online") && out.contains("DOWN    http://127.0.0.1:9/down"),
        "{out}"
    );
}

/// Live reload: while clients issue continuously, the issuer set grows from {A} to {A, B} by
/// editing the file; no request fails because of the switch; a broken file is refused and the
/// previous configuration keeps serving; SIGHUP also reloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_reload_under_load() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};
    let a = TestIssuer::start("/a").await;
    let b = TestIssuer::start("/b").await;
    let only_a = format!(
        "ct_log: disabled\nmetrics_listen: 127.0.0.1:0\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        a.url
    );
    let ks = Keyless::builder(&only_a).start();
    let config_path = ks.dir.path().join("keyless.yaml");
    let original = std::fs::read_to_string(&config_path).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let bodies: Vec<_> = (0..400)
        .map(|i| {
            let email = format!("r{i}@example.com");
            let key = ClientKey::p256();
            json!({"credentials": {"oidcIdentityToken": a.mint(&a.email_claims(&email))}, "publicKeyRequest": key.public_key_request(&email)})
        })
        .collect();
    let load = {
        let (url, stop, ok, failed) = (ks.url.clone(), stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for b in bodies.iter().cycle() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let r = http
                    .post(format!("{url}/api/v2/signingCert"))
                    .json(b)
                    .send()
                    .await
                    .unwrap();
                if r.status() == 200 {
                    ok.fetch_add(1, Ordering::SeqCst)
                } else {
                    failed.fetch_add(1, Ordering::SeqCst)
                };
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let key = ClientKey::p256();
    let b_body = json!({"credentials": {"oidcIdentityToken": b.mint(&b.email_claims("b@example.com"))}, "publicKeyRequest": key.public_key_request("b@example.com")});
    assert_eq!(ks.sign_v2(&b_body, None).await.status, 400, "B is not trusted yet");

    let wait_for = |needle: &'static str, count: usize| {
        let ks = &ks;
        async move {
            let start = Instant::now();
            while ks.log().matches(needle).count() < count {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "no {needle:?} in the log:\n{}",
                    ks.log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // 1. Add issuer B by editing the file.
    std::fs::write(
        &config_path,
        format!("{original}  - {{url: \"{}\", type: email}}\n", b.url),
    )
    .unwrap();
    wait_for("configuration reloaded", 1).await;
    assert_eq!(
        ks.sign_v2(&b_body, None).await.status,
        200,
        "B is trusted after the reload"
    );
    // 2. A broken file is refused; the previous configuration keeps serving.
    std::fs::write(
        &config_path,
        format!("{original}  - {{url: \"{}\", type: gitlab-ci}}\n", b.url),
    )
    .unwrap();
    wait_for("configuration reload refused", 1).await;
    assert_eq!(
        ks.sign_v2(&b_body, None).await.status,
        200,
        "the old configuration stays in force"
    );
    assert!(ks.log().contains("issuers[1].type"), "the error names its path");
    // 3. Back to A only, applied with SIGHUP.
    std::fs::write(&config_path, &original).unwrap();
    ks.signal("HUP");
    wait_for("configuration reloaded", 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ks.sign_v2(&b_body, None).await.status, 400);
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "no request failed because of a reload"
    );
    assert!(ok.load(Ordering::SeqCst) > 20);
    assert!(ks.log().contains("config_hash"));
    // The reload outcomes, the configuration in force, issuance and rejections are in /metrics.
    let m = ks.metrics().await;
    assert!(m.contains("keyless_config_reloads_total{outcome=\"ok\"} "), "{m}");
    assert!(m.contains("keyless_config_reloads_total{outcome=\"refused\"} 1"), "{m}");
    assert!(m.contains("keyless_config_info{hash=\""), "{m}");
    assert!(
        m.contains(&format!(
            "keyless_certificates_issued_total{{issuer_kind=\"email\",issuer=\"{}\"}}",
            a.url
        )),
        "{m}"
    );
    assert!(m.contains("keyless_rejections_total{class=\"token\"}"), "{m}");
    assert!(m.contains("keyless_build_info{version="), "{m}");
    assert!(!m.contains("@example.com"), "no subjects in labels");
}

/// `public_good_issuers: true` trusts the public-good set bundled with Keyless CA (Fulcio's own
/// `config/identity/config.yaml`, unchanged): the server advertises every issuer of that file,
/// exact and meta, with Fulcio's type, audience and challenge claim.
#[tokio::test]
async fn public_good_issuers_serve_every_issuer_of_fulcios_file() {
    let ks = Keyless::builder("ct_log: disabled\npublic_good_issuers: true\n").start();
    let conf = ks.get("/api/v2/configuration").await.json();
    let served = conf["issuers"].as_array().unwrap();
    let file = keyless_config::read_issuers_file(keyless_config::PUBLIC_GOOD_ISSUERS).unwrap();
    assert!(file.warnings.is_empty(), "{:?}", file.warnings);
    assert_eq!(served.len(), file.issuers.len());
    for issuer in &file.issuers {
        let key = if issuer.wildcard {
            "wildcardIssuerUrl"
        } else {
            "issuerUrl"
        };
        let entry = served
            .iter()
            .find(|e| e[key] == issuer.url.as_str())
            .unwrap_or_else(|| panic!("{} is not served", issuer.url));
        assert_eq!(entry["issuerType"], issuer.kind.as_str(), "{}", issuer.url);
        assert_eq!(entry["audience"], "sigstore", "{}", issuer.url);
        assert_eq!(entry["challengeClaim"], issuer.challenge_claim(), "{}", issuer.url);
    }
    let gh = served
        .iter()
        .find(|i| i["issuerUrl"] == "https://token.actions.githubusercontent.com")
        .expect("GitHub Actions");
    assert_eq!(
        (gh["issuerType"].as_str(), gh["challengeClaim"].as_str()),
        (Some("ci-provider"), Some("sub"))
    );
    assert!(
        served
            .iter()
            .any(|i| i["issuerUrl"] == "https://accounts.google.com" && i["challengeClaim"] == "email")
    );
    for meta in [
        "https://oidc.eks.*.amazonaws.com/id/*",
        "https://oidc.circleci.com/org/*",
    ] {
        assert!(served.iter().any(|i| i["wildcardIssuerUrl"] == meta), "{meta}");
    }
    assert!(
        ks.log()
            .contains("public-good Sigstore issuer set bundled with Keyless CA")
    );
}

/// Fulcio's own issuer file, unchanged, through the binary: `keyless config check` accepts it
/// with no warning; a setting Fulcio ignores is a warning (text and JSON), `--strict` makes it an
/// error, and `keyless serve` logs it at start-up.
#[tokio::test]
async fn config_check_reads_fulcios_file_and_reports_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("config.yaml"), keyless_config::PUBLIC_GOOD_ISSUERS).unwrap();
    std::fs::write(d.join("k.yaml"), "ct_log: disabled\nissuers_file: config.yaml\n").unwrap();
    let run = |args: &[&str]| {
        let out = keyless_tests::run_keyless(args, d, &[]);
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = run(&["config", "check", "k.yaml"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("valid (31 issuers)") && !out.contains("warning"), "{out}");

    let idp = TestIssuer::start("/fulcio").await;
    std::fs::write(
        d.join("config.yaml"),
        format!(
            "oidc-issuers:\n  {u}:\n    issuer-url: {u}\n    client-id: sigstore\n    type: email\n    subject-domain: example.com\n",
            u = idp.url
        ),
    )
    .unwrap();
    let warning = format!(
        "{}: OIDCIssuers[\"{}\"].SubjectDomain: ignored: only uri and username issuers use it, not email",
        d.join("config.yaml").canonicalize().unwrap().display(),
        idp.url
    );
    let (code, out) = run(&["config", "check", "k.yaml"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("  warning: {warning}")), "{out}");
    let (code, out) = run(&["config", "check", "--json", "k.yaml"]);
    assert_eq!(code, Some(0), "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        report["warnings"][0].as_str().unwrap().starts_with(&warning),
        "{report}"
    );
    let (code, out) = run(&["config", "check", "--strict", "k.yaml"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("INVALID") && out.contains(&format!("  error: {warning}")),
        "{out}"
    );

    let ks = Keyless::builder("ct_log: disabled\nissuers_file: config.yaml\n")
        .dir(dir)
        .start();
    let log = ks.log();
    assert_eq!(log.matches("configuration warning").count(), 1, "{log}");
    assert!(log.contains("SubjectDomain") && log.contains("ignored"), "{log}");

    // A reload logs the warnings of the new configuration once more.
    let file = ks.dir.path().join("config.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("# edited\n{text}")).unwrap();
    ks.signal("HUP");
    let start = std::time::Instant::now();
    while !ks.log().contains("configuration reloaded") {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "no reload:\n{}",
            ks.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let log = ks.log();
    assert_eq!(log.matches("configuration warning").count(), 2, "{log}");
}

/// Golden certificates per issuer kind, through the binary, read back with an independent parser:
/// the SAN and every Sigstore extension value.
#[tokio::test]
async fn golden_certificates_for_every_kind() {
    let kinds = ["buildkite", "codefresh", "chainguard", "k8s", "spiffe", "uri", "ci"];
    let mut idps = Vec::new();
    for k in kinds {
        idps.push(TestIssuer::start(&format!("/{k}")).await);
    }
    let dir = tempfile::tempdir().unwrap();
    // A ci-provider issuer described by templates in a Fulcio issuer file.
    std::fs::write(
        dir.path().join("fulcio.yaml"),
        format!(
            "oidc-issuers:\n  {u}:\n    issuer-url: {u}\n    client-id: sigstore\n    type: ci-provider\n    ci-provider: acme-ci\nci-issuer-metadata:\n  acme-ci:\n    default-template-values: {{base: \"https://ci.acme.example\"}}\n    subject-alternative-name-template: \"{{{{ .base }}}}/{{{{ .project }}}}/pipelines/{{{{ .pipeline }}}}\"\n    extension-templates:\n      build-trigger: trigger\n      run-invocation-uri: \"{{{{ .base }}}}/runs/{{{{ .run }}}}\"\n      runner-environment: \"{{{{ if eq .hosted \\\"true\\\" }}}}acme-hosted{{{{ else }}}}self-hosted{{{{ end }}}}\"\n",
            u = idps[6].url
        ),
    )
    .unwrap();
    let yaml = format!(
        "ct_log: disabled\nissuers_file: fulcio.yaml\nissuers:\n  - {{url: \"{}\", type: buildkite-job}}\n  - {{url: \"{}\", type: codefresh-workflow}}\n  - {{url: \"{}\", type: chainguard-identity}}\n  - {{url: \"{}\", type: kubernetes}}\n  - {{url: \"{}\", type: spiffe, spiffe_trust_domain: example.org}}\n  - {{url: \"{}\", type: uri, subject_domain: \"http://127.0.0.1\"}}\n",
        idps[0].url, idps[1].url, idps[2].url, idps[3].url, idps[4].url, idps[5].url
    );
    let ks = Keyless::builder(&yaml).dir(dir).start();
    let base = |i: usize| {
        let mut c = idps[i].email_claims("x@example.com");
        let o = c.as_object_mut().unwrap();
        o.remove("email");
        o.remove("email_verified");
        c
    };
    let set = |mut c: serde_json::Value, pairs: serde_json::Value| {
        for (k, v) in pairs.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    /// (issuer index, claims, SAN type, SAN, expected Sigstore extensions by arc)
    type Case<'a> = (usize, serde_json::Value, &'a str, String, Vec<(u32, String)>);
    let cases: Vec<Case> = vec![
        (
            0,
            set(
                base(0),
                json!({"sub": "organization:acme:pipeline:app", "organization_slug": "acme", "pipeline_slug": "app"}),
            ),
            "organization:acme:pipeline:app",
            "uri:https://buildkite.com/acme/app".into(),
            vec![],
        ),
        (
            1,
            set(
                base(1),
                json!({"sub": "account:a1:pipeline:p1", "account_id": "a1", "account_name": "acme", "pipeline_id": "p1",
            "pipeline_name": "web/build", "workflow_id": "w1", "scm_repo_url": "https://github.com/acme/web", "scm_ref": "main"}),
            ),
            "account:a1:pipeline:p1",
            "uri:https://g.codefresh.io/acme/web/build:a1/p1".into(),
            vec![
                (9, "https://g.codefresh.io/build/w1".into()),
                (12, "https://github.com/acme/web".into()),
                (14, "main".into()),
                (18, "https://g.codefresh.io/api/pipelines/p1".into()),
                (21, "https://g.codefresh.io/build/w1".into()),
            ],
        ),
        (
            2,
            set(
                base(2),
                json!({"sub": "cg-123", "email": "dev@acme.example", "email_verified": true}),
            ),
            "dev@acme.example",
            format!("uri:{}/cg-123", idps[2].url),
            vec![],
        ),
        (
            3,
            set(
                base(3),
                json!({"sub": "system:serviceaccount:prod:builder", "kubernetes.io": {"namespace": "prod", "serviceaccount": {"name": "builder"}}}),
            ),
            "system:serviceaccount:prod:builder",
            "uri:https://kubernetes.io/namespaces/prod/serviceaccounts/builder".into(),
            vec![],
        ),
        (
            4,
            set(base(4), json!({"sub": "spiffe://example.org/ns/prod/sa/web"})),
            "spiffe://example.org/ns/prod/sa/web",
            "uri:spiffe://example.org/ns/prod/sa/web".into(),
            vec![],
        ),
        (
            5,
            set(base(5), json!({"sub": "http://127.0.0.1/users/42"})),
            "http://127.0.0.1/users/42",
            "uri:http://127.0.0.1/users/42".into(),
            vec![],
        ),
        (
            6,
            set(
                base(6),
                json!({"sub": "project:web", "project": "web", "pipeline": "7", "run": "99", "trigger": "tag", "hosted": true}),
            ),
            "project:web",
            "uri:https://ci.acme.example/web/pipelines/7".into(),
            vec![
                (20, "tag".into()),
                (21, "https://ci.acme.example/runs/99".into()),
                (11, "acme-hosted".into()),
            ],
        ),
    ];
    for (i, claims, name, san, exts) in cases {
        let key = ClientKey::p256();
        let body = json!({"credentials": {"oidcIdentityToken": idps[i].mint(&claims)}, "publicKeyRequest": key.public_key_request(name)});
        let chain = ks.sign_v2(&body, None).await.chain();
        openssl_verify(&chain);
        let leaf = inspect::parse(&chain[0]);
        assert_eq!(inspect::san(&leaf).1, san, "{}", kinds[i]);
        assert_eq!(
            sigstore(&leaf, 1).as_deref(),
            Some(idps[i].url.as_str()),
            "{}",
            kinds[i]
        );
        assert_eq!(
            sigstore(&leaf, 8).as_deref(),
            Some(idps[i].url.as_str()),
            "{}",
            kinds[i]
        );
        assert_eq!(sigstore(&leaf, 24).as_deref(), claims["sub"].as_str(), "{}", kinds[i]);
        let present: Vec<u32> = (9..=23).filter(|a| sigstore(&leaf, *a).is_some()).collect();
        let mut expected: Vec<u32> = exts.iter().map(|(a, _)| *a).collect();
        expected.sort();
        assert_eq!(present, expected, "{}: exactly the expected extensions", kinds[i]);
        for (arc, value) in exts {
            assert_eq!(sigstore(&leaf, arc), Some(value), "{} extension 1.{arc}", kinds[i]);
        }
    }
}

/// An IdP behind a private CA: reachable only once its CA bundle is configured for that issuer.
#[tokio::test]
async fn issuer_behind_a_private_ca() {
    let (idp, ca_pem) = keyless_tests::TestIssuer::start_tls("/private").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("idp-ca.pem"), &ca_pem).unwrap();
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nissuers:\n  - {{url: \"{u}\", type: email, ca_cert: idp-ca.pem}}\n",
        u = idp.url
    ))
    .dir(dir)
    .start();
    let key = ClientKey::p256();
    let body = json!({"credentials": {"oidcIdentityToken": idp.mint(&idp.email_claims("p@example.com"))},
                      "publicKeyRequest": key.public_key_request("p@example.com")});
    let chain = ks.sign_v2(&body, None).await.chain();
    assert_eq!(inspect::san(&inspect::parse(&chain[0])).1, "email:p@example.com");
    assert!(idp.url.starts_with("https://127.0.0.1:"));
    // The same IdP without its CA bundle cannot be reached (the system roots do not trust it).
    let without = Keyless::builder(&format!(
        "ct_log: disabled\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    ))
    .start();
    let r = without.sign_v2(&body, None).await;
    assert_eq!(r.status, 503, "{}", r.body);
}
