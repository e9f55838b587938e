//! Serving connections so that no client, however slow or greedy, can hold the server's capacity.
//!
//! `axum::serve` accepts every connection and waits on each as long as the client likes. Here each
//! listener (the API and the embedded CT log) admits a connection only under a global and a
//! per-source-address limit, performs the TLS handshake inside the connection's own task under the
//! header deadline, and watches every connection: one that has not delivered a complete request
//! head within `header_read_timeout` of its first byte (or of opening), or that sits idle past
//! `idle_timeout`, is closed. HTTP/2 streams per connection are capped and rapid-reset floods are
//! refused by hyper's limits. Request bodies are read (under a deadline and a minimum rate) by
//! [`crate::protect::guard`] before a request may take one of the concurrency slots.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use keyless_config::Limits;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt as _;

/// How long a connection asked to shut down (idle, stalled, or the server stopping with nothing in
/// flight) may take to close before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Admission: a global connection budget and a count per source address.
struct Admission {
    total: Arc<Semaphore>,
    max_total: usize,
    per_address: Option<usize>,
    by_address: Mutex<HashMap<IpAddr, usize>>,
}

/// Holds a connection's place until the connection ends.
struct Admitted {
    _permit: OwnedSemaphorePermit,
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut map = self.admission.by_address.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Admission {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, &'static str> {
        let permit = self.total.clone().try_acquire_owned().map_err(|_| "max_connections")?;
        let mut map = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if self.per_address.is_some_and(|max| *n >= max) {
            return Err("max_connections_per_address");
        }
        *n += 1;
        Ok(Admitted {
            _permit: permit,
            admission: self.clone(),
            ip,
        })
    }
}

/// What the watchdog knows of one connection. Times are milliseconds since `epoch`.
struct ConnState {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// When the connection last became idle (opened, or its last request finished).
    idle_since: AtomicU64,
    /// Whether bytes arrived while idle: a request head is on its way.
    partial: AtomicBool,
    /// When the first of those bytes arrived.
    partial_since: AtomicU64,
    /// Whether a request ever completed its head on this connection.
    served: AtomicBool,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            partial: AtomicBool::new(false),
            partial_since: AtomicU64::new(0),
            served: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn on_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 && !self.partial.swap(true, Ordering::AcqRel) {
            self.partial_since.store(self.now_ms(), Ordering::Release);
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.partial.store(false, Ordering::Release);
        self.served.store(true, Ordering::Release);
        InFlight(self.clone())
    }

    /// Why the connection should be closed now, if it should.
    fn expired(&self, limits: &Limits) -> Option<&'static str> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let now = self.now_ms();
        let header = limits.header_read_timeout.as_millis() as u64;
        if self.partial.load(Ordering::Acquire) {
            let since = self.partial_since.load(Ordering::Acquire);
            return (now.saturating_sub(since) > header).then_some("header_read_timeout");
        }
        let idle = now.saturating_sub(self.idle_since.load(Ordering::Acquire));
        // A client that connects must ask for something promptly; between requests it may idle longer.
        let limit = if self.served.load(Ordering::Acquire) {
            limits.idle_timeout.as_millis() as u64
        } else {
            header
        };
        (idle > limit).then_some("idle_timeout")
    }
}

/// One request in flight on a connection.
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_since.store(self.0.now_ms(), Ordering::Release);
        }
    }
}

/// A TCP stream that tells its connection's watchdog when bytes arrive.
struct Tracked {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Tracked {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.state.on_read();
        }
        poll
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A listener with its limits, serving one router.
pub struct Server {
    /// Used in metrics and logs: `api` or `ctlog`.
    pub name: &'static str,
    /// The limits this listener enforces.
    pub limits: Limits,
    /// Native TLS, when configured.
    pub tls: Option<crate::tls::Acceptor>,
}

impl Server {
    /// Serves `app` on `listener` until `shutdown` completes, then stops accepting, lets requests
    /// in flight finish for up to `grace`, and returns whether they all did.
    pub async fn serve(
        self,
        listener: TcpListener,
        app: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> io::Result<bool> {
        let limits = Arc::new(self.limits);
        let admission = Arc::new(Admission {
            total: Arc::new(Semaphore::new(limits.max_connections)),
            max_total: limits.max_connections,
            per_address: limits.max_connections_per_address,
            by_address: Mutex::new(HashMap::new()),
        });
        let builder = Arc::new(builder(&limits));
        let (stop_tx, stop_rx) = watch::channel(false);
        let name = self.name;
        let tls = self.tls.map(Arc::new);
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::warn!(listener = name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let admitted = match admission.admit(peer.ip()) {
                Ok(a) => a,
                Err(reason) => {
                    metrics::counter!("keyless_connections_refused_total", "listener" => name, "reason" => reason)
                        .increment(1);
                    drop(stream);
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let conn = Connection {
                app: app.clone(),
                limits: limits.clone(),
                builder: builder.clone(),
                tls: tls.clone(),
                stop: stop_rx.clone(),
                name,
                peer,
            };
            tokio::spawn(async move {
                conn.run(stream).await;
                drop(admitted);
            });
        }
        drop(listener);
        let _ = stop_tx.send(true);
        // Every connection task holds a permit; all of them back means every connection ended.
        let all = admission.max_total as u32;
        let finished = tokio::time::timeout(grace, admission.total.acquire_many(all))
            .await
            .is_ok();
        Ok(finished)
    }
}

fn builder(limits: &Limits) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // Room for the configured header block, so oversized headers get the API's own 431.
        .max_buf_size((limits.max_header_bytes + 8192).max(16 * 1024));
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_h2_streams)
        .max_header_list_size(limits.max_header_bytes as u32)
        // Rapid reset (CVE-2023-44487) and error-reset floods close the connection.
        .max_pending_accept_reset_streams(Some(32))
        .max_local_error_reset_streams(Some(256))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    b
}

/// One accepted connection and what it needs to be served.
struct Connection {
    app: Router,
    limits: Arc<Limits>,
    builder: Arc<hyper_util::server::conn::auto::Builder<TokioExecutor>>,
    tls: Option<Arc<crate::tls::Acceptor>>,
    stop: watch::Receiver<bool>,
    name: &'static str,
    peer: SocketAddr,
}

impl Connection {
    async fn run(self, stream: TcpStream) {
        let state = Arc::new(ConnState::new());
        let io = Tracked {
            inner: stream,
            state: state.clone(),
        };
        match self.tls.clone() {
            None => self.serve_io(io, state).await,
            Some(tls) => {
                // The handshake counts as reading the request head: same deadline.
                match tokio::time::timeout(self.limits.header_read_timeout, tls.accept(io)).await {
                    Ok(Ok(stream)) => self.serve_io(stream, state).await,
                    Ok(Err(e)) => tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed"),
                    Err(_) => {
                        metrics::counter!("keyless_connections_closed_total", "listener" => self.name, "reason" => "tls_handshake_timeout")
                            .increment(1);
                    }
                }
            }
        }
    }

    async fn serve_io<I>(self, io: I, state: Arc<ConnState>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            app,
            limits,
            builder,
            mut stop,
            name,
            peer,
            ..
        } = self;
        let service_state = state.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let in_flight = service_state.begin();
            req.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move {
                let resp = app.oneshot(req.map(axum::body::Body::new)).await;
                drop(in_flight);
                resp
            }
        });
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let tick = (limits.header_read_timeout / 4).clamp(Duration::from_millis(25), Duration::from_secs(1));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = *stop.borrow();
        if stopping {
            conn.as_mut().graceful_shutdown();
        }
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(listener = name, %peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = ticker.tick() => {
                    if let Some(reason) = state.expired(&limits) {
                        metrics::counter!("keyless_connections_closed_total", "listener" => name, "reason" => reason)
                            .increment(1);
                        conn.as_mut().graceful_shutdown();
                        // A client that stalls mid-head does not get to delay its own closing.
                        let _ = tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await;
                        return;
                    }
                }
                changed = stop.changed(), if !stopping => {
                    // The server is stopping: finish what is in flight, take nothing new.
                    stopping = changed.is_err() || *stop.borrow();
                    if stopping {
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_must_ask_promptly_and_finish_its_head() {
        let limits = Limits {
            header_read_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let s = ConnState::new();
        assert_eq!(s.expired(&limits), None);
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(s.expired(&limits), Some("idle_timeout"), "silent since opening");

        let s = Arc::new(ConnState::new());
        let req = s.begin();
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(s.expired(&limits), None, "a request in flight is never cut here");
        drop(req);
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(s.expired(&limits), None, "between requests the idle timeout applies");
        s.on_read();
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(
            s.expired(&limits),
            Some("header_read_timeout"),
            "a head that never completes"
        );
    }

    #[test]
    fn admission_counts_per_address_and_in_total() {
        let admission = Arc::new(Admission {
            total: Arc::new(Semaphore::new(3)),
            max_total: 3,
            per_address: Some(2),
            by_address: Mutex::new(HashMap::new()),
        });
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let a1 = admission.admit(a).unwrap();
        let _a2 = admission.admit(a).unwrap();
        assert_eq!(admission.admit(a).err(), Some("max_connections_per_address"));
        let _b1 = admission.admit(b).unwrap();
        assert_eq!(admission.admit(b).err(), Some("max_connections"));
        drop(a1);
        assert!(admission.admit(b).is_ok(), "a closed connection frees its place");
    }
}
