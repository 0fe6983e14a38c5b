//! Native (InvokeModel) bodies of the model families Logbook understands: how to tell
//! them apart and where their token counts are.

use crate::converse::TokenUsage;
use serde_json::Value;

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
