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

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    entries: BTreeMap<String, Entry>,
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
        let mut changed = false;
        for (k, decl) in &declared {
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
        let s = LoggingConfigs {
            path,
            default,
            declared,
            state: RwLock::new(stored),
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

    /// Replace (Some) or delete (None) the configuration; returns the previous entry.
    pub fn set(
        &self,
        account: &str,
        region: &str,
        config: Option<LoggingConfig>,
    ) -> Result<Option<Entry>, StoreError> {
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        let k = key(account, region);
        let file_hash = st.entries.get(&k).and_then(|e| e.file_hash.clone());
        let prev = st.entries.insert(
            k,
            Entry {
                config,
                source: Source::Api,
                file_hash,
            },
        );
        self.persist(&st)?;
        Ok(prev)
    }

    /// Put back a previous entry (undo of [`LoggingConfigs::set`]).
    pub fn restore(
        &self,
        account: &str,
        region: &str,
        prev: Option<Entry>,
    ) -> Result<(), StoreError> {
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        let k = key(account, region);
        match prev {
            Some(e) => st.entries.insert(k, e),
            None => st.entries.remove(&k),
        };
        self.persist(&st)
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

    #[test]
    fn default_put_delete_and_persistence() {
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
        s.set("1", "r", Some(cfg("mine"))).unwrap();
        s.set("1", "x", None).unwrap();
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

    #[test]
    fn file_declarations_apply_once_and_api_changes_show_as_drift() {
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
}
