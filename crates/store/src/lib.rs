//! Log groups: the live, queryable store of invocation records (CloudWatch Logs' role).
//!
//! Each log group holds Parquet files partitioned by hour (today) or day (before), listed in one manifest
//! (`<dir>/manifest.json`) with their time range, so a query opens only the files its time
//! range touches. The newest records live in an in-memory tail of Arrow batches until a
//! flush writes them out. The manifest also holds the journal position the files cover
//! (`nextSeq`): a flush writes and fsyncs its files, then replaces the manifest atomically,
//! so after a crash the files that no manifest names are removed and the records are read
//! again from the journal — nothing lost, nothing twice.
//!
//! Retention is per group in CloudWatch's allowed day counts; expired files are dropped
//! and queries cut the remaining rows at the same boundary.
//!
//! Encryption at rest: with an active master key, each Parquet file is written with
//! Parquet modular encryption (AES-GCM, footer and every column) under its own data key;
//! the data key, wrapped by the master key, is the file's footer key metadata, and the
//! master key's id is also in the manifest entry of the file. Readers unwrap it through
//! [`KeyRetriever`]: any configured master key with that id will do, so rotation rewrites
//! nothing. The manifest carries the store's format version ([`FORMAT_VERSION`]).

use arrow_array::RecordBatch;
pub use logbook_disk::{Disk, RealDisk};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

pub mod fields;
pub mod groups;
pub mod ingest;
pub mod rollup;
pub mod schema;
pub mod textindex;
pub mod zonemap;

pub use groups::{validate_group_name, validate_retention, RETENTION_DAYS};
pub use logbook_seal::Keyring;

/// The store's on-disk format: 2 adds the manifest's `formatVersion` and the files'
/// `keyId` (a manifest without a version is format 1, read as it is); 3 keeps each body
/// once (`message` holds marks where the bodies were, [`schema::rebuild_message`]).
/// Files of every earlier format read as they are.
pub const FORMAT_VERSION: u32 = 3;
pub use schema::{parse_fields, parse_row, Columns, Fields, Row};

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Local I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Parquet encoding or decoding failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// The manifest is unreadable.
    #[error("manifest {0}: {1}")]
    Manifest(PathBuf, serde_json::Error),
    /// The log group does not exist.
    #[error("The specified log group does not exist.")]
    NoSuchGroup(String),
    /// The log group exists already.
    #[error("The specified log group already exists")]
    GroupExists(String),
    /// A parameter is invalid.
    #[error("{0}")]
    Invalid(String),
    /// Compaction or a rewrite stopped half way because the store is stopping (the
    /// files it would replace stay; the next start does the work again).
    #[error("store maintenance interrupted by a stop")]
    Interrupted,
    /// Another process writes this store.
    #[error("the store at {0} is in use by another process (a running `logbook serve`?)")]
    Locked(PathBuf),
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] logbook_journal::JournalError),
    /// A file is encrypted under a master key that is not configured.
    #[error("store file {0}: {1}")]
    Sealed(String, logbook_seal::SealError),
    /// The store was written by a newer build.
    #[error("the store's format {0} is newer than this build reads ({FORMAT_VERSION})")]
    TooNew(u32),
}

/// One Parquet file of a group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FileMeta {
    /// Path relative to the store folder.
    pub path: String,
    /// Earliest record timestamp, epoch ms.
    pub min_ts: i64,
    /// Latest record timestamp, epoch ms.
    pub max_ts: i64,
    /// Records.
    pub rows: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// The master key that wraps the file's data key (absent: not encrypted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The file was written again without bodies (its rows are past the group's body
    /// retention).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bodies_removed: bool,
    /// Written at [`COLD_ZSTD_LEVEL`] (small columns at [`COLD_SMALL_ZSTD_LEVEL`]) by
    /// compaction (a closed partition's final file);
    /// absent: with [`HOT_COMPRESSION`], as flushes and imports write.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cold: bool,
    /// Merges of the open hour the file's rows went through: 0 for a flush's or an
    /// import's file, n + 1 for a merge of [`OPEN_HOUR_MERGE`] files of tier n.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tier: u8,
    /// The file's footer holds its [`rollup::Rollup`] (files written before rollups have
    /// none, and are scanned).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollup: bool,
}

/// A merge compaction plans: the group, the partition, the files, and the `(cold, tier)`
/// of the file they become.
type Merge = (String, i64, Vec<FileMeta>, (bool, u8));

fn is_zero(n: &u8) -> bool {
    *n == 0
}

/// Files of one tier in the open hour that are merged into one file of the next tier
/// (at the hot level). A query pays about half a millisecond per file, and at 1,000
/// calls/s flushes make hundreds an hour; tiers keep the open hour at a few dozen files
/// while each row is rewritten about log16(flushes) times before the hour closes.
pub const OPEN_HOUR_MERGE: usize = 16;

/// Of the open hour's files, the groups to merge: each tier's files, oldest first, in
/// runs of [`OPEN_HOUR_MERGE`] (the rest wait for the next pass); each output is one tier
/// up. Every full run, not only the first: one pass a minute must keep up with flushes
/// that come every two seconds at 1,000 calls/s (one merge a pass left 79 files of
/// tier 0 after five minutes).
fn open_hour_merges(files: &[FileMeta]) -> Vec<Vec<FileMeta>> {
    let mut by_tier: BTreeMap<u8, Vec<&FileMeta>> = BTreeMap::new();
    for f in files.iter().filter(|f| !f.cold) {
        by_tier.entry(f.tier).or_default().push(f);
    }
    by_tier
        .into_values()
        .flat_map(|mut fs| {
            fs.sort_by_key(|f| (f.min_ts, f.path.clone()));
            fs.chunks_exact(OPEN_HOUR_MERGE)
                .map(|run| run.iter().map(|f| (*f).clone()).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The codec of files written by flushes, imports and the open hour's merges: on the
/// calls' path, and rewritten at [`COLD_ZSTD_LEVEL`] once their partition closes.
pub const HOT_COMPRESSION: Compression = Compression::LZ4_RAW;
/// A hot file's data pages end once they hold this many bytes: a writer holds each
/// column's open page, and a reader each column's current page, so the open hour's merges
/// (16 files read, one written, beside a live tail) peak lower with small pages. LZ4
/// looks back at most 64 KiB, so they cost it little: the 1M benchmark records import to
/// 1,892 MB against 1,886 MB in 1 MiB pages (+0.3 %).
pub const HOT_PAGE_BYTES: usize = 256 * 1024;
/// The zstd level compaction writes a closed partition at once: about gzip's speed, and
/// smaller than the gz archive (on the benchmark records: 891 bytes per record against
/// 1,073 at level 1 and 962 for the archive).
pub const COLD_ZSTD_LEVEL: i32 = 12;
/// The zstd level of a cold file's small columns (all but the bodies and `message`):
/// level 12 buys them nothing, and each column's compressor lives as long as a row group.
pub const COLD_SMALL_ZSTD_LEVEL: i32 = 3;
/// A cold file's data pages end once they hold this many bytes (the writer checks after
/// each slice of values it is given, each at most this size, so a page can reach twice
/// it). zstd sizes its state to what it compresses: a 1 MiB page at level 12 takes about
/// 9 MB of compressor state per column, all columns' at once, and was most of
/// compaction's peak memory (BENCHMARKS.md, "Resident memory"). Smaller pages cost bytes:
/// about 1 % at this size, 2.5 % at 256 KiB.
pub const COLD_PAGE_BYTES: usize = 384 * 1024;
/// A cold file's `request_id` pages end at this many bytes (about 1,000 ids: the writer
/// checks after each 1,024 values). A query that keeps a few rows of a file (the first
/// rows of an order, a text search's blocks) decompresses each page that holds one of
/// them: ten rows of a top 10 decompressed ten 384 KiB pages of ids, most of its time.
/// Ids are random: smaller pages compress them no worse.
pub const COLD_ID_PAGE_BYTES: usize = 32 * 1024;
/// Rows per row group in a cold file: its encoded pages are held until the group ends.
pub const COLD_ROW_GROUP_ROWS: usize = 16 * 1024;
/// Rows per batch when files are read to be written again (compaction, retention): a
/// batch of bodies is a few MB decoded at 512 rows, and nothing gains from more.
const REWRITE_BATCH_ROWS: usize = 512;

/// A Parquet file written through the store's disk as it is encoded (in 1 MiB writes),
/// so neither a flush nor a compaction holds a whole file in memory.
struct DiskSink(Box<dyn logbook_disk::SequentialFile>);

impl std::io::Write for DiskSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.write(b)?;
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A log group's metadata and files.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GroupMeta {
    /// Creation time, epoch ms.
    pub creation_time: i64,
    /// Retention in days; none keeps records forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_in_days: Option<u32>,
    /// Data files, oldest first.
    #[serde(default)]
    pub files: Vec<FileMeta>,
    /// Dotted field paths discovered in the group's records.
    #[serde(default)]
    pub fields: BTreeSet<String>,
}

impl GroupMeta {
    /// Bytes on disk.
    pub fn stored_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    /// The store's format ([`FORMAT_VERSION`]; 1 when absent).
    #[serde(default = "format_1")]
    format_version: u32,
    /// The next journal sequence not yet in a file.
    next_seq: u64,
    /// The next file number.
    next_file: u64,
    groups: BTreeMap<String, GroupMeta>,
}

fn format_1() -> u32 {
    1
}

/// What a store holds, as other replicas read it from a shared bucket (issue #13): the
/// manifest's groups, files and journal position.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManifestView {
    /// The store's format ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The next journal sequence not yet in a file.
    pub next_seq: u64,
    /// Groups, their retention and files (paths relative to the store folder).
    pub groups: BTreeMap<String, GroupMeta>,
}

/// Unwraps a Parquet file's data key (its footer key metadata, a
/// [`logbook_seal::WrappedKey`] in text form) with the configured master keys.
#[derive(Debug, Clone)]
pub struct KeyRetriever(pub Arc<Keyring>);

impl parquet::encryption::decrypt::KeyRetriever for KeyRetriever {
    fn retrieve_key(&self, key_metadata: &[u8]) -> parquet::errors::Result<Vec<u8>> {
        let w = std::str::from_utf8(key_metadata)
            .ok()
            .and_then(logbook_seal::WrappedKey::from_text)
            .ok_or_else(|| {
                parquet::errors::ParquetError::General(
                    "not a Logbook data key in the file's key metadata".into(),
                )
            })?;
        self.0
            .unwrap_key(&w)
            .map(|k| k.bytes().to_vec())
            .map_err(|e| parquet::errors::ParquetError::General(e.to_string()))
    }
}

/// Parquet decryption through the keyring (harmless on a file that is not encrypted).
pub fn decryption_properties(
    keys: &Arc<Keyring>,
) -> Result<Arc<parquet::encryption::decrypt::FileDecryptionProperties>, StoreError> {
    Ok(
        parquet::encryption::decrypt::FileDecryptionProperties::with_key_retriever(Arc::new(
            KeyRetriever(keys.clone()),
        ))
        .build()?,
    )
}

/// How long log groups keep bodies (prompts and answers), in days, apart from how long
/// they keep records: a default for every group and overrides by group name. Set from the
/// configuration at each start (it is not stored in the manifest).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodyRetention {
    /// For every group without an override (none: bodies stay as long as records).
    pub default_days: Option<u32>,
    /// By group name.
    pub groups: BTreeMap<String, u32>,
}

impl BodyRetention {
    /// The days a group keeps bodies.
    pub fn days(&self, group: &str) -> Option<u32> {
        self.groups.get(group).copied().or(self.default_days)
    }
}

/// A group as listed (DescribeLogGroups).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupInfo {
    /// Name.
    pub name: String,
    /// Creation time, epoch ms.
    pub creation_time: i64,
    /// Retention in days.
    pub retention_in_days: Option<u32>,
    /// Bytes in files.
    pub stored_bytes: u64,
    /// Records in files and tail.
    pub records: u64,
}

/// What a query of one group reads: files (already pruned by time) and the tail.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Absolute paths of the Parquet files that may hold rows in the range.
    pub files: Vec<(PathBuf, FileMeta)>,
    /// In-memory batches not yet in a file.
    pub tail: Vec<RecordBatch>,
    /// Rows older than this (epoch ms) are past retention and must not be returned.
    pub retention_cutoff: Option<i64>,
    /// Rows older than this (epoch ms) are past body retention: their bodies must not be
    /// returned (files wholly past it have none any more).
    pub body_cutoff: Option<i64>,
    /// Discovered dotted field paths.
    pub fields: BTreeSet<String>,
}

#[derive(Default)]
struct Tail {
    /// Batches by hour (epoch ms of the hour's start).
    hours: BTreeMap<i64, Vec<RecordBatch>>,
    rows: u64,
    bytes: usize,
}

struct State {
    manifest: Manifest,
    tails: HashMap<String, Tail>,
    /// Journal position the tail covers (entries below it are in files or the tail).
    tail_next_seq: u64,
    /// Oldest unflushed add, epoch ms.
    tail_since: Option<i64>,
}

/// How long a file dropped from the manifest stays on disk for queries already running.
const RETIRE_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// Small batches the tail of one group-hour holds before the newest are merged into one.
///
/// The gateway commits records a few at a time, so the ingest adds batches of one or two
/// rows; each carries its 34 arrays' own buffers (about 10 KB of overhead), which made
/// the tail's memory grow about 14 MB/s at 1,000 calls/s. Merging the newest
/// `COALESCE_BATCHES` at a time copies a row about log32(n) times and keeps the overhead
/// per 32 rows at first, then per 1,024, and so on.
pub const COALESCE_BATCHES: usize = 32;

/// Merge the newest [`COALESCE_BATCHES`] batches of `batches` into one, repeatedly, while
/// there are that many of the same size class; returns `bytes` adjusted.
fn coalesce(batches: &mut Vec<RecordBatch>, mut bytes: usize) -> usize {
    while batches.len() >= COALESCE_BATCHES {
        let tail = &batches[batches.len() - COALESCE_BATCHES..];
        // Merge only runs of batches of similar size (an LSM's levels): never a big merged
        // batch with small new ones, which would copy the big one again and again.
        let newest_rows = tail[COALESCE_BATCHES - 1].num_rows().max(1);
        let oldest_rows = tail[0].num_rows();
        if oldest_rows > newest_rows * COALESCE_BATCHES {
            break;
        }
        let before: usize = tail.iter().map(RecordBatch::get_array_memory_size).sum();
        let Ok(merged) = arrow_select::concat::concat_batches(&schema::schema(), tail) else {
            break;
        };
        let after = merged.get_array_memory_size();
        let keep = batches.len() - COALESCE_BATCHES;
        batches.truncate(keep);
        batches.push(merged);
        bytes = bytes.saturating_sub(before).saturating_add(after);
    }
    bytes
}

/// Hour of an epoch-ms timestamp.
pub fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(3_600_000).saturating_mul(3_600_000)
}

/// The file partition of a timestamp: its hour for today (UTC), its day before that.
/// Fewer, larger files for closed days keep a 30-day query at 30 files, not 720; a narrower
/// time range within a day still prunes by the Parquet row groups' statistics.
pub fn partition_of(ms: i64, now: i64) -> i64 {
    let today = now.div_euclid(86_400_000).saturating_mul(86_400_000);
    if ms >= today {
        hour_of(ms)
    } else {
        ms.div_euclid(86_400_000).saturating_mul(86_400_000)
    }
}

/// A group-hour's batch for the tail: group, hour, records, the batch.
type TailBatch = (
    String,
    i64,
    usize,
    Result<RecordBatch, arrow_schema::ArrowError>,
);

/// Records an import has taken and not yet written ([`Store::write_import_buffer`]):
/// Arrow columns by partition ([`partition_of`]), so a record's values are copied once,
/// from its line into its batch, with no row of owned strings in between.
pub struct ImportBuffer {
    parts: BTreeMap<i64, (schema::Columns, Vec<RecordBatch>)>,
    bytes: usize,
    now: i64,
    /// What the records seen so far brought to each column: new columns are sized by it.
    sizes: schema::TextSizes,
}

impl Default for ImportBuffer {
    fn default() -> Self {
        ImportBuffer::new()
    }
}

impl ImportBuffer {
    /// Rows of a batch. A batch's body column of 1,024 benchmark records is about 4.5 MB:
    /// under jemalloc's 8 MiB threshold for the huge arena, which hands pages back at once
    /// (so each batch of 8,192 rows faulted in 40 MB of fresh, zeroed pages: a quarter of
    /// the import's system time). The Parquet writer gathers batches into its row groups,
    /// so files are the same.
    const BATCH_ROWS: usize = 1024;
    /// What a record holds besides its text.
    const ROW_BYTES: usize = 128;

    /// An empty buffer.
    pub fn new() -> ImportBuffer {
        ImportBuffer {
            parts: BTreeMap::new(),
            bytes: 0,
            now: now_ms(),
            sizes: schema::TextSizes::default(),
        }
    }

    /// Take one record.
    pub fn append(&mut self, f: &schema::Fields<'_>) -> Result<(), StoreError> {
        let sizes = &self.sizes;
        let (cols, done) = self
            .parts
            .entry(partition_of(f.timestamp, self.now))
            .or_insert_with(|| {
                (
                    schema::Columns::sized_for(Self::BATCH_ROWS, sizes),
                    Vec::new(),
                )
            });
        cols.append(f);
        self.bytes += f.text_bytes() + Self::ROW_BYTES;
        if cols.rows() >= Self::BATCH_ROWS {
            self.sizes = cols.text_sizes();
            done.push(cols.finish()?);
        }
        Ok(())
    }

    /// What was taken, to be written; this buffer is empty again and keeps what it
    /// learned of the records' sizes.
    pub fn take(&mut self) -> ImportBuffer {
        if let Some((cols, _)) = self.parts.values().find(|(c, _)| c.rows() > 0) {
            self.sizes = cols.text_sizes();
        }
        ImportBuffer {
            parts: std::mem::take(&mut self.parts),
            bytes: std::mem::take(&mut self.bytes),
            now: self.now,
            sizes: self.sizes,
        }
    }

    /// Bytes of the records taken.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Has it taken nothing?
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}

/// The records of one partition an import writes as one file.
enum ImportPart {
    Rows(Vec<Row>),
    Batches(Vec<RecordBatch>),
}

/// `batches` (the table's schema) with their rows in time order, stable (as
/// `sort_by_key` orders rows): as they are when they already are, which is the common
/// case (archives are written in time order).
fn in_time_order(batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, StoreError> {
    let mut all: Vec<i64> = Vec::new();
    for b in &batches {
        let t = b
            .column(schema::TIMESTAMP)
            .as_any()
            .downcast_ref::<arrow_array::TimestampMillisecondArray>()
            .ok_or_else(|| StoreError::Invalid("an import batch without timestamps".into()))?;
        all.extend_from_slice(t.values());
    }
    if all.windows(2).all(|w| w[0] <= w[1]) {
        return Ok(batches);
    }
    let mut order: Vec<u32> = (0..all.len() as u32).collect();
    order.sort_by_key(|&i| all[i as usize]);
    let one = arrow_select::concat::concat_batches(&schema::schema(), &batches)?;
    drop(batches);
    let rows = order.len();
    let mut out = Vec::with_capacity(rows.div_ceil(8192));
    for chunk in order.chunks(8192) {
        let idx = arrow_array::UInt32Array::from(chunk.to_vec());
        out.push(arrow_select::take::take_record_batch(&one, &idx)?);
    }
    Ok(out)
}

/// Current time, epoch ms.
pub fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

/// Counters.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Records added to a group.
    pub records: std::sync::atomic::AtomicU64,
    /// Records whose log group does not exist (dropped, as CloudWatch delivery would fail).
    pub dropped: std::sync::atomic::AtomicU64,
    /// Flushes written.
    pub flushes: std::sync::atomic::AtomicU64,
    /// Calls of [`ReleaseMemory`].
    pub memory_releases: std::sync::atomic::AtomicU64,
}

/// The store of all log groups.
pub struct Store {
    dir: PathBuf,
    state: RwLock<State>,
    flush_lock: Mutex<()>,
    retired: Mutex<Vec<(std::time::Instant, PathBuf)>>,
    /// How long a retired file stays ([`RETIRE_GRACE`]; shorter in tests).
    retire_grace_ms: std::sync::atomic::AtomicU64,
    writable: Option<logbook_disk::LockGuard>,
    disk: Arc<dyn Disk>,
    keys: Arc<Keyring>,
    body_retention: RwLock<BodyRetention>,
    /// Rollups read from files' footers, by path (files are immutable and their names
    /// never reused, so an entry never goes stale; it only outlives its file).
    rollups: Mutex<HashMap<PathBuf, Arc<rollup::Rollup>>>,
    /// Zone maps read from files' footers, by path (as `rollups`).
    zone_maps: Mutex<HashMap<PathBuf, Arc<zonemap::ZoneMap>>>,
    /// Whole footers read for [`Store::read_columns`], by path (as `rollups`), at most
    /// [`FOOTER_CACHE`]: an order query reads a column of the same few files each time,
    /// and parsing their footers was a quarter of its first pass.
    footers: Mutex<HashMap<PathBuf, parquet::arrow::arrow_reader::ArrowReaderMetadata>>,
    /// Text indexes read, by path (none: the file has none), and their bytes.
    text_indexes: Mutex<(TextIndexes, usize)>,
    /// Set by [`Store::interrupt_maintenance`]: compaction and the rewrite of files past
    /// body retention stop at their next batch (a stopping server does not wait for a
    /// pass over days of records).
    maintenance_stopped: std::sync::atomic::AtomicBool,
    /// Called when the store has just freed much memory ([`Store::set_release_memory`]).
    release_memory: std::sync::OnceLock<ReleaseMemory>,
    /// When it was last called, ms since `created`.
    released_at_ms: std::sync::atomic::AtomicU64,
    created: std::time::Instant,
    /// Counters.
    pub stats: StoreStats,
}

/// What the store calls when it has just freed much memory: after a flush, and while a
/// merge or rewrite streams batches through, at most every [`RELEASE_EVERY`]. The
/// process's allocator may keep freed pages for a while to hand them out again (jemalloc's
/// decay, 500 ms here); a merge frees and takes tens of MB within that time, and the
/// pages kept make its peak. Given by the binary, which knows its allocator; the store
/// knows none.
pub type ReleaseMemory = Arc<dyn Fn() + Send + Sync>;

/// The shortest time between two calls of [`ReleaseMemory`] during a merge.
pub const RELEASE_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Rollups kept in memory at most (about a year of day files and a day of hour files,
/// twice over); beyond, the cache starts again.
const ROLLUP_CACHE: usize = 2_048;

/// Footers [`Store::read_columns`] keeps at most (about 100 KB of footer each on disk,
/// a few times that parsed); beyond, the cache starts again.
const FOOTER_CACHE: usize = 64;

/// Text indexes read, by path (none: the file has none).
type TextIndexes = HashMap<PathBuf, Option<Arc<textindex::TextIndex>>>;

/// Bytes of text indexes kept in memory at most (about 10 million records' worth);
/// beyond, the cache starts again.
const TEXT_INDEX_CACHE_BYTES: usize = 64 << 20;

/// A file of the store's disk as Parquet's reader wants it: only the ranges it asks for
/// (the footer) are read.
struct DiskChunks {
    file: Arc<dyn logbook_disk::DiskFile>,
    len: u64,
}

impl parquet::file::reader::Length for DiskChunks {
    fn len(&self) -> u64 {
        self.len
    }
}

/// The rest of a [`DiskChunks`] file from an offset, read as it is consumed (a page
/// reader asks for one from each page header: reading to the end at once would copy the
/// rest of the file per page).
struct ReadFrom {
    file: Arc<dyn logbook_disk::DiskFile>,
    pos: u64,
    end: u64,
}

impl std::io::Read for ReadFrom {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = usize::try_from(self.end.saturating_sub(self.pos)).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl parquet::file::reader::ChunkReader for DiskChunks {
    type T = std::io::BufReader<ReadFrom>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(std::io::BufReader::with_capacity(
            4096,
            ReadFrom {
                file: self.file.clone(),
                pos: start.min(self.len),
                end: self.len,
            },
        ))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        let mut buf = vec![0u8; length];
        let mut done = 0;
        while done < length {
            let n = self
                .file
                .read_at(&mut buf[done..], start + done as u64)
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))?;
            if n == 0 {
                return Err(parquet::errors::ParquetError::EOF(format!(
                    "the file ends at {}",
                    start + done as u64
                )));
            }
            done += n;
        }
        Ok(bytes::Bytes::from(buf))
    }
}

fn read_manifest(disk: &dyn Disk, dir: &Path) -> Result<Manifest, StoreError> {
    let p = dir.join("manifest.json");
    match disk.read(&p) {
        Ok(b) => {
            let m: Manifest = serde_json::from_slice(&b).map_err(|e| StoreError::Manifest(p, e))?;
            if m.format_version > FORMAT_VERSION {
                return Err(StoreError::TooNew(m.format_version));
            }
            Ok(m)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest {
            format_version: FORMAT_VERSION,
            ..Manifest::default()
        }),
        Err(e) => Err(e.into()),
    }
}

/// Every file's master key must be configured: say which one is not, up front.
fn check_keys(manifest: &Manifest, keys: &Keyring) -> Result<(), StoreError> {
    let have: HashSet<&str> = keys.ids().collect();
    for g in manifest.groups.values() {
        for f in &g.files {
            if let Some(id) = &f.key_id {
                if !have.contains(id.as_str()) {
                    let e = if have.is_empty() {
                        logbook_seal::SealError::NoKeys(id.clone())
                    } else {
                        logbook_seal::SealError::MissingKey(id.clone())
                    };
                    return Err(StoreError::Sealed(f.path.clone(), e));
                }
            }
        }
    }
    Ok(())
}

/// A whole Parquet file, read through the store's disk.
fn writer_props(
    encryption: Option<Arc<parquet::encryption::encrypt::FileEncryptionProperties>>,
    cold: bool,
    rewrite: bool,
) -> WriterProperties {
    let zstd = |level| Compression::ZSTD(ZstdLevel::try_new(level).unwrap_or_default());
    let mut b = WriterProperties::builder().set_max_row_group_row_count(Some(32 * 1024));
    b = if cold {
        b.set_compression(zstd(COLD_ZSTD_LEVEL))
            .set_data_page_size_limit(COLD_PAGE_BYTES)
    } else {
        // Data pages of format 2 hold the levels apart from the values, so the writer
        // compresses the values where they are; format 1 copies them behind the levels
        // first, then grows the compressed buffer from the page's size to LZ4's bound (a
        // second copy) and fills it with zeros: about 4 % of an import's CPU. These are
        // the store's own files (the open layout is written apart, by crates/delivery);
        // DataFusion, DuckDB and chDB read them (1M imported rows checked by hand); cold
        // files, kept for years, stay at format 1. PLAIN as the encoding without (or
        // past) a dictionary, as format 1 has it (format 2's default would be the DELTA
        // encodings).
        b.set_compression(HOT_COMPRESSION)
            .set_data_page_size_limit(HOT_PAGE_BYTES)
            .set_writer_version(parquet::file::properties::WriterVersion::PARQUET_2_0)
            .set_encoding(parquet::basic::Encoding::PLAIN)
    };
    if rewrite {
        // Files written from other files may be large: their row groups' pages are held.
        b = b.set_max_row_group_row_count(Some(COLD_ROW_GROUP_ROWS));
    }
    for c in schema::COLUMNS {
        let body = matches!(c.kind, schema::Kind::Json) || c.name == "message";
        if body || c.name == "request_id" {
            b = b.set_column_dictionary_enabled(c.name.into(), false);
        }
        if body {
            // Minimum and maximum of JSON text prune nothing a query asks, and cost a
            // comparison of kilobyte values per row (2 % of an import) and their bytes in
            // every footer and page index.
            b = b.set_column_statistics_enabled(
                c.name.into(),
                parquet::file::properties::EnabledStatistics::None,
            );
        }
        if cold && !body {
            b = b.set_column_compression(c.name.into(), zstd(COLD_SMALL_ZSTD_LEVEL));
        }
        if cold && c.name == "request_id" {
            b = b.set_column_data_page_size_limit(c.name.into(), COLD_ID_PAGE_BYTES);
        }
    }
    // The text index: Bloom filters (random bits: nothing to compress, no use for
    // statistics or a dictionary).
    let index = parquet::schema::types::ColumnPath::from(textindex::COLUMN);
    b = b
        .set_column_compression(index.clone(), Compression::UNCOMPRESSED)
        .set_column_dictionary_enabled(index.clone(), false)
        .set_column_statistics_enabled(index, parquet::file::properties::EnabledStatistics::None);
    if let Some(e) = encryption {
        b = b.with_file_encryption_properties(e);
    }
    b.build()
}

impl Store {
    /// Open the store for writing: takes the folder's lock (one writer per folder), removes
    /// files no manifest names (left by a crash mid-flush).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store, StoreError> {
        Store::open_on(RealDisk::shared(), dir, Arc::new(Keyring::default()))
    }

    /// [`Store::open`] on a given [`Disk`], encrypting new files when `keys` has an active
    /// master key and reading files sealed under any of its keys.
    pub fn open_on(
        disk: Arc<dyn Disk>,
        dir: impl Into<PathBuf>,
        keys: Arc<Keyring>,
    ) -> Result<Store, StoreError> {
        let dir = dir.into();
        disk.create_dir_all(&dir.join("groups"))?;
        let Some(lock) = disk.try_lock(&dir.join("LOCK"))? else {
            return Err(StoreError::Locked(dir));
        };
        let mut manifest = read_manifest(&*disk, &dir)?;
        check_keys(&manifest, &keys)?;
        // Format 2 only adds to format 1: the next manifest written says so.
        manifest.format_version = FORMAT_VERSION;
        let known: HashSet<&str> = manifest
            .groups
            .values()
            .flat_map(|g| g.files.iter().map(|f| f.path.as_str()))
            .collect();
        remove_orphans(&*disk, &dir, &dir.join("groups"), &known)?;
        // What we just read may not be durable yet (a manifest renamed into place, or a
        // data file created, before a folder fsync that failed): make it so before
        // building on it. (Found by the system simulation, seed 69.)
        for name in disk.list(&dir.join("groups"))? {
            let g = dir.join("groups").join(name);
            if disk.is_dir(&g) {
                disk.sync_dir(&g)?;
            }
        }
        disk.sync_dir(&dir.join("groups"))?;
        disk.sync_dir(&dir)?;
        let s = Store::with(disk, dir, manifest, Some(lock), keys);
        Ok(s)
    }

    /// Open the store read-only (safe while a server writes it).
    pub fn open_read_only(
        dir: impl Into<PathBuf>,
        keys: Arc<Keyring>,
    ) -> Result<Store, StoreError> {
        let dir = dir.into();
        let disk = RealDisk::shared();
        let manifest = read_manifest(&*disk, &dir)?;
        check_keys(&manifest, &keys)?;
        Ok(Store::with(disk, dir, manifest, None, keys))
    }

    fn with(
        disk: Arc<dyn Disk>,
        dir: PathBuf,
        manifest: Manifest,
        writable: Option<logbook_disk::LockGuard>,
        keys: Arc<Keyring>,
    ) -> Store {
        let next = manifest.next_seq;
        Store {
            disk,
            keys,
            body_retention: RwLock::new(BodyRetention::default()),
            dir,
            state: RwLock::new(State {
                manifest,
                tails: HashMap::new(),
                tail_next_seq: next,
                tail_since: None,
            }),
            flush_lock: Mutex::new(()),
            retired: Mutex::new(Vec::new()),
            rollups: Mutex::new(HashMap::new()),
            zone_maps: Mutex::new(HashMap::new()),
            footers: Mutex::new(HashMap::new()),
            text_indexes: Mutex::new((HashMap::new(), 0)),
            retire_grace_ms: std::sync::atomic::AtomicU64::new(RETIRE_GRACE.as_millis() as u64),
            writable,
            maintenance_stopped: std::sync::atomic::AtomicBool::new(false),
            release_memory: std::sync::OnceLock::new(),
            released_at_ms: std::sync::atomic::AtomicU64::new(0),
            created: std::time::Instant::now(),
            stats: StoreStats::default(),
        }
    }

    /// Give the store what to call when it has just freed much memory ([`ReleaseMemory`]);
    /// once (later calls change nothing).
    pub fn set_release_memory(&self, f: ReleaseMemory) {
        let _ = self.release_memory.set(f);
    }

    /// Call [`ReleaseMemory`], if given: always when `now`, else if [`RELEASE_EVERY`] has
    /// passed since the last call.
    fn release_memory(&self, now: bool) {
        let Some(f) = self.release_memory.get() else {
            return;
        };
        let at = self.created.elapsed().as_millis() as u64;
        let last = self
            .released_at_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if !now && at.saturating_sub(last) < RELEASE_EVERY.as_millis() as u64 {
            return;
        }
        self.released_at_ms
            .store(at, std::sync::atomic::Ordering::Relaxed);
        f();
        self.stats
            .memory_releases
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        if self.writable.is_none() {
            return Err(StoreError::Invalid("the store is open read-only".into()));
        }
        Ok(())
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The master keys files are sealed and opened with.
    pub fn keys(&self) -> &Arc<Keyring> {
        &self.keys
    }

    /// Set how long groups keep bodies (validated as CloudWatch's retention days).
    pub fn set_body_retention(&self, r: BodyRetention) -> Result<(), StoreError> {
        for d in r.default_days.iter().chain(r.groups.values()) {
            validate_retention(*d).map_err(StoreError::Invalid)?;
        }
        *self
            .body_retention
            .write()
            .unwrap_or_else(|p| p.into_inner()) = r;
        Ok(())
    }

    /// How long `group` keeps bodies, in days.
    pub fn body_retention_days(&self, group: &str) -> Option<u32> {
        self.body_retention
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .days(group)
    }

    /// A reader of one of the store's Parquet files (decrypting when it is encrypted).
    fn parquet_reader(
        &self,
        path: &Path,
    ) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder<DiskChunks>, StoreError>
    {
        // Read from the file as the batches are consumed: compaction streams whole
        // partitions through here, and a copy of each file in memory was its peak.
        let file = self.disk.open_read(path)?;
        let len = file.len()?;
        let file = DiskChunks { file, len };
        let opts = parquet::arrow::arrow_reader::ArrowReaderOptions::new()
            .with_file_decryption_properties(decryption_properties(&self.keys)?);
        Ok(
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new_with_options(
                file, opts,
            )?,
        )
    }

    /// The [`rollup::Rollup`] in the footer of a store file (`path` as a [`Snapshot`] names
    /// it), read once and kept; none when the file has none (written before rollups) or
    /// holds one this build does not read. Reads only the footer, decrypting it when the
    /// file is sealed.
    pub fn rollup(&self, path: &Path) -> Result<Option<Arc<rollup::Rollup>>, StoreError> {
        if let Some(r) = self
            .rollups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
        {
            return Ok(Some(r.clone()));
        }
        Ok(self.read_footer(path)?.0)
    }

    /// The [`zonemap::ZoneMap`] of a store file (`path` as a [`Snapshot`] names it): what
    /// each of its row groups holds of the numeric columns. Read once with the rollup (one
    /// footer read gives both) and kept.
    pub fn zone_map(&self, path: &Path) -> Result<Arc<zonemap::ZoneMap>, StoreError> {
        if let Some(z) = self
            .zone_maps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
        {
            return Ok(z.clone());
        }
        Ok(self.read_footer(path)?.1)
    }

    /// The named columns of some row groups of a store file (`path` as a [`Snapshot`]
    /// names it), in row-group order, decrypting when the file is sealed: for a query
    /// that looks at a few columns of a few row groups before it reads whole rows.
    pub fn read_columns(
        &self,
        path: &Path,
        columns: &[&str],
        row_groups: Vec<usize>,
    ) -> Result<Vec<RecordBatch>, StoreError> {
        use parquet::arrow::arrow_reader::{
            ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
        };
        let file = self.disk.open_read(path)?;
        let len = file.len()?;
        let file = DiskChunks { file, len };
        let cached = self
            .footers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .cloned();
        let meta = match cached {
            Some(m) => m,
            None => {
                let opts = ArrowReaderOptions::new()
                    .with_file_decryption_properties(decryption_properties(&self.keys)?);
                let m = ArrowReaderMetadata::load(&file, opts)?;
                let mut c = self.footers.lock().unwrap_or_else(|p| p.into_inner());
                if c.len() >= FOOTER_CACHE {
                    c.clear();
                }
                c.insert(path.to_path_buf(), m.clone());
                m
            }
        };
        let b = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta);
        let mut roots = Vec::with_capacity(columns.len());
        for c in columns {
            roots.push(
                b.schema().index_of(c).map_err(|_| {
                    StoreError::Invalid(format!("{}: no column {c}", path.display()))
                })?,
            );
        }
        let mask = parquet::arrow::ProjectionMask::roots(b.parquet_schema(), roots);
        let mut out = Vec::new();
        for batch in b
            .with_projection(mask)
            .with_row_groups(row_groups)
            .with_batch_size(64 * 1024)
            .build()?
        {
            out.push(batch?);
        }
        Ok(out)
    }

    /// Read a file's footer (decrypting it when the file is sealed) into the rollup and
    /// zone-map caches.
    #[allow(clippy::type_complexity)]
    fn read_footer(
        &self,
        path: &Path,
    ) -> Result<(Option<Arc<rollup::Rollup>>, Arc<zonemap::ZoneMap>), StoreError> {
        let file = self.disk.open_read(path)?;
        let len = file.len()?;
        let chunks = DiskChunks { file, len };
        let meta = parquet::file::metadata::ParquetMetaDataReader::new()
            .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Skip)
            .with_decryption_properties(Some(decryption_properties(&self.keys)?))
            .parse_and_finish(&chunks)?;
        let found = meta
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|k| k.key == rollup::KEY))
            .and_then(|k| k.value.as_deref())
            .and_then(rollup::Rollup::from_text)
            .map(Arc::new);
        if let Some(r) = &found {
            let mut c = self.rollups.lock().unwrap_or_else(|p| p.into_inner());
            if c.len() >= ROLLUP_CACHE {
                c.clear();
            }
            c.insert(path.to_path_buf(), r.clone());
        }
        let zones = Arc::new(zonemap::ZoneMap::from_metadata(&meta));
        let mut c = self.zone_maps.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() >= ROLLUP_CACHE {
            c.clear();
        }
        c.insert(path.to_path_buf(), zones.clone());
        Ok((found, zones))
    }

    /// The [`textindex::TextIndex`] of a store file (`path` as a [`Snapshot`] names it),
    /// read once and kept while the cache has room; none when the file has none (written
    /// before text indexes). Reads the footer and the index's column only, decrypting
    /// when the file is sealed.
    pub fn text_index(&self, path: &Path) -> Result<Option<Arc<textindex::TextIndex>>, StoreError> {
        if let Some(r) = self
            .text_indexes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .get(path)
        {
            return Ok(r.clone());
        }
        let b = self.parquet_reader(path)?;
        let found = match b.schema().index_of(textindex::COLUMN) {
            Err(_) => None,
            Ok(i) => {
                let mask = parquet::arrow::ProjectionMask::roots(b.parquet_schema(), [i]);
                let mut cols = Vec::new();
                for batch in b.with_projection(mask).with_batch_size(64 * 1024).build()? {
                    let batch = batch?;
                    let c = batch
                        .column(0)
                        .as_any()
                        .downcast_ref::<arrow_array::BinaryArray>()
                        .cloned()
                        .ok_or_else(|| {
                            StoreError::Invalid(format!(
                                "{}: the text index is not binary",
                                path.display()
                            ))
                        })?;
                    cols.push(c);
                }
                Some(Arc::new(textindex::TextIndex::from_column(cols.iter())))
            }
        };
        let size = found.as_ref().map_or(0, |t| t.size()) + 64;
        let mut c = self.text_indexes.lock().unwrap_or_else(|p| p.into_inner());
        if c.1 + size > TEXT_INDEX_CACHE_BYTES {
            c.0.clear();
            c.1 = 0;
        }
        if size <= TEXT_INDEX_CACHE_BYTES {
            c.0.insert(path.to_path_buf(), found.clone());
            c.1 += size;
        }
        Ok(found)
    }

    /// Read the rollups and text indexes of the newest files into their caches, newest
    /// first, until the text indexes fill three quarters of their cache (a full cache is
    /// emptied by the next file it takes) or a stop ([`Store::interrupt_maintenance`]).
    /// Run at start, so the first search or token question after it does not pay for
    /// reading footers and indexes (6.9 s against 0.08 s on 10,000,000 records). Returns
    /// the files whose caches were filled and the index bytes read; a file that cannot be
    /// read is skipped (a query reading it reports why).
    pub fn warm_caches(&self) -> (u64, u64) {
        let mut files: Vec<(i64, PathBuf)> = {
            let st = self.read();
            st.manifest
                .groups
                .values()
                .flat_map(|g| g.files.iter())
                .map(|f| (f.max_ts, self.dir.join(&f.path)))
                .collect()
        };
        files.sort_by_key(|f| std::cmp::Reverse(f.0));
        let (mut n, mut bytes) = (0u64, 0u64);
        for (_, path) in files.into_iter().take(ROLLUP_CACHE) {
            if self.maintenance_interrupted() {
                break;
            }
            let _ = self.rollup(&path);
            if let Ok(Some(t)) = self.text_index(&path) {
                bytes += t.size() as u64;
            }
            n += 1;
            if bytes as usize >= TEXT_INDEX_CACHE_BYTES / 4 * 3 {
                break;
            }
        }
        (n, bytes)
    }

    /// The next journal sequence the store has not seen (files and tail).
    pub fn next_seq(&self) -> u64 {
        self.read().tail_next_seq
    }

    /// Every journal entry before `seq` has been seen (the follower read up to the
    /// journal's committed end and found nothing more): move the cursor there, so a
    /// query that waits for its writes does not wait for entries that do not exist.
    pub fn advance_to(&self, seq: u64) {
        let mut st = self.write();
        if seq > st.tail_next_seq {
            st.tail_next_seq = seq;
        }
    }

    /// The next journal sequence not yet in a file (the durable cursor).
    pub fn durable_seq(&self) -> u64 {
        self.read().manifest.next_seq
    }

    fn persist(&self, m: &Manifest) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(m)
            .map_err(|e| StoreError::Manifest(self.dir.join("manifest.json"), e))?;
        self.disk
            .write_atomic(&self.dir.join("manifest.json"), &bytes)?;
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> Result<(), StoreError> {
        self.disk.sync_dir(dir)?;
        Ok(())
    }

    /// Create a log group.
    pub fn create_group(&self, name: &str) -> Result<(), StoreError> {
        self.check_writable()?;
        validate_group_name(name).map_err(StoreError::Invalid)?;
        let mut st = self.write();
        if st.manifest.groups.contains_key(name) {
            return Err(StoreError::GroupExists(name.into()));
        }
        let mut m = st.manifest.clone();
        m.groups.insert(
            name.into(),
            GroupMeta {
                creation_time: now_ms(),
                ..Default::default()
            },
        );
        self.persist(&m)?;
        st.manifest = m;
        Ok(())
    }

    /// Create a log group unless it exists.
    pub fn ensure_group(&self, name: &str) -> Result<(), StoreError> {
        match self.create_group(name) {
            Err(StoreError::GroupExists(_)) => Ok(()),
            r => r,
        }
    }

    /// Delete a log group and its data.
    pub fn delete_group(&self, name: &str) -> Result<(), StoreError> {
        self.check_writable()?;
        let _flush = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = self.write();
        let mut m = st.manifest.clone();
        let g = m
            .groups
            .remove(name)
            .ok_or_else(|| StoreError::NoSuchGroup(name.into()))?;
        self.persist(&m)?;
        st.manifest = m;
        st.tails.remove(name);
        drop(st);
        for f in g.files {
            let _ = self.disk.remove_file(&self.dir.join(&f.path));
        }
        let _ = self.disk.remove_dir_all(&self.group_dir(name));
        Ok(())
    }

    /// Set (or with `None`, remove) a group's retention.
    pub fn set_retention(&self, name: &str, days: Option<u32>) -> Result<(), StoreError> {
        self.check_writable()?;
        if let Some(d) = days {
            validate_retention(d).map_err(StoreError::Invalid)?;
        }
        let mut st = self.write();
        let mut m = st.manifest.clone();
        let g = m
            .groups
            .get_mut(name)
            .ok_or_else(|| StoreError::NoSuchGroup(name.into()))?;
        g.retention_in_days = days;
        self.persist(&m)?;
        st.manifest = m;
        Ok(())
    }

    /// Whether a group exists.
    pub fn has_group(&self, name: &str) -> bool {
        self.read().manifest.groups.contains_key(name)
    }

    /// Every group, by name.
    pub fn groups(&self) -> Vec<GroupInfo> {
        let st = self.read();
        st.manifest
            .groups
            .iter()
            .map(|(name, g)| GroupInfo {
                name: name.clone(),
                creation_time: g.creation_time,
                retention_in_days: g.retention_in_days,
                stored_bytes: g.stored_bytes(),
                records: g.files.iter().map(|f| f.rows).sum::<u64>()
                    + st.tails.get(name).map_or(0, |t| t.rows),
            })
            .collect()
    }

    /// The manifest as it stands (what a mirror publishes for other replicas).
    pub fn manifest_view(&self) -> ManifestView {
        let st = self.read();
        ManifestView {
            format_version: st.manifest.format_version,
            next_seq: st.manifest.next_seq,
            groups: st.manifest.groups.clone(),
        }
    }

    /// What a query over `[start, end]` (epoch ms, inclusive) of a group reads.
    pub fn snapshot(&self, name: &str, start: i64, end: i64) -> Result<Snapshot, StoreError> {
        let st = self.read();
        let g = st
            .manifest
            .groups
            .get(name)
            .ok_or_else(|| StoreError::NoSuchGroup(name.into()))?;
        let now = now_ms();
        let cutoff = g.retention_in_days.map(|d| now - i64::from(d) * 86_400_000);
        let body_cutoff = self
            .body_retention_days(name)
            .map(|d| now - i64::from(d) * 86_400_000);
        let lo = start.max(cutoff.unwrap_or(i64::MIN));
        let files = g
            .files
            .iter()
            .filter(|f| f.max_ts >= lo && f.min_ts <= end)
            .map(|f| (self.dir.join(&f.path), f.clone()))
            .collect();
        let mut fields = g.fields.clone();
        let tail = match st.tails.get(name) {
            Some(t) => {
                let first_hour = hour_of(lo);
                t.hours
                    .range(first_hour..=end.max(first_hour))
                    .flat_map(|(_, b)| b.iter().cloned())
                    .collect()
            }
            None => Vec::new(),
        };
        if let Some(t) = st.tails.get(name) {
            for b in t.hours.values().flatten().take(8) {
                fields::discover_batch(b, &mut fields);
            }
        }
        Ok(Snapshot {
            files,
            tail,
            retention_cutoff: cutoff,
            body_cutoff,
            fields,
        })
    }

    /// Add journal entries (records, in sequence order) to the tail. Entries that are not
    /// records are skipped; records for a group that does not exist are counted as dropped.
    ///
    /// Entries below [`Store::next_seq`] are already here and are skipped, one by one: a
    /// follower that re-reads from its durable cursor after a failed flush adds nothing
    /// twice.
    pub fn add_entries(&self, entries: &[logbook_journal::Entry]) {
        let Some(last) = entries.last() else {
            return;
        };
        let seen = self.next_seq();
        if last.seq < seen {
            return;
        }
        // Each record straight into the columns of its group and hour (borrowed from the
        // entry: no row of owned strings), built before the lock is taken.
        let mut parts: Vec<(String, i64, Vec<schema::Fields<'_>>)> = Vec::new();
        // Each sequence once, also within one chunk (a caller that handed an entry over
        // twice in one call).
        let mut next = seen;
        for e in entries {
            if e.seq < next {
                continue;
            }
            next = e.seq + 1;
            if e.kind != logbook_journal::Kind::Record {
                continue;
            }
            let Ok(line) = std::str::from_utf8(&e.payload) else {
                continue;
            };
            let Ok(f) = schema::parse_fields(line) else {
                continue;
            };
            let Some(g) = f.log_group.as_deref() else {
                continue;
            };
            let hour = hour_of(f.timestamp);
            let at = match parts.iter().position(|(pg, ph, _)| pg == g && *ph == hour) {
                Some(i) => i,
                None => {
                    parts.push((g.to_string(), hour, Vec::new()));
                    parts.len() - 1
                }
            };
            parts[at].2.push(f);
        }
        let batches: Vec<TailBatch> = parts
            .into_iter()
            .map(|(g, hour, f)| (g, hour, f.len(), schema::fields_batch(&f)))
            .collect();
        let mut st = self.write();
        if st.tail_next_seq != seen {
            // Another adder got in between (only tests add from two threads): start over
            // against what is here now.
            drop(st);
            return self.add_entries(entries);
        }
        st.tail_next_seq = last.seq + 1;
        self.add_batches_locked(&mut st, batches);
    }

    /// Add each group-hour's batch of `rows` records to the tail.
    fn add_batches_locked(&self, st: &mut State, batches: Vec<TailBatch>) {
        use std::sync::atomic::Ordering::Relaxed;
        for (g, hour, rows, batch) in batches {
            if !st.manifest.groups.contains_key(&g) {
                self.stats.dropped.fetch_add(rows as u64, Relaxed);
                continue;
            }
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    // Never silent: counted with the records for no group, and said (the
                    // archive and the journal still hold them).
                    self.stats.dropped.fetch_add(rows as u64, Relaxed);
                    tracing::error!(group = %g, records = rows, error = %e, "records could not be put in columns and are not in the log group");
                    continue;
                }
            };
            self.stats.records.fetch_add(rows as u64, Relaxed);
            let t = st.tails.entry(g).or_default();
            t.rows += rows as u64;
            t.bytes += batch.get_array_memory_size();
            let batches = t.hours.entry(hour).or_default();
            batches.push(batch);
            t.bytes = coalesce(batches, t.bytes);
            if st.tail_since.is_none() {
                st.tail_since = Some(now_ms());
            }
        }
    }

    /// Rows and bytes in the tail, and the age of its oldest add (ms).
    pub fn tail_size(&self) -> (u64, usize, i64) {
        let st = self.read();
        let rows = st.tails.values().map(|t| t.rows).sum();
        let bytes = st.tails.values().map(|t| t.bytes).sum();
        let age = st.tail_since.map_or(0, |s| now_ms() - s);
        (rows, bytes, age)
    }

    fn group_dir(&self, name: &str) -> PathBuf {
        self.dir.join("groups").join(groups::dir_name(name))
    }

    /// Write one group-hour's batches as a Parquet file (fsync'd); returns its metadata.
    fn write_file(
        &self,
        group: &str,
        hour: i64,
        file_no: u64,
        batches: &[RecordBatch],
    ) -> Result<FileMeta, StoreError> {
        self.write_file_from(
            group,
            hour,
            file_no,
            (false, 0),
            batches.iter().cloned().map(Ok),
        )
    }

    /// [`Store::write_file`] from batches as they come (read from other files, for
    /// compaction), encoded and written as they arrive; `(cold, tier)`: at
    /// [`COLD_ZSTD_LEVEL`], and [`FileMeta::tier`].
    /// A file that fails half way is removed (it is named in no manifest either way).
    fn write_file_from(
        &self,
        group: &str,
        hour: i64,
        file_no: u64,
        (cold, tier): (bool, u8),
        batches: impl Iterator<Item = Result<RecordBatch, StoreError>>,
    ) -> Result<FileMeta, StoreError> {
        let (meta, file) =
            self.write_file_unsynced(group, hour, file_no, (cold, tier), false, batches)?;
        if let Err(e) = file.sync_all() {
            drop(file);
            let _ = self.disk.remove_file(&self.dir.join(&meta.path));
            return Err(e.into());
        }
        Ok(meta)
    }

    /// [`Store::write_file_from`] without the fsync: the caller syncs the returned file
    /// before any manifest names it (an import syncs its files in
    /// [`Store::commit_import`], off the threads that encode). `around_cache`: write it
    /// with [`logbook_disk::Disk::create_sequential`], past the page cache where the disk
    /// can (an import's files, read next by a later start's compaction), else through it
    /// (a flush's or a compaction's, which queries read soon).
    fn write_file_unsynced(
        &self,
        group: &str,
        hour: i64,
        file_no: u64,
        (cold, tier): (bool, u8),
        around_cache: bool,
        batches: impl Iterator<Item = Result<RecordBatch, StoreError>>,
    ) -> Result<(FileMeta, Arc<dyn logbook_disk::DiskFile>), StoreError> {
        let rewrite = cold || tier > 0;
        let gdir = self.group_dir(group);
        self.disk.create_dir_all(&gdir)?;
        let name = format!("{}-{file_no:012}.parquet", groups::hour_name(hour));
        let path = gdir.join(&name);
        let sealed = self
            .keys
            .new_data_key()
            .map_err(|e| StoreError::Sealed(name.clone(), e))?;
        let (encryption, key_id) = match sealed {
            Some((dk, wrapped)) => (
                Some(
                    parquet::encryption::encrypt::FileEncryptionProperties::builder(
                        dk.bytes().to_vec(),
                    )
                    .with_footer_key_metadata(wrapped.to_text().into_bytes())
                    .build()?,
                ),
                Some(wrapped.master_key_id),
            ),
            None => (None, None),
        };
        let sink = DiskSink(if around_cache {
            self.disk.create_sequential(&path)?
        } else {
            logbook_disk::chunked(self.disk.create(&path)?)
        });
        let written = (|| -> Result<(i64, i64, u64, u64, _), StoreError> {
            let file_schema = textindex::file_schema();
            let mut w = ArrowWriter::try_new(
                sink,
                file_schema.clone(),
                Some(writer_props(encryption, cold, rewrite)),
            )?;
            let (mut min, mut max, mut rows) = (i64::MAX, i64::MIN, 0u64);
            let mut sums = rollup::Builder::new(rollup::BUCKET_MS);
            let mut text = textindex::Builder::new();
            let table_columns = schema::schema().fields().len();
            // One batch ahead: the last row of the file ends the text index's last block.
            let mut batches = batches
                .filter(|b| b.as_ref().map_or(true, |b| b.num_rows() > 0))
                .peekable();
            while let Some(b) = batches.next() {
                let b = b?;
                if let Some((lo, hi)) = fields::time_range(&b) {
                    min = min.min(lo);
                    max = max.max(hi);
                }
                rows += b.num_rows() as u64;
                sums.add(&b)
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                // Batches read from store files carry their old index: it is built anew.
                let mut cols: Vec<arrow_array::ArrayRef> =
                    b.columns().iter().take(table_columns).cloned().collect();
                cols.push(Arc::new(text.column(&b, batches.peek().is_none())));
                w.write(&RecordBatch::try_new(file_schema.clone(), cols)?)?;
            }
            w.append_key_value_metadata(parquet::file::metadata::KeyValue::new(
                rollup::KEY.to_string(),
                sums.finish().to_text(),
            ));
            let sink = w.into_inner()?;
            let bytes = sink.0.len();
            Ok((min, max, rows, bytes, sink.0.finish()?))
        })();
        let (min, max, rows, bytes, file) = match written {
            Ok(v) => v,
            Err(e) => {
                let _ = self.disk.remove_file(&path);
                return Err(e);
            }
        };
        let meta = FileMeta {
            path: format!("groups/{}/{name}", groups::dir_name(group)),
            min_ts: min,
            max_ts: max,
            rows,
            bytes,
            key_id,
            bodies_removed: false,
            cold,
            tier,
            rollup: true,
        };
        Ok((meta, file))
    }

    /// Write the tail to Parquet files and advance the durable cursor. Returns the records
    /// written.
    pub fn flush(&self) -> Result<u64, StoreError> {
        self.flush_counted().map(|(records, _)| records)
    }

    /// Can the store write at all? Writes, fsyncs and removes a small file in its folder:
    /// tells a sick disk from a record the store cannot take.
    pub fn probe(&self) -> Result<(), StoreError> {
        self.check_writable()?;
        let path = self.dir.join(".probe");
        let f = self.disk.create(&path)?;
        f.write_at(b"ok", 0)?;
        f.sync_all()?;
        drop(f);
        self.disk.remove_file(&path)?;
        Ok(())
    }

    /// [`Store::flush`], returning the records and the Parquet bytes written.
    pub fn flush_counted(&self) -> Result<(u64, u64), StoreError> {
        let r = self.flush_tail();
        // The tail's batches and the writer's pages are freed.
        if matches!(r, Ok((n, _)) if n > 0) {
            self.release_memory(true);
        }
        r
    }

    fn flush_tail(&self) -> Result<(u64, u64), StoreError> {
        self.check_writable()?;
        let _flush = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
        // What to write: the tail as it is now (adds may continue meanwhile).
        let (work, upto, mut file_no) = {
            let st = self.read();
            let work: Vec<(String, i64, Vec<RecordBatch>)> = st
                .tails
                .iter()
                .flat_map(|(g, t)| t.hours.iter().map(move |(h, b)| (g.clone(), *h, b.clone())))
                .collect();
            (work, st.tail_next_seq, st.manifest.next_file)
        };
        if work.is_empty() && upto == self.durable_seq() {
            return Ok((0, 0));
        }
        let mut written: Vec<(String, i64, usize, FileMeta, BTreeSet<String>)> = Vec::new();
        let (mut total, mut bytes) = (0, 0);
        for (g, hour, batches) in &work {
            let meta = self.write_file(g, *hour, file_no, batches)?;
            file_no += 1;
            total += meta.rows;
            bytes += meta.bytes;
            let mut f = BTreeSet::new();
            for b in batches.iter().take(4) {
                fields::discover_batch(b, &mut f);
            }
            written.push((g.clone(), *hour, batches.len(), meta, f));
        }
        for g in written.iter().map(|w| &w.0).collect::<BTreeSet<_>>() {
            self.sync_dir(&self.group_dir(g))?;
        }
        let mut st = self.write();
        let mut m = st.manifest.clone();
        m.next_seq = upto;
        m.next_file = file_no;
        for (g, _, _, meta, f) in &written {
            if let Some(gm) = m.groups.get_mut(g) {
                gm.files.push(meta.clone());
                fields::merge(&mut gm.fields, f);
            }
        }
        if let Err(e) = self.persist(&m) {
            // The new manifest may have replaced the old one anyway (a failed folder fsync
            // after the rename): keep its files, and never reuse their names.
            st.manifest.next_file = file_no;
            return Err(e);
        }
        st.manifest = m;
        // Drop what was written from the tail; later adds stay.
        for (g, hour, n, meta, _) in &written {
            if let Some(t) = st.tails.get_mut(g) {
                if let Some(v) = t.hours.get_mut(hour) {
                    let gone: Vec<RecordBatch> = v.drain(..(*n).min(v.len())).collect();
                    t.bytes = t
                        .bytes
                        .saturating_sub(gone.iter().map(|b| b.get_array_memory_size()).sum());
                    if v.is_empty() {
                        t.hours.remove(hour);
                    }
                }
                t.rows = t.rows.saturating_sub(meta.rows);
            }
        }
        st.tails.retain(|_, t| !t.hours.is_empty());
        st.tail_since = if st.tails.is_empty() {
            None
        } else {
            Some(now_ms())
        };
        self.stats
            .flushes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok((total, bytes))
    }

    /// Merge the files of each closed partition (an hour of today, a day before it; see
    /// [`partition_of`]) that has more than one into a single file, so a long-running server does not leave one small file per
    /// flush; and in the open hour, every [`OPEN_HOUR_MERGE`] files of a tier into one of
    /// the next ([`FileMeta::tier`]). The new file is fsync'd and named in the manifest
    /// before the old ones go. Returns the files merged away.
    pub fn compact(&self, now: i64) -> Result<usize, StoreError> {
        let r = self.compact_until(now, &|| self.maintenance_interrupted());
        if matches!(r, Ok(n) if n > 0) {
            self.release_memory(true);
        }
        r
    }

    /// Stop compaction and the rewrite of files past body retention at their next batch,
    /// now and from now on (a stopping server). A partition half written is dropped: the
    /// files it would replace stay named, and the next start merges them again. Flushes
    /// and imports go on.
    pub fn interrupt_maintenance(&self) {
        self.maintenance_stopped
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn maintenance_interrupted(&self) -> bool {
        self.maintenance_stopped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The batches of `files` for a rewrite, ending in [`StoreError::Interrupted`] as soon
    /// as `stop` says so.
    fn stream_until<'a>(
        &'a self,
        files: &'a [FileMeta],
        map: impl Fn(RecordBatch) -> Result<RecordBatch, StoreError> + Copy + 'a,
        stop: &'a dyn Fn() -> bool,
    ) -> impl Iterator<Item = Result<RecordBatch, StoreError>> + 'a {
        self.stream_files(files, map).map(move |b| {
            if stop() {
                Err(StoreError::Interrupted)
            } else {
                // The batches before this one are written and freed.
                self.release_memory(false);
                b
            }
        })
    }

    /// [`Store::compact`], stopping (with the partitions merged so far) as soon as `stop`
    /// says so, between batches.
    fn compact_until(&self, now: i64, stop: &dyn Fn() -> bool) -> Result<usize, StoreError> {
        self.check_writable()?;
        let current = hour_of(now);
        // The plan, and a file number for each new file, under the flush lock; each
        // partition is then read and written outside it, batch by batch (a partition at
        // the cold level takes a while, and may not fit in memory: flushes must go on),
        // and swapped in under the lock again.
        let (plan, first_no) = {
            let _flush = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut st = self.write();
            let mut plan: Vec<Merge> = Vec::new();
            for (g, meta) in &st.manifest.groups {
                let mut by_hour: BTreeMap<i64, Vec<FileMeta>> = BTreeMap::new();
                let mut open: Vec<FileMeta> = Vec::new();
                for f in &meta.files {
                    let h = partition_of(f.min_ts, now);
                    if h != partition_of(f.max_ts, now) {
                        continue;
                    }
                    if h < current {
                        by_hour.entry(h).or_default().push(f.clone());
                    } else if h == current {
                        open.push(f.clone());
                    }
                }
                // More than one file, or one not yet at the cold level.
                plan.extend(
                    by_hour
                        .into_iter()
                        .filter(|(_, fs)| fs.len() > 1 || fs.iter().any(|f| !f.cold))
                        .map(|(h, fs)| (g.clone(), h, fs, (true, 0))),
                );
                // The open hour: tier by tier, at the hot level.
                plan.extend(open_hour_merges(&open).into_iter().map(|fs| {
                    let tier = fs[0].tier.saturating_add(1);
                    (g.clone(), current, fs, (false, tier))
                }));
            }
            // Reserved: flushes meanwhile take the numbers after these.
            let first = st.manifest.next_file;
            st.manifest.next_file += plan.len() as u64;
            (plan, first)
        };
        let mut merged = 0;
        for (i, (g, part, old, output)) in plan.into_iter().enumerate() {
            let file_no = first_no + i as u64;
            let mut meta = match self.write_file_from(
                &g,
                part,
                file_no,
                output,
                self.stream_until(&old, Ok, stop),
            ) {
                Err(StoreError::Interrupted) => {
                    tracing::info!(
                        merged,
                        "store compaction stopped half way (the store is stopping); the next start goes on"
                    );
                    return Ok(merged);
                }
                r => r?,
            };
            meta.bodies_removed = old.iter().all(|f| f.bodies_removed);
            let _flush = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
            // Swapped in only if every file it replaces is still named (retention may
            // have dropped one, or written it again without bodies, meanwhile); else it
            // is dropped and the next pass plans again.
            let (still, next) = {
                let st = self.read();
                let still = st.manifest.groups.get(&g).is_some_and(|gm| {
                    old.iter()
                        .all(|f| gm.files.iter().any(|x| x.path == f.path))
                });
                (still, st.manifest.next_file)
            };
            if !still {
                let _ = self.disk.remove_file(&self.dir.join(&meta.path));
                continue;
            }
            merged += self.replace_files(vec![(g, old, meta)], next)?;
        }
        Ok(merged)
    }

    /// The batches of `files`, one after the other, each passed through `map`, read as
    /// they are consumed.
    fn stream_files<'a>(
        &'a self,
        files: &'a [FileMeta],
        map: impl Fn(RecordBatch) -> Result<RecordBatch, StoreError> + Copy + 'a,
    ) -> impl Iterator<Item = Result<RecordBatch, StoreError>> + 'a {
        files.iter().flat_map(
            move |f| -> Box<dyn Iterator<Item = Result<RecordBatch, StoreError>> + 'a> {
                let reader = self
                    .parquet_reader(&self.dir.join(&f.path))
                    .and_then(|b| Ok(b.with_batch_size(REWRITE_BATCH_ROWS).build()?));
                match reader {
                    Ok(r) => Box::new(r.map(move |b| map(b?))),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                }
            },
        )
    }

    /// Put new files (already written and fsync'd) in the place of old ones: the folders
    /// are fsync'd, the manifest names the new files instead of the old ones, and the old
    /// ones are retired. The caller holds the flush lock. Returns the files replaced.
    fn replace_files(
        &self,
        replaced: Vec<(String, Vec<FileMeta>, FileMeta)>,
        file_no: u64,
    ) -> Result<usize, StoreError> {
        for g in replaced.iter().map(|m| &m.0).collect::<BTreeSet<_>>() {
            self.sync_dir(&self.group_dir(g))?;
        }
        let mut st = self.write();
        let mut m = st.manifest.clone();
        // (Never backwards: compaction reserves numbers ahead of what it names.)
        m.next_file = m.next_file.max(file_no);
        let mut gone = Vec::new();
        for (g, old, meta) in &replaced {
            if let Some(gm) = m.groups.get_mut(g) {
                let olds: HashSet<&str> = old.iter().map(|f| f.path.as_str()).collect();
                gm.files.retain(|f| !olds.contains(f.path.as_str()));
                gm.files.push(meta.clone());
                gm.files.sort_by_key(|f| (f.min_ts, f.path.clone()));
                gone.extend(old.iter().map(|f| f.path.clone()));
            }
        }
        if let Err(e) = self.persist(&m) {
            st.manifest.next_file = file_no; // as in `flush`
            return Err(e);
        }
        st.manifest = m;
        drop(st);
        self.retire(gone.iter().map(|p| self.dir.join(p)).collect());
        Ok(gone.len())
    }

    /// Files no longer in the manifest are deleted only after a grace period, so a query
    /// that listed them a moment earlier can still read them.
    fn retire(&self, paths: Vec<PathBuf>) {
        let now = std::time::Instant::now();
        let grace = std::time::Duration::from_millis(
            self.retire_grace_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        let mut r = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        r.extend(paths.into_iter().map(|p| (now, p)));
        r.retain(|(t, p)| {
            let keep = now.duration_since(*t) < grace;
            if !keep {
                let _ = self.disk.remove_file(p);
            }
            keep
        });
    }

    /// Shorten how long retired files stay (tests).
    #[cfg(test)]
    fn set_retire_grace(&self, grace: std::time::Duration) {
        self.retire_grace_ms.store(
            grace.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Drop files past their group's retention, and write the files past its body
    /// retention again without bodies; returns the files removed (not those rewritten).
    pub fn apply_retention(&self, now: i64) -> Result<usize, StoreError> {
        self.check_writable()?;
        let stripped = self.remove_old_bodies(now)?;
        let _flush = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
        if stripped > 0 {
            tracing::info!(
                files = stripped,
                "log group files past body retention written again without bodies"
            );
        }
        let mut st = self.write();
        let mut m = st.manifest.clone();
        let mut gone = Vec::new();
        for g in m.groups.values_mut() {
            let Some(days) = g.retention_in_days else {
                continue;
            };
            let cutoff = now - i64::from(days) * 86_400_000;
            g.files.retain(|f| {
                let keep = f.max_ts >= cutoff;
                if !keep {
                    gone.push(f.path.clone());
                }
                keep
            });
        }
        for (name, t) in st.tails.iter_mut() {
            let Some(days) = m.groups.get(name).and_then(|g| g.retention_in_days) else {
                continue;
            };
            let cutoff_hour = hour_of(now - i64::from(days) * 86_400_000);
            let old: Vec<i64> = t.hours.range(..cutoff_hour).map(|(h, _)| *h).collect();
            for h in old {
                if let Some(b) = t.hours.remove(&h) {
                    t.rows = t
                        .rows
                        .saturating_sub(b.iter().map(|b| b.num_rows() as u64).sum());
                }
            }
        }
        if gone.is_empty() {
            return Ok(0);
        }
        self.persist(&m)?;
        st.manifest = m;
        drop(st);
        self.retire(gone.iter().map(|p| self.dir.join(p)).collect());
        Ok(gone.len())
    }

    /// Files whose every row is past its group's body retention, written again without
    /// bodies: the new file is fsync'd and named in the manifest before the old one goes
    /// (after the grace period of files read by running queries). The caller holds the
    /// flush lock. Returns the files rewritten.
    fn remove_old_bodies(&self, now: i64) -> Result<usize, StoreError> {
        // As compaction does: the plan and a file number for each new file under the flush
        // lock; each file is then read and written again outside it (at the cold level:
        // a file past body retention is in a closed partition), and swapped in under the
        // lock only if it is still named (a compaction or retention may have replaced or
        // dropped it meanwhile; then the new file is dropped).
        let (plan, first_no) = {
            let _flush = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut st = self.write();
            let mut plan: Vec<(String, FileMeta)> = Vec::new();
            for (g, meta) in &st.manifest.groups {
                let Some(days) = self.body_retention_days(g) else {
                    continue;
                };
                let cutoff = now - i64::from(days) * 86_400_000;
                // Files past the group's retention are about to go entirely.
                let dropped = meta
                    .retention_in_days
                    .map_or(i64::MIN, |d| now - i64::from(d) * 86_400_000);
                plan.extend(
                    meta.files
                        .iter()
                        .filter(|f| !f.bodies_removed && f.max_ts < cutoff && f.max_ts >= dropped)
                        .map(|f| (g.clone(), f.clone())),
                );
            }
            let first = st.manifest.next_file;
            st.manifest.next_file += plan.len() as u64;
            (plan, first)
        };
        let mut done = 0;
        let stop = || self.maintenance_interrupted();
        for (i, (g, old)) in plan.into_iter().enumerate() {
            let batches = self.stream_until(
                std::slice::from_ref(&old),
                |b| Ok(schema::without_bodies(&b)?),
                &stop,
            );
            let part = partition_of(old.min_ts, now);
            let mut meta =
                match self.write_file_from(&g, part, first_no + i as u64, (true, 0), batches) {
                    Err(StoreError::Interrupted) => return Ok(done),
                    r => r?,
                };
            meta.bodies_removed = true;
            let _flush = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
            let (still, next) = {
                let st = self.read();
                let still = st
                    .manifest
                    .groups
                    .get(&g)
                    .is_some_and(|gm| gm.files.iter().any(|x| x.path == old.path));
                (still, st.manifest.next_file)
            };
            if !still {
                let _ = self.disk.remove_file(&self.dir.join(&meta.path));
                continue;
            }
            done += self.replace_files(vec![(g, vec![old], meta)], next)?;
        }
        Ok(done)
    }

    /// Every request id in a group (files and tail), for import's de-duplication.
    pub fn request_ids(&self, name: &str) -> Result<HashSet<String>, StoreError> {
        Ok(self.request_id_counts(name)?.into_keys().collect())
    }

    /// How many rows of a group (files and tail) carry each request id: a record stored
    /// twice shows as 2 (the sink conformance suite's exactly-once check).
    pub fn request_id_counts(&self, name: &str) -> Result<HashMap<String, u64>, StoreError> {
        let mut out = HashMap::new();
        self.for_each_request_id(name, |id| *out.entry(id.to_string()).or_default() += 1)?;
        Ok(out)
    }

    /// Call `f` with the request id of every row of a group (files and tail; a record
    /// stored twice, twice), one Parquet batch in memory at a time: an import into a
    /// group of 10,000,000 records keeps what it needs of each id, not 10,000,000
    /// `String`s (about 1 GB).
    pub fn for_each_request_id(
        &self,
        name: &str,
        mut f: impl FnMut(&str),
    ) -> Result<(), StoreError> {
        let snap = self.snapshot(name, i64::MIN, i64::MAX)?;
        let mut each = |a: &dyn arrow_array::Array| {
            if let Some(a) = a.as_any().downcast_ref::<arrow_array::StringArray>() {
                a.iter().flatten().for_each(&mut f);
            }
        };
        for b in &snap.tail {
            each(b.column(schema::REQUEST_ID).as_ref());
        }
        for (path, _) in &snap.files {
            let b = self.parquet_reader(path)?;
            let mask =
                parquet::arrow::ProjectionMask::roots(b.parquet_schema(), [schema::REQUEST_ID]);
            for batch in b.with_projection(mask).build()? {
                let batch = batch?;
                // The projected batch has the one column at index 0.
                each(batch.column(0).as_ref());
            }
        }
        Ok(())
    }

    /// Write imported rows straight to files of a group (they do not come from the
    /// journal, so the cursor does not move), the partitions on every core, and name them
    /// in the manifest. Returns the records written.
    pub fn import_rows(&self, name: &str, rows: Vec<Row>) -> Result<u64, StoreError> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let files = self.write_import(name, rows, threads)?;
        self.commit_import(name, files)
    }

    /// The first half of [`Store::import_rows`]: write the rows to new files of the group
    /// (one per partition, encoded on up to `threads` threads), not yet fsync'd nor named
    /// by the manifest, so no query sees them and a crash leaves orphans that the next
    /// open removes. Several callers may write at once (file numbers are reserved);
    /// [`Store::commit_import`] names what they wrote, as often as the caller likes.
    pub fn write_import(
        &self,
        name: &str,
        rows: Vec<Row>,
        threads: usize,
    ) -> Result<ImportedFiles, StoreError> {
        let now = now_ms();
        let mut by_hour: BTreeMap<i64, Vec<Row>> = BTreeMap::new();
        for r in rows {
            by_hour
                .entry(partition_of(r.timestamp, now))
                .or_default()
                .push(r);
        }
        let parts = by_hour
            .into_iter()
            .map(|(h, rows)| (h, ImportPart::Rows(rows)))
            .collect();
        self.write_import_parts(name, parts, threads)
    }

    /// [`Store::write_import`] of records an import gathered in an [`ImportBuffer`]: each
    /// partition's batches become one file, its rows in time order.
    pub fn write_import_buffer(
        &self,
        name: &str,
        buffer: ImportBuffer,
        threads: usize,
    ) -> Result<ImportedFiles, StoreError> {
        let mut parts = Vec::with_capacity(buffer.parts.len());
        for (h, (cols, mut batches)) in buffer.parts {
            if cols.rows() > 0 {
                batches.push(cols.into_batch()?);
            }
            parts.push((h, ImportPart::Batches(batches)));
        }
        self.write_import_parts(name, parts, threads)
    }

    fn write_import_parts(
        &self,
        name: &str,
        parts: Vec<(i64, ImportPart)>,
        threads: usize,
    ) -> Result<ImportedFiles, StoreError> {
        self.check_writable()?;
        if parts.is_empty() {
            return Ok(ImportedFiles::default());
        }
        if !self.has_group(name) {
            return Err(StoreError::NoSuchGroup(name.into()));
        }
        // Reserved under the flush lock (a flush reads the next number and names its files
        // after it): flushes, compactions and other imports take the numbers after these.
        let first_no = {
            let _flush = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut st = self.write();
            let first = st.manifest.next_file;
            st.manifest.next_file += parts.len() as u64;
            first
        };
        let work: Vec<(u64, i64, ImportPart)> = parts
            .into_iter()
            .enumerate()
            .map(|(i, (h, part))| (first_no + i as u64, h, part))
            .collect();
        let file_no = first_no + work.len() as u64;
        let write_one = |no: u64, hour: i64, part: ImportPart| {
            let batches = match part {
                ImportPart::Rows(mut rows) => {
                    rows.sort_by_key(|r| r.timestamp);
                    rows.chunks(8192)
                        .map(schema::to_batch)
                        .collect::<Result<Vec<_>, _>>()?
                }
                ImportPart::Batches(b) => in_time_order(b)?,
            };
            let mut found = BTreeSet::new();
            if let Some(b) = batches.first() {
                fields::discover_batch(b, &mut found);
            }
            let (meta, file) = self.write_file_unsynced(
                name,
                hour,
                no,
                (false, 0),
                true,
                batches.into_iter().map(Ok),
            )?;
            Ok::<_, StoreError>((meta, file, found))
        };
        // (file number, partition, rows), each taken once by one thread.
        type Slot = Mutex<Option<(u64, i64, ImportPart)>>;
        let work: Vec<Slot> = work.into_iter().map(|w| Mutex::new(Some(w))).collect();
        type Written = (FileMeta, Arc<dyn logbook_disk::DiskFile>, BTreeSet<String>);
        let results: Mutex<Vec<Written>> = Mutex::new(Vec::new());
        let first_err: Mutex<Option<StoreError>> = Mutex::new(None);
        let run = || {
            let mut i = 0;
            while let Some(slot) = work.get(i) {
                i += 1;
                let Some((no, hour, rows)) = slot.lock().unwrap_or_else(|p| p.into_inner()).take()
                else {
                    continue;
                };
                match write_one(no, hour, rows) {
                    Ok(v) => results.lock().unwrap_or_else(|p| p.into_inner()).push(v),
                    Err(e) => {
                        first_err
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                    }
                }
            }
        };
        let threads = threads.clamp(1, work.len());
        if threads == 1 {
            run();
        } else {
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    scope.spawn(run);
                }
            });
        }
        let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
            for (m, _, _) in &results {
                let _ = self.disk.remove_file(&self.dir.join(&m.path));
            }
            return Err(e);
        }
        results.sort_by(|a, b| a.0.path.cmp(&b.0.path));
        let mut out = ImportedFiles {
            next_file: file_no,
            ..ImportedFiles::default()
        };
        for (m, file, f) in results {
            fields::merge(&mut out.fields, &f);
            out.metas.push(m);
            out.unsynced.push(file);
        }
        Ok(out)
    }

    /// The second half of [`Store::import_rows`]: name files that [`Store::write_import`]
    /// wrote in the manifest (the files and the group's folder fsync'd first). Returns their records.
    pub fn commit_import(&self, name: &str, mut files: ImportedFiles) -> Result<u64, StoreError> {
        if files.metas.is_empty() {
            return Ok(0);
        }
        // The files' own fsyncs, here rather than on the threads that wrote them (which
        // go on encoding meanwhile), and before the flush lock (which those threads take
        // to number their files). Written seconds ago, most of their pages are on the
        // disk already.
        for f in files.unsynced.drain(..) {
            f.sync_all()?;
        }
        let _flush = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.sync_dir(&self.group_dir(name))?;
        let mut st = self.write();
        let mut m = st.manifest.clone();
        // (Never backwards: the numbers were reserved ahead of what the manifest names.)
        m.next_file = m.next_file.max(files.next_file);
        let total = files.rows();
        match m.groups.get_mut(name) {
            Some(g) => {
                g.files.extend(files.metas);
                fields::merge(&mut g.fields, &files.fields);
            }
            None => return Err(StoreError::NoSuchGroup(name.into())),
        }
        self.persist(&m)?;
        st.manifest = m;
        Ok(total)
    }
}

/// Files an import wrote and the manifest does not name yet ([`Store::write_import`]).
#[derive(Default)]
pub struct ImportedFiles {
    metas: Vec<FileMeta>,
    fields: BTreeSet<String>,
    /// The manifest's next file number once these are named.
    next_file: u64,
    /// The files, not yet fsync'd: [`Store::commit_import`] syncs them before it names
    /// them.
    unsynced: Vec<Arc<dyn logbook_disk::DiskFile>>,
}

impl std::fmt::Debug for ImportedFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportedFiles")
            .field("metas", &self.metas)
            .field("fields", &self.fields)
            .field("next_file", &self.next_file)
            .field("unsynced", &self.unsynced.len())
            .finish()
    }
}

impl ImportedFiles {
    /// Files held.
    pub fn len(&self) -> usize {
        self.metas.len()
    }

    /// Holds no file.
    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }

    /// Records in the files.
    pub fn rows(&self) -> u64 {
        self.metas.iter().map(|f| f.rows).sum()
    }

    /// Add what another write made (to name both in one commit).
    pub fn append(&mut self, other: ImportedFiles) {
        self.metas.extend(other.metas);
        self.unsynced.extend(other.unsynced);
        fields::merge(&mut self.fields, &other.fields);
        self.next_file = self.next_file.max(other.next_file);
    }
}

fn remove_orphans(
    disk: &dyn Disk,
    root: &Path,
    dir: &Path,
    known: &HashSet<&str>,
) -> Result<(), StoreError> {
    let Ok(names) = disk.list(dir) else {
        return Ok(());
    };
    for name in names {
        let p = dir.join(name);
        if disk.is_dir(&p) {
            remove_orphans(disk, root, &p, known)?;
        } else if let Ok(rel) = p.strip_prefix(root) {
            let rel = rel.to_string_lossy();
            if !known.contains(rel.as_ref()) {
                tracing::info!(file = %rel, "removing a store file no manifest names (left by an interrupted flush or compaction, or retired before a stop)");
                disk.remove_file(&p)?;
            }
        }
    }
    Ok(())
}

/// Shared handle.
pub type SharedStore = Arc<Store>;

#[cfg(test)]
mod tests {
    use super::*;
    use logbook_journal::Entry;
    use std::fs;

    fn line(rid: &str, ts: &str, group: Option<&str>, model: &str, tokens: u64) -> String {
        let dest = group
            .map(|g| format!(r#","logbook":{{"destination":{{"bucket":"b","keyPrefix":"","logGroup":"{g}"}}}}"#))
            .unwrap_or_default();
        format!(
            r#"{{"schemaType":"ModelInvocationLog","schemaVersion":"1.0","timestamp":"{ts}","accountId":"123456789012","identity":{{"arn":"arn:aws:iam::123456789012:user/a"}},"region":"us-east-1","requestId":"{rid}","operation":"Converse","modelId":"{model}","input":{{"inputContentType":"application/json","inputBodyJson":{{"messages":[]}},"inputTokenCount":{tokens}}}{dest}}}"#
        )
    }

    /// A reader from an offset yields exactly the rest of the file, read as consumed (at
    /// most one buffer ahead), so a page reader does not copy the file's tail per page.
    #[test]
    fn a_chunk_reader_reads_the_rest_of_the_file_lazily() {
        use parquet::file::reader::ChunkReader;
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&path, &data).unwrap();
        let file = RealDisk::shared().open_read(&path).unwrap();
        let chunks = DiskChunks {
            file,
            len: data.len() as u64,
        };
        let mut r = chunks.get_read(90_000).unwrap();
        let mut head = [0u8; 10];
        r.read_exact(&mut head).unwrap();
        assert_eq!(&head, &data[90_000..90_010]);
        assert!(
            r.get_ref().pos <= 90_000 + 4096,
            "read ahead by one buffer at most"
        );
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, &data[90_010..]);
        let mut past = chunks.get_read(200_000).unwrap();
        assert_eq!(past.read(&mut head).unwrap(), 0, "past the end: nothing");
        assert_eq!(chunks.get_bytes(99_990, 10).unwrap(), &data[99_990..]);
    }

    /// The distinct files a group's manifest names, sorted.
    fn distinct_files(s: &Store, group: &str) -> Vec<PathBuf> {
        let snap = s.snapshot(group, i64::MIN, i64::MAX).unwrap();
        let mut names: Vec<_> = snap.files.into_iter().map(|f| f.0).collect();
        names.sort();
        names.dedup();
        names
    }

    fn entry(seq: u64, l: String) -> Entry {
        let kind = if l.contains("eventVersion") {
            logbook_journal::Kind::TrailEvent
        } else {
            logbook_journal::Kind::Record
        };
        Entry {
            seq,
            time_ms: 0,
            kind,
            version: 1,
            payload: l.into_bytes(),
        }
    }

    /// A follower that re-reads from its durable cursor hands over entries the tail
    /// already holds: each is added once, whatever the chunks' overlap.
    #[test]
    fn entries_handed_over_again_are_added_once() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.create_group("g").unwrap();
        let e = |i: u64| {
            entry(
                i,
                line(&format!("r{i}"), "2025-03-11T00:38:02Z", Some("g"), "m", i),
            )
        };
        s.add_entries(&[e(1), e(2), e(3)]);
        s.add_entries(&[e(2), e(3), e(4)]);
        s.add_entries(&[e(1), e(2)]);
        s.add_entries(&[e(4), e(5), e(5)]);
        assert_eq!(s.next_seq(), 6);
        assert_eq!(s.tail_size().0, 5);
        let counts = s.request_id_counts("g").unwrap();
        assert_eq!(counts.len(), 5);
        assert!(counts.values().all(|n| *n == 1), "{counts:?}");
        s.flush().unwrap();
        s.add_entries(&[e(4), e(5), e(6)]);
        let counts = s.request_id_counts("g").unwrap();
        assert_eq!(counts.len(), 6);
        assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    }

    /// The probe tells a store that can write from one that cannot, and leaves nothing.
    #[test]
    fn the_probe_writes_nothing_that_stays_and_fails_on_a_read_only_store() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.probe().unwrap();
        assert!(!d.path().join(".probe").exists());
        drop(s);
        let ro = Store::open_read_only(d.path(), Arc::new(Keyring::default())).unwrap();
        assert!(ro.probe().is_err(), "a read-only store cannot take a write");
    }

    #[test]
    fn a_tail_fed_one_record_at_a_time_is_merged_and_keeps_every_row_in_order() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.create_group("g").unwrap();
        let n = 3000u64;
        for i in 0..n {
            s.add_entries(&[entry(
                i,
                line(
                    &format!("r{i:05}"),
                    "2025-03-11T00:38:02Z",
                    Some("g"),
                    "m",
                    i,
                ),
            )]);
        }
        let (rows, bytes, _) = s.tail_size();
        assert_eq!(rows, n);
        let snap = s.snapshot("g", i64::MIN, i64::MAX).unwrap();
        // Far fewer batches than adds, and the byte count is what they hold now.
        assert!(snap.tail.len() < 100, "{} batches", snap.tail.len());
        let held: usize = snap
            .tail
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum();
        assert_eq!(bytes, held);
        // One batch per add would hold about 10 KB of buffers per record.
        assert!(bytes < n as usize * 2_000, "{bytes} bytes for {n} records");
        let ids: Vec<String> = snap
            .tail
            .iter()
            .flat_map(|b| {
                let a = b
                    .column(schema::REQUEST_ID)
                    .as_any()
                    .downcast_ref::<arrow_array::StringArray>()
                    .unwrap()
                    .clone();
                (0..arrow_array::Array::len(&a)).map(move |i| a.value(i).to_string())
            })
            .collect();
        let want: Vec<String> = (0..n).map(|i| format!("r{i:05}")).collect();
        assert_eq!(ids, want);
        assert_eq!(s.flush().unwrap() as u64, n);
    }

    #[test]
    fn tail_flush_reopen_and_snapshot() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.create_group("g1").unwrap();
        assert!(matches!(
            s.create_group("g1"),
            Err(StoreError::GroupExists(_))
        ));
        assert!(matches!(
            s.create_group("bad name"),
            Err(StoreError::Invalid(_))
        ));
        s.add_entries(&[
            entry(0, line("a", "2025-03-11T00:38:02Z", Some("g1"), "m1", 3)),
            entry(1, line("b", "2025-03-11T01:38:02Z", Some("g1"), "m2", 4)),
            entry(2, line("c", "2025-03-11T01:39:02Z", Some("nope"), "m2", 4)),
            entry(3, line("d", "2025-03-11T01:39:02Z", None, "m2", 4)),
            entry(4, "{\"eventVersion\":\"1.08\"}".into()),
        ]);
        assert_eq!(s.next_seq(), 5);
        assert_eq!(s.durable_seq(), 0);
        assert_eq!(
            s.stats.dropped.load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        let snap = s.snapshot("g1", i64::MIN, i64::MAX).unwrap();
        assert!(snap.files.is_empty());
        assert_eq!(snap.tail.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
        assert!(snap.fields.contains("identity.arn"));
        assert_eq!(s.flush().unwrap(), 2);
        assert_eq!(s.durable_seq(), 5);
        let snap = s.snapshot("g1", i64::MIN, i64::MAX).unwrap();
        assert_eq!(snap.files.len(), 2, "one file per hour");
        assert!(snap.tail.is_empty());
        // A time range prunes files.
        let h1 = parse_millis("2025-03-11T01:00:00Z");
        let snap = s.snapshot("g1", h1, i64::MAX).unwrap();
        assert_eq!(snap.files.len(), 1);
        assert_eq!(s.request_ids("g1").unwrap().len(), 2);
        drop(s);
        // Reopen: files and cursor survive; an orphan (crash mid-flush) is removed.
        let orphan = d
            .path()
            .join("groups/g1/2025-03-11T05-000000000099.parquet");
        fs::write(&orphan, b"partial").unwrap();
        let s = Store::open(d.path()).unwrap();
        assert!(!orphan.exists());
        assert_eq!(s.next_seq(), 5);
        assert_eq!(s.groups()[0].records, 2);
        // Entries already seen are ignored.
        s.add_entries(&[entry(
            4,
            line("x", "2025-03-11T00:38:02Z", Some("g1"), "m1", 3),
        )]);
        assert_eq!(s.tail_size().0, 0);
        // A second writer is refused while the first holds the lock.
        assert!(matches!(Store::open(d.path()), Err(StoreError::Locked(_))));
        let ro = Store::open_read_only(d.path(), Arc::new(Keyring::default())).unwrap();
        assert_eq!(
            ro.snapshot("g1", i64::MIN, i64::MAX).unwrap().files.len(),
            2
        );
        assert!(ro.create_group("x").is_err());
    }

    /// Only a manifest that is not there is an empty store: one that cannot be read
    /// (here a folder where the file belongs) stops the open, since taking it for empty
    /// would drop every file as an orphan.
    #[test]
    fn a_manifest_that_cannot_be_read_stops_the_open_and_only_a_missing_one_is_empty() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.create_group("g").unwrap();
        s.add_entries(&[entry(
            0,
            line("a", "2025-03-11T00:38:02Z", Some("g"), "m", 1),
        )]);
        s.flush().unwrap();
        drop(s);
        let m = d.path().join("manifest.json");
        let saved = fs::read(&m).unwrap();
        fs::remove_file(&m).unwrap();
        fs::create_dir(&m).unwrap();
        assert!(
            Store::open(d.path()).is_err(),
            "opened over an unreadable manifest"
        );
        fs::remove_dir(&m).unwrap();
        fs::write(&m, saved).unwrap();
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.groups()[0].records, 1);
    }

    /// A group's record count is its files' rows plus its tail's; `has_group` names only
    /// groups that exist; the cursor `advance_to` moves only forward.
    #[test]
    fn groups_count_files_and_tail_and_the_cursor_only_moves_forward() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.create_group("g").unwrap();
        let e = |i: u64| {
            entry(
                i,
                line(&format!("r{i}"), "2025-03-11T00:38:02Z", Some("g"), "m", i),
            )
        };
        s.add_entries(&[e(0), e(1)]);
        s.flush().unwrap();
        s.add_entries(&[e(2)]);
        assert!(s.has_group("g") && !s.has_group("h"));
        assert_eq!(s.groups()[0].records, 3);
        // Its creation time (DescribeLogGroups' creationTime) is when it was made.
        assert!((now_ms() - s.groups()[0].creation_time).abs() < 60_000);
        assert_eq!(s.next_seq(), 3);
        s.advance_to(10);
        assert_eq!(s.next_seq(), 10);
        s.advance_to(5);
        assert_eq!(s.next_seq(), 10);
        // Entries below the cursor are taken as seen.
        s.add_entries(&[e(7)]);
        assert_eq!(s.groups()[0].records, 3);
    }

    #[test]
    fn compaction_merges_closed_hours() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.create_group("g").unwrap();
        for (i, ts) in [
            "2025-03-11T00:01:00Z",
            "2025-03-11T00:30:00Z",
            "2025-03-11T00:59:00Z",
            "2025-03-11T01:10:00Z",
        ]
        .iter()
        .enumerate()
        {
            s.add_entries(&[entry(
                i as u64,
                line(&format!("r{i}"), ts, Some("g"), "m", 1),
            )]);
            s.flush().unwrap();
        }
        assert_eq!(s.snapshot("g", i64::MIN, i64::MAX).unwrap().files.len(), 4);
        // Hour 01 is still open at this `now`: only hour 00's three files merge.
        let now = parse_millis("2025-03-11T01:30:00Z");
        assert_eq!(s.compact(now).unwrap(), 3);
        let snap = s.snapshot("g", i64::MIN, i64::MAX).unwrap();
        assert_eq!(snap.files.len(), 2);
        assert_eq!(snap.files.iter().map(|f| f.1.rows).sum::<u64>(), 4);
        assert_eq!(s.request_ids("g").unwrap().len(), 4);
        assert_eq!(s.compact(now).unwrap(), 0);
        drop(s);
        // Nothing orphaned, nothing lost across a reopen.
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.request_ids("g").unwrap().len(), 4);
        let on_disk = fs::read_dir(d.path().join("groups/g")).unwrap().count();
        assert_eq!(on_disk, 2);
    }

    /// The binary's [`ReleaseMemory`] is called after each flush that wrote something,
    /// while a merge streams batches (at most every [`RELEASE_EVERY`]), and after a pass
    /// that merged; never without work done.
    #[test]
    fn freed_memory_is_released_after_flushes_and_during_merges() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.create_group("g").unwrap();
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        s.set_release_memory(Arc::new(move || {
            c.fetch_add(1, Ordering::Relaxed);
        }));
        // Nothing to flush: not called.
        s.flush().unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 0);
        for (i, ts) in ["2025-03-11T00:01:00Z", "2025-03-11T00:30:00Z"]
            .iter()
            .enumerate()
        {
            s.add_entries(&[entry(
                i as u64,
                line(&format!("r{i}"), ts, Some("g"), "m", 1),
            )]);
            s.flush().unwrap();
            assert_eq!(
                calls.load(Ordering::Relaxed),
                i as u64 + 1,
                "after flush {i}"
            );
        }
        // The merge: once while it streams (the last call was under RELEASE_EVERY ago,
        // so maybe not), and once at its end.
        std::thread::sleep(RELEASE_EVERY);
        let before = calls.load(Ordering::Relaxed);
        assert_eq!(s.compact(parse_millis("2025-03-11T02:00:00Z")).unwrap(), 2);
        let merged = calls.load(Ordering::Relaxed) - before;
        assert!(
            (2..=3).contains(&merged),
            "at least once while streaming, once at the end: {merged}"
        );
        assert_eq!(
            s.stats.memory_releases.load(Ordering::Relaxed),
            calls.load(Ordering::Relaxed)
        );
        // Nothing left to merge: not called.
        let before = calls.load(Ordering::Relaxed);
        assert_eq!(s.compact(parse_millis("2025-03-11T02:00:00Z")).unwrap(), 0);
        assert_eq!(calls.load(Ordering::Relaxed), before);
    }

    /// A cold file is written in small pages and row groups, its bodies at the cold level
    /// and its small columns at a cheap one: zstd sizes each column's state to the page it
    /// compresses, and a row group's columns all hold theirs at once (compaction's peak
    /// memory, BENCHMARKS.md "Resident memory"). Flushes write LZ4 in small pages; the cold
    /// file read from them holds every row.
    #[test]
    fn compaction_writes_small_pages_with_small_columns_at_a_cheap_level() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        use parquet::schema::types::ColumnPath;
        let zstd = |l| Compression::ZSTD(ZstdLevel::try_new(l).unwrap());
        let (cold, hot) = (
            writer_props(None, true, true),
            writer_props(None, false, false),
        );
        assert_eq!(cold.data_page_size_limit(), COLD_PAGE_BYTES);
        assert_eq!(
            cold.column_data_page_size_limit(&ColumnPath::from("request_id")),
            COLD_ID_PAGE_BYTES
        );
        assert_eq!(
            cold.column_data_page_size_limit(&ColumnPath::from("input_body_json")),
            COLD_PAGE_BYTES
        );
        assert_eq!(
            hot.column_data_page_size_limit(&ColumnPath::from("request_id")),
            HOT_PAGE_BYTES
        );
        assert_eq!(cold.max_row_group_row_count(), Some(COLD_ROW_GROUP_ROWS));
        for (c, level) in [
            ("input_body_json", COLD_ZSTD_LEVEL),
            ("output_body_json", COLD_ZSTD_LEVEL),
            ("message", COLD_ZSTD_LEVEL),
            ("model_id", COLD_SMALL_ZSTD_LEVEL),
            ("timestamp", COLD_SMALL_ZSTD_LEVEL),
            ("request_id", COLD_SMALL_ZSTD_LEVEL),
        ] {
            assert_eq!(cold.compression(&ColumnPath::from(c)), zstd(level), "{c}");
            assert_eq!(
                hot.compression(&ColumnPath::from(c)),
                HOT_COMPRESSION,
                "{c}"
            );
        }
        assert_eq!(hot.data_page_size_limit(), HOT_PAGE_BYTES);

        // 600 records with 2 KB prompts, in two hot files, merged into one cold file.
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.create_group("g").unwrap();
        for half in 0..2u64 {
            let entries: Vec<Entry> = (half * 300..half * 300 + 300)
                .map(|i| {
                    let prompt: String =
                        (0..250).map(|k| format!("{:07x} ", i * 7919 + k)).collect();
                    let l = line(&format!("r{i}"), "2025-03-11T00:10:00Z", Some("g"), "m", i)
                        .replace(
                            r#"{"messages":[]}"#,
                            &format!(r#"{{"messages":[{{"content":"{prompt}"}}]}}"#),
                        );
                    entry(i, l)
                })
                .collect();
            s.add_entries(&entries);
            s.flush().unwrap();
        }
        // The data pages of `input_body_json` (uncompressed sizes), its codec, and the
        // kinds and encodings of its data pages.
        type Kinds = BTreeSet<(String, String)>;
        let pages = |path: &Path| -> (Vec<usize>, Compression, Kinds) {
            let r = SerializedFileReader::new(fs::File::open(path).unwrap()).unwrap();
            let schema = r.metadata().file_metadata().schema_descr_ptr();
            let col = (0..schema.num_columns())
                .find(|&i| schema.column(i).name() == "input_body_json")
                .unwrap();
            let codec = r.metadata().row_group(0).column(col).compression();
            let (mut sizes, mut kinds) = (Vec::new(), Kinds::new());
            for g in 0..r.num_row_groups() {
                for p in r
                    .get_row_group(g)
                    .unwrap()
                    .get_column_page_reader(col)
                    .unwrap()
                {
                    let p = p.unwrap();
                    if matches!(
                        p.page_type(),
                        parquet::basic::PageType::DATA_PAGE
                            | parquet::basic::PageType::DATA_PAGE_V2
                    ) {
                        sizes.push(p.buffer().len());
                        kinds.insert((p.page_type().to_string(), p.encoding().to_string()));
                    }
                }
            }
            (sizes, codec, kinds)
        };
        let kinds = |page: &str| Kinds::from([(page.to_string(), "PLAIN".to_string())]);
        let files = |s: &Store| -> Vec<PathBuf> {
            let snap = s.snapshot("g", i64::MIN, i64::MAX).unwrap();
            snap.files
                .iter()
                .map(|f| d.path().join(&f.1.path))
                .collect()
        };
        let hot_files = files(&s);
        assert_eq!(hot_files.len(), 2);
        for f in &hot_files {
            let (hot_pages, codec, hot_kinds) = pages(f);
            assert_eq!(codec, HOT_COMPRESSION);
            // Format 2 pages (values compressed where they lie), PLAIN as format 1 has it.
            assert_eq!(hot_kinds, kinds("DATA_PAGE_V2"));
            // 300 prompts of 2 KB: 600 KB in pages of at most twice the hot size.
            assert!(hot_pages.len() >= 2, "{hot_pages:?}");
            assert!(
                hot_pages.iter().all(|&n| n <= 2 * HOT_PAGE_BYTES),
                "{hot_pages:?}"
            );
        }
        assert_eq!(s.compact(parse_millis("2025-03-11T02:00:00Z")).unwrap(), 2);
        let cold_files = files(&s);
        assert_eq!(cold_files.len(), 1);
        let (cold_pages, codec, cold_kinds) = pages(&cold_files[0]);
        assert_eq!(cold_kinds, kinds("DATA_PAGE"));
        // (A file does not say its zstd level.)
        assert!(matches!(codec, Compression::ZSTD(_)), "{codec:?}");
        // 1.2 MB of prompts: one 1.2 MB page at the writer's default settings.
        assert!(cold_pages.len() >= 3, "{cold_pages:?}");
        assert!(
            cold_pages.iter().all(|&n| n <= 2 * COLD_PAGE_BYTES),
            "{cold_pages:?}"
        );
        assert_eq!(s.request_ids("g").unwrap().len(), 600);
    }

    #[test]
    fn the_open_hour_is_merged_tier_by_tier_oldest_first() {
        let f = |i: i64, tier: u8, cold: bool| FileMeta {
            path: format!("groups/g/{i:03}.parquet"),
            min_ts: i,
            max_ts: i,
            rows: 1,
            bytes: 1,
            key_id: None,
            bodies_removed: false,
            cold,
            tier,
            rollup: true,
        };
        let n = OPEN_HOUR_MERGE as i64;
        // One short of a merge in each tier; cold files do not count.
        let mut fs: Vec<FileMeta> = (0..n - 1).map(|i| f(i, 0, false)).collect();
        fs.extend((100..100 + n - 1).map(|i| f(i, 1, false)));
        fs.extend((200..210).map(|i| f(i, 0, true)));
        assert!(open_hour_merges(&fs).is_empty());
        // One more of each tier, the newest listed first: the oldest of each tier merge.
        fs.insert(0, f(n + 50, 0, false));
        fs.insert(0, f(99, 1, false));
        fs.push(f(n + 60, 0, false));
        let merges = open_hour_merges(&fs);
        assert_eq!(merges.len(), 2);
        let ts = |m: &Vec<FileMeta>| m.iter().map(|f| f.min_ts).collect::<Vec<_>>();
        let mut tier0: Vec<i64> = (0..n - 1).collect();
        tier0.push(n + 50);
        assert_eq!(ts(&merges[0]), tier0);
        assert!(merges[0].iter().all(|f| f.tier == 0));
        assert_eq!(ts(&merges[1]), (99..99 + n).collect::<Vec<_>>());
        assert!(merges[1].iter().all(|f| f.tier == 1));
        // Files that came faster than the passes: every full run merges, the rest wait.
        let many: Vec<FileMeta> = (0..3 * n + 5).rev().map(|i| f(i, 0, false)).collect();
        let merges = open_hour_merges(&many);
        assert_eq!(merges.len(), 3);
        for (k, m) in merges.iter().enumerate() {
            let k = k as i64;
            assert_eq!(ts(m), (k * n..(k + 1) * n).collect::<Vec<_>>());
        }
    }

    /// The open hour's flushes are merged as they pile up (queries pay per file), at the
    /// hot level, losing and repeating nothing; the hour, once closed, is merged again
    /// into one cold file.
    #[test]
    fn compaction_merges_the_open_hours_small_files_as_they_pile_up() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.create_group("g").unwrap();
        let n = OPEN_HOUR_MERGE as u64 + 2;
        for i in 0..n {
            let ts = format!("2025-03-11T00:{:02}:00Z", i);
            s.add_entries(&[entry(i, line(&format!("r{i}"), &ts, Some("g"), "m", 1))]);
            s.flush().unwrap();
        }
        let now = parse_millis("2025-03-11T00:30:00Z");
        assert_eq!(s.compact(now).unwrap(), OPEN_HOUR_MERGE);
        let tiers = |s: &Store| {
            let snap = s.snapshot("g", i64::MIN, i64::MAX).unwrap();
            let mut t: Vec<(u8, bool, u64)> = snap
                .files
                .iter()
                .map(|f| (f.1.tier, f.1.cold, f.1.rows))
                .collect();
            t.sort();
            t
        };
        assert_eq!(
            tiers(&s),
            vec![
                (0, false, 1),
                (0, false, 1),
                (1, false, OPEN_HOUR_MERGE as u64)
            ]
        );
        assert_eq!(s.request_ids("g").unwrap().len(), n as usize);
        assert_eq!(s.compact(now).unwrap(), 0);
        drop(s);
        let s = Store::open(d.path()).unwrap();
        assert_eq!(tiers(&s)[2].0, 1, "the tier is in the manifest");
        assert_eq!(s.request_ids("g").unwrap().len(), n as usize);
        // The hour closes: one cold file.
        assert_eq!(s.compact(parse_millis("2025-03-11T01:05:00Z")).unwrap(), 3);
        assert_eq!(tiers(&s), vec![(0, true, n)]);
        assert_eq!(s.request_ids("g").unwrap().len(), n as usize);
    }

    /// A stop mid-compaction: the partition being written is dropped (no file left behind,
    /// its inputs still named), partitions already merged stay merged, nothing is lost,
    /// and the next pass finishes the work. After `interrupt_maintenance`, a pass merges
    /// nothing, while flushes go on.
    #[test]
    fn compaction_stops_between_batches_and_the_next_pass_finishes_it() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.set_retire_grace(std::time::Duration::ZERO);
        s.create_group("g").unwrap();
        let mut seq = 0u64;
        for day in ["2025-03-09", "2025-03-10"] {
            for h in 0..3 {
                s.add_entries(&[entry(
                    seq,
                    line(
                        &format!("r{seq}"),
                        &format!("{day}T0{h}:01:00Z"),
                        Some("g"),
                        "m",
                        1,
                    ),
                )]);
                seq += 1;
                s.flush().unwrap();
            }
        }
        let now = parse_millis("2025-03-11T12:00:00Z");
        let files = |s: &Store| s.snapshot("g", i64::MIN, i64::MAX).unwrap().files.len();
        let on_disk = || fs::read_dir(d.path().join("groups/g")).unwrap().count();
        assert_eq!(files(&s), 6);
        // One batch per input file here: the first day's three, then a stop in the second.
        let batches = std::sync::atomic::AtomicUsize::new(0);
        let stop = || batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= 4;
        assert_eq!(
            s.compact_until(now, &stop).unwrap(),
            3,
            "the first day merged"
        );
        assert_eq!(files(&s), 4, "one merged day, the other day's three inputs");
        assert_eq!(on_disk(), 4, "the half-written day was removed");
        assert_eq!(s.request_ids("g").unwrap().len(), 6);
        // A stopping store merges nothing more, but still flushes.
        s.interrupt_maintenance();
        assert_eq!(s.compact(now).unwrap(), 0);
        assert_eq!(files(&s), 4);
        s.add_entries(&[entry(
            seq,
            line("late", "2025-03-11T11:00:00Z", Some("g"), "m", 1),
        )]);
        assert_eq!(s.flush().unwrap(), 1);
        drop(s);
        // The next start finishes the work (the second day's three inputs, and the late
        // hour's file written again at the cold level).
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.compact(now).unwrap(), 4);
        assert_eq!(files(&s), 3);
        assert_eq!(s.request_ids("g").unwrap().len(), 7);
    }

    /// Compaction over several closed days in one pass: every merge takes its own reserved
    /// number. (Here a number another file holds would name the last day's merge after
    /// one of its own inputs, `2025-03-11T00-…2`: the merge would truncate what it reads,
    /// and retiring the inputs would delete it.)
    #[test]
    fn a_pass_over_several_days_writes_each_merge_under_its_own_number_and_loses_nothing() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.set_retire_grace(std::time::Duration::ZERO);
        s.create_group("g").unwrap();
        for (seq, ts) in [
            "2025-03-09T05:01:00Z",
            "2025-03-10T05:01:00Z",
            "2025-03-11T00:01:00Z",
            "2025-03-11T01:01:00Z",
        ]
        .into_iter()
        .enumerate()
        {
            let seq = seq as u64;
            s.add_entries(&[entry(seq, line(&format!("r{seq}"), ts, Some("g"), "m", 1))]);
            s.flush().unwrap();
        }
        let now = parse_millis("2025-03-12T00:00:00Z");
        assert_eq!(s.compact(now).unwrap(), 4);
        // The inputs are retired at once (no grace here): only the merges remain.
        s.retire(Vec::new());
        let snap = s.snapshot("g", i64::MIN, i64::MAX).unwrap();
        assert_eq!(snap.files.len(), 3);
        for (path, meta) in &snap.files {
            assert!(path.exists(), "{path:?} named by the manifest is gone");
            assert!(meta.cold);
        }
        let mut names: Vec<_> = snap.files.iter().map(|f| f.0.clone()).collect();
        names.dedup();
        assert_eq!(names.len(), 3);
        assert_eq!(s.request_ids("g").unwrap().len(), 4);
        drop(s);
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.request_ids("g").unwrap().len(), 4);
    }

    /// Imported files take numbers after every file the store holds (a number a file of
    /// the same partition holds would overwrite it), and the next flush numbers after them.
    #[test]
    fn imports_and_flushes_never_reuse_a_file_number() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.create_group("g").unwrap();
        s.add_entries(&[entry(
            0,
            line("flushed", "2025-03-11T00:01:00Z", Some("g"), "m", 1),
        )]);
        s.flush().unwrap();
        let rows = [
            "2025-03-11T00:02:00Z",
            "2025-03-12T00:02:00Z",
            "2025-03-13T00:02:00Z",
        ]
        .iter()
        .enumerate()
        .map(|(i, ts)| parse_row(&line(&format!("imported{i}"), ts, Some("g"), "m", 1)).unwrap())
        .collect();
        assert_eq!(s.import_rows("g", rows).unwrap(), 3);
        s.add_entries(&[entry(
            1,
            line("later", "2025-03-13T00:03:00Z", Some("g"), "m", 1),
        )]);
        s.flush().unwrap();
        assert_eq!(distinct_files(&s, "g").len(), 5);
        assert_eq!(s.request_ids("g").unwrap().len(), 5);
        drop(s);
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.request_ids("g").unwrap().len(), 5);
    }

    /// An import through an `ImportBuffer` (columns built from borrowed values, batch by
    /// batch, taken and written part by part) writes the files, byte for byte in their
    /// rows, that the same records written as rows do: one per partition, rows in time
    /// order (stable: equal times keep their order), across a batch's end.
    #[test]
    fn an_import_buffer_writes_the_files_rows_write() {
        let mut lines = Vec::new();
        // 8,200 records of one day, the last 300 out of order, two sharing a time; and a
        // few of the day before.
        for i in 0..8_200u32 {
            let secs = if i < 7_900 { i } else { 9_000 - i };
            let ts = format!(
                "2025-03-12T{:02}:{:02}:{:02}Z",
                secs / 3600,
                secs / 60 % 60,
                secs % 60
            );
            lines.push(line(&format!("r{i}"), &ts, Some("g"), "m", u64::from(i)));
        }
        for i in 0..5 {
            lines.push(line(
                &format!("d{i}"),
                "2025-03-11T10:00:00Z",
                Some("g"),
                "m\\u00e9",
                7,
            ));
        }
        let read = |s: &Store| -> Vec<(String, Vec<RecordBatch>)> {
            let snap = s.snapshot("g", i64::MIN, i64::MAX).unwrap();
            let mut files: Vec<_> = snap.files.iter().map(|(p, _)| p.clone()).collect();
            files.sort();
            files
                .iter()
                .map(|p| {
                    let f = fs::File::open(p).unwrap();
                    let r =
                        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
                            .unwrap()
                            .build()
                            .unwrap();
                    let name = p.file_name().unwrap().to_string_lossy().into_owned();
                    (name, r.map(Result::unwrap).collect())
                })
                .collect()
        };
        let rows_dir = tempfile::tempdir().unwrap();
        let by_rows = Store::open(rows_dir.path()).unwrap();
        by_rows.create_group("g").unwrap();
        let rows: Vec<Row> = lines.iter().map(|l| parse_row(l).unwrap()).collect();
        let files = by_rows.write_import("g", rows, 1).unwrap();
        assert_eq!(by_rows.commit_import("g", files).unwrap(), 8_205);

        let cols_dir = tempfile::tempdir().unwrap();
        let by_cols = Store::open(cols_dir.path()).unwrap();
        by_cols.create_group("g").unwrap();
        let mut buf = ImportBuffer::new();
        for l in &lines {
            buf.append(&schema::parse_fields(l).unwrap()).unwrap();
        }
        assert!(buf.bytes() > 8_205 * 300, "{}", buf.bytes());
        let taken = buf.take();
        assert!(buf.is_empty() && buf.bytes() == 0);
        let files = by_cols.write_import_buffer("g", taken, 1).unwrap();
        assert_eq!(by_cols.commit_import("g", files).unwrap(), 8_205);

        let (a, b) = (read(&by_rows), read(&by_cols));
        assert_eq!(a.len(), 2, "one file per day");
        assert_eq!(
            a.iter().map(|f| &f.0).collect::<Vec<_>>(),
            b.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            assert_eq!(x, y, "{name}");
        }
        let ids: Vec<String> = a[1]
            .1
            .iter()
            .flat_map(|b| {
                let c = b
                    .column(schema::REQUEST_ID)
                    .as_any()
                    .downcast_ref::<arrow_array::StringArray>()
                    .unwrap();
                c.iter().map(|v| v.unwrap().to_string()).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(ids.len(), 8_200);
        // r7900's time (9,000 - 7,900 = 1,100 s) is r1100's and r7999's (1,001 s) r1001's:
        // each came later, so each stays after its twin.
        let at = |id: &str| ids.iter().position(|x| x == id).unwrap();
        assert!(at("r1100") < at("r7900") && at("r7900") < at("r1101"));
        assert!(at("r1001") < at("r7999") && at("r7999") < at("r1002"));
        assert_eq!(ids.last().map(String::as_str), Some("r7899"));
    }

    /// Imports written by several threads at once take distinct file numbers, even with
    /// a flush between them; what they wrote is invisible until committed, and what a
    /// crash left uncommitted is removed at the next open.
    #[test]
    fn concurrent_import_writes_are_named_only_when_committed() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.create_group("g").unwrap();
        let rows = |tag: &str| -> Vec<Row> {
            ["2025-03-11T00:02:00Z", "2025-03-12T00:02:00Z"]
                .iter()
                .enumerate()
                .map(|(i, ts)| {
                    parse_row(&line(&format!("{tag}{i}"), ts, Some("g"), "m", 1)).unwrap()
                })
                .collect()
        };
        let (a, b) = std::thread::scope(|scope| {
            let a = scope.spawn(|| s.write_import("g", rows("a"), 1).unwrap());
            let b = scope.spawn(|| s.write_import("g", rows("b"), 2).unwrap());
            (a.join().unwrap(), b.join().unwrap())
        });
        assert_eq!((a.len(), b.len(), a.rows(), b.rows()), (2, 2, 2, 2));
        // A flush meanwhile numbers after the reserved files.
        s.add_entries(&[entry(
            0,
            line("flushed", "2025-03-11T00:01:00Z", Some("g"), "m", 1),
        )]);
        s.flush().unwrap();
        // Written, not named: no query sees them yet.
        assert_eq!(s.request_ids("g").unwrap().len(), 1);
        let mut both = a;
        both.append(b);
        assert_eq!(s.commit_import("g", both).unwrap(), 4);
        assert_eq!(distinct_files(&s, "g").len(), 5);
        assert_eq!(s.request_ids("g").unwrap().len(), 5);
        // Written and never committed (a crash): gone at the next open, and the numbers
        // are never named twice.
        let lost = s.write_import("g", rows("lost"), 1).unwrap();
        assert_eq!(lost.len(), 2);
        drop(lost);
        drop(s);
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.request_ids("g").unwrap().len(), 5);
        let parquet_files = std::fs::read_dir(d.path().join("groups").join("g"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "parquet"))
            })
            .count();
        assert_eq!(parquet_files, 5);
        assert_eq!(s.import_rows("g", rows("again")).unwrap(), 2);
        assert_eq!(s.request_ids("g").unwrap().len(), 7);
    }

    /// The tail's age is the time since its oldest add.
    #[test]
    fn the_tail_age_counts_from_its_oldest_add() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.create_group("g").unwrap();
        assert_eq!(s.tail_size(), (0, 0, 0));
        s.add_entries(&[entry(
            0,
            line("a", "2025-03-11T00:01:00Z", Some("g"), "m", 1),
        )]);
        std::thread::sleep(std::time::Duration::from_millis(30));
        let (rows, bytes, age) = s.tail_size();
        assert_eq!(rows, 1);
        assert!(bytes > 0);
        assert!((30..60_000).contains(&age), "{age}");
    }

    /// Bodies are removed from files past body retention also in a group with a (longer)
    /// retention of its own, and a pass over several files gives each its own number
    /// (files flushed out of order: a reused number would name a new file after another
    /// of the pass's own inputs).
    #[test]
    fn bodies_go_in_groups_with_their_own_retention_and_every_rewritten_file_stays() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.set_retire_grace(std::time::Duration::ZERO);
        s.create_group("g").unwrap();
        s.set_retention("g", Some(30)).unwrap();
        s.create_group("solo").unwrap();
        let now = now_ms();
        // Minute `min` of hour 00 of the day `days` ago: each day's files are then named
        // after that day's hour 00 whether a flush or a rewrite wrote them.
        let ts = |days: i64, min: i64| {
            let day = (now - days * 86_400_000).div_euclid(86_400_000) * 86_400_000;
            let t = time::OffsetDateTime::from_unix_timestamp((day + min * 60_000) / 1000).unwrap();
            logbook_record::record_timestamp(t)
        };
        let mut seq = 0u64;
        let mut put = |group: &str, rid: String, days: i64, min: i64| {
            s.add_entries(&[entry(seq, line(&rid, &ts(days, min), Some(group), "m", 1))]);
            seq += 1;
            s.flush().unwrap();
        };
        // Flushed out of order (the pass takes them in the manifest's order).
        for days in [10, 12, 11] {
            put("g", format!("r{days}"), days, 1);
        }
        put("solo", "alone".into(), 9, 1);
        s.set_body_retention(BodyRetention {
            default_days: Some(7),
            groups: BTreeMap::new(),
        })
        .unwrap();
        assert_eq!(s.apply_retention(now).unwrap(), 0);
        for g in ["g", "solo"] {
            for (path, meta) in &s.snapshot(g, i64::MIN, i64::MAX).unwrap().files {
                assert!(meta.bodies_removed, "{path:?} keeps its bodies");
                assert!(path.exists(), "{path:?} named by the manifest is gone");
            }
        }
        // Flushes after the pass take numbers after the files it wrote (the fifth, for
        // day 10, would otherwise take the number the pass gave day 10's file, and
        // overwrite it).
        for (i, days) in [12, 12, 12, 12, 10].into_iter().enumerate() {
            put("g", format!("later{i}"), days, 2 + i as i64);
        }
        assert_eq!(s.snapshot("g", i64::MIN, i64::MAX).unwrap().files.len(), 8);
        assert_eq!(s.request_ids("g").unwrap().len(), 8);
        assert_eq!(s.request_ids("solo").unwrap().len(), 1);
    }

    fn parse_millis(s: &str) -> i64 {
        schema::parse_millis(s).unwrap()
    }

    #[test]
    fn a_closed_partition_is_written_once_more_at_the_cold_level() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.create_group("g").unwrap();
        let entries: Vec<Entry> = (0..50)
            .map(|i| {
                entry(
                    i,
                    line(
                        &format!("r{i}"),
                        &format!("2025-03-11T00:00:{i:02}Z"),
                        Some("g"),
                        "m",
                        1,
                    ),
                )
            })
            .collect();
        s.add_entries(&entries);
        s.flush().unwrap();
        let hot = s.snapshot("g", i64::MIN, i64::MAX).unwrap().files;
        assert_eq!(hot.len(), 1);
        assert!(!hot[0].1.cold);
        // Still open: left alone.
        assert_eq!(s.compact(parse_millis("2025-03-11T00:30:00Z")).unwrap(), 0);
        // Closed: one file, the same rows, now cold; and only once.
        let now = parse_millis("2025-03-11T01:30:00Z");
        assert_eq!(s.compact(now).unwrap(), 1);
        let cold = s.snapshot("g", i64::MIN, i64::MAX).unwrap().files;
        assert_eq!(cold.len(), 1);
        assert!(cold[0].1.cold && cold[0].1.rows == 50 && cold[0].1.path != hot[0].1.path);
        assert_eq!(s.request_ids("g").unwrap().len(), 50);
        assert_eq!(s.compact(now).unwrap(), 0);
        // A flush after it takes a file number of its own, and a reopen finds every row.
        s.add_entries(&[entry(
            50,
            line("late", "2025-03-11T01:10:00Z", Some("g"), "m", 1),
        )]);
        s.flush().unwrap();
        let files = s.snapshot("g", i64::MIN, i64::MAX).unwrap().files;
        let paths: BTreeSet<_> = files.iter().map(|f| f.1.path.clone()).collect();
        assert_eq!(paths.len(), 2);
        drop(s);
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.request_ids("g").unwrap().len(), 51);
        assert_eq!(s.snapshot("g", i64::MIN, i64::MAX).unwrap().files.len(), 2);
    }

    #[test]
    fn retention_drops_old_files_and_hides_old_rows() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.create_group("g").unwrap();
        assert!(s.set_retention("g", Some(2)).is_err());
        assert!(s.set_retention("nope", Some(1)).is_err());
        s.set_retention("g", Some(1)).unwrap();
        let now = now_ms();
        let ts = |ms: i64| {
            let t = time::OffsetDateTime::from_unix_timestamp(ms / 1000).unwrap();
            logbook_record::record_timestamp(t)
        };
        let rows = vec![
            parse_row(&line("old", &ts(now - 3 * 86_400_000), Some("g"), "m", 1)).unwrap(),
            parse_row(&line("new", &ts(now - 3_600_000), Some("g"), "m", 1)).unwrap(),
        ];
        assert_eq!(s.import_rows("g", rows).unwrap(), 2);
        assert_eq!(
            s.snapshot("g", i64::MIN, i64::MAX).unwrap().files.len(),
            1,
            "the old file is past retention"
        );
        let files_on_disk = || {
            let mut v: Vec<String> = fs::read_dir(d.path().join("groups/g"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let before = files_on_disk();
        assert_eq!(before.len(), 2);
        // An old row and a new one in the tail too.
        s.add_entries(&[
            entry(
                0,
                line("tail-old", &ts(now - 3 * 86_400_000), Some("g"), "m", 1),
            ),
            entry(1, line("tail-new", &ts(now - 3_600_000), Some("g"), "m", 1)),
        ]);
        assert_eq!(s.apply_retention(now).unwrap(), 1);
        assert_eq!(s.groups()[0].records, 2);
        // The new rows stay (file and tail), the old ones go.
        let ids = s.request_ids("g").unwrap();
        assert_eq!(
            ids,
            HashSet::from(["new".to_string(), "tail-new".to_string()])
        );
        // The dropped file stays on disk for the grace period (a query that listed it
        // may still read it); the kept one is never retired.
        assert_eq!(files_on_disk(), before);
        s.set_retire_grace(std::time::Duration::ZERO);
        s.retire(Vec::new());
        let after = files_on_disk();
        assert_eq!(after.len(), 1);
        let kept = &s.snapshot("g", i64::MIN, i64::MAX).unwrap().files[0].0;
        assert!(kept.ends_with(&after[0]), "{kept:?} {after:?}");
        // A longer retention keeps a tail row younger than it.
        s.set_retention("g", Some(3)).unwrap();
        s.add_entries(&[entry(
            2,
            line("tail-2d", &ts(now - 2 * 86_400_000), Some("g"), "m", 1),
        )]);
        assert_eq!(s.apply_retention(now).unwrap(), 0);
        assert!(s.request_ids("g").unwrap().contains("tail-2d"));
        s.set_retention("g", None).unwrap();
        assert_eq!(s.groups()[0].retention_in_days, None);
        s.delete_group("g").unwrap();
        assert!(s.groups().is_empty());
        assert!(matches!(
            s.delete_group("g"),
            Err(StoreError::NoSuchGroup(_))
        ));
    }

    fn keyring(active: Option<u8>, old: &[u8]) -> Arc<Keyring> {
        let k = |b: u8| logbook_seal::MasterKey::from_bytes(&[b; 32]).unwrap();
        Arc::new(Keyring::new(
            active.map(k),
            old.iter().map(|&b| k(b)).collect(),
        ))
    }

    #[test]
    fn encrypted_files_hold_no_plaintext_and_need_their_key() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open_on(RealDisk::shared(), d.path(), keyring(Some(1), &[])).unwrap();
        s.create_group("g").unwrap();
        for (i, ts) in ["2025-03-11T00:01:00Z", "2025-03-11T00:30:00Z"]
            .iter()
            .enumerate()
        {
            s.add_entries(&[entry(
                i as u64,
                line(&format!("secret-request-{i}"), ts, Some("g"), "model-x", 1),
            )]);
            s.flush().unwrap();
        }
        let snap = s.snapshot("g", i64::MIN, i64::MAX).unwrap();
        let id = keyring(Some(1), &[]).active_id().unwrap().to_string();
        for (path, meta) in &snap.files {
            assert_eq!(meta.key_id.as_deref(), Some(id.as_str()));
            let b = std::fs::read(path).unwrap();
            assert_eq!(&b[b.len() - 4..], b"PARE", "encrypted footer");
            for needle in [
                &b"secret-request"[..],
                b"model-x",
                b"request_id",
                b"rollup",
                b"logbook_text_index",
            ] {
                assert!(
                    !b.windows(needle.len()).any(|w| w == needle),
                    "plaintext in {path:?}"
                );
            }
            // The rollup (which names models and callers) is sealed in the footer, and
            // reads back through the key.
            let r = s.rollup(path).unwrap().unwrap();
            assert_eq!(r.dims["model"]["model-x"].calls, 1);
            // So is the text index (whose filters say which trigrams a record holds).
            let t = s.text_index(path).unwrap().unwrap();
            assert_eq!((t.rows, t.blocks.len()), (1, 1));
            let need = textindex::Need::contains(b"secret-request").unwrap();
            assert_eq!(t.select(&need), vec![(0, 1)]);
            let need = textindex::Need::contains(b"no-such-text").unwrap();
            assert!(t.select(&need).is_empty());
        }
        // Without the key, neither reads.
        let plain = Store::open_on(
            RealDisk::shared(),
            d.path().join("other"),
            keyring(None, &[]),
        )
        .unwrap();
        assert!(plain.text_index(&snap.files[0].0).is_err());
        // Compaction reads and writes encrypted files; the merged file's rollup sums both.
        assert_eq!(s.compact(parse_millis("2025-03-12T00:00:00Z")).unwrap(), 2);
        assert_eq!(s.request_ids("g").unwrap().len(), 2);
        let snap = s.snapshot("g", i64::MIN, i64::MAX).unwrap();
        assert_eq!(snap.files.len(), 1);
        let r = s.rollup(&snap.files[0].0).unwrap().unwrap();
        assert_eq!(r.total().calls, 2);
        assert_eq!(r.total().input, 2);
        assert_eq!(
            r.buckets.len(),
            2,
            "00:01 and 00:30 are in two 15-minute buckets"
        );
        assert!(snap.files[0].1.rollup);
        drop(snap);
        drop(s);
        // Rotated: new key active, the old one kept: reads, and new files use the new key.
        let s = Store::open_on(RealDisk::shared(), d.path(), keyring(Some(2), &[1])).unwrap();
        s.add_entries(&[entry(
            5,
            line("r5", "2025-03-11T02:00:00Z", Some("g"), "m", 1),
        )]);
        s.flush().unwrap();
        let ids: BTreeSet<Option<String>> = s
            .snapshot("g", i64::MIN, i64::MAX)
            .unwrap()
            .files
            .iter()
            .map(|f| f.1.key_id.clone())
            .collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert_eq!(s.request_ids("g").unwrap().len(), 3);
        drop(s);
        // Key 1 missing: refused at open, naming it (and no file removed).
        for keys in [keyring(Some(2), &[]), keyring(None, &[])] {
            let e = Store::open_on(RealDisk::shared(), d.path(), keys.clone())
                .err()
                .unwrap();
            assert!(e.to_string().contains(&id), "{e}");
            let e = Store::open_read_only(d.path(), keys).err().unwrap();
            assert!(e.to_string().contains(&id), "{e}");
        }
        let s = Store::open_read_only(d.path(), keyring(None, &[1, 2])).unwrap();
        assert_eq!(s.request_ids("g").unwrap().len(), 3);
    }

    /// A store written before the manifest had a format version (kept in
    /// `tests/fixtures/data-v1`).
    #[test]
    fn a_format_1_store_still_opens() {
        // The package folder at run time (cargo and nextest set it), not where the test
        // binary was compiled: a target dir shared between clones keeps binaries built
        // elsewhere.
        let manifest = std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
        let src = Path::new(&manifest).join("../../tests/fixtures/data-v1/store");
        let d = tempfile::tempdir().unwrap();
        let copy = |from: &Path, to: &Path| {
            std::fs::create_dir_all(to).unwrap();
            for f in std::fs::read_dir(from).unwrap() {
                let f = f.unwrap();
                if f.path().is_file() {
                    std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
                }
            }
        };
        copy(&src, d.path());
        let g = "/aws/bedrock/modelinvocations";
        let gdir = groups::dir_name(g);
        copy(
            &src.join("groups").join(&gdir),
            &d.path().join("groups").join(&gdir),
        );
        let s = Store::open_on(RealDisk::shared(), d.path(), keyring(Some(4), &[])).unwrap();
        assert_eq!(s.next_seq(), 10);
        assert_eq!(s.request_ids(g).unwrap().len(), 7);
        // Written on: the manifest gets today's format, the old file stays as it was.
        s.add_entries(&[entry(
            10,
            line("new", "2026-12-02T20:00:00Z", Some(g), "m", 1),
        )]);
        s.flush().unwrap();
        assert_eq!(s.request_ids(g).unwrap().len(), 8);
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.path().join("manifest.json")).unwrap())
                .unwrap();
        assert_eq!(m["formatVersion"], FORMAT_VERSION);
        // A manifest from a newer build is refused, not misread.
        let mut newer = m.clone();
        newer["formatVersion"] = serde_json::json!(FORMAT_VERSION + 1);
        drop(s);
        std::fs::write(d.path().join("manifest.json"), newer.to_string()).unwrap();
        let e = Store::open(d.path()).err().unwrap();
        assert!(matches!(e, StoreError::TooNew(_)), "{e}");
    }

    #[test]
    fn bodies_go_after_their_retention_and_records_stay() {
        assert_eq!(schema::COLUMNS[schema::INPUT_BODY].name, "input_body_json");
        assert_eq!(
            schema::COLUMNS[schema::OUTPUT_BODY].name,
            "output_body_json"
        );
        let d = tempfile::tempdir().unwrap();
        let s = Store::open_on(RealDisk::shared(), d.path(), keyring(Some(1), &[])).unwrap();
        s.create_group("g").unwrap();
        s.create_group("keep").unwrap();
        let now = parse_millis("2025-03-20T12:00:00Z");
        for (i, (g, ts)) in [
            ("g", "2025-03-11T00:01:00Z"),
            ("g", "2025-03-19T23:00:00Z"),
            ("keep", "2025-03-11T00:01:00Z"),
        ]
        .iter()
        .enumerate()
        {
            s.add_entries(&[entry(i as u64, line(&format!("r{i}"), ts, Some(g), "m", 1))]);
        }
        s.flush().unwrap();
        assert!(matches!(
            s.set_body_retention(BodyRetention {
                default_days: Some(2),
                groups: BTreeMap::new()
            }),
            Err(StoreError::Invalid(_))
        ));
        s.set_body_retention(BodyRetention {
            default_days: Some(7),
            groups: BTreeMap::from([("keep".to_string(), 3653)]),
        })
        .unwrap();
        // Bodies older than 7 days (from now) are hidden.
        let cut = s
            .snapshot("g", i64::MIN, i64::MAX)
            .unwrap()
            .body_cutoff
            .unwrap();
        let want = now_ms() - 7 * 86_400_000;
        assert!(
            (cut - want).abs() < 60_000,
            "cutoff {cut}, want about {want}"
        );
        // Nothing is dropped (no record retention), one file is written again.
        assert_eq!(s.apply_retention(now).unwrap(), 0);
        let files = s.snapshot("g", i64::MIN, i64::MAX).unwrap().files;
        assert_eq!(files.len(), 2);
        let (old, new): (Vec<_>, Vec<_>) = files.iter().partition(|f| f.1.bodies_removed);
        assert_eq!((old.len(), new.len()), (1, 1));
        assert_eq!(old[0].1.rows, 1);
        assert!(old[0].1.key_id.is_some(), "still encrypted");
        assert!(old[0].1.cold, "written once, at the cold level");
        // The rewrite keeps the file's sums (only bodies went).
        let r = s.rollup(&old[0].0).unwrap().unwrap();
        assert!(old[0].1.rollup);
        assert_eq!((r.total().calls, r.total().input), (1, 1));
        assert_eq!(r.dims["model"]["m"].calls, 1);
        let rows = |path: &Path| -> Vec<RecordBatch> {
            s.parquet_reader(path)
                .unwrap()
                .build()
                .unwrap()
                .map(|b| b.unwrap())
                .collect()
        };
        let b = &rows(&old[0].0)[0];
        assert!(b.column(schema::INPUT_BODY).is_null(0));
        let msg = b
            .column(schema::MESSAGE)
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap()
            .value(0)
            .to_string();
        assert!(
            !msg.contains("inputBodyJson") && msg.contains("\"requestId\":\"r0\""),
            "{msg}"
        );
        let b = &rows(&new[0].0)[0];
        assert!(
            !b.column(schema::INPUT_BODY).is_null(0),
            "a recent record keeps its bodies"
        );
        // The group that keeps bodies ten years kept them; a second pass changes nothing.
        assert!(s
            .snapshot("keep", i64::MIN, i64::MAX)
            .unwrap()
            .files
            .iter()
            .all(|f| !f.1.bodies_removed));
        assert_eq!(s.apply_retention(now).unwrap(), 0);
        assert_eq!(
            s.snapshot("g", i64::MIN, i64::MAX)
                .unwrap()
                .files
                .iter()
                .filter(|f| f.1.bodies_removed)
                .count(),
            1
        );
        assert_eq!(s.request_ids("g").unwrap().len(), 2);
        drop(s);
        // Reopened: the rewritten file is the one in the manifest.
        let s = Store::open_on(RealDisk::shared(), d.path(), keyring(Some(1), &[])).unwrap();
        assert_eq!(
            s.snapshot("g", i64::MIN, i64::MAX)
                .unwrap()
                .files
                .iter()
                .filter(|f| f.1.bodies_removed)
                .count(),
            1
        );
        assert_eq!(s.request_ids("g").unwrap().len(), 2);
    }
}
