//! The Anthropic Messages API front door: `POST /v1/messages`, streamed or not, for the
//! Anthropic SDKs and the tools built on them (an API key in `x-api-key`, or a bearer
//! token). A Messages request is what Bedrock's InvokeModel takes for Claude, less `model`
//! and `stream`, plus `anthropic_version`; so the call is served as InvokeModel (or
//! InvokeModelWithResponseStream) by the routed provider with that native body, and the
//! answer, a Messages response or Messages stream events, goes back as the Anthropic API
//! sends it (SSE `event:` / `data:` lines for streams; Bedrock's
//! `amazon-bedrock-invocationMetrics` left out). The record has operation `Messages`, the
//! Messages request and the Anthropic response (or the stream's events).
//!
//! A provider that takes no native Claude body (an OpenAI-compatible upstream) is reached
//! through Converse instead (`logbook_providers::messages`): the request becomes a
//! Converse request, and the Converse answer or stream becomes a Messages answer or
//! Messages stream events, recorded as such.
//!
//! Errors are in Anthropic's shape: `{"type": "error", "error": {"type", "message"}}`.

use crate::capture::Call;
use crate::http_util::{json_response, read_body, BodyError};
use crate::identity::Caller;
use crate::invoke::{Invoker, Refused};
use crate::stream::StreamFormat;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use http::HeaderMap;
use logbook_providers::{native, ProviderError};
use logbook_record::{Operation, Output};
use logbook_wire::aws::AwsErrorCode;
use serde_json::{json, Value};
use std::net::SocketAddr;

const REQUEST_ID: &str = "request-id";

/// Anthropic's error type and HTTP status for an AWS error code.
pub fn anthropic_error_type(code: &str) -> (u16, &'static str) {
    match code {
        "ValidationException" | "SerializationException" => (400, "invalid_request_error"),
        "UnrecognizedClientException"
        | "MissingAuthenticationTokenException"
        | "InvalidSignatureException"
        | "IncompleteSignatureException" => (401, "authentication_error"),
        "AccessDeniedException" => (403, "permission_error"),
        "ResourceNotFoundException" => (404, "not_found_error"),
        "ThrottlingException" | "ServiceQuotaExceededException" => (429, "rate_limit_error"),
        "ModelTimeoutException" | "ServiceUnavailableException" | "ModelNotReadyException" => {
            (529, "overloaded_error")
        }
        _ => (500, "api_error"),
    }
}

/// An error response in Anthropic's shape.
pub fn anthropic_error(status: u16, kind: &str, message: &str, request_id: &str) -> Response {
    let body =
        serde_json::to_vec(&json!({"type": "error", "error": {"type": kind, "message": message}}))
            .unwrap_or_default();
    let mut r = json_response(body, "application/json", request_id, REQUEST_ID);
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    r
}

async fn fail(core: &Invoker, call: &Call, code: &str, message: &str) -> Response {
    let (status, kind) = anthropic_error_type(code);
    core.fail(call, code, message, status.min(599), None).await;
    anthropic_error(status, kind, message, &call.request_id)
}

async fn spawn_call<F>(fut: F) -> Response
where
    F: std::future::Future<Output = Response> + Send + 'static,
{
    match tokio::spawn(fut).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "call task failed");
            anthropic_error(500, "api_error", "internal error", "unknown")
        }
    }
}

/// `POST /v1/messages`
pub async fn messages(
    State(core): State<Invoker>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let call = crate::http_util::begin_call(
        Operation::Messages,
        "anthropic",
        String::new(),
        caller,
        &headers,
        addr,
    );
    spawn_call(messages_call(core, call, headers, body)).await
}

/// The Messages request as Bedrock's native Claude body: no `model`, no `stream`, and an
/// `anthropic_version`.
pub fn native_body(request: &Value) -> Result<(String, bool, Value), String> {
    let Some(o) = request.as_object() else {
        return Err("the request body must be a JSON object".into());
    };
    let model = o
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or("model: Field required")?
        .to_string();
    let stream = match o.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("stream: Input should be a valid boolean".into()),
    };
    let mut body = o.clone();
    body.remove("model");
    body.remove("stream");
    body.insert(
        "anthropic_version".into(),
        json!(native::BEDROCK_ANTHROPIC_VERSION),
    );
    Ok((model, stream, Value::Object(body)))
}

async fn messages_call(core: Invoker, mut call: Call, headers: HeaderMap, body: Body) -> Response {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let bytes = match read_body(body, core.max_body_bytes(), declared).await {
        Ok(b) => {
            call.body_bytes = b.len();
            b
        }
        Err(BodyError::TooLarge(n)) => {
            let m = format!(
                "request body of {n} bytes exceeds the {} byte limit",
                core.max_body_bytes()
            );
            core.fail(&call, "ValidationException", &m, 413, None).await;
            return anthropic_error(413, "request_too_large", &m, &call.request_id);
        }
        Err(other) => {
            let why = format!("request body incomplete: {}", other.describe());
            return fail(&core, &call, crate::bedrock::CLIENT_DISCONNECTED, &why).await;
        }
    };
    call.input.input_content_type = Some("application/json".into());
    let request: Value = match serde_json::from_slice(&bytes) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return fail(
                &core,
                &call,
                "ValidationException",
                "the request body is not a JSON object",
            )
            .await
        }
    };
    call.input.input_body_json = Some(request.clone());
    let (model, stream, native_body) = match native_body(&request) {
        Ok(x) => x,
        Err(m) => return fail(&core, &call, "ValidationException", &m).await,
    };
    call.model_id = model.clone();
    if let Some(Value::Object(md)) = request.get("metadata") {
        if let Some(u) = md.get("user_id").and_then(Value::as_str) {
            call.request_metadata = Some([("user_id".to_string(), u.to_string())].into());
        }
    }
    let r = match core.admit(&mut call).await {
        Ok(r) => r,
        Err(Refused::Logging(e)) => {
            let (status, kind) = match e {
                crate::capture::Refusal::Unavailable(_) => (529, "overloaded_error"),
                crate::capture::Refusal::LoggingOff(_) => (403, "permission_error"),
            };
            return anthropic_error(status, kind, &e.to_string(), &call.request_id);
        }
        Err(Refused::Denied) => {
            let m = crate::bedrock::denied_message(&call);
            return fail(&core, &call, "AccessDeniedException", &m).await;
        }
        Err(Refused::NoRoute) => {
            let m = format!("model: {model} (no route serves this model)");
            return fail(&core, &call, "ResourceNotFoundException", &m).await;
        }
        Err(Refused::OverBudget(m)) => {
            return fail(&core, &call, "ThrottlingException", &m).await;
        }
    };
    // A provider that takes no native Claude body (an OpenAI-compatible upstream) is
    // reached through Converse, the translation every provider serves.
    if !matches!(r.provider.kind(), "bedrock" | "anthropic" | "mock") {
        let req = match logbook_providers::messages::request_to_converse(&request) {
            Ok(x) => x,
            Err(m) => return fail(&core, &call, "ValidationException", &m).await,
        };
        let id = format!("msg_{}", call.request_id.replace('-', ""));
        if !stream {
            let res = Invoker::model(&r, r.provider.converse(&r.info.upstream_model, &req)).await;
            let resp = match res {
                Ok(x) => x,
                Err(e) => return fail(&core, &call, e.code.as_str(), &e.message).await,
            };
            call.set_usage(resp.usage);
            let out = logbook_providers::messages::response_from_converse(&resp, &model, &id);
            return match core.finish_json(&call, out).await {
                Ok(bytes) => json_response(bytes, "application/json", &call.request_id, REQUEST_ID),
                Err(e) => anthropic_error(500, "api_error", &e.to_string(), &call.request_id),
            };
        }
        call.stream = true;
        let (started, st) = core
            .open_stream(
                &call,
                Invoker::model(&r, r.provider.converse_stream(&r.info.upstream_model, &req)),
            )
            .await;
        let st = match st {
            Ok(s) => s,
            Err(e) => return fail(&core, &call, e.code.as_str(), &e.message).await,
        };
        let started = match started {
            Ok(s) => s,
            Err(e) => return anthropic_error(500, "api_error", &e.to_string(), &call.request_id),
        };
        let (tx, resp) = crate::http_util::sse_response(REQUEST_ID, &call.request_id);
        let format = FromConverse {
            tr: logbook_providers::messages::EventTranslator::new(&id, &model),
            events: Vec::new(),
        };
        tokio::spawn(crate::stream::pump(
            core, started, call, st, r.timeout, format, tx,
        ));
        return resp;
    }
    if !stream {
        let res = Invoker::model(&r, r.provider.invoke(&r.info.upstream_model, &native_body)).await;
        let resp = match res {
            Ok(x) => x,
            Err(e) => return fail(&core, &call, e.code.as_str(), &e.message).await,
        };
        if let Some(u) = resp.usage {
            call.set_usage(u);
        }
        let mut out: Value = match serde_json::from_slice(&resp.body) {
            Ok(v) => v,
            Err(_) => {
                return fail(
                    &core,
                    &call,
                    "InternalServerException",
                    "the model's answer is not JSON",
                )
                .await
            }
        };
        if let Some(o) = out.as_object_mut() {
            o.remove("amazon-bedrock-invocationMetrics");
            o.entry("model").or_insert_with(|| json!(model));
        }
        return match core.finish_json(&call, out).await {
            Ok(bytes) => json_response(bytes, "application/json", &call.request_id, REQUEST_ID),
            Err(e) => anthropic_error(500, "api_error", &e.to_string(), &call.request_id),
        };
    }
    call.stream = true;
    let (started, st) = core
        .open_stream(
            &call,
            Invoker::model(
                &r,
                r.provider
                    .invoke_stream(&r.info.upstream_model, &native_body),
            ),
        )
        .await;
    let st = match st {
        Ok(s) => s,
        Err(e) => return fail(&core, &call, e.code.as_str(), &e.message).await,
    };
    let started = match started {
        Ok(s) => s,
        Err(e) => return anthropic_error(500, "api_error", &e.to_string(), &call.request_id),
    };
    let (tx, resp) = crate::http_util::sse_response(REQUEST_ID, &call.request_id);
    let format = EventsFormat {
        events: Vec::new(),
        model,
    };
    tokio::spawn(crate::stream::pump(
        core, started, call, st, r.timeout, format, tx,
    ));
    resp
}

/// `POST /v1/messages/count_tokens`: the input tokens the routed model would count for
/// this Messages request (`{"input_tokens": n}`). No model is invoked, so no record is
/// written (as for Bedrock's CountTokens); the caller needs the permission to invoke it.
pub async fn count_tokens(
    State(core): State<Invoker>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let bytes = match read_body(body, core.max_body_bytes(), declared).await {
        Ok(b) => b,
        Err(BodyError::TooLarge(n)) => {
            let m = format!(
                "request body of {n} bytes exceeds the {} byte limit",
                core.max_body_bytes()
            );
            return anthropic_error(413, "request_too_large", &m, &request_id);
        }
        Err(e) => {
            let m = format!("request body incomplete: {}", e.describe());
            return anthropic_error(400, "invalid_request_error", &m, &request_id);
        }
    };
    let request: Value = match serde_json::from_slice(&bytes) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return anthropic_error(
                400,
                "invalid_request_error",
                "the request body is not a JSON object",
                &request_id,
            )
        }
    };
    let (model, _, mut native) = match native_body(&request) {
        Ok(x) => x,
        Err(m) => return anthropic_error(400, "invalid_request_error", &m, &request_id),
    };
    // Counting needs no output budget; a request without one is still countable.
    if let Some(o) = native.as_object_mut() {
        o.entry("max_tokens").or_insert(json!(1));
    }
    if !caller.permissions.may_invoke(&model) {
        let m = format!("{} may not invoke {model}", caller.arn);
        return anthropic_error(403, "permission_error", &m, &request_id);
    }
    let Some(r) = core.routes().resolve(&model) else {
        let m = format!("model: {model} (no route serves this model)");
        return anthropic_error(404, "not_found_error", &m, &request_id);
    };
    let input = logbook_providers::CountInput::Invoke(native);
    match Invoker::model(&r, r.provider.count_tokens(&r.info.upstream_model, &input)).await {
        Ok(n) => json_response(
            serde_json::to_vec(&json!({ "input_tokens": n })).unwrap_or_default(),
            "application/json",
            &request_id,
            REQUEST_ID,
        ),
        Err(e) => {
            let (status, kind) = anthropic_error_type(e.code.as_str());
            anthropic_error(status, kind, &e.message, &request_id)
        }
    }
}

/// Messages stream events as Anthropic's SSE; `message_stop` (which ends the stream) is
/// held until the record is durable. The record holds the events.
struct EventsFormat {
    events: Vec<Value>,
    model: String,
}

/// The Messages API's stream error event.
fn error_event(code: AwsErrorCode, message: &str) -> Bytes {
    let (_, kind) = anthropic_error_type(code.as_str());
    sse(&json!({"type": "error", "error": {"type": kind, "message": message}}))
}

fn sse(v: &Value) -> Bytes {
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("message");
    let data = serde_json::to_string(v).unwrap_or_default();
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

impl StreamFormat for EventsFormat {
    type Item = Bytes;

    fn frames(
        &mut self,
        bytes: Bytes,
        call: &mut Call,
    ) -> Result<Vec<(Bytes, bool)>, ProviderError> {
        let mut v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ProviderError::new(
                AwsErrorCode::ModelStreamErrorException,
                format!("the model sent an event that is not JSON: {e}"),
            )
        })?;
        let is_final = v.get("type").and_then(Value::as_str) == Some("message_stop");
        if v.get("type").and_then(Value::as_str) == Some("content_block_delta") {
            call.mark_first_token();
        }
        // The record keeps Bedrock's metrics (usage); the client gets the Anthropic event.
        self.events.push(v.clone());
        if let Some(o) = v.as_object_mut() {
            o.remove("amazon-bedrock-invocationMetrics");
            if let Some(m) = o.get_mut("message").and_then(Value::as_object_mut) {
                m.entry("model").or_insert_with(|| json!(self.model));
            }
        }
        Ok(vec![(sse(&v), is_final)])
    }

    fn output(&mut self, call: &mut Call) -> Output {
        if let Some(u) = native::usage_from_chunks(&self.events) {
            call.set_usage(u);
        }
        Output {
            output_content_type: Some("application/json".into()),
            output_body_json: Some(Value::Array(std::mem::take(&mut self.events))),
            output_body_s3_path: None,
            output_token_count: None,
        }
    }

    fn partial(&self) -> Option<Value> {
        Some(Value::Array(self.events.clone()))
    }

    fn error_frame(&self, code: AwsErrorCode, message: &str) -> Option<Bytes> {
        Some(error_event(code, message))
    }
}

/// Messages stream events made from a Converse stream (providers without native bodies).
struct FromConverse {
    tr: logbook_providers::messages::EventTranslator,
    events: Vec<Value>,
}

impl StreamFormat for FromConverse {
    type Item = logbook_providers::converse::StreamEvent;

    fn frames(
        &mut self,
        ev: Self::Item,
        call: &mut Call,
    ) -> Result<Vec<(Bytes, bool)>, ProviderError> {
        use logbook_providers::converse::StreamEvent;
        match &ev {
            StreamEvent::ContentBlockDelta { .. } => call.mark_first_token(),
            StreamEvent::Metadata { usage, .. } => call.set_usage(*usage),
            _ => {}
        }
        let out = self.tr.events(&ev);
        let frames = out
            .iter()
            .map(|v| {
                let last = v.get("type").and_then(Value::as_str) == Some("message_stop");
                (sse(v), last)
            })
            .collect();
        self.events.extend(out);
        Ok(frames)
    }

    fn output(&mut self, _call: &mut Call) -> Output {
        Output {
            output_content_type: Some("application/json".into()),
            output_body_json: Some(Value::Array(std::mem::take(&mut self.events))),
            output_body_s3_path: None,
            output_token_count: None,
        }
    }

    fn partial(&self) -> Option<Value> {
        Some(Value::Array(self.events.clone()))
    }

    fn error_frame(&self, code: AwsErrorCode, message: &str) -> Option<Bytes> {
        Some(error_event(code, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_messages_request_becomes_a_native_claude_body() {
        let (m, s, b) = native_body(
            &json!({"model": "claude-x", "max_tokens": 10, "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .unwrap();
        assert_eq!((m.as_str(), s), ("claude-x", true));
        assert!(b.get("model").is_none() && b.get("stream").is_none());
        assert_eq!(b["anthropic_version"], native::BEDROCK_ANTHROPIC_VERSION);
        assert!(native_body(&json!({"max_tokens": 1}))
            .unwrap_err()
            .contains("model"));
        assert!(native_body(&json!({"model": "m", "stream": "yes"})).is_err());
    }

    #[test]
    fn aws_codes_map_to_anthropic_error_types() {
        assert_eq!(
            anthropic_error_type("ValidationException"),
            (400, "invalid_request_error")
        );
        assert_eq!(
            anthropic_error_type("ThrottlingException"),
            (429, "rate_limit_error")
        );
        assert_eq!(
            anthropic_error_type("AccessDeniedException"),
            (403, "permission_error")
        );
        assert_eq!(
            anthropic_error_type("ModelTimeoutException"),
            (529, "overloaded_error")
        );
        assert_eq!(anthropic_error_type("Whatever"), (500, "api_error"));
    }
}
