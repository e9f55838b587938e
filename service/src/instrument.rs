//! Metrics around the core's backends: the CA signer (file key or HSM) and the CT log. The core
//! stays free of metrics; these decorators implement its traits and time every call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyless_ca::ct::{CtFuture, CtLog};
use keyless_ca::{SignError, SignatureAlgorithm, Signer};

/// Times every signature and counts failures.
pub struct MeteredSigner(pub Arc<dyn Signer>);

impl Signer for MeteredSigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.0.algorithm()
    }

    fn public_key_spki(&self) -> &[u8] {
        self.0.public_key_spki()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let start = Instant::now();
        let result = self.0.sign(message);
        metrics::histogram!("keyless_signer_duration_seconds").record(start.elapsed());
        if result.is_err() {
            metrics::counter!("keyless_signer_errors_total").increment(1);
        }
        result
    }

    fn blocking(&self) -> bool {
        self.0.blocking()
    }
}

/// Times every `add-pre-chain` and counts failures.
pub struct MeteredLog(pub Arc<dyn CtLog>);

impl CtLog for MeteredLog {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn add_pre_chain<'a>(&'a self, chain: &'a [Vec<u8>]) -> CtFuture<'a> {
        Box::pin(async move {
            let start = Instant::now();
            let result = self.0.add_pre_chain(chain).await;
            metrics::histogram!("keyless_ct_submission_duration_seconds").record(start.elapsed());
            if result.is_err() {
                metrics::counter!("keyless_ct_submission_errors_total").increment(1);
            }
            result
        })
    }

    fn verifies_precertificate_signature(&self) -> bool {
        self.0.verifies_precertificate_signature()
    }
}

/// Exports the embedded log's size and the age of its latest tree head every second.
pub fn watch_embedded_log(log: keyless_ctlog::EmbeddedLog) {
    tokio::spawn(async move {
        loop {
            let sth = log.sth();
            metrics::gauge!("keyless_ctlog_tree_size").set(log.size() as f64);
            metrics::gauge!("keyless_ctlog_sth_tree_size").set(sth.tree_size as f64);
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            metrics::gauge!("keyless_ctlog_sth_age_seconds").set(now_ms.saturating_sub(sth.timestamp) as f64 / 1000.0);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}
