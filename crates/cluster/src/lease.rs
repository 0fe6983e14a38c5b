//! Leases: one replica at a time does a job the whole cluster needs done once (evaluating
//! the alarms), chosen through the home.
//!
//! A lease is `logbook/cluster/leases/<job>.json`: its holder (a node id) and when it runs
//! out. [`hold`] takes it when there is none, when it ran out, or when the caller already
//! holds it (a renewal), always by a conditional write, so of two replicas asking at once
//! one wins. A holder renews well before the end ([`Lease::due`]); a holder that dies is
//! replaced within one lease. Clocks of the replicas must agree to well within a lease (as
//! for node-id claims).
//!
//! A lease makes a job run once *almost always*, not *exactly* once: a holder paused past
//! its lease can overlap with its successor for one round. Jobs behind a lease must
//! therefore be safe to run twice (the alarm evaluator is: a state change is itself a
//! conditional write, so a transition is made, and acted on, once).

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{SharedState, StateError, Version};

const KIND: &str = "logbook-lease/1";

/// What a lease object holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseBody {
    /// Always `"logbook-lease/1"`.
    pub kind: String,
    /// The job.
    pub job: String,
    /// The node id holding it.
    pub holder: String,
    /// When it runs out (ms since the epoch).
    pub expires_ms: u64,
}

/// The object a job's lease lives in.
pub fn key(job: &str) -> String {
    format!("logbook/cluster/leases/{job}.json")
}

/// Errors of a lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The home failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The object is not a lease this build can read; it is left alone.
    #[error("{key} in {home} is not a Logbook lease ({why}); it is left as it is, and the job runs nowhere until it is removed")]
    Foreign {
        /// The object.
        key: String,
        /// Where.
        home: String,
        /// What is wrong.
        why: String,
    },
}

/// A replica's view of one job's lease.
#[derive(Debug)]
pub struct Lease {
    job: String,
    node: String,
    ttl: Duration,
    held_until: u64,
}

/// Who holds a job now, as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The node id.
    pub node: String,
    /// When its lease runs out.
    pub expires_ms: u64,
}

impl Lease {
    /// `node`'s lease on `job`, `ttl` long (not held until [`Lease::hold`] says so).
    pub fn new(job: &str, node: &str, ttl: Duration) -> Lease {
        Lease {
            job: job.to_string(),
            node: node.to_string(),
            ttl,
            held_until: 0,
        }
    }

    /// Whether this replica held the lease at `now_ms`, as of its last successful hold.
    pub fn held(&self, now_ms: u64) -> bool {
        now_ms < self.held_until
    }

    /// Whether it is time to renew (or try to take) it: past a third of the lease since
    /// the last successful hold, or not held.
    pub fn due(&self, now_ms: u64) -> bool {
        let ttl = self.ttl.as_millis() as u64;
        now_ms + ttl * 2 / 3 >= self.held_until
    }

    /// Take or renew the lease at `now_ms`. Returns who holds it afterwards (this node
    /// when it won). A lost race is no error: the winner is read and returned.
    pub async fn hold(
        &mut self,
        state: &dyn SharedState,
        now_ms: u64,
    ) -> Result<Holder, LeaseError> {
        let key = key(&self.job);
        for _ in 0..3 {
            let current = state.read(&key).await?;
            let (expected, body) = match &current {
                None => (None, None),
                Some((b, v)) => (Some(v), Some(self.decode(state, &key, b)?)),
            };
            if let Some(b) = &body {
                if b.holder != self.node && b.expires_ms > now_ms {
                    self.held_until = 0;
                    return Ok(Holder {
                        node: b.holder.clone(),
                        expires_ms: b.expires_ms,
                    });
                }
            }
            let expires_ms = now_ms + self.ttl.as_millis() as u64;
            let next = LeaseBody {
                kind: KIND.into(),
                job: self.job.clone(),
                holder: self.node.clone(),
                expires_ms,
            };
            let bytes = serde_json::to_vec(&next).map_err(|e| LeaseError::Foreign {
                key: key.clone(),
                home: state.describe(),
                why: e.to_string(),
            })?;
            match state.write(&key, Bytes::from(bytes), expected).await {
                Ok(_) => {
                    self.held_until = expires_ms;
                    return Ok(Holder {
                        node: self.node.clone(),
                        expires_ms,
                    });
                }
                // Someone else wrote it meanwhile: read again to see who.
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        self.held_until = 0;
        Err(StateError::Conflict {
            home: state.describe(),
            key,
        }
        .into())
    }

    /// Give the lease up (a clean stop) so another replica takes the job at once; only
    /// when this node still holds it.
    pub async fn release(&mut self, state: &dyn SharedState) -> Result<(), LeaseError> {
        let key = key(&self.job);
        self.held_until = 0;
        let Some((b, v)) = state.read(&key).await? else {
            return Ok(());
        };
        let body = self.decode(state, &key, &b)?;
        if body.holder != self.node {
            return Ok(());
        }
        let next = LeaseBody {
            expires_ms: 0,
            ..body
        };
        let bytes = serde_json::to_vec(&next).map_err(|e| LeaseError::Foreign {
            key: key.clone(),
            home: state.describe(),
            why: e.to_string(),
        })?;
        match state.write(&key, Bytes::from(bytes), Some(&v)).await {
            // Taken meanwhile: not ours to release any more.
            Err(e) if e.is_conflict() => Ok(()),
            other => other.map(|_: Version| ()).map_err(Into::into),
        }
    }

    fn decode(
        &self,
        state: &dyn SharedState,
        key: &str,
        b: &[u8],
    ) -> Result<LeaseBody, LeaseError> {
        let foreign = |why: String| LeaseError::Foreign {
            key: key.to_string(),
            home: state.describe(),
            why,
        };
        let body: LeaseBody = serde_json::from_slice(b).map_err(|e| foreign(e.to_string()))?;
        if body.kind != KIND || body.job != self.job {
            return Err(foreign(format!("kind {:?}, job {:?}", body.kind, body.job)));
        }
        Ok(body)
    }
}
