use super::*;
use flate2::read::GzDecoder;
use logbook_journal::JournalConfig;
use object_store::local::LocalFileSystem;
use std::io::Read;

fn record(i: u64, account: &str, body_len: usize) -> Vec<u8> {
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

fn files(root: &std::path::Path) -> Vec<PathBuf> {
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

async fn deliver(journal: &Journal, root: &std::path::Path) -> Arc<ArchiveStats> {
    let store = Arc::new(LocalFileSystem::new_with_prefix(root).unwrap());
    let archive = Archive::new(
        store,
        journal.clone(),
        ArchiveConfig {
            bucket: "bkt".into(),
            key_prefix: "pfx/".into(),
            max_object_bytes: 5 * 1024 * 1024,
            max_object_age: Duration::from_millis(50),
            node_id: "node-1".into(),
            cursor_name: "archive".into(),
            local_root: Some(root.to_path_buf()),
        },
    );
    let stats = archive.stats();
    let (tx, rx) = watch::channel(false);
    let h = tokio::spawn(archive.run(rx));
    tokio::time::sleep(Duration::from_millis(200)).await;
    tx.send(true).unwrap();
    h.await.unwrap().unwrap();
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_in_bedrock_layout_and_offloads_large_bodies() {
    let jdir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let j = Journal::open(JournalConfig::new(jdir.path())).unwrap();
    for i in 0..10 {
        let acct = if i % 2 == 0 {
            "111111111111"
        } else {
            "222222222222"
        };
        let len = if i == 3 { 200_000 } else { 10 };
        let p = record(i, acct, len);
        j.append(Box::new(move |_| p)).await.unwrap();
    }
    let stats = deliver(&j, root.path()).await;
    assert_eq!(stats.records.load(Ordering::Relaxed), 10);
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
    let j = Journal::open(JournalConfig::new(jdir.path())).unwrap();
    for i in 0..20 {
        let p = record(i, "111111111111", 10);
        j.append(Box::new(move |_| p)).await.unwrap();
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
    let j = Journal::open(JournalConfig::new(jdir.path())).unwrap();
    j.append(Box::new(|_| br#"{"eventVersion":"1.08"}"#.to_vec()))
        .await
        .unwrap();
    j.append(Box::new(|_| record(1, "111111111111", 1)))
        .await
        .unwrap();
    deliver(&j, root.path()).await;
    let n: usize = files(root.path()).iter().map(|p| lines(p).len()).sum();
    assert_eq!(n, 1);
    assert_eq!(Cursor::new(jdir.path(), "archive").load().unwrap(), 3);
}
