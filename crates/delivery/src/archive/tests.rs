use super::*;
use crate::{Destination, DestinationConfig, DestinationStats, GcCoordinator};
use flate2::read::GzDecoder;
use logbook_bucket::{Bucket, BucketSpec};
use logbook_journal::{Cursor, Journal, JournalConfig};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub(crate) fn small(dir: &std::path::Path) -> JournalConfig {
    let mut c = JournalConfig::new(dir);
    c.segment_bytes = 1024 * 1024;
    c
}

pub(crate) fn record(i: u64, account: &str, body_len: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaType": "ModelInvocationLog", "schemaVersion": "1.0",
        "timestamp": "2025-01-09T18:00:00Z", "accountId": account,
        "identity": {"arn": "arn:aws:iam::1:user/a"}, "region": "us-east-1",
        "requestId": format!("req-{i}"), "operation": "Converse", "modelId": "m",
        "input": {"inputContentType": "application/json", "inputBodyJson": {"t": "x".repeat(body_len)}, "inputTokenCount": i},
        "output": {"outputContentType": "application/json", "outputBodyJson": {"ok": true}, "outputTokenCount": 1},
        "logbook": {"sequence": i}
    }))
    .unwrap()
}

/// A local bucket in `root`, written through the real disk.
pub(crate) fn local_bucket(root: &std::path::Path) -> Bucket {
    Bucket::open(
        "bkt",
        &BucketSpec::Local(root.to_path_buf()),
        logbook_journal::RealDisk::shared(),
    )
    .unwrap()
}

pub(crate) fn files(root: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn lines(p: &std::path::Path) -> Vec<serde_json::Value> {
    let mut s = String::new();
    GzDecoder::new(std::fs::File::open(p).unwrap())
        .read_to_string(&mut s)
        .unwrap();
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn deliver(journal: &Journal, root: &std::path::Path) -> Arc<DestinationStats> {
    run_format(
        journal,
        root,
        "archive",
        ArchiveFormat::new("bkt", true, "pfx/", "node-1"),
    )
    .await
}

pub(crate) async fn run_format<F: crate::Format<Item = (String, Vec<u8>)>>(
    journal: &Journal,
    root: &std::path::Path,
    name: &str,
    format: F,
) -> Arc<DestinationStats> {
    let store = local_bucket(root);
    let config = DestinationConfig {
        name: name.into(),
        max_object_bytes: 5 * 1024 * 1024,
        max_object_age: Duration::from_millis(50),
        retry_base: Duration::from_millis(100),
        permanent_retry: Duration::from_millis(100),
    };
    let d = Destination::new(
        store,
        journal.clone(),
        config,
        format,
        Arc::new(GcCoordinator::default()),
    )
    .unwrap();
    let stats = d.stats();
    let (tx, rx) = watch::channel(false);
    let h = tokio::spawn(d.run(rx));
    tokio::time::sleep(Duration::from_millis(200)).await;
    tx.send(true).unwrap();
    h.await.unwrap().unwrap();
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_in_bedrock_layout_and_offloads_large_bodies() {
    let jdir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let j = Journal::open(small(jdir.path())).unwrap();
    for i in 0..10 {
        let acct = if i % 2 == 0 {
            "111111111111"
        } else {
            "222222222222"
        };
        let len = if i == 3 { 200_000 } else { 10 };
        let p = record(i, acct, len);
        j.append(Kind::Record, Box::new(move |_| p)).await.unwrap();
    }
    let stats = deliver(&j, root.path()).await;
    assert_eq!(stats.entries.load(Ordering::Relaxed), 10);
    let fs = files(root.path());
    let logs: Vec<_> = fs
        .iter()
        .filter(|p| !p.to_string_lossy().contains("/data/"))
        .collect();
    let data: Vec<_> = fs
        .iter()
        .filter(|p| p.to_string_lossy().contains("/data/"))
        .collect();
    assert_eq!(logs.len(), 2, "{fs:?}");
    for p in &logs {
        let rel = p
            .strip_prefix(root.path())
            .unwrap()
            .to_string_lossy()
            .to_string();
        assert!(rel.starts_with("pfx/AWSLogs/"), "{rel}");
        assert!(
            rel.contains("/BedrockModelInvocationLogs/us-east-1/"),
            "{rel}"
        );
        assert!(rel.ends_with(".json.gz"));
    }
    let all: Vec<serde_json::Value> = logs.iter().flat_map(|p| lines(p)).collect();
    assert_eq!(all.len(), 10);
    assert_eq!(data.len(), 1);
    let big = all.iter().find(|r| r["requestId"] == "req-3").unwrap();
    let path = big["input"]["inputBodyS3Path"].as_str().unwrap();
    assert!(path.starts_with("s3://bkt/pfx/AWSLogs/222222222222/BedrockModelInvocationLogs/us-east-1/2025/01/09/18/data/req-3_input.json.gz"), "{path}");
    assert!(big["input"].get("inputBodyJson").is_none());
    // The data object holds the body.
    let mut s = String::new();
    GzDecoder::new(std::fs::File::open(data[0]).unwrap())
        .read_to_string(&mut s)
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert_eq!(body["t"].as_str().unwrap().len(), 200_000);
    // The cursor is past everything.
    assert_eq!(Cursor::new(jdir.path(), "archive").load().unwrap(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_after_lost_cursor_overwrites_instead_of_duplicating() {
    let jdir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let j = Journal::open(small(jdir.path())).unwrap();
    for i in 0..20 {
        let p = record(i, "111111111111", 10);
        j.append(Kind::Record, Box::new(move |_| p)).await.unwrap();
    }
    deliver(&j, root.path()).await;
    let before = files(root.path());
    // Simulate a crash between the object write and the cursor write.
    Cursor::new(jdir.path(), "archive").store(1).unwrap();
    deliver(&j, root.path()).await;
    let after = files(root.path());
    assert_eq!(before, after);
    let n: usize = after.iter().map(|p| lines(p).len()).sum();
    assert_eq!(n, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skips_entries_that_are_not_invocation_records() {
    let jdir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let j = Journal::open(small(jdir.path())).unwrap();
    j.append(
        Kind::TrailEvent,
        Box::new(|_| br#"{"eventVersion":"1.08"}"#.to_vec()),
    )
    .await
    .unwrap();
    j.append(Kind::Record, Box::new(|_| record(1, "111111111111", 1)))
        .await
        .unwrap();
    deliver(&j, root.path()).await;
    let n: usize = files(root.path()).iter().map(|p| lines(p).len()).sum();
    assert_eq!(n, 1);
    assert_eq!(Cursor::new(jdir.path(), "archive").load().unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_go_to_the_bucket_and_prefix_they_name() {
    let jdir = tempfile::tempdir().unwrap();
    let j = Journal::open(small(jdir.path())).unwrap();
    let mut stamped: serde_json::Value =
        serde_json::from_slice(&record(1, "111111111111", 1)).unwrap();
    stamped["logbook"]["destination"] =
        serde_json::json!({"bucket": "other", "keyPrefix": "team-a/"});
    let stamped = serde_json::to_vec(&stamped).unwrap();
    j.append(Kind::Record, Box::new(move |_| stamped))
        .await
        .unwrap();
    j.append(Kind::Record, Box::new(|_| record(2, "111111111111", 1)))
        .await
        .unwrap();
    let default_root = tempfile::tempdir().unwrap();
    let other_root = tempfile::tempdir().unwrap();
    run_format(
        &j,
        default_root.path(),
        "archive-bkt",
        ArchiveFormat::new("bkt", true, "", "n"),
    )
    .await;
    run_format(
        &j,
        other_root.path(),
        "archive-other",
        ArchiveFormat::new("other", false, "", "n"),
    )
    .await;
    let d: Vec<_> = files(default_root.path());
    let o: Vec<_> = files(other_root.path());
    assert_eq!(d.len(), 1);
    assert_eq!(lines(&d[0])[0]["requestId"], "req-2");
    assert_eq!(o.len(), 1);
    assert!(o[0]
        .strip_prefix(other_root.path())
        .unwrap()
        .to_string_lossy()
        .starts_with("team-a/AWSLogs/111111111111/"));
    assert_eq!(lines(&o[0])[0]["requestId"], "req-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trail_objects_hold_cloudtrail_records() {
    let jdir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let j = Journal::open(small(jdir.path())).unwrap();
    for i in 0..3 {
        let ev = serde_json::to_vec(&serde_json::json!({"eventVersion": "1.09", "eventName": format!("E{i}"), "recipientAccountId": "123456789012", "awsRegion": "us-east-1"})).unwrap();
        j.append(Kind::TrailEvent, Box::new(move |_| ev))
            .await
            .unwrap();
    }
    j.append(Kind::Record, Box::new(|_| record(9, "123456789012", 1)))
        .await
        .unwrap();
    run_format(
        &j,
        root.path(),
        "trail",
        crate::trail::TrailFormat::new("n"),
    )
    .await;
    let fs = files(root.path());
    assert_eq!(fs.len(), 1);
    let rel = fs[0]
        .strip_prefix(root.path())
        .unwrap()
        .to_string_lossy()
        .to_string();
    assert!(
        rel.starts_with("AWSLogs/123456789012/CloudTrail/us-east-1/"),
        "{rel}"
    );
    let mut s = String::new();
    GzDecoder::new(std::fs::File::open(&fs[0]).unwrap())
        .read_to_string(&mut s)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert_eq!(v["Records"].as_array().unwrap().len(), 3);
    assert_eq!(v["Records"][2]["eventName"], "E2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converse_media_goes_to_data_objects_with_s3_uris() {
    let jdir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let j = Journal::open(small(jdir.path())).unwrap();
    let png = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        b"\x89PNG fake image",
    );
    let rec = serde_json::to_vec(&serde_json::json!({
        "schemaType": "ModelInvocationLog", "schemaVersion": "1.0", "timestamp": "2025-01-09T18:00:00Z",
        "accountId": "111111111111", "identity": {"arn": "a"}, "region": "us-east-1", "requestId": "rq",
        "operation": "Converse", "modelId": "m",
        "input": {"inputBodyJson": {"messages": [{"role": "user", "content": [
            {"text": "look"}, {"image": {"format": "png", "source": {"bytes": png}}},
            {"document": {"format": "pdf", "name": "d", "source": {"bytes": png}}}]}]}},
        "logbook": {}
    })).unwrap();
    j.append(Kind::Record, Box::new(move |_| rec))
        .await
        .unwrap();
    deliver(&j, root.path()).await;
    let fs = files(root.path());
    let media: Vec<_> = fs
        .iter()
        .filter(|p| p.to_string_lossy().contains("_input_media_"))
        .collect();
    assert_eq!(media.len(), 2, "{fs:?}");
    assert_eq!(std::fs::read(media[0]).unwrap(), b"\x89PNG fake image");
    let log = fs
        .iter()
        .find(|p| {
            p.to_string_lossy().ends_with(".json.gz") && !p.to_string_lossy().contains("/data/")
        })
        .unwrap();
    let r = &lines(log)[0];
    let blocks = &r["input"]["inputBodyJson"]["messages"][0]["content"];
    assert_eq!(blocks[1]["image"]["source"]["s3Uri"], "s3://bkt/pfx/AWSLogs/111111111111/BedrockModelInvocationLogs/us-east-1/2025/01/09/18/data/rq_input_media_00.png");
    assert!(blocks[2]["document"]["source"]["s3Uri"]
        .as_str()
        .unwrap()
        .ends_with("/data/rq_input_media_01.pdf"));
    assert!(blocks[1]["image"]["source"].get("bytes").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_added_after_gc_starts_at_the_oldest_segment() {
    let jdir = tempfile::tempdir().unwrap();
    let mut cfg = JournalConfig::new(jdir.path());
    cfg.segment_bytes = 600;
    let j = Journal::open(cfg).unwrap();
    for i in 0..30 {
        let p = record(i, "111111111111", 10);
        j.append(Kind::Record, Box::new(move |_| p)).await.unwrap();
    }
    // The first destination delivers everything; GC removes the old segments.
    let a = tempfile::tempdir().unwrap();
    deliver(&j, a.path()).await;
    assert!(j.first_available().unwrap() > 1);
    for i in 30..35 {
        let p = record(i, "111111111111", 10);
        j.append(Kind::Record, Box::new(move |_| p)).await.unwrap();
    }
    // A new bucket's destination (no cursor yet) must not fail on collected segments.
    let b = tempfile::tempdir().unwrap();
    let stats = run_format(
        &j,
        b.path(),
        "archive-new",
        ArchiveFormat::new("bkt", true, "", "n"),
    )
    .await;
    assert_eq!(stats.cursor.load(Ordering::Relaxed), 36);
    let n: usize = files(b.path()).iter().map(|p| lines(p).len()).sum();
    assert!(n >= 5, "{n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_error_is_counted_and_retried_not_fatal() {
    let jdir = tempfile::tempdir().unwrap();
    let mut cfg = JournalConfig::new(jdir.path());
    cfg.segment_bytes = 4096;
    let j = Journal::open(cfg).unwrap();
    for i in 0..40 {
        let p = record(i, "111111111111", 10);
        j.append(Kind::Record, Box::new(move |_| p)).await.unwrap();
    }
    // Corrupt a committed entry in the first (sealed) segment.
    let first = jdir.path().join("segments").join(format!("{:020}.seg", 1));
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[40] ^= 0xff;
    std::fs::write(&first, &bytes).unwrap();
    let root = tempfile::tempdir().unwrap();
    let store = local_bucket(root.path());
    let config = DestinationConfig {
        name: "archive".into(),
        max_object_bytes: 1 << 20,
        max_object_age: Duration::from_millis(50),
        retry_base: Duration::from_millis(100),
        permanent_retry: Duration::from_millis(100),
    };
    let d = Destination::new(
        store,
        j.clone(),
        config,
        ArchiveFormat::new("bkt", true, "", "n"),
        Arc::new(GcCoordinator::default()),
    )
    .unwrap();
    let stats = d.stats();
    let (tx, rx) = watch::channel(false);
    let h = tokio::spawn(d.run(rx));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(stats.failures.load(Ordering::Relaxed) >= 1);
    assert!(
        !h.is_finished(),
        "the destination keeps trying instead of stopping"
    );
    tx.send(true).unwrap();
    assert!(h.await.unwrap().is_err());
}

/// A destination with a fast retry, run until `done` says so (or 20 s), then stopped.
async fn run_until(
    j: &Journal,
    root: &std::path::Path,
    done: impl Fn(&DestinationStats) -> bool,
) -> (Arc<DestinationStats>, Result<(), crate::DeliveryError>) {
    run_until_bucket(j, local_bucket(root), done).await
}

async fn run_until_bucket(
    j: &Journal,
    store: Bucket,
    done: impl Fn(&DestinationStats) -> bool,
) -> (Arc<DestinationStats>, Result<(), crate::DeliveryError>) {
    let config = DestinationConfig {
        name: "archive".into(),
        max_object_bytes: 1 << 20,
        max_object_age: Duration::from_millis(20),
        retry_base: Duration::from_millis(1),
        permanent_retry: Duration::from_millis(1),
    };
    let d = Destination::new(
        store,
        j.clone(),
        config,
        ArchiveFormat::new("bkt", true, "", "n"),
        Arc::new(GcCoordinator::default()),
    )
    .unwrap();
    let stats = d.stats();
    let (tx, rx) = watch::channel(false);
    let h = tokio::spawn(d.run(rx));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done(&stats) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tx.send(true).unwrap();
    (stats, h.await.unwrap())
}

fn poison(i: u64) -> Vec<u8> {
    // A record from before regions were validated: its key has a 300-byte folder name,
    // which no local file system takes. It can never be delivered.
    let v = String::from_utf8(record(i, "111111111111", 10)).unwrap();
    v.replace("us-east-1", &"a".repeat(300)).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_entry_is_parked_and_the_rest_is_delivered() {
    let jdir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let j = Journal::open(small(jdir.path())).unwrap();
    for i in 1..=5u64 {
        let p = if i == 3 {
            poison(i)
        } else {
            record(i, "111111111111", 10)
        };
        j.append(Kind::Record, Box::new(move |_| p)).await.unwrap();
    }
    let (stats, r) = run_until(&j, root.path(), |s| {
        s.cursor.load(Ordering::Relaxed) == 6 && s.consecutive_failures.load(Ordering::Relaxed) == 0
    })
    .await;
    r.unwrap();
    assert_eq!(stats.parked.load(Ordering::Relaxed), 1);
    let ids: Vec<String> = files(root.path())
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".json.gz"))
        .flat_map(|p| lines(p))
        .map(|v| v["requestId"].as_str().unwrap().to_string())
        .collect();
    let mut ids = ids;
    ids.sort();
    assert_eq!(ids, ["req-1", "req-2", "req-4", "req-5"]);
    // The poison entry is kept, byte for byte, where an operator can find it.
    let parked = jdir.path().join("parked").join("archive");
    let kept: Vec<_> = std::fs::read_dir(&parked).unwrap().collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        std::fs::read(parked.join(format!("{:020}.json", 3))).unwrap(),
        poison(3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_parks_nothing() {
    let jdir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let j = Journal::open(small(jdir.path())).unwrap();
    for i in 1..=3u64 {
        let p = record(i, "111111111111", 10);
        j.append(Kind::Record, Box::new(move |_| p)).await.unwrap();
    }
    // The bucket folder becomes a file after it was opened: every write fails, the
    // probe too.
    let path = root.path().join("bucket");
    let bucket = local_bucket(&path);
    std::fs::remove_dir(&path).unwrap();
    std::fs::write(&path, b"not a folder").unwrap();
    let (stats, r) = run_until_bucket(&j, bucket, |s| {
        s.consecutive_failures.load(Ordering::Relaxed) >= 12
    })
    .await;
    assert!(r.is_err(), "stopping with undelivered entries is an error");
    assert_eq!(stats.parked.load(Ordering::Relaxed), 0);
    assert_eq!(stats.cursor.load(Ordering::Relaxed), 1);
    assert!(!jdir.path().join("parked").exists());
}

/// Bedrock's rule is "larger than 100 KB": a body of exactly 102,400 serialized bytes stays
/// inline, one byte more goes to `data/`.
#[test]
fn the_offload_boundary_is_exactly_100_kb() {
    let body = |n: usize| serde_json::to_vec(&serde_json::json!({"t": "x".repeat(n)})).unwrap();
    assert_eq!(body(102_392).len(), LARGE_BODY_BYTES);
    for (n, offloaded) in [(102_392, false), (102_393, true)] {
        let mut f = ArchiveFormat::new("bkt", true, "", "node");
        f.add(logbook_journal::Entry {
            kind: logbook_journal::Kind::Record,
            version: 1,
            seq: 1,
            time_ms: 1_736_445_600_000,
            payload: record(1, "111111111111", n),
        })
        .unwrap();
        let objects = f.take().unwrap();
        let data = objects.iter().filter(|(k, _)| k.contains("/data/")).count();
        assert_eq!(
            data,
            usize::from(offloaded),
            "body of {} bytes",
            body(n).len()
        );
        let (_, log) = objects.iter().find(|(k, _)| !k.contains("/data/")).unwrap();
        let mut s = String::new();
        flate2::read::MultiGzDecoder::new(&log[..])
            .read_to_string(&mut s)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(s.trim()).unwrap();
        assert_eq!(v["input"].get("inputBodyJson").is_none(), offloaded);
        assert_eq!(v["input"].get("inputBodyS3Path").is_some(), offloaded);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_counts_the_records_it_delivered_not_the_entries_it_skipped() {
    // Trail events share the journal: the archive reads past them (entries) but
    // delivers only records, and `/healthz`'s `records` must say so.
    let jdir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let j = Journal::open(small(jdir.path())).unwrap();
    for i in 1..=6u64 {
        let (kind, p) = if i % 2 == 0 {
            (Kind::TrailEvent, br#"{"eventID":"e"}"#.to_vec())
        } else {
            (Kind::Record, record(i, "111111111111", 10))
        };
        j.append(kind, Box::new(move |_| p)).await.unwrap();
    }
    let (stats, r) = run_until(&j, root.path(), |s| s.cursor.load(Ordering::Relaxed) == 7).await;
    r.unwrap();
    assert_eq!(stats.entries.load(Ordering::Relaxed), 6);
    assert_eq!(stats.records.load(Ordering::Relaxed), 3);
}
