//! The chargeback report ([`crate::report`]) answered from the store files' rollups where
//! they fit, and by its SQL over the rest: the same rows and totals to the digit, without
//! reading every record of a long period.
//!
//! A file's rollup answers for it when the file lies wholly inside the range and:
//! - the report has no dimension: its 15-minute buckets are cut into local periods (no
//!   zone's offset splits a bucket);
//! - the report is by `model`, `principal` or `team` alone: the file lies within one local
//!   period (a day file in UTC always does; one that straddles a local midnight or month
//!   is scanned) and its rollup names every value (no `(other)`).
//!
//! Anything else (several dimensions, tags or metadata keys other than `team`, the FOCUS
//! export) is the SQL alone, as before.

use crate::report::{format_scaled, Chargeback, Dimension, Period, Report, Row};
use crate::{Engine, QueryError, QueryResult, QueryStats};
use chrono::{Datelike, TimeZone};
use logbook_store::rollup::{self, Sums};
use logbook_store::schema::scaled_decimal;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

/// Which rollup dimension answers a report, if one does: `Some(None)` for no dimension.
fn rollup_dimension(by: &[Dimension]) -> Option<Option<&'static str>> {
    match by {
        [] => Some(None),
        [Dimension::Model] => Some(Some("model")),
        [Dimension::Principal] => Some(Some("principal")),
        [Dimension::Key(k)] if k == "team" => Some(Some("team")),
        _ => None,
    }
}

/// The local period an instant falls in, as the report's SQL writes it.
fn period_of(ms: i64, tz: chrono_tz::Tz, p: Period) -> Option<String> {
    let t = tz.timestamp_millis_opt(ms).single()?;
    let d = t.date_naive();
    Some(match p {
        Period::Day => d.format("%Y-%m-%d").to_string(),
        Period::Week => (d - chrono::Days::new(u64::from(d.weekday().num_days_from_monday())))
            .format("%Y-%m-%d")
            .to_string(),
        Period::Month => d.format("%Y-%m").to_string(),
    })
}

/// Where a report's rows came from.
#[derive(Debug, Clone, Default)]
pub struct ChargebackSources {
    /// Files answered from their rollups.
    pub files_from_rollups: u64,
    /// Files (and the tail) read by the SQL.
    pub stats: QueryStats,
}

impl Engine {
    /// The chargeback report of `groups` over `[start, end]` (see the module documentation).
    pub async fn chargeback(
        &self,
        spec: &Chargeback,
        groups: &[String],
        start: i64,
        end: i64,
    ) -> Result<(Report, ChargebackSources), QueryError> {
        self.chargeback_in(spec, groups, start, end, 0, self.runtime.clone())
            .await
    }

    /// [`Engine::chargeback`] in the given runtime, after ingest reached `after_seq`.
    pub async fn chargeback_in(
        &self,
        spec: &Chargeback,
        groups: &[String],
        start: i64,
        end: i64,
        after_seq: u64,
        env: std::sync::Arc<datafusion::execution::runtime_env::RuntimeEnv>,
    ) -> Result<(Report, ChargebackSources), QueryError> {
        let sql = spec.sql()?;
        if groups.is_empty() {
            return Err(QueryError::Invalid("name at least one log group".into()));
        }
        self.wait_for_ingest(after_seq).await;
        let tz: chrono_tz::Tz = spec
            .tz
            .parse()
            .map_err(|_| QueryError::Invalid(format!("time zone {:?}", spec.tz)))?;
        let dim = rollup_dimension(&spec.by);
        let mut from_rollups: BTreeMap<(String, Vec<String>), Sums> = BTreeMap::new();
        let mut sources = ChargebackSources::default();
        let ctx = self.context(env);
        let mut fields = std::collections::BTreeSet::new();
        let mut table: Option<datafusion::prelude::DataFrame> = None;
        for g in groups {
            let mut snap = self.snapshot(g, start, end)?;
            let lo = start.max(snap.retention_cutoff.unwrap_or(i64::MIN));
            let mut covered: HashSet<PathBuf> = HashSet::new();
            for (path, meta) in &snap.files {
                let Some(dim) = dim else { break };
                if !(meta.rollup && meta.min_ts >= lo && meta.max_ts <= end) {
                    continue;
                }
                let Ok(Some(r)) = self.store.rollup(path) else {
                    continue;
                };
                if r.bucket_ms != rollup::BUCKET_MS {
                    continue;
                }
                match dim {
                    None => {
                        let mut cut = Vec::with_capacity(r.buckets.len());
                        for b in &r.buckets {
                            match period_of(b.t, tz, spec.period) {
                                Some(p) => cut.push((p, b.s)),
                                None => break,
                            }
                        }
                        if cut.len() != r.buckets.len() {
                            continue;
                        }
                        for (p, s) in cut {
                            from_rollups.entry((p, Vec::new())).or_default().add(&s);
                        }
                    }
                    Some(d) => {
                        let (Some(p), Some(q)) = (
                            period_of(meta.min_ts, tz, spec.period),
                            period_of(meta.max_ts, tz, spec.period),
                        ) else {
                            continue;
                        };
                        let Some(values) = r.dims.get(d) else {
                            continue;
                        };
                        if p != q || values.contains_key(rollup::OTHER) {
                            continue;
                        }
                        for (v, s) in values {
                            from_rollups
                                .entry((p.clone(), vec![v.clone()]))
                                .or_default()
                                .add(s);
                        }
                    }
                }
                covered.insert(path.clone());
            }
            sources.files_from_rollups += covered.len() as u64;
            snap.files.retain(|(p, _)| !covered.contains(p));
            let df = self
                .raw_frame_of(
                    &ctx,
                    g,
                    snap,
                    start,
                    end,
                    None,
                    &mut sources.stats,
                    &mut fields,
                )
                .await?;
            table = Some(match table {
                Some(t) => t.union(df)?,
                None => df,
            });
        }
        let table =
            table.ok_or_else(|| QueryError::Invalid("name at least one log group".into()))?;
        ctx.register_table("invocations", table.into_view())?;
        let df = ctx.sql(&sql).await?;
        let columns = df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let batches = crate::collect_cancellable(df).await?;
        let scanned = spec.report(&QueryResult {
            columns,
            rows: crate::format_rows(&batches)?,
            stats: sources.stats.clone(),
        })?;
        Ok((merge(spec, scanned, from_rollups)?, sources))
    }
}

/// The scanned report's rows and the rollups' rows, added where they meet, in the SQL's
/// order (period, then values), with the total recomputed.
fn merge(
    spec: &Chargeback,
    scanned: Report,
    from_rollups: BTreeMap<(String, Vec<String>), Sums>,
) -> Result<Report, QueryError> {
    if from_rollups.is_empty() {
        return Ok(scanned);
    }
    let bad = |what: &str| QueryError::Engine(format!("chargeback: {what}"));
    let mut rows: BTreeMap<(String, Vec<String>), Sums> = BTreeMap::new();
    for r in scanned.rows {
        let s = Sums {
            calls: r.calls,
            errors: 0,
            unpriced: r.unpriced_calls,
            input: r.input_tokens,
            output: r.output_tokens,
            cache_read: r.cache_read_tokens,
            cache_write: r.cache_write_tokens,
            cost: scaled_decimal(&r.cost).ok_or_else(|| bad("a cost is not a decimal"))?,
            ..Default::default()
        };
        rows.entry((r.period, r.values)).or_default().add(&s);
    }
    for (k, s) in from_rollups {
        rows.entry(k).or_default().add(&s);
    }
    let n = spec.by.len();
    let mut total = Sums::default();
    let rows: Vec<Row> = rows
        .into_iter()
        .map(|((period, values), s)| {
            total.add(&s);
            row(period, values, &s)
        })
        .collect();
    Ok(Report {
        rows,
        total: row("total".into(), vec![String::new(); n], &total),
        ..scanned
    })
}

fn row(period: String, values: Vec<String>, s: &Sums) -> Row {
    Row {
        period,
        values,
        calls: s.calls,
        unpriced_calls: s.unpriced,
        input_tokens: s.input,
        output_tokens: s.output,
        cache_read_tokens: s.cache_read,
        cache_write_tokens: s.cache_write,
        cost: format_scaled(s.cost),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn periods_are_written_as_the_reports_sql_writes_them() {
        // 2026-11-29T23:30:00Z: a Sunday in UTC, Monday 05:00 in Kolkata.
        let t = 1_795_995_000_000;
        let utc: chrono_tz::Tz = "UTC".parse().unwrap();
        let kol: chrono_tz::Tz = "Asia/Kolkata".parse().unwrap();
        assert_eq!(period_of(t, utc, Period::Day).unwrap(), "2026-11-29");
        assert_eq!(period_of(t, kol, Period::Day).unwrap(), "2026-11-30");
        assert_eq!(period_of(t, utc, Period::Week).unwrap(), "2026-11-23");
        assert_eq!(period_of(t, kol, Period::Week).unwrap(), "2026-11-30");
        assert_eq!(period_of(t, utc, Period::Month).unwrap(), "2026-11");
        assert_eq!(
            period_of(
                1_796_081_400_000,
                "Europe/Berlin".parse().unwrap(),
                Period::Month
            )
            .unwrap(),
            "2026-12"
        );
    }
}
