//! The Anthropic Messages API on top of Converse, for providers that take no native Claude
//! body (an OpenAI-compatible upstream): a Messages request becomes a Converse request,
//! a Converse response a Messages response, and Converse stream events Messages stream
//! events. The other direction (Converse to an Anthropic upstream) is `anthropic.rs`.

use crate::converse::{ConverseRequest, ConverseResponse, InferenceConfig, Message, StreamEvent};
use serde_json::{json, Map, Value};

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// `image/png` -> `png`.
fn format_of(media_type: &str) -> String {
    media_type
        .strip_prefix("image/")
        .unwrap_or(media_type)
        .replace("jpg", "jpeg")
}

fn block(b: &Value, at: &str) -> Result<Map<String, Value>, String> {
    if let Some(t) = b.as_str() {
        return Ok(obj(json!({"text": t})));
    }
    let kind = b.get("type").and_then(Value::as_str).unwrap_or("");
    Ok(match kind {
        "text" => obj(json!({"text": b.get("text").and_then(Value::as_str).unwrap_or("")})),
        "image" => {
            let src = b.get("source").ok_or(format!("{at}.source: required"))?;
            if src.get("type").and_then(Value::as_str) != Some("base64") {
                return Err(format!(
                    "{at}.source: only base64 images can be sent to this model"
                ));
            }
            let mt = src
                .get("media_type")
                .and_then(Value::as_str)
                .unwrap_or("image/png");
            obj(
                json!({"image": {"format": format_of(mt), "source": {"bytes": src.get("data").cloned().unwrap_or(Value::Null)}}}),
            )
        }
        "tool_use" => obj(json!({"toolUse": {
            "toolUseId": b.get("id").cloned().unwrap_or(Value::Null),
            "name": b.get("name").cloned().unwrap_or(Value::Null),
            "input": b.get("input").cloned().unwrap_or(json!({})),
        }})),
        "tool_result" => {
            let content: Vec<Value> = match b.get("content") {
                Some(Value::String(t)) => vec![json!({"text": t})],
                Some(Value::Array(parts)) => parts
                    .iter()
                    .map(|p| json!({"text": p.get("text").and_then(Value::as_str).unwrap_or("")}))
                    .collect(),
                _ => Vec::new(),
            };
            let mut tr = json!({"toolUseId": b.get("tool_use_id").cloned().unwrap_or(Value::Null), "content": content});
            if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                tr["status"] = json!("error");
            }
            obj(json!({ "toolResult": tr }))
        }
        other => {
            return Err(format!(
                "{at}: content block type {other:?} cannot be sent to this model"
            ))
        }
    })
}

/// A Messages request (less `model` and `stream`) as a Converse request.
pub fn request_to_converse(body: &Value) -> Result<ConverseRequest, String> {
    let mut req = ConverseRequest::default();
    let msgs = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: required, a list")?;
    for (i, m) in msgs.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or(format!("messages.{i}.role: required"))?;
        let content = match m.get("content") {
            Some(Value::String(t)) => vec![obj(json!({"text": t}))],
            Some(Value::Array(parts)) => parts
                .iter()
                .enumerate()
                .map(|(j, p)| block(p, &format!("messages.{i}.content.{j}")))
                .collect::<Result<_, _>>()?,
            _ => return Err(format!("messages.{i}.content: required")),
        };
        req.messages.push(Message {
            role: role.to_string(),
            content,
        });
    }
    req.system = match body.get("system") {
        Some(Value::String(t)) => Some(vec![obj(json!({"text": t}))]),
        Some(Value::Array(parts)) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .map(|t| obj(json!({"text": t})))
                .collect(),
        ),
        _ => None,
    };
    let num = |k: &str| body.get(k).and_then(Value::as_f64);
    req.inference_config = Some(InferenceConfig {
        max_tokens: body
            .get("max_tokens")
            .and_then(Value::as_u64)
            .map(|n| n.min(u64::from(u32::MAX)) as u32),
        temperature: num("temperature"),
        top_p: num("top_p"),
        stop_sequences: body
            .get("stop_sequences")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            }),
    });
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        let specs: Vec<Value> = tools
            .iter()
            .map(|t| json!({"toolSpec": {
                "name": t.get("name").cloned().unwrap_or(Value::Null),
                "description": t.get("description").cloned().unwrap_or(json!("")),
                "inputSchema": {"json": t.get("input_schema").cloned().unwrap_or(json!({"type": "object"}))},
            }}))
            .collect();
        let mut tc = json!({ "tools": specs });
        if let Some(c) = body.get("tool_choice") {
            tc["toolChoice"] = match c.get("type").and_then(Value::as_str) {
                Some("any") => json!({"any": {}}),
                Some("tool") => {
                    json!({"tool": {"name": c.get("name").cloned().unwrap_or(Value::Null)}})
                }
                _ => json!({"auto": {}}),
            };
        }
        req.tool_config = Some(tc);
    }
    Ok(req)
}

/// Converse's stop reason as the Messages API names it.
pub fn stop_reason(converse: &str) -> &'static str {
    match converse {
        "tool_use" => "tool_use",
        "max_tokens" => "max_tokens",
        "stop_sequence" => "stop_sequence",
        "guardrail_intervened" | "content_filtered" => "refusal",
        _ => "end_turn",
    }
}

fn content_out(b: &Map<String, Value>) -> Option<Value> {
    if let Some(t) = b.get("text").and_then(Value::as_str) {
        return Some(json!({"type": "text", "text": t}));
    }
    b.get("toolUse").map(|tu| {
        json!({"type": "tool_use", "id": tu.get("toolUseId"), "name": tu.get("name"), "input": tu.get("input").cloned().unwrap_or(json!({}))})
    })
}

fn usage(u: &crate::converse::TokenUsage) -> Value {
    json!({
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_input_tokens": u.cache_read_input_tokens.unwrap_or(0),
        "cache_creation_input_tokens": u.cache_write_input_tokens.unwrap_or(0),
    })
}

/// A Converse response as a Messages response.
pub fn response_from_converse(r: &ConverseResponse, model: &str, id: &str) -> Value {
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": r.message.content.iter().filter_map(content_out).collect::<Vec<_>>(),
        "stop_reason": stop_reason(&r.stop_reason),
        "stop_sequence": null,
        "usage": usage(&r.usage),
    })
}

/// Converse stream events to Messages stream events, one event at a time.
#[derive(Debug)]
pub struct EventTranslator {
    id: String,
    model: String,
    /// Blocks opened, by Converse index.
    open: Vec<u32>,
    stop: String,
}

impl EventTranslator {
    /// For one stream.
    pub fn new(id: &str, model: &str) -> Self {
        EventTranslator {
            id: id.to_string(),
            model: model.to_string(),
            open: Vec::new(),
            stop: "end_turn".into(),
        }
    }

    /// The Messages events for one Converse event (the last is `message_stop`).
    pub fn events(&mut self, ev: &StreamEvent) -> Vec<Value> {
        match ev {
            StreamEvent::MessageStart { .. } => vec![json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "content": [], "model": self.model,
                "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0},
            }})],
            StreamEvent::ContentBlockStart { index, start } => {
                self.open.push(*index);
                let tu = start.get("toolUse").cloned().unwrap_or(json!({}));
                vec![
                    json!({"type": "content_block_start", "index": index, "content_block": {
                        "type": "tool_use", "id": tu.get("toolUseId"), "name": tu.get("name"), "input": {},
                    }}),
                ]
            }
            StreamEvent::ContentBlockDelta { index, delta } => {
                let mut out = Vec::new();
                if !self.open.contains(index) {
                    self.open.push(*index);
                    out.push(json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}));
                }
                if let Some(t) = delta.get("text").and_then(Value::as_str) {
                    out.push(json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": t}}));
                } else if let Some(p) = delta
                    .get("toolUse")
                    .and_then(|t| t.get("input"))
                    .and_then(Value::as_str)
                {
                    out.push(json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": p}}));
                }
                out
            }
            StreamEvent::ContentBlockStop { index } => {
                vec![json!({"type": "content_block_stop", "index": index})]
            }
            StreamEvent::MessageStop { stop_reason, .. } => {
                self.stop = stop_reason.clone();
                Vec::new()
            }
            StreamEvent::Metadata { usage: u, .. } => vec![
                json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(&self.stop), "stop_sequence": null}, "usage": usage(u)}),
                json!({"type": "message_stop"}),
            ],
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::converse::TokenUsage;

    #[test]
    fn a_messages_request_becomes_converse_and_refuses_what_it_cannot_carry() {
        let r = request_to_converse(&json!({
            "max_tokens": 100, "temperature": 0.2, "system": [{"type": "text", "text": "be brief"}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"}}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42", "is_error": true}]}
            ],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": {"type": "any"}
        }))
        .unwrap();
        assert_eq!(r.system.as_ref().unwrap()[0]["text"], "be brief");
        assert_eq!(r.messages[0].content[1]["image"]["format"], "jpeg");
        assert_eq!(r.messages[1].content[0]["toolUse"]["input"]["a"], 1);
        assert_eq!(r.messages[2].content[0]["toolResult"]["status"], "error");
        assert_eq!(r.inference_config.as_ref().unwrap().max_tokens, Some(100));
        assert_eq!(
            r.tool_config.as_ref().unwrap()["toolChoice"],
            json!({"any": {}})
        );
        let e = request_to_converse(
            &json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "http://x"}}]}]}),
        );
        assert!(e.unwrap_err().contains("base64"));
        assert!(request_to_converse(&json!({})).is_err());
    }

    #[test]
    fn a_converse_stream_becomes_messages_events() {
        let mut t = EventTranslator::new("msg_1", "gpt-4o-mini");
        let evs: Vec<Value> = [
            StreamEvent::MessageStart {
                role: "assistant".into(),
            },
            StreamEvent::ContentBlockDelta {
                index: 0,
                delta: json!({"text": "he"}),
            },
            StreamEvent::ContentBlockDelta {
                index: 0,
                delta: json!({"text": "llo"}),
            },
            StreamEvent::ContentBlockStop { index: 0 },
            StreamEvent::MessageStop {
                stop_reason: "max_tokens".into(),
                additional_model_response_fields: None,
            },
            StreamEvent::Metadata {
                usage: TokenUsage::new(3, 2),
                latency_ms: 1,
            },
        ]
        .iter()
        .flat_map(|e| t.events(e))
        .collect();
        let kinds: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(evs[5]["delta"]["stop_reason"], "max_tokens");
        assert_eq!(evs[5]["usage"]["output_tokens"], 2);
    }
}
