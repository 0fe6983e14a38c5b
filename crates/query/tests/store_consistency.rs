//! Queries against a store that changes under them: a count taken while the tail is
//! flushed to Parquet and files are compacted never counts a record twice (or loses one),
//! and a group's retention applies to what a query returns before and after the expired
//! files are dropped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use logbook_query::{Engine, Language, QueryRequest};
use logbook_store::Store;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use support::rfc3339;

const GROUP: &str = "g";
const DAY: i64 = 86_400_000;

fn entry(seq: u64, ts_ms: i64) -> logbook_journal::Entry {
    let line = serde_json::json!({
        "schemaType": "ModelInvocationLog", "schemaVersion": "1.0", "timestamp": rfc3339(ts_ms),
        "accountId": "123456789012", "identity": {"arn": "arn:aws:iam::123456789012:user/a"},
        "region": "us-east-1", "requestId": format!("req-{seq}"), "operation": "Converse",
        "modelId": "m", "input": {"inputContentType": "application/json", "inputTokenCount": 1},
        "logbook": {"destination": {"bucket": "", "keyPrefix": "", "logGroup": GROUP}}
    });
    logbook_journal::Entry {
        kind: logbook_journal::Kind::Record,
        version: 1,
        seq,
        time_ms: 0,
        payload: line.to_string().into_bytes(),
    }
}

fn count(e: &Engine, rt: &tokio::runtime::Runtime, q: &str, language: Language) -> Vec<i64> {
    let r = rt
        .block_on(e.run(&QueryRequest {
            groups: vec![GROUP.into()],
            start_ms: 0,
            end_ms: i64::MAX / 2,
            query: q.into(),
            language,
            limit: 10,
            after_seq: 0,
            content: Default::default(),
        }))
        .unwrap();
    r.rows[0]
        .iter()
        .map(|c| c.as_deref().unwrap_or("0").parse().unwrap())
        .collect()
}

#[test]
fn a_query_during_flush_and_compaction_never_counts_a_record_twice() {
    let d = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(d.path()).unwrap());
    store.create_group(GROUP).unwrap();
    let engine = Engine::new(store.clone(), None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let added = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, added, done) = (store.clone(), added.clone(), done.clone());
        std::thread::spawn(move || {
            let now = logbook_store::now_ms();
            let mut seq = 1;
            for round in 0..80u64 {
                let batch: Vec<_> = (0..25)
                    .map(|i| {
                        seq += 1;
                        entry(seq - 1, now - i * 1000)
                    })
                    .collect();
                store.add_entries(&batch);
                added.fetch_add(batch.len() as u64, Ordering::SeqCst);
                store.flush().unwrap();
                if round % 7 == 6 {
                    // Every partition counts as closed three hours from now: merge them.
                    store.compact(now + 3 * 3_600_000).unwrap();
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut queries = 0;
    while !done.load(Ordering::SeqCst) || queries < 5 {
        let lo = added.load(Ordering::SeqCst) as i64;
        let got = count(
            &engine,
            &rt,
            "stats count(*) as n, count_distinct(requestId) as d",
            Language::Insights,
        );
        let hi = added.load(Ordering::SeqCst) as i64;
        assert!(
            got[0] >= lo && got[0] <= hi,
            "counted {} with {lo}..{hi} added",
            got[0]
        );
        assert_eq!(got[0], got[1], "a record counted twice");
        queries += 1;
    }
    writer.join().unwrap();
    assert_eq!(
        count(&engine, &rt, "stats count(*) as n", Language::Insights),
        [2000]
    );
    assert!(queries >= 5, "{queries}");
    eprintln!("{queries} queries ran during 80 flushes and 11 compactions");
}

#[test]
fn retention_applies_to_queries_before_and_after_expired_files_go() {
    let d = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(d.path()).unwrap());
    store.create_group(GROUP).unwrap();
    let engine = Engine::new(store.clone(), None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let now = logbook_store::now_ms();
    // 20 records ten days old and 30 from the last hour: half of each in a Parquet file,
    // half in the in-memory tail.
    // (Sequence numbers in the order the journal would hand them over.)
    let old = |s: u64| entry(s, now - 10 * DAY + s as i64);
    let new = |s: u64| entry(s, now - 3_600_000 + s as i64);
    let first: Vec<_> = (1..=10).map(old).chain((11..=25).map(new)).collect();
    // And two at the retention boundary, in the hour that holds it: partitions are
    // hours, so only the query's own cut at the boundary can tell these two apart.
    let cutoff = now - DAY;
    let edge_old = (cutoff - cutoff.rem_euclid(3_600_000)).max(cutoff - 60_000);
    let mut second: Vec<_> = (26..=35).map(old).chain((36..=50).map(new)).collect();
    second.push(entry(51, edge_old));
    second.push(entry(52, cutoff + 60_000));
    store.add_entries(&first);
    store.flush().unwrap();
    store.add_entries(&second);
    let sql = "select count(*) as n from invocations";
    let insights = "stats count(*) as n";
    assert_eq!(count(&engine, &rt, insights, Language::Insights), [52]);
    store.set_retention(GROUP, Some(1)).unwrap();
    // Nothing dropped yet: the query cuts at the retention boundary itself.
    assert_eq!(count(&engine, &rt, insights, Language::Insights), [31]);
    assert_eq!(count(&engine, &rt, sql, Language::Sql), [31]);
    store.flush().unwrap();
    assert_eq!(count(&engine, &rt, insights, Language::Insights), [31]);
    // Expired files go (both flushes wrote one for the old hour; the boundary's file
    // stays while it holds a live record); the answer stays.
    let dropped = store.apply_retention(now).unwrap();
    assert!((2..=3).contains(&dropped), "{dropped}");
    assert_eq!(count(&engine, &rt, insights, Language::Insights), [31]);
    assert_eq!(count(&engine, &rt, sql, Language::Sql), [31]);
    // Without the retention, only what is still stored comes back: the old files are gone.
    store.set_retention(GROUP, None).unwrap();
    let left = count(&engine, &rt, insights, Language::Insights)[0];
    assert!((31..=32).contains(&left), "{left}");
}

/// Parquet files written before a column existed (the cost columns were added after
/// stores were in use) read as null in that column; new files carry it; both sum exactly.
#[test]
fn files_written_before_the_cost_columns_still_read_and_costs_sum_exactly() {
    use datafusion::arrow::array::RecordBatch;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use datafusion::parquet::arrow::ArrowWriter;
    let d = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(d.path()).unwrap());
    store.create_group(GROUP).unwrap();
    let now = logbook_store::now_ms();
    store.add_entries(&[entry(1, now - 2000), entry(2, now - 1000)]);
    store.flush().unwrap();
    // Rewrite every Parquet file as the old format wrote it: the first 30 columns only.
    let mut rewritten = 0;
    for f in walk(d.path()) {
        if f.extension().is_some_and(|e| e == "parquet") {
            let file = std::fs::File::open(&f).unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap();
            let batches: Vec<RecordBatch> = reader
                .map(|b| b.unwrap().project(&(0..30).collect::<Vec<_>>()).unwrap())
                .collect();
            let out = std::fs::File::create(&f).unwrap();
            let mut w = ArrowWriter::try_new(out, batches[0].schema(), None).unwrap();
            for b in &batches {
                w.write(b).unwrap();
            }
            w.close().unwrap();
            rewritten += 1;
        }
    }
    assert!(rewritten > 0);
    // New records carry costs whose float sum would not be exact.
    let priced = |seq: u64, ts: i64, cost: &str| {
        let mut e = entry(seq, ts);
        let mut v: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
        v["logbook"]["cost"] = cost.into();
        e.payload = v.to_string().into_bytes();
        e
    };
    store.add_entries(&[
        priced(3, now - 500, "0.1"),
        priced(4, now - 400, "0.2"),
        priced(5, now - 300, "0.000000000001"),
    ]);
    let engine = Engine::new(store.clone(), None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let run = |q: &str, language| {
        rt.block_on(engine.run(&QueryRequest {
            groups: vec![GROUP.into()],
            start_ms: 0,
            end_ms: i64::MAX / 2,
            query: q.into(),
            language,
            limit: 10,
            after_seq: 0,
            content: Default::default(),
        }))
        .unwrap()
        .rows
    };
    let rows = run(
        "SELECT count(*), count(cost), CAST(sum(cost) AS VARCHAR) FROM invocations",
        Language::Sql,
    );
    assert_eq!(
        rows[0],
        [
            Some("5".into()),
            Some("3".into()),
            Some("0.300000000001".into())
        ]
    );
    let rows = run("stats sum(logbook.cost) as total", Language::Insights);
    assert_eq!(rows[0][0].as_deref(), Some("0.300000000001"));
    // And after the new records are flushed next to the old files.
    store.flush().unwrap();
    let rows = run(
        "SELECT count(*), CAST(sum(cost) AS VARCHAR) FROM invocations",
        Language::Sql,
    );
    assert_eq!(rows[0], [Some("5".into()), Some("0.300000000001".into())]);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Encrypted Parquet files (a master key active, one rotated out) answer both query
/// languages exactly as plain ones do; without the old key the store does not open.
#[test]
fn queries_read_encrypted_files_under_rotated_keys() {
    let d = tempfile::tempdir().unwrap();
    let key = |b: u8| logbook_seal::MasterKey::from_bytes(&[b; 32]).unwrap();
    let ring = |active: u8, old: &[u8]| {
        Arc::new(logbook_seal::Keyring::new(
            Some(key(active)),
            old.iter().map(|&b| key(b)).collect(),
        ))
    };
    let disk = logbook_store::RealDisk::shared();
    let now = logbook_store::now_ms();
    {
        let s = Store::open_on(disk.clone(), d.path(), ring(1, &[])).unwrap();
        s.create_group(GROUP).unwrap();
        s.add_entries(
            &(1..=30)
                .map(|i| entry(i, now - 1000 + i as i64))
                .collect::<Vec<_>>(),
        );
        s.flush().unwrap();
    }
    let store = Arc::new(Store::open_on(disk.clone(), d.path(), ring(2, &[1])).unwrap());
    store.add_entries(
        &(31..=50)
            .map(|i| entry(i, now - 1000 + i as i64))
            .collect::<Vec<_>>(),
    );
    store.flush().unwrap();
    store.add_entries(&[entry(51, now)]); // and one still in the tail
    let engine = Engine::new(store.clone(), None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(
        count(&engine, &rt, "stats count(*)", Language::Insights),
        [51]
    );
    assert_eq!(
        count(
            &engine,
            &rt,
            "SELECT count(*), sum(input_token_count) FROM invocations",
            Language::Sql
        ),
        [51, 51]
    );
    drop(engine);
    drop(store);
    let e = Store::open_on(disk, d.path(), ring(2, &[])).err().unwrap();
    assert!(e.to_string().contains(key(1).id()), "{e}");
}

/// Past a group's body retention, queries see records without bodies — before the files
/// are written again without them (here: rows still in the tail), and after.
#[test]
fn bodies_past_their_retention_are_not_returned() {
    let d = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(d.path()).unwrap());
    store.create_group(GROUP).unwrap();
    store
        .set_body_retention(logbook_store::BodyRetention {
            default_days: Some(1),
            groups: Default::default(),
        })
        .unwrap();
    let now = logbook_store::now_ms();
    let with_body = |seq: u64, ts: i64| {
        let mut e = entry(seq, ts);
        let mut v: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
        v["input"]["inputBodyJson"] = serde_json::json!({"messages": [{"content": "secret"}]});
        e.payload = v.to_string().into_bytes();
        e
    };
    store.add_entries(&[with_body(1, now - 3 * DAY), with_body(2, now - 1000)]);
    let engine = Engine::new(store.clone(), None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let q =
        "SELECT CAST(input_body_json IS NULL AS BIGINT), CAST(message LIKE '%secret%' AS BIGINT) \
             FROM invocations ORDER BY request_id";
    let run = |q: &str| {
        rt.block_on(engine.run(&QueryRequest {
            groups: vec![GROUP.into()],
            start_ms: 0,
            end_ms: i64::MAX / 2,
            query: q.into(),
            language: Language::Sql,
            limit: 10,
            after_seq: 0,
            content: Default::default(),
        }))
        .unwrap()
        .rows
    };
    let want = vec![
        vec![Some("1".to_string()), Some("0".to_string())],
        vec![Some("0".to_string()), Some("1".to_string())],
    ];
    assert_eq!(run(q), want);
    // Flushed, and the old file written again without bodies: the same answer.
    store.flush().unwrap();
    store.apply_retention(now).unwrap();
    assert_eq!(run(q), want);
    assert_eq!(
        store
            .snapshot(GROUP, i64::MIN, i64::MAX)
            .unwrap()
            .files
            .iter()
            .filter(|f| f.1.bodies_removed)
            .count(),
        1
    );
    // The record itself (metadata) stays.
    assert_eq!(
        count(&engine, &rt, "stats count(*)", Language::Insights),
        [2]
    );
}
