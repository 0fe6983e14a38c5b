//! The overview: totals, a time series, cost per local day and the top models, principals
//! and teams of a time range, from the store files' rollups (`logbook_store::rollup`)
//! where a file lies wholly inside the range, and from a scan of the rest (files cut by
//! the range's edges, files written before rollups, other replicas' files, the unflushed
//! tail). So a page load reads a few footers and the edges, not every record: the work
//! grows with the files in range, not the records (issue #14).
//!
//! Every sum is exact and equals the chargeback report's for the same range (same rules:
//! [`logbook_store::rollup`]); latency percentiles come from histograms and are within 1%
//! of the exact ones (`approximate` in the answer says so).

use crate::{Engine, QueryError, QueryStats};
use datafusion::prelude::*;
use futures::StreamExt;
use logbook_store::rollup::{self, Histogram, Sums};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

/// The longest range an overview covers (about 13 months); longer spans are for the
/// chargeback report.
pub const MAX_SPAN_MS: i64 = 400 * 86_400_000;
/// The most points a series may have.
pub const MAX_POINTS: i64 = 5_000;
/// The most values a top list may ask for.
pub const MAX_TOP: usize = 100;

/// What to summarize.
#[derive(Debug, Clone)]
pub struct OverviewRequest {
    /// Log groups.
    pub groups: Vec<String>,
    /// Range start, epoch ms (inclusive).
    pub start_ms: i64,
    /// Range end, epoch ms (inclusive).
    pub end_ms: i64,
    /// Series interval, ms: whole minutes, a divisor or a multiple of 15 minutes.
    pub bin_ms: i64,
    /// IANA zone days are cut in.
    pub tz: String,
    /// Values per top list.
    pub top: usize,
    /// Wait until the store has taken in the journal up to here (read your writes).
    pub after_seq: u64,
}

impl OverviewRequest {
    /// Refuse what the overview cannot answer within its bounds, with the reason.
    pub fn check(&self) -> Result<(), QueryError> {
        let bad = |m: String| Err(QueryError::Invalid(m));
        crate::report::check_tz(&self.tz)?;
        if self.end_ms < self.start_ms {
            return bad("end is before start".into());
        }
        if self.end_ms - self.start_ms > MAX_SPAN_MS {
            return bad(format!(
                "the range is longer than the overview's {} days; use the chargeback report",
                MAX_SPAN_MS / 86_400_000
            ));
        }
        let b = self.bin_ms;
        if !(60_000..=MAX_SPAN_MS).contains(&b)
            || b % 60_000 != 0
            || (b % rollup::BUCKET_MS != 0 && rollup::BUCKET_MS % b != 0)
        {
            return bad(format!(
                "bin {b} ms: expected whole minutes that divide 15 minutes (1, 3, 5 minutes) \
                 or are a multiple of it (15 minutes, 1 hour, 1 day)"
            ));
        }
        if (self.end_ms - self.start_ms) / b + 1 > MAX_POINTS {
            return bad(format!(
                "the range holds more than {MAX_POINTS} intervals of {b} ms; choose a larger bin"
            ));
        }
        if self.top == 0 || self.top > MAX_TOP {
            return bad(format!("top must be from 1 to {MAX_TOP}"));
        }
        if self.groups.is_empty() {
            return bad("name at least one log group".into());
        }
        Ok(())
    }
}

/// Sums with their latency percentiles.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Calls.
    pub calls: u64,
    /// Calls with an error code.
    pub errors: u64,
    /// Calls with no cost.
    pub unpriced_calls: u64,
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cache read tokens.
    pub cache_read_tokens: u64,
    /// Cache write tokens.
    pub cache_write_tokens: u64,
    /// USD, exact.
    pub cost: String,
    /// Median latency, ms (approximate).
    pub p50_latency_ms: Option<f64>,
    /// 99th percentile latency, ms (approximate).
    pub p99_latency_ms: Option<f64>,
}

impl Totals {
    fn of(s: &Sums, h: Option<&Histogram>) -> Totals {
        Totals {
            calls: s.calls,
            errors: s.errors,
            unpriced_calls: s.unpriced,
            input_tokens: s.input,
            output_tokens: s.output,
            cache_read_tokens: s.cache_read,
            cache_write_tokens: s.cache_write,
            cost: crate::report::format_scaled(s.cost),
            p50_latency_ms: h.and_then(|h| h.percentile(0.5)),
            p99_latency_ms: h.and_then(|h| h.percentile(0.99)),
        }
    }
}

/// One interval of the series.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// Interval start, epoch ms (a multiple of the bin, as `bin()` cuts).
    pub t: i64,
    /// The interval's sums.
    #[serde(flatten)]
    pub totals: Totals,
}

/// Cost and calls of one local day.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Day {
    /// Local date (`2026-12-01`).
    pub day: String,
    /// Calls.
    pub calls: u64,
    /// USD, exact.
    pub cost: String,
}

/// One value of a top list.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Top {
    /// The dimension's value (`(none)` for calls without one).
    pub value: String,
    /// Its sums (no latency).
    #[serde(flatten)]
    pub totals: Totals,
}

/// Where the answer came from.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sources {
    /// Files answered from their rollups.
    pub files_from_rollups: u64,
    /// Records those files hold.
    pub records_from_rollups: u64,
    /// Files scanned (cut by the range, without a rollup, other replicas').
    pub files_scanned: u64,
    /// Records read by the scan (files and tail, before the time filter).
    pub records_scanned: u64,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    /// Range start, epoch ms.
    pub start: i64,
    /// Range end, epoch ms.
    pub end: i64,
    /// Series interval, ms.
    pub bin_ms: i64,
    /// Zone days are cut in.
    pub time_zone: String,
    /// Currency of every cost.
    pub currency: String,
    /// Latency percentiles are from histograms (within 1% of the exact value).
    pub latency_approximate: bool,
    /// Sums over the range.
    pub total: Totals,
    /// Intervals with calls, oldest first.
    pub series: Vec<Point>,
    /// Local days with calls, oldest first.
    pub days: Vec<Day>,
    /// Top values by calls, per dimension (`model`, `principal`, `team`).
    pub top: BTreeMap<String, Vec<Top>>,
    /// Distinct values per dimension (as far as rollups name them).
    pub distinct: BTreeMap<String, u64>,
    /// Where the answer came from.
    pub sources: Sources,
}

/// Sums folded into the answer's shapes as buckets arrive.
struct Fold {
    bin_ms: i64,
    tz: chrono_tz::Tz,
    total: Sums,
    total_lat: Histogram,
    bins: BTreeMap<i64, (Sums, Histogram)>,
    /// By the start of the bucket (15 minutes or less), for the local-day cut.
    days: BTreeMap<String, (u64, i128)>,
    dims: BTreeMap<String, BTreeMap<String, Sums>>,
}

impl Fold {
    fn bucket(&mut self, b: &rollup::Bucket) {
        self.total.add(&b.s);
        self.total_lat.merge(&b.lat);
        let bin = b.t.div_euclid(self.bin_ms) * self.bin_ms;
        let e = self.bins.entry(bin).or_default();
        e.0.add(&b.s);
        e.1.merge(&b.lat);
        let day = local_day(b.t, self.tz);
        let d = self.days.entry(day).or_default();
        d.0 = d.0.saturating_add(b.s.calls);
        d.1 = d.1.saturating_add(b.s.cost);
    }

    fn rollup(&mut self, r: &rollup::Rollup) {
        for b in &r.buckets {
            self.bucket(b);
        }
        for (d, values) in &r.dims {
            let m = self.dims.entry(d.clone()).or_default();
            for (v, s) in values {
                m.entry(v.clone()).or_default().add(s);
            }
        }
    }
}

fn local_day(ms: i64, tz: chrono_tz::Tz) -> String {
    use chrono::{LocalResult, TimeZone};
    match tz.timestamp_millis_opt(ms) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.format("%Y-%m-%d").to_string(),
        LocalResult::None => String::new(),
    }
}

/// The columns the overview reads (never a body).
const COLUMNS: &[&str] = &[
    "timestamp",
    "model_id",
    "identity_arn",
    "principal_tags",
    "request_metadata",
    "error_code",
    "latency_ms",
    "input_token_count",
    "output_token_count",
    "cache_read_input_token_count",
    "cache_write_input_token_count",
    "cost",
];

impl Engine {
    /// The overview of a range, without limits (the CLI, tests); servers go through
    /// [`crate::QueryService::overview`].
    pub async fn overview(&self, req: &OverviewRequest) -> Result<Overview, QueryError> {
        self.overview_in(req, self.runtime.clone()).await
    }

    /// The overview of a range (see the module documentation), in the given runtime.
    pub async fn overview_in(
        &self,
        req: &OverviewRequest,
        env: std::sync::Arc<datafusion::execution::runtime_env::RuntimeEnv>,
    ) -> Result<Overview, QueryError> {
        req.check()?;
        self.wait_for_ingest(req.after_seq).await;
        let tz: chrono_tz::Tz = req
            .tz
            .parse()
            .map_err(|_| QueryError::Invalid(format!("time zone {:?}", req.tz)))?;
        let mut fold = Fold {
            bin_ms: req.bin_ms,
            tz,
            total: Sums::default(),
            total_lat: Histogram::default(),
            bins: BTreeMap::new(),
            days: BTreeMap::new(),
            dims: BTreeMap::new(),
        };
        let mut sources = Sources::default();
        // Rollups' buckets are 15 minutes: a series of shorter intervals is scanned.
        let use_rollups = req.bin_ms % rollup::BUCKET_MS == 0;
        let ctx = self.context(env);
        let mut scans: Option<DataFrame> = None;
        let mut stats = QueryStats::default();
        let mut fields = std::collections::BTreeSet::new();
        for g in &req.groups {
            let mut snap = self.snapshot(g, req.start_ms, req.end_ms)?;
            let lo = req.start_ms.max(snap.retention_cutoff.unwrap_or(i64::MIN));
            let mut covered: HashSet<PathBuf> = HashSet::new();
            if use_rollups {
                for (path, meta) in &snap.files {
                    if !(meta.rollup && meta.min_ts >= lo && meta.max_ts <= req.end_ms) {
                        continue;
                    }
                    // A footer that cannot be read is scanned like a file without one; the
                    // scan reports the error if the file itself is unreadable.
                    if let Ok(Some(r)) = self.store.rollup(path) {
                        if r.bucket_ms == rollup::BUCKET_MS {
                            fold.rollup(&r);
                            sources.files_from_rollups += 1;
                            sources.records_from_rollups += meta.rows;
                            covered.insert(path.clone());
                        }
                    }
                }
            }
            snap.files.retain(|(p, _)| !covered.contains(p));
            let df = self
                .raw_frame_of(
                    &ctx,
                    g,
                    snap,
                    req.start_ms,
                    req.end_ms,
                    None,
                    &mut stats,
                    &mut fields,
                )
                .await?;
            let df = df.select_columns(COLUMNS)?;
            scans = Some(match scans {
                Some(s) => s.union(df)?,
                None => df,
            });
        }
        sources.records_scanned = stats.records_scanned;
        sources.files_scanned = stats.files_scanned;
        if let Some(df) = scans {
            let step = if use_rollups {
                rollup::BUCKET_MS
            } else {
                req.bin_ms
            };
            // Latencies per bin, not per bucket: a year scanned holds a histogram a day.
            let mut builder = rollup::Builder::with_latency_every(step, req.bin_ms);
            let mut stream = crate::stream_cancellable(df).await?;
            while let Some(b) = stream.next().await {
                builder
                    .add(&b?)
                    .map_err(|e| QueryError::Engine(e.to_string()))?;
            }
            fold.rollup(&builder.finish());
        }
        let top = fold
            .dims
            .iter()
            .map(|(d, values)| {
                let mut v: Vec<(&String, &Sums)> = values.iter().collect();
                v.sort_by(|a, b| b.1.calls.cmp(&a.1.calls).then_with(|| a.0.cmp(b.0)));
                let rows = v
                    .into_iter()
                    .take(req.top)
                    .map(|(value, s)| Top {
                        value: value.clone(),
                        totals: Totals::of(s, None),
                    })
                    .collect();
                (d.clone(), rows)
            })
            .collect();
        Ok(Overview {
            start: req.start_ms,
            end: req.end_ms,
            bin_ms: req.bin_ms,
            time_zone: req.tz.clone(),
            currency: "USD".into(),
            latency_approximate: true,
            total: Totals::of(&fold.total, Some(&fold.total_lat)),
            series: fold
                .bins
                .iter()
                .map(|(t, (s, h))| Point {
                    t: *t,
                    totals: Totals::of(s, Some(h)),
                })
                .collect(),
            days: fold
                .days
                .iter()
                .map(|(day, (calls, cost))| Day {
                    day: day.clone(),
                    calls: *calls,
                    cost: crate::report::format_scaled(*cost),
                })
                .collect(),
            distinct: fold
                .dims
                .iter()
                .map(|(d, v)| (d.clone(), v.len() as u64))
                .collect(),
            top,
            sources,
        })
    }
}
