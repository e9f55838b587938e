//! Key fetching against real issuers on 127.0.0.1: hanging and failing issuers are remembered and
//! refused at once, expired keys are refreshed in the background, junk meta issuers are budgeted
//! and cannot evict working tenants, reloads keep what was known, and redirects cannot downgrade.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Idp, Key, Mode, email, eventually, pattern};
use keyless_oidc::{IssuerHealth, OidcError, OidcVerifier, VerifierOptions};
use tokio::task::JoinSet;

fn opts() -> VerifierOptions {
    VerifierOptions {
        fetch_timeout: Duration::from_millis(300),
        ..VerifierOptions::default()
    }
}

fn health(v: &OidcVerifier, url: &str) -> IssuerHealth {
    v.health()
        .into_iter()
        .find(|(u, _)| u == url)
        .map(|(_, h)| h)
        .expect("issuer in health")
}

fn unavailable(r: Result<keyless_ca::token::VerifiedToken, OidcError>, issuer: &str) -> String {
    match r {
        Err(OidcError::IssuerUnavailable { issuer: i, cause }) => {
            assert_eq!(i, issuer);
            cause
        }
        other => panic!("expected IssuerUnavailable for {issuer}, got {other:?}"),
    }
}

/// Verifies `n` tokens concurrently; returns each outcome with how long it took.
async fn concurrently(
    v: &Arc<OidcVerifier>,
    tokens: Vec<String>,
) -> Vec<(Result<keyless_ca::token::VerifiedToken, OidcError>, Duration)> {
    let mut set = JoinSet::new();
    for t in tokens {
        let v = v.clone();
        set.spawn(async move {
            let start = Instant::now();
            (v.verify(&t).await, start.elapsed())
        });
    }
    set.join_all().await
}

#[tokio::test]
async fn a_hanging_issuer_costs_one_fetch_and_then_is_refused_at_once() {
    let key = Key::new("k1");
    let idp = Idp::start(&key).await;
    idp.set_mode(Mode::Hang);
    let iss = idp.issuer("/hang");
    let v = Arc::new(
        OidcVerifier::with_options(
            &[email(&iss)],
            VerifierOptions {
                max_waiters: 8,
                ..opts()
            },
        )
        .unwrap(),
    );
    let token = key.token(&iss);

    // 40 requests arrive while the first fetch hangs: one fetch, 8 wait for it, 32 are refused.
    let results = concurrently(&v, vec![token.clone(); 40]).await;
    assert_eq!(idp.discoveries("/hang"), 1, "single flight");
    let causes: Vec<String> = results.into_iter().map(|(r, _)| unavailable(r, &iss)).collect();
    let over = causes.iter().filter(|c| c.contains("already waiting")).count();
    assert_eq!(over, 32, "{causes:?}");
    assert_eq!(
        causes
            .iter()
            .filter(|c| c.contains("did not arrive within 300 ms"))
            .count(),
        8,
        "the waiters get the fetch's own outcome: {causes:?}"
    );

    // The failure is remembered: the next token is refused at once, without another fetch.
    let start = Instant::now();
    let cause = unavailable(v.verify(&token).await, &iss);
    assert!(start.elapsed() < Duration::from_millis(100), "{:?}", start.elapsed());
    assert!(cause.contains("retry in 1 s"), "{cause}");
    assert_eq!(idp.discoveries("/hang"), 1);
    match health(&v, &iss) {
        IssuerHealth::Failing(c) => assert!(c.contains("within 300 ms; retry in 1 s"), "{c}"),
        h => panic!("{h:?}"),
    }
}

#[tokio::test]
async fn the_fetch_timeout_covers_discovery_and_jwks_together() {
    let key = Key::new("k1");
    let idp = Idp::start(&key).await;
    idp.set_mode(Mode::Slow(Duration::from_millis(200)));
    let iss = idp.issuer("/slow");
    // Each document alone arrives within 300 ms, both together do not.
    let v = OidcVerifier::with_options(&[email(&iss)], opts()).unwrap();
    let start = Instant::now();
    let cause = unavailable(v.verify(&key.token(&iss)).await, &iss);
    assert!(cause.contains("within 300 ms"), "{cause}");
    assert!(start.elapsed() < Duration::from_millis(450), "{:?}", start.elapsed());
    let v = OidcVerifier::with_options(
        &[email(&iss)],
        VerifierOptions {
            fetch_timeout: Duration::from_secs(2),
            ..opts()
        },
    )
    .unwrap();
    v.verify(&key.token(&iss)).await.unwrap();
}

#[tokio::test]
async fn failures_back_off_doubling_and_success_resets_it() {
    let key = Key::new("k1");
    let idp = Idp::start(&key).await;
    idp.set_mode(Mode::NotFound);
    let iss = idp.issuer("/flaky");
    let v = OidcVerifier::with_options(
        &[email(&iss)],
        VerifierOptions {
            backoff_min: Duration::from_millis(300),
            keys_ttl: Duration::from_millis(100),
            ..opts()
        },
    )
    .unwrap();
    let token = key.token(&iss);
    assert!(unavailable(v.verify(&token).await, &iss).contains("HTTP 404"));
    assert!(unavailable(v.verify(&token).await, &iss).contains("retry in 1 s"));
    assert_eq!(idp.discoveries("/flaky"), 1, "no fetch while backing off");
    tokio::time::sleep(Duration::from_millis(350)).await;
    unavailable(v.verify(&token).await, &iss);
    assert_eq!(idp.discoveries("/flaky"), 2, "retried after 300 ms");
    // Now 600 ms.
    tokio::time::sleep(Duration::from_millis(350)).await;
    unavailable(v.verify(&token).await, &iss);
    assert_eq!(idp.discoveries("/flaky"), 2, "the back-off doubled");
    idp.set_mode(Mode::Up);
    tokio::time::sleep(Duration::from_millis(300)).await;
    v.verify(&token).await.unwrap();
    assert_eq!(idp.discoveries("/flaky"), 3);
    assert_eq!(health(&v, &iss), IssuerHealth::Ok);

    // After the success the next failure backs off by the minimum again (300 ms, not 1.2 s).
    idp.set_mode(Mode::NotFound);
    tokio::time::sleep(Duration::from_millis(150)).await; // the keys expire
    v.verify(&token).await.unwrap();
    eventually("the background refresh fails", Duration::from_secs(2), || {
        matches!(health(&v, &iss), IssuerHealth::Stale(_))
    })
    .await;
    match health(&v, &iss) {
        IssuerHealth::Stale(c) => assert!(c.contains("HTTP 404 Not Found; retry in 1 s"), "{c}"),
        h => panic!("{h:?}"),
    }
}

#[tokio::test]
async fn expired_keys_serve_while_one_background_refresh_runs() {
    let key = Key::new("k1");
    let idp = Idp::start(&key).await;
    let iss = idp.issuer("/swr");
    let v = Arc::new(
        OidcVerifier::with_options(
            &[email(&iss)],
            VerifierOptions {
                keys_ttl: Duration::from_millis(100),
                fetch_timeout: Duration::from_secs(2),
                ..opts()
            },
        )
        .unwrap(),
    );
    let token = key.token(&iss);
    v.verify(&token).await.unwrap();
    assert_eq!(idp.discoveries("/swr"), 1);

    // The IdP becomes slow and the keys expire: tokens are answered from the old keys at once.
    idp.set_mode(Mode::Slow(Duration::from_millis(300)));
    tokio::time::sleep(Duration::from_millis(150)).await;
    for (r, took) in concurrently(&v, vec![token.clone(); 10]).await {
        r.unwrap();
        assert!(took < Duration::from_millis(200), "{took:?}");
    }
    eventually("the refresh completes", Duration::from_secs(2), || {
        idp.hits("/swr/jwks") == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(350)).await; // the slow JWKS answer arrives
    assert_eq!(idp.discoveries("/swr"), 2, "one refresh for all of them");

    // The IdP goes down: expired keys keep working, health says Stale, and no fetch is made
    // while the refresh backs off.
    idp.set_mode(Mode::NotFound);
    tokio::time::sleep(Duration::from_millis(150)).await;
    v.verify(&token).await.unwrap();
    eventually("the refresh fails", Duration::from_secs(2), || {
        matches!(health(&v, &iss), IssuerHealth::Stale(_))
    })
    .await;
    v.verify(&token).await.unwrap();
    assert_eq!(idp.discoveries("/swr"), 3);
}

#[tokio::test]
async fn an_unknown_kid_waits_for_a_refresh_at_most_once_per_interval() {
    let key = Key::new("k1");
    let idp = Idp::start(&key).await;
    let iss = idp.issuer("/rotate");
    let v = OidcVerifier::with_options(&[email(&iss)], opts()).unwrap();
    v.verify(&key.token(&iss)).await.unwrap();
    let rotated = Key::new("k2");
    idp.publish(&[&key, &rotated]);
    v.verify(&rotated.token(&iss)).await.unwrap();
    assert_eq!(idp.discoveries("/rotate"), 2);
    let forged = Key::new("k3");
    match v.verify(&forged.token(&iss)).await {
        Err(OidcError::Token(keyless_ca::Error::UnknownKeyId { kid, .. })) => assert_eq!(kid, "k3"),
        other => panic!("{other:?}"),
    }
    assert_eq!(idp.discoveries("/rotate"), 2, "forged kids cannot force fetches");
}

/// 300 junk issuers under a pattern whose server answers 404: at most the budget's worth are
/// fetched, and a tenant with keys keeps verifying without a new fetch.
#[tokio::test]
async fn junk_meta_issuers_are_budgeted_and_leave_tenants_alone() {
    let key = Key::new("k1");
    let idp = Idp::start(&key).await;
    let pat = idp.issuer("/id/*");
    let v = Arc::new(OidcVerifier::with_options(&[pattern(&pat)], opts()).unwrap());
    let good = idp.issuer("/id/good");
    v.verify(&key.token(&good)).await.unwrap();

    let junk: Vec<String> = (0..300)
        .map(|i| key.token(&idp.issuer(&format!("/id/junk-{i}"))))
        .collect();
    let results = concurrently(&v, junk).await;
    let fetched = idp.discoveries_matching("junk");
    // Budget: a burst of 20 (one spent on the tenant) plus at most one refill during the test.
    assert!(fetched <= 20, "{fetched} junk fetches");
    let mut refused = 0;
    for (r, _) in results {
        match r {
            Err(OidcError::NewIssuerRefused { pattern, cause }) => {
                assert_eq!(pattern, pat);
                assert!(cause.contains("new issuers per minute"), "{cause}");
                refused += 1;
            }
            Err(OidcError::IssuerUnavailable { cause, .. }) => assert!(cause.contains("404"), "{cause}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(refused + fetched, 300);
    v.verify(&key.token(&good)).await.unwrap();
    assert_eq!(idp.discoveries("/id/good"), 1, "the tenant's keys were not evicted");
}

/// The same against a pattern whose server hangs: the junk costs at most the budget's worth of
/// fetches, each bounded by the fetch timeout, and a tenant under another pattern is unaffected.
#[tokio::test]
async fn junk_meta_issuers_on_a_hanging_server_are_budgeted() {
    let key = Key::new("k1");
    let idp = Idp::start(&key).await;
    let hanging = Idp::start(&key).await;
    hanging.set_mode(Mode::Hang);
    let v = Arc::new(
        OidcVerifier::with_options(
            &[pattern(&idp.issuer("/id/*")), pattern(&hanging.issuer("/id/*"))],
            opts(),
        )
        .unwrap(),
    );
    let good = idp.issuer("/id/good");
    v.verify(&key.token(&good)).await.unwrap();
    let junk: Vec<String> = (0..300)
        .map(|i| key.token(&hanging.issuer(&format!("/id/t{i}"))))
        .collect();
    let start = Instant::now();
    let results = concurrently(&v, junk).await;
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    assert!(results.iter().all(|(r, _)| r.is_err()));
    let fetched = hanging.discoveries_matching("/id/");
    assert!((1..=20).contains(&fetched), "{fetched} fetches");
    v.verify(&key.token(&good)).await.unwrap();
    assert_eq!(idp.discoveries("/id/good"), 1);
}

/// With the cache full, a newcomer evicts the oldest issuer without keys; when every remembered
/// issuer has keys, the newcomer is refused.
#[tokio::test]
async fn a_full_meta_cache_evicts_only_issuers_without_keys() {
    let key = Key::new("k1");
    let idp = Idp::start(&key).await;
    let pat = idp.issuer("/id/*");
    let v = OidcVerifier::with_options(
        &[pattern(&pat)],
        VerifierOptions {
            max_meta_issuers: 3,
            ..opts()
        },
    )
    .unwrap();
    let tok = |t: &str| key.token(&idp.issuer(&format!("/id/{t}")));
    v.verify(&tok("good1")).await.unwrap();
    v.verify(&tok("good2")).await.unwrap();
    assert!(v.verify(&tok("junk1")).await.is_err());
    // Full (good1, good2, junk1): junk2 takes junk1's place.
    assert!(v.verify(&tok("junk2")).await.is_err());
    // junk1 was evicted, so it is new again (and fetched again) rather than backing off.
    assert!(v.verify(&tok("junk1")).await.is_err());
    assert_eq!(idp.discoveries("/id/junk1"), 2);
    // good3 takes the place of the remaining junk issuer.
    v.verify(&tok("good3")).await.unwrap();
    match v.verify(&tok("junk3")).await {
        Err(OidcError::NewIssuerRefused { pattern, cause }) => {
            assert_eq!(pattern, pat);
            assert!(cause.contains("have keys"), "{cause}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(idp.discoveries("/id/junk3"), 0);
    for t in ["good1", "good2", "good3"] {
        v.verify(&tok(t)).await.unwrap();
        assert_eq!(idp.discoveries(&format!("/id/{t}")), 1, "{t} kept its keys");
    }
}

#[tokio::test]
async fn rebuild_keeps_the_state_of_unchanged_issuers() {
    let key = Key::new("k1");
    let idp = Idp::start(&key).await;
    let a = email(&idp.issuer("/a"));
    let failing = email(&idp.issuer("/junk"));
    let pat = pattern(&idp.issuer("/t/*"));
    let tenant = idp.issuer("/t/x");
    let list = vec![a.clone(), failing.clone(), pat.clone()];
    let v = OidcVerifier::with_options(&list, opts()).unwrap();
    v.verify(&key.token(&a.url)).await.unwrap();
    v.verify(&key.token(&tenant)).await.unwrap();
    unavailable(v.verify(&key.token(&failing.url)).await, &failing.url);
    idp.set_mode(Mode::NotFound); // the IdP is down from here on

    // Same list: keys, and the failing issuer's back-off, carry over; nothing is fetched.
    let v2 = v.rebuild(&list).unwrap();
    v2.verify(&key.token(&a.url)).await.unwrap();
    v2.verify(&key.token(&tenant)).await.unwrap();
    assert!(unavailable(v2.verify(&key.token(&failing.url)).await, &failing.url).contains("retry in"));
    assert_eq!(
        (idp.discoveries("/a"), idp.discoveries("/t/x"), idp.discoveries("/junk")),
        (1, 1, 1)
    );
    assert_eq!(health(&v2, &a.url), IssuerHealth::Ok);
    assert!(matches!(health(&v2, &failing.url), IssuerHealth::Failing(_)));

    // A changed issuer (and pattern) starts fresh: it must fetch, and the IdP is down.
    let mut a2 = a.clone();
    a2.options.extra_audiences.push("other".into());
    let mut pat2 = pat.clone();
    pat2.options.extra_audiences.push("other".into());
    let v3 = v2.rebuild(&[a2, failing.clone(), pat2]).unwrap();
    assert_eq!(health(&v3, &a.url), IssuerHealth::NotFetched);
    unavailable(v3.verify(&key.token(&a.url)).await, &a.url);
    unavailable(v3.verify(&key.token(&tenant)).await, &tenant);
    assert_eq!((idp.discoveries("/a"), idp.discoveries("/t/x")), (2, 2));
    // The old verifier (requests in flight) still has its keys.
    v.verify(&key.token(&a.url)).await.unwrap();
}

#[tokio::test]
async fn redirects_never_downgrade_https_to_http() {
    let key = Key::new("k1");
    let (tls, ca_pem) = Idp::start_tls(&key).await;
    let plain = Idp::start(&key).await;
    let port = plain.base.rsplit(':').next().unwrap();
    // Same host (127.0.0.1), https to http: refused, and the http server is never asked.
    tls.redirect("/down/jwks", &format!("http://127.0.0.1:{port}/down/jwks"));
    // Same host, https to https: followed.
    tls.redirect("/same/jwks", &format!("{}/elsewhere/jwks", tls.base));
    let with_ca = |url: String| {
        let mut c = email(&url);
        c.options.ca_cert_pem = Some(ca_pem.clone());
        c
    };
    let (down, same) = (tls.issuer("/down"), tls.issuer("/same"));
    let v = OidcVerifier::with_options(&[with_ca(down.clone()), with_ca(same.clone())], opts()).unwrap();
    v.verify(&key.token(&same)).await.unwrap();
    assert_eq!(tls.hits("/elsewhere/jwks"), 1);
    let cause = unavailable(v.verify(&key.token(&down)).await, &down);
    assert!(cause.contains("redirect refused"), "{cause}");
    assert_eq!(tls.hits("/down/jwks"), 1);
    assert_eq!(plain.hits("/down/jwks"), 0, "the downgrade was not followed");
}

#[tokio::test]
async fn redirects_stay_on_the_same_host() {
    let key = Key::new("k1");
    let idp = Idp::start(&key).await;
    let port = idp.base.rsplit(':').next().unwrap();
    // http to http on the same loopback host: followed.
    idp.redirect("/hop/jwks", &format!("{}/other/jwks", idp.base));
    // To another host name (even one resolving to the same machine): refused.
    idp.redirect("/away/jwks", &format!("http://localhost:{port}/other/jwks"));
    let (hop, away) = (idp.issuer("/hop"), idp.issuer("/away"));
    let v = OidcVerifier::with_options(&[email(&hop), email(&away)], opts()).unwrap();
    v.verify(&key.token(&hop)).await.unwrap();
    assert_eq!(idp.hits("/other/jwks"), 1);
    assert!(unavailable(v.verify(&key.token(&away)).await, &away).contains("redirect refused"));
    assert_eq!(idp.hits("/other/jwks"), 1);
}
