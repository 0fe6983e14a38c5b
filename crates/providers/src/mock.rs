//! The built-in mock provider: answers any model id deterministically, with no network.
//!
//! Every answer says it is a mock (`[mock]` at the start of generated text, `mock:` in
//! native `model` fields) and records carry `logbook.mock = true`.
//!
//! Directives in the prompt text steer it, for tests and benchmarks:
//!
//! | directive | effect |
//! |---|---|
//! | `[mock:error=ThrottlingException]` | fail with that Bedrock exception |
//! | `[mock:delay_ms=N]` | wait N ms before answering |
//! | `[mock:output_chars=N]` | answer with about N characters |
//! | `[mock:chunks=N]` | stream the answer in N pieces |
//! | `[mock:chunk_delay_ms=N]` | wait N ms between streamed pieces |
//! | `[mock:fail_after_chunks=N]` | streams: fail with `ModelStreamErrorException` after N pieces |
//! | `[mock:tool=NAME]` | answer with a tool call to NAME (when tools are offered) |
//! | `[mock:cache_read=N]`, `[mock:cache_write=N]` | Converse: report N prompt-cache read / write tokens |
//! | `[mock:guardrail=intervene]` | Converse with a `guardrailConfig`: the guardrail blocks the input (`stopReason` `guardrail_intervened`, its blocked message, no output tokens); ignored without a guardrail, as there is none to intervene |

use crate::converse::{
    response_to_events, ConverseRequest, ConverseResponse, Message, StreamEvent, TokenUsage,
};
use crate::native::{self, estimate_tokens, Family};
use crate::{
    ChunkStream, ConverseEventStream, CountInput, EmbedResponse, InvokeResponse, Provider,
    ProviderError,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use logbook_wire::aws::AwsErrorCode;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// The mock provider.
#[derive(Debug, Clone, Default)]
pub struct MockProvider {
    /// Delay added to every call (simulated model latency).
    pub base_delay: Duration,
}

/// Parsed directives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Directives {
    /// Error to fail with.
    pub error: Option<AwsErrorCode>,
    /// Delay before answering.
    pub delay_ms: u64,
    /// Answer length.
    pub output_chars: Option<usize>,
    /// Number of stream pieces.
    pub chunks: Option<usize>,
    /// Delay between pieces.
    pub chunk_delay_ms: u64,
    /// Fail mid-stream after this many pieces.
    pub fail_after_chunks: Option<usize>,
    /// Tool to call.
    pub tool: Option<String>,
    /// Prompt-cache read tokens to report (Converse).
    pub cache_read: Option<u64>,
    /// Prompt-cache write tokens to report (Converse).
    pub cache_write: Option<u64>,
    /// The request's guardrail blocks it (Converse with a `guardrailConfig`).
    pub guardrail_intervenes: bool,
}

/// What a guardrail answers when it blocks a request (Bedrock's default blocked message).
pub const GUARDRAIL_BLOCKED: &str = "Sorry, the model cannot answer this question.";

/// Read `[mock:key=value]` directives from text.
pub fn directives(text: &str) -> Directives {
    let mut d = Directives::default();
    let mut rest = text;
    while let Some(i) = rest.find("[mock:") {
        rest = &rest[i + 6..];
        let Some(end) = rest.find(']') else { break };
        let body = &rest[..end];
        rest = &rest[end..];
        let Some((k, v)) = body.split_once('=') else {
            continue;
        };
        let n = v.trim().parse::<u64>().ok();
        match k.trim() {
            "error" => d.error = AwsErrorCode::parse(v.trim()),
            "delay_ms" => d.delay_ms = n.unwrap_or(0).min(600_000),
            "output_chars" => d.output_chars = n.map(|n| n.min(50_000_000) as usize),
            "chunks" => d.chunks = n.map(|n| n.clamp(1, 100_000) as usize),
            "chunk_delay_ms" => d.chunk_delay_ms = n.unwrap_or(0).min(60_000),
            "fail_after_chunks" => d.fail_after_chunks = n.map(|n| n as usize),
            "tool" => d.tool = Some(v.trim().to_string()),
            "cache_read" => d.cache_read = n.map(|n| n.min(10_000_000)),
            "cache_write" => d.cache_write = n.map(|n| n.min(10_000_000)),
            "guardrail" => d.guardrail_intervenes = v.trim() == "intervene",
            _ => {}
        }
    }
    d
}

fn seed(s: &str) -> u64 {
    let h = Sha256::digest(s.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    u64::from_le_bytes(b)
}

/// The mock's answer text for a model and prompt.
pub fn answer_text(model: &str, prompt: &str, d: &Directives) -> String {
    let echo: String = prompt
        .split_whitespace()
        .filter(|w| !w.starts_with("[mock:"))
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(120)
        .collect();
    let base = format!(
        "[mock] Logbook mock answer from {model} (not a real model; ref {:08x}). You said: {echo}",
        seed(prompt) as u32
    );
    match d.output_chars {
        Some(n) if n > base.len() => {
            let mut s = base;
            s.push(' ');
            let filler = "lorem ipsum dolor sit amet ";
            while s.len() < n {
                s.push_str(filler);
            }
            s.truncate(n);
            s
        }
        Some(n) => base.chars().take(n.max(1)).collect(),
        None => base,
    }
}

/// A deterministic unit vector for a text.
pub fn embedding(text: &str, dims: usize) -> Vec<f32> {
    let mut x = seed(text) | 1;
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect();
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    if norm > 0.0 {
        for a in &mut v {
            *a /= norm;
        }
    }
    v
}

impl MockProvider {
    async fn pause(&self, d: &Directives) -> Result<(), ProviderError> {
        let total = self.base_delay + Duration::from_millis(d.delay_ms);
        if !total.is_zero() {
            tokio::time::sleep(total).await;
        }
        match d.error {
            Some(code) => Err(ProviderError::new(
                code,
                format!("mock provider: simulated {}", code.as_str()),
            )),
            None => Ok(()),
        }
    }

    fn converse_answer(
        &self,
        model: &str,
        req: &ConverseRequest,
        d: &Directives,
    ) -> ConverseResponse {
        let prompt = req.last_user_text();
        let input_tokens = estimate_tokens(&req.all_text());
        if d.guardrail_intervenes && req.guardrail_config.is_some() {
            // The input is blocked before any model runs: the guardrail's message, no
            // output tokens.
            let mut m = Map::new();
            m.insert("text".into(), Value::String(GUARDRAIL_BLOCKED.into()));
            return ConverseResponse {
                message: Message {
                    role: "assistant".into(),
                    content: vec![m],
                },
                stop_reason: "guardrail_intervened".into(),
                usage: {
                    let mut u = TokenUsage::new(input_tokens, 0);
                    u.total_tokens = u.sum();
                    u
                },
                latency_ms: self.base_delay.as_millis() as u64 + d.delay_ms,
                additional_model_response_fields: None,
            };
        }
        let offered_tool = req
            .tool_config
            .as_ref()
            .and_then(|t| t.get("tools"))
            .and_then(Value::as_array)
            .and_then(|tools| {
                tools.iter().find_map(|t| {
                    let spec = t.get("toolSpec")?;
                    let name = spec.get("name")?.as_str()?;
                    let schema = spec.get("inputSchema").and_then(|s| s.get("json")).cloned();
                    (Some(name) == d.tool.as_deref()).then(|| (name.to_string(), schema))
                })
            });
        // After a tool result the mock answers in text.
        let had_result = req
            .messages
            .last()
            .is_some_and(|m| m.content.iter().any(|b| b.contains_key("toolResult")));
        let (content, stop) = match offered_tool {
            Some((name, schema)) if !had_result => {
                let mut m = Map::new();
                m.insert(
                    "toolUse".into(),
                    json!({"toolUseId": format!("tooluse_mock{:08x}", seed(&prompt) as u32), "name": name, "input": tool_input(schema.as_ref(), &prompt)}),
                );
                (vec![m], "tool_use")
            }
            _ => {
                let text = answer_text(model, &prompt, d);
                let mut m = Map::new();
                m.insert("text".into(), Value::String(text));
                (vec![m], "end_turn")
            }
        };
        let mut max = req
            .inference_config
            .as_ref()
            .and_then(|c| c.max_tokens)
            .map(u64::from);
        if d.output_chars.is_some() {
            max = None;
        }
        let mut content = content;
        let mut stop = stop.to_string();
        let mut output_tokens = estimate_tokens(
            content
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<String>()
                .as_str(),
        );
        if let (Some(max), Some(t)) = (max, content.first_mut()) {
            if output_tokens > max {
                if let Some(Value::String(s)) = t.get_mut("text") {
                    let keep = (max as usize) * 4;
                    *s = s.chars().take(keep).collect();
                    output_tokens = max;
                    stop = "max_tokens".into();
                }
            }
        }
        ConverseResponse {
            message: Message {
                role: "assistant".into(),
                content,
            },
            stop_reason: stop,
            usage: {
                let mut u = TokenUsage::new(input_tokens, output_tokens);
                u.cache_read_input_tokens = d.cache_read;
                u.cache_write_input_tokens = d.cache_write;
                u.total_tokens = u.sum();
                u
            },
            latency_ms: self.base_delay.as_millis() as u64 + d.delay_ms,
            additional_model_response_fields: None,
        }
    }
}

fn pieces(text: &str, d: &Directives) -> Vec<String> {
    let n = d.chunks.unwrap_or(4).max(1);
    let per = text.chars().count().div_ceil(n).max(1);
    crate::converse::split_chars(text, per)
}

fn paced<T: Send + 'static>(
    items: Vec<Result<T, ProviderError>>,
    delay_ms: u64,
) -> futures::stream::BoxStream<'static, Result<T, ProviderError>> {
    let s = futures::stream::iter(items);
    if delay_ms == 0 {
        s.boxed()
    } else {
        s.then(move |x| async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            x
        })
        .boxed()
    }
}

fn stream_error(after: usize) -> ProviderError {
    ProviderError::new(
        AwsErrorCode::ModelStreamErrorException,
        format!("mock provider: simulated stream failure after {after} chunks"),
    )
}

#[async_trait]
impl Provider for MockProvider {
    /// The mock counts as it reports usage, so CountTokens equals the `inputTokens` of
    /// the same request's answer.
    async fn count_tokens(&self, model: &str, input: &CountInput) -> Result<u64, ProviderError> {
        match input {
            CountInput::Converse(req) => {
                req.validate().map_err(ProviderError::validation)?;
                Ok(estimate_tokens(&req.all_text()))
            }
            CountInput::Invoke(body) => {
                let fam = native::family(model, body).ok_or_else(|| {
                    ProviderError::validation(format!(
                        "Malformed input request: the mock provider does not recognise this body for model {model}"
                    ))
                })?;
                native::validate(fam, body).map_err(ProviderError::validation)?;
                Ok(estimate_tokens(&native::prompt_text(body)))
            }
        }
    }

    fn kind(&self) -> &'static str {
        "mock"
    }

    fn is_mock(&self) -> bool {
        true
    }

    async fn converse(
        &self,
        model: &str,
        req: &ConverseRequest,
    ) -> Result<ConverseResponse, ProviderError> {
        let d = directives(&req.last_user_text());
        self.pause(&d).await?;
        Ok(self.converse_answer(model, req, &d))
    }

    async fn converse_stream(
        &self,
        model: &str,
        req: &ConverseRequest,
    ) -> Result<ConverseEventStream, ProviderError> {
        let d = directives(&req.last_user_text());
        self.pause(&d).await?;
        let resp = self.converse_answer(model, req, &d);
        let per = resp
            .text()
            .chars()
            .count()
            .div_ceil(d.chunks.unwrap_or(4).max(1));
        let mut events: Vec<Result<StreamEvent, ProviderError>> =
            response_to_events(&resp, per.max(1))
                .into_iter()
                .map(Ok)
                .collect();
        if let Some(n) = d.fail_after_chunks {
            events.truncate(n.min(events.len()));
            events.push(Err(stream_error(n)));
        }
        Ok(paced(events, d.chunk_delay_ms))
    }

    async fn invoke(&self, model: &str, body: &Value) -> Result<InvokeResponse, ProviderError> {
        let prompt = native::prompt_text(body);
        let d = directives(&prompt);
        self.pause(&d).await?;
        let fam = native::family(model, body).ok_or_else(|| {
            ProviderError::validation(format!(
                "Malformed input request: the mock provider does not recognise this body for model {model}; supported: Anthropic Messages, Titan text, Titan/Cohere embeddings, Llama-style prompt, Nova messages"
            ))
        })?;
        native::validate(fam, body).map_err(ProviderError::validation)?;
        let input_tokens = estimate_tokens(&prompt);
        let text = answer_text(model, &prompt, &d);
        let output_tokens = estimate_tokens(&text);
        let resp = match fam {
            Family::AnthropicMessages => {
                let (content, stop) = match anthropic_tool(body, &d) {
                    Some(t) => (
                        json!([{"type": "tool_use", "id": format!("toolu_mock{:016x}", seed(&prompt)),
                            "name": t["name"], "input": tool_input(t.get("input_schema"), &prompt)}]),
                        "tool_use",
                    ),
                    _ => (json!([{"type": "text", "text": text}]), "end_turn"),
                };
                json!({
                    "id": format!("msg_mock{:016x}", seed(&prompt)),
                    "type": "message",
                    "role": "assistant",
                    "model": format!("mock:{model}"),
                    "content": content,
                    "stop_reason": stop,
                    "stop_sequence": null,
                    "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}
                })
            }
            Family::TitanText => json!({
                "inputTextTokenCount": input_tokens,
                "results": [{"tokenCount": output_tokens, "outputText": text, "completionReason": "FINISH"}]
            }),
            Family::Prompt => json!({
                "generation": text,
                "prompt_token_count": input_tokens,
                "generation_token_count": output_tokens,
                "stop_reason": "stop"
            }),
            Family::Nova => json!({
                "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": input_tokens, "outputTokens": output_tokens, "totalTokens": input_tokens + output_tokens}
            }),
            Family::TitanEmbed => {
                let dims = body
                    .get("dimensions")
                    .and_then(Value::as_u64)
                    .unwrap_or(256)
                    .clamp(1, 8192) as usize;
                json!({
                    "embedding": embedding(&prompt, dims),
                    "inputTextTokenCount": input_tokens
                })
            }
            Family::CohereEmbed => {
                let texts: Vec<String> = body
                    .get("texts")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                json!({
                    "id": format!("mock-{:016x}", seed(&prompt)),
                    "response_type": "embeddings_floats",
                    "texts": texts,
                    "embeddings": texts.iter().map(|t| embedding(t, 256)).collect::<Vec<_>>()
                })
            }
        };
        let usage = match fam {
            Family::TitanEmbed | Family::CohereEmbed => Some(TokenUsage::new(input_tokens, 0)),
            _ => native::usage_from_response(&resp),
        };
        Ok(InvokeResponse {
            body: Bytes::from(serde_json::to_vec(&resp).unwrap_or_default()),
            content_type: "application/json".into(),
            usage,
        })
    }

    async fn invoke_stream(&self, model: &str, body: &Value) -> Result<ChunkStream, ProviderError> {
        let prompt = native::prompt_text(body);
        let d = directives(&prompt);
        self.pause(&d).await?;
        let fam = native::family(model, body).ok_or_else(|| {
            ProviderError::validation(format!(
                "Malformed input request: the mock provider does not recognise this body for model {model}"
            ))
        })?;
        native::validate(fam, body).map_err(ProviderError::validation)?;
        let input_tokens = estimate_tokens(&prompt);
        let text = answer_text(model, &prompt, &d);
        let output_tokens = estimate_tokens(&text);
        let metrics = json!({
            "inputTokenCount": input_tokens,
            "outputTokenCount": output_tokens,
            "invocationLatency": d.delay_ms + self.base_delay.as_millis() as u64,
            "firstByteLatency": d.delay_ms + self.base_delay.as_millis() as u64
        });
        let parts = pieces(&text, &d);
        let mut chunks: Vec<Value> = Vec::new();
        match fam {
            Family::AnthropicMessages => {
                chunks.push(json!({"type":"message_start","message":{"id": format!("msg_mock{:016x}", seed(&prompt)),"type":"message","role":"assistant","content":[],"model": format!("mock:{model}"),"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":input_tokens,"output_tokens":1}}}));
                let stop = match anthropic_tool(body, &d) {
                    // A tool call, streamed as Anthropic does: the input as JSON fragments.
                    Some(t) => {
                        let input = tool_input(t.get("input_schema"), &prompt).to_string();
                        chunks.push(json!({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id": format!("toolu_mock{:016x}", seed(&prompt)),"name": t["name"],"input":{}}}));
                        let cut = input
                            .char_indices()
                            .map(|(i, _)| i)
                            .nth(input.chars().count() / 2)
                            .unwrap_or(0);
                        for frag in [&input[..cut], &input[cut..]] {
                            chunks.push(json!({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":frag}}));
                        }
                        "tool_use"
                    }
                    None => {
                        chunks.push(json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}));
                        for p in &parts {
                            chunks.push(json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":p}}));
                        }
                        "end_turn"
                    }
                };
                chunks.push(json!({"type":"content_block_stop","index":0}));
                chunks.push(json!({"type":"message_delta","delta":{"stop_reason":stop,"stop_sequence":null},"usage":{"output_tokens":output_tokens}}));
                chunks.push(
                    json!({"type":"message_stop","amazon-bedrock-invocationMetrics": metrics}),
                );
            }
            Family::TitanText => {
                let n = parts.len();
                for (i, p) in parts.iter().enumerate() {
                    let last = i + 1 == n;
                    let mut c = json!({"outputText": p, "index": 0, "totalOutputTextTokenCount": if last { Value::from(output_tokens) } else { Value::Null }, "completionReason": if last { Value::from("FINISH") } else { Value::Null }, "inputTextTokenCount": if i == 0 { Value::from(input_tokens) } else { Value::Null }});
                    if last {
                        if let Some(o) = c.as_object_mut() {
                            o.insert("amazon-bedrock-invocationMetrics".into(), metrics.clone());
                        }
                    }
                    chunks.push(c);
                }
            }
            Family::Prompt => {
                let n = parts.len();
                for (i, p) in parts.iter().enumerate() {
                    let last = i + 1 == n;
                    let mut c = json!({"generation": p, "prompt_token_count": if i == 0 { Value::from(input_tokens) } else { Value::Null }, "generation_token_count": i + 1, "stop_reason": if last { Value::from("stop") } else { Value::Null }});
                    if last {
                        if let Some(o) = c.as_object_mut() {
                            o.insert("amazon-bedrock-invocationMetrics".into(), metrics.clone());
                        }
                    }
                    chunks.push(c);
                }
            }
            Family::Nova => {
                chunks.push(json!({"messageStart":{"role":"assistant"}}));
                for p in &parts {
                    chunks.push(
                        json!({"contentBlockDelta":{"delta":{"text":p},"contentBlockIndex":0}}),
                    );
                }
                chunks.push(json!({"contentBlockStop":{"contentBlockIndex":0}}));
                chunks.push(json!({"messageStop":{"stopReason":"end_turn"}}));
                chunks.push(json!({"metadata":{"usage":{"inputTokens":input_tokens,"outputTokens":output_tokens}},"amazon-bedrock-invocationMetrics": metrics}));
            }
            Family::TitanEmbed | Family::CohereEmbed => return Err(ProviderError::validation(
                "The model does not support streaming: embeddings models answer InvokeModel only",
            )),
        }
        let mut items: Vec<Result<Bytes, ProviderError>> = chunks
            .into_iter()
            .map(|c| Ok(Bytes::from(serde_json::to_vec(&c).unwrap_or_default())))
            .collect();
        if let Some(n) = d.fail_after_chunks {
            items.truncate(n.min(items.len()));
            items.push(Err(stream_error(n)));
        }
        Ok(paced(items, d.chunk_delay_ms))
    }

    async fn embed(
        &self,
        _model: &str,
        inputs: &[String],
        dimensions: Option<u32>,
    ) -> Result<EmbedResponse, ProviderError> {
        let all = inputs.join("\n");
        let d = directives(&all);
        self.pause(&d).await?;
        let dims = dimensions.unwrap_or(256).clamp(1, 8192) as usize;
        Ok(EmbedResponse {
            vectors: inputs.iter().map(|t| embedding(t, dims)).collect(),
            input_tokens: inputs.iter().map(|t| estimate_tokens(t)).sum(),
        })
    }
}

/// A tool call's input for the mock: a value that satisfies the tool's JSON schema (its
/// required and listed properties, types, enums, consts, bounds and minimum lengths), with
/// strings taken from the prompt, so structured-output helpers that validate the input
/// accept it. `{"query": prompt}` when there is no schema.
pub fn tool_input(schema: Option<&Value>, prompt: &str) -> Value {
    let hint: String = prompt.chars().take(40).collect();
    // The schema comes from the caller: arrays of arrays with large `minItems` would
    // multiply without bound, so the value has at most this many nodes.
    let mut budget = TOOL_INPUT_NODES;
    match schema {
        Some(s) if s.is_object() => instance(s, &hint, 0, &mut budget),
        _ => json!({ "query": hint }),
    }
}

/// Most nodes in a generated tool input.
const TOOL_INPUT_NODES: usize = 1_000;

/// A JSON value valid against `schema` (the common JSON Schema keywords; depth- and
/// size-bounded: past the bounds, `null`).
fn instance(schema: &Value, hint: &str, depth: u32, budget: &mut usize) -> Value {
    if depth > 8 || *budget == 0 {
        return Value::Null;
    }
    *budget -= 1;
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    for k in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema
            .get(k)
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            return instance(first, hint, depth + 1, budget);
        }
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        // A list of types: the first that is not null.
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match ty {
        "object" => {
            let mut out = Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    out.insert(k.clone(), instance(v, hint, depth + 1, budget));
                }
            }
            if let Some(req) = schema.get("required").and_then(Value::as_array) {
                for k in req.iter().filter_map(Value::as_str) {
                    out.entry(k.to_string())
                        .or_insert_with(|| Value::String(hint.to_string()));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let n = schema
                .get("minItems")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .clamp(1, 8);
            let item = schema
                .get("items")
                .cloned()
                .unwrap_or(json!({"type": "string"}));
            Value::Array(
                (0..n)
                    .map(|_| instance(&item, hint, depth + 1, budget))
                    .collect(),
            )
        }
        "integer" | "number" => {
            let min = schema
                .get("minimum")
                .and_then(Value::as_f64)
                .or_else(|| {
                    schema
                        .get("exclusiveMinimum")
                        .and_then(Value::as_f64)
                        .map(|m| m + 1.0)
                })
                .unwrap_or(1.0);
            let max = schema.get("maximum").and_then(Value::as_f64).or_else(|| {
                schema
                    .get("exclusiveMaximum")
                    .and_then(Value::as_f64)
                    .map(|m| m - 1.0)
            });
            let v = max.map_or(min, |m| min.min(m));
            if ty == "integer" {
                json!(v.ceil() as i64)
            } else {
                json!(v)
            }
        }
        "boolean" => Value::Bool(true),
        "null" => Value::Null,
        _ => {
            let mut t = if hint.is_empty() {
                "mock".to_string()
            } else {
                hint.to_string()
            };
            let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
            while t.chars().count() < min {
                t.push('x');
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
                t = t.chars().take(max as usize).collect();
            }
            Value::String(t)
        }
    }
}

/// `[mock:tool=NAME]` with NAME among an Anthropic body's tools, and no tool result last:
/// the tool to call (its input will satisfy the tool's `input_schema`).
fn anthropic_tool<'a>(body: &'a Value, d: &Directives) -> Option<&'a Value> {
    let last_is_result = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_array())
        .is_some_and(|c| c.iter().any(|b| b["type"] == "tool_result"));
    if last_is_result {
        return None;
    }
    body["tools"].as_array().and_then(|tools| {
        tools
            .iter()
            .find(|t| t["name"].as_str().is_some() && t["name"].as_str() == d.tool.as_deref())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn tool_inputs_satisfy_common_schema_forms() {
        let s = json!({"type": "object", "required": ["a", "b", "c", "d"], "properties": {
            "a": {"anyOf": [{"type": "integer", "exclusiveMinimum": 3}, {"type": "string"}]},
            "b": {"type": ["null", "string"], "maxLength": 3},
            "c": {"const": 7},
            "d": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "number", "maximum": -2}}}}
        }});
        let v = tool_input(Some(&s), "hello world");
        assert_eq!(v["a"], json!(4));
        assert_eq!(v["b"], json!("hel"));
        assert_eq!(v["c"], json!(7));
        assert_eq!(v["d"], json!([{"x": -2.0}]));
        assert_eq!(tool_input(None, "q"), json!({"query": "q"}));
        // Self-nesting schemas end (depth-bounded) instead of recursing forever.
        let deep = json!({"type": "object", "properties": {"n": {"type": "object", "properties": {"n": {"type": "object", "properties": {"n": {"type": "object", "properties": {"n": {"type": "object", "properties": {"n": {"type": "object", "properties": {"n": {"type": "object", "properties": {"n": {"type": "object", "properties": {"n": {"type": "object", "properties": {"n": {"type": "object"}}}}}}}}}}}}}}}}}}});
        assert!(tool_input(Some(&deep), "x").is_object());
        // Nested arrays that would multiply (8^8 values) stay within the node budget.
        let mut wide = json!({"type": "string"});
        for _ in 0..9 {
            wide = json!({"type": "array", "minItems": 8, "items": wide});
        }
        let v = tool_input(
            Some(&json!({"type": "object", "properties": {"w": wide}})),
            "x",
        );
        // Unbounded, it would be 8^9 strings (over 500 MB). Bounded: each of the budget's
        // nodes holds at most 8 children (`null` past the budget), a few bytes each.
        let len = serde_json::to_string(&v).unwrap().len();
        assert!(len < 50 * TOOL_INPUT_NODES, "{len}");
    }

    use super::*;

    #[test]
    fn directives_parse() {
        let d = directives("hi [mock:error=ThrottlingException] [mock:delay_ms=5] [mock:chunks=3] [mock:bogus] [mock:output_chars=x");
        assert_eq!(d.error, Some(AwsErrorCode::ThrottlingException));
        assert_eq!(d.delay_ms, 5);
        assert_eq!(d.chunks, Some(3));
    }

    #[test]
    fn a_guardrail_intervenes_only_when_there_is_one() {
        let mut req: ConverseRequest = serde_json::from_value(json!({
            "messages": [{"role": "user", "content": [{"text": "leak it [mock:guardrail=intervene]"}]}]
        }))
        .unwrap();
        let d = directives(&req.last_user_text());
        assert!(d.guardrail_intervenes);
        let m = MockProvider::default();
        let plain = m.converse_answer("m", &req, &d);
        assert_eq!(
            plain.stop_reason, "end_turn",
            "no guardrail, nothing to intervene"
        );
        req.guardrail_config = Some(json!({"guardrailIdentifier": "g1", "guardrailVersion": "1"}));
        let blocked = m.converse_answer("m", &req, &d);
        assert_eq!(blocked.stop_reason, "guardrail_intervened");
        assert_eq!(blocked.usage.output_tokens, 0);
        assert_eq!(blocked.message.content[0]["text"], GUARDRAIL_BLOCKED);
    }

    #[test]
    fn answers_are_deterministic_and_labelled() {
        let d = Directives::default();
        let a = answer_text("m", "hello", &d);
        assert_eq!(a, answer_text("m", "hello", &d));
        assert!(a.starts_with("[mock]"));
        let long = answer_text(
            "m",
            "x",
            &Directives {
                output_chars: Some(5000),
                ..Default::default()
            },
        );
        assert_eq!(long.len(), 5000);
        let v = embedding("x", 8);
        assert_eq!(v, embedding("x", 8));
        let n: f32 = v.iter().map(|a| a * a).sum();
        assert!((n - 1.0).abs() < 1e-4);
    }
}
