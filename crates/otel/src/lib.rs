//! OpenTelemetry export: one span per call and the calls' metrics, over OTLP
//! (HTTP/protobuf or gRPC), following the GenAI semantic conventions.
//!
//! A sink like any other: a [`SpanFormat`] turns journaled records into spans (pure), and
//! an [`OtlpTarget`] exports them with `opentelemetry-otlp`'s exporters; the delivery loop
//! (`logbook_delivery::Destination`) gives it a durable cursor, retries with backoff and
//! parking. So a collector that is down loses nothing: spans wait in the journal.
//!
//! - **Spans** are CLIENT spans named `{gen_ai.operation.name} {gen_ai.request.model}`,
//!   from the record's `timestamp` (the call's start) to start + `latencyMs`. Their trace
//!   and span ids are derived from the request id, so a span exported twice (after a
//!   crash) has the same ids and a backend can tell.
//! - **Content** (`gen_ai.input.messages`, `gen_ai.output.messages`,
//!   `gen_ai.system_instructions`) only with `content = true`, after the export's own
//!   redaction profile.
//! - **Metrics** are counted from the spans a collector has acknowledged and exported every
//!   `metrics_interval`: `gen_ai.client.token.usage` and `gen_ai.client.operation.duration`
//!   (GenAI conventions), and Bedrock's own per `ModelId` (`aws.bedrock.invocations`,
//!   `...client_errors`, `...server_errors`, `...throttles`, token counts). A batch whose
//!   spans are exported again after a crash is counted again: metrics are at least once.

use async_trait::async_trait;
use logbook_delivery::{DeliveryError, Format, Target, Written};
use logbook_journal::{Entry, Kind};
use logbook_record::raw::{int, text, RawRecord};
use logbook_record::CallOutcome;
use opentelemetry::metrics::{Counter, Histogram, MeterProvider as _};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value as OtelValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use opentelemetry_sdk::Resource;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod messages;

/// Errors of building the export.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// The exporter could not be built (a bad endpoint, header or TLS setting).
    #[error("OTLP exporter: {0}")]
    Build(String),
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/protobuf (`<endpoint>/v1/traces`, `<endpoint>/v1/metrics`), usually port 4318.
    HttpProtobuf,
    /// gRPC, usually port 4317.
    Grpc,
}

/// Where and how to export.
#[derive(Clone)]
pub struct OtlpConfig {
    /// The collector's base URL (`http://127.0.0.1:4318`).
    pub endpoint: String,
    /// Transport.
    pub protocol: Protocol,
    /// Headers (HTTP) or metadata (gRPC) sent with every export (API keys). Never logged.
    pub headers: BTreeMap<String, String>,
    /// Put prompts and responses on spans.
    pub content: bool,
    /// `service.name` of the resource.
    pub service_name: String,
    /// `service.instance.id`: the node id.
    pub instance_id: String,
    /// How often metrics are exported.
    pub metrics_interval: Duration,
    /// Export metrics at all.
    pub metrics: bool,
    /// Per request.
    pub timeout: Duration,
}

impl std::fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpConfig")
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("content", &self.content)
            .field("service_name", &self.service_name)
            .field("metrics_interval", &self.metrics_interval)
            .finish()
    }
}

/// The facts of one call that metrics need.
#[derive(Debug, Clone)]
pub struct CallFacts {
    operation: String,
    provider: String,
    model: String,
    outcome: CallOutcome,
    reached_model: bool,
    error_type: Option<String>,
    duration_s: f64,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    cache_read: Option<i64>,
    cache_write: Option<i64>,
}

/// One export: spans, and what their calls count in metrics.
#[derive(Debug, Default)]
pub struct SpanBatch {
    /// The spans.
    pub spans: Vec<SpanData>,
    /// One per span.
    pub facts: Vec<CallFacts>,
    /// Bytes of the records they came from.
    pub bytes: u64,
}

/// Records to spans.
pub struct SpanFormat {
    content: bool,
    scope: InstrumentationScope,
    redactor: Option<Arc<logbook_redact::Redactor>>,
    batch: SpanBatch,
}

impl SpanFormat {
    /// Spans with (`content`) or without prompts and responses.
    pub fn new(content: bool) -> Self {
        SpanFormat {
            content,
            scope: scope(),
            redactor: None,
            batch: SpanBatch::default(),
        }
    }

    /// Mask content with this profile first (only matters with `content`).
    pub fn with_redactor(mut self, r: Arc<logbook_redact::Redactor>) -> Self {
        self.redactor = Some(r);
        self
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("logbook")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// `gen_ai.operation.name` for a record's operation.
pub fn operation_name(operation: &str, model: &str) -> &'static str {
    match operation {
        "Embeddings" => "embeddings",
        "Completions" => "text_completion",
        "InvokeModel" | "InvokeModelWithResponseStream" if model.contains("embed") => "embeddings",
        _ => "chat",
    }
}

/// `gen_ai.provider.name`: the provider that served the call, else the API it came in by.
pub fn provider_name(provider: Option<&str>, api: Option<&str>) -> String {
    match provider.or(api) {
        Some("bedrock") | None => "aws.bedrock".into(),
        Some("openai") => "openai".into(),
        Some("anthropic") => "anthropic".into(),
        Some("mock") => "logbook.mock".into(),
        Some(other) => other.to_string(),
    }
}

/// Trace and span ids from the request id: the same call always gets the same ids.
fn ids(request_id: &str) -> (TraceId, SpanId) {
    let h = Sha256::digest(request_id.as_bytes());
    let mut t = [0u8; 16];
    let mut s = [0u8; 8];
    t.copy_from_slice(&h[..16]);
    s.copy_from_slice(&h[16..24]);
    // All-zero ids are invalid; a hash gives them with probability 2^-64.
    if s == [0; 8] {
        s[7] = 1;
    }
    (TraceId::from_bytes(t), SpanId::from_bytes(s))
}

fn number(v: Option<&Value>) -> Option<f64> {
    v.and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()))
}

/// One span from one record (the payload as journaled, already redacted if need be).
pub fn span(
    payload: &[u8],
    content: bool,
    scope: &InstrumentationScope,
) -> Option<(SpanData, CallFacts)> {
    let r = RawRecord::parse(payload).ok()?;
    let v: Value = serde_json::from_slice(payload).ok()?;
    let request_id = text(r.request_id).unwrap_or_else(|| hex_of(&Sha256::digest(payload)[..16]));
    let model = text(r.model_id).unwrap_or_default();
    let op_raw = text(r.operation).unwrap_or_default();
    let ext = r.logbook.as_ref();
    let provider_raw = text(ext.and_then(|e| e.provider));
    let provider = provider_name(
        provider_raw.as_deref(),
        text(ext.and_then(|e| e.api)).as_deref(),
    );
    let operation = operation_name(&op_raw, &model);
    let start = text(r.timestamp)
        .as_deref()
        .and_then(logbook_record::parse_timestamp)
        .map(|t| UNIX_EPOCH + Duration::from_nanos(t.unix_timestamp_nanos().max(0) as u64))
        .unwrap_or_else(SystemTime::now);
    let latency_ms = int(ext.and_then(|e| e.latency_ms)).unwrap_or(0).max(0) as u64;
    let end = start
        .checked_add(Duration::from_millis(latency_ms))
        .unwrap_or(start);
    let status_code = int(ext.and_then(|e| e.http_status)).unwrap_or(200);
    let error_code = text(r.error_code);
    let outcome = CallOutcome::of(
        u16::try_from(status_code).unwrap_or(500),
        error_code.as_deref(),
    );
    let (input, output) = (r.input.as_ref(), r.output.as_ref());
    let input_tokens = int(input.and_then(|i| i.input_token_count));
    let output_tokens = int(output.and_then(|o| o.output_token_count));
    let cache_read = int(input.and_then(|i| i.cache_read_input_token_count));
    let cache_write = int(input.and_then(|i| i.cache_write_input_token_count));

    let mut a: Vec<KeyValue> = vec![
        KeyValue::new("gen_ai.operation.name", operation),
        KeyValue::new("gen_ai.provider.name", provider.clone()),
        KeyValue::new("gen_ai.request.model", model.clone()),
        KeyValue::new("aws.request_id", request_id.clone()),
        KeyValue::new("logbook.operation", op_raw.clone()),
    ];
    let mut put_int = |k: &'static str, n: Option<i64>| {
        if let Some(n) = n {
            a.push(KeyValue::new(k, n));
        }
    };
    put_int("gen_ai.usage.input_tokens", input_tokens);
    put_int("gen_ai.usage.output_tokens", output_tokens);
    put_int("gen_ai.usage.cache_read.input_tokens", cache_read);
    put_int("gen_ai.usage.cache_creation.input_tokens", cache_write);
    put_int("http.response.status_code", Some(status_code));
    put_int(
        "logbook.time_to_first_token_ms",
        int(ext.and_then(|e| e.time_to_first_token_ms)),
    );
    for (k, key) in [
        (text(r.region), "cloud.region"),
        (text(r.account_id), "cloud.account.id"),
        (text(r.identity.as_ref().and_then(|i| i.arn)), "user.id"),
        (error_code.clone(), "error.type"),
        (text(ext.and_then(|e| e.cost)), "logbook.cost"),
    ] {
        if let Some(k) = k {
            a.push(KeyValue::new(key, k));
        }
    }
    if let Some(Value::Object(m)) = v.get("requestMetadata") {
        for (k, val) in m {
            if let Some(s) = val.as_str() {
                a.push(KeyValue::new(
                    format!("logbook.request_metadata.{k}"),
                    s.to_string(),
                ));
            }
        }
    }
    let body_in = v.get("input").and_then(|i| i.get("inputBodyJson"));
    let body_out = v.get("output").and_then(|o| o.get("outputBodyJson"));
    if let Some(b) = body_in {
        let ic = b.get("inferenceConfig");
        for (key, val) in [
            (
                "gen_ai.request.max_tokens",
                number(ic.and_then(|c| c.get("maxTokens")))
                    .or_else(|| number(b.get("max_tokens")))
                    .or_else(|| number(b.get("max_completion_tokens")))
                    .or_else(|| number(b.get("max_output_tokens"))),
            ),
            (
                "gen_ai.request.temperature",
                number(ic.and_then(|c| c.get("temperature")))
                    .or_else(|| number(b.get("temperature"))),
            ),
            (
                "gen_ai.request.top_p",
                number(ic.and_then(|c| c.get("topP"))).or_else(|| number(b.get("top_p"))),
            ),
        ] {
            if let Some(x) = val {
                if key == "gen_ai.request.max_tokens" {
                    a.push(KeyValue::new(key, x as i64));
                } else {
                    a.push(KeyValue::new(key, x));
                }
            }
        }
    }
    let reasons = body_out.map(messages::finish_reasons).unwrap_or_default();
    if !reasons.is_empty() {
        a.push(KeyValue::new(
            "gen_ai.response.finish_reasons",
            OtelValue::Array(opentelemetry::Array::String(
                reasons.into_iter().map(Into::into).collect(),
            )),
        ));
    }
    if content {
        if let Some(b) = body_in {
            let (system, msgs) = messages::input(b);
            if let Some(s) = system {
                a.push(KeyValue::new("gen_ai.system_instructions", s.to_string()));
            }
            a.push(KeyValue::new("gen_ai.input.messages", msgs.to_string()));
        }
        if let Some(b) = body_out {
            a.push(KeyValue::new(
                "gen_ai.output.messages",
                messages::output(b).to_string(),
            ));
        }
    }
    let status = match (&error_code, outcome) {
        (Some(code), _) => Status::error(format!(
            "{code}{}",
            text(ext.and_then(|e| e.error_message))
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        )),
        (None, CallOutcome::Ok) => Status::Unset,
        (None, _) => Status::error(format!("HTTP {status_code}")),
    };
    let (own_trace, span_id) = ids(&request_id);
    // A client that sent a valid `traceparent`: the call's span is a child of its span,
    // in its trace (the span id stays the call's own).
    let parent = text(ext.and_then(|e| e.trace_parent))
        .as_deref()
        .and_then(logbook_record::trace_parent)
        .and_then(|tp| {
            let mut f = tp.split('-').skip(1);
            let t = TraceId::from_hex(f.next()?).ok()?;
            let p = SpanId::from_hex(f.next()?).ok()?;
            Some((t, p))
        });
    let (trace_id, parent_span_id) = parent.unwrap_or((own_trace, SpanId::INVALID));
    let span = SpanData {
        span_context: SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id,
        parent_span_is_remote: parent.is_some(),
        span_kind: SpanKind::Client,
        name: if model.is_empty() {
            operation.into()
        } else {
            format!("{operation} {model}").into()
        },
        start_time: start,
        end_time: end,
        attributes: a,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    };
    let facts = CallFacts {
        operation: operation.to_string(),
        provider,
        model,
        outcome,
        reached_model: provider_raw.is_some(),
        error_type: error_code,
        duration_s: latency_ms as f64 / 1000.0,
        input_tokens,
        output_tokens,
        cache_read,
        cache_write,
    };
    Some((span, facts))
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Format for SpanFormat {
    type Item = SpanBatch;

    fn add(&mut self, e: Entry) -> Result<usize, DeliveryError> {
        if e.kind != Kind::Record {
            return Ok(0);
        }
        let payload = match (&self.redactor, self.content) {
            (Some(r), true) => r.redact_record(&e.payload).into_owned(),
            _ => e.payload,
        };
        let Some((span, facts)) = span(&payload, self.content, &self.scope) else {
            return Ok(0);
        };
        self.batch.spans.push(span);
        self.batch.facts.push(facts);
        self.batch.bytes += payload.len() as u64;
        Ok(payload.len() + 1)
    }

    fn take(&mut self) -> Result<Vec<SpanBatch>, DeliveryError> {
        let b = std::mem::take(&mut self.batch);
        Ok(if b.spans.is_empty() {
            Vec::new()
        } else {
            vec![b]
        })
    }

    fn reset(&mut self) {
        self.batch = SpanBatch::default();
    }
}

/// A token counter and which count of a call it adds.
type TokenCounter = (Counter<u64>, fn(&CallFacts) -> Option<i64>);

struct Instruments {
    token_usage: Histogram<u64>,
    duration: Histogram<f64>,
    invocations: Counter<u64>,
    client_errors: Counter<u64>,
    server_errors: Counter<u64>,
    throttles: Counter<u64>,
    tokens: [TokenCounter; 4],
}

impl Instruments {
    fn new(provider: &SdkMeterProvider) -> Self {
        let m = provider.meter_with_scope(scope());
        let counter = |name: &'static str, unit: &'static str, desc: &'static str| {
            m.u64_counter(name)
                .with_unit(unit)
                .with_description(desc)
                .build()
        };
        Instruments {
            token_usage: m
                .u64_histogram("gen_ai.client.token.usage")
                .with_unit("{token}")
                .with_description("Number of input and output tokens used")
                .with_boundaries(vec![
                    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0,
                    1048576.0, 4194304.0, 16777216.0, 67108864.0,
                ])
                .build(),
            duration: m
                .f64_histogram("gen_ai.client.operation.duration")
                .with_unit("s")
                .with_description("GenAI operation duration")
                .with_boundaries(vec![
                    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92,
                ])
                .build(),
            invocations: counter("aws.bedrock.invocations", "{call}", "Bedrock's Invocations"),
            client_errors: counter(
                "aws.bedrock.invocation_client_errors",
                "{call}",
                "Bedrock's InvocationClientErrors",
            ),
            server_errors: counter(
                "aws.bedrock.invocation_server_errors",
                "{call}",
                "Bedrock's InvocationServerErrors",
            ),
            throttles: counter(
                "aws.bedrock.invocation_throttles",
                "{call}",
                "Bedrock's InvocationThrottles",
            ),
            tokens: [
                (
                    counter(
                        "aws.bedrock.input_token_count",
                        "{token}",
                        "Bedrock's InputTokenCount",
                    ),
                    |f| f.input_tokens,
                ),
                (
                    counter(
                        "aws.bedrock.output_token_count",
                        "{token}",
                        "Bedrock's OutputTokenCount",
                    ),
                    |f| f.output_tokens,
                ),
                (
                    counter(
                        "aws.bedrock.cache_read_input_token_count",
                        "{token}",
                        "Bedrock's CacheReadInputTokens",
                    ),
                    |f| f.cache_read,
                ),
                (
                    counter(
                        "aws.bedrock.cache_write_input_token_count",
                        "{token}",
                        "Bedrock's CacheWriteInputTokens",
                    ),
                    |f| f.cache_write,
                ),
            ],
        }
    }

    fn count(&self, f: &CallFacts) {
        let genai = [
            KeyValue::new("gen_ai.operation.name", f.operation.clone()),
            KeyValue::new("gen_ai.provider.name", f.provider.clone()),
            KeyValue::new("gen_ai.request.model", f.model.clone()),
        ];
        let mut with_error = genai.to_vec();
        if let Some(e) = &f.error_type {
            with_error.push(KeyValue::new("error.type", e.clone()));
        }
        self.duration.record(f.duration_s, &with_error);
        for (kind, n) in [("input", f.input_tokens), ("output", f.output_tokens)] {
            if let Some(n) = n.filter(|n| *n >= 0) {
                let mut attrs = genai.to_vec();
                attrs.push(KeyValue::new("gen_ai.token.type", kind));
                self.token_usage.record(n as u64, &attrs);
            }
        }
        let model = [KeyValue::new("ModelId", f.model.clone())];
        match f.outcome {
            CallOutcome::Throttled => self.throttles.add(1, &model),
            CallOutcome::ClientError => self.client_errors.add(1, &model),
            CallOutcome::ServerError => self.server_errors.add(1, &model),
            CallOutcome::Ok => {}
        }
        if f.outcome.invoked(f.reached_model) {
            self.invocations.add(1, &model);
            for (c, get) in &self.tokens {
                if let Some(n) = get(f).filter(|n| *n > 0) {
                    c.add(n as u64, &model);
                }
            }
        }
    }
}

/// Exports spans (and counts metrics from what was exported).
pub struct OtlpTarget {
    exporter: opentelemetry_otlp::SpanExporter,
    meters: Option<(SdkMeterProvider, Instruments)>,
}

/// The most a collector's answer to one export may hold.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// `opentelemetry-http`'s client, over the reqwest (0.12) the rest of Logbook uses.
#[derive(Debug, Clone)]
struct Http(reqwest::Client);

#[async_trait]
impl opentelemetry_http::HttpClient for Http {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<bytes::Bytes>,
    ) -> Result<opentelemetry_http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let mut req = self
            .0
            .request(parts.method, parts.uri.to_string())
            .body(body);
        for (k, v) in &parts.headers {
            req = req.header(k, v);
        }
        let mut resp = req.send().await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        // A collector's answer is small; a huge one is refused as it arrives, never held.
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err("the collector's response is over 4 MiB".into());
            }
            bytes.extend_from_slice(&chunk);
        }
        let bytes = bytes::Bytes::from(bytes);
        let mut out = opentelemetry_http::Response::builder().status(status);
        for (k, v) in &headers {
            out = out.header(k, v);
        }
        Ok(out.body(bytes)?)
    }
}

/// A future polled inside a Tokio runtime's context, whoever polls it. The SDK's metric
/// reader exports from its own thread with a plain executor, while the HTTP and gRPC
/// clients need Tokio's timers and sockets: each poll enters the runtime, whose worker
/// threads drive the I/O and wake the reader's thread.
struct InRuntime<F> {
    rt: tokio::runtime::Handle,
    f: std::pin::Pin<Box<F>>,
}

impl<F: std::future::Future> std::future::Future for InRuntime<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let _in = self.rt.enter();
        self.f.as_mut().poll(cx)
    }
}

/// A metric exporter whose exports run in the runtime's context ([`InRuntime`]).
#[derive(Debug)]
struct OnRuntime<E> {
    exporter: E,
    rt: tokio::runtime::Handle,
}

impl<E: opentelemetry_sdk::metrics::exporter::PushMetricExporter>
    opentelemetry_sdk::metrics::exporter::PushMetricExporter for OnRuntime<E>
{
    fn export(
        &self,
        metrics: &opentelemetry_sdk::metrics::data::ResourceMetrics,
    ) -> impl std::future::Future<Output = opentelemetry_sdk::error::OTelSdkResult> + Send {
        InRuntime {
            rt: self.rt.clone(),
            f: Box::pin(self.exporter.export(metrics)),
        }
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.exporter.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        let _in = self.rt.enter();
        self.exporter.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> opentelemetry_sdk::metrics::Temporality {
        self.exporter.temporality()
    }
}

fn resource(c: &OtlpConfig) -> Resource {
    Resource::builder_empty()
        .with_service_name(c.service_name.clone())
        .with_attributes([
            KeyValue::new("service.instance.id", c.instance_id.clone()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ])
        .build()
}

fn metadata(
    headers: &BTreeMap<String, String>,
) -> Result<opentelemetry_otlp::tonic_types::metadata::MetadataMap, OtelError> {
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
    let mut m = HeaderMap::new();
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|_| OtelError::Build(format!("header {k:?} is not a valid header name")))?;
        let value = HeaderValue::from_str(v).map_err(|_| {
            OtelError::Build(format!("header {k:?}: the value is not valid in a header"))
        })?;
        m.insert(name, value);
    }
    Ok(opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(m))
}

impl OtlpTarget {
    /// Build the exporters. Must run inside a Tokio runtime (gRPC channels, the metric
    /// reader's timer).
    pub fn new(c: &OtlpConfig) -> Result<Self, OtelError> {
        let base = c.endpoint.trim_end_matches('/').to_string();
        let build = |e: opentelemetry_otlp::ExporterBuildError| OtelError::Build(e.to_string());
        let http = || -> Result<Http, OtelError> {
            reqwest::Client::builder()
                .timeout(c.timeout)
                .build()
                .map(Http)
                .map_err(|e| OtelError::Build(e.to_string()))
        };
        let headers: std::collections::HashMap<String, String> = c
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut exporter = match c.protocol {
            Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(http()?)
                .with_endpoint(format!("{base}/v1/traces"))
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_headers(headers.clone())
                .with_timeout(c.timeout)
                .build()
                .map_err(build)?,
            Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(base.clone())
                .with_metadata(metadata(&c.headers)?)
                .with_timeout(c.timeout)
                .build()
                .map_err(build)?,
        };
        exporter.set_resource(&resource(c));
        let meters = if c.metrics {
            let metric_exporter = match c.protocol {
                Protocol::HttpProtobuf => opentelemetry_otlp::MetricExporter::builder()
                    .with_http()
                    .with_http_client(http()?)
                    .with_endpoint(format!("{base}/v1/metrics"))
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_headers(headers)
                    .with_timeout(c.timeout)
                    .build()
                    .map_err(build)?,
                Protocol::Grpc => opentelemetry_otlp::MetricExporter::builder()
                    .with_tonic()
                    .with_endpoint(base)
                    .with_metadata(metadata(&c.headers)?)
                    .with_timeout(c.timeout)
                    .build()
                    .map_err(build)?,
            };
            let metric_exporter = OnRuntime {
                exporter: metric_exporter,
                rt: tokio::runtime::Handle::try_current()
                    .map_err(|e| OtelError::Build(format!("no Tokio runtime: {e}")))?,
            };
            let reader = PeriodicReader::builder(metric_exporter)
                .with_interval(c.metrics_interval)
                .build();
            let provider = SdkMeterProvider::builder()
                .with_resource(resource(c))
                .with_reader(reader)
                .build();
            let instruments = Instruments::new(&provider);
            Some((provider, instruments))
        } else {
            None
        };
        Ok(OtlpTarget { exporter, meters })
    }

    /// A handle that flushes metrics at shutdown (the target itself moves into its task).
    pub fn metrics_handle(&self) -> Option<SdkMeterProvider> {
        self.meters.as_ref().map(|(p, _)| p.clone())
    }
}

fn remote(e: opentelemetry_sdk::error::OTelSdkError) -> DeliveryError {
    DeliveryError::Remote(format!("OTLP export: {e}"))
}

#[async_trait]
impl Target for OtlpTarget {
    type Item = SpanBatch;

    async fn put(&self, item: SpanBatch) -> Result<Written, DeliveryError> {
        let SpanBatch {
            spans,
            facts,
            bytes,
        } = item;
        self.exporter.export(spans).await.map_err(remote)?;
        if let Some((_, m)) = &self.meters {
            for f in &facts {
                m.count(f);
            }
        }
        Ok(Written {
            bytes,
            rejected: 0,
            large_data: 0,
        })
    }

    async fn probe(&self, _name: &str) -> Result<(), DeliveryError> {
        self.exporter.export(Vec::new()).await.map_err(remote)
    }
}

#[cfg(test)]
mod tests;
