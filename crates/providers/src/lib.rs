//! Upstream model providers and format translation.
//!
//! The canonical conversational format inside Logbook is Bedrock's Converse API
//! ([`converse`]): every provider serves Converse (and ConverseStream); the OpenAI front
//! door translates to and from it ([`translate`]). Native-body operations (InvokeModel)
//! go to providers that understand the model's native body.
//!
//! Providers:
//! * [`mock::MockProvider`]: built in, deterministic, labelled as a mock everywhere.
//! * [`openai::OpenAiProvider`]: any OpenAI-compatible server (OpenAI, vLLM, Ollama,
//!   llama.cpp), Converse translated to chat completions and back.
//! * [`anthropic::AnthropicProvider`]: the Anthropic Messages API; Converse translated,
//!   Anthropic-body InvokeModel passed through.
//! * [`bedrock::BedrockProvider`]: Amazon Bedrock itself, SigV4-signed.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use logbook_wire::aws::AwsErrorCode;
use serde_json::Value;

pub mod anthropic;
pub mod bedrock;
pub mod completions;
pub mod converse;
mod http;
pub mod messages;
pub mod mock;
pub mod native;
pub mod openai;
pub mod responses;
pub mod translate;

pub use converse::{ConverseRequest, ConverseResponse, StreamEvent, TokenUsage};

/// A provider failure, mapped to the Bedrock exception a client should see.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ProviderError {
    /// The exception to answer with.
    pub code: AwsErrorCode,
    /// Message for the client.
    pub message: String,
    /// HTTP status the upstream answered with, if any.
    pub upstream_status: Option<u16>,
}

impl ProviderError {
    /// A new error.
    pub fn new(code: AwsErrorCode, message: impl Into<String>) -> Self {
        ProviderError {
            code,
            message: message.into(),
            upstream_status: None,
        }
    }

    /// `ValidationException`.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(AwsErrorCode::ValidationException, message)
    }

    /// Map an upstream HTTP status to the Bedrock exception a client would get.
    pub fn from_upstream_status(status: u16, message: impl Into<String>) -> Self {
        let code = match status {
            400 | 422 => AwsErrorCode::ValidationException,
            401 | 403 => AwsErrorCode::AccessDeniedException,
            404 => AwsErrorCode::ResourceNotFoundException,
            408 => AwsErrorCode::ModelTimeoutException,
            413 => AwsErrorCode::ValidationException,
            429 => AwsErrorCode::ThrottlingException,
            503 => AwsErrorCode::ServiceUnavailableException,
            500..=599 => AwsErrorCode::ModelErrorException,
            _ => AwsErrorCode::ModelErrorException,
        };
        ProviderError {
            code,
            message: message.into(),
            upstream_status: Some(status),
        }
    }
}

/// Result of a native-body invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct InvokeResponse {
    /// Response body bytes (JSON for every supported model family).
    pub body: Bytes,
    /// Its MIME type.
    pub content_type: String,
    /// Token usage, when known.
    pub usage: Option<TokenUsage>,
}

/// Result of an embeddings call.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedResponse {
    /// One vector per input.
    pub vectors: Vec<Vec<f32>>,
    /// Input tokens billed.
    pub input_tokens: u64,
}

/// A stream of Converse events.
pub type ConverseEventStream = BoxStream<'static, Result<StreamEvent, ProviderError>>;
/// A stream of native model chunks (each the JSON bytes of one chunk).
pub type ChunkStream = BoxStream<'static, Result<Bytes, ProviderError>>;

/// One upstream.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Provider type name, recorded as `logbook.providerType`.
    fn kind(&self) -> &'static str;

    /// True for the built-in mock (its answers are not from a model).
    fn is_mock(&self) -> bool {
        false
    }

    /// Converse.
    async fn converse(
        &self,
        model: &str,
        req: &ConverseRequest,
    ) -> Result<ConverseResponse, ProviderError>;

    /// ConverseStream.
    async fn converse_stream(
        &self,
        model: &str,
        req: &ConverseRequest,
    ) -> Result<ConverseEventStream, ProviderError>;

    /// InvokeModel with the model's native body.
    async fn invoke(&self, model: &str, body: &Value) -> Result<InvokeResponse, ProviderError>;

    /// InvokeModelWithResponseStream with the model's native body.
    async fn invoke_stream(&self, model: &str, body: &Value) -> Result<ChunkStream, ProviderError>;

    /// Embeddings for a list of texts.
    async fn embed(
        &self,
        model: &str,
        inputs: &[String],
        dimensions: Option<u32>,
    ) -> Result<EmbedResponse, ProviderError>;

    /// Model ids this provider knows it can serve (for `GET /v1/models`), if it can tell.
    async fn list_models(&self) -> Vec<String> {
        Vec::new()
    }

    /// CountTokens: the input tokens the model would count for this request. A provider
    /// whose upstream cannot count says so (`ValidationException`) rather than guess.
    async fn count_tokens(&self, model: &str, input: &CountInput) -> Result<u64, ProviderError> {
        let _ = input;
        Err(ProviderError::validation(format!(
            "The provider serving {model} ({}) cannot count tokens; CountTokens is served by Bedrock and the mock",
            self.kind()
        )))
    }
}

/// What CountTokens counts: a Converse request, or an InvokeModel body.
#[derive(Debug, Clone)]
pub enum CountInput {
    /// `input.converse`: messages, system, tools.
    Converse(Box<ConverseRequest>),
    /// `input.invokeModel.body`, decoded.
    Invoke(Value),
}
