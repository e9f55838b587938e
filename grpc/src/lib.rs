//! Keyless CA's gRPC front door: Fulcio's `dev.sigstore.fulcio.v2.CA` and the standard
//! `grpc.health.v1.Health`, in front of the same issuance service as the REST API.
//!
//! - [`ca`]: the three CA methods; a signing request is decoded into a
//!   [`keyless_service::IssueRequest`] and handed to [`keyless_service::Service::issue`], exactly
//!   as the REST API does;
//! - [`health`]: SERVING while the service is ready, for probes and load balancers;
//! - [`guard`]: request ids, the whole message read before a request takes a slot, load shedding
//!   and the request timeout, answered as gRPC statuses;
//! - [`status`]: the one mapping from every refusal to a gRPC status (the REST API's `code`).
//!
//! Connections are served by the REST API's own [`keyless_api::conn::Server`], so the gRPC
//! listener has the same connection limits, slow-client deadlines, HTTP/2 stream caps and
//! reloading TLS.

#![forbid(unsafe_code)]

pub mod ca;
mod codec;
pub mod guard;
pub mod health;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;

use keyless_config::{Limits, TlsConfig};
use keyless_service::Service;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Fulcio's messages (`dev.sigstore.fulcio.v2`), generated from `proto/fulcio.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod fulcio {
    tonic::include_proto!("dev.sigstore.fulcio.v2");
}

/// The standard health protocol (`grpc.health.v1`), generated from
/// `proto/grpc/health/v1/health.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
pub mod health_proto {
    tonic::include_proto!("grpc.health.v1");
}

/// Messages larger than this are refused, as Fulcio's gRPC server (`MaxRecvMsgSize`) does.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// The whole gRPC surface as served: the CA and health services behind [`guard`]. `stopping`
/// turns true when the server begins to shut down: health answers NOT_SERVING from then on and
/// open `Watch` streams end. Tests drive it in process.
pub fn router(service: Arc<Service>, limits: &Limits, stopping: watch::Receiver<bool>) -> axum::Router {
    let guard = guard::Guard::new(limits.clone());
    ca::router(service.clone())
        .merge(health::router(service, stopping))
        .fallback(unknown_method)
        .layer(axum::middleware::from_fn_with_state(guard, guard::guard))
}

/// Any other path: `UNIMPLEMENTED`, as gRPC servers answer an unknown service or method.
async fn unknown_method() -> axum::response::Response {
    status::response(tonic::Status::unimplemented("unknown service or method"))
}

/// The gRPC listener, serving until it is told to stop.
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Whether it serves TLS.
    pub tls: bool,
    task: tokio::task::JoinHandle<std::io::Result<bool>>,
}

impl Running {
    /// Waits until the listener has stopped (after `stopping` turned true) and returns whether
    /// every call in flight finished within the shutdown grace.
    pub async fn finished(self) -> bool {
        match self.task.await {
            Ok(Ok(finished)) => finished,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "gRPC listener failed");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "gRPC listener task failed");
                false
            }
        }
    }
}

/// Binds `addr` (`grpc_listen`) and serves [`router`] on it under `limits`, with TLS from `tls`
/// (the API's pair) when set, until `stopping` turns true.
pub async fn start(
    service: Arc<Service>,
    addr: SocketAddr,
    limits: &Limits,
    tls: Option<&TlsConfig>,
    stopping: watch::Receiver<bool>,
) -> anyhow::Result<Running> {
    use anyhow::Context as _;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("grpc_listen: cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;
    let tls = tls.map(keyless_api::tls::Acceptor::new).transpose()?;
    let with_tls = tls.is_some();
    let app = router(service, limits, stopping.clone());
    let server = keyless_api::conn::Server {
        name: "grpc",
        limits: limits.clone(),
        tls,
    };
    let grace = limits.shutdown_grace;
    let task = tokio::spawn(server.serve(listener, app, stopped(stopping), grace));
    tracing::info!(%addr, tls = with_tls, "gRPC serving");
    Ok(Running {
        addr,
        tls: with_tls,
        task,
    })
}

/// Completes when `stopping` turns true (or its sender is gone).
async fn stopped(mut stopping: watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    /// `proto/fulcio.proto` is Fulcio's file unchanged (sigstore/fulcio at eb10c98), so clients
    /// generated from Fulcio's own copy speak to this server: any edit must be deliberate.
    #[test]
    fn fulcio_proto_is_fulcios_file_unchanged() {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, include_bytes!("../proto/fulcio.proto"));
        assert_eq!(
            hex::encode(digest.as_ref()),
            "e857bacef9af2f6f4277327af0981e0a694b13ed45689c99ee65229f8739dd5b"
        );
    }
}
