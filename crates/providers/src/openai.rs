//! OpenAI-compatible upstream (OpenAI, vLLM, Ollama, llama.cpp server, LiteLLM...):
//! Converse requests are translated to `POST {base_url}/chat/completions` and back.

use crate::converse::{ConverseRequest, ConverseResponse, StreamEvent};
use crate::translate::{chat_response_to_converse, converse_to_chat, ChunkReader};
use crate::{
    ChunkStream, ConverseEventStream, EmbedResponse, InvokeResponse, Provider, ProviderError,
};
use async_trait::async_trait;
use futures::StreamExt;
use logbook_wire::aws::AwsErrorCode;
use logbook_wire::sse::SseParser;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// An OpenAI-compatible server.
pub struct OpenAiProvider {
    client: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("OpenAiProvider")
            .field("base_url", &self.base_url)
            .finish()
    }
}

fn transport_error(e: reqwest::Error) -> ProviderError {
    crate::http::transport_error(e, AwsErrorCode::ModelErrorException)
}

async fn upstream_failure(resp: reqwest::Response) -> ProviderError {
    let (status, msg) = crate::http::error_answer(resp).await;
    ProviderError::from_upstream_status(status, format!("upstream answered {status}: {msg}"))
}

impl OpenAiProvider {
    /// A provider for `base_url` (e.g. `https://api.openai.com/v1`).
    pub fn new(
        base_url: &str,
        api_key: Option<String>,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        let client = crate::http::client(timeout)?;
        Ok(OpenAiProvider {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
            timeout,
        })
    }

    /// POST JSON with the call timeout; a non-2xx answer becomes the matching error.
    async fn send_json(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<reqwest::Response, ProviderError> {
        let resp = self
            .post(path)
            .timeout(self.timeout)
            .json(body)
            .send()
            .await
            .map_err(transport_error)?;
        if !resp.status().is_success() {
            return Err(upstream_failure(resp).await);
        }
        Ok(resp)
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let mut rb = self.client.post(format!("{}{path}", self.base_url));
        if let Some(k) = &self.api_key {
            rb = rb.bearer_auth(k);
        }
        rb
    }
}

struct StreamState {
    body: futures::stream::BoxStream<'static, Result<bytes::Bytes, reqwest::Error>>,
    sse: SseParser,
    reader: ChunkReader,
    queue: VecDeque<Result<StreamEvent, ProviderError>>,
    done: bool,
    start: Instant,
}

impl StreamState {
    fn absorb(&mut self, data: &[u8]) {
        for ev in self.sse.push(data) {
            self.on_sse(&ev.data);
        }
    }

    fn on_sse(&mut self, data: &str) {
        if self.done {
            return;
        }
        if data.trim() == "[DONE]" {
            self.close();
            return;
        }
        match serde_json::from_str::<Value>(data) {
            Ok(v) if v.get("error").is_some() => {
                let m = v["error"]
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("upstream stream error")
                    .to_string();
                self.queue.push_back(Err(ProviderError::new(
                    AwsErrorCode::ModelStreamErrorException,
                    m,
                )));
                self.done = true;
            }
            Ok(v) => self
                .queue
                .extend(self.reader.on_chunk(&v).into_iter().map(Ok)),
            Err(_) => {
                self.queue.push_back(Err(ProviderError::new(
                    AwsErrorCode::ModelStreamErrorException,
                    "upstream sent a malformed stream chunk",
                )));
                self.done = true;
            }
        }
    }

    fn close(&mut self) {
        if !self.done {
            let ms = self.start.elapsed().as_millis() as u64;
            self.queue
                .extend(self.reader.finish(ms).into_iter().map(Ok));
            self.done = true;
        }
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn kind(&self) -> &'static str {
        "openai"
    }

    async fn converse(
        &self,
        model: &str,
        req: &ConverseRequest,
    ) -> Result<ConverseResponse, ProviderError> {
        let body = converse_to_chat(model, req, false)
            .map_err(|e| ProviderError::validation(e.message))?;
        let start = Instant::now();
        let resp = self.send_json("/chat/completions", &body).await?;
        let v: Value = resp.json().await.map_err(transport_error)?;
        chat_response_to_converse(&v, start.elapsed().as_millis() as u64).map_err(|e| {
            ProviderError::new(
                AwsErrorCode::ModelErrorException,
                format!("upstream answer not understood: {}", e.message),
            )
        })
    }

    async fn converse_stream(
        &self,
        model: &str,
        req: &ConverseRequest,
    ) -> Result<ConverseEventStream, ProviderError> {
        let body =
            converse_to_chat(model, req, true).map_err(|e| ProviderError::validation(e.message))?;
        let resp = self
            .post("/chat/completions")
            .json(&body)
            .send()
            .await
            .map_err(transport_error)?;
        if !resp.status().is_success() {
            return Err(upstream_failure(resp).await);
        }
        let state = StreamState {
            body: resp.bytes_stream().boxed(),
            sse: SseParser::new(),
            reader: ChunkReader::new(),
            queue: VecDeque::new(),
            done: false,
            start: Instant::now(),
        };
        let s = futures::stream::unfold(state, |mut st| async move {
            loop {
                if let Some(x) = st.queue.pop_front() {
                    return Some((x, st));
                }
                if st.done {
                    return None;
                }
                match st.body.next().await {
                    Some(Ok(b)) => st.absorb(&b),
                    Some(Err(e)) => {
                        st.done = true;
                        let mut err = transport_error(e);
                        if err.code != AwsErrorCode::ModelTimeoutException {
                            err.code = AwsErrorCode::ModelStreamErrorException;
                        }
                        st.queue.push_back(Err(err));
                    }
                    None => {
                        if let Some(ev) = st.sse.finish() {
                            st.on_sse(&ev.data);
                        }
                        // A stream that ends without [DONE] still closes cleanly.
                        st.close();
                    }
                }
            }
        });
        Ok(s.boxed())
    }

    async fn invoke(&self, model: &str, _body: &Value) -> Result<InvokeResponse, ProviderError> {
        Err(ProviderError::validation(format!(
            "InvokeModel needs a provider that speaks the model's native body; {model} is routed to an OpenAI-compatible provider. Use Converse instead."
        )))
    }

    async fn invoke_stream(
        &self,
        model: &str,
        _body: &Value,
    ) -> Result<ChunkStream, ProviderError> {
        Err(ProviderError::validation(format!(
            "InvokeModelWithResponseStream needs a provider that speaks the model's native body; {model} is routed to an OpenAI-compatible provider. Use ConverseStream instead."
        )))
    }

    async fn embed(
        &self,
        model: &str,
        inputs: &[String],
        dimensions: Option<u32>,
    ) -> Result<EmbedResponse, ProviderError> {
        let mut body = json!({"model": model, "input": inputs, "encoding_format": "float"});
        if let (Some(d), Some(o)) = (dimensions, body.as_object_mut()) {
            o.insert("dimensions".into(), json!(d));
        }
        let resp = self.send_json("/embeddings", &body).await?;
        let v: Value = resp.json().await.map_err(transport_error)?;
        let mut data: Vec<(u64, Vec<f32>)> = v
            .get("data")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|d| {
                        let idx = d.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let vec = d
                            .get("embedding")
                            .and_then(Value::as_array)
                            .map(|e| {
                                e.iter()
                                    .filter_map(Value::as_f64)
                                    .map(|x| x as f32)
                                    .collect()
                            })
                            .unwrap_or_default();
                        (idx, vec)
                    })
                    .collect()
            })
            .unwrap_or_default();
        data.sort_by_key(|(i, _)| *i);
        Ok(EmbedResponse {
            vectors: data.into_iter().map(|(_, v)| v).collect(),
            input_tokens: v
                .get("usage")
                .and_then(|u| u.get("prompt_tokens"))
                .and_then(Value::as_u64)
                .unwrap_or(0),
        })
    }

    async fn list_models(&self) -> Vec<String> {
        let mut rb = self
            .client
            .get(format!("{}/models", self.base_url))
            .timeout(Duration::from_secs(5));
        if let Some(k) = &self.api_key {
            rb = rb.bearer_auth(k);
        }
        let Ok(resp) = rb.send().await else {
            return Vec::new();
        };
        let Ok(v) = resp.json::<Value>().await else {
            return Vec::new();
        };
        v.get("data")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.get("id").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }
}
