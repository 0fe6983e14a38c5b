//! Joining the replicas of a home bucket (`[cluster]`): prove the bucket's conditional
//! writes, claim this node id there before anything is written to any bucket, renew the
//! claim while serving, release it on a clean stop (see `logbook_cluster`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use logbook_cluster::claim::{self, Claim, ClaimError, Claimant};
use logbook_cluster::SharedState;
use logbook_journal::Journal;
use tokio::sync::watch;

use crate::app::ServeError;
use crate::config::ClusterConfig;

/// What `/healthz` says about the claim.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimHealth {
    /// Where the replicas meet.
    pub home: String,
    /// The claimed node id.
    pub node: String,
    /// Last successful renewal (ms since the epoch).
    pub renewed_ms: u64,
    /// Renewals that failed in a row (the lease keeps running meanwhile).
    pub failed_renewals: u64,
    /// The last renewal error.
    pub last_error: Option<String>,
    /// Set when another process took the claim: this one stops writing.
    pub lost: bool,
}

/// A replica that joined its home.
pub struct Member {
    home: logbook_bucket::Bucket,
    state: Arc<dyn SharedState>,
    claim: Claim,
    ttl: Duration,
    health: Arc<Mutex<ClaimHealth>>,
}

fn now_ms() -> u64 {
    logbook_delivery::now_ms()
}

/// Check the home bucket and claim `node` (with the journal's position).
pub async fn join(
    cfg: &ClusterConfig,
    home: &logbook_bucket::Bucket,
    node: &str,
    data_dir: &std::path::Path,
    journal: &Journal,
) -> Result<Member, ServeError> {
    let state = logbook_cluster::for_bucket(home);
    let refuse = |m: String| ServeError::Config(format!("cluster home {}: {m}", cfg.home));
    logbook_cluster::check_conditional_writes(&*state)
        .await
        .map_err(|e| refuse(e.to_string()))?;
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let who = Claimant {
        node: node.to_string(),
        host: claim::host_name(),
        pid: std::process::id(),
        data_dir: dir.display().to_string(),
        ttl: cfg.claim_ttl,
    };
    let position = *journal.committed().borrow();
    let held = claim::claim(&*state, &who, position, now_ms())
        .await
        .map_err(|e| refuse(e.to_string()))?;
    tracing::info!(home = %cfg.home, node, position, "node id claimed in the cluster home");
    let health = ClaimHealth {
        home: cfg.home.clone(),
        node: node.to_string(),
        renewed_ms: held.body().heartbeat_ms,
        ..ClaimHealth::default()
    };
    Ok(Member {
        home: home.clone(),
        state,
        claim: held,
        ttl: cfg.claim_ttl,
        health: Arc::new(Mutex::new(health)),
    })
}

impl Member {
    /// The home bucket.
    pub fn home(&self) -> &logbook_bucket::Bucket {
        &self.home
    }

    /// The home's shared state (for what the replicas share besides the claim).
    pub fn state(&self) -> Arc<dyn SharedState> {
        self.state.clone()
    }

    /// The claim's health, shared with `/healthz`.
    pub fn health(&self) -> Arc<Mutex<ClaimHealth>> {
        self.health.clone()
    }

    /// Renew every `ttl / 3` until `stop`; then release the claim (a clean stop). When
    /// another process took the claim, set `lost` and return at once without releasing:
    /// the caller must stop writing.
    pub async fn run(
        mut self,
        journal: Journal,
        mut stop: watch::Receiver<bool>,
        lost: watch::Sender<bool>,
    ) {
        let every = self.ttl / 3;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => break,
            }
            let position = *journal.committed().borrow();
            let result = self.claim.renew(&*self.state, position, now_ms()).await;
            let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
            match result {
                Ok(()) => {
                    h.renewed_ms = self.claim.body().heartbeat_ms;
                    h.failed_renewals = 0;
                    h.last_error = None;
                }
                Err(e @ ClaimError::Lost { .. }) => {
                    h.lost = true;
                    h.last_error = Some(e.to_string());
                    tracing::error!(error = %e, "node-id claim lost: stopping");
                    let _ = lost.send(true);
                    return;
                }
                Err(e) => {
                    h.failed_renewals += 1;
                    h.last_error = Some(e.to_string());
                    tracing::warn!(error = %e, failed = h.failed_renewals, "node-id claim not renewed (retrying)");
                }
            }
        }
        let position = *journal.committed().borrow();
        match self.claim.release(&*self.state, position, now_ms()).await {
            Ok(()) => tracing::info!("node-id claim released"),
            // Not fatal: the lease runs out by itself.
            Err(e) => {
                tracing::warn!(error = %e, "node-id claim not released; it expires after its lease")
            }
        }
    }
}

/// Re-read what the replicas share every `every` until `stop` (changes by other replicas
/// are in force here within one interval).
pub async fn refresh(
    logging: Arc<crate::control::LoggingConfigs>,
    groups: Option<Arc<crate::shared_groups::SharedGroups>>,
    budgets: Option<(
        Arc<crate::shared_budgets::SharedBudgets>,
        Arc<logbook_ops::budgets::Budgets>,
    )>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        // Errors are reported by each `refresh` itself, once per message.
        if let Ok(true) = logging.refresh().await {
            tracing::info!("logging configuration changed by another replica");
        }
        if let Some(g) = &groups {
            if let Ok(true) = g.refresh().await {
                tracing::info!("log groups changed by another replica");
            }
        }
        if let Some((shared, budgets)) = &budgets {
            if let Ok(Some(specs)) = shared.refresh().await {
                let n = specs.len();
                budgets.replace(specs);
                tracing::info!(budgets = n, "budgets changed by another replica");
            }
        }
    }
}

/// What `logbook forget-replica` did.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Forgotten {
    /// The node.
    pub node: String,
    /// Where it ran last (host, pid, data folder).
    pub last_holder: String,
    /// Its claim was already released (a clean stop) before.
    pub was_released: bool,
    /// Budgets only it declared, now gone from the cluster.
    pub budgets_gone: Vec<String>,
    /// Declared alarms only it declared, now gone from the cluster.
    pub alarms_gone: Vec<String>,
}

/// A replica gone for good (crashed, machine lost, decommissioned without a clean stop):
/// its claim is released on its behalf (refused while it is live), and it no longer
/// declares budgets or alarms in the home. Its published records stay where they are:
/// the other replicas go on querying them.
pub async fn forget(
    home: &logbook_bucket::Bucket,
    node: &str,
    ttl: Duration,
    now_ms: u64,
) -> Result<Forgotten, String> {
    let state = logbook_cluster::for_bucket(home);
    let held = logbook_cluster::claim::release_lost(&*state, node, ttl, now_ms).await?;
    let budgets_gone = crate::shared_budgets::SharedBudgets::forget(&*state, node).await?;
    let alarms_gone = crate::alarms::forget_declarer(&*state, node).await?;
    Ok(Forgotten {
        node: node.to_string(),
        last_holder: format!("{} pid {} {}", held.host, held.pid, held.data_dir),
        was_released: held.released,
        budgets_gone,
        alarms_gone,
    })
}
