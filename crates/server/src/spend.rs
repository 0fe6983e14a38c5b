//! The budgets' durable state. Every record is charged inside its journal append (in
//! sequence order); every ten seconds the state is written to `control/budgets.json` with the
//! last sequence it covers, and the journal is held from collection below that. At start
//! the file is read and the journal replayed after it, so a kill loses no spend that was
//! journaled. Warning thresholds crossed become `BudgetThresholdCrossed` trail events.

use crate::app::Shared;
use logbook_journal::Disk;
use logbook_journal::Journal;
use logbook_ops::budgets::{Budgets, Crossing, Reported, Snapshot};
use logbook_record::InvocationRecord;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How often the state is written. Each write is two fsyncs on the journal's disk, which
/// the calls' own fdatasyncs wait behind; a crash replays the journal since the last
/// write, so a longer interval costs only a longer replay and journal held from GC.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(10);

/// The holder name of the budgets in journal garbage collection.
pub const GC_NAME: &str = "budgets";

fn file(data_dir: &Path) -> PathBuf {
    data_dir.join("control").join("budgets.json")
}

/// This replica's tie to the shared ledger: its node id, the epoch its spend was last in
/// (`control/ledger-epoch`), its spend from `budgets`, and how the epoch is kept.
pub fn ledger_binding(
    data_dir: &Path,
    node: &str,
    budgets: Arc<Budgets>,
) -> Result<logbook_cluster::ledger::Binding, String> {
    let path = data_dir.join("control").join("ledger-epoch");
    let known_epoch = match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    Ok(logbook_cluster::ledger::Binding {
        node: node.to_string(),
        known_epoch,
        spend: Box::new(move || {
            let (through, accounts) = budgets.spend();
            logbook_cluster::ledger::Spend { through, accounts }
        }),
        keep: Box::new(move |epoch| {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            logbook_journal::RealDisk
                .write_atomic(&path, epoch.as_bytes())
                .map_err(|e| format!("{}: {e}", path.display()))
        }),
    })
}

/// Read the snapshot and replay the journal after it. Returns how many records were
/// replayed.
pub async fn restore(
    data_dir: &Path,
    journal: &Journal,
    budgets: &Arc<Budgets>,
) -> Result<(u64, Vec<Crossing>), String> {
    if budgets.is_empty() {
        return Ok((0, Vec::new()));
    }
    let path = file(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let snap: Snapshot =
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            budgets.restore(&snap);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let first = journal.first_available().map_err(|e| e.to_string())?;
    let from = (budgets.applied_through() + 1).max(first);
    let upto = *journal.committed().borrow();
    let mut reader = journal.reader(from);
    let b = budgets.clone();
    tokio::task::spawn_blocking(move || -> Result<(u64, Vec<Crossing>), String> {
        let mut n = 0;
        let mut crossed = Vec::new();
        while let Some(e) = reader.next_entry(upto).map_err(|e| e.to_string())? {
            if e.kind != logbook_journal::Kind::Record {
                continue;
            }
            if let Ok(r) = serde_json::from_slice::<InvocationRecord>(&e.payload) {
                crossed.extend(b.charge(&r, e.seq));
                n += 1;
            }
        }
        Ok((n, crossed))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Charge the ledger the replicas share with every record the journal holds (the request
/// id makes a record already charged count once). Runs at start, beside serving.
pub async fn replay_shared(
    journal: Journal,
    budgets: Arc<Budgets>,
    ledger: Arc<logbook_cluster::ledger::Ledger>,
    crossings: Arc<std::sync::Mutex<Vec<Crossing>>>,
) {
    let first = match journal.first_available() {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "shared budget ledger: journal not replayed");
            return;
        }
    };
    let upto = *journal.committed().borrow();
    let mut reader = journal.reader(first);
    let b = budgets.clone();
    let charges = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        while let Ok(Some(e)) = reader.next_entry(upto) {
            if e.kind != logbook_journal::Kind::Record {
                continue;
            }
            if let Ok(r) = serde_json::from_slice::<InvocationRecord>(&e.payload) {
                if let Some((cost, accounts)) = b.accounts_for_record(&r) {
                    out.push((r.request_id, e.seq, cost, accounts));
                }
            }
        }
        out
    })
    .await
    .unwrap_or_default();
    let (mut added, total) = (0u64, charges.len());
    for (id, seq, cost, accounts) in charges {
        match charge_shared(&ledger, &budgets, &id, seq, &accounts, cost).await {
            Ok((true, crossed)) => {
                added += 1;
                crossings
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(crossed);
            }
            Ok((false, _)) => {}
            Err(e) => {
                tracing::error!(error = %e, "shared budget ledger: replay stopped (the next start tries again)");
                return;
            }
        }
    }
    tracing::info!(
        records = total,
        charged_now = added,
        "shared budget ledger replayed from the journal"
    );
}

/// Charge a record's cost (`accounts` from `Budgets::accounts_for_record`) to the ledger
/// the replicas share, watching the budgets' warning thresholds there: whether it was
/// added now, and the thresholds it crossed for the whole cluster (each is crossed by one
/// charge of one replica, so it is reported once).
pub async fn charge_shared(
    ledger: &logbook_cluster::ledger::Ledger,
    budgets: &Budgets,
    request_id: &str,
    seq: u64,
    accounts: &[(String, i64)],
    cost: i128,
) -> Result<(bool, Vec<Crossing>), logbook_cluster::ledger::LedgerError> {
    let watched: Vec<(i128, Vec<(u8, i128)>)> = accounts
        .iter()
        .map(|(name, _)| budgets.thresholds(name).unwrap_or_default())
        .collect();
    let amounts: Vec<Vec<i128>> = watched
        .iter()
        .map(|(_, at)| at.iter().map(|(_, t)| *t).collect())
        .collect();
    let charged = ledger
        .charge_watching(request_id, seq, accounts, cost, &amounts)
        .await?;
    let crossed = charged
        .crossed
        .iter()
        .filter_map(|c| {
            let (name, start) = accounts.get(c.account)?;
            let (limit, at) = watched.get(c.account)?;
            let (percent, _) = at.get(c.threshold)?;
            Some(Crossing {
                name: name.clone(),
                percent: *percent,
                spent: logbook_ops::budgets::usd(c.spent),
                limit: logbook_ops::budgets::usd(*limit),
                period_start: *start,
            })
        })
        .collect();
    Ok((charged.added, crossed))
}

/// Write the state when it changed, hold the journal at it, and turn crossed thresholds
/// into trail events: crossings once a second, the state every [`SNAPSHOT_EVERY`], and a
/// last time when `stop` turns true.
pub async fn run(s: Shared, budgets: Arc<Budgets>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let path = file(&s.config.data_dir);
    let mut reported: Reported = budgets.reported();
    let mut written = std::time::Instant::now();
    loop {
        let stopping = *stop.borrow();
        // Events first, then the state that says they were reported.
        for c in s.recorder.take_crossings() {
            tracing::warn!(budget = %c.name, percent = c.percent, spent = %c.spent, limit = %c.limit, "budget threshold crossed");
            let ev = crate::app::service_event(
                &s,
                "BudgetThresholdCrossed",
                serde_json::json!({"budget": c.name, "thresholdPercent": c.percent, "spentUsd": c.spent, "limitUsd": c.limit}),
                None,
            );
            let actions = budgets.actions(&c.name);
            if !actions.is_empty() {
                s.alarms.notify(
                    &format!("budget:{}", c.name),
                    &actions,
                    &format!("Budget \"{}\" passed {}%: {} of {} USD", c.name, c.percent, c.spent, c.limit),
                    serde_json::json!({"BudgetName": c.name, "ThresholdPercent": c.percent, "SpentUsd": c.spent, "LimitUsd": c.limit, "AWSAccountId": s.config.account_id}),
                );
            }
            match s.recorder.commit_event(ev).await {
                Ok(_) => {
                    let e = reported
                        .entry(c.name.clone())
                        .or_insert((c.period_start, 0));
                    if e.0 != c.period_start {
                        *e = (c.period_start, 0);
                    }
                    e.1 = e.1.max(c.percent);
                }
                Err(e) => tracing::error!(error = %e, "budget threshold event not recorded"),
            }
        }
        // A shared ledger that lost its data is rebuilt at the next admission or charge;
        // this finds it for a replica that has neither (its spend would be missing).
        if let Some(ledger) = s.recorder.ledger() {
            if let Err(e) = ledger.check().await {
                tracing::debug!(error = %e, "shared budget ledger not checked");
            }
        }
        let due = stopping || written.elapsed() >= SNAPSHOT_EVERY;
        if let Some(snap) = due.then(|| budgets.snapshot_if_dirty(&reported)).flatten() {
            written = std::time::Instant::now();
            let through = snap.applied_through;
            let bytes = serde_json::to_vec_pretty(&snap).unwrap_or_default();
            let p = path.clone();
            let written = tokio::task::spawn_blocking(move || {
                logbook_journal::RealDisk.write_atomic(&p, &bytes)
            })
            .await;
            match written {
                Ok(Ok(())) => {
                    s.gc.set(GC_NAME, through + 1);
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "budget state not written; the journal keeps the records it covers")
                }
                Err(e) => tracing::error!(error = %e, "budget state writer failed"),
            }
        }
        if stopping {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => {}
        }
    }
}
