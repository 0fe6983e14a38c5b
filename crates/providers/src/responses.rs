//! The OpenAI Responses API (`POST /v1/responses`), on the chat translation: a Responses
//! request becomes a Chat Completions request (then Converse, as every OpenAI call does),
//! and the answer, a chat completion, becomes a `response` object. Streams are written
//! from Converse stream events as Responses events (`response.created`,
//! `response.output_item.added`, `response.output_text.delta`, ...,
//! `response.completed`), each with its `sequence_number`.
//!
//! Logbook keeps no conversation state: `previous_response_id` and `conversation` are
//! refused with a precise error (the record of every call is in the logs, but a response
//! id is not a handle to continue from). Built-in tools (web search, file search, code
//! interpreter, ...) are refused; function tools are served.

use crate::converse::StreamEvent;
use crate::translate::TranslateError;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

fn bad(param: &str, message: impl Into<String>) -> TranslateError {
    TranslateError {
        param: Some(param.to_string()),
        message: message.into(),
    }
}

/// Parts of a Responses message content as chat content parts.
fn parts(content: &Value, param: &str) -> Result<Value, TranslateError> {
    match content {
        Value::String(s) => Ok(Value::String(s.clone())),
        Value::Array(a) => {
            let mut out = Vec::new();
            for (i, p) in a.iter().enumerate() {
                let t = p.get("type").and_then(Value::as_str).unwrap_or("");
                match t {
                    "input_text" | "output_text" | "text" => out.push(
                        json!({"type": "text", "text": p.get("text").and_then(Value::as_str).unwrap_or("")}),
                    ),
                    "input_image" => {
                        let url = p
                            .get("image_url")
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad(&format!("{param}[{i}].image_url"), "input_image needs an image_url (a data: URL or https URL); file_id is not supported"))?;
                        out.push(json!({"type": "image_url", "image_url": {"url": url}}));
                    }
                    "refusal" => out.push(
                        json!({"type": "text", "text": p.get("refusal").and_then(Value::as_str).unwrap_or("")}),
                    ),
                    other => {
                        return Err(bad(
                            &format!("{param}[{i}].type"),
                            format!("content part type {other:?} is not supported (input_text, input_image, output_text)"),
                        ))
                    }
                }
            }
            Ok(Value::Array(out))
        }
        _ => Err(bad(
            param,
            "content must be a string or a list of content parts",
        )),
    }
}

/// A Responses request as a Chat Completions request.
pub fn responses_to_chat(body: &Value) -> Result<Value, TranslateError> {
    let b = body.as_object().ok_or_else(|| TranslateError {
        param: None,
        message: "request body must be a JSON object".into(),
    })?;
    for (k, why) in [
        (
            "previous_response_id",
            "Logbook keeps no response state: send the whole conversation in input",
        ),
        (
            "conversation",
            "Logbook keeps no conversation state: send the whole conversation in input",
        ),
        ("background", "background responses are not supported"),
        ("prompt", "stored prompts are not supported"),
    ] {
        if b.get(k)
            .is_some_and(|v| !v.is_null() && v != &Value::Bool(false))
        {
            return Err(bad(k, why));
        }
    }
    let model = b
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("model", "you must provide a model parameter"))?;
    let mut messages: Vec<Value> = Vec::new();
    if let Some(i) = b.get("instructions").and_then(Value::as_str) {
        messages.push(json!({"role": "system", "content": i}));
    }
    match b.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let param = format!("input[{i}]");
                let t = item
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("message");
                match t {
                    "message" => {
                        let role = item
                            .get("role")
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad(&format!("{param}.role"), "role is required"))?;
                        let role = match role {
                            "user" | "assistant" | "system" => role,
                            "developer" => "system",
                            other => {
                                return Err(bad(
                                    &format!("{param}.role"),
                                    format!("role {other:?}: expected user, assistant, system or developer"),
                                ))
                            }
                        };
                        let content = parts(
                            item.get("content").unwrap_or(&Value::Null),
                            &format!("{param}.content"),
                        )?;
                        messages.push(json!({"role": role, "content": content}));
                    }
                    "function_call" => {
                        let call = json!({
                            "id": item.get("call_id").and_then(Value::as_str).ok_or_else(|| bad(&format!("{param}.call_id"), "call_id is required"))?,
                            "type": "function",
                            "function": {
                                "name": item.get("name").and_then(Value::as_str).ok_or_else(|| bad(&format!("{param}.name"), "name is required"))?,
                                "arguments": item.get("arguments").and_then(Value::as_str).unwrap_or("{}"),
                            }
                        });
                        // Consecutive calls are one assistant turn.
                        match messages.last_mut() {
                            Some(m)
                                if m["role"] == "assistant"
                                    && m.get("tool_calls").is_some() =>
                            {
                                if let Some(a) = m["tool_calls"].as_array_mut() {
                                    a.push(call);
                                }
                            }
                            _ => messages.push(
                                json!({"role": "assistant", "content": null, "tool_calls": [call]}),
                            ),
                        }
                    }
                    "function_call_output" => {
                        let output = match item.get("output") {
                            Some(Value::String(s)) => s.clone(),
                            Some(other) => other.to_string(),
                            None => String::new(),
                        };
                        messages.push(json!({
                            "role": "tool",
                            "tool_call_id": item.get("call_id").and_then(Value::as_str).ok_or_else(|| bad(&format!("{param}.call_id"), "call_id is required"))?,
                            "content": output,
                        }));
                    }
                    "reasoning" => {} // nothing to pass on
                    other => {
                        return Err(bad(
                            &format!("{param}.type"),
                            format!("input item type {other:?} is not supported (message, function_call, function_call_output)"),
                        ))
                    }
                }
            }
        }
        Some(_) => return Err(bad("input", "input must be a string or a list of items")),
        None => return Err(bad("input", "input is required")),
    }
    if messages.iter().all(|m| m["role"] == "system") {
        return Err(bad("input", "input must hold at least one message"));
    }
    let mut chat = Map::new();
    chat.insert("model".into(), json!(model));
    chat.insert("messages".into(), Value::Array(messages));
    for (from, to) in [
        ("max_output_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("metadata", "metadata"),
        ("user", "user"),
        ("parallel_tool_calls", "parallel_tool_calls"),
    ] {
        if let Some(v) = b.get(from).filter(|v| !v.is_null()) {
            chat.insert(to.into(), v.clone());
        }
    }
    if let Some(tools) = b.get("tools").and_then(Value::as_array) {
        let mut out = Vec::new();
        for (i, t) in tools.iter().enumerate() {
            match t.get("type").and_then(Value::as_str) {
                Some("function") => out.push(json!({"type": "function", "function": {
                    "name": t.get("name"),
                    "description": t.get("description").cloned().unwrap_or(Value::Null),
                    "parameters": t.get("parameters").cloned().unwrap_or(json!({"type": "object"})),
                }})),
                other => {
                    return Err(bad(
                        &format!("tools[{i}].type"),
                        format!(
                            "tool type {:?} is not supported: only function tools",
                            other.unwrap_or("")
                        ),
                    ))
                }
            }
        }
        if !out.is_empty() {
            chat.insert("tools".into(), Value::Array(out));
        }
    }
    match b.get("tool_choice") {
        Some(Value::String(s)) => {
            chat.insert("tool_choice".into(), json!(s));
        }
        Some(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("function") => {
            chat.insert(
                "tool_choice".into(),
                json!({"type": "function", "function": {"name": o.get("name")}}),
            );
        }
        _ => {}
    }
    if let Some(f) = b.get("text").and_then(|t| t.get("format")) {
        match f.get("type").and_then(Value::as_str) {
            Some("json_schema") => {
                chat.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": {"name": f.get("name"), "schema": f.get("schema"), "strict": f.get("strict")}}),
                );
            }
            Some("json_object") => {
                chat.insert("response_format".into(), json!({"type": "json_object"}));
            }
            _ => {}
        }
    }
    if b.get("stream").and_then(Value::as_bool) == Some(true) {
        chat.insert("stream".into(), json!(true));
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(chat))
}

/// The request members a `response` object echoes.
fn echo(req: &Value, o: &mut Map<String, Value>) {
    for (k, default) in [
        ("instructions", Value::Null),
        ("max_output_tokens", Value::Null),
        ("metadata", json!({})),
        ("parallel_tool_calls", json!(true)),
        ("temperature", json!(1.0)),
        ("tool_choice", json!("auto")),
        ("tools", json!([])),
        ("top_p", json!(1.0)),
        ("user", Value::Null),
    ] {
        o.insert(
            k.into(),
            req.get(k)
                .filter(|v| !v.is_null())
                .cloned()
                .unwrap_or(default),
        );
    }
    o.insert("previous_response_id".into(), Value::Null);
    o.insert("reasoning".into(), json!({"effort": null, "summary": null}));
    o.insert("store".into(), json!(false));
    o.insert(
        "text".into(),
        req.get("text")
            .cloned()
            .unwrap_or(json!({"format": {"type": "text"}})),
    );
    o.insert("truncation".into(), json!("disabled"));
}

/// Chat usage as Responses usage.
fn usage(chat_usage: Option<&Value>) -> Value {
    let n = |k: &str| {
        chat_usage
            .and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let cached = chat_usage
        .and_then(|u| u.pointer("/prompt_tokens_details/cached_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    json!({
        "input_tokens": n("prompt_tokens"),
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": n("completion_tokens"),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": n("total_tokens"),
    })
}

/// A chat completion (from `converse_to_chat_response`) as a `response` object.
pub fn chat_to_response(chat: &Value, id: &str, created: i64, req: &Value) -> Value {
    let choice = chat.pointer("/choices/0");
    let message = choice.and_then(|c| c.get("message"));
    let mut output = Vec::new();
    if let Some(text) = message
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        output.push(json!({
            "type": "message", "id": format!("msg_{id}"), "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }));
    }
    if let Some(calls) = message
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
    {
        for (i, c) in calls.iter().enumerate() {
            output.push(json!({
                "type": "function_call", "id": format!("fc_{id}_{i}"),
                "call_id": c.get("id"), "name": c.pointer("/function/name"),
                "arguments": c.pointer("/function/arguments").cloned().unwrap_or(json!("{}")),
                "status": "completed",
            }));
        }
    }
    let finish = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str)
        .unwrap_or("stop");
    let (status, incomplete) = match finish {
        "length" => ("incomplete", json!({"reason": "max_output_tokens"})),
        "content_filter" => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    };
    let mut o = Map::new();
    o.insert("id".into(), json!(format!("resp_{id}")));
    o.insert("object".into(), json!("response"));
    o.insert("created_at".into(), json!(created));
    o.insert("status".into(), json!(status));
    o.insert("error".into(), Value::Null);
    o.insert("incomplete_details".into(), incomplete);
    o.insert(
        "model".into(),
        chat.get("model").cloned().unwrap_or(Value::Null),
    );
    o.insert("output".into(), Value::Array(output));
    echo(req, &mut o);
    o.insert("usage".into(), usage(chat.get("usage")));
    Value::Object(o)
}

#[derive(Debug)]
struct Item {
    id: String,
    tool: bool,
    text: String,
    call_id: String,
    name: String,
}

/// Writes Responses stream events from Converse stream events.
#[derive(Debug)]
pub struct EventWriter {
    id: String,
    model: String,
    created: i64,
    req: Value,
    seq: u64,
    items: Vec<Item>,
    /// Converse block index -> item.
    blocks: BTreeMap<u32, usize>,
}

impl EventWriter {
    /// A writer for the response `id` (without its `resp_` prefix).
    pub fn new(id: &str, model: &str, created: i64, req: &Value) -> Self {
        EventWriter {
            id: id.into(),
            model: model.into(),
            created,
            req: req.clone(),
            seq: 0,
            items: Vec::new(),
            blocks: BTreeMap::new(),
        }
    }

    fn ev(&mut self, kind: &str, mut body: Value) -> Value {
        if let Some(o) = body.as_object_mut() {
            o.insert("type".into(), json!(kind));
            o.insert("sequence_number".into(), json!(self.seq));
        }
        self.seq += 1;
        body
    }

    fn skeleton(&self, status: &str) -> Value {
        let mut o = Map::new();
        o.insert("id".into(), json!(format!("resp_{}", self.id)));
        o.insert("object".into(), json!("response"));
        o.insert("created_at".into(), json!(self.created));
        o.insert("status".into(), json!(status));
        o.insert("error".into(), Value::Null);
        o.insert("incomplete_details".into(), Value::Null);
        o.insert("model".into(), json!(self.model));
        o.insert("output".into(), json!([]));
        echo(&self.req, &mut o);
        o.insert("usage".into(), Value::Null);
        Value::Object(o)
    }

    fn item_json(&self, it: &Item, done: bool) -> Value {
        let status = if done { "completed" } else { "in_progress" };
        if it.tool {
            json!({"type": "function_call", "id": it.id, "call_id": it.call_id, "name": it.name,
                   "arguments": if done { it.text.clone() } else { String::new() }, "status": status})
        } else {
            let content = if done {
                json!([{"type": "output_text", "text": it.text, "annotations": []}])
            } else {
                json!([])
            };
            json!({"type": "message", "id": it.id, "status": status, "role": "assistant", "content": content})
        }
    }

    fn open(
        &mut self,
        block: u32,
        tool: bool,
        call_id: String,
        name: String,
    ) -> (usize, Vec<Value>) {
        let n = self.items.len();
        let it = Item {
            id: if tool {
                format!("fc_{}_{n}", self.id)
            } else {
                format!("msg_{}", self.id)
            },
            tool,
            text: String::new(),
            call_id,
            name,
        };
        let added = json!({"output_index": n, "item": self.item_json(&it, false)});
        self.items.push(it);
        self.blocks.insert(block, n);
        let mut out = vec![self.ev("response.output_item.added", added)];
        if !tool {
            let id = self.items[n].id.clone();
            out.push(self.ev(
                "response.content_part.added",
                json!({"item_id": id, "output_index": n, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
            ));
        }
        (n, out)
    }

    fn close(&mut self, n: usize) -> Vec<Value> {
        let (id, tool, text) = {
            let it = &self.items[n];
            (it.id.clone(), it.tool, it.text.clone())
        };
        let mut out = Vec::new();
        if tool {
            out.push(self.ev(
                "response.function_call_arguments.done",
                json!({"item_id": id, "output_index": n, "arguments": text}),
            ));
        } else {
            out.push(self.ev(
                "response.output_text.done",
                json!({"item_id": id, "output_index": n, "content_index": 0, "text": text, "logprobs": []}),
            ));
            out.push(self.ev(
                "response.content_part.done",
                json!({"item_id": id, "output_index": n, "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}}),
            ));
        }
        let item = self.item_json(&self.items[n], true);
        out.push(self.ev(
            "response.output_item.done",
            json!({"output_index": n, "item": item}),
        ));
        out
    }

    /// The events for one Converse stream event (the final `response.completed` comes
    /// from [`EventWriter::completed`]).
    pub fn on_event(&mut self, ev: &StreamEvent) -> Vec<Value> {
        match ev {
            StreamEvent::MessageStart { .. } => {
                let created = json!({"response": self.skeleton("in_progress")});
                let progress = created.clone();
                vec![
                    self.ev("response.created", created),
                    self.ev("response.in_progress", progress),
                ]
            }
            StreamEvent::ContentBlockStart { index, start } => {
                let Some(t) = start.get("toolUse") else {
                    return Vec::new();
                };
                let call_id = t
                    .get("toolUseId")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let name = t
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                self.open(*index, true, call_id, name).1
            }
            StreamEvent::ContentBlockDelta { index, delta } => {
                if let Some(text) = delta.get("text").and_then(Value::as_str) {
                    let (n, mut out) = match self.blocks.get(index) {
                        Some(n) => (*n, Vec::new()),
                        None => self.open(*index, false, String::new(), String::new()),
                    };
                    self.items[n].text.push_str(text);
                    let id = self.items[n].id.clone();
                    out.push(self.ev(
                        "response.output_text.delta",
                        json!({"item_id": id, "output_index": n, "content_index": 0, "delta": text, "logprobs": []}),
                    ));
                    return out;
                }
                if let Some(frag) = delta.pointer("/toolUse/input").and_then(Value::as_str) {
                    if let Some(&n) = self.blocks.get(index) {
                        self.items[n].text.push_str(frag);
                        let id = self.items[n].id.clone();
                        return vec![self.ev(
                            "response.function_call_arguments.delta",
                            json!({"item_id": id, "output_index": n, "delta": frag}),
                        )];
                    }
                }
                Vec::new()
            }
            StreamEvent::ContentBlockStop { index } => match self.blocks.remove(index) {
                Some(n) => self.close(n),
                None => Vec::new(),
            },
            StreamEvent::MessageStop { .. } | StreamEvent::Metadata { .. } => {
                let open: Vec<usize> = self.blocks.values().copied().collect();
                self.blocks.clear();
                open.into_iter().flat_map(|n| self.close(n)).collect()
            }
        }
    }

    /// `response.completed` (or `response.incomplete`) with the whole response.
    pub fn completed(&mut self, response: Value) -> Value {
        let kind = if response["status"] == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.ev(kind, json!({"response": response}))
    }

    /// `response.failed` with an error (the stream's last event).
    pub fn failed(&self, code: &str, message: &str) -> Value {
        let mut r = self.skeleton("failed");
        if let Some(o) = r.as_object_mut() {
            o.insert("error".into(), json!({"code": code, "message": message}));
        }
        json!({"type": "response.failed", "sequence_number": self.seq, "response": r})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_become_chat_requests() {
        let r = json!({
            "model": "m", "instructions": "be brief", "max_output_tokens": 50,
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
                {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"},
                {"type": "function_call_output", "call_id": "c1", "output": "{\"t\": 3}"},
            ],
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "stream": true,
        });
        let c = responses_to_chat(&r).unwrap();
        assert_eq!(
            c["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(c["messages"][1]["content"][0]["text"], "weather?");
        assert_eq!(
            c["messages"][2]["tool_calls"][0]["function"]["name"],
            "get_weather"
        );
        assert_eq!(c["messages"][3]["role"], "tool");
        assert_eq!(c["max_tokens"], 50);
        assert_eq!(c["tools"][0]["function"]["name"], "get_weather");
        assert_eq!(c["tool_choice"]["function"]["name"], "get_weather");
        assert_eq!(c["stream_options"]["include_usage"], true);
        assert_eq!(
            responses_to_chat(&json!({"model": "m", "input": "hi"})).unwrap()["messages"],
            json!([{"role": "user", "content": "hi"}])
        );
    }

    #[test]
    fn what_logbook_cannot_serve_is_refused_by_name() {
        let e = |v: Value| responses_to_chat(&v).unwrap_err();
        assert_eq!(
            e(json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}))
                .param
                .as_deref(),
            Some("previous_response_id")
        );
        assert_eq!(
            e(json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}))
                .param
                .as_deref(),
            Some("tools[0].type")
        );
        assert_eq!(e(json!({"model": "m"})).param.as_deref(), Some("input"));
        assert_eq!(e(json!({"input": "x"})).param.as_deref(), Some("model"));
        assert_eq!(
            e(json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}))
                .param
                .as_deref(),
            Some("input[0].type")
        );
    }

    #[test]
    fn chat_answers_become_responses_and_streams_are_sequenced() {
        let chat = json!({"model": "m", "choices": [{"message": {"content": "hello", "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}]}, "finish_reason": "tool_calls"}],
                          "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7, "prompt_tokens_details": {"cached_tokens": 1}}});
        let r = chat_to_response(&chat, "abc", 1, &json!({"model": "m"}));
        assert_eq!(r["id"], "resp_abc");
        assert_eq!(r["output"][0]["content"][0]["text"], "hello");
        assert_eq!(r["output"][1]["type"], "function_call");
        assert_eq!(r["usage"]["input_tokens_details"]["cached_tokens"], 1);
        assert_eq!(r["status"], "completed");
        let mut w = EventWriter::new("abc", "m", 1, &json!({}));
        let mut evs = w.on_event(&StreamEvent::MessageStart {
            role: "assistant".into(),
        });
        evs.extend(w.on_event(&StreamEvent::ContentBlockDelta {
            index: 0,
            delta: json!({"text": "he"}),
        }));
        evs.extend(w.on_event(&StreamEvent::ContentBlockDelta {
            index: 0,
            delta: json!({"text": "llo"}),
        }));
        evs.extend(w.on_event(&StreamEvent::ContentBlockStop { index: 0 }));
        evs.push(w.completed(r));
        let kinds: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        let seqs: Vec<u64> = evs
            .iter()
            .map(|e| e["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (0..10).collect::<Vec<_>>());
        assert_eq!(evs[6]["text"], "hello");
    }
}
