//! The Bedrock `ModelInvocationLog` record (schema 1.0) and the archive key layout.
//!
//! Pure types and functions: no I/O, no async. Every later stage (journal, delivery,
//! query) depends on this crate and on nothing else of ours.
//!
//! Field names, order and presence follow `shared/reference/bedrock-invocation-logging.md`
//! §1. Everything Bedrock does not define lives under the single top-level key `logbook`
//! ([`LogbookExt`]) so that existing Bedrock parsers keep working.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use time::OffsetDateTime;

pub mod layout;
pub mod logging;
pub mod money;
pub mod raw;
pub mod trail;

/// `schemaType` of every record.
pub const SCHEMA_TYPE: &str = "ModelInvocationLog";
/// `schemaVersion` of every record.
pub const SCHEMA_VERSION: &str = "1.0";
/// Bodies whose serialized JSON is larger than this are offloaded to `data/` objects.
pub const LARGE_BODY_BYTES: usize = 100 * 1024;

/// The operation names written to `operation`.
///
/// The four Bedrock runtime operations use Bedrock's own names. Calls that arrive on the
/// OpenAI-compatible API get `ChatCompletions` and `Embeddings` (Bedrock's own string for
/// these is undocumented, reference §10 gap 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// `POST /model/{id}/invoke`
    InvokeModel,
    /// `POST /model/{id}/invoke-with-response-stream`
    InvokeModelWithResponseStream,
    /// `POST /model/{id}/converse`
    Converse,
    /// `POST /model/{id}/converse-stream`
    ConverseStream,
    /// `POST /v1/chat/completions` (with or without `stream`)
    ChatCompletions,
    /// `POST /v1/embeddings`
    Embeddings,
    /// `POST /v1/responses` (OpenAI Responses API, with or without `stream`)
    Responses,
    /// `POST /v1/completions` (OpenAI's legacy Completions API)
    Completions,
    /// `POST /v1/messages` (the Anthropic Messages API, with or without `stream`)
    Messages,
}

impl Operation {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::InvokeModel => "InvokeModel",
            Operation::InvokeModelWithResponseStream => "InvokeModelWithResponseStream",
            Operation::Converse => "Converse",
            Operation::ConverseStream => "ConverseStream",
            Operation::ChatCompletions => "ChatCompletions",
            Operation::Embeddings => "Embeddings",
            Operation::Responses => "Responses",
            Operation::Completions => "Completions",
            Operation::Messages => "Messages",
        }
    }
}

/// `identity` of the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// Principal ARN (IAM user, assumed role, or `.../user/anonymous`).
    pub arn: String,
}

/// `input` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    /// MIME type of the request body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_content_type: Option<String>,
    /// The request body as JSON (absent when offloaded or not delivered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_body_json: Option<Value>,
    /// `s3://bucket/key` of the offloaded body.
    #[serde(rename = "inputBodyS3Path", skip_serializing_if = "Option::is_none")]
    pub input_body_s3_path: Option<String>,
    /// Billed input tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_token_count: Option<u64>,
    /// Prompt-cache reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_read_input_token_count: Option<u64>,
    /// Prompt-cache writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_write_input_token_count: Option<u64>,
}

/// `output` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    /// MIME type of the response body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_content_type: Option<String>,
    /// The response body as JSON: an object, or for `InvokeModelWithResponseStream` the
    /// array of decoded chunks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_body_json: Option<Value>,
    /// `s3://bucket/key` of the offloaded body.
    #[serde(rename = "outputBodyS3Path", skip_serializing_if = "Option::is_none")]
    pub output_body_s3_path: Option<String>,
    /// Billed output tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_token_count: Option<u64>,
}

/// Everything Logbook records that Bedrock's schema does not define.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogbookExt {
    /// Journal sequence number: strictly increasing per node, assigned at append.
    pub sequence: u64,
    /// Id of the gateway node that served the call.
    pub node_id: String,
    /// Name of the configured provider that served the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Provider type (`mock`, `openai`, `anthropic`, `bedrock`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_type: Option<String>,
    /// Model id sent upstream after routing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_model: Option<String>,
    /// True when the answer came from the built-in mock provider, not a real model.
    #[serde(default)]
    pub mock: bool,
    /// Whether the response was streamed.
    pub stream: bool,
    /// Time from request received to response complete, milliseconds.
    pub latency_ms: u64,
    /// Time from request received to first streamed byte of model output, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_first_token_ms: Option<u64>,
    /// Request start, RFC 3339 with milliseconds (Bedrock's `timestamp` has seconds only).
    pub start_time: String,
    /// HTTP status the client was answered with.
    pub http_status: u16,
    /// Human-readable error detail for failed calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Client address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// Client `User-Agent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The client's W3C `traceparent` header, when it sent a valid one (see
    /// [`trace_parent`]): the call's span joins the client's trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_parent: Option<String>,
    /// How the caller authenticated: `sigv4`, `bearer` or `none`.
    pub auth: String,
    /// The SigV4 access key id (never the secret); absent for bearer callers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// Non-secret id of the bearer key (first 12 hex of its SHA-256); never the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<String>,
    /// The API the call arrived on: `bedrock-runtime` or `openai`.
    pub api: String,
    /// Tags of the authenticated principal (e.g. `team`), for attribution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal_tags: Option<BTreeMap<String, String>>,
    /// Where the logging configuration in force sent this record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    /// Why bodies were left out, e.g. `textDataDeliveryEnabled=false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bodies_omitted: Option<String>,
    /// What the call cost in USD, as an exact decimal string (`"0.00000936"`); `null` when
    /// it cannot be priced (then `unpriced` says why). Never a guessed 0.
    #[serde(default)]
    pub cost: Option<String>,
    /// Version of the price catalog that priced the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_catalog: Option<String>,
    /// Why the call has no cost (no price for the model, usage unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpriced: Option<String>,
    /// Token counts Logbook estimated because the model reached output but reported no
    /// usage (a stream cut before its usage event, a model that reports no counts).
    /// Bedrock's own count fields carry only what the upstream reported; when this is
    /// present they are absent and `cost` is computed from these estimates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_usage: Option<EstimatedUsage>,
}

/// A W3C Trace Context `traceparent` header value
/// (`<version>-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, lower-case hex), as
/// its four fields; `None` when it is not a valid one: another length or character, an
/// all-zero trace or parent id, version `ff`, or version `00` with anything after the
/// flags (a later version may append fields, which are dropped).
pub fn trace_parent(v: &str) -> Option<String> {
    let v = v.trim_matches([' ', '\t']);
    let mut parts = v.split('-');
    let (ver, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !hex(ver, 2) || !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2) || ver == "ff" {
        return None;
    }
    if ver == "00" && parts.next().is_some() {
        return None;
    }
    if trace.bytes().all(|b| b == b'0') || parent.bytes().all(|b| b == b'0') {
        return None;
    }
    Some(format!("{ver}-{trace}-{parent}-{flags}"))
}

/// Token counts estimated from the bodies (about four bytes of text per token), for a
/// call whose model reported none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EstimatedUsage {
    /// Input tokens, from the request body's text.
    pub input_tokens: u64,
    /// Output tokens, from the response body's text (what the client received).
    pub output_tokens: u64,
}

/// Bytes of text per token in an estimate: the common rule of thumb for English text and
/// the one budgets reserve by.
pub const BYTES_PER_TOKEN: u64 = 4;

/// What a finished call counts as in Bedrock's metrics (reference §6), one rule for every
/// consumer (the Prometheus and CloudWatch metrics, the OTLP export).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// `InvocationThrottles` (HTTP 429 or `ThrottlingException`), and nothing else.
    Throttled,
    /// A 4xx answer; also an invocation when the model was reached.
    ClientError,
    /// A 5xx answer; also an invocation when the model was reached.
    ServerError,
    /// Success.
    Ok,
}

impl CallOutcome {
    /// Classify by HTTP status and error code.
    pub fn of(http_status: u16, error_code: Option<&str>) -> CallOutcome {
        if http_status == 429 || error_code == Some("ThrottlingException") {
            CallOutcome::Throttled
        } else if (400..500).contains(&http_status) {
            CallOutcome::ClientError
        } else if http_status >= 500 {
            CallOutcome::ServerError
        } else {
            CallOutcome::Ok
        }
    }

    /// Does the call count in `Invocations` (and the token and latency metrics)? Only when
    /// it reached a model and was not throttled.
    pub fn invoked(self, reached_model: bool) -> bool {
        reached_model && self != CallOutcome::Throttled
    }
}

/// The tokens a JSON body's text is estimated to hold: the bytes of its string values
/// (not its keys or punctuation, not base64 media), [`BYTES_PER_TOKEN`] bytes a token,
/// rounded up.
pub fn estimate_tokens(body: &Value) -> u64 {
    fn text_bytes(v: &Value, key: Option<&str>) -> u64 {
        match v {
            // Media (`bytes`, `data:` URLs, base64 `data`) is billed by other rules.
            Value::String(s) if matches!(key, Some("bytes" | "data")) || s.starts_with("data:") => {
                0
            }
            Value::String(s) => s.len() as u64,
            Value::Array(a) => a.iter().map(|x| text_bytes(x, key)).sum(),
            Value::Object(o) => o.iter().map(|(k, x)| text_bytes(x, Some(k))).sum(),
            _ => 0,
        }
    }
    text_bytes(body, None).div_ceil(BYTES_PER_TOKEN)
}

/// The S3 destination a record is delivered to (from the logging configuration in force
/// when the call was made).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix.
    pub key_prefix: String,
    /// The log group (`cloudWatchConfig.logGroupName`) that receives the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_group: Option<String>,
    /// `cloudWatchConfig.largeDataDeliveryS3Config`: where bodies too large for a log
    /// event go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub large_data: Option<S3Location>,
}

/// A bucket and key prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3Location {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix.
    #[serde(default)]
    pub key_prefix: String,
}

/// One `ModelInvocationLog` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvocationRecord {
    /// Always `ModelInvocationLog`.
    pub schema_type: String,
    /// Always `1.0`.
    pub schema_version: String,
    /// Request time, RFC 3339 UTC with second precision.
    pub timestamp: String,
    /// 12-digit account id.
    pub account_id: String,
    /// Caller identity.
    pub identity: Identity,
    /// Region of the endpoint called.
    pub region: String,
    /// Request id; equals the `x-amzn-RequestId` response header.
    pub request_id: String,
    /// Operation name.
    pub operation: String,
    /// Model id exactly as the caller sent it.
    pub model_id: String,
    /// Request side.
    pub input: Input,
    /// Response side (absent when nothing came back).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Output>,
    /// Caller-supplied key/value pairs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_metadata: Option<BTreeMap<String, String>>,
    /// Region that actually served the call (cross-region inference).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inference_region: Option<String>,
    /// Exception name for failed invocations, e.g. `ThrottlingException`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// `{"latency": "optimized"}` when latency-optimized inference was requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub performance_config: Option<Value>,
    /// Logbook's own fields.
    pub logbook: LogbookExt,
}

impl InvocationRecord {
    /// Serialize as one JSON line (no trailing newline).
    pub fn to_json_bytes(&self) -> Vec<u8> {
        // Serializing a struct of strings, numbers and `Value`s cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Serialize now, before the journal sequence is known: the journal's writer, which
    /// assigns sequences one at a time, then only writes the number in
    /// ([`SequencedJson::with_sequence`]). Serializing a record in the writer was about a
    /// fifth of that thread's CPU, and every call of a group commit waited for it.
    pub fn to_sequenced_json(&self) -> SequencedJson {
        let bytes = self.to_json_bytes();
        match sequence_digits(&bytes) {
            Some((at, len)) => SequencedJson(Sequenced::Spliced { bytes, at, len }),
            None => SequencedJson(Sequenced::Whole(Box::new(self.clone()))),
        }
    }
}

/// `"logbook":{"sequence":` as serialized: `logbook` is the record's last member and
/// `sequence` the first of it, so the last occurrence is the record's own. (A body's JSON
/// can hold the same member names, but always before it; inside a string every quote is
/// escaped, so no string holds these bytes.)
const SEQUENCE_MEMBER: &[u8] = br#""logbook":{"sequence":"#;

/// Where the digits of `logbook.sequence` are in a serialized record: (offset, length).
fn sequence_digits(bytes: &[u8]) -> Option<(usize, usize)> {
    let at = memchr::memmem::rfind(bytes, SEQUENCE_MEMBER)? + SEQUENCE_MEMBER.len();
    let len = bytes[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    (len > 0).then_some((at, len))
}

/// A record serialized before its journal sequence was assigned
/// ([`InvocationRecord::to_sequenced_json`]).
#[derive(Debug)]
pub struct SequencedJson(Sequenced);

#[derive(Debug)]
enum Sequenced {
    /// The bytes, and where the sequence's digits are in them.
    Spliced {
        bytes: Vec<u8>,
        at: usize,
        len: usize,
    },
    /// Not found (a layout this code does not know): serialized again with the number.
    Whole(Box<InvocationRecord>),
}

impl SequencedJson {
    /// The record's bytes with `logbook.sequence` = `seq`: exactly what
    /// [`InvocationRecord::to_json_bytes`] gives for the record with that sequence.
    pub fn with_sequence(self, seq: u64) -> Vec<u8> {
        match self.0 {
            Sequenced::Spliced { mut bytes, at, len } => {
                // `logbook` is last: only its few hundred bytes after the number move.
                bytes.splice(at..at + len, seq.to_string().into_bytes());
                bytes
            }
            Sequenced::Whole(mut record) => {
                record.logbook.sequence = seq;
                record.to_json_bytes()
            }
        }
    }
}

/// Format a time as Bedrock's record `timestamp`: `YYYY-MM-DDTHH:MM:SSZ`.
pub fn record_timestamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// RFC 3339 UTC with milliseconds: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn millis_timestamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Parse a record `timestamp` (`...Z`, seconds or fractional) to a time.
pub fn parse_timestamp(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn sample() -> InvocationRecord {
        InvocationRecord {
            schema_type: SCHEMA_TYPE.into(),
            schema_version: SCHEMA_VERSION.into(),
            timestamp: record_timestamp(datetime!(2025-03-11 00:38:02.123 UTC)),
            account_id: "123456789012".into(),
            identity: Identity {
                arn: "arn:aws:iam::123456789012:user/alice".into(),
            },
            region: "us-east-1".into(),
            request_id: "ff4b6c63-5561-4431-93b8-06a817275900".into(),
            operation: Operation::Converse.as_str().into(),
            model_id: "amazon.nova-lite-v1:0".into(),
            input: Input {
                input_content_type: Some("application/json".into()),
                input_body_json: Some(serde_json::json!({"messages": []})),
                input_token_count: Some(4),
                ..Default::default()
            },
            output: Some(Output {
                output_content_type: Some("application/json".into()),
                output_body_json: Some(serde_json::json!({"stopReason": "end_turn"})),
                output_token_count: Some(38),
                ..Default::default()
            }),
            request_metadata: Some(BTreeMap::from([("team".into(), "search".into())])),
            inference_region: None,
            error_code: None,
            performance_config: None,
            logbook: LogbookExt::default(),
        }
    }

    #[test]
    fn a_traceparent_is_taken_only_when_it_is_valid_w3c() {
        let (t, p) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
        let ok = format!("00-{t}-{p}-01");
        assert_eq!(trace_parent(&ok).as_deref(), Some(ok.as_str()));
        assert_eq!(
            trace_parent(&format!(" {ok}\t")).as_deref(),
            Some(ok.as_str())
        );
        // A later version may append fields: the first four are kept.
        assert_eq!(
            trace_parent(&format!("cc-{t}-{p}-09-what-comes-next")),
            Some(format!("cc-{t}-{p}-09"))
        );
        for bad in [
            format!("00-{}-{p}-01", t.to_uppercase()),
            format!("00-{}-{p}-01", "0".repeat(32)),
            format!("00-{t}-{}-01", "0".repeat(16)),
            format!("ff-{t}-{p}-01"),
            format!("00-{t}-{p}-01-extra"),
            format!("00-{t}-{}-01", &p[..15]),
            format!("00-{t}x-{p}-01"),
            format!("0-{t}-{p}-01"),
            format!("00-{t}-{p}-1"),
            format!("00-{t}-{p}"),
            format!("00_{t}_{p}_01"),
            String::new(),
            "garbage".into(),
        ] {
            assert_eq!(trace_parent(&bad), None, "{bad}");
        }
    }

    #[test]
    fn serializes_bedrock_field_names_in_order() {
        let json = String::from_utf8(sample().to_json_bytes()).unwrap();
        assert!(json.starts_with(r#"{"schemaType":"ModelInvocationLog","schemaVersion":"1.0","timestamp":"2025-03-11T00:38:02Z","accountId":"123456789012","identity":{"arn":"#));
        assert!(json.contains(r#""input":{"inputContentType":"application/json","inputBodyJson":{"messages":[]},"inputTokenCount":4}"#));
        assert!(json.contains(r#""requestMetadata":{"team":"search"}"#));
        assert!(!json.contains("errorCode"));
        assert!(!json.contains("inputBodyS3Path"));
    }

    #[test]
    fn round_trips() {
        let r = sample();
        let back: InvocationRecord = serde_json::from_slice(&r.to_json_bytes()).unwrap();
        assert_eq!(back, r);
    }

    /// The bytes serialized before the sequence was known, with the number written in,
    /// are exactly the record's bytes with that sequence, whatever the number's width and
    /// whatever the bodies hold (here the same member names, in a body and in a string).
    #[test]
    fn a_record_serialized_before_its_sequence_gets_exactly_its_own_bytes() {
        let mut tricky = sample();
        tricky.input.input_body_json = Some(serde_json::json!({
            "logbook": {"sequence": 77, "nodeId": "x"},
            "text": "\"logbook\":{\"sequence\":5}"
        }));
        tricky.logbook.principal_tags = Some(BTreeMap::from([(
            "logbook".into(),
            "{\"sequence\":1}".into(),
        )]));
        for base in [sample(), tricky] {
            for placeholder in [0, 7, 12_345] {
                for seq in [0, 1, 9, 10, 99, 12_345, 1_000_000, u64::MAX] {
                    let mut r = base.clone();
                    r.logbook.sequence = placeholder;
                    let pre = r.to_sequenced_json();
                    assert!(matches!(pre.0, Sequenced::Spliced { .. }));
                    r.logbook.sequence = seq;
                    assert_eq!(
                        pre.with_sequence(seq),
                        r.to_json_bytes(),
                        "{placeholder} -> {seq}"
                    );
                }
            }
        }
    }

    #[test]
    fn offload_field_names_are_s3path_cased() {
        let mut r = sample();
        r.input.input_body_json = None;
        r.input.input_body_s3_path = Some("s3://b/k".into());
        let json = String::from_utf8(r.to_json_bytes()).unwrap();
        assert!(json.contains(r#""inputBodyS3Path":"s3://b/k""#));
    }

    #[test]
    fn timestamps() {
        let t = datetime!(2024-11-20 16:47:52.056 UTC);
        assert_eq!(record_timestamp(t), "2024-11-20T16:47:52Z");
        assert_eq!(millis_timestamp(t), "2024-11-20T16:47:52.056Z");
        assert_eq!(
            parse_timestamp("2024-11-20T16:47:52Z")
                .unwrap()
                .unix_timestamp(),
            t.unix_timestamp()
        );
    }
}

#[cfg(test)]
mod estimate_tests {
    use super::estimate_tokens;
    use serde_json::json;

    #[test]
    fn estimates_count_text_values_not_keys_or_media() {
        assert_eq!(estimate_tokens(&json!({})), 0);
        assert_eq!(estimate_tokens(&json!({"text": "abcd"})), 1);
        assert_eq!(estimate_tokens(&json!({"text": "abcde"})), 2, "rounded up");
        // Keys, numbers and punctuation are not text; image bytes and data URLs are media.
        assert_eq!(
            estimate_tokens(&json!({"messages": [{"content": [
                {"text": "abcdefgh"},
                {"image": {"format": "png", "source": {"bytes": "QUJDRA=="}}},
                {"image_url": {"url": "data:image/png;base64,QUJD"}}
            ]}], "max_tokens": 100})),
            3 // "abcdefgh" (8) + "png" (3) = 11 bytes
        );
    }
}
