//! Insights `stats` of token counts answered from the store files' rollups (issue #13):
//! every answer must be the one a full scan gives, value for value, over files wholly in
//! the range and files cut by it, the unflushed tail, calls without a model or a count,
//! a model spelled like the rollup's own "(none)", a negative count, and after
//! compaction; and the rollups must spare the read where they can answer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use logbook_query::{Engine, QueryResult};
use logbook_store::Store;
use std::sync::Arc;
use support::rfc3339;

const GROUP: &str = "g";
/// 2026-11-28T00:00:00Z.
const BASE: i64 = 1_795_824_000_000;
const DAY: i64 = 86_400_000;
/// One call a minute for three days.
const N: u64 = 3 * 1440;
/// A call with a negative input count (day 2), and one whose model is spelled "(none)"
/// (day 3).
const NEGATIVE: u64 = 1440 + 333;
const SPELLED_NONE: u64 = 2 * 1440 + 444;

fn entry(i: u64) -> logbook_journal::Entry {
    let mut v = serde_json::json!({
        "schemaType": "ModelInvocationLog", "schemaVersion": "1.0",
        "timestamp": rfc3339(BASE + i as i64 * 60_000),
        "accountId": "123456789012", "identity": {"arn": "arn:aws:iam::123456789012:user/u"},
        "region": "us-east-1", "requestId": format!("req-{i}"), "operation": "Converse",
        "input": {"inputBodyJson": {"messages": []}},
        "output": {"outputBodyJson": {}},
        "logbook": {"destination": {"bucket": "", "keyPrefix": "", "logGroup": GROUP}},
    });
    let model = match i % 7 {
        0 => None,
        1 | 6 => Some("m-a"),
        2 | 3 => Some("m-b"),
        4 => Some("m-err"),
        _ => Some("m-cache"),
    };
    let model = if i == SPELLED_NONE {
        Some("(none)")
    } else {
        model
    };
    if let Some(m) = model {
        v["modelId"] = m.into();
    }
    match model {
        // Failed calls: no counts at all; on day 2 some have an input count.
        Some("m-err") => {
            v["errorCode"] = "ThrottlingException".into();
            if i / 1440 == 1 && i.is_multiple_of(2) {
                v["input"]["inputTokenCount"] = (i % 13).into();
            }
        }
        Some("m-cache") => {
            v["input"]["inputTokenCount"] = (i % 100).into();
            v["input"]["cacheReadInputTokenCount"] = (i % 1000 + 1000).into();
            v["input"]["cacheWriteInputTokenCount"] = (i % 17).into();
            v["output"]["outputTokenCount"] = (i % 50).into();
        }
        _ => {
            v["input"]["inputTokenCount"] = (i % 300 + 7).into();
            v["output"]["outputTokenCount"] = (i % 90).into();
        }
    }
    if i == NEGATIVE {
        v["input"]["inputTokenCount"] = (-5).into();
    }
    logbook_journal::Entry {
        kind: logbook_journal::Kind::Record,
        version: 1,
        seq: i + 1,
        time_ms: 0,
        payload: v.to_string().into_bytes(),
    }
}

fn run(e: &Engine, query: &str, start_ms: i64, end_ms: i64) -> QueryResult {
    support::insights(e, &[GROUP], query, start_ms, end_ms)
}

const QUERIES: &[&str] = &[
    "stats sum(input.inputTokenCount), sum(output.outputTokenCount) by modelId",
    "stats count(*), count(input.inputTokenCount), sum(input.cacheReadInputTokenCount), sum(input.cacheWriteInputTokenCount) by modelId",
    "stats count(output.outputTokenCount) as n, count(input.cacheWriteInputTokenCount) as w",
    "stats count(*), sum(input.inputTokenCount)",
    "stats count(*) by bin(1h)",
    "stats sum(output.outputTokenCount) as o, count() as n by bin(1d) | sort o desc",
    "stats sum(input.inputTokenCount) + sum(output.outputTokenCount) as t, t / count(*) as per by modelId | sort t desc | limit 3",
    "stats sum(output.outputTokenCount) by bin(1mo)",
    "stats sum(input.cacheReadInputTokenCount) as r by bin(45m) | filter r > 0",
    "stats count(*) as n by modelId | stats sum(n) as all, count(*) as models",
    "stats sum(inputTokenCount) as totalInput, sum(outputTokenCount) as totalOutput, count(*) as calls by modelId",
    "stats count(cacheReadInputTokenCount), sum(cacheWriteInputTokenCount) by bin(15m)",
];

/// Compare every query with rollups on and off over `ranges`; return the records the
/// first query read with rollups, over the first range.
fn check(store: &Arc<Store>, when: &str) -> (u64, u64) {
    let on = Engine::new(store.clone(), None);
    let off = Engine::new(store.clone(), None).from_rollups(false);
    let ranges = [
        (BASE - 1, BASE + 3 * DAY),
        // Cuts the first and last days' files.
        (BASE + 3 * 3_600_000 + 17, BASE + 2 * DAY + 5 * 3_600_000),
        // Only the second day, exactly.
        (BASE + DAY, BASE + 2 * DAY - 1),
        (BASE + 10 * DAY, BASE + 11 * DAY),
    ];
    let mut first = None;
    for (lo, hi) in ranges {
        for q in QUERIES {
            let a = run(&on, q, lo, hi);
            let b = run(&off, q, lo, hi);
            assert_eq!(a.columns, b.columns, "{when}: {q} over {lo}..{hi}");
            let (mut ra, mut rb) = (a.rows.clone(), b.rows.clone());
            if !q.contains("sort") {
                ra.sort();
                rb.sort();
            }
            assert_eq!(ra, rb, "{when}: {q} over {lo}..{hi}");
            assert_eq!(
                a.stats.records_matched, b.stats.records_matched,
                "{when}: {q} over {lo}..{hi}"
            );
            assert!(a.stats.records_scanned <= b.stats.records_scanned);
            if first.is_none() {
                first = Some((a.stats.records_scanned, b.stats.records_scanned));
            }
        }
    }
    first.unwrap()
}

#[test]
fn token_stats_from_rollups_answer_what_a_scan_does() {
    let d = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(d.path()).unwrap());
    store.create_group(GROUP).unwrap();
    let entries: Vec<_> = (0..N).map(entry).collect();
    // Flushed in four parts (the store writes a file per hour), the last 100 calls left
    // in the tail. The hours of the negative count and of the model spelled "(none)"
    // have rollups that are not exact.
    for (a, b) in [(0, 700), (700, 1440), (1440, 2880), (2880, N - 100)] {
        store.add_entries(&entries[a as usize..b as usize]);
        store.flush().unwrap();
    }
    store.add_entries(&entries[(N - 100) as usize..]);
    let snap = store.snapshot(GROUP, BASE - 1, BASE + 3 * DAY).unwrap();
    let inexact: u64 = snap
        .files
        .iter()
        .filter(|(p, _)| !store.rollup(p).unwrap().unwrap().exact)
        .map(|(_, m)| m.rows)
        .sum();
    assert_eq!(inexact, 120, "two hours of 60 calls");
    let (on, off) = check(&store, "hourly files, one hour in two parts, and a tail");
    // Only the two hours and the tail were read.
    assert_eq!(off, N);
    assert_eq!(on, 120 + 100);
    // The answers themselves, for the simplest question: day 1's failed calls have no
    // counts, so their sums are null where no other day gives one.
    let only_day_one = run(
        &Engine::new(store.clone(), None),
        "stats sum(output.outputTokenCount) as o, count(input.inputTokenCount) as n by modelId",
        BASE,
        BASE + DAY - 1,
    );
    let err = only_day_one
        .rows
        .iter()
        .find(|r| r[0].as_deref() == Some("m-err"))
        .unwrap();
    assert_eq!(err[1], None);
    assert_eq!(err[2].as_deref(), Some("0"));
    assert!(only_day_one.rows.iter().any(|r| r[0].is_none()));
    // Compaction merges each day into one file with a rollup of its own.
    store.flush().unwrap();
    store.compact(BASE + 400 * DAY).unwrap();
    let snap = store.snapshot(GROUP, BASE - 1, BASE + 3 * DAY).unwrap();
    assert_eq!(snap.files.len(), 3);
    let (on, off) = check(&store, "compacted");
    assert_eq!(off, N);
    assert_eq!(on, N - 1440);
}
