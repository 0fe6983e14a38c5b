//! Logs Insights `stats` of token counts answered in part from the store files' rollups
//! ([`logbook_store::rollup`]), so `stats sum(input.inputTokenCount) by modelId` over a
//! month reads a few footers instead of every row.
//!
//! A query qualifies when its first command is a `stats` whose aggregates are only
//! `count(*)`, `count(F)` and `sum(F)` of the four token counts (alone or in arithmetic),
//! grouped by nothing, by `modelId`, or by `bin(P)` with `P` a multiple of the rollup's
//! bucket (or a month, quarter or year). A store file answers from its rollup when it lies
//! wholly inside the query's range and its rollup is [`Rollup::exact`]; for `by modelId`
//! also when the rollup names every model (no [`rollup::OTHER`]). Everything else (files
//! cut by the range, files without an exact rollup, other replicas' files, the unflushed
//! tail) is scanned as before.
//!
//! The rollups become rows of a small table ([`Partials`]): one per file, per model or
//! per bucket, with each token field's sum (null when no call of the row had it, as a
//! SQL sum of nulls is) and the counts of calls and of calls having each field. The
//! compiler aggregates the scanned rows and these rows the same way and adds the two
//! (`insights::compile`), so the answer is the one a full scan gives, value for value:
//! sums of integers are exact in any order, and a sum over only nulls stays null.

use crate::insights::ast::{self, Command, Expr as A, Period};
use datafusion::arrow::array::builder::{Int64Builder, StringBuilder, TimestampMillisecondBuilder};
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use logbook_store::rollup::{self, Rollup, Sums};
use std::sync::Arc;

/// The token counts a rollup sums, by their names in the query language, with the
/// partial table's column of how many calls have each.
pub(crate) const TOKEN_FIELDS: [(&str, &str); 4] = [
    ("input.inputTokenCount", "__n_input"),
    ("output.outputTokenCount", "__n_output"),
    ("input.cacheReadInputTokenCount", "__n_cache_read"),
    ("input.cacheWriteInputTokenCount", "__n_cache_write"),
];

/// The token field a name stands for: its path, or the last part alone (which the
/// compiler resolves to the one column ending with it), as in
/// `stats sum(inputTokenCount) by modelId`.
pub(crate) fn token_field(name: &str) -> Option<&'static (&'static str, &'static str)> {
    TOKEN_FIELDS
        .iter()
        .find(|(path, _)| *path == name || path.rsplit('.').next() == Some(name))
}

/// The partial table's column of calls.
pub(crate) const CALLS: &str = "__calls";

/// What one row of the partial table stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    /// A whole file (`stats` without `by`).
    File,
    /// A model of a file (`by modelId`).
    Model,
    /// A bucket of a file (`by bin(P)`).
    Bucket,
}

/// The grain a query's first command can be answered at from rollups, if it can.
pub fn grain(q: &ast::Query) -> Option<Grain> {
    let Some(Command::Stats { aggs, by }) = q.commands.first() else {
        return None;
    };
    let mut grain = Grain::File;
    for g in by {
        let this = match &g.expr {
            A::Field(f) if f == "modelId" => Grain::Model,
            A::Call(name, args) if name == "bin" => match args.as_slice() {
                [A::Period(Period::Millis(ms))] if *ms > 0 && ms % rollup::BUCKET_MS == 0 => {
                    Grain::Bucket
                }
                [A::Period(Period::Months(1 | 3 | 12))] => Grain::Bucket,
                _ => return None,
            },
            _ => return None,
        };
        if grain != Grain::File && grain != this {
            return None;
        }
        grain = this;
    }
    let mut has_aggregate = false;
    for a in aggs {
        if !answerable(&a.expr, &mut has_aggregate) {
            return None;
        }
    }
    has_aggregate.then_some(grain)
}

/// The partial table's column that holds an aggregate's part, if a rollup holds it:
/// `count(*)` the calls, `count(F)` the calls having `F`, `sum(F)` `F`'s sum.
pub(crate) fn partial_column(name: &str, args: &[A]) -> Option<&'static str> {
    match (name, args) {
        ("count", [] | [A::Star]) => Some(CALLS),
        ("count", [A::Field(f)]) => token_field(f).map(|t| t.1),
        ("sum", [A::Field(f)]) => token_field(f).map(|t| t.0),
        _ => None,
    }
}

/// Whether every aggregate in `e` is one a rollup holds.
fn answerable(e: &A, has_aggregate: &mut bool) -> bool {
    match e {
        A::Call(name, args) if is_aggregate(name) => {
            *has_aggregate = true;
            partial_column(name, args).is_some()
        }
        A::Call(_, args) => args.iter().all(|a| answerable(a, has_aggregate)),
        A::Binary(l, _, r) => answerable(l, has_aggregate) && answerable(r, has_aggregate),
        A::Not(x) | A::Neg(x) => answerable(x, has_aggregate),
        // An earlier aggregate's name, or a literal; a bare field is refused by the
        // compiler either way.
        _ => true,
    }
}

fn is_aggregate(name: &str) -> bool {
    crate::insights::compile::is_aggregate(name)
}

/// At most this many rows, and this many bytes of model names, are taken from rollups
/// for one query: the table is built outside the query's memory pool, so past these a
/// file is scanned instead (under the pool's limit), whatever its rollup holds (a file's
/// rollup may name 5,000 models, a month has 720 hourly files).
pub const MAX_ROWS: usize = 100_000;
/// See [`MAX_ROWS`].
pub const MAX_NAME_BYTES: usize = 8 << 20;

/// Rows of the partial table, as they are gathered.
#[derive(Debug)]
pub struct Partials {
    grain: Grain,
    ts: TimestampMillisecondBuilder,
    model: StringBuilder,
    calls: Int64Builder,
    sums: [Int64Builder; 4],
    counts: [Int64Builder; 4],
    /// Files taken.
    pub files: u64,
    /// Calls taken.
    pub records: u64,
    rows: usize,
    name_bytes: usize,
}

fn int(v: u64) -> Option<i64> {
    i64::try_from(v).ok()
}

/// A row's calls, the token fields' sums (null where no call has the field) and the
/// counts of calls having each.
type Row = (i64, [Option<i64>; 4], [i64; 4]);

/// A row's values, or none when one does not fit the query's integers.
fn row_of(s: &Sums) -> Option<Row> {
    let sums = [s.input, s.output, s.cache_read, s.cache_write];
    let counts = [s.input_n, s.output_n, s.cache_read_n, s.cache_write_n];
    let mut out_s = [None; 4];
    let mut out_n = [0; 4];
    for k in 0..4 {
        out_n[k] = int(counts[k])?;
        out_s[k] = if counts[k] == 0 {
            None
        } else {
            Some(int(sums[k])?)
        };
    }
    Some((int(s.calls)?, out_s, out_n))
}

impl Partials {
    /// An empty table for a grain.
    pub fn new(grain: Grain) -> Partials {
        Partials {
            grain,
            ts: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            model: StringBuilder::new(),
            calls: Int64Builder::new(),
            sums: Default::default(),
            counts: Default::default(),
            files: 0,
            records: 0,
            rows: 0,
            name_bytes: 0,
        }
    }

    /// Take a file's rollup if it can answer for the file (`min_ts` is the file's first
    /// timestamp); false when the file must be scanned.
    pub fn take(&mut self, r: &Rollup, min_ts: i64) -> bool {
        if !r.exact || r.bucket_ms != rollup::BUCKET_MS {
            return false;
        }
        let mut rows: Vec<(i64, Option<&str>, Row)> = Vec::new();
        match self.grain {
            Grain::File => {
                let Some(v) = row_of(&r.total()) else {
                    return false;
                };
                rows.push((min_ts, None, v));
            }
            Grain::Bucket => {
                for b in &r.buckets {
                    let Some(v) = row_of(&b.s) else {
                        return false;
                    };
                    rows.push((b.t, None, v));
                }
            }
            Grain::Model => {
                let Some(models) = r.dims.get("model") else {
                    return false;
                };
                if models.contains_key(rollup::OTHER) {
                    return false;
                }
                for (m, s) in models {
                    let Some(v) = row_of(s) else {
                        return false;
                    };
                    // An exact rollup spells no model like NONE: it is a call without one.
                    let m = (m != rollup::NONE).then_some(m.as_str());
                    rows.push((min_ts, m, v));
                }
            }
        }
        let names: usize = rows.iter().map(|r| r.1.map_or(0, str::len)).sum();
        if self.rows + rows.len() > MAX_ROWS || self.name_bytes + names > MAX_NAME_BYTES {
            return false;
        }
        self.rows += rows.len();
        self.name_bytes += names;
        for (t, m, (calls, sums, counts)) in rows {
            self.ts.append_value(t);
            self.model.append_option(m);
            self.calls.append_value(calls);
            for k in 0..4 {
                self.sums[k].append_option(sums[k]);
                self.counts[k].append_value(counts[k]);
            }
            self.records = self.records.saturating_add(calls as u64);
        }
        self.files += 1;
        true
    }

    /// The table: `@timestamp`, `modelId`, `__calls`, each token field's sum under its
    /// name and its count of calls under [`TOKEN_FIELDS`]' second name. None when no file
    /// was taken.
    pub fn finish(mut self) -> Option<RecordBatch> {
        if self.files == 0 {
            return None;
        }
        let mut cols: Vec<(&str, ArrayRef)> = vec![
            ("@timestamp", Arc::new(self.ts.finish())),
            ("modelId", Arc::new(self.model.finish())),
            (CALLS, Arc::new(self.calls.finish())),
        ];
        for (k, (name, n)) in TOKEN_FIELDS.iter().enumerate() {
            cols.push((name, Arc::new(self.sums[k].finish())));
            cols.push((n, Arc::new(self.counts[k].finish())));
        }
        RecordBatch::try_from_iter(cols).ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn q(text: &str) -> Option<Grain> {
        grain(&crate::insights::parse(text).unwrap())
    }

    #[test]
    fn only_stats_of_token_counts_by_model_or_bin_qualify() {
        assert_eq!(
            q("stats sum(input.inputTokenCount), sum(output.outputTokenCount) by modelId"),
            Some(Grain::Model)
        );
        assert_eq!(q("stats count(*)"), Some(Grain::File));
        assert_eq!(
            q("stats sum(inputTokenCount) as i, count(cacheWriteInputTokenCount) by modelId"),
            Some(Grain::Model)
        );
        assert_eq!(q("stats count() by bin(1h)"), Some(Grain::Bucket));
        assert_eq!(q("stats count(*) by bin(1mo)"), Some(Grain::Bucket));
        assert_eq!(
            q("stats sum(input.inputTokenCount) + sum(output.outputTokenCount) as t, t * 2 as u by modelId | sort t desc | limit 3"),
            Some(Grain::Model)
        );
        assert_eq!(
            q("stats count(input.cacheReadInputTokenCount) by bin(30m)"),
            Some(Grain::Bucket)
        );
        // Not from rollups:
        for text in [
            "filter modelId = 'a' | stats count(*)",
            "fields modelId | stats count(*) by modelId",
            "stats count(*) by bin(5m)",
            "stats count(*) by bin(1h), modelId",
            "stats count(*) by operation",
            "stats avg(input.inputTokenCount)",
            "stats sum(latencyMs)",
            "stats count(errorCode)",
            "stats max(input.inputTokenCount) by modelId",
            "stats sum(input.inputTokenCount * 2)",
            "fields @timestamp",
        ] {
            assert_eq!(q(text), None, "{text}");
        }
        // Later commands work on the first one's answer.
        assert_eq!(
            q("stats count(*) as n by modelId | stats sum(n)"),
            Some(Grain::Model)
        );
    }

    #[test]
    fn a_rollup_that_is_not_exact_or_names_other_is_not_taken() {
        let mut s = Sums {
            calls: 2,
            input: 10,
            input_n: 1,
            ..Default::default()
        };
        let mut r = Rollup {
            v: rollup::VERSION,
            bucket_ms: rollup::BUCKET_MS,
            buckets: vec![rollup::Bucket {
                t: 0,
                s,
                lat: Default::default(),
            }],
            dims: [(
                "model".to_string(),
                [("m".to_string(), s), (rollup::NONE.to_string(), s)]
                    .into_iter()
                    .collect(),
            )]
            .into_iter()
            .collect(),
            exact: false,
        };
        assert!(!Partials::new(Grain::File).take(&r, 0));
        r.exact = true;
        let mut p = Partials::new(Grain::Model);
        assert!(p.take(&r, 5));
        let b = p.finish().unwrap();
        assert_eq!(b.num_rows(), 2);
        let models = b
            .column_by_name("modelId")
            .unwrap()
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .unwrap();
        // NONE sorts before "m": the call without a model is a null.
        assert!(datafusion::arrow::array::Array::is_null(models, 0));
        assert_eq!(models.value(1), "m");
        // A count no call had is a null sum; past i64 the file is scanned.
        s.output_n = 0;
        s.input = u64::MAX;
        r.buckets[0].s = s;
        assert!(!Partials::new(Grain::Bucket).take(&r, 0));
        r.dims
            .get_mut("model")
            .unwrap()
            .insert(rollup::OTHER.into(), Sums::default());
        assert!(!Partials::new(Grain::Model).take(&r, 0));
    }

    #[test]
    fn past_its_bounds_the_table_takes_no_more_files() {
        let s = Sums {
            calls: 1,
            ..Default::default()
        };
        let models = |n: usize, len: usize| -> Rollup {
            Rollup {
                v: rollup::VERSION,
                bucket_ms: rollup::BUCKET_MS,
                buckets: Vec::new(),
                dims: [(
                    "model".to_string(),
                    (0..n)
                        .map(|i| (format!("{i}-{}", "x".repeat(len)), s))
                        .collect(),
                )]
                .into_iter()
                .collect(),
                exact: true,
            }
        };
        let mut p = Partials::new(Grain::Model);
        let wide = models(5_000, 8);
        for _ in 0..MAX_ROWS / 5_000 {
            assert!(p.take(&wide, 0));
        }
        assert!(!p.take(&wide, 0), "one file past the bound");
        assert!(p.take(&models(0, 8), 0), "a file without calls still fits");
        assert_eq!(p.files, (MAX_ROWS / 5_000) as u64 + 1);
        // Long names: the bytes bound.
        let mut p = Partials::new(Grain::Model);
        assert!(!p.take(&models(100, 100_000), 0), "10 MB of names");
        assert!(p.take(&models(50, 100_000), 0));
        assert_eq!(p.finish().unwrap().num_rows(), 50);
    }
}
