//! Hostile identities and issuers: a hanging IdP, a glob bomb in a claim, URIs Go would refuse, a
//! reload during an IdP outage.

use super::*;

/// A token naming an issuer whose IdP hangs: the first waits for one bounded fetch while other
/// issuers are served, the next is refused at once (the failure is remembered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_idp_costs_one_fetch_and_nobody_else_waits() {
    let idp = TestIssuer::start("/email").await;
    let hanging = HangingServer::start().await;
    let stuck = format!("{}/idp", hanging.url);
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nissuers:\n  - {{url: \"{}\", type: email}}\n  - {{url: \"{stuck}\", type: email}}\n",
        idp.url
    ))
    .start();
    let mut claims = idp.email_claims("stuck@example.com");
    claims["iss"] = json!(stuck);
    let body = sign_body(&idp.mint(&claims), &ClientKey::p256(), "stuck@example.com");
    let first = {
        let (url, body) = (ks.url.clone(), body.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let r = reqwest::Client::new()
                .post(format!("{url}/api/v2/signingCert"))
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), start.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // While the fetch hangs, the other issuer's clients are served as usual.
    for i in 0..5 {
        let took = legitimate(&ks, &idp, &format!("ok{i}@example.com")).await;
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
    let (status, took) = first.await.unwrap();
    assert_eq!(status, 503);
    assert!(took < Duration::from_secs(15), "one bounded fetch: {took:?}");
    // The failure is remembered: the next token for that issuer is refused at once.
    let start = Instant::now();
    let r = ks.sign_v2(&body, None).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.message().contains(&stuck), "{}", r.body);
    assert!(start.elapsed() < Duration::from_millis(500), "{:?}", start.elapsed());
    assert_eq!(
        hanging.accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one fetch in all"
    );
}

/// A claim built to make a policy glob backtrack is matched in linear time; the CA keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_glob_bomb_claim_is_matched_in_linear_time() {
    let gh = TestIssuer::start("/gh").await;
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nissuers:\n  - url: \"{}\"\n    type: github-workflow\n    policy:\n      allow: [{{name: tags, when: {{ref: \"*a*a*a*a*b\"}}}}]\n",
        gh.url
    )).start();
    let mut claims = gh.github_claims();
    claims["ref"] = json!("a".repeat(1500));
    let body = sign_body(
        &gh.mint(&claims),
        &ClientKey::p256(),
        "repo:octo-org/octo-repo:ref:refs/heads/main",
    );
    let start = Instant::now();
    let r = ks.sign_v2(&body, None).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    assert!(ks.healthy().await);
}

/// `uri` identities are parsed as Go's net/url would: a backslash in the authority is refused, not
/// read as a path under the allowed host.
#[tokio::test]
async fn uri_identities_that_go_would_refuse_are_refused() {
    let idp = TestIssuer::start("/uri").await;
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nissuers:\n  - {{url: \"{}\", type: uri, subject_domain: \"http://127.0.0.1\"}}\n",
        idp.url
    ))
    .start();
    for sub in [
        "http://evil.example\\@127.0.0.1/x",
        "http://evil.example\\127.0.0.1/x",
        "http://user@127.0.0.1/x",
        "http://127.0.0.1/%zz",
        "http://127.0.0.1/a b",
    ] {
        let mut claims = idp.email_claims("x@example.com");
        claims["sub"] = json!(sub);
        let r = ks
            .sign_v2(&sign_body(&idp.mint(&claims), &ClientKey::p256(), sub), None)
            .await;
        assert_eq!(r.status, 400, "{sub}: {}", r.body);
        assert!(r.message().contains("\"sub\""), "{sub}: {}", r.body);
    }
    let mut claims = idp.email_claims("x@example.com");
    claims["sub"] = json!("http://127.0.0.1/team/a");
    let r = ks
        .sign_v2(
            &sign_body(&idp.mint(&claims), &ClientKey::p256(), "http://127.0.0.1/team/a"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// A reload while an IdP is down keeps that issuer's cached keys: unchanged issuers keep their
/// state, and an unchanged file is not even swapped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_during_an_idp_outage_keeps_issuing() {
    let idp = TestIssuer::start("/email").await;
    let other = TestIssuer::start("/other").await;
    let ks = Keyless::builder(&format!(
        "ct_log: disabled\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    ))
    .start();
    let tokens: Vec<String> = (0..3)
        .map(|i| idp.mint(&idp.email_claims(&format!("r{i}@example.com"))))
        .collect();
    let sign = |i: usize| sign_body(&tokens[i], &ClientKey::p256(), &format!("r{i}@example.com"));
    assert_eq!(ks.sign_v2(&sign(0), None).await.status, 200);
    let fetches = idp.jwks_fetches();
    drop(idp); // the IdP goes down
    let wait_for = |needle: &'static str, n: usize| {
        let ks = &ks;
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while ks.log().matches(needle).count() < n {
                assert!(Instant::now() < deadline, "no {needle:?} in:\n{}", ks.log());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    ks.signal("HUP");
    wait_for("configuration unchanged", 1).await;
    assert_eq!(ks.sign_v2(&sign(1), None).await.status, 200, "cached keys still verify");
    // A real change (another issuer added) swaps the set; the unchanged one keeps its keys.
    let path = ks.dir.path().join("keyless.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}  - {{url: \"{}\", type: email}}\n", other.url)).unwrap();
    wait_for("configuration reloaded", 1).await;
    let r = ks.sign_v2(&sign(2), None).await;
    assert_eq!(
        r.status, 200,
        "after the swap the down IdP's cached keys still verify: {}",
        r.body
    );
    assert!(fetches >= 1);
}
