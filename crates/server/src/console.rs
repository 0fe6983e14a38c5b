//! The web console at `/console`: a page and its assets, embedded in the binary, and a
//! small JSON API under `/console/api/` that reaches the same handlers, permissions and
//! read audit as the public APIs.
//!
//! Sign-in takes an API key or an access key pair and answers with an HTTP-only,
//! `SameSite=Strict` session cookie scoped to `/console`, plus a CSRF token the page
//! sends back in `x-logbook-csrf` on every API call (a cross-site form cannot set a
//! header, and cannot read the token). Sessions live in memory, end after
//! `[console] session_idle_secs` without a request or `session_max_secs` after sign-in,
//! and on sign-out; a restart signs everyone out. The page runs under a strict
//! Content-Security-Policy (scripts and styles from `/console/assets/` only, no inline
//! code, no `eval`), and renders records with `textContent` only, so a prompt is text
//! whatever it contains.

use crate::app::Shared;
use crate::identity::{same_secret, AuthFailure, Caller, SignIn};
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const COOKIE: &str = "logbook_session";
/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-logbook-csrf";
/// Sessions kept at most; past it the least recently used is ended.
pub const MAX_SESSIONS: usize = 10_000;
/// Largest sign-in body read.
const MAX_SIGN_IN_BYTES: usize = 8 * 1024;
/// Trail events per console page.
pub const TRAIL_PAGE: usize = 50;

const INDEX_HTML: &str = include_str!("../console/index.html");
const APP_JS: &str = include_str!("../console/app.js");
const APP_CSS: &str = include_str!("../console/app.css");

/// The policy every console response carries.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'";

struct Session {
    caller: Caller,
    csrf: String,
    created: Instant,
    last: Instant,
}

/// The signed-in sessions, keyed by the SHA-256 of their token (the token itself is not
/// kept).
pub struct Sessions {
    inner: Mutex<HashMap<[u8; 32], Session>>,
    idle: Duration,
    max: Duration,
    cap: usize,
}

/// What a live session gives a request.
#[derive(Debug, Clone)]
pub struct Live {
    /// Who signed in.
    pub caller: Caller,
    /// The session's CSRF token.
    pub csrf: String,
    /// Seconds until the session ends if idle from now.
    pub expires_in_secs: u64,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn token() -> String {
    use rand::Rng;
    let mut b = [0u8; 32];
    rand::rng().fill(&mut b);
    hex::encode(b)
}

impl Sessions {
    /// Sessions that end after `idle` without use or `max` after creation.
    pub fn new(idle: Duration, max: Duration) -> Self {
        Sessions {
            inner: Mutex::new(HashMap::new()),
            idle,
            max,
            cap: MAX_SESSIONS,
        }
    }

    /// At most `cap` sessions (tests).
    pub fn with_cap(mut self, cap: usize) -> Self {
        self.cap = cap.max(1);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn alive(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last) < self.idle && now.duration_since(s.created) < self.max
    }

    /// Start a session: its token (for the cookie) and its CSRF token.
    pub fn create(&self, caller: Caller) -> (String, String) {
        let (t, csrf) = (token(), token());
        let now = Instant::now();
        let mut m = self.lock();
        if m.len() >= self.cap {
            m.retain(|_, s| {
                now.duration_since(s.last) < self.idle && now.duration_since(s.created) < self.max
            });
        }
        while m.len() >= self.cap {
            let Some(oldest) = m.iter().min_by_key(|(_, s)| s.last).map(|(k, _)| *k) else {
                break;
            };
            m.remove(&oldest);
        }
        m.insert(
            digest(&t),
            Session {
                caller,
                csrf: csrf.clone(),
                created: now,
                last: now,
            },
        );
        (t, csrf)
    }

    /// The live session of a token, marked used; an expired one is ended.
    pub fn touch(&self, token: &str) -> Option<Live> {
        let now = Instant::now();
        let key = digest(token);
        let mut m = self.lock();
        let alive = m.get(&key).map(|s| self.alive(s, now))?;
        if !alive {
            m.remove(&key);
            return None;
        }
        let s = m.get_mut(&key)?;
        s.last = now;
        let left = self
            .idle
            .min(self.max.saturating_sub(now.duration_since(s.created)));
        Some(Live {
            caller: s.caller.clone(),
            csrf: s.csrf.clone(),
            expires_in_secs: left.as_secs(),
        })
    }

    /// End a session.
    pub fn end(&self, token: &str) {
        self.lock().remove(&digest(token));
    }

    /// Live sessions (for status).
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.lock().values().filter(|s| self.alive(s, now)).count()
    }

    /// No live session?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The session token a request's `Cookie` header carries.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn secure(mut r: Response, cache: bool) -> Response {
    let h = r.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static(if cache { "no-cache" } else { "no-store" }),
    );
    r
}

/// A console API error: `{"code": ..., "message": ...}`.
pub fn error(status: u16, code: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    secure(
        (
            status,
            axum::Json(json!({"code": code, "message": message})),
        )
            .into_response(),
        false,
    )
}

fn not_found() -> Response {
    error(404, "NotFound", "There is no such console page.")
}

/// Is this request for the console?
pub fn is_console(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

/// The console's gate, run by the authentication middleware for every `/console` path:
/// pages, assets and sign-in pass; every API call needs a live session and its CSRF token.
pub async fn gate(s: &Shared, req: Request, next: Next) -> Response {
    if !s.config.console.enabled {
        return not_found();
    }
    // Every body must arrive by the same deadline as the APIs' bodies.
    let deadline = tokio::time::Instant::now() + s.config.body_timeout;
    let (parts, body) = req.into_parts();
    let req = Request::from_parts(parts, crate::http_util::with_deadline(body, deadline));
    let path = req.uri().path().to_string();
    if !path.starts_with("/console/api/") {
        return next.run(req).await;
    }
    if path == "/console/api/session" && req.method() == http::Method::POST {
        return next.run(req).await;
    }
    let Some(t) = cookie_token(req.headers()) else {
        return error(401, "SessionRequired", "Sign in first.");
    };
    let Some(live) = s.sessions.touch(&t) else {
        return error(
            401,
            "SessionExpired",
            "The session has ended. Sign in again.",
        );
    };
    let sent = req
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // `GET /console/api/session` hands the page its token (a new tab has none): it
    // changes nothing, and another origin cannot read its answer (no CORS) nor, with a
    // SameSite=Strict cookie, even make it signed in.
    let token_request = path == "/console/api/session" && req.method() == http::Method::GET;
    if !token_request && !same_secret(sent, &live.csrf) {
        return error(
            403,
            "CsrfTokenMismatch",
            "The request did not carry this session's CSRF token.",
        );
    }
    let mut req = req;
    req.extensions_mut().insert(live.caller.clone());
    req.extensions_mut().insert(live);
    let r = next.run(req).await;
    secure(r, false)
}

/// `GET /console`: the page.
pub async fn page() -> Response {
    secure(
        (
            [(http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
            INDEX_HTML,
        )
            .into_response(),
        true,
    )
}

/// `GET /console/assets/{name}`: the script and the style sheet.
pub async fn asset(Path(name): Path<String>) -> Response {
    let (body, ty) = match name.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return not_found(),
    };
    secure(
        ([(http::header::CONTENT_TYPE, ty)], body).into_response(),
        true,
    )
}

fn who(c: &Caller, live_csrf: &str, expires_in_secs: u64) -> Value {
    let p = &c.permissions;
    json!({
        "arn": c.arn,
        "accountId": c.account_id,
        "region": c.region,
        "csrf": live_csrf,
        "expiresInSecs": expires_in_secs,
        "permissions": {
            "logsRead": p.logs_read,
            "loggingRead": p.logging_read,
            "loggingManage": p.logging_manage,
            "content": match p.content {
                crate::identity::ContentLevel::Metadata => "metadata",
                crate::identity::ContentLevel::Redacted => "redacted",
                crate::identity::ContentLevel::Full => "full",
            },
        },
    })
}

/// `GET /console/api/session`: who is signed in (the page asks on load).
pub async fn session(Extension(live): Extension<Live>) -> Response {
    axum::Json(who(&live.caller, &live.csrf, live.expires_in_secs)).into_response()
}

fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        // Not a browser's cross-site request: those always carry Origin on a POST.
        return true;
    };
    let host = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| !host.is_empty() && rest == host)
}

/// `POST /console/api/session`: sign in with `{"apiKey": ...}` or `{"accessKeyId": ...,
/// "secretAccessKey": ...}`. A wrong credential gets one message, whatever was wrong.
/// Both outcomes are a `ConsoleLogin` event in the trail.
pub async fn sign_in(
    State(s): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let json_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !json_type || !same_origin(&headers) {
        return error(
            403,
            "CrossSiteRequest",
            "Sign-in takes a JSON body from the console's own origin.",
        );
    }
    let bytes = match axum::body::to_bytes(body, MAX_SIGN_IN_BYTES).await {
        Ok(b) => b,
        Err(_) => return error(413, "RequestTooLarge", "The sign-in request is too large."),
    };
    let v: Value = match serde_json::from_slice(&bytes) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return error(
                400,
                "SerializationException",
                "The body is not a JSON object.",
            )
        }
    };
    let text = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(String::from)
    };
    let credential = match (text("apiKey"), text("accessKeyId"), text("secretAccessKey")) {
        (Some(k), None, None) => SignIn::ApiKey(k),
        (None, Some(id), Some(secret)) => SignIn::KeyPair {
            access_key_id: id,
            secret_access_key: secret,
        },
        _ => {
            return error(
                400,
                "ValidationException",
                "Give an API key, or an access key id with its secret access key.",
            )
        }
    };
    let claimed_key = match &credential {
        SignIn::KeyPair { access_key_id, .. } => Some(access_key_id.clone()),
        SignIn::ApiKey(_) => None,
    };
    match s.principals.sign_in(&credential) {
        Ok(caller) => {
            audit_login(&s, &headers, addr, Some(caller.clone()), claimed_key, None).await;
            let (t, csrf) = s.sessions.create(caller.clone());
            let secs = s
                .config
                .console
                .session_idle
                .min(s.config.console.session_max);
            let cookie = format!(
                "{COOKIE}={t}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}",
                s.config.console.session_max.as_secs()
            );
            let mut r = axum::Json(who(&caller, &csrf, secs.as_secs())).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(http::header::SET_COOKIE, v);
            }
            secure(r, false)
        }
        Err(f) => {
            tracing::warn!(client = %addr.ip(), "console sign-in failed");
            audit_login(&s, &headers, addr, None, claimed_key, Some(&f)).await;
            error(
                401,
                "SignInFailed",
                "Sign-in failed: the key or key pair is not valid.",
            )
        }
    }
}

/// `DELETE /console/api/session`: sign out (the cookie is cleared too).
pub async fn sign_out(State(s): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(t) = cookie_token(&headers) {
        s.sessions.end(&t);
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(
        http::header::SET_COOKIE,
        HeaderValue::from_static(
            "logbook_session=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    secure(r, false)
}

/// A `ConsoleLogin` event (CloudTrail's name for it), success or failure.
async fn audit_login(
    s: &Shared,
    headers: &HeaderMap,
    addr: SocketAddr,
    caller: Option<Caller>,
    claimed_key: Option<String>,
    failure: Option<&AuthFailure>,
) {
    let known = caller.is_some();
    let mut c = caller.unwrap_or_else(|| {
        let mut anyone = s.principals.resolve(&HeaderMap::new());
        anyone.arn = String::new();
        anyone
    });
    if !known {
        c.access_key_id = claimed_key;
    }
    let ctx = crate::control_api::ctx(c, headers, addr);
    let mut ev =
        crate::control_api::event(&ctx, "ConsoleLogin", false, Value::Null, Value::Null, None);
    ev.event_source = "signin.amazonaws.com".into();
    ev.additional_event_data =
        Some(json!({"ConsoleLogin": if known { "Success" } else { "Failure" }}));
    if let Some(f) = failure {
        ev.user_identity.kind = "Unknown".into();
        ev.error_code = Some(f.code().into());
        ev.error_message = Some("Failed authentication".into());
    }
    if let Err(e) = s.recorder.commit_event(ev).await {
        tracing::error!(error = %e, "could not audit a console sign-in");
    }
}

/// `GET /console/api/alarms`: every alarm's state and the latest history (what
/// `DescribeAlarms` and `DescribeAlarmHistory` answer), for a caller with `logs:read`.
pub async fn alarms(
    State(s): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Response {
    if !caller.permissions.logs_read {
        return error(
            403,
            "AccessDeniedException",
            &format!(
                "User: {} may not read alarms (permission logs:read)",
                caller.arn
            ),
        );
    }
    let mut history = s.alarms.history();
    history.sort_by_key(|h| std::cmp::Reverse(h.timestamp_ms));
    history.truncate(200);
    let body = json!({"alarms": s.alarms.list(), "history": history});
    let r = axum::Json(body).into_response();
    crate::logs_api::audit_read(
        &s.recorder,
        caller,
        &headers,
        addr,
        "DescribeAlarms",
        Value::Null,
        r,
    )
    .await
}

/// The trail page's filter: `start`/`end` (ms), `name`, `principal`, `page` (from 0).
#[derive(Debug, Default, serde::Deserialize)]
pub struct TrailParams {
    start: Option<i64>,
    end: Option<i64>,
    name: Option<String>,
    principal: Option<String>,
    category: Option<String>,
    page: Option<usize>,
}

/// `GET /console/api/trail`: audit events, newest first, one page at a time, for a caller
/// with `logging:read` (the auditor's permission). The read is itself audited.
pub async fn trail(
    State(s): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(p): Query<TrailParams>,
) -> Response {
    if !caller.permissions.logging_read {
        return error(
            403,
            "AccessDeniedException",
            &format!(
                "User: {} may not read the trail (permission logging:read)",
                caller.arn
            ),
        );
    }
    let ms = |x: Option<i64>| {
        x.and_then(|m| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(m) * 1_000_000).ok()
        })
    };
    let filter = crate::tools::TrailFilter {
        since: ms(p.start),
        until: ms(p.end),
        event_name: p.name.clone().filter(|n| !n.is_empty()),
        principal: p.principal.clone().filter(|n| !n.is_empty()),
        category: p.category.clone().filter(|n| !n.is_empty()),
    };
    let config = s.config.clone();
    let page = p.page.unwrap_or(0).min(1_000_000);
    let found =
        tokio::task::spawn_blocking(move || crate::tools::trail_events(&config, &filter)).await;
    let events = match found {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => return error(500, "InternalServerException", &e.to_string()),
        Err(_) => return error(500, "InternalServerException", "the trail read failed"),
    };
    let total = events.len();
    let slice: Vec<Value> = events
        .into_iter()
        .rev()
        .skip(page.saturating_mul(TRAIL_PAGE))
        .take(TRAIL_PAGE)
        .collect();
    let params = json!({"start": p.start, "end": p.end, "name": p.name, "principal": p.principal, "page": page});
    let r =
        axum::Json(json!({"events": slice, "total": total, "page": page, "pageSize": TRAIL_PAGE}))
            .into_response();
    crate::logs_api::audit_read(
        &s.recorder,
        caller,
        &headers,
        addr,
        "LookupEvents",
        params,
        r,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Permissions;
    use std::sync::Arc;

    fn caller(arn: &str) -> Caller {
        Caller {
            arn: arn.into(),
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            auth: "bearer",
            access_key_id: None,
            api_key_id: None,
            permissions: Arc::new(Permissions::all()),
            tags: Default::default(),
        }
    }

    #[test]
    fn a_session_is_found_by_its_token_only_and_ends_on_sign_out() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(600));
        let (t, csrf) = s.create(caller("a"));
        assert_eq!(t.len(), 64);
        assert_ne!(t, csrf);
        let live = s.touch(&t).expect("live");
        assert_eq!(live.caller.arn, "a");
        assert_eq!(live.csrf, csrf);
        assert!(
            s.touch(&csrf).is_none(),
            "the CSRF token is not a session token"
        );
        s.end(&t);
        assert!(s.touch(&t).is_none());
    }

    #[test]
    fn an_idle_or_old_session_ends() {
        let s = Sessions::new(Duration::from_millis(30), Duration::from_secs(600));
        let (t, _) = s.create(caller("a"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(s.touch(&t).is_none(), "idle past its limit");
        let s = Sessions::new(Duration::from_secs(600), Duration::from_millis(30));
        let (t, _) = s.create(caller("a"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            s.touch(&t).is_none(),
            "older than its limit, however active"
        );
    }

    #[test]
    fn sessions_are_bounded_and_the_least_recently_used_goes_first() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(600)).with_cap(3);
        let (a, _) = s.create(caller("a"));
        std::thread::sleep(Duration::from_millis(2));
        let (b, _) = s.create(caller("b"));
        std::thread::sleep(Duration::from_millis(2));
        let (c, _) = s.create(caller("c"));
        std::thread::sleep(Duration::from_millis(2));
        assert!(s.touch(&a).is_some());
        let (d, _) = s.create(caller("d"));
        assert_eq!(s.len(), 3);
        assert!(s.touch(&b).is_none(), "b was the least recently used");
        for t in [&a, &c, &d] {
            assert!(s.touch(t).is_some());
        }
    }

    #[test]
    fn the_cookie_is_read_from_any_cookie_header_and_must_look_like_a_token() {
        let mut h = HeaderMap::new();
        let t = "ab".repeat(32);
        h.append(http::header::COOKIE, HeaderValue::from_static("x=1; y=2"));
        h.append(
            http::header::COOKIE,
            HeaderValue::from_str(&format!("z=3; {COOKIE}={t}")).expect("header"),
        );
        assert_eq!(cookie_token(&h), Some(t));
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_static("logbook_session=../../etc/passwd"),
        );
        assert_eq!(cookie_token(&h), None);
    }

    #[test]
    fn sign_in_needs_the_same_origin_when_the_browser_names_one() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::HOST,
            HeaderValue::from_static("127.0.0.1:4700"),
        );
        assert!(same_origin(&h));
        h.insert(
            http::header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:4700"),
        );
        assert!(same_origin(&h));
        h.insert(
            http::header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert(http::header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
    }

    #[test]
    fn the_page_never_carries_inline_script_or_markup_built_from_data() {
        // The CSP forbids inline script; the page must not need it.
        assert!(!INDEX_HTML.contains("<script>"));
        assert!(!INDEX_HTML.contains("onclick"));
        assert!(!APP_JS.contains("innerHTML"));
        assert!(!APP_JS.contains("outerHTML"));
        assert!(!APP_JS.contains("insertAdjacentHTML"));
        assert!(!APP_JS.contains("eval("));
        assert!(!APP_JS.contains("document.write"));
    }
}
