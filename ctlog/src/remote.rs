//! The CA's submitter for remote RFC 6962 logs, over [`LogClient`]: each attempt has a timeout;
//! transport errors, 408, 429 and 503 are retried a bounded number of times; anything else fails
//! at once; answers are capped (see [`crate::client`]). The CA then verifies the SCT with the
//! configured log key, so this submitter trusts nothing it receives.

use std::time::Duration;

use keyless_ca::ct::{CtError, CtFuture, CtLog, Logged};

use crate::client::{ClientOptions, LogClient};

/// A remote log reached over HTTP(S).
#[derive(Debug, Clone)]
pub struct RemoteLog {
    client: LogClient,
    attempts: u32,
}

impl RemoteLog {
    /// A client for the log at `url` (its base URL, without `/ct/v1`).
    pub fn new(url: &str, attempt_timeout: Duration, attempts: u32) -> Result<RemoteLog, CtError> {
        let client = LogClient::new(url, &ClientOptions::new(attempt_timeout)).map_err(|e| CtError(e.to_string()))?;
        Ok(RemoteLog {
            client,
            attempts: attempts.max(1),
        })
    }

    /// The submitter for `ct_log: {url, ...}`: its timeout, attempts, CA bundle and origin. Plain
    /// http beyond loopback is allowed (the SCT is verified with the configured key anyway) and
    /// logged as a warning.
    pub fn from_config(config: &keyless_config::RemoteCtLog) -> Result<RemoteLog, CtError> {
        let options = ClientOptions {
            ca_cert_pem: config.ca_cert_pem.clone(),
            host: config.origin.clone(),
            ..ClientOptions::new(config.timeout)
        };
        let client = LogClient::new(&config.url, &options).map_err(|e| CtError(e.to_string()))?;
        if config.plain_http_off_loopback() {
            tracing::warn!(
                url = %config.url,
                "the CT log is reached over plain http: submissions and SCTs cross the network unencrypted \
                 (every SCT is still verified with ct_log.public_key, so they cannot be forged, only delayed or dropped)"
            );
        }
        Ok(RemoteLog {
            client,
            attempts: config.attempts.max(1),
        })
    }

    /// `GET get-sth` once: the log answers with a tree head (its tree size), for readiness.
    pub async fn probe(&self) -> Result<u64, String> {
        self.client.get_tree_size().await.map_err(|e| e.to_string())
    }
}

impl CtLog for RemoteLog {
    fn name(&self) -> &str {
        self.client.url()
    }

    fn add_pre_chain<'a>(&'a self, chain: &'a [Vec<u8>]) -> CtFuture<'a> {
        Box::pin(async move {
            let sct = self
                .client
                .add_pre_chain(chain, self.attempts)
                .await
                .map_err(|e| CtError(e.to_string()))?;
            Ok(Logged { sct, leaf_index: None })
        })
    }
}
