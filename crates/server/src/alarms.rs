//! Metric alarms: definitions (from the config file and `PutMetricAlarm`), their state and
//! history in `control/alarms.json` (written atomically on every change), the evaluator
//! that turns Bedrock's metrics into `OK` / `ALARM` / `INSUFFICIENT_DATA`, and the actions
//! run on each transition: an HTTP POST in the shape of an SNS notification, or a
//! Slack-compatible message, retried with backoff, every attempt in the alarm's history.
//!
//! Replicas (`[cluster]`): the alarms, their states and history live in the home
//! (`logbook/cluster/state/alarms.json`) and change only by conditional writes, so a
//! `PutMetricAlarm` on one replica and a state change on another never lose each other;
//! `control/alarms.json` is then this replica's copy (re-read every `poll_ms`). One
//! replica at a time evaluates them (a lease, `logbook/cluster/leases/alarms.json`), over
//! every replica's records; since a transition is itself a conditional write, it is made
//! and acted on once even if two evaluators overlap when the lease moves.

use crate::app::Shared;
use logbook_cluster::lease::{Holder, Lease};
use logbook_cluster::{SharedState, Version};
use logbook_journal::Disk;
use logbook_ops::alarms::{AlarmDef, AlarmState};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The shared alarms' object in a cluster home.
pub const SHARED_KEY: &str = "logbook/cluster/state/alarms.json";
const SHARED_KIND: &str = "logbook-alarms/1";
/// The evaluator's lease.
pub const EVALUATOR_JOB: &str = "alarms";

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
    /// Replicas: the node ids whose config file declares it (it goes when none does).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub declared_by: BTreeSet<String>,
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

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Stored {
    alarms: BTreeMap<String, Entry>,
    history: VecDeque<HistoryItem>,
    /// Replicas: the home this copy was merged into (once; afterwards the home's copy is
    /// the truth and this file only mirrors it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    joined: Option<String>,
}

/// The home's copy.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SharedDoc {
    kind: String,
    alarms: BTreeMap<String, Entry>,
    history: VecDeque<HistoryItem>,
}

/// Why a change to the alarms was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeFailed {
    /// The request cannot be done (a bad parameter, no such alarm): the caller's to fix.
    #[error("{0}")]
    Refused(String),
    /// The alarms could not be read or written (the home's copy unreadable, the home or
    /// the local file failing): the service's.
    #[error("{0}")]
    Service(String),
}

impl From<String> for ChangeFailed {
    fn from(m: String) -> Self {
        ChangeFailed::Refused(m)
    }
}

impl From<ChangeFailed> for String {
    fn from(e: ChangeFailed) -> Self {
        e.to_string()
    }
}

/// A replica gone for good no longer declares alarms: it is removed as a declarer of
/// every alarm in the home's set, and the declared alarms only it declared go (alarms made
/// through the API stay). Returns their names.
pub async fn forget_declarer(
    state: &dyn logbook_cluster::SharedState,
    node: &str,
) -> Result<Vec<String>, String> {
    let home = state.describe();
    let done = logbook_cluster::change(
        state,
        SHARED_KEY,
        50,
        |b| decode_shared(&home, b, usize::MAX),
        encode_shared,
        |st: &mut Stored| {
            let mut gone = Vec::new();
            let mut changed = false;
            st.alarms.retain(|name, e| {
                if !e.declared_by.remove(node) {
                    return true;
                }
                changed = true;
                if e.declared && e.declared_by.is_empty() {
                    gone.push(name.clone());
                    return false;
                }
                true
            });
            Ok::<_, String>((gone, changed))
        },
    )
    .await
    .map_err(|e| match e {
        logbook_cluster::ChangeError::State(e) => e.to_string(),
        logbook_cluster::ChangeError::Doc(e) => e,
    })?;
    Ok(done.out)
}

fn decode_shared(home: &str, b: &[u8], max: usize) -> Result<Stored, String> {
    let bad = |why: String| {
        format!("{SHARED_KEY} in {home} is not Logbook's shared alarms ({why}); it is left as it is and not used")
    };
    let d: SharedDoc = serde_json::from_slice(b).map_err(|e| bad(e.to_string()))?;
    if d.kind != SHARED_KIND {
        return Err(bad(format!("kind {:?}", d.kind)));
    }
    if d.alarms.len() > max {
        return Err(bad(format!(
            "{} alarms, more than the {max} a gateway keeps",
            d.alarms.len()
        )));
    }
    for (name, e) in &d.alarms {
        if name != &e.def.alarm_name {
            return Err(bad(format!("alarm {name:?} is filed under another name")));
        }
        e.def
            .validate()
            .map_err(|why| bad(format!("alarm {name:?}: {why}")))?;
    }
    Ok(Stored {
        alarms: d.alarms,
        history: d.history,
        joined: None,
    })
}

fn encode_shared(st: &Stored) -> Vec<u8> {
    serde_json::to_vec(&SharedDoc {
        kind: SHARED_KIND.into(),
        alarms: st.alarms.clone(),
        history: st.history.clone(),
    })
    .unwrap_or_default()
}

/// What a replica keeps to share its alarms through the home.
struct SharedAlarms {
    state: Arc<dyn SharedState>,
    node: String,
    poll: Duration,
    seen: Mutex<Option<Version>>,
    last_error: Mutex<Option<String>>,
    lease: tokio::sync::Mutex<Lease>,
    evaluator: Mutex<Option<Holder>>,
}

impl std::fmt::Debug for SharedAlarms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedAlarms")
            .field("home", &self.state.describe())
            .field("node", &self.node)
            .finish()
    }
}

/// Who evaluates the alarms, for `/healthz`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EvaluatorHealth {
    /// The node id holding the evaluator's lease, as last seen.
    pub node: Option<String>,
    /// Whether that is this replica.
    pub here: bool,
    /// The last error reading or writing the shared alarms, while it lasts.
    pub last_error: Option<String>,
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
    shared: Option<SharedAlarms>,
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
                    declared_by: BTreeSet::new(),
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
            shared: None,
        };
        a.save().map_err(|e| e.to_string())?;
        Ok(a)
    }

    /// Replicas: share the alarms through `state` as node `node`. The home's copy becomes
    /// the truth; this replica's declared alarms are put in it (a declared alarm goes when
    /// no replica declares it any more); alarms this folder had before it ever joined are
    /// added (never ones deleted since: after the first join, the home decides). `poll`
    /// is how often it is re-read; `ttl` the evaluator's lease.
    pub async fn join(
        mut self,
        state: Arc<dyn SharedState>,
        node: &str,
        poll: Duration,
        ttl: Duration,
    ) -> Result<Alarms, String> {
        let home = state.describe();
        let local = self.lock().clone();
        self.shared = Some(SharedAlarms {
            state,
            node: node.to_string(),
            poll,
            seen: Mutex::new(None),
            last_error: Mutex::new(None),
            lease: tokio::sync::Mutex::new(Lease::new(EVALUATOR_JOB, node, ttl)),
            evaluator: Mutex::new(None),
        });
        let first_join = local.joined.is_none();
        let node = node.to_string();
        let max = self.max;
        self.change(|st| {
            for e in st.alarms.values_mut() {
                e.declared_by.remove(&node);
            }
            for e in local.alarms.values() {
                if e.declared {
                    let name = e.def.alarm_name.clone();
                    let mut next = e.clone();
                    if let Some(had) = st.alarms.get(&name) {
                        next.state = had.state;
                        next.reason = had.reason.clone();
                        next.state_updated_ms = had.state_updated_ms;
                        next.declared_by = had.declared_by.clone();
                        if had.def == next.def {
                            next.config_updated_ms = had.config_updated_ms;
                        }
                    }
                    next.declared_by.insert(node.clone());
                    st.alarms.insert(name, next);
                } else if first_join && !st.alarms.contains_key(&e.def.alarm_name) {
                    st.alarms.insert(e.def.alarm_name.clone(), e.clone());
                }
            }
            st.alarms.retain(|_, e| !e.declared || !e.declared_by.is_empty());
            if st.alarms.len() > max {
                return Err(format!(
                    "joining would make {} alarms in the cluster, more than the {max} a gateway keeps",
                    st.alarms.len()
                ));
            }
            Ok(())
        })
        .await
        .map_err(|e| format!("cluster home {home}: {e}"))?;
        self.lock().joined = Some(home);
        self.save().map_err(|e| e.to_string())?;
        Ok(self)
    }

    /// Apply `f` to the alarms: here, or (replicas) to the home's freshest copy by a
    /// conditional write, retried on a lost race; then keep the result here. `f` may run
    /// several times and must refuse (an error) before changing anything.
    async fn change<T: Send>(
        &self,
        mut f: impl FnMut(&mut Stored) -> Result<T, String> + Send,
    ) -> Result<T, ChangeFailed> {
        let Some(sh) = &self.shared else {
            let out = f(&mut self.lock())?;
            self.save()
                .map_err(|e| ChangeFailed::Service(e.to_string()))?;
            return Ok(out);
        };
        let home = sh.state.describe();
        let max = self.max;
        let done = logbook_cluster::change(
            &*sh.state,
            SHARED_KEY,
            50,
            |b| decode_shared(&home, b, max).map_err(ChangeFailed::Service),
            encode_shared,
            |st| f(st).map(|out| (out, true)).map_err(ChangeFailed::Refused),
        )
        .await
        .map_err(|e| match e {
            logbook_cluster::ChangeError::State(e) => ChangeFailed::Service(e.to_string()),
            logbook_cluster::ChangeError::Doc(e) => e,
        })?;
        {
            let mut mine = self.lock();
            let joined = mine.joined.clone();
            *mine = done.doc;
            mine.joined = joined;
        }
        *sh.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(done.version);
        self.save()
            .map_err(|e| ChangeFailed::Service(e.to_string()))?;
        Ok(done.out)
    }

    /// Replicas: pick up what other replicas changed; whether anything did. Errors are
    /// reported once per message and kept for `/healthz`; this copy stays as it was.
    pub async fn refresh(&self) -> Result<bool, String> {
        let Some(sh) = &self.shared else {
            return Ok(false);
        };
        let outcome = async {
            let Some((b, v)) = sh.state.read(SHARED_KEY).await.map_err(|e| e.to_string())? else {
                return Err(format!(
                    "{SHARED_KEY} is missing from {}; the alarms stay as they are",
                    sh.state.describe()
                ));
            };
            if sh.seen.lock().unwrap_or_else(|e| e.into_inner()).as_ref() == Some(&v) {
                return Ok(false);
            }
            let st = decode_shared(&sh.state.describe(), &b, self.max)?;
            {
                let mut mine = self.lock();
                let joined = mine.joined.clone();
                *mine = st;
                mine.joined = joined;
            }
            self.save().map_err(|e| e.to_string())?;
            *sh.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
            Ok(true)
        }
        .await;
        let mut last = sh.last_error.lock().unwrap_or_else(|e| e.into_inner());
        match &outcome {
            Ok(_) => *last = None,
            Err(m) => {
                if last.as_deref() != Some(m.as_str()) {
                    tracing::error!(error = %m, "shared alarms not refreshed");
                }
                *last = Some(m.clone());
            }
        }
        outcome
    }

    /// Replicas: who evaluates the alarms (`None` alone).
    pub fn evaluator(&self) -> Option<EvaluatorHealth> {
        let sh = self.shared.as_ref()?;
        let holder = sh
            .evaluator
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Some(EvaluatorHealth {
            here: holder.as_ref().is_some_and(|h| h.node == sh.node),
            node: holder.map(|h| h.node),
            last_error: sh
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        })
    }

    /// Replicas: whether this replica evaluates now (taking or renewing the lease when
    /// due). Alone: always.
    async fn evaluates_here(&self) -> bool {
        let Some(sh) = &self.shared else {
            return true;
        };
        let now = now_ms().max(0) as u64;
        let mut lease = sh.lease.lock().await;
        if lease.due(now) {
            match lease.hold(&*sh.state, now).await {
                Ok(h) => {
                    let mut cur = sh.evaluator.lock().unwrap_or_else(|e| e.into_inner());
                    if cur.as_ref().map(|c| &c.node) != Some(&h.node) {
                        tracing::info!(evaluator = %h.node, here = h.node == sh.node, "alarm evaluator");
                    }
                    *cur = Some(h);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "alarm evaluator's lease not taken or renewed");
                    *sh.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                }
            }
        }
        lease.held(now)
    }

    /// Replicas: hand the evaluator's lease over (a clean stop).
    async fn release(&self) {
        if let Some(sh) = &self.shared {
            if let Err(e) = sh.lease.lock().await.release(&*sh.state).await {
                tracing::warn!(error = %e, "alarm evaluator's lease not released; it runs out by itself");
            }
        }
    }

    fn is_shared(&self) -> bool {
        self.shared.is_some()
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
    pub async fn restore(&self, names: &[String], previous: Vec<Entry>) -> Result<(), String> {
        self.change(|st| {
            for n in names {
                st.alarms.remove(n);
            }
            for e in &previous {
                st.alarms.insert(e.def.alarm_name.clone(), e.clone());
            }
            Ok(())
        })
        .await
        .map_err(Into::into)
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
    pub async fn put(&self, def: AlarmDef) -> Result<(), ChangeFailed> {
        def.validate()?;
        for a in def
            .alarm_actions
            .iter()
            .chain(&def.ok_actions)
            .chain(&def.insufficient_data_actions)
        {
            if !self.targets.contains_key(a) {
                return Err(ChangeFailed::Refused(format!(
                    "The action {a:?} is not declared in [[alarm_actions]] of this gateway's configuration."
                )));
            }
        }
        let max = self.max;
        self.change(|st| {
            let def = def.clone();
            if st.alarms.get(&def.alarm_name).is_some_and(|e| e.declared) {
                return Err(format!(
                    "The alarm {:?} is declared in the configuration file; change it there.",
                    def.alarm_name
                ));
            }
            if !st.alarms.contains_key(&def.alarm_name) && st.alarms.len() >= max {
                return Err(format!(
                    "This gateway already has {max} alarms (the most it keeps); delete some first."
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
                    declared_by: BTreeSet::new(),
                },
            );
            Self::push_history(
                st,
                HistoryItem {
                    alarm_name: name.clone(),
                    timestamp_ms: now_ms(),
                    kind: "ConfigurationUpdate".into(),
                    summary: format!("Alarm \"{name}\" updated"),
                    data,
                },
            );
            Ok(())
        })
        .await
    }

    /// Delete alarms (`DeleteAlarms`); unknown names are an error, as CloudWatch's.
    pub async fn delete(&self, names: &[String]) -> Result<(), ChangeFailed> {
        self.change(|st| {
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
                    st,
                    HistoryItem {
                        alarm_name: n.clone(),
                        timestamp_ms: now_ms(),
                        kind: "ConfigurationUpdate".into(),
                        summary: format!("Alarm \"{n}\" deleted"),
                        data: "{}".into(),
                    },
                );
            }
            Ok(())
        })
        .await
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
    pub async fn set_state(
        &self,
        name: &str,
        state: AlarmState,
        reason: &str,
    ) -> Result<Option<(Entry, AlarmState)>, ChangeFailed> {
        if self.is_shared() {
            // Replicas: a reason alone changing is not worth a write to the home.
            let same = self
                .lock()
                .alarms
                .get(name)
                .is_some_and(|e| e.state == state && e.reason == reason);
            if same {
                return Ok(None);
            }
        }
        self.change(|st| {
            let Some(e) = st.alarms.get_mut(name) else {
                return Err(format!("Alarm {name:?} does not exist"));
            };
            let old = e.state;
            if old == state {
                e.reason = reason.to_string();
                Ok(None)
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
                    st,
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
                Ok(Some((entry, old)))
            }
        })
        .await
    }

    async fn record_action(&self, name: &str, summary: String, data: serde_json::Value) {
        let item = HistoryItem {
            alarm_name: name.to_string(),
            timestamp_ms: now_ms(),
            kind: "Action".into(),
            summary,
            data: data.to_string(),
        };
        let r = self
            .change(|st| {
                Self::push_history(st, item.clone());
                Ok(())
            })
            .await;
        if let Err(e) = r {
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
                // A budget another replica declared may name an action only its config
                // has: the event is in the trail, but nobody here can be told.
                tracing::warn!(source = %name, action = %arn, "a notification names an action this replica does not declare in [[alarm_actions]]; not sent");
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
            )
            .await;
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
    // Replicas re-read the shared alarms every poll, and evaluate every `every` when they
    // hold the evaluator's lease.
    let tick = alarms
        .shared
        .as_ref()
        .map_or(every, |sh| sh.poll.min(every));
    let mut last_eval: Option<std::time::Instant> = None;
    loop {
        if *stop.borrow() {
            alarms.release().await;
            return;
        }
        if alarms.is_shared() {
            // Errors are reported by `refresh` (the local copy stays in force meanwhile).
            let _ = alarms.refresh().await;
        }
        let due = last_eval.is_none_or(|t| t.elapsed() + Duration::from_millis(5) >= every);
        // The lease is renewed on every tick (a write only when a third of it is gone),
        // not only when an evaluation is due, so an evaluation interval longer than the
        // lease does not let it lapse between evaluations.
        let here = alarms.evaluates_here().await;
        if due && here {
            last_eval = Some(std::time::Instant::now());
            evaluate_all(&s, &alarms, every).await;
        } else if due {
            last_eval = Some(std::time::Instant::now());
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.changed() => {}
        }
    }
}

/// One evaluation of every alarm.
async fn evaluate_all(s: &Shared, alarms: &Arc<Alarms>, every: Duration) {
    let list = alarms.list();
    let series = s.metrics.series();
    // Replicas: this replica's in-memory series hold only its own calls, so every
    // alarm is evaluated over the records, which include the other replicas'.
    let local_only = !alarms.is_shared();
    if local_only {
        series.sync(&watched(&list), logbook_store::now_ms());
    }
    for e in list {
        let d = &e.def;
        let at = evaluated_at(logbook_store::now_ms(), d.period * 1000, every);
        let fast = if local_only {
            from_series(series, d, at)
        } else {
            None
        };
        let values = match fast {
            Some(v) => Ok(v),
            None => crate::metrics_api::window(s, d, at).await,
        };
        let values = match values {
            Ok(v) => v,
            Err(err) => {
                tracing::warn!(alarm = %d.alarm_name, error = %err, "alarm not evaluated");
                continue;
            }
        };
        let (state, reason) = d.evaluate(&values, e.state);
        match alarms.set_state(&d.alarm_name, state, &reason).await {
            Ok(Some((entry, old))) => {
                tracing::warn!(alarm = %d.alarm_name, from = old.as_str(), to = state.as_str(), "alarm state changed");
                alarms.act(entry, old);
            }
            Ok(None) => {}
            Err(err) => {
                tracing::debug!(alarm = %d.alarm_name, error = %err, "alarm gone or not written")
            }
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

    /// A refusal's message (panics on a service failure: the test expected the caller's).
    fn refused(e: ChangeFailed) -> String {
        match e {
            ChangeFailed::Refused(m) => m,
            ChangeFailed::Service(m) => panic!("a service failure, not a refusal: {m}"),
        }
    }

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

    #[tokio::test]
    async fn a_manager_cannot_create_alarms_without_bound_or_name_unknown_actions() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("control")).unwrap();
        let a = Alarms::open(d.path(), vec![], BTreeMap::new(), "us-east-1", "1")
            .unwrap()
            .with_max(5);
        for i in 0..5 {
            a.put(def(&format!("a{i}"))).await.unwrap();
        }
        let e = refused(a.put(def("one-too-many")).await.unwrap_err());
        assert!(e.contains("5 alarms"), "{e}");
        // Replacing an existing one is still allowed.
        a.put(def("a0")).await.unwrap();
        assert_eq!(a.list().len(), 5);
        // An action ARN the configuration does not declare (an arbitrary URL target) is refused.
        let mut bad = def("a1");
        bad.alarm_actions = vec!["arn:aws:sns:us-east-1:1:elsewhere".into()];
        assert!(refused(a.put(bad).await.unwrap_err()).contains("not declared"));
    }

    mod replicas {
        use super::*;

        fn home() -> Arc<dyn SharedState> {
            Arc::new(logbook_cluster::BucketState::new(
                "memory",
                Arc::new(object_store::memory::InMemory::new()),
            ))
        }

        async fn replica(
            h: &Arc<dyn SharedState>,
            dir: &std::path::Path,
            node: &str,
            declared: Vec<AlarmDef>,
        ) -> Result<Alarms, String> {
            std::fs::create_dir_all(dir.join("control")).unwrap();
            Alarms::open(dir, declared, BTreeMap::new(), "us-east-1", "1")?
                .join(
                    h.clone(),
                    node,
                    Duration::from_millis(10),
                    Duration::from_secs(30),
                )
                .await
        }

        fn names(a: &Alarms) -> Vec<String> {
            a.list().into_iter().map(|e| e.def.alarm_name).collect()
        }

        /// A replica forgotten (gone for good) no longer declares: an alarm only it
        /// declared goes, one another replica declares too stays, one made through the
        /// API stays.
        #[tokio::test]
        async fn a_forgotten_replica_declares_nothing_any_more() {
            let h = home();
            let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let a = replica(&h, da.path(), "a", vec![def("both")])
                .await
                .unwrap();
            let b = replica(&h, db.path(), "b", vec![def("both"), def("only-b")])
                .await
                .unwrap();
            b.put(def("made-by-api")).await.unwrap();
            assert_eq!(
                forget_declarer(&*h, "b").await.unwrap(),
                vec!["only-b".to_string()]
            );
            assert!(forget_declarer(&*h, "b").await.unwrap().is_empty());
            a.refresh().await.unwrap();
            assert_eq!(names(&a), ["both", "made-by-api"]);
            let both = a
                .list()
                .into_iter()
                .find(|e| e.def.alarm_name == "both")
                .unwrap();
            assert_eq!(both.declared_by, BTreeSet::from(["a".to_string()]));
        }

        #[tokio::test]
        async fn alarms_put_on_replicas_at_once_are_all_kept_and_seen_by_every_replica() {
            let h = home();
            let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let a = Arc::new(replica(&h, da.path(), "a", vec![]).await.unwrap());
            let b = Arc::new(replica(&h, db.path(), "b", vec![]).await.unwrap());
            let mut tasks = Vec::new();
            for i in 0..10 {
                let r = if i % 2 == 0 { a.clone() } else { b.clone() };
                tasks.push(tokio::spawn(
                    async move { r.put(def(&format!("x{i}"))).await },
                ));
            }
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            a.refresh().await.unwrap();
            b.refresh().await.unwrap();
            assert_eq!(names(&a).len(), 10);
            assert_eq!(names(&a), names(&b));
            // Deleting on one replica is deleting for all; "does not exist" holds for all.
            b.delete(&["x3".into()]).await.unwrap();
            assert!(a.refresh().await.unwrap());
            assert!(!names(&a).contains(&"x3".to_string()));
            assert!(a
                .delete(&["x3".into()])
                .await
                .map_err(refused)
                .unwrap_err()
                .contains("does not exist"));
            assert!(!a.refresh().await.unwrap(), "nothing new");
            // The replica's own file mirrors the home (what `logbook alarms` reads).
            assert_eq!(stored(da.path()).unwrap().len(), 9);
        }

        #[tokio::test]
        async fn a_transition_made_by_two_evaluators_at_once_is_made_and_acted_on_once() {
            let h = home();
            let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let a = replica(&h, da.path(), "a", vec![]).await.unwrap();
            a.put(def("t")).await.unwrap();
            let b = replica(&h, db.path(), "b", vec![]).await.unwrap();
            let (ra, rb) = tokio::join!(
                a.set_state("t", AlarmState::Alarm, "breach"),
                b.set_state("t", AlarmState::Alarm, "breach")
            );
            let made = [ra.unwrap(), rb.unwrap()]
                .into_iter()
                .filter(Option::is_some)
                .count();
            assert_eq!(made, 1);
            a.refresh().await.unwrap();
            let updates = a
                .history()
                .into_iter()
                .filter(|h| h.kind == "StateUpdate")
                .count();
            assert_eq!(updates, 1);
        }

        #[tokio::test]
        async fn a_declared_alarm_lives_while_some_replica_declares_it() {
            let h = home();
            let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let a = replica(&h, da.path(), "a", vec![def("both"), def("only-a")])
                .await
                .unwrap();
            let b = replica(&h, db.path(), "b", vec![def("both"), def("only-b")])
                .await
                .unwrap();
            a.refresh().await.unwrap();
            assert_eq!(names(&a), ["both", "only-a", "only-b"]);
            // A state survives a re-declaration.
            a.set_state("both", AlarmState::Alarm, "breach")
                .await
                .unwrap();
            drop(a);
            // a restarts without its declarations: only-a goes, both stays (b declares
            // it), with its state.
            let a = replica(&h, da.path(), "a", vec![]).await.unwrap();
            assert_eq!(names(&a), ["both", "only-b"]);
            let both = a
                .list()
                .into_iter()
                .find(|e| e.def.alarm_name == "both")
                .unwrap();
            assert_eq!(both.state, AlarmState::Alarm);
            assert_eq!(both.declared_by, BTreeSet::from(["b".to_string()]));
            // Declared ones cannot be changed through the API on any replica.
            assert!(a
                .put(def("only-b"))
                .await
                .map_err(refused)
                .unwrap_err()
                .contains("configuration file"));
            b.refresh().await.unwrap();
            assert_eq!(names(&b), ["both", "only-b"]);
        }

        #[tokio::test]
        async fn a_folders_own_alarms_join_once_and_a_delete_made_meanwhile_is_not_undone() {
            let h = home();
            let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            // b stood alone first, with an alarm made through the API.
            std::fs::create_dir_all(db.path().join("control")).unwrap();
            Alarms::open(db.path(), vec![], BTreeMap::new(), "us-east-1", "1")
                .unwrap()
                .put(def("from-b"))
                .await
                .unwrap();
            let a = replica(&h, da.path(), "a", vec![]).await.unwrap();
            let b = replica(&h, db.path(), "b", vec![]).await.unwrap();
            assert_eq!(names(&b), ["from-b"]);
            a.refresh().await.unwrap();
            a.delete(&["from-b".into()]).await.unwrap();
            drop(b);
            // b restarts: its file still held the alarm until now, but it joined before,
            // so the home decides.
            let b = replica(&h, db.path(), "b", vec![]).await.unwrap();
            assert!(names(&b).is_empty());
        }

        #[tokio::test]
        async fn an_unreadable_shared_copy_is_reported_and_never_overwritten() {
            let h = home();
            let d = tempfile::tempdir().unwrap();
            let a = replica(&h, d.path(), "a", vec![]).await.unwrap();
            a.put(def("kept")).await.unwrap();
            let junk = bytes::Bytes::from_static(b"{\"kind\":\"something-else\"}");
            let (_, v) = h.read(SHARED_KEY).await.unwrap().unwrap();
            h.write(SHARED_KEY, junk.clone(), Some(&v)).await.unwrap();
            let e = a.refresh().await.unwrap_err();
            assert!(e.contains("not Logbook's shared alarms"), "{e}");
            assert_eq!(
                a.evaluator().unwrap().last_error.as_deref(),
                Some(e.as_str())
            );
            // This replica keeps what it had; a change is refused, the object untouched.
            assert_eq!(names(&a), ["kept"]);
            // The service's failure, not the caller's (a 500, not a bad parameter).
            match a.put(def("new")).await {
                Err(ChangeFailed::Service(m)) => {
                    assert!(m.contains("not Logbook's shared alarms"), "{m}")
                }
                other => panic!("{other:?}"),
            }
            assert!(matches!(
                a.delete(&["kept".to_string()]).await,
                Err(ChangeFailed::Service(_))
            ));
            // A caller's mistake is still the caller's.
            assert!(matches!(
                a.put(AlarmDef {
                    period: 7,
                    ..def("bad")
                })
                .await,
                Err(ChangeFailed::Refused(_))
            ));
            assert_eq!(h.read(SHARED_KEY).await.unwrap().unwrap().0, junk);
            // A new replica refuses to join over it.
            let d2 = tempfile::tempdir().unwrap();
            assert!(replica(&h, d2.path(), "b", vec![]).await.is_err());
        }

        #[tokio::test]
        async fn one_replica_evaluates_and_another_takes_over_when_it_stops() {
            let h = home();
            let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let a = replica(&h, da.path(), "a", vec![]).await.unwrap();
            let b = replica(&h, db.path(), "b", vec![]).await.unwrap();
            let (ea, eb) = tokio::join!(a.evaluates_here(), b.evaluates_here());
            assert!(ea ^ eb, "exactly one evaluates: a {ea}, b {eb}");
            let (first, second) = if ea { (&a, &b) } else { (&b, &a) };
            assert!(second.evaluator().unwrap().node == first.evaluator().unwrap().node);
            assert!(first.evaluator().unwrap().here && !second.evaluator().unwrap().here);
            // A clean stop hands the lease over at the other's next try.
            first.release().await;
            assert!(second.evaluates_here().await);
        }
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
                declared_by: BTreeSet::new(),
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
