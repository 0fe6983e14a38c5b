//! The CloudWatch Logs JSON 1.1 API subset (`X-Amz-Target: Logs_20140328.<Operation>`,
//! SigV4 service `logs`) over the log groups: create/list/delete, retention, event reads,
//! Logs Insights queries and `GetLogRecord`. Errors use the JSON protocol's shape
//! (`__type` + `message`, and `x-amzn-ErrorType`).

// Handlers return ready responses as their error values, as the other handlers do.
#![allow(clippy::result_large_err)]

use crate::app::Shared;
use crate::identity::Caller;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use logbook_query::{Language, QueryError, QueryRequest, QueryResult};
use logbook_store::StoreError;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

/// The target prefix of the API.
pub const TARGET_PREFIX: &str = "Logs_20140328.";
/// Default and maximum rows of a query (`StartQuery.limit`).
const QUERY_LIMIT: usize = 10_000;
/// Queries kept for `GetQueryResults`.
const KEPT_QUERIES: usize = 256;

/// A query's state.
pub struct QueryState {
    status: &'static str,
    result: Option<QueryResult>,
    language: &'static str,
    error: Option<String>,
    task: Option<tokio::task::AbortHandle>,
    seq: u64,
}

/// Queries by id.
#[derive(Default)]
pub struct Queries {
    map: Mutex<(u64, HashMap<String, QueryState>)>,
}

impl Queries {
    fn with<T>(&self, f: impl FnOnce(&mut (u64, HashMap<String, QueryState>)) -> T) -> T {
        let mut g = self.map.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }
}

/// An error in the JSON 1.1 protocol's shape.
pub fn error_response(status: u16, code: &str, message: &str) -> Response {
    err(status, code, message)
}

fn err(status: u16, code: &str, message: &str) -> Response {
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        json!({"__type": code, "message": message}).to_string(),
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    if let Ok(v) = HeaderValue::from_str(code) {
        h.insert("x-amzn-errortype", v);
    }
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        h.insert("x-amzn-requestid", v);
    }
    r
}

fn ok(v: Value) -> Response {
    let mut r = (StatusCode::OK, v.to_string()).into_response();
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        r.headers_mut().insert("x-amzn-requestid", v);
    }
    r
}

fn invalid(message: &str) -> Response {
    err(400, "InvalidParameterException", message)
}

fn store_err(e: StoreError) -> Response {
    match e {
        StoreError::NoSuchGroup(_) => err(400, "ResourceNotFoundException", &e.to_string()),
        StoreError::GroupExists(_) => err(400, "ResourceAlreadyExistsException", &e.to_string()),
        StoreError::Invalid(m) => invalid(&m),
        other => {
            tracing::error!(error = %other, "log group store failed");
            err(
                500,
                "ServiceUnavailableException",
                "The service cannot complete the request.",
            )
        }
    }
}

fn query_err(e: QueryError) -> Response {
    match e {
        QueryError::Syntax(s) => {
            let body = json!({
                "__type": "MalformedQueryException",
                "message": format!("{s}"),
                "queryCompileError": {"location": {"startCharOffset": s.offset, "endCharOffset": s.offset + 1}, "message": s.message},
            });
            let mut r = err(400, "MalformedQueryException", "");
            *r.body_mut() = axum::body::Body::from(body.to_string());
            r
        }
        QueryError::Invalid(m) => err(400, "MalformedQueryException", &m),
        QueryError::NoSuchGroup(g) => err(
            400,
            "ResourceNotFoundException",
            &format!("Log group '{g}' does not exist"),
        ),
        QueryError::LimitExceeded(m) => err(400, "LimitExceededException", &m),
        e @ QueryError::Timeout(_) => err(400, "LimitExceededException", &e.to_string()),
        QueryError::Cancelled(m) => err(503, "ServiceUnavailableException", &m),
        QueryError::Engine(m) => {
            tracing::error!(error = %m, "query failed");
            err(500, "ServiceUnavailableException", &m)
        }
    }
}

fn str_field<'a>(v: &'a Value, k: &str) -> Result<Option<&'a str>, Response> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(&format!("1 validation error detected: Value at '{k}' failed to satisfy constraint: Member must be a string"))),
    }
}

fn int_field(v: &Value, k: &str) -> Result<Option<i64>, Response> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(n) => n.as_i64().map(Some).ok_or_else(|| {
            invalid(&format!("1 validation error detected: Value at '{k}' failed to satisfy constraint: Member must be a number"))
        }),
    }
}

fn missing(k: &str) -> Response {
    invalid(&format!(
        "1 validation error detected: Value null at '{k}' failed to satisfy constraint: Member must not be null"
    ))
}

/// A required string member.
fn req_str<'a>(v: &'a Value, k: &str) -> Result<&'a str, Response> {
    str_field(v, k)?.ok_or_else(|| missing(k))
}

/// A required integer member.
fn req_int(v: &Value, k: &str) -> Result<i64, Response> {
    int_field(v, k)?.ok_or_else(|| missing(k))
}

/// The group a request names (`logGroupName`, or `logGroupIdentifier` as name or ARN).
fn group_of(v: &Value) -> Result<String, Response> {
    if let Some(n) = str_field(v, "logGroupName")? {
        return Ok(n.to_string());
    }
    if let Some(id) = str_field(v, "logGroupIdentifier")? {
        return Ok(group_from_identifier(id));
    }
    Err(missing("logGroupName"))
}

fn group_from_identifier(id: &str) -> String {
    // arn:aws:logs:region:account:log-group:NAME[:*]
    match id.split_once(":log-group:") {
        Some((_, rest)) => rest.trim_end_matches(":*").to_string(),
        None => id.to_string(),
    }
}

fn arn(s: &Shared, name: &str) -> String {
    format!(
        "arn:aws:logs:{}:{}:log-group:{name}",
        s.config.region, s.config.account_id
    )
}

/// The largest request body of this API and of `/logbook/query`.
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Read a request body of this API: over-size or broken bodies get JSON 1.1 errors.
async fn read_request(body: Body) -> Result<Bytes, Response> {
    crate::http_util::read_body(body, MAX_REQUEST_BYTES, None)
        .await
        .map_err(|e| match e {
            crate::http_util::BodyError::TooLarge(_) => err(
                413,
                "RequestEntityTooLargeException",
                &format!("The request body is larger than {MAX_REQUEST_BYTES} bytes."),
            ),
            other => err(400, "SerializationException", &other.describe()),
        })
}

/// A query answered in the request (not `StartQuery`), under the synchronous time limit.
/// The query is cancelled if this future is dropped (the client went away).
async fn run_sync(s: &Shared, req: QueryRequest) -> Result<QueryResult, Response> {
    s.engine
        .run(req, s.config.query.http_timeout)
        .await
        .map_err(query_err)
}

/// Operations that change log groups (audited in the trail, `logging:manage` needed).
pub fn is_mutating(op: &str) -> bool {
    matches!(
        op,
        "CreateLogGroup"
            | "DeleteLogGroup"
            | "PutRetentionPolicy"
            | "DeleteRetentionPolicy"
            | "PutMetricFilter"
            | "DeleteMetricFilter"
    )
}

/// What `caller` may see of bodies, as the query engine applies it.
fn content_for(s: &Shared, caller: &Caller) -> logbook_query::Content {
    use crate::identity::ContentLevel;
    match caller.permissions.content {
        ContentLevel::Full => logbook_query::Content::Full,
        ContentLevel::Metadata => logbook_query::Content::Metadata,
        ContentLevel::Redacted => logbook_query::Content::Redacted(s.analyst_redactor.clone()),
    }
}

/// The ARN of log group `name` in the caller's account and region (a caller's globs
/// never match another account's groups).
fn caller_arn(caller: &Caller, name: &str) -> String {
    format!(
        "arn:aws:logs:{}:{}:log-group:{name}",
        caller.region, caller.account_id
    )
}

fn denied(caller: &Caller, action: &str, group: Option<&str>) -> Response {
    let on = group.map_or(String::new(), |g| {
        format!(" on resource: {}", caller_arn(caller, g))
    });
    err(
        400,
        "AccessDeniedException",
        &format!(
            "User: {} is not authorized to perform: logs:{action}{on} because no identity-based policy allows the logs:{action} action",
            caller.arn
        ),
    )
}

/// May `caller` perform the read `action` on every group in `groups` (none: on any)?
fn check_scope(caller: &Caller, action: &str, groups: &[String]) -> Result<(), Response> {
    let p = &caller.permissions;
    if groups.is_empty() {
        // Actions not about one group (GetQueryResults, StopQuery): any grant of it.
        return if p.may_act(action) {
            Ok(())
        } else {
            Err(denied(caller, action, None))
        };
    }
    for g in groups {
        if !p.may_read(action, g, &caller_arn(caller, g)) {
            return Err(denied(caller, action, Some(g)));
        }
    }
    Ok(())
}

/// The groups a read request names.
fn requested_groups(op: &str, v: &Value) -> Result<Vec<String>, Response> {
    let mut out = Vec::new();
    match op {
        "FilterLogEvents" | "GetLogEvents" | "DescribeLogStreams" => out.push(group_of(v)?),
        "DescribeMetricFilters" => {
            if let Some(g) = str_field(v, "logGroupName")? {
                out.push(g.to_string());
            }
        }
        "StartQuery" => {
            if let Some(g) = str_field(v, "logGroupName")? {
                out.push(g.to_string());
            }
            for key in ["logGroupNames", "logGroupIdentifiers"] {
                if let Some(list) = v.get(key).and_then(Value::as_array) {
                    out.extend(
                        list.iter()
                            .filter_map(Value::as_str)
                            .map(group_from_identifier),
                    );
                }
            }
        }
        "GetLogRecord" => {
            if let Some((_, g)) = str_field(v, "logRecordPointer")?.and_then(|p| p.rsplit_once('@'))
            {
                out.push(g.to_string());
            }
        }
        _ => {}
    }
    Ok(out)
}

/// Operations that read records: each is a data event in the trail (CloudTrail data-event
/// style: who, which groups, the query text, how many records came back), durable before
/// the answer leaves, denied ones too.
pub fn is_data_read(op: &str) -> bool {
    matches!(
        op,
        "FilterLogEvents" | "GetLogEvents" | "StartQuery" | "GetQueryResults" | "GetLogRecord"
    )
}

/// How many records (events, rows) an answer of `op` carries.
fn records_returned(op: &str, body: &[u8]) -> Option<usize> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let n = |k: &str| v.get(k).and_then(Value::as_array).map(Vec::len);
    match op {
        "FilterLogEvents" | "GetLogEvents" => n("events"),
        "GetQueryResults" => n("results"),
        "GetLogRecord" => Some(usize::from(v.get("logRecord").is_some())),
        "StartQuery" => Some(0),
        "LogbookQuery" | "LogbookChargebackReport" => n("rows"),
        "LogbookOverview" => n("series"),
        _ => None,
    }
}

/// Audit a read of records, then answer; if the event cannot be made durable, the read
/// is refused (no unaudited read).
pub(crate) async fn audit_read(
    recorder: &crate::capture::Recorder,
    caller: Caller,
    headers: &HeaderMap,
    addr: SocketAddr,
    op: &str,
    params: Value,
    r: Response,
) -> Response {
    let (parts, body) = r.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return err(500, "ServiceUnavailableException", &e.to_string()),
    };
    let c = crate::control_api::ctx(caller, headers, addr);
    let mut ev = crate::control_api::event(&c, op, true, params, Value::Null, None);
    ev.event_source = "logs.amazonaws.com".into();
    ev.management_event = false;
    ev.event_category = "Data".into();
    if parts.status.is_success() {
        ev.additional_event_data = Some(match records_returned(op, &bytes) {
            Some(n) => json!({"recordsReturned": n}),
            None => json!({"bytesReturned": bytes.len()}),
        });
    } else {
        ev.error_code = parts
            .headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
    }
    if let Err(e) = recorder.commit_event(ev).await {
        return err(
            500,
            "ServiceUnavailableException",
            &format!("the read could not be audited: {e}"),
        );
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// The API's one route: `POST /` with `X-Amz-Target`.
pub async fn handle(
    State(s): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_request(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // The CloudWatch metrics API shares the `/` route (JSON 1.0, another target).
    if let Some(op) = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix(crate::metrics_api::TARGET_PREFIX))
    {
        let who = crate::metrics_api::Who {
            headers: &headers,
            addr,
        };
        return crate::metrics_api::handle_json(&s, &caller, op, &body, who).await;
    }
    let Some(op) = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix(TARGET_PREFIX))
        .map(str::to_string)
    else {
        return err(
            400,
            "UnknownOperationException",
            "Missing or unknown X-Amz-Target",
        );
    };
    let v: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return err(
                    400,
                    "SerializationException",
                    "The request body is not a JSON object",
                )
            }
        }
    };
    let mutating = is_mutating(&op);
    let allowed = if mutating {
        caller.permissions.logging_manage
    } else {
        caller.permissions.logs_read
    };
    if !allowed {
        let r = err(
            400,
            "AccessDeniedException",
            &format!(
                "User: {} is not authorized to perform: logs:{op} because no identity-based policy allows the logs:{op} action",
                caller.arn
            ),
        );
        return if mutating {
            audit(&s, caller, &headers, addr, &op, v, r).await
        } else if is_data_read(&op) {
            audit_read(&s.recorder, caller, &headers, addr, &op, v, r).await
        } else {
            r
        };
    }
    if !mutating && op != "DescribeLogGroups" {
        let scoped = requested_groups(&op, &v).and_then(|g| check_scope(&caller, &op, &g));
        if let Err(r) = scoped {
            return if is_data_read(&op) {
                audit_read(&s.recorder, caller, &headers, addr, &op, v, r).await
            } else {
                r
            };
        }
    }
    let content = content_for(&s, &caller);
    let audit_caller = (mutating || is_data_read(&op)).then(|| caller.clone());
    let params = v.clone();
    let r = match op.as_str() {
        "CreateLogGroup" => create(&s, &v).await,
        "DeleteLogGroup" => delete(&s, &v).await,
        "DescribeLogGroups" => describe(&s, &v, &caller),
        "PutRetentionPolicy" => retention(&s, &v, true).await,
        "DeleteRetentionPolicy" => retention(&s, &v, false).await,
        "FilterLogEvents" => events(&s, &v, true, content).await,
        "GetLogEvents" => events(&s, &v, false, content).await,
        "DescribeLogStreams" => describe_streams(&s, &v).await,
        "StartQuery" => start_query(&s, &v, content).await,
        "GetQueryResults" => query_results(&s, &v),
        "StopQuery" => stop_query(&s, &v),
        "GetLogRecord" => log_record(&s, &v, content).await,
        "PutMetricFilter" => put_metric_filter(&s, &v),
        "DescribeMetricFilters" => describe_metric_filters(&s, &v),
        "DeleteMetricFilter" => delete_metric_filter(&s, &v),
        other => Err(err(
            400,
            "UnknownOperationException",
            &format!("Logbook does not implement {other}"),
        )),
    };
    let r = r.unwrap_or_else(|e| e);
    match audit_caller {
        Some(c) if mutating => audit(&s, c, &headers, addr, &op, params, r).await,
        Some(c) => audit_read(&s.recorder, c, &headers, addr, &op, params, r).await,
        None => r,
    }
}

fn put_metric_filter(s: &Shared, v: &Value) -> Result<Response, Response> {
    let group = group_of(v)?;
    let name = str_field(v, "filterName")?.ok_or_else(|| missing("filterName"))?;
    let pattern = str_field(v, "filterPattern")?.ok_or_else(|| missing("filterPattern"))?;
    if name.is_empty() || name.chars().count() > 512 || name.contains(':') || name.contains('*') {
        return Err(invalid(
            "filterName must be 1 to 512 characters, without ':' or '*'",
        ));
    }
    if pattern.chars().count() > 1024 {
        return Err(invalid("filterPattern must be at most 1024 characters"));
    }
    if !s.store.has_group(&group) {
        return Err(err(
            400,
            "ResourceNotFoundException",
            "The specified log group does not exist.",
        ));
    }
    let insights = filter_pattern(pattern)
        .map_err(|e| invalid(&format!("Invalid metric filter pattern: {e}")))?;
    let Some(Value::Array(ts)) = v.get("metricTransformations") else {
        return Err(missing("metricTransformations"));
    };
    if ts.len() != 1 {
        return Err(invalid(
            "metricTransformations must hold exactly one transformation",
        ));
    }
    let t = &ts[0];
    if t.get("dimensions")
        .is_some_and(|d| !d.is_null() && d.as_object().is_none_or(|o| !o.is_empty()))
    {
        return Err(invalid(
            "Logbook's metric filters do not support dimensions yet",
        ));
    }
    let text = |k: &str| t.get(k).and_then(Value::as_str).map(str::to_string);
    let f = crate::metric_filters::MetricFilter {
        filter_name: name.to_string(),
        filter_pattern: pattern.to_string(),
        insights_filter: insights,
        log_group_name: group,
        metric_name: text("metricName")
            .ok_or_else(|| missing("metricTransformations.metricName"))?,
        metric_namespace: text("metricNamespace")
            .ok_or_else(|| missing("metricTransformations.metricNamespace"))?,
        metric_value: text("metricValue")
            .ok_or_else(|| missing("metricTransformations.metricValue"))?,
        default_value: t.get("defaultValue").and_then(Value::as_f64),
        unit: text("unit"),
        creation_time: logbook_store::now_ms(),
    };
    if f.metric_namespace == logbook_query::metrics::NAMESPACE
        || f.metric_namespace.starts_with("AWS/")
    {
        return Err(invalid(
            "metricNamespace may not start with AWS/ (reserved for AWS metrics)",
        ));
    }
    s.metric_filters.put(f).map_err(|e| invalid(&e))?;
    Ok(ok(json!({})))
}

fn describe_metric_filters(s: &Shared, v: &Value) -> Result<Response, Response> {
    let group = str_field(v, "logGroupName")?;
    let prefix = str_field(v, "filterNamePrefix")?;
    let metric = str_field(v, "metricName")?;
    let ns = str_field(v, "metricNamespace")?;
    let list: Vec<Value> = s
        .metric_filters
        .list()
        .into_iter()
        .filter(|f| group.is_none_or(|g| f.log_group_name == g))
        .filter(|f| prefix.is_none_or(|p| f.filter_name.starts_with(p)))
        .filter(|f| metric.is_none_or(|m| f.metric_name == m))
        .filter(|f| ns.is_none_or(|n| f.metric_namespace == n))
        .map(|f| {
            let mut t = json!({"metricName": f.metric_name, "metricNamespace": f.metric_namespace, "metricValue": f.metric_value});
            if let Some(d) = f.default_value {
                t["defaultValue"] = json!(d);
            }
            if let Some(u) = &f.unit {
                t["unit"] = json!(u);
            }
            json!({"filterName": f.filter_name, "filterPattern": f.filter_pattern, "metricTransformations": [t],
                   "creationTime": f.creation_time, "logGroupName": f.log_group_name})
        })
        .collect();
    Ok(ok(json!({"metricFilters": list})))
}

fn delete_metric_filter(s: &Shared, v: &Value) -> Result<Response, Response> {
    let group = group_of(v)?;
    let name = str_field(v, "filterName")?.ok_or_else(|| missing("filterName"))?;
    match s.metric_filters.delete(&group, name) {
        Ok(true) => Ok(ok(json!({}))),
        Ok(false) => Err(err(
            400,
            "ResourceNotFoundException",
            "The specified resource does not exist.",
        )),
        Err(e) => Err(err(500, "ServiceUnavailableException", &e)),
    }
}

/// Log group management is a management event in the trail (event source
/// `logs.amazonaws.com`), made durable before the answer leaves, like the control plane's.
async fn audit(
    s: &Shared,
    caller: Caller,
    headers: &HeaderMap,
    addr: SocketAddr,
    op: &str,
    params: Value,
    r: Response,
) -> Response {
    let c = crate::control_api::ctx(caller, headers, addr);
    let mut ev = crate::control_api::event(&c, op, false, params, Value::Null, None);
    ev.event_source = "logs.amazonaws.com".into();
    if !r.status().is_success() {
        ev.error_code = r
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
    }
    if let Err(e) = s.recorder.commit_event(ev).await {
        return err(
            500,
            "ServiceUnavailableException",
            &format!("the call could not be audited: {e}"),
        );
    }
    r
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(store_err),
        Err(e) => Err(err(500, "ServiceUnavailableException", &e.to_string())),
    }
}

async fn create(s: &Shared, v: &Value) -> Result<Response, Response> {
    let name = group_of(v)?;
    if let Some(g) = &s.shared_groups {
        g.create(&name).await.map_err(store_err)?;
        return Ok(ok(json!({})));
    }
    let store = s.store.clone();
    blocking(move || store.create_group(&name)).await?;
    Ok(ok(json!({})))
}

async fn delete(s: &Shared, v: &Value) -> Result<Response, Response> {
    let name = group_of(v)?;
    if let Some(g) = &s.shared_groups {
        g.delete(&name).await.map_err(store_err)?;
        return Ok(ok(json!({})));
    }
    let store = s.store.clone();
    blocking(move || store.delete_group(&name)).await?;
    Ok(ok(json!({})))
}

async fn retention(s: &Shared, v: &Value, put: bool) -> Result<Response, Response> {
    let name = group_of(v)?;
    let days = if put {
        let d = req_int(v, "retentionInDays")?;
        Some(u32::try_from(d).map_err(|_| {
            invalid(
                &logbook_store::validate_retention(0)
                    .err()
                    .unwrap_or_default(),
            )
        })?)
    } else {
        None
    };
    if let Some(g) = &s.shared_groups {
        g.set_retention(&name, days).await.map_err(store_err)?;
        return Ok(ok(json!({})));
    }
    let store = s.store.clone();
    blocking(move || {
        store.set_retention(&name, days)?;
        if days.is_some() {
            store.apply_retention(logbook_store::now_ms())?;
        }
        Ok(())
    })
    .await?;
    Ok(ok(json!({})))
}

fn describe(s: &Shared, v: &Value, caller: &Caller) -> Result<Response, Response> {
    let prefix = str_field(v, "logGroupNamePrefix")?.unwrap_or("");
    let pattern = str_field(v, "logGroupNamePattern")?;
    let limit = int_field(v, "limit")?.unwrap_or(50);
    if !(1..=50).contains(&limit) {
        return Err(invalid("1 validation error detected: Value at 'limit' failed to satisfy constraint: Member must have value between 1 and 50"));
    }
    let start: usize = str_field(v, "nextToken")?
        .map(|t| {
            t.parse()
                .map_err(|_| invalid("The specified nextToken is not valid."))
        })
        .transpose()?
        .unwrap_or(0);
    let all: Vec<_> = s
        .store
        .groups()
        .into_iter()
        .filter(|g| g.name.starts_with(prefix))
        // Only the groups the caller may read (none of another account's).
        .filter(|g| {
            caller
                .permissions
                .may_read("DescribeLogGroups", &g.name, &caller_arn(caller, &g.name))
        })
        .filter(|g| pattern.is_none_or(|p| g.name.to_lowercase().contains(&p.to_lowercase())))
        .collect();
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(limit as usize)
        .map(|g| {
            let mut o = json!({
                "logGroupName": g.name,
                "creationTime": g.creation_time,
                "metricFilterCount": 0,
                "arn": format!("{}:*", arn(s, &g.name)),
                "logGroupArn": arn(s, &g.name),
                "storedBytes": g.stored_bytes,
                "logGroupClass": "STANDARD",
            });
            if let Some(d) = g.retention_in_days {
                o["retentionInDays"] = json!(d);
            }
            o
        })
        .collect();
    let mut out = json!({ "logGroups": page });
    if start + (limit as usize) < all.len() {
        out["nextToken"] = json!((start + limit as usize).to_string());
    }
    Ok(ok(out))
}

/// A CloudWatch filter pattern as an Insights filter: space-separated terms (all must
/// appear; `"quoted phrases"` allowed; `-term` excludes), or one JSON comparison
/// `{ $.a.b = "v" }` (operators `= != < <= > >=`, `*` wildcard values as substrings).
pub fn filter_pattern(p: &str) -> Result<Option<String>, String> {
    let p = p.trim();
    if p.is_empty() {
        return Ok(None);
    }
    let quote = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
    if let Some(inner) = p.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        let inner = inner.trim();
        let Some(rest) = inner.strip_prefix("$.") else {
            return Err("a JSON filter pattern must look like { $.field = value }".into());
        };
        for op in ["!=", "<=", ">=", "=", "<", ">"] {
            if let Some((field, value)) = rest.split_once(op) {
                let field = field.trim();
                let value = value.trim();
                if field.is_empty() || value.is_empty() {
                    break;
                }
                let v = value.trim_matches('"');
                if op == "=" && v.contains('*') {
                    let parts: Vec<String> = v
                        .split('*')
                        .filter(|s| !s.is_empty())
                        .map(|s| format!("`{field}` like {}", quote(s)))
                        .collect();
                    return Ok(Some(if parts.is_empty() {
                        format!("ispresent(`{field}`)")
                    } else {
                        parts.join(" and ")
                    }));
                }
                let lit = if value.starts_with('"') || v.parse::<f64>().is_err() {
                    quote(v)
                } else {
                    v.to_string()
                };
                return Ok(Some(format!("`{field}` {op} {lit}")));
            }
        }
        return Err("unsupported JSON filter pattern (Logbook supports one comparison: { $.field = value })".into());
    }
    let mut terms = Vec::new();
    let mut rest = p;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let (neg, r) = match rest.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let (term, after) = if let Some(q) = r.strip_prefix('"') {
            match q.find('"') {
                Some(n) => (&q[..n], &q[n + 1..]),
                None => return Err("unterminated quoted term in the filter pattern".into()),
            }
        } else {
            let n = r.find(char::is_whitespace).unwrap_or(r.len());
            (&r[..n], &r[n..])
        };
        if !term.is_empty() {
            terms.push(format!(
                "@message {}like {}",
                if neg { "not " } else { "" },
                quote(term)
            ));
        }
        rest = after;
    }
    Ok((!terms.is_empty()).then(|| terms.join(" and ")))
}

/// A `GetLogEvents` position token: `f/` or `b/` and the event's index in the stream's
/// ascending order, zero-padded to 56 digits as CloudWatch Logs' own tokens are.
fn position_token(direction: char, index: usize) -> String {
    format!("{direction}/{index:056}")
}

/// `FilterLogEvents` and `GetLogEvents`. Events are in one total order, ascending by
/// timestamp and then request id (records share a timestamp to the second), so pages
/// neither overlap nor skip and two calls return events that tie in the same order.
///
/// `GetLogEvents` follows the service: without `startFromHead` (or with it false) the
/// *last* `limit` events, still oldest first; `nextForwardToken` / `nextBackwardToken`
/// name the index after / before the page (moto implements the same), and at either end
/// the token comes back unchanged, which is how SDK paginators stop.
async fn events(
    s: &Shared,
    v: &Value,
    filter: bool,
    content: logbook_query::Content,
) -> Result<Response, Response> {
    let name = group_of(v)?;
    if !filter {
        let stream = str_field(v, "logStreamName")?
            .map(str::to_string)
            .or(str_field(v, "logStreamNameOrArn")?
                .map(|a| a.rsplit(":log-stream:").next().unwrap_or(a).to_string()))
            .unwrap_or_default();
        if stream != logbook_query::LOG_STREAM {
            return Err(err(
                400,
                "ResourceNotFoundException",
                "The specified log stream does not exist.",
            ));
        }
    }
    let start = int_field(v, "startTime")?.unwrap_or(0);
    let end = int_field(v, "endTime")?.unwrap_or(i64::MAX / 2);
    let limit = int_field(v, "limit")?.unwrap_or(10_000);
    if !(1..=10_000).contains(&limit) {
        return Err(invalid("1 validation error detected: Value at 'limit' failed to satisfy constraint: Member must have value between 1 and 10000"));
    }
    let limit = limit as usize;
    let token = str_field(v, "nextToken")?;
    let bad_token = || invalid("The specified nextToken is not valid.");
    let mut q = String::new();
    if filter {
        if let Some(f) =
            filter_pattern(str_field(v, "filterPattern")?.unwrap_or("")).map_err(|m| invalid(&m))?
        {
            q.push_str(&format!("filter {f} | "));
        }
    }
    let request = |query: String, n: usize| QueryRequest {
        groups: vec![name.clone()],
        start_ms: start,
        end_ms: end,
        query,
        language: Language::Insights,
        limit: n,
        after_seq: s.journal.records_committed(),
        content: content.clone(),
    };
    // The page, as a range of indexes in ascending order: [lo, lo + limit).
    let lo: usize = if filter {
        match token {
            Some(t) => t.parse().map_err(|_| bad_token())?,
            None => 0,
        }
    } else {
        let head = v.get("startFromHead").and_then(Value::as_bool) == Some(true);
        match token.map(|t| t.split_once('/')) {
            Some(Some(("f", i))) => i.parse::<usize>().map_err(|_| bad_token())? + 1,
            Some(Some(("b", i))) => {
                let i: usize = i.parse().map_err(|_| bad_token())?;
                if i == 0 {
                    return Ok(ok(json!({"events": [],
                        "nextForwardToken": position_token('f', 0),
                        "nextBackwardToken": position_token('b', 0)})));
                }
                i.saturating_sub(limit)
            }
            Some(_) => return Err(bad_token()),
            None if head => 0,
            None => {
                // The tail: how many events there are, then the last `limit`.
                let r = run_sync(s, request(format!("{q}stats count(*) as n"), 1)).await?;
                let n: usize = r
                    .rows
                    .first()
                    .and_then(|row| row.first().cloned().flatten())
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                n.saturating_sub(limit)
            }
        }
    };
    // A backward page ends just before the token's index.
    let hi = match token.and_then(|t| t.strip_prefix("b/")).filter(|_| !filter) {
        Some(i) => i.parse::<usize>().map_err(|_| bad_token())?,
        None => lo + limit,
    };
    q.push_str("fields @timestamp, @message, requestId | sort @timestamp asc, requestId asc");
    let r = run_sync(s, request(q, hi + usize::from(filter))).await?;
    let more = filter && r.rows.len() > hi;
    let evs: Vec<Value> = r
        .rows
        .iter()
        .take(hi)
        .skip(lo)
        .map(|row| {
            let ts = row
                .first()
                .cloned()
                .flatten()
                .and_then(|t| display_to_millis(&t))
                .unwrap_or(0);
            let mut e = json!({
                "timestamp": ts,
                "message": row.get(1).cloned().flatten().unwrap_or_default(),
                "ingestionTime": ts,
            });
            if filter {
                e["logStreamName"] = json!(logbook_query::LOG_STREAM);
                e["eventId"] = json!(row.get(2).cloned().flatten().unwrap_or_default());
            }
            e
        })
        .collect();
    let out = if filter {
        let mut o = json!({"events": evs, "searchedLogStreams": [{"logStreamName": logbook_query::LOG_STREAM, "searchedCompletely": !more}]});
        if more {
            o["nextToken"] = json!(hi.to_string());
        }
        o
    } else if evs.is_empty() {
        // Past the end going forward: the last event's position, so the token comes back
        // unchanged and the paginator stops; an empty stream: position 0.
        let at = if token.is_some_and(|t| t.starts_with("f/")) {
            r.rows.len().saturating_sub(1)
        } else {
            0
        };
        json!({"events": evs, "nextForwardToken": position_token('f', at), "nextBackwardToken": position_token('b', at)})
    } else {
        json!({"events": evs,
            "nextForwardToken": position_token('f', lo + evs.len() - 1),
            "nextBackwardToken": position_token('b', lo)})
    };
    Ok(ok(out))
}

/// `DescribeLogStreams`: a log group holds one stream, `aws/bedrock/modelinvocations`
/// (the name Bedrock writes to), with its first and last event times.
async fn describe_streams(s: &Shared, v: &Value) -> Result<Response, Response> {
    let name = group_of(v)?;
    let Some(group) = s.store.groups().into_iter().find(|g| g.name == name) else {
        return Err(err(
            400,
            "ResourceNotFoundException",
            "The specified log group does not exist.",
        ));
    };
    let limit = int_field(v, "limit")?.unwrap_or(50);
    if !(1..=50).contains(&limit) {
        return Err(invalid("1 validation error detected: Value at 'limit' failed to satisfy constraint: Member must have value between 1 and 50"));
    }
    match str_field(v, "orderBy")? {
        None | Some("LogStreamName") | Some("LastEventTime") => {}
        Some(o) => {
            return Err(invalid(&format!(
                "1 validation error detected: Value '{o}' at 'orderBy' failed to satisfy constraint: Member must satisfy enum value set: [LogStreamName, LastEventTime]"
            )))
        }
    }
    let prefix = str_field(v, "logStreamNamePrefix")?.unwrap_or("");
    if !prefix.is_empty() && str_field(v, "orderBy")? == Some("LastEventTime") {
        return Err(invalid(
            "Cannot order by LastEventTime with a logStreamNamePrefix.",
        ));
    }
    // One stream: a token means the (only) page was already returned.
    if !logbook_query::LOG_STREAM.starts_with(prefix) || str_field(v, "nextToken")?.is_some() {
        return Ok(ok(json!({"logStreams": []})));
    }
    let after_seq = s.journal.records_committed();
    let r = run_sync(
        s,
        QueryRequest {
            groups: vec![name.clone()],
            start_ms: 0,
            end_ms: i64::MAX / 2,
            query: "stats min(@timestamp) as first, max(@timestamp) as last, count(*) as n".into(),
            language: Language::Insights,
            limit: 1,
            after_seq,
            content: Default::default(),
        },
    )
    .await?;
    let cell = |i: usize| r.rows.first().and_then(|row| row.get(i).cloned().flatten());
    let mut stream = json!({
        "logStreamName": logbook_query::LOG_STREAM,
        "creationTime": group.creation_time,
        "arn": format!("{}:log-stream:{}", arn(s, &name), logbook_query::LOG_STREAM),
        "storedBytes": 0,
    });
    let events: u64 = cell(2).and_then(|n| n.parse().ok()).unwrap_or(0);
    if events > 0 {
        if let (Some(first), Some(last)) = (
            cell(0).and_then(|t| display_to_millis(&t)),
            cell(1).and_then(|t| display_to_millis(&t)),
        ) {
            stream["firstEventTimestamp"] = json!(first);
            stream["lastEventTimestamp"] = json!(last);
            stream["lastIngestionTime"] = json!(last);
        }
    }
    Ok(ok(json!({"logStreams": [stream]})))
}

/// `2025-03-11 00:38:02.000` → epoch ms.
fn display_to_millis(s: &str) -> Option<i64> {
    logbook_store::schema::parse_millis(&format!("{}Z", s.replacen(' ', "T", 1)))
}

async fn start_query(
    s: &Shared,
    v: &Value,
    content: logbook_query::Content,
) -> Result<Response, Response> {
    let language = str_field(v, "queryLanguage")?.unwrap_or("CWLI");
    let lang = match language {
        "CWLI" => Language::Insights,
        "SQL" => Language::Sql,
        other => {
            return Err(invalid(&format!(
                "queryLanguage {other} is not supported (CWLI or SQL)"
            )))
        }
    };
    let query = req_str(v, "queryString")?.to_string();
    let start = req_int(v, "startTime")?;
    let end = req_int(v, "endTime")?;
    if end < start {
        return Err(invalid(
            "endTime must be greater than or equal to startTime",
        ));
    }
    let limit = int_field(v, "limit")?.unwrap_or(QUERY_LIMIT as i64);
    if !(1..=QUERY_LIMIT as i64).contains(&limit) {
        return Err(invalid("1 validation error detected: Value at 'limit' failed to satisfy constraint: Member must have value between 1 and 10000"));
    }
    let mut groups: Vec<String> = Vec::new();
    if let Some(g) = str_field(v, "logGroupName")? {
        groups.push(g.to_string());
    }
    for key in ["logGroupNames", "logGroupIdentifiers"] {
        if let Some(list) = v.get(key).and_then(Value::as_array) {
            for g in list {
                let g = g
                    .as_str()
                    .ok_or_else(|| invalid(&format!("{key} must be a list of strings")))?;
                groups.push(group_from_identifier(g));
            }
        }
    }
    if groups.is_empty() && lang == Language::Insights {
        return Err(invalid(
            "Name a log group: logGroupName, logGroupNames or logGroupIdentifiers",
        ));
    }
    for g in &groups {
        if !s.store.has_group(g) {
            return Err(err(
                400,
                "ResourceNotFoundException",
                &format!(
                    "Log group '{g}' does not exist for account ID '{}'",
                    s.config.account_id
                ),
            ));
        }
    }
    if query.chars().count() > s.config.query.limits.max_query_chars {
        return Err(invalid(&format!("1 validation error detected: Value at 'queryString' failed to satisfy constraint: Member must have length less than or equal to {}", s.config.query.limits.max_query_chars)));
    }
    if lang == Language::Insights {
        logbook_query::insights::parse(&query).map_err(|e| query_err(QueryError::Syntax(e)))?;
    }
    let req = QueryRequest {
        groups,
        start_ms: start.saturating_mul(1000),
        end_ms: end.saturating_mul(1000).saturating_add(999),
        query,
        language: lang,
        limit: limit as usize,
        after_seq: s.journal.records_committed(),
        content,
    };
    // Refused at once when too many queries are in flight, as CloudWatch does.
    let admission = s.engine.admit(&req).map_err(query_err)?;
    let id = uuid::Uuid::new_v4().to_string();
    let lang_name = if lang == Language::Sql { "SQL" } else { "CWLI" };
    s.queries.with(|(seq, m)| {
        *seq += 1;
        m.insert(
            id.clone(),
            QueryState {
                status: "Running",
                result: None,
                language: lang_name,
                error: None,
                task: None,
                seq: *seq,
            },
        );
        if m.len() > KEPT_QUERIES {
            if let Some(old) = m
                .iter()
                .filter(|(_, q)| q.status != "Running")
                .min_by_key(|(_, q)| q.seq)
                .map(|(k, _)| k.clone())
            {
                m.remove(&old);
            }
        }
    });
    let st = s.clone();
    let qid = id.clone();
    let timeout = s.config.query.start_query_timeout;
    // Aborting this task (StopQuery) drops the query's future, which cancels the query.
    let task = tokio::spawn(async move {
        let r = st.engine.run_admitted(admission, req, timeout).await;
        st.queries.with(|(_, m)| {
            if let Some(q) = m.get_mut(&qid) {
                if q.status != "Running" {
                    return;
                }
                match r {
                    Ok(res) => {
                        q.status = "Complete";
                        q.result = Some(res);
                    }
                    Err(e @ QueryError::Timeout(_)) => {
                        q.status = "Timeout";
                        q.error = Some(e.to_string());
                    }
                    Err(e) => {
                        q.status = "Failed";
                        q.error = Some(e.to_string());
                    }
                }
            }
        });
    });
    s.queries.with(|(_, m)| {
        if let Some(q) = m.get_mut(&id) {
            q.task = Some(task.abort_handle());
        }
    });
    Ok(ok(json!({ "queryId": id })))
}

fn query_results(s: &Shared, v: &Value) -> Result<Response, Response> {
    let id = req_str(v, "queryId")?;
    s.queries.with(|(_, m)| {
        let Some(q) = m.get(id) else {
            return Err(err(
                400,
                "ResourceNotFoundException",
                "Query does not exist.",
            ));
        };
        let (results, stats) = match &q.result {
            Some(r) => (
                r.rows
                    .iter()
                    .map(|row| {
                        r.columns
                            .iter()
                            .zip(row)
                            .filter_map(|(c, v)| {
                                v.as_ref().map(|v| json!({"field": c, "value": v}))
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>(),
                json!({
                    "recordsMatched": r.stats.records_matched as f64,
                    "recordsScanned": r.stats.records_scanned as f64,
                    "bytesScanned": r.stats.bytes_scanned as f64,
                }),
            ),
            None => (
                Vec::new(),
                json!({"recordsMatched": 0.0, "recordsScanned": 0.0, "bytesScanned": 0.0}),
            ),
        };
        if let Some(e) = &q.error {
            tracing::info!(query = %id, error = %e, "query failed");
        }
        Ok(ok(json!({
            "queryLanguage": q.language,
            "results": results,
            "statistics": stats,
            "status": q.status,
        })))
    })
}

fn stop_query(s: &Shared, v: &Value) -> Result<Response, Response> {
    let id = req_str(v, "queryId")?;
    s.queries.with(|(_, m)| {
        let Some(q) = m.get_mut(id) else {
            return Err(err(
                400,
                "ResourceNotFoundException",
                "Query does not exist.",
            ));
        };
        if q.status != "Running" {
            return Err(invalid(&format!(
                "Query {id} is not running (status {})",
                q.status
            )));
        }
        q.status = "Cancelled";
        if let Some(t) = q.task.take() {
            t.abort();
        }
        Ok(ok(json!({"success": true})))
    })
}

async fn log_record(
    s: &Shared,
    v: &Value,
    content: logbook_query::Content,
) -> Result<Response, Response> {
    let ptr = req_str(v, "logRecordPointer")?;
    let rec = s
        .engine
        .record(ptr.to_string(), s.config.query.http_timeout)
        .await
        .map_err(|e| match e {
            QueryError::Invalid(m) => invalid(&m),
            other => query_err(other),
        })?;
    let is_body = |k: &str| k == "@message" || k.contains("BodyJson");
    let obj: serde_json::Map<String, Value> = rec
        .into_iter()
        .filter_map(|(k, v)| match &content {
            logbook_query::Content::Full => Some((k, v)),
            logbook_query::Content::Metadata if k == "@message" => {
                Some((k, logbook_query::udf::strip_bodies(&v).unwrap_or_default()))
            }
            logbook_query::Content::Metadata => (!is_body(&k)).then_some((k, v)),
            logbook_query::Content::Redacted(r) => {
                let v = if k == "@message" {
                    String::from_utf8_lossy(&r.redact_record(v.as_bytes())).into_owned()
                } else if is_body(&k) {
                    r.redact_text(&v).into_owned()
                } else {
                    v
                };
                Some((k, v))
            }
        })
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    Ok(ok(json!({ "logRecord": obj })))
}

/// Logbook's own query endpoint: `POST /logbook/query` with
/// `{"query", "language": "insights"|"sql", "logGroups": [...], "start", "end" (epoch ms),
/// "limit"}`; answers `{"columns", "rows", "statistics"}` (rows of strings or nulls).
pub async fn http_query(
    State(s): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let v = match reader_request(&caller, body).await {
        Ok(v) => v,
        Err(r) => return audit_denied(&s, caller, &headers, addr, "LogbookQuery", r).await,
    };
    let params = audited_params(
        &v,
        &["query", "language", "logGroups", "start", "end", "limit"],
    );
    let r = match http_groups(&s, &v).and_then(|g| check_scope(&caller, "StartQuery", &g)) {
        Ok(()) => http_query_run(&s, &v, content_for(&s, &caller)).await,
        Err(r) => r,
    };
    audit_read(
        &s.recorder,
        caller,
        &headers,
        addr,
        "LogbookQuery",
        params,
        r,
    )
    .await
}

/// The parameters of a read worth keeping in its audit event.
fn audited_params(v: &Value, keys: &[&str]) -> Value {
    let mut m = serde_json::Map::new();
    for k in keys {
        if let Some(x) = v.get(*k) {
            m.insert((*k).to_string(), x.clone());
        }
    }
    Value::Object(m)
}

/// A `/logbook/*` read refused before it ran: audited when the caller lacked permission.
async fn audit_denied(
    s: &Shared,
    caller: Caller,
    headers: &HeaderMap,
    addr: SocketAddr,
    op: &str,
    r: Response,
) -> Response {
    if r.status() == http::StatusCode::FORBIDDEN {
        audit_read(&s.recorder, caller, headers, addr, op, Value::Null, r).await
    } else {
        r
    }
}

/// The groups a `/logbook/*` read names (default: its default).
fn http_groups(s: &Shared, v: &Value) -> Result<Vec<String>, Response> {
    match v.get("logGroups") {
        None | Some(Value::Null) => {
            let d = crate::config::DEFAULT_LOG_GROUP.to_string();
            Ok(if s.store.has_group(&d) {
                vec![d]
            } else {
                Vec::new()
            })
        }
        Some(Value::Array(a)) => Ok(a
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect()),
        Some(_) => Err(invalid("logGroups must be a list of strings")),
    }
}

async fn http_query_run(s: &Shared, v: &Value, content: logbook_query::Content) -> Response {
    let v = v.clone();
    let run = async {
        let query = str_field(&v, "query")?
            .ok_or_else(|| invalid("'query' is required"))?
            .to_string();
        let language = match str_field(&v, "language")?.unwrap_or("insights") {
            "insights" | "cwli" | "CWLI" => Language::Insights,
            "sql" | "SQL" => Language::Sql,
            o => {
                return Err(invalid(&format!(
                    "language {o:?}: expected insights or sql"
                )))
            }
        };
        let groups = match v.get("logGroups") {
            None | Some(Value::Null) => vec![crate::config::DEFAULT_LOG_GROUP.to_string()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|g| {
                    g.as_str()
                        .map(String::from)
                        .ok_or_else(|| invalid("logGroups must be a list of strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid("logGroups must be a list of strings")),
        };
        let now = logbook_store::now_ms();
        let req = QueryRequest {
            groups,
            start_ms: int_field(&v, "start")?.unwrap_or(now - 86_400_000),
            end_ms: int_field(&v, "end")?.unwrap_or(now),
            query,
            language,
            limit: int_field(&v, "limit")?.map_or(QUERY_LIMIT, |l| l.clamp(1, 1_000_000) as usize),
            after_seq: s.journal.records_committed(),
            content,
        };
        let r = run_sync(s, req).await?;
        Ok(ok(json!({
            "columns": r.columns,
            "rows": r.rows,
            "statistics": {"recordsMatched": r.stats.records_matched, "recordsScanned": r.stats.records_scanned, "bytesScanned": r.stats.bytes_scanned},
        })))
    };
    run.await.unwrap_or_else(|e: Response| e)
}

/// The JSON object body of a `/logbook/*` read (query, report), for a caller with
/// `logs:read`; else the error to answer.
async fn reader_request(caller: &Caller, body: Body) -> Result<Value, Response> {
    let body = read_request(body).await?;
    if !caller.permissions.logs_read {
        return Err(err(
            403,
            "AccessDeniedException",
            &format!(
                "User: {} is not authorized to read logs (permission logs:read)",
                caller.arn
            ),
        ));
    }
    match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(err(
            400,
            "SerializationException",
            "The request body is not a JSON object",
        )),
    }
}

/// `POST /logbook/report/chargeback`: the chargeback report over HTTP, with the same
/// limits as any query. Body: `{"by": ["team", "model"], "period": "month", "tz":
/// "Europe/Berlin", "start": ms, "end": ms, "format": "json|csv|html|focus",
/// "logGroups": [...]}`; every field optional (default: all log groups, all time, by
/// period only, UTC, JSON).
pub async fn http_chargeback(
    State(s): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let op = "LogbookChargebackReport";
    let v = match reader_request(&caller, body).await {
        Ok(v) => v,
        Err(r) => return audit_denied(&s, caller, &headers, addr, op, r).await,
    };
    let params = audited_params(
        &v,
        &["by", "period", "tz", "start", "end", "format", "logGroups"],
    );
    let groups = match v.get("logGroups") {
        None | Some(Value::Null) => s.store.groups().into_iter().map(|g| g.name).collect(),
        _ => http_groups(&s, &v).unwrap_or_default(),
    };
    let r = match check_scope(&caller, "StartQuery", &groups) {
        Ok(()) => http_chargeback_run(&s, &v).await,
        Err(r) => r,
    };
    audit_read(&s.recorder, caller, &headers, addr, op, params, r).await
}

async fn http_chargeback_run(s: &Shared, v: &Value) -> Response {
    use logbook_query::report::{Chargeback, Dimension, Period};
    let v = v.clone();
    let run = async {
        let q = |e: logbook_query::QueryError| invalid(&e.to_string());
        let by: Vec<String> = match v.get("by") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s.split(',').map(str::to_string).collect(),
            Some(Value::Array(a)) if a.len() <= 8 => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(String::from)
                        .ok_or_else(|| invalid("by must be a list of strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid("by must be a list of at most 8 strings")),
        };
        let spec = Chargeback {
            by: by
                .iter()
                .filter(|b| !b.trim().is_empty())
                .map(|b| Dimension::parse(b))
                .collect::<Result<_, _>>()
                .map_err(q)?,
            period: Period::parse(str_field(&v, "period")?.unwrap_or("month")).map_err(q)?,
            tz: str_field(&v, "tz")?.unwrap_or("UTC").to_string(),
        };
        let format = str_field(&v, "format")?.unwrap_or("json");
        let sql = match format {
            "focus" => spec.focus_sql(),
            "json" | "csv" | "html" => spec.sql(),
            o => {
                return Err(invalid(&format!(
                    "format {o:?}: expected json, csv, html or focus"
                )))
            }
        }
        .map_err(q)?;
        let groups = match v.get("logGroups") {
            None | Some(Value::Null) => s.store.groups().into_iter().map(|g| g.name).collect(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|g| {
                    g.as_str()
                        .map(String::from)
                        .ok_or_else(|| invalid("logGroups must be a list of strings"))
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(invalid("logGroups must be a list of strings")),
        };
        if groups.is_empty() {
            return Err(invalid("there is no log group to report on"));
        }
        let start = int_field(&v, "start")?.unwrap_or(i64::MIN / 2);
        let end = int_field(&v, "end")?.unwrap_or(i64::MAX / 2);
        let after_seq = s.journal.records_committed();
        let (text, content_type) = match format {
            "focus" => {
                let req = QueryRequest {
                    groups,
                    start_ms: start,
                    end_ms: end,
                    query: sql,
                    language: Language::Sql,
                    limit: 1_000_000,
                    after_seq,
                    content: Default::default(),
                };
                let r = run_sync(s, req).await?;
                (
                    spec.focus_csv(&r).map_err(query_err)?,
                    "text/csv; charset=utf-8",
                )
            }
            _ => {
                // From the store files' rollups where they fit, the SQL for the rest.
                let report = s
                    .engine
                    .chargeback(
                        spec.clone(),
                        groups,
                        (start, end),
                        after_seq,
                        s.config.query.http_timeout,
                    )
                    .await
                    .map_err(query_err)?;
                match format {
                    "csv" => (report.to_csv(), "text/csv; charset=utf-8"),
                    "html" => (report.to_html(), "text/html; charset=utf-8"),
                    _ => return Ok(ok(serde_json::to_value(&report).unwrap_or(Value::Null))),
                }
            }
        };
        Ok(axum::response::IntoResponse::into_response((
            [(axum::http::header::CONTENT_TYPE, content_type)],
            text,
        )))
    };
    run.await.unwrap_or_else(|e: Response| e)
}

/// `POST /logbook/report/overview`: totals, a series, cost per local day and the top
/// models, principals and teams of a range, from the store files' rollups where it can
/// (`logbook_query::overview`), under the same limits, permissions and read audit as a
/// query. Body: `{"start": ms, "end": ms, "bin": "1h" | ms, "tz": "Europe/Berlin",
/// "top": 10, "logGroups": [...]}`; default: the last 24 hours, 1-hour bins, UTC, top 10,
/// every log group.
pub async fn http_overview(
    State(s): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let op = "LogbookOverview";
    let v = match reader_request(&caller, body).await {
        Ok(v) => v,
        Err(r) => return audit_denied(&s, caller, &headers, addr, op, r).await,
    };
    let params = audited_params(&v, &["start", "end", "bin", "tz", "top", "logGroups"]);
    let groups: Result<Vec<String>, Response> = match v.get("logGroups") {
        None | Some(Value::Null) => Ok(s.store.groups().into_iter().map(|g| g.name).collect()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|g| {
                g.as_str()
                    .map(String::from)
                    .ok_or_else(|| invalid("logGroups must be a list of strings"))
            })
            .collect(),
        Some(_) => Err(invalid("logGroups must be a list of strings")),
    };
    let r = match groups.and_then(|g| check_scope(&caller, "StartQuery", &g).map(|()| g)) {
        Ok(groups) => http_overview_run(&s, &v, groups).await,
        Err(r) => r,
    };
    audit_read(&s.recorder, caller, &headers, addr, op, params, r).await
}

/// A bin as `bin()` takes it (`15m`, `1h`, `1d`) or milliseconds.
fn bin_ms(v: &Value) -> Result<i64, Response> {
    let bad = |t: &str| {
        invalid(&format!(
            "bin {t}: expected minutes, hours or days (15m, 1h, 1d) or milliseconds"
        ))
    };
    match v.get("bin") {
        None | Some(Value::Null) => Ok(3_600_000),
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| bad(&n.to_string())),
        Some(Value::String(t)) => {
            let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
            let n: i64 = num.parse().map_err(|_| bad(t))?;
            let m = match unit {
                "m" | "min" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(bad(t)),
            };
            n.checked_mul(m).ok_or_else(|| bad(t))
        }
        Some(o) => Err(bad(&o.to_string())),
    }
}

async fn http_overview_run(s: &Shared, v: &Value, groups: Vec<String>) -> Response {
    let run = async {
        let top = match v.get("top") {
            None | Some(Value::Null) => 10,
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| invalid("top must be a whole number"))?,
            Some(_) => return Err(invalid("top must be a whole number")),
        };
        if groups.is_empty() {
            return Err(invalid("there is no log group to report on"));
        }
        let now = logbook_store::now_ms();
        let req = logbook_query::overview::OverviewRequest {
            groups,
            start_ms: int_field(v, "start")?.unwrap_or(now - 86_400_000),
            end_ms: int_field(v, "end")?.unwrap_or(now),
            bin_ms: bin_ms(v)?,
            tz: str_field(v, "tz")?.unwrap_or("UTC").to_string(),
            top,
            after_seq: s.journal.records_committed(),
        };
        let r = s
            .engine
            .overview(req, s.config.query.http_timeout)
            .await
            .map_err(query_err)?;
        Ok(ok(serde_json::to_value(&r).unwrap_or(Value::Null)))
    };
    run.await.unwrap_or_else(|e: Response| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_read_as_bin_takes_them() {
        let b = |v: Value| bin_ms(&json!({ "bin": v }));
        assert_eq!(b(json!("15m")).ok(), Some(900_000));
        assert_eq!(b(json!("1h")).ok(), Some(3_600_000));
        assert_eq!(b(json!("1d")).ok(), Some(86_400_000));
        assert_eq!(b(json!(60_000)).ok(), Some(60_000));
        assert_eq!(bin_ms(&json!({})).ok(), Some(3_600_000));
        for bad in [
            json!("1w"),
            json!("h"),
            json!(""),
            json!("99999999999999999999m"),
            json!(1.5),
            json!([1]),
        ] {
            assert!(b(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn filter_patterns() {
        assert_eq!(filter_pattern("").unwrap(), None);
        assert_eq!(
            filter_pattern("ERROR timeout").unwrap().unwrap(),
            "@message like 'ERROR' and @message like 'timeout'"
        );
        assert_eq!(
            filter_pattern("\"two words\" -skip").unwrap().unwrap(),
            "@message like 'two words' and @message not like 'skip'"
        );
        assert_eq!(
            filter_pattern("{ $.modelId = \"amazon.nova\" }")
                .unwrap()
                .unwrap(),
            "`modelId` = 'amazon.nova'"
        );
        assert_eq!(
            filter_pattern("{ $.input.inputTokenCount > 100 }")
                .unwrap()
                .unwrap(),
            "`input.inputTokenCount` > 100"
        );
        assert_eq!(
            filter_pattern("{ $.modelId = \"*nova*\" }")
                .unwrap()
                .unwrap(),
            "`modelId` like 'nova'"
        );
        assert!(filter_pattern("{ modelId = 1 }").is_err());
        assert!(filter_pattern("\"open").is_err());
        assert_eq!(
            group_from_identifier("arn:aws:logs:us-east-1:123:log-group:/a/b:*"),
            "/a/b"
        );
    }
}
