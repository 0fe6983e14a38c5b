//! Offline tools over a data folder, safe to run while a server is using it.

use crate::config::Config;
use flate2::read::GzDecoder;
use logbook_journal::Cursor;
use logbook_record::parse_timestamp;
use serde_json::Value;
use std::collections::HashSet;
use std::io::Read;
use time::OffsetDateTime;

/// Tool errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

/// Parse `90s`, `30m`, `24h`, `7d`, `2w` into a duration.
pub fn parse_since(s: &str) -> Result<time::Duration, ToolError> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| ToolError(format!("bad duration {s:?}: use e.g. 90s, 30m, 24h, 7d")))?;
    Ok(match unit {
        "s" => time::Duration::seconds(n),
        "m" => time::Duration::minutes(n),
        "h" | "" => time::Duration::hours(n),
        "d" => time::Duration::days(n),
        "w" => time::Duration::weeks(n),
        _ => {
            return Err(ToolError(format!(
                "bad duration unit in {s:?}: use s, m, h, d or w"
            )))
        }
    })
}

/// The CloudTrail events delivered to the archive bucket (local or S3), read through its
/// object store.
fn delivered_trail(name: &str, spec: &crate::config::BucketSpec) -> Result<Vec<Value>, ToolError> {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let bucket = logbook_bucket::Bucket::open(name, spec, logbook_journal::RealDisk::shared())
        .map_err(|e| ToolError(e.to_string()))?;
    let store = bucket.store();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ToolError(e.to_string()))?;
    rt.block_on(async {
        let prefix = object_store::path::Path::from("AWSLogs");
        let keys: Vec<object_store::path::Path> = store
            .list(Some(&prefix))
            .try_filter_map(|m| {
                let k = m.location.as_ref();
                let trail = k.contains("/CloudTrail/") && k.ends_with(".json.gz");
                std::future::ready(Ok(trail.then_some(m.location)))
            })
            .try_collect()
            .await
            .map_err(|e| ToolError(format!("bucket {name}: {e}")))?;
        let mut events = Vec::new();
        for k in keys {
            let bytes = match store.get(&k).await {
                Ok(r) => r.bytes().await,
                Err(e) => Err(e),
            }
            .map_err(|e| ToolError(format!("bucket {name}: {k}: {e}")))?;
            let mut s = String::new();
            if GzDecoder::new(&bytes[..]).read_to_string(&mut s).is_err() {
                continue; // not a whole object (being written, or foreign)
            }
            if let Ok(v) = serde_json::from_str::<Value>(&s) {
                if let Some(Value::Array(rs)) = v.get("Records") {
                    events.extend(rs.iter().cloned());
                }
            }
        }
        Ok(events)
    })
}

/// Parse an instant: RFC 3339 (`2026-11-19T14:00:00Z`) or a UTC date (`2026-11-19`).
pub fn parse_instant(s: &str) -> Result<OffsetDateTime, ToolError> {
    if let Some(t) = parse_timestamp(s) {
        return Ok(t);
    }
    let d = time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
        .map_err(|_| ToolError(format!("bad time {s:?}: use RFC 3339 or YYYY-MM-DD")))?;
    Ok(d.midnight().assume_utc())
}

/// Filters for [`trail_events`].
#[derive(Debug, Clone, Default)]
pub struct TrailFilter {
    /// Only events at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only events before this time.
    pub until: Option<OffsetDateTime>,
    /// Only this `eventName`.
    pub event_name: Option<String>,
    /// Only this principal: an exact ARN, or a prefix ending in `*`.
    pub principal: Option<String>,
    /// Only this `eventCategory`: `Management` (changes, control-plane reads) or `Data`
    /// (reads of records: queries, log-event reads, record fetches, reports).
    pub category: Option<String>,
}

/// Every audit event of the data folder: delivered CloudTrail objects in the archive
/// bucket, plus events still in the journal. Sorted by time.
pub fn trail_events(config: &Config, filter: &TrailFilter) -> Result<Vec<Value>, ToolError> {
    let mut events: Vec<Value> = Vec::new();
    if let Some(spec) = config.buckets.get(&config.archive_bucket) {
        events.extend(delivered_trail(&config.archive_bucket, spec)?);
    }
    let journal = config.data_dir.join("journal");
    if journal.exists() {
        let from = Cursor::new(&journal, "trail")
            .load()
            .map_err(|e| ToolError(e.to_string()))?;
        let keys = config.keyring().map_err(ToolError)?;
        logbook_journal::scan(&journal, &keys, from, |e| {
            if e.kind == logbook_journal::Kind::TrailEvent {
                if let Ok(v) = serde_json::from_slice::<Value>(&e.payload) {
                    events.push(v);
                }
            }
        })
        .map_err(|e| ToolError(e.to_string()))?;
    }
    let mut seen = HashSet::new();
    events.retain(|e| {
        seen.insert(
            e.get("eventID")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        )
    });
    events.retain(|e| {
        let t = e
            .get("eventTime")
            .and_then(Value::as_str)
            .and_then(parse_timestamp);
        let name = e.get("eventName").and_then(Value::as_str).unwrap_or("");
        let arn = e
            .get("userIdentity")
            .and_then(|u| u.get("arn"))
            .and_then(Value::as_str)
            .unwrap_or("");
        filter.since.is_none_or(|s| t.is_some_and(|t| t >= s))
            && filter.until.is_none_or(|u| t.is_some_and(|t| t < u))
            && filter.event_name.as_deref().is_none_or(|n| n == name)
            && filter.category.as_deref().is_none_or(|c| {
                e.get("eventCategory")
                    .and_then(Value::as_str)
                    .is_some_and(|x| x.eq_ignore_ascii_case(c))
            })
            && filter
                .principal
                .as_deref()
                .is_none_or(|p| match p.strip_suffix('*') {
                    Some(prefix) => arn.starts_with(prefix),
                    None => arn == p,
                })
    });
    events.sort_by(|a, b| {
        let k = |v: &Value| {
            (
                v.get("eventTime")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                v.get("eventID")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            )
        };
        k(a).cmp(&k(b))
    });
    Ok(events)
}

/// One line per event for a terminal.
pub fn trail_table(events: &[Value]) -> String {
    let g = |v: &Value, p: &[&str]| {
        let mut cur = v;
        for k in p {
            match cur.get(k) {
                Some(x) => cur = x,
                None => return "-".to_string(),
            }
        }
        cur.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| cur.to_string())
    };
    let mut out = format!(
        "{:<20}  {:<42}  {:<12}  {:<15}  {:<24}  {}\n",
        "eventTime", "eventName", "region", "sourceIP", "error", "principal"
    );
    for e in events {
        out.push_str(&format!(
            "{:<20}  {:<42}  {:<12}  {:<15}  {:<24}  {}\n",
            g(e, &["eventTime"]),
            g(e, &["eventName"]),
            g(e, &["awsRegion"]),
            g(e, &["sourceIPAddress"]),
            g(e, &["errorCode"]),
            g(e, &["userIdentity", "arn"])
        ));
    }
    out
}

/// Reach every remote destination of `config` the way delivery will: each S3 bucket takes
/// the permission-check write Bedrock makes (an empty
/// `AWSLogs/<account>/BedrockModelInvocationLogs/amazon-bedrock-logs-permission-check`, so
/// a missing bucket, wrong credentials, an unreachable endpoint and an unusable SSE-KMS key
/// all show), each `[[log_groups]]` group must exist. Returns one line per problem, naming
/// the entry and the reason.
pub async fn check_remotes(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    let mut names: Vec<&String> = config.buckets.keys().collect();
    names.sort();
    for name in names {
        let spec = &config.buckets[name];
        if spec.local_path().is_some() {
            continue;
        }
        let what = format!("bucket {name:?} ({})", spec.describe());
        let bucket =
            match logbook_bucket::Bucket::open(name, spec, logbook_journal::RealDisk::shared()) {
                Ok(b) => b,
                Err(e) => {
                    problems.push(format!("{what}: {e}"));
                    continue;
                }
            };
        let key = format!(
            "AWSLogs/{}/BedrockModelInvocationLogs/{}",
            config.account_id,
            crate::control_api::PERMISSION_CHECK
        );
        if let Err(e) = bucket.put(&key, Vec::new()).await {
            let kind = if e.is_permanent() {
                "refused"
            } else {
                "unreachable or failing"
            };
            problems.push(format!(
                "{what}: the permission-check write was {kind}: {e}"
            ));
        }
    }
    for (name, spec) in &config.remote_log_groups {
        let what = format!("log group {name:?} ({})", spec.endpoint);
        let client = match crate::app::logs_client(name, spec).await {
            Ok(c) => c,
            Err(e) => {
                problems.push(format!("{what}: {e}"));
                continue;
            }
        };
        match client.log_group_exists(name).await {
            Ok(true) => {}
            Ok(false) => problems.push(format!(
                "{what}: the log group does not exist there (create it with CreateLogGroup)"
            )),
            Err(e) => problems.push(format!("{what}: {e}")),
        }
    }
    if let Some(o) = &config.otlp {
        let what = format!("OTLP collector {}", o.exporter.endpoint);
        let mut c = o.exporter.clone();
        c.metrics = false; // an empty span export says enough; no metric reader
        match logbook_otel::OtlpTarget::new(&c) {
            Ok(t) => {
                if let Err(e) = logbook_delivery::Target::probe(&t, "validate").await {
                    problems.push(format!("{what}: an empty export failed: {e}"));
                }
            }
            Err(e) => problems.push(format!("{what}: {e}")),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_since("24h").unwrap(), time::Duration::hours(24));
        assert_eq!(parse_since("7d").unwrap(), time::Duration::days(7));
        assert!(parse_since("x").is_err() && parse_since("5y").is_err());
        assert_eq!(
            parse_instant("2026-11-19").unwrap().unix_timestamp(),
            parse_timestamp("2026-11-19T00:00:00Z")
                .unwrap()
                .unix_timestamp()
        );
        assert!(parse_instant("19/11/2026").is_err());
    }
}
