//! Issuances announced by an `intent` record that were not issued: `abandoned` ones with why,
//! and intents with no outcome yet (in flight, or interrupted by a crash).

use std::collections::HashSet;

use keyless_audit::query::rfc3339;
use keyless_audit::record::{Decision, Record};
use maud::{Markup, html};

/// The section listing them; empty markup when there are none.
pub(crate) fn section(records: &[Record]) -> Markup {
    let closed: HashSet<u64> = records
        .iter()
        .filter(|r| matches!(r.decision, Decision::Issued | Decision::Abandoned))
        .filter_map(|r| r.intent_seq)
        .collect();
    let rows: Vec<&Record> = records
        .iter()
        .filter(|r| r.decision == Decision::Abandoned || (r.decision == Decision::Intent && !closed.contains(&r.seq)))
        .collect();
    if rows.is_empty() {
        return html! {};
    }
    html! {
        section {
            h2 { "Unfinished issuances" }
            p.muted {
                "Precertificates announced to a CT log by an intent record but not issued. They may be in the log; "
                "`audit cross-check` lists them apart from its findings."
            }
            table id="unfinished" {
                thead { tr {
                    th { "Record" } th { "Kind" } th { "Time" } th { "Identity" } th { "Serial" } th { "Log" }
                    th { "Outcome" }
                } }
                tbody {
                    @for r in rows {
                        tr data-kind=(r.decision.as_str()) {
                            td { (r.seq) }
                            td { (r.decision.as_str()) }
                            td { (rfc3339(r.time_ms)) }
                            td.mono { (r.san().or(r.subject.as_deref()).unwrap_or_default()) }
                            td.mono { (r.serial().unwrap_or_default()) }
                            td.mono { (r.intent.as_ref().map(|i| i.log.as_str()).unwrap_or_default()) }
                            td { (outcome(r)) }
                        }
                    }
                }
            }
        }
    }
}

fn outcome(r: &Record) -> Markup {
    match (&r.decision, &r.rejection) {
        (Decision::Abandoned, Some(j)) => html! {
            "abandoned"
            @if let Some(i) = r.intent_seq { " (intent " (i) ")" }
            ": " (j.class) ": " (j.message)
        },
        (Decision::Abandoned, None) => html! { "abandoned" },
        _ => html! { "no outcome recorded (in flight, or interrupted)" },
    }
}
