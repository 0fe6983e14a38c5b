//! Native (InvokeModel) bodies of the model families Logbook understands: how to tell
//! them apart and where their token counts are.

use crate::converse::TokenUsage;
use serde_json::Value;

/// The `anthropic_version` Bedrock's Claude bodies carry.
pub const BEDROCK_ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// A model family's native body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Anthropic Messages (`anthropic_version`, `messages`, `max_tokens`).
    AnthropicMessages,
    /// Amazon Titan text (`inputText`, `textGenerationConfig`).
    TitanText,
    /// Amazon Titan embeddings (`inputText`, optional `dimensions`).
    TitanEmbed,
    /// Cohere embed (`texts`, `input_type`).
    CohereEmbed,
    /// Meta Llama / Mistral style completion (`prompt`).
    Prompt,
    /// Amazon Nova (`messages`, `inferenceConfig`, `schemaVersion`).
    Nova,
}

/// Decide the family from the model id and the body.
pub fn family(model_id: &str, body: &Value) -> Option<Family> {
    let id = model_id.to_ascii_lowercase();
    let has = |k: &str| body.get(k).is_some();
    if id.contains("embed") {
        if has("texts") {
            return Some(Family::CohereEmbed);
        }
        if has("inputText") {
            return Some(Family::TitanEmbed);
        }
    }
    if has("anthropic_version") || (id.contains("anthropic") && has("messages")) {
        return Some(Family::AnthropicMessages);
    }
    if has("inputText") {
        return Some(Family::TitanText);
    }
    if has("messages") && (id.contains("nova") || has("schemaVersion")) {
        return Some(Family::Nova);
    }
    if has("prompt") {
        return Some(Family::Prompt);
    }
    None
}

/// Check a native body as Bedrock's model would before answering (the mock's strictness):
/// the keys each family requires, with their types. `Err` is the `ValidationException`
/// message.
pub fn validate(fam: Family, body: &Value) -> Result<(), String> {
    let missing = |k: &str| {
        format!("Malformed input request: #: required key [{k}] not found, please reformat your input and try again.")
    };
    let wrong = |k: &str, t: &str| {
        format!("Malformed input request: #/{k}: expected type: {t}, please reformat your input and try again.")
    };
    let string = |k: &str| match body.get(k) {
        None => Err(missing(k)),
        Some(Value::String(_)) => Ok(()),
        Some(_) => Err(wrong(k, "String")),
    };
    let messages = || -> Result<&Vec<Value>, String> {
        match body.get("messages") {
            None => Err(missing("messages")),
            Some(Value::Array(a)) if a.is_empty() => {
                Err("messages: at least one message is required".into())
            }
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(wrong("messages", "JSONArray")),
        }
    };
    match fam {
        Family::AnthropicMessages => {
            string("anthropic_version")?;
            match body.get("max_tokens") {
                None => return Err(missing("max_tokens")),
                Some(v) if v.as_u64().is_some_and(|n| n >= 1) => {}
                Some(_) => return Err("max_tokens: must be an integer of at least 1".into()),
            }
            let msgs = messages()?;
            for (i, m) in msgs.iter().enumerate() {
                match m.get("role").and_then(Value::as_str) {
                    Some("user" | "assistant") => {}
                    Some(r) => {
                        return Err(format!(
                            "messages.{i}.role: Input should be 'user' or 'assistant' (got {r:?})"
                        ))
                    }
                    None => return Err(format!("messages.{i}.role: Field required")),
                }
                match m.get("content") {
                    Some(Value::String(_)) | Some(Value::Array(_)) => {}
                    Some(_) => {
                        return Err(format!(
                            "messages.{i}.content: Input should be a valid string or list"
                        ))
                    }
                    None => return Err(format!("messages.{i}.content: Field required")),
                }
            }
            if msgs
                .first()
                .and_then(|m| m.get("role"))
                .and_then(Value::as_str)
                != Some("user")
            {
                return Err("messages: the first message must use the \"user\" role".into());
            }
            Ok(())
        }
        Family::Nova => messages().map(|_| ()),
        Family::TitanText | Family::TitanEmbed => string("inputText"),
        Family::Prompt => string("prompt"),
        Family::CohereEmbed => match body.get("texts") {
            Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => Ok(()),
            Some(_) => Err(wrong("texts", "JSONArray of strings, not empty")),
            None => Err(missing("texts")),
        },
    }
}

fn u(v: &Value, path: &[&str]) -> Option<u64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_u64()
}

/// Token usage from a non-streaming native response body.
pub fn usage_from_response(body: &Value) -> Option<TokenUsage> {
    // Anthropic
    if let (Some(i), Some(o)) = (
        u(body, &["usage", "input_tokens"]),
        u(body, &["usage", "output_tokens"]),
    ) {
        let mut t = TokenUsage::new(i, o);
        t.cache_read_input_tokens = u(body, &["usage", "cache_read_input_tokens"]);
        t.cache_write_input_tokens = u(body, &["usage", "cache_creation_input_tokens"]);
        return Some(t);
    }
    // Nova
    if let (Some(i), Some(o)) = (
        u(body, &["usage", "inputTokens"]),
        u(body, &["usage", "outputTokens"]),
    ) {
        return Some(TokenUsage::new(i, o));
    }
    // Titan text
    if let Some(i) = u(body, &["inputTextTokenCount"]) {
        let o = body
            .get("results")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(|x| u(x, &["tokenCount"])).sum())
            .unwrap_or(0);
        return Some(TokenUsage::new(i, o));
    }
    // Llama
    if let (Some(i), Some(o)) = (
        u(body, &["prompt_token_count"]),
        u(body, &["generation_token_count"]),
    ) {
        return Some(TokenUsage::new(i, o));
    }
    None
}

/// Token usage from the decoded chunks of a native stream: Bedrock's
/// `amazon-bedrock-invocationMetrics` on the last chunk, else the model's own counters.
pub fn usage_from_chunks(chunks: &[Value]) -> Option<TokenUsage> {
    for c in chunks.iter().rev() {
        if let Some(m) = c.get("amazon-bedrock-invocationMetrics") {
            let mut t = TokenUsage::new(
                u(m, &["inputTokenCount"]).unwrap_or(0),
                u(m, &["outputTokenCount"]).unwrap_or(0),
            );
            t.cache_read_input_tokens = u(m, &["cacheReadInputTokenCount"]);
            t.cache_write_input_tokens = u(m, &["cacheWriteInputTokenCount"]);
            return Some(t);
        }
    }
    // Anthropic without Bedrock metrics: message_start has input, message_delta has output.
    let input = chunks
        .iter()
        .find_map(|c| u(c, &["message", "usage", "input_tokens"]));
    let output = chunks
        .iter()
        .rev()
        .find_map(|c| u(c, &["usage", "output_tokens"]));
    match (input, output) {
        (Some(i), Some(o)) => Some(TokenUsage::new(i, o)),
        _ => None,
    }
}

/// The prompt text of a native body (for the mock and for estimates).
pub fn prompt_text(body: &Value) -> String {
    let mut out = String::new();
    if let Some(s) = body.get("inputText").and_then(Value::as_str) {
        out.push_str(s);
    }
    if let Some(s) = body.get("prompt").and_then(Value::as_str) {
        out.push_str(s);
    }
    if let Some(texts) = body.get("texts").and_then(Value::as_array) {
        for t in texts.iter().filter_map(Value::as_str) {
            out.push_str(t);
            out.push('\n');
        }
    }
    if let Some(s) = body.get("system").and_then(Value::as_str) {
        out.push_str(s);
        out.push('\n');
    }
    if let Some(msgs) = body.get("messages").and_then(Value::as_array) {
        for m in msgs {
            match m.get("content") {
                Some(Value::String(s)) => {
                    out.push_str(s);
                    out.push('\n');
                }
                Some(Value::Array(parts)) => {
                    for p in parts {
                        if let Some(t) = p.get("text").and_then(Value::as_str) {
                            out.push_str(t);
                            out.push('\n');
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// A rough token estimate: one token per four characters, at least one.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn families() {
        assert_eq!(
            family(
                "anthropic.claude-3-haiku-20240307-v1:0",
                &json!({"anthropic_version":"bedrock-2023-05-31","messages":[]})
            ),
            Some(Family::AnthropicMessages)
        );
        assert_eq!(
            family("amazon.titan-text-express-v1", &json!({"inputText":"x"})),
            Some(Family::TitanText)
        );
        assert_eq!(
            family("amazon.titan-embed-text-v2:0", &json!({"inputText":"x"})),
            Some(Family::TitanEmbed)
        );
        assert_eq!(
            family("cohere.embed-english-v3", &json!({"texts":["x"]})),
            Some(Family::CohereEmbed)
        );
        assert_eq!(
            family("meta.llama3-8b-instruct-v1:0", &json!({"prompt":"x"})),
            Some(Family::Prompt)
        );
        assert_eq!(family("x", &json!({"foo":1})), None);
    }

    #[test]
    fn usage() {
        assert_eq!(
            usage_from_response(&json!({"usage":{"input_tokens":3,"output_tokens":5}})),
            Some(TokenUsage::new(3, 5))
        );
        assert_eq!(
            usage_from_response(&json!({"inputTextTokenCount":3,"results":[{"tokenCount":7}]})),
            Some(TokenUsage::new(3, 7))
        );
        assert_eq!(
            usage_from_chunks(&[
                json!({"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":571,"outputTokenCount":281}})
            ]),
            Some(TokenUsage::new(571, 281))
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod validate_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn anthropic_bodies_are_checked_as_bedrock_does() {
        let ok = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "text", "text": "yo"}]}]});
        assert_eq!(validate(Family::AnthropicMessages, &ok), Ok(()));
        let with = |k: &str, v: Value| {
            let mut b = ok.clone();
            b[k] = v;
            validate(Family::AnthropicMessages, &b).unwrap_err()
        };
        assert!(with("messages", json!([])).contains("at least one message"));
        assert!(with("max_tokens", json!(0)).contains("max_tokens"));
        assert!(
            with("messages", json!([{"role": "system", "content": "x"}]))
                .contains("'user' or 'assistant'")
        );
        assert!(
            with("messages", json!([{"role": "assistant", "content": "x"}]))
                .contains("first message")
        );
        assert!(with("messages", json!([{"role": "user"}])).contains("content: Field required"));
        assert!(with("messages", json!("x")).contains("JSONArray"));
        let mut b = ok.clone();
        b.as_object_mut().unwrap().remove("max_tokens");
        assert!(validate(Family::AnthropicMessages, &b)
            .unwrap_err()
            .contains("required key [max_tokens]"));
        assert!(validate(Family::TitanText, &json!({"inputText": 3}))
            .unwrap_err()
            .contains("String"));
        assert_eq!(validate(Family::Prompt, &json!({"prompt": "p"})), Ok(()));
        assert!(validate(Family::Nova, &json!({"messages": []})).is_err());
    }
}
