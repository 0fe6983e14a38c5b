//! A query's time range, checked against counts worked out apart from the engine: over
//! store files wholly inside it (read with no filter on the time), files it cuts, the
//! unflushed tail, and files compacted into days; with and without rollups, in a count
//! and in rows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use logbook_query::{Engine, QueryResult};
use logbook_store::Store;
use std::sync::Arc;
use support::rfc3339;

const GROUP: &str = "g";
/// 2026-11-28T00:00:00Z.
const BASE: i64 = 1_795_824_000_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;
/// One call a minute for two days; the last 100 stay in the tail.
const N: i64 = 2 * 1440;
const TAIL: i64 = 100;

fn entry(i: i64) -> logbook_journal::Entry {
    let v = serde_json::json!({
        "schemaType": "ModelInvocationLog", "schemaVersion": "1.0",
        "timestamp": rfc3339(BASE + i * MINUTE),
        "accountId": "123456789012", "identity": {"arn": "arn:aws:iam::123456789012:user/u"},
        "region": "us-east-1", "requestId": format!("req-{i}"), "operation": "Converse",
        "modelId": "m", "input": {"inputBodyJson": {"messages": []}, "inputTokenCount": 1},
        "output": {"outputBodyJson": {}, "outputTokenCount": 2},
        "logbook": {"destination": {"bucket": "", "keyPrefix": "", "logGroup": GROUP}},
    });
    support::record(i as u64 + 1, &v)
}

fn run(e: &Engine, query: &str, start_ms: i64, end_ms: i64) -> QueryResult {
    support::insights(e, &[GROUP], query, start_ms, end_ms)
}

/// The calls in `[lo, hi]`, by minute number.
fn expected(lo: i64, hi: i64) -> Vec<i64> {
    (0..N)
        .filter(|i| (lo..=hi).contains(&(BASE + i * MINUTE)))
        .collect()
}

fn check(store: &Arc<Store>, when: &str) {
    let engines = [
        Engine::new(store.clone(), None),
        Engine::new(store.clone(), None).from_rollups(false),
    ];
    let tail_at = BASE + (N - TAIL) * MINUTE;
    let ranges = [
        // Everything.
        (BASE - 1, BASE + 3 * DAY),
        // Hours 3 and 4 exactly: files wholly inside, both ends on a call.
        (BASE + 3 * HOUR, BASE + 5 * HOUR - 1),
        // Cuts hour 3 one millisecond after its first call and hour 4 one before its last.
        (BASE + 3 * HOUR + 1, BASE + 5 * HOUR - MINUTE - 1),
        // From the middle of a file into the tail, and the tail alone, cut.
        (BASE + DAY + 30 * MINUTE, tail_at + 10 * MINUTE),
        (tail_at + 3 * MINUTE + 1, tail_at + 50 * MINUTE),
        // One call, one millisecond wide; no call.
        (BASE + 7 * HOUR + 5 * MINUTE, BASE + 7 * HOUR + 5 * MINUTE),
        (
            BASE + 7 * HOUR + 5 * MINUTE + 1,
            BASE + 7 * HOUR + 6 * MINUTE - 1,
        ),
    ];
    for (lo, hi) in ranges {
        let want = expected(lo, hi);
        for e in &engines {
            let n = run(
                e,
                "stats count(*) as n, sum(output.outputTokenCount) as o",
                lo,
                hi,
            );
            assert_eq!(
                n.rows,
                // A sum over no call is null, as in SQL and CloudWatch.
                vec![vec![
                    Some(want.len().to_string()),
                    (!want.is_empty()).then(|| (2 * want.len()).to_string())
                ]],
                "{when}: count over {lo}..{hi}"
            );
            let rows = run(
                e,
                "fields requestId | sort @timestamp asc | limit 10000",
                lo,
                hi,
            );
            let got: Vec<String> = rows.rows.iter().map(|r| r[0].clone().unwrap()).collect();
            let want: Vec<String> = want.iter().map(|i| format!("req-{i}")).collect();
            assert_eq!(got, want, "{when}: rows over {lo}..{hi}");
        }
    }
}

#[test]
fn a_time_range_keeps_exactly_the_calls_inside_it() {
    let d = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(d.path()).unwrap());
    store.create_group(GROUP).unwrap();
    let entries: Vec<_> = (0..N).map(entry).collect();
    // A file per hour but the tail.
    for h in 0..(N - TAIL) / 60 {
        store.add_entries(&entries[(h * 60) as usize..((h + 1) * 60) as usize]);
        store.flush().unwrap();
    }
    store.add_entries(&entries[((N - TAIL) / 60 * 60) as usize..]);
    check(&store, "hourly files and a tail");
    store.flush().unwrap();
    store.compact(BASE + 400 * DAY).unwrap();
    check(&store, "compacted");
}
