//! Response and body helpers shared by the handlers.

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::{HeaderValue, StatusCode};
use logbook_wire::aws::{error_body, error_type_header, AwsErrorCode};
use logbook_wire::openai::OpenAiError;

/// `x-amzn-RequestId`
pub const REQUEST_ID: &str = "x-amzn-requestid";

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Over the limit.
    TooLarge(usize),
    /// The client went away or the stream broke.
    Broken(String),
}

/// Read a body up to `limit` bytes.
pub async fn read_body(
    body: Body,
    limit: usize,
    declared: Option<usize>,
) -> Result<Bytes, BodyError> {
    if let Some(n) = declared {
        if n > limit {
            return Err(BodyError::TooLarge(n));
        }
    }
    let mut out = BytesMut::new();
    let mut s = body.into_data_stream();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| BodyError::Broken(e.to_string()))?;
        if out.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(out.len() + chunk.len()));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

fn header(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// An AWS rest-json error response.
pub fn aws_error(code: AwsErrorCode, message: &str, request_id: &str) -> Response {
    let mut r = Response::new(Body::from(error_body(message)));
    *r.status_mut() =
        StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert("x-amzn-errortype", header(&error_type_header(code)));
    h.insert(REQUEST_ID, header(request_id));
    r
}

/// An AWS error response for a code outside the Bedrock model (authentication errors).
pub fn aws_error_code(status: u16, code: &str, message: &str, request_id: &str) -> Response {
    let mut r = Response::new(Body::from(error_body(message)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        "x-amzn-errortype",
        header(&format!(
            "{code}:http://internal.amazon.com/coral/com.amazon.coral.service/"
        )),
    );
    h.insert(REQUEST_ID, header(request_id));
    r
}

/// An OpenAI error response.
pub fn openai_error(e: &OpenAiError, request_id: &str) -> Response {
    let mut r = Response::new(Body::from(e.body()));
    *r.status_mut() = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert("x-request-id", header(request_id));
    r
}

/// The OpenAI error a Bedrock exception corresponds to.
pub fn openai_from_aws(code: AwsErrorCode, message: &str) -> OpenAiError {
    use AwsErrorCode::*;
    let (status, kind, c): (u16, &'static str, Option<&'static str>) = match code {
        ValidationException | PayloadTooLarge | UnsupportedMediaType => {
            (400, "invalid_request_error", None)
        }
        AccessDeniedException => (403, "permission_error", None),
        ResourceNotFoundException => (404, "invalid_request_error", Some("model_not_found")),
        ThrottlingException | ModelNotReadyException | ServiceQuotaExceededException => {
            (429, "rate_limit_error", Some("rate_limit_exceeded"))
        }
        ModelTimeoutException => (408, "timeout_error", Some("timeout")),
        ServiceUnavailableException => (503, "api_error", Some("service_unavailable")),
        ModelErrorException | ModelStreamErrorException => {
            (502, "api_error", Some("upstream_error"))
        }
        InternalServerException => (500, "api_error", None),
    };
    OpenAiError {
        status,
        message: message.to_string(),
        kind,
        code: c,
        param: None,
    }
}

/// A JSON success response with the request id header.
pub fn json_response(
    body: Vec<u8>,
    content_type: &str,
    request_id: &str,
    request_id_header: &'static str,
) -> Response {
    let mut r = Response::new(Body::from(body));
    let h = r.headers_mut();
    h.insert(http::header::CONTENT_TYPE, header(content_type));
    h.insert(request_id_header, header(request_id));
    r
}

/// Insert a header, ignoring values that are not valid header text.
pub fn set_header(r: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}
