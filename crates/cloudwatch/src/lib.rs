//! A small CloudWatch Logs client: the three operations delivery needs
//! (`CreateLogStream`, `PutLogEvents`, `DescribeLogGroups`), SigV4-signed with `aws-sigv4`
//! (signing name `logs`) over the JSON 1.1 protocol (`X-Amz-Target: Logs_20140328.<Op>`),
//! as botocore's `logs/2014-03-28` model describes it.
//!
//! Why not `aws-sdk-cloudwatchlogs`: see ARCHITECTURE.md (its build cost, measured, for
//! three operations whose wire format fits on one page).
//!
//! [`Batcher`] holds the service's `PutLogEvents` limits: at most 1,048,576 bytes per
//! batch counting 26 bytes per event, 10,000 events, 256 KB per event, events in
//! chronological order spanning at most 24 hours.

pub use logbook_wire::credentials::AwsCredentials;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

/// Bytes `PutLogEvents` counts per event on top of its message.
pub const EVENT_OVERHEAD: usize = 26;
/// Largest `PutLogEvents` batch, counting [`EVENT_OVERHEAD`] per event.
pub const MAX_BATCH_BYTES: usize = 1_048_576;
/// Most events in one `PutLogEvents` call.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// Largest event (message bytes plus [`EVENT_OVERHEAD`]).
pub const MAX_EVENT_BYTES: usize = 256 * 1024;
/// Longest time span of one batch.
pub const MAX_BATCH_SPAN_MS: i64 = 24 * 3600 * 1000;
/// The log stream Bedrock delivers to.
pub const BEDROCK_STREAM: &str = "aws/bedrock/modelinvocations";

/// A CloudWatch Logs failure.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// The service answered with an error.
    #[error("CloudWatch Logs {operation}: {code}: {message}")]
    Service {
        /// The operation.
        operation: &'static str,
        /// The exception's name (`ResourceNotFoundException`, ...).
        code: String,
        /// Its message.
        message: String,
        /// The HTTP status.
        status: u16,
    },
    /// No answer: connection refused or reset, timeout.
    #[error("CloudWatch Logs {operation}: {message}")]
    Transport {
        /// The operation.
        operation: &'static str,
        /// What happened.
        message: String,
    },
    /// The request could not be built or signed (a configuration problem).
    #[error("CloudWatch Logs: {0}")]
    Config(String),
}

impl LogsError {
    /// Will the same call fail again however often it is retried (no such group, access
    /// denied, bad or expired credentials, a bad declaration)? Throttling, 5xx, timeouts
    /// and resets are not permanent.
    pub fn is_permanent(&self) -> bool {
        match self {
            LogsError::Config(_) => true,
            LogsError::Transport { .. } => false,
            LogsError::Service { code, status, .. } => {
                matches!(
                    code.as_str(),
                    "ResourceNotFoundException"
                        | "AccessDeniedException"
                        | "UnrecognizedClientException"
                        | "InvalidSignatureException"
                        | "IncompleteSignature"
                        | "ExpiredTokenException"
                        | "InvalidClientTokenId"
                        | "MissingAuthenticationToken"
                ) || (*status == 403)
            }
        }
    }

    /// Could this call have failed because of what it carried (the service refused the
    /// request itself: `InvalidParameterException`, a 400 or 413), rather than because
    /// of the group, the credentials or the network? Only such failures can make a
    /// destination park an entry.
    pub fn may_be_the_item(&self) -> bool {
        match self {
            LogsError::Service { status, .. } => {
                !self.is_permanent() && matches!(status, 400 | 413)
            }
            LogsError::Transport { .. } | LogsError::Config(_) => false,
        }
    }

    /// The exception's name, when the service gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            LogsError::Service { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// One log event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// The message (a record's JSON).
    pub message: String,
}

impl LogEvent {
    /// What the event counts for in a batch.
    pub fn size(&self) -> usize {
        self.message.len() + EVENT_OVERHEAD
    }
}

/// What `PutLogEvents` refused (the events it did not keep).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejected {
    /// Events at or after this index were too new.
    pub too_new_start: Option<usize>,
    /// Events before this index were too old.
    pub too_old_end: Option<usize>,
    /// Events before this index were older than the group's retention.
    pub expired_end: Option<usize>,
}

impl Rejected {
    /// How many of `n` events the service did not keep.
    pub fn count(&self, n: usize) -> usize {
        let old = self
            .too_old_end
            .unwrap_or(0)
            .max(self.expired_end.unwrap_or(0));
        let new = self.too_new_start.map(|s| n.saturating_sub(s)).unwrap_or(0);
        (old + new).min(n)
    }
}

/// Splits events into `PutLogEvents` batches within the service's limits. Events must be
/// given in the order they are to be kept; each finished batch is sorted by time (stable),
/// as the service requires.
#[derive(Debug, Default)]
pub struct Batcher {
    current: Vec<LogEvent>,
    bytes: usize,
    min_ts: i64,
    max_ts: i64,
    done: Vec<Vec<LogEvent>>,
}

impl Batcher {
    /// Add one event (its size must be ≤ [`MAX_EVENT_BYTES`]; the caller shrinks larger
    /// ones first).
    pub fn push(&mut self, e: LogEvent) {
        let size = e.size();
        let span_ok = self.current.is_empty()
            || (e.timestamp_ms.max(self.max_ts) - e.timestamp_ms.min(self.min_ts))
                < MAX_BATCH_SPAN_MS;
        if !self.current.is_empty()
            && (self.bytes + size > MAX_BATCH_BYTES
                || self.current.len() >= MAX_BATCH_EVENTS
                || !span_ok)
        {
            self.finish();
        }
        if self.current.is_empty() {
            self.min_ts = e.timestamp_ms;
            self.max_ts = e.timestamp_ms;
        }
        self.min_ts = self.min_ts.min(e.timestamp_ms);
        self.max_ts = self.max_ts.max(e.timestamp_ms);
        self.bytes += size;
        self.current.push(e);
    }

    fn finish(&mut self) {
        let mut b = std::mem::take(&mut self.current);
        b.sort_by_key(|e| e.timestamp_ms);
        self.done.push(b);
        self.bytes = 0;
    }

    /// Bytes in the batch being filled.
    pub fn pending_bytes(&self) -> usize {
        self.bytes
    }

    /// Every batch, the unfinished one included.
    pub fn take(&mut self) -> Vec<Vec<LogEvent>> {
        if !self.current.is_empty() {
            self.finish();
        }
        std::mem::take(&mut self.done)
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.current.clear();
        self.done.clear();
        self.bytes = 0;
    }
}

/// As whom to call CloudWatch Logs.
#[derive(Clone)]
pub enum LogsCredentials {
    /// Keys from the declaration, the environment or the shared credentials file.
    Static(AwsCredentials),
    /// Temporary credentials from web identity (EKS), the container endpoint (ECS) or the
    /// instance metadata service (EC2, IMDSv2), fetched and refreshed before they expire
    /// by `object_store`'s providers, the same chain the S3 buckets use.
    Provider(object_store::aws::AwsCredentialProvider),
}

impl LogsCredentials {
    /// The credentials to sign the next request with.
    pub async fn current(&self) -> Result<AwsCredentials, String> {
        match self {
            LogsCredentials::Static(c) => Ok(c.clone()),
            LogsCredentials::Provider(p) => {
                let c = p.get_credential().await.map_err(|e| e.to_string())?;
                Ok(AwsCredentials {
                    access_key_id: c.key_id.clone(),
                    secret_access_key: c.secret_key.clone(),
                    session_token: c.token.clone(),
                })
            }
        }
    }
}

impl std::fmt::Debug for LogsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogsCredentials::Static(c) => write!(f, "{}", c.access_key_id),
            LogsCredentials::Provider(_) => f.write_str("(web identity, container or instance)"),
        }
    }
}

/// Where and as whom to call CloudWatch Logs.
#[derive(Clone)]
pub struct LogsEndpoint {
    /// `https://logs.<region>.amazonaws.com` unless given.
    pub url: String,
    /// The region to sign for.
    pub region: String,
    /// Credentials (never printed).
    pub credentials: LogsCredentials,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for LogsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogsEndpoint")
            .field("url", &self.url)
            .field("region", &self.region)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// AWS's endpoint for a region.
pub fn default_endpoint(region: &str) -> String {
    format!("https://logs.{region}.amazonaws.com")
}

/// A CloudWatch Logs client.
#[derive(Debug, Clone)]
pub struct LogsClient {
    http: reqwest::Client,
    endpoint: LogsEndpoint,
}

impl LogsClient {
    /// A client for `endpoint`.
    pub fn new(endpoint: LogsEndpoint) -> Result<Self, LogsError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(endpoint.timeout)
            .build()
            .map_err(|e| LogsError::Config(format!("http client: {e}")))?;
        Ok(LogsClient { http, endpoint })
    }

    /// The endpoint's URL.
    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    async fn call(&self, operation: &'static str, body: Value) -> Result<Value, LogsError> {
        let body = serde_json::to_vec(&body).map_err(|e| LogsError::Config(e.to_string()))?;
        let url = format!("{}/", self.endpoint.url.trim_end_matches('/'));
        let uri: http::Uri = url
            .parse()
            .map_err(|e| LogsError::Config(format!("endpoint {url:?}: {e}")))?;
        let host = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .ok_or_else(|| LogsError::Config(format!("endpoint {url:?} has no host")))?;
        let target = format!("Logs_20140328.{operation}");
        let headers = [
            ("host", host.as_str()),
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        let credentials =
            self.endpoint
                .credentials
                .current()
                .await
                .map_err(|e| LogsError::Transport {
                    operation,
                    message: format!("no credentials: {e}"),
                })?;
        let signed = logbook_wire::credentials::sign_post(
            &url,
            &headers,
            &body,
            &credentials,
            &self.endpoint.region,
            "logs",
            SystemTime::now(),
        )
        .map_err(LogsError::Config)?;
        let mut rb = self.http.post(&url).body(body);
        for (k, v) in &signed {
            rb = rb.header(k, v);
        }
        let resp = rb.send().await.map_err(|e| LogsError::Transport {
            operation,
            message: transport_message(&e),
        })?;
        let status = resp.status().as_u16();
        let header_code = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(':').next().unwrap_or(s).to_string());
        let bytes = resp.bytes().await.map_err(|e| LogsError::Transport {
            operation,
            message: transport_message(&e),
        })?;
        let v: Value = if bytes.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(
                |_| json!({"message": String::from_utf8_lossy(&bytes).chars().take(300).collect::<String>()}),
            )
        };
        if (200..300).contains(&status) {
            return Ok(v);
        }
        let code = header_code
            .or_else(|| {
                v.get("__type")
                    .and_then(Value::as_str)
                    .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
            })
            .unwrap_or_else(|| format!("HTTP {status}"));
        let message = v
            .get("message")
            .or_else(|| v.get("Message"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        Err(LogsError::Service {
            operation,
            code,
            message,
            status,
        })
    }

    /// `CreateLogStream`; a stream that already exists is success.
    pub async fn create_log_stream(&self, group: &str, stream: &str) -> Result<(), LogsError> {
        match self
            .call(
                "CreateLogStream",
                json!({"logGroupName": group, "logStreamName": stream}),
            )
            .await
        {
            Err(e) if e.code() == Some("ResourceAlreadyExistsException") => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// `PutLogEvents` of one batch (see [`Batcher`]); returns what the service refused.
    pub async fn put_log_events(
        &self,
        group: &str,
        stream: &str,
        events: &[LogEvent],
    ) -> Result<Rejected, LogsError> {
        let events: Vec<Value> = events
            .iter()
            .map(|e| json!({"timestamp": e.timestamp_ms, "message": e.message}))
            .collect();
        let v = self
            .call(
                "PutLogEvents",
                json!({"logGroupName": group, "logStreamName": stream, "logEvents": events}),
            )
            .await?;
        let r = v.get("rejectedLogEventsInfo");
        let idx = |k: &str| {
            r.and_then(|r| r.get(k))
                .and_then(Value::as_u64)
                .map(|n| n as usize)
        };
        Ok(Rejected {
            too_new_start: idx("tooNewLogEventStartIndex"),
            too_old_end: idx("tooOldLogEventEndIndex"),
            expired_end: idx("expiredLogEventEndIndex"),
        })
    }

    /// Does the log group exist (and may these credentials see it)?
    pub async fn log_group_exists(&self, group: &str) -> Result<bool, LogsError> {
        let v = self
            .call(
                "DescribeLogGroups",
                json!({"logGroupNamePrefix": group, "limit": 50}),
            )
            .await?;
        Ok(v.get("logGroups")
            .and_then(Value::as_array)
            .is_some_and(|gs| {
                gs.iter()
                    .any(|g| g.get("logGroupName").and_then(Value::as_str) == Some(group))
            }))
    }
}

/// A transport error's chain, without the URL's query (never secret here, but long).
fn transport_message(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "connection failed".to_string()
    };
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: i64, n: usize) -> LogEvent {
        LogEvent {
            timestamp_ms: ts,
            message: "x".repeat(n),
        }
    }

    #[test]
    fn batches_hold_the_byte_limit_counting_26_per_event() {
        let mut b = Batcher::default();
        // 4 events of exactly a quarter of the limit fill one batch; the 5th starts another.
        let n = MAX_BATCH_BYTES / 4 - EVENT_OVERHEAD;
        for i in 0..5 {
            b.push(ev(i, n));
        }
        let batches = b.take();
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 1]);
        for batch in &batches {
            assert!(batch.iter().map(LogEvent::size).sum::<usize>() <= MAX_BATCH_BYTES);
        }
        // One byte more and only three fit.
        let mut b = Batcher::default();
        for i in 0..4 {
            b.push(ev(i, n + 1));
        }
        assert_eq!(
            b.take().iter().map(Vec::len).collect::<Vec<_>>(),
            vec![3, 1]
        );
    }

    #[test]
    fn batches_hold_the_event_count_and_the_24_hour_span() {
        let mut b = Batcher::default();
        for i in 0..(MAX_BATCH_EVENTS + 1) {
            b.push(ev(i as i64, 1));
        }
        assert_eq!(
            b.take().iter().map(Vec::len).collect::<Vec<_>>(),
            vec![MAX_BATCH_EVENTS, 1]
        );
        let mut b = Batcher::default();
        b.push(ev(0, 1));
        b.push(ev(MAX_BATCH_SPAN_MS - 1, 1));
        b.push(ev(MAX_BATCH_SPAN_MS, 1));
        // Going back in time counts too.
        b.push(ev(-1, 1));
        let batches = b.take();
        assert_eq!(batches.len(), 3, "{batches:?}");
        for batch in &batches {
            let (lo, hi) = (batch[0].timestamp_ms, batch[batch.len() - 1].timestamp_ms);
            assert!(hi - lo < MAX_BATCH_SPAN_MS);
        }
    }

    #[test]
    fn batches_are_sorted_by_time_keeping_ties_in_order() {
        let mut b = Batcher::default();
        for (ts, m) in [(5, "a"), (3, "b"), (5, "c"), (3, "d")] {
            b.push(LogEvent {
                timestamp_ms: ts,
                message: m.into(),
            });
        }
        let got: Vec<String> = b.take()[0].iter().map(|e| e.message.clone()).collect();
        assert_eq!(got, ["b", "d", "a", "c"]);
    }

    #[test]
    fn rejected_counts() {
        let r = Rejected {
            too_new_start: Some(8),
            too_old_end: Some(2),
            expired_end: None,
        };
        assert_eq!(r.count(10), 4);
        assert_eq!(Rejected::default().count(10), 0);
    }

    #[test]
    fn permanent_errors_are_told_from_passing_ones() {
        let svc = |code: &str, status| LogsError::Service {
            operation: "PutLogEvents",
            code: code.into(),
            message: String::new(),
            status,
        };
        assert!(svc("ResourceNotFoundException", 400).is_permanent());
        assert!(svc("UnrecognizedClientException", 400).is_permanent());
        assert!(svc("AccessDeniedException", 400).is_permanent());
        assert!(!svc("ThrottlingException", 400).is_permanent());
        assert!(!svc("ServiceUnavailableException", 503).is_permanent());
        assert!(!svc("InvalidParameterException", 400).is_permanent());
        assert!(!LogsError::Transport {
            operation: "PutLogEvents",
            message: "reset".into()
        }
        .is_permanent());
    }
}
