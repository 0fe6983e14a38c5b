use super::*;
use crate::archive::tests::{files, record, run_format, small};
use arrow_array::{Array, Decimal128Array, Int64Array, StringArray, TimestampMillisecondArray};
use logbook_journal::{Cursor, Journal};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::{Path, PathBuf};

fn read(p: &Path) -> Vec<RecordBatch> {
    let f = std::fs::File::open(p).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

fn strings(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let a = b
        .column_by_name(name)
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    (0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
        .collect()
}

fn parquet_files(root: &Path) -> Vec<PathBuf> {
    files(root)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect()
}

fn rows(root: &Path) -> usize {
    parquet_files(root)
        .iter()
        .flat_map(|p| read(p))
        .map(|b| b.num_rows())
        .sum()
}

async fn append(j: &Journal, payload: Vec<u8>) {
    j.append(EntryKind::Record, Box::new(move |_| payload))
        .await
        .unwrap();
}

fn full_record(ts: &str, id: &str, region: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaType": "ModelInvocationLog", "schemaVersion": "1.0",
        "timestamp": ts, "accountId": "123456789012",
        "identity": {"arn": "arn:aws:iam::123456789012:user/ana"}, "region": region,
        "requestId": id, "operation": "Converse", "modelId": "anthropic.claude-3-haiku",
        "input": {"inputContentType": "application/json",
                  "inputBodyJson": {"messages": [{"role": "user", "content": [{"text": "mail ana@example.com"}]}]},
                  "inputTokenCount": 12, "cacheReadInputTokenCount": 3},
        "output": {"outputContentType": "application/json",
                   "outputBodyJson": {"output": {"message": {"content": [{"text": "ok"}]}}},
                   "outputTokenCount": 5},
        "requestMetadata": {"team": "search"},
        "logbook": {"latencyMs": 42, "stream": false, "cost": "0.000123456789", "provider": "mock",
                    "destination": {"bucket": "bkt", "keyPrefix": "team/", "logGroup": "/aws/bedrock/invocations"}}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_land_in_hive_partitions_with_typed_columns() {
    let jdir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let j = Journal::open(small(jdir.path())).unwrap();
    append(
        &j,
        full_record("2026-12-02T23:59:59.900Z", "a", "eu-west-1"),
    )
    .await;
    // The next one is past midnight: another day, another file.
    append(
        &j,
        full_record("2026-12-03T00:00:00.100Z", "b", "eu-west-1"),
    )
    .await;
    append(&j, full_record("2026-12-03T00:00:01Z", "c", "us-east-1")).await;
    let f = ParquetFormat::new("bkt", true, "", "node-1");
    run_format(&j, root.path(), "parquet", f).await;
    let fs = parquet_files(root.path());
    let rel: Vec<String> = fs
        .iter()
        .map(|p| {
            let r = p.strip_prefix(root.path()).unwrap().to_string_lossy();
            r.rsplit_once('/').unwrap().0.to_string()
        })
        .collect();
    assert_eq!(
        rel,
        [
            "team/logbook-parquet/v1/account_id=123456789012/region=eu-west-1/dt=2026-12-02",
            "team/logbook-parquet/v1/account_id=123456789012/region=eu-west-1/dt=2026-12-03",
            "team/logbook-parquet/v1/account_id=123456789012/region=us-east-1/dt=2026-12-03",
        ]
    );
    let b = &read(&fs[0])[0];
    // Partition columns are in the path only.
    for p in PARTITIONS {
        assert!(b.column_by_name(p).is_none(), "{p} stored in the file");
    }
    assert_eq!(b.schema(), schema());
    let ts = b
        .column_by_name("timestamp")
        .unwrap()
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .unwrap();
    assert_eq!(ts.value(0), 1_796_255_999_900);
    let ints = |n: &str| {
        b.column_by_name(n)
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .clone()
    };
    assert_eq!(ints("input_token_count").value(0), 12);
    assert_eq!(ints("cache_read_input_token_count").value(0), 3);
    assert!(ints("cache_write_input_token_count").is_null(0));
    assert_eq!(ints("output_token_count").value(0), 5);
    assert_eq!(ints("latency_ms").value(0), 42);
    let cost = b
        .column_by_name("cost")
        .unwrap()
        .as_any()
        .downcast_ref::<Decimal128Array>()
        .unwrap();
    assert_eq!(cost.value_as_string(0), "0.000123456789");
    assert_eq!(strings(b, "request_id"), [Some("a".into())]);
    assert_eq!(
        strings(b, "request_metadata"),
        [Some(r#"{"team":"search"}"#.into())]
    );
    assert_eq!(
        strings(b, "log_group"),
        [Some("/aws/bedrock/invocations".into())]
    );
    let body: serde_json::Value =
        serde_json::from_str(strings(b, "input_body_json")[0].as_deref().unwrap()).unwrap();
    assert_eq!(
        body["messages"][0]["content"][0]["text"],
        "mail ana@example.com"
    );
    // `record` is the whole record without its two bodies (each body is kept once).
    let rec: serde_json::Value =
        serde_json::from_str(strings(b, "record")[0].as_deref().unwrap()).unwrap();
    assert_eq!(rec["requestId"], "a");
    assert_eq!(rec["input"]["inputTokenCount"], 12);
    assert!(rec["input"].get("inputBodyJson").is_none());
    assert!(rec["output"].get("outputBodyJson").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_after_a_lost_cursor_overwrites_the_same_files() {
    let jdir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let j = Journal::open(small(jdir.path())).unwrap();
    for i in 0..30 {
        append(&j, record(i, "111111111111", 10)).await;
    }
    let f = || ParquetFormat::new("bkt", true, "", "node-1");
    run_format(&j, root.path(), "parquet", f()).await;
    let before = parquet_files(root.path());
    assert_eq!(rows(root.path()), 30);
    // A crash after the files were written and before the cursor moved.
    Cursor::new(jdir.path(), "parquet").store(1).unwrap();
    run_format(&j, root.path(), "parquet", f()).await;
    assert_eq!(parquet_files(root.path()), before);
    assert_eq!(rows(root.path()), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_this_buckets_records_and_redacted_as_its_archive() {
    let jdir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let j = Journal::open(small(jdir.path())).unwrap();
    let mut other: serde_json::Value =
        serde_json::from_slice(&full_record("2026-12-03T10:00:00Z", "other", "eu-west-1")).unwrap();
    other["logbook"]["destination"] = serde_json::json!({"bucket": "elsewhere", "keyPrefix": ""});
    append(&j, serde_json::to_vec(&other).unwrap()).await;
    let mut mine = other.clone();
    mine["requestId"] = "mine".into();
    mine["logbook"]["destination"] = serde_json::json!({"bucket": "bkt", "keyPrefix": "p"});
    append(&j, serde_json::to_vec(&mine).unwrap()).await;
    let mut none = other.clone();
    none["requestId"] = "no-destination".into();
    none["logbook"]
        .as_object_mut()
        .unwrap()
        .remove("destination");
    append(&j, serde_json::to_vec(&none).unwrap()).await;
    j.append(EntryKind::TrailEvent, Box::new(|_| b"{}".to_vec()))
        .await
        .unwrap();
    let redactor = Arc::new(logbook_redact::Redactor::new(&["email".to_string()], &[]).unwrap());
    // Not the default bucket: records that name no destination are not its.
    let f = ParquetFormat::new("bkt", false, "", "node-1").with_redactor(redactor);
    run_format(&j, root.path(), "parquet", f).await;
    let fs = parquet_files(root.path());
    assert_eq!(fs.len(), 1, "{fs:?}");
    assert!(fs[0]
        .to_string_lossy()
        .contains("/p/logbook-parquet/v1/account_id=123456789012/"));
    let b = &read(&fs[0])[0];
    assert_eq!(strings(b, "request_id"), [Some("mine".into())]);
    let body = strings(b, "input_body_json")[0].clone().unwrap();
    assert!(!body.contains("ana@example.com"), "{body}");
    assert!(!strings(b, "record")[0]
        .clone()
        .unwrap()
        .contains("ana@example.com"));
}

#[test]
fn a_record_without_a_usable_timestamp_takes_its_journal_time() {
    let mut f = ParquetFormat::new("bkt", true, "", "n");
    let mut v: serde_json::Value =
        serde_json::from_slice(&full_record("not a time", "x", "eu-west-1")).unwrap();
    v.as_object_mut().unwrap().remove("accountId");
    let payload = serde_json::to_vec(&v).unwrap();
    let e = Entry {
        seq: 7,
        time_ms: 1_796_256_000_000, // 2026-12-03T00:00:00Z
        kind: EntryKind::Record,
        version: 1,
        payload,
    };
    assert!(f.add(e).unwrap() > 0);
    let out = f.take().unwrap();
    assert_eq!(out.len(), 1);
    assert!(
        out[0]
            .0
            .starts_with("team/logbook-parquet/v1/account_id=000000000000/region=eu-west-1/dt=2026-12-03/20261203T000000000Z_"),
        "{}",
        out[0].0
    );
    // A reset forgets what was added.
    let again = Entry {
        seq: 8,
        time_ms: 1,
        kind: EntryKind::Record,
        version: 1,
        payload: full_record("2026-12-03T00:00:00Z", "y", "eu-west-1"),
    };
    f.add(again).unwrap();
    f.reset();
    assert!(f.take().unwrap().is_empty());
}

#[test]
fn hostile_partition_values_cannot_leave_their_folder() {
    for (v, want) in [
        ("eu-west-1", "eu-west-1"),
        ("../../etc", "..%2F..%2Fetc"),
        ("a/b=c", "a%2Fb%3Dc"),
        ("", "__HIVE_DEFAULT_PARTITION__"),
        ("..", "__HIVE_DEFAULT_PARTITION__"),
        ("é", "%C3%A9"),
    ] {
        assert_eq!(escape_partition_value(v), want);
    }
    let k = object_key(
        "",
        "../x",
        "r/../../y",
        "2026-12-03",
        OffsetDateTime::UNIX_EPOCH,
        "n",
        1,
    );
    assert_eq!(k.matches('/').count(), 5, "{k}");
    assert!(!k.contains("/../"), "{k}");
}

#[test]
fn a_big_batch_is_written_in_row_groups_and_reads_back_whole() {
    let mut f = ParquetFormat::new("bkt", true, "", "n");
    let body = "y".repeat(500_000);
    for seq in 1..=20u64 {
        let mut v: serde_json::Value = serde_json::from_slice(&full_record(
            "2026-12-03T10:00:00Z",
            &seq.to_string(),
            "eu-west-1",
        ))
        .unwrap();
        v["input"]["inputBodyJson"] = serde_json::json!({ "t": body });
        let e = Entry {
            seq,
            time_ms: seq,
            kind: EntryKind::Record,
            version: 1,
            payload: serde_json::to_vec(&v).unwrap(),
        };
        f.add(e).unwrap();
    }
    let out = f.take().unwrap();
    assert_eq!(out.len(), 1);
    let bytes = bytes::Bytes::from(out[0].1.clone());
    // 20 records of about 500 KB: about 10 MB, so two row groups of at most 8 MiB.
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
    assert_eq!(reader.metadata().num_row_groups(), 2);
    let batches: Vec<RecordBatch> = reader.build().unwrap().map(|b| b.unwrap()).collect();
    let ids: Vec<Option<String>> = batches
        .iter()
        .flat_map(|b| strings(b, "request_id"))
        .collect();
    assert_eq!(
        ids,
        (1..=20).map(|i| Some(i.to_string())).collect::<Vec<_>>()
    );
    // Compressed: the file is far smaller than the records it holds.
    assert!(out[0].1.len() < 1_000_000, "{}", out[0].1.len());
}
