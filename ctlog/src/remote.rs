//! A client for remote RFC 6962 logs. Each attempt has a timeout; transport errors, 408, 429 and
//! 503 are retried a bounded number of times; anything else fails at once. The CA then verifies
//! the SCT with the configured log key, so this client trusts nothing it receives.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyless_ca::ct::{CtError, CtFuture, CtLog};

use crate::http::{AddChainRequest, AddChainResponse};

/// A remote log reached over HTTP(S).
#[derive(Debug, Clone)]
pub struct RemoteLog {
    url: String,
    http: reqwest::Client,
    attempts: u32,
}

impl RemoteLog {
    /// A client for the log at `url` (its base URL, without `/ct/v1`).
    pub fn new(url: &str, attempt_timeout: Duration, attempts: u32) -> Result<RemoteLog, CtError> {
        let http = reqwest::Client::builder()
            .timeout(attempt_timeout)
            .connect_timeout(attempt_timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("keyless/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CtError(e.to_string()))?;
        Ok(RemoteLog {
            url: url.trim_end_matches('/').to_string(),
            http,
            attempts: attempts.max(1),
        })
    }

    /// `GET get-sth` once: the log answers with a tree head (its tree size), for readiness.
    pub async fn probe(&self) -> Result<u64, String> {
        let url = format!("{}/ct/v1/get-sth", self.url);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", resp.status()));
        }
        let sth: serde_json::Value = resp.json().await.map_err(|e| format!("GET {url}: {e}"))?;
        sth["tree_size"]
            .as_u64()
            .ok_or_else(|| format!("GET {url}: no tree_size in the answer"))
    }

    async fn attempt(&self, body: &AddChainRequest) -> Result<AddChainResponse, (bool, String)> {
        let url = format!("{}/ct/v1/add-pre-chain", self.url);
        let resp = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .map_err(|e| (true, format!("POST {url}: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            let retry = matches!(status.as_u16(), 408 | 429 | 503);
            let text = resp.text().await.unwrap_or_default();
            return Err((
                retry,
                format!(
                    "POST {url}: HTTP {status}: {}",
                    text.chars().take(200).collect::<String>()
                ),
            ));
        }
        let bytes = resp.bytes().await.map_err(|e| (true, format!("POST {url}: {e}")))?;
        if bytes.len() > 64 * 1024 {
            return Err((false, "response is too large".into()));
        }
        serde_json::from_slice(&bytes).map_err(|e| (false, format!("response is not an SCT: {e}")))
    }
}

impl CtLog for RemoteLog {
    fn name(&self) -> &str {
        &self.url
    }

    fn add_pre_chain<'a>(&'a self, chain: &'a [Vec<u8>]) -> CtFuture<'a> {
        Box::pin(async move {
            let body = AddChainRequest {
                chain: chain.iter().map(|c| STANDARD.encode(c)).collect(),
            };
            let mut last = String::new();
            for attempt in 0..self.attempts {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(100 << attempt.min(4))).await;
                }
                match self.attempt(&body).await {
                    Ok(resp) => {
                        return resp
                            .to_sct()
                            .map_err(CtError)
                            .map(|sct| keyless_ca::ct::Logged { sct, leaf_index: None });
                    }
                    Err((retry, cause)) => {
                        tracing::warn!(log = %self.url, attempt, %cause, "CT submission failed");
                        last = cause;
                        if !retry {
                            break;
                        }
                    }
                }
            }
            Err(CtError(last))
        })
    }
}
