//! The model-invocation logging configuration: one per (account, region), as in Bedrock.
//!
//! * Stored in `<data>/control/logging-configs.json` (replaced atomically, fsync'd).
//! * A region may be declared in the configuration file (`[logging_config."us-west-2"]`,
//!   same member names as the API). A declaration is applied at start when the region has
//!   no stored state or the declaration changed since it was last applied. A later API
//!   change is kept and reported as drift, never silently reverted.
//! * Where nothing is stored, the default applies: `[logging_config.default]`, or when the
//!   file has none, everything on to the archive bucket.
//! * Delete stores a tombstone: logging is off for that (account, region) until the next Put.
//! * Replicas (`[cluster]`): after [`LoggingConfigs::join`], the configurations live in the
//!   home bucket (`logbook/cluster/state/logging-configs.json`) and change only by
//!   conditional writes, each applied to the freshest copy (two replicas changing them at
//!   once: one wins, the other retries on top of it; no update is lost). Every replica
//!   re-reads it every `cluster.poll_ms` ([`LoggingConfigs::refresh`]); the local file is
//!   kept as a copy of the last state seen. A shared object this build cannot read is
//!   reported and never trusted or overwritten.

use logbook_record::logging::LoggingConfig;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// Where a stored configuration came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// The declarative file.
    File,
    /// The API.
    Api,
}

/// One stored (account, region) entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// The configuration, or `None` after Delete.
    pub config: Option<LoggingConfig>,
    /// Who set it last.
    pub source: Source,
    /// Hash of the file declaration last applied to this entry, if any.
    pub file_hash: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Stored {
    entries: BTreeMap<String, Entry>,
}

/// The shared copy's object, and what it holds.
pub const SHARED_KEY: &str = "logbook/cluster/state/logging-configs.json";
const SHARED_KIND: &str = "logbook-logging-configs/1";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SharedDoc {
    kind: String,
    entries: BTreeMap<String, Entry>,
}

fn encode_shared(st: &Stored) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec_pretty(&SharedDoc {
        kind: SHARED_KIND.into(),
        entries: st.entries.clone(),
    })
    .map_err(|e| StoreError(e.to_string()))
}

fn decode_shared(home: &str, b: &[u8]) -> Result<Stored, StoreError> {
    let doc: SharedDoc = serde_json::from_slice(b).map_err(|e| {
        StoreError(format!(
            "{SHARED_KEY} in {home} is not Logbook's shared logging configuration ({e}); it is left as it is and not used"
        ))
    })?;
    if doc.kind != SHARED_KIND {
        return Err(StoreError(format!(
            "{SHARED_KEY} in {home} has kind {:?}, not {SHARED_KIND:?}; it is left as it is and not used",
            doc.kind
        )));
    }
    Ok(Stored {
        entries: doc.entries,
    })
}

/// The home's copy and the version this replica last saw.
struct Shared {
    state: std::sync::Arc<dyn logbook_cluster::SharedState>,
    seen: std::sync::Mutex<Option<logbook_cluster::Version>>,
    /// The last error refreshing (reported once per change of message).
    last_error: std::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("home", &self.state.describe())
            .finish()
    }
}

/// Apply the file's declarations to `stored` (the rule in the module docs); whether
/// anything changed.
fn apply_declared(stored: &mut Stored, declared: &BTreeMap<String, LoggingConfig>) -> bool {
    let mut changed = false;
    for (k, decl) in declared {
        let h = hash(decl);
        let apply = match stored.entries.get(k) {
            None => true,
            Some(e) => e.file_hash.as_deref() != Some(h.as_str()),
        };
        if apply {
            stored.entries.insert(
                k.clone(),
                Entry {
                    config: Some(decl.clone()),
                    source: Source::File,
                    file_hash: Some(h),
                },
            );
            changed = true;
        }
    }
    changed
}

/// A difference between the file and the live configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Drift {
    /// Account id.
    pub account_id: String,
    /// Region.
    pub region: String,
    /// What the file declares.
    pub declared: LoggingConfig,
    /// What is in force (`None`: deleted).
    pub live: Option<LoggingConfig>,
}

/// Store errors.
#[derive(Debug, thiserror::Error)]
#[error("logging configuration store: {0}")]
pub struct StoreError(pub String);

/// The configuration store.
#[derive(Debug)]
pub struct LoggingConfigs {
    path: PathBuf,
    default: LoggingConfig,
    declared: BTreeMap<String, LoggingConfig>,
    state: RwLock<Stored>,
    shared: Option<Shared>,
}

fn key(account: &str, region: &str) -> String {
    format!("{account}/{region}")
}

/// What a data folder has stored, read without changing anything.
fn read_stored(control_dir: &Path) -> Result<Stored, StoreError> {
    let path = control_dir.join("logging-configs.json");
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| StoreError(format!("{} is corrupt: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Stored::default()),
        Err(e) => Err(StoreError(format!("read {}: {e}", path.display()))),
    }
}

fn hash(c: &LoggingConfig) -> String {
    hex::encode(&Sha256::digest(serde_json::to_vec(c).unwrap_or_default())[..8])
}

impl LoggingConfigs {
    /// Open the store in `control_dir`. `declared` maps `account/region` keys to file
    /// declarations; they are applied as described in the module docs.
    pub fn open(
        control_dir: &Path,
        default: LoggingConfig,
        declared: BTreeMap<String, LoggingConfig>,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(control_dir)
            .map_err(|e| StoreError(format!("create {}: {e}", control_dir.display())))?;
        let path = control_dir.join("logging-configs.json");
        let mut stored = read_stored(control_dir)?;
        let changed = apply_declared(&mut stored, &declared);
        let s = LoggingConfigs {
            path,
            default,
            declared,
            state: RwLock::new(stored),
            shared: None,
        };
        if changed {
            let st = s
                .state
                .read()
                .map_err(|_| StoreError("lock poisoned".into()))?;
            s.persist(&st)?;
        }
        Ok(s)
    }

    fn persist(&self, st: &Stored) -> Result<(), StoreError> {
        let tmp = self.path.with_extension("json.tmp");
        let data = serde_json::to_vec_pretty(st).map_err(|e| StoreError(e.to_string()))?;
        let res = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        res.map_err(|e| StoreError(format!("write {}: {e}", self.path.display())))
    }

    /// Compare file declarations with what a data folder has stored, without changing
    /// anything (for `logbook config diff` while a server runs).
    pub fn diff_stored(
        control_dir: &Path,
        default: &LoggingConfig,
        declared: &BTreeMap<String, LoggingConfig>,
    ) -> Result<Vec<Drift>, StoreError> {
        let stored = read_stored(control_dir)?;
        let mut out = Vec::new();
        for (k, decl) in declared {
            let live = match stored.entries.get(k) {
                Some(e) => e.config.clone(),
                None => Some(default.clone()),
            };
            if live.as_ref() != Some(decl) {
                let (account, region) = k.split_once('/').unwrap_or((k.as_str(), ""));
                out.push(Drift {
                    account_id: account.into(),
                    region: region.into(),
                    declared: decl.clone(),
                    live,
                });
            }
        }
        Ok(out)
    }

    /// The configuration in force for each `account/region` a data folder knows of (every
    /// declared one, every stored one, and `extra`), read without changing anything (for
    /// `logbook coverage` while a server runs). `None`: logging is off there.
    pub fn in_force_stored(
        control_dir: &Path,
        default: &LoggingConfig,
        declared: &BTreeMap<String, LoggingConfig>,
        extra: &[String],
    ) -> Result<BTreeMap<String, Option<LoggingConfig>>, StoreError> {
        let stored = read_stored(control_dir)?;
        let mut out = BTreeMap::new();
        for k in declared
            .keys()
            .chain(stored.entries.keys())
            .chain(extra.iter())
        {
            let config = match stored.entries.get(k) {
                Some(e) => e.config.clone(),
                // A declaration not applied yet (no server started since) is what the
                // next start puts in force.
                None => Some(declared.get(k).cloned().unwrap_or_else(|| default.clone())),
            };
            out.insert(k.clone(), config);
        }
        Ok(out)
    }

    /// The configuration in force for (account, region); `None` means logging is off.
    pub fn effective(&self, account: &str, region: &str) -> Option<LoggingConfig> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        match st.entries.get(&key(account, region)) {
            Some(e) => e.config.clone(),
            None => Some(self.default.clone()),
        }
    }

    /// Keep the configurations in the cluster home from now on. The home's copy wins when
    /// there is one (this folder's file declarations are applied to it by the usual
    /// rule); otherwise this folder's state becomes the home's first copy.
    pub async fn join(
        &mut self,
        state: std::sync::Arc<dyn logbook_cluster::SharedState>,
    ) -> Result<(), StoreError> {
        let home = state.describe();
        let local = self.state.read().unwrap_or_else(|p| p.into_inner()).clone();
        let declared = self.declared.clone();
        let mut failed = None;
        let mut result = None;
        let version = logbook_cluster::update(&*state, SHARED_KEY, 20, |cur| {
            let mut st = match cur {
                None => local.clone(),
                Some(b) => match decode_shared(&home, b) {
                    Ok(st) => st,
                    Err(e) => {
                        failed = Some(e);
                        return None;
                    }
                },
            };
            let changed = apply_declared(&mut st, &declared) || cur.is_none();
            let out = changed.then(|| encode_shared(&st));
            result = Some(st);
            match out {
                Some(Ok(b)) => Some(b),
                Some(Err(e)) => {
                    failed = Some(e);
                    None
                }
                None => None,
            }
        })
        .await
        .map_err(|e| StoreError(e.to_string()))?;
        if let Some(e) = failed {
            return Err(e);
        }
        let st = result.unwrap_or_default();
        self.persist(&st)?;
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = st;
        self.shared = Some(Shared {
            state,
            seen: std::sync::Mutex::new(version),
            last_error: std::sync::Mutex::new(None),
        });
        Ok(())
    }

    /// Pick up what other replicas changed in the home (a no-op standing alone). A copy
    /// that cannot be read keeps the last good state and is reported.
    pub async fn refresh(&self) -> Result<bool, StoreError> {
        let Some(sh) = &self.shared else {
            return Ok(false);
        };
        let got = sh
            .state
            .read(SHARED_KEY)
            .await
            .map_err(|e| StoreError(e.to_string()));
        let outcome = match got {
            Ok(Some((b, v))) => {
                let same = sh.seen.lock().unwrap_or_else(|p| p.into_inner()).as_ref() == Some(&v);
                if same {
                    Ok(false)
                } else {
                    decode_shared(&sh.state.describe(), &b).and_then(|st| {
                        self.adopt(st, v)?;
                        Ok(true)
                    })
                }
            }
            Ok(None) => Err(StoreError(format!(
                "{SHARED_KEY} is missing from {}; the last state seen stays in force",
                sh.state.describe()
            ))),
            Err(e) => Err(e),
        };
        let mut last = sh.last_error.lock().unwrap_or_else(|p| p.into_inner());
        match &outcome {
            Ok(_) => *last = None,
            Err(e) => {
                if last.as_deref() != Some(e.0.as_str()) {
                    tracing::error!(error = %e, "shared logging configuration not refreshed");
                }
                *last = Some(e.0.clone());
            }
        }
        outcome
    }

    /// The last error refreshing from the home, if the last attempt failed.
    pub fn shared_error(&self) -> Option<String> {
        self.shared.as_ref().and_then(|s| {
            s.last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        })
    }

    fn adopt(&self, st: Stored, v: logbook_cluster::Version) -> Result<(), StoreError> {
        if let Some(sh) = &self.shared {
            *sh.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
        }
        let mut cur = self.state.write().unwrap_or_else(|p| p.into_inner());
        if *cur != st {
            // The local file is a copy of the last state seen (read by `logbook config
            // diff` and `coverage` while the server runs).
            self.persist(&st)?;
            *cur = st;
        }
        Ok(())
    }

    /// Change the state with `f` (given the freshest copy): in the home by conditional
    /// writes when joined, else in the local file. Returns what `f` returned.
    async fn change<T: Send>(
        &self,
        mut f: impl FnMut(&mut Stored) -> Option<T> + Send,
    ) -> Result<Option<T>, StoreError> {
        let Some(sh) = &self.shared else {
            let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
            let mut next = st.clone();
            let out = f(&mut next);
            if out.is_some() {
                self.persist(&next)?;
                *st = next;
            }
            return Ok(out);
        };
        let home = sh.state.describe();
        let mut failed = None;
        let mut outcome: Option<(T, Stored)> = None;
        let version = logbook_cluster::update(&*sh.state, SHARED_KEY, 50, |cur| {
            outcome = None;
            let mut st = match cur {
                Some(b) => match decode_shared(&home, b) {
                    Ok(st) => st,
                    Err(e) => {
                        failed = Some(e);
                        return None;
                    }
                },
                // Gone from the home (deleted by hand): start again from what we had.
                None => self.state.read().unwrap_or_else(|p| p.into_inner()).clone(),
            };
            let out = f(&mut st)?;
            match encode_shared(&st) {
                Ok(b) => {
                    outcome = Some((out, st));
                    Some(b)
                }
                Err(e) => {
                    failed = Some(e);
                    None
                }
            }
        })
        .await
        .map_err(|e| StoreError(e.to_string()))?;
        if let Some(e) = failed {
            return Err(e);
        }
        match (outcome, version) {
            (Some((out, st)), Some(v)) => {
                self.adopt(st, v)?;
                Ok(Some(out))
            }
            _ => Ok(None),
        }
    }

    /// Replace (Some) or delete (None) the configuration; returns the previous entry and
    /// the entry written (for [`LoggingConfigs::restore`]).
    pub async fn set(
        &self,
        account: &str,
        region: &str,
        config: Option<LoggingConfig>,
    ) -> Result<(Option<Entry>, Entry), StoreError> {
        let k = key(account, region);
        let changed = self
            .change(|st| {
                let file_hash = st.entries.get(&k).and_then(|e| e.file_hash.clone());
                let entry = Entry {
                    config: config.clone(),
                    source: Source::Api,
                    file_hash,
                };
                let prev = st.entries.insert(k.clone(), entry.clone());
                Some((prev, entry))
            })
            .await?;
        changed.ok_or_else(|| StoreError("the change was not applied".into()))
    }

    /// Put back a previous entry (undo of [`LoggingConfigs::set`]), unless the entry is
    /// no longer the one `set` wrote (another replica changed it since: that change stays).
    pub async fn restore(
        &self,
        account: &str,
        region: &str,
        prev: Option<Entry>,
        written: &Entry,
    ) -> Result<(), StoreError> {
        let k = key(account, region);
        self.change(|st| {
            if st.entries.get(&k) != Some(written) {
                return None;
            }
            match &prev {
                Some(e) => st.entries.insert(k.clone(), e.clone()),
                None => st.entries.remove(&k),
            };
            Some(())
        })
        .await?;
        Ok(())
    }

    /// `account/region` keys where logging was turned off (a configuration deleted):
    /// regions that record nothing.
    pub fn not_recording(&self) -> Vec<String> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        st.entries
            .iter()
            .filter(|(_, e)| e.config.is_none())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// File declarations that differ from what is in force.
    pub fn drift(&self) -> Vec<Drift> {
        let mut out = Vec::new();
        for (k, decl) in &self.declared {
            let (account, region) = k.split_once('/').unwrap_or((k.as_str(), ""));
            let live = self.effective(account, region);
            if live.as_ref() != Some(decl) {
                out.push(Drift {
                    account_id: account.into(),
                    region: region.into(),
                    declared: decl.clone(),
                    live,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(bucket: &str) -> LoggingConfig {
        LoggingConfig::to_bucket(bucket, "")
    }

    #[tokio::test]
    async fn default_put_delete_and_persistence() {
        let d = tempfile::tempdir().unwrap();
        let s = LoggingConfigs::open(d.path(), cfg("def"), BTreeMap::new()).unwrap();
        assert_eq!(
            s.effective("1", "r")
                .unwrap()
                .s3_config
                .unwrap()
                .bucket_name,
            "def"
        );
        s.set("1", "r", Some(cfg("mine"))).await.unwrap();
        s.set("1", "x", None).await.unwrap();
        let s = LoggingConfigs::open(d.path(), cfg("def"), BTreeMap::new()).unwrap();
        assert_eq!(
            s.effective("1", "r")
                .unwrap()
                .s3_config
                .unwrap()
                .bucket_name,
            "mine"
        );
        assert!(s.effective("1", "x").is_none());
    }

    #[tokio::test]
    async fn file_declarations_apply_once_and_api_changes_show_as_drift() {
        let d = tempfile::tempdir().unwrap();
        let decl = BTreeMap::from([("1/us-west-2".to_string(), cfg("declared"))]);
        let s = LoggingConfigs::open(d.path(), cfg("def"), decl.clone()).unwrap();
        assert_eq!(
            s.effective("1", "us-west-2")
                .unwrap()
                .s3_config
                .unwrap()
                .bucket_name,
            "declared"
        );
        assert!(s.drift().is_empty());
        s.set("1", "us-west-2", Some(cfg("changed-by-api")))
            .await
            .unwrap();
        // Restart with the same file: the API change is kept and reported, not reverted.
        let s = LoggingConfigs::open(d.path(), cfg("def"), decl).unwrap();
        assert_eq!(
            s.effective("1", "us-west-2")
                .unwrap()
                .s3_config
                .unwrap()
                .bucket_name,
            "changed-by-api"
        );
        assert_eq!(s.drift().len(), 1);
        // Changing the file is intent: it is applied.
        let decl2 = BTreeMap::from([("1/us-west-2".to_string(), cfg("declared-v2"))]);
        let s = LoggingConfigs::open(d.path(), cfg("def"), decl2).unwrap();
        assert_eq!(
            s.effective("1", "us-west-2")
                .unwrap()
                .s3_config
                .unwrap()
                .bucket_name,
            "declared-v2"
        );
        assert!(s.drift().is_empty());
    }

    fn home() -> std::sync::Arc<dyn logbook_cluster::SharedState> {
        std::sync::Arc::new(logbook_cluster::BucketState::new(
            "memory",
            std::sync::Arc::new(object_store::memory::InMemory::new()),
        ))
    }

    fn bucket_of(s: &LoggingConfigs, region: &str) -> Option<String> {
        s.effective("1", region)
            .map(|c| c.s3_config.map(|s| s.bucket_name).unwrap_or_default())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replicas_changing_the_shared_configurations_at_once_lose_no_update() {
        let h = home();
        let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut replicas = Vec::new();
        for d in &dirs {
            let mut s = LoggingConfigs::open(d.path(), cfg("def"), BTreeMap::new()).unwrap();
            s.join(h.clone()).await.unwrap();
            replicas.push(std::sync::Arc::new(s));
        }
        // Each replica changes its own region, 5 times, all at once.
        let mut tasks = Vec::new();
        for (i, r) in replicas.iter().enumerate() {
            let r = r.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..5 {
                    r.set("1", &format!("r{i}"), Some(cfg(&format!("b{i}-{n}"))))
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for r in &replicas {
            r.refresh().await.unwrap();
            for i in 0..4 {
                assert_eq!(
                    bucket_of(r, &format!("r{i}")).as_deref(),
                    Some(&*format!("b{i}-4"))
                );
            }
        }
        // The local file of each is a copy of that state.
        let again = LoggingConfigs::open(dirs[0].path(), cfg("def"), BTreeMap::new()).unwrap();
        assert_eq!(bucket_of(&again, "r3").as_deref(), Some("b3-4"));
    }

    #[tokio::test]
    async fn the_homes_copy_wins_at_join_and_declarations_apply_to_it() {
        let h = home();
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut a = LoggingConfigs::open(da.path(), cfg("def"), BTreeMap::new()).unwrap();
        a.set("1", "r", Some(cfg("from-a"))).await.unwrap();
        a.join(h.clone()).await.unwrap(); // the first: its state seeds the home
                                          // B had its own local change, and declares another region.
        let decl = BTreeMap::from([("1/declared".to_string(), cfg("decl"))]);
        let mut b = LoggingConfigs::open(db.path(), cfg("def"), decl).unwrap();
        b.set("1", "r", Some(cfg("local-b"))).await.unwrap();
        b.join(h.clone()).await.unwrap();
        assert_eq!(bucket_of(&b, "r").as_deref(), Some("from-a"));
        assert_eq!(bucket_of(&b, "declared").as_deref(), Some("decl"));
        a.refresh().await.unwrap();
        assert_eq!(bucket_of(&a, "declared").as_deref(), Some("decl"));
        // A delete through one replica turns logging off on the other.
        b.set("1", "r", None).await.unwrap();
        assert!(a.refresh().await.unwrap());
        assert_eq!(bucket_of(&a, "r"), None);
        assert!(!a.refresh().await.unwrap(), "nothing new");
    }

    #[tokio::test]
    async fn a_rollback_never_undoes_another_replicas_later_change() {
        let h = home();
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut a = LoggingConfigs::open(da.path(), cfg("def"), BTreeMap::new()).unwrap();
        a.join(h.clone()).await.unwrap();
        let mut b = LoggingConfigs::open(db.path(), cfg("def"), BTreeMap::new()).unwrap();
        b.join(h.clone()).await.unwrap();
        let (prev, written) = a.set("1", "r", Some(cfg("a"))).await.unwrap();
        b.set("1", "r", Some(cfg("b"))).await.unwrap();
        // A's audit failed: its rollback finds B's change and leaves it.
        a.restore("1", "r", prev.clone(), &written).await.unwrap();
        a.refresh().await.unwrap();
        assert_eq!(bucket_of(&a, "r").as_deref(), Some("b"));
        // Without a later change, the rollback puts the previous state back.
        let (prev, written) = a.set("1", "q", Some(cfg("a"))).await.unwrap();
        a.restore("1", "q", prev, &written).await.unwrap();
        b.refresh().await.unwrap();
        assert_eq!(bucket_of(&b, "q").as_deref(), Some("def"));
    }

    #[tokio::test]
    async fn a_foreign_or_corrupt_shared_copy_is_reported_and_never_trusted() {
        let h = home();
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut a = LoggingConfigs::open(da.path(), cfg("def"), BTreeMap::new()).unwrap();
        a.set("1", "r", Some(cfg("good"))).await.unwrap();
        a.join(h.clone()).await.unwrap();
        // Someone writes garbage over the shared copy.
        let (_, v) = h.read(SHARED_KEY).await.unwrap().unwrap();
        h.write(
            SHARED_KEY,
            bytes::Bytes::from_static(b"{\"entries\": 5}"),
            Some(&v),
        )
        .await
        .unwrap();
        // A running replica keeps its last good state and says why.
        assert!(a.refresh().await.is_err());
        assert_eq!(bucket_of(&a, "r").as_deref(), Some("good"));
        assert!(a
            .shared_error()
            .unwrap()
            .contains("not Logbook's shared logging configuration"));
        // A change is refused rather than written over it.
        assert!(a.set("1", "r", Some(cfg("x"))).await.is_err());
        let (data, _) = h.read(SHARED_KEY).await.unwrap().unwrap();
        assert_eq!(&data[..], b"{\"entries\": 5}");
        // A replica starting now refuses to join.
        let mut b = LoggingConfigs::open(db.path(), cfg("def"), BTreeMap::new()).unwrap();
        let e = b.join(h.clone()).await.unwrap_err();
        assert!(e.to_string().contains("left as it is and not used"), "{e}");
    }
}
