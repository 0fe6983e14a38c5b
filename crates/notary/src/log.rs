//! [`Notary`]: the state of one log as a delivery format fills it. No I/O: the format asks
//! it for a leaf index per line and reports each object it produced; the destination
//! persists [`Notary::state`] after the objects are durable and before it moves its cursor,
//! and writes the checkpoints [`Notary::checkpoint`] returns.
//!
//! Two copies of the state: `working` (what the batch being built added) and `committed`
//! (what is durable); a failed write goes back to `committed`, so a re-delivered batch
//! gets the same leaf indices again.

use crate::checkpoint::{runs, time_text, Checkpoint, ObjectEntry, Previous, VERSION};
use crate::keys::SigningKey;
use crate::merkle::{leaf_hash, Frontier};
use crate::NotaryError;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// A checkpoint is written early once this many objects wait for one.
pub const MAX_PENDING: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Last {
    tree_size: u64,
    root_hash: String,
    time_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct LogState {
    frontier: Frontier,
    since_ms: u64,
    last_entry_ms: u64,
    pending: Vec<ObjectEntry>,
    last: Option<Last>,
}

/// What [`Notary::state`] writes.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StateFile {
    version: u32,
    log: String,
    node: String,
    position: u64,
    tree_size: u64,
    frontier: Vec<String>,
    since_ms: u64,
    last_entry_ms: u64,
    pending: Vec<ObjectEntry>,
    last: Option<Last>,
}

/// One log's Merkle tree and checkpoints.
pub struct Notary {
    log: String,
    node: String,
    key: Arc<SigningKey>,
    every: Duration,
    working: LogState,
    committed: LogState,
}

impl std::fmt::Debug for Notary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Notary({}/{}, {} leaves)",
            self.node,
            self.log,
            self.working.frontier.size()
        )
    }
}

impl Notary {
    /// A new, empty log `log` of `node`, begun at `now_ms`, checkpointed at least `every`.
    pub fn new(log: &str, node: &str, key: Arc<SigningKey>, every: Duration, now_ms: u64) -> Self {
        let s = LogState {
            since_ms: now_ms,
            ..LogState::default()
        };
        Notary {
            log: log.into(),
            node: node.into(),
            key,
            every,
            working: s.clone(),
            committed: s,
        }
    }

    /// The log's name.
    pub fn log(&self) -> &str {
        &self.log
    }

    /// Add a line (its exact bytes, no newline) appended at journal time `time_ms`;
    /// returns its leaf index.
    pub fn leaf(&mut self, line: &[u8], time_ms: u64) -> u64 {
        self.working.last_entry_ms = self.working.last_entry_ms.max(time_ms);
        self.working.frontier.push(leaf_hash(line))
    }

    /// An object was produced: its key, its bytes as they will be stored, and the leaf
    /// indices of its lines in order (none for an offloaded body).
    pub fn object(&mut self, key: String, bytes: &[u8], indices: &[u64]) {
        self.working.pending.push(ObjectEntry {
            key,
            sha256: hex::encode(Sha256::digest(bytes)),
            leaves: runs(indices),
        });
    }

    /// The working state, to be stored with the journal position `position` it reaches.
    pub fn state(&self, position: u64) -> Vec<u8> {
        let s = &self.working;
        let f = StateFile {
            version: VERSION,
            log: self.log.clone(),
            node: self.node.clone(),
            position,
            tree_size: s.frontier.size(),
            frontier: s.frontier.nodes().iter().map(hex::encode).collect(),
            since_ms: s.since_ms,
            last_entry_ms: s.last_entry_ms,
            pending: s.pending.clone(),
            last: s.last.clone(),
        };
        serde_json::to_vec(&f).unwrap_or_default()
    }

    /// Take up a stored state; returns the journal position it reached.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<u64, NotaryError> {
        let f: StateFile = serde_json::from_slice(bytes)
            .map_err(|e| NotaryError::State(format!("unreadable: {e}")))?;
        if f.version != VERSION {
            return Err(NotaryError::State(format!(
                "format version {} is not one this build reads",
                f.version
            )));
        }
        if f.log != self.log || f.node != self.node {
            return Err(NotaryError::State(format!(
                "it is the state of {}/{}, not {}/{}",
                f.node, f.log, self.node, self.log
            )));
        }
        let nodes = f
            .frontier
            .iter()
            .map(|h| crate::checkpoint::parse_hash(h))
            .collect::<Result<Vec<_>, _>>()?;
        let frontier = Frontier::from_parts(f.tree_size, nodes)
            .ok_or_else(|| NotaryError::State("its frontier does not match its size".into()))?;
        self.committed = LogState {
            frontier,
            since_ms: f.since_ms,
            last_entry_ms: f.last_entry_ms,
            pending: f.pending,
            last: f.last,
        };
        self.working = self.committed.clone();
        Ok(f.position)
    }

    /// The working state is durable.
    pub fn commit(&mut self) {
        self.committed = self.working.clone();
    }

    /// Forget what was added since the last [`Notary::commit`].
    pub fn reset(&mut self) {
        self.working = self.committed.clone();
    }

    /// How long until a checkpoint is due.
    pub fn due_in(&self, now_ms: u64) -> Duration {
        let last = self
            .working
            .last
            .as_ref()
            .map_or(self.working.since_ms, |l| l.time_ms);
        let due = last.saturating_add(self.every.as_millis() as u64);
        Duration::from_millis(due.saturating_sub(now_ms))
    }

    /// Leaves in the working tree.
    pub fn size(&self) -> u64 {
        self.working.frontier.size()
    }

    /// A signed checkpoint (its key and bytes) when one is due (`every` since the last one,
    /// or [`MAX_PENDING`] objects waiting), or at once with `force`; it is applied to the
    /// working state (the objects it lists are no longer pending).
    pub fn checkpoint(&mut self, now_ms: u64, force: bool) -> Option<(String, Vec<u8>)> {
        let due =
            force || self.working.pending.len() >= MAX_PENDING || self.due_in(now_ms).is_zero();
        if !due {
            return None;
        }
        let s = &mut self.working;
        // Strictly after the last one, whatever the clock says.
        let now_ms = s
            .last
            .as_ref()
            .map_or(now_ms, |l| now_ms.max(l.time_ms + 1));
        let size = s.frontier.size();
        let root = hex::encode(s.frontier.root());
        let time = time_text(now_ms);
        let previous = s.last.as_ref().map(|l| Previous {
            tree_size: l.tree_size,
            root_hash: l.root_hash.clone(),
        });
        let mut c = Checkpoint {
            logbook_checkpoint_version: VERSION,
            log: self.log.clone(),
            node: self.node.clone(),
            tree_size: size,
            root_hash: root.clone(),
            time,
            time_ms: now_ms,
            since_ms: s.since_ms,
            last_entry_ms: s.last_entry_ms,
            previous,
            every_ms: self.every.as_millis() as u64,
            objects: std::mem::take(&mut s.pending),
            key_id: String::new(),
            signature: String::new(),
        };
        c.sign(&self.key);
        s.last = Some(Last {
            tree_size: size,
            root_hash: root,
            time_ms: now_ms,
        });
        let key = crate::checkpoint::checkpoint_key(&c);
        Some((key, c.to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Arc<SigningKey> {
        Arc::new(SigningKey::from_pem(&SigningKey::generate_pem().unwrap()).unwrap())
    }

    #[test]
    fn reset_goes_back_to_the_committed_tree_and_restore_resumes_it() {
        let mut n = Notary::new("records", "n", key(), Duration::from_secs(60), 1000);
        assert_eq!(n.leaf(b"a", 1), 0);
        n.object("k1".into(), b"x", &[0]);
        n.commit();
        assert_eq!(n.leaf(b"b", 2), 1);
        n.reset();
        assert_eq!(
            n.leaf(b"b", 2),
            1,
            "the same index again after a failed write"
        );
        n.object("k2".into(), b"y", &[1]);
        let state = n.state(7);
        let mut m = Notary::new("records", "n", n.key.clone(), Duration::from_secs(60), 5);
        assert_eq!(m.restore(&state).unwrap(), 7);
        assert_eq!(m.size(), 2);
        assert_eq!(m.working.pending.len(), 2);
        let mut other = Notary::new("trail", "n", n.key.clone(), Duration::from_secs(60), 5);
        assert!(other
            .restore(&state)
            .unwrap_err()
            .to_string()
            .contains("not n/trail"));
        assert!(m.restore(b"{").is_err());
    }

    #[test]
    fn checkpoints_are_due_by_time_or_backlog_and_chain() {
        let k = key();
        let mut n = Notary::new("records", "n", k.clone(), Duration::from_secs(60), 1000);
        n.leaf(b"a", 1);
        n.object("k1".into(), b"x", &[0]);
        assert!(n.checkpoint(30_000, false).is_none());
        assert_eq!(n.due_in(31_000), Duration::from_secs(30));
        let (key1, b1) = n.checkpoint(61_000, false).unwrap();
        let c1: Checkpoint = serde_json::from_slice(&b1).unwrap();
        c1.verify(&[k.public()]).unwrap();
        assert_eq!(
            (c1.tree_size, c1.objects.len(), c1.previous.clone()),
            (1, 1, None)
        );
        assert!(key1.starts_with("LogbookCheckpoints/n/records/00000000000000000001_"));
        // Idle: the same tree again, nothing listed, chained to the one before.
        let (_, b2) = n.checkpoint(200_000, false).unwrap();
        let c2: Checkpoint = serde_json::from_slice(&b2).unwrap();
        assert_eq!((c2.tree_size, c2.objects.len()), (1, 0));
        assert_eq!(c2.previous.unwrap().root_hash, c1.root_hash);
        for i in 0..MAX_PENDING as u64 {
            let j = n.leaf(b"z", 3);
            n.object(format!("o{i}"), b"z", &[j]);
        }
        assert!(
            n.checkpoint(200_001, false).is_some(),
            "a backlog forces one"
        );
        assert!(n.checkpoint(200_002, true).is_some(), "force always writes");
    }
}
