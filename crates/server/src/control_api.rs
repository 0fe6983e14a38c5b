//! Bedrock's logging-configuration API (`bedrock` 2023-04-20): `PUT`, `GET`, `DELETE
//! /logging/modelinvocations`. Every call, valid or not, produces one CloudTrail-format
//! audit event, made durable through the journal before the answer leaves.

use crate::app::Shared;
use crate::http_util::{aws_error, json_response, read_body, BodyError, REQUEST_ID};
use crate::identity::Caller;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use axum::Extension;
use http::HeaderMap;
use logbook_record::layout::normalize_prefix;
use logbook_record::logging::{parse_put_request, LoggingConfig, S3Config};
use logbook_record::record_timestamp;
use logbook_record::trail::{TrailEvent, UserIdentity, EVENT_VERSION};
use logbook_wire::aws::AwsErrorCode;
use serde_json::{json, Value};
use std::net::SocketAddr;
use time::OffsetDateTime;

/// Largest control-plane request body.
const MAX_CONTROL_BODY: usize = 64 * 1024;
/// Name of the zero-byte object Put writes to prove the bucket is writable.
pub const PERMISSION_CHECK: &str = "amazon-bedrock-logs-permission-check";

pub(crate) struct Ctx {
    caller: Caller,
    request_id: String,
    ip: String,
    user_agent: String,
    time: OffsetDateTime,
}

pub(crate) fn ctx(caller: Caller, headers: &HeaderMap, addr: SocketAddr) -> Ctx {
    Ctx {
        caller,
        request_id: uuid::Uuid::new_v4().to_string(),
        ip: addr.ip().to_string(),
        user_agent: headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|u| u.chars().take(512).collect())
            .unwrap_or_default(),
        time: OffsetDateTime::now_utc(),
    }
}

pub(crate) fn event(
    c: &Ctx,
    name: &str,
    read_only: bool,
    params: Value,
    response: Value,
    error: Option<(AwsErrorCode, &str)>,
) -> TrailEvent {
    TrailEvent {
        event_version: EVENT_VERSION.into(),
        user_identity: UserIdentity {
            kind: UserIdentity::kind_of(&c.caller.arn).into(),
            arn: c.caller.arn.clone(),
            account_id: c.caller.account_id.clone(),
            access_key_id: c.caller.access_key_id.clone(),
        },
        event_time: record_timestamp(c.time),
        event_source: "bedrock.amazonaws.com".into(),
        event_name: name.into(),
        aws_region: c.caller.region.clone(),
        source_ip_address: c.ip.clone(),
        user_agent: c.user_agent.clone(),
        request_parameters: params,
        response_elements: response,
        error_code: error.map(|(code, _)| code.as_str().to_string()),
        error_message: error.map(|(_, m)| m.to_string()),
        request_id: c.request_id.clone(),
        event_id: uuid::Uuid::new_v4().to_string(),
        read_only,
        event_type: "AwsApiCall".into(),
        management_event: true,
        recipient_account_id: c.caller.account_id.clone(),
        event_category: "Management".into(),
        additional_event_data: None,
    }
}

/// Record the audit event, then answer. If the event cannot be made durable, the answer is
/// an `InternalServerException`: no unaudited control-plane call.
async fn finish(
    s: &Shared,
    c: &Ctx,
    ev: TrailEvent,
    ok: Result<Vec<u8>, (AwsErrorCode, String)>,
) -> Response {
    if let Err(e) = s.recorder.commit_event(ev).await {
        return aws_error(
            AwsErrorCode::InternalServerException,
            &format!("the call could not be audited: {e}"),
            &c.request_id,
        );
    }
    match ok {
        Ok(body) => json_response(body, "application/json", &c.request_id, REQUEST_ID),
        Err((code, msg)) => aws_error(code, &msg, &c.request_id),
    }
}

fn marker_key(s3: &S3Config, account: &str) -> String {
    let p = normalize_prefix(s3.key_prefix.as_deref().unwrap_or(""));
    let rest = format!("AWSLogs/{account}/BedrockModelInvocationLogs/{PERMISSION_CHECK}");
    if p.is_empty() {
        rest
    } else {
        format!("{p}/{rest}")
    }
}

/// Check a destination bucket the way Bedrock does: it must exist and take a write.
async fn check_bucket(s: &Shared, s3: &S3Config, account: &str) -> Result<(), String> {
    let Some(bucket) = s.buckets.get(&s3.bucket_name) else {
        return Err(format!(
            "Failed to validate permissions for S3 bucket: {}. Verify the bucket exists and that Logbook can write to it (declare it under [[buckets]] in the configuration file).",
            s3.bucket_name
        ));
    };
    bucket
        .put(&marker_key(s3, account), Vec::new())
        .await
        .map_err(|e| format!("Failed to validate permissions for S3 bucket: {}. The permission-check write failed: {e}", s3.bucket_name))
}

async fn validate(s: &Shared, cfg: &LoggingConfig, account: &str) -> Result<(), String> {
    if let Some(cw) = &cfg.cloud_watch_config {
        if let Some(client) = s.remote_log_groups.get(&cw.log_group_name) {
            // As Bedrock does: the group must exist where it lives, and be reachable.
            let why = match client.log_group_exists(&cw.log_group_name).await {
                Ok(true) => None,
                Ok(false) => Some(format!("the log group does not exist at {}", client.url())),
                Err(e) => Some(e.to_string()),
            };
            if let Some(why) = why {
                return Err(format!(
                    "Failed to validate permissions for log group: {}, with role: {}\nVerify the IAM role permissions are correct. ({why})",
                    cw.log_group_name, cw.role_arn
                ));
            }
        } else if !s.store.has_group(&cw.log_group_name) {
            return Err(format!(
                "Failed to validate permissions for log group: {}, with role: {}\nVerify the IAM role permissions are correct. (Logbook has no log group of that name: create it first with CreateLogGroup.)",
                cw.log_group_name, cw.role_arn
            ));
        }
        if let Some(s3) = &cw.large_data_delivery_s3_config {
            check_bucket(s, s3, account).await?;
        }
    }
    if let Some(s3) = &cfg.s3_config {
        check_bucket(s, s3, account).await?;
    }
    Ok(())
}

fn denied(c: &Ctx, name: &str) -> String {
    format!(
        "User: {} is not authorized to perform: bedrock:{name} on resource: * because no identity-based policy allows the bedrock:{name} action",
        c.caller.arn
    )
}

/// Answer (and audit) a call the caller may not make.
async fn deny(s: &Shared, c: &Ctx, name: &str, read_only: bool) -> Response {
    let msg = denied(c, name);
    let ev = event(
        c,
        name,
        read_only,
        Value::Null,
        Value::Null,
        Some((AwsErrorCode::AccessDeniedException, &msg)),
    );
    finish(s, c, ev, Err((AwsErrorCode::AccessDeniedException, msg))).await
}

/// Audit a control-plane call that failed authentication (identity type `Unknown`).
pub async fn audit_auth_failure(
    s: &Shared,
    headers: &HeaderMap,
    addr: SocketAddr,
    audited: &Audited,
    f: &crate::identity::AuthFailure,
) {
    let mut claimed = s.principals.resolve(headers);
    claimed.arn = String::new();
    let c = ctx(claimed, headers, addr);
    let mut ev = event(
        &c,
        &audited.name,
        audited.read_only,
        Value::Null,
        Value::Null,
        None,
    );
    ev.event_source = audited.source.into();
    ev.user_identity.kind = "Unknown".into();
    ev.user_identity.access_key_id = crate::identity::AuthFailure::claimed_key(headers);
    ev.error_code = Some(f.code().into());
    ev.error_message = Some(f.message());
    if let Err(e) = s.recorder.commit_event(ev).await {
        tracing::error!(error = %e, "could not audit an authentication failure");
    }
}

/// A management call the trail records even when its caller is not authenticated.
#[derive(Debug, Clone, PartialEq)]
pub struct Audited {
    /// CloudTrail event name.
    pub name: String,
    /// Event source.
    pub source: &'static str,
    /// Whether it only reads.
    pub read_only: bool,
}

impl Audited {
    /// The management call a request is, if it is one: the logging-configuration API, or
    /// log group management on the CloudWatch Logs API.
    pub fn of(path: &str, method: &str, headers: &HeaderMap) -> Option<Audited> {
        if path.starts_with("/logging/") {
            let name = match method {
                "PUT" => "PutModelInvocationLoggingConfiguration",
                "DELETE" => "DeleteModelInvocationLoggingConfiguration",
                _ => "GetModelInvocationLoggingConfiguration",
            };
            return Some(Audited {
                name: name.into(),
                source: "bedrock.amazonaws.com",
                read_only: method == "GET",
            });
        }
        let op = headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.strip_prefix(crate::logs_api::TARGET_PREFIX))?;
        crate::logs_api::is_mutating(op).then(|| Audited {
            name: op.to_string(),
            source: "logs.amazonaws.com",
            read_only: false,
        })
    }
}

/// Store the change, audit it, answer. If the audit event cannot be made durable, the
/// change is rolled back: no unaudited change to the logging configuration.
async fn apply(
    s: &Shared,
    c: &Ctx,
    name: &str,
    params: Value,
    config: Option<LoggingConfig>,
) -> Response {
    let (prev, written) = match s
        .logging
        .set(&c.caller.account_id, &c.caller.region, config)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            let msg = e.to_string();
            let code = AwsErrorCode::InternalServerException;
            let ev = event(c, name, false, params, Value::Null, Some((code, &msg)));
            return finish(s, c, ev, Err((code, msg))).await;
        }
    };
    let ev = event(c, name, false, params, Value::Null, None);
    if let Err(e) = s.recorder.commit_event(ev).await {
        if let Err(r) = s
            .logging
            .restore(&c.caller.account_id, &c.caller.region, prev, &written)
            .await
        {
            tracing::error!(error = %r, "an unaudited logging change could not be rolled back");
        }
        return aws_error(
            AwsErrorCode::InternalServerException,
            &format!("the call could not be audited: {e}"),
            &c.request_id,
        );
    }
    json_response(
        b"{}".to_vec(),
        "application/json",
        &c.request_id,
        REQUEST_ID,
    )
}

/// `PUT /logging/modelinvocations`
pub async fn put(
    State(s): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let c = ctx(caller, &headers, addr);
    if !c.caller.permissions.logging_manage {
        return deny(&s, &c, "PutModelInvocationLoggingConfiguration", false).await;
    }
    let name = "PutModelInvocationLoggingConfiguration";
    let bytes = match read_body(body, MAX_CONTROL_BODY, None).await {
        Ok(b) => b,
        Err(BodyError::TooLarge(n)) => {
            let msg =
                format!("Request body of {n} bytes exceeds the {MAX_CONTROL_BODY} byte limit");
            let ev = event(
                &c,
                name,
                false,
                Value::Null,
                Value::Null,
                Some((AwsErrorCode::ValidationException, &msg)),
            );
            return finish(&s, &c, ev, Err((AwsErrorCode::ValidationException, msg))).await;
        }
        Err(other) => {
            let why = other.describe();
            let msg = format!("request body incomplete: {why}");
            let ev = event(
                &c,
                name,
                false,
                Value::Null,
                Value::Null,
                Some((AwsErrorCode::ValidationException, &msg)),
            );
            return finish(&s, &c, ev, Err((AwsErrorCode::ValidationException, msg))).await;
        }
    };
    let params = serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null);
    let cfg = match parse_put_request(&bytes) {
        Ok(c) => c,
        Err(msg) => {
            let ev = event(
                &c,
                name,
                false,
                params,
                Value::Null,
                Some((AwsErrorCode::ValidationException, &msg)),
            );
            return finish(&s, &c, ev, Err((AwsErrorCode::ValidationException, msg))).await;
        }
    };
    let params = json!({ "loggingConfig": cfg });
    if let Err(msg) = validate(&s, &cfg, &c.caller.account_id).await {
        let ev = event(
            &c,
            name,
            false,
            params,
            Value::Null,
            Some((AwsErrorCode::ValidationException, &msg)),
        );
        return finish(&s, &c, ev, Err((AwsErrorCode::ValidationException, msg))).await;
    }
    apply(&s, &c, name, params, Some(cfg)).await
}

/// `GET /logging/modelinvocations`
pub async fn get(
    State(s): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Response {
    let c = ctx(caller, &headers, addr);
    if !c.caller.permissions.logging_read {
        return deny(&s, &c, "GetModelInvocationLoggingConfiguration", true).await;
    }
    let body = match s.logging.effective(&c.caller.account_id, &c.caller.region) {
        Some(cfg) => json!({ "loggingConfig": cfg }),
        None => json!({}),
    };
    let ev = event(
        &c,
        "GetModelInvocationLoggingConfiguration",
        true,
        Value::Null,
        Value::Null,
        None,
    );
    finish(
        &s,
        &c,
        ev,
        Ok(serde_json::to_vec(&body).unwrap_or_default()),
    )
    .await
}

/// `DELETE /logging/modelinvocations`
pub async fn delete(
    State(s): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Response {
    let c = ctx(caller, &headers, addr);
    if !c.caller.permissions.logging_manage {
        return deny(&s, &c, "DeleteModelInvocationLoggingConfiguration", false).await;
    }
    let name = "DeleteModelInvocationLoggingConfiguration";
    apply(&s, &c, name, Value::Null, None).await
}
