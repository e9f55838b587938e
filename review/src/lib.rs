//! `keyless audit serve`: a read-only review page over the issuance record and the synced CT log
//! index. Server-rendered HTML, inline SVG charts and a few lines of JavaScript; nothing is
//! fetched from elsewhere, so it works air-gapped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use keyless_audit::index::{IndexedCert, LogIndex};
use keyless_audit::query::{Filter, rfc3339, select};
use keyless_audit::record::{Decision, Record};
use keyless_audit::state::{self, CheckState};
use keyless_audit::store::read_records;
use keyless_config::Config;
use serde::Deserialize;

struct Page {
    dir: PathBuf,
    token: Option<String>,
    ca_name: String,
}

/// Serves the page on `listen` until `shutdown` completes.
pub async fn serve(
    config: Config,
    dir: PathBuf,
    listen: SocketAddr,
    token: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let ca_name = config.ca.chain_path().display().to_string();
    let page = Arc::new(Page { dir, token, ca_name });
    let app = Router::new()
        .route("/", get(index))
        .route("/cert/{serial}", get(detail))
        .layer(axum::middleware::from_fn_with_state(page.clone(), authorize))
        .with_state(page);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    println!("keyless: review page on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// With a token configured, every request needs it: `Authorization: Bearer`, or the cookie set
/// by visiting once with `?token=`.
async fn authorize(State(page): State<Arc<Page>>, req: Request, next: Next) -> Response {
    let Some(want) = &page.token else {
        return next.run(req).await;
    };
    let same = |got: &str| {
        // Constant time over the expected length.
        got.len() == want.len() && got.bytes().zip(want.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    };
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("keyless_review="));
    if bearer.is_some_and(same) || cookie.is_some_and(same) {
        return next.run(req).await;
    }
    let query = req.uri().query().unwrap_or_default();
    if let Some(t) = query.split('&').find_map(|kv| kv.strip_prefix("token="))
        && same(t)
    {
        let mut resp = Redirect::to(req.uri().path()).into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("keyless_review={t}; HttpOnly; SameSite=Strict; Path=/")) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
        return resp;
    }
    (StatusCode::UNAUTHORIZED, "a bearer token is required\n").into_response()
}

/// HTML-escapes text (identities come from tokens: never trust them into markup).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:12px 24px}header a{color:#fff;text-decoration:none}
main{padding:16px 24px;max-width:1400px}section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:12px 16px;margin:0 0 16px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceff3;vertical-align:top}
th{background:#f0f2f5}td.mono,span.mono{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}
.ok{color:#11703a}.bad{color:#b3261e;font-weight:600}.muted{color:#667}
form label{margin-right:12px}input{padding:3px 6px}.charts{display:flex;gap:16px;flex-wrap:wrap}";

fn layout(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>{}</title><style>{STYLE}</style></head>\
         <body><header><a href=\"/\"><strong>Keyless CA</strong> · issuance review</a></header><main>{body}</main></body></html>",
        esc(title)
    ))
}

fn check_state(name: &str, s: Option<CheckState>) -> String {
    match s {
        None => format!("<li><strong>{name}</strong>: <span class=muted>never run</span></li>"),
        Some(s) => format!(
            "<li><strong>{name}</strong> at {}: <span class={}>{}</span><br><span class=muted>{}</span></li>",
            esc(&rfc3339(s.time_ms)),
            if s.ok { "ok" } else { "bad" },
            if s.ok { "clean" } else { "FINDINGS" },
            s.lines.iter().map(|l| esc(l)).collect::<Vec<_>>().join("<br>")
        ),
    }
}

#[derive(Debug, Default, Deserialize)]
struct Params {
    identity: Option<String>,
    issuer: Option<String>,
    repository: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_ref().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn parse_time(v: &Option<String>) -> Option<u64> {
    let s = nonempty(v)?;
    // <input type=datetime-local> sends `YYYY-MM-DDTHH:MM`; RFC 3339 works too.
    let full = if s.len() == 16 { format!("{s}:00Z") } else { s };
    time::OffsetDateTime::parse(&full, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000).max(0) as u64)
}

/// Where a certificate stands in the synced CT logs.
fn inclusion(index: Option<&LogIndex>, r: &Record) -> (String, &'static str) {
    let Some(c) = &r.certificate else {
        return (String::new(), "muted");
    };
    if c.sct_log_id.is_none() {
        return ("not logged (CT disabled)".into(), "muted");
    }
    let Some(index) = index else {
        return ("log not synced".into(), "muted");
    };
    match index.find_serial(&c.serial) {
        Ok(found) if !found.is_empty() => {
            let e = &found[0];
            let size = index
                .verified_sth(&e.log_id)
                .ok()
                .flatten()
                .map(|s| s.tree_size)
                .unwrap_or(0);
            (
                format!("included: leaf {} of a verified tree of {size}", e.leaf_index),
                "ok",
            )
        }
        Ok(_) => {
            // As `audit cross-check` judges it: only a tree head well past the SCT must hold it.
            let synced = c
                .sct_log_id
                .as_deref()
                .and_then(|id| index.verified_sth(id).ok().flatten());
            let logged_at = c.sct_timestamp.unwrap_or_else(|| c.not_before.max(0) as u64 * 1000);
            match synced {
                None => ("its log is not synced".into(), "muted"),
                Some(s) if s.timestamp <= logged_at.saturating_add(keyless_audit::crosscheck::GRACE_MS) => {
                    ("not yet in the synced tree head".into(), "muted")
                }
                Some(_) => ("not in the synced log".into(), "bad"),
            }
        }
        Err(_) => ("index unreadable".into(), "bad"),
    }
}

fn open_index(page: &Page) -> Option<LogIndex> {
    let idx = LogIndex::open(&page.dir).ok()?;
    (!idx.logs().ok()?.is_empty()).then_some(idx)
}

async fn index(State(page): State<Arc<Page>>, Query(p): Query<Params>) -> Response {
    let records = match read_records(&page.dir) {
        Ok(r) => r,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, layout("error", &esc(&e.to_string()))).into_response(),
    };
    let filter = Filter {
        identity: nonempty(&p.identity),
        issuer: nonempty(&p.issuer),
        repository: nonempty(&p.repository),
        since_ms: parse_time(&p.since),
        until_ms: parse_time(&p.until),
        ..Filter::default()
    };
    let issued = select(&records, &filter);
    let idx = open_index(&page);
    let mut body = String::new();
    let _ = write!(
        body,
        "<section><h2>Checks</h2><ul>{}{}</ul><p class=muted>Record: {} records ({} issued, {} refused, {} intents, {} abandoned). CA chain: {}.{}</p></section>",
        check_state("audit verify", state::load(&page.dir, "verify")),
        check_state("audit cross-check", state::load(&page.dir, "cross-check")),
        records.len(),
        count(&records, Decision::Issued),
        count(&records, Decision::Rejected),
        count(&records, Decision::Intent),
        count(&records, Decision::Abandoned),
        esc(&page.ca_name),
        match idx.as_ref().and_then(|i| i.logs().ok()) {
            Some(logs) => logs
                .iter()
                .map(|l| format!(
                    " Log {} synced to {} entries{} at {}.",
                    esc(&l.url),
                    l.tree_size,
                    if l.signed_size > l.tree_size {
                        format!(" of {} (sync in progress)", l.signed_size)
                    } else {
                        String::new()
                    },
                    esc(&rfc3339(l.verified_at))
                ))
                .collect::<String>(),
            None => " No CT log synced yet.".into(),
        }
    );
    let _ = write!(
        body,
        "<section class=charts><div><h3>Issued over time, by issuer</h3>{}</div><div><h3>Refusals by reason</h3>{}</div></section>",
        issuance_chart(&records),
        rejection_chart(&records)
    );
    let issuers: std::collections::BTreeSet<&str> = records.iter().filter_map(|r| r.issuer.as_deref()).collect();
    let v = |o: &Option<String>| esc(o.as_deref().unwrap_or_default());
    let _ = write!(
        body,
        "<section><h2>Issued certificates</h2><form id=filters method=get>\
         <label>Identity <input name=identity id=identity value=\"{}\" placeholder=\"*@example.com\"></label>\
         <label>Issuer <select name=issuer id=issuer><option value=\"\">any</option>{}</select></label>\
         <label>Repository <input name=repository id=repository value=\"{}\" placeholder=\"https://github.com/org/*\"></label>\
         <label>From <input type=datetime-local name=since value=\"{}\"></label>\
         <label>To <input type=datetime-local name=until value=\"{}\"></label>\
         <button type=submit id=apply>Filter</button></form>\
         <p class=muted id=count>{} certificates</p>\
         <table id=certs><thead><tr><th>Issued</th><th>Identity</th><th>Issuer</th><th>Serial</th><th>Repository</th><th>CT log</th></tr></thead><tbody>",
        v(&p.identity),
        issuers
            .iter()
            .map(|i| format!(
                "<option{}>{}</option>",
                if p.issuer.as_deref() == Some(i) {
                    " selected"
                } else {
                    ""
                },
                esc(i)
            ))
            .collect::<String>(),
        v(&p.repository),
        v(&p.since),
        v(&p.until),
        issued.len()
    );
    for r in &issued {
        let Some(c) = &r.certificate else { continue };
        let (status, class) = inclusion(idx.as_ref(), r);
        let _ = write!(
            body,
            "<tr data-identity=\"{}\"><td>{}</td><td class=mono>{}</td><td>{}</td><td class=mono><a href=\"/cert/{}\">{}</a></td><td class=mono>{}</td><td class={class}>{}</td></tr>",
            esc(&c.san),
            esc(&rfc3339(r.time_ms)),
            esc(&c.san),
            esc(r.issuer.as_deref().unwrap_or_default()),
            esc(&c.serial),
            esc(&c.serial),
            esc(r.extension("1.3.6.1.4.1.57264.1.12").unwrap_or_default()),
            esc(&status)
        );
    }
    body.push_str("</tbody></table></section>");
    body.push_str(&unfinished_section(&records));
    // Narrow the rows while typing an identity; the form still filters on the server.
    body.push_str(
        "<script>(function(){var box=document.getElementById('identity');var rows=document.querySelectorAll('#certs tbody tr');\
         function glob(p){return new RegExp('^(.*:)?'+p.replace(/[.+^${}()|[\\]\\\\]/g,'\\\\$&').replace(/\\*/g,'.*').replace(/\\?/g,'.')+'$');}\
         box.addEventListener('input',function(){var re=box.value?glob(box.value):null;var n=0;rows.forEach(function(r){var show=!re||re.test(r.dataset.identity);r.style.display=show?'':'none';if(show)n++;});\
         document.getElementById('count').textContent=n+' certificates';});})();</script>",
    );
    layout("Issuance review", &body).into_response()
}

fn count(records: &[Record], decision: Decision) -> usize {
    records.iter().filter(|r| r.decision == decision).count()
}

/// Issuances announced by an `intent` record that were not issued: `abandoned` ones with why,
/// and intents with no outcome yet (in flight, or interrupted by a crash).
fn unfinished_section(records: &[Record]) -> String {
    let closed: std::collections::HashSet<u64> = records
        .iter()
        .filter(|r| matches!(r.decision, Decision::Issued | Decision::Abandoned))
        .filter_map(|r| r.intent_seq)
        .collect();
    let rows: Vec<&Record> = records
        .iter()
        .filter(|r| r.decision == Decision::Abandoned || (r.decision == Decision::Intent && !closed.contains(&r.seq)))
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "<section><h2>Unfinished issuances</h2><p class=muted>Precertificates announced to a CT log by an intent record but not issued. They may be in the log; `audit cross-check` lists them apart from its findings.</p>\
         <table id=unfinished><thead><tr><th>Record</th><th>Kind</th><th>Time</th><th>Identity</th><th>Serial</th><th>Log</th><th>Outcome</th></tr></thead><tbody>",
    );
    for r in rows {
        let outcome = match (&r.decision, &r.rejection) {
            (Decision::Abandoned, Some(j)) => format!(
                "abandoned{}: {}: {}",
                r.intent_seq.map(|i| format!(" (intent {i})")).unwrap_or_default(),
                j.class,
                j.message
            ),
            (Decision::Abandoned, None) => "abandoned".into(),
            _ => "no outcome recorded (in flight, or interrupted)".into(),
        };
        let _ = write!(
            out,
            "<tr data-kind=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td class=mono>{}</td><td class=mono>{}</td><td class=mono>{}</td><td>{}</td></tr>",
            r.decision.as_str(),
            r.seq,
            r.decision.as_str(),
            esc(&rfc3339(r.time_ms)),
            esc(r.san().or(r.subject.as_deref()).unwrap_or_default()),
            esc(r.serial().unwrap_or_default()),
            esc(r.intent.as_ref().map(|i| i.log.as_str()).unwrap_or_default()),
            esc(&outcome)
        );
    }
    out.push_str("</tbody></table></section>");
    out
}

const PALETTE: [&str; 6] = ["#3b6fd8", "#d8833b", "#2e9e6a", "#a24fc9", "#c93b55", "#6b7280"];

/// Stacked bars of issuance per time bucket, one colour per issuer.
fn issuance_chart(records: &[Record]) -> String {
    let issued: Vec<&Record> = records.iter().filter(|r| r.decision == Decision::Issued).collect();
    if issued.is_empty() {
        return "<p class=muted>nothing issued yet</p>".into();
    }
    let (lo, hi) = issued
        .iter()
        .fold((u64::MAX, 0), |(lo, hi), r| (lo.min(r.time_ms), hi.max(r.time_ms)));
    let span = hi - lo;
    let bucket = [60_000u64, 3_600_000, 86_400_000]
        .into_iter()
        .find(|b| span / b < 48)
        .unwrap_or(86_400_000 * 7);
    let first = lo / bucket;
    // At least a dozen bars' width, so one busy minute does not fill the whole chart.
    let n = ((hi / bucket - first + 1) as usize).max(12);
    let issuers: Vec<String> = issued
        .iter()
        .filter_map(|r| r.issuer.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut counts = vec![vec![0u32; issuers.len()]; n];
    for r in &issued {
        let b = (r.time_ms / bucket - first) as usize;
        if let Some(i) = issuers.iter().position(|x| Some(x) == r.issuer.as_ref()) {
            counts[b][i] += 1;
        }
    }
    let max = counts.iter().map(|c| c.iter().sum::<u32>()).max().unwrap_or(1).max(1);
    let (w, h) = (480.0, 160.0);
    let bw = w / n as f64;
    let mut svg = format!(
        "<svg id=issuance-chart width={w} height={} role=img aria-label=\"issuance over time\">",
        h + 20.0
    );
    for (b, row) in counts.iter().enumerate() {
        let mut y = h;
        for (i, &c) in row.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let bh = h * c as f64 / max as f64;
            y -= bh;
            let _ = write!(
                svg,
                "<rect x={:.1} y={y:.1} width={:.1} height={bh:.1} fill=\"{}\"><title>{}: {c}</title></rect>",
                b as f64 * bw + 1.0,
                (bw - 2.0).max(1.0),
                PALETTE[i % PALETTE.len()],
                esc(&issuers[i])
            );
        }
    }
    let _ = write!(
        svg,
        "<text x=0 y={} font-size=11>{}</text><text x={w} y={} font-size=11 text-anchor=end>max {max} per {} min</text></svg>",
        h + 14.0,
        esc(&rfc3339(first * bucket)),
        h + 14.0,
        bucket / 60_000
    );
    let legend: String = issuers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "<div><span style=\"color:{}\">■</span> {}</div>",
                PALETTE[i % PALETTE.len()],
                esc(s)
            )
        })
        .collect();
    svg + &legend
}

/// Horizontal bars of refusals per reason class.
fn rejection_chart(records: &[Record]) -> String {
    let mut by: BTreeMap<&str, u32> = BTreeMap::new();
    for r in records.iter().filter(|r| r.decision == Decision::Rejected) {
        if let Some(j) = &r.rejection {
            *by.entry(j.class.as_str()).or_default() += 1;
        }
    }
    if by.is_empty() {
        return "<p class=muted>no refusals</p>".into();
    }
    let max = *by.values().max().unwrap_or(&1);
    let mut svg = format!(
        "<svg id=rejection-chart width=360 height={} role=img aria-label=\"refusals by reason\">",
        by.len() * 22
    );
    for (i, (class, n)) in by.iter().enumerate() {
        let y = i * 22;
        let _ = write!(
            svg,
            "<text x=0 y={} font-size=12>{}</text><rect x=90 y={} width={:.1} height=16 fill=\"#c93b55\"></rect><text x={:.1} y={} font-size=12>{n}</text>",
            y + 13,
            esc(class),
            y + 2,
            220.0 * *n as f64 / max as f64,
            95.0 + 220.0 * *n as f64 / max as f64,
            y + 13
        );
    }
    svg + "</svg>"
}

/// The page of a serial that was announced (intent) but never issued.
fn intent_detail(records: &[Record], serial: &str) -> Option<Response> {
    let intent = records
        .iter()
        .find(|r| r.decision == Decision::Intent && r.intent.as_ref().is_some_and(|i| i.serial == serial))?;
    let i = intent.intent.as_ref()?;
    let outcome = records
        .iter()
        .find(|r| r.decision == Decision::Abandoned && r.intent_seq == Some(intent.seq));
    let outcome = match outcome.and_then(|o| o.rejection.as_ref().map(|j| (o.seq, j))) {
        Some((seq, j)) => format!("abandoned (record {seq}): {}: {}", j.class, j.message),
        None => "no outcome recorded (in flight, or interrupted)".into(),
    };
    let body = format!(
        "<section><h2>Intended certificate <span class=mono id=serial>{}</span></h2><table id=facts>\
         <tr><th>Kind</th><td id=kind>intent</td></tr>\
         <tr><th>Identity (SAN)</th><td class=mono id=san>{}</td></tr>\
         <tr><th>Issuer</th><td id=issuer>{}</td></tr>\
         <tr><th>Valid</th><td>{} to {}</td></tr>\
         <tr><th>CT log</th><td class=mono>{}</td></tr>\
         <tr><th>TBS SHA-256</th><td class=mono>{}</td></tr>\
         <tr><th>Request</th><td class=mono>{} · record {}</td></tr>\
         <tr><th>Outcome</th><td id=outcome>{}</td></tr></table></section>",
        esc(&i.serial),
        esc(&i.san),
        esc(intent.issuer.as_deref().unwrap_or_default()),
        esc(&rfc3339(i.not_before.max(0) as u64 * 1000)),
        esc(&rfc3339(i.not_after.max(0) as u64 * 1000)),
        esc(&i.log),
        esc(&i.tbs_sha256),
        esc(&intent.request_id),
        intent.seq,
        esc(&outcome)
    );
    Some(layout(&format!("Intended certificate {}", i.serial), &body).into_response())
}

async fn detail(State(page): State<Arc<Page>>, UrlPath(serial): UrlPath<String>) -> Response {
    let records = match read_records(&page.dir) {
        Ok(r) => r,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, layout("error", &esc(&e.to_string()))).into_response(),
    };
    let Some(r) = records
        .iter()
        .find(|r| r.certificate.as_ref().is_some_and(|c| c.serial == serial))
    else {
        if let Some(page) = intent_detail(&records, &serial) {
            return page;
        }
        return (
            StatusCode::NOT_FOUND,
            layout(
                "not found",
                &format!("<p>No certificate with serial {}.</p>", esc(&serial)),
            ),
        )
            .into_response();
    };
    let Some(c) = &r.certificate else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let idx = open_index(&page);
    let (status, class) = inclusion(idx.as_ref(), r);
    let logged: Vec<IndexedCert> = idx
        .as_ref()
        .and_then(|i| i.find_serial(&c.serial).ok())
        .unwrap_or_default();
    let mut body = format!(
        "<section><h2>Certificate <span class=mono id=serial>{}</span></h2><table id=facts>\
         <tr><th>Identity (SAN)</th><td class=mono id=san>{}</td></tr>\
         <tr><th>Issuer</th><td id=issuer>{}</td></tr>\
         <tr><th>Valid</th><td>{} to {}</td></tr>\
         <tr><th>Decided by</th><td>{}</td></tr>\
         <tr><th>Request</th><td class=mono>{} · record {}{}</td></tr>\
         <tr><th>Key (SHA-256 of SPKI)</th><td class=mono>{}</td></tr>\
         <tr><th>Token claims (SHA-256)</th><td class=mono>{}</td></tr>\
         <tr><th>Certificate SHA-256</th><td class=mono>{}</td></tr>\
         <tr><th>SCT</th><td class=mono id=sct>{}</td></tr>\
         <tr><th>Inclusion</th><td class={class} id=inclusion>{}</td></tr></table></section>",
        esc(&c.serial),
        esc(&c.san),
        esc(r.issuer.as_deref().unwrap_or_default()),
        esc(&rfc3339(c.not_before.max(0) as u64 * 1000)),
        esc(&rfc3339(c.not_after.max(0) as u64 * 1000)),
        esc(&r.rule),
        esc(&r.request_id),
        r.seq,
        r.intent_seq
            .map(|i| format!(" · intent record {i}"))
            .unwrap_or_default(),
        esc(r.key_sha256.as_deref().unwrap_or("-")),
        esc(r.claims_sha256.as_deref().unwrap_or("-")),
        esc(&c.sha256),
        match (&c.sct_log_id, c.sct_timestamp) {
            (Some(id), Some(t)) => format!("log {} at {} ({t} ms)", esc(id), esc(&rfc3339(t))),
            _ => "none (CT disabled)".into(),
        },
        esc(&format!(
            "{status}{}",
            logged
                .first()
                .map(|e| format!(" (log entry timestamp {})", rfc3339(e.timestamp)))
                .unwrap_or_default()
        ))
    );
    body.push_str("<section><h2>Extensions</h2><table id=extensions><thead><tr><th>OID</th><th>Name</th><th>Value</th><th>Critical</th></tr></thead><tbody>");
    for e in &c.extensions {
        let _ = write!(
            body,
            "<tr data-oid=\"{}\"><td class=mono>{}</td><td>{}</td><td class=mono>{}</td><td>{}</td></tr>",
            esc(&e.oid),
            esc(&e.oid),
            esc(&e.name),
            esc(&e.value),
            if e.critical { "yes" } else { "" }
        );
    }
    body.push_str("</tbody></table></section>");
    layout(&format!("Certificate {}", c.serial), &body).into_response()
}
