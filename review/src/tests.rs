//! The pages render hostile record text as text, and the server guards them with the token.

use keyless_audit::record::{CertificateFacts, Decision, Extension, Intent, Record, Rejection};
use keyless_audit::state::CheckState;

use crate::pages::{self, Overview, Params};

/// Text as a token could put it into a record: markup, both quotes, an ampersand.
const EVIL: &str = "<script>alert(\"x\" & 'y')</script>";
/// [`EVIL`] escaped.
const ESCAPED: &str = "&lt;script&gt;alert(&quot;x&quot; &amp; 'y')&lt;/script&gt;";

fn record(seq: u64, decision: Decision) -> Record {
    Record {
        seq,
        time_ms: 1_700_000_000_000 + seq * 60_000,
        request_id: format!("req-{EVIL}"),
        issuer: Some(EVIL.into()),
        subject: Some(EVIL.into()),
        claims_sha256: Some(EVIL.into()),
        key_sha256: Some(EVIL.into()),
        decision,
        rule: EVIL.into(),
        certificate: None,
        rejection: None,
        intent: None,
        intent_seq: None,
    }
}

fn issued(seq: u64, serial: &str, san: &str) -> Record {
    let ext = |oid: &str, critical| Extension {
        oid: oid.into(),
        name: EVIL.into(),
        value: EVIL.into(),
        critical,
    };
    Record {
        certificate: Some(CertificateFacts {
            serial: serial.into(),
            sha256: EVIL.into(),
            san: san.into(),
            extensions: vec![ext("1.3.6.1.4.1.57264.1.12", false), ext(EVIL, true)],
            not_before: 1_700_000_000,
            not_after: 1_700_000_600,
            sct_log_id: Some(EVIL.into()),
            sct_timestamp: Some(1_700_000_000_123),
            leaf_index: None,
            der: String::new(),
        }),
        ..record(seq, Decision::Issued)
    }
}

/// Two issued (one hostile, one plain), a refusal, an intent abandoned and one without outcome.
fn records() -> Vec<Record> {
    let intent = Intent {
        serial: "ffee".into(),
        tbs_sha256: EVIL.into(),
        san: EVIL.into(),
        not_before: 1_700_000_000,
        not_after: 1_700_000_600,
        log: EVIL.into(),
    };
    let rejection = Rejection {
        class: EVIL.into(),
        message: EVIL.into(),
    };
    vec![
        issued(0, EVIL, &format!("email:{EVIL}")),
        Record {
            issuer: Some("https://issuer.example".into()),
            ..issued(1, "0a1b", "email:alice@example.com")
        },
        Record {
            rejection: Some(rejection.clone()),
            ..record(2, Decision::Rejected)
        },
        Record {
            intent: Some(intent.clone()),
            ..record(3, Decision::Intent)
        },
        Record {
            intent: Some(intent.clone()),
            intent_seq: Some(3),
            rejection: Some(rejection),
            ..record(4, Decision::Abandoned)
        },
        Record {
            intent: Some(Intent {
                serial: "eeff".into(),
                ..intent
            }),
            ..record(5, Decision::Intent)
        },
    ]
}

fn has(html: &str, needle: &str) {
    assert!(html.contains(needle), "missing {needle:?} in\n{html}");
}

/// Nothing of EVIL got through raw: no tag, and every `<script` is the page's own.
fn no_raw(html: &str, own_scripts: usize) {
    assert!(!html.contains(EVIL), "raw text in\n{html}");
    assert!(!html.contains("<script>alert"), "raw script in\n{html}");
    assert!(!html.contains("\" & '"), "raw quote and ampersand in\n{html}");
    assert_eq!(html.matches("<script").count(), own_scripts, "{html}");
}

#[test]
fn the_index_escapes_every_record_and_query_value() {
    let records = records();
    let params = Params {
        identity: Some(EVIL.into()),
        issuer: Some(EVIL.into()),
        repository: Some(EVIL.into()),
        since: Some(EVIL.into()),
        until: Some(EVIL.into()),
    };
    let check = CheckState {
        time_ms: 1_700_000_000_000,
        ok: false,
        lines: vec![EVIL.into(), "second".into()],
    };
    let html = pages::index(&Overview {
        records: &records,
        params: &params,
        verify: Some(check),
        cross_check: None,
        ca_name: EVIL,
        index: None,
    })
    .into_string();
    no_raw(&html, 1);
    // The filter is applied (the plain certificate is left out) and echoed back escaped.
    has(&html, r#"<p class="muted" id="count">1 certificates</p>"#);
    assert_eq!(html.matches("<tr data-identity=").count(), 1, "{html}");
    for field in ["identity", "repository"] {
        has(&html, &format!(r#"name="{field}" id="{field}" value="{ESCAPED}""#));
    }
    has(&html, &format!(r#"name="since" value="{ESCAPED}""#));
    has(&html, &format!("<option selected>{ESCAPED}</option>"));
    // The row: identity attribute and cells, a link that stays on this site, the repository.
    has(
        &html,
        &format!(r#"<tr data-identity="email:{ESCAPED}"><td>2023-11-14T22:13:20.000Z</td>"#),
    );
    has(
        &html,
        &format!(r#"<td class="mono">email:{ESCAPED}</td><td>{ESCAPED}</td>"#),
    );
    has(
        &html,
        r#"<a href="/cert/%3Cscript%3Ealert%28%22x%22%20%26%20%27y%27%29%3C%2Fscript%3E">"#,
    );
    has(
        &html,
        &format!(r#"<td class="mono">{ESCAPED}</td><td class="muted">log not synced</td></tr>"#),
    );
    // Checks, the CA name, both charts and the unfinished issuances.
    has(
        &html,
        &format!(r#"<span class="bad">FINDINGS</span><br><span class="muted">{ESCAPED}<br>second</span>"#),
    );
    has(
        &html,
        "<strong>audit cross-check</strong>: <span class=\"muted\">never run</span>",
    );
    has(&html, &format!("CA chain: {ESCAPED}. No CT log synced yet."));
    has(&html, &format!("<title>{ESCAPED}: 1</title>"));
    has(&html, &format!(r#"<text x="0" y="13" font-size="12">{ESCAPED}</text>"#));
    has(&html, &format!("abandoned (intent 3): {ESCAPED}: {ESCAPED}</td>"));
    has(&html, r#"<tr data-kind="intent"><td>5</td>"#);
    for id in [
        "filters",
        "identity",
        "issuer",
        "repository",
        "apply",
        "count",
        "certs",
        "issuance-chart",
        "rejection-chart",
    ] {
        assert_eq!(html.matches(&format!(r#"id="{id}""#)).count(), 1, "{id}");
    }
    has(
        &html,
        &format!("<script>{}</script></main></body></html>", pages::SCRIPT),
    );
}

#[test]
fn the_index_without_a_filter_lists_every_issued_certificate() {
    let records = records();
    let html = pages::index(&Overview {
        records: &records,
        params: &Params::default(),
        verify: None,
        cross_check: None,
        ca_name: "chain.pem",
        index: None,
    })
    .into_string();
    no_raw(&html, 1);
    has(&html, r#"<p class="muted" id="count">2 certificates</p>"#);
    has(&html, r#"<tr data-identity="email:alice@example.com">"#);
    has(&html, r#"<a href="/cert/0a1b">0a1b</a>"#);
    has(&html, r#"<option value="">any</option><option>&lt;script"#);
    assert!(!html.contains("selected"), "{html}");
    has(
        &html,
        r#"<input name="identity" id="identity" value="" placeholder="*@example.com">"#,
    );
}

#[test]
fn the_detail_pages_escape_every_field() {
    let records = records();
    let r = &records[0];
    let Some(c) = &r.certificate else {
        panic!("issued without a certificate")
    };
    let html = pages::certificate(r, c, None).into_string();
    no_raw(&html, 0);
    has(&html, &format!("<title>Certificate {ESCAPED}</title>"));
    has(
        &html,
        &format!(r#"<h2>Certificate <span class="mono" id="serial">{ESCAPED}</span></h2>"#),
    );
    has(&html, &format!(r#"<td class="mono" id="san">email:{ESCAPED}</td>"#));
    has(&html, &format!(r#"<td id="issuer">{ESCAPED}</td>"#));
    has(&html, &format!(r#"<td class="mono">req-{ESCAPED} · record 0</td>"#));
    has(
        &html,
        &format!(r#"<td class="mono" id="sct">log {ESCAPED} at 2023-11-14T22:13:20.123Z (1700000000123 ms)</td>"#),
    );
    has(&html, r#"<td class="muted" id="inclusion">log not synced</td>"#);
    has(
        &html,
        &format!(
            r#"<tr data-oid="1.3.6.1.4.1.57264.1.12"><td class="mono">1.3.6.1.4.1.57264.1.12</td><td>{ESCAPED}</td><td class="mono">{ESCAPED}</td><td></td></tr>"#
        ),
    );
    has(
        &html,
        &format!(
            r#"<tr data-oid="{ESCAPED}"><td class="mono">{ESCAPED}</td><td>{ESCAPED}</td><td class="mono">{ESCAPED}</td><td>yes</td></tr>"#
        ),
    );
    assert_eq!(html.matches("<tr data-oid=").count(), 2, "{html}");

    let Some(intent) = pages::intent(&records, "ffee") else {
        panic!("no intent page")
    };
    let html = intent.into_string();
    no_raw(&html, 0);
    has(&html, r#"<span class="mono" id="serial">ffee</span>"#);
    has(&html, &format!(r#"<td class="mono" id="san">{ESCAPED}</td>"#));
    has(
        &html,
        &format!(r#"<td id="outcome">abandoned (record 4): {ESCAPED}: {ESCAPED}</td>"#),
    );
    let Some(open) = pages::intent(&records, "eeff") else {
        panic!("no intent page")
    };
    has(
        &open.into_string(),
        r#"<td id="outcome">no outcome recorded (in flight, or interrupted)</td>"#,
    );
    assert!(
        pages::intent(&records, "0a1b").is_none(),
        "an issued serial is not an intent"
    );

    let html = pages::not_found(EVIL).into_string();
    no_raw(&html, 0);
    has(&html, &format!("<p>No certificate with serial {ESCAPED}.</p>"));
}

#[test]
fn the_constants_cannot_end_their_elements_early() {
    assert!(!pages::SCRIPT.to_ascii_lowercase().contains("</script"));
    assert!(!pages::STYLE.to_ascii_lowercase().contains("</style"));
}

/// The records above in a real issuance record, served on 127.0.0.1 with a token.
#[tokio::test]
async fn the_server_wants_the_token_and_serves_escaped_pages() {
    use std::sync::Arc;

    use keyless_audit::store::{AuditLog, AuditOptions};
    use reqwest::StatusCode;
    use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};

    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), AuditOptions::default()).unwrap();
    for r in records() {
        log.append_durable(r).await.unwrap();
    }
    drop(log);
    let serve = |dir: std::path::PathBuf, token: Option<&str>| {
        let page = Arc::new(crate::Page {
            source: keyless_audit::store::RecordSource::Sqlite(dir.clone()),
            dir,
            token: token.map(String::from),
            ca_name: "chain.pem".into(),
        });
        async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, crate::app(page)).await });
            base
        }
    };
    let base = serve(dir.path().into(), Some("s3cret")).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str| client.get(format!("{base}{path}"));

    for refused in [
        get("/"),
        get("/").bearer_auth("wrong"),
        get("/?token=wrong"),
        get("/").header(COOKIE, "keyless_review=s3cre"),
    ] {
        let resp = refused.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.text().await.unwrap(), "a bearer token is required\n");
    }

    let resp = get("/").bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    let html = resp.text().await.unwrap();
    no_raw(&html, 1);
    has(&html, r#"<p class="muted" id="count">2 certificates</p>"#);
    has(&html, &format!(r#"<tr data-identity="email:{ESCAPED}">"#));

    // Visiting once with ?token= sets the cookie and drops the token from the address.
    let evil_path = "/cert/%3Cscript%3Ealert%28%22x%22%20%26%20%27y%27%29%3C%2Fscript%3E";
    let resp = get(&format!("{evil_path}?token=s3cret")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], evil_path);
    assert_eq!(
        resp.headers()[SET_COOKIE],
        "keyless_review=s3cret; HttpOnly; SameSite=Strict; Path=/"
    );
    let resp = get(evil_path)
        .header(COOKIE, "other=1; keyless_review=s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    no_raw(&html, 0);
    has(&html, &format!(r#"<td class="mono" id="san">email:{ESCAPED}</td>"#));

    let resp = get("/cert/%3Cb%3E").bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    has(
        &resp.text().await.unwrap(),
        "<p>No certificate with serial &lt;b&gt;.</p>",
    );

    // Without a record the page says so, and without a token configured it asks for none.
    let empty = tempfile::tempdir().unwrap();
    let base = serve(empty.path().into(), None).await;
    let resp = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    has(&resp.text().await.unwrap(), "no issuance record at ");
}
