//! The configuration file (TOML) and its validation.
//!
//! Two phases: [`RawConfig`] is what serde reads (unknown keys refused), [`Config`] is what
//! the server runs with, after defaults, `${VAR}` interpolation and cross-checks. All
//! problems are reported together.

pub use logbook_bucket::{BucketSpec, S3Spec, Sse};
use logbook_record::logging::{validate_logging_config, CloudWatchConfig, LoggingConfig};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The journal's default disk budget.
pub const DEFAULT_JOURNAL_MAX_BYTES: u64 = 8 << 30;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4700";
/// The log group the embedded default logging configuration delivers to.
pub const DEFAULT_LOG_GROUP: &str = "/aws/bedrock/modelinvocations";
/// Bedrock's InvokeModel body limit.
pub const BEDROCK_MAX_BODY: usize = 25_000_000;

/// Configuration problems, all of them.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    node_id: Option<String>,
    account_id: Option<String>,
    region: Option<String>,
    max_body_bytes: Option<usize>,
    header_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    body_timeout_ms: Option<u64>,
    max_buffered_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuery {
    threads: Option<usize>,
    max_running: Option<usize>,
    max_queued: Option<usize>,
    query_memory_mb: Option<usize>,
    total_memory_mb: Option<usize>,
    max_query_chars: Option<usize>,
    http_timeout_secs: Option<u64>,
    start_query_timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogging {
    mode: Option<String>,
    on_failure: Option<String>,
    segment_bytes: Option<u64>,
    require_logging: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    /// Flush the log group store's in-memory tail to Parquet when its oldest record is
    /// this old (default 60 s; the journal keeps the records meanwhile).
    flush_age_ms: Option<u64>,
    /// ... or when it holds this many bytes of Arrow memory (default 8 MiB).
    flush_bytes: Option<usize>,
    /// Redaction profile for the embedded log groups (what queries and analysts see).
    redact: Option<String>,
    /// Days the embedded log groups keep bodies (prompts and answers), apart from how
    /// long they keep records; CloudWatch's retention values.
    body_retention_days: Option<u32>,
    /// The same by group name, overriding `body_retention_days`.
    #[serde(default)]
    group_body_retention_days: BTreeMap<String, u32>,
}

/// `[redaction.<profile>]`: detectors and custom patterns.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedaction {
    #[serde(default)]
    detectors: Vec<String>,
    #[serde(default)]
    custom: Vec<RawCustomPattern>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustomPattern {
    name: String,
    pattern: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJournal {
    /// Disk the journal's segments may take (default 8 GiB).
    max_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArchive {
    bucket: Option<String>,
    key_prefix: Option<String>,
    max_object_bytes: Option<usize>,
    max_object_age_ms: Option<u64>,
    /// Wait after a failure that retrying will not fix (access denied, no such bucket).
    permanent_retry_ms: Option<u64>,
    /// Redaction profile for the default archive bucket (when it is not in [[buckets]]).
    redact: Option<String>,
    /// Write the open layout (Hive-partitioned Parquet) in the default archive bucket
    /// (when it is not in [[buckets]]).
    parquet: Option<bool>,
    /// Roll an open-layout file at this many bytes of records (default 64 MiB).
    parquet_max_object_bytes: Option<usize>,
    /// Roll an open-layout file when its first record is this old (default 5 minutes).
    parquet_max_object_age_ms: Option<u64>,
}

/// `[encryption]`: encryption at rest of the journal and the store.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEncryption {
    /// The active master key: a file holding 64 hex digits or the base64 of 32 bytes
    /// (`logbook keys generate-master`). `LOGBOOK_MASTER_KEY` overrides it.
    master_key_file: Option<String>,
    /// Earlier master keys, kept to read what they encrypted.
    #[serde(default)]
    old_master_key_files: Vec<String>,
}

/// `[integrity]`: the tamper-evident logs of the archive and the trail.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntegrity {
    /// Keep them (default true).
    enabled: Option<bool>,
    /// The Ed25519 signing key, PKCS#8 PEM (default `<data>/integrity/signing-key.pem`,
    /// generated on first start).
    signing_key: Option<String>,
    /// Longest time between checkpoints (default 300,000 ms).
    checkpoint_every_ms: Option<u64>,
}

/// `[pricing]`: the price catalog. The shipped catalog holds unless `builtin = false`; a
/// `catalog` file and inline `[[pricing.price]]` entries (the catalog file's format)
/// override it, in that order. Records name the result, e.g. `2026-11-30+acme-7`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPricing {
    builtin: Option<bool>,
    catalog: Option<String>,
    /// Names the inline entries in the version records carry (default `config`).
    version: Option<String>,
    #[serde(default)]
    price: Vec<logbook_ops::pricing::PriceEntry>,
}

impl RawPricing {
    fn catalog(self) -> Result<logbook_ops::Catalog, String> {
        use logbook_ops::Catalog;
        let mut c = if self.builtin.unwrap_or(true) {
            Catalog::builtin().map_err(|e| e.to_string())?
        } else {
            Catalog::empty("none")
        };
        if let Some(path) = &self.catalog {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("pricing.catalog {path:?}: {e}"))?;
            let file =
                Catalog::parse(&text).map_err(|e| format!("pricing.catalog {path:?}: {e}"))?;
            c = c.overlay(file);
        }
        if !self.price.is_empty() || self.version.is_some() {
            let mut inline = Catalog::empty(self.version.as_deref().unwrap_or("config"));
            inline
                .add_entries(&self.price)
                .map_err(|e| format!("[[pricing.price]]: {e}"))?;
            c = c.overlay(inline);
        }
        Ok(c)
    }
}

/// `[[alarm_actions]]`: where an action ARN (as alarms name it) sends notifications.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlarmAction {
    arn: String,
    url: String,
    /// `sns` (default: an SNS Notification envelope) or `slack`.
    format: Option<String>,
}

/// `[governance]`: the built-in governance alarms (logging stopped in a region, a
/// destination stalled too long, a call to a model with no price), and where they notify.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGovernance {
    #[serde(default)]
    alarm_actions: Vec<String>,
    /// A destination stalled longer than this raises its alarm (default 300 s).
    delivery_stall_seconds: Option<u64>,
}

/// `[alarm_evaluation]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlarmEvaluation {
    /// How often alarms are evaluated (default 10 s).
    every_ms: Option<u64>,
}

/// `[[alarms]]`: a metric alarm declared in the file (PutMetricAlarm's members, in
/// snake case).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlarm {
    name: String,
    description: Option<String>,
    namespace: Option<String>,
    metric: String,
    model_id: Option<String>,
    statistic: String,
    period: i64,
    evaluation_periods: u32,
    datapoints_to_alarm: Option<u32>,
    threshold: f64,
    comparison: String,
    treat_missing_data: Option<String>,
    actions_enabled: Option<bool>,
    #[serde(default)]
    alarm_actions: Vec<String>,
    #[serde(default)]
    ok_actions: Vec<String>,
    #[serde(default)]
    insufficient_data_actions: Vec<String>,
}

impl RawAlarm {
    fn def(self) -> Result<logbook_ops::alarms::AlarmDef, String> {
        let d = logbook_ops::alarms::AlarmDef {
            alarm_name: self.name,
            alarm_description: self.description,
            namespace: self.namespace.unwrap_or_else(|| "AWS/Bedrock".into()),
            metric_name: self.metric,
            model_id: self.model_id,
            statistic: self.statistic,
            period: self.period,
            evaluation_periods: self.evaluation_periods,
            datapoints_to_alarm: self.datapoints_to_alarm.unwrap_or(self.evaluation_periods),
            threshold: self.threshold,
            comparison_operator: self.comparison,
            treat_missing_data: self.treat_missing_data.unwrap_or_else(|| "missing".into()),
            actions_enabled: self.actions_enabled.unwrap_or(true),
            alarm_actions: self.alarm_actions,
            ok_actions: self.ok_actions,
            insufficient_data_actions: self.insufficient_data_actions,
        };
        d.validate()
            .map_err(|e| format!("alarm {:?}: {e}", d.alarm_name))?;
        Ok(d)
    }
}

/// `[[budgets]]`: a spend limit for one scope (exactly one of `principal`,
/// `principal_tag`, `request_metadata`, `model`) per UTC period.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    name: String,
    principal: Option<String>,
    /// `key=value`
    principal_tag: Option<String>,
    /// `key=value`
    request_metadata: Option<String>,
    /// A model id or glob (`anthropic.*`).
    model: Option<String>,
    period: Option<String>,
    /// USD, as a string (`"250.00"`).
    limit_usd: String,
    #[serde(default)]
    warn_at: Vec<u8>,
    /// Alarm action ARNs (`[[alarm_actions]]`) notified at each warning threshold.
    #[serde(default)]
    warn_actions: Vec<String>,
}

impl RawBudget {
    fn spec(self) -> Result<logbook_ops::budgets::BudgetSpec, String> {
        use logbook_ops::budgets::{parse_usd, BudgetPeriod, BudgetSpec, Scope};
        let name = self.name.trim().to_string();
        if name.is_empty() || name.len() > 128 {
            return Err("budget name must be 1 to 128 characters".into());
        }
        let pair = |field: &str, v: &str| -> Result<(String, String), String> {
            match v.split_once('=') {
                Some((k, val)) if !k.trim().is_empty() => {
                    Ok((k.trim().to_string(), val.trim().to_string()))
                }
                _ => Err(format!(
                    "budget {name:?}: {field} = {v:?}: expected \"key=value\""
                )),
            }
        };
        let mut scopes = Vec::new();
        if let Some(p) = &self.principal {
            scopes.push(Scope::Principal(p.clone()));
        }
        if let Some(t) = &self.principal_tag {
            let (k, v) = pair("principal_tag", t)?;
            scopes.push(Scope::Tag(k, v));
        }
        if let Some(t) = &self.request_metadata {
            let (k, v) = pair("request_metadata", t)?;
            scopes.push(Scope::Meta(k, v));
        }
        if let Some(m) = &self.model {
            scopes.push(Scope::Model(m.clone()));
        }
        if scopes.len() != 1 {
            return Err(format!(
                "budget {name:?}: name exactly one of principal, principal_tag, request_metadata, model"
            ));
        }
        let period = match self.period.as_deref().unwrap_or("month") {
            "day" => BudgetPeriod::Day,
            "week" => BudgetPeriod::Week,
            "month" => BudgetPeriod::Month,
            o => {
                return Err(format!(
                    "budget {name:?}: period {o:?}: expected day, week or month"
                ))
            }
        };
        let limit = parse_usd(&self.limit_usd)
            .filter(|l| *l > 0)
            .ok_or_else(|| format!("budget {name:?}: limit_usd = {:?}: expected a positive decimal such as \"250.00\"", self.limit_usd))?;
        let mut warn_at = self.warn_at.clone();
        if warn_at.iter().any(|w| *w == 0 || *w > 100) {
            return Err(format!(
                "budget {name:?}: warn_at values are percents from 1 to 100"
            ));
        }
        warn_at.sort_unstable();
        warn_at.dedup();
        Ok(BudgetSpec {
            name,
            scope: scopes.remove(0),
            period,
            limit,
            warn_at,
            actions: self.warn_actions,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBucket {
    name: String,
    /// A local folder.
    path: Option<String>,
    /// `s3://<bucket>`: an S3-compatible bucket.
    url: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    path_style: Option<bool>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    /// `AES256` (SSE-S3) or `aws:kms` (SSE-KMS).
    sse: Option<String>,
    sse_kms_key_id: Option<String>,
    /// Redaction profile applied to what this bucket receives.
    redact: Option<String>,
    /// Also write the open layout (Hive-partitioned Parquet) beside the archive.
    parquet: Option<bool>,
    /// Lifecycle rule (local buckets only).
    lifecycle: Option<RawLifecycle>,
}

/// `lifecycle = { ... }` of a `[[buckets]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLifecycle {
    transition_after_days: Option<u32>,
    transition_to: Option<String>,
    expire_after_days: Option<u32>,
    interval_secs: Option<u64>,
}

impl RawBucket {
    /// The declaration, or what is wrong with it.
    fn spec(self, data_dir: &Path, region: &str) -> Result<BucketSpec, String> {
        let name = self.name.clone();
        let remote_only = [
            ("region", self.region.is_some()),
            ("endpoint", self.endpoint.is_some()),
            ("path_style", self.path_style.is_some()),
            ("access_key_id", self.access_key_id.is_some()),
            ("secret_access_key", self.secret_access_key.is_some()),
            ("session_token", self.session_token.is_some()),
            ("sse", self.sse.is_some()),
            ("sse_kms_key_id", self.sse_kms_key_id.is_some()),
        ];
        match (self.path, self.url) {
            (Some(path), None) => {
                if let Some((field, _)) = remote_only.iter().find(|(_, set)| *set) {
                    return Err(format!(
                        "bucket {name:?}: {field} applies to an S3 bucket (url = \"s3://...\"), not a folder"
                    ));
                }
                let p = PathBuf::from(&path);
                Ok(BucketSpec::Local(if p.is_absolute() {
                    p
                } else {
                    data_dir.join(p)
                }))
            }
            (None, Some(url)) => {
                let Some(bucket) = url.strip_prefix("s3://").map(|b| b.trim_end_matches('/'))
                else {
                    return Err(format!(
                        "bucket {name:?}: url {url:?} must be s3://<bucket name>"
                    ));
                };
                if !valid_s3_bucket_name(bucket) {
                    return Err(format!(
                        "bucket {name:?}: {bucket:?} is not an S3 bucket name (3-63 lowercase letters, digits, dots and hyphens)"
                    ));
                }
                let region = self.region.unwrap_or_else(|| region.to_string());
                if !logbook_wire::sigv4::valid_region(&region) {
                    return Err(format!(
                        "bucket {name:?}: region {region:?} is not an AWS region name"
                    ));
                }
                if let Some(e) = &self.endpoint {
                    if !(e.starts_with("http://") || e.starts_with("https://")) {
                        return Err(format!(
                            "bucket {name:?}: endpoint {e:?} must be an http:// or https:// URL"
                        ));
                    }
                }
                if self.access_key_id.is_some() != self.secret_access_key.is_some() {
                    return Err(format!(
                        "bucket {name:?}: access_key_id and secret_access_key go together"
                    ));
                }
                let sse = match (self.sse.as_deref(), self.sse_kms_key_id) {
                    (None, None) => None,
                    (Some("AES256"), None) => Some(Sse::S3),
                    (Some("aws:kms"), key) => Some(Sse::Kms(key)),
                    (Some("AES256") | None, Some(_)) => {
                        return Err(format!("bucket {name:?}: sse_kms_key_id needs sse = \"aws:kms\""))
                    }
                    (Some(o), _) => {
                        return Err(format!(
                            "bucket {name:?}: sse {o:?}: expected \"AES256\" (SSE-S3) or \"aws:kms\" (SSE-KMS)"
                        ))
                    }
                };
                Ok(BucketSpec::S3(S3Spec {
                    bucket: bucket.to_string(),
                    region,
                    endpoint: self.endpoint,
                    path_style: self.path_style.unwrap_or(false),
                    access_key_id: self.access_key_id,
                    secret_access_key: self.secret_access_key,
                    session_token: self.session_token,
                    sse,
                }))
            }
            _ => Err(format!(
                "bucket {name:?}: give either path (a local folder) or url (s3://<bucket>)"
            )),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogGroup {
    name: String,
    /// Redaction profile applied to what this log group receives.
    redact: Option<String>,
    /// CloudWatch Logs endpoint (default: AWS's for the region).
    endpoint: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
}

/// A log group that lives in a CloudWatch Logs service rather than the embedded store.
#[derive(Clone, PartialEq, Eq)]
pub struct RemoteLogGroup {
    /// The endpoint URL.
    pub endpoint: String,
    /// The region to sign for.
    pub region: String,
    /// Explicit access key id (else the environment, then the shared credentials file).
    pub access_key_id: Option<String>,
    /// Explicit secret (never printed).
    pub secret_access_key: Option<String>,
    /// Explicit session token (never printed).
    pub session_token: Option<String>,
}

impl std::fmt::Debug for RemoteLogGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteLogGroup")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish()
    }
}

impl RawLogGroup {
    fn spec(self, region: &str) -> Result<(String, RemoteLogGroup), String> {
        let name = self.name;
        if name.is_empty()
            || name.len() > 512
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-/.#".contains(c))
        {
            return Err(format!(
                "log group {name:?}: not a CloudWatch Logs group name (1-512 of a-z A-Z 0-9 _ - / . #)"
            ));
        }
        let region = self.region.unwrap_or_else(|| region.to_string());
        if !logbook_wire::sigv4::valid_region(&region) {
            return Err(format!(
                "log group {name:?}: region {region:?} is not an AWS region name"
            ));
        }
        let endpoint = match self.endpoint {
            Some(e) if e.starts_with("http://") || e.starts_with("https://") => e,
            Some(e) => {
                return Err(format!(
                    "log group {name:?}: endpoint {e:?} must be an http:// or https:// URL"
                ))
            }
            None => logbook_cloudwatch::default_endpoint(&region),
        };
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err(format!(
                "log group {name:?}: access_key_id and secret_access_key go together"
            ));
        }
        Ok((
            name,
            RemoteLogGroup {
                endpoint,
                region,
                access_key_id: self.access_key_id,
                secret_access_key: self.secret_access_key,
                session_token: self.session_token,
            },
        ))
    }
}

/// S3's bucket naming rules (general purpose buckets).
fn valid_s3_bucket_name(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
        && !b.contains("..")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    base_url: Option<String>,
    api_key: Option<String>,
    timeout_ms: Option<u64>,
    delay_ms: Option<u64>,
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    model: String,
    provider: String,
    upstream_model: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrincipal {
    arn: String,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    api_key: Option<String>,
    account_id: Option<String>,
    permissions: Option<Vec<String>>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// Header values that are secrets (API keys): kept out of `Debug` output.
#[derive(Default, Deserialize)]
#[serde(transparent)]
struct SecretHeaders(BTreeMap<String, String>);

impl std::fmt::Debug for SecretHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// `[cluster]`: replicas that share a home bucket.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    /// A declared bucket (`[[buckets]]`) whose conditional writes hold what the replicas
    /// share; this replica claims its node id there.
    home: Option<String>,
    /// A node-id claim not renewed for this long is taken to be dead (default 30).
    claim_ttl_secs: Option<u64>,
    /// How often shared state is re-read from the home (default 2000).
    poll_ms: Option<u64>,
    /// Budgets hold across replicas through this Redis (`redis://[:password@]host:port/db`).
    redis_url: Option<String>,
    /// Other replicas' store files kept on local disk for queries, at most this many MiB
    /// (default 1024; 0: read them from the home every time).
    peer_cache_mb: Option<u64>,
}

/// `[otlp]`: OpenTelemetry export.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOtlp {
    endpoint: Option<String>,
    /// `http/protobuf` (default) or `grpc`.
    protocol: Option<String>,
    #[serde(default)]
    headers: SecretHeaders,
    /// Prompts and responses on spans (default: no).
    content: Option<bool>,
    service_name: Option<String>,
    metrics: Option<bool>,
    metrics_interval_ms: Option<u64>,
    /// Spans wait at most this long before they are exported (default 5 s).
    export_interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
    /// Redaction profile for content.
    redact: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsole {
    enabled: Option<bool>,
    session_idle_secs: Option<u64>,
    session_max_secs: Option<u64>,
}

/// The web console (`[console]`).
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Served at `/console` (default: yes).
    pub enabled: bool,
    /// A session ends after this long without a request (default 30 minutes).
    pub session_idle: Duration,
    /// A session ends this long after sign-in, however active (default 12 hours).
    pub session_max: Duration,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            session_idle: Duration::from_secs(30 * 60),
            session_max: Duration::from_secs(12 * 3600),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    version: Option<String>,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    logging: RawLogging,
    #[serde(default)]
    query: RawQuery,
    #[serde(default)]
    archive: RawArchive,
    #[serde(default)]
    integrity: RawIntegrity,
    #[serde(default)]
    encryption: RawEncryption,
    #[serde(default)]
    redaction: BTreeMap<String, RawRedaction>,
    #[serde(default)]
    journal: RawJournal,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    pricing: RawPricing,
    #[serde(default)]
    budgets: Vec<RawBudget>,
    #[serde(default)]
    alarm_actions: Vec<RawAlarmAction>,
    #[serde(default)]
    alarms: Vec<RawAlarm>,
    #[serde(default)]
    alarm_evaluation: RawAlarmEvaluation,
    governance: Option<RawGovernance>,
    #[serde(default)]
    buckets: Vec<RawBucket>,
    #[serde(default)]
    log_groups: Vec<RawLogGroup>,
    #[serde(default)]
    providers: Vec<RawProvider>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    principals: Vec<RawPrincipal>,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    console: RawConsole,
    otlp: Option<RawOtlp>,
    cluster: Option<RawCluster>,
    /// `[logging_config.default]` and `[logging_config."<region>"]`, in the API's shape.
    #[serde(default)]
    logging_config: BTreeMap<String, toml::Value>,
}

/// When a response is released relative to its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoggingMode {
    /// After the record is fsync'd (default).
    Strict,
    /// After the record is written; fsync follows within 100 ms.
    Async,
}

/// What to do when a record cannot be made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Refuse the call (default): no unlogged call.
    FailClosed,
    /// Serve the call anyway and report the loss in the server log.
    FailOpen,
}

/// A provider's settings.
#[derive(Clone)]
pub struct ProviderConfig {
    /// Name routes refer to.
    pub name: String,
    /// `mock`, `openai`.
    pub kind: String,
    /// Base URL for HTTP providers.
    pub base_url: Option<String>,
    /// Secret key (never logged, never recorded).
    pub api_key: Option<String>,
    /// Upstream timeout.
    pub timeout: Duration,
    /// Mock: added latency.
    pub delay: Duration,
    /// Bedrock: region (default: the server's).
    pub region: Option<String>,
    /// Bedrock: explicit access key id (else environment / shared credentials file).
    pub access_key_id: Option<String>,
    /// Bedrock: explicit secret.
    pub secret_access_key: Option<String>,
    /// Bedrock: explicit session token.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish()
    }
}

/// A route from model id (exact or glob) to provider.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Model id or glob.
    pub model: String,
    /// Provider name.
    pub provider: String,
    /// Model id sent upstream (default: the caller's).
    pub upstream_model: Option<String>,
}

/// A known caller.
#[derive(Clone)]
pub struct PrincipalConfig {
    /// Principal ARN.
    pub arn: String,
    /// Account of the principal.
    pub account_id: String,
    /// SigV4 access key id.
    pub access_key_id: Option<String>,
    /// SigV4 secret (used by authentication, never recorded).
    pub secret_access_key: Option<String>,
    /// Bearer API key (never recorded).
    pub api_key: Option<String>,
    /// Granted permissions: `invoke:<model glob>`, `logging:read`, `logging:manage`, `logs:read`.
    pub permissions: Vec<String>,
    /// Free-form tags (e.g. `team = "search"`).
    pub tags: BTreeMap<String, String>,
}

/// The permissions a principal can be granted.
pub fn valid_permission(p: &str) -> bool {
    if let Some(glob) = p.strip_prefix("invoke:") {
        return !glob.is_empty() && globset::Glob::new(glob).is_ok();
    }
    if let Some(level) = p.strip_prefix("content:") {
        return matches!(level, "full" | "redacted" | "metadata");
    }
    if let Some(r) = p.strip_prefix("role:") {
        return crate::identity::role(r).is_some();
    }
    if p != "logs:read" {
        if let Some(rest) = p.strip_prefix("logs:") {
            let (action, resource) = rest.split_once(':').unwrap_or((rest, "*"));
            return crate::identity::LOG_ACTIONS.contains(&action)
                && !resource.is_empty()
                && globset::Glob::new(resource).is_ok();
        }
    }
    matches!(p, "logging:read" | "logging:manage" | "logs:read")
}

/// Every permission (the generated admin has these).
pub fn all_permissions() -> Vec<String> {
    ["invoke:*", "logging:manage", "logs:read"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

impl std::fmt::Debug for PrincipalConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrincipalConfig")
            .field("arn", &self.arn)
            .field("access_key_id", &self.access_key_id)
            .finish()
    }
}

/// Limits on queries (the query threads, admission, memory, time).
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// Limits applied by the query service.
    pub limits: logbook_query::Limits,
    /// Time limit of a synchronous query (`POST /logbook/query`, `FilterLogEvents`,
    /// `GetLogEvents`, `GetLogRecord`).
    pub http_timeout: Duration,
    /// Time limit of a `StartQuery` query (CloudWatch allows 60 minutes).
    pub start_query_timeout: Duration,
}

/// A redaction profile, validated (compiled once to check it; each destination compiles
/// its own, so its counts are its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedactionProfile {
    /// Built-in detector names (or "all").
    pub detectors: Vec<String>,
    /// Custom (name, pattern).
    pub custom: Vec<(String, String)>,
}

impl RedactionProfile {
    /// Compile it.
    pub fn compile(&self) -> Result<logbook_redact::Redactor, logbook_redact::RedactError> {
        logbook_redact::Redactor::new(&self.detectors, &self.custom)
    }
}

/// Where redaction applies: destination -> profile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redaction {
    /// Profiles by name.
    pub profiles: BTreeMap<String, RedactionProfile>,
    /// Bucket name -> profile.
    pub buckets: BTreeMap<String, String>,
    /// Remote (CloudWatch Logs) log group -> profile.
    pub log_groups: BTreeMap<String, String>,
    /// Profile of the embedded log groups.
    pub store: Option<String>,
}

impl Redaction {
    /// The compiled profile for a destination, if it has one.
    pub fn for_name(
        &self,
        profile: Option<&String>,
    ) -> Option<std::sync::Arc<logbook_redact::Redactor>> {
        let p = self.profiles.get(profile?)?;
        p.compile().ok().map(std::sync::Arc::new)
    }
}

/// `[encryption]`, validated: where the master keys are (read at start).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncryptionConfig {
    /// The active master key's file.
    pub master_key_file: Option<PathBuf>,
    /// Earlier master keys' files.
    pub old_master_key_files: Vec<PathBuf>,
}

impl EncryptionConfig {
    /// Read the master keys: the active one from `env_key` (the value of
    /// `LOGBOOK_MASTER_KEY`, when set) or the file, the old ones from their files.
    pub fn keyring(&self, env_key: Option<&str>) -> Result<logbook_seal::Keyring, String> {
        let read = |p: &PathBuf| -> Result<logbook_seal::MasterKey, String> {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read master key file {}: {e}", p.display()))?;
            logbook_seal::MasterKey::parse(&text)
                .map_err(|e| format!("master key file {}: {e}", p.display()))
        };
        let active = match env_key.map(str::trim).filter(|k| !k.is_empty()) {
            Some(k) => Some(
                logbook_seal::MasterKey::parse(k)
                    .map_err(|e| format!("{}: {e}", logbook_seal::MASTER_KEY_ENV))?,
            ),
            None => self.master_key_file.as_ref().map(read).transpose()?,
        };
        let old = self
            .old_master_key_files
            .iter()
            .map(read)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(logbook_seal::Keyring::new(active, old))
    }
}

/// `[integrity]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityConfig {
    /// The signing key file (created with a new key when missing).
    pub signing_key: PathBuf,
    /// Longest time between checkpoints.
    pub checkpoint_every: Duration,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data folder.
    pub data_dir: PathBuf,
    /// Listen address.
    pub listen: String,
    /// Node id (default: generated once and kept in the data folder).
    pub node_id: Option<String>,
    /// Default account id.
    pub account_id: String,
    /// Default region.
    pub region: String,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// A client must send its request headers within this time.
    pub header_timeout: Duration,
    /// Most open client connections.
    pub max_connections: usize,
    /// A client must send its whole body within this time.
    pub body_timeout: Duration,
    /// Request bytes buffered across all requests before authentication completes.
    pub max_buffered_bytes: usize,
    /// Query limits.
    pub query: QueryConfig,
    /// Strict or async.
    pub mode: LoggingMode,
    /// Fail closed or open.
    pub on_failure: OnFailure,
    /// Journal segment size.
    pub segment_bytes: u64,
    /// The price catalog every record is priced with.
    pub pricing: logbook_ops::Catalog,
    /// Spend limits.
    pub budgets: Vec<logbook_ops::budgets::BudgetSpec>,
    /// Alarm action targets by ARN.
    pub alarm_actions: BTreeMap<String, crate::alarms::ActionTarget>,
    /// Alarms declared in the file.
    pub alarms: Vec<logbook_ops::alarms::AlarmDef>,
    /// How often alarms are evaluated.
    pub alarm_every: Duration,
    /// Disk the journal may take before a destination that stays down costs calls
    /// (fail-closed) or its own undelivered records (fail-open).
    pub journal_max_bytes: u64,
    /// Archive bucket name.
    pub archive_bucket: String,
    /// Archive key prefix.
    pub archive_prefix: String,
    /// Roll objects at this size.
    pub max_object_bytes: usize,
    /// Roll objects at this age.
    pub max_object_age: Duration,
    /// Retry a destination's permanent failure this often.
    pub permanent_retry: Duration,
    /// Tamper-evident logs of the archive and the trail (`None`: off).
    pub integrity: Option<IntegrityConfig>,
    /// Encryption at rest.
    pub encryption: EncryptionConfig,
    /// How long the embedded log groups keep bodies.
    pub body_retention: logbook_store::BodyRetention,
    /// Redaction per destination.
    pub redaction: Redaction,
    /// Buckets: name -> local folder.
    pub buckets: HashMap<String, BucketSpec>,
    /// Buckets that also get the open layout (`logbook_delivery::parquet`).
    pub parquet_buckets: BTreeSet<String>,
    /// Lifecycle rules, by bucket.
    pub lifecycle: BTreeMap<String, logbook_bucket::lifecycle::Rule>,
    /// Roll open-layout files at this size (analytics engines want big files).
    pub parquet_max_object_bytes: usize,
    /// Roll open-layout files at this age.
    pub parquet_max_object_age: Duration,
    /// Providers.
    pub providers: Vec<ProviderConfig>,
    /// Routes, first match wins.
    pub routes: Vec<RouteConfig>,
    /// Principals.
    pub principals: Vec<PrincipalConfig>,
    /// Logging configuration where none is stored for an (account, region).
    pub logging_default: LoggingConfig,
    /// Log groups the logging configurations name (created at start when missing).
    pub log_groups: BTreeSet<String>,
    /// Log groups declared in `[[log_groups]]`: delivered to a CloudWatch Logs service.
    pub remote_log_groups: BTreeMap<String, RemoteLogGroup>,
    /// When the log group store flushes its tail to Parquet.
    pub store_ingest: logbook_store::ingest::IngestConfig,
    /// Declared logging configurations, keyed `account/region`.
    pub logging_declared: BTreeMap<String, LoggingConfig>,
    /// Refuse invocations while logging is off for the caller's (account, region).
    pub require_logging: bool,
    /// Verify every caller (default). `false` only when the file says `[auth] mode = "off"`.
    pub auth_enforced: bool,
    /// The web console.
    pub console: ConsoleConfig,
    /// OpenTelemetry export (`None`: off).
    pub otlp: Option<OtlpExport>,
    /// Replicas sharing a home bucket (`None`: this gateway stands alone).
    pub cluster: Option<ClusterConfig>,
    /// What the log group store calls when it has just freed much memory: set by the
    /// binary, which knows its allocator (never from the file).
    pub release_memory: Option<ReleaseMemory>,
}

/// [`logbook_store::ReleaseMemory`], so the configuration can carry it.
#[derive(Clone)]
pub struct ReleaseMemory(pub logbook_store::ReleaseMemory);

impl std::fmt::Debug for ReleaseMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReleaseMemory")
    }
}

/// The store's flush age when replicas share a home (unless `[store] flush_age_ms` says
/// otherwise): with the mirror's and the peers' poll it bounds how long a record takes to
/// be visible on every replica.
pub const CLUSTER_FLUSH_AGE: Duration = Duration::from_secs(5);

/// `[cluster]`, validated.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The home bucket's declared name.
    pub home: String,
    /// How long a node-id claim lives without renewal.
    pub claim_ttl: Duration,
    /// How often shared state is re-read from the home: the bound on how long a change
    /// made through another replica takes to be in force here.
    pub poll: Duration,
    /// The Redis that holds the budgets' ledger for all replicas (secret: may hold a
    /// password; never printed).
    pub redis_url: Option<String>,
    /// Bytes of other replicas' store files kept on local disk for queries (0: none).
    pub peer_cache_bytes: u64,
}

/// `[otlp]`, validated.
#[derive(Debug, Clone)]
pub struct OtlpExport {
    /// Exporter settings (`instance_id` is filled in with the node id at start).
    pub exporter: logbook_otel::OtlpConfig,
    /// Spans wait at most this long.
    pub export_interval: Duration,
    /// Redaction profile for content.
    pub redact: Option<String>,
}

/// Replace `${VAR}` and `${VAR:-default}` from `vars`, skipping comment lines.
pub fn interpolate(text: &str, vars: &HashMap<String, String>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let Some(end) = after.find('}') else {
                errors.push(format!("line {}: unterminated ${{", n + 1));
                out.push_str(&rest[i..]);
                rest = "";
                break;
            };
            let expr = &after[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((a, b)) => (a, Some(b)),
                None => (expr, None),
            };
            match (vars.get(name), default) {
                (Some(v), _) => out.push_str(v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => errors.push(format!(
                    "line {}: environment variable {name} is not set",
                    n + 1
                )),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn account_of_arn(arn: &str) -> Option<String> {
    let parts: Vec<&str> = arn.split(':').collect();
    (parts.len() >= 6 && parts[4].len() == 12 && parts[4].bytes().all(|b| b.is_ascii_digit()))
        .then(|| parts[4].to_string())
}

impl Config {
    /// The master keys of `[encryption]`, with `LOGBOOK_MASTER_KEY` from the environment.
    pub fn keyring(&self) -> Result<logbook_seal::Keyring, String> {
        let env = std::env::var(logbook_seal::MASTER_KEY_ENV).ok();
        self.encryption.keyring(env.as_deref())
    }

    /// Defaults with no file.
    pub fn defaults(data_dir: &Path) -> Result<Config, ConfigError> {
        Self::from_raw(RawConfig::default(), data_dir)
    }

    /// Read and validate a TOML file, interpolating `${VAR}` from the environment.
    pub fn load(path: &Path, data_dir: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(vec![format!("cannot read {}: {e}", path.display())]))?;
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::parse(&text, &vars, data_dir)
    }

    /// Parse and validate TOML text.
    pub fn parse(
        text: &str,
        vars: &HashMap<String, String>,
        data_dir: &Path,
    ) -> Result<Config, ConfigError> {
        let text = interpolate(text, vars).map_err(ConfigError)?;
        let raw: RawConfig = toml::from_str(&text).map_err(|e| ConfigError(vec![e.to_string()]))?;
        Self::from_raw(raw, data_dir)
    }

    fn from_raw(raw: RawConfig, data_dir: &Path) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();
        if let Some(v) = &raw.version {
            if v != "1" {
                errors.push(format!("version = {v:?}: only \"1\" is known"));
            }
        }
        let account_id = raw
            .server
            .account_id
            .unwrap_or_else(|| "000000000000".into());
        if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
            errors.push(format!(
                "server.account_id {account_id:?} must be 12 digits"
            ));
        }
        let region = raw.server.region.unwrap_or_else(|| "us-east-1".into());
        let mode = match raw.logging.mode.as_deref() {
            None | Some("strict") => LoggingMode::Strict,
            Some("async") => LoggingMode::Async,
            Some(o) => {
                errors.push(format!(
                    "logging.mode {o:?}: expected \"strict\" or \"async\""
                ));
                LoggingMode::Strict
            }
        };
        let on_failure = match raw.logging.on_failure.as_deref() {
            None | Some("fail-closed") => OnFailure::FailClosed,
            Some("fail-open") => OnFailure::FailOpen,
            Some(o) => {
                errors.push(format!(
                    "logging.on_failure {o:?}: expected \"fail-closed\" or \"fail-open\""
                ));
                OnFailure::FailClosed
            }
        };
        let mut buckets = HashMap::new();
        let mut redaction = Redaction::default();
        for (name, p) in raw.redaction {
            let profile = RedactionProfile {
                detectors: p.detectors,
                custom: p.custom.into_iter().map(|c| (c.name, c.pattern)).collect(),
            };
            if let Err(e) = profile.compile() {
                errors.push(format!("redaction.{name}: {e}"));
            }
            redaction.profiles.insert(name, profile);
        }
        let use_profile = |errors: &mut Vec<String>, what: String, p: &Option<String>| {
            if let Some(p) = p {
                if !redaction.profiles.contains_key(p) {
                    errors.push(format!(
                        "{what}: redaction profile {p:?} is not declared in [redaction.{p}]"
                    ));
                }
            }
        };
        if let Some(a) = &raw.archive.redact {
            use_profile(&mut errors, "archive.redact".into(), &Some(a.clone()));
        }
        use_profile(&mut errors, "store.redact".into(), &raw.store.redact);
        let mut bucket_redact = BTreeMap::new();
        let mut group_redact = BTreeMap::new();
        for b in &raw.buckets {
            use_profile(&mut errors, format!("bucket {:?}", b.name), &b.redact);
            if let Some(p) = &b.redact {
                bucket_redact.insert(b.name.clone(), p.clone());
            }
        }
        for g in &raw.log_groups {
            use_profile(&mut errors, format!("log group {:?}", g.name), &g.redact);
            if let Some(p) = &g.redact {
                group_redact.insert(g.name.clone(), p.clone());
            }
        }
        redaction.buckets = bucket_redact;
        redaction.log_groups = group_redact;
        redaction.store = raw.store.redact.clone();
        let mut parquet_buckets = BTreeSet::new();
        let mut lifecycle_raw = Vec::new();
        for mut b in raw.buckets {
            let name = b.name.clone();
            if b.parquet == Some(true) {
                parquet_buckets.insert(name.clone());
            }
            if let Some(l) = b.lifecycle.take() {
                lifecycle_raw.push((name.clone(), b.path.is_some(), l));
            }
            match b.spec(data_dir, &region) {
                Ok(spec) => {
                    if buckets.insert(name.clone(), spec).is_some() {
                        errors.push(format!("bucket {name:?} declared twice"));
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        let segment_bytes = raw.logging.segment_bytes.unwrap_or(16 * 1024 * 1024);
        let journal_max_bytes = raw.journal.max_bytes.unwrap_or(DEFAULT_JOURNAL_MAX_BYTES);
        if journal_max_bytes < 4 * segment_bytes {
            errors.push(format!(
                "journal.max_bytes {journal_max_bytes} must be at least 4 segments ({} bytes with logging.segment_bytes = {segment_bytes})",
                4 * segment_bytes
            ));
        }
        for (g, d) in raw
            .store
            .body_retention_days
            .iter()
            .map(|d| ("body_retention_days".to_string(), d))
            .chain(
                raw.store
                    .group_body_retention_days
                    .iter()
                    .map(|(g, d)| (format!("group_body_retention_days.{g:?}"), d)),
            )
        {
            if !logbook_store::RETENTION_DAYS.contains(d) {
                errors.push(format!(
                    "store.{g} = {d}: must be one of CloudWatch's retention values {:?}",
                    logbook_store::RETENTION_DAYS
                ));
            }
        }
        let pricing = raw.pricing.catalog().unwrap_or_else(|e| {
            errors.push(e);
            logbook_ops::Catalog::empty("none")
        });
        let mut budgets: Vec<logbook_ops::budgets::BudgetSpec> = Vec::new();
        for b in raw.budgets {
            match b.spec() {
                Ok(spec) if budgets.iter().any(|o| o.name == spec.name) => {
                    errors.push(format!("budget {:?} declared twice", spec.name))
                }
                Ok(spec) => budgets.push(spec),
                Err(e) => errors.push(e),
            }
        }
        let mut alarm_actions = BTreeMap::new();
        for a in raw.alarm_actions {
            let format = a.format.unwrap_or_else(|| "sns".into());
            if format != "sns" && format != "slack" {
                errors.push(format!(
                    "alarm action {:?}: format {format:?}: expected \"sns\" or \"slack\"",
                    a.arn
                ));
            } else if !(a.url.starts_with("http://") || a.url.starts_with("https://")) {
                errors.push(format!(
                    "alarm action {:?}: url must be http:// or https://",
                    a.arn
                ));
            } else if alarm_actions
                .insert(
                    a.arn.clone(),
                    crate::alarms::ActionTarget { url: a.url, format },
                )
                .is_some()
            {
                errors.push(format!("alarm action {:?} declared twice", a.arn));
            }
        }
        let mut alarms: Vec<logbook_ops::alarms::AlarmDef> = Vec::new();
        for a in raw.alarms {
            match a.def() {
                Ok(d) if alarms.iter().any(|o| o.alarm_name == d.alarm_name) => {
                    errors.push(format!("alarm {:?} declared twice", d.alarm_name))
                }
                Ok(d) => {
                    for act in d
                        .alarm_actions
                        .iter()
                        .chain(&d.ok_actions)
                        .chain(&d.insufficient_data_actions)
                    {
                        if !alarm_actions.contains_key(act) {
                            errors.push(format!(
                                "alarm {:?}: action {act:?} is not declared in [[alarm_actions]]",
                                d.alarm_name
                            ));
                        }
                    }
                    alarms.push(d)
                }
                Err(e) => errors.push(e),
            }
        }
        for b in &budgets {
            for act in &b.actions {
                if !alarm_actions.contains_key(act) {
                    errors.push(format!(
                        "budget {:?}: warn action {act:?} is not declared in [[alarm_actions]]",
                        b.name
                    ));
                }
            }
        }
        if let Some(g) = raw.governance {
            let stall = g.delivery_stall_seconds.unwrap_or(300) as f64;
            let ns = logbook_query::metrics::GOVERNANCE_NAMESPACE;
            let builtin = |name: &str, metric: &str, desc: &str, period: i64, threshold: f64| {
                logbook_ops::alarms::AlarmDef {
                    alarm_name: name.into(),
                    alarm_description: Some(desc.into()),
                    namespace: ns.into(),
                    metric_name: metric.into(),
                    model_id: None,
                    statistic: "Maximum".into(),
                    period,
                    evaluation_periods: 1,
                    datapoints_to_alarm: 1,
                    threshold,
                    comparison_operator: "GreaterThanThreshold".into(),
                    treat_missing_data: "notBreaching".into(),
                    actions_enabled: true,
                    alarm_actions: g.alarm_actions.clone(),
                    ok_actions: g.alarm_actions.clone(),
                    insufficient_data_actions: Vec::new(),
                }
            };
            let mut unpriced = builtin(
                "logbook-unpriced-calls",
                "UnpricedInvocations",
                "A call was made to a model the price catalog does not price: its cost is unknown.",
                300,
                0.0,
            );
            unpriced.statistic = "Sum".into();
            for d in [
                builtin(
                    "logbook-logging-stopped",
                    "RegionsNotRecording",
                    "Invocation logging was turned off in a region: calls there are not recorded.",
                    60,
                    0.0,
                ),
                builtin(
                    "logbook-delivery-stalled",
                    "StalledDestinationSeconds",
                    "A destination has failed to take records for longer than the threshold.",
                    60,
                    stall,
                ),
                unpriced,
            ] {
                for act in &d.alarm_actions {
                    if !alarm_actions.contains_key(act) {
                        errors.push(format!(
                            "[governance]: action {act:?} is not declared in [[alarm_actions]]"
                        ));
                    }
                }
                if !alarms.iter().any(|a| a.alarm_name == d.alarm_name) {
                    alarms.push(d);
                }
            }
        }
        let alarm_every =
            Duration::from_millis(raw.alarm_evaluation.every_ms.unwrap_or(10_000).max(100));
        let mut remote_log_groups = BTreeMap::new();
        for g in raw.log_groups {
            match g.spec(&region) {
                Ok((name, spec)) => {
                    if remote_log_groups.insert(name.clone(), spec).is_some() {
                        errors.push(format!("log group {name:?} declared twice"));
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        let archive_bucket = raw
            .archive
            .bucket
            .unwrap_or_else(|| "logbook-archive".into());
        if !buckets.contains_key(&archive_bucket) {
            if archive_bucket == "logbook-archive" {
                buckets.insert(
                    archive_bucket.clone(),
                    BucketSpec::Local(data_dir.join("archive")),
                );
                if let Some(p) = &raw.archive.redact {
                    redaction.buckets.insert(archive_bucket.clone(), p.clone());
                }
            } else {
                errors.push(format!(
                    "archive.bucket {archive_bucket:?} is not declared in [[buckets]]"
                ));
            }
        }
        if raw.archive.parquet == Some(true) {
            parquet_buckets.insert(archive_bucket.clone());
        }
        let cluster = match raw.cluster {
            None => None,
            Some(c) => {
                let ttl = c.claim_ttl_secs.unwrap_or(30);
                let poll = c.poll_ms.unwrap_or(2000);
                if let Some(u) = &c.redis_url {
                    if !u.starts_with("redis://") {
                        errors.push(format!(
                            "cluster.redis_url {:?}: a redis:// URL (TLS, rediss://, is not built in)",
                            logbook_cluster::ledger::describe(u)
                        ));
                    }
                }
                if !(100..=60_000).contains(&poll) {
                    errors.push(format!("cluster.poll_ms {poll}: between 100 and 60000"));
                }
                if !(3..=3600).contains(&ttl) {
                    errors.push(format!("cluster.claim_ttl_secs {ttl}: between 3 and 3600"));
                }
                match c.home {
                    Some(home) if buckets.contains_key(&home) => Some(ClusterConfig {
                        home,
                        claim_ttl: Duration::from_secs(ttl),
                        poll: Duration::from_millis(poll),
                        redis_url: c.redis_url.clone(),
                        peer_cache_bytes: c.peer_cache_mb.unwrap_or(1024).saturating_mul(1 << 20),
                    }),
                    Some(home) => {
                        errors.push(format!(
                            "cluster.home {home:?} is not declared in [[buckets]]"
                        ));
                        None
                    }
                    None => {
                        errors.push(
                            "cluster.home: the bucket the replicas share (a name from [[buckets]])"
                                .into(),
                        );
                        None
                    }
                }
            }
        };
        let mut lifecycle = BTreeMap::new();
        for (name, local, l) in lifecycle_raw {
            let what = format!("bucket {name:?}: lifecycle");
            if !local {
                errors.push(format!(
                    "{what} applies to local buckets; an S3 bucket has its own lifecycle rules (S3 Lifecycle configuration)"
                ));
                continue;
            }
            let days = |field: &str, v: Option<u32>, errors: &mut Vec<String>| match v {
                Some(0) => {
                    errors.push(format!("{what}.{field} must be at least 1"));
                    None
                }
                Some(d) => Some(Duration::from_secs(u64::from(d) * 86_400)),
                None => None,
            };
            let transition_after = days(
                "transition_after_days",
                l.transition_after_days,
                &mut errors,
            );
            let expire_after = days("expire_after_days", l.expire_after_days, &mut errors);
            match (&l.transition_to, l.transition_after_days) {
                (Some(to), Some(_)) => {
                    if *to == name {
                        errors.push(format!("{what}.transition_to cannot be the bucket itself"));
                    } else if !buckets.contains_key(to) {
                        errors.push(format!(
                            "{what}.transition_to {to:?} is not declared in [[buckets]]"
                        ));
                    }
                }
                (None, Some(_)) => errors.push(format!(
                    "{what}: transition_after_days needs transition_to (the cold bucket)"
                )),
                (Some(_), None) => {
                    errors.push(format!("{what}: transition_to needs transition_after_days"))
                }
                (None, None) => {}
            }
            if let (Some(t), Some(e)) = (l.transition_after_days, l.expire_after_days) {
                if e <= t {
                    errors.push(format!(
                        "{what}: expire_after_days ({e}) must come after transition_after_days ({t})"
                    ));
                }
            }
            if l.transition_after_days.is_none() && l.expire_after_days.is_none() {
                errors.push(format!(
                    "{what} needs transition_after_days or expire_after_days"
                ));
            }
            lifecycle.insert(
                name,
                logbook_bucket::lifecycle::Rule {
                    transition_after,
                    transition_to: l.transition_to,
                    expire_after,
                    interval: Duration::from_secs(l.interval_secs.unwrap_or(3600).max(1)),
                },
            );
        }
        let mut providers = Vec::new();
        for p in raw.providers {
            match p.kind.as_str() {
                "mock" | "bedrock" => {}
                "anthropic" => {}
                "openai" => {
                    if p.base_url.is_none() {
                        errors.push(format!(
                            "provider {:?}: type \"openai\" needs base_url",
                            p.name
                        ));
                    }
                }
                other => errors.push(format!(
                    "provider {:?}: unknown type {other:?} (known: mock, openai, anthropic, bedrock)",
                    p.name
                )),
            }
            if p.access_key_id.is_some() != p.secret_access_key.is_some() {
                errors.push(format!(
                    "provider {:?}: access_key_id and secret_access_key go together",
                    p.name
                ));
            }
            if providers.iter().any(|q: &ProviderConfig| q.name == p.name) {
                errors.push(format!("provider {:?} declared twice", p.name));
            }
            providers.push(ProviderConfig {
                name: p.name,
                kind: p.kind,
                base_url: p.base_url,
                api_key: p.api_key.filter(|k| !k.is_empty()),
                timeout: Duration::from_millis(p.timeout_ms.unwrap_or(600_000)),
                delay: Duration::from_millis(p.delay_ms.unwrap_or(0)),
                region: p.region,
                access_key_id: p.access_key_id,
                secret_access_key: p.secret_access_key,
                session_token: p.session_token,
            });
        }
        if providers.is_empty() {
            providers.push(ProviderConfig {
                name: "mock".into(),
                kind: "mock".into(),
                base_url: None,
                api_key: None,
                timeout: Duration::from_secs(600),
                delay: Duration::ZERO,
                region: None,
                access_key_id: None,
                secret_access_key: None,
                session_token: None,
            });
        }
        let mut routes: Vec<RouteConfig> = raw
            .routes
            .into_iter()
            .map(|r| RouteConfig {
                model: r.model,
                provider: r.provider,
                upstream_model: r.upstream_model,
            })
            .collect();
        for r in &routes {
            if !providers.iter().any(|p| p.name == r.provider) {
                errors.push(format!(
                    "route {:?} names unknown provider {:?}",
                    r.model, r.provider
                ));
            }
            if globset::Glob::new(&r.model).is_err() {
                errors.push(format!("route model {:?} is not a valid glob", r.model));
            }
        }
        if routes.is_empty() {
            if let Some(p) = providers.first() {
                routes.push(RouteConfig {
                    model: "*".into(),
                    provider: p.name.clone(),
                    upstream_model: None,
                });
            }
        }
        let mut principals = Vec::new();
        for p in raw.principals {
            let account = p
                .account_id
                .clone()
                .or_else(|| account_of_arn(&p.arn))
                .unwrap_or_else(|| account_id.clone());
            if p.access_key_id.is_none() && p.api_key.is_none() {
                errors.push(format!(
                    "principal {:?} needs access_key_id or api_key",
                    p.arn
                ));
            }
            if p.access_key_id.is_some() != p.secret_access_key.is_some() {
                errors.push(format!(
                    "principal {:?}: access_key_id and secret_access_key go together",
                    p.arn
                ));
            }
            let permissions = p
                .permissions
                .unwrap_or_else(|| vec!["invoke:*".to_string()]);
            for perm in &permissions {
                if !valid_permission(perm) {
                    errors.push(format!("principal {:?}: unknown permission {perm:?} (known: invoke:<model glob>, logging:read, logging:manage, logs:read, logs:<Action>[:<log group or ARN glob>] with Action one of {}, content:full|redacted|metadata, role:admin|auditor|analyst|app)", p.arn, crate::identity::LOG_ACTIONS.join(" ")));
                }
            }
            principals.push(PrincipalConfig {
                arn: p.arn,
                account_id: account,
                access_key_id: p.access_key_id,
                secret_access_key: p.secret_access_key,
                api_key: p.api_key,
                permissions,
                tags: p.tags,
            });
        }
        let mut logging_default = LoggingConfig::to_bucket(
            &archive_bucket,
            raw.archive.key_prefix.as_deref().unwrap_or(""),
        );
        // The embedded default also sends every record to a log group, so queries work
        // out of the box.
        logging_default.cloud_watch_config = Some(CloudWatchConfig {
            log_group_name: DEFAULT_LOG_GROUP.into(),
            role_arn: format!("arn:aws:iam::{account_id}:role/logbook-logging"),
            large_data_delivery_s3_config: None,
        });
        let mut log_groups = BTreeSet::from([DEFAULT_LOG_GROUP.to_string()]);
        let mut logging_declared = BTreeMap::new();
        for (name, v) in raw.logging_config {
            let json = match serde_json::to_value(&v) {
                Ok(j) => j,
                Err(e) => {
                    errors.push(format!("logging_config.{name}: {e}"));
                    continue;
                }
            };
            match validate_logging_config(&json) {
                Ok(c) => {
                    for b in [
                        c.s3_config.as_ref().map(|s| s.bucket_name.clone()),
                        c.cloud_watch_config
                            .as_ref()
                            .and_then(|w| w.large_data_delivery_s3_config.as_ref())
                            .map(|s| s.bucket_name.clone()),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        if !buckets.contains_key(&b) {
                            errors.push(format!(
                                "logging_config.{name}: bucket {b:?} is not declared in [[buckets]]"
                            ));
                        }
                    }
                    if let Some(cw) = &c.cloud_watch_config {
                        log_groups.insert(cw.log_group_name.clone());
                    }
                    if name == "default" {
                        logging_default = c;
                    } else {
                        logging_declared.insert(format!("{account_id}/{name}"), c);
                    }
                }
                Err(e) => errors.push(format!("logging_config.{name}: {e}")),
            }
        }
        let auth_enforced = match raw.auth.mode.as_deref() {
            None | Some("enforce") => true,
            Some("off") => false,
            Some(o) => {
                errors.push(format!("auth.mode {o:?}: expected \"enforce\" or \"off\""));
                true
            }
        };
        if let Some(p) = &raw.archive.key_prefix {
            if let Err(e) = logbook_record::logging::validate_key_prefix(p, "archive.key_prefix") {
                errors.extend(e);
            }
        }
        if !logbook_wire::sigv4::valid_region(&region) {
            errors.push(format!(
                "server.region {region:?} is not an AWS region name (like us-east-1)"
            ));
        }
        let listen = raw.server.listen.unwrap_or_else(|| DEFAULT_LISTEN.into());
        let mut limits = logbook_query::Limits::default();
        let q = &raw.query;
        for (name, v, slot) in [
            ("threads", q.threads, &mut limits.threads),
            ("max_running", q.max_running, &mut limits.max_running),
            (
                "max_query_chars",
                q.max_query_chars,
                &mut limits.max_query_chars,
            ),
        ] {
            match v {
                Some(0) => errors.push(format!("query.{name} must be at least 1")),
                Some(n) => *slot = n,
                None => {}
            }
        }
        if let Some(n) = q.max_queued {
            limits.max_queued = n;
        }
        if let Some(mb) = q.query_memory_mb {
            limits.query_memory_bytes = mb << 20;
        }
        if let Some(mb) = q.total_memory_mb {
            limits.total_memory_bytes = mb << 20;
        }
        if limits.query_memory_bytes > limits.total_memory_bytes {
            errors.push("query.query_memory_mb must not exceed query.total_memory_mb".into());
        }
        let query = QueryConfig {
            limits,
            http_timeout: Duration::from_secs(q.http_timeout_secs.unwrap_or(60).max(1)),
            start_query_timeout: Duration::from_secs(
                q.start_query_timeout_secs
                    .unwrap_or(15 * 60)
                    .clamp(1, 60 * 60),
            ),
        };
        let otlp = match raw.otlp {
            None => None,
            Some(o) => {
                let endpoint = o.endpoint.unwrap_or_default();
                if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                    errors.push(format!(
                        "otlp.endpoint {endpoint:?} must be an http:// or https:// URL (the collector's base, e.g. http://127.0.0.1:4318)"
                    ));
                }
                let protocol = match o.protocol.as_deref() {
                    None | Some("http/protobuf") => logbook_otel::Protocol::HttpProtobuf,
                    Some("grpc") => logbook_otel::Protocol::Grpc,
                    Some(p) => {
                        errors.push(format!(
                            "otlp.protocol {p:?}: expected \"http/protobuf\" or \"grpc\""
                        ));
                        logbook_otel::Protocol::HttpProtobuf
                    }
                };
                let metrics_interval = o.metrics_interval_ms.unwrap_or(60_000);
                if metrics_interval < 1000 {
                    errors.push(format!(
                        "otlp.metrics_interval_ms {metrics_interval}: at least 1000"
                    ));
                }
                use_profile(&mut errors, "otlp.redact".into(), &o.redact);
                Some(OtlpExport {
                    exporter: logbook_otel::OtlpConfig {
                        endpoint,
                        protocol,
                        headers: o.headers.0,
                        content: o.content.unwrap_or(false),
                        service_name: o.service_name.unwrap_or_else(|| "logbook".into()),
                        instance_id: String::new(),
                        metrics_interval: Duration::from_millis(metrics_interval),
                        metrics: o.metrics.unwrap_or(true),
                        timeout: Duration::from_millis(o.timeout_ms.unwrap_or(10_000).max(100)),
                    },
                    export_interval: Duration::from_millis(
                        o.export_interval_ms.unwrap_or(5_000).max(10),
                    ),
                    redact: o.redact,
                })
            }
        };
        if !errors.is_empty() {
            return Err(ConfigError(errors));
        }
        Ok(Config {
            data_dir: data_dir.to_path_buf(),
            listen,
            node_id: raw.server.node_id,
            account_id,
            region,
            max_body_bytes: raw.server.max_body_bytes.unwrap_or(BEDROCK_MAX_BODY),
            header_timeout: Duration::from_millis(
                raw.server.header_timeout_ms.unwrap_or(10_000).max(1),
            ),
            max_connections: raw.server.max_connections.unwrap_or(4096).max(1),
            body_timeout: Duration::from_millis(
                raw.server.body_timeout_ms.unwrap_or(60_000).max(1),
            ),
            max_buffered_bytes: raw
                .server
                .max_buffered_bytes
                .unwrap_or(256 << 20)
                .max(raw.server.max_body_bytes.unwrap_or(BEDROCK_MAX_BODY)),
            query,
            mode,
            on_failure,
            segment_bytes,
            pricing,
            budgets,
            alarm_actions,
            alarms,
            alarm_every,
            journal_max_bytes,
            archive_bucket,
            archive_prefix: raw.archive.key_prefix.unwrap_or_default(),
            max_object_bytes: raw.archive.max_object_bytes.unwrap_or(5 * 1024 * 1024),
            max_object_age: Duration::from_millis(raw.archive.max_object_age_ms.unwrap_or(60_000)),
            parquet_max_object_bytes: raw
                .archive
                .parquet_max_object_bytes
                .unwrap_or(64 * 1024 * 1024),
            parquet_max_object_age: Duration::from_millis(
                raw.archive.parquet_max_object_age_ms.unwrap_or(300_000),
            ),
            permanent_retry: Duration::from_millis(
                raw.archive.permanent_retry_ms.unwrap_or(60_000),
            ),
            redaction,
            integrity: raw
                .integrity
                .enabled
                .unwrap_or(true)
                .then(|| IntegrityConfig {
                    signing_key: raw.integrity.signing_key.map_or_else(
                        || data_dir.join("integrity").join("signing-key.pem"),
                        |p| data_dir.join(p),
                    ),
                    checkpoint_every: Duration::from_millis(
                        raw.integrity
                            .checkpoint_every_ms
                            .unwrap_or(300_000)
                            .max(1_000),
                    ),
                }),
            body_retention: logbook_store::BodyRetention {
                default_days: raw.store.body_retention_days,
                groups: raw.store.group_body_retention_days.clone(),
            },
            encryption: EncryptionConfig {
                master_key_file: raw.encryption.master_key_file.map(|p| data_dir.join(p)),
                old_master_key_files: raw
                    .encryption
                    .old_master_key_files
                    .iter()
                    .map(|p| data_dir.join(p))
                    .collect(),
            },
            buckets,
            parquet_buckets,
            lifecycle,
            providers,
            routes,
            principals,
            logging_default,
            log_groups,
            remote_log_groups,
            store_ingest: {
                let mut c = logbook_store::ingest::IngestConfig::default();
                if cluster.is_some() {
                    // Replicas see each other's records once they are in a file: flush
                    // often (compaction merges the small files).
                    c.flush_age = CLUSTER_FLUSH_AGE;
                }
                if let Some(ms) = raw.store.flush_age_ms {
                    c.flush_age = Duration::from_millis(ms.max(100));
                }
                if let Some(b) = raw.store.flush_bytes {
                    c.flush_bytes = b.max(1 << 20);
                }
                c
            },
            logging_declared,
            require_logging: raw.logging.require_logging.unwrap_or(false),
            auth_enforced,
            console: {
                let d = ConsoleConfig::default();
                ConsoleConfig {
                    enabled: raw.console.enabled.unwrap_or(d.enabled),
                    session_idle: raw
                        .console
                        .session_idle_secs
                        .map_or(d.session_idle, |s| Duration::from_secs(s.clamp(1, 86_400))),
                    session_max: raw.console.session_max_secs.map_or(d.session_max, |s| {
                        Duration::from_secs(s.clamp(1, 30 * 86_400))
                    }),
                }
            },
            otlp,
            cluster,
            release_memory: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_route_everything_to_the_mock() {
        let c = Config::defaults(Path::new("/d")).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.providers[0].kind, "mock");
        assert_eq!(c.routes[0].model, "*");
        assert_eq!(
            c.buckets["logbook-archive"],
            BucketSpec::Local(PathBuf::from("/d/archive"))
        );
        assert_eq!(c.mode, LoggingMode::Strict);
    }

    #[test]
    fn reports_all_errors_together() {
        let e = Config::parse(
            "[logging]\nmode = \"sometimes\"\n[[routes]]\nmodel = \"x\"\nprovider = \"nope\"\n[[providers]]\nname = \"o\"\ntype = \"openai\"\n",
            &HashMap::new(),
            Path::new("/d"),
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 3, "{e}");
        assert!(Config::parse("[server]\nbogus = 1\n", &HashMap::new(), Path::new("/d")).is_err());
    }

    #[test]
    fn interpolates_env_and_skips_comments() {
        let vars = HashMap::from([("K".to_string(), "v".to_string())]);
        assert_eq!(
            interpolate("a = \"${K}\"\n# ${MISSING}\nb = \"${X:-d}\"", &vars).unwrap(),
            "a = \"v\"\n# ${MISSING}\nb = \"d\""
        );
        assert!(interpolate("a = \"${MISSING}\"", &vars).is_err());
    }

    #[test]
    fn the_open_layout_is_chosen_per_bucket() {
        let parse = |t: &str| Config::parse(t, &HashMap::new(), Path::new("/d"));
        let c = parse("[[buckets]]\nname = \"a\"\npath = \"a\"\nparquet = true\n[[buckets]]\nname = \"b\"\npath = \"b\"\n").unwrap();
        assert_eq!(c.parquet_buckets.iter().collect::<Vec<_>>(), ["a"]);
        let c = parse("[archive]\nparquet = true\n").unwrap();
        assert_eq!(
            c.parquet_buckets.iter().collect::<Vec<_>>(),
            ["logbook-archive"]
        );
        let d = parse("").unwrap();
        assert!(d.parquet_buckets.is_empty());
        assert_eq!(d.parquet_max_object_bytes, 64 * 1024 * 1024);
        assert_eq!(d.parquet_max_object_age, Duration::from_secs(300));
        let c =
            parse("[archive]\nparquet_max_object_bytes = 1000\nparquet_max_object_age_ms = 20\n")
                .unwrap();
        assert_eq!(c.parquet_max_object_bytes, 1000);
        assert_eq!(c.parquet_max_object_age, Duration::from_millis(20));
        let e = parse("[[buckets]]\nname = \"a\"\npath = \"a\"\nparquet = \"yes\"\n").unwrap_err();
        assert!(e.to_string().contains("parquet"), "{e}");
    }

    #[test]
    fn s3_buckets_are_declared_and_checked() {
        let parse = |t: &str| Config::parse(t, &HashMap::new(), Path::new("/d"));
        let c = parse(
            "[server]\nregion = \"eu-west-1\"\n[[buckets]]\nname = \"corp\"\nurl = \"s3://corp-logs\"\nendpoint = \"http://127.0.0.1:9000\"\npath_style = true\nsse = \"aws:kms\"\nsse_kms_key_id = \"k1\"\n",
        )
        .unwrap();
        let BucketSpec::S3(s) = &c.buckets["corp"] else {
            panic!("{:?}", c.buckets["corp"]);
        };
        assert_eq!(s.bucket, "corp-logs");
        assert_eq!(s.region, "eu-west-1", "the server's region by default");
        assert!(s.path_style);
        assert_eq!(s.sse, Some(Sse::Kms(Some("k1".into()))));
        for (bad, says) in [
            ("path = \"x\"\nurl = \"s3://abc\"", "either path"),
            ("url = \"https://abc\"", "must be s3://"),
            ("url = \"s3://AB\"", "not an S3 bucket name"),
            (
                "url = \"s3://abc\"\nregion = \"mars-1\"",
                "not an AWS region",
            ),
            (
                "url = \"s3://abc\"\nendpoint = \"ftp://x\"",
                "http:// or https://",
            ),
            ("url = \"s3://abc\"\naccess_key_id = \"A\"", "go together"),
            ("url = \"s3://abc\"\nsse = \"DES\"", "(SSE-S3)"),
            ("url = \"s3://abc\"\nsse_kms_key_id = \"k\"", "needs sse"),
            ("path = \"x\"\nsse = \"AES256\"", "applies to an S3 bucket"),
        ] {
            let e = parse(&format!("[[buckets]]\nname = \"b\"\n{bad}\n")).unwrap_err();
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn remote_log_groups_and_the_journal_budget_are_declared_and_checked() {
        let parse = |t: &str| Config::parse(t, &HashMap::new(), Path::new("/d"));
        let c = parse(
            "[server]\nregion = \"eu-west-1\"\n[[log_groups]]\nname = \"/aws/bedrock/x\"\n[[log_groups]]\nname = \"/y\"\nendpoint = \"http://127.0.0.1:5000\"\nregion = \"us-east-2\"\naccess_key_id = \"A\"\nsecret_access_key = \"S\"\n[journal]\nmax_bytes = 1073741824\n[store]\nflush_age_ms = 5000\n[archive]\npermanent_retry_ms = 2500\n",
        )
        .unwrap();
        let x = &c.remote_log_groups["/aws/bedrock/x"];
        assert_eq!(x.region, "eu-west-1", "the server's region by default");
        assert_eq!(x.endpoint, "https://logs.eu-west-1.amazonaws.com");
        let y = &c.remote_log_groups["/y"];
        assert_eq!(
            (y.endpoint.as_str(), y.region.as_str()),
            ("http://127.0.0.1:5000", "us-east-2")
        );
        assert!(
            !format!("{y:?}").contains("\"S\""),
            "the secret is never printed"
        );
        assert_eq!(c.journal_max_bytes, 1 << 30);
        assert_eq!(c.store_ingest.flush_age, Duration::from_secs(5));
        assert_eq!(c.permanent_retry, Duration::from_millis(2500));
        let d = parse("").unwrap();
        assert_eq!(d.journal_max_bytes, DEFAULT_JOURNAL_MAX_BYTES);
        assert!(d.remote_log_groups.is_empty());
        for (bad, says) in [
            (
                "[[log_groups]]\nname = \"\"",
                "not a CloudWatch Logs group name",
            ),
            (
                "[[log_groups]]\nname = \"a b\"",
                "not a CloudWatch Logs group name",
            ),
            (
                "[[log_groups]]\nname = \"g\"\nregion = \"moon-1\"",
                "not an AWS region",
            ),
            (
                "[[log_groups]]\nname = \"g\"\nendpoint = \"logs.example\"",
                "http:// or https://",
            ),
            (
                "[[log_groups]]\nname = \"g\"\nsecret_access_key = \"S\"",
                "go together",
            ),
            (
                "[[log_groups]]\nname = \"g\"\n[[log_groups]]\nname = \"g\"",
                "declared twice",
            ),
            (
                "[[log_groups]]\nname = \"g\"\nrole = \"x\"",
                "unknown field",
            ),
            ("[journal]\nmax_bytes = 1000", "at least 4 segments"),
            (
                "[store]\nbody_retention_days = 2",
                "store.body_retention_days = 2",
            ),
            (
                "[store.group_body_retention_days]\n\"/g\" = 4",
                "retention values",
            ),
            ("[encryption]\nmaster_key = \"x\"", "unknown field"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn declarative_logging_config() {
        let c = Config::parse(
            "[[buckets]]\nname = \"team-logs\"\npath = \"team\"\n[logging_config.default]\ns3Config = { bucketName = \"team-logs\", keyPrefix = \"all/\" }\n[logging_config.us-west-2]\ns3Config = { bucketName = \"logbook-archive\" }\ntextDataDeliveryEnabled = false\n",
            &HashMap::new(),
            Path::new("/d"),
        )
        .unwrap();
        assert_eq!(
            c.logging_default.s3_config.as_ref().unwrap().bucket_name,
            "team-logs"
        );
        let w = &c.logging_declared["000000000000/us-west-2"];
        assert!(!w.text_data_delivery_enabled && w.image_data_delivery_enabled);
        let e = Config::parse(
            "[logging_config.default]\ns3Config = { bucketName = \"nope\" }\n",
            &HashMap::new(),
            Path::new("/d"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not declared"), "{e}");
    }

    #[test]
    fn principals_take_account_from_arn() {
        let c = Config::parse(
            "[[principals]]\narn = \"arn:aws:iam::123456789012:user/alice\"\naccess_key_id = \"AKIAALICE\"\nsecret_access_key = \"s\"\n",
            &HashMap::new(),
            Path::new("/d"),
        )
        .unwrap();
        assert_eq!(c.principals[0].account_id, "123456789012");
        assert!(!format!("{:?}", c.principals[0]).contains("\"s\""));
    }
}
