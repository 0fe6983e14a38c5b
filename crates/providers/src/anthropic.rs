//! Anthropic Messages API upstream (`POST {base_url}/v1/messages`).
//!
//! * Converse / ConverseStream are translated to Messages and back (system, images, tool
//!   use and results, stop reasons, usage incl. prompt-cache counters).
//! * InvokeModel / InvokeModelWithResponseStream with an Anthropic body (Bedrock's
//!   `anthropic_version: bedrock-2023-05-31` form) are passed through with `model` set;
//!   stream chunks are the SSE `data` payloads, and the final `message_stop` chunk gets
//!   `amazon-bedrock-invocationMetrics` as Bedrock adds it.

use crate::converse::{ConverseRequest, ConverseResponse, Message, StreamEvent, TokenUsage};
use crate::native::usage_from_chunks;
use crate::{
    ChunkStream, ConverseEventStream, EmbedResponse, InvokeResponse, Provider, ProviderError,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use logbook_wire::aws::AwsErrorCode;
use logbook_wire::sse::SseParser;
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Default `anthropic-version` header.
pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` when a Converse request does not set one (the Messages API requires it).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// An Anthropic Messages API server.
pub struct AnthropicProvider {
    client: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for AnthropicProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnthropicProvider")
            .field("base_url", &self.base_url)
            .finish()
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn media_type(format: &str) -> String {
    match format {
        "jpg" | "jpeg" => "image/jpeg".into(),
        "pdf" => "application/pdf".into(),
        other => format!("image/{other}"),
    }
}

/// Converse request -> Anthropic Messages body.
pub fn converse_to_messages(
    model: &str,
    req: &ConverseRequest,
    stream: bool,
) -> Result<Value, ProviderError> {
    let mut messages = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let mut content = Vec::new();
        for (j, b) in m.content.iter().enumerate() {
            let block = if let Some(t) = b.get("text").and_then(Value::as_str) {
                json!({"type": "text", "text": t})
            } else if let Some(img) = b.get("image") {
                let data = img.get("source").and_then(|s| s.get("bytes")).and_then(Value::as_str).ok_or_else(|| {
                    ProviderError::validation(format!("messages.{i}.content.{j}.image: only inline bytes can be sent to Anthropic"))
                })?;
                let fmt = img.get("format").and_then(Value::as_str).unwrap_or("png");
                json!({"type": "image", "source": {"type": "base64", "media_type": media_type(fmt), "data": data}})
            } else if let Some(doc) = b.get("document") {
                let data = doc.get("source").and_then(|s| s.get("bytes")).and_then(Value::as_str).ok_or_else(|| {
                    ProviderError::validation(format!("messages.{i}.content.{j}.document: only inline bytes can be sent to Anthropic"))
                })?;
                json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": data}})
            } else if let Some(tu) = b.get("toolUse") {
                json!({"type": "tool_use", "id": tu.get("toolUseId"), "name": tu.get("name"), "input": tu.get("input").cloned().unwrap_or(json!({}))})
            } else if let Some(tr) = b.get("toolResult") {
                let parts: Vec<Value> = tr
                    .get("content")
                    .and_then(Value::as_array)
                    .map(|c| {
                        c.iter()
                            .map(|x| match (x.get("text"), x.get("json")) {
                                (Some(Value::String(t)), _) => json!({"type": "text", "text": t}),
                                (_, Some(j)) => json!({"type": "text", "text": j.to_string()}),
                                _ => json!({"type": "text", "text": ""}),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let mut v = json!({"type": "tool_result", "tool_use_id": tr.get("toolUseId"), "content": parts});
                if tr.get("status").and_then(Value::as_str) == Some("error") {
                    if let Some(o) = v.as_object_mut() {
                        o.insert("is_error".into(), json!(true));
                    }
                }
                v
            } else if b.contains_key("cachePoint") {
                // Mark the previous block as a cache breakpoint.
                if let Some(Value::Object(prev)) = content.last_mut() {
                    prev.insert("cache_control".into(), json!({"type": "ephemeral"}));
                }
                continue;
            } else {
                let kind = b.keys().next().cloned().unwrap_or_default();
                return Err(ProviderError::validation(format!(
                    "messages.{i}.content.{j}: content block {kind:?} cannot be sent to Anthropic"
                )));
            };
            content.push(block);
        }
        messages.push(json!({"role": m.role, "content": content}));
    }
    let ic = req.inference_config.clone().unwrap_or_default();
    let mut body = json!({
        "model": model,
        "messages": messages,
        "max_tokens": ic.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
    });
    let o = body
        .as_object_mut()
        .ok_or_else(|| ProviderError::validation("internal"))?;
    let system: Vec<&str> = req
        .system
        .iter()
        .flatten()
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect();
    if !system.is_empty() {
        o.insert("system".into(), json!(system.join("\n")));
    }
    if let Some(t) = ic.temperature {
        o.insert("temperature".into(), json!(t));
    }
    if let Some(t) = ic.top_p {
        o.insert("top_p".into(), json!(t));
    }
    if let Some(s) = ic.stop_sequences.filter(|s| !s.is_empty()) {
        o.insert("stop_sequences".into(), json!(s));
    }
    if let Some(tc) = &req.tool_config {
        let tools: Vec<Value> = tc
            .get("tools")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.get("toolSpec"))
                    .map(|s| json!({"name": s.get("name"), "description": s.get("description"), "input_schema": s.get("inputSchema").and_then(|i| i.get("json")).cloned().unwrap_or(json!({"type": "object"}))}))
                    .collect()
            })
            .unwrap_or_default();
        if !tools.is_empty() {
            o.insert("tools".into(), Value::Array(tools));
        }
        if let Some(c) = tc.get("toolChoice") {
            let choice = if c.get("any").is_some() {
                json!({"type": "any"})
            } else if let Some(n) = c.get("tool").and_then(|t| t.get("name")) {
                json!({"type": "tool", "name": n})
            } else {
                json!({"type": "auto"})
            };
            o.insert("tool_choice".into(), choice);
        }
    }
    if let Some(Value::Object(extra)) = &req.additional_model_request_fields {
        for (k, v) in extra {
            o.entry(k.clone()).or_insert(v.clone());
        }
    }
    if stream {
        o.insert("stream".into(), json!(true));
    }
    Ok(body)
}

fn usage_of(u: Option<&Value>) -> TokenUsage {
    let g = |k: &str| u.and_then(|u| u.get(k)).and_then(Value::as_u64);
    let mut t = TokenUsage::new(
        g("input_tokens").unwrap_or(0),
        g("output_tokens").unwrap_or(0),
    );
    t.cache_read_input_tokens = g("cache_read_input_tokens");
    t.cache_write_input_tokens = g("cache_creation_input_tokens");
    t.total_tokens = t.sum();
    t
}

/// Anthropic Messages response -> Converse response.
pub fn messages_to_converse(v: &Value, latency_ms: u64) -> ConverseResponse {
    let content = v
        .get("content")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|b| match b.get("type").and_then(Value::as_str) {
                    Some("text") => Some(obj(json!({"text": b.get("text")}))),
                    Some("tool_use") => Some(obj(json!({"toolUse": {"toolUseId": b.get("id"), "name": b.get("name"), "input": b.get("input")}}))),
                    Some("thinking") => Some(obj(json!({"reasoningContent": {"reasoningText": {"text": b.get("thinking"), "signature": b.get("signature")}}}))),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    ConverseResponse {
        message: Message {
            role: "assistant".into(),
            content,
        },
        stop_reason: v
            .get("stop_reason")
            .and_then(Value::as_str)
            .unwrap_or("end_turn")
            .to_string(),
        usage: usage_of(v.get("usage")),
        latency_ms,
        additional_model_response_fields: None,
    }
}

/// Anthropic stream events -> Converse stream events.
#[derive(Debug, Default)]
pub struct MessagesStreamReader {
    usage: TokenUsage,
    stop_reason: Option<String>,
}

impl MessagesStreamReader {
    /// Events for one Anthropic SSE payload.
    pub fn on_event(
        &mut self,
        v: &Value,
        latency_ms: u64,
    ) -> Result<Vec<StreamEvent>, ProviderError> {
        let idx = || v.get("index").and_then(Value::as_u64).unwrap_or(0) as u32;
        Ok(match v.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let u = usage_of(v.get("message").and_then(|m| m.get("usage")));
                self.usage.input_tokens = u.input_tokens;
                self.usage.cache_read_input_tokens = u.cache_read_input_tokens;
                self.usage.cache_write_input_tokens = u.cache_write_input_tokens;
                vec![StreamEvent::MessageStart {
                    role: "assistant".into(),
                }]
            }
            Some("content_block_start") => match v.get("content_block") {
                Some(b) if b.get("type").and_then(Value::as_str) == Some("tool_use") => {
                    vec![StreamEvent::ContentBlockStart {
                        index: idx(),
                        start: json!({"toolUse": {"toolUseId": b.get("id"), "name": b.get("name")}}),
                    }]
                }
                _ => vec![],
            },
            Some("content_block_delta") => {
                let d = v.get("delta");
                match d.and_then(|d| d.get("type")).and_then(Value::as_str) {
                    Some("text_delta") => vec![StreamEvent::ContentBlockDelta {
                        index: idx(),
                        delta: json!({"text": d.and_then(|d| d.get("text"))}),
                    }],
                    Some("input_json_delta") => vec![StreamEvent::ContentBlockDelta {
                        index: idx(),
                        delta: json!({"toolUse": {"input": d.and_then(|d| d.get("partial_json"))}}),
                    }],
                    Some("thinking_delta") => vec![StreamEvent::ContentBlockDelta {
                        index: idx(),
                        delta: json!({"reasoningContent": {"text": d.and_then(|d| d.get("thinking"))}}),
                    }],
                    _ => vec![],
                }
            }
            Some("content_block_stop") => vec![StreamEvent::ContentBlockStop { index: idx() }],
            Some("message_delta") => {
                if let Some(o) = v
                    .get("usage")
                    .and_then(|u| u.get("output_tokens"))
                    .and_then(Value::as_u64)
                {
                    self.usage.output_tokens = o;
                }
                self.stop_reason = v
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                vec![]
            }
            Some("message_stop") => {
                self.usage.total_tokens = self.usage.sum();
                vec![
                    StreamEvent::MessageStop {
                        stop_reason: self
                            .stop_reason
                            .clone()
                            .unwrap_or_else(|| "end_turn".into()),
                        additional_model_response_fields: None,
                    },
                    StreamEvent::Metadata {
                        usage: self.usage,
                        latency_ms,
                    },
                ]
            }
            Some("error") => {
                let msg = v
                    .get("error")
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("upstream stream error");
                let code = match v
                    .get("error")
                    .and_then(|e| e.get("type"))
                    .and_then(Value::as_str)
                {
                    Some("overloaded_error") | Some("rate_limit_error") => {
                        AwsErrorCode::ThrottlingException
                    }
                    _ => AwsErrorCode::ModelStreamErrorException,
                };
                return Err(ProviderError::new(code, msg));
            }
            _ => vec![], // ping and unknown events
        })
    }
}

fn transport_error(e: reqwest::Error) -> ProviderError {
    crate::http::transport_error(e, AwsErrorCode::ModelErrorException)
}

async fn upstream_failure(resp: reqwest::Response) -> ProviderError {
    let (status, msg) = crate::http::error_answer(resp).await;
    // Anthropic's 529 "overloaded" is a throttle in Bedrock terms.
    let status_for_map = if status == 529 { 429 } else { status };
    let mut e = ProviderError::from_upstream_status(
        status_for_map,
        format!("upstream answered {status}: {msg}"),
    );
    e.upstream_status = Some(status);
    e
}

/// Parsed SSE payloads of a streaming upstream response, as a stream of JSON values.
pub(crate) fn sse_json_stream(
    resp: reqwest::Response,
) -> futures::stream::BoxStream<'static, Result<Value, ProviderError>> {
    struct St {
        body: futures::stream::BoxStream<'static, Result<Bytes, reqwest::Error>>,
        sse: SseParser,
        queue: VecDeque<Result<Value, ProviderError>>,
        done: bool,
    }
    let st = St {
        body: resp.bytes_stream().boxed(),
        sse: SseParser::new(),
        queue: VecDeque::new(),
        done: false,
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(x) = st.queue.pop_front() {
                return Some((x, st));
            }
            if st.done {
                return None;
            }
            let evs = match st.body.next().await {
                Some(Ok(b)) => st.sse.push(&b),
                Some(Err(e)) => {
                    st.done = true;
                    let mut err = transport_error(e);
                    if err.code != AwsErrorCode::ModelTimeoutException {
                        err.code = AwsErrorCode::ModelStreamErrorException;
                    }
                    st.queue.push_back(Err(err));
                    continue;
                }
                None => {
                    st.done = true;
                    st.sse.finish().into_iter().collect()
                }
            };
            for ev in evs {
                if ev.data.trim() == "[DONE]" || ev.data.is_empty() {
                    continue;
                }
                st.queue
                    .push_back(serde_json::from_str(&ev.data).map_err(|_| {
                        ProviderError::new(
                            AwsErrorCode::ModelStreamErrorException,
                            "upstream sent a malformed stream event",
                        )
                    }));
            }
        }
    })
    .boxed()
}

impl AnthropicProvider {
    /// A provider for `base_url` (e.g. `https://api.anthropic.com`).
    pub fn new(
        base_url: &str,
        api_key: Option<String>,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        let client = crate::http::client(timeout)?;
        Ok(AnthropicProvider {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
            timeout,
        })
    }

    async fn send(&self, body: &Value, stream: bool) -> Result<reqwest::Response, ProviderError> {
        let mut rb = self
            .client
            .post(format!("{}/v1/messages", self.base_url))
            .header("anthropic-version", API_VERSION)
            .json(body);
        if let Some(k) = &self.api_key {
            rb = rb.header("x-api-key", k);
        }
        if !stream {
            rb = rb.timeout(self.timeout);
        }
        let resp = rb.send().await.map_err(transport_error)?;
        if !resp.status().is_success() {
            return Err(upstream_failure(resp).await);
        }
        Ok(resp)
    }

    fn native_body(model: &str, body: &Value, stream: bool) -> Result<Value, ProviderError> {
        let mut b = body.as_object().cloned().ok_or_else(|| {
            ProviderError::validation("Malformed input request: the body must be a JSON object")
        })?;
        b.remove("anthropic_version");
        b.insert("model".into(), json!(model));
        if stream {
            b.insert("stream".into(), json!(true));
        } else {
            b.remove("stream");
        }
        Ok(Value::Object(b))
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    fn kind(&self) -> &'static str {
        "anthropic"
    }

    async fn converse(
        &self,
        model: &str,
        req: &ConverseRequest,
    ) -> Result<ConverseResponse, ProviderError> {
        let body = converse_to_messages(model, req, false)?;
        let start = Instant::now();
        let v: Value = self
            .send(&body, false)
            .await?
            .json()
            .await
            .map_err(transport_error)?;
        Ok(messages_to_converse(&v, start.elapsed().as_millis() as u64))
    }

    async fn converse_stream(
        &self,
        model: &str,
        req: &ConverseRequest,
    ) -> Result<ConverseEventStream, ProviderError> {
        let body = converse_to_messages(model, req, true)?;
        let start = Instant::now();
        let events = sse_json_stream(self.send(&body, true).await?);
        let mut reader = MessagesStreamReader::default();
        let s = events
            .map(move |r| match r {
                Ok(v) => reader.on_event(&v, start.elapsed().as_millis() as u64),
                Err(e) => Err(e),
            })
            .flat_map(|r| {
                futures::stream::iter(match r {
                    Ok(evs) => evs.into_iter().map(Ok).collect::<Vec<_>>(),
                    Err(e) => vec![Err(e)],
                })
            });
        Ok(s.boxed())
    }

    async fn invoke(&self, model: &str, body: &Value) -> Result<InvokeResponse, ProviderError> {
        let b = Self::native_body(model, body, false)?;
        let resp = self.send(&b, false).await?;
        let bytes = resp.bytes().await.map_err(transport_error)?;
        let usage = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| crate::native::usage_from_response(&v));
        Ok(InvokeResponse {
            body: bytes,
            content_type: "application/json".into(),
            usage,
        })
    }

    async fn invoke_stream(&self, model: &str, body: &Value) -> Result<ChunkStream, ProviderError> {
        let b = Self::native_body(model, body, true)?;
        let start = Instant::now();
        let events = sse_json_stream(self.send(&b, true).await?);
        let mut seen: Vec<Value> = Vec::new();
        let mut first_byte: Option<u64> = None;
        let s = events.filter_map(move |r| {
            let out = match r {
                Err(e) => Some(Err(e)),
                Ok(v) if v.get("type").and_then(Value::as_str) == Some("ping") => None,
                Ok(v) if v.get("type").and_then(Value::as_str) == Some("error") => {
                    let msg = v.get("error").and_then(|e| e.get("message")).and_then(Value::as_str).unwrap_or("upstream stream error");
                    Some(Err(ProviderError::new(AwsErrorCode::ModelStreamErrorException, msg)))
                }
                Ok(mut v) => {
                    let fb = *first_byte.get_or_insert(start.elapsed().as_millis() as u64);
                    seen.push(v.clone());
                    if v.get("type").and_then(Value::as_str) == Some("message_stop") {
                        let u = usage_from_chunks(&seen).unwrap_or_default();
                        if let Some(o) = v.as_object_mut() {
                            o.insert("amazon-bedrock-invocationMetrics".into(), json!({
                                "inputTokenCount": u.input_tokens, "outputTokenCount": u.output_tokens,
                                "invocationLatency": start.elapsed().as_millis() as u64, "firstByteLatency": fb
                            }));
                        }
                    }
                    Some(Ok(Bytes::from(serde_json::to_vec(&v).unwrap_or_default())))
                }
            };
            futures::future::ready(out)
        });
        Ok(s.boxed())
    }

    async fn embed(
        &self,
        model: &str,
        _inputs: &[String],
        _dimensions: Option<u32>,
    ) -> Result<EmbedResponse, ProviderError> {
        Err(ProviderError::validation(format!(
            "{model} is routed to an Anthropic provider, which has no embeddings API"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converse_translates_to_messages_and_back() {
        let req: ConverseRequest = serde_json::from_value(json!({
            "messages": [
                {"role": "user", "content": [{"text": "weather?"}, {"cachePoint": {"type": "default"}}]},
                {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "wx", "input": {"city": "Oslo"}}}]},
                {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"json": {"temp": 3}}], "status": "error"}}]}
            ],
            "system": [{"text": "be brief"}],
            "inferenceConfig": {"temperature": 0.2, "stopSequences": ["END"]},
            "toolConfig": {"tools": [{"toolSpec": {"name": "wx", "inputSchema": {"json": {"type": "object"}}}}], "toolChoice": {"any": {}}}
        })).unwrap();
        let b = converse_to_messages("claude-x", &req, true).unwrap();
        assert_eq!(b["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(b["system"], "be brief");
        assert_eq!(
            b["messages"][0]["content"][0]["cache_control"]["type"],
            "ephemeral"
        );
        assert_eq!(b["messages"][1]["content"][0]["type"], "tool_use");
        assert_eq!(b["messages"][2]["content"][0]["is_error"], true);
        assert_eq!(b["tool_choice"], json!({"type": "any"}));
        assert_eq!(b["stream"], true);
        let r = messages_to_converse(
            &json!({"content": [{"type": "text", "text": "hi"}, {"type": "tool_use", "id": "t2", "name": "wx", "input": {}}], "stop_reason": "tool_use", "usage": {"input_tokens": 5, "output_tokens": 2, "cache_read_input_tokens": 1}}),
            7,
        );
        assert_eq!(r.stop_reason, "tool_use");
        assert_eq!(r.usage.cache_read_input_tokens, Some(1));
        assert_eq!(r.message.content[1]["toolUse"]["toolUseId"], "t2");
    }

    #[test]
    fn stream_events_translate() {
        let mut r = MessagesStreamReader::default();
        let mut all = Vec::new();
        for v in [
            json!({"type": "message_start", "message": {"usage": {"input_tokens": 9, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}}),
            json!({"type": "message_stop"}),
        ] {
            all.extend(r.on_event(&v, 3).unwrap());
        }
        assert!(
            matches!(all.last(), Some(StreamEvent::Metadata { usage, .. }) if usage.input_tokens == 9 && usage.output_tokens == 4 && usage.total_tokens == 13)
        );
        assert!(r
            .on_event(
                &json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}),
                1
            )
            .is_err());
    }
}
