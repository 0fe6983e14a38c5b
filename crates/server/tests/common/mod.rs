//! The application as `logbook serve` builds it (the same `AppState::build`), in process,
//! for tests that drive the router directly: a temporary data folder, the journal
//! (optionally on a simulated disk), delivery, the store, the query service, alarms, and
//! the configured providers and routes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::Request;
use logbook_disk::sim::SimDisk;
use logbook_journal::Journal;
use logbook_server::app::{router, AppState, BuildOptions, Running};
use logbook_server::config::{Config, OnFailure, ProviderConfig, RouteConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;

pub struct Harness {
    /// Dropped first: the background tasks stop before the folder goes.
    pub rt: tokio::runtime::Runtime,
    pub app: axum::Router,
    pub journal: Journal,
    pub state: Arc<AppState>,
    /// The background work `AppState::build` started (delivery, store ingest, alarms).
    pub running: Running,
    pub dir: tempfile::TempDir,
}

#[derive(Default)]
pub struct Options {
    pub auth: bool,
    /// The journal's disk (the real one when `None`).
    pub disk: Option<SimDisk>,
    pub on_failure: Option<OnFailure>,
    /// Providers and routes added before the defaults.
    pub providers: Vec<ProviderConfig>,
    pub routes: Vec<RouteConfig>,
}

/// The application exactly as `logbook serve` wires it (`AppState::build`), in a
/// temporary data folder, without a listener.
pub fn harness(opts: Options) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut config = Config::defaults(dir.path()).unwrap();
    config.auth_enforced = opts.auth;
    config.max_body_bytes = 64 * 1024;
    config.segment_bytes = 256 * 1024;
    if let Some(f) = opts.on_failure {
        config.on_failure = f;
    }
    config.providers.extend(opts.providers);
    let mut routes = opts.routes;
    routes.append(&mut config.routes);
    config.routes = routes;
    let build = BuildOptions {
        journal_disk: opts
            .disk
            .map(|d| Arc::new(d) as Arc<dyn logbook_journal::Disk>),
        // Faults injected into the journal's disk must not be taken by delivery.
        bucket_disk: Some(logbook_disk::RealDisk::shared()),
    };
    let running = rt.block_on(AppState::build(config, build)).unwrap();
    let state = running.state.clone();
    Harness {
        app: router(state.clone()),
        journal: state.journal.clone(),
        state,
        running,
        rt,
        dir,
    }
}

/// Send one request with extra headers from loopback; the status, headers and body.
pub fn send_with(
    h: &Harness,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (http::StatusCode, http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(Body::from(body)).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 9))));
    h.rt.block_on(async {
        let resp = h.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        (status, headers, bytes)
    })
}

/// Send one request from loopback; the status, headers and body.
pub fn send(
    h: &Harness,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (http::StatusCode, http::HeaderMap, Vec<u8>) {
    let headers: Vec<(&str, &str)> = content_type
        .map(|ct| ("content-type", ct))
        .into_iter()
        .collect();
    send_with(h, method, path, &headers, body)
}
