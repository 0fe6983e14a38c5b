//! Log groups and their retention, shared by the replicas of a home (`[cluster]`).
//!
//! The list lives in `logbook/cluster/state/log-groups.json` and changes only by
//! conditional writes: `CreateLogGroup`, `DeleteLogGroup` and the retention calls on any
//! replica change it there first (so "already exists" and "not found" hold for the whole
//! cluster), then in that replica's store; every other replica applies the list to its
//! own store at its next refresh (`cluster.poll_ms`). Each replica keeps only its own
//! records of a group, so a delete removes each replica's data as it applies it.
//!
//! A group deleted and created again gets a new generation; a replica that still holds
//! an older generation (it missed the delete) drops that data when it applies the new
//! one. Which generation a replica applied is kept in `control/log-groups-applied.json`.
//! A shared list this build cannot read is reported and never overwritten.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use logbook_cluster::{SharedState, Version};
use logbook_journal::Disk as _;
use logbook_store::{Store, StoreError};
use serde::{Deserialize, Serialize};

/// The shared list's object.
pub const KEY: &str = "logbook/cluster/state/log-groups.json";
const KIND: &str = "logbook-log-groups/1";

/// One group in the shared list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SharedGroup {
    /// Bumped each time the group is created again after a delete.
    pub generation: u64,
    /// A tombstone: deleted everywhere.
    pub deleted: bool,
    /// Retention in days (`None`: forever).
    pub retention_in_days: Option<u32>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    kind: String,
    groups: BTreeMap<String, SharedGroup>,
}

fn decode(home: &str, b: &[u8]) -> Result<Doc, StoreError> {
    let bad = |why: String| {
        StoreError::Invalid(format!(
            "{KEY} in {home} is not Logbook's shared log-group list ({why}); it is left as it is and not used"
        ))
    };
    let d: Doc = serde_json::from_slice(b).map_err(|e| bad(e.to_string()))?;
    if d.kind != KIND {
        return Err(bad(format!("kind {:?}", d.kind)));
    }
    for name in d.groups.keys() {
        logbook_store::validate_group_name(name).map_err(bad)?;
    }
    Ok(d)
}

fn encode(groups: &BTreeMap<String, SharedGroup>) -> Vec<u8> {
    serde_json::to_vec_pretty(&Doc {
        kind: KIND.into(),
        groups: groups.clone(),
    })
    .unwrap_or_default()
}

/// The shared list, applied to this replica's store.
pub struct SharedGroups {
    state: Arc<dyn SharedState>,
    store: Arc<Store>,
    applied_path: PathBuf,
    applied: Mutex<BTreeMap<String, u64>>,
    seen: Mutex<Option<Version>>,
    last_error: Mutex<Option<String>>,
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(std::io::Error::other(e.to_string()))
}

impl SharedGroups {
    /// Join the home's list: this store's groups are added to it (a group the list does
    /// not know is never deleted on joining, even if it was deleted elsewhere: it is
    /// created again, as a new generation), then the list is applied here.
    pub async fn join(
        state: Arc<dyn SharedState>,
        store: Arc<Store>,
        control_dir: &std::path::Path,
    ) -> Result<SharedGroups, StoreError> {
        std::fs::create_dir_all(control_dir).map_err(StoreError::Io)?;
        let applied_path = control_dir.join("log-groups-applied.json");
        let applied: BTreeMap<String, u64> = match std::fs::read(&applied_path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| io(format!("{} is corrupt: {e}", applied_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(StoreError::Io(e)),
        };
        let me = SharedGroups {
            state,
            store,
            applied_path,
            applied: Mutex::new(applied),
            seen: Mutex::new(None),
            last_error: Mutex::new(None),
        };
        let local: Vec<(String, Option<u32>)> = me
            .store
            .groups()
            .into_iter()
            .map(|g| (g.name, g.retention_in_days))
            .collect();
        let known = me.applied.lock().unwrap_or_else(|p| p.into_inner()).clone();
        me.change(|groups| {
            let mut changed = false;
            for (name, retention) in &local {
                match groups.get(name) {
                    Some(g) if !g.deleted => {}
                    // Deleted while this replica was away, and it held that generation:
                    // the delete applies here too (below), nothing to add.
                    Some(g) if known.get(name).is_some_and(|a| *a >= g.generation) => {}
                    other => {
                        let generation = other.map_or(1, |g| g.generation + 1);
                        groups.insert(
                            name.clone(),
                            SharedGroup {
                                generation,
                                deleted: false,
                                retention_in_days: *retention,
                            },
                        );
                        changed = true;
                    }
                }
            }
            Ok(changed)
        })
        .await?;
        Ok(me)
    }

    /// Change the list with `f` (on the freshest copy, retried on a lost race), then apply
    /// the result here. `f` says whether it changed anything, or why it refuses.
    async fn change(
        &self,
        mut f: impl FnMut(&mut BTreeMap<String, SharedGroup>) -> Result<bool, StoreError> + Send,
    ) -> Result<(), StoreError> {
        let home = self.state.describe();
        let done = logbook_cluster::change(
            &*self.state,
            KEY,
            50,
            |b| decode(&home, b).map(|d| d.groups),
            encode,
            |groups| f(groups).map(|changed| ((), changed)),
        )
        .await
        .map_err(|e| match e {
            logbook_cluster::ChangeError::State(e) => io(e),
            logbook_cluster::ChangeError::Doc(e) => e,
        })?;
        self.apply(&done.doc)?;
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(done.version);
        Ok(())
    }

    /// Make this store match the list.
    fn apply(&self, groups: &BTreeMap<String, SharedGroup>) -> Result<(), StoreError> {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        let before = applied.clone();
        for (name, g) in groups {
            let had = applied.get(name).copied();
            let older_here = had.is_some_and(|a| a < g.generation);
            if g.deleted {
                if self.store.has_group(name) && had.is_none_or(|a| a <= g.generation) {
                    self.store.delete_group(name)?;
                }
                applied.insert(name.clone(), g.generation);
                continue;
            }
            if older_here && self.store.has_group(name) {
                // Deleted and created again while this replica held the old group.
                self.store.delete_group(name)?;
            }
            self.store.ensure_group(name)?;
            let now = self
                .store
                .groups()
                .into_iter()
                .find(|x| &x.name == name)
                .and_then(|x| x.retention_in_days);
            if now != g.retention_in_days {
                self.store.set_retention(name, g.retention_in_days)?;
                if g.retention_in_days.is_some() {
                    self.store.apply_retention(logbook_store::now_ms())?;
                }
            }
            applied.insert(name.clone(), g.generation);
        }
        if *applied != before {
            let bytes = serde_json::to_vec(&*applied).map_err(io)?;
            logbook_journal::RealDisk
                .write_atomic(&self.applied_path, &bytes)
                .map_err(StoreError::Io)?;
        }
        Ok(())
    }

    /// Pick up what other replicas changed; whether anything did.
    pub async fn refresh(&self) -> Result<bool, StoreError> {
        let outcome = async {
            let got = self.state.read(KEY).await.map_err(io)?;
            let Some((b, v)) = got else {
                return Err(io(format!(
                    "{KEY} is missing from {}; the groups stay as they are",
                    self.state.describe()
                )));
            };
            if self.seen.lock().unwrap_or_else(|p| p.into_inner()).as_ref() == Some(&v) {
                return Ok(false);
            }
            let d = decode(&self.state.describe(), &b)?;
            self.apply(&d.groups)?;
            *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
            Ok(true)
        }
        .await;
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        match &outcome {
            Ok(_) => *last = None,
            Err(e) => {
                let m = e.to_string();
                if last.as_deref() != Some(m.as_str()) {
                    tracing::error!(error = %m, "shared log groups not refreshed");
                }
                *last = Some(m);
            }
        }
        outcome
    }

    /// The last error refreshing, while it lasts.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `CreateLogGroup` for the whole cluster.
    pub async fn create(&self, name: &str) -> Result<(), StoreError> {
        logbook_store::validate_group_name(name).map_err(StoreError::Invalid)?;
        self.change(|groups| match groups.get(name) {
            Some(g) if !g.deleted => Err(StoreError::GroupExists(name.into())),
            other => {
                let generation = other.map_or(1, |g| g.generation + 1);
                groups.insert(
                    name.into(),
                    SharedGroup {
                        generation,
                        deleted: false,
                        retention_in_days: None,
                    },
                );
                Ok(true)
            }
        })
        .await
    }

    /// `DeleteLogGroup` for the whole cluster.
    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.change(|groups| match groups.get_mut(name) {
            Some(g) if !g.deleted => {
                g.deleted = true;
                g.retention_in_days = None;
                Ok(true)
            }
            _ => Err(StoreError::NoSuchGroup(name.into())),
        })
        .await
    }

    /// `PutRetentionPolicy` / `DeleteRetentionPolicy` for the whole cluster.
    pub async fn set_retention(&self, name: &str, days: Option<u32>) -> Result<(), StoreError> {
        if let Some(d) = days {
            logbook_store::validate_retention(d).map_err(StoreError::Invalid)?;
        }
        self.change(|groups| match groups.get_mut(name) {
            Some(g) if !g.deleted => {
                let changed = g.retention_in_days != days;
                g.retention_in_days = days;
                Ok(changed)
            }
            _ => Err(StoreError::NoSuchGroup(name.into())),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> Arc<dyn SharedState> {
        Arc::new(logbook_cluster::BucketState::new(
            "memory",
            Arc::new(object_store::memory::InMemory::new()),
        ))
    }

    struct Replica {
        _dir: tempfile::TempDir,
        store: Arc<Store>,
        groups: SharedGroups,
    }

    async fn replica(h: &Arc<dyn SharedState>, local: &[&str]) -> Replica {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(d.path().join("store")).unwrap());
        for g in local {
            store.create_group(g).unwrap();
        }
        let groups = SharedGroups::join(h.clone(), store.clone(), &d.path().join("control"))
            .await
            .unwrap();
        Replica {
            _dir: d,
            store,
            groups,
        }
    }

    fn names(s: &Store) -> Vec<String> {
        s.groups().into_iter().map(|g| g.name).collect()
    }

    #[tokio::test]
    async fn groups_and_retention_changed_on_one_replica_are_in_force_on_the_others() {
        let h = home();
        let a = replica(&h, &["/a/own"]).await;
        let b = replica(&h, &["/b/own"]).await;
        // Joining adds each replica's groups to the list; none is lost.
        a.groups.refresh().await.unwrap();
        assert_eq!(names(&a.store), ["/a/own", "/b/own"]);
        assert_eq!(names(&b.store), ["/a/own", "/b/own"]);
        a.groups.create("/team/x").await.unwrap();
        assert!(b.groups.refresh().await.unwrap());
        assert!(b.store.has_group("/team/x"));
        // "Already exists" holds for the whole cluster.
        assert!(matches!(
            b.groups.create("/team/x").await,
            Err(StoreError::GroupExists(_))
        ));
        b.groups.set_retention("/team/x", Some(30)).await.unwrap();
        a.groups.refresh().await.unwrap();
        let ret = |s: &Store| {
            s.groups()
                .into_iter()
                .find(|g| g.name == "/team/x")
                .and_then(|g| g.retention_in_days)
        };
        assert_eq!(ret(&a.store), Some(30));
        assert!(
            b.groups.set_retention("/team/x", Some(31)).await.is_err(),
            "CloudWatch's values only"
        );
        b.groups.set_retention("/team/x", None).await.unwrap();
        a.groups.refresh().await.unwrap();
        assert_eq!(ret(&a.store), None);
        a.groups.delete("/team/x").await.unwrap();
        b.groups.refresh().await.unwrap();
        assert!(!b.store.has_group("/team/x"));
        assert!(matches!(
            b.groups.delete("/team/x").await,
            Err(StoreError::NoSuchGroup(_))
        ));
        assert!(!a.groups.refresh().await.unwrap(), "nothing new");
    }

    #[tokio::test]
    async fn a_replica_that_missed_a_delete_drops_the_old_group_when_it_is_created_again() {
        let h = home();
        let a = replica(&h, &[]).await;
        let c = replica(&h, &[]).await;
        a.groups.create("/g").await.unwrap();
        c.groups.refresh().await.unwrap();
        let rows = vec![logbook_store::parse_row(
            r#"{"schemaType":"ModelInvocationLog","schemaVersion":"1.0","timestamp":"2026-12-01T00:00:00Z","accountId":"1","identity":{"arn":"a"},"region":"us-east-1","requestId":"old","operation":"Converse","modelId":"m"}"#,
        )
        .unwrap()];
        c.store.import_rows("/g", rows).unwrap();
        assert_eq!(c.store.groups()[0].records, 1);
        // While C is not looking: deleted and created again.
        a.groups.delete("/g").await.unwrap();
        a.groups.create("/g").await.unwrap();
        c.groups.refresh().await.unwrap();
        let g = c.store.groups();
        assert_eq!(
            (g.len(), g[0].records),
            (1, 0),
            "the old generation's records are gone"
        );
    }

    #[tokio::test]
    async fn joining_never_deletes_a_group_the_list_does_not_know() {
        let h = home();
        let a = replica(&h, &[]).await;
        a.groups.create("/g").await.unwrap();
        a.groups.delete("/g").await.unwrap();
        // A replica that never saw "/g" joins with a "/g" of its own: it is kept, and
        // created again for everyone.
        let b = replica(&h, &["/g"]).await;
        assert!(b.store.has_group("/g"));
        a.groups.refresh().await.unwrap();
        assert!(a.store.has_group("/g"));
    }

    #[tokio::test]
    async fn an_unreadable_list_is_reported_and_never_overwritten() {
        let h = home();
        let a = replica(&h, &["/g"]).await;
        let (_, v) = h.read(KEY).await.unwrap().unwrap();
        h.write(KEY, bytes::Bytes::from_static(b"[1,2]"), Some(&v))
            .await
            .unwrap();
        assert!(a.groups.refresh().await.is_err());
        assert!(a
            .groups
            .last_error()
            .unwrap()
            .contains("not Logbook's shared log-group list"));
        assert!(a.store.has_group("/g"), "the last good state stays");
        assert!(a.groups.create("/h").await.is_err());
        assert_eq!(&h.read(KEY).await.unwrap().unwrap().0[..], b"[1,2]");
    }
}
