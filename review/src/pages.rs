//! The pages themselves, as `maud` templates: every value from the record, the index or the
//! request goes through `( )` and is escaped; the only unescaped text is [`STYLE`] and
//! [`SCRIPT`], constants written here.

use keyless_audit::index::{IndexedCert, LogIndex};
use keyless_audit::query::{Filter, rfc3339, select};
use keyless_audit::record::{CertificateFacts, Decision, Record};
use keyless_audit::state::CheckState;
use maud::{DOCTYPE, Markup, PreEscaped, Render, html};
use serde::Deserialize;

use crate::{charts, unfinished};

/// The Source Repository URI extension, shown in the table and filtered on.
const REPOSITORY_OID: &str = "1.3.6.1.4.1.57264.1.12";

/// Inside `<style>`, a raw-text element: escaping would corrupt it, and it holds no data.
pub(crate) const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:12px 24px}header a{color:#fff;text-decoration:none}
main{padding:16px 24px;max-width:1400px}section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:12px 16px;margin:0 0 16px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceff3;vertical-align:top}
th{background:#f0f2f5}td.mono,span.mono{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}
.ok{color:#11703a}.bad{color:#b3261e;font-weight:600}.muted{color:#667}
form label{margin-right:12px}input{padding:3px 6px}.charts{display:flex;gap:16px;flex-wrap:wrap}";

/// Narrows the rows while typing an identity (the form still filters on the server). Inside
/// `<script>`, a raw-text element: it reads identities from the DOM (`data-identity`, already
/// escaped there) and never writes HTML.
pub(crate) const SCRIPT: &str = "(function(){var box=document.getElementById('identity');var rows=document.querySelectorAll('#certs tbody tr');\
     function glob(p){return new RegExp('^(.*:)?'+p.replace(/[.+^${}()|[\\]\\\\]/g,'\\\\$&').replace(/\\*/g,'.*').replace(/\\?/g,'.')+'$');}\
     box.addEventListener('input',function(){var re=box.value?glob(box.value):null;var n=0;rows.forEach(function(r){var show=!re||re.test(r.dataset.identity);r.style.display=show?'':'none';if(show)n++;});\
     document.getElementById('count').textContent=n+' certificates';});})();";

/// The page frame: title, stylesheet, header.
pub(crate) fn layout(title: impl Render, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) }
                // A constant of ours, not data: see STYLE.
                style { (PreEscaped(STYLE)) }
            }
            body {
                header { a href="/" { strong { "Keyless CA" } " · issuance review" } }
                main { (body) }
            }
        }
    }
}

/// The query string of the index page: the filter form's fields.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Params {
    pub(crate) identity: Option<String>,
    pub(crate) issuer: Option<String>,
    pub(crate) repository: Option<String>,
    pub(crate) since: Option<String>,
    pub(crate) until: Option<String>,
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

/// RFC 3339 of a certificate time (seconds; negative ones shown as the epoch).
fn at_secs(secs: i64) -> String {
    rfc3339((secs.max(0) as u64).saturating_mul(1000))
}

/// What the index page shows, gathered by the handler.
pub(crate) struct Overview<'a> {
    pub(crate) records: &'a [Record],
    pub(crate) params: &'a Params,
    pub(crate) verify: Option<CheckState>,
    pub(crate) cross_check: Option<CheckState>,
    pub(crate) ca_name: &'a str,
    /// The synced CT log index, when some log was synced.
    pub(crate) index: Option<&'a LogIndex>,
}

fn check_state(name: &str, s: Option<&CheckState>) -> Markup {
    html! {
        @match s {
            None => li { strong { (name) } ": " span.muted { "never run" } },
            Some(s) => li {
                strong { (name) } " at " (rfc3339(s.time_ms)) ": "
                span class=(if s.ok { "ok" } else { "bad" }) { (if s.ok { "clean" } else { "FINDINGS" }) }
                br;
                span.muted {
                    @for (i, line) in s.lines.iter().enumerate() {
                        @if i > 0 { br; }
                        (line)
                    }
                }
            },
        }
    }
}

fn count(records: &[Record], decision: Decision) -> usize {
    records.iter().filter(|r| r.decision == decision).count()
}

/// The index: checks, charts, the filterable table of issued certificates, unfinished issuances.
pub(crate) fn index(o: &Overview<'_>) -> Markup {
    let (records, p) = (o.records, o.params);
    let filter = Filter {
        identity: nonempty(&p.identity),
        issuer: nonempty(&p.issuer),
        repository: nonempty(&p.repository),
        since_ms: parse_time(&p.since),
        until_ms: parse_time(&p.until),
        ..Filter::default()
    };
    let issued = select(records, &filter);
    let issuers: std::collections::BTreeSet<&str> = records.iter().filter_map(|r| r.issuer.as_deref()).collect();
    let logs = o.index.and_then(|i| i.logs().ok()).filter(|l| !l.is_empty());
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    let body = html! {
        section {
            h2 { "Checks" }
            ul {
                (check_state("audit verify", o.verify.as_ref()))
                (check_state("audit cross-check", o.cross_check.as_ref()))
            }
            p.muted {
                "Record: " (records.len()) " records (" (count(records, Decision::Issued)) " issued, "
                (count(records, Decision::Rejected)) " refused, " (count(records, Decision::Intent)) " intents, "
                (count(records, Decision::Abandoned)) " abandoned). CA chain: " (o.ca_name) "."
                @match &logs {
                    Some(logs) => {
                        @for l in logs {
                            " Log " (l.url) " synced to " (l.tree_size) " entries"
                            @if l.signed_size > l.tree_size { " of " (l.signed_size) " (sync in progress)" }
                            " at " (rfc3339(l.verified_at)) "."
                        }
                    }
                    None => " No CT log synced yet.",
                }
            }
        }
        section.charts {
            div { h3 { "Issued over time, by issuer" } (charts::issuance(records)) }
            div { h3 { "Refusals by reason" } (charts::rejections(records)) }
        }
        section {
            h2 { "Issued certificates" }
            form id="filters" method="get" {
                label { "Identity " input name="identity" id="identity" value=(v(&p.identity)) placeholder="*@example.com"; }
                label {
                    "Issuer "
                    select name="issuer" id="issuer" {
                        option value="" { "any" }
                        @for i in &issuers {
                            option selected[p.issuer.as_deref() == Some(*i)] { (i) }
                        }
                    }
                }
                label {
                    "Repository "
                    input name="repository" id="repository" value=(v(&p.repository)) placeholder="https://github.com/org/*";
                }
                label { "From " input type="datetime-local" name="since" value=(v(&p.since)); }
                label { "To " input type="datetime-local" name="until" value=(v(&p.until)); }
                button type="submit" id="apply" { "Filter" }
            }
            p.muted id="count" { (issued.len()) " certificates" }
            table id="certs" {
                thead { tr {
                    th { "Issued" } th { "Identity" } th { "Issuer" } th { "Serial" } th { "Repository" } th { "CT log" }
                } }
                tbody {
                    @for (r, c) in issued.iter().filter_map(|r| Some((r, r.certificate.as_ref()?))) {
                        @let (status, class) = inclusion(o.index, r);
                        tr data-identity=(c.san) {
                            td { (rfc3339(r.time_ms)) }
                            td.mono { (c.san) }
                            td { (r.issuer.as_deref().unwrap_or_default()) }
                            td.mono { a href={ "/cert/" (path_segment(&c.serial)) } { (c.serial) } }
                            td.mono { (r.extension(REPOSITORY_OID).unwrap_or_default()) }
                            td class=(class) { (status) }
                        }
                    }
                }
            }
        }
        (unfinished::section(records))
        // A constant of ours, not data: see SCRIPT.
        script { (PreEscaped(SCRIPT)) }
    };
    layout("Issuance review", body)
}

/// The page of an issued certificate `c` of record `r`.
pub(crate) fn certificate(r: &Record, c: &CertificateFacts, index: Option<&LogIndex>) -> Markup {
    let (status, class) = inclusion(index, r);
    let logged: Vec<IndexedCert> = index.and_then(|i| i.find_serial(&c.serial).ok()).unwrap_or_default();
    let body = html! {
        section {
            h2 { "Certificate " span.mono id="serial" { (c.serial) } }
            table id="facts" {
                tr { th { "Identity (SAN)" } td.mono id="san" { (c.san) } }
                tr { th { "Issuer" } td id="issuer" { (r.issuer.as_deref().unwrap_or_default()) } }
                tr { th { "Valid" } td { (at_secs(c.not_before)) " to " (at_secs(c.not_after)) } }
                tr { th { "Decided by" } td { (r.rule) } }
                tr {
                    th { "Request" }
                    td.mono {
                        (r.request_id) " · record " (r.seq)
                        @if let Some(i) = r.intent_seq { " · intent record " (i) }
                    }
                }
                tr { th { "Key (SHA-256 of SPKI)" } td.mono { (r.key_sha256.as_deref().unwrap_or("-")) } }
                tr { th { "Token claims (SHA-256)" } td.mono { (r.claims_sha256.as_deref().unwrap_or("-")) } }
                tr { th { "Certificate SHA-256" } td.mono { (c.sha256) } }
                tr {
                    th { "SCT" }
                    td.mono id="sct" {
                        @match (&c.sct_log_id, c.sct_timestamp) {
                            (Some(id), Some(t)) => { "log " (id) " at " (rfc3339(t)) " (" (t) " ms)" }
                            _ => "none (CT disabled)",
                        }
                    }
                }
                tr {
                    th { "Inclusion" }
                    td class=(class) id="inclusion" {
                        (status)
                        @if let Some(e) = logged.first() { " (log entry timestamp " (rfc3339(e.timestamp)) ")" }
                    }
                }
            }
        }
        section {
            h2 { "Extensions" }
            table id="extensions" {
                thead { tr { th { "OID" } th { "Name" } th { "Value" } th { "Critical" } } }
                tbody {
                    @for e in &c.extensions {
                        tr data-oid=(e.oid) {
                            td.mono { (e.oid) }
                            td { (e.name) }
                            td.mono { (e.value) }
                            td { @if e.critical { "yes" } }
                        }
                    }
                }
            }
        }
    };
    layout(html! { "Certificate " (c.serial) }, body)
}

/// The page of a serial that was announced (intent) but never issued; `None` when no intent
/// record names it.
pub(crate) fn intent(records: &[Record], serial: &str) -> Option<Markup> {
    let intent = records
        .iter()
        .find(|r| r.decision == Decision::Intent && r.intent.as_ref().is_some_and(|i| i.serial == serial))?;
    let i = intent.intent.as_ref()?;
    let outcome = records
        .iter()
        .find(|r| r.decision == Decision::Abandoned && r.intent_seq == Some(intent.seq))
        .and_then(|o| o.rejection.as_ref().map(|j| (o.seq, j)));
    let body = html! {
        section {
            h2 { "Intended certificate " span.mono id="serial" { (i.serial) } }
            table id="facts" {
                tr { th { "Kind" } td id="kind" { "intent" } }
                tr { th { "Identity (SAN)" } td.mono id="san" { (i.san) } }
                tr { th { "Issuer" } td id="issuer" { (intent.issuer.as_deref().unwrap_or_default()) } }
                tr { th { "Valid" } td { (at_secs(i.not_before)) " to " (at_secs(i.not_after)) } }
                tr { th { "CT log" } td.mono { (i.log) } }
                tr { th { "TBS SHA-256" } td.mono { (i.tbs_sha256) } }
                tr { th { "Request" } td.mono { (intent.request_id) " · record " (intent.seq) } }
                tr {
                    th { "Outcome" }
                    td id="outcome" {
                        @match outcome {
                            Some((seq, j)) => { "abandoned (record " (seq) "): " (j.class) ": " (j.message) }
                            None => "no outcome recorded (in flight, or interrupted)",
                        }
                    }
                }
            }
        }
    };
    Some(layout(html! { "Intended certificate " (i.serial) }, body))
}

/// No certificate and no intent has this serial.
pub(crate) fn not_found(serial: &str) -> Markup {
    layout("not found", html! { p { "No certificate with serial " (serial) "." } })
}

/// The record cannot be read (`why` says how).
pub(crate) fn unavailable(why: &str) -> Markup {
    layout("error", html! { p { (why) } })
}

/// Where a certificate stands in the synced CT logs, and the class that colours it.
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
            let logged_at = c
                .sct_timestamp
                .unwrap_or_else(|| (c.not_before.max(0) as u64).saturating_mul(1000));
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

/// Percent-encodes a URL path segment. Serials are hex, so this changes nothing for real records;
/// it keeps a link to the page it names whatever the text.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
