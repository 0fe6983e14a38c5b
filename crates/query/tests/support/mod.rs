//! What the query crate's integration tests share: times as records write them, a
//! runtime, a record's journal entry, an Insights query over some groups.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use logbook_query::{Engine, Language, QueryRequest, QueryResult};

/// `ms` (epoch milliseconds) as a record's RFC 3339 `timestamp`.
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// A runtime on the test's thread.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The journal entry of the record `v`, number `seq`.
pub fn record(seq: u64, v: &serde_json::Value) -> logbook_journal::Entry {
    logbook_journal::Entry {
        kind: logbook_journal::Kind::Record,
        version: 1,
        seq,
        time_ms: 0,
        payload: v.to_string().into_bytes(),
    }
}

/// An Insights query over `groups` from `start_ms` to `end_ms`, at most 10,000 rows;
/// panics with the query on an error.
pub fn insights(
    e: &Engine,
    groups: &[&str],
    query: &str,
    start_ms: i64,
    end_ms: i64,
) -> QueryResult {
    rt().block_on(e.run(&QueryRequest {
        groups: groups.iter().map(|g| (*g).into()).collect(),
        start_ms,
        end_ms,
        query: query.into(),
        language: Language::Insights,
        limit: 10_000,
        after_seq: 0,
        content: Default::default(),
    }))
    .unwrap_or_else(|e| panic!("{query}: {e}"))
}
