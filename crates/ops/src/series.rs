//! One-minute aggregates of Bedrock's runtime metrics, kept in memory for the series
//! alarms watch, so that evaluating an alarm is a lookup, not a query. The records in the
//! log groups stay the durable source (the CloudWatch API reads them, and an alarm whose
//! window reaches back before a series was watched is evaluated from them); this is the
//! fast path for windows the series covers.
//!
//! Each record contributes to a metric by the same rules as the SQL definitions in
//! `query::metrics` and the Prometheus counters ([`crate::metrics`]): throttles count only
//! as throttles; a call refused before a model was chosen is a client error, not an
//! invocation; token metrics take a sample only when the count is known.

use logbook_record::InvocationRecord;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// A minute in milliseconds.
pub const MINUTE_MS: i64 = 60_000;

/// The statistics the series answer; percentiles need every sample and are read from
/// the records instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimpleStat {
    /// Number of samples.
    SampleCount,
    /// Sum.
    Sum,
    /// Mean.
    Average,
    /// Least.
    Minimum,
    /// Greatest.
    Maximum,
}

impl SimpleStat {
    /// `Sum`, `Average`, ...; `None` for percentiles and anything else.
    pub fn parse(s: &str) -> Option<SimpleStat> {
        Some(match s {
            "SampleCount" => SimpleStat::SampleCount,
            "Sum" => SimpleStat::Sum,
            "Average" => SimpleStat::Average,
            "Minimum" => SimpleStat::Minimum,
            "Maximum" => SimpleStat::Maximum,
            _ => return None,
        })
    }
}

/// Samples of one series in one minute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agg {
    /// Number of samples.
    pub n: u64,
    /// Their sum.
    pub sum: f64,
    /// The least.
    pub min: f64,
    /// The greatest.
    pub max: f64,
}

impl Agg {
    fn one(v: f64) -> Agg {
        Agg {
            n: 1,
            sum: v,
            min: v,
            max: v,
        }
    }

    fn add(&mut self, o: &Agg) {
        self.n += o.n;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }

    fn stat(&self, s: SimpleStat) -> f64 {
        match s {
            SimpleStat::SampleCount => self.n as f64,
            SimpleStat::Sum => self.sum,
            SimpleStat::Average => self.sum / self.n as f64,
            SimpleStat::Minimum => self.min,
            SimpleStat::Maximum => self.max,
        }
    }
}

/// A watched series: a metric, for one model id or (`None`) for every model.
pub type Key = (String, Option<String>);

#[derive(Debug)]
struct Watched {
    /// How far back minutes are kept.
    keep_ms: i64,
    /// The first minute whose every sample the series holds: the first after it was
    /// watched, later the first not cut (windows may start here or later).
    kept_from_ms: i64,
    minutes: BTreeMap<i64, Agg>,
}

/// The watched series.
#[derive(Debug, Default)]
pub struct MinuteSeries {
    any: AtomicBool,
    inner: Mutex<HashMap<Key, Watched>>,
}

/// The samples a record gives each metric: `(metric, value)`.
pub fn samples(r: &InvocationRecord) -> Vec<(&'static str, f64)> {
    let status = r.logbook.http_status;
    if status == 429 || r.error_code.as_deref() == Some("ThrottlingException") {
        return vec![("InvocationThrottles", 1.0)];
    }
    let mut out = Vec::with_capacity(10);
    if (400..500).contains(&status) {
        out.push(("InvocationClientErrors", 1.0));
    } else if status >= 500 {
        out.push(("InvocationServerErrors", 1.0));
    }
    if r.logbook.provider.is_none() {
        return out;
    }
    out.push(("Invocations", 1.0));
    out.push(("InvocationLatency", r.logbook.latency_ms as f64));
    let input = r.input.input_token_count;
    let output = r.output.as_ref().and_then(|o| o.output_token_count);
    let cr = r.input.cache_read_input_token_count;
    let cw = r.input.cache_write_input_token_count;
    for (m, v) in [
        ("InputTokenCount", input),
        ("OutputTokenCount", output),
        ("CacheReadInputTokens", cr),
        ("CacheWriteInputTokens", cw),
        ("TimeToFirstToken", r.logbook.time_to_first_token_ms),
    ] {
        if let Some(v) = v {
            out.push((m, v as f64));
        }
    }
    let tpm = input.unwrap_or(0)
        + cw.unwrap_or(0)
        + output.unwrap_or(0) * crate::metrics::output_burndown(&r.model_id);
    out.push(("EstimatedTPMQuotaUsage", tpm as f64));
    out
}

fn lock(m: &Mutex<HashMap<Key, Watched>>) -> std::sync::MutexGuard<'_, HashMap<Key, Watched>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MinuteSeries {
    /// Watch exactly these series from now on (`(key, how far back to keep, ms)`); a new
    /// one covers the minutes that start after `now_ms`, one no longer listed is dropped.
    pub fn sync(&self, wanted: &[(Key, i64)], now_ms: i64) {
        let mut g = lock(&self.inner);
        let keys: HashSet<&Key> = wanted.iter().map(|(k, _)| k).collect();
        g.retain(|k, _| keys.contains(k));
        for (k, keep) in wanted {
            let since = (now_ms.div_euclid(MINUTE_MS) + 1) * MINUTE_MS;
            let w = g.entry(k.clone()).or_insert_with(|| Watched {
                keep_ms: *keep,
                kept_from_ms: since,
                minutes: BTreeMap::new(),
            });
            w.keep_ms = *keep;
            // Whole minutes older than what is kept go.
            let cut =
                (now_ms - w.keep_ms - MINUTE_MS).div_euclid(MINUTE_MS) * MINUTE_MS + MINUTE_MS;
            if cut > w.kept_from_ms {
                w.minutes = w.minutes.split_off(&cut);
                w.kept_from_ms = cut;
            }
        }
        self.any.store(!g.is_empty(), Ordering::Release);
    }

    /// Add a finished call. Nothing to do (one atomic load) when nothing is watched.
    pub fn observe(&self, r: &InvocationRecord) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let Some(t) = logbook_record::parse_timestamp(&r.timestamp) else {
            return;
        };
        let ms = (t.unix_timestamp_nanos() / 1_000_000) as i64;
        let minute = ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        let samples = samples(r);
        let mut g = lock(&self.inner);
        for (metric, v) in samples {
            for model in [Some(r.model_id.as_str()), None] {
                let key = (metric.to_string(), model.map(str::to_string));
                if let Some(w) = g.get_mut(&key) {
                    w.minutes
                        .entry(minute)
                        .and_modify(|a| a.add(&Agg::one(v)))
                        .or_insert_with(|| Agg::one(v));
                }
            }
        }
    }

    /// The `n` periods of `period_ms` (a multiple of a minute) from `start_ms` (aligned),
    /// oldest first, `None` where a period has no sample; `None` overall when the series
    /// is not watched or does not cover the window's start.
    pub fn window(
        &self,
        key: &Key,
        stat: SimpleStat,
        period_ms: i64,
        start_ms: i64,
        n: i64,
    ) -> Option<Vec<Option<f64>>> {
        if period_ms <= 0 || period_ms % MINUTE_MS != 0 {
            return None;
        }
        let g = lock(&self.inner);
        let w = g.get(key)?;
        if start_ms < w.kept_from_ms {
            return None;
        }
        Some(
            (0..n)
                .map(|i| {
                    let from = start_ms + i * period_ms;
                    let mut acc: Option<Agg> = None;
                    for (_, a) in w.minutes.range(from..from + period_ms) {
                        match acc.as_mut() {
                            Some(x) => x.add(a),
                            None => acc = Some(*a),
                        }
                    }
                    acc.map(|a| a.stat(stat))
                })
                .collect(),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use logbook_record::{Identity, Input, LogbookExt, Output};

    fn rec(
        ts: &str,
        model: &str,
        status: u16,
        error: Option<&str>,
        tokens: Option<u64>,
    ) -> InvocationRecord {
        InvocationRecord {
            schema_type: "ModelInvocationLog".into(),
            schema_version: "1.0".into(),
            account_id: "1".into(),
            identity: Identity { arn: "a".into() },
            region: "us-east-1".into(),
            request_id: "r".into(),
            operation: "Converse".into(),
            request_metadata: None,
            inference_region: None,
            performance_config: None,
            timestamp: ts.into(),
            model_id: model.into(),
            error_code: error.map(str::to_string),
            input: Input {
                input_token_count: tokens,
                ..Default::default()
            },
            output: Some(Output {
                output_token_count: tokens,
                ..Default::default()
            }),
            logbook: LogbookExt {
                http_status: status,
                provider: (status != 403).then(|| "mock".to_string()),
                latency_ms: 40,
                ..Default::default()
            },
        }
    }

    const T0: i64 = 1_764_633_600_000; // 2025-12-02T00:00:00Z

    fn key(m: &str, model: Option<&str>) -> Key {
        (m.into(), model.map(str::to_string))
    }

    #[test]
    fn nothing_is_kept_for_series_no_alarm_watches() {
        let s = MinuteSeries::default();
        s.observe(&rec("2025-12-02T00:01:05Z", "m", 200, None, Some(3)));
        assert!(s.inner.lock().unwrap().is_empty());
        assert_eq!(
            s.window(
                &key("Invocations", Some("m")),
                SimpleStat::Sum,
                60_000,
                T0,
                1
            ),
            None
        );
    }

    #[test]
    fn a_watched_series_answers_only_windows_it_covers_and_follows_the_metric_rules() {
        let s = MinuteSeries::default();
        let wanted = vec![
            (key("Invocations", Some("m")), 600_000),
            (key("InvocationThrottles", None), 600_000),
            (key("InvocationClientErrors", Some("m")), 600_000),
            (key("InputTokenCount", Some("m")), 600_000),
        ];
        s.sync(&wanted, T0 + 30_000); // covers minutes from T0 + 1 min
        for r in [
            rec("2025-12-02T00:01:05Z", "m", 200, None, Some(3)),
            rec("2025-12-02T00:01:59Z", "m", 200, None, None), // no count: no token sample
            rec(
                "2025-12-02T00:02:00Z",
                "m",
                429,
                Some("ThrottlingException"),
                None,
            ),
            rec(
                "2025-12-02T00:02:10Z",
                "other",
                429,
                Some("ThrottlingException"),
                None,
            ),
            rec(
                "2025-12-02T00:03:10Z",
                "m",
                403,
                Some("AccessDeniedException"),
                None,
            ),
            rec(
                "2025-12-02T00:03:20Z",
                "m",
                400,
                Some("ValidationException"),
                Some(5),
            ),
        ] {
            s.observe(&r);
        }
        let w = |m: &str, model: Option<&str>, st, period, start, n| {
            s.window(&key(m, model), st, period, start, n)
        };
        let min = 60_000;
        // Before coverage: not answered (the records are).
        assert_eq!(
            w("Invocations", Some("m"), SimpleStat::Sum, min, T0, 2),
            None
        );
        assert_eq!(
            w("Invocations", Some("m"), SimpleStat::Sum, min, T0 + min, 3),
            Some(vec![Some(2.0), None, Some(1.0)]),
            "throttles and calls refused before a model are not invocations"
        );
        assert_eq!(
            w(
                "InvocationThrottles",
                None,
                SimpleStat::Sum,
                2 * min,
                T0 + min,
                1
            ),
            Some(vec![Some(2.0)]),
            "every model"
        );
        assert_eq!(
            w(
                "InvocationClientErrors",
                Some("m"),
                SimpleStat::SampleCount,
                3 * min,
                T0 + min,
                1
            ),
            Some(vec![Some(2.0)])
        );
        assert_eq!(
            w(
                "InputTokenCount",
                Some("m"),
                SimpleStat::Average,
                3 * min,
                T0 + min,
                1
            ),
            Some(vec![Some(4.0)])
        );
        assert_eq!(
            w(
                "InputTokenCount",
                Some("m"),
                SimpleStat::Maximum,
                3 * min,
                T0 + min,
                1
            ),
            Some(vec![Some(5.0)])
        );
        // A period that is not whole minutes is for the records.
        assert_eq!(
            w(
                "Invocations",
                Some("m"),
                SimpleStat::Sum,
                10_000,
                T0 + min,
                1
            ),
            None
        );
        // Unwatched: dropped.
        s.sync(&wanted[..1], T0 + 5 * min);
        assert_eq!(
            w(
                "InvocationThrottles",
                None,
                SimpleStat::Sum,
                min,
                T0 + min,
                1
            ),
            None
        );
    }

    #[test]
    fn old_minutes_are_cut_and_windows_needing_them_fall_back() {
        let s = MinuteSeries::default();
        let k = key("Invocations", Some("m"));
        s.sync(&[(k.clone(), 120_000)], T0 - 1);
        for i in 0..10 {
            s.observe(&rec(
                &logbook_record::record_timestamp(
                    time::OffsetDateTime::from_unix_timestamp((T0 + i * 60_000) / 1000 + 1)
                        .unwrap(),
                ),
                "m",
                200,
                None,
                Some(1),
            ));
        }
        s.sync(&[(k.clone(), 120_000)], T0 + 9 * 60_000 + 1);
        assert!(s.window(&k, SimpleStat::Sum, 60_000, T0, 1).is_none());
        assert_eq!(
            s.window(&k, SimpleStat::Sum, 60_000, T0 + 7 * 60_000, 3),
            Some(vec![Some(1.0), Some(1.0), Some(1.0)])
        );
    }
}
