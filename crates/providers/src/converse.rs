//! Bedrock Converse request, response and stream events (botocore `bedrock-runtime`
//! `ConverseRequest`, `ConverseResponse`, `ConverseStreamOutput`).
//!
//! Content blocks are kept as JSON objects (`{"text": ...}`, `{"image": ...}`,
//! `{"toolUse": ...}`, ...) so that nothing a client sends is lost on the way to the record.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Converse inference parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InferenceConfig {
    /// Most tokens to generate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Stop sequences.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
}

/// A message: role plus content blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// `user` or `assistant`.
    pub role: String,
    /// Content blocks.
    pub content: Vec<Map<String, Value>>,
}

/// The Converse / ConverseStream request body (the path carries the model id).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConverseRequest {
    /// Conversation so far.
    #[serde(default)]
    pub messages: Vec<Message>,
    /// System content blocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<Vec<Map<String, Value>>>,
    /// Inference parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inference_config: Option<InferenceConfig>,
    /// Tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<Value>,
    /// Guardrail to apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guardrail_config: Option<Value>,
    /// Model-specific request fields.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub additional_model_request_fields: Option<Value>,
    /// Prompt-management variables.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_variables: Option<Value>,
    /// Paths of extra response fields.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub additional_model_response_field_paths: Option<Vec<String>>,
    /// Caller key/value pairs copied into the record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_metadata: Option<BTreeMap<String, String>>,
    /// `{"latency": "standard"|"optimized"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub performance_config: Option<Value>,
    /// `{"type": ...}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<Value>,
    /// Structured output settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_config: Option<Value>,
}

impl ConverseRequest {
    /// Check the constraints of the botocore model that a raw HTTP client could violate.
    pub fn validate(&self) -> Result<(), String> {
        if self.messages.is_empty() {
            return Err(
                "A conversation must start with a user message. Try again with a conversation that starts with a user message."
                    .into(),
            );
        }
        for (i, m) in self.messages.iter().enumerate() {
            if m.role != "user" && m.role != "assistant" {
                return Err(format!(
                    "1 validation error detected: Value '{}' at 'messages.{}.member.role' failed to satisfy constraint: Member must satisfy enum value set: [user, assistant]",
                    m.role,
                    i + 1
                ));
            }
            if m.content.is_empty() {
                return Err(format!(
                    "The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again."
                ));
            }
        }
        if self.messages[0].role != "user" {
            return Err(
                "A conversation must start with a user message. Try again with a conversation that starts with a user message."
                    .into(),
            );
        }
        if let Some(md) = &self.request_metadata {
            if md.is_empty() || md.len() > 16 {
                return Err("1 validation error detected: Value at 'requestMetadata' failed to satisfy constraint: Member must have length between 1 and 16".into());
            }
            for (k, v) in md {
                if !valid_metadata(k, 1) || !valid_metadata(v, 0) {
                    return Err(format!("1 validation error detected: Value at 'requestMetadata' failed to satisfy constraint: key '{k}' or its value does not match [a-zA-Z0-9\\s:_@$#=/+,-.]{{0,256}}"));
                }
            }
        }
        if let Some(ic) = &self.inference_config {
            if ic.max_tokens == Some(0) {
                return Err("1 validation error detected: Value '0' at 'inferenceConfig.maxTokens' failed to satisfy constraint: Member must have value greater than or equal to 1".into());
            }
            if let Some(t) = ic.temperature {
                if !(0.0..=1.0).contains(&t) {
                    return Err(format!("1 validation error detected: Value '{t}' at 'inferenceConfig.temperature' failed to satisfy constraint: Member must have value less than or equal to 1"));
                }
            }
        }
        Ok(())
    }

    /// All text of the conversation (system + messages), for token estimates.
    pub fn all_text(&self) -> String {
        let mut s = String::new();
        for b in self.system.iter().flatten() {
            if let Some(t) = b.get("text").and_then(Value::as_str) {
                s.push_str(t);
                s.push('\n');
            }
        }
        for m in &self.messages {
            for b in &m.content {
                if let Some(t) = b.get("text").and_then(Value::as_str) {
                    s.push_str(t);
                    s.push('\n');
                }
            }
        }
        s
    }

    /// Text of the last user message.
    pub fn last_user_text(&self) -> String {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| {
                m.content
                    .iter()
                    .filter_map(|b| b.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }
}

/// `requestMetadata` key/value charset: `[a-zA-Z0-9\s:_@$#=/+,-.]`, lengths min..=256.
pub fn valid_metadata(s: &str, min: usize) -> bool {
    let n = s.chars().count();
    n >= min
        && n <= 256
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c.is_whitespace() || ":_@$#=/+,-.".contains(c))
}

/// Converse token usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Sum.
    pub total_tokens: u64,
    /// Cache reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    /// Cache writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_write_input_tokens: Option<u64>,
}

impl TokenUsage {
    /// Usage with the total filled in.
    pub fn new(input: u64, output: u64) -> Self {
        TokenUsage {
            input_tokens: input,
            output_tokens: output,
            total_tokens: input + output,
            cache_read_input_tokens: None,
            cache_write_input_tokens: None,
        }
    }

    /// Every token of the call: input, output and both cache kinds (Bedrock's
    /// `totalTokens` counts cache reads and writes too).
    pub fn sum(&self) -> u64 {
        self.input_tokens
            + self.output_tokens
            + self.cache_read_input_tokens.unwrap_or(0)
            + self.cache_write_input_tokens.unwrap_or(0)
    }
}

/// A Converse response.
#[derive(Debug, Clone, PartialEq)]
pub struct ConverseResponse {
    /// The assistant message.
    pub message: Message,
    /// Why generation stopped.
    pub stop_reason: String,
    /// Tokens.
    pub usage: TokenUsage,
    /// Model latency in milliseconds.
    pub latency_ms: u64,
    /// Model-specific extras.
    pub additional_model_response_fields: Option<Value>,
}

impl ConverseResponse {
    /// The wire JSON (`ConverseResponse`).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "output": { "message": self.message },
            "stopReason": self.stop_reason,
            "usage": self.usage,
            "metrics": { "latencyMs": self.latency_ms },
        });
        if let (Some(extra), Some(obj)) =
            (&self.additional_model_response_fields, v.as_object_mut())
        {
            obj.insert("additionalModelResponseFields".into(), extra.clone());
        }
        v
    }

    /// Concatenated text of the answer.
    pub fn text(&self) -> String {
        self.message
            .content
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect()
    }
}

/// One ConverseStream event (a member of `ConverseStreamOutput`).
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// `messageStart`
    MessageStart {
        /// Role, `assistant`.
        role: String,
    },
    /// `contentBlockStart` (tool use blocks)
    ContentBlockStart {
        /// Block index.
        index: u32,
        /// `{"toolUse": {"toolUseId", "name"}}`
        start: Value,
    },
    /// `contentBlockDelta`
    ContentBlockDelta {
        /// Block index.
        index: u32,
        /// `{"text": ...}` or `{"toolUse": {"input": "<json fragment>"}}` or reasoning.
        delta: Value,
    },
    /// `contentBlockStop`
    ContentBlockStop {
        /// Block index.
        index: u32,
    },
    /// `messageStop`
    MessageStop {
        /// Stop reason.
        stop_reason: String,
        /// Model-specific extras.
        additional_model_response_fields: Option<Value>,
    },
    /// `metadata` (the last event)
    Metadata {
        /// Tokens.
        usage: TokenUsage,
        /// Latency in milliseconds.
        latency_ms: u64,
    },
}

impl StreamEvent {
    /// The union member name, used as `:event-type`.
    pub fn member(&self) -> &'static str {
        match self {
            StreamEvent::MessageStart { .. } => "messageStart",
            StreamEvent::ContentBlockStart { .. } => "contentBlockStart",
            StreamEvent::ContentBlockDelta { .. } => "contentBlockDelta",
            StreamEvent::ContentBlockStop { .. } => "contentBlockStop",
            StreamEvent::MessageStop { .. } => "messageStop",
            StreamEvent::Metadata { .. } => "metadata",
        }
    }

    /// The event payload (the bare member struct).
    pub fn payload(&self) -> Map<String, Value> {
        let v = match self {
            StreamEvent::MessageStart { role } => json!({ "role": role }),
            StreamEvent::ContentBlockStart { index, start } => {
                json!({ "start": start, "contentBlockIndex": index })
            }
            StreamEvent::ContentBlockDelta { index, delta } => {
                json!({ "delta": delta, "contentBlockIndex": index })
            }
            StreamEvent::ContentBlockStop { index } => json!({ "contentBlockIndex": index }),
            StreamEvent::MessageStop {
                stop_reason,
                additional_model_response_fields,
            } => {
                let mut v = json!({ "stopReason": stop_reason });
                if let (Some(extra), Some(o)) =
                    (additional_model_response_fields, v.as_object_mut())
                {
                    o.insert("additionalModelResponseFields".into(), extra.clone());
                }
                v
            }
            StreamEvent::Metadata { usage, latency_ms } => {
                json!({ "usage": usage, "metrics": { "latencyMs": latency_ms } })
            }
        };
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }
}

/// Builds the assembled Converse response from stream events (what a ConverseStream
/// record holds as `outputBodyJson`).
#[derive(Debug, Default)]
pub struct Assembler {
    role: Option<String>,
    blocks: BTreeMap<u32, Block>,
    stop_reason: Option<String>,
    extra: Option<Value>,
    usage: Option<TokenUsage>,
    latency_ms: u64,
}

#[derive(Debug)]
enum Block {
    Text(String),
    Tool {
        id: String,
        name: String,
        input: String,
    },
    Reasoning(String),
}

impl Assembler {
    /// A fresh assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Account for one event.
    pub fn push(&mut self, ev: &StreamEvent) {
        match ev {
            StreamEvent::MessageStart { role } => self.role = Some(role.clone()),
            StreamEvent::ContentBlockStart { index, start } => {
                if let Some(t) = start.get("toolUse") {
                    self.blocks.insert(
                        *index,
                        Block::Tool {
                            id: str_of(t, "toolUseId"),
                            name: str_of(t, "name"),
                            input: String::new(),
                        },
                    );
                }
            }
            StreamEvent::ContentBlockDelta { index, delta } => {
                if let Some(t) = delta.get("text").and_then(Value::as_str) {
                    match self
                        .blocks
                        .entry(*index)
                        .or_insert_with(|| Block::Text(String::new()))
                    {
                        Block::Text(s) => s.push_str(t),
                        Block::Reasoning(s) => s.push_str(t),
                        Block::Tool { .. } => {}
                    }
                } else if let Some(t) = delta
                    .get("toolUse")
                    .and_then(|t| t.get("input"))
                    .and_then(Value::as_str)
                {
                    if let Some(Block::Tool { input, .. }) = self.blocks.get_mut(index) {
                        input.push_str(t);
                    }
                } else if let Some(t) = delta
                    .get("reasoningContent")
                    .and_then(|r| r.get("text"))
                    .and_then(Value::as_str)
                {
                    if let Block::Reasoning(s) = self
                        .blocks
                        .entry(*index)
                        .or_insert_with(|| Block::Reasoning(String::new()))
                    {
                        s.push_str(t);
                    }
                }
            }
            StreamEvent::ContentBlockStop { .. } => {}
            StreamEvent::MessageStop {
                stop_reason,
                additional_model_response_fields,
            } => {
                self.stop_reason = Some(stop_reason.clone());
                self.extra = additional_model_response_fields.clone();
            }
            StreamEvent::Metadata { usage, latency_ms } => {
                self.usage = Some(*usage);
                self.latency_ms = *latency_ms;
            }
        }
    }

    /// Usage seen so far.
    pub fn usage(&self) -> Option<TokenUsage> {
        self.usage
    }

    /// The response assembled from what was seen (complete or not).
    pub fn finish(&self) -> ConverseResponse {
        let content = self
            .blocks
            .values()
            .map(|b| {
                let v = match b {
                    Block::Text(t) => json!({ "text": t }),
                    Block::Reasoning(t) => {
                        json!({ "reasoningContent": { "reasoningText": { "text": t } } })
                    }
                    Block::Tool { id, name, input } => {
                        let parsed = if input.trim().is_empty() {
                            json!({})
                        } else {
                            serde_json::from_str(input).unwrap_or(Value::String(input.clone()))
                        };
                        json!({ "toolUse": { "toolUseId": id, "name": name, "input": parsed } })
                    }
                };
                match v {
                    Value::Object(m) => m,
                    _ => Map::new(),
                }
            })
            .collect();
        ConverseResponse {
            message: Message {
                role: self.role.clone().unwrap_or_else(|| "assistant".into()),
                content,
            },
            stop_reason: self.stop_reason.clone().unwrap_or_default(),
            usage: self.usage.unwrap_or_default(),
            latency_ms: self.latency_ms,
            additional_model_response_fields: self.extra.clone(),
        }
    }
}

fn str_of(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Split a Converse response into the stream events that would have produced it.
pub fn response_to_events(r: &ConverseResponse, chunk_chars: usize) -> Vec<StreamEvent> {
    let mut out = vec![StreamEvent::MessageStart {
        role: r.message.role.clone(),
    }];
    for (i, b) in r.message.content.iter().enumerate() {
        let index = i as u32;
        if let Some(t) = b.get("text").and_then(Value::as_str) {
            for piece in split_chars(t, chunk_chars.max(1)) {
                out.push(StreamEvent::ContentBlockDelta {
                    index,
                    delta: json!({ "text": piece }),
                });
            }
        } else if let Some(tu) = b.get("toolUse") {
            out.push(StreamEvent::ContentBlockStart {
                index,
                start: json!({ "toolUse": { "toolUseId": tu.get("toolUseId"), "name": tu.get("name") } }),
            });
            let input = tu.get("input").map(Value::to_string).unwrap_or_default();
            out.push(StreamEvent::ContentBlockDelta {
                index,
                delta: json!({ "toolUse": { "input": input } }),
            });
        }
        out.push(StreamEvent::ContentBlockStop { index });
    }
    out.push(StreamEvent::MessageStop {
        stop_reason: r.stop_reason.clone(),
        additional_model_response_fields: r.additional_model_response_fields.clone(),
    });
    out.push(StreamEvent::Metadata {
        usage: r.usage,
        latency_ms: r.latency_ms,
    });
    out
}

/// Split text into pieces of at most `n` characters (on char boundaries).
pub fn split_chars(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> Result<ConverseRequest, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn parses_and_validates() {
        let r = req(json!({"messages":[{"role":"user","content":[{"text":"hi"}]}],"inferenceConfig":{"maxTokens":5},"requestMetadata":{"team":"search"}})).unwrap();
        assert!(r.validate().is_ok());
        assert!(req(json!({"messages":[], "bogus": 1})).is_err());
        let r = req(json!({"messages":[{"role":"assistant","content":[{"text":"hi"}]}]})).unwrap();
        assert!(r
            .validate()
            .unwrap_err()
            .contains("start with a user message"));
        let r = req(json!({"messages":[{"role":"user","content":[{"text":"hi"}]}],"requestMetadata":{"bad\u{0}":"x"}})).unwrap();
        assert!(r.validate().is_err());
    }

    #[test]
    fn stream_round_trip_assembles_the_response() {
        let resp = ConverseResponse {
            message: Message {
                role: "assistant".into(),
                content: vec![
                    json!({"text":"hello world"}).as_object().unwrap().clone(),
                    json!({"toolUse":{"toolUseId":"t1","name":"f","input":{"a":1}}})
                        .as_object()
                        .unwrap()
                        .clone(),
                ],
            },
            stop_reason: "tool_use".into(),
            usage: TokenUsage::new(3, 4),
            latency_ms: 12,
            additional_model_response_fields: None,
        };
        let mut a = Assembler::new();
        for e in response_to_events(&resp, 3) {
            a.push(&e);
        }
        assert_eq!(a.finish(), resp);
    }
}
