//! Amazon Bedrock upstream: requests signed with SigV4 (`aws-sigv4`, signing name
//! `bedrock`), event streams decoded with `aws-smithy-eventstream`.
//!
//! Credentials: explicit in the configuration, else the standard environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), else the shared
//! credentials file (`AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`, profile
//! `AWS_PROFILE` or `default`).

use crate::converse::{ConverseRequest, ConverseResponse, Message, StreamEvent, TokenUsage};
use crate::{
    ChunkStream, ConverseEventStream, CountInput, EmbedResponse, InvokeResponse, Provider,
    ProviderError,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use logbook_wire::aws::AwsErrorCode;
use logbook_wire::eventstream::{DecodedMessage, Decoder};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

pub use logbook_wire::credentials::{parse_credentials_file, AwsCredentials};

/// Resolve credentials from the environment, then the shared credentials file.
pub fn credentials_from_environment(env: &HashMap<String, String>) -> Option<AwsCredentials> {
    logbook_wire::credentials::credentials_from(env, |p| std::fs::read_to_string(p).ok())
}

/// Percent-encode a path segment (everything but unreserved characters), as botocore does
/// for `{modelId}`.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Amazon Bedrock runtime.
pub struct BedrockProvider {
    client: reqwest::Client,
    endpoint: String,
    region: String,
    credentials: AwsCredentials,
    timeout: Duration,
}

impl std::fmt::Debug for BedrockProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BedrockProvider")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish()
    }
}

fn transport_error(e: reqwest::Error) -> ProviderError {
    crate::http::transport_error(e, AwsErrorCode::InternalServerException)
}

/// Bedrock's own error: code from `x-amzn-ErrorType` (or `__type`), message from the body.
async fn upstream_failure(resp: reqwest::Response) -> ProviderError {
    let status = resp.status().as_u16();
    let header_code = resp
        .headers()
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.bytes().await.unwrap_or_default();
    let v: Option<Value> = serde_json::from_slice(&body).ok();
    let message = v
        .as_ref()
        .and_then(|v| v.get("message").or_else(|| v.get("Message")))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(500).collect());
    let code = header_code
        .as_deref()
        .or_else(|| {
            v.as_ref()
                .and_then(|v| v.get("__type"))
                .and_then(Value::as_str)
        })
        .and_then(AwsErrorCode::parse);
    match code {
        Some(code) => ProviderError {
            code,
            message,
            upstream_status: Some(status),
        },
        None => ProviderError::from_upstream_status(status, message),
    }
}

fn exception_code(member: &str) -> AwsErrorCode {
    let mut c = member.chars();
    let upper: String = match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    };
    AwsErrorCode::parse(&upper).unwrap_or(AwsErrorCode::ModelStreamErrorException)
}

fn message_error(m: &DecodedMessage) -> Option<ProviderError> {
    if m.message_type == "event" {
        return None;
    }
    let text = m
        .json()
        .and_then(|o| o.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| m.kind.clone());
    Some(ProviderError::new(exception_code(&m.kind), text))
}

/// A ConverseStream event from a decoded frame.
pub fn converse_event(m: &DecodedMessage) -> Result<Option<StreamEvent>, ProviderError> {
    if let Some(e) = message_error(m) {
        return Err(e);
    }
    let p = m.json().unwrap_or_default();
    let idx = || {
        p.get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0) as u32
    };
    Ok(match m.kind.as_str() {
        "messageStart" => Some(StreamEvent::MessageStart {
            role: p
                .get("role")
                .and_then(Value::as_str)
                .unwrap_or("assistant")
                .into(),
        }),
        "contentBlockStart" => Some(StreamEvent::ContentBlockStart {
            index: idx(),
            start: p.get("start").cloned().unwrap_or(json!({})),
        }),
        "contentBlockDelta" => Some(StreamEvent::ContentBlockDelta {
            index: idx(),
            delta: p.get("delta").cloned().unwrap_or(json!({})),
        }),
        "contentBlockStop" => Some(StreamEvent::ContentBlockStop { index: idx() }),
        "messageStop" => Some(StreamEvent::MessageStop {
            stop_reason: p
                .get("stopReason")
                .and_then(Value::as_str)
                .unwrap_or("end_turn")
                .into(),
            additional_model_response_fields: p.get("additionalModelResponseFields").cloned(),
        }),
        "metadata" => Some(StreamEvent::Metadata {
            usage: p
                .get("usage")
                .cloned()
                .and_then(|u| serde_json::from_value::<TokenUsage>(u).ok())
                .unwrap_or_default(),
            latency_ms: p
                .get("metrics")
                .and_then(|m| m.get("latencyMs"))
                .and_then(Value::as_u64)
                .unwrap_or(0),
        }),
        _ => None,
    })
}

/// A Converse response body -> [`ConverseResponse`].
pub fn parse_converse_response(v: &Value) -> Result<ConverseResponse, ProviderError> {
    let msg = v
        .get("output")
        .and_then(|o| o.get("message"))
        .cloned()
        .ok_or_else(|| {
            ProviderError::new(
                AwsErrorCode::InternalServerException,
                "upstream Converse answer has no output.message",
            )
        })?;
    let message: Message = serde_json::from_value(msg).map_err(|e| {
        ProviderError::new(
            AwsErrorCode::InternalServerException,
            format!("upstream Converse answer not understood: {e}"),
        )
    })?;
    Ok(ConverseResponse {
        message,
        stop_reason: v
            .get("stopReason")
            .and_then(Value::as_str)
            .unwrap_or("end_turn")
            .into(),
        usage: v
            .get("usage")
            .cloned()
            .and_then(|u| serde_json::from_value(u).ok())
            .unwrap_or_default(),
        latency_ms: v
            .get("metrics")
            .and_then(|m| m.get("latencyMs"))
            .and_then(Value::as_u64)
            .unwrap_or(0),
        additional_model_response_fields: v.get("additionalModelResponseFields").cloned(),
    })
}

fn frames(
    resp: reqwest::Response,
) -> futures::stream::BoxStream<'static, Result<DecodedMessage, ProviderError>> {
    struct St {
        body: futures::stream::BoxStream<'static, Result<Bytes, reqwest::Error>>,
        dec: Decoder,
        queue: VecDeque<Result<DecodedMessage, ProviderError>>,
        done: bool,
    }
    let st = St {
        body: resp.bytes_stream().boxed(),
        dec: Decoder::new(),
        queue: VecDeque::new(),
        done: false,
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(x) = st.queue.pop_front() {
                return Some((x, st));
            }
            if st.done {
                return None;
            }
            match st.body.next().await {
                Some(Ok(b)) => match st.dec.push(&b) {
                    Ok(msgs) => st.queue.extend(msgs.into_iter().map(Ok)),
                    Err(e) => {
                        st.done = true;
                        st.queue.push_back(Err(ProviderError::new(
                            AwsErrorCode::ModelStreamErrorException,
                            format!("malformed upstream event stream: {e}"),
                        )));
                    }
                },
                Some(Err(e)) => {
                    st.done = true;
                    let mut err = transport_error(e);
                    err.code = AwsErrorCode::ModelStreamErrorException;
                    st.queue.push_back(Err(err));
                }
                None => {
                    st.done = true;
                    if !st.dec.is_empty() {
                        st.queue.push_back(Err(ProviderError::new(
                            AwsErrorCode::ModelStreamErrorException,
                            "upstream event stream ended mid-frame",
                        )));
                    }
                }
            }
        }
    })
    .boxed()
}

impl BedrockProvider {
    /// A provider for `region`, at `endpoint` (default `https://bedrock-runtime.<region>.amazonaws.com`).
    pub fn new(
        endpoint: Option<&str>,
        region: &str,
        credentials: AwsCredentials,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        let client = crate::http::client(timeout)?;
        let endpoint = endpoint
            .map(|e| e.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("https://bedrock-runtime.{region}.amazonaws.com"));
        Ok(BedrockProvider {
            client,
            endpoint,
            region: region.to_string(),
            credentials,
            timeout,
        })
    }

    /// Sign and send `POST {endpoint}/model/{model}/{action}`.
    async fn post(
        &self,
        model: &str,
        action: &str,
        body: Vec<u8>,
        accept: &str,
        stream: bool,
    ) -> Result<reqwest::Response, ProviderError> {
        let url = format!("{}/model/{}/{action}", self.endpoint, encode_segment(model));
        let host = reqwest::Url::parse(&url)
            .ok()
            .and_then(|u| {
                u.host_str().map(|h| match u.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_string(),
                })
            })
            .ok_or_else(|| {
                ProviderError::validation(format!("bad Bedrock endpoint {}", self.endpoint))
            })?;
        let headers = [
            ("host", host.as_str()),
            ("content-type", "application/json"),
            ("accept", accept),
        ];
        let signed = logbook_wire::credentials::sign_post(
            &url,
            &headers,
            &body,
            &self.credentials,
            &self.region,
            "bedrock",
            SystemTime::now(),
        )
        .map_err(ProviderError::validation)?;
        let mut rb = self.client.post(&url).body(body);
        for (k, v) in &signed {
            rb = rb.header(k, v);
        }
        if !stream {
            rb = rb.timeout(self.timeout);
        }
        let resp = rb.send().await.map_err(transport_error)?;
        if !resp.status().is_success() {
            return Err(upstream_failure(resp).await);
        }
        Ok(resp)
    }
}

fn header_u64(resp: &reqwest::Response, name: &str) -> Option<u64> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[async_trait]
impl Provider for BedrockProvider {
    fn kind(&self) -> &'static str {
        "bedrock"
    }

    /// Bedrock's own CountTokens (the body's blob is base64 in restJson).
    async fn count_tokens(&self, model: &str, input: &CountInput) -> Result<u64, ProviderError> {
        use base64::Engine;
        let input = match input {
            CountInput::Converse(req) => serde_json::json!({ "converse": req }),
            CountInput::Invoke(body) => serde_json::json!({ "invokeModel": {
                "body": base64::engine::general_purpose::STANDARD
                    .encode(serde_json::to_vec(body).unwrap_or_default())
            }}),
        };
        let body = serde_json::to_vec(&serde_json::json!({ "input": input })).unwrap_or_default();
        let v: Value = self
            .post(model, "count-tokens", body, "application/json", false)
            .await?
            .json()
            .await
            .map_err(transport_error)?;
        v.get("inputTokens").and_then(Value::as_u64).ok_or_else(|| {
            ProviderError::new(
                logbook_wire::aws::AwsErrorCode::InternalServerException,
                "Bedrock's CountTokens answer has no inputTokens",
            )
        })
    }

    async fn converse(
        &self,
        model: &str,
        req: &ConverseRequest,
    ) -> Result<ConverseResponse, ProviderError> {
        let body = serde_json::to_vec(req).unwrap_or_default();
        let v: Value = self
            .post(model, "converse", body, "application/json", false)
            .await?
            .json()
            .await
            .map_err(transport_error)?;
        parse_converse_response(&v)
    }

    async fn converse_stream(
        &self,
        model: &str,
        req: &ConverseRequest,
    ) -> Result<ConverseEventStream, ProviderError> {
        let body = serde_json::to_vec(req).unwrap_or_default();
        let resp = self
            .post(
                model,
                "converse-stream",
                body,
                "application/vnd.amazon.eventstream",
                true,
            )
            .await?;
        let s = frames(resp).filter_map(|r| {
            futures::future::ready(match r {
                Ok(m) => converse_event(&m).transpose(),
                Err(e) => Some(Err(e)),
            })
        });
        Ok(s.boxed())
    }

    async fn invoke(&self, model: &str, body: &Value) -> Result<InvokeResponse, ProviderError> {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let resp = self
            .post(model, "invoke", bytes, "application/json", false)
            .await?;
        let header_usage = match (
            header_u64(&resp, "x-amzn-bedrock-input-token-count"),
            header_u64(&resp, "x-amzn-bedrock-output-token-count"),
        ) {
            (Some(i), Some(o)) => {
                let mut u = TokenUsage::new(i, o);
                u.cache_read_input_tokens =
                    header_u64(&resp, "x-amzn-bedrock-cache-read-input-token-count");
                u.cache_write_input_tokens =
                    header_u64(&resp, "x-amzn-bedrock-cache-write-input-token-count");
                Some(u)
            }
            _ => None,
        };
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string();
        let body = resp.bytes().await.map_err(transport_error)?;
        let usage = header_usage.or_else(|| {
            serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| crate::native::usage_from_response(&v))
        });
        Ok(InvokeResponse {
            body,
            content_type,
            usage,
        })
    }

    async fn invoke_stream(&self, model: &str, body: &Value) -> Result<ChunkStream, ProviderError> {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let resp = self
            .post(
                model,
                "invoke-with-response-stream",
                bytes,
                "application/vnd.amazon.eventstream",
                true,
            )
            .await?;
        let s = frames(resp).filter_map(|r| {
            futures::future::ready(match r {
                Ok(m) => match message_error(&m) {
                    Some(e) => Some(Err(e)),
                    None if m.kind == "chunk" => m.chunk_bytes().map(|b| Ok(Bytes::from(b))),
                    None => None,
                },
                Err(e) => Some(Err(e)),
            })
        });
        Ok(s.boxed())
    }

    async fn embed(
        &self,
        model: &str,
        inputs: &[String],
        dimensions: Option<u32>,
    ) -> Result<EmbedResponse, ProviderError> {
        if model.contains("cohere.embed") {
            let body = json!({"texts": inputs, "input_type": "search_document"});
            let r = self.invoke(model, &body).await?;
            let v: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            let vectors = v
                .get("embeddings")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(floats).collect())
                .unwrap_or_default();
            return Ok(EmbedResponse {
                vectors,
                input_tokens: r.usage.map(|u| u.input_tokens).unwrap_or(0),
            });
        }
        let mut out = EmbedResponse {
            vectors: Vec::new(),
            input_tokens: 0,
        };
        for t in inputs {
            let mut body = Map::new();
            body.insert("inputText".into(), json!(t));
            if let Some(d) = dimensions {
                body.insert("dimensions".into(), json!(d));
            }
            let r = self.invoke(model, &Value::Object(body)).await?;
            let v: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            out.vectors
                .push(v.get("embedding").map(floats).unwrap_or_default());
            out.input_tokens += v
                .get("inputTextTokenCount")
                .and_then(Value::as_u64)
                .or(r.usage.map(|u| u.input_tokens))
                .unwrap_or(0);
        }
        Ok(out)
    }
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_f64)
                .map(|x| x as f32)
                .collect()
        })
        .unwrap_or_default()
}

/// Time since `start` in ms (kept for symmetry with the other providers).
pub fn elapsed_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_file_profiles() {
        let text = "[default]\naws_access_key_id = AKIA1\naws_secret_access_key = s1\n\n[profile dev]\naws_access_key_id=AKIA2\naws_secret_access_key=s2\naws_session_token=t\n";
        assert_eq!(
            parse_credentials_file(text, "default")
                .unwrap()
                .access_key_id,
            "AKIA1"
        );
        let dev = parse_credentials_file(text, "dev").unwrap();
        assert_eq!(dev.session_token.as_deref(), Some("t"));
        assert!(parse_credentials_file(text, "nope").is_none());
        assert!(!format!("{dev:?}").contains("s2"));
    }

    #[test]
    fn env_credentials_win() {
        let env = HashMap::from([
            ("AWS_ACCESS_KEY_ID".to_string(), "A".to_string()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), "S".to_string()),
        ]);
        assert_eq!(
            credentials_from_environment(&env).unwrap().access_key_id,
            "A"
        );
    }

    #[test]
    fn model_ids_are_encoded_like_botocore() {
        assert_eq!(
            encode_segment("anthropic.claude-3-haiku-20240307-v1:0"),
            "anthropic.claude-3-haiku-20240307-v1%3A0"
        );
        assert_eq!(
            encode_segment("arn:aws:bedrock:us-east-1:1:inference-profile/us.x"),
            "arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x"
        );
    }

    #[test]
    fn exception_members_map_to_codes() {
        assert_eq!(
            exception_code("throttlingException"),
            AwsErrorCode::ThrottlingException
        );
        assert_eq!(
            exception_code("whatever"),
            AwsErrorCode::ModelStreamErrorException
        );
    }
}
