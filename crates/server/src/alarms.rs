//! Metric alarms: definitions (from the config file and `PutMetricAlarm`), their state and
//! history in `control/alarms.json` (written atomically on every change), the evaluator
//! that turns Bedrock's metrics into `OK` / `ALARM` / `INSUFFICIENT_DATA`, and the actions
//! run on each transition: an HTTP POST in the shape of an SNS notification, or a
//! Slack-compatible message, retried with backoff, every attempt in the alarm's history.

use crate::app::Shared;
use logbook_journal::Disk;
use logbook_ops::alarms::{AlarmDef, AlarmState};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// History items kept (oldest dropped first).
pub const MAX_HISTORY: usize = 5000;

/// Most alarms a gateway keeps: each is evaluated with a query every period, so a
/// caller with `logging:manage` cannot load the query engine without bound.
pub const MAX_ALARMS: usize = 1000;

/// Attempts per action before it is given up.
pub const ACTION_ATTEMPTS: u32 = 5;

/// Where an action ARN sends its notifications.
#[derive(Debug, Clone)]
pub struct ActionTarget {
    /// `http(s)://...`
    pub url: String,
    /// `sns` (an SNS `Notification` envelope) or `slack` (`{"text": ...}`).
    pub format: String,
}

/// An alarm and its state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Definition.
    pub def: AlarmDef,
    /// State.
    pub state: AlarmState,
    /// Why.
    pub reason: String,
    /// When the state last changed, epoch ms.
    pub state_updated_ms: i64,
    /// When the definition last changed, epoch ms.
    pub config_updated_ms: i64,
    /// Declared in the config file (re-applied at every start).
    #[serde(default)]
    pub declared: bool,
}

/// One history item, as `DescribeAlarmHistory` returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryItem {
    /// Alarm.
    pub alarm_name: String,
    /// Epoch ms.
    pub timestamp_ms: i64,
    /// `StateUpdate`, `ConfigurationUpdate` or `Action`.
    pub kind: String,
    /// One line.
    pub summary: String,
    /// JSON text.
    pub data: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    alarms: BTreeMap<String, Entry>,
    history: VecDeque<HistoryItem>,
}

/// The alarms of one gateway.
#[derive(Debug)]
pub struct Alarms {
    path: PathBuf,
    inner: Mutex<Stored>,
    saving: Mutex<()>,
    /// Action ARNs the configuration declares.
    pub targets: BTreeMap<String, ActionTarget>,
    http: reqwest::Client,
    region: String,
    account: String,
    max: usize,
}

fn now_ms() -> i64 {
    logbook_store::now_ms()
}

impl Alarms {
    /// Open (or create) the alarm file; apply the declared alarms.
    pub fn open(
        data_dir: &std::path::Path,
        declared: Vec<AlarmDef>,
        targets: BTreeMap<String, ActionTarget>,
        region: &str,
        account: &str,
    ) -> Result<Alarms, String> {
        let path = data_dir.join("control").join("alarms.json");
        let mut st: Stored = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        // Declared alarms: (re)applied; ones no longer declared go.
        st.alarms.retain(|_, e| !e.declared);
        for d in declared {
            let keep = st
                .alarms
                .get(&d.alarm_name)
                .map(|e| (e.state, e.reason.clone()));
            let (state, reason) = keep.unwrap_or((
                AlarmState::InsufficientData,
                "Unchecked: Initial alarm creation".into(),
            ));
            st.alarms.insert(
                d.alarm_name.clone(),
                Entry {
                    def: d,
                    state,
                    reason,
                    state_updated_ms: now_ms(),
                    config_updated_ms: now_ms(),
                    declared: true,
                },
            );
        }
        let a = Alarms {
            path,
            inner: Mutex::new(st),
            saving: Mutex::new(()),
            targets,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| e.to_string())?,
            region: region.to_string(),
            account: account.to_string(),
            max: MAX_ALARMS,
        };
        a.save().map_err(|e| e.to_string())?;
        Ok(a)
    }

    /// Keep at most `n` alarms (default [`MAX_ALARMS`]).
    pub fn with_max(mut self, n: usize) -> Self {
        self.max = n;
        self
    }

    /// The alarms named, as they are now (to undo a change whose audit failed).
    pub fn snapshot(&self, names: &[String]) -> Vec<Entry> {
        let st = self.lock();
        names
            .iter()
            .filter_map(|n| st.alarms.get(n).cloned())
            .collect()
    }

    /// Put the alarms `names` back as `previous` held them (absent when not in it).
    pub fn restore(&self, names: &[String], previous: Vec<Entry>) -> Result<(), String> {
        {
            let mut st = self.lock();
            for n in names {
                st.alarms.remove(n);
            }
            for e in previous {
                st.alarms.insert(e.def.alarm_name.clone(), e);
            }
        }
        self.save().map_err(|e| e.to_string())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stored> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self) -> std::io::Result<()> {
        // One save at a time: two writers of the same temporary file (the evaluator and
        // an API call) would rename it from under each other (ENOENT).
        let _one = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = {
            let st = self.lock();
            serde_json::to_vec_pretty(&*st).map_err(std::io::Error::other)?
        };
        logbook_journal::RealDisk.write_atomic(&self.path, &bytes)
    }

    fn push_history(st: &mut Stored, item: HistoryItem) {
        st.history.push_back(item);
        while st.history.len() > MAX_HISTORY {
            st.history.pop_front();
        }
    }

    /// The alarm's ARN.
    pub fn arn(&self, name: &str) -> String {
        format!(
            "arn:aws:cloudwatch:{}:{}:alarm:{name}",
            self.region, self.account
        )
    }

    /// Create or replace an alarm (`PutMetricAlarm`).
    pub fn put(&self, def: AlarmDef) -> Result<(), String> {
        def.validate()?;
        for a in def
            .alarm_actions
            .iter()
            .chain(&def.ok_actions)
            .chain(&def.insufficient_data_actions)
        {
            if !self.targets.contains_key(a) {
                return Err(format!(
                    "The action {a:?} is not declared in [[alarm_actions]] of this gateway's configuration."
                ));
            }
        }
        {
            let mut st = self.lock();
            if st.alarms.get(&def.alarm_name).is_some_and(|e| e.declared) {
                return Err(format!(
                    "The alarm {:?} is declared in the configuration file; change it there.",
                    def.alarm_name
                ));
            }
            if !st.alarms.contains_key(&def.alarm_name) && st.alarms.len() >= self.max {
                return Err(format!(
                    "This gateway already has {} alarms (the most it keeps); delete some first.",
                    self.max
                ));
            }
            let name = def.alarm_name.clone();
            let (state, reason, since) = match st.alarms.get(&name) {
                Some(e) => (e.state, e.reason.clone(), e.state_updated_ms),
                None => (
                    AlarmState::InsufficientData,
                    "Unchecked: Initial alarm creation".into(),
                    now_ms(),
                ),
            };
            let data = serde_json::to_string(&def).unwrap_or_default();
            st.alarms.insert(
                name.clone(),
                Entry {
                    def,
                    state,
                    reason,
                    state_updated_ms: since,
                    config_updated_ms: now_ms(),
                    declared: false,
                },
            );
            Self::push_history(
                &mut st,
                HistoryItem {
                    alarm_name: name.clone(),
                    timestamp_ms: now_ms(),
                    kind: "ConfigurationUpdate".into(),
                    summary: format!("Alarm \"{name}\" updated"),
                    data,
                },
            );
        }
        self.save().map_err(|e| e.to_string())
    }

    /// Delete alarms (`DeleteAlarms`); unknown names are an error, as CloudWatch's.
    pub fn delete(&self, names: &[String]) -> Result<(), String> {
        {
            let mut st = self.lock();
            if let Some(missing) = names.iter().find(|n| !st.alarms.contains_key(*n)) {
                return Err(format!("Alarm {missing:?} does not exist"));
            }
            if let Some(d) = names
                .iter()
                .find(|n| st.alarms.get(*n).is_some_and(|e| e.declared))
            {
                return Err(format!(
                    "The alarm {d:?} is declared in the configuration file; remove it there."
                ));
            }
            for n in names {
                st.alarms.remove(n);
                Self::push_history(
                    &mut st,
                    HistoryItem {
                        alarm_name: n.clone(),
                        timestamp_ms: now_ms(),
                        kind: "ConfigurationUpdate".into(),
                        summary: format!("Alarm \"{n}\" deleted"),
                        data: "{}".into(),
                    },
                );
            }
        }
        self.save().map_err(|e| e.to_string())
    }

    /// Every alarm.
    pub fn list(&self) -> Vec<Entry> {
        self.lock().alarms.values().cloned().collect()
    }

    /// History, newest first.
    pub fn history(&self) -> Vec<HistoryItem> {
        self.lock().history.iter().rev().cloned().collect()
    }

    /// Move an alarm to `state` with `reason`; returns the transition to act on.
    pub fn set_state(
        &self,
        name: &str,
        state: AlarmState,
        reason: &str,
    ) -> Result<Option<(Entry, AlarmState)>, String> {
        let out = {
            let mut st = self.lock();
            let Some(e) = st.alarms.get_mut(name) else {
                return Err(format!("Alarm {name:?} does not exist"));
            };
            let old = e.state;
            if old == state {
                e.reason = reason.to_string();
                None
            } else {
                e.state = state;
                e.reason = reason.to_string();
                e.state_updated_ms = now_ms();
                let entry = e.clone();
                let data = serde_json::json!({
                    "version": "1.0",
                    "oldState": {"stateValue": old.as_str()},
                    "newState": {"stateValue": state.as_str(), "stateReason": reason},
                });
                Self::push_history(
                    &mut st,
                    HistoryItem {
                        alarm_name: name.to_string(),
                        timestamp_ms: now_ms(),
                        kind: "StateUpdate".into(),
                        summary: format!(
                            "Alarm updated from {} to {}",
                            old.as_str(),
                            state.as_str()
                        ),
                        data: data.to_string(),
                    },
                );
                Some((entry, old))
            }
        };
        self.save().map_err(|e| e.to_string())?;
        Ok(out)
    }

    fn record_action(&self, name: &str, summary: String, data: serde_json::Value) {
        {
            let mut st = self.lock();
            Self::push_history(
                &mut st,
                HistoryItem {
                    alarm_name: name.to_string(),
                    timestamp_ms: now_ms(),
                    kind: "Action".into(),
                    summary,
                    data: data.to_string(),
                },
            );
        }
        if let Err(e) = self.save() {
            tracing::error!(error = %e, "alarm history not written");
        }
    }

    /// The notification an action target receives for a transition.
    pub fn message(
        &self,
        e: &Entry,
        old: AlarmState,
        format: &str,
        topic: &str,
    ) -> serde_json::Value {
        let d = &e.def;
        let changed = logbook_record::record_timestamp(time::OffsetDateTime::now_utc());
        let alarm = serde_json::json!({
            "AlarmName": d.alarm_name,
            "AlarmDescription": d.alarm_description,
            "AWSAccountId": self.account,
            "AlarmConfigurationUpdatedTimestamp": changed,
            "NewStateValue": e.state.as_str(),
            "NewStateReason": e.reason,
            "StateChangeTime": changed,
            "Region": self.region,
            "AlarmArn": self.arn(&d.alarm_name),
            "OldStateValue": old.as_str(),
            "OKActions": d.ok_actions,
            "AlarmActions": d.alarm_actions,
            "InsufficientDataActions": d.insufficient_data_actions,
            "Trigger": {
                "MetricName": d.metric_name,
                "Namespace": d.namespace,
                "StatisticType": if d.statistic.starts_with('p') { "ExtendedStatistic" } else { "Statistic" },
                "Statistic": d.statistic.to_uppercase(),
                "Unit": null,
                "Dimensions": d.model_id.iter().map(|m| serde_json::json!({"value": m, "name": "ModelId"})).collect::<Vec<_>>(),
                "Period": d.period,
                "EvaluationPeriods": d.evaluation_periods,
                "DatapointsToAlarm": d.datapoints_to_alarm,
                "ComparisonOperator": d.comparison_operator,
                "Threshold": d.threshold,
                "TreatMissingData": d.treat_missing_data,
            }
        });
        if format == "slack" {
            let icon = match e.state {
                AlarmState::Alarm => ":rotating_light:",
                AlarmState::Ok => ":white_check_mark:",
                AlarmState::InsufficientData => ":grey_question:",
            };
            return serde_json::json!({
                "text": format!("{icon} {}: \"{}\" ({} {}) — {}", e.state.as_str(), d.alarm_name, d.namespace, d.metric_name, e.reason),
            });
        }
        serde_json::json!({
            "Type": "Notification",
            "MessageId": uuid::Uuid::new_v4().to_string(),
            "TopicArn": topic,
            "Subject": format!("{}: \"{}\" in {}", e.state.as_str(), d.alarm_name, self.region),
            "Message": alarm.to_string(),
            "Timestamp": changed,
            "SignatureVersion": "1",
            "Signature": "",
            "SigningCertURL": "",
            "UnsubscribeURL": "",
        })
    }

    /// Run the actions of a transition, each retried with backoff, every attempt in the
    /// history. Runs in the background.
    pub fn act(self: &std::sync::Arc<Self>, e: Entry, old: AlarmState) {
        if !e.def.actions_enabled {
            return;
        }
        let actions = match e.state {
            AlarmState::Alarm => e.def.alarm_actions.clone(),
            AlarmState::Ok => e.def.ok_actions.clone(),
            AlarmState::InsufficientData => e.def.insufficient_data_actions.clone(),
        };
        for arn in actions {
            let Some(target) = self.targets.get(&arn).cloned() else {
                continue;
            };
            let this = self.clone();
            let e = e.clone();
            tokio::spawn(async move {
                let body = this.message(&e, old, &target.format, &arn);
                this.deliver(&e.def.alarm_name, &arn, &target, body, e.state.as_str())
                    .await;
            });
        }
    }
}

impl Alarms {
    /// Notify `arns` of something that is not a metric alarm (a budget threshold): the
    /// same envelopes, retries and history items as alarm actions, under `name`.
    pub fn notify(
        self: &std::sync::Arc<Self>,
        name: &str,
        arns: &[String],
        subject: &str,
        message: serde_json::Value,
    ) {
        for arn in arns {
            let Some(target) = self.targets.get(arn).cloned() else {
                continue;
            };
            let body = if target.format == "slack" {
                serde_json::json!({"text": format!(":warning: {subject}")})
            } else {
                serde_json::json!({
                    "Type": "Notification",
                    "MessageId": uuid::Uuid::new_v4().to_string(),
                    "TopicArn": arn,
                    "Subject": subject,
                    "Message": message.to_string(),
                    "Timestamp": logbook_record::record_timestamp(time::OffsetDateTime::now_utc()),
                    "SignatureVersion": "1",
                    "Signature": "",
                    "SigningCertURL": "",
                    "UnsubscribeURL": "",
                })
            };
            let this = self.clone();
            let (name, arn) = (name.to_string(), arn.clone());
            tokio::spawn(async move {
                this.deliver(&name, &arn, &target, body, "Notification")
                    .await;
            });
        }
    }

    async fn deliver(
        &self,
        name: &str,
        arn: &str,
        target: &ActionTarget,
        body: serde_json::Value,
        what: &str,
    ) {
        let mut wait = Duration::from_millis(500);
        for attempt in 1..=ACTION_ATTEMPTS {
            let r = self.http.post(&target.url).json(&body).send().await;
            let (ok, detail) = match r {
                Ok(r) if r.status().is_success() => (true, format!("HTTP {}", r.status().as_u16())),
                Ok(r) => (false, format!("HTTP {}", r.status().as_u16())),
                Err(err) => (false, err.without_url().to_string()),
            };
            self.record_action(
                name,
                format!(
                    "{} action {arn} attempt {attempt}: {}",
                    if ok { "Successfully executed" } else { "Failed to execute" },
                    detail
                ),
                serde_json::json!({"actionState": if ok { "Succeeded" } else { "Failed" }, "action": arn, "attempt": attempt, "detail": detail, "newState": what}),
            );
            if ok {
                return;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }
}

/// The instant an alarm's window ends at. Alarms look at the period as it fills, so they
/// fire within one evaluation of a breach; but in the first moments of a period (one
/// evaluation interval and two seconds), the window is the periods just completed, so a
/// datapoint recorded at the very end of a period is always evaluated once its period
/// is whole (as CloudWatch evaluates complete periods), never skipped because the
/// period turned before an evaluation saw it.
fn evaluated_at(now_ms: i64, period_ms: i64, every: Duration) -> i64 {
    let current = now_ms.div_euclid(period_ms) * period_ms;
    let grace = every.as_millis() as i64 + 2_000;
    if now_ms - current < grace.min(period_ms / 2) {
        current - 1
    } else {
        now_ms
    }
}

/// The longest window kept in memory for an alarm (a day).
const SERIES_KEEP_MAX_MS: i64 = 86_400_000;

/// The series of Bedrock's metrics the alarms watch with a statistic the in-memory
/// series answer, and how far back each must reach.
fn watched(list: &[Entry]) -> Vec<(logbook_ops::series::Key, i64)> {
    let mut out: Vec<(logbook_ops::series::Key, i64)> = Vec::new();
    for e in list {
        let d = &e.def;
        if d.namespace != logbook_query::metrics::NAMESPACE
            || logbook_ops::series::SimpleStat::parse(&d.statistic).is_none()
            || d.period % 60 != 0
        {
            continue;
        }
        let key = (d.metric_name.clone(), d.model_id.clone());
        let keep = d.period * 1000 * i64::from(d.evaluation_periods);
        // Windows over a day (up to the 7 days alarms allow) read the records instead, so
        // the series' memory stays bounded: at most a day of minutes per watched series.
        if keep > SERIES_KEEP_MAX_MS {
            continue;
        }
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, k)) => *k = (*k).max(keep),
            None => out.push((key, keep)),
        }
    }
    out
}

/// The alarm's window from the in-memory series, when they cover it (else the records
/// are queried): its N periods up to and including the current one, oldest first.
fn from_series(
    series: &logbook_ops::series::MinuteSeries,
    d: &logbook_ops::alarms::AlarmDef,
    now_ms: i64,
) -> Option<Vec<Option<f64>>> {
    if d.namespace != logbook_query::metrics::NAMESPACE {
        return None;
    }
    let stat = logbook_ops::series::SimpleStat::parse(&d.statistic)?;
    let n = i64::from(d.evaluation_periods);
    let p = d.period * 1000;
    let current = now_ms.div_euclid(p) * p;
    let start = current - (n - 1) * p;
    series.window(
        &(d.metric_name.clone(), d.model_id.clone()),
        stat,
        p,
        start,
        n,
    )
}

/// Evaluate every alarm each `every`, until `stop`.
pub async fn run(
    s: Shared,
    alarms: std::sync::Arc<Alarms>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        let list = alarms.list();
        let series = s.metrics.series();
        series.sync(&watched(&list), logbook_store::now_ms());
        for e in list {
            let d = &e.def;
            let at = evaluated_at(logbook_store::now_ms(), d.period * 1000, every);
            let fast = from_series(series, d, at);
            let values = match fast {
                Some(v) => Ok(v),
                None => crate::metrics_api::window(&s, d, at).await,
            };
            let values = match values {
                Ok(v) => v,
                Err(err) => {
                    tracing::warn!(alarm = %d.alarm_name, error = %err, "alarm not evaluated");
                    continue;
                }
            };
            let (state, reason) = d.evaluate(&values, e.state);
            match alarms.set_state(&d.alarm_name, state, &reason) {
                Ok(Some((entry, old))) => {
                    tracing::warn!(alarm = %d.alarm_name, from = old.as_str(), to = state.as_str(), "alarm state changed");
                    alarms.act(entry, old);
                }
                Ok(None) => {}
                Err(err) => tracing::debug!(alarm = %d.alarm_name, error = %err, "alarm gone"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => {}
        }
    }
}

/// The alarms a data folder holds, read without changing anything.
pub fn stored(data_dir: &std::path::Path) -> Result<Vec<Entry>, String> {
    let path = data_dir.join("control").join("alarms.json");
    let st: Stored = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    Ok(st.alarms.into_values().collect())
}

/// `logbook alarms`: states and recent history, read from the data folder (no server
/// needed).
pub fn report(data_dir: &std::path::Path, history: usize) -> Result<String, String> {
    use std::fmt::Write as _;
    let path = data_dir.join("control").join("alarms.json");
    let st: Stored = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let when = |ms: i64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .map(logbook_record::record_timestamp)
            .unwrap_or_default()
    };
    let mut out = String::new();
    if st.alarms.is_empty() {
        out.push_str("No alarms.\n");
    }
    for e in st.alarms.values() {
        let d = &e.def;
        let _ = writeln!(
            out,
            "{:<17} {}  {} {} {} {} ({} x {} s, {} of {}){}",
            e.state.as_str(),
            d.alarm_name,
            d.metric_name,
            d.statistic,
            d.comparison_operator,
            d.threshold,
            d.evaluation_periods,
            d.period,
            d.datapoints_to_alarm,
            d.evaluation_periods,
            if e.declared { " [config]" } else { "" }
        );
        let _ = writeln!(
            out,
            "{:<17} since {}: {}",
            "",
            when(e.state_updated_ms),
            e.reason
        );
    }
    if !st.history.is_empty() {
        let _ = writeln!(out, "\nHistory (newest first):");
        for h in st.history.iter().rev().take(history) {
            let _ = writeln!(
                out,
                "{}  {:<19} {}  {}",
                when(h.timestamp_ms),
                h.kind,
                h.alarm_name,
                h.summary
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn def(name: &str) -> AlarmDef {
        AlarmDef {
            alarm_name: name.into(),
            alarm_description: None,
            namespace: "AWS/Bedrock".into(),
            metric_name: "InvocationThrottles".into(),
            model_id: Some("m".into()),
            statistic: "Sum".into(),
            period: 60,
            evaluation_periods: 1,
            datapoints_to_alarm: 1,
            threshold: 1.0,
            comparison_operator: "GreaterThanThreshold".into(),
            treat_missing_data: "missing".into(),
            actions_enabled: true,
            alarm_actions: vec![],
            ok_actions: vec![],
            insufficient_data_actions: vec![],
        }
    }

    #[test]
    fn a_manager_cannot_create_alarms_without_bound_or_name_unknown_actions() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("control")).unwrap();
        let a = Alarms::open(d.path(), vec![], BTreeMap::new(), "us-east-1", "1")
            .unwrap()
            .with_max(5);
        for i in 0..5 {
            a.put(def(&format!("a{i}"))).unwrap();
        }
        let e = a.put(def("one-too-many")).unwrap_err();
        assert!(e.contains("5 alarms"), "{e}");
        // Replacing an existing one is still allowed.
        a.put(def("a0")).unwrap();
        assert_eq!(a.list().len(), 5);
        // An action ARN the configuration does not declare (an arbitrary URL target) is refused.
        let mut bad = def("a1");
        bad.alarm_actions = vec!["arn:aws:sns:us-east-1:1:elsewhere".into()];
        assert!(a.put(bad).unwrap_err().contains("not declared"));
    }

    fn throttled(ts: &str) -> logbook_record::InvocationRecord {
        let mut call = crate::capture::Call::new(
            logbook_record::Operation::Converse,
            "bedrock-runtime",
            "m".into(),
            crate::identity::Principals::new(
                &crate::config::Config::defaults(std::path::Path::new("/nonexistent")).unwrap(),
                &[],
            )
            .resolve(&http::HeaderMap::new()),
        );
        call.start_time = logbook_record::parse_timestamp(ts).unwrap();
        let mut r = call.record(crate::capture::Outcome {
            output: None,
            error: Some(("ThrottlingException".into(), "budget".into())),
            http_status: 429,
        });
        r.timestamp = ts.into();
        r
    }

    #[test]
    fn a_period_is_evaluated_whole_in_the_first_moments_of_the_next() {
        let every = Duration::from_millis(300);
        let t0: i64 = 1_764_633_600_000; // a minute boundary
                                         // Early in a period: the one just completed.
        assert_eq!(evaluated_at(t0 + 100, 10_000, every), t0 - 1);
        assert_eq!(evaluated_at(t0 + 2_299, 10_000, every), t0 - 1);
        // Later: the period as it fills.
        assert_eq!(evaluated_at(t0 + 2_300, 10_000, every), t0 + 2_300);
        assert_eq!(evaluated_at(t0 + 9_999, 10_000, every), t0 + 9_999);
        // Short periods keep at least half of each period for itself.
        assert_eq!(evaluated_at(t0 + 500, 1_000, every), t0 + 500);
        assert_eq!(evaluated_at(t0 + 100, 1_000, every), t0 - 1);
    }

    #[test]
    fn alarms_on_whole_minute_periods_are_evaluated_from_the_series_once_they_cover_the_window() {
        // 2025-12-02T00:00:00Z
        let t0: i64 = 1_764_633_600_000;
        let series = logbook_ops::series::MinuteSeries::default();
        let mut fast = def("seed-throttles");
        fast.threshold = 10.0;
        let mut pct = def("p99-latency");
        pct.metric_name = "InvocationLatency".into();
        pct.statistic = "p99".into();
        let mut hi_res = def("ten-seconds");
        hi_res.period = 10;
        let entries: Vec<Entry> = [fast.clone(), pct.clone(), hi_res.clone()]
            .into_iter()
            .map(|def| Entry {
                def,
                state: logbook_ops::alarms::AlarmState::InsufficientData,
                reason: String::new(),
                state_updated_ms: 0,
                config_updated_ms: 0,
                declared: false,
            })
            .collect();
        // Percentiles, sub-minute periods and windows over a day are left to the records.
        let mut week = def("weekly");
        week.metric_name = "Invocations".into();
        week.period = 86_400;
        week.evaluation_periods = 2;
        let mut with_week = entries.clone();
        with_week.push(Entry {
            def: week,
            ..entries[0].clone()
        });
        assert_eq!(watched(&with_week).len(), 1);
        let w = watched(&entries);
        assert_eq!(w.len(), 1, "{w:?}");
        series.sync(&w, t0 - 1);
        for i in 0..11 {
            series.observe(&throttled(&format!("2025-12-02T00:00:{:02}Z", 10 + i)));
        }
        // Not covered before it was watched: the SQL path answers.
        assert_eq!(from_series(&series, &fast, t0 - 30_000), None);
        let values = from_series(&series, &fast, t0 + 45_000).unwrap();
        assert_eq!(values, vec![Some(11.0)]);
        let (state, _) = fast.evaluate(&values, logbook_ops::alarms::AlarmState::Ok);
        assert_eq!(state, logbook_ops::alarms::AlarmState::Alarm);
        assert_eq!(from_series(&series, &pct, t0 + 45_000), None);
        assert_eq!(from_series(&series, &hi_res, t0 + 45_000), None);
    }
}
