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
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
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
            move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(remote));
                let mut r = router.clone();
                async move {
                    use tower_service::Service;
                    r.call(req.map(axum::body::Body::new)).await
                }
            }
        });
        let (h1, h2) = (builder.clone(), h2.clone());
        let watcher = graceful.watcher();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            // HTTP/2 with prior knowledge starts with its preface; anything else is HTTP/1.
            let r = match tokio::time::timeout(header_timeout, is_h2_preface(&stream)).await {
                Ok(Ok(true)) => {
                    let conn = h2.serve_connection(TokioIo::new(stream), svc);
                    watcher.watch(conn).await
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
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain period; closing them");
    }
    Ok(())
}
