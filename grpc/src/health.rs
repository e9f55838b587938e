//! `grpc.health.v1.Health`: SERVING while the issuance service is ready ([`Service::readiness`]:
//! signer, CA validity, CT log, record, issuers configured), NOT_SERVING otherwise and from the
//! moment the server begins to shut down, so a load balancer drains the listener first.
//!
//! As in Fulcio, every service name gets the same answer (probes written for Fulcio name none, or
//! any). One readiness check a second at most is shared by every caller, so probes cannot hammer
//! an HSM; `Watch` rechecks every [`WATCH_INTERVAL`] and sends only changes.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use keyless_service::Service;
use tokio::sync::{Mutex, mpsc, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::health_proto::health_check_response::ServingStatus;
use crate::health_proto::health_server::{Health, HealthServer};
use crate::health_proto::{HealthCheckRequest, HealthCheckResponse};

/// How often an open `Watch` rechecks readiness.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// How long one readiness answer is reused.
const CACHE_FOR: Duration = Duration::from_secs(1);

/// Open `Watch` streams at most: each is a task that outlives its call and takes no request
/// slot, so without a cap any client could hold one per HTTP/2 stream of every connection.
pub const MAX_WATCHES: usize = 256;

/// The health service over the issuance service.
#[derive(Clone)]
pub struct HealthService(Arc<Inner>);

struct Inner {
    service: Arc<Service>,
    stopping: watch::Receiver<bool>,
    /// The last readiness answer; held while a check runs, so concurrent callers share it.
    last: Mutex<Option<(Instant, bool)>>,
    /// One permit per open `Watch`.
    watches: Arc<tokio::sync::Semaphore>,
}

impl HealthService {
    /// Health over `service`; NOT_SERVING once `stopping` turns true.
    pub fn new(service: Arc<Service>, stopping: watch::Receiver<bool>) -> HealthService {
        HealthService(Arc::new(Inner {
            service,
            stopping,
            last: Mutex::new(None),
            watches: Arc::new(tokio::sync::Semaphore::new(MAX_WATCHES)),
        }))
    }

    /// The status now.
    pub async fn status(&self) -> ServingStatus {
        if *self.0.stopping.borrow() {
            return ServingStatus::NotServing;
        }
        let mut last = self.0.last.lock().await;
        let ready = match *last {
            Some((at, ready)) if at.elapsed() < CACHE_FOR => ready,
            _ => {
                let ready = self.0.service.readiness().await.ready();
                *last = Some((Instant::now(), ready));
                ready
            }
        };
        if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    }
}

/// The health service's routes.
pub fn router(service: Arc<Service>, stopping: watch::Receiver<bool>) -> Router {
    Router::new().route_service(
        "/grpc.health.v1.Health/{method}",
        HealthServer::new(HealthService::new(service, stopping)).max_decoding_message_size(crate::MAX_MESSAGE_BYTES),
    )
}

fn answer(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse { status: status as i32 }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(&self, _: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(answer(self.status().await)))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, _: Request<HealthCheckRequest>) -> Result<Response<WatchStream>, Status> {
        let permit =
            self.0.watches.clone().try_acquire_owned().map_err(|_| {
                Status::resource_exhausted(format!("too many open health watches (at most {MAX_WATCHES})"))
            })?;
        let (tx, rx) = mpsc::channel(1);
        let this = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut stopping = this.0.stopping.clone();
            let mut sent = None;
            loop {
                let status = this.status().await;
                if sent != Some(status) {
                    if tx.send(Ok(answer(status))).await.is_err() {
                        return;
                    }
                    sent = Some(status);
                }
                // Shutting down: NOT_SERVING was sent; the stream ends so the server can stop.
                if *stopping.borrow() {
                    return;
                }
                tokio::select! {
                    () = tx.closed() => return,
                    changed = stopping.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(WATCH_INTERVAL) => {}
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}
