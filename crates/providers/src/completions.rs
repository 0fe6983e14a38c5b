//! The legacy OpenAI Completions API (`POST /v1/completions`), on the chat translation: the
//! prompt becomes one user message, the answer's text the completion. One prompt per
//! request; what only a completions model can do (`echo`, `suffix`, `logprobs`,
//! `best_of`, several prompts or token-id prompts, `n` > 1) is refused by name.

use crate::translate::TranslateError;
use serde_json::{json, Map, Value};

fn bad(param: &str, message: impl Into<String>) -> TranslateError {
    TranslateError {
        param: Some(param.to_string()),
        message: message.into(),
    }
}

/// A Completions request as a Chat Completions request.
pub fn completions_to_chat(body: &Value) -> Result<Value, TranslateError> {
    let b = body.as_object().ok_or_else(|| TranslateError {
        param: None,
        message: "request body must be a JSON object".into(),
    })?;
    let model = b
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("model", "you must provide a model parameter"))?;
    let prompt =
        match b.get("prompt") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                a[0].as_str().unwrap_or_default().to_string()
            }
            Some(Value::Array(_)) => return Err(bad(
                "prompt",
                "one prompt string per request (several prompts or token ids are not supported)",
            )),
            Some(_) => return Err(bad("prompt", "prompt must be a string")),
            None => return Err(bad("prompt", "prompt is required")),
        };
    for k in ["echo", "suffix", "logprobs", "best_of"] {
        if b.get(k)
            .is_some_and(|v| !v.is_null() && v != &Value::Bool(false))
        {
            return Err(bad(k, format!("{k} is not supported")));
        }
    }
    if b.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(bad("n", "n > 1 is not supported"));
    }
    let mut chat = Map::new();
    chat.insert("model".into(), json!(model));
    chat.insert(
        "messages".into(),
        json!([{"role": "user", "content": prompt}]),
    );
    // The Completions API's default is 16 tokens.
    chat.insert(
        "max_tokens".into(),
        b.get("max_tokens")
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or(json!(16)),
    );
    for k in ["temperature", "top_p", "stop", "user", "metadata"] {
        if let Some(v) = b.get(k).filter(|v| !v.is_null()) {
            chat.insert(k.into(), v.clone());
        }
    }
    if b.get("stream").and_then(Value::as_bool) == Some(true) {
        chat.insert("stream".into(), json!(true));
        let usage = b
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .cloned()
            .unwrap_or(json!(false));
        chat.insert("stream_options".into(), json!({"include_usage": usage}));
    }
    Ok(Value::Object(chat))
}

/// A chat completion (or one of its stream chunks) as a text completion (or chunk).
pub fn chat_to_completion(chat: &Value) -> Value {
    let chunk = chat.get("object").and_then(Value::as_str) == Some("chat.completion.chunk");
    let choices: Vec<Value> = chat
        .get("choices")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let text = if chunk {
                        c.pointer("/delta/content")
                    } else {
                        c.pointer("/message/content")
                    }
                    .and_then(Value::as_str)
                    .unwrap_or("");
                    json!({"text": text, "index": c.get("index").cloned().unwrap_or(json!(0)), "logprobs": null,
                           "finish_reason": c.get("finish_reason").cloned().unwrap_or(Value::Null)})
                })
                .collect()
        })
        .unwrap_or_default();
    let id = chat
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .replacen("chatcmpl-", "cmpl-", 1);
    let mut o = json!({
        "id": id,
        "object": "text_completion",
        "created": chat.get("created"),
        "model": chat.get("model"),
        "choices": choices,
    });
    if let (Some(u), Some(m)) = (
        chat.get("usage").filter(|u| !u.is_null()),
        o.as_object_mut(),
    ) {
        m.insert("usage".into(), u.clone());
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_become_one_user_message_and_answers_text() {
        let c = completions_to_chat(&json!({"model": "m", "prompt": "Once upon", "stop": ["\n"]}))
            .unwrap();
        assert_eq!(
            c["messages"],
            json!([{"role": "user", "content": "Once upon"}])
        );
        assert_eq!(c["max_tokens"], 16);
        assert_eq!(c["stop"], json!(["\n"]));
        let chat = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 5, "model": "m",
                          "choices": [{"index": 0, "message": {"content": "a time"}, "finish_reason": "length"}],
                          "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}});
        let t = chat_to_completion(&chat);
        assert_eq!(t["id"], "cmpl-1");
        assert_eq!(t["object"], "text_completion");
        assert_eq!(t["choices"][0]["text"], "a time");
        assert_eq!(t["choices"][0]["finish_reason"], "length");
        assert_eq!(t["usage"]["total_tokens"], 4);
        let chunk = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": null}]});
        assert_eq!(chat_to_completion(&chunk)["choices"][0]["text"], "a");
    }

    #[test]
    fn what_only_completion_models_do_is_refused_by_name() {
        let e = |v: Value| completions_to_chat(&v).unwrap_err().param;
        assert_eq!(
            e(json!({"model": "m", "prompt": "x", "echo": true})).as_deref(),
            Some("echo")
        );
        assert_eq!(
            e(json!({"model": "m", "prompt": ["a", "b"]})).as_deref(),
            Some("prompt")
        );
        assert_eq!(
            e(json!({"model": "m", "prompt": [1, 2]})).as_deref(),
            Some("prompt")
        );
        assert_eq!(
            e(json!({"model": "m", "prompt": "x", "n": 2})).as_deref(),
            Some("n")
        );
        assert_eq!(e(json!({"model": "m"})).as_deref(), Some("prompt"));
    }
}
