//! The OpenAI-compatible API: `POST /v1/chat/completions` (with and without `stream`),
//! `POST /v1/embeddings`, `GET /v1/models`. Requests are translated to Converse, served by
//! the routed provider, and recorded with operation `ChatCompletions` / `Embeddings`; the
//! record holds the OpenAI request and the (assembled) OpenAI response.

use crate::capture::Call;
use crate::http_util::{json_response, openai_error, openai_from_aws, read_body, BodyError};
use crate::identity::Caller;
use crate::invoke::{Invoker, Refused};
use crate::routing::Resolved;
use crate::stream::StreamFormat;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use axum::Extension;
use base64::Engine;
use bytes::Bytes;
use http::HeaderMap;
use logbook_providers::converse::{Assembler, StreamEvent};
use logbook_providers::translate::{chat_to_converse, converse_to_chat_response, ChunkWriter};
use logbook_providers::ProviderError;
use logbook_record::{Operation, Output};
use logbook_wire::aws::AwsErrorCode;
use logbook_wire::openai::OpenAiError;
use logbook_wire::sse;
use serde_json::{json, Value};
use std::net::SocketAddr;

const REQUEST_ID: &str = "x-request-id";

/// Record a failed call (`code` is the AWS error code the record carries) and answer
/// with the OpenAI error.
async fn fail(
    core: &Invoker,
    call: &Call,
    e: OpenAiError,
    code: &str,
    output: Option<Output>,
) -> Response {
    core.fail(call, code, &e.message, e.status, output).await;
    openai_error(&e, &call.request_id)
}

async fn fail_provider(core: &Invoker, call: &Call, e: ProviderError) -> Response {
    let oe = openai_from_aws(e.code, &e.message);
    fail(core, call, oe, e.code.as_str(), None).await
}

async fn read_json(
    core: &Invoker,
    call: &mut Call,
    headers: &HeaderMap,
    body: Body,
) -> Result<Value, Response> {
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
            let e = OpenAiError {
                status: 413,
                message: format!(
                    "request body of {n} bytes exceeds the {} byte limit",
                    core.max_body_bytes()
                ),
                kind: "invalid_request_error",
                code: Some("request_too_large"),
                param: None,
            };
            return Err(fail(core, call, e, "ValidationException", None).await);
        }
        Err(other) => {
            let why = other.describe();
            let e = OpenAiError::invalid(format!("request body incomplete: {why}"), None);
            return Err(fail(core, call, e, crate::bedrock::CLIENT_DISCONNECTED, None).await);
        }
    };
    call.input.input_content_type = Some("application/json".into());
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v @ Value::Object(_)) => {
            call.input.input_body_json = Some(v.clone());
            if let Some(m) = v.get("model").and_then(Value::as_str) {
                call.model_id = m.to_string();
            }
            Ok(v)
        }
        Ok(_) => Err(fail(
            core,
            call,
            OpenAiError::invalid("the request body must be a JSON object", None),
            "ValidationException",
            None,
        )
        .await),
        Err(e) => Err(fail(
            core,
            call,
            OpenAiError::invalid(
                format!("We could not parse the JSON body of your request. ({e})"),
                None,
            ),
            "ValidationException",
            None,
        )
        .await),
    }
}

/// Admit the call through the core; a refusal is recorded (unless nothing can be) and
/// answered in OpenAI's shape.
async fn admit(core: &Invoker, call: &mut Call) -> Result<Resolved, Response> {
    let (e, code) = match core.admit(call).await {
        Ok(r) => return Ok(r),
        Err(Refused::Logging(e)) => {
            let (status, kind, code) = match e {
                crate::capture::Refusal::Unavailable(_) => {
                    (503, "api_error", "logging_unavailable")
                }
                crate::capture::Refusal::LoggingOff(_) => {
                    (403, "permission_error", "logging_required")
                }
            };
            let oe = OpenAiError {
                status,
                message: e.to_string(),
                kind,
                code: Some(code),
                param: None,
            };
            return Err(openai_error(&oe, &call.request_id));
        }
        Err(Refused::Denied) => (
            OpenAiError {
                status: 403,
                message: crate::bedrock::denied_message(call),
                kind: "permission_error",
                code: Some("model_not_allowed"),
                param: Some("model".into()),
            },
            "AccessDeniedException",
        ),
        Err(Refused::NoRoute) => (
            OpenAiError {
                status: 404,
                message: format!(
                    "The model `{}` does not exist or you do not have access to it.",
                    call.model_id
                ),
                kind: "invalid_request_error",
                code: Some("model_not_found"),
                param: Some("model".into()),
            },
            "ResourceNotFoundException",
        ),
        Err(Refused::OverBudget(m)) => (
            OpenAiError {
                status: 429,
                message: m,
                kind: "insufficient_quota",
                code: Some("insufficient_quota"),
                param: None,
            },
            "ThrottlingException",
        ),
    };
    Err(fail(core, call, e, code, None).await)
}

fn created(call: &Call) -> i64 {
    call.start_time.unix_timestamp()
}

fn chat_id(call: &Call) -> String {
    format!("chatcmpl-{}", call.request_id.replace('-', ""))
}

/// Run the call on its own task, so it is recorded even if the client goes away.
async fn spawn_call<F>(fut: F) -> Response
where
    F: std::future::Future<Output = Response> + Send + 'static,
{
    match tokio::spawn(fut).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "call task failed");
            let e = OpenAiError {
                status: 500,
                message: "internal error".into(),
                kind: "api_error",
                code: None,
                param: None,
            };
            openai_error(&e, "unknown")
        }
    }
}

/// `POST /v1/chat/completions`
pub async fn chat_completions(
    State(core): State<Invoker>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let call = crate::http_util::begin_call(
        Operation::ChatCompletions,
        "openai",
        String::new(),
        caller,
        &headers,
        addr,
    );
    spawn_call(chat_call(core, call, headers, body, false)).await
}

/// `POST /v1/completions`: the legacy Completions API, through the chat translation.
pub async fn completions(
    State(core): State<Invoker>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let call = crate::http_util::begin_call(
        Operation::Completions,
        "openai",
        String::new(),
        caller,
        &headers,
        addr,
    );
    spawn_call(chat_call(core, call, headers, body, true)).await
}

/// A chat call; `legacy`: the request and the answers are in the Completions API's shape.
async fn chat_call(
    core: Invoker,
    mut call: Call,
    headers: HeaderMap,
    body: Body,
    legacy: bool,
) -> Response {
    use logbook_providers::completions::{chat_to_completion, completions_to_chat};
    let v = match read_json(&core, &mut call, &headers, body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let chat = if legacy {
        completions_to_chat(&v)
    } else {
        Ok(v.clone())
    };
    let (req, opts) = match chat.and_then(|c| chat_to_converse(&c)) {
        Ok(x) => x,
        Err(e) => {
            let oe = OpenAiError::invalid(e.message, e.param.as_deref());
            return fail(&core, &call, oe, "ValidationException", None).await;
        }
    };
    if let Err(m) = req.validate() {
        return fail(
            &core,
            &call,
            OpenAiError::invalid(m, Some("messages")),
            "ValidationException",
            None,
        )
        .await;
    }
    call.request_metadata = req.request_metadata.clone();
    let r = match admit(&core, &mut call).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let id = chat_id(&call);
    if !opts.stream {
        let res = Invoker::model(&r, r.provider.converse(&r.info.upstream_model, &req)).await;
        let resp = match res {
            Ok(x) => x,
            Err(e) => return fail_provider(&core, &call, e).await,
        };
        call.set_usage(resp.usage);
        let mut out = converse_to_chat_response(&resp, &opts.model, &id, created(&call));
        if call.route.as_ref().is_some_and(|r| r.mock) {
            if let Some(o) = out.as_object_mut() {
                o.insert("system_fingerprint".into(), json!("logbook-mock"));
            }
        }
        if legacy {
            out = chat_to_completion(&out);
        }
        return match core.finish_json(&call, out).await {
            Ok(bytes) => json_response(bytes, "application/json", &call.request_id, REQUEST_ID),
            Err(e) => logging_failed(&e, &call.request_id),
        };
    }
    call.stream = true;
    let (started, stream) = core
        .open_stream(
            &call,
            Invoker::model(&r, r.provider.converse_stream(&r.info.upstream_model, &req)),
        )
        .await;
    let stream = match stream {
        Ok(st) => st,
        Err(e) => return fail_provider(&core, &call, e).await,
    };
    let started = match started {
        Ok(st) => st,
        Err(e) => {
            // Refused before any byte of the stream leaves.
            return logging_failed(&e, &call.request_id);
        }
    };
    let (tx, resp) = crate::http_util::sse_response(REQUEST_ID, &call.request_id);
    let format = ChatFormat {
        writer: ChunkWriter::new(&id, &opts.model, created(&call), opts.include_usage),
        asm: Assembler::new(),
        model: opts.model.clone(),
        id: id.clone(),
        created: created(&call),
        legacy,
    };
    tokio::spawn(crate::stream::pump(
        core, started, call, stream, r.timeout, format, tx,
    ));
    resp
}

/// `POST /v1/responses`: the Responses API, streamed or not, through the chat translation.
pub async fn responses(
    State(core): State<Invoker>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let call = crate::http_util::begin_call(
        Operation::Responses,
        "openai",
        String::new(),
        caller,
        &headers,
        addr,
    );
    spawn_call(responses_call(core, call, headers, body)).await
}

async fn responses_call(core: Invoker, mut call: Call, headers: HeaderMap, body: Body) -> Response {
    use logbook_providers::responses::{chat_to_response, responses_to_chat, EventWriter};
    let v = match read_json(&core, &mut call, &headers, body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let translated = responses_to_chat(&v).and_then(|chat| chat_to_converse(&chat));
    let (req, opts) = match translated {
        Ok(x) => x,
        Err(e) => {
            let oe = OpenAiError::invalid(e.message, e.param.as_deref());
            return fail(&core, &call, oe, "ValidationException", None).await;
        }
    };
    if let Err(m) = req.validate() {
        return fail(
            &core,
            &call,
            OpenAiError::invalid(m, Some("input")),
            "ValidationException",
            None,
        )
        .await;
    }
    call.request_metadata = req.request_metadata.clone();
    let r = match admit(&core, &mut call).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let id = call.request_id.replace('-', "");
    if !opts.stream {
        let res = Invoker::model(&r, r.provider.converse(&r.info.upstream_model, &req)).await;
        let resp = match res {
            Ok(x) => x,
            Err(e) => return fail_provider(&core, &call, e).await,
        };
        call.set_usage(resp.usage);
        let chat = converse_to_chat_response(&resp, &opts.model, &id, created(&call));
        let out = chat_to_response(&chat, &id, created(&call), &v);
        return match core.finish_json(&call, out).await {
            Ok(bytes) => json_response(bytes, "application/json", &call.request_id, REQUEST_ID),
            Err(e) => logging_failed(&e, &call.request_id),
        };
    }
    call.stream = true;
    let (started, stream) = core
        .open_stream(
            &call,
            Invoker::model(&r, r.provider.converse_stream(&r.info.upstream_model, &req)),
        )
        .await;
    let stream = match stream {
        Ok(st) => st,
        Err(e) => return fail_provider(&core, &call, e).await,
    };
    let started = match started {
        Ok(st) => st,
        Err(e) => return logging_failed(&e, &call.request_id),
    };
    let (tx, resp) = crate::http_util::sse_response(REQUEST_ID, &call.request_id);
    let format = ResponsesFormat {
        writer: EventWriter::new(&id, &opts.model, created(&call), &v),
        asm: Assembler::new(),
        model: opts.model.clone(),
        id,
        created: created(&call),
        req: v,
        completed: None,
    };
    tokio::spawn(crate::stream::pump(
        core, started, call, stream, r.timeout, format, tx,
    ));
    resp
}

/// Responses API events as server-sent events (`event:` and `data:` lines). What ends the
/// stream, `response.completed`, is sent once the record is durable; the record holds the
/// assembled `response` object.
struct ResponsesFormat {
    writer: logbook_providers::responses::EventWriter,
    asm: Assembler,
    model: String,
    id: String,
    created: i64,
    req: Value,
    completed: Option<Value>,
}

fn named_sse(v: &Value) -> Bytes {
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("message");
    let mut out = format!("event: {kind}\n").into_bytes();
    out.extend_from_slice(&sse::data_event(&serde_json::to_vec(v).unwrap_or_default()));
    Bytes::from(out)
}

impl ResponsesFormat {
    fn response(&self) -> Value {
        let chat =
            converse_to_chat_response(&self.asm.finish(), &self.model, &self.id, self.created);
        logbook_providers::responses::chat_to_response(&chat, &self.id, self.created, &self.req)
    }
}

impl StreamFormat for ResponsesFormat {
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
        let is_final = matches!(
            ev,
            StreamEvent::MessageStop { .. } | StreamEvent::Metadata { .. }
        );
        Ok(self
            .writer
            .on_event(&ev)
            .iter()
            .map(|e| (named_sse(e), is_final))
            .collect())
    }

    fn output(&mut self, call: &mut Call) -> Output {
        if let Some(u) = self.asm.usage() {
            call.set_usage(u);
        }
        let response = self.response();
        self.completed = Some(self.writer.completed(response.clone()));
        Output {
            output_content_type: Some("application/json".into()),
            output_body_json: Some(response),
            output_body_s3_path: None,
            output_token_count: None,
        }
    }

    fn partial(&self) -> Option<Value> {
        Some(self.response())
    }

    fn error_frame(&self, code: AwsErrorCode, message: &str) -> Option<Bytes> {
        let oe = openai_from_aws(code, message);
        Some(named_sse(
            &self.writer.failed(oe.code.unwrap_or(oe.kind), &oe.message),
        ))
    }

    fn trailer(&self) -> Vec<Bytes> {
        self.completed.iter().map(named_sse).collect()
    }
}

/// The call could not be logged durably (fail-closed): OpenAI's shape for it.
fn logging_failed(e: &crate::capture::RecordError, request_id: &str) -> Response {
    openai_error(
        &OpenAiError {
            status: 500,
            message: e.to_string(),
            kind: "api_error",
            code: Some("logging_failed"),
            param: None,
        },
        request_id,
    )
}

/// Chat completion chunks as server-sent events; the `finish_reason` and usage chunks
/// are final, and `[DONE]` follows them once the record is durable. The record holds the
/// assembled `chat.completion`.
struct ChatFormat {
    writer: ChunkWriter,
    asm: Assembler,
    model: String,
    id: String,
    created: i64,
    /// Completions API chunks and record instead of chat ones.
    legacy: bool,
}

impl ChatFormat {
    fn shape(&self, chat: Value) -> Value {
        if self.legacy {
            logbook_providers::completions::chat_to_completion(&chat)
        } else {
            chat
        }
    }
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(sse::data_event(&serde_json::to_vec(v).unwrap_or_default()))
}

impl StreamFormat for ChatFormat {
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
        let is_final = matches!(
            ev,
            StreamEvent::MessageStop { .. } | StreamEvent::Metadata { .. }
        );
        Ok(self
            .writer
            .on_event(&ev)
            .into_iter()
            .map(|c| (sse(&self.shape(c)), is_final))
            .collect())
    }

    fn output(&mut self, call: &mut Call) -> Output {
        if let Some(u) = self.asm.usage() {
            call.set_usage(u);
        }
        let out = self.shape(converse_to_chat_response(
            &self.asm.finish(),
            &self.model,
            &self.id,
            self.created,
        ));
        Output {
            output_content_type: Some("application/json".into()),
            output_body_json: Some(out),
            output_body_s3_path: None,
            output_token_count: None,
        }
    }

    fn partial(&self) -> Option<Value> {
        Some(self.shape(converse_to_chat_response(
            &self.asm.finish(),
            &self.model,
            &self.id,
            self.created,
        )))
    }

    fn error_frame(&self, code: AwsErrorCode, message: &str) -> Option<Bytes> {
        let oe = openai_from_aws(code, message);
        Some(sse(
            &json!({"error": {"message": oe.message, "type": oe.kind, "param": null, "code": oe.code}}),
        ))
    }

    fn trailer(&self) -> Vec<Bytes> {
        vec![Bytes::from_static(b"data: [DONE]\n\n")]
    }
}

/// `POST /v1/embeddings`
pub async fn embeddings(
    State(core): State<Invoker>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let call = crate::http_util::begin_call(
        Operation::Embeddings,
        "openai",
        String::new(),
        caller,
        &headers,
        addr,
    );
    spawn_call(embeddings_call(core, call, headers, body)).await
}

async fn embeddings_call(
    core: Invoker,
    mut call: Call,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let v = match read_json(&core, &mut call, &headers, body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if v.get("model").and_then(Value::as_str).is_none() {
        return fail(
            &core,
            &call,
            OpenAiError::invalid("you must provide a model parameter", Some("model")),
            "ValidationException",
            None,
        )
        .await;
    }
    let inputs: Vec<String> = match v.get("input") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::Array(a)) if !a.is_empty() => {
            return fail(
                &core,
                &call,
                OpenAiError::invalid(
                    "token-array input is not supported; send strings",
                    Some("input"),
                ),
                "ValidationException",
                None,
            )
            .await
        }
        _ => {
            return fail(
                &core,
                &call,
                OpenAiError::invalid(
                    "input must be a non-empty string or array of strings",
                    Some("input"),
                ),
                "ValidationException",
                None,
            )
            .await
        }
    };
    let dims = v
        .get("dimensions")
        .and_then(Value::as_u64)
        .map(|d| d.min(u64::from(u32::MAX)) as u32);
    let base64_out = match v.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return fail(
                &core,
                &call,
                OpenAiError::invalid(
                    format!("encoding_format {other:?} is not one of float, base64"),
                    Some("encoding_format"),
                ),
                "ValidationException",
                None,
            )
            .await
        }
    };
    let r = match admit(&core, &mut call).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let res = Invoker::model(&r, r.provider.embed(&r.info.upstream_model, &inputs, dims)).await;
    let emb = match res {
        Ok(x) => x,
        Err(e) => return fail_provider(&core, &call, e).await,
    };
    let data: Vec<Value> = emb
        .vectors
        .iter()
        .enumerate()
        .map(|(i, vec)| {
            let e = if base64_out {
                let bytes: Vec<u8> = vec.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vec)
            };
            json!({"object": "embedding", "index": i, "embedding": e})
        })
        .collect();
    let out = json!({
        "object": "list",
        "data": data,
        "model": call.model_id,
        "usage": {"prompt_tokens": emb.input_tokens, "total_tokens": emb.input_tokens}
    });
    call.set_usage(logbook_providers::TokenUsage::new(emb.input_tokens, 0));
    match core.finish_json(&call, out).await {
        Ok(bytes) => json_response(bytes, "application/json", &call.request_id, REQUEST_ID),
        Err(e) => logging_failed(&e, &call.request_id),
    }
}

/// `GET /v1/models`
pub async fn models(State(core): State<Invoker>) -> Response {
    let data: Vec<Value> = core
        .routes()
        .models()
        .await
        .into_iter()
        .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    let body = serde_json::to_vec(&json!({"object": "list", "data": data})).unwrap_or_default();
    json_response(
        body,
        "application/json",
        &uuid::Uuid::new_v4().to_string(),
        REQUEST_ID,
    )
}

/// `GET /v1/models/{model}`: the model when a route serves it (OpenAI's `model` object,
/// owned by the provider that serves it), else OpenAI's 404 `model_not_found`.
pub async fn model(
    State(core): State<Invoker>,
    axum::extract::Path(model): axum::extract::Path<String>,
) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    match core.routes().resolve(&model) {
        Some(r) => {
            let body =
                json!({"id": model, "object": "model", "created": 0, "owned_by": r.info.provider});
            json_response(
                serde_json::to_vec(&body).unwrap_or_default(),
                "application/json",
                &id,
                REQUEST_ID,
            )
        }
        None => openai_error(
            &OpenAiError {
                status: 404,
                message: format!(
                    "The model `{model}` does not exist or you do not have access to it."
                ),
                kind: "invalid_request_error",
                code: Some("model_not_found"),
                param: Some("model".into()),
            },
            &id,
        ),
    }
}
