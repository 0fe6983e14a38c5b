//! The archive destination: records to `<prefix>/AWSLogs/<account>/BedrockModelInvocationLogs/
//! <region>/YYYY/MM/DD/HH/<time>_<16 hex>.json.gz`, bodies over 100 KB to `.../HH/data/`.
//!
//! Batching: records accumulate until the batch reaches `max_object_bytes` (uncompressed)
//! or its first record is `max_object_age` old; then one object per (account, region) is
//! written, the local file is fsync'd, and only then the cursor advances.
//!
//! Exactly once: a batch always starts at the cursor, and each object's key is derived
//! from the node id and the sequence number of its first record (its time part from that
//! record's journal time). After a crash, re-delivery starts at the same cursor, so every
//! object written by the interrupted batch is overwritten by its replacement; see
//! ARCHITECTURE.md for the argument.

use crate::DeliveryError;
use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use logbook_journal::{Cursor, Entry, Journal, Reader};
use logbook_record::layout::{self, BodySide};
use logbook_record::{parse_timestamp, LARGE_BODY_BYTES, SCHEMA_TYPE};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::watch;

/// Archive settings.
#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    /// Bucket name, used in `s3://` paths written into records.
    pub bucket: String,
    /// Key prefix (`keyPrefix`).
    pub key_prefix: String,
    /// Roll an object at this many uncompressed bytes.
    pub max_object_bytes: usize,
    /// Roll an object when its first record is this old.
    pub max_object_age: Duration,
    /// Node id, part of object names.
    pub node_id: String,
    /// Cursor name in the journal.
    pub cursor_name: String,
    /// When the store is a local folder: its root, so written files can be fsync'd.
    pub local_root: Option<PathBuf>,
}

/// Counters (Bedrock's `ModelInvocationLogsS3Delivery{Success,Failure}`).
#[derive(Debug, Default)]
pub struct ArchiveStats {
    /// Records delivered.
    pub records: AtomicU64,
    /// Objects written (log objects and data objects).
    pub objects: AtomicU64,
    /// Failed store attempts.
    pub failures: AtomicU64,
    /// Next sequence not yet delivered.
    pub cursor: AtomicU64,
}

struct Group {
    first_seq: u64,
    first_time_ms: u64,
    gz: GzEncoder<Vec<u8>>,
    records: u64,
}

/// The part of a record the archive needs to place it.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    schema_type: Option<String>,
    account_id: Option<String>,
    region: Option<String>,
}

/// Accumulates one batch. Lives on a blocking thread while it reads and compresses.
struct Batch {
    reader: Reader,
    groups: BTreeMap<(String, String), Group>,
    data_objects: Vec<(String, Vec<u8>)>,
    raw_bytes: usize,
    started: Option<Instant>,
    records: u64,
}

impl Batch {
    fn new(reader: Reader) -> Self {
        Batch {
            reader,
            groups: BTreeMap::new(),
            data_objects: Vec::new(),
            raw_bytes: 0,
            started: None,
            records: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.started.is_none()
    }

    /// Read committed entries until `upto` or the size limit.
    fn fill(&mut self, upto: u64, cfg: &ArchiveConfig) -> Result<(), DeliveryError> {
        while self.raw_bytes < cfg.max_object_bytes {
            let Some(e) = self.reader.next_entry(upto)? else {
                break;
            };
            self.add(e, cfg)?;
        }
        Ok(())
    }

    fn add(&mut self, e: Entry, cfg: &ArchiveConfig) -> Result<(), DeliveryError> {
        if self.started.is_none() {
            self.started = Some(Instant::now());
        }
        let head: Head = match serde_json::from_slice(&e.payload) {
            Ok(h) => h,
            Err(err) => {
                tracing::error!(seq = e.seq, error = %err, "journal entry is not a JSON record; skipped by the archive");
                return Ok(());
            }
        };
        if head.schema_type.as_deref() != Some(SCHEMA_TYPE) {
            return Ok(()); // Not an invocation record (other destinations take it).
        }
        let account = head.account_id.unwrap_or_else(|| "000000000000".into());
        let region = head.region.unwrap_or_else(|| "us-east-1".into());
        let line = if e.payload.len() > LARGE_BODY_BYTES {
            self.offload(&e.payload, &account, &region, cfg)?
        } else {
            e.payload
        };
        let group = self
            .groups
            .entry((account, region))
            .or_insert_with(|| Group {
                first_seq: e.seq,
                first_time_ms: e.time_ms,
                gz: GzEncoder::new(Vec::new(), Compression::fast()),
                records: 0,
            });
        group.gz.write_all(&line)?;
        group.gz.write_all(b"\n")?;
        group.records += 1;
        self.raw_bytes += line.len() + 1;
        self.records += 1;
        Ok(())
    }

    /// Move bodies over the limit into `data/` objects and point the record at them.
    fn offload(
        &mut self,
        payload: &[u8],
        account: &str,
        region: &str,
        cfg: &ArchiveConfig,
    ) -> Result<Vec<u8>, DeliveryError> {
        let Ok(mut v) = serde_json::from_slice::<Value>(payload) else {
            return Ok(payload.to_vec());
        };
        let request_id = v
            .get("requestId")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        let t = v
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(parse_timestamp)
            .unwrap_or_else(OffsetDateTime::now_utc);
        for (section, body_key, path_key, side) in [
            ("input", "inputBodyJson", "inputBodyS3Path", BodySide::Input),
            (
                "output",
                "outputBodyJson",
                "outputBodyS3Path",
                BodySide::Output,
            ),
        ] {
            let Some(sec) = v.get_mut(section).and_then(Value::as_object_mut) else {
                continue;
            };
            let Some(body) = sec.get(body_key) else {
                continue;
            };
            let bytes = serde_json::to_vec(body).unwrap_or_default();
            if bytes.len() <= LARGE_BODY_BYTES {
                continue;
            }
            let key =
                layout::data_object_key(&cfg.key_prefix, account, region, t, &request_id, side);
            let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
            gz.write_all(&bytes)?;
            self.data_objects.push((key.clone(), gz.finish()?));
            sec.remove(body_key);
            sec.insert(
                path_key.into(),
                Value::String(layout::s3_uri(&cfg.bucket, &key)),
            );
        }
        Ok(serde_json::to_vec(&v).unwrap_or_else(|_| payload.to_vec()))
    }
}

/// The archive destination task.
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    journal: Journal,
    cursor: Cursor,
    config: ArchiveConfig,
    stats: Arc<ArchiveStats>,
}

impl Archive {
    /// A destination writing to `store`.
    pub fn new(store: Arc<dyn ObjectStore>, journal: Journal, config: ArchiveConfig) -> Self {
        let cursor = Cursor::new(journal.dir(), &config.cursor_name);
        Archive {
            store,
            journal,
            cursor,
            config,
            stats: Arc::new(ArchiveStats::default()),
        }
    }

    /// Shared counters.
    pub fn stats(&self) -> Arc<ArchiveStats> {
        self.stats.clone()
    }

    async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), DeliveryError> {
        let path = StorePath::from(key);
        self.store
            .put(&path, PutPayload::from(Bytes::from(data)))
            .await?;
        if let Some(root) = &self.config.local_root {
            // LocalFileSystem renames a temp file into place but does not fsync; do it so
            // the cursor never runs ahead of what survives a power loss.
            let file = root.join(key);
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                std::fs::File::open(&file)?.sync_all()?;
                if let Some(dir) = file.parent() {
                    std::fs::File::open(dir)?.sync_all()?;
                }
                Ok(())
            })
            .await
            .map_err(|e| DeliveryError::Task(e.to_string()))??;
        }
        self.stats.objects.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn flush(&self, batch: &mut Batch) -> Result<(), DeliveryError> {
        for (key, data) in std::mem::take(&mut batch.data_objects) {
            self.put(&key, data).await?;
        }
        for ((account, region), g) in std::mem::take(&mut batch.groups) {
            let t =
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(g.first_time_ms) * 1_000_000)
                    .unwrap_or_else(|_| OffsetDateTime::now_utc());
            let key = layout::log_object_key(
                &self.config.key_prefix,
                &account,
                &region,
                t,
                &self.config.node_id,
                g.first_seq,
            );
            let data = g.gz.finish()?;
            self.put(&key, data).await?;
        }
        let next = batch.reader.position();
        let cursor = self.cursor.clone();
        tokio::task::spawn_blocking(move || cursor.store(next))
            .await
            .map_err(|e| DeliveryError::Task(e.to_string()))??;
        self.stats.cursor.store(next, Ordering::Relaxed);
        self.stats
            .records
            .fetch_add(batch.records, Ordering::Relaxed);
        batch.raw_bytes = 0;
        batch.records = 0;
        batch.started = None;
        if let Err(e) = self.journal.collect_garbage(next) {
            tracing::warn!(error = %e, "journal garbage collection failed");
        }
        Ok(())
    }

    /// Deliver until `shutdown` turns true, then flush what is pending and return.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), DeliveryError> {
        let start = self.cursor.load()?;
        self.stats.cursor.store(start, Ordering::Relaxed);
        let mut committed = self.journal.committed();
        let mut batch = Some(Batch::new(self.journal.reader(start)));
        let mut backoff = Duration::from_millis(100);
        let mut journal_open = true;
        let mut stop_requested = false;
        loop {
            let stopping = stop_requested || *shutdown.borrow();
            let upto = *committed.borrow_and_update();
            let cfg = self.config.clone();
            let mut b = batch
                .take()
                .ok_or_else(|| DeliveryError::Task("batch lost".into()))?;
            let (b2, res) = tokio::task::spawn_blocking(move || {
                let r = b.fill(upto, &cfg);
                (b, r)
            })
            .await
            .map_err(|e| DeliveryError::Task(e.to_string()))?;
            let mut b = b2;
            res?;
            let full = b.raw_bytes >= self.config.max_object_bytes;
            let old = b
                .started
                .is_some_and(|s| s.elapsed() >= self.config.max_object_age);
            let drained = b.reader.position() >= upto;
            if !b.is_empty() && (full || old || (stopping && drained)) {
                match self.flush(&mut b).await {
                    Ok(()) => backoff = Duration::from_millis(100),
                    Err(e) => {
                        self.stats.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, retry_in_ms = backoff.as_millis() as u64, "archive delivery failed; will retry");
                        // Rebuild the batch from the cursor: nothing past it is acknowledged.
                        let from = self.cursor.load()?;
                        batch = Some(Batch::new(self.journal.reader(from)));
                        if stopping {
                            return Err(e);
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        continue;
                    }
                }
            }
            if stopping && b.reader.position() >= *committed.borrow() && b.is_empty() {
                return Ok(());
            }
            if full || (!drained && !stopping) {
                batch = Some(b);
                continue;
            }
            let deadline = b
                .started
                .map(|s| self.config.max_object_age.saturating_sub(s.elapsed()));
            batch = Some(b);
            if stopping {
                continue;
            }
            let sleep = deadline.unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                r = committed.changed(), if journal_open => {
                    if r.is_err() {
                        journal_open = false;
                    }
                }
                _ = tokio::time::sleep(sleep) => {}
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
mod tests;
