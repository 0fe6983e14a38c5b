//! The accept loop: HTTP/1.1 connections, and HTTP/2 over cleartext with prior knowledge
//! (what the AWS SDK for JavaScript v3 speaks to an `http://` endpoint by default), served
//! by hyper with a header read timeout (a client that trickles its headers or its HTTP/2
//! preface, or opens a connection and says nothing, is closed), a cap on open
//! connections, and graceful shutdown that lets calls in flight finish.
//!
//! `axum::serve` sets no timer, so hyper's header timeout never fires there; this loop is
//! the same thing with the timeouts on.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connection limits.
#[derive(Debug, Clone)]
pub struct ListenLimits {
    /// A request's headers must arrive within this time (also the longest a keep-alive
    /// connection may sit idle).
    pub header_timeout: Duration,
    /// Most open connections; past this, new connections wait in the kernel's backlog.
    pub max_connections: usize,
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Does the connection start with the HTTP/2 preface? Peeks (consumes nothing); waits
/// while what arrived is a strict prefix of it.
async fn is_h2_preface(stream: &tokio::net::TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; 24];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if !H2_PREFACE.starts_with(&buf[..n.min(24)]) {
            return Ok(false);
        }
        if n >= H2_PREFACE.len() {
            return Ok(true);
        }
        // A prefix of the preface so far: wait for the rest (bounded by the caller's timeout).
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Serve `router` on `listener` until `shutdown` completes, then wait for the
/// connections in flight (at most `drain` long).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ListenLimits,
    shutdown: impl std::future::Future<Output = ()>,
    drain: Duration,
) -> std::io::Result<()> {
    // HTTP/1.1 connections are told to close (after their request in flight, at once when
    // idle); HTTP/2 connections are not sent GOAWAY: some clients (python-h2, under the
    // OpenAI and Anthropic SDKs' HTTP/2 transport) abort their open streams on it. They are
    // closed once no call is in flight.
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let in_flight = InFlight::default();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let svc = hyper::service::service_fn({
            let router = router.clone();
            let in_flight = in_flight.clone();
            move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(remote));
                let mut r = router.clone();
                // Counted until its response body is sent or dropped.
                let guard = in_flight.enter();
                async move {
                    use tower_service::Service;
                    let resp = r.call(req.map(axum::body::Body::new)).await;
                    resp.map(|resp| {
                        resp.map(|inner| {
                            axum::body::Body::new(Tracked {
                                inner,
                                _guard: guard,
                            })
                        })
                    })
                }
            }
        });
        let (h1, h2) = (builder.clone(), h2.clone());
        let watcher = graceful.watcher();
        let stop = stop_rx.clone();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            // HTTP/2 with prior knowledge starts with its preface; anything else is HTTP/1.
            let r = match tokio::time::timeout(header_timeout, is_h2_preface(&stream)).await {
                Ok(Ok(true)) => {
                    drop(watcher);
                    let conn = h2.serve_connection(TokioIo::new(stream), svc);
                    // Served until it ends or the server stops (no call left in flight).
                    let mut stop = stop;
                    tokio::select! {
                        r = conn => r,
                        _ = stop.wait_for(|s| *s) => Ok(()),
                    }
                }
                Ok(Ok(false)) => {
                    let conn = h1.serve_connection(TokioIo::new(stream), svc);
                    watcher.watch(conn).await
                }
                // Nothing (or only part of a preface) in time, or a read error: close.
                Ok(Err(_)) | Err(_) => Ok(()),
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, client = %remote, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    // Calls in flight finish (up to `drain`); idle connections do not hold the shutdown.
    let drained = async {
        graceful.shutdown().await;
        in_flight.idle().await;
    };
    if tokio::time::timeout(drain, drained).await.is_err() {
        tracing::warn!("calls still in flight after the drain period; closing their connections");
    }
    let _ = stop_tx.send(true);
    Ok(())
}

/// Requests whose response has not finished.
#[derive(Clone, Default)]
struct InFlight(Arc<(std::sync::atomic::AtomicUsize, tokio::sync::Notify)>);

impl InFlight {
    fn enter(&self) -> InFlightGuard {
        self.0 .0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    /// Wait until no request is in flight.
    async fn idle(&self) {
        loop {
            let notified = self.0 .1.notified();
            if self.0 .0.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

struct InFlightGuard(InFlight);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        (self.0)
            .0
             .0
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        (self.0).0 .1.notify_waiters();
    }
}

/// A response body that keeps its request counted until it ends or is dropped.
struct Tracked {
    inner: axum::body::Body,
    _guard: InFlightGuard,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
