//! The Bedrock runtime API: Converse, ConverseStream, InvokeModel,
//! InvokeModelWithResponseStream (botocore `bedrock-runtime/2023-09-30`).
//!
//! Handlers are thin: each spawns the call so that it runs to completion (and is
//! recorded) even if the client goes away, and answers only after the record is durable.

use crate::capture::{Call, Refusal};
use crate::http_util::{aws_error, json_response, read_body, set_header, BodyError, REQUEST_ID};
use crate::identity::Caller;
use crate::invoke::{Invoker, Refused};
use crate::routing::Resolved;
use crate::stream::StreamFormat;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use http::HeaderMap;
use logbook_providers::converse::{valid_metadata, Assembler, ConverseRequest, StreamEvent};
use logbook_providers::{native, ProviderError};
use logbook_record::{Operation, Output};
use logbook_wire::aws::AwsErrorCode;
use logbook_wire::eventstream;
use serde_json::Value;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio::sync::mpsc;

/// The AWS error for a call refused before the provider is called.
fn refused(e: &Refusal, request_id: &str) -> Response {
    match e {
        Refusal::Unavailable(m) => {
            aws_error(AwsErrorCode::ServiceUnavailableException, m, request_id)
        }
        Refusal::LoggingOff(m) => aws_error(AwsErrorCode::AccessDeniedException, m, request_id),
    }
}

/// A stream whose start could not be journaled is refused before any byte of it leaves.
fn stream_refused(call: &Call, e: &crate::capture::RecordError) -> Response {
    aws_error(
        AwsErrorCode::InternalServerException,
        &e.to_string(),
        &call.request_id,
    )
}

/// `errorCode` recorded when the client disconnects before the response completes.
pub const CLIENT_DISCONNECTED: &str = "ClientDisconnected";

struct Fail {
    code: AwsErrorCode,
    message: String,
}

impl Fail {
    fn new(code: AwsErrorCode, message: impl Into<String>) -> Self {
        Fail {
            code,
            message: message.into(),
        }
    }
}

impl From<ProviderError> for Fail {
    fn from(e: ProviderError) -> Self {
        Fail {
            code: e.code,
            message: e.message,
        }
    }
}

fn declared_len(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Record a failed call and answer with the AWS error.
async fn fail(core: &Invoker, call: &Call, f: Fail, output: Option<Output>) -> Response {
    let status = if f.code.as_str() == CLIENT_DISCONNECTED {
        499
    } else {
        f.code.status()
    };
    core.fail(call, f.code.as_str(), &f.message, status, output)
        .await;
    aws_error(f.code, &f.message, &call.request_id)
}

async fn disconnected(core: &Invoker, call: &Call, why: String) -> Response {
    let message = format!("client disconnected while sending the request: {why}");
    core.fail(call, CLIENT_DISCONNECTED, &message, 499, None)
        .await;
    aws_error(
        AwsErrorCode::ValidationException,
        "request body incomplete",
        &call.request_id,
    )
}

/// Read and size-check the body; `Err` is the finished error response.
async fn body_bytes(
    core: &Invoker,
    call: &mut Call,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, Response> {
    match read_body(body, core.max_body_bytes(), declared_len(headers)).await {
        Ok(b) => {
            call.body_bytes = b.len();
            Ok(b)
        }
        Err(BodyError::TooLarge(n)) => Err(fail(
            core,
            call,
            Fail::new(
                AwsErrorCode::ValidationException,
                format!(
                    "1 validation error detected: Value at 'body' failed to satisfy constraint: Member must have length less than or equal to {} (got at least {n} bytes)",
                    core.max_body_bytes()
                ),
            ),
            None,
        )
        .await),
        Err(other) => Err(disconnected(core, call, other.describe()).await),
    }
}

/// The IAM action name an operation is authorized as.
pub fn iam_action(op: Operation) -> &'static str {
    match op {
        Operation::InvokeModelWithResponseStream | Operation::ConverseStream => {
            "InvokeModelWithResponseStream"
        }
        _ => "InvokeModel",
    }
}

/// AWS's message for an action the caller is not allowed.
pub fn denied_message(call: &Call) -> String {
    let action = iam_action(call.operation);
    format!(
        "User: {} is not authorized to perform: bedrock:{action} on resource: arn:aws:bedrock:{}::foundation-model/{} because no identity-based policy allows the bedrock:{action} action",
        call.caller.arn, call.caller.region, call.model_id
    )
}

/// Admit the call through the core; a refusal is recorded (unless nothing can be) and
/// answered in Bedrock's shape.
async fn admit(core: &Invoker, call: &mut Call) -> Result<Resolved, Response> {
    let f = match core.admit(call).await {
        Ok(r) => return Ok(r),
        Err(Refused::Logging(e)) => return Err(refused(&e, &call.request_id)),
        Err(Refused::Denied) => Fail::new(AwsErrorCode::AccessDeniedException, denied_message(call)),
        Err(Refused::NoRoute) => Fail::new(
            AwsErrorCode::ResourceNotFoundException,
            format!("Could not resolve the foundation model from the provided model identifier {}: no route matches it.", call.model_id),
        ),
        Err(Refused::OverBudget(m)) => Fail::new(AwsErrorCode::ThrottlingException, m),
    };
    Err(fail(core, call, f, None).await)
}

fn json_content_type_ok(headers: &HeaderMap, name: &str) -> Result<(), Fail> {
    match headers.get(name).and_then(|v| v.to_str().ok()) {
        None => Ok(()),
        Some(ct) => {
            let base = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if base == "application/json" || base == "*/*" || base.is_empty() {
                Ok(())
            } else {
                Err(Fail::new(
                    AwsErrorCode::ValidationException,
                    format!("The provided {name} {ct:?} is not supported; use application/json"),
                ))
            }
        }
    }
}

async fn spawn_call<F>(fut: F) -> Response
where
    F: std::future::Future<Output = Response> + Send + 'static,
{
    match tokio::spawn(fut).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "call task failed");
            aws_error(
                AwsErrorCode::InternalServerException,
                "internal error",
                "unknown",
            )
        }
    }
}

/// Parse a Converse body; on failure, the error response (recorded).
async fn parse_converse(
    core: &Invoker,
    call: &mut Call,
    headers: &HeaderMap,
    body: Body,
) -> Result<ConverseRequest, Response> {
    if let Err(f) = json_content_type_ok(headers, "Content-Type") {
        return Err(fail(core, call, f, None).await);
    }
    let bytes = body_bytes(core, call, headers, body).await?;
    call.input.input_content_type = Some("application/json".into());
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return Err(fail(
                core,
                call,
                Fail::new(
                    AwsErrorCode::ValidationException,
                    format!(
                        "Malformed input request: {e}, please reformat your input and try again."
                    ),
                ),
                None,
            )
            .await)
        }
    };
    call.input.input_body_json = Some(value.clone());
    let req: ConverseRequest = match serde_json::from_value(value) {
        Ok(r) => r,
        Err(e) => {
            return Err(fail(
                core,
                call,
                Fail::new(
                    AwsErrorCode::ValidationException,
                    format!(
                        "Malformed input request: {e}, please reformat your input and try again."
                    ),
                ),
                None,
            )
            .await)
        }
    };
    call.request_metadata = req.request_metadata.clone();
    call.performance_config = req.performance_config.clone();
    if let Err(m) = req.validate() {
        return Err(fail(
            core,
            call,
            Fail::new(AwsErrorCode::ValidationException, m),
            None,
        )
        .await);
    }
    Ok(req)
}

/// `POST /model/{modelId}/converse`
pub async fn converse(
    State(core): State<Invoker>,
    Path(model_id): Path<String>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let call = crate::http_util::begin_call(
        Operation::Converse,
        "bedrock-runtime",
        model_id,
        caller,
        &headers,
        addr,
    );
    spawn_call(converse_call(core, call, headers, body)).await
}

async fn converse_call(core: Invoker, mut call: Call, headers: HeaderMap, body: Body) -> Response {
    let req = match parse_converse(&core, &mut call, &headers, body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let r = match admit(&core, &mut call).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let result = Invoker::model(&r, r.provider.converse(&r.info.upstream_model, &req)).await;
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => return fail(&core, &call, e.into(), None).await,
    };
    call.set_usage(resp.usage);
    match core.finish_json(&call, resp.to_json()).await {
        Ok(bytes) => json_response(bytes, "application/json", &call.request_id, REQUEST_ID),
        Err(e) => aws_error(
            AwsErrorCode::InternalServerException,
            &e.to_string(),
            &call.request_id,
        ),
    }
}

fn stream_response(
    rx: mpsc::Receiver<Result<Bytes, Infallible>>,
    call: &Call,
    content_type: Option<&str>,
) -> Response {
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut r = Response::new(body);
    set_header(&mut r, "content-type", "application/vnd.amazon.eventstream");
    set_header(&mut r, REQUEST_ID, &call.request_id);
    if let Some(ct) = content_type {
        set_header(&mut r, "x-amzn-bedrock-content-type", ct);
    }
    r
}

/// ConverseStream: each event is an event-stream message; `messageStop` and `metadata`
/// are final. The record holds the assembled Converse response.
#[derive(Default)]
struct ConverseFormat {
    asm: Assembler,
}

fn frame_error(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(AwsErrorCode::InternalServerException, e.to_string())
}

impl StreamFormat for ConverseFormat {
    type Item = StreamEvent;

    fn frames(
        &mut self,
        ev: StreamEvent,
        call: &mut Call,
    ) -> Result<Vec<(Bytes, bool)>, ProviderError> {
        self.asm.push(&ev);
        if matches!(ev, StreamEvent::ContentBlockDelta { .. }) {
            call.mark_first_token();
        }
        let frame = eventstream::event(ev.member(), ev.payload()).map_err(frame_error)?;
        let is_final = matches!(
            ev,
            StreamEvent::MessageStop { .. } | StreamEvent::Metadata { .. }
        );
        Ok(vec![(frame, is_final)])
    }

    fn output(&mut self, call: &mut Call) -> Output {
        if let Some(u) = self.asm.usage() {
            call.set_usage(u);
        }
        Output {
            output_content_type: Some("application/json".into()),
            output_body_json: Some(self.asm.finish().to_json()),
            output_body_s3_path: None,
            output_token_count: None,
        }
    }

    fn partial(&self) -> Option<Value> {
        Some(self.asm.finish().to_json())
    }

    fn error_frame(&self, code: AwsErrorCode, message: &str) -> Option<Bytes> {
        eventstream::exception(code.stream_member(), message).ok()
    }
}

/// InvokeModelWithResponseStream: each model chunk is a `chunk` message; the chunk that
/// carries `amazon-bedrock-invocationMetrics` is final. The record holds the array of
/// decoded chunks.
#[derive(Default)]
struct ChunkFormat {
    chunks: Vec<Value>,
}

impl StreamFormat for ChunkFormat {
    type Item = Bytes;

    fn frames(
        &mut self,
        bytes: Bytes,
        call: &mut Call,
    ) -> Result<Vec<(Bytes, bool)>, ProviderError> {
        call.mark_first_token();
        let parsed: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        let is_final = parsed.get("amazon-bedrock-invocationMetrics").is_some();
        self.chunks.push(parsed);
        Ok(vec![(
            eventstream::chunk(&bytes).map_err(frame_error)?,
            is_final,
        )])
    }

    fn output(&mut self, call: &mut Call) -> Output {
        if let Some(u) = native::usage_from_chunks(&self.chunks) {
            call.set_usage(u);
        }
        Output {
            output_content_type: Some("application/json".into()),
            output_body_json: Some(Value::Array(std::mem::take(&mut self.chunks))),
            output_body_s3_path: None,
            output_token_count: None,
        }
    }

    fn partial(&self) -> Option<Value> {
        Some(Value::Array(self.chunks.clone()))
    }

    fn error_frame(&self, code: AwsErrorCode, message: &str) -> Option<Bytes> {
        eventstream::exception(code.stream_member(), message).ok()
    }
}

/// `POST /model/{modelId}/converse-stream`
pub async fn converse_stream(
    State(core): State<Invoker>,
    Path(model_id): Path<String>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut call = crate::http_util::begin_call(
        Operation::ConverseStream,
        "bedrock-runtime",
        model_id,
        caller,
        &headers,
        addr,
    );
    call.stream = true;
    spawn_call(converse_stream_call(core, call, headers, body)).await
}

async fn converse_stream_call(
    core: Invoker,
    mut call: Call,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let req = match parse_converse(&core, &mut call, &headers, body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let r = match admit(&core, &mut call).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let (started, stream) = core
        .open_stream(
            &call,
            Invoker::model(&r, r.provider.converse_stream(&r.info.upstream_model, &req)),
        )
        .await;
    let stream = match stream {
        Ok(st) => st,
        Err(e) => return fail(&core, &call, e.into(), None).await,
    };
    let started = match started {
        Ok(st) => st,
        Err(e) => return stream_refused(&call, &e),
    };
    let (tx, rx) = mpsc::channel(64);
    let resp = stream_response(rx, &call, None);
    tokio::spawn(crate::stream::pump(
        core,
        started,
        call,
        stream,
        r.timeout,
        ConverseFormat::default(),
        tx,
    ));
    resp
}

/// Native-body preamble: content type, body, metadata header, routing.
async fn parse_invoke(
    core: &Invoker,
    call: &mut Call,
    headers: &HeaderMap,
    body: Body,
    accept_header: &str,
) -> Result<(Value, Resolved), Response> {
    for h in ["Content-Type", accept_header] {
        if let Err(f) = json_content_type_ok(headers, h) {
            return Err(fail(core, call, f, None).await);
        }
    }
    let bytes = body_bytes(core, call, headers, body).await?;
    call.input.input_content_type = Some("application/json".into());
    if let Some(md) = headers.get("x-amzn-bedrock-request-metadata") {
        match md.to_str().ok().and_then(|t| serde_json::from_str::<BTreeMap<String, String>>(t).ok()) {
            Some(m) if !m.is_empty() && m.len() <= 16 && m.iter().all(|(k, v)| valid_metadata(k, 1) && valid_metadata(v, 0)) => call.request_metadata = Some(m),
            _ => {
                return Err(fail(core, call, Fail::new(AwsErrorCode::ValidationException, "X-Amzn-Bedrock-Request-Metadata must be a JSON object of 1 to 16 string pairs matching [a-zA-Z0-9\\s:_@$#=/+,-.]{0,256}"), None).await)
            }
        }
    }
    if let Some(l) = headers
        .get("x-amzn-bedrock-performanceconfig-latency")
        .and_then(|v| v.to_str().ok())
    {
        call.performance_config = Some(serde_json::json!({ "latency": l }));
    }
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return Err(fail(core, call, Fail::new(AwsErrorCode::ValidationException, "Malformed input request: the body must be a JSON object, please reformat your input and try again."), None).await),
        Err(e) => return Err(fail(core, call, Fail::new(AwsErrorCode::ValidationException, format!("Malformed input request: {e}, please reformat your input and try again.")), None).await),
    };
    call.input.input_body_json = Some(value.clone());
    let r = admit(core, call).await?;
    Ok((value, r))
}

/// `POST /model/{modelId}/invoke`
pub async fn invoke(
    State(core): State<Invoker>,
    Path(model_id): Path<String>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let call = crate::http_util::begin_call(
        Operation::InvokeModel,
        "bedrock-runtime",
        model_id,
        caller,
        &headers,
        addr,
    );
    spawn_call(invoke_call(core, call, headers, body)).await
}

async fn invoke_call(core: Invoker, mut call: Call, headers: HeaderMap, body: Body) -> Response {
    let (value, r) = match parse_invoke(&core, &mut call, &headers, body, "Accept").await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let result = Invoker::model(&r, r.provider.invoke(&r.info.upstream_model, &value)).await;
    let resp = match result {
        Ok(x) => x,
        Err(e) => return fail(&core, &call, e.into(), None).await,
    };
    let out_json: Option<Value> = serde_json::from_slice(&resp.body).ok();
    if let Some(u) = resp.usage {
        call.set_usage(u);
    }
    let output = Output {
        output_content_type: Some(resp.content_type.clone()),
        output_body_json: out_json,
        output_body_s3_path: None,
        output_token_count: None,
    };
    if let Err(e) = core.finish(&call, output).await {
        return aws_error(
            AwsErrorCode::InternalServerException,
            &e.to_string(),
            &call.request_id,
        );
    }
    let mut out = json_response(
        resp.body.to_vec(),
        &resp.content_type,
        &call.request_id,
        REQUEST_ID,
    );
    if let Some(u) = resp.usage {
        set_header(
            &mut out,
            "x-amzn-bedrock-input-token-count",
            &u.input_tokens.to_string(),
        );
        set_header(
            &mut out,
            "x-amzn-bedrock-output-token-count",
            &u.output_tokens.to_string(),
        );
    }
    set_header(
        &mut out,
        "x-amzn-bedrock-invocation-latency",
        &call.started.elapsed().as_millis().to_string(),
    );
    out
}

/// `POST /model/{modelId}/invoke-with-response-stream`
pub async fn invoke_stream(
    State(core): State<Invoker>,
    Path(model_id): Path<String>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut call = crate::http_util::begin_call(
        Operation::InvokeModelWithResponseStream,
        "bedrock-runtime",
        model_id,
        caller,
        &headers,
        addr,
    );
    call.stream = true;
    spawn_call(invoke_stream_call(core, call, headers, body)).await
}

async fn invoke_stream_call(
    core: Invoker,
    mut call: Call,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (value, r) =
        match parse_invoke(&core, &mut call, &headers, body, "X-Amzn-Bedrock-Accept").await {
            Ok(x) => x,
            Err(resp) => return resp,
        };
    let (started, stream) = core
        .open_stream(
            &call,
            Invoker::model(&r, r.provider.invoke_stream(&r.info.upstream_model, &value)),
        )
        .await;
    let stream = match stream {
        Ok(st) => st,
        Err(e) => return fail(&core, &call, e.into(), None).await,
    };
    let started = match started {
        Ok(st) => st,
        Err(e) => return stream_refused(&call, &e),
    };
    let (tx, rx) = mpsc::channel(64);
    let resp = stream_response(rx, &call, Some("application/json"));
    tokio::spawn(crate::stream::pump(
        core,
        started,
        call,
        stream,
        r.timeout,
        ChunkFormat::default(),
        tx,
    ));
    resp
}

/// `POST /model/{modelId}/count-tokens` (CountTokens): the input tokens the routed model
/// would count for a Converse request (`input.converse`) or an InvokeModel body
/// (`input.invokeModel.body`, base64 as restJson sends blobs). No model is invoked and
/// nothing is billed, so no invocation record is written (Bedrock writes none either);
/// the caller needs the same permission as to invoke the model.
pub async fn count_tokens(
    State(core): State<Invoker>,
    Path(model_id): Path<String>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    use base64::Engine;
    let request_id = uuid::Uuid::new_v4().to_string();
    let fail = |code: AwsErrorCode, m: String| aws_error(code, &m, &request_id);
    if let Err(f) = json_content_type_ok(&headers, "Content-Type") {
        return fail(f.code, f.message);
    }
    let bytes = match read_body(body, core.max_body_bytes(), declared_len(&headers)).await {
        Ok(b) => b,
        Err(BodyError::TooLarge(n)) => {
            return fail(
                AwsErrorCode::ValidationException,
                format!("1 validation error detected: Value at 'body' failed to satisfy constraint: Member must have length less than or equal to {} (got at least {n} bytes)", core.max_body_bytes()),
            )
        }
        Err(e) => return fail(AwsErrorCode::ValidationException, format!("request body incomplete: {}", e.describe())),
    };
    let malformed = |e: String| {
        fail(
            AwsErrorCode::ValidationException,
            format!("Malformed input request: {e}, please reformat your input and try again."),
        )
    };
    let v: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return malformed(e.to_string()),
    };
    let input = match (v["input"].get("converse"), v["input"].get("invokeModel")) {
        (Some(c), None) => match serde_json::from_value::<ConverseRequest>(c.clone()) {
            Ok(r) => logbook_providers::CountInput::Converse(Box::new(r)),
            Err(e) => return malformed(e.to_string()),
        },
        (None, Some(i)) => {
            let decoded = i["body"]
                .as_str()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
            match decoded {
                Some(body @ Value::Object(_)) => logbook_providers::CountInput::Invoke(body),
                _ => return malformed("input.invokeModel.body must be a base64-encoded JSON object".into()),
            }
        }
        _ => {
            return fail(
                AwsErrorCode::ValidationException,
                "1 validation error detected: Value at 'input' must hold exactly one of converse or invokeModel".into(),
            )
        }
    };
    if !caller.permissions.may_invoke(&model_id) {
        return fail(
            AwsErrorCode::AccessDeniedException,
            format!(
                "User: {} is not authorized to perform: bedrock:CountTokens on resource: arn:aws:bedrock:{}::foundation-model/{model_id}",
                caller.arn, caller.region
            ),
        );
    }
    let Some(r) = core.routes().resolve(&model_id) else {
        return fail(
            AwsErrorCode::ResourceNotFoundException,
            format!("Could not resolve the foundation model from the provided model identifier {model_id}: no route matches it."),
        );
    };
    match Invoker::model(&r, r.provider.count_tokens(&r.info.upstream_model, &input)).await {
        Ok(n) => json_response(
            serde_json::to_vec(&serde_json::json!({ "inputTokens": n })).unwrap_or_default(),
            "application/json",
            &request_id,
            REQUEST_ID,
        ),
        Err(e) => fail(e.code, e.message),
    }
}
