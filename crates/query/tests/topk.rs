//! Insights queries that keep the first rows of one column's order read only the row
//! groups that can hold them (issue #13): every answer must be the one a whole scan gives,
//! over hourly files and compacted ones of several row groups, ranges that cut files,
//! calls without the field (last either way), ties, decimals, two log groups and the
//! unflushed tail; and the read must be smaller where the zone maps allow it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use logbook_query::{Engine, QueryResult};
use logbook_store::Store;
use std::sync::Arc;
use support::rfc3339;

/// 2026-11-28T00:00:00Z.
const BASE: i64 = 1_795_824_000_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// One call every four seconds for two days: a compacted day is two row groups.
const N: u64 = 2 * 21_600;
/// Calls left in the tail (the slowest of all).
const TAIL: u64 = 100;
/// Calls of the second group.
const OTHER: u64 = 50;

fn entry(group: &str, seq: u64, i: u64, at: i64) -> logbook_journal::Entry {
    let mut v = serde_json::json!({
        "schemaType": "ModelInvocationLog", "schemaVersion": "1.0",
        "timestamp": rfc3339(at),
        "accountId": "123456789012", "identity": {"arn": "arn:aws:iam::123456789012:user/u"},
        "region": "us-east-1", "requestId": format!("{group}-{i:06}"), "operation": "Converse",
        "modelId": "m",
        "input": {"inputBodyJson": {"messages": []}, "inputTokenCount": i % 300},
        "output": {"outputBodyJson": {}},
        "logbook": {"destination": {"bucket": "", "keyPrefix": "", "logGroup": group},
                    "latencyMs": (i * 7919) % 50_021},
    });
    if group == "h" {
        // The second group's calls are slower and longer than the first's.
        v["logbook"]["latencyMs"] = (50_100 + i).into();
        v["output"]["outputTokenCount"] = (2_000_000 + i).into();
    } else if (i * 4 / 3600) % 24 != 5 {
        // Output counts: distinct, but none in the sixth hour (failed calls).
        v["output"]["outputTokenCount"] = ((i * 104_729) % 1_000_003).into();
    }
    if i.is_multiple_of(3) {
        v["logbook"]["cost"] = format!("0.{:09}", (i * 7_907) % 999_999_937).into();
    }
    support::record(seq, &v)
}

fn run(e: &Engine, query: &str, start_ms: i64, end_ms: i64) -> QueryResult {
    support::insights(e, &["g", "h"], query, start_ms, end_ms)
}

/// Queries, and whether their order decides every row (otherwise only the ordered
/// column's values are compared: rows tied with the last are any of the tied).
const QUERIES: &[(&str, bool)] = &[
    ("fields requestId, logbook.latencyMs | sort logbook.latencyMs desc | limit 10", true),
    ("fields requestId, logbook.latencyMs | sort logbook.latencyMs asc | limit 25", true),
    ("fields @timestamp, requestId | limit 20", true),
    ("fields @timestamp, requestId | sort @timestamp asc | limit 7", true),
    ("fields requestId | limit 3000", true),
    ("fields requestId, logbook.cost | sort logbook.cost desc | limit 5", true),
    ("fields requestId, logbook.cost | sort logbook.cost asc | limit 5", true),
    ("fields requestId, input.inputTokenCount | sort input.inputTokenCount desc, requestId asc | limit 50", true),
    ("fields requestId, input.inputTokenCount | sort input.inputTokenCount desc | limit 40", false),
    ("fields output.outputTokenCount | sort output.outputTokenCount desc | limit 10", true),
    ("fields outputTokenCount | sort outputTokenCount | limit 10", true),
    ("fields requestId, output.outputTokenCount | sort output.outputTokenCount asc | limit 10", true),
    // Over three hours, 1,800 calls have the field: the last 200 rows are any of those without.
    ("fields requestId, output.outputTokenCount | sort output.outputTokenCount desc | limit 2000", false),
    // More rows than have the field: those without come last.
    ("fields requestId, output.outputTokenCount | sort output.outputTokenCount asc | limit 9000", false),
];

/// Compare every query with order bounds on and off over `ranges`; return the records the
/// first query read with and without bounds over the whole range.
fn check(store: &Arc<Store>, when: &str) -> (u64, u64) {
    let on = Engine::new(store.clone(), None);
    let off = Engine::new(store.clone(), None).order_bounds(false);
    // Row groups only: no ordered column read first.
    let zones = Engine::new(store.clone(), None).order_pick_budget(0);
    // Past the candidates it may keep (here 5), the same row groups' path.
    let capped = Engine::new(store.clone(), None).order_pick_candidates(5);
    let ranges = [
        (BASE - 1, BASE + 3 * DAY),
        // Cuts hours and the two days.
        (BASE + 3 * HOUR + 17_000, BASE + DAY + 5 * HOUR + 1),
        (BASE + DAY, BASE + 2 * DAY - 1),
        // Three hours, the middle one's calls without output counts.
        (BASE + 4 * HOUR, BASE + 7 * HOUR - 1),
        (BASE + 10 * DAY, BASE + 11 * DAY),
    ];
    let mut first = None;
    let mut gave_up = false;
    for (lo, hi) in ranges {
        for (q, exact) in QUERIES {
            let b = run(&off, q, lo, hi);
            let z = run(&zones, q, lo, hi);
            let a = run(&on, q, lo, hi);
            let c = run(&capped, q, lo, hi);
            let what = format!("{when}: {q} over {lo}..{hi}");
            assert!(z.stats.records_scanned <= b.stats.records_scanned, "{what}");
            assert!(a.stats.records_scanned <= z.stats.records_scanned, "{what}");
            assert!(c.stats.records_scanned <= z.stats.records_scanned, "{what}");
            // Picked as without the cap, or gave up and read the row groups.
            let (ca, cz) = (c.stats.records_scanned, z.stats.records_scanned);
            assert!(ca == a.stats.records_scanned || ca == cz, "{what}");
            gave_up |= ca == cz && cz > a.stats.records_scanned;
            for (how, x) in [("picked rows", &a), ("row groups", &z), ("capped", &c)] {
                let what = format!("{what} ({how})");
                assert_eq!(x.columns, b.columns, "{what}");
                assert_eq!(x.rows.len(), b.rows.len(), "{what}");
                if *exact {
                    assert_eq!(x.rows, b.rows, "{what}");
                } else {
                    let ordered = x.columns.len() - 2; // before @ptr
                    let values = |r: &QueryResult| {
                        r.rows
                            .iter()
                            .map(|row| row[ordered].clone())
                            .collect::<Vec<_>>()
                    };
                    assert_eq!(values(x), values(&b), "{what}");
                }
            }
            if first.is_none() {
                first = Some((a.stats.records_scanned, b.stats.records_scanned));
            }
        }
    }
    assert!(gave_up, "{when}: no query passed the cap of candidates");
    first.unwrap()
}

#[test]
fn the_first_rows_of_an_order_are_what_a_whole_scan_gives() {
    // The store opened by a relative path, which DataFusion's scan makes absolute (the
    // scan and the bound must name files alike). The only test in this binary: it may
    // change the working folder.
    let d = tempfile::Builder::new().prefix("top k ").tempdir().unwrap();
    std::env::set_current_dir(d.path()).unwrap();
    let store = Arc::new(Store::open("store").unwrap());
    store.create_group("g").unwrap();
    store.create_group("h").unwrap();
    let mut entries: Vec<_> = (0..N)
        .map(|i| entry("g", i + 1, i, BASE + i as i64 * 4_000))
        .collect();
    // The second group: a few calls, slower than any of the first's but the tail's.
    entries.extend((0..OTHER).map(|i| entry("h", N + i + 1, i, BASE + i as i64 * 60_000 + 1)));
    // Flushed (a file per hour and group), the last calls left in the tail.
    store.add_entries(&entries);
    store.flush().unwrap();
    let mut tail: Vec<_> = (0..TAIL)
        .map(|i| {
            let seq = N + OTHER + i + 1;
            entry("g", seq, N + i, BASE + 2 * DAY - 1 - i as i64)
        })
        .collect();
    // The tail holds the two slowest calls of all.
    for (t, lat) in tail.iter_mut().zip([60_000, 60_001]) {
        let mut v: serde_json::Value = serde_json::from_slice(&t.payload).unwrap();
        v["logbook"]["latencyMs"] = lat.into();
        t.payload = v.to_string().into_bytes();
    }
    store.add_entries(&tail);
    let (on, off) = check(&store, "hourly files and a tail");
    assert_eq!(off, N + OTHER + TAIL);
    // The ten slowest: ten rows of files (picked by their latencies, read first), the tail.
    assert!(on <= 10 + TAIL, "read {on}");
    let slowest = run(
        &Engine::new(store.clone(), None),
        QUERIES[0].0,
        BASE - 1,
        BASE + 3 * DAY,
    );
    assert_eq!(slowest.rows[0][1].as_deref(), Some("60001"));
    assert_eq!(slowest.rows[1][1].as_deref(), Some("60000"));
    // Calls without the field come last, greatest first and least first.
    for dir in ["desc", "asc"] {
        let q = format!("fields requestId, output.outputTokenCount | sort output.outputTokenCount {dir} | limit 9000");
        let r = run(
            &Engine::new(store.clone(), None),
            &q,
            BASE + 4 * HOUR,
            BASE + 7 * HOUR - 1,
        );
        assert_eq!(r.rows.len(), 2700, "{q}");
        assert!(r.rows[..1800].iter().all(|row| row[1].is_some()), "{q}");
        assert!(r.rows[1800..].iter().all(|row| row[1].is_none()), "{q}");
    }
    // Compaction: a file per day, of two row groups.
    store.flush().unwrap();
    store.compact(BASE + 400 * DAY).unwrap();
    let snap = store.snapshot("g", BASE - 1, BASE + 3 * DAY).unwrap();
    assert_eq!(snap.files.len(), 2);
    for (p, _) in &snap.files {
        assert_eq!(store.zone_map(p).unwrap().zones.len(), 2, "{}", p.display());
    }
    let (on, off) = check(&store, "compacted");
    assert_eq!(off, N + OTHER + TAIL);
    assert!(on <= 10, "read {on} of {off}");
}
