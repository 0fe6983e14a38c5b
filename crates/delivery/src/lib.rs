//! Delivery from the journal to destinations.
//!
//! A [`Destination`] reads the journal from its own durable cursor, feeds entries to a
//! [`Format`] that turns them into objects, writes the objects when the batch is big or
//! old enough, fsyncs them, and only then advances its cursor. Object keys are derived
//! from the journal range they hold, so a crash re-delivers and overwrites rather than
//! duplicates (see ARCHITECTURE.md).
//!
//! Formats: [`archive::ArchiveFormat`] (Bedrock invocation logs, S3 layout),
//! [`trail::TrailFormat`] (CloudTrail events for control-plane calls),
//! [`parquet::ParquetFormat`] (the open layout: Hive-partitioned Parquet).

use async_trait::async_trait;
pub use logbook_bucket::{Bucket, BucketError};
pub use logbook_cloudwatch::LogsError;
use logbook_journal::{Cursor, Entry, Journal, Reader};
use rand::Rng;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub mod archive;
pub mod cloudwatch;
pub mod parquet;
pub mod trail;

/// Delivery errors.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] logbook_journal::JournalError),
    /// The bucket failed.
    #[error(transparent)]
    Bucket(#[from] BucketError),
    /// Local I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// CloudWatch Logs failed.
    #[error(transparent)]
    CloudWatch(#[from] LogsError),
    /// A record names a bucket this server does not know (fix the configuration).
    #[error("{0}")]
    Config(String),
    /// A remote destination refused or could not be reached (an OTLP collector);
    /// retried with backoff.
    #[error("{0}")]
    Remote(String),
    /// A batch could not be encoded (a Parquet file of the open layout).
    #[error("encoding: {0}")]
    Encode(String),
    /// A background task failed.
    #[error("task: {0}")]
    Task(String),
}

impl DeliveryError {
    /// Will retrying the same write fail the same way (access denied, no such bucket or
    /// log group, bad credentials, a bad declaration)? Such errors are reported at once
    /// and retried slowly; the rest (5xx, throttling, timeouts, resets, local I/O) are
    /// retried with exponential backoff and jitter.
    pub fn is_permanent(&self) -> bool {
        match self {
            DeliveryError::Bucket(e) => e.is_permanent(),
            DeliveryError::CloudWatch(e) => e.is_permanent(),
            DeliveryError::Config(_) | DeliveryError::Encode(_) => true,
            DeliveryError::Journal(_)
            | DeliveryError::Io(_)
            | DeliveryError::Task(_)
            | DeliveryError::Remote(_) => false,
        }
    }
}

impl DeliveryError {
    /// Could the entry being written be the cause (see `BucketError::may_be_the_item`)?
    /// A destination parks an entry only after failures of this kind; the journal, the
    /// local disk, the network, throttling and credentials never make it park.
    pub fn may_be_the_item(&self) -> bool {
        match self {
            DeliveryError::Bucket(e) => e.may_be_the_item(),
            DeliveryError::CloudWatch(e) => e.may_be_the_item(),
            DeliveryError::Encode(_) => true,
            DeliveryError::Config(_)
            | DeliveryError::Journal(_)
            | DeliveryError::Io(_)
            | DeliveryError::Task(_)
            | DeliveryError::Remote(_) => false,
        }
    }
}

/// What one write delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Bytes sent (compressed objects, event messages).
    pub bytes: u64,
    /// Events the destination accepted the call for but refused to keep (CloudWatch Logs'
    /// too old / too new / expired).
    pub rejected: u64,
    /// Large-data objects (offloaded bodies) among what was written.
    pub large_data: u64,
}

/// Where a destination's output goes: a bucket, a CloudWatch Logs log group.
#[async_trait]
pub trait Target: Send + Sync + 'static {
    /// One write.
    type Item: Send + 'static;
    /// Write `item`; when this returns `Ok` the item survives a crash of this process
    /// (fsync'd, or acknowledged by the remote).
    async fn put(&self, item: Self::Item) -> Result<Written, DeliveryError>;
    /// Can the target take a write at all? Tells a poison entry from an outage.
    async fn probe(&self, name: &str) -> Result<(), DeliveryError>;
    /// Is `item` a large-data object (an offloaded body)? For Bedrock's
    /// `ModelInvocationLargeDataS3Delivery*` counts.
    fn is_large_data(_item: &Self::Item) -> bool {
        false
    }
}

#[async_trait]
impl Target for Bucket {
    type Item = (String, Vec<u8>);

    async fn put(&self, (key, data): Self::Item) -> Result<Written, DeliveryError> {
        let bytes = data.len() as u64;
        let large_data = u64::from(key.contains("/data/"));
        // Durable when it returns: a local bucket's file and folder are fsync'd.
        Bucket::put(self, &key, data).await?;
        Ok(Written {
            bytes,
            rejected: 0,
            large_data,
        })
    }

    fn is_large_data((key, _): &Self::Item) -> bool {
        key.contains("/data/")
    }

    async fn probe(&self, name: &str) -> Result<(), DeliveryError> {
        // A small fixed object, written and fsync'd.
        Bucket::put(self, &format!(".logbook-probe/{name}"), b"ok".to_vec()).await?;
        Ok(())
    }
}

/// Turns journal entries into a [`Target`]'s writes.
pub trait Format: Send + Sync + 'static {
    /// What it produces (objects, batches of log events).
    type Item: Send + 'static;
    /// Take one entry; return the uncompressed bytes it added (0 when it is not for this
    /// destination).
    fn add(&mut self, e: Entry) -> Result<usize, DeliveryError>;
    /// The writes for everything added since the last call, in write order (what a later
    /// write refers to comes first).
    fn take(&mut self) -> Result<Vec<Self::Item>, DeliveryError>;
    /// Forget everything added since the last `take` (after a failed write).
    fn reset(&mut self);
    /// For a format that keeps a tamper-evident log (`logbook_notary`): its state, to be
    /// stored once this batch's objects are durable and before the cursor moves to
    /// `position`. `None` for the rest.
    fn state(&self, _position: u64) -> Option<Vec<u8>> {
        None
    }
    /// Take up a stored state; returns the journal position it reached.
    fn restore(&mut self, _state: &[u8]) -> Result<u64, DeliveryError> {
        Ok(0)
    }
    /// The state last returned by [`Format::state`] is durable.
    fn commit(&mut self) {}
    /// For a sink that keeps its own durable position beside what it wrote (the log-group
    /// store's manifest names its files and the journal position they cover, in one
    /// atomic replace): that position. A destination never resumes below it, so a crash
    /// between the sink's write and the cursor's store re-delivers nothing to it.
    fn resume_at(&self) -> Option<u64> {
        None
    }
    /// Called after each run of [`Format::add`]s that read the journal up to where it was
    /// committed (or up to the batch's size): a format that hands entries to its sink in
    /// chunks (the store's tail, queryable at once) hands over the rest here.
    fn filled(&mut self) -> Result<(), DeliveryError> {
        Ok(())
    }
    /// Is what this format holds big enough to write now, whatever the bytes `add`
    /// reported (the store's tail, by its rows and Arrow memory)?
    fn full(&self) -> bool {
        false
    }
    /// A signed checkpoint to write when one is due (`force`: now).
    fn checkpoint(&mut self, _now_ms: u64, _force: bool) -> Option<Self::Item> {
        None
    }
    /// How long until a checkpoint is due (`None`: the format writes none).
    fn checkpoint_due_in(&self, _now_ms: u64) -> Option<Duration> {
        None
    }
}

/// The [`Format`] methods of a format that keeps its tamper-evident log in a field
/// `notary: Option<Notary>` (the archive, the trail): one delegation, written once.
#[macro_export]
macro_rules! notarized_format {
    () => {
        fn state(&self, position: u64) -> Option<Vec<u8>> {
            self.notary.as_ref().map(|n| n.state(position))
        }

        fn restore(&mut self, state: &[u8]) -> Result<u64, $crate::DeliveryError> {
            match &mut self.notary {
                Some(n) => n
                    .restore(state)
                    .map_err(|e| $crate::DeliveryError::Config(e.to_string())),
                None => Ok(0),
            }
        }

        fn commit(&mut self) {
            if let Some(n) = &mut self.notary {
                n.commit();
            }
        }

        fn checkpoint(&mut self, now_ms: u64, force: bool) -> Option<(String, Vec<u8>)> {
            self.notary.as_mut()?.checkpoint(now_ms, force)
        }

        fn checkpoint_due_in(&self, now_ms: u64) -> Option<std::time::Duration> {
            self.notary.as_ref().map(|n| n.due_in(now_ms))
        }
    };
}

/// Does a record hold media (a `"bytes":` member: an image, a document), which delivery
/// offloads instead of writing inline? (A SIMD substring search: a byte-by-byte window
/// compare was about 1.5 % of a strict call's CPU.)
pub(crate) fn has_media(payload: &[u8]) -> bool {
    memchr::memmem::find(payload, b"\"bytes\":").is_some()
}

/// Unix time in ms.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Counters of one destination (Bedrock's `ModelInvocationLogs*Delivery{Success,Failure}`).
#[derive(Debug, Default)]
pub struct DestinationStats {
    /// Entries delivered (or passed over as not for this destination).
    pub entries: AtomicU64,
    /// Records (entries for this destination) delivered.
    pub records: AtomicU64,
    /// Large-data objects (offloaded bodies) written.
    pub large_data: AtomicU64,
    /// Failed writes of large-data objects.
    pub large_data_failures: AtomicU64,
    /// Objects (or `PutLogEvents` batches) written.
    pub objects: AtomicU64,
    /// Bytes written.
    pub bytes: AtomicU64,
    /// Failed write attempts.
    pub failures: AtomicU64,
    /// Waits before a retry.
    pub retries: AtomicU64,
    /// Is the last failure one that retrying will not fix (access denied, no such bucket
    /// or group, bad credentials)?
    pub permanent: AtomicBool,
    /// Events the destination refused to keep (CloudWatch Logs: too old, too new).
    pub rejected: AtomicU64,
    /// Journal time (ms) of the oldest entry read but not yet delivered; 0 when none.
    pub oldest_pending_ms: AtomicU64,
    /// Next sequence not yet delivered.
    pub cursor: AtomicU64,
    /// Failures since the last success (0 when delivering normally).
    pub consecutive_failures: AtomicU64,
    /// Entries set aside because they alone could not be delivered while the destination
    /// itself worked (kept under `<journal>/parked/<destination>/`).
    pub parked: AtomicU64,
    /// Entries this destination will never deliver: the journal's disk budget ran out
    /// while it was down (fail-open only; each loss is also a trail event).
    pub lost: AtomicU64,
    /// The last failure, for health and operators.
    pub last_error: Mutex<Option<String>>,
    /// The destination's cursor name.
    pub name: std::sync::OnceLock<String>,
}

impl DestinationStats {
    /// Failures in a row after which a destination counts as stalled.
    pub const STALLED_AFTER: u64 = 3;

    fn failed(&self, e: &DeliveryError) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
        self.permanent.store(e.is_permanent(), Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }

    fn succeeded(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.permanent.store(false, Ordering::Relaxed);
    }

    /// Is the last failure permanent (and delivery failing)?
    pub fn permanent(&self) -> bool {
        self.permanent.load(Ordering::Relaxed)
            && self.consecutive_failures.load(Ordering::Relaxed) > 0
    }

    /// Is delivery failing again and again (so the cursor, and journal GC, stand still)?
    pub fn stalled(&self) -> bool {
        self.consecutive_failures.load(Ordering::Relaxed) >= Self::STALLED_AFTER
    }

    /// The destination's cursor name (what [`GcCoordinator::cursors`] calls it).
    pub fn name(&self) -> &str {
        self.name.get().map_or("", String::as_str)
    }

    /// The last failure.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Coordinates journal garbage collection: a segment goes only when every destination's
/// cursor has passed it.
///
/// When the journal's disk budget is exhausted with `on_failure = "fail-open"`, the
/// oldest segments go anyway: the *floor* rises above the cursors of the destinations that
/// hold them, and those destinations resume at the floor (the entries between are counted
/// as lost, and the loss is written to the trail before the segments are deleted).
#[derive(Debug, Default)]
pub struct GcCoordinator {
    cursors: Mutex<HashMap<String, u64>>,
    floor: AtomicU64,
}

impl GcCoordinator {
    /// Record `name`'s cursor; returns what GC may free: the smallest cursor of all, or
    /// the floor when that is higher.
    pub fn set(&self, name: &str, cursor: u64) -> u64 {
        let mut m = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(name.to_string(), cursor);
        m.values()
            .copied()
            .min()
            .unwrap_or(cursor)
            .max(self.floor())
    }

    /// Every registered cursor.
    pub fn cursors(&self) -> Vec<(String, u64)> {
        let m = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<(String, u64)> = m.iter().map(|(k, v)| (k.clone(), *v)).collect();
        v.sort();
        v
    }

    /// No destination resumes below `floor` from now on (it never goes down).
    pub fn raise_floor(&self, floor: u64) {
        self.floor.fetch_max(floor, Ordering::SeqCst);
    }

    /// Below this, entries may be gone whatever the cursors say.
    pub fn floor(&self) -> u64 {
        self.floor.load(Ordering::SeqCst)
    }
}

/// Settings of a destination.
#[derive(Debug, Clone)]
pub struct DestinationConfig {
    /// Cursor name (unique per destination).
    pub name: String,
    /// Roll at this many uncompressed bytes.
    pub max_object_bytes: usize,
    /// Roll when the first entry of a batch is this old.
    pub max_object_age: Duration,
    /// First wait after a failure (doubles up to 30 s, with jitter).
    pub retry_base: Duration,
    /// Wait after a permanent failure (access denied, no such bucket or group).
    pub permanent_retry: Duration,
}

/// Longest wait between retries of a passing failure.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The wait before the next retry: a permanent failure waits `permanent`; otherwise a
/// random time in `[backoff/2, backoff]` (so many gateways do not retry in step).
pub fn retry_wait(backoff: Duration, permanent: bool, permanent_wait: Duration) -> Duration {
    if permanent {
        return permanent_wait;
    }
    let half = backoff / 2;
    let ms = half.as_millis() as u64;
    half + Duration::from_millis(rand::rng().random_range(0..=ms))
}

/// Failures in a row of one entry written alone, each of a kind the entry itself may
/// cause ([`DeliveryError::may_be_the_item`]), after which the entry is parked instead of
/// holding delivery (and journal GC) forever, if the destination then answers a probe.
/// Transient failures (a local EIO, a full disk, the network, throttling) never count,
/// however many: a good record must not be set aside because the disk hiccuped (found by
/// the system simulation: three unrelated faults in a row once parked a good record).
pub const PARK_AFTER: u32 = 3;

/// Shortest time between two reads of new journal entries by one destination (or its
/// `max_object_age`, if shorter). Under load a commit lands every fraction of a
/// millisecond; reading after each one cost a blocking task, a thread wake-up and a
/// `pread` per destination per commit (about a quarter of the gateway's CPU at 5,000
/// calls/s with three destinations). The first commit after a quiet spell is read at
/// once; under load, entries are read in batches this far apart. Nothing is delayed that
/// a caller waits for: records are durable before they are read.
pub const MIN_FILL_INTERVAL: Duration = Duration::from_millis(5);

/// How long a batch that holds nothing for its destination (every entry read was another
/// destination's: records, for the trail; trail events and other buckets' records, for an
/// archive) waits before its cursor moves past them. Not `max_object_age`: the journal
/// keeps every segment a cursor still needs, and the trail, which takes a few entries in
/// thousands, held a minute of segments (about 1 GB at 5,000 calls/s) for nothing. Not
/// at once either: each move stores the cursor with an fsync.
pub const EMPTY_BATCH_AGE: Duration = Duration::from_secs(1);

struct Batch<F> {
    reader: Reader,
    format: F,
    raw_bytes: usize,
    entries: u64,
    /// Entries this destination took (the rest were for others).
    records: u64,
    /// When the batch read its first entry for its destination, or, while it holds none,
    /// its first entry of any kind.
    started: Option<Instant>,
    /// Journal time of the first entry the batch took (0 while it took none).
    first_time_ms: u64,
}

impl<F: Format> Batch<F> {
    /// An empty batch reading from `seq` (after a failure: nothing past the cursor is kept).
    fn at(journal: &Journal, seq: u64, mut format: F) -> Self {
        format.reset();
        Batch {
            reader: journal.reader(seq),
            format,
            raw_bytes: 0,
            entries: 0,
            records: 0,
            started: None,
            first_time_ms: 0,
        }
    }

    fn fill(&mut self, upto: u64, max: usize) -> Result<(), DeliveryError> {
        // A full format stops the batch only once it holds an entry, so a batch rebuilt
        // after a failed write always has something to flush again.
        while self.raw_bytes < max && !(self.started.is_some() && self.format.full()) {
            let Some(e) = self.reader.next_entry(upto)? else {
                break;
            };
            if self.started.is_none() {
                self.started = Some(Instant::now());
            }
            let time_ms = e.time_ms;
            let n = self.format.add(e)?;
            if n > 0 && self.records == 0 {
                // The object's age counts from its first own entry, not from the entries
                // it passed over before it (at most EMPTY_BATCH_AGE of them).
                self.started = Some(Instant::now());
                self.first_time_ms = time_ms;
            }
            self.raw_bytes += n;
            self.records += u64::from(n > 0);
            self.entries += 1;
        }
        self.format.filled()
    }

    /// How old the batch may grow before it is flushed: `max_age` once it holds something
    /// for its destination, [`EMPTY_BATCH_AGE`] (or `max_age`, if shorter) while it holds
    /// only entries it passed over.
    fn max_age(&self, max_age: Duration) -> Duration {
        if self.records == 0 {
            EMPTY_BATCH_AGE.min(max_age)
        } else {
            max_age
        }
    }
}

/// A destination task.
pub struct Destination<F, T> {
    target: T,
    journal: Journal,
    cursor: Cursor,
    config: DestinationConfig,
    stats: Arc<DestinationStats>,
    gc: Arc<GcCoordinator>,
    format: Option<F>,
}

impl<F: Format, T: Target<Item = F::Item>> Destination<F, T> {
    /// A destination writing `format`'s output to `target`. Registers its cursor with `gc`.
    pub fn new(
        target: T,
        journal: Journal,
        config: DestinationConfig,
        format: F,
        gc: Arc<GcCoordinator>,
    ) -> Result<Self, DeliveryError> {
        let cursor = journal.cursor(&config.name);
        // A destination added (or re-added) after segments were collected cannot owe
        // anything older than what is still on disk: GC waited for every destination
        // that existed at the time.
        let mut start = cursor.load()?.max(journal.first_available()?);
        if let Some(reached) = format.resume_at() {
            start = start.max(reached);
        }
        let mut format = format;
        let state = Self::state_path(&journal, &config.name);
        match journal.disk().read(&state) {
            Ok(bytes) => {
                let reached = format
                    .restore(&bytes)
                    .map_err(|e| DeliveryError::Config(format!("{}: {e}", state.display())))?;
                // The state is stored after the objects it lists are durable and before the
                // cursor: a crash between the two leaves the cursor behind it.
                start = start.max(reached);
                // What we just read may not be durable (renamed into place just before a
                // folder fsync that failed): make it so before the cursor is moved to it,
                // or a crash would bring back an older state behind a newer cursor, and the
                // entries between them would be in the bucket but in no checkpoint. (Found
                // by the system simulation, seed 1001.)
                journal.disk().write_atomic(&state, &bytes)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        cursor.store(start)?;
        gc.set(&config.name, start);
        let stats = Arc::new(DestinationStats::default());
        stats.cursor.store(start, Ordering::Relaxed);
        let _ = stats.name.set(config.name.clone());
        Ok(Destination {
            target,
            journal,
            cursor,
            config,
            stats,
            gc,
            format: Some(format),
        })
    }

    /// Shared counters.
    pub fn stats(&self) -> Arc<DestinationStats> {
        self.stats.clone()
    }

    /// Where a destination's tamper-evident log keeps its state.
    pub fn state_path(journal: &Journal, name: &str) -> std::path::PathBuf {
        journal.dir().join("notary").join(format!("{name}.json"))
    }

    /// Store the format's log state, if it keeps one, for journal position `position`.
    async fn store_state(&self, format: &mut F, position: u64) -> Result<bool, DeliveryError> {
        let Some(bytes) = format.state(position) else {
            return Ok(false);
        };
        let disk = self.journal.disk().clone();
        let path = Self::state_path(&self.journal, &self.config.name);
        tokio::task::spawn_blocking(move || -> Result<(), DeliveryError> {
            if let Some(dir) = path.parent() {
                disk.create_dir_all(dir)?;
            }
            disk.write_atomic(&path, &bytes)?;
            Ok(())
        })
        .await
        .map_err(|e| DeliveryError::Task(e.to_string()))??;
        format.commit();
        Ok(true)
    }

    /// Write a checkpoint if one is due (`force`: now), then store the state that says so.
    /// A crash between the two writes the same checkpoint again.
    async fn checkpoint(&self, format: &mut F, force: bool) -> Result<(), DeliveryError> {
        let Some(item) = format.checkpoint(now_ms(), force) else {
            return Ok(());
        };
        // Not counted as a log object (Bedrock's delivery metrics count logs).
        self.target.put(item).await?;
        let position = self.stats.cursor.load(Ordering::Relaxed);
        self.store_state(format, position).await.map(|_| ())
    }

    async fn put(&self, item: F::Item) -> Result<(), DeliveryError> {
        let large = T::is_large_data(&item);
        let w = match self.target.put(item).await {
            Ok(w) => w,
            Err(e) => {
                if large {
                    self.stats
                        .large_data_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
                return Err(e);
            }
        };
        self.stats.objects.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes.fetch_add(w.bytes, Ordering::Relaxed);
        self.stats
            .large_data
            .fetch_add(w.large_data, Ordering::Relaxed);
        if w.rejected > 0 {
            self.stats.rejected.fetch_add(w.rejected, Ordering::Relaxed);
            tracing::error!(destination = %self.config.name, events = w.rejected, "the destination refused to keep events (too old or too new for it)");
        }
        Ok(())
    }

    /// Can the destination take a write at all? Tells a poison entry from an outage.
    async fn probe(&self) -> Result<(), DeliveryError> {
        self.target.probe(&self.config.name).await
    }

    /// Where to start again after a failure: the last cursor known to be durable, or the
    /// floor when the journal's disk budget made the oldest entries go (the budget
    /// enforcer counted them as lost).
    ///
    /// Not the cursor file: a store whose folder fsync failed leaves the new value in the
    /// file but not on the disk, and resuming from it would skip entries whose cursor a
    /// crash can still take back (found by the system simulation's live runs, seed 0: the
    /// loop then waited past entries it had never confirmed, with its health and GC
    /// position behind). From the durable one, those entries are written again (same
    /// object keys) and the cursor stored again.
    fn resume_point(&self) -> Result<u64, DeliveryError> {
        let c = self.stats.cursor.load(Ordering::Relaxed);
        let floor = self.gc.floor();
        if c >= floor {
            return Ok(c);
        }
        tracing::error!(destination = %self.config.name, from = c, to = floor, "resuming past entries the journal's disk budget did not keep");
        // Storing the new cursor may fail; delivery resumes at the floor all the same
        // (what is below it is gone either way) and the next delivered batch stores a
        // cursor past it. Giving up here would stop the destination for good.
        match self.cursor.store(floor) {
            Ok(()) => self.stats.cursor.store(floor, Ordering::Relaxed),
            Err(e) => {
                tracing::error!(destination = %self.config.name, error = %e, "storing the cursor at the floor failed; resuming there anyway")
            }
        }
        Ok(floor)
    }

    async fn wait_to_retry(&self, backoff: &mut Duration, e: &DeliveryError) {
        let wait = retry_wait(*backoff, e.is_permanent(), self.config.permanent_retry);
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(wait).await;
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
    }

    /// Set aside, durably, the entries of `[from, to)` that this destination would write
    /// (those `format` takes, or fails on), and move the cursor past the range. Entries
    /// in the range that are another destination's (trail events in the archive's range,
    /// another bucket's records) are skipped, not copied: they are not the problem, and
    /// the parked count must say how many entries were actually set aside. Returns the
    /// format, reset, for the next batch, whether parking worked or not.
    async fn park(
        &self,
        from: u64,
        to: u64,
        format: F,
    ) -> Result<(Result<u64, DeliveryError>, F), DeliveryError> {
        let dir = self.journal.dir().join("parked").join(&self.config.name);
        let mut reader = self.journal.reader(from);
        let cursor = self.cursor.clone();
        let disk = self.journal.disk().clone();
        let (n, format) = tokio::task::spawn_blocking(move || {
            let mut format = format;
            let r = (|| -> Result<u64, DeliveryError> {
                disk.create_dir_all(&dir)?;
                let mut n = 0;
                while let Some(e) = reader.next_entry(to)? {
                    let (seq, payload) = (e.seq, e.payload.clone());
                    if matches!(format.add(e), Ok(0)) {
                        continue;
                    }
                    let path = dir.join(format!("{seq:020}.json"));
                    let f = disk.create(&path)?;
                    f.write_at(&payload, 0)?;
                    f.sync_all()?;
                    n += 1;
                }
                disk.sync_dir(&dir)?;
                cursor.store(to)?;
                Ok(n)
            })();
            format.reset();
            (r, format)
        })
        .await
        .map_err(|e| DeliveryError::Task(e.to_string()))?;
        let n = match n {
            Ok(n) => n,
            Err(e) => return Ok((Err(e), format)),
        };
        self.stats.cursor.store(to, Ordering::Relaxed);
        self.stats.parked.fetch_add(n, Ordering::Relaxed);
        self.stats.oldest_pending_ms.store(0, Ordering::Relaxed);
        let min = self.gc.set(&self.config.name, to);
        self.collect_garbage(min).await;
        Ok((Ok(n), format))
    }

    async fn flush(&self, batch: &mut Batch<F>) -> Result<(), DeliveryError> {
        for item in batch.format.take()? {
            self.put(item).await?;
        }
        let next = batch.reader.position();
        if self.store_state(&mut batch.format, next).await? {
            // The stored state is where a restart resumes (its objects are durable), so a
            // retry after a failed cursor store resumes there too: from the old cursor, the
            // batch's lines would be added to the tree a second time (found by the system
            // simulation, seed 69).
            self.stats.cursor.store(next, Ordering::Relaxed);
        }
        let cursor = self.cursor.clone();
        tokio::task::spawn_blocking(move || cursor.store(next))
            .await
            .map_err(|e| DeliveryError::Task(e.to_string()))??;
        self.stats.cursor.store(next, Ordering::Relaxed);
        self.stats
            .entries
            .fetch_add(batch.entries, Ordering::Relaxed);
        self.stats
            .records
            .fetch_add(batch.records, Ordering::Relaxed);
        batch.raw_bytes = 0;
        batch.entries = 0;
        batch.records = 0;
        batch.started = None;
        self.stats.oldest_pending_ms.store(0, Ordering::Relaxed);
        let min = self.gc.set(&self.config.name, next);
        self.collect_garbage(min).await;
        self.checkpoint(&mut batch.format, false).await
    }

    /// Collect the journal's segments every destination has passed, on a blocking thread:
    /// removing segments waits for the disk (and its discards), which must not hold up
    /// this runtime's workers (they serve the calls).
    async fn collect_garbage(&self, min: u64) {
        let journal = self.journal.clone();
        match tokio::task::spawn_blocking(move || journal.collect_garbage(min)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "journal garbage collection failed"),
            Err(e) => tracing::warn!(error = %e, "journal garbage collection did not finish"),
        }
    }

    /// Deliver until `shutdown` turns true, then flush what is pending and return.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), DeliveryError> {
        let start = self.resume_point()?;
        let mut committed = self.journal.committed();
        let format = self
            .format
            .take()
            .ok_or_else(|| DeliveryError::Task("destination already ran".into()))?;
        let mut batch = Some(Batch::at(&self.journal, start, format));
        let base = self.config.retry_base;
        let mut backoff = base;
        let mut journal_open = true;
        let mut stop_requested = false;
        // After repeated failures, batches hold one entry, so a poison entry can be told
        // from an outage (and parked) instead of holding delivery forever.
        let mut isolate = false;
        let mut isolated_failures = 0u32;
        // The isolated range the current streak of failures is about.
        let mut streak_from: Option<u64> = None;
        let pace = MIN_FILL_INTERVAL.min(self.config.max_object_age);
        let mut last_fill: Instant;
        loop {
            let max = if isolate {
                1
            } else {
                self.config.max_object_bytes
            };
            let stopping = stop_requested || *shutdown.borrow();
            let upto = *committed.borrow_and_update();
            let mut b = batch
                .take()
                .ok_or_else(|| DeliveryError::Task("batch lost".into()))?;
            last_fill = Instant::now();
            let (b2, res) = tokio::task::spawn_blocking(move || {
                let r = b.fill(upto, max);
                (b, r)
            })
            .await
            .map_err(|e| DeliveryError::Task(e.to_string()))?;
            let mut b = b2;
            if let Err(e) = res {
                // Never stop delivering: count it, say it, and start again from the cursor.
                self.stats.failed(&e);
                tracing::error!(destination = %self.config.name, error = %e, backoff_ms = backoff.as_millis() as u64, "reading the journal failed; will retry");
                if stopping {
                    return Err(e);
                }
                self.wait_to_retry(&mut backoff, &e).await;
                let from = self.resume_point()?;
                batch = Some(Batch::at(&self.journal, from, b.format));
                continue;
            }
            if b.records > 0 {
                let _ = self.stats.oldest_pending_ms.compare_exchange(
                    0,
                    b.first_time_ms.max(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            let full = b.raw_bytes >= max || b.format.full();
            let max_age = b.max_age(self.config.max_object_age);
            let old = b.started.is_some_and(|s| s.elapsed() >= max_age);
            let drained = b.reader.position() >= upto;
            if b.started.is_some() && (full || old || (stopping && drained)) {
                match self.flush(&mut b).await {
                    Ok(()) => {
                        backoff = base;
                        self.stats.succeeded();
                        isolate = false;
                        isolated_failures = 0;
                        streak_from = None;
                    }
                    Err(e) => {
                        self.stats.failed(&e);
                        let from = self.resume_point()?;
                        let to = b.reader.position();
                        // A streak counts failures of one isolated entry (the same range)
                        // that it may have caused itself; anything else starts it again.
                        if isolate && e.may_be_the_item() {
                            if streak_from == Some(from) {
                                isolated_failures += 1;
                            } else {
                                streak_from = Some(from);
                                isolated_failures = 1;
                            }
                        } else {
                            streak_from = None;
                            isolated_failures = 0;
                        }
                        isolate = self.stats.stalled();
                        if to > from
                            && isolated_failures >= PARK_AFTER
                            && self.probe().await.is_ok()
                        {
                            // The destination takes writes; these entries alone do not.
                            let (parked, format) = self.park(from, to, b.format).await?;
                            match parked {
                                Ok(n) => {
                                    tracing::error!(destination = %self.config.name, from, to, entries = n, error = %e, "entries that cannot be delivered were parked");
                                    isolated_failures = 0;
                                    streak_from = None;
                                    batch = Some(Batch::at(&self.journal, to, format));
                                }
                                Err(pe) => {
                                    // Nothing moved: retry as after any failed write.
                                    self.stats.failed(&pe);
                                    tracing::error!(destination = %self.config.name, from, to, error = %pe, "parking entries that cannot be delivered failed; will retry");
                                    if stopping {
                                        return Err(pe);
                                    }
                                    self.wait_to_retry(&mut backoff, &pe).await;
                                    let from = self.resume_point()?.max(from);
                                    batch = Some(Batch::at(&self.journal, from, format));
                                }
                            }
                            continue;
                        }
                        if e.is_permanent() {
                            tracing::error!(destination = %self.config.name, error = %e, retry_in_ms = self.config.permanent_retry.as_millis() as u64, "delivery failed and retrying will not fix it: check the destination's declaration, permissions and credentials");
                        } else {
                            tracing::error!(destination = %self.config.name, error = %e, backoff_ms = backoff.as_millis() as u64, "delivery failed; will retry");
                        }
                        if stopping {
                            return Err(e);
                        }
                        self.wait_to_retry(&mut backoff, &e).await;
                        // Rebuild the batch from the cursor: nothing past it is acknowledged.
                        let from = self.resume_point()?.max(from);
                        batch = Some(Batch::at(&self.journal, from, b.format));
                        continue;
                    }
                }
            }
            if stopping && b.reader.position() >= *committed.borrow() && b.started.is_none() {
                // A last checkpoint, so the log's newest state is signed; if it cannot be
                // written, the next start writes it (what it lists is in the stored state).
                if let Err(e) = self.checkpoint(&mut b.format, true).await {
                    b.format.reset();
                    tracing::error!(destination = %self.config.name, error = %e, "the checkpoint at shutdown could not be written; the next start writes it");
                }
                return Ok(());
            }
            if b.started.is_none() && !stopping {
                // Idle: a checkpoint is still written on time, so its absence means something.
                if let Err(e) = self.checkpoint(&mut b.format, false).await {
                    b.format.reset();
                    self.stats.failed(&e);
                    tracing::error!(destination = %self.config.name, error = %e, "writing a checkpoint failed; will retry");
                    self.wait_to_retry(&mut backoff, &e).await;
                    batch = Some(b);
                    continue;
                }
            }
            if full || (!drained && !stopping) {
                batch = Some(b);
                continue;
            }
            let deadline = b.started.map(|s| max_age.saturating_sub(s.elapsed()));
            let checkpoint_due = b.format.checkpoint_due_in(now_ms());
            let deadline = match (deadline, checkpoint_due) {
                (Some(a), Some(c)) => Some(a.min(c)),
                (a, c) => a.or(c),
            };
            batch = Some(b);
            if stopping {
                continue;
            }
            tokio::select! {
                r = committed.changed(), if journal_open => {
                    let wait = pace.saturating_sub(last_fill.elapsed());
                    if r.is_err() {
                        journal_open = false;
                    } else if !wait.is_zero() {
                        // Under load: let more commits land before the next read.
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            r = shutdown.changed() => {
                                if r.is_err() {
                                    stop_requested = true;
                                }
                            }
                        }
                    }
                }
                _ = tokio::time::sleep(deadline.unwrap_or(Duration::from_secs(3600))) => {}
                r = shutdown.changed() => {
                    if r.is_err() {
                        stop_requested = true;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod media_tests {
    /// The search finds the member wherever it is, and only the member.
    #[test]
    fn has_media_finds_a_bytes_member_anywhere_and_nothing_else() {
        assert!(super::has_media(br#"{"bytes":"AAAA"}"#));
        assert!(super::has_media(
            br#"{"input":{"inputBodyJson":{"messages":[{"content":[{"image":{"source":{"bytes":"iVBO"}}}]}]}}}"#
        ));
        let long = format!(r#"{{"a":"{}","bytes":1}}"#, "x".repeat(10_000));
        assert!(super::has_media(long.as_bytes()));
        assert!(!super::has_media(
            br#"{"text":"bytes: none","bytesUsed":3}"#
        ));
        assert!(!super::has_media(b""));
        assert!(!super::has_media(br#""bytes""#));
    }
}
