//! The journal's disk budget (`[journal] max_bytes`).
//!
//! A destination that stays down keeps its undelivered entries in the journal, and the
//! journal grows. When its segments exceed the budget:
//!
//! * **fail-closed** (the default): new model calls are refused with Bedrock's
//!   `ServiceUnavailableException` (OpenAI: 503) naming the destinations that hold the
//!   oldest segment; nothing is lost; calls resume when they catch up.
//! * **fail-open**: calls are served, and the oldest segments go anyway: first a
//!   `DeliveryLoss` trail event per destination that had not delivered them (with the
//!   sequence range and the count), durable, then the floor rises and the segments are
//!   deleted. The counts are on `/healthz` (`lost`). Never a silent drop. The log group
//!   store and open streams are never skipped this way.

use crate::app::Shared;
use crate::config::OnFailure;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What `/healthz` shows of the budget.
#[derive(Debug, Default)]
pub struct BudgetStatus {
    /// Bytes of journal segments on disk, as last measured.
    pub bytes: AtomicU64,
    /// Are calls being refused because of the budget?
    pub refusing: AtomicBool,
    /// Entries given up on because of the budget, all destinations together.
    pub lost: AtomicU64,
}

/// Cursor names that are never skipped: the embedded store (local, so behind only when
/// its own disk fails) and the start entries of open streams.
const PROTECTED: [&str; 2] = ["store", "open-streams"];

/// One check of the budget; called every second.
pub(crate) async fn enforce(s: &Shared) {
    let journal = s.journal.clone();
    let segs = match tokio::task::spawn_blocking(move || journal.segments()).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not measure the journal");
            return;
        }
        Err(_) => return,
    };
    let total: u64 = segs.iter().map(|(_, b)| b).sum();
    let max = s.config.journal_max_bytes;
    s.budget.bytes.store(total, Ordering::Relaxed);
    if total <= max {
        if s.budget.refusing.swap(false, Ordering::Relaxed) {
            s.recorder.set_over_budget(None);
            tracing::warn!(
                bytes = total,
                max_bytes = max,
                "the journal is back within its disk budget; calls are served again"
            );
            let ev = crate::app::service_event(
                s,
                "JournalBudgetRecovered",
                serde_json::json!({"journalBytes": total, "maxBytes": max}),
                None,
            );
            if let Err(e) = s.recorder.commit_event(ev).await {
                tracing::error!(error = %e, "could not record the budget's recovery in the trail");
            }
        }
        return;
    }
    let cursors = s.gc.cursors();
    // Entries below this are only in the oldest segment.
    let second = segs.get(1).map_or(u64::MAX, |(f, _)| *f);
    let holders: Vec<(String, u64)> = cursors
        .iter()
        .filter(|(_, c)| *c < second)
        .cloned()
        .collect();
    let describe = |name: &str| -> String {
        let display = |d: &str| {
            if d == logbook_store::ingest::NAME {
                "the log group store".to_string()
            } else {
                d.to_string()
            }
        };
        match s.sinks().find(|(_, d)| d.name() == name) {
            Some((shown, d)) => match d.last_error() {
                Some(e) => format!(
                    "{} (last error: {})",
                    display(shown),
                    e.chars().take(200).collect::<String>()
                ),
                None => display(shown),
            },
            None => display(name),
        }
    };
    match s.config.on_failure {
        OnFailure::FailClosed => {
            let names: Vec<String> = holders.iter().map(|(n, _)| describe(n)).collect();
            let reason = format!(
                "Logbook is refusing calls: its journal holds {total} bytes, over its budget of {max} (journal.max_bytes), because {} has not delivered the oldest records. Calls are served again when delivery catches up.",
                if names.is_empty() { "a destination".to_string() } else { names.join(", ") }
            );
            s.recorder.set_over_budget(Some(reason.clone()));
            if !s.budget.refusing.swap(true, Ordering::Relaxed) {
                tracing::error!(bytes = total, max_bytes = max, "{reason}");
                let ev = crate::app::service_event(
                    s,
                    "JournalBudgetExhausted",
                    serde_json::json!({"journalBytes": total, "maxBytes": max,
                        "destinations": holders.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()}),
                    Some(("JournalBudgetExhausted", Some(reason))),
                );
                if let Err(e) = s.recorder.commit_event(ev).await {
                    tracing::error!(error = %e, "could not record the exhausted budget in the trail");
                }
            }
        }
        OnFailure::FailOpen => {
            // Drop the oldest sealed segments (never the one being written) until the
            // journal is at three quarters of its budget.
            let target = max / 4 * 3;
            let mut remaining = total;
            let mut floor = 0;
            for w in segs.windows(2) {
                if remaining <= target {
                    break;
                }
                remaining -= w[0].1;
                floor = w[1].0;
            }
            let protected = cursors
                .iter()
                .filter(|(n, _)| PROTECTED.contains(&n.as_str()))
                .map(|(_, c)| *c)
                .min()
                .unwrap_or(u64::MAX);
            let floor = floor.min(protected);
            if floor <= s.gc.floor() {
                return;
            }
            // The loss is on record before anything is deleted.
            for (name, c) in cursors
                .iter()
                .filter(|(n, c)| *c < floor && !PROTECTED.contains(&n.as_str()))
            {
                let n = floor - c;
                let who = describe(name);
                let ev = crate::app::service_event(
                    s,
                    "DeliveryLoss",
                    serde_json::json!({"destination": name, "fromSequence": c, "toSequence": floor,
                        "entries": n, "journalBytes": total, "maxBytes": max}),
                    Some(("DeliveryLoss", Some(format!(
                        "the journal's disk budget ({max} bytes, journal.max_bytes) ran out while {who} was not delivering; its entries {c}..{floor} were given up (on_failure = fail-open)"
                    )))),
                );
                if let Err(e) = s.recorder.commit_event(ev).await {
                    tracing::error!(error = %e, "could not record a delivery loss in the trail; keeping the segments");
                    return;
                }
                if let Some((_, d)) = s.sinks().find(|(_, d)| d.name() == name) {
                    d.lost.fetch_add(n, Ordering::Relaxed);
                }
                s.budget.lost.fetch_add(n, Ordering::Relaxed);
                tracing::error!(destination = %who, from = c, to = floor, entries = n, "journal disk budget exhausted (fail-open): entries given up for this destination");
            }
            s.gc.raise_floor(floor);
            let journal = s.journal.clone();
            match tokio::task::spawn_blocking(move || journal.collect_garbage(floor)).await {
                Ok(Err(e)) => tracing::warn!(error = %e, "journal garbage collection failed"),
                Err(e) => tracing::warn!(error = %e, "journal garbage collection task failed"),
                Ok(Ok(_)) => {}
            }
        }
    }
}
