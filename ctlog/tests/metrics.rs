//! Outside submissions are counted by outcome, never by address. (Its own test binary: the
//! metrics recorder is process-wide.)

mod common;

use common::*;
use keyless_config::{Bucket, SubmissionLimits};

fn sample(text: &str, outcome: &str) -> f64 {
    let want = format!("keyless_ctlog_submissions_total{{source=\"outside\",outcome=\"{outcome}\"}}");
    text.lines()
        .find_map(|l| l.strip_prefix(&want))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn outside_submissions_are_counted_by_outcome() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &pki);
    let limits = SubmissionLimits {
        per_address: Some(Bucket {
            rate: 1,
            per: std::time::Duration::from_secs(60),
            burst: 3,
        }),
        total: None,
        queue: 8,
        ca_addresses: Vec::new(),
    };
    let base = serve(log, limits).await;
    let http = reqwest::Client::new();
    let chain = pki.chain("m.example", false);
    assert_eq!(post(&http, &base, "add-chain", &chain).await.0, 200);
    assert_eq!(post(&http, &base, "add-chain", &chain).await.0, 200);
    assert_eq!(post(&http, &base, "add-pre-chain", &chain).await.0, 400);
    assert_eq!(post(&http, &base, "add-chain", &chain).await.0, 429);
    let text = handle.render();
    assert_eq!(sample(&text, "accepted"), 1.0, "{text}");
    assert_eq!(sample(&text, "deduplicated"), 1.0, "{text}");
    assert_eq!(sample(&text, "invalid"), 1.0, "{text}");
    assert_eq!(sample(&text, "rate_limited_address"), 1.0, "{text}");
    assert!(!text.contains("127.0.0.1"), "no addresses in labels");
}
