//! The CloudWatch API subset Bedrock users read their metrics and alarms with:
//! `GetMetricStatistics`, `GetMetricData` and `ListMetrics` for namespace `AWS/Bedrock`,
//! and `PutMetricAlarm`, `DescribeAlarms`, `DeleteAlarms`, `DescribeAlarmHistory`,
//! `SetAlarmState` (`crate::alarms`),
//! in both protocols CloudWatch's service model declares for it:
//! - JSON 1.0, which the installed botocore (boto3, the AWS CLI) sends: `POST /` with
//!   `X-Amz-Target: GraniteServiceVersion20100801.<Op>`, timestamps as epoch seconds;
//! - `smithy-rpc-v2-cbor` (newer SDKs): `POST
//!   /service/GraniteServiceVersion20100801/operation/<Op>`, CBOR bodies,
//!   `smithy-protocol: rpc-v2-cbor`, timestamps as CBOR tag 1.
//!
//! Errors are `{"__type", "message"}` in the request's protocol plus the query-compatible
//! `x-amzn-query-error` header (CloudWatch is `awsQueryCompatible`). Signed for the
//! service `monitoring`. The handlers work on CBOR values; JSON is converted both ways.
//!
//! The values are computed from the records in the log groups (`query::metrics`), so
//! they survive restarts and cover the groups' retention.

use crate::app::Shared;
use crate::identity::Caller;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use ciborium::Value;
use logbook_query::metrics::{self, Stat};
use logbook_query::{Language, QueryRequest};

/// The service name in the path.
pub const SERVICE: &str = "GraniteServiceVersion20100801";

/// Most datapoints one `GetMetricStatistics` may return (CloudWatch's limit).
pub const MAX_DATAPOINTS: i64 = 1440;

/// Most queries in one `GetMetricData`.
pub const MAX_QUERIES: usize = 500;

/// The JSON 1.0 `X-Amz-Target` prefix.
pub const TARGET_PREFIX: &str = "GraniteServiceVersion20100801.";

/// The wire protocol of a request (and of its answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `smithy-rpc-v2-cbor`.
    Cbor,
    /// `awsJson1_0`.
    Json,
}

fn from_json(j: &serde_json::Value) -> Value {
    match j {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i.into()),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(t) => Value::Text(t.clone()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(from_json).collect()),
        serde_json::Value::Object(o) => Value::Map(
            o.iter()
                .map(|(k, v)| (Value::Text(k.clone()), from_json(v)))
                .collect(),
        ),
    }
}

fn to_json(c: &Value) -> serde_json::Value {
    match c {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Integer(i) => i64::try_from(*i).map_or(serde_json::Value::Null, |i| i.into()),
        Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
        }
        Value::Text(t) => serde_json::Value::String(t.clone()),
        // A timestamp: epoch seconds in JSON.
        Value::Tag(_, inner) => to_json(inner),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        Value::Map(m) => serde_json::Value::Object(
            m.iter()
                .filter_map(|(k, v)| match k {
                    Value::Text(k) => Some((k.clone(), to_json(v))),
                    _ => None,
                })
                .collect(),
        ),
        _ => serde_json::Value::Null,
    }
}

struct ApiError {
    status: u16,
    code: &'static str,
    query_code: &'static str,
    message: String,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError {
        status: 400,
        code: "InvalidParameterValueException",
        query_code: "InvalidParameterValue",
        message: message.into(),
    }
}

fn missing(name: &str) -> ApiError {
    ApiError {
        status: 400,
        code: "MissingRequiredParameterException",
        query_code: "MissingParameter",
        message: format!("The parameter {name} is required."),
    }
}

fn respond(
    proto: Protocol,
    status: u16,
    v: &Value,
    extra: Option<(&'static str, String)>,
) -> Response {
    let mut body = Vec::new();
    let encoded = match proto {
        Protocol::Cbor => ciborium::into_writer(v, &mut body).is_ok(),
        Protocol::Json => serde_json::to_writer(&mut body, &to_json(v)).is_ok(),
    };
    if !encoded {
        return http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    let h = r.headers_mut();
    match proto {
        Protocol::Cbor => {
            h.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/cbor"),
            );
            h.insert(
                "smithy-protocol",
                http::HeaderValue::from_static("rpc-v2-cbor"),
            );
        }
        Protocol::Json => {
            h.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/x-amz-json-1.0"),
            );
        }
    }
    if let Ok(id) = http::HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        h.insert("x-amzn-requestid", id);
    }
    if let Some((k, v)) = extra {
        if let Ok(v) = http::HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    r
}

fn error_response(proto: Protocol, e: ApiError) -> Response {
    let body = Value::Map(vec![
        (
            Value::Text("__type".into()),
            Value::Text(format!("com.amazonaws.cloudwatch#{}", e.code)),
        ),
        (Value::Text("message".into()), Value::Text(e.message)),
    ]);
    let fault = if e.status >= 500 {
        "Receiver"
    } else {
        "Sender"
    };
    respond(
        proto,
        e.status,
        &body,
        Some(("x-amzn-query-error", format!("{};{fault}", e.query_code))),
    )
}

/// An error for this API from elsewhere (authentication, body limits): `code` is the
/// AWS error code (`IncompleteSignatureException`, `ThrottlingException`, ...).
pub fn error(proto: Protocol, status: u16, code: &str, message: &str) -> Response {
    let body = Value::Map(vec![
        (
            Value::Text("__type".into()),
            Value::Text(format!("com.amazonaws.cloudwatch#{code}")),
        ),
        (
            Value::Text("message".into()),
            Value::Text(message.to_string()),
        ),
    ]);
    let query_code = code.strip_suffix("Exception").unwrap_or(code);
    let fault = if status >= 500 { "Receiver" } else { "Sender" };
    respond(
        proto,
        status,
        &body,
        Some(("x-amzn-query-error", format!("{query_code};{fault}"))),
    )
}

fn field<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    match v {
        Value::Map(m) => m
            .iter()
            .find(|(key, _)| matches!(key, Value::Text(t) if t == k))
            .map(|(_, v)| v),
        _ => None,
    }
}

fn text<'a>(v: &'a Value, k: &str) -> Result<Option<&'a str>, ApiError> {
    match field(v, k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Text(t)) => Ok(Some(t)),
        Some(_) => Err(invalid(format!("{k} must be a string"))),
    }
}

fn int(v: &Value, k: &str) -> Result<Option<i64>, ApiError> {
    match field(v, k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Integer(i)) => i64::try_from(*i)
            .map(Some)
            .map_err(|_| invalid(format!("{k} is out of range"))),
        Some(_) => Err(invalid(format!("{k} must be an integer"))),
    }
}

/// A timestamp: CBOR tag 1 (or a bare number) of epoch seconds, as epoch ms.
fn timestamp(v: &Value, k: &str) -> Result<Option<i64>, ApiError> {
    let inner = match field(v, k) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Tag(1, inner)) => inner.as_ref(),
        Some(other) => other,
    };
    let secs = match inner {
        Value::Integer(i) => i128::from(*i) as f64,
        Value::Float(f) => *f,
        _ => return Err(invalid(format!("{k} must be a timestamp"))),
    };
    if !secs.is_finite() || secs.abs() > 1e11 {
        return Err(invalid(format!("{k} is out of range")));
    }
    Ok(Some((secs * 1000.0).round() as i64))
}

fn list<'a>(v: &'a Value, k: &str) -> Result<&'a [Value], ApiError> {
    match field(v, k) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(invalid(format!("{k} must be a list"))),
    }
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::Text(k.into()), v))
            .collect(),
    )
}

fn ts(secs: i64) -> Value {
    Value::Tag(1, Box::new(Value::Integer(secs.into())))
}

/// The `ModelId` of `Dimensions`, or `None` when there is none (no series: Bedrock
/// publishes its runtime metrics per model).
fn model_dimension(dims: &[Value]) -> Result<Option<String>, ApiError> {
    if dims.len() > 30 {
        return Err(invalid("At most 30 dimensions"));
    }
    let mut model = None;
    for d in dims {
        let name = text(d, "Name")?.ok_or_else(|| missing("Dimensions.member.Name"))?;
        let value = text(d, "Value")?;
        if name != metrics::DIMENSION {
            // A dimension Bedrock never publishes: no such series.
            return Ok(None);
        }
        model = value.map(str::to_string);
    }
    Ok(model)
}

fn check_period(period: i64) -> Result<(), ApiError> {
    if period <= 0 || !(period % 60 == 0 || [1, 5, 10, 30].contains(&period)) {
        return Err(invalid(
            "The parameter Period must be 1, 5, 10, 30 or a multiple of 60.",
        ));
    }
    Ok(())
}

/// Datapoints per period start (epoch seconds): one value per statistic.
#[allow(clippy::too_many_arguments)]
async fn series(
    s: &Shared,
    metric: &str,
    model: &str,
    period: i64,
    stats: &[Stat],
    start_ms: i64,
    end_ms: i64,
    fresh: bool,
) -> Result<Vec<(i64, Vec<Option<f64>>)>, ApiError> {
    let sql = metrics::statistics_sql(metric, model, period, stats)
        .map_err(|e| invalid(e.to_string()))?;
    let groups: Vec<String> = s.store.groups().into_iter().map(|g| g.name).collect();
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let req = QueryRequest {
        groups,
        start_ms,
        // EndTime is exclusive; the store's range is inclusive.
        end_ms: end_ms - 1,
        query: sql,
        language: Language::Sql,
        limit: 100_000,
        after_seq: if fresh {
            s.journal.records_committed()
        } else {
            0
        },
        content: Default::default(),
    };
    let r = s
        .engine
        .run(req, s.config.query.http_timeout)
        .await
        .map_err(|e| ApiError {
            status: 500,
            code: "InternalServiceFault",
            query_code: "InternalServiceError",
            message: e.to_string(),
        })?;
    Ok(r.rows
        .into_iter()
        .filter_map(|row| {
            let t = row.first()?.as_deref()?.parse::<i64>().ok()?;
            let vals = row[1..]
                .iter()
                .map(|c| c.as_deref().and_then(|v| v.parse::<f64>().ok()))
                .collect();
            Some((t, vals))
        })
        .collect())
}

/// Datapoints of a metric a metric filter produces: Logs Insights over each producing
/// filter's log group, merged per period.
#[allow(clippy::too_many_arguments)]
async fn filter_series(
    s: &Shared,
    namespace: &str,
    metric: &str,
    period: i64,
    stats: &[Stat],
    start_ms: i64,
    end_ms: i64,
    fresh: bool,
) -> Result<Vec<(i64, Vec<Option<f64>>)>, ApiError> {
    #[derive(Default, Clone)]
    struct Acc {
        n: f64,
        sum: f64,
        min: f64,
        max: f64,
        pcts: Vec<f64>,
    }
    let engine_err = |e: logbook_query::QueryError| ApiError {
        status: 500,
        code: "InternalServiceFault",
        query_code: "InternalServiceError",
        message: e.to_string(),
    };
    let mut by_t: std::collections::BTreeMap<i64, Acc> = std::collections::BTreeMap::new();
    let pcts: Vec<f64> = stats
        .iter()
        .filter_map(|st| match st {
            Stat::Percentile(p) => Some(*p),
            _ => None,
        })
        .collect();
    for f in s.metric_filters.producing(namespace, metric) {
        let value = f.value_expr().map_err(invalid)?;
        let literal = value.parse::<f64>().ok();
        let mut aggs = vec!["count(*) as n".to_string()];
        if literal.is_none() {
            aggs.push(format!(
                "sum({value}) as s, min({value}) as mn, max({value}) as mx"
            ));
            for (i, p) in pcts.iter().enumerate() {
                aggs.push(format!("pct({value}, {p}) as p{i}"));
            }
        }
        let filter = f
            .insights_filter
            .as_ref()
            .map(|c| format!("filter {c} | "))
            .unwrap_or_default();
        let query = format!("{filter}stats {} by bin({period}s) as t", aggs.join(", "));
        let req = QueryRequest {
            groups: vec![f.log_group_name.clone()],
            start_ms,
            end_ms: end_ms - 1,
            query,
            language: Language::Insights,
            limit: 100_000,
            after_seq: if fresh {
                s.journal.records_committed()
            } else {
                0
            },
            content: Default::default(),
        };
        let r = match s.engine.run(req, s.config.query.http_timeout).await {
            Ok(r) => r,
            Err(logbook_query::QueryError::NoSuchGroup(_)) => continue,
            Err(e) => return Err(engine_err(e)),
        };
        let col = |name: &str| r.columns.iter().position(|c| c == name);
        let (Some(ti), Some(ni)) = (col("t"), col("n")) else {
            continue;
        };
        for row in &r.rows {
            let get = |i: Option<usize>| {
                i.and_then(|i| row.get(i))
                    .and_then(|c| c.as_deref())
                    .and_then(|v| v.parse::<f64>().ok())
            };
            let Some(t) = row.get(ti).and_then(|c| c.as_deref()).and_then(parse_bin) else {
                continue;
            };
            let n = get(Some(ni)).unwrap_or(0.0);
            let (sum, mn, mx, ps) = match literal {
                Some(c) => (n * c, c, c, vec![c; pcts.len()]),
                None => (
                    get(col("s")).unwrap_or(0.0),
                    get(col("mn")).unwrap_or(f64::NAN),
                    get(col("mx")).unwrap_or(f64::NAN),
                    (0..pcts.len())
                        .map(|i| get(col(&format!("p{i}"))).unwrap_or(f64::NAN))
                        .collect(),
                ),
            };
            let a = by_t.entry(t).or_insert_with(|| Acc {
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                pcts: vec![f64::NEG_INFINITY; pcts.len()],
                ..Default::default()
            });
            a.n += n;
            a.sum += sum;
            a.min = a.min.min(mn);
            a.max = a.max.max(mx);
            // Several filters feeding one metric: the largest percentile (an upper bound).
            for (slot, p) in a.pcts.iter_mut().zip(ps) {
                *slot = slot.max(p);
            }
        }
    }
    Ok(by_t
        .into_iter()
        .map(|(t, a)| {
            let mut pi = 0;
            let vals = stats
                .iter()
                .map(|st| {
                    let v = match st {
                        Stat::SampleCount => a.n,
                        Stat::Sum => a.sum,
                        Stat::Average => a.sum / a.n.max(1.0),
                        Stat::Minimum => a.min,
                        Stat::Maximum => a.max,
                        Stat::Percentile(_) => {
                            pi += 1;
                            a.pcts.get(pi - 1).copied().unwrap_or(f64::NAN)
                        }
                    };
                    v.is_finite().then_some(v)
                })
                .collect();
            (t, vals)
        })
        .collect())
}

/// A bin start as Insights prints it (`2026-12-02 08:00:00.000`, UTC) in epoch seconds.
fn parse_bin(t: &str) -> Option<i64> {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]"
    );
    let p = time::PrimitiveDateTime::parse(t, &fmt).ok()?;
    Some(p.assume_utc().unix_timestamp())
}

/// Logbook's governance metrics. `UnpricedInvocations` comes from the records; the
/// gauges (`RegionsNotRecording`, `StalledDestinationSeconds`) have one datapoint, now.
#[allow(clippy::too_many_arguments)]
async fn governance_series(
    s: &Shared,
    metric: &str,
    model: Option<&str>,
    period: i64,
    stats: &[Stat],
    start_ms: i64,
    end_ms: i64,
    fresh: bool,
) -> Result<Vec<(i64, Vec<Option<f64>>)>, ApiError> {
    if model.is_some() {
        return Ok(Vec::new());
    }
    let now = logbook_store::now_ms();
    let current = now.div_euclid(period * 1000) * period;
    let gauge = |v: f64| -> Vec<(i64, Vec<Option<f64>>)> {
        if current * 1000 < start_ms || current * 1000 >= end_ms {
            return Vec::new();
        }
        let vals = stats
            .iter()
            .map(|st| Some(if *st == Stat::SampleCount { 1.0 } else { v }))
            .collect();
        vec![(current, vals)]
    };
    match metric {
        "RegionsNotRecording" => Ok(gauge(s.logging.not_recording().len() as f64)),
        "StalledDestinationSeconds" => {
            let now_ms = now.max(0) as u64;
            let worst = s
                .destinations
                .iter()
                .filter(|(_, d)| d.stalled())
                .map(|(_, d)| {
                    let oldest = d
                        .oldest_pending_ms
                        .load(std::sync::atomic::Ordering::Relaxed);
                    if oldest == 0 {
                        0
                    } else {
                        now_ms.saturating_sub(oldest) / 1000
                    }
                })
                .max()
                .unwrap_or(0);
            Ok(gauge(worst as f64))
        }
        "UnpricedInvocations" => {
            let groups: Vec<String> = s.store.groups().into_iter().map(|g| g.name).collect();
            if groups.is_empty() {
                return Ok(Vec::new());
            }
            let req = QueryRequest {
                groups,
                start_ms,
                end_ms: end_ms - 1,
                query: metrics::unpriced_sql(period),
                language: Language::Sql,
                limit: 100_000,
                after_seq: if fresh {
                    s.journal.records_committed()
                } else {
                    0
                },
                content: Default::default(),
            };
            let r = s
                .engine
                .run(req, s.config.query.http_timeout)
                .await
                .map_err(|e| invalid(e.to_string()))?;
            Ok(r.rows
                .into_iter()
                .filter_map(|row| {
                    let t = row.first()?.as_deref()?.parse::<i64>().ok()?;
                    let n = row.get(1)?.as_deref()?.parse::<f64>().ok()?;
                    let vals = stats
                        .iter()
                        .map(|st| {
                            Some(match st {
                                Stat::SampleCount | Stat::Sum => n,
                                _ => 1.0,
                            })
                        })
                        .collect();
                    Some((t, vals))
                })
                .collect())
        }
        _ => Ok(Vec::new()),
    }
}

/// Datapoints of any metric: Bedrock's (per model) or a metric filter's (no dimension).
#[allow(clippy::too_many_arguments)]
async fn any_series(
    s: &Shared,
    namespace: &str,
    metric: &str,
    model: Option<&str>,
    period: i64,
    stats: &[Stat],
    start_ms: i64,
    end_ms: i64,
    fresh: bool,
) -> Result<Vec<(i64, Vec<Option<f64>>)>, ApiError> {
    if namespace == metrics::GOVERNANCE_NAMESPACE {
        return governance_series(s, metric, model, period, stats, start_ms, end_ms, fresh).await;
    }
    if namespace == metrics::NAMESPACE {
        match (model, metrics::unit(metric)) {
            (Some(m), Some(_)) => {
                series(s, metric, m, period, stats, start_ms, end_ms, fresh).await
            }
            _ => Ok(Vec::new()),
        }
    } else if model.is_none() {
        filter_series(s, namespace, metric, period, stats, start_ms, end_ms, fresh).await
    } else {
        Ok(Vec::new())
    }
}

fn stat_name(s: Stat) -> &'static str {
    match s {
        Stat::SampleCount => "SampleCount",
        Stat::Sum => "Sum",
        Stat::Average => "Average",
        Stat::Minimum => "Minimum",
        Stat::Maximum => "Maximum",
        Stat::Percentile(_) => "",
    }
}

async fn get_metric_statistics(s: &Shared, v: &Value) -> Result<Value, ApiError> {
    let namespace = text(v, "Namespace")?.ok_or_else(|| missing("Namespace"))?;
    let metric = text(v, "MetricName")?.ok_or_else(|| missing("MetricName"))?;
    let start = timestamp(v, "StartTime")?.ok_or_else(|| missing("StartTime"))?;
    let end = timestamp(v, "EndTime")?.ok_or_else(|| missing("EndTime"))?;
    let period = int(v, "Period")?.ok_or_else(|| missing("Period"))?;
    check_period(period)?;
    if end <= start {
        return Err(invalid(
            "The parameter StartTime must be less than the parameter EndTime.",
        ));
    }
    if (end - start) / 1000 / period > MAX_DATAPOINTS {
        return Err(invalid(format!(
            "You have requested up to {} datapoints, which exceeds the limit of {MAX_DATAPOINTS}. You may reduce the datapoints requested by increasing Period, or decreasing the time range.",
            (end - start) / 1000 / period
        )));
    }
    let mut stats = Vec::new();
    for st in list(v, "Statistics")? {
        let Value::Text(t) = st else {
            return Err(invalid("Statistics must be strings"));
        };
        match Stat::parse(t) {
            Ok(Stat::Percentile(_)) => {
                return Err(invalid(format!(
                    "The parameter Statistics.member contains {t:?}; percentiles go in ExtendedStatistics."
                )))
            }
            Ok(s) => stats.push(s),
            Err(e) => return Err(invalid(e.to_string())),
        }
    }
    let mut extended = Vec::new();
    for st in list(v, "ExtendedStatistics")? {
        let Value::Text(t) = st else {
            return Err(invalid("ExtendedStatistics must be strings"));
        };
        match Stat::parse(t) {
            Ok(s @ Stat::Percentile(_)) => extended.push((t.clone(), s)),
            _ => {
                return Err(invalid(format!(
                    "The parameter ExtendedStatistics contains {t:?}, which is not a percentile (pNN.NN)."
                )))
            }
        }
    }
    if stats.is_empty() && extended.is_empty() {
        return Err(ApiError {
            status: 400,
            code: "InvalidParameterCombinationException",
            query_code: "InvalidParameterCombination",
            message: "Must specify either Statistics or ExtendedStatistics".into(),
        });
    }
    let label = Value::Text(metric.to_string());
    let dims = list(v, "Dimensions")?;
    let model = model_dimension(dims)?;
    if !dims.is_empty() && model.is_none() {
        // A dimension no metric here is published with.
        return Ok(map(vec![
            ("Label", label),
            ("Datapoints", Value::Array(Vec::new())),
        ]));
    }
    let unit = if namespace == metrics::NAMESPACE {
        metrics::unit(metric).unwrap_or("None").to_string()
    } else if namespace == metrics::GOVERNANCE_NAMESPACE {
        metrics::GOVERNANCE_METRICS
            .iter()
            .find(|(m, _)| *m == metric)
            .map_or("None", |(_, u)| u)
            .to_string()
    } else {
        s.metric_filters
            .producing(namespace, metric)
            .first()
            .and_then(|f| f.unit.clone())
            .unwrap_or_else(|| "None".into())
    };
    let all: Vec<Stat> = stats
        .iter()
        .copied()
        .chain(extended.iter().map(|(_, s)| *s))
        .collect();
    let rows = any_series(
        s,
        namespace,
        metric,
        model.as_deref(),
        period,
        &all,
        start,
        end,
        true,
    )
    .await?;
    let points = rows
        .into_iter()
        .map(|(t, vals)| {
            let mut e = vec![("Timestamp", ts(t))];
            for (i, st) in stats.iter().enumerate() {
                e.push((
                    stat_name(*st),
                    Value::Float(vals.get(i).copied().flatten().unwrap_or(0.0)),
                ));
            }
            if !extended.is_empty() {
                let ext = extended
                    .iter()
                    .enumerate()
                    .map(|(j, (name, _))| {
                        (
                            Value::Text(name.clone()),
                            Value::Float(
                                vals.get(stats.len() + j).copied().flatten().unwrap_or(0.0),
                            ),
                        )
                    })
                    .collect();
                e.push(("ExtendedStatistics", Value::Map(ext)));
            }
            e.push(("Unit", Value::Text(unit.clone())));
            map(e)
        })
        .collect();
    Ok(map(vec![
        ("Label", label),
        ("Datapoints", Value::Array(points)),
    ]))
}

async fn list_metrics(s: &Shared, v: &Value) -> Result<Value, ApiError> {
    let namespace = text(v, "Namespace")?;
    let name = text(v, "MetricName")?;
    let want_model = model_dimension(list(v, "Dimensions")?)?;
    let bedrock = !(namespace.is_some_and(|n| n != metrics::NAMESPACE)
        || name.is_some_and(|n| metrics::unit(n).is_none()));
    let groups: Vec<String> = s.store.groups().into_iter().map(|g| g.name).collect();
    let mut models = Vec::new();
    if bedrock && !groups.is_empty() {
        let req = QueryRequest {
            groups,
            start_ms: i64::MIN / 2,
            end_ms: i64::MAX / 2,
            query: metrics::models_sql().into(),
            language: Language::Sql,
            limit: 10_000,
            after_seq: s.journal.records_committed(),
            content: Default::default(),
        };
        let r = s
            .engine
            .run(req, s.config.query.http_timeout)
            .await
            .map_err(|e| invalid(e.to_string()))?;
        models = r
            .rows
            .into_iter()
            .filter_map(|row| row.into_iter().next().flatten())
            .collect();
    }
    let mut out = Vec::new();
    if want_model.is_none() {
        for (m, _) in metrics::GOVERNANCE_METRICS {
            if namespace.is_none_or(|n| n == metrics::GOVERNANCE_NAMESPACE)
                && name.is_none_or(|n| n == *m)
            {
                out.push(map(vec![
                    (
                        "Namespace",
                        Value::Text(metrics::GOVERNANCE_NAMESPACE.into()),
                    ),
                    ("MetricName", Value::Text((*m).into())),
                    ("Dimensions", Value::Array(Vec::new())),
                ]));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in s.metric_filters.list() {
            if namespace.is_some_and(|n| n != f.metric_namespace)
                || name.is_some_and(|n| n != f.metric_name)
                || !seen.insert((f.metric_namespace.clone(), f.metric_name.clone()))
            {
                continue;
            }
            out.push(map(vec![
                ("Namespace", Value::Text(f.metric_namespace)),
                ("MetricName", Value::Text(f.metric_name)),
                ("Dimensions", Value::Array(Vec::new())),
            ]));
        }
    }
    for m in models {
        if want_model.as_ref().is_some_and(|w| *w != m) {
            continue;
        }
        for (metric, _) in metrics::METRICS {
            if name.is_some_and(|n| n != *metric) {
                continue;
            }
            out.push(map(vec![
                ("Namespace", Value::Text(metrics::NAMESPACE.into())),
                ("MetricName", Value::Text((*metric).into())),
                (
                    "Dimensions",
                    Value::Array(vec![map(vec![
                        ("Name", Value::Text(metrics::DIMENSION.into())),
                        ("Value", Value::Text(m.clone())),
                    ])]),
                ),
            ]));
        }
    }
    Ok(map(vec![("Metrics", Value::Array(out))]))
}

async fn get_metric_data(s: &Shared, v: &Value) -> Result<Value, ApiError> {
    let start = timestamp(v, "StartTime")?.ok_or_else(|| missing("StartTime"))?;
    let end = timestamp(v, "EndTime")?.ok_or_else(|| missing("EndTime"))?;
    if end <= start {
        return Err(invalid(
            "The parameter StartTime must be less than the parameter EndTime.",
        ));
    }
    let ascending = text(v, "ScanBy")? == Some("TimestampAscending");
    let queries = list(v, "MetricDataQueries")?;
    if queries.is_empty() {
        return Err(missing("MetricDataQueries"));
    }
    if queries.len() > MAX_QUERIES {
        return Err(invalid(format!("At most {MAX_QUERIES} MetricDataQueries")));
    }
    let mut results = Vec::new();
    for q in queries {
        let id = text(q, "Id")?.ok_or_else(|| missing("MetricDataQueries.member.Id"))?;
        if field(q, "Expression").is_some_and(|e| !matches!(e, Value::Null)) {
            return Err(invalid(format!(
                "MetricDataQueries {id}: metric math expressions are not supported; use MetricStat"
            )));
        }
        if matches!(field(q, "ReturnData"), Some(Value::Bool(false))) {
            continue;
        }
        let ms =
            field(q, "MetricStat").ok_or_else(|| missing("MetricDataQueries.member.MetricStat"))?;
        let metric = field(ms, "Metric").ok_or_else(|| missing("MetricStat.Metric"))?;
        let namespace = text(metric, "Namespace")?.unwrap_or_default();
        let name = text(metric, "MetricName")?.ok_or_else(|| missing("Metric.MetricName"))?;
        let period = int(ms, "Period")?.ok_or_else(|| missing("MetricStat.Period"))?;
        check_period(period)?;
        let stat = text(ms, "Stat")?.ok_or_else(|| missing("MetricStat.Stat"))?;
        let stat = Stat::parse(stat).map_err(|e| invalid(e.to_string()))?;
        let label = text(q, "Label")?.unwrap_or(name).to_string();
        let dims = list(metric, "Dimensions")?;
        let model = model_dimension(dims)?;
        let mut rows = if !dims.is_empty() && model.is_none() {
            Vec::new()
        } else {
            any_series(
                s,
                namespace,
                name,
                model.as_deref(),
                period,
                &[stat],
                start,
                end,
                true,
            )
            .await?
        };
        if !ascending {
            rows.reverse();
        }
        let (stamps, values): (Vec<Value>, Vec<Value>) = rows
            .into_iter()
            .filter_map(|(t, v)| Some((ts(t), Value::Float(v.first().copied().flatten()?))))
            .unzip();
        results.push(map(vec![
            ("Id", Value::Text(id.into())),
            ("Label", Value::Text(label)),
            ("Timestamps", Value::Array(stamps)),
            ("Values", Value::Array(values)),
            ("StatusCode", Value::Text("Complete".into())),
        ]));
    }
    Ok(map(vec![
        ("MetricDataResults", Value::Array(results)),
        ("Messages", Value::Array(Vec::new())),
    ]))
}

/// The values an alarm looks at: its N periods up to and including the one holding
/// `at_ms` (oldest first), `None` where a period has no data.
pub async fn window(
    s: &Shared,
    d: &logbook_ops::alarms::AlarmDef,
    at_ms: i64,
) -> Result<Vec<Option<f64>>, String> {
    let n = d.evaluation_periods as i64;
    let p = d.period * 1000;
    let current = at_ms.div_euclid(p) * p;
    let start = current - (n - 1) * p;
    let stat = Stat::parse(&d.statistic).map_err(|e| e.to_string())?;
    let rows = any_series(
        s,
        &d.namespace,
        &d.metric_name,
        d.model_id.as_deref(),
        d.period,
        &[stat],
        start,
        current + p,
        false,
    )
    .await
    .map_err(|e| e.message)?;
    let by_start: std::collections::HashMap<i64, Option<f64>> = rows
        .into_iter()
        .map(|(t, v)| (t * 1000, v.first().copied().flatten()))
        .collect();
    Ok((0..n)
        .map(|i| by_start.get(&(start + i * p)).copied().flatten())
        .collect())
}

fn float(v: &Value, k: &str) -> Result<Option<f64>, ApiError> {
    match field(v, k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Float(f)) => Ok(Some(*f)),
        Some(Value::Integer(i)) => Ok(Some(i128::from(*i) as f64)),
        Some(_) => Err(invalid(format!("{k} must be a number"))),
    }
}

fn strings(v: &Value, k: &str) -> Result<Vec<String>, ApiError> {
    list(v, k)?
        .iter()
        .map(|x| match x {
            Value::Text(t) => Ok(t.clone()),
            _ => Err(invalid(format!("{k} must be a list of strings"))),
        })
        .collect()
}

fn manage(caller: &Caller, op: &str) -> Result<(), ApiError> {
    if caller.permissions.logging_manage {
        return Ok(());
    }
    Err(ApiError {
        status: 403,
        code: "AccessDeniedException",
        query_code: "AccessDenied",
        message: format!(
            "User: {} is not authorized to perform: cloudwatch:{op} (permission logging:manage)",
            caller.arn
        ),
    })
}

async fn put_metric_alarm(s: &Shared, v: &Value) -> Result<Value, ApiError> {
    use logbook_ops::alarms::AlarmDef;
    if field(v, "Metrics").is_some_and(|m| !matches!(m, Value::Null)) {
        return Err(invalid(
            "Metric math alarms (Metrics) are not supported; give MetricName and Namespace.",
        ));
    }
    let statistic = match (text(v, "Statistic")?, text(v, "ExtendedStatistic")?) {
        (Some(st), None) => st.to_string(),
        (None, Some(ext)) => ext.to_string(),
        _ => {
            return Err(ApiError {
                status: 400,
                code: "InvalidParameterCombinationException",
                query_code: "InvalidParameterCombination",
                message: "Exactly one of Statistic and ExtendedStatistic must be given.".into(),
            })
        }
    };
    let n = int(v, "EvaluationPeriods")?.ok_or_else(|| missing("EvaluationPeriods"))?;
    let n = u32::try_from(n).map_err(|_| invalid("EvaluationPeriods is out of range"))?;
    let m = match int(v, "DatapointsToAlarm")? {
        Some(m) => u32::try_from(m).map_err(|_| invalid("DatapointsToAlarm is out of range"))?,
        None => n,
    };
    let def = AlarmDef {
        alarm_name: text(v, "AlarmName")?
            .ok_or_else(|| missing("AlarmName"))?
            .to_string(),
        alarm_description: text(v, "AlarmDescription")?.map(str::to_string),
        namespace: text(v, "Namespace")?
            .ok_or_else(|| missing("Namespace"))?
            .to_string(),
        metric_name: text(v, "MetricName")?
            .ok_or_else(|| missing("MetricName"))?
            .to_string(),
        model_id: model_dimension(list(v, "Dimensions")?)?,
        statistic,
        period: int(v, "Period")?.ok_or_else(|| missing("Period"))?,
        evaluation_periods: n,
        datapoints_to_alarm: m,
        threshold: float(v, "Threshold")?.ok_or_else(|| missing("Threshold"))?,
        comparison_operator: text(v, "ComparisonOperator")?
            .ok_or_else(|| missing("ComparisonOperator"))?
            .to_string(),
        treat_missing_data: text(v, "TreatMissingData")?
            .unwrap_or("missing")
            .to_string(),
        actions_enabled: !matches!(field(v, "ActionsEnabled"), Some(Value::Bool(false))),
        alarm_actions: strings(v, "AlarmActions")?,
        ok_actions: strings(v, "OKActions")?,
        insufficient_data_actions: strings(v, "InsufficientDataActions")?,
    };
    s.alarms
        .put(def)
        .await
        .map_err(|e| alarm_change_error(e, invalid))?;
    Ok(Value::Map(Vec::new()))
}

/// A refused alarm change as `refused` words it; a failure of the alarms' own storage
/// (the home's copy unreadable, a write failing) as the service's fault (500).
fn alarm_change_error(
    e: crate::alarms::ChangeFailed,
    refused: impl FnOnce(String) -> ApiError,
) -> ApiError {
    match e {
        crate::alarms::ChangeFailed::Refused(m) => refused(m),
        crate::alarms::ChangeFailed::Service(m) => ApiError {
            status: 500,
            code: "InternalServiceFault",
            query_code: "InternalServiceError",
            message: m,
        },
    }
}

fn not_found(message: String) -> ApiError {
    ApiError {
        status: 404,
        code: "ResourceNotFound",
        query_code: "ResourceNotFound",
        message,
    }
}

fn describe_alarms(s: &Shared, v: &Value) -> Result<Value, ApiError> {
    let names = strings(v, "AlarmNames")?;
    let prefix = text(v, "AlarmNamePrefix")?;
    let state = text(v, "StateValue")?;
    if let Some(st) = state {
        if logbook_ops::alarms::AlarmState::parse(st).is_none() {
            return Err(invalid(
                "The parameter StateValue must be OK, ALARM or INSUFFICIENT_DATA.",
            ));
        }
    }
    let ms = |m: i64| ts(m.div_euclid(1000));
    let alarms = s
        .alarms
        .list()
        .into_iter()
        .filter(|e| names.is_empty() || names.contains(&e.def.alarm_name))
        .filter(|e| prefix.is_none_or(|p| e.def.alarm_name.starts_with(p)))
        .filter(|e| state.is_none_or(|st| e.state.as_str() == st))
        .map(|e| {
            let d = &e.def;
            let texts =
                |l: &[String]| Value::Array(l.iter().map(|a| Value::Text(a.clone())).collect());
            let mut m = vec![
                ("AlarmName", Value::Text(d.alarm_name.clone())),
                ("AlarmArn", Value::Text(s.alarms.arn(&d.alarm_name))),
                ("ActionsEnabled", Value::Bool(d.actions_enabled)),
                ("OKActions", texts(&d.ok_actions)),
                ("AlarmActions", texts(&d.alarm_actions)),
                (
                    "InsufficientDataActions",
                    texts(&d.insufficient_data_actions),
                ),
                ("StateValue", Value::Text(e.state.as_str().into())),
                ("StateReason", Value::Text(e.reason.clone())),
                ("StateUpdatedTimestamp", ms(e.state_updated_ms)),
                (
                    "AlarmConfigurationUpdatedTimestamp",
                    ms(e.config_updated_ms),
                ),
                ("MetricName", Value::Text(d.metric_name.clone())),
                ("Namespace", Value::Text(d.namespace.clone())),
                (
                    "Dimensions",
                    Value::Array(
                        d.model_id
                            .iter()
                            .map(|m| {
                                map(vec![
                                    ("Name", Value::Text(metrics::DIMENSION.into())),
                                    ("Value", Value::Text(m.clone())),
                                ])
                            })
                            .collect(),
                    ),
                ),
                ("Period", Value::Integer(d.period.into())),
                (
                    "EvaluationPeriods",
                    Value::Integer(d.evaluation_periods.into()),
                ),
                (
                    "DatapointsToAlarm",
                    Value::Integer(d.datapoints_to_alarm.into()),
                ),
                ("Threshold", Value::Float(d.threshold)),
                (
                    "ComparisonOperator",
                    Value::Text(d.comparison_operator.clone()),
                ),
                (
                    "TreatMissingData",
                    Value::Text(d.treat_missing_data.clone()),
                ),
            ];
            if d.statistic.starts_with('p') {
                m.push(("ExtendedStatistic", Value::Text(d.statistic.clone())));
            } else {
                m.push(("Statistic", Value::Text(d.statistic.clone())));
            }
            if let Some(desc) = &d.alarm_description {
                m.push(("AlarmDescription", Value::Text(desc.clone())));
            }
            map(m)
        })
        .collect();
    Ok(map(vec![
        ("MetricAlarms", Value::Array(alarms)),
        ("CompositeAlarms", Value::Array(Vec::new())),
    ]))
}

fn describe_alarm_history(s: &Shared, v: &Value) -> Result<Value, ApiError> {
    let name = text(v, "AlarmName")?;
    let kind = text(v, "HistoryItemType")?;
    let start = timestamp(v, "StartDate")?.unwrap_or(i64::MIN);
    let end = timestamp(v, "EndDate")?.unwrap_or(i64::MAX);
    let max = int(v, "MaxRecords")?.unwrap_or(100).clamp(1, 100) as usize;
    let oldest_first = text(v, "ScanBy")? == Some("TimestampAscending");
    let mut items: Vec<_> = s
        .alarms
        .history()
        .into_iter()
        .filter(|h| name.is_none_or(|n| h.alarm_name == n))
        .filter(|h| kind.is_none_or(|k| h.kind == k))
        .filter(|h| h.timestamp_ms >= start && h.timestamp_ms <= end)
        .collect();
    if oldest_first {
        items.reverse();
    }
    let items = items
        .into_iter()
        .take(max)
        .map(|h| {
            map(vec![
                ("AlarmName", Value::Text(h.alarm_name)),
                ("AlarmType", Value::Text("MetricAlarm".into())),
                ("Timestamp", ts(h.timestamp_ms.div_euclid(1000))),
                ("HistoryItemType", Value::Text(h.kind)),
                ("HistorySummary", Value::Text(h.summary)),
                ("HistoryData", Value::Text(h.data)),
            ])
        })
        .collect();
    Ok(map(vec![("AlarmHistoryItems", Value::Array(items))]))
}

async fn set_alarm_state(s: &Shared, v: &Value) -> Result<Value, ApiError> {
    let name = text(v, "AlarmName")?.ok_or_else(|| missing("AlarmName"))?;
    let state = text(v, "StateValue")?.ok_or_else(|| missing("StateValue"))?;
    let reason = text(v, "StateReason")?.ok_or_else(|| missing("StateReason"))?;
    let state = logbook_ops::alarms::AlarmState::parse(state).ok_or_else(|| {
        invalid("The parameter StateValue must be OK, ALARM or INSUFFICIENT_DATA.")
    })?;
    match s.alarms.set_state(name, state, reason).await {
        Ok(Some((entry, old))) => s.alarms.act(entry, old),
        Ok(None) => {}
        Err(e) => return Err(alarm_change_error(e, not_found)),
    }
    Ok(Value::Map(Vec::new()))
}

/// `POST /service/GraniteServiceVersion20100801/operation/{op}` (rpc-v2-cbor).
pub async fn handle(
    State(s): State<Shared>,
    Path((service, op)): Path<(String, String)>,
    ConnectInfo(addr): ConnectInfo<std::net::SocketAddr>,
    Extension(caller): Extension<Caller>,
    headers: http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let who = Who {
        headers: &headers,
        addr,
    };
    if service != SERVICE {
        return error_response(
            Protocol::Cbor,
            ApiError {
                status: 404,
                code: "UnknownOperationException",
                query_code: "InvalidAction",
                message: format!("No service {service:?} here"),
            },
        );
    }
    match parse_cbor(&body) {
        Ok(v) => run(&s, &caller, &op, &v, Protocol::Cbor, who).await,
        Err(e) => error_response(Protocol::Cbor, e),
    }
}

/// A request body: a CBOR map (empty: no members). ciborium refuses nesting deeper than
/// its recursion limit, so a hostile body cannot exhaust the stack.
fn parse_cbor(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(Value::Map(Vec::new()));
    }
    match ciborium::from_reader(body) {
        Ok(v @ Value::Map(_)) => Ok(v),
        _ => Err(ApiError {
            status: 400,
            code: "SerializationException",
            query_code: "MalformedInput",
            message: "The request body is not a CBOR map".into(),
        }),
    }
}

/// `POST /` with `X-Amz-Target: GraniteServiceVersion20100801.<op>` (JSON 1.0), handed
/// over by the `/` dispatcher; `body` is already read.
pub async fn handle_json(
    s: &Shared,
    caller: &Caller,
    op: &str,
    body: &[u8],
    who: Who<'_>,
) -> Response {
    let v: Value = if body.is_empty() {
        Value::Map(Vec::new())
    } else {
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(j @ serde_json::Value::Object(_)) => from_json(&j),
            _ => {
                return error_response(
                    Protocol::Json,
                    ApiError {
                        status: 400,
                        code: "SerializationException",
                        query_code: "MalformedInput",
                        message: "The request body is not a JSON object".into(),
                    },
                )
            }
        }
    };
    run(s, caller, op, &v, Protocol::Json, who).await
}

/// Where a call came from, for its audit event.
#[derive(Clone, Copy)]
pub struct Who<'a> {
    /// The request's headers (user agent).
    pub headers: &'a http::HeaderMap,
    /// The peer.
    pub addr: std::net::SocketAddr,
}

/// The alarms a change names.
fn alarm_names(op: &str, v: &Value) -> Vec<String> {
    match op {
        "DeleteAlarms" => strings(v, "AlarmNames").unwrap_or_default(),
        _ => text(v, "AlarmName")
            .ok()
            .flatten()
            .map(|n| vec![n.to_string()])
            .unwrap_or_default(),
    }
}

/// Every change to alarms is a management event in the trail (`monitoring.amazonaws.com`,
/// as CloudTrail names CloudWatch's), refusals too. When the event cannot be made
/// durable, the change is undone and the caller told: no unaudited change.
async fn audited_change(
    s: &Shared,
    caller: &Caller,
    op: &str,
    v: &Value,
    who: Who<'_>,
    change: impl std::future::Future<Output = Result<Value, ApiError>>,
) -> Result<Value, ApiError> {
    let names = alarm_names(op, v);
    let before = s.alarms.snapshot(&names);
    let r = match manage(caller, op) {
        Ok(()) => change.await,
        Err(e) => Err(e),
    };
    let c = crate::control_api::ctx(caller.clone(), who.headers, who.addr);
    let mut ev =
        crate::control_api::event(&c, op, false, to_json(v), serde_json::Value::Null, None);
    ev.event_source = "monitoring.amazonaws.com".into();
    if let Err(e) = &r {
        ev.error_code = Some(e.code.to_string());
        ev.error_message = Some(e.message.clone());
    }
    if let Err(e) = s.recorder.commit_event(ev).await {
        if r.is_ok() {
            if let Err(undo) = s.alarms.restore(&names, before).await {
                tracing::error!(error = %undo, "could not undo an alarm change whose audit failed");
            }
        }
        return Err(ApiError {
            status: 500,
            code: "InternalServiceFault",
            query_code: "InternalServiceError",
            message: format!("the call could not be audited: {e}"),
        });
    }
    r
}

async fn run(
    s: &Shared,
    caller: &Caller,
    op: &str,
    v: &Value,
    proto: Protocol,
    who: Who<'_>,
) -> Response {
    if !caller.permissions.logs_read {
        return error_response(
            proto,
            ApiError {
                status: 403,
                code: "AccessDeniedException",
                query_code: "AccessDenied",
                message: format!(
                    "User: {} is not authorized to perform: cloudwatch:{op} (permission logs:read)",
                    caller.arn
                ),
            },
        );
    }
    let r = match op {
        "GetMetricStatistics" => get_metric_statistics(s, v).await,
        "GetMetricData" => get_metric_data(s, v).await,
        "ListMetrics" => list_metrics(s, v).await,
        "DescribeAlarms" => describe_alarms(s, v),
        "DescribeAlarmHistory" => describe_alarm_history(s, v),
        "PutMetricAlarm" => audited_change(s, caller, op, v, who, put_metric_alarm(s, v)).await,
        "DeleteAlarms" => {
            audited_change(s, caller, op, v, who, async {
                let names = strings(v, "AlarmNames")?;
                s.alarms
                    .delete(&names)
                    .await
                    .map_err(|e| alarm_change_error(e, not_found))?;
                Ok(Value::Map(Vec::new()))
            })
            .await
        }
        "SetAlarmState" => audited_change(s, caller, op, v, who, set_alarm_state(s, v)).await,
        _ => Err(ApiError {
            status: 400,
            code: "UnknownOperationException",
            query_code: "InvalidAction",
            message: format!("The operation {op:?} is not supported by this endpoint"),
        }),
    };
    match r {
        Ok(v) => respond(proto, 200, &v, None),
        Err(e) => error_response(proto, e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn hostile_cbor_is_refused_not_a_crash() {
        // 100,000 nested arrays, a map whose length says 2^60, a truncated text.
        let deep: Vec<u8> = std::iter::repeat_n(0x81u8, 100_000).chain([0xa0]).collect();
        for body in [
            deep,
            vec![0xbb, 0x10, 0, 0, 0, 0, 0, 0, 0],
            vec![0xa1, 0x69, b'N'],
        ] {
            assert!(parse_cbor(&body).is_err());
        }
        assert!(matches!(parse_cbor(&[0xa0]), Ok(Value::Map(m)) if m.is_empty()));
    }

    #[test]
    fn json_and_cbor_values_convert_both_ways() {
        let j = serde_json::json!({"a": [1, 2.5, "x", true, null], "StartTime": 1796169600});
        assert_eq!(to_json(&from_json(&j)), j);
        // A timestamp (tag 1) is epoch seconds in JSON.
        assert_eq!(to_json(&ts(42)), serde_json::json!(42));
    }
}
