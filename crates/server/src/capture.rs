//! Where a record is born: one [`Call`] per request collects what the record needs while
//! the request is served, and the [`Recorder`] makes the finished record durable in the
//! journal before the response (or a stream's final frame) is released.

use crate::config::{LoggingMode, OnFailure};
use crate::control::LoggingConfigs;
use crate::identity::Caller;
use logbook_journal::{Journal, JournalError};
use logbook_record::logging::data_type;
use logbook_record::trail::TrailEvent;
use logbook_record::{
    millis_timestamp, record_timestamp, Destination, Identity, Input, InvocationRecord, LogbookExt,
    Operation, Output, SCHEMA_TYPE, SCHEMA_VERSION,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// The provider a call was routed to.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    /// Provider name.
    pub provider: String,
    /// Provider type.
    pub kind: &'static str,
    /// Upstream model id.
    pub upstream_model: String,
    /// Built-in mock?
    pub mock: bool,
}

/// Everything known about one call while it is served.
#[derive(Debug, Clone)]
pub struct Call {
    /// Request id (also `x-amzn-RequestId`).
    pub request_id: String,
    /// Monotonic start.
    pub started: Instant,
    /// Wall-clock start.
    pub start_time: OffsetDateTime,
    /// Operation.
    pub operation: Operation,
    /// `bedrock-runtime` or `openai`.
    pub api: &'static str,
    /// Model id as the caller sent it.
    pub model_id: String,
    /// Caller.
    pub caller: Caller,
    /// Client address.
    pub client_ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// Routing decision, once made.
    pub route: Option<RouteInfo>,
    /// Request side of the record.
    pub input: Input,
    /// Caller key/value pairs.
    pub request_metadata: Option<BTreeMap<String, String>>,
    /// Performance configuration.
    pub performance_config: Option<Value>,
    /// Streamed response?
    pub stream: bool,
    /// Time to the first streamed model output.
    pub first_token: Option<Duration>,
}

/// How a call ended.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Response side.
    pub output: Option<Output>,
    /// `(errorCode, message)` for failed calls.
    pub error: Option<(String, String)>,
    /// Status the client got.
    pub http_status: u16,
}

impl Call {
    /// Start a call.
    pub fn new(operation: Operation, api: &'static str, model_id: String, caller: Caller) -> Self {
        Call {
            request_id: uuid::Uuid::new_v4().to_string(),
            started: Instant::now(),
            start_time: OffsetDateTime::now_utc(),
            operation,
            api,
            model_id,
            caller,
            client_ip: None,
            user_agent: None,
            route: None,
            input: Input::default(),
            request_metadata: None,
            performance_config: None,
            stream: false,
            first_token: None,
        }
    }

    /// Note the first streamed output, once.
    pub fn mark_first_token(&mut self) {
        if self.first_token.is_none() {
            self.first_token = Some(self.started.elapsed());
        }
    }

    /// The record for this call. `logbook.sequence` is filled in by the journal.
    pub fn record(&self, outcome: Outcome) -> InvocationRecord {
        let (error_code, error_message) = match outcome.error {
            Some((c, m)) => (Some(c), Some(m)),
            None => (None, None),
        };
        InvocationRecord {
            schema_type: SCHEMA_TYPE.into(),
            schema_version: SCHEMA_VERSION.into(),
            timestamp: record_timestamp(self.start_time),
            account_id: self.caller.account_id.clone(),
            identity: Identity {
                arn: self.caller.arn.clone(),
            },
            region: self.caller.region.clone(),
            request_id: self.request_id.clone(),
            operation: self.operation.as_str().into(),
            model_id: self.model_id.clone(),
            input: self.input.clone(),
            output: outcome.output,
            request_metadata: self.request_metadata.clone(),
            inference_region: None,
            error_code,
            performance_config: self.performance_config.clone(),
            logbook: LogbookExt {
                sequence: 0,
                node_id: String::new(),
                provider: self.route.as_ref().map(|r| r.provider.clone()),
                provider_type: self.route.as_ref().map(|r| r.kind.to_string()),
                upstream_model: self.route.as_ref().map(|r| r.upstream_model.clone()),
                mock: self.route.as_ref().is_some_and(|r| r.mock),
                stream: self.stream,
                latency_ms: self.started.elapsed().as_millis() as u64,
                time_to_first_token_ms: self.first_token.map(|d| d.as_millis() as u64),
                start_time: millis_timestamp(self.start_time),
                http_status: outcome.http_status,
                error_message,
                client_ip: self.client_ip.clone(),
                user_agent: self.user_agent.clone(),
                auth: self.caller.auth.into(),
                access_key_id: self.caller.access_key_id.clone(),
                api_key_id: self.caller.api_key_id.clone(),
                api: self.api.into(),
                principal_tags: (!self.caller.tags.is_empty()).then(|| self.caller.tags.clone()),
                destination: None,
                bodies_omitted: None,
            },
        }
    }
}

/// A record could not be made durable and the configuration says fail closed.
#[derive(Debug, thiserror::Error)]
#[error("the invocation could not be logged durably: {0}")]
pub struct RecordError(pub String);

/// Commits records to the journal, under the logging configuration in force.
#[derive(Debug, Clone)]
pub struct Recorder {
    journal: Journal,
    node_id: String,
    on_failure: OnFailure,
    mode: LoggingMode,
    logging: Arc<LoggingConfigs>,
    require_logging: bool,
}

impl Recorder {
    /// A recorder over an open journal.
    pub fn new(
        journal: Journal,
        node_id: String,
        on_failure: OnFailure,
        mode: LoggingMode,
        logging: Arc<LoggingConfigs>,
        require_logging: bool,
    ) -> Self {
        Recorder {
            journal,
            node_id,
            on_failure,
            mode,
            logging,
            require_logging,
        }
    }

    /// Fail fast, before calling a provider: the journal must take records, and when the
    /// configuration requires logging, logging must be on for the caller's region.
    pub fn ready(&self, call: &Call) -> Result<(), Refusal> {
        if self.require_logging
            && self
                .logging
                .effective(&call.caller.account_id, &call.caller.region)
                .is_none()
        {
            return Err(Refusal::LoggingOff(format!(
                "Model invocation logging is off for account {} in {} and this gateway requires it; the call was not made.",
                call.caller.account_id, call.caller.region
            )));
        }
        if self.journal.is_healthy() || self.on_failure == OnFailure::FailOpen {
            Ok(())
        } else {
            Err(Refusal::Unavailable(
                "the journal is unavailable; calls are refused until logging works again".into(),
            ))
        }
    }

    /// The logging mode.
    pub fn mode(&self) -> LoggingMode {
        self.mode
    }

    /// Apply the logging configuration in force to the record and append it; resolves once
    /// it is durable (strict) or written (async). Returns `Ok(None)` when logging is off
    /// for the record's (account, region): Bedrock then writes no record either.
    pub async fn commit(&self, mut record: InvocationRecord) -> Result<Option<u64>, RecordError> {
        let Some(cfg) = self.logging.effective(&record.account_id, &record.region) else {
            return Ok(None);
        };
        let log_group = cfg
            .cloud_watch_config
            .as_ref()
            .map(|c| c.log_group_name.clone());
        if let Some(s3) = &cfg.s3_config {
            record.logbook.destination = Some(Destination {
                bucket: s3.bucket_name.clone(),
                key_prefix: s3.key_prefix.clone().unwrap_or_default(),
                log_group,
            });
        } else if log_group.is_some() {
            // CloudWatch only: no bucket takes the record (an empty name matches none).
            record.logbook.destination = Some(Destination {
                bucket: String::new(),
                key_prefix: String::new(),
                log_group,
            });
        }
        let t = data_type(&record.operation, &record.model_id);
        if !cfg.delivers(t) {
            record.input.input_body_json = None;
            if let Some(o) = record.output.as_mut() {
                o.output_body_json = None;
            }
            record.logbook.bodies_omitted = Some(format!("{}=false", t.flag()));
        }
        if !cfg.image_data_delivery_enabled {
            if let Some(body) = record.input.input_body_json.as_mut() {
                if strip_media(body) {
                    let note = "imageDataDeliveryEnabled=false".to_string();
                    record.logbook.bodies_omitted =
                        Some(match record.logbook.bodies_omitted.take() {
                            Some(prev) => format!("{prev},{note}"),
                            None => note,
                        });
                }
            }
        }
        record.logbook.node_id = self.node_id.clone();
        let request_id = record.request_id.clone();
        let result = self
            .journal
            .append(Box::new(move |seq| {
                record.logbook.sequence = seq;
                record.to_json_bytes()
            }))
            .await;
        self.settle(result, &request_id).map(Some)
    }

    /// Append a control-plane audit event (same durability as records).
    pub async fn commit_event(&self, event: TrailEvent) -> Result<u64, RecordError> {
        let id = event.request_id.clone();
        let bytes = serde_json::to_vec(&event).unwrap_or_default();
        let result = self.journal.append(Box::new(move |_| bytes)).await;
        match result {
            Ok(seq) => Ok(seq),
            // An audit event is never dropped silently, whatever the invocation policy.
            Err(e) => {
                tracing::error!(request_id = %id, error = %e, "audit event not durable");
                Err(RecordError(e.to_string()))
            }
        }
    }

    fn settle(
        &self,
        result: Result<u64, JournalError>,
        request_id: &str,
    ) -> Result<u64, RecordError> {
        match result {
            Ok(seq) => Ok(seq),
            Err(e) => {
                tracing::error!(request_id = %request_id, error = %e, "record not durable");
                match (self.on_failure, &e) {
                    (OnFailure::FailOpen, _) => Ok(0),
                    (_, JournalError::TooLarge(n)) => Err(RecordError(format!(
                        "record of {n} bytes is larger than the journal accepts"
                    ))),
                    _ => Err(RecordError(e.to_string())),
                }
            }
        }
    }
}

/// Remove the bytes of images, documents and videos from a Converse body (the block stays,
/// with its format, so the record still says media was sent). Returns whether any were removed.
pub fn strip_media(body: &mut Value) -> bool {
    let mut stripped = false;
    let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) else {
        return false;
    };
    for m in messages {
        let Some(blocks) = m.get_mut("content").and_then(Value::as_array_mut) else {
            continue;
        };
        for b in blocks {
            for kind in ["image", "document", "video"] {
                if let Some(media) = b.get_mut(kind).and_then(Value::as_object_mut) {
                    if media.remove("source").is_some() {
                        stripped = true;
                    }
                }
            }
        }
    }
    stripped
}

/// Why a call is refused before the provider is called.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The journal cannot take records.
    #[error("{0}")]
    Unavailable(String),
    /// Logging is off and the gateway requires it.
    #[error("{0}")]
    LoggingOff(String),
}
