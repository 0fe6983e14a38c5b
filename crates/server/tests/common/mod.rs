//! The application as `logbook serve` builds it, in process, for tests that drive the
//! router directly: a temporary data folder, the journal (optionally on a simulated disk),
//! the store, the query service, and the configured providers and routes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::Request;
use logbook_disk::sim::SimDisk;
use logbook_journal::{Journal, JournalConfig};
use logbook_server::app::{router, AppState};
use logbook_server::capture::Recorder;
use logbook_server::config::{Config, LoggingMode, OnFailure, ProviderConfig, RouteConfig};
use logbook_server::control::LoggingConfigs;
use logbook_server::identity::Principals;
use logbook_server::routing::Routes;
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub rt: tokio::runtime::Runtime,
    pub app: axum::Router,
    pub journal: Journal,
    pub state: Arc<AppState>,
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
    if let Some(f) = opts.on_failure {
        config.on_failure = f;
    }
    config.providers.extend(opts.providers);
    let mut routes = opts.routes;
    routes.append(&mut config.routes);
    config.routes = routes;
    let mut jcfg = JournalConfig::new(dir.path().join("journal"));
    jcfg.segment_bytes = 256 * 1024;
    if let Some(d) = &opts.disk {
        jcfg.disk = Arc::new(d.clone());
    }
    let journal = Journal::open(jcfg).unwrap();
    let logging = Arc::new(
        LoggingConfigs::open(
            &dir.path().join("control"),
            config.logging_default.clone(),
            Default::default(),
        )
        .unwrap(),
    );
    let store = Arc::new(logbook_store::Store::open(dir.path().join("store")).unwrap());
    store.ensure_group("/aws/bedrock/modelinvocations").unwrap();
    let engine = Arc::new(
        logbook_query::QueryService::new(
            Arc::new(logbook_query::Engine::new(store.clone(), None)),
            config.query.limits.clone(),
        )
        .unwrap(),
    );
    let buffers = logbook_server::http_util::BufferBudget::new(config.max_buffered_bytes);
    let mut buckets = std::collections::HashMap::new();
    for (name, spec) in &config.buckets {
        let b = logbook_delivery::Bucket::open(name, spec, logbook_disk::RealDisk::shared());
        buckets.insert(name.clone(), b.unwrap());
    }
    let metrics = Arc::new(logbook_ops::Metrics::new(None));
    let state = Arc::new(AppState {
        metrics: metrics.clone(),
        budgets: logbook_ops::budgets::Budgets::new(Vec::new()),
        metric_filters: Arc::new(
            logbook_server::metric_filters::MetricFilters::open(&config.data_dir).unwrap(),
        ),
        alarms: Arc::new(
            logbook_server::alarms::Alarms::open(
                &config.data_dir,
                Vec::new(),
                Default::default(),
                "us-east-1",
                "123456789012",
            )
            .unwrap(),
        ),
        store,
        engine,
        queries: Default::default(),
        buffers,
        recorder: Recorder::new(
            journal.clone(),
            "test".into(),
            config.on_failure,
            LoggingMode::Strict,
            logging.clone(),
            false,
        )
        .with_metrics(metrics),
        principals: Principals::new(&config, &[]),
        routes: Routes::new(&config).unwrap(),
        journal: journal.clone(),
        destinations: Vec::new(),
        logging,
        buckets,
        remote_log_groups: Default::default(),
        gc: Default::default(),
        budget: Default::default(),
        config,
    });
    Harness {
        dir,
        rt,
        app: router(state.clone()),
        journal,
        state,
    }
}

/// Send one request from loopback; the status, headers and body.
pub fn send(
    h: &Harness,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (http::StatusCode, http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
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
