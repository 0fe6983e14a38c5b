//! Lifecycle rules for local buckets, as S3's: objects older than `transition_after` move
//! to a cold bucket (a folder or an S3-compatible bucket, same keys), objects older than
//! `expire_after` are deleted.
//!
//! A pass is planned first ([`plan`]: pure, from a listing), so the caller can record what
//! it will do (the trail) before anything changes, then carried out ([`apply`]). Every
//! step is idempotent: a move writes the cold copy durably before the hot one is deleted,
//! so a crash between the two leaves both, and the next pass writes the same copy again
//! and deletes. Checkpoints (`LogbookCheckpoints/`), probes and Bedrock's permission-check
//! object never move or expire: `logbook verify` needs every checkpoint where it was
//! written, and finds moved objects in the cold bucket (`--cold-bucket`).
//!
//! Age is the object's last-modified time (when it was written). In the cold bucket an
//! object's age starts again at its move, so it expires there after
//! `expire_after - transition_after`, which is `expire_after` from when it was written,
//! give or take one pass interval.

use crate::{Bucket, BucketError};
use object_store::path::Path as StorePath;
use object_store::ObjectStoreExt as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One bucket's rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Move objects this old to the cold bucket.
    pub transition_after: Option<Duration>,
    /// The cold bucket's declared name.
    pub transition_to: Option<String>,
    /// Delete objects this old (from the cold bucket too).
    pub expire_after: Option<Duration>,
    /// How often a pass runs.
    pub interval: Duration,
}

/// Keys a rule never touches.
pub fn exempt(key: &str) -> bool {
    key.starts_with("LogbookCheckpoints/")
        || key.starts_with(".logbook-probe/")
        || key.rsplit('/').next() == Some("amazon-bedrock-logs-permission-check")
}

/// An object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its key.
    pub key: String,
    /// Bytes.
    pub size: u64,
    /// Last modified.
    pub modified: SystemTime,
}

/// What to do with one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Copy to the cold bucket, then delete from the hot one.
    Transition(Listed),
    /// Delete from the hot bucket.
    Expire(Listed),
    /// Delete from the cold bucket.
    ExpireCold(Listed),
}

impl Action {
    /// Is it a move to the cold bucket?
    pub fn is_transition(&self) -> bool {
        matches!(self, Action::Transition(_))
    }

    /// The object it acts on.
    pub fn object(&self) -> &Listed {
        match self {
            Action::Transition(o) | Action::Expire(o) | Action::ExpireCold(o) => o,
        }
    }
}

fn older(o: &Listed, now: SystemTime, age: Duration) -> bool {
    now.duration_since(o.modified).is_ok_and(|a| a >= age)
}

/// The actions of one pass over the listings of the hot and the cold bucket.
pub fn plan(rule: &Rule, hot: &[Listed], cold: &[Listed], now: SystemTime) -> Vec<Action> {
    let mut out = Vec::new();
    for o in hot.iter().filter(|o| !exempt(&o.key)) {
        if rule.expire_after.is_some_and(|a| older(o, now, a)) {
            out.push(Action::Expire(o.clone()));
        } else if rule.transition_to.is_some()
            && rule.transition_after.is_some_and(|a| older(o, now, a))
        {
            out.push(Action::Transition(o.clone()));
        }
    }
    if let (Some(expire), Some(moved)) = (rule.expire_after, rule.transition_after) {
        let in_cold = expire.saturating_sub(moved);
        for o in cold.iter().filter(|o| !exempt(&o.key)) {
            if older(o, now, in_cold) {
                out.push(Action::ExpireCold(o.clone()));
            }
        }
    }
    out
}

/// Counters of one bucket's rule, for `/healthz` and `logbook status`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Passes completed.
    pub passes: AtomicU64,
    /// Objects moved to the cold bucket.
    pub transitioned: AtomicU64,
    /// Their bytes.
    pub transitioned_bytes: AtomicU64,
    /// Objects deleted (hot and cold).
    pub expired: AtomicU64,
    /// Their bytes.
    pub expired_bytes: AtomicU64,
    /// When the last pass ended (Unix ms; 0: none yet).
    pub last_pass_ms: AtomicU64,
    /// The last pass's failure, if it failed.
    pub last_error: Mutex<Option<String>>,
}

impl Stats {
    /// The last failure.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Record how a pass ended.
    pub fn finished(&self, result: &Result<(), BucketError>) {
        self.passes.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_pass_ms.store(now, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
            result.as_ref().err().map(ToString::to_string);
    }
}

/// Every object of a bucket, with its size and age.
pub async fn list(bucket: &Bucket) -> Result<Vec<Listed>, BucketError> {
    use futures::TryStreamExt as _;
    let metas: Vec<object_store::ObjectMeta> = bucket
        .store()
        .list(None)
        .try_collect()
        .await
        .map_err(|e| bucket.store_err(e))?;
    Ok(metas
        .into_iter()
        .map(|m| Listed {
            key: m.location.to_string(),
            size: m.size,
            modified: SystemTime::from(m.last_modified),
        })
        .collect())
}

/// Carry out `actions` (from [`plan`]); counts into `stats` as it goes. Stops at the
/// first failure (the next pass starts again from a fresh listing).
pub async fn apply(
    hot: &Bucket,
    cold: Option<&Bucket>,
    actions: &[Action],
    stats: &Stats,
) -> Result<(), BucketError> {
    for a in actions {
        match a {
            Action::Transition(o) => {
                let Some(cold) = cold else { continue };
                let bytes = match hot.get(&o.key).await {
                    Ok(b) => b,
                    // Gone since the listing (another pass, a person): nothing to move.
                    Err(BucketError::Store {
                        source: object_store::Error::NotFound { .. },
                        ..
                    }) => continue,
                    Err(e) => return Err(e),
                };
                // Durable in the cold bucket before it goes from the hot one.
                cold.put(&o.key, bytes.to_vec()).await?;
                hot.delete(&o.key).await?;
                stats.transitioned.fetch_add(1, Ordering::Relaxed);
                stats
                    .transitioned_bytes
                    .fetch_add(o.size, Ordering::Relaxed);
            }
            Action::Expire(o) => {
                hot.delete(&o.key).await?;
                stats.expired.fetch_add(1, Ordering::Relaxed);
                stats.expired_bytes.fetch_add(o.size, Ordering::Relaxed);
            }
            Action::ExpireCold(o) => {
                let Some(cold) = cold else { continue };
                cold.delete(&o.key).await?;
                stats.expired.fetch_add(1, Ordering::Relaxed);
                stats.expired_bytes.fetch_add(o.size, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

impl Bucket {
    /// Delete an object; one already gone is no error.
    pub async fn delete(&self, key: &str) -> Result<(), BucketError> {
        match self.store.delete(&StorePath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(dir: &std::path::Path, name: &str) -> Bucket {
        Bucket::open(
            name,
            &crate::BucketSpec::Local(dir.to_path_buf()),
            logbook_disk::RealDisk::shared(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_pass_cut_short_is_finished_by_the_next_and_nothing_is_lost() {
        let (h, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (hot, cold) = (local(h.path(), "hot"), local(c.path(), "cold"));
        for k in [
            "a/1.json.gz",
            "a/2.json.gz",
            "LogbookCheckpoints/n/records/1.json",
        ] {
            hot.put(k, k.as_bytes().to_vec()).await.unwrap();
        }
        let r = Rule {
            transition_after: Some(Duration::from_secs(1)),
            transition_to: Some("cold".into()),
            expire_after: None,
            interval: Duration::from_secs(1),
        };
        let later = SystemTime::now() + Duration::from_secs(10);
        let actions = plan(&r, &list(&hot).await.unwrap(), &[], later);
        assert_eq!(actions.len(), 2, "{actions:?}");
        // A crash after the first object's cold copy and before its deletion.
        cold.put("a/1.json.gz", b"a/1.json.gz".to_vec())
            .await
            .unwrap();
        // And an object gone between the listing and the pass.
        let stats = Stats::default();
        hot.delete("a/2.json.gz").await.unwrap();
        apply(&hot, Some(&cold), &actions, &stats).await.unwrap();
        let keys = |l: Vec<Listed>| {
            let mut k: Vec<String> = l.into_iter().map(|o| o.key).collect();
            k.sort();
            k
        };
        assert_eq!(
            keys(list(&hot).await.unwrap()),
            ["LogbookCheckpoints/n/records/1.json"]
        );
        assert_eq!(keys(list(&cold).await.unwrap()), ["a/1.json.gz"]);
        assert_eq!(&cold.get("a/1.json.gz").await.unwrap()[..], b"a/1.json.gz");
        assert_eq!(stats.transitioned.load(Ordering::Relaxed), 1);
        // Again: nothing left to do.
        assert!(plan(&r, &list(&hot).await.unwrap(), &[], later).is_empty());
    }

    const DAY: Duration = Duration::from_secs(86_400);

    fn obj(key: &str, days_old: u64, now: SystemTime) -> Listed {
        Listed {
            key: key.into(),
            size: 10,
            modified: now - DAY * days_old as u32,
        }
    }

    fn rule(t: Option<u64>, e: Option<u64>) -> Rule {
        Rule {
            transition_after: t.map(|d| DAY * d as u32),
            transition_to: t.map(|_| "cold".into()),
            expire_after: e.map(|d| DAY * d as u32),
            interval: Duration::from_secs(3600),
        }
    }

    #[test]
    fn old_objects_move_older_ones_expire_and_checkpoints_stay() {
        let now = SystemTime::now();
        let hot = [
            obj("AWSLogs/1/BedrockModelInvocationLogs/r/a.json.gz", 1, now),
            obj("AWSLogs/1/BedrockModelInvocationLogs/r/b.json.gz", 31, now),
            obj("AWSLogs/1/BedrockModelInvocationLogs/r/c.json.gz", 400, now),
            obj("LogbookCheckpoints/n/records/1_2.json", 400, now),
            obj(".logbook-probe/archive-x", 400, now),
            obj("p/amazon-bedrock-logs-permission-check", 400, now),
        ];
        let cold = [
            obj("AWSLogs/old.json.gz", 340, now),
            obj("AWSLogs/new.json.gz", 10, now),
        ];
        let a = plan(&rule(Some(30), Some(365)), &hot, &cold, now);
        let keys: Vec<(&str, &str)> = a
            .iter()
            .map(|a| {
                let kind = match a {
                    Action::Transition(_) => "move",
                    Action::Expire(_) => "expire",
                    Action::ExpireCold(_) => "expire-cold",
                };
                (kind, a.object().key.as_str())
            })
            .collect();
        assert_eq!(
            keys,
            [
                ("move", "AWSLogs/1/BedrockModelInvocationLogs/r/b.json.gz"),
                ("expire", "AWSLogs/1/BedrockModelInvocationLogs/r/c.json.gz"),
                // 365 - 30 days in the cold bucket.
                ("expire-cold", "AWSLogs/old.json.gz"),
            ]
        );
        // Expiry alone; a transition alone; nothing due.
        assert_eq!(plan(&rule(None, Some(365)), &hot, &[], now).len(), 1);
        assert_eq!(plan(&rule(Some(30), None), &hot, &cold, now).len(), 2);
        assert!(plan(&rule(Some(3000), Some(4000)), &hot, &cold, now).is_empty());
        // A clock behind an object's time: not old.
        let future = [obj("x", 0, now + DAY)];
        assert!(plan(&rule(Some(1), Some(2)), &future, &[], now).is_empty());
    }
}
