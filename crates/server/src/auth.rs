//! Authentication at the front door: a middleware that verifies every caller (except
//! `/healthz`) and hands the [`Caller`] to the handlers as a request extension. SigV4
//! requests are buffered first, because the signature covers the body.

use crate::app::Shared;
use crate::config::PrincipalConfig;
use crate::http_util::{aws_error_code, openai_error, read_body_guarded, with_deadline, BodyError};
use crate::identity::{AuthFailure, Principals};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use logbook_wire::openai::OpenAiError;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;

/// The credential generated on first run when no principal is configured.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminCredentials {
    /// Principal ARN.
    pub arn: String,
    /// SigV4 access key id.
    pub access_key_id: String,
    /// SigV4 secret.
    pub secret_access_key: String,
    /// Bearer API key for OpenAI clients.
    pub api_key: String,
}

impl AdminCredentials {
    /// As a principal with every permission.
    pub fn principal(&self, account: &str) -> PrincipalConfig {
        PrincipalConfig {
            arn: self.arn.clone(),
            account_id: account.to_string(),
            access_key_id: Some(self.access_key_id.clone()),
            secret_access_key: Some(self.secret_access_key.clone()),
            api_key: Some(self.api_key.clone()),
            permissions: crate::config::all_permissions(),
            tags: Default::default(),
        }
    }
}

fn random(alphabet: &[u8], n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

/// Load `<data>/admin-credentials.json`, or create it (mode 0600). Returns the credentials
/// and whether they were created just now.
pub fn load_or_create_admin(
    data_dir: &Path,
    account: &str,
) -> std::io::Result<(AdminCredentials, bool)> {
    let path = data_dir.join("admin-credentials.json");
    if let Ok(b) = std::fs::read(&path) {
        if let Ok(c) = serde_json::from_slice::<AdminCredentials>(&b) {
            return Ok((c, false));
        }
    }
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const ANY: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let c = AdminCredentials {
        arn: format!("arn:aws:iam::{account}:user/logbook-admin"),
        access_key_id: format!("LBAK{}", random(UPPER, 16)),
        secret_access_key: random(ANY, 40),
        api_key: format!("lb-{}", random(ANY, 48)),
    };
    let tmp = data_dir.join(".admin-credentials.tmp");
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(&c).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok((c, true))
}

fn failure_response(path: &str, f: &AuthFailure) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    if path.starts_with("/service/") {
        return crate::metrics_api::error(
            crate::metrics_api::Protocol::Cbor,
            f.status(),
            f.code(),
            &f.message(),
        );
    }
    if path == "/v1/messages" || path.starts_with("/v1/messages/") {
        let message = match f {
            AuthFailure::Missing => "x-api-key header is required".to_string(),
            other => format!("invalid x-api-key ({})", other.message()),
        };
        return crate::anthropic_api::anthropic_error(401, "authentication_error", &message, &id);
    }
    if path.starts_with("/v1/") {
        openai_error(
            &OpenAiError {
                status: 401,
                message: match f {
                    AuthFailure::Missing => "You didn't provide an API key. Provide it in the Authorization header (Bearer auth).".into(),
                    other => format!("Incorrect API key provided. ({})", other.message()),
                },
                kind: "invalid_request_error",
                code: Some("invalid_api_key"),
                param: None,
            },
            &id,
        )
    } else {
        aws_error_code(f.status(), f.code(), &f.message(), &id)
    }
}

/// An error in the shape of the API the request is for: OpenAI's under `/v1/`, JSON 1.1
/// (`__type`) for the CloudWatch Logs API and `/logbook/`, rest-json elsewhere.
pub fn api_error(
    path: &str,
    headers: &http::HeaderMap,
    status: u16,
    code: &str,
    message: &str,
) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    if path.starts_with("/service/") {
        // The CloudWatch API (smithy-rpc-v2-cbor): its clients parse CBOR errors only.
        return crate::metrics_api::error(
            crate::metrics_api::Protocol::Cbor,
            status,
            code,
            message,
        );
    }
    if path == "/v1/messages" || path.starts_with("/v1/messages/") {
        let kind = match status {
            401 => "authentication_error",
            403 => "permission_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            408 | 400 => "invalid_request_error",
            _ => "api_error",
        };
        return crate::anthropic_api::anthropic_error(status, kind, message, &id);
    }
    if path.starts_with("/v1/") {
        let (kind, c) = match status {
            401 | 403 => ("invalid_request_error", Some("invalid_api_key")),
            408 => ("timeout_error", Some("timeout")),
            413 => ("invalid_request_error", Some("request_too_large")),
            429 | 503 => ("rate_limit_error", Some("rate_limit_exceeded")),
            _ => ("invalid_request_error", None),
        };
        return openai_error(
            &OpenAiError {
                status,
                message: message.to_string(),
                kind,
                code: c,
                param: None,
            },
            &id,
        );
    }
    if headers.contains_key("x-amz-target") || path.starts_with("/logbook/") {
        return crate::logs_api::error_response(status, code, message);
    }
    aws_error_code(status, code, message, &id)
}

fn body_failure(path: &str, headers: &http::HeaderMap, e: &BodyError, limit: usize) -> Response {
    match e {
        BodyError::TooLarge(n) => api_error(path, headers, 400, "ValidationException", &format!("1 validation error detected: Value at 'body' failed to satisfy constraint: Member must have length less than or equal to {limit} (got at least {n} bytes)")),
        BodyError::Busy => api_error(path, headers, 429, "ThrottlingException", "Too many request bytes are waiting for authentication; retry later."),
        BodyError::TimedOut => api_error(path, headers, 408, "RequestTimeoutException", "The request body did not arrive in time."),
        BodyError::Broken(why) => api_error(path, headers, 400, "ValidationException", &format!("request body incomplete: {why}")),
    }
}

/// The middleware. What the headers alone can refuse is refused before the body is read;
/// a SigV4 body is buffered (its hash is signed) within the shared buffer budget and the
/// body deadline; every other body must arrive by the deadline.
pub async fn authenticate(
    State(s): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        return next.run(req).await;
    }
    if crate::console::is_console(&path) {
        // The console signs in with its own session cookie; see `console::gate`.
        return crate::console::gate(&s, req, next).await;
    }
    let deadline = tokio::time::Instant::now() + s.config.body_timeout;
    let (parts, body) = req.into_parts();
    let sigv4 = Principals::is_sigv4(&parts.headers);
    let declared: Option<usize> = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if !s.principals.enforced() {
        if sigv4
            && claimed_region(&parts.headers)
                .is_some_and(|r| !logbook_wire::sigv4::valid_region(&r))
        {
            let f = AuthFailure::SigV4(logbook_wire::sigv4::AuthError::Invalid(
                "Credential should be scoped to a valid region.".into(),
            ));
            return refuse(&s, &parts, addr, &path, f).await;
        }
        let caller = s.principals.resolve(&parts.headers);
        let mut req = Request::from_parts(parts, with_deadline(body, deadline));
        req.extensions_mut().insert(caller);
        return next.run(req).await;
    }
    let uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    if sigv4 {
        // Unknown key, stale date, wrong scope or region, a session token: refused unread.
        if let Err(f) = s.principals.precheck_sigv4(&parts.headers) {
            return refuse(&s, &parts, addr, &path, f).await;
        }
        let (bytes, permit) = match read_body_guarded(
            body,
            s.config.max_body_bytes,
            declared,
            deadline,
            &s.buffers,
        )
        .await
        {
            Ok(x) => x,
            Err(e) => return body_failure(&path, &parts.headers, &e, s.config.max_body_bytes),
        };
        let result = s.principals.authenticate(
            parts.method.as_str(),
            &uri,
            parts.uri.authority().map(|a| a.as_str()),
            &parts.headers,
            &bytes,
        );
        match result {
            Ok(caller) => {
                let mut req = Request::from_parts(parts, Body::from(bytes));
                req.extensions_mut().insert(caller);
                let r = next.run(req).await;
                drop(permit);
                r
            }
            Err(f) => {
                drop(bytes);
                drop(permit);
                refuse(&s, &parts, addr, &path, f).await
            }
        }
    } else {
        match s.principals.authenticate(
            parts.method.as_str(),
            &uri,
            parts.uri.authority().map(|a| a.as_str()),
            &parts.headers,
            b"",
        ) {
            Ok(caller) => {
                let mut req = Request::from_parts(parts, with_deadline(body, deadline));
                req.extensions_mut().insert(caller);
                next.run(req).await
            }
            Err(f) => refuse(&s, &parts, addr, &path, f).await,
        }
    }
}

/// The region a SigV4 header claims, if it parses.
fn claimed_region(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| logbook_wire::sigv4::parse_authorization(a).ok())
        .map(|h| h.region)
}

/// Refuse an unauthenticated request; management calls are audited even so.
async fn refuse(
    s: &Shared,
    parts: &http::request::Parts,
    addr: SocketAddr,
    path: &str,
    f: AuthFailure,
) -> Response {
    tracing::warn!(path = %path, code = f.code(), client = %addr.ip(), "authentication failed");
    if let Some(a) = crate::control_api::Audited::of(path, parts.method.as_str(), &parts.headers) {
        crate::control_api::audit_auth_failure(s, &parts.headers, addr, &a, &f).await;
    }
    if parts.headers.contains_key("x-amz-target") {
        // JSON 1.1 clients (the CloudWatch Logs API) read the code from `__type`.
        return crate::logs_api::error_response(f.status(), f.code(), &f.message());
    }
    failure_response(path, &f)
}
