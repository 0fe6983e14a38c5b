//! Wiring: state, the router, and the serve loop (journal -> archive delivery alongside).

use crate::capture::Recorder;
use crate::config::{Config, LoggingMode};
use crate::control::LoggingConfigs;
use crate::identity::Principals;
use crate::routing::Routes;
use crate::{bedrock, openai};
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http::HeaderMap;
use logbook_delivery::archive::ArchiveFormat;
use logbook_delivery::cloudwatch::{CloudWatchFormat, CloudWatchTarget};
use logbook_delivery::parquet::ParquetFormat;
use logbook_delivery::trail::TrailFormat;
use logbook_delivery::Bucket;
use logbook_delivery::{Destination, DestinationConfig, DestinationStats, GcCoordinator};
use logbook_journal::{Journal, JournalConfig, SyncMode};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Shared state of the handlers.
pub struct AppState {
    /// Configuration.
    pub config: Config,
    /// Journal committer.
    pub recorder: Recorder,
    /// Caller resolution.
    pub principals: Principals,
    /// The invoke core: what the runtime APIs' handlers get.
    pub invoker: crate::invoke::Invoker,
    /// Journal (for status).
    pub journal: Journal,
    /// Delivery counters, by destination name.
    pub destinations: Vec<(String, Arc<DestinationStats>)>,
    /// The log-group store's delivery counters (its cursor is `store`).
    pub store_delivery: Arc<DestinationStats>,
    /// What redaction masked, per destination and detector.
    pub redactions: Vec<(String, Arc<logbook_redact::Counts>)>,
    /// The profile reads at content level `redacted` go through (`[redaction.analyst]`,
    /// else every built-in detector).
    pub analyst_redactor: Arc<logbook_redact::Redactor>,
    /// Logging configurations per (account, region).
    pub logging: Arc<LoggingConfigs>,
    /// Declared buckets.
    pub buckets: HashMap<String, Bucket>,
    /// Log groups in a CloudWatch Logs service (`[[log_groups]]`), with their clients.
    pub remote_log_groups: HashMap<String, logbook_cloudwatch::LogsClient>,
    /// Journal garbage collection across destinations.
    pub gc: Arc<GcCoordinator>,
    /// The journal's disk budget.
    pub budget: crate::budget::BudgetStatus,
    /// Log groups.
    pub store: Arc<logbook_store::Store>,
    /// Queries over the log groups and the archive, on their own threads and limits.
    pub engine: Arc<logbook_query::QueryService>,
    /// Logs Insights queries started through the CloudWatch Logs API.
    pub queries: crate::logs_api::Queries,
    /// Request bytes buffered before authentication, across requests.
    pub buffers: crate::http_util::BufferBudget,
    /// Bedrock's runtime metrics of the calls served (`/metrics`).
    pub metrics: Arc<logbook_ops::Metrics>,
    /// Spend limits and their state.
    pub budgets: Arc<logbook_ops::budgets::Budgets>,
    /// Metric alarms.
    pub alarms: Arc<crate::alarms::Alarms>,
    /// Metric filters over log groups.
    pub metric_filters: Arc<crate::metric_filters::MetricFilters>,
    /// Console sessions.
    pub sessions: crate::console::Sessions,
    /// Lifecycle rules' counters, by bucket.
    pub lifecycle: BTreeMap<String, Arc<logbook_bucket::lifecycle::Stats>>,
    /// This replica's node-id claim in the cluster home (`[cluster]`).
    pub claim: Option<Arc<std::sync::Mutex<crate::cluster::ClaimHealth>>>,
    /// The other replicas' stores, as this one's queries read them.
    pub peers: Option<Arc<logbook_cluster::store::Peers>>,
    /// The publication of this replica's store to the home.
    pub mirror: Option<Arc<std::sync::Mutex<logbook_cluster::store::MirrorHealth>>>,
    /// Log groups and retention shared with the other replicas (`[cluster]`).
    pub shared_groups: Option<Arc<crate::shared_groups::SharedGroups>>,
    /// Budgets' definitions shared with the other replicas (`[cluster]`).
    pub shared_budgets: Option<Arc<crate::shared_budgets::SharedBudgets>>,
}

impl AppState {
    /// Every journal sink's counters: the destinations, then the log-group store.
    pub fn sinks(&self) -> impl Iterator<Item = (&str, &Arc<DestinationStats>)> {
        self.destinations
            .iter()
            .map(|(n, d)| (n.as_str(), d))
            .chain(std::iter::once((
                logbook_store::ingest::NAME,
                &self.store_delivery,
            )))
    }
}

/// Shared state handle.
pub type Shared = Arc<AppState>;

impl axum::extract::FromRef<Shared> for crate::invoke::Invoker {
    fn from_ref(s: &Shared) -> Self {
        s.invoker.clone()
    }
}

/// What a build may take from elsewhere than the configuration (tests: a simulated disk).
#[derive(Default)]
pub struct BuildOptions {
    /// The journal's disk (the operating system's when `None`).
    pub journal_disk: Option<Arc<dyn logbook_journal::Disk>>,
    /// Local buckets' disk (the journal's when `None`).
    pub bucket_disk: Option<Arc<dyn logbook_journal::Disk>>,
}

/// An application built from its configuration: the state the router serves, and the
/// background work (delivery, the store's ingest, alarms, budgets, the destination
/// watcher) that [`Running::shutdown`] stops and drains.
pub struct Running {
    /// The handlers' state.
    pub state: Shared,
    /// A generated admin credential, when it was created by this start (printed once).
    pub admin: Option<crate::auth::AdminCredentials>,
    stop_tx: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<Result<(), logbook_delivery::DeliveryError>>>,
    store_task: tokio::task::JoinHandle<Result<(), logbook_delivery::DeliveryError>>,
    store_maintenance: tokio::task::JoinHandle<()>,
    alarm_task: tokio::task::JoinHandle<()>,
    spend_task: Option<tokio::task::JoinHandle<()>>,
    watcher: tokio::task::JoinHandle<()>,
    lifecycle_tasks: Vec<tokio::task::JoinHandle<()>>,
    cluster: Option<ClusterRun>,
    _lock: DataLock,
}

/// The claim's renewal while serving (`[cluster]`).
struct ClusterRun {
    /// Ends the renewals and releases the claim: sent last.
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// Ends the refresh and the store's mirror (after a last publish): sent after the
    /// store's final flush.
    stop_rest: watch::Sender<bool>,
    /// Publishes this replica's store to the home.
    mirror: Option<tokio::task::JoinHandle<()>>,
    /// Re-reads what the replicas share.
    refresh: Option<tokio::task::JoinHandle<()>>,
    /// Set when another process took the claim.
    lost: watch::Receiver<bool>,
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// I/O.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Journal.
    #[error(transparent)]
    Journal(#[from] logbook_journal::JournalError),
    /// Routing.
    #[error(transparent)]
    Routing(#[from] crate::routing::RoutingError),
    /// Object store.
    #[error("archive store: {0}")]
    Store(#[from] object_store::Error),
    /// Delivery.
    #[error(transparent)]
    Delivery(#[from] logbook_delivery::DeliveryError),
    /// A declaration that cannot be used.
    #[error("{0}")]
    Config(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let context = context.into();
    move |source| ServeError::Io { context, source }
}

/// Prompts and answers live below this folder: owner only, also when it existed before.
/// A folder whose mode cannot be changed (a read-only or foreign mount) is left as it is,
/// with a warning; whether it can be written is checked where it is used.
fn owner_only(dir: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
            tracing::warn!(folder = %dir.display(), error = %e, "could not make the folder private (0700)");
        }
    }
}

/// The key that signs checkpoints: read from `path`, or, when the file does not exist, a
/// new one written there (0600) with its public key beside it (`<name>.pub.pem`).
pub fn signing_key(path: &std::path::Path) -> Result<logbook_notary::SigningKey, ServeError> {
    use logbook_notary::SigningKey;
    let bad =
        |m: String| ServeError::Config(format!("integrity signing key {}: {m}", path.display()));
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pem = SigningKey::generate_pem().map_err(|e| bad(e.to_string()))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
                owner_only(dir);
            }
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                o.mode(0o600);
            }
            let mut f = o
                .open(path)
                .map_err(io(format!("create {}", path.display())))?;
            std::io::Write::write_all(&mut f, pem.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(io(format!("write {}", path.display())))?;
            let key = SigningKey::from_pem(&pem).map_err(|e| bad(e.to_string()))?;
            let public = public_key_path(path);
            std::fs::write(&public, key.public_pem())
                .map_err(io(format!("write {}", public.display())))?;
            tracing::info!(key_id = key.id(), public_key = %public.display(), "generated a checkpoint signing key; keep a copy of the public key where auditors can get it");
            pem
        }
        Err(e) => return Err(bad(e.to_string())),
    };
    SigningKey::from_pem(&text).map_err(|e| bad(e.to_string()))
}

/// `signing-key.pem` -> `signing-key.pub.pem`.
pub fn public_key_path(private: &std::path::Path) -> std::path::PathBuf {
    let stem = private.file_stem().map_or_else(
        || "signing-key".into(),
        |s| s.to_string_lossy().into_owned(),
    );
    private.with_file_name(format!("{stem}.pub.pem"))
}

/// An exclusive lock on a whole data folder (`<data>/LOCK`), held for as long as the
/// value lives: one writer per data folder. Taken before anything in the folder is opened,
/// so a second `serve` (or `import`) cannot touch a live server's journal.
#[derive(Debug)]
pub struct DataLock {
    _file: std::fs::File,
}

impl DataLock {
    /// Take the lock, or say which folder is in use.
    pub fn acquire(data_dir: &std::path::Path) -> Result<DataLock, ServeError> {
        std::fs::create_dir_all(data_dir)
            .map_err(io(format!("create data folder {}", data_dir.display())))?;
        let path = data_dir.join("LOCK");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(format!("open {}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(DataLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(ServeError::Io {
                context: format!(
                    "the data folder {} is in use by another logbook process (serve or import); one process may write a data folder at a time",
                    data_dir.display()
                ),
                source: std::io::Error::from(std::io::ErrorKind::WouldBlock),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(ServeError::Io {
                context: format!("lock {}", path.display()),
                source: e,
            }),
        }
    }
}

/// The node id: configured, or generated once and kept in the data folder.
fn node_id(config: &Config) -> Result<String, ServeError> {
    if let Some(n) = &config.node_id {
        return Ok(n.clone());
    }
    let path = config.data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        // Object keys depend on the id: a file that exists but cannot be read (or is
        // empty) stops the server rather than silently starting a second identity.
        Ok(_) => Err(ServeError::Io {
            context: format!("{} is empty; restore it or remove it", path.display()),
            source: std::io::Error::from(std::io::ErrorKind::InvalidData),
        }),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io(format!("read the node id {}", path.display()))(e))
        }
        Err(_) => {
            let id = format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            // Object keys depend on the node id: make it durable before anything uses it.
            let tmp = config.data_dir.join(".node-id.tmp");
            let write = || -> std::io::Result<()> {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(id.as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                std::fs::File::open(&config.data_dir)?.sync_all()
            };
            write().map_err(io("write node id"))?;
            Ok(id)
        }
    }
}

/// Free bytes of the file system holding `dir`, if it can be asked.
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    #[cfg(unix)]
    {
        rustix::fs::statvfs(dir)
            .ok()
            .map(|v| v.f_bavail.saturating_mul(v.f_frsize))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Every second: a destination that became stalled, or recovered, gets a trail event
/// (`eventSource` `logbook`, `eventType` `AwsServiceEvent`, the last error as its message).
async fn watch_destinations(s: Shared) {
    let mut stalled: HashMap<String, bool> = HashMap::new();
    let mut parked: HashMap<String, u64> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        crate::budget::enforce(&s).await;
        for (name, d) in s.sinks() {
            let name = name.to_string();
            let p = d.parked.load(Ordering::Relaxed);
            let was_parked = parked.insert(name.clone(), p).unwrap_or(0);
            if p > was_parked {
                let ev = service_event(
                    &s,
                    "DeliveryParked",
                    serde_json::json!({"destination": name, "parked": p - was_parked, "parkedTotal": p,
                        "folder": format!("journal/parked/{name}")}),
                    Some(("DeliveryParked", d.last_error())),
                );
                if let Err(e) = s.recorder.commit_event(ev).await {
                    tracing::error!(destination = %name, error = %e, "could not record parked entries in the trail");
                }
            }
            let now = d.stalled();
            let was = stalled.insert(name.clone(), now).unwrap_or(false);
            if now == was {
                continue;
            }
            let ev = service_event(
                &s,
                if now {
                    "DeliveryStalled"
                } else {
                    "DeliveryResumed"
                },
                serde_json::json!({
                    "destination": name,
                    "cursor": d.cursor.load(Ordering::Relaxed),
                    "consecutiveFailures": d.consecutive_failures.load(Ordering::Relaxed),
                }),
                now.then(|| ("DeliveryStalled", d.last_error())),
            );
            if let Err(e) = s.recorder.commit_event(ev).await {
                tracing::error!(destination = %name, error = %e, "could not record a delivery stall in the trail");
            }
            if now {
                tracing::error!(destination = %name, error = ?d.last_error(), "delivery is stalled");
            } else {
                tracing::info!(destination = %name, "delivery resumed");
            }
        }
    }
}

/// A trail event of Logbook itself (`eventSource` `logbook`, `eventType` `AwsServiceEvent`).
pub(crate) fn service_event(
    s: &Shared,
    name: &str,
    params: serde_json::Value,
    error: Option<(&str, Option<String>)>,
) -> logbook_record::trail::TrailEvent {
    let (error_code, error_message) = match error {
        Some((c, m)) => (Some(c.to_string()), m),
        None => (None, None),
    };
    logbook_record::trail::TrailEvent {
        event_version: logbook_record::trail::EVENT_VERSION.into(),
        user_identity: logbook_record::trail::UserIdentity {
            kind: "AWSService".into(),
            arn: String::new(),
            account_id: s.config.account_id.clone(),
            access_key_id: None,
        },
        event_time: logbook_record::record_timestamp(time::OffsetDateTime::now_utc()),
        event_source: "logbook".into(),
        event_name: name.into(),
        aws_region: s.config.region.clone(),
        source_ip_address: "logbook".into(),
        user_agent: "logbook".into(),
        request_parameters: params,
        response_elements: serde_json::Value::Null,
        error_code,
        error_message,
        request_id: uuid::Uuid::new_v4().to_string(),
        event_id: uuid::Uuid::new_v4().to_string(),
        read_only: false,
        event_type: "AwsServiceEvent".into(),
        management_event: true,
        recipient_account_id: s.config.account_id.clone(),
        event_category: "Management".into(),
        additional_event_data: None,
    }
}

/// `/healthz` says `disk-full` (503) below this many free bytes in the journal's file system.
const DISK_FULL_BELOW: u64 = 256 * 1024;

/// One destination's delivery health, with Bedrock's delivery metric names.
fn destination_health(
    name: &str,
    d: &DestinationStats,
    committed: u64,
    now_ms: u64,
) -> serde_json::Value {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let cursor = load(&d.cursor);
    let oldest = load(&d.oldest_pending_ms);
    let (kind, success, failure) = if name.starts_with("cloudwatch-") {
        (
            "cloudwatch",
            "ModelInvocationLogsCloudWatchDeliverySuccess",
            "ModelInvocationLogsCloudWatchDeliveryFailure",
        )
    } else if name == "trail" {
        ("trail", "TrailDeliverySuccess", "TrailDeliveryFailure")
    } else if name == logbook_store::ingest::NAME {
        // The embedded log groups: Logbook's own CloudWatch Logs.
        (
            "log-groups",
            "LogGroupDeliverySuccess",
            "LogGroupDeliveryFailure",
        )
    } else {
        (
            "s3",
            "ModelInvocationLogsS3DeliverySuccess",
            "ModelInvocationLogsS3DeliveryFailure",
        )
    };
    // The error's text names buckets and endpoints, never credentials.
    let last_error = d
        .last_error()
        .map(|e| e.chars().take(300).collect::<String>());
    serde_json::json!({
        "kind": kind,
        "records": load(&d.records),
        "entries": load(&d.entries),
        "objects": load(&d.objects),
        "bytes": load(&d.bytes),
        "failures": load(&d.failures),
        "retries": load(&d.retries),
        "cursor": cursor,
        "backlog": {
            "entries": committed.saturating_sub(cursor),
            "oldestAgeSeconds": (oldest > 0).then(|| now_ms.saturating_sub(oldest) / 1000),
        },
        "consecutiveFailures": load(&d.consecutive_failures),
        "stalled": d.stalled(),
        "permanentFailure": d.permanent(),
        "lastError": last_error,
        "parked": load(&d.parked),
        "rejected": load(&d.rejected),
        "lost": load(&d.lost),
        "metrics": {
            success: load(&d.records),
            failure: load(&d.failures),
            "ModelInvocationLargeDataS3DeliverySuccess": load(&d.large_data),
            "ModelInvocationLargeDataS3DeliveryFailure": load(&d.large_data_failures),
        },
    })
}

/// Bedrock's log-delivery metrics (no dimension), summed over the destinations of each
/// kind, read at every scrape.
fn delivery_metrics(
    destinations: Vec<(String, Arc<DestinationStats>)>,
) -> logbook_ops::metrics::DeliverySource {
    use logbook_ops::metrics::DeliverySample;
    Arc::new(move || {
        let sum = |cloudwatch: bool, f: fn(&DestinationStats) -> u64| -> u64 {
            destinations
                .iter()
                .filter(|(n, _)| n != "trail" && n.starts_with("cloudwatch-") == cloudwatch)
                .map(|(_, d)| f(d))
                .sum()
        };
        vec![
            DeliverySample {
                name: "bedrock_model_invocation_logs_s3_delivery_success",
                help: "Records delivered to S3 buckets (Bedrock ModelInvocationLogsS3DeliverySuccess)",
                value: sum(false, |d| d.records.load(Ordering::Relaxed)),
            },
            DeliverySample {
                name: "bedrock_model_invocation_logs_s3_delivery_failure",
                help: "Failed S3 delivery attempts (Bedrock ModelInvocationLogsS3DeliveryFailure)",
                value: sum(false, |d| d.failures.load(Ordering::Relaxed)),
            },
            DeliverySample {
                name: "bedrock_model_invocation_logs_cloudwatch_delivery_success",
                help: "Records delivered to CloudWatch Logs (Bedrock ModelInvocationLogsCloudWatchDeliverySuccess)",
                value: sum(true, |d| d.records.load(Ordering::Relaxed)),
            },
            DeliverySample {
                name: "bedrock_model_invocation_logs_cloudwatch_delivery_failure",
                help: "Failed CloudWatch Logs delivery attempts (Bedrock ModelInvocationLogsCloudWatchDeliveryFailure)",
                value: sum(true, |d| d.failures.load(Ordering::Relaxed)),
            },
            DeliverySample {
                name: "bedrock_model_invocation_large_data_s3_delivery_success",
                help: "Large bodies written to S3 for CloudWatch Logs (Bedrock ModelInvocationLargeDataS3DeliverySuccess)",
                value: sum(true, |d| d.large_data.load(Ordering::Relaxed)),
            },
            DeliverySample {
                name: "bedrock_model_invocation_large_data_s3_delivery_failure",
                help: "Failed large-body writes (Bedrock ModelInvocationLargeDataS3DeliveryFailure)",
                value: sum(true, |d| d.large_data_failures.load(Ordering::Relaxed)),
            },
        ]
    })
}

/// Reading operational data (metrics, budgets) needs `logs:read`: the refusal, if any.
fn require_logs_read(caller: &crate::identity::Caller, what: &str) -> Option<Response> {
    if caller.permissions.logs_read {
        return None;
    }
    Some(crate::http_util::aws_error(
        logbook_wire::aws::AwsErrorCode::AccessDeniedException,
        &format!(
            "User: {} is not authorized to read {what} (permission logs:read)",
            caller.arn
        ),
        &uuid::Uuid::new_v4().to_string(),
    ))
}

/// `GET /logbook/budgets`: each budget's limit, spend and reservations in its current
/// period (`logs:read`).
async fn budgets_status(
    State(s): State<Shared>,
    axum::Extension(caller): axum::Extension<crate::identity::Caller>,
) -> Response {
    if let Some(r) = require_logs_read(&caller, "budgets") {
        return r;
    }
    let now = logbook_store::now_ms();
    let mut out = Vec::new();
    let shared = s.shared_budgets.as_ref().map(|sb| sb.set());
    for st in s.budgets.status(now) {
        let mut v = serde_json::to_value(&st).unwrap_or_default();
        // Replicas: who declares the budget and who last set its definition.
        if let (Some(b), Some(o)) = (
            shared.as_ref().and_then(|m| m.get(&st.name)),
            v.as_object_mut(),
        ) {
            o.insert("declaredBy".into(), serde_json::json!(b.declared_by));
            o.insert("changedBy".into(), b.changed_by.clone().into());
            o.insert("changedAtMs".into(), b.changed_at.into());
        }
        // Replicas: what all of them spent and hold, from the shared ledger.
        if let (Some(ledger), Some(o)) = (s.recorder.ledger(), v.as_object_mut()) {
            let limit = logbook_ops::budgets::parse_usd(&st.limit).unwrap_or_default();
            match ledger.state(&st.name, st.period_start).await {
                Ok((spent, reserved)) => {
                    o.insert(
                        "cluster".into(),
                        serde_json::json!({
                            "spent": logbook_ops::budgets::usd(spent),
                            "reserved": logbook_ops::budgets::usd(reserved),
                            "percent": (spent.max(0) * 100 / limit.max(1)) as u64,
                        }),
                    );
                }
                Err(e) => {
                    o.insert("clusterError".into(), e.to_string().into());
                }
            }
        }
        out.push(v);
    }
    let mut body = serde_json::json!({"budgets": out});
    if let Some(sb) = &s.shared_budgets {
        // Where this replica's config file says something else than the cluster's set.
        body["drift"] = serde_json::json!(sb.drift());
    }
    if let Some(ledger) = s.recorder.ledger() {
        // The shared ledger's epoch, and how often this replica rebuilt it since its start.
        body["ledger"] =
            serde_json::json!({"epoch": ledger.epoch(), "rebuilds": ledger.rebuilds()});
    }
    axum::Json(body).into_response()
}

/// `GET /metrics`: the OpenMetrics text Prometheus scrapes. Authenticated like the rest
/// of the API (`logs:read`): counts and costs by model are business data.
async fn metrics_text(
    State(s): State<Shared>,
    axum::Extension(caller): axum::Extension<crate::identity::Caller>,
) -> Response {
    if let Some(r) = require_logs_read(&caller, "metrics") {
        return r;
    }
    match s.metrics.encode() {
        Ok(text) => (
            [(
                http::header::CONTENT_TYPE,
                logbook_ops::metrics::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(_) => http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn healthz(State(s): State<Shared>) -> Response {
    let journal_ok = s.journal.is_healthy();
    // Less room than a large record takes: appends are failing or about to.
    let free = free_bytes(&s.config.data_dir.join("journal"));
    let disk_full = free.is_some_and(|f| f < DISK_FULL_BELOW);
    let stalled: Vec<&str> = s
        .sinks()
        .filter(|(_, d)| d.stalled())
        .map(|(n, _)| n)
        .collect();
    let over_budget = s.budget.refusing.load(Ordering::Relaxed);
    let claim = s
        .claim
        .as_ref()
        .map(|c| c.lock().unwrap_or_else(|e| e.into_inner()).clone());
    let claim_lost = claim.as_ref().is_some_and(|c| c.lost);
    let healthy = journal_ok && !disk_full && !over_budget && !claim_lost;
    let status = if claim_lost {
        // Another process writes as this node now; this one is stopping.
        "claim-lost"
    } else if !journal_ok {
        "journal-unavailable"
    } else if disk_full {
        "disk-full"
    } else if over_budget {
        // Calls are refused (fail-closed) until the destination catches up.
        "over-budget"
    } else if !stalled.is_empty() {
        // Calls are still served and recorded; delivery (and journal GC) stands still.
        "degraded"
    } else {
        "ok"
    };
    let st = s.journal.stats();
    let committed = *s.journal.committed().borrow();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let body = serde_json::json!({
        "status": status,
        "stalledDestinations": stalled,
        "diskFreeBytes": free,
        "journal": {
            "committed": *s.journal.committed().borrow() - 1,
            "entries": st.entries.load(Ordering::Relaxed),
            "batches": st.batches.load(Ordering::Relaxed),
            "fsyncs": st.syncs.load(Ordering::Relaxed),
            "fsyncMicros": st.sync_nanos.load(Ordering::Relaxed) / 1000,
            "fsyncMaxMicros": st.sync_max_nanos.load(Ordering::Relaxed) / 1000,
            "rolls": st.rolls.load(Ordering::Relaxed),
            "rollsUnprepared": st.rolls_unprepared.load(Ordering::Relaxed),
            "bytes": s.budget.bytes.load(Ordering::Relaxed),
            "maxBytes": s.config.journal_max_bytes,
            "overBudget": s.budget.refusing.load(Ordering::Relaxed),
            "lostEntries": s.budget.lost.load(Ordering::Relaxed),
            // Who holds the journal: each sink's next undelivered sequence.
            "cursors": s.gc.cursors().into_iter().filter(|(_, c)| *c != u64::MAX).collect::<std::collections::BTreeMap<_, _>>(),
            "floor": s.gc.floor(),
        },
        "destinations": s.destinations.iter().map(|(name, d)| (name.clone(), destination_health(name, d, committed, now_ms))).collect::<serde_json::Map<_, _>>(),
        // Unauthenticated endpoint: name the drifted regions, not their configurations
        // (`logbook config diff` shows those).
        "drift": s.logging.drift().iter().map(|d| serde_json::json!({"accountId": d.account_id, "region": d.region})).collect::<Vec<_>>(),
        "store": {
            "records": s.store.stats.records.load(Ordering::Relaxed),
            "dropped": s.store.stats.dropped.load(Ordering::Relaxed),
            "flushes": s.store.stats.flushes.load(Ordering::Relaxed),
            // Freed memory handed back to the system (after flushes, during merges).
            "memoryReleases": s.store.stats.memory_releases.load(Ordering::Relaxed),
            "durableSeq": s.store.durable_seq(),
            // Its place as a journal sink: cursor, backlog, failures, last error.
            "delivery": destination_health(logbook_store::ingest::NAME, &s.store_delivery, committed, now_ms),
            // What each group keeps: records for `retentionInDays`, bodies for
            // `bodyRetentionDays` (none: as long as the records).
            "logGroups": s.store.groups().into_iter().map(|g| {
                let body = s.store.body_retention_days(&g.name);
                (g.name, serde_json::json!({
                    "retentionInDays": g.retention_in_days,
                    "bodyRetentionDays": body,
                    "records": g.records,
                    "storedBytes": g.stored_bytes,
                }))
            }).collect::<serde_json::Map<_, _>>(),
        },
        "lifecycle": s.lifecycle.iter().map(|(b, st)| {
            let rule = &s.config.lifecycle[b];
            let days = |d: Option<Duration>| d.map(|d| d.as_secs() / 86_400);
            (b.clone(), serde_json::json!({
                "transitionAfterDays": days(rule.transition_after),
                "transitionTo": rule.transition_to,
                "expireAfterDays": days(rule.expire_after),
                "intervalSeconds": rule.interval.as_secs(),
                "passes": st.passes.load(Ordering::Relaxed),
                "transitioned": st.transitioned.load(Ordering::Relaxed),
                "transitionedBytes": st.transitioned_bytes.load(Ordering::Relaxed),
                "expired": st.expired.load(Ordering::Relaxed),
                "expiredBytes": st.expired_bytes.load(Ordering::Relaxed),
                "lastPassMs": st.last_pass_ms.load(Ordering::Relaxed),
                "lastError": st.last_error(),
            }))
        }).collect::<serde_json::Map<_, _>>(),
        "queries": {
            "inFlight": s.engine.in_flight(),
            "memoryBytes": s.engine.memory_in_use(),
            "admitted": s.engine.stats.admitted.load(Ordering::Relaxed),
            "refused": s.engine.stats.refused.load(Ordering::Relaxed),
            "timedOut": s.engine.stats.timed_out.load(Ordering::Relaxed),
            "cancelled": s.engine.stats.cancelled.load(Ordering::Relaxed),
        },
        // What redaction masked, per destination and detector.
        "redactions": s.redactions.iter().map(|(d, c)| (d.clone(), serde_json::Value::Object(c.snapshot().into_iter().map(|(k, v)| (k, v.into())).collect()))).collect::<serde_json::Map<_, _>>(),
        // Fail-open calls served without a durable record since the start.
        "unrecordedCalls": s.recorder.unrecorded(),
        "mode": match s.recorder.mode() { LoggingMode::Strict => "strict", LoggingMode::Async => "async" },
        // Replicas: this node's claim in the cluster home, and whether the shared state
        // (logging configurations) could be re-read (null when standing alone).
        "cluster": match claim {
            None => serde_json::Value::Null,
            Some(c) => {
                let mut v = serde_json::to_value(c).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("sharedStateError".into(), s.logging.shared_error().into());
                    if let Some(g) = &s.shared_groups {
                        o.insert("sharedGroupsError".into(), g.last_error().into());
                    }
                    if let Some(b) = &s.shared_budgets {
                        o.insert("sharedBudgetsError".into(), b.last_error().into());
                    }
                    if let Some(a) = s.alarms.evaluator() {
                        o.insert("alarmEvaluator".into(), serde_json::to_value(a).unwrap_or_default());
                    }
                    if let Some(m) = &s.mirror {
                        let m = m.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        o.insert("published".into(), serde_json::to_value(m).unwrap_or_default());
                    }
                    if let Some(p) = &s.peers {
                        // Each other replica read, with the journal position it published.
                        o.insert("peers".into(), serde_json::json!(p.nodes().await));
                        o.insert("skippedPeers".into(), serde_json::json!(p.errors()));
                        o.insert("peerCache".into(), serde_json::json!(p.cache_health()));
                    }
                }
                v
            }
        },
    });
    let status = if healthy {
        http::StatusCode::OK
    } else {
        http::StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn not_found(ConnectInfo(_addr): ConnectInfo<SocketAddr>, uri: http::Uri) -> Response {
    let path = uri.path();
    let id = uuid::Uuid::new_v4().to_string();
    if path.starts_with("/v1/") || path.starts_with("/openai/") {
        crate::http_util::openai_error(
            &logbook_wire::openai::OpenAiError {
                status: 404,
                message: format!("Unknown request URL: {path}"),
                kind: "invalid_request_error",
                code: Some("unknown_url"),
                param: None,
            },
            &id,
        )
    } else {
        let mut r = crate::http_util::aws_error(
            logbook_wire::aws::AwsErrorCode::ResourceNotFoundException,
            &format!("Unknown operation for path {path}"),
            &id,
        );
        crate::http_util::set_header(
            &mut r,
            "x-amzn-errortype",
            "UnknownOperationException:http://internal.amazon.com/coral/com.amazon.bedrock/",
        );
        r
    }
}

/// The application router.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/model/{model_id}/converse", post(bedrock::converse))
        .route(
            "/model/{model_id}/converse-stream",
            post(bedrock::converse_stream),
        )
        .route("/model/{model_id}/invoke", post(bedrock::invoke))
        .route(
            "/model/{model_id}/count-tokens",
            post(bedrock::count_tokens),
        )
        .route(
            "/model/{model_id}/invoke-with-response-stream",
            post(bedrock::invoke_stream),
        )
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/responses", post(openai::responses))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/messages", post(crate::anthropic_api::messages))
        .route(
            "/v1/messages/count_tokens",
            post(crate::anthropic_api::count_tokens),
        )
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{*model}", get(openai::model))
        .route(
            "/logging/modelinvocations",
            get(crate::control_api::get)
                .put(crate::control_api::put)
                .delete(crate::control_api::delete),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/logbook/budgets", get(budgets_status))
        .route(
            "/service/{service}/operation/{op}",
            post(crate::metrics_api::handle),
        )
        .route("/", post(crate::logs_api::handle))
        .route("/logbook/query", post(crate::logs_api::http_query))
        .route(
            "/logbook/report/chargeback",
            post(crate::logs_api::http_chargeback),
        )
        .route(
            "/logbook/report/overview",
            post(crate::logs_api::http_overview),
        )
        .route("/console", get(crate::console::page))
        .route("/console/", get(crate::console::page))
        .route("/console/assets/{name}", get(crate::console::asset))
        .route(
            "/console/api/session",
            get(crate::console::session)
                .post(crate::console::sign_in)
                .delete(crate::console::sign_out),
        )
        .route("/console/api/query", post(crate::logs_api::http_query))
        .route(
            "/console/api/chargeback",
            post(crate::logs_api::http_chargeback),
        )
        .route(
            "/console/api/overview",
            post(crate::logs_api::http_overview),
        )
        .route("/console/api/budgets", get(budgets_status))
        .route("/console/api/alarms", get(crate::console::alarms))
        .route("/console/api/logging", get(crate::control_api::get))
        .route("/console/api/trail", get(crate::console::trail))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authenticate,
        ))
        .layer(axum::middleware::from_fn(shape_method_errors))
        .with_state(state)
}

/// axum answers a known path with the wrong method with an empty 405: give it the shape
/// of the API the path belongs to.
async fn shape_method_errors(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let target = req.headers().get("x-amz-target").cloned();
    let r = next.run(req).await;
    if r.status() != http::StatusCode::METHOD_NOT_ALLOWED {
        return r;
    }
    let mut headers = HeaderMap::new();
    if let Some(t) = target {
        headers.insert("x-amz-target", t);
    }
    let mut out = crate::auth::api_error(
        &path,
        &headers,
        405,
        "UnknownOperationException",
        &format!("{method} is not supported on {path}"),
    );
    if let Some(allow) = r.headers().get(http::header::ALLOW) {
        out.headers_mut().insert(http::header::ALLOW, allow.clone());
    }
    out
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// `name` with every byte but `[A-Za-z0-9._-]` as `%XX`: a file name.
fn file_safe(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A client for a `[[log_groups]]` declaration: its own credentials, else the environment,
/// else the shared credentials file, else web identity (EKS), the container endpoint (ECS)
/// or the instance metadata service (EC2), as the AWS SDKs look. Those last are temporary
/// and refreshed as they expire; they are fetched once here (within a few seconds), so a
/// machine with none of them is told at start, not at the first delivery.
pub async fn logs_client(
    name: &str,
    spec: &crate::config::RemoteLogGroup,
) -> Result<logbook_cloudwatch::LogsClient, ServeError> {
    let credentials = match (&spec.access_key_id, &spec.secret_access_key) {
        (Some(id), Some(secret)) => {
            logbook_cloudwatch::LogsCredentials::Static(logbook_cloudwatch::AwsCredentials {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
                session_token: spec.session_token.clone(),
            })
        }
        _ => {
            let env: HashMap<String, String> = std::env::vars().collect();
            match logbook_wire::credentials::credentials_from(&env, |p| {
                std::fs::read_to_string(p).ok()
            }) {
                Some(c) => logbook_cloudwatch::LogsCredentials::Static(c),
                None => ambient_credentials(name, &spec.region).await?,
            }
        }
    };
    logbook_cloudwatch::LogsClient::new(logbook_cloudwatch::LogsEndpoint {
        url: spec.endpoint.clone(),
        region: spec.region.clone(),
        credentials,
        timeout: Duration::from_secs(30),
    })
    .map_err(|e| ServeError::Config(format!("log group {name:?}: {e}")))
}

/// Web identity, container or instance credentials, through `object_store`'s chain (the
/// one S3 buckets use): `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`,
/// `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` / `_FULL_URI`, else IMDSv2 at
/// `AWS_METADATA_ENDPOINT` (default `http://169.254.169.254`).
async fn ambient_credentials(
    name: &str,
    region: &str,
) -> Result<logbook_cloudwatch::LogsCredentials, ServeError> {
    let none = |why: String| {
        ServeError::Config(format!(
            "log group {name:?}: no credentials (set access_key_id and secret_access_key, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a shared credentials file, or run where web identity, container or instance credentials are available: {why})"
        ))
    };
    let s3 = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name("logbook-credentials")
        .with_region(region)
        .build()
        .map_err(|e| none(e.to_string()))?;
    let provider = s3.credentials().clone();
    match tokio::time::timeout(Duration::from_secs(5), provider.get_credential()).await {
        Ok(Ok(_)) => Ok(logbook_cloudwatch::LogsCredentials::Provider(provider)),
        Ok(Err(e)) => Err(none(e.to_string())),
        Err(_) => Err(none("none answered within 5 s".into())),
    }
}

impl AppState {
    /// Open the data folder (locked first), recover, and start everything `serve` runs
    /// but the listener: the one wiring, used by `logbook serve` and by the in-process
    /// tests.
    pub async fn build(config: Config, opts: BuildOptions) -> Result<Running, ServeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(io(format!(
            "create data folder {}",
            config.data_dir.display()
        )))?;
        owner_only(&config.data_dir);
        // Before anything in the folder is opened: the journal's recovery would otherwise
        // repair (zero) a live server's tail.
        let lock = DataLock::acquire(&config.data_dir)?;
        let node = node_id(&config)?;
        let signer = match &config.integrity {
            Some(i) => Some(Arc::new(signing_key(&i.signing_key)?)),
            None => None,
        };
        let notary = |log: &str| {
            signer
                .as_ref()
                .zip(config.integrity.as_ref())
                .map(|(k, i)| {
                    logbook_notary::Notary::new(
                        log,
                        &node,
                        k.clone(),
                        i.checkpoint_every,
                        logbook_delivery::now_ms(),
                    )
                })
        };
        // Encryption at rest: the master keys, read once (a missing or unreadable key file
        // stops the start with its name).
        let keys = Arc::new(config.keyring().map_err(|e| ServeError::Io {
            context: "encryption".into(),
            source: std::io::Error::other(e),
        })?);
        if let Some(id) = keys.active_id() {
            tracing::info!(master_key = id, "journal and store encrypted at rest");
        }
        let mut jcfg = JournalConfig::new(config.data_dir.join("journal"));
        jcfg.segment_bytes = config.segment_bytes;
        jcfg.keys = keys.clone();
        if let Some(d) = opts.journal_disk {
            jcfg.disk = d;
        }
        jcfg.mode = match config.mode {
            LoggingMode::Strict => SyncMode::Strict,
            LoggingMode::Async => SyncMode::Async,
        };
        let journal = Journal::open(jcfg)?;
        let bucket_disk = opts.bucket_disk.unwrap_or_else(|| journal.disk().clone());
        // Replicas: claim this node id in the home bucket before anything is written to
        // any bucket (object keys are derived from it).
        let member = match &config.cluster {
            None => None,
            Some(c) => {
                let spec = config.buckets.get(&c.home).ok_or_else(|| {
                    ServeError::Config(format!("cluster.home {:?} is not declared", c.home))
                })?;
                let home = Bucket::open(&c.home, spec, bucket_disk.clone())
                    .map_err(|e| ServeError::Config(format!("cluster home {}: {e}", c.home)))?;
                Some(crate::cluster::join(c, &home, &node, &config.data_dir, &journal).await?)
            }
        };
        let mut logging = LoggingConfigs::open(
            &config.data_dir.join("control"),
            config.logging_default.clone(),
            config.logging_declared.clone(),
        )
        .map_err(|e| ServeError::Io {
            context: "logging configuration".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        if let Some(m) = &member {
            // Replicas: the home's copy is the one in force.
            logging.join(m.state()).await.map_err(|e| ServeError::Io {
                context: "shared logging configuration".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
        }
        let logging = Arc::new(logging);
        // Replicas: the budgets in force are the cluster's (this config's among them).
        let shared_budgets = match &member {
            None => None,
            Some(m) => Some(Arc::new(
                crate::shared_budgets::SharedBudgets::join(
                    m.state(),
                    &node,
                    config.budgets.clone(),
                    &config.data_dir.join("control"),
                    logbook_store::now_ms(),
                )
                .await
                .map_err(|e| ServeError::Config(format!("shared budgets: {e}")))?,
            )),
        };
        let claim_health = member.as_ref().map(|m| m.health());
        let home_bucket = member.as_ref().map(|m| m.home().clone());
        let mut cluster = member.map(|m| {
            let (stop, stop_rx) = watch::channel(false);
            let (stop_rest, _) = watch::channel(false);
            let (lost_tx, lost) = watch::channel(false);
            ClusterRun {
                refresh: None,
                stop,
                stop_rest,
                mirror: None,
                task: tokio::spawn(m.run(journal.clone(), stop_rx, lost_tx)),
                lost,
            }
        });

        // Streams a crash interrupted get their records now, before anything may collect the
        // journal segments that hold their start entries.
        let recovered = crate::capture::recover_interrupted_streams(&journal, &config.pricing)
            .await
            .map_err(|e| ServeError::Io {
                context: "recover interrupted streams".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
        if recovered > 0 {
            tracing::warn!(
                streams = recovered,
                "recorded streams interrupted by the last stop"
            );
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let gc = Arc::new(GcCoordinator::default());
        // Budgets: their last state, plus every record journaled after it, before any
        // destination may collect the journal (the budgets hold it from their sequence on).
        let budgets = logbook_ops::budgets::Budgets::new(match &shared_budgets {
            Some(sb) => sb.specs(),
            None => config.budgets.clone(),
        });
        // A replica enforces budgets whenever it has a home: another replica may declare
        // one at any time.
        let budgets_on = !budgets.is_empty() || shared_budgets.is_some();
        let mut replayed_crossings = Vec::new();
        if budgets_on {
            let (replayed, crossed) = crate::spend::restore(&config.data_dir, &journal, &budgets)
                .await
                .map_err(|e| ServeError::Io {
                    context: "budget state".into(),
                    source: std::io::Error::other(e),
                })?;
            gc.set(crate::spend::GC_NAME, budgets.applied_through() + 1);
            replayed_crossings = crossed;
            tracing::info!(replayed, "budgets restored");
        }
        // Log groups: the live store, fed from the journal.
        let store = Arc::new(
            logbook_store::Store::open_on(
                logbook_store::RealDisk::shared(),
                config.data_dir.join("store"),
                keys.clone(),
            )
            .map_err(|e| ServeError::Io {
                context: "log group store".into(),
                source: std::io::Error::other(e.to_string()),
            })?,
        );
        if let Some(r) = &config.release_memory {
            store.set_release_memory(r.0.clone());
        }
        store
            .set_body_retention(config.body_retention.clone())
            .map_err(|e| ServeError::Io {
                context: "body retention".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
        for g in &config.log_groups {
            store.ensure_group(g).map_err(|e| ServeError::Io {
                context: format!("log group {g}"),
                source: std::io::Error::other(e.to_string()),
            })?;
        }
        let mut redactions: Vec<(String, Arc<logbook_redact::Counts>)> = Vec::new();
        // The store is a sink like the others: the one journal follower (`Destination`)
        // feeds it, from the store's own durable position, before any other destination
        // may collect journal garbage.
        let (store_task, store_maintenance, store_delivery) = {
            let mut ingest_config = config.store_ingest.clone();
            ingest_config.redactor = config.redaction.for_name(config.redaction.store.as_ref());
            if let Some(r) = &ingest_config.redactor {
                redactions.push(("log-groups".to_string(), r.counts()));
            }
            let dest = logbook_store::ingest::destination(
                store.clone(),
                journal.clone(),
                &ingest_config,
                gc.clone(),
            )?;
            let stats = dest.stats();
            (
                tokio::spawn(dest.run(stop_rx.clone())),
                tokio::spawn(logbook_store::ingest::maintain(
                    store.clone(),
                    ingest_config.retention_every,
                    stop_rx.clone(),
                )),
                stats,
            )
        };

        let mut buckets: HashMap<String, Bucket> = HashMap::new();
        let mut destinations = Vec::new();
        let mut tasks = Vec::new();
        let mut names: Vec<&String> = config.buckets.keys().collect();
        names.sort();
        for name in names {
            let spec = &config.buckets[name];
            if let Some(dir) = spec.local_path() {
                std::fs::create_dir_all(dir)
                    .map_err(io(format!("create bucket folder {}", dir.display())))?;
                owner_only(dir);
            }
            let store =
                Bucket::open(name, spec, bucket_disk.clone()).map_err(|e| ServeError::Io {
                    context: format!("bucket {name}"),
                    source: std::io::Error::other(e.to_string()),
                })?;
            buckets.insert(name.clone(), store.clone());
            let dcfg = |n: String| DestinationConfig {
                name: n,
                max_object_bytes: config.max_object_bytes,
                max_object_age: config.max_object_age,
                retry_base: Duration::from_millis(100),
                permanent_retry: config.permanent_retry,
            };
            let is_default = *name == config.archive_bucket;
            let archive = Destination::new(
                store.clone(),
                journal.clone(),
                dcfg(format!("archive-{name}")),
                {
                    let mut f = ArchiveFormat::new(name, is_default, &config.archive_prefix, &node);
                    if let Some(r) = config
                        .redaction
                        .for_name(config.redaction.buckets.get(name))
                    {
                        redactions.push((format!("archive-{name}"), r.counts()));
                        f = f.with_redactor(r);
                    }
                    match notary("records") {
                        Some(n) => f.with_notary(n),
                        None => f,
                    }
                },
                gc.clone(),
            )?;
            destinations.push((format!("archive-{name}"), archive.stats()));
            tasks.push(tokio::spawn(archive.run(stop_rx.clone())));
            if config.parquet_buckets.contains(name) {
                // The open layout: the same records as Hive-partitioned Parquet, with its
                // own cursor (journal GC waits for it as for any destination).
                let open = Destination::new(
                    store.clone(),
                    journal.clone(),
                    DestinationConfig {
                        max_object_bytes: config.parquet_max_object_bytes,
                        max_object_age: config.parquet_max_object_age,
                        ..dcfg(format!("parquet-{name}"))
                    },
                    {
                        let f = ParquetFormat::new(name, is_default, &config.archive_prefix, &node);
                        match config
                            .redaction
                            .for_name(config.redaction.buckets.get(name))
                        {
                            Some(r) => {
                                redactions.push((format!("parquet-{name}"), r.counts()));
                                f.with_redactor(r)
                            }
                            None => f,
                        }
                    },
                    gc.clone(),
                )?;
                destinations.push((format!("parquet-{name}"), open.stats()));
                tasks.push(tokio::spawn(open.run(stop_rx.clone())));
            }
            if is_default {
                let trail = Destination::new(
                    store,
                    journal.clone(),
                    dcfg("trail".into()),
                    match notary("trail") {
                        Some(n) => TrailFormat::new(&node).with_notary(n),
                        None => TrailFormat::new(&node),
                    },
                    gc.clone(),
                )?;
                destinations.push(("trail".into(), trail.stats()));
                tasks.push(tokio::spawn(trail.run(stop_rx.clone())));
            }
        }

        // Log groups that live in a CloudWatch Logs service: one destination each.
        let mut remote_log_groups = HashMap::new();
        for (name, spec) in &config.remote_log_groups {
            let client = logs_client(name, spec).await?;
            remote_log_groups.insert(name.clone(), client.clone());
            // The embedded store keeps a copy too, so Logbook's own queries see these records.
            store.ensure_group(name).map_err(|e| ServeError::Io {
                context: format!("log group {name}"),
                source: std::io::Error::other(e.to_string()),
            })?;
            let target = CloudWatchTarget::new(name, client, buckets.clone());
            let dest = Destination::new(
                target,
                journal.clone(),
                DestinationConfig {
                    // A cursor is a file: the group's slashes are escaped.
                    name: format!("cloudwatch-{}", file_safe(name)),
                    max_object_bytes: config
                        .max_object_bytes
                        .min(logbook_cloudwatch::MAX_BATCH_BYTES),
                    max_object_age: config.max_object_age,
                    retry_base: Duration::from_millis(100),
                    permanent_retry: config.permanent_retry,
                },
                {
                    let f = CloudWatchFormat::new(name, &node);
                    match config
                        .redaction
                        .for_name(config.redaction.log_groups.get(name))
                    {
                        Some(r) => {
                            redactions.push((format!("cloudwatch-{name}"), r.counts()));
                            f.with_redactor(r)
                        }
                        None => f,
                    }
                },
                gc.clone(),
            )?;
            destinations.push((format!("cloudwatch-{name}"), dest.stats()));
            tasks.push(tokio::spawn(dest.run(stop_rx.clone())));
        }

        // OpenTelemetry: one span per call, and the calls' metrics, to an OTLP collector.
        if let Some(o) = &config.otlp {
            let mut exporter = o.exporter.clone();
            exporter.instance_id = node.clone();
            let target = logbook_otel::OtlpTarget::new(&exporter)
                .map_err(|e| ServeError::Config(e.to_string()))?;
            let meters = target.metrics_handle();
            let mut format = logbook_otel::SpanFormat::new(exporter.content);
            if let Some(r) = config.redaction.for_name(o.redact.as_ref()) {
                redactions.push(("otlp".to_string(), r.counts()));
                format = format.with_redactor(r);
            }
            let dest = Destination::new(
                target,
                journal.clone(),
                DestinationConfig {
                    name: "otlp".into(),
                    // Raw record bytes per export: far below a collector's 4 MiB limit
                    // even with content on.
                    max_object_bytes: 1024 * 1024,
                    max_object_age: o.export_interval,
                    retry_base: Duration::from_millis(100),
                    permanent_retry: config.permanent_retry,
                },
                format,
                gc.clone(),
            )?;
            destinations.push(("otlp".into(), dest.stats()));
            let stop = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                let r = dest.run(stop).await;
                // Every span is exported: export the metrics they counted, once more.
                if let Some(p) = meters {
                    let _ = tokio::task::spawn_blocking(move || {
                        if let Err(e) = p.force_flush() {
                            tracing::warn!(error = %e, "the last OTLP metrics export failed");
                        }
                        let _ = p.shutdown();
                    })
                    .await;
                }
                r
            }));
        }

        let archive = buckets.get(&config.archive_bucket).map(Bucket::store);
        let mut query_engine = logbook_query::Engine::new(store.clone(), archive);
        let mut peers = None;
        let mut mirror_health = None;
        let mut shared_groups = None;
        if let (Some(home), Some(run), Some(c)) = (&home_bucket, cluster.as_mut(), &config.cluster)
        {
            // This replica's store is published to the home; its queries read the others'.
            let mirror = logbook_cluster::store::Mirror::new(
                store.clone(),
                home.clone(),
                &node,
                std::time::Duration::from_secs(600),
            )
            .await
            .map_err(|e| ServeError::Config(format!("cluster home {}: {e}", c.home)))?;
            mirror_health = Some(mirror.health());
            run.mirror = Some(tokio::spawn(mirror.run(c.poll, run.stop_rest.subscribe())));
            // Log groups and retention: the home's list, applied to this store.
            let groups = Arc::new(
                crate::shared_groups::SharedGroups::join(
                    logbook_cluster::for_bucket(home),
                    store.clone(),
                    &config.data_dir.join("control"),
                )
                .await
                .map_err(|e| ServeError::Config(format!("cluster home {}: {e}", c.home)))?,
            );
            run.refresh = Some(tokio::spawn(crate::cluster::refresh(
                logging.clone(),
                Some(groups.clone()),
                shared_budgets.clone().map(|sb| (sb, budgets.clone())),
                c.poll,
                run.stop_rest.subscribe(),
            )));
            shared_groups = Some(groups);
            let mut p = logbook_cluster::store::Peers::new(home.clone(), &node, c.poll);
            if c.peer_cache_bytes > 0 {
                // Other replicas' files on local disk: queries read them from there.
                let cache = logbook_cluster::store::FileCache::open(
                    config.data_dir.join("cache").join("peers"),
                    c.peer_cache_bytes,
                    home.clone(),
                )
                .map_err(|e| ServeError::Io {
                    context: "peer file cache".into(),
                    source: e,
                })?;
                p = p.with_cache(cache, tokio::runtime::Handle::current());
            }
            let p = Arc::new(p);
            query_engine = query_engine
                .with_peers(p.clone())
                .map_err(|e| ServeError::Config(format!("cluster home {}: {e}", c.home)))?;
            peers = Some(p);
        }
        let engine = Arc::new(
            logbook_query::QueryService::new(Arc::new(query_engine), config.query.limits.clone())
                .map_err(|e| ServeError::Io {
                context: "query threads".into(),
                source: std::io::Error::other(e.to_string()),
            })?,
        );

        // Authentication is on by default; with no principal configured, a generated admin
        // credential (kept in the data folder) is the way in.
        let mut admin = None;
        let mut extra = Vec::new();
        if config.auth_enforced && config.principals.is_empty() {
            let (creds, created) =
                crate::auth::load_or_create_admin(&config.data_dir, &config.account_id)
                    .map_err(io("admin credentials"))?;
            extra.push(creds.principal(&config.account_id));
            if created {
                admin = Some(creds);
            }
        }
        let routes = Arc::new(Routes::new(&config)?);
        let analyst_redactor = match config.redaction.for_name(Some(&"analyst".to_string())) {
            Some(r) => r,
            None => Arc::new(
                logbook_redact::Redactor::new(&["all".to_string()], &[])
                    .map_err(|e| ServeError::Config(e.to_string()))?,
            ),
        };
        redactions.push(("reads".to_string(), analyst_redactor.counts()));
        let mut metrics = logbook_ops::Metrics::new(Some(delivery_metrics(destinations.clone())));
        {
            let r = redactions.clone();
            metrics.add_counters(
                "logbook_redactions",
                "Values masked by redaction, per destination and detector",
                Arc::new(move || {
                    r.iter()
                        .flat_map(|(dest, c)| {
                            c.snapshot().into_iter().map(move |(detector, n)| {
                                (
                                    vec![
                                        ("destination".to_string(), dest.clone()),
                                        ("detector".to_string(), detector),
                                    ],
                                    n,
                                )
                            })
                        })
                        .collect()
                }),
            );
        }
        {
            // The disk's share of strict answers' latency: every commit's fdatasync.
            let j = journal.clone();
            metrics.add_histogram(
                "logbook_journal_fsync_duration_seconds",
                "Time of each journal commit's fdatasync (a strict-mode answer waits for one, or two)",
                Arc::new(move || {
                    let st = j.stats();
                    logbook_ops::metrics::HistogramSample {
                        buckets: st.sync_histogram(),
                        sum: st.sync_nanos.load(Ordering::Relaxed) as f64 / 1e9,
                    }
                }),
            );
        }
        let metrics = Arc::new(metrics);
        let recorder = Recorder::new(
            journal.clone(),
            node.clone(),
            config.on_failure,
            config.mode,
            logging.clone(),
            config.require_logging,
        )
        .with_gc(gc.clone())
        .with_pricing(config.pricing.clone())
        .with_metrics(metrics.clone());
        // Budgets across replicas: the ledger in Redis, charged again at start with every
        // record the journal still holds (a crash between a record and its charge; each
        // request id counts once).
        let recorder = match config.cluster.as_ref().and_then(|c| c.redis_url.as_deref()) {
            Some(url) if budgets_on => {
                let binding =
                    crate::spend::ledger_binding(&config.data_dir, &node, budgets.clone())
                        .map_err(ServeError::Config)?;
                let ledger = Arc::new(
                    logbook_cluster::ledger::Ledger::connect_as(url, binding)
                        .await
                        .map_err(|e| ServeError::Config(e.to_string()))?,
                );
                tokio::spawn(crate::spend::replay_shared(
                    journal.clone(),
                    budgets.clone(),
                    ledger.clone(),
                    recorder.crossings_queue(),
                ));
                recorder.with_ledger(ledger)
            }
            _ => recorder,
        };
        let recorder = if !budgets_on {
            recorder
        } else {
            let shared = recorder.ledger().is_some();
            let r = recorder.with_budgets(budgets.clone());
            // Crossings found again on replay (their events had not been made durable);
            // with a shared ledger, the ledger says what the cluster crossed instead.
            if !shared {
                r.push_crossings(replayed_crossings);
            }
            r
        };
        let buffers = crate::http_util::BufferBudget::new(config.max_buffered_bytes);
        let mut alarms = crate::alarms::Alarms::open(
            &config.data_dir,
            config.alarms.clone(),
            config.alarm_actions.clone(),
            &config.region,
            &config.account_id,
        )
        .map_err(|e| ServeError::Io {
            context: "alarms".into(),
            source: std::io::Error::other(e),
        })?;
        if let (Some(home), Some(c)) = (&home_bucket, &config.cluster) {
            // Replicas: the home's alarms are the ones in force; one replica evaluates them.
            alarms = alarms
                .join(
                    logbook_cluster::for_bucket(home),
                    &node,
                    c.poll,
                    c.claim_ttl,
                )
                .await
                .map_err(ServeError::Config)?;
        }
        let alarms = Arc::new(alarms);
        let alarm_every = config.alarm_every;
        let config_lifecycle = config.lifecycle.clone();
        let metric_filters = Arc::new(
            crate::metric_filters::MetricFilters::open(&config.data_dir).map_err(|e| {
                ServeError::Io {
                    context: "metric filters".into(),
                    source: std::io::Error::other(e),
                }
            })?,
        );
        let invoker = crate::invoke::Invoker::new(
            recorder.clone(),
            routes,
            budgets.clone(),
            Arc::new(config.pricing.clone()),
            config.max_body_bytes,
        );
        let config_console = config.console.clone();
        let state = Arc::new(AppState {
            principals: Principals::new(&config, &extra),
            config,
            recorder,
            invoker,
            journal,
            destinations,
            store_delivery,
            redactions,
            analyst_redactor,
            logging,
            buckets,
            remote_log_groups,
            gc,
            budget: Default::default(),
            store,
            engine,
            queries: Default::default(),
            buffers,
            metrics,
            budgets: budgets.clone(),
            alarms: alarms.clone(),
            sessions: crate::console::Sessions::new(
                config_console.session_idle,
                config_console.session_max,
            ),
            metric_filters,
            lifecycle: config_lifecycle
                .keys()
                .map(|b| {
                    (
                        b.clone(),
                        Arc::new(logbook_bucket::lifecycle::Stats::default()),
                    )
                })
                .collect(),
            claim: claim_health,
            peers,
            mirror: mirror_health,
            shared_groups,
            shared_budgets,
        });
        let alarm_task = tokio::spawn(crate::alarms::run(
            state.clone(),
            alarms,
            alarm_every,
            stop_rx.clone(),
        ));
        let spend_task = budgets_on
            .then(|| tokio::spawn(crate::spend::run(state.clone(), budgets, stop_rx.clone())));
        // A destination that stalls, or recovers, is a service event in the trail.
        let watcher = tokio::spawn(watch_destinations(state.clone()));
        // Lifecycle rules: a pass at start, then one per interval.
        let lifecycle_tasks = state
            .lifecycle
            .keys()
            .map(|b| tokio::spawn(crate::lifecycle::run(state.clone(), b.clone())))
            .collect();
        Ok(Running {
            state,
            admin,
            stop_tx,
            tasks,
            store_task,
            store_maintenance,
            alarm_task,
            spend_task,
            watcher,
            lifecycle_tasks,
            cluster,
            _lock: lock,
        })
    }
}

/// Open the data folder, start delivery, bind, call `on_listen`, and serve until SIGINT or
/// SIGTERM; then stop accepting, finish in-flight calls and flush delivery.
pub async fn serve(
    config: Config,
    on_listen: impl FnOnce(SocketAddr, Option<&crate::auth::AdminCredentials>),
) -> Result<(), ServeError> {
    let listen = config.listen.clone();
    let running = AppState::build(config, BuildOptions::default()).await?;
    let state = running.state.clone();
    let queries = state.engine.clone();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(io(format!("bind {listen}")))?;
    let addr = listener.local_addr().map_err(io("local address"))?;
    tracing::info!(%addr, node_id = %state.recorder.node_id(), "logbook serving");
    on_listen(addr, running.admin.as_ref());
    let limits = crate::listener::ListenLimits {
        header_timeout: state.config.header_timeout,
        max_connections: state.config.max_connections,
    };
    let lost = running.cluster.as_ref().map(|c| c.lost.clone());
    crate::listener::serve(
        listener,
        router(state),
        limits,
        async move {
            match lost {
                Some(mut lost) => {
                    tokio::select! {
                        _ = shutdown_signal() => {}
                        _ = lost.wait_for(|l| *l) => {}
                    }
                }
                None => shutdown_signal().await,
            }
            // Queries end now: a long query must not hold up the shutdown.
            queries.shutdown();
        },
        Duration::from_secs(30),
    )
    .await
    .map_err(io("serve"))?;
    if running.claim_lost() {
        // Another process writes as this node now: write nothing more (no drain; the
        // journal keeps what was not delivered) and exit with an error.
        running.abort();
        return Err(ServeError::Config(
            "this replica's node-id claim was taken by another process; it stopped without delivering its backlog (the journal keeps it)".into(),
        ));
    }
    running.shutdown().await
}

impl Running {
    /// Whether another process took this replica's node-id claim.
    pub fn claim_lost(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| *c.lost.borrow())
    }

    /// Stop every background task at once, without draining: nothing more is written to
    /// any bucket (the journal keeps what was not delivered).
    pub fn abort(self) {
        self.watcher.abort();
        for t in &self.lifecycle_tasks {
            t.abort();
        }
        for t in &self.tasks {
            t.abort();
        }
        self.store_task.abort();
        self.store_maintenance.abort();
        self.alarm_task.abort();
        if let Some(t) = &self.spend_task {
            t.abort();
        }
        if let Some(c) = &self.cluster {
            c.task.abort();
            if let Some(r) = &c.refresh {
                r.abort();
            }
            if let Some(m) = &c.mirror {
                m.abort();
            }
        }
    }

    /// Stop the background work and drain delivery and the store's last flush.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.watcher.abort();
        // A pass cut short is safe: every step of it is idempotent.
        for t in &self.lifecycle_tasks {
            t.abort();
        }
        tracing::info!("draining delivery");
        let _ = self.stop_tx.send(true);
        let _ = self.alarm_task.await;
        if let Some(t) = self.spend_task {
            if let Err(e) = t.await {
                tracing::error!(error = %e, "budget state task failed");
            }
        }
        for t in self.tasks {
            match t.await {
                Ok(r) => r?,
                Err(e) => tracing::error!(error = %e, "delivery task failed"),
            }
        }
        if let Err(e) = self.store_maintenance.await {
            tracing::error!(error = %e, "log group retention task failed");
        }
        match self.store_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "log group store: final flush failed (the journal keeps the records)")
            }
            Err(e) => tracing::error!(error = %e, "log group store task failed"),
        }
        // Last: the claim is released with the journal's final position, once nothing
        // more will be written as this node.
        if let Some(c) = self.cluster {
            // The store's last flush is done: publish it, then release the claim.
            let _ = c.stop_rest.send(true);
            if let Some(r) = c.refresh {
                let _ = r.await;
            }
            if let Some(m) = c.mirror {
                let _ = m.await;
            }
            let _ = c.stop.send(true);
            if let Err(e) = c.task.await {
                tracing::error!(error = %e, "node-id claim task failed");
            }
        }
        Ok(())
    }
}
