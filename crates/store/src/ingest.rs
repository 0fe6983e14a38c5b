//! Feeding the store from the journal: every committed record goes to the tail of its log
//! group within a poll interval; the tail is flushed to Parquet when it is big or old, and
//! on shutdown. Retention and compaction (one file per closed hour) run periodically.

use crate::{now_ms, Store, StoreError};
use logbook_journal::Journal;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

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
            // The tail is memory: at 1,000 calls/s of about 2 KB each, 32 MiB is about 16 s
            // (bench/memory.sh; 128 MiB kept the server above 300 MB).
            flush_bytes: 32 << 20,
            flush_age: Duration::from_secs(60),
            retention_every: Duration::from_secs(60),
            redactor: None,
        }
    }
}

/// Called with the store's durable cursor after each flush (for journal GC).
pub type OnDurable = Arc<dyn Fn(u64) + Send + Sync>;

/// Follow the journal into the store until `shutdown` turns true; then flush and return.
pub async fn run(
    store: Arc<Store>,
    journal: Journal,
    config: IngestConfig,
    on_durable: OnDurable,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let start = store.next_seq().max(journal.first_available()?);
    let mut reader = journal.reader(start);
    let mut committed = journal.committed();
    // The first pass of retention (and body retention) runs at start, so a changed
    // configuration applies at once.
    let mut last_retention: Option<std::time::Instant> = None;
    let mut last_flush = std::time::Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        let stopping = *shutdown.borrow();
        let upto = *committed.borrow_and_update();
        // Read what is committed, in chunks, off the async threads.
        let st = store.clone();
        let redactor = config.redactor.clone();
        let (r, res) = tokio::task::spawn_blocking(move || {
            let res = (|| -> Result<(), StoreError> {
                loop {
                    let mut chunk = Vec::new();
                    while chunk.len() < 4096 {
                        match reader.next_entry(upto)? {
                            Some(e) => chunk.push(e),
                            None => break,
                        }
                    }
                    if chunk.is_empty() {
                        // Everything before `upto` is read: entries that are no record
                        // of any group, or none at all, still move the cursor.
                        st.advance_to(upto);
                        return Ok(());
                    }
                    if let Some(r) = &redactor {
                        for e in &mut chunk {
                            if let std::borrow::Cow::Owned(p) = r.redact_record(&e.payload) {
                                e.payload = p;
                            }
                        }
                    }
                    st.add_entries(&chunk);
                }
            })();
            (reader, res)
        })
        .await
        .map_err(|e| StoreError::Invalid(format!("ingest task: {e}")))?;
        reader = r;
        if let Err(e) = res {
            tracing::error!(error = %e, "store: reading the journal failed; will retry");
            reader = journal.reader(store.next_seq());
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
            continue;
        }
        let (rows, bytes, age) = store.tail_size();
        // Entries that are not for any log group move the cursor too: without a flush now
        // and then, a configuration that sends nothing to log groups would hold journal GC
        // (and the journal's disk) forever.
        let passed_over = rows == 0
            && store.next_seq() > store.durable_seq()
            && last_flush.elapsed() >= config.flush_age;
        let due = rows >= config.flush_rows
            || bytes >= config.flush_bytes
            || (rows > 0 && age >= config.flush_age.as_millis() as i64)
            || passed_over
            || stopping;
        if due && (rows > 0 || store.next_seq() > store.durable_seq()) {
            let st = store.clone();
            match tokio::task::spawn_blocking(move || st.flush()).await {
                Ok(Ok(_)) => {
                    backoff = Duration::from_millis(100);
                    last_flush = std::time::Instant::now();
                    on_durable(store.durable_seq());
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "store: flush failed; will retry");
                    if stopping {
                        return Err(e);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
                Err(e) => return Err(StoreError::Invalid(format!("flush task: {e}"))),
            }
        }
        if last_retention.is_none_or(|t| t.elapsed() >= config.retention_every) {
            last_retention = Some(std::time::Instant::now());
            let st = store.clone();
            let r = tokio::task::spawn_blocking(move || {
                st.apply_retention(now_ms())?;
                st.compact(now_ms())
            })
            .await;
            if let Ok(Err(e)) = r {
                tracing::error!(error = %e, "store: retention or compaction failed");
            }
        }
        if stopping {
            return Ok(());
        }
        let wait = config.flush_age.min(config.retention_every);
        tokio::select! {
            r = committed.changed() => {
                if r.is_err() {
                    // The journal closed: flush what we have and stop.
                    let st = store.clone();
                    let _ = tokio::task::spawn_blocking(move || st.flush()).await;
                    return Ok(());
                }
            }
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logbook_journal::JournalConfig;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A configuration that sends nothing to log groups still moves the store's cursor,
    /// so it never holds journal garbage collection.
    #[test]
    fn entries_for_no_group_still_move_the_durable_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let journal = Journal::open(JournalConfig::new(dir.path().join("journal"))).unwrap();
            let store = Arc::new(Store::open(dir.path().join("store")).unwrap());
            for i in 0..10 {
                let p = format!("{{\"eventName\":\"Something\",\"n\":{i}}}").into_bytes();
                journal
                    .append(logbook_journal::Kind::Record, Box::new(move |_| p))
                    .await
                    .unwrap();
            }
            let seen = Arc::new(AtomicU64::new(0));
            let s2 = seen.clone();
            let on_durable: OnDurable = Arc::new(move |next| {
                s2.store(next, Ordering::SeqCst);
            });
            let (tx, rx) = watch::channel(false);
            let config = IngestConfig {
                flush_age: Duration::from_millis(50),
                ..Default::default()
            };
            let task = tokio::spawn(run(store.clone(), journal.clone(), config, on_durable, rx));
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while seen.load(Ordering::SeqCst) < 11 && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(
                seen.load(Ordering::SeqCst),
                11,
                "the cursor passed the ten entries"
            );
            assert_eq!(store.durable_seq(), 11);
            assert_eq!(store.stats.records.load(Ordering::Relaxed), 0);
            tx.send(true).unwrap();
            task.await.unwrap().unwrap();
        });
    }
}
