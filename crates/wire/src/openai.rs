//! OpenAI error shapes: `{"error": {"message", "type", "param", "code"}}`.

use serde_json::json;

/// An OpenAI-style error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAiError {
    /// HTTP status.
    pub status: u16,
    /// Human-readable message.
    pub message: String,
    /// `type`, e.g. `invalid_request_error`.
    pub kind: &'static str,
    /// `code`, e.g. `model_not_found`.
    pub code: Option<&'static str>,
    /// `param`, the offending request member.
    pub param: Option<String>,
}

impl OpenAiError {
    /// 400 `invalid_request_error`.
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        OpenAiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            code: None,
            param: param.map(str::to_string),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }))
        .unwrap_or_default()
    }
}
