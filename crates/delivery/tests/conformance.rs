//! One conformance suite for every journal sink. The archive (a local bucket), the trail
//! (a local bucket), the log-group store and CloudWatch Logs (moto's server, started here
//! from the test venv) are each run by the one journal follower, [`Destination`], and
//! must pass the same checks:
//!
//! * **its own entries, each once**: from a journal that mixes its entries with other
//!   sinks' records and trail events, it delivers exactly its own, none twice, and its
//!   cursor reaches the journal's end;
//! * **restart from the cursor**: a new process resumes where the durable cursor says and
//!   delivers the rest; after a crash between a durable write and the cursor's store (the
//!   cursor rewound by one batch), an exactly-once sink still holds each entry once, and
//!   an at-least-once sink (CloudWatch Logs: `PutLogEvents` cannot be made idempotent)
//!   holds each at least once, with no more duplicates than the rewound batch held;
//! * **backpressure**: while its writes fail, its cursor stands still, journal garbage
//!   collection keeps every segment it still needs, its backlog and failures show in its
//!   counters, and another sink on the same journal keeps delivering; once writes pass
//!   again, everything arrives, each entry once.
//!
//! Read-back goes through each sink's own reader: the bucket's files, a read-only store
//! opened on the folder (only what is durable), moto's `GetLogEvents`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use async_trait::async_trait;
use logbook_bucket::BucketSpec;
use logbook_delivery::archive::ArchiveFormat;
use logbook_delivery::cloudwatch::{CloudWatchFormat, CloudWatchTarget};
use logbook_delivery::trail::TrailFormat;
use logbook_delivery::{
    Bucket, DeliveryError, Destination, DestinationConfig, Format, GcCoordinator, Target, Written,
};
use logbook_journal::{Journal, JournalConfig, Kind};
use logbook_store::ingest::{IngestConfig, StoreFormat, StoreTarget};
use logbook_store::Store;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

const BUCKET: &str = "b";
const GROUP: &str = "g";

/// A record for `bucket` and `group`, or a trail event, with its id.
fn entry(kind: &str, i: u64) -> (Kind, String, Vec<u8>) {
    let (bucket, group) = match kind {
        "ours" => (BUCKET, GROUP),
        _ => ("other-bucket", "other-group"),
    };
    if kind == "event" {
        let id = format!("evt-{i:04}");
        let body = serde_json::json!({
            "eventVersion": "1.09",
            "eventID": id,
            "eventName": "PutModelInvocationLoggingConfiguration",
            "recipientAccountId": "123456789012",
            "awsRegion": "us-east-1"
        });
        return (Kind::TrailEvent, id, serde_json::to_vec(&body).unwrap());
    }
    let id = format!("{kind}-{i:04}");
    let t = time::OffsetDateTime::now_utc();
    let now = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let body = serde_json::json!({
        "schemaType": "ModelInvocationLog",
        "schemaVersion": "1.0",
        "timestamp": now,
        "accountId": "123456789012",
        "region": "us-east-1",
        "requestId": id,
        "operation": "Converse",
        "modelId": "amazon.nova-lite-v1:0",
        "input": {"inputContentType": "application/json", "inputBodyJson": {"messages": [{"role": "user", "content": [{"text": format!("prompt {i}")}]}]}, "inputTokenCount": 3},
        "output": {"outputContentType": "application/json", "outputBodyJson": {"output": {"message": {"role": "assistant", "content": [{"text": "ok"}]}}}, "outputTokenCount": 1},
        "logbook": {"destination": {"bucket": bucket, "keyPrefix": "", "logGroup": group}}
    });
    (Kind::Record, id, serde_json::to_vec(&body).unwrap())
}

/// A sink under test: how to make it (again, as a new process would) and how to read
/// back what it holds durably.
#[async_trait]
trait Subject: Send + Sync + 'static {
    type F: Format;
    type T: Target<Item = <Self::F as Format>::Item>;
    /// Does a crash never make it hold an entry twice?
    const EXACTLY_ONCE: bool;
    /// Takes trail events (else its records).
    const TRAIL: bool = false;
    /// A format and target as a new process builds them.
    fn sink(&self) -> (Self::F, Self::T);
    /// A restart: drop what the process held (no-op for sinks with no process state).
    fn restart(&self) {}
    /// The ids it holds durably, with repeats.
    async fn delivered(&self) -> Vec<String>;
}

/// A target whose writes fail while the gate is closed (the sink's outage).
struct Gate<T> {
    inner: T,
    open: Arc<AtomicBool>,
}

#[async_trait]
impl<T: Target> Target for Gate<T> {
    type Item = T::Item;

    async fn put(&self, item: T::Item) -> Result<Written, DeliveryError> {
        if !self.open.load(Ordering::SeqCst) {
            return Err(DeliveryError::Io(std::io::Error::other(
                "the sink is down (test)",
            )));
        }
        self.inner.put(item).await
    }

    async fn probe(&self, name: &str) -> Result<(), DeliveryError> {
        if !self.open.load(Ordering::SeqCst) {
            return Err(DeliveryError::Io(std::io::Error::other(
                "the sink is down (test)",
            )));
        }
        self.inner.probe(name).await
    }

    fn is_large_data(item: &T::Item) -> bool {
        T::is_large_data(item)
    }
}

// -- the four sinks ------------------------------------------------------------------

fn local_bucket(dir: &Path) -> Bucket {
    std::fs::create_dir_all(dir).unwrap();
    Bucket::open(
        BUCKET,
        &BucketSpec::Local(dir.to_path_buf()),
        logbook_disk::RealDisk::shared(),
    )
    .unwrap()
}

fn gz_files(dir: &Path, needle: &str, out: &mut Vec<Vec<u8>>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            gz_files(&p, needle, out);
        } else if p.to_string_lossy().contains(needle) && p.to_string_lossy().ends_with(".json.gz")
        {
            let mut s = Vec::new();
            flate2::read::GzDecoder::new(std::fs::File::open(&p).unwrap())
                .read_to_end(&mut s)
                .unwrap();
            out.push(s);
        }
    }
}

struct Archive {
    dir: PathBuf,
}

#[async_trait]
impl Subject for Archive {
    type F = ArchiveFormat;
    type T = Bucket;
    const EXACTLY_ONCE: bool = true;

    fn sink(&self) -> (ArchiveFormat, Bucket) {
        (
            ArchiveFormat::new(BUCKET, false, "", "node1"),
            local_bucket(&self.dir),
        )
    }

    async fn delivered(&self) -> Vec<String> {
        let mut objects = Vec::new();
        gz_files(&self.dir, "BedrockModelInvocationLogs", &mut objects);
        let mut ids = Vec::new();
        for o in objects {
            for line in String::from_utf8(o).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                ids.push(v["requestId"].as_str().unwrap().to_string());
            }
        }
        ids
    }
}

struct Trail {
    dir: PathBuf,
}

#[async_trait]
impl Subject for Trail {
    type F = TrailFormat;
    type T = Bucket;
    const EXACTLY_ONCE: bool = true;
    const TRAIL: bool = true;

    fn sink(&self) -> (TrailFormat, Bucket) {
        (TrailFormat::new("node1"), local_bucket(&self.dir))
    }

    async fn delivered(&self) -> Vec<String> {
        let mut objects = Vec::new();
        gz_files(&self.dir, "CloudTrail", &mut objects);
        let mut ids = Vec::new();
        for o in objects {
            let v: serde_json::Value = serde_json::from_slice(&o).unwrap();
            for r in v["Records"].as_array().unwrap() {
                ids.push(r["eventID"].as_str().unwrap().to_string());
            }
        }
        ids
    }
}

struct LogGroups {
    dir: PathBuf,
    store: Mutex<Option<Arc<Store>>>,
}

impl LogGroups {
    fn new(dir: PathBuf) -> Self {
        let s = LogGroups {
            dir,
            store: Mutex::new(None),
        };
        s.restart();
        s
    }
}

#[async_trait]
impl Subject for LogGroups {
    type F = StoreFormat;
    type T = StoreTarget;
    const EXACTLY_ONCE: bool = true;

    fn sink(&self) -> (StoreFormat, StoreTarget) {
        let store = self.store.lock().unwrap().clone().unwrap();
        let config = IngestConfig {
            flush_age: Duration::from_millis(50),
            ..IngestConfig::default()
        };
        (
            StoreFormat::new(store.clone(), &config),
            StoreTarget::new(store),
        )
    }

    /// A new process: the tail (never flushed) is gone, the files and manifest stay.
    fn restart(&self) {
        let mut slot = self.store.lock().unwrap();
        if let Some(old) = slot.take() {
            // Every destination that held it has ended: the lock goes with the last one.
            assert_eq!(
                Arc::strong_count(&old),
                1,
                "the store is still held by a destination"
            );
        }
        let store = Store::open(&self.dir).unwrap();
        store.ensure_group(GROUP).unwrap();
        *slot = Some(Arc::new(store));
    }

    async fn delivered(&self) -> Vec<String> {
        // Only what is durable: a second, read-only view of the folder sees the files
        // the manifest names, not the live tail.
        let ro =
            Store::open_read_only(&self.dir, Arc::new(logbook_seal::Keyring::default())).unwrap();
        let mut ids = Vec::new();
        for (id, n) in ro.request_id_counts(GROUP).unwrap() {
            for _ in 0..n {
                ids.push(id.clone());
            }
        }
        ids
    }
}

/// moto's server on a free loopback port, stopped when dropped.
struct Moto {
    child: std::process::Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    fn start() -> Moto {
        let venv = std::env::var_os("LOGBOOK_TEST_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/logbook/venv")
            });
        let bin = venv.join("bin/moto_server");
        assert!(
            bin.exists(),
            "the CloudWatch Logs conformance tests need moto's server at {}: run `bash scripts/test.sh` once (it installs tests/requirements.txt into that venv) or set LOGBOOK_TEST_VENV",
            bin.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let moto = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "moto's server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    /// One JSON 1.1 call; `None` when the group or stream does not exist (yet).
    async fn call(&self, op: &str, body: serde_json::Value) -> Option<serde_json::Value> {
        let r = reqwest::Client::new()
            .post(format!("{}/", self.url))
            .header("X-Amz-Target", format!("Logs_20140328.{op}"))
            .header("Content-Type", "application/x-amz-json-1.1")
            // moto picks the region (and so the backend) from the credential scope; it
            // checks no signature unless told to.
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDTEST/20261203/us-east-1/logs/aws4_request, SignedHeaders=host, Signature=0",
            )
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        if text.contains("ResourceNotFoundException") {
            return None;
        }
        assert!(status.is_success(), "{op}: {status} {text}");
        Some(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }
}

struct CloudWatch {
    moto: Moto,
}

impl CloudWatch {
    async fn new() -> Self {
        let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
        moto.call("CreateLogGroup", serde_json::json!({"logGroupName": GROUP}))
            .await
            .unwrap();
        CloudWatch { moto }
    }
}

#[async_trait]
impl Subject for CloudWatch {
    type F = CloudWatchFormat;
    type T = CloudWatchTarget;
    const EXACTLY_ONCE: bool = false;

    fn sink(&self) -> (CloudWatchFormat, CloudWatchTarget) {
        let client = logbook_cloudwatch::LogsClient::new(logbook_cloudwatch::LogsEndpoint {
            url: self.moto.url.clone(),
            region: "us-east-1".into(),
            credentials: logbook_cloudwatch::LogsCredentials::Static(
                logbook_cloudwatch::AwsCredentials {
                    access_key_id: "AKIDTEST".into(),
                    secret_access_key: "secret".into(),
                    session_token: None,
                },
            ),
            timeout: Duration::from_secs(10),
        })
        .unwrap();
        (
            CloudWatchFormat::new(GROUP, "node1"),
            CloudWatchTarget::new(GROUP, client, Default::default()),
        )
    }

    async fn delivered(&self) -> Vec<String> {
        let mut ids = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = serde_json::json!({
                "logGroupName": GROUP,
                "logStreamName": logbook_cloudwatch::BEDROCK_STREAM,
                "startFromHead": true,
            });
            if let Some(t) = &token {
                req["nextToken"] = serde_json::json!(t);
            }
            let Some(v) = self.moto.call("GetLogEvents", req).await else {
                // No stream yet: nothing was delivered.
                return ids;
            };
            let events = v["events"].as_array().cloned().unwrap_or_default();
            for e in &events {
                let m: serde_json::Value =
                    serde_json::from_str(e["message"].as_str().unwrap()).unwrap();
                ids.push(m["requestId"].as_str().unwrap().to_string());
            }
            let next = v["nextForwardToken"].as_str().map(str::to_string);
            if events.is_empty() || next == token {
                return ids;
            }
            token = next;
        }
    }
}

// -- the harness ---------------------------------------------------------------------

struct Rig {
    _dir: tempfile::TempDir,
    root: PathBuf,
    journal: Journal,
    gc: Arc<GcCoordinator>,
    next: u64,
    /// Ids of entries appended for the sink under test.
    expected: Vec<String>,
}

impl Rig {
    /// A journal with segments of `segment_bytes`: small, so garbage collection has whole
    /// segments to take or keep; large, so a rewound cursor finds its entries still there
    /// (as after a real crash, where the cursor store that was lost never led to GC).
    fn new(segment_bytes: u64) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let mut cfg = JournalConfig::new(root.join("journal"));
        cfg.segment_bytes = segment_bytes;
        let journal = Journal::open(cfg).unwrap();
        Rig {
            _dir: dir,
            root,
            journal,
            gc: Arc::new(GcCoordinator::default()),
            next: 0,
            expected: Vec::new(),
        }
    }

    /// Append `n` rounds of: one record for the sink's bucket and group, one for another
    /// bucket and group, one trail event.
    async fn append<S: Subject>(&mut self, n: u64) {
        for _ in 0..n {
            let i = self.next;
            self.next += 1;
            for kind in ["ours", "theirs", "event"] {
                let (k, id, body) = entry(kind, i);
                if (kind == "ours" && !S::TRAIL) || (kind == "event" && S::TRAIL) {
                    self.expected.push(id);
                }
                self.journal
                    .append(k, Box::new(move |_| body))
                    .await
                    .unwrap();
            }
        }
    }

    fn end(&self) -> u64 {
        *self.journal.committed().borrow()
    }

    fn config(name: &str) -> DestinationConfig {
        DestinationConfig {
            name: name.into(),
            max_object_bytes: 1 << 20,
            max_object_age: Duration::from_millis(50),
            retry_base: Duration::from_millis(10),
            permanent_retry: Duration::from_millis(50),
        }
    }

    fn destination<S: Subject>(&self, s: &S) -> Destination<S::F, S::T> {
        let (f, t) = s.sink();
        Destination::new(
            t,
            self.journal.clone(),
            Self::config("sink"),
            f,
            self.gc.clone(),
        )
        .unwrap()
    }

    /// One run that delivers what is committed and stops (as a shutdown drains).
    async fn run_to_end<S: Subject>(&self, s: &S) {
        let (_tx, stop) = watch::channel(true);
        self.destination(s).run(stop).await.unwrap();
    }

    fn cursor(&self) -> u64 {
        self.journal.cursor("sink").load().unwrap()
    }
}

fn counts(ids: &[String]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for id in ids {
        *m.entry(id.clone()).or_default() += 1;
    }
    m
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Its own entries, each once; its cursor at the journal's end.
async fn delivers_its_own_entries_each_once<S: Subject>(s: S) {
    let mut rig = Rig::new(16 << 10);
    rig.append::<S>(10).await;
    rig.run_to_end(&s).await;
    let got = counts(&s.delivered().await);
    let want = counts(&rig.expected);
    assert_eq!(got, want, "exactly its own entries, each once");
    assert_eq!(
        rig.cursor(),
        rig.end(),
        "its cursor is at the journal's end"
    );
    assert_eq!(rig.gc.cursors(), vec![("sink".to_string(), rig.end())]);
}

/// Resumes from its cursor; a crash between a durable write and the cursor's store.
async fn resumes_from_its_cursor<S: Subject>(s: S) {
    let mut rig = Rig::new(16 << 20);
    rig.append::<S>(10).await;
    rig.run_to_end(&s).await;
    let first = rig.cursor();
    let first_ids = rig.expected.len();
    s.restart();
    rig.append::<S>(10).await;
    rig.run_to_end(&s).await;
    assert_eq!(rig.cursor(), rig.end());
    assert_eq!(
        counts(&s.delivered().await),
        counts(&rig.expected),
        "a restart delivers the rest from the cursor, nothing twice"
    );
    // The crash window: the second run's writes are durable but its cursor store was
    // lost, so the next start begins at the first run's cursor.
    s.restart();
    rig.journal.cursor("sink").store(first).unwrap();
    rig.run_to_end(&s).await;
    assert_eq!(rig.cursor(), rig.end());
    let got = counts(&s.delivered().await);
    let want = counts(&rig.expected);
    if S::EXACTLY_ONCE {
        assert_eq!(got, want, "exactly once across the crash window");
    } else {
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "at least once: every entry is there"
        );
        let dupes: u64 = got.values().map(|n| n - 1).sum();
        let rewound = (rig.expected.len() - first_ids) as u64;
        assert!(
            dupes <= rewound,
            "no more duplicates ({dupes}) than the rewound batch held ({rewound})"
        );
        assert!(
            got.values().all(|n| *n <= 2),
            "nothing more than twice: {got:?}"
        );
    }
}

/// While its writes fail: cursor, GC and backlog hold, another sink passes; then all
/// arrives once.
async fn backpressure_holds_it_and_no_other<S: Subject>(s: S) {
    let mut rig = Rig::new(16 << 10);
    let open = Arc::new(AtomicBool::new(false));
    let (f, t) = s.sink();
    let gated = Destination::new(
        Gate {
            inner: t,
            open: open.clone(),
        },
        rig.journal.clone(),
        Rig::config("sink"),
        f,
        rig.gc.clone(),
    )
    .unwrap();
    let stats = gated.stats();
    // Another sink on the same journal: the trail (or, when the trail is under test,
    // the archive) into a bucket of its own.
    let other_dir = rig.root.join("other-bucket");
    let other = if S::TRAIL {
        let (f, t) = Archive {
            dir: other_dir.clone(),
        }
        .sink();
        OtherSink::Archive(
            Destination::new(
                t,
                rig.journal.clone(),
                Rig::config("other"),
                f,
                rig.gc.clone(),
            )
            .unwrap(),
        )
    } else {
        let (f, t) = Trail {
            dir: other_dir.clone(),
        }
        .sink();
        OtherSink::Trail(
            Destination::new(
                t,
                rig.journal.clone(),
                Rig::config("other"),
                f,
                rig.gc.clone(),
            )
            .unwrap(),
        )
    };
    let other_stats = other.stats();
    let (tx, stop) = watch::channel(false);
    let task = tokio::spawn(gated.run(stop.clone()));
    let other_task = tokio::spawn(other.run(stop));
    // Enough to fill several journal segments.
    rig.append::<S>(60).await;
    let end = rig.end();
    until(
        "the sink fails three times and the other sink catches up",
        || {
            stats.failures.load(Ordering::SeqCst) >= 3
                && other_stats.cursor.load(Ordering::SeqCst) == end
        },
    )
    .await;
    assert_eq!(
        stats.cursor.load(Ordering::SeqCst),
        1,
        "the failing sink's cursor stands still"
    );
    assert_eq!(rig.cursor(), 1, "and so does its stored cursor");
    assert!(
        stats.oldest_pending_ms.load(Ordering::SeqCst) > 0,
        "backlog shown"
    );
    assert!(
        stats.retries.load(Ordering::SeqCst) >= 2,
        "it backs off and retries"
    );
    assert!(!stats.permanent(), "an outage is not a permanent failure");
    assert!(stats.last_error().unwrap().contains("the sink is down"));
    assert_eq!(
        rig.journal.first_available().unwrap(),
        1,
        "garbage collection keeps every segment the failing sink needs"
    );
    assert!(
        s.delivered().await.is_empty(),
        "nothing is durable in the failing sink"
    );
    open.store(true, Ordering::SeqCst);
    until("the sink catches up once its writes pass", || {
        stats.cursor.load(Ordering::SeqCst) == end
    })
    .await;
    let _ = tx.send(true);
    task.await.unwrap().unwrap();
    other_task.await.unwrap().unwrap();
    assert_eq!(
        counts(&s.delivered().await),
        counts(&rig.expected),
        "after the outage: everything, each once"
    );
    assert!(
        rig.journal.first_available().unwrap() > 1,
        "once both sinks passed them, the old segments were collected"
    );
    assert_eq!(stats.consecutive_failures.load(Ordering::SeqCst), 0);
}

enum OtherSink {
    Archive(Destination<ArchiveFormat, Bucket>),
    Trail(Destination<TrailFormat, Bucket>),
}

impl OtherSink {
    fn stats(&self) -> Arc<logbook_delivery::DestinationStats> {
        match self {
            OtherSink::Archive(d) => d.stats(),
            OtherSink::Trail(d) => d.stats(),
        }
    }

    async fn run(self, stop: watch::Receiver<bool>) -> Result<(), DeliveryError> {
        match self {
            OtherSink::Archive(d) => d.run(stop).await,
            OtherSink::Trail(d) => d.run(stop).await,
        }
    }
}

// -- each sink, each check -----------------------------------------------------------

macro_rules! conformance {
    ($module:ident, $make:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn delivers_its_own_entries_each_once() {
                let dir = tempfile::tempdir().unwrap();
                #[allow(clippy::redundant_closure_call)]
                let s = ($make)(dir.path().to_path_buf()).await;
                super::delivers_its_own_entries_each_once(s).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn resumes_from_its_cursor() {
                let dir = tempfile::tempdir().unwrap();
                #[allow(clippy::redundant_closure_call)]
                let s = ($make)(dir.path().to_path_buf()).await;
                super::resumes_from_its_cursor(s).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn backpressure_holds_it_and_no_other() {
                let dir = tempfile::tempdir().unwrap();
                #[allow(clippy::redundant_closure_call)]
                let s = ($make)(dir.path().to_path_buf()).await;
                super::backpressure_holds_it_and_no_other(s).await;
            }
        }
    };
}

conformance!(archive, |dir: PathBuf| async move { Archive { dir } });
conformance!(trail, |dir: PathBuf| async move { Trail { dir } });
conformance!(store, |dir: PathBuf| async move {
    LogGroups::new(dir.join("store"))
});
conformance!(cloudwatch, |_dir: PathBuf| CloudWatch::new());
