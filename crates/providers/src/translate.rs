//! OpenAI chat completions <-> Bedrock Converse, both directions, including streams,
//! system prompts, images (data URLs), tool calls, stop reasons and usage.
//!
//! Used twice: at the OpenAI front door (an OpenAI request served by any provider), and in
//! the OpenAI-compatible upstream (a Converse request served by an OpenAI-style server).

use crate::converse::{
    ConverseRequest, ConverseResponse, InferenceConfig, Message, StreamEvent, TokenUsage,
};
use base64::Engine;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// A request the translator refuses, naming the offending parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslateError {
    /// Request member at fault.
    pub param: Option<String>,
    /// What is wrong.
    pub message: String,
}

fn bad(param: &str, message: impl Into<String>) -> TranslateError {
    TranslateError {
        param: Some(param.to_string()),
        message: message.into(),
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Options of an OpenAI chat request that shape the answer rather than the model call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatOptions {
    /// `model`
    pub model: String,
    /// `stream`
    pub stream: bool,
    /// `stream_options.include_usage`
    pub include_usage: bool,
}

/// Stop reason, Converse -> OpenAI `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "content_filtered" | "guardrail_intervened" => "content_filter",
        _ => "stop",
    }
}

/// `finish_reason`, OpenAI -> Converse stop reason.
pub fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "content_filtered",
        _ => "end_turn",
    }
}

fn text_of(content: &Value, param: &str) -> Result<String, TranslateError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut s = String::new();
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => s.push_str(p.get("text").and_then(Value::as_str).unwrap_or("")),
                    _ => return Err(bad(param, "only text parts are supported here")),
                }
            }
            Ok(s)
        }
        Value::Null => Ok(String::new()),
        _ => Err(bad(param, "content must be a string or an array of parts")),
    }
}

fn image_block(url: &str, param: &str) -> Result<Map<String, Value>, TranslateError> {
    let rest = url.strip_prefix("data:").ok_or_else(|| {
        bad(
            param,
            "only data: URLs are supported for images (no fetching of remote URLs)",
        )
    })?;
    let (meta, data) = rest
        .split_once(',')
        .ok_or_else(|| bad(param, "malformed data URL"))?;
    let mime = meta
        .strip_suffix(";base64")
        .ok_or_else(|| bad(param, "data URL must be base64"))?;
    let format = match mime {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        other => return Err(bad(param, format!("unsupported image type {other}"))),
    };
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| bad(param, "image data is not valid base64"))?;
    Ok(obj(
        json!({"image": {"format": format, "source": {"bytes": data}}}),
    ))
}

fn user_blocks(content: &Value, param: &str) -> Result<Vec<Map<String, Value>>, TranslateError> {
    match content {
        Value::String(s) => Ok(vec![obj(json!({"text": s}))]),
        Value::Array(parts) => {
            let mut out = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                let pp = format!("{param}[{i}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => out.push(obj(
                        json!({"text": p.get("text").and_then(Value::as_str).unwrap_or("")}),
                    )),
                    Some("image_url") => {
                        let url = p
                            .get("image_url")
                            .and_then(|u| u.get("url"))
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad(&pp, "image_url.url is required"))?;
                        out.push(image_block(url, &pp)?);
                    }
                    other => {
                        return Err(bad(&pp, format!("unsupported content part type {other:?}")))
                    }
                }
            }
            Ok(out)
        }
        _ => Err(bad(param, "content must be a string or an array of parts")),
    }
}

/// Translate an OpenAI chat-completions request into a Converse request.
pub fn chat_to_converse(body: &Value) -> Result<(ConverseRequest, ChatOptions), TranslateError> {
    let b = body.as_object().ok_or_else(|| TranslateError {
        param: None,
        message: "request body must be a JSON object".into(),
    })?;
    let model = b
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("model", "you must provide a model parameter"))?
        .to_string();
    let messages = b
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("messages", "messages is required and must be an array"))?;
    if messages.is_empty() {
        return Err(bad(
            "messages",
            "messages must contain at least one message",
        ));
    }
    let mut system: Vec<Map<String, Value>> = Vec::new();
    let mut out: Vec<Message> = Vec::new();
    let push = |out: &mut Vec<Message>, role: &str, blocks: Vec<Map<String, Value>>| {
        if blocks.is_empty() {
            return;
        }
        match out.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => out.push(Message {
                role: role.to_string(),
                content: blocks,
            }),
        }
    };
    for (i, m) in messages.iter().enumerate() {
        let param = format!("messages[{i}]");
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&format!("{param}.role"), "role is required"))?;
        let content = m.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => {
                let t = text_of(content, &format!("{param}.content"))?;
                system.push(obj(json!({"text": t})));
            }
            "user" => {
                let blocks = user_blocks(content, &format!("{param}.content"))?;
                push(&mut out, "user", blocks);
            }
            "assistant" => {
                let mut blocks = Vec::new();
                let t = text_of(content, &format!("{param}.content"))?;
                if !t.is_empty() {
                    blocks.push(obj(json!({"text": t})));
                }
                if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                    for (j, c) in calls.iter().enumerate() {
                        let cp = format!("{param}.tool_calls[{j}]");
                        let id = c
                            .get("id")
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad(&cp, "id is required"))?;
                        let f = c
                            .get("function")
                            .ok_or_else(|| bad(&cp, "function is required"))?;
                        let name = f
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad(&cp, "function.name is required"))?;
                        let args = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
                        let input: Value = serde_json::from_str(args).map_err(|_| {
                            bad(
                                &format!("{cp}.function.arguments"),
                                "arguments must be a JSON string",
                            )
                        })?;
                        blocks.push(obj(
                            json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}),
                        ));
                    }
                }
                push(&mut out, "assistant", blocks);
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        bad(&format!("{param}.tool_call_id"), "tool_call_id is required")
                    })?;
                let t = text_of(content, &format!("{param}.content"))?;
                push(
                    &mut out,
                    "user",
                    vec![obj(
                        json!({"toolResult": {"toolUseId": id, "content": [{"text": t}]}}),
                    )],
                );
            }
            other => {
                return Err(bad(
                    &format!("{param}.role"),
                    format!("unsupported role {other:?}"),
                ))
            }
        }
    }
    let num = |k: &str| b.get(k).and_then(Value::as_f64);
    let max_tokens = b
        .get("max_completion_tokens")
        .or_else(|| b.get("max_tokens"))
        .and_then(Value::as_u64)
        .map(|n| n.min(u64::from(u32::MAX)) as u32);
    let stop = match b.get("stop") {
        Some(Value::String(s)) => Some(vec![s.clone()]),
        Some(Value::Array(a)) => Some(
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
        ),
        Some(Value::Null) | None => None,
        Some(_) => return Err(bad("stop", "stop must be a string or an array of strings")),
    };
    let inference_config = InferenceConfig {
        max_tokens,
        temperature: num("temperature"),
        top_p: num("top_p"),
        stop_sequences: stop,
    };
    let tool_config = match b.get("tools").and_then(Value::as_array) {
        Some(tools) if !tools.is_empty() => {
            let mut specs = Vec::new();
            for (i, t) in tools.iter().enumerate() {
                let f = t
                    .get("function")
                    .ok_or_else(|| bad(&format!("tools[{i}].function"), "function is required"))?;
                let name = f
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(&format!("tools[{i}].function.name"), "name is required"))?;
                let mut spec = json!({"name": name, "inputSchema": {"json": f.get("parameters").cloned().unwrap_or(json!({"type":"object","properties":{}}))}});
                if let (Some(d), Some(o)) = (f.get("description"), spec.as_object_mut()) {
                    o.insert("description".into(), d.clone());
                }
                specs.push(json!({"toolSpec": spec}));
            }
            let mut tc = json!({"tools": specs});
            let choice = match b.get("tool_choice") {
                Some(Value::String(s)) if s == "required" => Some(json!({"any": {}})),
                Some(Value::String(s)) if s == "auto" => Some(json!({"auto": {}})),
                Some(Value::Object(o)) => o
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .map(|n| json!({"tool": {"name": n}})),
                _ => None,
            };
            if let (Some(c), Some(o)) = (choice, tc.as_object_mut()) {
                o.insert("toolChoice".into(), c);
            }
            Some(tc)
        }
        _ => None,
    };
    let request_metadata = b.get("metadata").and_then(Value::as_object).map(|m| {
        m.iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
            .collect::<BTreeMap<_, _>>()
    });
    let req = ConverseRequest {
        messages: out,
        system: (!system.is_empty()).then_some(system),
        inference_config: Some(inference_config),
        tool_config,
        request_metadata: request_metadata.filter(|m| !m.is_empty()),
        ..Default::default()
    };
    let opts = ChatOptions {
        model,
        stream: b.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: b
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    Ok((req, opts))
}

/// Usage as OpenAI reports it: `prompt_tokens` counts every input token, cached ones
/// included, with the cached ones again in `prompt_tokens_details.cached_tokens`. Our
/// [`TokenUsage`] keeps the kinds apart (Bedrock's rule), so they are added back here.
fn openai_usage(u: &TokenUsage) -> Value {
    let cache_read = u.cache_read_input_tokens.unwrap_or(0);
    let prompt = u.input_tokens + cache_read + u.cache_write_input_tokens.unwrap_or(0);
    let mut v = json!({
        "prompt_tokens": prompt,
        "completion_tokens": u.output_tokens,
        "total_tokens": prompt + u.output_tokens,
    });
    if let (Some(c), Some(o)) = (u.cache_read_input_tokens, v.as_object_mut()) {
        o.insert("prompt_tokens_details".into(), json!({"cached_tokens": c}));
    }
    v
}

/// A Converse response as an OpenAI `chat.completion` object.
pub fn converse_to_chat_response(
    r: &ConverseResponse,
    model: &str,
    id: &str,
    created: i64,
) -> Value {
    let text: String = r.text();
    let calls: Vec<Value> = r
        .message
        .content
        .iter()
        .filter_map(|b| b.get("toolUse"))
        .map(|t| {
            json!({
                "id": t.get("toolUseId"),
                "type": "function",
                "function": {"name": t.get("name"), "arguments": t.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into())}
            })
        })
        .collect();
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }, "refusal": null});
    if !calls.is_empty() {
        if let Some(o) = message.as_object_mut() {
            o.insert("tool_calls".into(), Value::Array(calls));
        }
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(&r.stop_reason)}],
        "usage": openai_usage(&r.usage),
    })
}

/// Turns Converse stream events into OpenAI `chat.completion.chunk` objects.
#[derive(Debug)]
pub struct ChunkWriter {
    id: String,
    model: String,
    created: i64,
    include_usage: bool,
    /// Converse block index -> OpenAI tool call index.
    tools: BTreeMap<u32, usize>,
}

impl ChunkWriter {
    /// A writer for one response.
    pub fn new(id: &str, model: &str, created: i64, include_usage: bool) -> Self {
        ChunkWriter {
            id: id.into(),
            model: model.into(),
            created,
            include_usage,
            tools: BTreeMap::new(),
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        })
    }

    /// Chunks for one event (possibly none).
    pub fn on_event(&mut self, ev: &StreamEvent) -> Vec<Value> {
        match ev {
            StreamEvent::MessageStart { .. } => {
                vec![self.chunk(json!({"role": "assistant", "content": ""}), None)]
            }
            StreamEvent::ContentBlockStart { index, start } => match start.get("toolUse") {
                Some(t) => {
                    let n = self.tools.len();
                    self.tools.insert(*index, n);
                    vec![self.chunk(json!({"tool_calls": [{"index": n, "id": t.get("toolUseId"), "type": "function", "function": {"name": t.get("name"), "arguments": ""}}]}), None)]
                }
                None => vec![],
            },
            StreamEvent::ContentBlockDelta { index, delta } => {
                if let Some(t) = delta.get("text").and_then(Value::as_str) {
                    vec![self.chunk(json!({"content": t}), None)]
                } else if let Some(input) = delta
                    .get("toolUse")
                    .and_then(|t| t.get("input"))
                    .and_then(Value::as_str)
                {
                    let n = self.tools.get(index).copied().unwrap_or(0);
                    vec![self.chunk(
                        json!({"tool_calls": [{"index": n, "function": {"arguments": input}}]}),
                        None,
                    )]
                } else {
                    vec![]
                }
            }
            StreamEvent::ContentBlockStop { .. } => vec![],
            StreamEvent::MessageStop { stop_reason, .. } => {
                vec![self.chunk(json!({}), Some(finish_reason(stop_reason)))]
            }
            StreamEvent::Metadata { usage, .. } => {
                if self.include_usage {
                    vec![
                        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model, "choices": [], "usage": openai_usage(usage)}),
                    ]
                } else {
                    vec![]
                }
            }
        }
    }
}

// ---- Converse -> OpenAI (for OpenAI-compatible upstreams) ----

fn block_text(b: &Map<String, Value>) -> Option<&str> {
    b.get("text").and_then(Value::as_str)
}

/// Translate a Converse request into an OpenAI chat-completions body for `model`.
pub fn converse_to_chat(
    model: &str,
    req: &ConverseRequest,
    stream: bool,
) -> Result<Value, TranslateError> {
    let mut messages = Vec::new();
    let sys: Vec<&str> = req.system.iter().flatten().filter_map(block_text).collect();
    if !sys.is_empty() {
        messages.push(json!({"role": "system", "content": sys.join("\n")}));
    }
    for (i, m) in req.messages.iter().enumerate() {
        if m.role == "assistant" {
            let text: String = m.content.iter().filter_map(block_text).collect();
            let calls: Vec<Value> = m
                .content
                .iter()
                .filter_map(|b| b.get("toolUse"))
                .map(|t| json!({"id": t.get("toolUseId"), "type": "function", "function": {"name": t.get("name"), "arguments": t.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into())}}))
                .collect();
            let mut msg = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::String(text) }});
            if !calls.is_empty() {
                if let Some(o) = msg.as_object_mut() {
                    o.insert("tool_calls".into(), Value::Array(calls));
                }
            }
            messages.push(msg);
            continue;
        }
        let mut parts = Vec::new();
        for (j, b) in m.content.iter().enumerate() {
            if let Some(t) = block_text(b) {
                parts.push(json!({"type": "text", "text": t}));
            } else if let Some(img) = b.get("image") {
                let format = img.get("format").and_then(Value::as_str).unwrap_or("png");
                let data = img
                    .get("source")
                    .and_then(|s| s.get("bytes"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        bad(
                            &format!("messages.{i}.content.{j}.image.source"),
                            "only inline image bytes can be sent to this provider",
                        )
                    })?;
                parts.push(json!({"type": "image_url", "image_url": {"url": format!("data:image/{format};base64,{data}")}}));
            } else if let Some(tr) = b.get("toolResult") {
                let text: String = tr
                    .get("content")
                    .and_then(Value::as_array)
                    .map(|c| {
                        c.iter()
                            .map(|x| match (x.get("text"), x.get("json")) {
                                (Some(Value::String(t)), _) => t.clone(),
                                (_, Some(j)) => j.to_string(),
                                _ => String::new(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                messages.push(
                    json!({"role": "tool", "tool_call_id": tr.get("toolUseId"), "content": text}),
                );
            } else if b.contains_key("cachePoint") {
                // No OpenAI equivalent; prompt caching is automatic there.
            } else {
                let kind = b.keys().next().cloned().unwrap_or_default();
                return Err(bad(
                    &format!("messages.{i}.content.{j}"),
                    format!(
                        "content block {kind:?} cannot be sent to an OpenAI-compatible provider"
                    ),
                ));
            }
        }
        if !parts.is_empty() {
            let content = if parts.len() == 1 && parts[0].get("type") == Some(&json!("text")) {
                parts[0].get("text").cloned().unwrap_or(Value::Null)
            } else {
                Value::Array(parts)
            };
            messages.push(json!({"role": "user", "content": content}));
        }
    }
    let mut body = json!({"model": model, "messages": messages});
    let o = body
        .as_object_mut()
        .ok_or_else(|| bad("body", "internal"))?;
    if let Some(ic) = &req.inference_config {
        if let Some(n) = ic.max_tokens {
            o.insert("max_tokens".into(), json!(n));
        }
        if let Some(t) = ic.temperature {
            o.insert("temperature".into(), json!(t));
        }
        if let Some(t) = ic.top_p {
            o.insert("top_p".into(), json!(t));
        }
        if let Some(s) = &ic.stop_sequences {
            if !s.is_empty() {
                o.insert("stop".into(), json!(s));
            }
        }
    }
    if let Some(tc) = &req.tool_config {
        let tools: Vec<Value> = tc
            .get("tools")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.get("toolSpec"))
                    .map(|s| json!({"type": "function", "function": {"name": s.get("name"), "description": s.get("description"), "parameters": s.get("inputSchema").and_then(|i| i.get("json"))}}))
                    .collect()
            })
            .unwrap_or_default();
        if !tools.is_empty() {
            o.insert("tools".into(), Value::Array(tools));
        }
        if let Some(c) = tc.get("toolChoice") {
            let choice = if c.get("any").is_some() {
                json!("required")
            } else if let Some(n) = c.get("tool").and_then(|t| t.get("name")) {
                json!({"type": "function", "function": {"name": n}})
            } else {
                json!("auto")
            };
            o.insert("tool_choice".into(), choice);
        }
    }
    if stream {
        o.insert("stream".into(), json!(true));
        o.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(body)
}

/// OpenAI's usage in our terms: its `prompt_tokens` include the cached tokens, which we
/// count apart, so `input_tokens` is the uncached part (what the input price applies to).
fn usage_from_openai(u: Option<&Value>) -> TokenUsage {
    let g = |k: &str| {
        u.and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let cached = u
        .and_then(|u| u.get("prompt_tokens_details"))
        .and_then(|d| d.get("cached_tokens"))
        .and_then(Value::as_u64);
    let prompt = g("prompt_tokens");
    let mut t = TokenUsage::new(
        prompt.saturating_sub(cached.unwrap_or(0)),
        g("completion_tokens"),
    );
    t.cache_read_input_tokens = cached.map(|c| c.min(prompt));
    t.total_tokens = prompt + t.output_tokens;
    t
}

/// Translate an OpenAI `chat.completion` body into a Converse response.
pub fn chat_response_to_converse(
    body: &Value,
    latency_ms: u64,
) -> Result<ConverseResponse, TranslateError> {
    let choice = body
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| bad("choices", "upstream answer has no choices"))?;
    let msg = choice
        .get("message")
        .ok_or_else(|| bad("choices[0].message", "missing"))?;
    let mut content = Vec::new();
    if let Some(t) = msg.get("content").and_then(Value::as_str) {
        if !t.is_empty() {
            content.push(obj(json!({"text": t})));
        }
    }
    if let Some(calls) = msg.get("tool_calls").and_then(Value::as_array) {
        for c in calls {
            let f = c.get("function");
            let args = f
                .and_then(|f| f.get("arguments"))
                .and_then(Value::as_str)
                .unwrap_or("{}");
            let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({"_raw": args}));
            content.push(obj(json!({"toolUse": {"toolUseId": c.get("id"), "name": f.and_then(|f| f.get("name")), "input": input}})));
        }
    }
    if content.is_empty() {
        content.push(obj(json!({"text": ""})));
    }
    Ok(ConverseResponse {
        message: Message {
            role: "assistant".into(),
            content,
        },
        stop_reason: stop_reason(
            choice
                .get("finish_reason")
                .and_then(Value::as_str)
                .unwrap_or("stop"),
        )
        .into(),
        usage: usage_from_openai(body.get("usage")),
        latency_ms,
        additional_model_response_fields: None,
    })
}

/// Turns OpenAI stream chunks into Converse stream events.
#[derive(Debug, Default)]
pub struct ChunkReader {
    started: bool,
    text_open: bool,
    /// OpenAI tool call index -> Converse block index.
    tools: BTreeMap<u64, u32>,
    next_block: u32,
    finish: Option<String>,
    usage: Option<TokenUsage>,
}

impl ChunkReader {
    /// A fresh reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Events for one chunk.
    pub fn on_chunk(&mut self, chunk: &Value) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            out.push(StreamEvent::MessageStart {
                role: "assistant".into(),
            });
        }
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(usage_from_openai(Some(u)));
        }
        let Some(choice) = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        else {
            return out;
        };
        if let Some(delta) = choice.get("delta") {
            if let Some(t) = delta.get("content").and_then(Value::as_str) {
                if !t.is_empty() {
                    if !self.text_open {
                        self.text_open = true;
                        self.next_block = self.next_block.max(1);
                    }
                    out.push(StreamEvent::ContentBlockDelta {
                        index: 0,
                        delta: json!({"text": t}),
                    });
                }
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for c in calls {
                    let oi = c.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let block = match self.tools.get(&oi) {
                        Some(b) => *b,
                        None => {
                            let b = self.next_block.max(if self.text_open { 1 } else { 0 });
                            self.next_block = b + 1;
                            self.tools.insert(oi, b);
                            let f = c.get("function");
                            out.push(StreamEvent::ContentBlockStart {
                                index: b,
                                start: json!({"toolUse": {"toolUseId": c.get("id"), "name": f.and_then(|f| f.get("name"))}}),
                            });
                            b
                        }
                    };
                    if let Some(a) = c
                        .get("function")
                        .and_then(|f| f.get("arguments"))
                        .and_then(Value::as_str)
                    {
                        if !a.is_empty() {
                            out.push(StreamEvent::ContentBlockDelta {
                                index: block,
                                delta: json!({"toolUse": {"input": a}}),
                            });
                        }
                    }
                }
            }
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(f.to_string());
        }
        out
    }

    /// Closing events once the upstream stream ended.
    pub fn finish(&mut self, latency_ms: u64) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        if !self.started {
            out.push(StreamEvent::MessageStart {
                role: "assistant".into(),
            });
        }
        if self.text_open {
            out.push(StreamEvent::ContentBlockStop { index: 0 });
        }
        for b in self.tools.values() {
            out.push(StreamEvent::ContentBlockStop { index: *b });
        }
        out.push(StreamEvent::MessageStop {
            stop_reason: stop_reason(self.finish.as_deref().unwrap_or("stop")).into(),
            additional_model_response_fields: None,
        });
        out.push(StreamEvent::Metadata {
            usage: self.usage.unwrap_or_default(),
            latency_ms,
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::converse::{response_to_events, Assembler};

    #[test]
    fn chat_request_translates_roles_tools_and_params() {
        let body = json!({
            "model": "gpt-x",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "weather?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "wx", "arguments": "{\"city\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
            ],
            "max_tokens": 50, "temperature": 0.5, "stop": "END",
            "tools": [{"type": "function", "function": {"name": "wx", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
            "stream": true, "stream_options": {"include_usage": true}
        });
        let (req, opts) = chat_to_converse(&body).unwrap();
        assert!(opts.stream && opts.include_usage);
        assert_eq!(req.system.as_ref().unwrap()[0]["text"], "be brief");
        assert_eq!(req.messages.len(), 3);
        assert_eq!(req.messages[0].content[1]["image"]["format"], "png");
        assert_eq!(
            req.messages[1].content[0]["toolUse"]["input"]["city"],
            "Oslo"
        );
        assert_eq!(req.messages[2].content[0]["toolResult"]["toolUseId"], "c1");
        let ic = req.inference_config.as_ref().unwrap();
        assert_eq!(ic.max_tokens, Some(50));
        assert_eq!(ic.stop_sequences.as_deref(), Some(&["END".to_string()][..]));
        assert_eq!(
            req.tool_config.as_ref().unwrap()["toolChoice"],
            json!({"any": {}})
        );
        // And back to OpenAI for an upstream.
        let back = converse_to_chat("up", &req, false).unwrap();
        assert_eq!(back["messages"][0]["role"], "system");
        assert_eq!(
            back["messages"][2]["tool_calls"][0]["function"]["name"],
            "wx"
        );
        assert_eq!(back["messages"][3]["role"], "tool");
        assert_eq!(back["tool_choice"], "required");
    }

    #[test]
    fn rejects_bad_requests_with_param() {
        assert_eq!(
            chat_to_converse(&json!({"messages": []}))
                .unwrap_err()
                .param
                .as_deref(),
            Some("model")
        );
        assert_eq!(
            chat_to_converse(&json!({"model": "m", "messages": "x"}))
                .unwrap_err()
                .param
                .as_deref(),
            Some("messages")
        );
        let e = chat_to_converse(&json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0]"));
    }

    #[test]
    fn openai_cached_tokens_are_counted_apart_from_input_and_added_back() {
        // OpenAI: prompt_tokens (100) include cached_tokens (80).
        let u = usage_from_openai(Some(
            &json!({"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107, "prompt_tokens_details": {"cached_tokens": 80}}),
        ));
        assert_eq!(
            (
                u.input_tokens,
                u.cache_read_input_tokens,
                u.output_tokens,
                u.total_tokens
            ),
            (20, Some(80), 7, 107)
        );
        let back = openai_usage(&u);
        assert_eq!(back["prompt_tokens"], 100);
        assert_eq!(back["prompt_tokens_details"]["cached_tokens"], 80);
        assert_eq!(back["total_tokens"], 107);
        // A Converse usage with a cache write: OpenAI's prompt_tokens count it too.
        let mut c = TokenUsage::new(3, 4);
        c.cache_read_input_tokens = Some(10);
        c.cache_write_input_tokens = Some(5);
        assert_eq!(openai_usage(&c)["prompt_tokens"], 18);
        assert_eq!(openai_usage(&c)["total_tokens"], 22);
        // Nonsense (cached > prompt) never underflows.
        let u = usage_from_openai(Some(
            &json!({"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 9}}),
        ));
        assert_eq!((u.input_tokens, u.cache_read_input_tokens), (0, Some(5)));
    }

    #[test]
    fn streams_translate_both_ways_and_reassemble() {
        let resp = chat_response_to_converse(&json!({
            "choices": [{"message": {"role": "assistant", "content": "Hi there", "tool_calls": [{"id": "c9", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
        }), 3).unwrap();
        assert_eq!(resp.stop_reason, "tool_use");
        // Converse events -> OpenAI chunks -> Converse events -> assembled == original.
        let mut w = ChunkWriter::new("id", "m", 0, true);
        let mut r = ChunkReader::new();
        let mut a = Assembler::new();
        for ev in response_to_events(&resp, 3) {
            for c in w.on_event(&ev) {
                for e in r.on_chunk(&c) {
                    a.push(&e);
                }
            }
        }
        for e in r.finish(3) {
            a.push(&e);
        }
        let got = a.finish();
        assert_eq!(got.text(), "Hi there");
        assert_eq!(got.stop_reason, "tool_use");
        assert_eq!(got.usage, TokenUsage::new(5, 7));
        assert_eq!(got.message.content[1]["toolUse"]["input"], json!({"a": 1}));
        let chat = converse_to_chat_response(&got, "m", "id", 0);
        assert_eq!(chat["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chat["usage"]["total_tokens"], 12);
    }
}
