//! The one HTTP client for RFC 6962 logs: the CA's submitter ([`crate::RemoteLog`]) and the audit
//! sync both talk to logs through [`LogClient`].
//!
//! The log is never trusted: every request has a timeout, and every answer is read in chunks and
//! refused as soon as it passes its endpoint's cap, or at once when `Content-Length` declares more,
//! so a broken or hostile log cannot make us buffer an endless body:
//! - `add-pre-chain` and `get-sth`: [`MAX_RESPONSE_BYTES`] (64 KiB; an SCT or a tree head is a few
//!   hundred bytes);
//! - `get-sth-consistency`: [`MAX_PROOF_BYTES`] (1 MiB);
//! - `get-entries`: [`MAX_ENTRIES_BYTES`] (16 MiB);
//! - error answers are read only up to [`MAX_ERROR_BYTES`], for the message.
//!
//! Failures are told apart for the callers' decisions: [`LogError::Unreachable`] (transport,
//! timeout), [`LogError::Status`] (an HTTP error answer) and [`LogError::Malformed`] (an answer
//! that is not what RFC 6962 says); [`LogError::is_transient`] says which are worth retrying.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::LogError;
use crate::merkle::Hash;
use crate::wire::{self, AddChainRequest, AddChainResponse, GetEntriesResponse, GetSthResponse, LogEntry};

/// Largest `add-pre-chain` or `get-sth` answer accepted.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Largest `get-sth-consistency` answer accepted.
pub const MAX_PROOF_BYTES: usize = 1 << 20;
/// Largest `get-entries` answer accepted.
pub const MAX_ENTRIES_BYTES: usize = 16 << 20;
/// Bytes of an error answer read for the message.
pub const MAX_ERROR_BYTES: usize = 4 * 1024;
/// Characters of an error answer quoted in the message.
const QUOTED_ERROR_CHARS: usize = 200;

/// How a [`LogClient`] connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Time for one request, answer included.
    pub timeout: Duration,
    /// Time to connect.
    pub connect_timeout: Duration,
    /// Follow HTTP redirects (at most 10).
    pub follow_redirects: bool,
    /// The `User-Agent` header.
    pub user_agent: &'static str,
    /// PEM bundle trusted besides the system roots (a log behind a private TLS CA).
    pub ca_cert_pem: Option<String>,
    /// Sent as the `Host` header instead of the URL's host (Fulcio's `--ct-log-origin`): the
    /// connection (and TLS name) still follow the URL.
    pub host: Option<String>,
}

impl ClientOptions {
    /// The CA's submitter: `timeout` per attempt, at most 5 s to connect, no redirects (a log
    /// that moved must be reconfigured, not followed).
    pub fn new(timeout: Duration) -> ClientOptions {
        ClientOptions {
            timeout,
            connect_timeout: timeout.min(Duration::from_secs(5)),
            follow_redirects: false,
            user_agent: concat!("keyless/", env!("CARGO_PKG_VERSION")),
            ca_cert_pem: None,
            host: None,
        }
    }
}

/// An RFC 6962 log reached over HTTP(S).
#[derive(Debug, Clone)]
pub struct LogClient {
    http: reqwest::Client,
    base: String,
}

impl LogClient {
    /// A client for the log at `url`, its base URL (a trailing `/` or `/ct/v1` is dropped).
    pub fn new(url: &str, options: &ClientOptions) -> Result<LogClient, LogError> {
        let base = url.trim_end_matches('/');
        let base = base.strip_suffix("/ct/v1").unwrap_or(base).to_string();
        let redirects = if options.follow_redirects {
            reqwest::redirect::Policy::limited(10)
        } else {
            reqwest::redirect::Policy::none()
        };
        let mut builder = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.connect_timeout)
            .redirect(redirects)
            .user_agent(options.user_agent);
        if let Some(pem) = &options.ca_cert_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| LogError::Setup(format!("the log's CA bundle: {e}")))?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        if let Some(host) = &options.host {
            let value = reqwest::header::HeaderValue::from_str(host)
                .map_err(|_| LogError::Setup(format!("origin {host:?} is not a valid Host header")))?;
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::HOST, value);
            // HTTP/1.1 only: an HTTP/2 request names its authority from the URL.
            builder = builder.default_headers(headers).http1_only();
        }
        let http = builder
            .build()
            .map_err(|e| LogError::Setup(format!("HTTP client: {e}")))?;
        Ok(LogClient { http, base })
    }

    /// The log's base URL, for messages.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// `add-pre-chain` with `chain` = [precertificate, issuer, …, root] (DER), tried up to
    /// `attempts` times while the failure [is transient](LogError::is_transient), backing off
    /// 200 ms, 400 ms, … (at most 1.6 s) between attempts. The SCT is decoded, not verified.
    pub async fn add_pre_chain(&self, chain: &[Vec<u8>], attempts: u32) -> Result<keyless_ca::ct::Sct, LogError> {
        let body = AddChainRequest::new(chain);
        let mut last = LogError::Unreachable("no attempt was made".into());
        for attempt in 0..attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << attempt.min(4))).await;
            }
            let answer = self
                .request::<AddChainResponse>("add-pre-chain", Some(&body), MAX_RESPONSE_BYTES)
                .await;
            match answer.and_then(|a| a.to_sct()) {
                Ok(sct) => return Ok(sct),
                Err(e) => {
                    tracing::warn!(log = %self.base, attempt, cause = %e, "CT submission failed");
                    let retry = e.is_transient();
                    last = e;
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    /// `get-sth`, not yet verified (see [`GetSthResponse::verify`]).
    pub async fn get_sth(&self) -> Result<GetSthResponse, LogError> {
        self.request("get-sth", None, MAX_RESPONSE_BYTES).await
    }

    /// `get-sth` for a liveness probe: only the tree size is read.
    pub async fn get_tree_size(&self) -> Result<u64, LogError> {
        #[derive(serde::Deserialize)]
        struct TreeSize {
            tree_size: u64,
        }
        Ok(self
            .request::<TreeSize>("get-sth", None, MAX_RESPONSE_BYTES)
            .await?
            .tree_size)
    }

    /// `get-sth-consistency` between the trees of `first` and `second` entries.
    pub async fn get_sth_consistency(&self, first: u64, second: u64) -> Result<Vec<Hash>, LogError> {
        let answer: wire::GetSthConsistencyResponse = self
            .request(
                &format!("get-sth-consistency?first={first}&second={second}"),
                None,
                MAX_PROOF_BYTES,
            )
            .await?;
        wire::decode_hashes(&answer.consistency, "get-sth-consistency")
    }

    /// `get-entries` from `start` to `end` inclusive (a log may answer fewer).
    pub async fn get_entries(&self, start: u64, end: u64) -> Result<Vec<LogEntry>, LogError> {
        let answer: GetEntriesResponse = self
            .request(&format!("get-entries?start={start}&end={end}"), None, MAX_ENTRIES_BYTES)
            .await?;
        Ok(answer.entries)
    }

    /// One request to `/ct/v1/<path>`: a POST of `body` as JSON, else a GET; the answer is read
    /// within `cap` bytes and decoded as `T`.
    async fn request<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&AddChainRequest>,
        cap: usize,
    ) -> Result<T, LogError> {
        let url = format!("{}/ct/v1/{path}", self.base);
        let (method, req) = match body {
            Some(b) => ("POST", self.http.post(&url).json(b)),
            None => ("GET", self.http.get(&url)),
        };
        let at = |m: String| format!("{method} {url}: {m}");
        let resp = req.send().await.map_err(|e| LogError::Unreachable(at(e.to_string())))?;
        let status = resp.status();
        if !status.is_success() {
            let text = read_prefix(resp, MAX_ERROR_BYTES).await;
            let quoted: String = text.trim().chars().take(QUOTED_ERROR_CHARS).collect();
            return Err(LogError::Status {
                status: status.as_u16(),
                message: at(format!("HTTP {status}: {quoted}")),
            });
        }
        let bytes = read_capped(resp, cap).await.map_err(|e| match e {
            LogError::Unreachable(m) => LogError::Unreachable(at(m)),
            LogError::Malformed(m) => LogError::Malformed(at(m)),
            other => other,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| LogError::Malformed(at(format!("not the RFC 6962 answer: {e}"))))
    }
}

/// Reads the body, refusing it as soon as it is known to exceed `cap`.
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, LogError> {
    if let Some(len) = resp.content_length()
        && len > cap as u64
    {
        return Err(LogError::Malformed(format!(
            "the response declares {len} bytes; at most {cap} are accepted"
        )));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| LogError::Unreachable(e.to_string()))? {
        if out.len() + chunk.len() > cap {
            return Err(LogError::Malformed(format!("the response is larger than {cap} bytes")));
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
