//! Budgets' definitions, shared by the replicas of a home (`[cluster]`).
//!
//! The set lives in `logbook/cluster/state/budgets.json` and changes only by conditional
//! writes. Each replica declares its config file's `[[budgets]]` when it starts: a budget
//! the home does not hold is added, one it holds with the same definition gains this
//! replica as a declarer, one it holds with another definition takes this replica's (the
//! last replica to start with a changed budget changes it for the cluster, so a rolling
//! restart changes a limit everywhere), and a budget this replica declared before but no
//! longer does loses it as a declarer, and goes when no replica declares it. Every
//! replica enforces the whole set, its own config's budgets or not, and picks up a change
//! at its next refresh (`cluster.poll_ms`); a replica whose config says something else
//! than the home for a budget reports it as drift (`/healthz`, `logbook coverage`).
//! A shared set this build cannot read is reported and never overwritten; a replica
//! refuses to start over it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use logbook_journal::Disk as _;

use logbook_cluster::{ChangeError, SharedState, Version};
use logbook_ops::budgets::BudgetSpec;
use serde::{Deserialize, Serialize};

/// The shared set's object.
pub const KEY: &str = "logbook/cluster/state/budgets.json";
const KIND: &str = "logbook-budgets/1";
/// More budgets than this in the home is not a set this build takes.
const MAX_BUDGETS: usize = 10_000;

/// One budget in the shared set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SharedBudget {
    /// The definition in force.
    pub spec: BudgetSpec,
    /// The node ids whose config declares this budget.
    pub declared_by: BTreeSet<String>,
    /// The node that last put this definition in.
    pub changed_by: String,
    /// When, epoch ms.
    pub changed_at: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    kind: String,
    budgets: BTreeMap<String, SharedBudget>,
}

fn decode(home: &str, b: &[u8]) -> Result<BTreeMap<String, SharedBudget>, String> {
    let bad = |why: String| {
        format!(
            "{KEY} in {home} is not Logbook's shared budget set ({why}); it is left as it is and not used"
        )
    };
    let d: Doc = serde_json::from_slice(b).map_err(|e| bad(e.to_string()))?;
    if d.kind != KIND {
        return Err(bad(format!("kind {:?}", d.kind)));
    }
    if d.budgets.len() > MAX_BUDGETS {
        return Err(bad(format!(
            "{} budgets, more than {MAX_BUDGETS}",
            d.budgets.len()
        )));
    }
    for (name, b) in &d.budgets {
        if &b.spec.name != name {
            return Err(bad(format!(
                "budget {name:?} holds the definition of {:?}",
                b.spec.name
            )));
        }
        b.spec.check().map_err(bad)?;
    }
    Ok(d.budgets)
}

/// Where `config` (a replica's `[[budgets]]`) says something else than `set` (the
/// cluster's): one line per budget.
pub fn drift(config: &[BudgetSpec], set: &BTreeMap<String, SharedBudget>) -> Vec<String> {
    config
        .iter()
        .filter_map(|spec| match set.get(&spec.name) {
            Some(b) if &b.spec == spec => None,
            Some(b) => Some(format!(
                "budget {:?}: this replica's config differs from the cluster's definition (limit {} USD per {}, set by node {} at {})",
                spec.name,
                logbook_ops::budgets::usd(b.spec.limit),
                serde_json::to_value(b.spec.period)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                b.changed_by,
                iso(b.changed_at),
            )),
            None => Some(format!(
                "budget {:?}: declared in this replica's config but missing from the cluster's set",
                spec.name
            )),
        })
        .collect()
}

/// Drift as [`drift`], between a config and the copy a replica keeps in `control_dir`;
/// `None` when there is no copy (the replica never joined a home).
pub fn drift_stored(
    config: &[BudgetSpec],
    control_dir: &Path,
) -> Result<Option<Vec<String>>, String> {
    let p = control_dir.join(COPY);
    match std::fs::read(&p) {
        Ok(b) => Ok(Some(drift(config, &decode(&p.display().to_string(), &b)?))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

fn encode(budgets: &BTreeMap<String, SharedBudget>) -> Vec<u8> {
    serde_json::to_vec_pretty(&Doc {
        kind: KIND.into(),
        budgets: budgets.clone(),
    })
    .unwrap_or_default()
}

/// This replica's copy of the shared set, in its control folder (for `logbook coverage`,
/// which reads it without asking the home).
pub const COPY: &str = "budgets-shared.json";

/// The cluster's budgets, as this replica last read them.
pub struct SharedBudgets {
    state: Arc<dyn SharedState>,
    copy: PathBuf,
    /// This replica's config file's budgets.
    config: Vec<BudgetSpec>,
    current: Mutex<BTreeMap<String, SharedBudget>>,
    seen: Mutex<Option<Version>>,
    last_error: Mutex<Option<String>>,
}

fn iso(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SharedBudgets {
    /// Declare this replica's budgets (`config`) in the home's set, as node `node`; the
    /// set is then what [`SharedBudgets::specs`] returns.
    pub async fn join(
        state: Arc<dyn SharedState>,
        node: &str,
        config: Vec<BudgetSpec>,
        control_dir: &Path,
        now_ms: i64,
    ) -> Result<SharedBudgets, String> {
        let home = state.describe();
        let changed = logbook_cluster::change(
            &*state,
            KEY,
            50,
            |b| decode(&home, b),
            encode,
            |set: &mut BTreeMap<String, SharedBudget>| {
                let mut changed = false;
                for spec in &config {
                    match set.get_mut(&spec.name) {
                        None => {
                            set.insert(
                                spec.name.clone(),
                                SharedBudget {
                                    spec: spec.clone(),
                                    declared_by: BTreeSet::from([node.to_string()]),
                                    changed_by: node.to_string(),
                                    changed_at: now_ms,
                                },
                            );
                            changed = true;
                        }
                        Some(b) => {
                            if &b.spec != spec {
                                b.spec = spec.clone();
                                b.changed_by = node.to_string();
                                b.changed_at = now_ms;
                                changed = true;
                            }
                            changed |= b.declared_by.insert(node.to_string());
                        }
                    }
                }
                // Budgets this replica declared before and no longer does.
                let mine: BTreeSet<&str> = config.iter().map(|s| s.name.as_str()).collect();
                set.retain(|name, b| {
                    if mine.contains(name.as_str()) || !b.declared_by.remove(node) {
                        return true;
                    }
                    changed = true;
                    !b.declared_by.is_empty()
                });
                if set.len() > MAX_BUDGETS {
                    return Err(format!(
                        "{KEY} in {home} would hold more than {MAX_BUDGETS} budgets"
                    ));
                }
                Ok(((), changed))
            },
        )
        .await
        .map_err(|e| match e {
            ChangeError::State(e) => e.to_string(),
            ChangeError::Doc(e) => e,
        })?;
        let me = SharedBudgets {
            state,
            copy: control_dir.join(COPY),
            config,
            current: Mutex::new(changed.doc),
            seen: Mutex::new(Some(changed.version)),
            last_error: Mutex::new(None),
        };
        me.keep_copy()?;
        Ok(me)
    }

    fn keep_copy(&self) -> Result<(), String> {
        let bytes = encode(&lock(&self.current));
        if let Some(dir) = self.copy.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        logbook_journal::RealDisk
            .write_atomic(&self.copy, &bytes)
            .map_err(|e| format!("{}: {e}", self.copy.display()))
    }

    /// A replica gone for good no longer declares anything: it is removed as a declarer
    /// of every budget, and the budgets only it declared go. Returns their names.
    pub async fn forget(state: &dyn SharedState, node: &str) -> Result<Vec<String>, String> {
        let home = state.describe();
        let done = logbook_cluster::change(
            state,
            KEY,
            50,
            |b| decode(&home, b),
            encode,
            |set: &mut BTreeMap<String, SharedBudget>| {
                let mut gone = Vec::new();
                let mut changed = false;
                set.retain(|name, b| {
                    if !b.declared_by.remove(node) {
                        return true;
                    }
                    changed = true;
                    if b.declared_by.is_empty() {
                        gone.push(name.clone());
                        return false;
                    }
                    true
                });
                Ok((gone, changed))
            },
        )
        .await
        .map_err(|e| match e {
            ChangeError::State(e) => e.to_string(),
            ChangeError::Doc(e) => e,
        })?;
        Ok(done.out)
    }

    /// The budgets in force for the cluster, by name.
    pub fn specs(&self) -> Vec<BudgetSpec> {
        lock(&self.current)
            .values()
            .map(|b| b.spec.clone())
            .collect()
    }

    /// The shared set as last read.
    pub fn set(&self) -> BTreeMap<String, SharedBudget> {
        lock(&self.current).clone()
    }

    /// Where this replica's config file says something else than the cluster's set: one
    /// line per budget.
    pub fn drift(&self) -> Vec<String> {
        drift(&self.config, &lock(&self.current))
    }

    /// Pick up what other replicas changed: the new set, when it changed. Errors are
    /// reported once per message and kept for `/healthz`; the set stays as it was.
    pub async fn refresh(&self) -> Result<Option<Vec<BudgetSpec>>, String> {
        let outcome = async {
            let got = self.state.read(KEY).await.map_err(|e| e.to_string())?;
            let Some((b, v)) = got else {
                return Err(format!(
                    "{KEY} is missing from {}; the budgets stay as they are",
                    self.state.describe()
                ));
            };
            if lock(&self.seen).as_ref() == Some(&v) {
                return Ok(None);
            }
            let set = decode(&self.state.describe(), &b)?;
            let changed = *lock(&self.current) != set;
            *lock(&self.current) = set;
            if changed {
                self.keep_copy()?;
            }
            *lock(&self.seen) = Some(v);
            Ok(changed.then(|| self.specs()))
        }
        .await;
        let mut last = lock(&self.last_error);
        match &outcome {
            Ok(_) => *last = None,
            Err(m) => {
                if last.as_deref() != Some(m.as_str()) {
                    tracing::error!(error = %m, "shared budgets not refreshed");
                }
                *last = Some(m.clone());
            }
        }
        outcome
    }

    /// The last error refreshing, while it lasts.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use logbook_ops::budgets::{parse_usd, BudgetPeriod, Scope};

    fn home() -> Arc<dyn SharedState> {
        Arc::new(logbook_cluster::BucketState::new(
            "memory",
            Arc::new(object_store::memory::InMemory::new()),
        ))
    }

    fn spec(name: &str, limit: &str) -> BudgetSpec {
        BudgetSpec {
            name: name.into(),
            scope: Scope::Tag("team".into(), name.into()),
            period: BudgetPeriod::Month,
            limit: parse_usd(limit).unwrap(),
            warn_at: vec![50, 80],
            actions: vec![],
        }
    }

    fn names(s: &SharedBudgets) -> Vec<(String, String)> {
        s.specs()
            .into_iter()
            .map(|b| (b.name, logbook_ops::budgets::usd(b.limit)))
            .collect()
    }

    #[tokio::test]
    async fn every_replica_enforces_the_set_of_all_and_a_later_start_changes_a_definition() {
        let h = home();
        let d = tempfile::tempdir().unwrap();
        let a = SharedBudgets::join(
            h.clone(),
            "a",
            vec![spec("x", "10")],
            &d.path().join("a"),
            1,
        )
        .await
        .unwrap();
        // `b` declares nothing of its own, and still holds the cluster's budget.
        let b = SharedBudgets::join(h.clone(), "b", vec![], &d.path().join("b"), 2)
            .await
            .unwrap();
        assert_eq!(names(&b), vec![("x".into(), "10".into())]);
        // `c` starts with a new limit for x and a budget of its own.
        let c = SharedBudgets::join(
            h.clone(),
            "c",
            vec![spec("x", "25"), spec("y", "5")],
            &d.path().join("c"),
            3,
        )
        .await
        .unwrap();
        let want = vec![("x".into(), "25".into()), ("y".into(), "5".into())];
        assert_eq!(names(&c), want);
        assert!(c.drift().is_empty());
        // The others pick it up at their refresh; `a`'s config now drifts.
        assert_eq!(a.refresh().await.unwrap().map(|v| v.len()), Some(2));
        assert_eq!(names(&a), want);
        assert_eq!(a.drift().len(), 1, "{:?}", a.drift());
        assert!(a.drift()[0].contains("limit 25 USD per month, set by node c"));
        assert!(b.refresh().await.unwrap().is_some());
        assert!(b.drift().is_empty());
        // Nothing new: no change reported.
        assert_eq!(b.refresh().await.unwrap(), None);
        let set = c.set();
        assert_eq!(
            set["x"].declared_by,
            BTreeSet::from(["a".to_string(), "c".to_string()])
        );
        assert_eq!(
            (set["x"].changed_by.as_str(), set["x"].changed_at),
            ("c", 3)
        );
    }

    #[tokio::test]
    async fn a_budget_goes_when_no_replica_declares_it_any_more() {
        let h = home();
        let d = tempfile::tempdir().unwrap();
        SharedBudgets::join(
            h.clone(),
            "a",
            vec![spec("x", "10"), spec("y", "1")],
            &d.path().join("a"),
            1,
        )
        .await
        .unwrap();
        SharedBudgets::join(
            h.clone(),
            "b",
            vec![spec("x", "10")],
            &d.path().join("b"),
            1,
        )
        .await
        .unwrap();
        // `a` restarts without x: b still declares it; y was a's alone and goes.
        let a = SharedBudgets::join(h.clone(), "a", vec![], &d.path().join("a"), 2)
            .await
            .unwrap();
        assert_eq!(names(&a), vec![("x".into(), "10".into())]);
        assert_eq!(a.set()["x"].declared_by, BTreeSet::from(["b".to_string()]));
        let b = SharedBudgets::join(h.clone(), "b", vec![], &d.path().join("b"), 3)
            .await
            .unwrap();
        assert!(b.specs().is_empty());
        assert!(a.refresh().await.unwrap().is_some_and(|v| v.is_empty()));
    }

    #[tokio::test]
    async fn a_forgotten_replica_declares_nothing_any_more() {
        let h = home();
        let d = tempfile::tempdir().unwrap();
        let a = SharedBudgets::join(
            h.clone(),
            "a",
            vec![spec("x", "10")],
            &d.path().join("a"),
            1,
        )
        .await
        .unwrap();
        SharedBudgets::join(
            h.clone(),
            "b",
            vec![spec("x", "10"), spec("y", "1")],
            &d.path().join("b"),
            1,
        )
        .await
        .unwrap();
        assert!(a.refresh().await.unwrap().is_some_and(|v| v.len() == 2));
        assert_eq!(
            SharedBudgets::forget(&*h, "b").await.unwrap(),
            vec!["y".to_string()]
        );
        assert!(SharedBudgets::forget(&*h, "b").await.unwrap().is_empty());
        assert!(a.refresh().await.unwrap().is_some());
        assert_eq!(names(&a), vec![("x".into(), "10".into())]);
        assert_eq!(a.set()["x"].declared_by, BTreeSet::from(["a".to_string()]));
    }

    #[tokio::test]
    async fn replicas_joining_at_once_lose_no_declaration() {
        let h = home();
        let d = tempfile::tempdir().unwrap();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let h = h.clone();
            let dir = d.path().join(format!("n{i}"));
            tasks.push(tokio::spawn(async move {
                SharedBudgets::join(
                    h,
                    &format!("n{i}"),
                    vec![spec(&format!("b{i}"), "1")],
                    &dir,
                    1,
                )
                .await
                .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let last = SharedBudgets::join(h, "z", vec![], &d.path().join("z"), 2)
            .await
            .unwrap();
        assert_eq!(last.specs().len(), 8);
        for (name, b) in last.set() {
            assert_eq!(b.declared_by, BTreeSet::from([format!("n{}", &name[1..])]));
        }
    }

    #[tokio::test]
    async fn an_unreadable_or_invalid_set_is_reported_and_never_overwritten() {
        for bad in [
            &b"not json"[..],
            br#"{"kind":"something-else/1","budgets":{}}"#,
            // A definition under another budget's name.
            br#"{"kind":"logbook-budgets/1","budgets":{"x":{"spec":{"name":"y","scope":{"model":"*"},"period":"day","limitUsd":"1","warnAt":[],"warnActions":[]},"declaredBy":["a"],"changedBy":"a","changedAt":1}}}"#,
            // A limit that is not positive.
            br#"{"kind":"logbook-budgets/1","budgets":{"x":{"spec":{"name":"x","scope":{"model":"*"},"period":"day","limitUsd":"0","warnAt":[],"warnActions":[]},"declaredBy":["a"],"changedBy":"a","changedAt":1}}}"#,
        ] {
            let h = home();
        let d = tempfile::tempdir().unwrap();
            h.write(KEY, bytes::Bytes::from_static(bad), None)
                .await
                .unwrap();
            let e = match SharedBudgets::join(h.clone(), "a", vec![spec("x", "1")], &d.path().join("a"), 1).await {
                Err(e) => e,
                Ok(_) => panic!("joined over {}", String::from_utf8_lossy(bad)),
            };
            assert!(e.contains("not Logbook's shared budget set"), "{e}");
            let (kept, _) = h.read(KEY).await.unwrap().unwrap();
            assert_eq!(&kept[..], bad);
        }
        // A replica already running reports it and keeps its set.
        let h = home();
        let d = tempfile::tempdir().unwrap();
        let a = SharedBudgets::join(h.clone(), "a", vec![spec("x", "1")], &d.path().join("a"), 1)
            .await
            .unwrap();
        let (_, v) = h.read(KEY).await.unwrap().unwrap();
        h.write(KEY, bytes::Bytes::from_static(b"[]"), Some(&v))
            .await
            .unwrap();
        assert!(a.refresh().await.is_err());
        assert!(a
            .last_error()
            .unwrap()
            .contains("not Logbook's shared budget set"));
        assert_eq!(names(&a), vec![("x".into(), "1".into())]);
    }
}
