//! `logbook coverage`: is every call being recorded where the configuration says, and
//! would anyone be told if not? For every account/region the data folder knows of: logging
//! on, each destination of the configuration in force declared and delivering (asked of
//! the running server's `/healthz`), no drift from the configuration file; for the node:
//! the alarms that catch failing calls. Table or JSON; exit 1 on any gap, for cron and CI.

use serde::Serialize;
use serde_json::Value;
use std::fmt::Write;

/// Metrics a node must have an alarm on, by default: the seed's two (Bedrock's client
/// errors and throttles).
pub const DEFAULT_ALARM_METRICS: [&str; 2] = ["InvocationClientErrors", "InvocationThrottles"];

/// One destination of a region's configuration.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationCoverage {
    /// `s3`, `cloudwatch` or `log-group` (the embedded store).
    pub kind: &'static str,
    /// Bucket or log group.
    pub name: String,
    /// Whether it is delivering.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

/// One account/region.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegionCoverage {
    /// Account id.
    pub account_id: String,
    /// Region.
    pub region: String,
    /// A logging configuration is in force.
    pub logging: bool,
    /// Its destinations.
    pub destinations: Vec<DestinationCoverage>,
    /// The configuration in force differs from the file's declaration.
    pub drift: bool,
}

/// The node's alarms on one metric.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlarmCoverage {
    /// Metric name.
    pub metric: String,
    /// Alarms on it, with their state.
    pub alarms: Vec<String>,
}

/// One replica of the cluster home (`[cluster]`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaCoverage {
    /// Node id.
    pub node: String,
    /// `running`, `stopped` (released its claim), `lost` (stopped renewing without
    /// releasing: crashed or cut off) or `unreadable`.
    pub state: String,
    /// Host, process and data folder of its last holder.
    pub holder: String,
    /// Seconds since its claim was renewed.
    pub last_seen_s: Option<u64>,
    /// The journal position of the store it last published.
    pub published_next_seq: Option<u64>,
}

/// The whole report.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Coverage {
    /// The node checked.
    pub node_id: String,
    /// The server asked about delivery, and what it said of itself.
    pub server: String,
    /// Per account/region.
    pub regions: Vec<RegionCoverage>,
    /// Per required metric.
    pub alarms: Vec<AlarmCoverage>,
    /// The replicas sharing this node's home (empty without `[cluster]`).
    pub replicas: Vec<ReplicaCoverage>,
    /// Replicas: where this config's `[[budgets]]` differs from the cluster's set (as the
    /// server last read it).
    pub budget_drift: Vec<String>,
    /// Every gap, in words.
    pub gaps: Vec<String>,
}

/// Check `config`'s data folder, asking `health` (the running server's `/healthz`, or why
/// it could not be read) about delivery, and `replicas` (the cluster home's claims, when
/// there is a home) about the other replicas.
pub fn check(
    config: &logbook_server::Config,
    health: Result<Value, String>,
    alarm_metrics: &[String],
    replicas: Option<Result<Vec<logbook_cluster::claim::ReplicaStatus>, String>>,
    now_ms: u64,
) -> anyhow::Result<Coverage> {
    let mut gaps = Vec::new();
    let mut replica_rows = Vec::new();
    match replicas {
        None => {}
        Some(Err(e)) => gaps.push(format!("replicas not checked: {e}")),
        Some(Ok(list)) => {
            let ttl = config
                .cluster
                .as_ref()
                .map_or(30_000, |c| c.claim_ttl.as_millis() as u64);
            for r in list {
                let (state, holder, seen) = match &r.claim {
                    None => (
                        "unreadable".to_string(),
                        r.error.clone().unwrap_or_default(),
                        None,
                    ),
                    Some(c) => {
                        let age = now_ms.saturating_sub(c.heartbeat_ms);
                        let state = if c.released {
                            "stopped"
                        } else if age > ttl {
                            "lost"
                        } else {
                            "running"
                        };
                        (
                            state.to_string(),
                            format!("{} pid {} {}", c.host, c.pid, c.data_dir),
                            Some(age / 1000),
                        )
                    }
                };
                match state.as_str() {
                    "lost" => gaps.push(format!(
                        "replica {} ({holder}) stopped renewing its claim {} s ago without stopping cleanly: crashed or cut off from the home; its calls are not being served there",
                        r.node,
                        seen.unwrap_or_default()
                    )),
                    "unreadable" => gaps.push(format!("replica {}: {holder}", r.node)),
                    _ => {}
                }
                replica_rows.push(ReplicaCoverage {
                    node: r.node,
                    state,
                    holder,
                    last_seen_s: seen,
                    published_next_seq: r.published.map(|(seq, _)| seq),
                });
            }
        }
    }
    let node_id = std::fs::read_to_string(config.data_dir.join("node-id"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "(not started yet)".into());
    let server = match &health {
        Ok(h) => {
            let status = h.get("status").and_then(Value::as_str).unwrap_or("unknown");
            if status != "ok" {
                gaps.push(format!("the server reports {status:?}"));
            }
            status.to_string()
        }
        Err(e) => {
            gaps.push(format!("delivery not checked: {e}"));
            "unreachable".into()
        }
    };
    let dests = health
        .as_ref()
        .ok()
        .and_then(|h| h.get("destinations"))
        .cloned()
        .unwrap_or(Value::Null);
    let default_key = format!("{}/{}", config.account_id, config.region);
    let in_force = logbook_server::control::LoggingConfigs::in_force_stored(
        &config.data_dir.join("control"),
        &config.logging_default,
        &config.logging_declared,
        &[default_key],
    )
    .map_err(|e| anyhow::anyhow!(e.to_string()))?;
    let drift = logbook_server::control::LoggingConfigs::diff_stored(
        &config.data_dir.join("control"),
        &config.logging_default,
        &config.logging_declared,
    )
    .map_err(|e| anyhow::anyhow!(e.to_string()))?;
    let delivering = |key: &str| -> (bool, String) {
        match dests.get(key) {
            _ if health.is_err() => (false, "not checked".into()),
            None => (false, "no such destination on the running server".into()),
            Some(d) => {
                let stalled = d.get("stalled").and_then(Value::as_bool).unwrap_or(false);
                let permanent = d
                    .get("permanentFailure")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let backlog = d["backlog"]["entries"].as_u64().unwrap_or(0);
                let err = d.get("lastError").and_then(Value::as_str);
                if stalled || permanent {
                    (
                        false,
                        format!(
                            "{}: {}",
                            if permanent { "failing" } else { "stalled" },
                            err.unwrap_or("no error text")
                        ),
                    )
                } else {
                    (true, format!("delivering (backlog {backlog})"))
                }
            }
        }
    };
    let mut regions = Vec::new();
    for (key, cfg) in in_force {
        let (account, region) = key.split_once('/').unwrap_or((key.as_str(), ""));
        let mut rc = RegionCoverage {
            account_id: account.into(),
            region: region.into(),
            logging: cfg.is_some(),
            destinations: Vec::new(),
            drift: drift
                .iter()
                .any(|d| d.account_id == account && d.region == region),
        };
        let Some(cfg) = cfg else {
            gaps.push(format!(
                "{key}: logging is off (calls there are not recorded)"
            ));
            regions.push(rc);
            continue;
        };
        if cfg.s3_config.is_none() && cfg.cloud_watch_config.is_none() {
            gaps.push(format!(
                "{key}: the logging configuration names no destination"
            ));
        }
        if let Some(s3) = &cfg.s3_config {
            let b = &s3.bucket_name;
            let (ok, detail) = if config.buckets.contains_key(b) {
                delivering(&format!("archive-{b}"))
            } else {
                (false, "not declared in [[buckets]]".into())
            };
            if !ok {
                gaps.push(format!("{key}: bucket {b}: {detail}"));
            }
            rc.destinations.push(DestinationCoverage {
                kind: "s3",
                name: b.clone(),
                ok,
                detail,
            });
        }
        if let Some(cw) = &cfg.cloud_watch_config {
            let g = &cw.log_group_name;
            let (kind, (ok, detail)) = if config.remote_log_groups.contains_key(g) {
                ("cloudwatch", delivering(&format!("cloudwatch-{g}")))
            } else {
                let ok = health.is_ok();
                let detail = if ok {
                    "embedded store (ingest runs in the server)"
                } else {
                    "not checked"
                };
                ("log-group", (ok, detail.to_string()))
            };
            if !ok {
                gaps.push(format!("{key}: log group {g}: {detail}"));
            }
            rc.destinations.push(DestinationCoverage {
                kind,
                name: g.clone(),
                ok,
                detail,
            });
        }
        if rc.drift {
            gaps.push(format!(
                "{key}: the configuration in force differs from the file (logbook config diff)"
            ));
        }
        regions.push(rc);
    }
    let mut budget_drift = Vec::new();
    if config.cluster.is_some() {
        match logbook_server::shared_budgets::drift_stored(
            &config.budgets,
            &config.data_dir.join("control"),
        ) {
            Ok(Some(lines)) => budget_drift = lines,
            Ok(None) => {}
            Err(e) => gaps.push(format!("budgets not checked: {e}")),
        }
        for d in &budget_drift {
            gaps.push(format!("{d} (the cluster enforces its own)"));
        }
    }
    let stored = logbook_server::alarms::stored(&config.data_dir).map_err(anyhow::Error::msg)?;
    let mut alarms = Vec::new();
    for m in alarm_metrics {
        let on: Vec<String> = stored
            .iter()
            .filter(|e| &e.def.metric_name == m)
            .map(|e| format!("{} ({})", e.def.alarm_name, e.state.as_str()))
            .collect();
        if on.is_empty() {
            gaps.push(format!("no alarm on {m}"));
        }
        alarms.push(AlarmCoverage {
            metric: m.clone(),
            alarms: on,
        });
    }
    Ok(Coverage {
        node_id,
        server,
        regions,
        alarms,
        replicas: replica_rows,
        budget_drift,
        gaps,
    })
}

/// The report as a table.
pub fn render(c: &Coverage) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "node {} (server: {})", c.node_id, c.server);
    let _ = writeln!(
        out,
        "{:<30} {:<8} {:<6} DESTINATIONS",
        "ACCOUNT/REGION", "LOGGING", "DRIFT"
    );
    for r in &c.regions {
        let dests = if r.destinations.is_empty() {
            "-".to_string()
        } else {
            r.destinations
                .iter()
                .map(|d| {
                    format!(
                        "{} {} {}: {}",
                        if d.ok { "ok" } else { "GAP" },
                        d.kind,
                        d.name,
                        d.detail
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let _ = writeln!(
            out,
            "{:<30} {:<8} {:<6} {dests}",
            format!("{}/{}", r.account_id, r.region),
            if r.logging { "on" } else { "OFF" },
            if r.drift { "YES" } else { "no" }
        );
    }
    for a in &c.alarms {
        let _ = writeln!(
            out,
            "alarms on {}: {}",
            a.metric,
            if a.alarms.is_empty() {
                "NONE".to_string()
            } else {
                a.alarms.join(", ")
            }
        );
    }
    if !c.replicas.is_empty() {
        let _ = writeln!(
            out,
            "{:<24} {:<10} {:<10} {:<10} HOLDER",
            "REPLICA", "STATE", "SEEN", "PUBLISHED"
        );
        for r in &c.replicas {
            let _ = writeln!(
                out,
                "{:<24} {:<10} {:<10} {:<10} {}",
                r.node,
                r.state,
                r.last_seen_s.map_or("-".into(), |s| format!("{s} s ago")),
                r.published_next_seq.map_or("-".into(), |s| s.to_string()),
                r.holder
            );
        }
    }
    if c.gaps.is_empty() {
        let _ = writeln!(out, "no gap");
    } else {
        let _ = writeln!(out, "{} gap(s):", c.gaps.len());
        for g in &c.gaps {
            let _ = writeln!(out, "  - {g}");
        }
    }
    out
}
