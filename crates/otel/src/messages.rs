//! Prompts and answers in the GenAI conventions' message shape:
//! `[{"role": "user", "parts": [{"type": "text", "content": "..."}]}]`, from the bodies of
//! Converse, InvokeModel (Anthropic, and `prompt` bodies), OpenAI chat, Responses and
//! completions, and Anthropic Messages. A block the shape has no kind for becomes a part of
//! its own type with no content (its presence is kept, not its bytes).

use serde_json::{json, Value};

fn text_part(s: &str) -> Value {
    json!({"type": "text", "content": s})
}

/// One content block (any of the three APIs' shapes) as a part.
fn part(b: &Value) -> Value {
    if let Some(s) = b.as_str() {
        return text_part(s);
    }
    if let Some(t) = b.get("text").and_then(Value::as_str) {
        return text_part(t);
    }
    // Converse
    if let Some(t) = b.get("toolUse") {
        return json!({"type": "tool_call", "id": t.get("toolUseId"), "name": t.get("name"), "arguments": t.get("input")});
    }
    if let Some(t) = b.get("toolResult") {
        return json!({"type": "tool_call_response", "id": t.get("toolUseId"), "response": t.get("content")});
    }
    // Anthropic
    match b.get("type").and_then(Value::as_str) {
        Some("tool_use") => {
            return json!({"type": "tool_call", "id": b.get("id"), "name": b.get("name"), "arguments": b.get("input")})
        }
        Some("tool_result") => {
            return json!({"type": "tool_call_response", "id": b.get("tool_use_id"), "response": b.get("content")})
        }
        Some("input_text" | "output_text") => {
            if let Some(t) = b.get("text").and_then(Value::as_str) {
                return text_part(t);
            }
        }
        Some(other) => return json!({ "type": other }),
        None => {}
    }
    for kind in [
        "image",
        "document",
        "video",
        "reasoningContent",
        "guardContent",
    ] {
        if b.get(kind).is_some() {
            return json!({ "type": kind });
        }
    }
    json!({"type": "unknown"})
}

fn parts(content: Option<&Value>) -> Vec<Value> {
    match content {
        Some(Value::String(s)) => vec![text_part(s)],
        Some(Value::Array(a)) => a.iter().map(part).collect(),
        _ => Vec::new(),
    }
}

fn message(m: &Value) -> Value {
    let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
    let mut ps = parts(m.get("content"));
    // OpenAI: tool calls beside the content.
    if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
        for c in calls {
            let f = c.get("function");
            ps.push(json!({"type": "tool_call", "id": c.get("id"),
                           "name": f.and_then(|f| f.get("name")),
                           "arguments": f.and_then(|f| f.get("arguments"))}));
        }
    }
    if role == "tool" {
        return json!({"role": "tool", "parts": [{"type": "tool_call_response", "id": m.get("tool_call_id"), "response": m.get("content")}]});
    }
    json!({"role": role, "parts": ps})
}

/// The system instructions (if any) and the input messages of a request body.
pub fn input(body: &Value) -> (Option<Value>, Value) {
    let system = match body.get("system").or_else(|| body.get("instructions")) {
        Some(Value::String(s)) => Some(json!([text_part(s)])),
        Some(Value::Array(a)) => Some(Value::Array(a.iter().map(part).collect())),
        _ => None,
    };
    let msgs = match body.get("messages").or_else(|| body.get("input")) {
        Some(Value::Array(a)) => a.iter().map(message).collect(),
        Some(Value::String(s)) => vec![json!({"role": "user", "parts": [text_part(s)]})],
        _ => match body
            .get("prompt")
            .or_else(|| body.get("inputText"))
            .and_then(Value::as_str)
        {
            Some(p) => vec![json!({"role": "user", "parts": [text_part(p)]})],
            None => Vec::new(),
        },
    };
    (system, Value::Array(msgs))
}

/// The output messages of a response body.
pub fn output(body: &Value) -> Value {
    let reasons = finish_reasons(body);
    let reason = reasons.first().cloned().unwrap_or_default();
    let with = |mut m: Value| {
        if let Some(o) = m.as_object_mut() {
            o.insert("finish_reason".into(), Value::String(reason.clone()));
        }
        m
    };
    // Converse
    if let Some(m) = body.get("output").and_then(|o| o.get("message")) {
        return json!([with(message(m))]);
    }
    // OpenAI chat / completions
    if let Some(choices) = body.get("choices").and_then(Value::as_array) {
        return Value::Array(
            choices
                .iter()
                .map(|c| {
                    let mut m = match c.get("message") {
                        Some(m) => message(m),
                        None => json!({"role": "assistant", "parts": parts(c.get("text"))}),
                    };
                    if let Some(o) = m.as_object_mut() {
                        o.insert(
                            "finish_reason".into(),
                            c.get("finish_reason").cloned().unwrap_or(Value::Null),
                        );
                    }
                    m
                })
                .collect(),
        );
    }
    // Responses
    if let Some(items) = body.get("output").and_then(Value::as_array) {
        let ps: Vec<Value> = items
            .iter()
            .flat_map(|i| match i.get("type").and_then(Value::as_str) {
                Some("message") => parts(i.get("content")),
                Some("function_call") => vec![json!({"type": "tool_call", "id": i.get("call_id"), "name": i.get("name"), "arguments": i.get("arguments")})],
                Some(other) => vec![json!({ "type": other })],
                None => Vec::new(),
            })
            .collect();
        return json!([with(json!({"role": "assistant", "parts": ps}))]);
    }
    // Anthropic
    if body.get("content").is_some() {
        return json!([with(
            json!({"role": "assistant", "parts": parts(body.get("content"))})
        )]);
    }
    if let Some(t) = body
        .get("generation")
        .or_else(|| body.get("completion"))
        .and_then(Value::as_str)
    {
        return json!([with(json!({"role": "assistant", "parts": [text_part(t)]}))]);
    }
    json!([])
}

/// Why the model stopped, in each API's words.
pub fn finish_reasons(body: &Value) -> Vec<String> {
    if let Some(choices) = body.get("choices").and_then(Value::as_array) {
        return choices
            .iter()
            .filter_map(|c| {
                c.get("finish_reason")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .collect();
    }
    for k in ["stopReason", "stop_reason", "status"] {
        if let Some(s) = body.get(k).and_then(Value::as_str) {
            return vec![s.to_string()];
        }
    }
    Vec::new()
}
