//! The two inline SVG charts of the index page. Every shape is built with `html!` from numbers
//! and record text, so issuer names and reason classes are escaped like any other value.

use std::collections::{BTreeMap, BTreeSet};

use keyless_audit::query::rfc3339;
use keyless_audit::record::{Decision, Record};
use maud::{Markup, html};

const PALETTE: [&str; 6] = ["#3b6fd8", "#d8833b", "#2e9e6a", "#a24fc9", "#c93b55", "#6b7280"];

const MINUTE_MS: u64 = 60_000;
const WEEK_MS: u64 = 7 * 86_400_000;

/// Stacked bars of issuance per time bucket, one colour per issuer.
pub(crate) fn issuance(records: &[Record]) -> Markup {
    let issued: Vec<&Record> = records.iter().filter(|r| r.decision == Decision::Issued).collect();
    if issued.is_empty() {
        return html! { p.muted { "nothing issued yet" } };
    }
    let (lo, hi) = issued
        .iter()
        .fold((u64::MAX, 0), |(lo, hi), r| (lo.min(r.time_ms), hi.max(r.time_ms)));
    let span = hi - lo;
    // Fewer than 48 buckets whatever the span, so odd timestamps cannot ask for millions of bars.
    let bucket = [MINUTE_MS, 3_600_000, 86_400_000, WEEK_MS]
        .into_iter()
        .find(|b| span / b < 48)
        .unwrap_or(WEEK_MS * (span / WEEK_MS / 48 + 1));
    let first = lo / bucket;
    // At least a dozen bars' width, so one busy minute does not fill the whole chart.
    let n = ((hi / bucket - first + 1) as usize).max(12);
    let issuers: Vec<&str> = issued
        .iter()
        .filter_map(|r| r.issuer.as_deref())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut counts = vec![vec![0u32; issuers.len()]; n];
    for r in &issued {
        let b = (r.time_ms / bucket - first) as usize;
        if let Some(i) = issuers.iter().position(|x| Some(*x) == r.issuer.as_deref()) {
            counts[b][i] += 1;
        }
    }
    let max = counts.iter().map(|c| c.iter().sum::<u32>()).max().unwrap_or(1).max(1);
    let (w, h) = (480.0, 160.0);
    let bw = w / n as f64;
    // Each bar segment: (x, y, height, issuer index, count).
    let mut bars = Vec::new();
    for (b, row) in counts.iter().enumerate() {
        let mut y = h;
        for (i, &c) in row.iter().enumerate().filter(|(_, c)| **c > 0) {
            let bh = h * f64::from(c) / f64::from(max);
            y -= bh;
            bars.push((b as f64 * bw + 1.0, y, bh, i, c));
        }
    }
    html! {
        svg id="issuance-chart" width=(w) height=(h + 20.0) role="img" aria-label="issuance over time" {
            @for (x, y, bh, i, c) in bars {
                rect x=(dp1(x)) y=(dp1(y)) width=(dp1((bw - 2.0).max(1.0))) height=(dp1(bh))
                    fill=(PALETTE[i % PALETTE.len()]) {
                    title { (issuers[i]) ": " (c) }
                }
            }
            text x="0" y=(h + 14.0) font-size="11" { (rfc3339(first * bucket)) }
            text x=(w) y=(h + 14.0) font-size="11" text-anchor="end" {
                "max " (max) " per " (bucket / MINUTE_MS) " min"
            }
        }
        @for (i, issuer) in issuers.iter().enumerate() {
            div { span style={ "color:" (PALETTE[i % PALETTE.len()]) } { "■" } " " (issuer) }
        }
    }
}

/// Horizontal bars of refusals per reason class.
pub(crate) fn rejections(records: &[Record]) -> Markup {
    let mut by: BTreeMap<&str, u32> = BTreeMap::new();
    for r in records.iter().filter(|r| r.decision == Decision::Rejected) {
        if let Some(j) = &r.rejection {
            *by.entry(j.class.as_str()).or_default() += 1;
        }
    }
    let Some(max) = by.values().max().copied() else {
        return html! { p.muted { "no refusals" } };
    };
    html! {
        svg id="rejection-chart" width="360" height=(by.len() * 22) role="img" aria-label="refusals by reason" {
            @for (i, (class, n)) in by.iter().enumerate() {
                @let y = i * 22;
                @let len = 220.0 * f64::from(*n) / f64::from(max);
                text x="0" y=(y + 13) font-size="12" { (class) }
                rect x="90" y=(y + 2) width=(dp1(len)) height="16" fill="#c93b55" {}
                text x=(dp1(95.0 + len)) y=(y + 13) font-size="12" { (n) }
            }
        }
    }
}

/// A coordinate to one decimal: enough for the eye, and short markup.
fn dp1(v: f64) -> String {
    format!("{v:.1}")
}
