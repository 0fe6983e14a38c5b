//! Response and body helpers shared by the handlers.

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::{HeaderValue, StatusCode};
use logbook_wire::aws::{error_body, error_type_header, AwsErrorCode};
use logbook_wire::openai::OpenAiError;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `x-amzn-RequestId`
pub const REQUEST_ID: &str = "x-amzn-requestid";

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Over the limit.
    TooLarge(usize),
    /// The client went away or the stream broke.
    Broken(String),
    /// Too many request bytes are buffered across requests right now.
    Busy,
    /// The body did not arrive in time.
    TimedOut,
}

impl BodyError {
    /// Why, in words.
    pub fn describe(&self) -> String {
        match self {
            BodyError::TooLarge(n) => format!("the body is over the limit (at least {n} bytes)"),
            BodyError::Broken(why) => why.clone(),
            BodyError::Busy => "too many request bytes are in flight; retry later".into(),
            BodyError::TimedOut => "the request body did not arrive in time".into(),
        }
    }
}

/// Bytes of request bodies buffered before their signature is verified, across all
/// requests: an unauthenticated flood cannot take more memory than this.
#[derive(Debug, Clone)]
pub struct BufferBudget {
    sem: Arc<Semaphore>,
}

/// A share of the [`BufferBudget`], returned when dropped.
#[derive(Debug, Default)]
pub struct BufferPermit {
    permit: Option<OwnedSemaphorePermit>,
    kib: usize,
}

impl BufferBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        BufferBudget {
            sem: Arc::new(Semaphore::new((bytes / 1024).max(1))),
        }
    }

    /// KiB not taken now.
    pub fn available_kib(&self) -> usize {
        self.sem.available_permits()
    }

    /// Grow `p` to cover `bytes`, or fail at once when the budget has no room.
    fn cover(&self, p: &mut BufferPermit, bytes: usize) -> Result<(), BodyError> {
        let kib = bytes.div_ceil(1024);
        if kib <= p.kib {
            return Ok(());
        }
        let more = u32::try_from(kib - p.kib).map_err(|_| BodyError::Busy)?;
        let got = self
            .sem
            .clone()
            .try_acquire_many_owned(more)
            .map_err(|_| BodyError::Busy)?;
        match &mut p.permit {
            Some(have) => have.merge(got),
            None => p.permit = Some(got),
        }
        p.kib = kib;
        Ok(())
    }
}

/// Read a body up to `limit` bytes by `deadline`, holding a share of `budget` for every
/// byte read (declared lengths are reserved up front, so a flood is refused before it is
/// read). The permit must be kept as long as the bytes are.
pub async fn read_body_guarded(
    body: Body,
    limit: usize,
    declared: Option<usize>,
    deadline: tokio::time::Instant,
    budget: &BufferBudget,
) -> Result<(Bytes, BufferPermit), BodyError> {
    if let Some(n) = declared {
        if n > limit {
            return Err(BodyError::TooLarge(n));
        }
    }
    let mut permit = BufferPermit::default();
    budget.cover(&mut permit, declared.unwrap_or(0))?;
    let mut out = BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    let mut s = body.into_data_stream();
    loop {
        let next = tokio::time::timeout_at(deadline, s.next())
            .await
            .map_err(|_| BodyError::TimedOut)?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| BodyError::Broken(e.to_string()))?;
        let total = out.len() + chunk.len();
        if total > limit {
            return Err(BodyError::TooLarge(total));
        }
        budget.cover(&mut permit, total)?;
        out.extend_from_slice(&chunk);
    }
    Ok((out.freeze(), permit))
}

/// The body, failing with a timeout error if it has not all arrived by `deadline`.
pub fn with_deadline(body: Body, deadline: tokio::time::Instant) -> Body {
    let s = body.into_data_stream();
    let st = futures::stream::unfold(Some(s), move |state| async move {
        let mut s = state?;
        match tokio::time::timeout_at(deadline, s.next()).await {
            Ok(Some(Ok(c))) => Some((Ok(c), Some(s))),
            Ok(Some(Err(e))) => Some((Err(std::io::Error::other(e.to_string())), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the request body did not arrive in time",
                )),
                None,
            )),
        }
    });
    Body::from_stream(st)
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
/// A server-sent-events response fed by the returned channel: `text/event-stream`, no
/// caching, the request id under `id_header`.
pub fn sse_response(
    id_header: &'static str,
    request_id: &str,
) -> (
    tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::convert::Infallible>>,
    Response,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut resp = Response::new(axum::body::Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ));
    set_header(
        &mut resp,
        "content-type",
        "text/event-stream; charset=utf-8",
    );
    set_header(&mut resp, "cache-control", "no-cache");
    set_header(&mut resp, id_header, request_id);
    (tx, resp)
}

pub fn set_header(r: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

/// Start a call for an authenticated caller, noting the client's address and user agent.
pub fn begin_call(
    operation: logbook_record::Operation,
    api: &'static str,
    model_id: String,
    caller: crate::identity::Caller,
    headers: &http::HeaderMap,
    addr: std::net::SocketAddr,
) -> crate::capture::Call {
    let user_agent = headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let mut call =
        crate::capture::Call::from_client(operation, api, model_id, caller, addr.ip(), user_agent);
    // W3C Trace Context: exactly one valid `traceparent` joins the client's trace (two
    // are ignored, as the specification says of a header it cannot trust).
    let mut tp = headers.get_all("traceparent").iter();
    if let (Some(v), None) = (tp.next(), tp.next()) {
        call.trace_parent = v.to_str().ok().and_then(logbook_record::trace_parent);
    }
    call
}
