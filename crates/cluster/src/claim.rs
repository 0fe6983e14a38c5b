//! Node-id claims: one process at a time writes as a node.
//!
//! The claim is `logbook/cluster/nodes/<node>.json` in the home bucket, a lease the
//! running replica renews every `ttl / 3` by a conditional write. A starting replica:
//!
//! - takes the claim when there is none, when its holder released it (a clean stop), when
//!   its lease ran out (`ttl` without a renewal: the holder died), or when the holder was
//!   this very data folder on this host (the folder's exclusive lock, taken before this,
//!   proves that process is gone);
//! - refuses to start when a live replica holds it (a copy of a running replica's data
//!   folder, or two replicas configured with one `node_id`);
//! - refuses to start when the node's last known journal position is beyond this folder's
//!   (a copy taken earlier, or a restored backup: its next objects would take keys the
//!   node already wrote);
//! - refuses an object it cannot read as a claim (never overwrites what it does not
//!   understand).
//!
//! Taking over is itself conditional, so of two replicas starting at once, one wins.
//! A running replica that finds, on renewal, that someone else took its claim has lost
//! it ([`ClaimError::Lost`]) and must stop writing.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{SharedState, StateError, Version};

/// What a claim object holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimBody {
    /// Always `"logbook-node-claim/1"`.
    pub kind: String,
    /// The node id.
    pub node: String,
    /// This process's random id.
    pub incarnation: String,
    /// Host name of the holder.
    pub host: String,
    /// Process id of the holder.
    pub pid: u32,
    /// The holder's data folder (absolute).
    pub data_dir: String,
    /// When it was last renewed (ms since the epoch).
    pub heartbeat_ms: u64,
    /// The holder's journal position (next sequence) at that renewal.
    pub journal_next: u64,
    /// Set by a clean stop.
    pub released: bool,
}

const KIND: &str = "logbook-node-claim/1";

/// Who is asking.
#[derive(Debug, Clone)]
pub struct Claimant {
    /// The node id.
    pub node: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Its data folder (absolute).
    pub data_dir: String,
    /// How long a lease lasts without renewal.
    pub ttl: Duration,
}

/// Why a claim was refused or lost.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// A live replica holds it.
    #[error("node id {node} is in use by a running replica (host {host}, pid {pid}, data folder {data_dir}, last seen {age_s} s ago, in {home}); a copy of a data folder needs its own node id: delete its node-id file, or set a different server.node_id")]
    Live {
        /// The node.
        node: String,
        /// The holder's host.
        host: String,
        /// The holder's pid.
        pid: u32,
        /// The holder's folder.
        data_dir: String,
        /// Seconds since its last renewal.
        age_s: u64,
        /// Where the claim lives.
        home: String,
    },
    /// This folder is behind what the node already wrote.
    #[error("node id {node} already wrote up to journal position {claimed} (in {home}), but this data folder's journal is at {ours}: it is an older copy or a restored backup, and its next objects would replace the node's; give it its own node id (delete its node-id file)")]
    Behind {
        /// The node.
        node: String,
        /// Where the node got to.
        claimed: u64,
        /// Where this folder is.
        ours: u64,
        /// Where the claim lives.
        home: String,
    },
    /// The object is not a claim this build understands.
    #[error("{key} in {home} is not a Logbook node claim ({reason}); it is left as it is and this replica does not start")]
    Foreign {
        /// The object.
        key: String,
        /// Where.
        home: String,
        /// What was wrong with it.
        reason: String,
    },
    /// Someone else took the claim while this replica held it.
    #[error("node id {node} was taken over by another replica (host {host}, pid {pid}); this replica must stop writing")]
    Lost {
        /// The node.
        node: String,
        /// The new holder's host.
        host: String,
        /// The new holder's pid.
        pid: u32,
    },
    /// The store failed (or kept losing races).
    #[error(transparent)]
    State(#[from] StateError),
}

/// The object that holds `node`'s claim.
pub fn key(node: &str) -> String {
    format!("logbook/cluster/nodes/{node}.json")
}

/// A claim held by this process.
#[derive(Debug)]
pub struct Claim {
    key: String,
    body: ClaimBody,
    version: Version,
}

fn parse(key: &str, home: &str, bytes: &[u8]) -> Result<ClaimBody, ClaimError> {
    let foreign = |reason: String| ClaimError::Foreign {
        key: key.to_string(),
        home: home.to_string(),
        reason,
    };
    let body: ClaimBody = serde_json::from_slice(bytes).map_err(|e| foreign(e.to_string()))?;
    if body.kind != KIND {
        return Err(foreign(format!("kind {:?}", body.kind)));
    }
    Ok(body)
}

/// Mark a replica that is gone for good as stopped, on its behalf: its claim is released
/// as a clean stop would (so `logbook coverage` no longer counts it as lost, and the
/// journal position it last wrote still guards the node id against an older copy of its
/// folder). Refused while the claim is live (renewed within `ttl` and not released), and
/// for an object that is not a claim. Returns the claim as it was.
pub async fn release_lost(
    state: &dyn SharedState,
    node: &str,
    ttl: std::time::Duration,
    now_ms: u64,
) -> Result<ClaimBody, String> {
    let key = key(node);
    let home = state.describe();
    let Some((bytes, version)) = state.read(&key).await.map_err(|e| e.to_string())? else {
        return Err(format!("no replica {node:?} has a claim in {home}"));
    };
    let held = parse(&key, &home, &bytes).map_err(|e| e.to_string())?;
    let age = now_ms.saturating_sub(held.heartbeat_ms);
    if !held.released && u128::from(age) < ttl.as_millis() {
        return Err(format!(
            "replica {node:?} is running ({} pid {} {}, renewed {} s ago): stop it, or wait until its claim runs out ({} s)",
            held.host,
            held.pid,
            held.data_dir,
            age / 1000,
            ttl.as_secs()
        ));
    }
    if !held.released {
        let mut next = held.clone();
        next.released = true;
        let body = serde_json::to_vec_pretty(&next).map_err(|e| e.to_string())?;
        state
            .write(&key, bytes::Bytes::from(body), Some(&version))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(held)
}

/// Claim `who.node` for this process, whose journal is at `journal_next`, at `now_ms`.
pub async fn claim(
    state: &dyn SharedState,
    who: &Claimant,
    journal_next: u64,
    now_ms: u64,
) -> Result<Claim, ClaimError> {
    let key = key(&who.node);
    let home = state.describe();
    let body = ClaimBody {
        kind: KIND.into(),
        node: who.node.clone(),
        incarnation: format!("{:016x}", rand::random::<u64>()),
        host: who.host.clone(),
        pid: who.pid,
        data_dir: who.data_dir.clone(),
        heartbeat_ms: now_ms,
        journal_next,
        released: false,
    };
    let encoded = Bytes::from(serde_json::to_vec(&body).map_err(|e| StateError::Io {
        home: home.clone(),
        source: std::io::Error::other(e),
    })?);
    // A lost race means another replica changed the claim in between: look again (it may
    // now be live, and refused).
    for _ in 0..5 {
        let current = state.read(&key).await?;
        let expected = match &current {
            None => None,
            Some((bytes, version)) => {
                let held = parse(&key, &home, bytes)?;
                let age_ms = now_ms.saturating_sub(held.heartbeat_ms);
                let same_folder = held.host == who.host && held.data_dir == who.data_dir;
                if !held.released && !same_folder && u128::from(age_ms) < who.ttl.as_millis() {
                    return Err(ClaimError::Live {
                        node: who.node.clone(),
                        host: held.host,
                        pid: held.pid,
                        data_dir: held.data_dir,
                        age_s: age_ms / 1000,
                        home,
                    });
                }
                if held.journal_next > journal_next {
                    return Err(ClaimError::Behind {
                        node: who.node.clone(),
                        claimed: held.journal_next,
                        ours: journal_next,
                        home,
                    });
                }
                Some(version)
            }
        };
        match state.write(&key, encoded.clone(), expected).await {
            Ok(version) => return Ok(Claim { key, body, version }),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StateError::Conflict { home, key }.into())
}

impl Claim {
    /// What this process wrote last.
    pub fn body(&self) -> &ClaimBody {
        &self.body
    }

    /// Renew the lease with the journal's position. [`ClaimError::Lost`] when another
    /// process took the claim; any other error leaves the lease as it was (retry).
    pub async fn renew(
        &mut self,
        state: &dyn SharedState,
        journal_next: u64,
        now_ms: u64,
    ) -> Result<(), ClaimError> {
        self.write(state, journal_next, now_ms, false).await
    }

    /// Release the claim on a clean stop, so the node (this folder, or its successor)
    /// starts again at once.
    pub async fn release(
        mut self,
        state: &dyn SharedState,
        journal_next: u64,
        now_ms: u64,
    ) -> Result<(), ClaimError> {
        self.write(state, journal_next, now_ms, true).await
    }

    async fn write(
        &mut self,
        state: &dyn SharedState,
        journal_next: u64,
        now_ms: u64,
        released: bool,
    ) -> Result<(), ClaimError> {
        let mut next = self.body.clone();
        next.heartbeat_ms = now_ms;
        next.journal_next = journal_next.max(self.body.journal_next);
        next.released = released;
        let encoded = Bytes::from(serde_json::to_vec(&next).map_err(|e| StateError::Io {
            home: state.describe(),
            source: std::io::Error::other(e),
        })?);
        match state.write(&self.key, encoded, Some(&self.version)).await {
            Ok(v) => {
                self.version = v;
                self.body = next;
                Ok(())
            }
            Err(e) if e.is_conflict() => {
                // Who has it now? (A torn or foreign object counts as lost too.)
                let current = state.read(&self.key).await.ok().flatten();
                let holder = current
                    .as_ref()
                    .and_then(|(b, _)| parse(&self.key, &state.describe(), b).ok());
                if let (Some(h), Some((_, v))) = (&holder, &current) {
                    if h.incarnation == self.body.incarnation {
                        // Our own write landed but its answer was lost (a retried PUT):
                        // not a takeover. Carry on from what is there.
                        self.version = v.clone();
                        self.body = h.clone();
                        return Ok(());
                    }
                }
                Err(ClaimError::Lost {
                    node: self.body.node.clone(),
                    host: holder.as_ref().map(|h| h.host.clone()).unwrap_or_default(),
                    pid: holder.map(|h| h.pid).unwrap_or_default(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// This machine's host name (for claims and messages).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// A replica as the home shows it (for `logbook coverage`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// The node id.
    pub node: String,
    /// Its claim, when it could be read.
    pub claim: Option<ClaimBody>,
    /// The journal position of the store it last published, and when.
    pub published: Option<(u64, u64)>,
    /// What could not be read.
    pub error: Option<String>,
}

/// Every replica that ever claimed a node id in the home, with its claim and the store it
/// published.
pub async fn replicas(home: &logbook_bucket::Bucket) -> Result<Vec<ReplicaStatus>, String> {
    use futures::TryStreamExt as _;
    let prefix = "logbook/cluster/nodes/";
    let listed: Vec<object_store::ObjectMeta> = home
        .store()
        .list(Some(&object_store::path::Path::from(prefix)))
        .try_collect()
        .await
        .map_err(|e| format!("{}: {e}", home.spec().describe()))?;
    let mut out = Vec::new();
    for m in listed {
        let key = m.location.to_string();
        let Some(node) = key
            .strip_prefix(prefix)
            .and_then(|n| n.strip_suffix(".json"))
            .map(String::from)
        else {
            continue;
        };
        let mut r = ReplicaStatus {
            node: node.clone(),
            claim: None,
            published: None,
            error: None,
        };
        match home.get(&key).await {
            Ok(b) => match parse(&key, &home.spec().describe(), &b) {
                Ok(c) => r.claim = Some(c),
                Err(e) => r.error = Some(e.to_string()),
            },
            Err(e) => r.error = Some(e.to_string()),
        }
        let manifest = format!("{}manifest.json", crate::store::node_prefix(&node));
        if let Ok(b) = home.get(&manifest).await {
            if let Ok(p) = serde_json::from_slice::<crate::store::Published>(&b) {
                r.published = Some((p.store.next_seq, p.published_ms));
            }
        }
        out.push(r);
    }
    Ok(out)
}
