//! Feeding the store from the journal. The store is a sink like the archive and
//! CloudWatch Logs: [`StoreFormat`] and [`StoreTarget`] are run by the one journal
//! follower, `logbook_delivery::Destination`, with its durable cursor, retries with
//! backoff, health counters and its place in journal garbage collection.
//!
//! Every record read goes to the tail of its log group at once (queryable before it is
//! in a file); the tail is flushed to Parquet when it is big or old, and on shutdown.
//! The store's manifest names its files together with the journal position they cover
//! (one atomic replace), and the destination never resumes below that position
//! ([`logbook_delivery::Format::resume_at`]): a crash between a flush and the cursor's
//! store adds nothing twice. Retention and compaction (one file per closed hour) are not
//! part of following the journal: [`maintain`] runs them.

use crate::{now_ms, Store, StoreError};
use async_trait::async_trait;
use logbook_delivery::{
    DeliveryError, Destination, DestinationConfig, Format, GcCoordinator, Target, Written,
};
use logbook_journal::{Entry, Journal, Kind};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The cursor name of the store's destination (journal GC and health call it this).
pub const NAME: &str = "store";

/// Entries handed to the store's tail at once (fewer, larger Arrow batches).
const CHUNK: usize = 4096;

/// When to flush and expire.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Flush when the tail holds this many records.
    pub flush_rows: u64,
    /// Flush when the tail holds this many bytes (Arrow memory).
    pub flush_bytes: usize,
    /// Flush when the oldest record in the tail is this old.
    pub flush_age: Duration,
    /// Run retention this often.
    pub retention_every: Duration,
    /// Mask record bodies before they enter the log groups (`logbook_redact`).
    pub redactor: Option<std::sync::Arc<logbook_redact::Redactor>>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            flush_rows: 100_000,
            // The tail is memory: at 1,000 calls/s of the benchmark's records, 8 MiB is
            // about 2,100 records, a flush every 2 s (bench/memory.sh, five minutes: max
            // resident 93 MB against 111 at 16 MiB, 121 at 16 MiB before LZ4 hot files;
            // 128 MiB kept it above 300 MB). The open hour's files this leaves are merged
            // 16 at a time by compaction (`OPEN_HOUR_MERGE`): queries pay per file.
            flush_bytes: 8 << 20,
            flush_age: Duration::from_secs(60),
            retention_every: Duration::from_secs(60),
            redactor: None,
        }
    }
}

fn delivery_error(e: StoreError) -> DeliveryError {
    // Every store failure is local (the disk, the folder, an encoding of the disk's
    // state): retried with backoff, never a reason to park a record.
    match e {
        StoreError::Io(e) => DeliveryError::Io(e),
        e => DeliveryError::Io(std::io::Error::other(e.to_string())),
    }
}

/// One flush of the store's tail to Parquet (and of its manifest, with the journal
/// position it covers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreFlush;

/// Journal entries into the store's tail.
pub struct StoreFormat {
    store: Arc<Store>,
    redactor: Option<Arc<logbook_redact::Redactor>>,
    pending: Vec<Entry>,
    /// Entries below this are in the tail already (re-read after a failed flush).
    seen: u64,
    flush_rows: u64,
    flush_bytes: usize,
    full: bool,
}

impl StoreFormat {
    /// Feed `store`, flushing at `config`'s rows and bytes, masking with its redactor.
    pub fn new(store: Arc<Store>, config: &IngestConfig) -> Self {
        let seen = store.next_seq();
        StoreFormat {
            store,
            redactor: config.redactor.clone(),
            pending: Vec::new(),
            seen,
            flush_rows: config.flush_rows,
            flush_bytes: config.flush_bytes,
            full: false,
        }
    }

    fn hand_over(&mut self) {
        if !self.pending.is_empty() {
            self.store.add_entries(&self.pending);
            self.pending.clear();
        }
        self.seen = self.store.next_seq();
        let (rows, bytes, _) = self.store.tail_size();
        self.full = rows >= self.flush_rows || bytes >= self.flush_bytes;
    }
}

impl Format for StoreFormat {
    type Item = StoreFlush;

    fn add(&mut self, mut e: Entry) -> Result<usize, DeliveryError> {
        if e.kind != Kind::Record {
            // Not a record: it still moves the store's position (a query waiting for its
            // own writes must not wait for entries that are no record of any group).
            self.pending.push(e);
            return Ok(0);
        }
        let n = e.payload.len();
        if e.seq < self.seen {
            // In the tail already: counted in the batch (so a batch rebuilt after a failed
            // flush is as big as before and the tail does not grow while flushes fail),
            // not added again.
            return Ok(n);
        }
        if let Some(r) = &self.redactor {
            if let std::borrow::Cow::Owned(p) = r.redact_record(&e.payload) {
                e.payload = p;
            }
        }
        self.pending.push(e);
        if self.pending.len() >= CHUNK {
            self.hand_over();
        }
        Ok(n)
    }

    fn filled(&mut self) -> Result<(), DeliveryError> {
        self.hand_over();
        Ok(())
    }

    fn full(&self) -> bool {
        self.full
    }

    fn take(&mut self) -> Result<Vec<StoreFlush>, DeliveryError> {
        self.hand_over();
        let (rows, _, _) = self.store.tail_size();
        if rows == 0 && self.store.next_seq() <= self.store.durable_seq() {
            return Ok(Vec::new());
        }
        Ok(vec![StoreFlush])
    }

    fn reset(&mut self) {
        // What was handed over stays in the tail (it is committed journal content and a
        // retry flushes it); what was not is read again.
        self.pending.clear();
        self.seen = self.store.next_seq();
    }

    fn resume_at(&self) -> Option<u64> {
        Some(self.store.durable_seq())
    }
}

/// The store, as a destination's target.
#[derive(Clone)]
pub struct StoreTarget {
    store: Arc<Store>,
}

impl StoreTarget {
    /// Flush `store`.
    pub fn new(store: Arc<Store>) -> Self {
        StoreTarget { store }
    }
}

#[async_trait]
impl Target for StoreTarget {
    type Item = StoreFlush;

    async fn put(&self, _item: StoreFlush) -> Result<Written, DeliveryError> {
        let st = self.store.clone();
        let (_, bytes) = tokio::task::spawn_blocking(move || st.flush_counted())
            .await
            .map_err(|e| DeliveryError::Task(e.to_string()))?
            .map_err(delivery_error)?;
        Ok(Written {
            bytes,
            ..Written::default()
        })
    }

    async fn probe(&self, _name: &str) -> Result<(), DeliveryError> {
        let st = self.store.clone();
        tokio::task::spawn_blocking(move || st.probe())
            .await
            .map_err(|e| DeliveryError::Task(e.to_string()))?
            .map_err(delivery_error)
    }
}

/// The store's destination: follows `journal` from the store's durable position, with
/// the cursor [`NAME`] registered in `gc`.
pub fn destination(
    store: Arc<Store>,
    journal: Journal,
    config: &IngestConfig,
    gc: Arc<GcCoordinator>,
) -> Result<Destination<StoreFormat, StoreTarget>, DeliveryError> {
    let dcfg = DestinationConfig {
        name: NAME.into(),
        max_object_bytes: config.flush_bytes,
        max_object_age: config.flush_age,
        retry_base: Duration::from_millis(100),
        permanent_retry: Duration::from_secs(30),
    };
    Destination::new(
        StoreTarget::new(store.clone()),
        journal,
        dcfg,
        StoreFormat::new(store, config),
        gc,
    )
}

/// Apply retention (records and bodies) and compaction now and every `every` until
/// `shutdown` turns true. The first pass runs at once, so a changed configuration
/// applies at start. A pass under way when `shutdown` turns true stops at its next batch
/// (a first start over an imported month compacts for many minutes; a stop must not wait
/// for it).
pub async fn maintain(store: Arc<Store>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    // First the caches queries read (before compaction, which may take long on a fresh
    // import, makes the files' names change).
    let st = store.clone();
    let mut warm = tokio::task::spawn_blocking(move || {
        let t = std::time::Instant::now();
        let (files, bytes) = st.warm_caches();
        tracing::info!(
            files,
            index_bytes = bytes,
            ms = t.elapsed().as_millis() as u64,
            "store: rollups and text indexes read into their caches"
        );
    });
    tokio::select! {
        _ = &mut warm => {}
        // A stop ends the warm-up; the pass below still applies retention.
        _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
            store.interrupt_maintenance();
            let _ = warm.await;
        }
    }
    loop {
        let st = store.clone();
        let mut pass = tokio::task::spawn_blocking(move || {
            st.apply_retention(now_ms())?;
            st.compact(now_ms())
        });
        let r = tokio::select! {
            r = &mut pass => r,
            // (A closed channel is a stop too; the guard is not held past the wait.)
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                store.interrupt_maintenance();
                pass.await
            }
        };
        match r {
            Ok(Err(e)) => tracing::error!(error = %e, "store: retention or compaction failed"),
            Err(e) => tracing::error!(error = %e, "store: retention task failed"),
            Ok(Ok(_)) => {}
        }
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logbook_journal::JournalConfig;
    use std::sync::atomic::Ordering;

    fn record(seq: u64) -> Entry {
        let payload = format!(
            r#"{{"schemaType":"ModelInvocationLog","schemaVersion":"1.0","timestamp":"2026-12-03T08:00:00Z","accountId":"123456789012","region":"us-east-1","requestId":"r{seq}","operation":"Converse","modelId":"m","logbook":{{"destination":{{"logGroup":"g"}}}}}}"#
        );
        Entry {
            seq,
            time_ms: 0,
            kind: Kind::Record,
            version: 1,
            payload: payload.into_bytes(),
        }
    }

    /// The tail is flushed when it holds `flush_rows` records *or* `flush_bytes` bytes,
    /// each on its own; an emptied tail is not full.
    #[test]
    fn the_store_is_full_by_rows_or_by_bytes() {
        for (rows, bytes) in [(2, usize::MAX), (u64::MAX, 1)] {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(Store::open(dir.path()).unwrap());
            store.ensure_group("g").unwrap();
            let config = IngestConfig {
                flush_rows: rows,
                flush_bytes: bytes,
                ..Default::default()
            };
            let mut f = StoreFormat::new(store.clone(), &config);
            f.filled().unwrap();
            assert!(!f.full(), "an empty tail is not full ({rows}, {bytes})");
            assert!(f.add(record(1)).unwrap() > 0);
            assert!(f.add(record(2)).unwrap() > 0);
            f.filled().unwrap();
            assert!(f.full(), "full at {rows} rows or {bytes} bytes");
            assert_eq!(f.take().unwrap(), vec![StoreFlush]);
            store.flush().unwrap();
            f.filled().unwrap();
            assert!(!f.full(), "flushed, so no longer full");
            assert_eq!(f.take().unwrap(), vec![], "nothing left to flush");
        }
    }

    /// Records reach the tail masked when the store has a redactor; entries that are no
    /// record (trail events) count for nothing in the batch but still move the store's
    /// position.
    #[test]
    fn records_are_masked_and_other_entries_only_move_the_position() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        store.ensure_group("g").unwrap();
        let config = IngestConfig {
            redactor: Some(Arc::new(
                logbook_redact::Redactor::new(&["email".to_string()], &[]).unwrap(),
            )),
            ..Default::default()
        };
        let mut f = StoreFormat::new(store.clone(), &config);
        let mut secret = record(1);
        secret.payload = String::from_utf8(secret.payload)
            .unwrap()
            .replace(
                r#""modelId":"m","#,
                r#""modelId":"m","input":{"inputBodyJson":{"messages":[{"role":"user","content":[{"text":"mail jane@example.com"}]}]}},"#,
            )
            .into_bytes();
        assert!(f.add(secret).unwrap() > 0);
        let event = Entry {
            seq: 2,
            time_ms: 0,
            kind: Kind::TrailEvent,
            version: 1,
            payload: br#"{"eventVersion":"1.09","eventID":"e"}"#.to_vec(),
        };
        assert_eq!(f.add(event).unwrap(), 0, "a trail event is not the store's");
        f.filled().unwrap();
        assert_eq!(store.next_seq(), 3, "the event moved the position");
        let snap = store.snapshot("g", i64::MIN, i64::MAX).unwrap();
        let bodies: Vec<String> = snap
            .tail
            .iter()
            .flat_map(|b| {
                let a = b
                    .column(crate::schema::INPUT_BODY)
                    .as_any()
                    .downcast_ref::<arrow_array::StringArray>()
                    .unwrap()
                    .clone();
                a.iter().flatten().map(str::to_string).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(bodies.len(), 1);
        assert!(
            !bodies[0].contains("jane@") && bodies[0].contains("mail "),
            "{bodies:?}"
        );
    }

    /// The store resumes at its manifest's position; re-read entries are counted in the
    /// batch (so it is as big as before a failed flush) but not added again.
    #[test]
    fn the_store_resumes_at_its_manifest_and_adds_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        store.ensure_group("g").unwrap();
        let mut f = StoreFormat::new(store.clone(), &IngestConfig::default());
        assert_eq!(f.resume_at(), Some(0));
        for i in 1..=3 {
            f.add(record(i)).unwrap();
        }
        f.filled().unwrap();
        store.flush().unwrap();
        assert_eq!(f.resume_at(), Some(4));
        f.reset();
        let n = f.add(record(2)).unwrap();
        assert_eq!(n, record(2).payload.len(), "counted in the batch");
        f.add(record(4)).unwrap();
        f.filled().unwrap();
        let counts = store.request_id_counts("g").unwrap();
        assert_eq!(counts.len(), 4);
        assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    }

    /// A stop reaches the store's maintenance: once `maintain` has returned on shutdown,
    /// compaction merges nothing more (a pass under way stops at its next batch; see the
    /// store's `compaction_stops_between_batches_and_the_next_pass_finishes_it`), while
    /// the files and records stay as they were.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_shutdown_interrupts_maintenance() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        store.ensure_group("g").unwrap();
        let (tx, rx) = watch::channel(false);
        tx.send(true).unwrap();
        maintain(store.clone(), Duration::from_secs(3600), rx).await;
        // Two files of a closed hour, written after the stop: never merged by this store.
        for i in 1..=2 {
            let mut e = record(i);
            e.payload = String::from_utf8(e.payload)
                .unwrap()
                .replace("2026-12-03T08:00:00Z", "2020-01-01T08:00:00Z")
                .into_bytes();
            store.add_entries(&[e]);
            store.flush().unwrap();
        }
        assert_eq!(store.compact(now_ms()).unwrap(), 0);
        assert_eq!(store.request_ids("g").unwrap().len(), 2);
    }

    /// At start the files' rollups and text indexes are read into their caches, newest
    /// first; a stop ends the warm-up.
    #[test]
    fn warming_reads_every_files_rollup_and_index_and_stops_when_told() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.ensure_group("g").unwrap();
            for i in 1..=3 {
                store.add_entries(&[record(i)]);
                store.flush().unwrap();
            }
        }
        let store = Store::open(dir.path()).unwrap();
        let (files, bytes) = store.warm_caches();
        assert_eq!(files, 3);
        assert!(bytes > 0);
        assert_eq!(store.text_indexes.lock().unwrap().0.len(), 3);
        assert_eq!(store.rollups.lock().unwrap().len(), 3);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        store.interrupt_maintenance();
        assert_eq!(store.warm_caches(), (0, 0));
        assert!(store.text_indexes.lock().unwrap().0.is_empty());
    }

    /// The store's destination takes the records in, flushes them once, counts what it
    /// wrote, and its probe tells a writable store from one that is not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_destination_flushes_counts_and_probes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = Journal::open(JournalConfig::new(dir.path().join("journal"))).unwrap();
            let store = Arc::new(Store::open(dir.path().join("store")).unwrap());
            store.ensure_group("g").unwrap();
            for i in 1..=3 {
                let p = record(i).payload;
                journal
                    .append(Kind::Record, Box::new(move |_| p))
                    .await
                    .unwrap();
            }
            let gc = Arc::new(GcCoordinator::default());
            let dest =
                destination(store.clone(), journal.clone(), &IngestConfig::default(), gc).unwrap();
            let stats = dest.stats();
            let (_tx, rx) = watch::channel(true);
            dest.run(rx).await.unwrap();
            assert_eq!(store.durable_seq(), 4);
            assert_eq!(stats.records.load(Ordering::Relaxed), 3);
            assert_eq!(stats.objects.load(Ordering::Relaxed), 1, "one flush");
            let files: u64 = store.groups().iter().map(|g| g.stored_bytes).sum();
            assert!(files > 0);
            assert_eq!(
                stats.bytes.load(Ordering::Relaxed),
                files,
                "the Parquet bytes written"
            );
            StoreTarget::new(store.clone())
                .probe("store")
                .await
                .unwrap();
            drop(store);
            let ro = Arc::new(
                Store::open_read_only(
                    dir.path().join("store"),
                    Arc::new(logbook_seal::Keyring::default()),
                )
                .unwrap(),
            );
            assert!(StoreTarget::new(ro).probe("store").await.is_err());
        }
    }

    /// Retention runs beside the follower: a pass at start removes what is past it.
    #[test]
    fn maintenance_applies_retention_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        store.ensure_group("g").unwrap();
        let mut old = record(1);
        old.payload = String::from_utf8(old.payload)
            .unwrap()
            .replace("2026-12-03T08:00:00Z", "2020-01-01T00:00:00Z")
            .into_bytes();
        // Kept whatever day the test runs on.
        let mut new = record(2);
        new.payload = String::from_utf8(new.payload)
            .unwrap()
            .replace("2026-12-03T08:00:00Z", "2099-01-01T00:00:00Z")
            .into_bytes();
        store.add_entries(&[old, new]);
        store.flush().unwrap();
        store.set_retention("g", Some(1)).unwrap();
        let records = |s: &Store| s.groups().iter().map(|g| g.records).sum::<u64>();
        assert_eq!(
            records(&store),
            2,
            "both files are kept until retention runs"
        );
        let (_tx, rx) = watch::channel(true);
        rt.block_on(maintain(store.clone(), Duration::from_secs(3600), rx));
        assert_eq!(records(&store), 1, "the file past retention is gone");
    }

    /// A configuration that sends nothing to log groups still moves the store's cursor,
    /// so it never holds journal garbage collection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn entries_for_no_group_still_move_the_durable_cursor() {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = Journal::open(JournalConfig::new(dir.path().join("journal"))).unwrap();
            let store = Arc::new(Store::open(dir.path().join("store")).unwrap());
            for i in 0..10 {
                let p = format!("{{\"eventName\":\"Something\",\"n\":{i}}}").into_bytes();
                journal
                    .append(logbook_journal::Kind::Record, Box::new(move |_| p))
                    .await
                    .unwrap();
            }
            let gc = Arc::new(GcCoordinator::default());
            let config = IngestConfig {
                flush_age: Duration::from_millis(50),
                ..Default::default()
            };
            let dest = destination(store.clone(), journal.clone(), &config, gc.clone()).unwrap();
            let stats = dest.stats();
            let (tx, rx) = watch::channel(false);
            let task = tokio::spawn(dest.run(rx));
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while stats.cursor.load(Ordering::SeqCst) < 11 && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(
                stats.cursor.load(Ordering::SeqCst),
                11,
                "the cursor passed the ten entries"
            );
            assert_eq!(store.durable_seq(), 11);
            assert_eq!(gc.cursors(), vec![(NAME.to_string(), 11)]);
            assert_eq!(store.stats.records.load(Ordering::Relaxed), 0);
            tx.send(true).unwrap();
            task.await.unwrap().unwrap();
        }
    }
}
