//! A client for remote RFC 6962 logs. Each attempt has a timeout; transport errors, 408, 429 and
//! 503 are retried a bounded number of times; anything else fails at once. The CA then verifies
//! the SCT with the configured log key, so this client trusts nothing it receives.
//!
//! Answers are read in chunks and refused as soon as they pass [`MAX_RESPONSE_BYTES`] (64 KiB; an
//! SCT or tree head is a few hundred bytes), or at once when `Content-Length` declares more, so a
//! broken or hostile log cannot make the CA buffer an endless body. Error bodies are read only up
//! to [`MAX_ERROR_BYTES`] for the message.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyless_ca::ct::{CtError, CtFuture, CtLog};

use crate::http::{AddChainRequest, AddChainResponse};

/// Largest `add-pre-chain` or `get-sth` answer accepted.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Bytes of an error answer read for the message.
pub const MAX_ERROR_BYTES: usize = 4 * 1024;

/// Why a capped read stopped.
enum ReadError {
    TooLarge(String),
    Transport(String),
}

/// Reads the body, refusing it as soon as it is known to exceed `cap`.
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, ReadError> {
    if let Some(len) = resp.content_length()
        && len > cap as u64
    {
        return Err(ReadError::TooLarge(format!(
            "the response declares {len} bytes; at most {cap} are accepted"
        )));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| ReadError::Transport(e.to_string()))? {
        if out.len() + chunk.len() > cap {
            return Err(ReadError::TooLarge(format!("the response is larger than {cap} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The first `cap` bytes of an error body as text (the rest is not read).
async fn read_prefix(mut resp: reqwest::Response, cap: usize) -> String {
    let mut out = Vec::new();
    while out.len() < cap {
        match resp.chunk().await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk[..chunk.len().min(cap - out.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

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
        let body = read_capped(resp, MAX_RESPONSE_BYTES).await.map_err(|e| match e {
            ReadError::TooLarge(m) | ReadError::Transport(m) => format!("GET {url}: {m}"),
        })?;
        let sth: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("GET {url}: {e}"))?;
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
            let text = read_prefix(resp, MAX_ERROR_BYTES).await;
            return Err((
                retry,
                format!(
                    "POST {url}: HTTP {status}: {}",
                    text.chars().take(200).collect::<String>()
                ),
            ));
        }
        let bytes = read_capped(resp, MAX_RESPONSE_BYTES).await.map_err(|e| match e {
            ReadError::TooLarge(m) => (false, format!("POST {url}: {m}")),
            ReadError::Transport(m) => (true, format!("POST {url}: {m}")),
        })?;
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
