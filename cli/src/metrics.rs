//! Prometheus metrics through the `metrics` facade, rendered on a listener of their own. Labels are
//! issuer kinds and configured issuer URLs, never subjects or request URLs.
//!
//! Fulcio's own series are exported alongside the `keyless_*` ones, under Fulcio's names, labels,
//! types and buckets (its `pkg/server/metrics.go`), so an operator's dashboards and alerts keep
//! working: `fulcio_new_certs`, `fulcio_api_latency`, `http_requests_total` (counted by
//! `keyless_service` and `keyless_api::protect::fulcio_metrics`) and `fulcio_build_info`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The Prometheus client's default buckets, which `fulcio_api_latency` uses.
const PROMETHEUS_DEFAULT_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The process-wide recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        // Real Prometheus histograms (not summaries), so alerts can aggregate across replicas.
        let handle = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
            .expect("bucket list is not empty")
            .set_buckets_for_metric(Matcher::Full("fulcio_api_latency".into()), &PROMETHEUS_DEFAULT_BUCKETS)
            .expect("bucket list is not empty")
            .install_recorder()
            .expect("the metrics recorder is installed once");
        metrics::gauge!("keyless_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        fulcio_series();
        handle
    })
}

/// Fulcio's help texts and constant series. `fulcio_new_certs` exists from the start (at 0), as
/// Fulcio registers it, so `rate()` works before the first certificate.
fn fulcio_series() {
    metrics::describe_counter!("fulcio_new_certs", "The total number of certificates generated");
    metrics::describe_histogram!("fulcio_api_latency", "API Latency on calls");
    metrics::describe_counter!("http_requests_total", "Count all HTTP requests");
    metrics::describe_gauge!(
        "fulcio_build_info",
        "A metric with a constant '1' value labeled by version, revision, branch, and goversion from which fulcio was built."
    );
    metrics::counter!("fulcio_new_certs").increment(0);
    // Labels in Fulcio's (alphabetical) order; `goversion` names the Rust toolchain here.
    metrics::gauge!(
        "fulcio_build_info",
        "build_date" => env!("KEYLESS_BUILD_DATE"),
        "goversion" => env!("KEYLESS_RUSTC_VERSION"),
        "revision" => env!("KEYLESS_REVISION"),
        "version" => env!("CARGO_PKG_VERSION")
    )
    .set(1.0);
}

/// A certificate was issued.
pub fn issued(kind: &str, issuer: &str) {
    metrics::counter!("keyless_certificates_issued_total", "issuer_kind" => kind.to_string(), "issuer" => issuer.to_string())
        .increment(1);
}

/// A request was refused, by reason class (`token`, `policy`, `key`, `pop`, `request`, …).
pub fn rejected(class: &'static str) {
    metrics::counter!("keyless_rejections_total", "class" => class).increment(1);
}

/// A configuration reload finished (`ok` or `refused`); the hash in force is exported as a label.
pub fn reload(outcome: &'static str, hash_in_force: &str, previous_hash: &str) {
    metrics::counter!("keyless_config_reloads_total", "outcome" => outcome).increment(1);
    config_hash(hash_in_force, previous_hash);
}

/// Marks `hash` as the configuration in force.
pub fn config_hash(hash: &str, previous: &str) {
    if !previous.is_empty() && previous != hash {
        metrics::gauge!("keyless_config_info", "hash" => previous.to_string()).set(0.0);
    }
    metrics::gauge!("keyless_config_info", "hash" => hash.to_string()).set(1.0);
}

/// Serves the metrics on `listener` until the process ends: at `/metrics`, and (as Fulcio's
/// metrics server does) at any other path too, so an existing scrape configuration keeps working.
pub async fn serve(listener: tokio::net::TcpListener) {
    let render = || async { handle().render() };
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(render))
        .fallback(axum::routing::get(render));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics listener failed");
    }
}
