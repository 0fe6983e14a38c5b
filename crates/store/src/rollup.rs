//! Pre-computed aggregates of a store file (issue #14: "charts from aggregates, no full
//! scan on page load").
//!
//! Every Parquet file the store writes (flush, import, compaction, the rewrite without
//! bodies) carries, in its footer's key-value metadata under [`KEY`], a [`Rollup`] of its
//! rows: per 15-minute bucket (every time zone's offset is a multiple of 15 minutes, so a
//! bucket never straddles a local day) the calls, errors, the four token counts, the exact
//! cost, the unpriced calls and a latency histogram; and for the whole file the same sums
//! by model, by principal and by team. It lives in the file, so it is written and made
//! durable with it, sealed with it when the store is encrypted, replaced with it by
//! compaction and never disagrees with it. Files written before have none: readers scan
//! them.
//!
//! The sums follow the chargeback report's rules (`logbook_query::report`): a call without
//! a cost is unpriced; a missing token count adds nothing; a dimension a call does not
//! have is [`NONE`]; the team is the caller's principal tag `team`, else its
//! `requestMetadata.team`. Latency percentiles from the histogram are approximate (each
//! bucket spans 2%, so a value is within 1% of the exact one); every sum is exact.

use arrow_array::{Array, Decimal128Array, Int64Array, RecordBatch, StringArray};
use arrow_array::{StringViewArray, TimestampMillisecondArray};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The footer key a file's rollup is stored under.
pub const KEY: &str = "logbook.rollup";
/// The rollup format this build writes and reads.
pub const VERSION: u32 = 1;
/// The bucket length of a file's rollup.
pub const BUCKET_MS: i64 = 900_000;
/// The value of a dimension a call does not have (as the chargeback report writes it).
pub const NONE: &str = "(none)";
/// The dimensions a rollup sums by, whole-file.
pub const DIMENSIONS: [&str; 3] = ["model", "principal", "team"];
/// Distinct values kept per dimension in one file; beyond, the rest are summed under
/// [`OTHER`] (the file's totals stay exact; a reader that needs them by name scans).
pub const MAX_VALUES: usize = 5_000;
/// Where values beyond [`MAX_VALUES`] are summed.
pub const OTHER: &str = "(other)";

/// The histogram's growth factor: bucket `i` holds values in `(G^(i-1), G^i]`.
const GAMMA: f64 = 1.02;

/// Sums of calls, as the chargeback report has them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sums {
    /// Calls.
    #[serde(rename = "n")]
    pub calls: u64,
    /// Calls with an error code.
    #[serde(rename = "e", default)]
    pub errors: u64,
    /// Calls with no cost.
    #[serde(rename = "u", default)]
    pub unpriced: u64,
    /// Uncached input tokens.
    #[serde(rename = "i", default)]
    pub input: u64,
    /// Output tokens.
    #[serde(rename = "o", default)]
    pub output: u64,
    /// Cache read tokens.
    #[serde(rename = "cr", default)]
    pub cache_read: u64,
    /// Cache write tokens.
    #[serde(rename = "cw", default)]
    pub cache_write: u64,
    /// Cost, USD, scaled by 10^12 (the store's `DECIMAL(38, 12)`), as decimal text.
    #[serde(rename = "c", with = "i128_text", default)]
    pub cost: i128,
    /// Calls with an input token count (of any value); only in an [`Rollup::exact`] rollup.
    #[serde(rename = "ni", default, skip_serializing_if = "is_zero")]
    pub input_n: u64,
    /// Calls with an output token count.
    #[serde(rename = "no", default, skip_serializing_if = "is_zero")]
    pub output_n: u64,
    /// Calls with a cache read token count.
    #[serde(rename = "nr", default, skip_serializing_if = "is_zero")]
    pub cache_read_n: u64,
    /// Calls with a cache write token count.
    #[serde(rename = "nw", default, skip_serializing_if = "is_zero")]
    pub cache_write_n: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Sums {
    /// Add `o` (saturating on counts; the cost is exact, and saturates only past 10^26 USD).
    pub fn add(&mut self, o: &Sums) {
        self.calls = self.calls.saturating_add(o.calls);
        self.errors = self.errors.saturating_add(o.errors);
        self.unpriced = self.unpriced.saturating_add(o.unpriced);
        self.input = self.input.saturating_add(o.input);
        self.output = self.output.saturating_add(o.output);
        self.cache_read = self.cache_read.saturating_add(o.cache_read);
        self.cache_write = self.cache_write.saturating_add(o.cache_write);
        self.cost = self.cost.saturating_add(o.cost);
        self.input_n = self.input_n.saturating_add(o.input_n);
        self.output_n = self.output_n.saturating_add(o.output_n);
        self.cache_read_n = self.cache_read_n.saturating_add(o.cache_read_n);
        self.cache_write_n = self.cache_write_n.saturating_add(o.cache_write_n);
    }
}

mod i128_text {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &i128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
        let t = String::deserialize(d)?;
        t.parse().map_err(serde::de::Error::custom)
    }
}

/// A latency histogram: counts per logarithmic bucket, from bucket `offset` on. Bucket -1
/// holds 0 ms (and below), bucket 0 holds 1 ms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    /// The first bucket's index.
    #[serde(rename = "o", default)]
    pub offset: i32,
    /// Counts, bucket `offset` first.
    #[serde(rename = "c", default)]
    pub counts: Vec<u64>,
}

/// Highest bucket index: values beyond (G^1200, about 2.1e10 ms) land in it.
const MAX_INDEX: i32 = 1_200;

fn index_of(ms: i64) -> i32 {
    if ms <= 0 {
        return -1;
    }
    let i = ((ms as f64).ln() / GAMMA.ln()).ceil() as i32;
    i.clamp(0, MAX_INDEX)
}

/// The value a bucket stands for: the middle of its range (within 1% of any value in it),
/// whole milliseconds below 50 ms, where each bucket holds one integer.
fn value_of(i: i32) -> f64 {
    if i < 0 {
        return 0.0;
    }
    let v = 2.0 * GAMMA.powi(i) / (GAMMA + 1.0);
    if v < 50.0 {
        v.round()
    } else {
        v
    }
}

impl Histogram {
    /// Count one value.
    pub fn record(&mut self, ms: i64) {
        self.add_at(index_of(ms), 1);
    }

    fn add_at(&mut self, i: i32, n: u64) {
        if self.counts.is_empty() {
            self.offset = i;
            self.counts.push(n);
            return;
        }
        if i < self.offset {
            let grow = (self.offset - i) as usize;
            let mut v = vec![0; grow];
            v.append(&mut self.counts);
            self.counts = v;
            self.offset = i;
        }
        let at = (i - self.offset) as usize;
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] = self.counts[at].saturating_add(n);
    }

    /// Add another histogram.
    pub fn merge(&mut self, o: &Histogram) {
        for (k, n) in o.counts.iter().enumerate() {
            if *n > 0 {
                self.add_at(o.offset + k as i32, *n);
            }
        }
    }

    /// Values counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `p`-th percentile (`p` in 0..=1), interpolated between closest ranks as the
    /// query language's `pct` does, over the buckets' values; none when empty.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let pos = p.clamp(0.0, 1.0) * (n - 1) as f64;
        let (lo, hi) = (pos.floor() as u64, pos.ceil() as u64);
        let (a, b) = (self.at_rank(lo)?, self.at_rank(hi)?);
        Some(a + (b - a) * (pos - lo as f64))
    }

    fn at_rank(&self, r: u64) -> Option<f64> {
        let mut seen = 0u64;
        for (k, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen > r {
                return Some(value_of(self.offset + k as i32));
            }
        }
        None
    }
}

/// One 15-minute bucket of a file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Bucket start, epoch ms (a multiple of the bucket length).
    pub t: i64,
    /// Sums.
    pub s: Sums,
    /// Latencies (`logbook.latencyMs`) of the calls that have one.
    #[serde(default)]
    pub lat: Histogram,
}

/// The aggregates of one file (or of any set of rows).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    /// Format ([`VERSION`]).
    pub v: u32,
    /// Bucket length, ms.
    #[serde(rename = "bucketMs")]
    pub bucket_ms: i64,
    /// Buckets with calls, oldest first.
    pub buckets: Vec<Bucket>,
    /// Whole-file sums by dimension ([`DIMENSIONS`]) and value.
    pub dims: BTreeMap<String, BTreeMap<String, Sums>>,
    /// The token sums are the rows' own, so a query's `sum()` and `count()` of them may be
    /// answered from here: every call's counts were added as they are (none was negative,
    /// which the report's rules count as 0), the calls with each count are counted
    /// (`input_n`, ...), and no dimension value is spelled like [`NONE`] or [`OTHER`] (so
    /// [`NONE`] stands only for a call without the value). Rollups written before this
    /// was counted read as not exact.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exact: bool,
}

impl Rollup {
    /// The footer value.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A footer value, if it is a rollup this build reads.
    pub fn from_text(t: &str) -> Option<Rollup> {
        let r: Rollup = serde_json::from_str(t).ok()?;
        (r.v == VERSION && r.bucket_ms > 0).then_some(r)
    }

    /// Sums over every bucket.
    pub fn total(&self) -> Sums {
        let mut s = Sums::default();
        for b in &self.buckets {
            s.add(&b.s);
        }
        s
    }
}

/// Why a batch could not be summed.
#[derive(Debug, thiserror::Error)]
#[error("rollup: column {0} is missing or not of the store's type")]
pub struct ColumnError(pub &'static str);

/// Sums rows into a [`Rollup`].
#[derive(Debug)]
pub struct Builder {
    bucket_ms: i64,
    /// Latencies are kept per this length (a multiple of `bucket_ms`), in the first bucket
    /// of each: a reader that only wants them per day holds a day's histogram, not 96.
    lat_ms: i64,
    buckets: BTreeMap<i64, Bucket>,
    lats: BTreeMap<i64, Histogram>,
    dims: [BTreeMap<String, Sums>; 3],
    /// A call had a negative token count, or a value spelled like NONE or OTHER.
    inexact: bool,
}

/// A text column, as the store writes it or as a query engine hands it back.
enum Text<'a> {
    Plain(&'a StringArray),
    View(&'a StringViewArray),
    Absent,
}

impl Text<'_> {
    fn get(&self, i: usize) -> Option<&str> {
        match self {
            Text::Plain(a) => a.is_valid(i).then(|| a.value(i)),
            Text::View(a) => a.is_valid(i).then(|| a.value(i)),
            Text::Absent => None,
        }
    }
    fn is_valid(&self, i: usize) -> bool {
        self.get(i).is_some()
    }
}

fn text<'a>(b: &'a RecordBatch, name: &'static str) -> Result<Text<'a>, ColumnError> {
    let Some(c) = b.column_by_name(name) else {
        return Ok(Text::Absent);
    };
    if let Some(a) = c.as_any().downcast_ref::<StringArray>() {
        return Ok(Text::Plain(a));
    }
    if let Some(a) = c.as_any().downcast_ref::<StringViewArray>() {
        return Ok(Text::View(a));
    }
    Err(ColumnError(name))
}

fn ints<'a>(b: &'a RecordBatch, name: &'static str) -> Result<Option<&'a Int64Array>, ColumnError> {
    match b.column_by_name(name) {
        None => Ok(None),
        Some(c) => c
            .as_any()
            .downcast_ref::<Int64Array>()
            .map(Some)
            .ok_or(ColumnError(name)),
    }
}

fn int_at(a: Option<&Int64Array>, i: usize) -> Option<i64> {
    a.and_then(|a| a.is_valid(i).then(|| a.value(i)))
}

/// A JSON object's member as the query language's `json_get` gives it: strings unquoted,
/// null as none, anything else as JSON text.
fn member(json: Option<&str>, key: &str) -> Option<String> {
    let s = json?;
    // Most records carry no such key: skip the parse.
    if !s.contains(key) || !s.trim_start().starts_with(['{', '[']) {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(s).ok()?;
    match v.get(key)? {
        serde_json::Value::Null => None,
        serde_json::Value::String(t) => Some(t.clone()),
        o => Some(o.to_string()),
    }
}

impl Builder {
    /// A builder with buckets of `bucket_ms` (≥ 1; [`BUCKET_MS`] for files).
    pub fn new(bucket_ms: i64) -> Builder {
        Builder::with_latency_every(bucket_ms, bucket_ms)
    }

    /// A builder whose latency histograms cover `lat_ms` each (rounded up to a multiple
    /// of `bucket_ms`), kept in the first bucket with calls of each such interval.
    pub fn with_latency_every(bucket_ms: i64, lat_ms: i64) -> Builder {
        let bucket_ms = bucket_ms.max(1);
        let lat_ms = lat_ms.max(bucket_ms);
        let lat_ms = lat_ms.saturating_add(bucket_ms - 1) / bucket_ms * bucket_ms;
        Builder {
            bucket_ms,
            lat_ms,
            buckets: BTreeMap::new(),
            lats: BTreeMap::new(),
            dims: Default::default(),
            inexact: false,
        }
    }

    /// Sum a batch of rows with the store's column names (`timestamp`, `model_id`, ...).
    pub fn add(&mut self, b: &RecordBatch) -> Result<(), ColumnError> {
        let ts = b
            .column_by_name("timestamp")
            .and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>())
            .ok_or(ColumnError("timestamp"))?;
        let model = text(b, "model_id")?;
        let arn = text(b, "identity_arn")?;
        let tags = text(b, "principal_tags")?;
        let meta = text(b, "request_metadata")?;
        let error = text(b, "error_code")?;
        let latency = ints(b, "latency_ms")?;
        let input = ints(b, "input_token_count")?;
        let output = ints(b, "output_token_count")?;
        let cread = ints(b, "cache_read_input_token_count")?;
        let cwrite = ints(b, "cache_write_input_token_count")?;
        let cost = match b.column_by_name("cost") {
            None => None,
            Some(c) => Some(
                c.as_any()
                    .downcast_ref::<Decimal128Array>()
                    .filter(|a| a.scale() == crate::schema::DECIMAL_SCALE)
                    .ok_or(ColumnError("cost"))?,
            ),
        };
        for i in 0..b.num_rows() {
            if !ts.is_valid(i) {
                continue;
            }
            let t = ts.value(i);
            let c = cost.and_then(|a| a.is_valid(i).then(|| a.value(i)));
            let mut tok = |a: Option<&Int64Array>| match int_at(a, i) {
                None => (0, 0),
                Some(v) => {
                    self.inexact |= v < 0;
                    (v.max(0) as u64, 1)
                }
            };
            let (input, input_n) = tok(input);
            let (output, output_n) = tok(output);
            let (cache_read, cache_read_n) = tok(cread);
            let (cache_write, cache_write_n) = tok(cwrite);
            let s = Sums {
                calls: 1,
                errors: u64::from(error.is_valid(i)),
                unpriced: u64::from(c.is_none()),
                input,
                output,
                cache_read,
                cache_write,
                cost: c.unwrap_or(0),
                input_n,
                output_n,
                cache_read_n,
                cache_write_n,
            };
            let start = t.div_euclid(self.bucket_ms) * self.bucket_ms;
            let bucket = self.buckets.entry(start).or_insert_with(|| Bucket {
                t: start,
                ..Default::default()
            });
            bucket.s.add(&s);
            if let Some(l) = int_at(latency, i) {
                self.lats
                    .entry(t.div_euclid(self.lat_ms) * self.lat_ms)
                    .or_default()
                    .record(l);
            }
            let team = member(tags.get(i), "team").or_else(|| member(meta.get(i), "team"));
            let values = [model.get(i), arn.get(i), team.as_deref()];
            for (d, v) in self.dims.iter_mut().zip(values) {
                self.inexact |= matches!(v, Some(NONE | OTHER));
                let v = v.unwrap_or(NONE);
                // Most rows repeat a value already here: no allocation for them.
                if let Some(sums) = d.get_mut(v) {
                    sums.add(&s);
                    continue;
                }
                let key = if d.len() >= MAX_VALUES { OTHER } else { v };
                d.entry(key.to_string()).or_default().add(&s);
            }
        }
        Ok(())
    }

    /// The rollup of every row added.
    pub fn finish(mut self) -> Rollup {
        for (at, h) in std::mem::take(&mut self.lats) {
            // Every latency came with a call, so its interval has a bucket.
            if let Some((_, b)) = self.buckets.range_mut(at..).next() {
                b.lat.merge(&h);
            }
        }
        Rollup {
            v: VERSION,
            bucket_ms: self.bucket_ms,
            buckets: self.buckets.into_values().collect(),
            dims: DIMENSIONS
                .iter()
                .map(|d| d.to_string())
                .zip(self.dims)
                .collect(),
            exact: !self.inexact,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_histogram_is_exact_below_fifty_ms_and_within_one_percent_above() {
        for v in 0..50i64 {
            let mut h = Histogram::default();
            h.record(v);
            assert_eq!(h.percentile(0.5).unwrap(), v as f64, "{v}");
        }
        for v in [50i64, 77, 100, 999, 1_234, 60_000, 3_600_000] {
            let mut h = Histogram::default();
            h.record(v);
            let got = h.percentile(0.99).unwrap();
            assert!((got - v as f64).abs() / v as f64 <= 0.01, "{v}: {got}");
        }
    }

    #[test]
    fn percentiles_interpolate_between_ranks_as_pct_does() {
        let mut h = Histogram::default();
        for v in [1, 2, 3, 4] {
            h.record(v);
        }
        // pos = 0.5 * 3 = 1.5: halfway between 2 and 3.
        assert_eq!(h.percentile(0.5).unwrap(), 2.5);
        assert_eq!(h.percentile(0.0).unwrap(), 1.0);
        assert_eq!(h.percentile(1.0).unwrap(), 4.0);
        assert_eq!(Histogram::default().percentile(0.5), None);
    }

    #[test]
    fn merged_histograms_count_what_their_parts_did() {
        let (mut a, mut b, mut all) = (
            Histogram::default(),
            Histogram::default(),
            Histogram::default(),
        );
        for v in [5i64, 700, 90_000] {
            a.record(v);
            all.record(v);
        }
        for v in [1i64, 3, 700, 10_000_000_000_000] {
            b.record(v);
            all.record(v);
        }
        a.merge(&b);
        assert_eq!(a.count(), 7);
        for p in [0.0, 0.3, 0.5, 0.9, 1.0] {
            assert_eq!(a.percentile(p), all.percentile(p));
        }
    }

    #[test]
    fn latencies_kept_per_longer_interval_land_in_its_first_bucket() {
        use arrow_array::builder::{Int64Builder, TimestampMillisecondBuilder};
        let mut ts = TimestampMillisecondBuilder::new();
        let mut lat = Int64Builder::new();
        // Two buckets of the first hour, one of the second.
        for (t, l) in [(1_000_000, 10), (2_000_000, 20), (3_700_000, 30)] {
            ts.append_value(t);
            lat.append_value(l);
        }
        let b = RecordBatch::try_from_iter([
            (
                "timestamp",
                std::sync::Arc::new(ts.finish()) as arrow_array::ArrayRef,
            ),
            ("latency_ms", std::sync::Arc::new(lat.finish())),
        ])
        .unwrap();
        let mut x = Builder::with_latency_every(BUCKET_MS, 3_600_000);
        x.add(&b).unwrap();
        let r = x.finish();
        let counts: Vec<(i64, u64, u64)> = r
            .buckets
            .iter()
            .map(|b| (b.t, b.s.calls, b.lat.count()))
            .collect();
        assert_eq!(
            counts,
            [(900_000, 1, 2), (1_800_000, 1, 0), (3_600_000, 1, 1)]
        );
    }

    #[test]
    fn values_past_the_cap_are_summed_under_other_and_totals_stay_whole() {
        use arrow_array::builder::{StringBuilder, TimestampMillisecondBuilder};
        let n = MAX_VALUES + 3;
        let mut ts = TimestampMillisecondBuilder::new();
        let mut model = StringBuilder::new();
        for i in 0..n {
            ts.append_value(0);
            model.append_value(format!("m{i}"));
        }
        // A repeat of a kept value stays under its own name.
        ts.append_value(0);
        model.append_value("m0");
        let b = RecordBatch::try_from_iter([
            (
                "timestamp",
                std::sync::Arc::new(ts.finish()) as arrow_array::ArrayRef,
            ),
            ("model_id", std::sync::Arc::new(model.finish())),
        ])
        .unwrap();
        let mut x = Builder::new(BUCKET_MS);
        x.add(&b).unwrap();
        let r = x.finish();
        let m = &r.dims["model"];
        assert_eq!(m.len(), MAX_VALUES + 1);
        assert_eq!(m[OTHER].calls, 3);
        assert_eq!(m["m0"].calls, 2);
        assert_eq!(m.values().map(|s| s.calls).sum::<u64>(), n as u64 + 1);
        assert_eq!(r.total().calls, n as u64 + 1);
        assert_eq!(r.dims["team"][NONE].calls, n as u64 + 1);
    }

    #[test]
    fn a_rollup_reads_back_and_a_foreign_one_is_refused() {
        let r = Rollup {
            v: VERSION,
            bucket_ms: BUCKET_MS,
            buckets: vec![Bucket {
                t: 900_000,
                s: Sums {
                    calls: 2,
                    cost: 123_456_789_012_345_678_901_234_567,
                    ..Default::default()
                },
                lat: Histogram::default(),
            }],
            dims: BTreeMap::new(),
            exact: true,
        };
        assert_eq!(Rollup::from_text(&r.to_text()).unwrap(), r);
        // Written before `exact` was counted: read as not exact.
        let old = r.to_text().replace(",\"exact\":true", "");
        assert!(!Rollup::from_text(&old).unwrap().exact);
        assert!(Rollup::from_text(&r.to_text().replace("\"v\":1", "\"v\":99")).is_none());
        assert!(Rollup::from_text("{").is_none());
        assert!(Rollup::from_text("{\"v\":1,\"bucketMs\":0,\"buckets\":[],\"dims\":{}}").is_none());
    }

    #[test]
    fn token_counts_are_counted_and_a_negative_count_or_a_value_spelled_none_is_not_exact() {
        use arrow_array::builder::{Int64Builder, StringBuilder, TimestampMillisecondBuilder};
        let build = |rows: &[(Option<&str>, Option<i64>)]| {
            let mut ts = TimestampMillisecondBuilder::new();
            let mut model = StringBuilder::new();
            let mut input = Int64Builder::new();
            for (m, i) in rows {
                ts.append_value(0);
                model.append_option(*m);
                input.append_option(*i);
            }
            let b = RecordBatch::try_from_iter([
                (
                    "timestamp",
                    std::sync::Arc::new(ts.finish()) as arrow_array::ArrayRef,
                ),
                ("model_id", std::sync::Arc::new(model.finish())),
                ("input_token_count", std::sync::Arc::new(input.finish())),
            ])
            .unwrap();
            let mut x = Builder::new(BUCKET_MS);
            x.add(&b).unwrap();
            x.finish()
        };
        let r = build(&[(Some("a"), Some(3)), (Some("a"), None), (None, Some(4))]);
        assert!(r.exact);
        assert_eq!(
            (r.dims["model"]["a"].input, r.dims["model"]["a"].input_n),
            (3, 1)
        );
        assert_eq!(r.dims["model"][NONE].input_n, 1);
        assert_eq!(r.total().output_n, 0);
        assert!(Rollup::from_text(&r.to_text()).unwrap().exact);
        assert!(!build(&[(Some("a"), Some(-1))]).exact);
        assert!(!build(&[(Some(NONE), Some(1))]).exact);
        assert!(!build(&[(Some(OTHER), None)]).exact);
    }
}
