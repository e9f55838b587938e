//! Prometheus metrics through the `metrics` facade, rendered on a listener of their own. Labels are
//! issuer kinds and configured issuer URLs, never subjects or request URLs.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

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
            .install_recorder()
            .expect("the metrics recorder is installed once");
        metrics::gauge!("keyless_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        handle
    })
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

/// Serves `/metrics` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener) {
    let app = axum::Router::new().route("/metrics", axum::routing::get(|| async { handle().render() }));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics listener failed");
    }
}
