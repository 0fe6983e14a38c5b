//! The delivery loop against a target that fails on command (a test double of a remote:
//! the real ones, moto's S3 and CloudWatch Logs, are exercised end to end in
//! tests/e2e). Checks the error classification, the retry waits, the health counters, the
//! budget's floor, and that a failing destination holds back no other.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use async_trait::async_trait;
use logbook_delivery::{
    retry_wait, DeliveryError, Destination, DestinationConfig, Format, GcCoordinator, Target,
    Written,
};
use logbook_journal::{Entry, Journal, JournalConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One write per batch: the sequences it holds.
#[derive(Default)]
struct Seqs(Vec<u64>);

impl Format for Seqs {
    type Item = Vec<u64>;
    fn add(&mut self, e: Entry) -> Result<usize, DeliveryError> {
        self.0.push(e.seq);
        Ok(e.payload.len())
    }
    fn take(&mut self) -> Result<Vec<Vec<u64>>, DeliveryError> {
        Ok(vec![std::mem::take(&mut self.0)])
    }
    fn reset(&mut self) {
        self.0.clear();
    }
}

/// Fails its first `fail` writes with `permanent` or passing errors; records what it took.
struct Flaky {
    fail: AtomicU64,
    permanent: bool,
    got: Mutex<Vec<u64>>,
    attempts: Mutex<Vec<Instant>>,
}

impl Flaky {
    fn new(fail: u64, permanent: bool) -> Arc<Self> {
        Arc::new(Flaky {
            fail: AtomicU64::new(fail),
            permanent,
            got: Mutex::new(Vec::new()),
            attempts: Mutex::new(Vec::new()),
        })
    }
}

struct Shared(Arc<Flaky>);

#[async_trait]
impl Target for Shared {
    type Item = Vec<u64>;
    async fn put(&self, item: Vec<u64>) -> Result<Written, DeliveryError> {
        self.0
            .attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Instant::now());
        if self.0.fail.load(Ordering::SeqCst) > 0 {
            self.0.fail.fetch_sub(1, Ordering::SeqCst);
            return Err(if self.0.permanent {
                DeliveryError::Config("access denied (test)".into())
            } else {
                DeliveryError::Io(std::io::Error::other("connection reset (test)"))
            });
        }
        let n = item.len() as u64;
        self.0
            .got
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(item);
        Ok(Written {
            bytes: n,
            rejected: 0,
            large_data: 0,
        })
    }
    async fn probe(&self, _name: &str) -> Result<(), DeliveryError> {
        Err(DeliveryError::Config("down (test)".into()))
    }
}

fn config(name: &str, permanent_retry: Duration) -> DestinationConfig {
    DestinationConfig {
        name: name.into(),
        max_object_bytes: 1 << 20,
        max_object_age: Duration::from_millis(20),
        retry_base: Duration::from_millis(10),
        permanent_retry,
    }
}

async fn journal_with(dir: &std::path::Path, n: u64) -> Journal {
    let j = Journal::open(JournalConfig::new(dir.join("journal"))).unwrap();
    append_records(&j, n).await;
    j
}

/// Append `n` small records, one commit each.
async fn append_records(j: &Journal, n: u64) {
    for i in 0..n {
        let p = format!("{{\"n\":{i}}}").into_bytes();
        j.append(logbook_journal::Kind::Record, Box::new(move |_| p))
            .await
            .unwrap();
    }
}

async fn until(deadline: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Run a destination named `name` over `j` until its cursor reaches `end`, then stop it;
/// retries wait 1 ms. Returns its counters.
async fn deliver_until<F, T>(
    j: &Journal,
    target: T,
    format: F,
    name: &str,
    end: u64,
) -> Arc<logbook_delivery::DestinationStats>
where
    F: Format<Item = Vec<u64>>,
    T: Target<Item = Vec<u64>>,
{
    let mut cfg = config(name, Duration::from_millis(1));
    cfg.retry_base = Duration::from_millis(1);
    let d = Destination::new(
        target,
        j.clone(),
        cfg,
        format,
        Arc::new(GcCoordinator::default()),
    )
    .unwrap();
    let stats = d.stats();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(d.run(rx));
    until(Duration::from_secs(20), || {
        stats.cursor.load(Ordering::Relaxed) == end
    })
    .await;
    tx.send(true).unwrap();
    task.await.unwrap().unwrap();
    stats
}

#[test]
fn retry_waits_are_jittered_below_the_backoff_and_permanent_ones_fixed() {
    let b = Duration::from_millis(800);
    let waits: Vec<Duration> = (0..200)
        .map(|_| retry_wait(b, false, Duration::from_secs(60)))
        .collect();
    assert!(waits.iter().all(|w| *w >= b / 2 && *w <= b), "{waits:?}");
    // Jitter: not all the same.
    assert!(waits.iter().any(|w| *w != waits[0]));
    assert_eq!(
        retry_wait(b, true, Duration::from_secs(60)),
        Duration::from_secs(60)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_is_reported_then_retried_slowly_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal_with(dir.path(), 10).await;
    let t = Flaky::new(3, true);
    let gc = Arc::new(GcCoordinator::default());
    let d = Destination::new(
        Shared(t.clone()),
        j.clone(),
        config("flaky", Duration::from_millis(150)),
        Seqs::default(),
        gc,
    )
    .unwrap();
    let stats = d.stats();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(d.run(rx));
    until(Duration::from_secs(10), || {
        stats.consecutive_failures.load(Ordering::Relaxed) >= 1
    })
    .await;
    assert!(stats.permanent(), "a permanent error is reported as such");
    assert!(stats.last_error().unwrap().contains("access denied"));
    until(Duration::from_secs(10), || {
        stats.cursor.load(Ordering::Relaxed) == 11
    })
    .await;
    assert!(!stats.permanent() && stats.consecutive_failures.load(Ordering::Relaxed) == 0);
    assert_eq!(stats.failures.load(Ordering::Relaxed), 3);
    assert_eq!(stats.retries.load(Ordering::Relaxed), 3);
    assert_eq!(stats.records.load(Ordering::Relaxed), 10);
    assert_eq!(stats.oldest_pending_ms.load(Ordering::Relaxed), 0);
    assert_eq!(*t.got.lock().unwrap(), (1..=10).collect::<Vec<u64>>());
    // Retried slowly: at least the permanent wait between attempts, not the 10 ms backoff.
    let a = t.attempts.lock().unwrap().clone();
    for w in a.windows(2).take(3) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(150),
            "{:?}",
            w[1] - w[0]
        );
    }
    tx.send(true).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passing_failures_back_off_and_the_backlog_is_visible_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal_with(dir.path(), 5).await;
    let t = Flaky::new(4, false);
    let d = Destination::new(
        Shared(t.clone()),
        j.clone(),
        config("passing", Duration::from_secs(3600)),
        Seqs::default(),
        Arc::new(GcCoordinator::default()),
    )
    .unwrap();
    let stats = d.stats();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(d.run(rx));
    until(Duration::from_secs(10), || {
        stats.consecutive_failures.load(Ordering::Relaxed) >= 3
    })
    .await;
    assert!(stats.stalled() && !stats.permanent());
    assert!(
        stats.oldest_pending_ms.load(Ordering::Relaxed) > 0,
        "the oldest undelivered entry's time is known"
    );
    until(Duration::from_secs(10), || {
        stats.cursor.load(Ordering::Relaxed) == 6
    })
    .await;
    assert_eq!(*t.got.lock().unwrap(), (1..=5).collect::<Vec<u64>>());
    assert!(!stats.stalled());
    // Backoff doubles (jittered within [b/2, b]): 10, 20, 40, 80 ms bases.
    let a = t.attempts.lock().unwrap().clone();
    let gaps: Vec<Duration> = a.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, g) in gaps.iter().take(4).enumerate() {
        assert!(*g >= Duration::from_millis(5 << i), "gap {i}: {g:?}");
    }
    tx.send(true).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_holds_back_no_other_and_resumes_at_the_budget_floor() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal_with(dir.path(), 20).await;
    let gc = Arc::new(GcCoordinator::default());
    let down = Flaky::new(u64::MAX, false);
    let up = Flaky::new(0, false);
    let d_down = Destination::new(
        Shared(down.clone()),
        j.clone(),
        config("down", Duration::from_secs(3600)),
        Seqs::default(),
        gc.clone(),
    )
    .unwrap();
    let d_up = Destination::new(
        Shared(up.clone()),
        j.clone(),
        config("up", Duration::from_secs(3600)),
        Seqs::default(),
        gc.clone(),
    )
    .unwrap();
    let (s_down, s_up) = (d_down.stats(), d_up.stats());
    let (tx, rx) = tokio::sync::watch::channel(false);
    let t1 = tokio::spawn(d_down.run(rx.clone()));
    let t2 = tokio::spawn(d_up.run(rx));
    until(Duration::from_secs(10), || {
        s_up.cursor.load(Ordering::Relaxed) == 21
    })
    .await;
    assert_eq!(up.got.lock().unwrap().len(), 20);
    assert_eq!(s_down.cursor.load(Ordering::Relaxed), 1);
    assert_eq!(
        gc.cursors(),
        vec![("down".to_string(), 1), ("up".to_string(), 21)]
    );
    // The budget gives up entries 1..15 for the failing destination: it resumes at 15.
    gc.raise_floor(15);
    // It moves there when it next starts over (after its next failure) ...
    until(Duration::from_secs(10), || {
        s_down.cursor.load(Ordering::Relaxed) == 15
    })
    .await;
    // ... and delivers from there once the target works again.
    down.fail.store(0, Ordering::SeqCst);
    until(Duration::from_secs(10), || {
        s_down.cursor.load(Ordering::Relaxed) == 21
    })
    .await;
    assert_eq!(*down.got.lock().unwrap(), (15..=20).collect::<Vec<u64>>());
    tx.send(true).unwrap();
    t1.await.unwrap().unwrap();
    t2.await.unwrap().unwrap();
}

/// Answers its probe; fails `transient` writes (a local EIO) at first, and every write
/// that holds `poison` with the error a file system gives for a name it cannot take.
struct Picky {
    transient: AtomicU64,
    poison: Option<u64>,
    got: Mutex<Vec<u64>>,
}

struct PickyTarget(Arc<Picky>);

fn bucket_io(errno: i32) -> DeliveryError {
    DeliveryError::Bucket(logbook_bucket::BucketError::Io {
        bucket: "b".into(),
        source: std::io::Error::from_raw_os_error(errno),
    })
}

#[async_trait]
impl Target for PickyTarget {
    type Item = Vec<u64>;
    async fn put(&self, item: Vec<u64>) -> Result<Written, DeliveryError> {
        if self.0.transient.load(Ordering::SeqCst) > 0 {
            self.0.transient.fetch_sub(1, Ordering::SeqCst);
            return Err(bucket_io(5)); // EIO
        }
        if self.0.poison.is_some_and(|p| item.contains(&p)) {
            return Err(bucket_io(36)); // ENAMETOOLONG
        }
        let n = item.len() as u64;
        self.0.got.lock().unwrap().extend(item);
        Ok(Written {
            bytes: n,
            rejected: 0,
            large_data: 0,
        })
    }
    async fn probe(&self, _name: &str) -> Result<(), DeliveryError> {
        Ok(())
    }
}

async fn run_picky(transient: u64, poison: Option<u64>) -> (Arc<Picky>, u64, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let j = journal_with(dir.path(), 5).await;
    let t = Arc::new(Picky {
        transient: AtomicU64::new(transient),
        poison,
        got: Mutex::new(Vec::new()),
    });
    let stats = deliver_until(&j, PickyTarget(t.clone()), Seqs::default(), "picky", 6).await;
    (t, stats.parked.load(Ordering::Relaxed), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_never_park_a_good_entry_however_many() {
    // Ten EIOs in a row while the probe passes: batches shrink to one entry, but an
    // EIO says nothing about the entry, so all five are delivered and none is parked.
    let (t, parked, dir) = run_picky(10, None).await;
    assert_eq!(parked, 0);
    assert_eq!(*t.got.lock().unwrap(), (1..=5).collect::<Vec<u64>>());
    assert!(!dir.path().join("journal").join("parked").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_the_destination_refuses_is_parked_alone_even_after_transient_failures() {
    let (t, parked, dir) = run_picky(4, Some(3)).await;
    assert_eq!(parked, 1);
    assert_eq!(*t.got.lock().unwrap(), vec![1, 2, 4, 5]);
    let kept = std::fs::read_dir(dir.path().join("journal").join("parked").join("picky"))
        .unwrap()
        .count();
    assert_eq!(kept, 1);
}

/// A format that writes a checkpoint after every batch (as a notarized archive does when
/// one is due): its marker item is `CHECKPOINT`.
#[derive(Default)]
struct Checkpointing {
    seqs: Vec<u64>,
    due: bool,
}

const CHECKPOINT: u64 = u64::MAX;

impl Format for Checkpointing {
    type Item = Vec<u64>;
    fn add(&mut self, e: Entry) -> Result<usize, DeliveryError> {
        self.seqs.push(e.seq);
        Ok(e.payload.len())
    }
    fn take(&mut self) -> Result<Vec<Vec<u64>>, DeliveryError> {
        self.due = true;
        Ok(vec![std::mem::take(&mut self.seqs)])
    }
    fn reset(&mut self) {
        self.seqs.clear();
        self.due = false;
    }
    fn checkpoint(&mut self, _now_ms: u64, _force: bool) -> Option<Vec<u64>> {
        std::mem::take(&mut self.due).then(|| vec![CHECKPOINT])
    }
}

/// Refuses entry 1 `fail_first` times and entry 2 once, and the first checkpoint, all with
/// an error the entry itself may cause; answers its probe only once entry 1 is in.
struct Streaky {
    fail_first: AtomicU64,
    fail_second: AtomicU64,
    fail_checkpoint: AtomicU64,
    probe_ok: std::sync::atomic::AtomicBool,
    got: Mutex<Vec<u64>>,
}

struct StreakyTarget(Arc<Streaky>);

#[async_trait]
impl Target for StreakyTarget {
    type Item = Vec<u64>;
    async fn put(&self, item: Vec<u64>) -> Result<Written, DeliveryError> {
        let t = &self.0;
        let refuse = |n: &AtomicU64| {
            n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
                .is_ok()
        };
        if item == [CHECKPOINT] {
            if refuse(&t.fail_checkpoint) {
                return Err(bucket_io(36));
            }
            return Ok(Written::default());
        }
        if (item.contains(&1) && refuse(&t.fail_first))
            || (item.contains(&2) && refuse(&t.fail_second))
        {
            return Err(bucket_io(36)); // ENAMETOOLONG: may be the entry's fault
        }
        if item.contains(&1) {
            t.probe_ok.store(true, Ordering::SeqCst);
        }
        t.got.lock().unwrap().extend(item);
        Ok(Written::default())
    }
    async fn probe(&self, _name: &str) -> Result<(), DeliveryError> {
        if self.0.probe_ok.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(bucket_io(5))
        }
    }
}

/// A streak of failures belongs to one entry. Entry 1 fails five times while the
/// destination does not answer its probe (so it is not parked), then goes in, but the
/// checkpoint after it fails: the cursor has moved without a successful flush. Entry 2
/// then fails once. That is its first failure, not the streak's sixth: it must be
/// retried and delivered, not parked (counting across entries parked a good record
/// after a single refusal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streak_of_failures_counts_one_entry_not_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal_with(dir.path(), 3).await;
    let t = Arc::new(Streaky {
        fail_first: AtomicU64::new(5),
        fail_second: AtomicU64::new(1),
        fail_checkpoint: AtomicU64::new(1),
        probe_ok: std::sync::atomic::AtomicBool::new(false),
        got: Mutex::new(Vec::new()),
    });
    let stats = deliver_until(
        &j,
        StreakyTarget(t.clone()),
        Checkpointing::default(),
        "streaky",
        4,
    )
    .await;
    assert_eq!(stats.parked.load(Ordering::Relaxed), 0, "nothing parked");
    assert_eq!(*t.got.lock().unwrap(), vec![1, 2, 3]);
    assert_eq!(t.fail_first.load(Ordering::SeqCst), 0);
    assert_eq!(t.fail_second.load(Ordering::SeqCst), 0);
    assert_eq!(
        t.fail_checkpoint.load(Ordering::SeqCst),
        0,
        "the checkpoint after entry 1 did fail"
    );
    assert!(!dir.path().join("journal").join("parked").exists());
}

/// [`Seqs`] that counts its reads of the journal (one `filled` per read).
struct CountedReads {
    inner: Seqs,
    reads: Arc<AtomicU64>,
}

impl Format for CountedReads {
    type Item = Vec<u64>;
    fn add(&mut self, e: Entry) -> Result<usize, DeliveryError> {
        self.inner.add(e)
    }
    fn take(&mut self) -> Result<Vec<Vec<u64>>, DeliveryError> {
        self.inner.take()
    }
    fn reset(&mut self) {
        self.inner.reset();
    }
    fn filled(&mut self) -> Result<(), DeliveryError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_steady_stream_of_commits_a_destination_reads_them_in_batches_and_loses_none() {
    // One commit about every millisecond (async mode: no fsync to wait for). Reading after
    // each one cost a blocking task, a thread wake-up and a `pread` per destination per
    // commit; paced, a destination reads at most once per MIN_FILL_INTERVAL (5 ms).
    let dir = tempfile::tempdir().unwrap();
    let mut jc = JournalConfig::new(dir.path().join("journal"));
    jc.mode = logbook_journal::SyncMode::Async;
    let j = Journal::open(jc).unwrap();
    let t = Flaky::new(0, false);
    let reads = Arc::new(AtomicU64::new(0));
    let mut cfg = config("paced", Duration::from_secs(1));
    cfg.max_object_age = Duration::from_secs(60); // written at the stop, all at once
    let d = Destination::new(
        Shared(t.clone()),
        j.clone(),
        cfg,
        CountedReads {
            inner: Seqs::default(),
            reads: reads.clone(),
        },
        Arc::new(GcCoordinator::default()),
    )
    .unwrap();
    let stats = d.stats();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(d.run(rx));
    let n = 200u64;
    for i in 0..n {
        let p = format!("{{\"n\":{i}}}").into_bytes();
        j.append(logbook_journal::Kind::Record, Box::new(move |_| p))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tx.send(true).unwrap();
    task.await.unwrap().unwrap();
    // Every entry delivered, once, in order.
    let got = t.got.lock().unwrap().clone();
    assert_eq!(got, (1..=n).collect::<Vec<u64>>());
    assert_eq!(stats.cursor.load(Ordering::Relaxed), n + 1);
    // Unpaced, about one read per commit (200). Paced: about one per 5 ms (commits a
    // millisecond or two apart: 40 to 80 reads).
    let r = reads.load(Ordering::Relaxed);
    assert!(r < n / 2, "{r} reads for {n} commits");
}

/// Takes only entries whose payload says `mine` (a trail among records, an archive among
/// another bucket's records).
#[derive(Default)]
struct Mine(Vec<u64>);

impl Format for Mine {
    type Item = Vec<u64>;
    fn add(&mut self, e: Entry) -> Result<usize, DeliveryError> {
        if !e.payload.windows(4).any(|w| w == b"mine") {
            return Ok(0);
        }
        self.0.push(e.seq);
        Ok(e.payload.len())
    }
    fn take(&mut self) -> Result<Vec<Vec<u64>>, DeliveryError> {
        Ok(if self.0.is_empty() {
            Vec::new()
        } else {
            vec![std::mem::take(&mut self.0)]
        })
    }
    fn reset(&mut self) {
        self.0.clear();
    }
}

/// A destination that takes few of the journal's entries must not hold the journal's
/// segments (its cursor, hence garbage collection) for its whole `max_object_age` because
/// of entries it passes over: the trail held a minute of records that way. Its own
/// entries still wait for their object's age or size, and none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_for_other_destinations_do_not_hold_the_cursor_for_the_object_age() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal_with(dir.path(), 30).await;
    let t = Flaky::new(0, false);
    let gc = Arc::new(GcCoordinator::default());
    let mut cfg = config("sparse", Duration::from_secs(3600));
    cfg.max_object_age = Duration::from_secs(3600);
    let d = Destination::new(
        Shared(t.clone()),
        j.clone(),
        cfg,
        Mine::default(),
        gc.clone(),
    )
    .unwrap();
    let stats = d.stats();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(d.run(rx));
    // Passed over, all 30: the cursor moves after about EMPTY_BATCH_AGE, not an hour.
    until(Duration::from_secs(20), || {
        stats.cursor.load(Ordering::Relaxed) == 31
    })
    .await;
    assert_eq!(gc.cursors(), vec![("sparse".to_string(), 31)]);
    assert_eq!(
        j.cursor("sparse").load().unwrap(),
        31,
        "stored, not only counted"
    );
    assert!(t.attempts.lock().unwrap().is_empty(), "nothing was written");
    assert_eq!(stats.records.load(Ordering::Relaxed), 0);
    assert_eq!(stats.entries.load(Ordering::Relaxed), 30);
    assert_eq!(stats.oldest_pending_ms.load(Ordering::Relaxed), 0);
    // One of its own among others: held for its object (an hour here), reported as
    // pending, and written at shutdown with nothing lost.
    for p in ["{\"n\":31}", "{\"mine\":32}", "{\"n\":33}"] {
        let p = p.as_bytes().to_vec();
        j.append(logbook_journal::Kind::Record, Box::new(move |_| p))
            .await
            .unwrap();
    }
    until(Duration::from_secs(20), || {
        stats.oldest_pending_ms.load(Ordering::Relaxed) > 0
    })
    .await;
    tokio::time::sleep(logbook_delivery::EMPTY_BATCH_AGE * 2).await;
    assert_eq!(
        stats.cursor.load(Ordering::Relaxed),
        31,
        "its own entry holds the cursor"
    );
    assert!(t.got.lock().unwrap().is_empty());
    tx.send(true).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(*t.got.lock().unwrap(), vec![32]);
    assert_eq!(stats.cursor.load(Ordering::Relaxed), 34);
    assert_eq!(stats.records.load(Ordering::Relaxed), 1);
}

/// The real disk, but renaming a journal segment aside for removal (the first step of a
/// garbage collection) waits until the test opens the gate, or 3 s at most.
#[derive(Debug)]
struct HeldCollection {
    gate: Arc<(Mutex<Gate>, std::sync::Condvar)>,
}

#[derive(Debug, Default)]
struct Gate {
    /// A collection is waiting in its rename.
    entered: bool,
    /// The test let it go.
    opened: bool,
    /// Nobody let it go: it went after the 3 s.
    gave_up: bool,
}

impl logbook_disk::Disk for HeldCollection {
    fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
        let trash = to
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".trash-"));
        if trash {
            let (gate, cv) = &*self.gate;
            let mut g = gate.lock().unwrap();
            g.entered = true;
            cv.notify_all();
            let (mut g, waited) = cv
                .wait_timeout_while(g, Duration::from_secs(3), |g| !g.opened)
                .unwrap();
            g.gave_up |= waited.timed_out();
        }
        logbook_disk::RealDisk.rename(from, to)
    }
    fn create_dir_all(&self, p: &std::path::Path) -> std::io::Result<()> {
        logbook_disk::RealDisk.create_dir_all(p)
    }
    fn list(&self, p: &std::path::Path) -> std::io::Result<Vec<String>> {
        logbook_disk::RealDisk.list(p)
    }
    fn open_read(&self, p: &std::path::Path) -> std::io::Result<Arc<dyn logbook_disk::DiskFile>> {
        logbook_disk::RealDisk.open_read(p)
    }
    fn open_write(&self, p: &std::path::Path) -> std::io::Result<Arc<dyn logbook_disk::DiskFile>> {
        logbook_disk::RealDisk.open_write(p)
    }
    fn create(&self, p: &std::path::Path) -> std::io::Result<Arc<dyn logbook_disk::DiskFile>> {
        logbook_disk::RealDisk.create(p)
    }
    fn remove_file(&self, p: &std::path::Path) -> std::io::Result<()> {
        logbook_disk::RealDisk.remove_file(p)
    }
    fn remove_dir_all(&self, p: &std::path::Path) -> std::io::Result<()> {
        logbook_disk::RealDisk.remove_dir_all(p)
    }
    fn sync_dir(&self, p: &std::path::Path) -> std::io::Result<()> {
        logbook_disk::RealDisk.sync_dir(p)
    }
    fn free_bytes(&self, p: &std::path::Path) -> std::io::Result<u64> {
        logbook_disk::RealDisk.free_bytes(p)
    }
    fn exists(&self, p: &std::path::Path) -> bool {
        logbook_disk::RealDisk.exists(p)
    }
    fn is_dir(&self, p: &std::path::Path) -> bool {
        logbook_disk::RealDisk.is_dir(p)
    }
    fn try_lock(&self, p: &std::path::Path) -> std::io::Result<Option<logbook_disk::LockGuard>> {
        logbook_disk::RealDisk.try_lock(p)
    }
}

/// A destination collects the journal's segments (renames, cuts, removals: a 16 MiB
/// discard took ~10 ms on this VM) on a blocking thread: on the runtime's worker it would
/// hold every call that worker serves. On a runtime of one thread, a timer must fire
/// while a collection is held in the disk; were the collection on that thread, nothing
/// would run until the gate gave up after 3 s.
#[test]
fn a_destination_collects_the_journal_on_a_blocking_thread_not_on_a_runtime_worker() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new((Mutex::new(Gate::default()), std::sync::Condvar::new()));
    let mut jc = JournalConfig::new(dir.path().join("journal"));
    jc.disk = Arc::new(HeldCollection { gate: gate.clone() });
    jc.segment_bytes = 500; // a few entries a segment: delivering them leaves some to collect
    let j = Journal::open(jc).unwrap();
    rt.block_on(async {
        let n = 40u64;
        append_records(&j, n).await;
        let t = Flaky::new(0, false);
        let d = Destination::new(
            Shared(t.clone()),
            j.clone(),
            config("held", Duration::from_secs(1)),
            Seqs::default(),
            Arc::new(GcCoordinator::default()),
        )
        .unwrap();
        let (tx, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(d.run(rx));
        // Wait (on this runtime's one thread) for a collection to reach the disk.
        until(Duration::from_secs(20), || gate.0.lock().unwrap().entered).await;
        // This thread is free while the collection is held: a timer fires.
        tokio::time::sleep(Duration::from_millis(20)).await;
        {
            let mut g = gate.0.lock().unwrap();
            assert!(
                !g.gave_up,
                "the runtime's thread ran only after the held collection gave up"
            );
            g.opened = true;
            gate.1.notify_all();
        }
        until(Duration::from_secs(20), || {
            t.got.lock().unwrap().len() as u64 == n
        })
        .await;
        tx.send(true).unwrap();
        task.await.unwrap().unwrap();
        assert_eq!(*t.got.lock().unwrap(), (1..=n).collect::<Vec<u64>>());
    });
}
