//! Issuer kinds beyond email and GitHub, end to end through the binary, checked with an
//! independent parser: a self-managed GitLab, and username identities (OtherName SAN).

use keyless_tests::inspect::{self, openssl_verify, sigstore};
use keyless_tests::{ClientKey, Keyless, TestIssuer};
use serde_json::json;

#[tokio::test]
async fn self_managed_gitlab_and_username() {
    let gitlab = TestIssuer::start("/gitlab").await;
    let users = TestIssuer::start("/users").await;
    let ks = Keyless::start(&format!(
        "ct_log: disabled\nissuers:\n  - {{url: \"{}\", type: gitlab-pipeline}}\n  - {{url: \"{}\", type: username, subject_domain: \"127.0.0.1\"}}\n",
        gitlab.url, users.url
    ));
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
    let ks = Keyless::start("ct_log: disabled\nissuers:\n  - {url: \"http://127.0.0.1:*/tenant-*\", type: email}\n");
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
    let ks = Keyless::start(&format!(
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
    ));
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
    let ks = Keyless::start(&format!(
        "ct_log: disabled\nissuers:\n  - {{url: \"{}\", type: email, audiences: [fleet-ci], algorithms: [RS256], max_token_age: 5m}}\n",
        idp.url
    ));
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
    let only_a = format!("ct_log: disabled\nissuers:\n  - {{url: \"{}\", type: email}}\n", a.url);
    let ks = Keyless::start(&only_a);
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
}

/// Without issuers in its configuration, a production server trusts the built-in public-good
/// issuer set (loaded from Keyless CA's copy of Fulcio's file, templates included).
#[tokio::test]
async fn default_issuers_are_the_public_good_set() {
    let ks = Keyless::start("ct_log: disabled\n");
    let conf = ks.get("/api/v2/configuration").await.json();
    let issuers = conf["issuers"].as_array().unwrap();
    let gh = issuers
        .iter()
        .find(|i| i["issuerUrl"] == "https://token.actions.githubusercontent.com")
        .expect("GitHub Actions");
    assert_eq!(gh["issuerType"], "ci-provider");
    assert_eq!(gh["challengeClaim"], "sub");
    assert!(
        issuers
            .iter()
            .any(|i| i["wildcardIssuerUrl"] == "https://oidc.eks.*.amazonaws.com/id/*")
    );
    assert!(
        issuers
            .iter()
            .any(|i| i["issuerUrl"] == "https://accounts.google.com" && i["challengeClaim"] == "email")
    );
    assert!(ks.log().contains("built-in public-good Sigstore issuer set"));
}
