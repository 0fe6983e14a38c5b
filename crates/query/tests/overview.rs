//! The overview (issue #14): answered from the store files' rollups where a file lies
//! inside the range and from a scan elsewhere, it must equal the sums over the records
//! themselves and the chargeback report, for any range, bin and zone, and whichever files
//! have rollups.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use logbook_query::overview::{Overview, OverviewRequest};
use logbook_query::report::{format_scaled, Chargeback, Period};
use logbook_query::{Engine, Language, QueryError, QueryRequest};
use logbook_store::schema::scaled_decimal;
use logbook_store::Store;
use std::collections::BTreeMap;
use std::sync::Arc;
use support::{record, rfc3339, rt};

const GROUP: &str = "g";
/// 2026-11-28T00:00:00Z.
const BASE: i64 = 1_795_824_000_000;
const HOUR: i64 = 3_600_000;

#[derive(Clone)]
struct Call {
    ts: i64,
    model: &'static str,
    arn: String,
    tag: Option<&'static str>,
    meta: Option<&'static str>,
    cost: Option<String>,
    error: bool,
    latency: i64,
    input: u64,
}

fn calls(n: u64) -> Vec<Call> {
    let mut state = 11u64;
    (0..n)
        .map(|i| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = state >> 33;
            Call {
                // Three days, in order of arrival (a little out of order).
                ts: BASE + (i as i64 * 72 * HOUR) / n as i64 + (r % 5000) as i64,
                model: ["amazon.nova-lite-v1:0", "gpt-4o-mini", "claude"][(r % 3) as usize],
                arn: format!("arn:aws:iam::123456789012:user/u{}", r % 7),
                tag: [Some("search"), None, None][(r / 3 % 3) as usize],
                meta: [Some("ads"), None][(r / 9 % 2) as usize],
                cost: (!r.is_multiple_of(11))
                    .then(|| format!("0.{:012}", (r % 999_999_937) * 13 + 1)),
                error: r.is_multiple_of(17),
                latency: 20 + (r % 4000) as i64,
                input: r % 900,
            }
        })
        .collect()
}

fn entry(seq: u64, c: &Call) -> logbook_journal::Entry {
    let mut v = serde_json::json!({
        "schemaType": "ModelInvocationLog", "schemaVersion": "1.0", "timestamp": rfc3339(c.ts),
        "accountId": "123456789012", "identity": {"arn": c.arn},
        "region": "us-east-1", "requestId": format!("req-{seq}"), "operation": "Converse",
        "modelId": c.model,
        "input": {"inputTokenCount": c.input, "cacheReadInputTokenCount": 1},
        "output": {"outputTokenCount": 2 * c.input},
        "logbook": {"destination": {"bucket": "", "keyPrefix": "", "logGroup": GROUP}, "cost": c.cost,
                    "latencyMs": c.latency},
    });
    if c.error {
        v["errorCode"] = "ThrottlingException".into();
    }
    if let Some(t) = c.tag {
        v["logbook"]["principalTags"] = serde_json::json!({"team": t});
    }
    if let Some(m) = c.meta {
        v["requestMetadata"] = serde_json::json!({"team": m});
    }
    record(seq, &v)
}

fn req(start: i64, end: i64, bin_ms: i64, tz: &str) -> OverviewRequest {
    OverviewRequest {
        groups: vec![GROUP.into()],
        start_ms: start,
        end_ms: end,
        bin_ms,
        tz: tz.into(),
        top: 100,
        after_seq: 0,
    }
}

fn overview(e: &Engine, r: &OverviewRequest) -> Result<Overview, QueryError> {
    rt().block_on(e.overview(r))
}

/// The exact percentile as `pct` computes it.
fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let pos = p * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Check an overview against the calls themselves.
fn check(o: &Overview, all: &[Call], r: &OverviewRequest) {
    let inside: Vec<&Call> = all
        .iter()
        .filter(|c| c.ts >= r.start_ms && c.ts <= r.end_ms)
        .collect();
    let what = format!("{}..{} bin {} {}", r.start_ms, r.end_ms, r.bin_ms, r.tz);
    let cost = |cs: &[&Call]| -> String {
        format_scaled(
            cs.iter()
                .filter_map(|c| c.cost.as_deref())
                .map(|c| scaled_decimal(c).unwrap())
                .sum(),
        )
    };
    assert_eq!(o.total.calls, inside.len() as u64, "{what}");
    assert_eq!(o.total.cost, cost(&inside), "{what}");
    assert_eq!(
        o.total.errors,
        inside.iter().filter(|c| c.error).count() as u64,
        "{what}"
    );
    assert_eq!(
        o.total.unpriced_calls,
        inside.iter().filter(|c| c.cost.is_none()).count() as u64
    );
    assert_eq!(
        o.total.input_tokens,
        inside.iter().map(|c| c.input).sum::<u64>()
    );
    assert_eq!(
        o.total.output_tokens,
        inside.iter().map(|c| 2 * c.input).sum::<u64>()
    );
    assert_eq!(o.total.cache_read_tokens, inside.len() as u64);
    if !inside.is_empty() {
        let mut lat: Vec<f64> = inside.iter().map(|c| c.latency as f64).collect();
        for (p, got) in [
            (0.5, o.total.p50_latency_ms),
            (0.99, o.total.p99_latency_ms),
        ] {
            let want = pct(&mut lat, p);
            let got = got.unwrap();
            assert!(
                (got - want).abs() <= want * 0.01,
                "{what}: p{p} {got} vs {want}"
            );
        }
    }
    // The series: each bin's calls and cost.
    let mut bins: BTreeMap<i64, Vec<&Call>> = BTreeMap::new();
    for c in &inside {
        bins.entry(c.ts.div_euclid(r.bin_ms) * r.bin_ms)
            .or_default()
            .push(c);
    }
    let got: Vec<(i64, u64, String)> = o
        .series
        .iter()
        .map(|p| (p.t, p.totals.calls, p.totals.cost.clone()))
        .collect();
    let want: Vec<(i64, u64, String)> = bins
        .iter()
        .map(|(t, cs)| (*t, cs.len() as u64, cost(cs)))
        .collect();
    assert_eq!(got, want, "{what}");
    // Days in the zone, against a zone offset applied by hand (Kolkata is +05:30).
    let offset = match r.tz.as_str() {
        "UTC" => 0,
        "Asia/Kolkata" => 330 * 60_000,
        o => panic!("{o}"),
    };
    let mut days: BTreeMap<String, Vec<&Call>> = BTreeMap::new();
    for c in &inside {
        days.entry(rfc3339(c.ts + offset)[..10].to_string())
            .or_default()
            .push(c);
    }
    let got: Vec<(String, u64, String)> = o
        .days
        .iter()
        .map(|d| (d.day.clone(), d.calls, d.cost.clone()))
        .collect();
    let want: Vec<(String, u64, String)> = days
        .iter()
        .map(|(d, cs)| (d.clone(), cs.len() as u64, cost(cs)))
        .collect();
    assert_eq!(got, want, "{what}");
    // Tops: every value with its calls and cost (top 100 holds them all).
    type Of = Box<dyn Fn(&Call) -> String>;
    let dims: [(&str, Of); 3] = [
        ("model", Box::new(|c: &Call| c.model.to_string())),
        ("principal", Box::new(|c: &Call| c.arn.clone())),
        (
            "team",
            Box::new(|c: &Call| c.tag.or(c.meta).unwrap_or("(none)").to_string()),
        ),
    ];
    for (d, f) in &dims {
        let mut by: BTreeMap<String, Vec<&Call>> = BTreeMap::new();
        for c in &inside {
            by.entry(f(c)).or_default().push(c);
        }
        let mut want: Vec<(String, u64, String)> = by
            .iter()
            .map(|(v, cs)| (v.clone(), cs.len() as u64, cost(cs)))
            .collect();
        want.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let got: Vec<(String, u64, String)> = o.top[*d]
            .iter()
            .map(|t| (t.value.clone(), t.totals.calls, t.totals.cost.clone()))
            .collect();
        assert_eq!(got, want, "{what} {d}");
    }
}

fn chargeback_total(e: &Engine, start: i64, end: i64) -> (u64, String) {
    let c = Chargeback {
        by: vec![],
        period: Period::Day,
        tz: "UTC".into(),
    };
    let r = rt()
        .block_on(e.run(&QueryRequest {
            groups: vec![GROUP.into()],
            start_ms: start,
            end_ms: end,
            query: c.sql().unwrap(),
            language: Language::Sql,
            limit: 1_000_000,
            after_seq: 0,
            content: Default::default(),
        }))
        .unwrap();
    let r = c.report(&r).unwrap();
    (r.total.calls, r.total.cost)
}

/// Ranges that take whole files, cut files, fall between files, and reach into the tail.
fn ranges() -> Vec<(i64, i64, i64, &'static str)> {
    vec![
        (BASE - 10 * HOUR, BASE + 100 * HOUR, 3_600_000, "UTC"),
        (BASE - HOUR, BASE + 80 * HOUR, 86_400_000, "Asia/Kolkata"),
        (BASE + 7 * HOUR + 123, BASE + 50 * HOUR - 7, 900_000, "UTC"),
        (BASE + 30 * HOUR, BASE + 31 * HOUR, 60_000, "Asia/Kolkata"),
        (BASE + 30 * HOUR, BASE + 36 * HOUR, 300_000, "UTC"),
        (BASE + 71 * HOUR, BASE + 72 * HOUR + 5000, 900_000, "UTC"),
        (BASE + 200 * HOUR, BASE + 201 * HOUR, 900_000, "UTC"),
    ]
}

#[test]
fn the_overview_equals_the_records_and_the_chargeback_for_every_range() {
    let d = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(d.path()).unwrap());
    store.create_group(GROUP).unwrap();
    let all = calls(6000);
    let entries: Vec<_> = all
        .iter()
        .enumerate()
        .map(|(i, c)| entry(i as u64 + 1, c))
        .collect();
    // Several flushes (files per hour), then the last calls stay in the tail.
    for chunk in entries[..5000].chunks(1300) {
        store.add_entries(chunk);
        store.flush().unwrap();
    }
    store.add_entries(&entries[5000..]);
    let engine = Engine::new(store.clone(), None);
    for (s, e, bin, tz) in ranges() {
        let r = req(s, e, bin, tz);
        let o = overview(&engine, &r).unwrap();
        check(&o, &all, &r);
        let (calls, cost) = chargeback_total(&engine, s, e);
        assert_eq!((o.total.calls, o.total.cost.clone()), (calls, cost));
    }
    // The whole range: every file from its rollup, only the tail scanned.
    let o = overview(
        &engine,
        &req(BASE - 10 * HOUR, BASE + 100 * HOUR, HOUR, "UTC"),
    )
    .unwrap();
    assert!(o.sources.files_from_rollups > 10, "{:?}", o.sources);
    assert_eq!(o.sources.records_from_rollups, 5000);
    assert_eq!(o.sources.files_scanned, 0);
    assert_eq!(o.sources.records_scanned, 1000);
    // Bins shorter than a rollup's bucket are scanned, and still exact.
    let r = req(BASE - HOUR, BASE + 73 * HOUR, 300_000, "Asia/Kolkata");
    let o = overview(&engine, &r).unwrap();
    check(&o, &all, &r);
    assert_eq!(o.sources.files_from_rollups, 0);
    assert_eq!(o.sources.records_scanned, 6000);

    // Compaction writes new files with their own rollups: same answers.
    store.flush().unwrap();
    store.compact(BASE + 200 * HOUR).unwrap();
    for (s, e, bin, tz) in ranges() {
        let r = req(s, e, bin, tz);
        check(&overview(&engine, &r).unwrap(), &all, &r);
    }
    let o = overview(
        &engine,
        &req(BASE - 10 * HOUR, BASE + 100 * HOUR, HOUR, "UTC"),
    )
    .unwrap();
    assert_eq!(o.sources.records_from_rollups, 6000, "{:?}", o.sources);
    assert!(o.sources.files_from_rollups <= 4, "{:?}", o.sources);
}

#[test]
fn files_without_rollups_are_scanned_and_give_the_same_answer() {
    let d = tempfile::tempdir().unwrap();
    let all = calls(2000);
    {
        let store = Store::open(d.path()).unwrap();
        store.create_group(GROUP).unwrap();
        let entries: Vec<_> = all
            .iter()
            .enumerate()
            .map(|(i, c)| entry(i as u64 + 1, c))
            .collect();
        store.add_entries(&entries);
        store.flush().unwrap();
    }
    // As a store written before rollups: the manifest names no rollup.
    let m = d.path().join("manifest.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    let files = v["groups"][GROUP]["files"].as_array_mut().unwrap();
    assert!(files.len() > 10);
    for f in files {
        assert_eq!(
            f.as_object_mut().unwrap().remove("rollup"),
            Some(true.into())
        );
    }
    std::fs::write(&m, serde_json::to_vec(&v).unwrap()).unwrap();
    let store = Arc::new(Store::open(d.path()).unwrap());
    let engine = Engine::new(store, None);
    for (s, e, bin, tz) in ranges() {
        let r = req(s, e, bin, tz);
        let o = overview(&engine, &r).unwrap();
        check(&o, &all, &r);
        assert_eq!(o.sources.files_from_rollups, 0);
    }
}

#[test]
fn requests_the_overview_cannot_answer_within_its_bounds_are_refused_with_the_reason() {
    let d = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(d.path()).unwrap());
    store.create_group(GROUP).unwrap();
    let engine = Engine::new(store, None);
    let day = 86_400_000;
    for (r, says) in [
        (req(0, day, 7 * 60_000, "UTC"), "bin"),
        (req(0, day, 90_000, "UTC"), "bin"),
        (req(0, day, 0, "UTC"), "bin"),
        (req(0, day, -900_000, "UTC"), "bin"),
        (req(0, day, 9223372036854000000, "UTC"), "bin"),
        (req(0, 401 * day, day, "UTC"), "400 days"),
        (req(0, 30 * day, 60_000, "UTC"), "larger bin"),
        (req(day, 0, HOUR, "UTC"), "before start"),
        (req(0, day, HOUR, "Mars/Olympus"), "time zone"),
        (
            OverviewRequest {
                top: 0,
                ..req(0, day, HOUR, "UTC")
            },
            "top",
        ),
        (
            OverviewRequest {
                top: 101,
                ..req(0, day, HOUR, "UTC")
            },
            "top",
        ),
        (
            OverviewRequest {
                groups: vec![],
                ..req(0, day, HOUR, "UTC")
            },
            "log group",
        ),
        (
            OverviewRequest {
                groups: vec!["nope".into()],
                ..req(0, day, HOUR, "UTC")
            },
            "does not exist",
        ),
    ] {
        let e = overview(&engine, &r).unwrap_err();
        assert!(
            matches!(e, QueryError::Invalid(_) | QueryError::NoSuchGroup(_)),
            "{e:?}"
        );
        assert!(e.to_string().contains(says), "{says}: {e}");
    }
    // An empty group: zeros, no series, every dimension listed.
    let o = overview(&engine, &req(0, day, HOUR, "UTC")).unwrap();
    assert_eq!(o.total.calls, 0);
    assert_eq!(o.total.cost, "0");
    assert_eq!(o.total.p50_latency_ms, None);
    assert!(o.series.is_empty() && o.days.is_empty());
    assert_eq!(
        o.top.keys().collect::<Vec<_>>(),
        ["model", "principal", "team"]
    );
}

/// The chargeback through [`Engine::chargeback`] (rollups where they fit) against its SQL
/// alone, for every period, several zones and dimensions, before and after compaction.
#[test]
fn the_chargeback_from_rollups_equals_its_sql_to_the_digit() {
    use logbook_query::report::Dimension;
    let d = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(d.path()).unwrap());
    store.create_group(GROUP).unwrap();
    let all = calls(4000);
    let entries: Vec<_> = all
        .iter()
        .enumerate()
        .map(|(i, c)| entry(i as u64 + 1, c))
        .collect();
    for chunk in entries[..3500].chunks(900) {
        store.add_entries(chunk);
        store.flush().unwrap();
    }
    store.add_entries(&entries[3500..]);
    let engine = Engine::new(store.clone(), None);
    let sql_only = |c: &Chargeback, start: i64, end: i64| {
        let r = rt()
            .block_on(engine.run(&QueryRequest {
                groups: vec![GROUP.into()],
                start_ms: start,
                end_ms: end,
                query: c.sql().unwrap(),
                language: Language::Sql,
                limit: 1_000_000,
                after_seq: 0,
                content: Default::default(),
            }))
            .unwrap();
        c.report(&r).unwrap()
    };
    let mut used = 0;
    for compacted in [false, true] {
        if compacted {
            store.flush().unwrap();
            store.compact(BASE + 200 * HOUR).unwrap();
        }
        for by in [
            vec![],
            vec!["model"],
            vec!["team"],
            vec!["team", "model"],
            vec!["meta:team"],
        ] {
            for period in [Period::Day, Period::Week, Period::Month] {
                for tz in ["UTC", "Asia/Kolkata", "America/New_York"] {
                    // Before compaction a range that cuts files, after it all of time.
                    let ranges = if compacted {
                        [(i64::MIN / 2, i64::MAX / 2)]
                    } else {
                        [(BASE + 5 * HOUR + 17, BASE + 49 * HOUR)]
                    };
                    for (start, end) in ranges {
                        let c = Chargeback {
                            by: by.iter().map(|x| Dimension::parse(x).unwrap()).collect(),
                            period,
                            tz: tz.into(),
                        };
                        let (fast, sources) = rt()
                            .block_on(engine.chargeback(&c, &[GROUP.into()], start, end))
                            .unwrap();
                        let slow = sql_only(&c, start, end);
                        assert_eq!(fast, slow, "{by:?} {period:?} {tz} compacted {compacted}");
                        used += sources.files_from_rollups;
                        if by.len() > 1 || by == ["meta:team"] {
                            assert_eq!(sources.files_from_rollups, 0);
                        }
                    }
                }
            }
        }
    }
    assert!(used > 100, "{used}");
}
