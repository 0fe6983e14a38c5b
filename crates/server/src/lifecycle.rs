//! Lifecycle passes for local buckets (`lifecycle = { ... }` in `[[buckets]]`): the rule
//! and its steps are in `logbook_bucket::lifecycle`; this task runs a pass at start and
//! then once per interval, and writes each step to the trail before it acts.

use crate::app::{service_event, Shared};
use logbook_bucket::lifecycle::{self, Action, Rule, Stats};
use logbook_bucket::{Bucket, BucketError};
use std::time::SystemTime;

/// Objects one trail event lists, and one step moves or deletes: every object acted on
/// is named in the trail.
pub const STEP: usize = 1000;

/// Run `bucket`'s rule until the server stops (the task is aborted then; a pass cut
/// short is safe).
pub async fn run(s: Shared, bucket: String) {
    let (Some(rule), Some(stats), Some(hot)) = (
        s.config.lifecycle.get(&bucket).cloned(),
        s.lifecycle.get(&bucket).cloned(),
        s.buckets.get(&bucket).cloned(),
    ) else {
        return;
    };
    let cold = rule
        .transition_to
        .as_ref()
        .and_then(|c| s.buckets.get(c).cloned());
    let mut tick = tokio::time::interval(rule.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let r = pass(&s, &bucket, &hot, cold.as_ref(), &rule, &stats).await;
        if let Err(e) = &r {
            tracing::error!(bucket = %bucket, error = %e, "a lifecycle pass failed; the next one starts again");
        }
        stats.finished(&r);
    }
}

async fn pass(
    s: &Shared,
    name: &str,
    hot: &Bucket,
    cold: Option<&Bucket>,
    rule: &Rule,
    stats: &Stats,
) -> Result<(), BucketError> {
    let hot_list = lifecycle::list(hot).await?;
    let cold_list = match cold {
        Some(c) if rule.expire_after.is_some() => lifecycle::list(c).await?,
        _ => Vec::new(),
    };
    let actions = lifecycle::plan(rule, &hot_list, &cold_list, SystemTime::now());
    for step in actions.chunks(STEP) {
        // The trail first: what is about to move or go, durably, before it does.
        for (event, pick) in [
            (
                "LifecycleTransition",
                Action::is_transition as fn(&Action) -> bool,
            ),
            ("LifecycleExpiration", |a: &Action| !a.is_transition()),
        ] {
            let these: Vec<&Action> = step.iter().filter(|a| pick(a)).collect();
            if these.is_empty() {
                continue;
            }
            let keys: Vec<serde_json::Value> = these
                .iter()
                .map(|a| match a {
                    Action::ExpireCold(o) => {
                        serde_json::json!({"bucket": rule.transition_to, "key": o.key})
                    }
                    other => serde_json::json!(other.object().key),
                })
                .collect();
            let ev = service_event(
                s,
                event,
                serde_json::json!({
                    "bucket": name,
                    "transitionTo": rule.transition_to,
                    "objects": these.len(),
                    "bytes": these.iter().map(|a| a.object().size).sum::<u64>(),
                    "keys": keys,
                }),
                None,
            );
            s.recorder
                .commit_event(ev)
                .await
                .map_err(|e| BucketError::Io {
                    bucket: name.to_string(),
                    source: std::io::Error::other(format!(
                        "the trail could not record the lifecycle step, so nothing was changed: {e}"
                    )),
                })?;
        }
        lifecycle::apply(hot, cold, step, stats).await?;
    }
    Ok(())
}
