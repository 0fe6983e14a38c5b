//! `logbook status`: a running server's health and delivery, as a person reads it.

use serde_json::Value;
use std::fmt::Write;

/// Fetch `/healthz` from `url`.
pub fn fetch(url: &str) -> anyhow::Result<Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let health = format!("{}/healthz", url.trim_end_matches('/'));
    rt.block_on(async {
        let resp = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()?
            .get(&health)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach {health}: {e}"))?;
        // 503 still carries the report.
        let body = resp.bytes().await?;
        serde_json::from_slice::<Value>(&body)
            .map_err(|e| anyhow::anyhow!("{health} did not answer with a health report: {e}"))
    })
}

fn age(seconds: Option<u64>) -> String {
    match seconds {
        None => "-".into(),
        Some(s) if s < 120 => format!("{s}s"),
        Some(s) if s < 7200 => format!("{}m", s / 60),
        Some(s) => format!("{}h", s / 3600),
    }
}

/// The report as a table: the server, then one line per destination, then Bedrock's
/// delivery metrics.
pub fn render(h: &Value) -> String {
    let mut out = String::new();
    let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let _ = writeln!(
        out,
        "status: {}",
        h.get("status").and_then(Value::as_str).unwrap_or("unknown")
    );
    if let Some(j) = h.get("journal") {
        // The disk's share of strict answers: the mean and the longest commit fdatasync.
        let syncs = n(j, "fsyncs");
        let times = match (j.get("fsyncMicros"), j.get("fsyncMaxMicros")) {
            (Some(total), Some(max)) if syncs > 0 => format!(
                " (mean {:.2} ms, longest {:.2} ms)",
                total.as_u64().unwrap_or(0) as f64 / syncs as f64 / 1000.0,
                max.as_u64().unwrap_or(0) as f64 / 1000.0
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "journal: {} entries committed, {syncs} fsyncs{times}; disk free: {}",
            n(j, "committed"),
            h.get("diskFreeBytes")
                .and_then(Value::as_u64)
                .map_or("unknown".into(), |b| format!("{} MiB", b >> 20))
        );
    }
    if let Some(u) = h.get("unrecordedCalls").and_then(Value::as_u64) {
        if u > 0 {
            let _ = writeln!(
                out,
                "calls served without a durable record (fail-open): {u}"
            );
        }
    }
    let Some(ds) = h.get("destinations").and_then(Value::as_object) else {
        return out;
    };
    let width = ds.keys().map(String::len).max().unwrap_or(11).max(11);
    let _ = writeln!(
        out,
        "\n{:<width$}  {:<10}  {:>9}  {:>11}  {:>8}  {:>7}  {:>8}  {:>7}  state",
        "destination", "kind", "delivered", "bytes", "backlog", "oldest", "failures", "retries"
    );
    for (name, d) in ds {
        let state = if d.get("stalled").and_then(Value::as_bool) == Some(true) {
            if d.get("permanentFailure").and_then(Value::as_bool) == Some(true) {
                "stalled (permanent)".to_string()
            } else {
                "stalled".to_string()
            }
        } else if n(d, "consecutiveFailures") > 0 {
            "retrying".into()
        } else {
            "ok".into()
        };
        let backlog = d.get("backlog").cloned().unwrap_or(Value::Null);
        let _ = writeln!(
            out,
            "{name:<width$}  {:<10}  {:>9}  {:>11}  {:>8}  {:>7}  {:>8}  {:>7}  {state}",
            d.get("kind").and_then(Value::as_str).unwrap_or("-"),
            n(d, "records"),
            n(d, "bytes"),
            n(&backlog, "entries"),
            age(backlog.get("oldestAgeSeconds").and_then(Value::as_u64)),
            n(d, "failures"),
            n(d, "retries"),
        );
        if let Some(e) = d.get("lastError").and_then(Value::as_str) {
            if n(d, "consecutiveFailures") > 0 {
                let _ = writeln!(out, "{:width$}  last error: {e}", "");
            }
        }
        for (k, what) in [
            ("parked", "entries parked"),
            ("rejected", "events refused by the destination"),
        ] {
            if n(d, k) > 0 {
                let _ = writeln!(out, "{:width$}  {what}: {}", "", n(d, k));
            }
        }
    }
    if let Some(groups) = h
        .get("store")
        .and_then(|s| s.get("logGroups"))
        .and_then(Value::as_object)
    {
        if !groups.is_empty() {
            let _ = writeln!(out, "\nlog groups (records / bodies kept):");
        }
        let days = |v: Option<&Value>| {
            v.and_then(Value::as_u64)
                .map_or("forever".to_string(), |d| format!("{d} days"))
        };
        for (name, g) in groups {
            let records = days(g.get("retentionInDays"));
            let bodies = match g.get("bodyRetentionDays").and_then(Value::as_u64) {
                Some(d) => format!("{d} days"),
                None => "as long as the records".into(),
            };
            let _ = writeln!(
                out,
                "  {name}: {} records, {} bytes; records {records}, bodies {bodies}",
                n(g, "records"),
                n(g, "storedBytes"),
            );
        }
    }
    if let Some(rules) = h.get("lifecycle").and_then(Value::as_object) {
        if !rules.is_empty() {
            let _ = writeln!(out, "\nlifecycle:");
        }
        for (bucket, r) in rules {
            let days = |k: &str| r.get(k).and_then(Value::as_u64);
            let mut rule = Vec::new();
            if let (Some(d), Some(to)) = (
                days("transitionAfterDays"),
                r.get("transitionTo").and_then(Value::as_str),
            ) {
                rule.push(format!("to {to} after {d} days"));
            }
            if let Some(d) = days("expireAfterDays") {
                rule.push(format!("expire after {d} days"));
            }
            let _ = writeln!(
                out,
                "  {bucket}: {}; {} passes, {} moved ({} bytes), {} expired ({} bytes){}",
                rule.join(", "),
                n(r, "passes"),
                n(r, "transitioned"),
                n(r, "transitionedBytes"),
                n(r, "expired"),
                n(r, "expiredBytes"),
                r.get("lastError")
                    .and_then(Value::as_str)
                    .map(|e| format!("; last pass failed: {e}"))
                    .unwrap_or_default()
            );
        }
    }
    let _ = writeln!(out, "\nmetrics (Bedrock's names):");
    let mut sums: std::collections::BTreeMap<String, u64> = Default::default();
    for d in ds.values() {
        if let Some(m) = d.get("metrics").and_then(Value::as_object) {
            for (k, v) in m {
                if k.starts_with("ModelInvocation") {
                    *sums.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
                }
            }
        }
    }
    for (k, v) in sums {
        let _ = writeln!(out, "  {k} {v}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_stalled_destination_with_its_error_and_metrics() {
        let h = serde_json::json!({
            "status": "degraded",
            "journal": {"committed": 41, "fsyncs": 7, "fsyncMicros": 2450, "fsyncMaxMicros": 1204},
            "diskFreeBytes": 10u64 << 30,
            "destinations": {
                "archive-a": {"kind": "s3", "records": 40, "bytes": 9000, "backlog": {"entries": 0, "oldestAgeSeconds": null},
                    "failures": 0, "retries": 0, "consecutiveFailures": 0, "stalled": false,
                    "metrics": {"ModelInvocationLogsS3DeliverySuccess": 40, "ModelInvocationLogsS3DeliveryFailure": 0,
                                "ModelInvocationLargeDataS3DeliverySuccess": 2, "ModelInvocationLargeDataS3DeliveryFailure": 0}},
                "cloudwatch-g": {"kind": "cloudwatch", "records": 0, "bytes": 0, "backlog": {"entries": 41, "oldestAgeSeconds": 300},
                    "failures": 5, "retries": 5, "consecutiveFailures": 5, "stalled": true, "permanentFailure": true,
                    "lastError": "CloudWatch Logs PutLogEvents: ResourceNotFoundException: nope", "rejected": 3,
                    "metrics": {"ModelInvocationLogsCloudWatchDeliverySuccess": 0, "ModelInvocationLogsCloudWatchDeliveryFailure": 5,
                                "ModelInvocationLargeDataS3DeliverySuccess": 0, "ModelInvocationLargeDataS3DeliveryFailure": 0}}
            }
        });
        let out = render(&h);
        assert!(
            out.starts_with(
                "status: degraded\njournal: 41 entries committed, 7 fsyncs (mean 0.35 ms, longest 1.20 ms); disk free: 10240 MiB\n"
            ),
            "{out}"
        );
        let cw = out.lines().find(|l| l.starts_with("cloudwatch-g")).unwrap();
        let cols: Vec<&str> = cw.split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "cloudwatch-g",
                "cloudwatch",
                "0",
                "0",
                "41",
                "5m",
                "5",
                "5",
                "stalled",
                "(permanent)"
            ]
        );
        assert!(out
            .contains("last error: CloudWatch Logs PutLogEvents: ResourceNotFoundException: nope"));
        assert!(out.contains("events refused by the destination: 3"));
        assert!(out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == ["archive-a", "s3", "40", "9000", "0", "-", "0", "0", "ok"]));
        assert!(out.contains("  ModelInvocationLogsCloudWatchDeliveryFailure 5\n"));
        assert!(out.contains("  ModelInvocationLargeDataS3DeliverySuccess 2\n"));
        assert!(!out.contains(
            "last error: CloudWatch Logs PutLogEvents: ResourceNotFoundException: nope\n  last"
        ));
    }

    #[test]
    fn renders_lifecycle_rules_and_what_log_groups_keep() {
        let h = serde_json::json!({
            "status": "ok",
            "destinations": {},
            "store": {"logGroups": {
                "/aws/bedrock/modelinvocations": {"retentionInDays": 365, "bodyRetentionDays": 30, "records": 12, "storedBytes": 4096},
                "/team": {"retentionInDays": null, "bodyRetentionDays": null, "records": 0, "storedBytes": 0}}},
            "lifecycle": {
                "logbook-archive": {"transitionAfterDays": 30, "transitionTo": "cold", "expireAfterDays": 365,
                    "passes": 3, "transitioned": 2, "transitionedBytes": 900, "expired": 1, "expiredBytes": 400, "lastError": null},
                "team": {"transitionAfterDays": null, "transitionTo": null, "expireAfterDays": 7,
                    "passes": 1, "transitioned": 0, "transitionedBytes": 0, "expired": 0, "expiredBytes": 0,
                    "lastError": "bucket team: i/o: denied"}
            }
        });
        let out = render(&h);
        assert!(out.contains("log groups (records / bodies kept):\n  /aws/bedrock/modelinvocations: 12 records, 4096 bytes; records 365 days, bodies 30 days\n  /team: 0 records, 0 bytes; records forever, bodies as long as the records\n"), "{out}");
        assert!(out.contains("lifecycle:\n  logbook-archive: to cold after 30 days, expire after 365 days; 3 passes, 2 moved (900 bytes), 1 expired (400 bytes)\n"), "{out}");
        assert!(out.contains("  team: expire after 7 days; 1 passes, 0 moved (0 bytes), 0 expired (0 bytes); last pass failed: bucket team: i/o: denied\n"), "{out}");
    }
}
