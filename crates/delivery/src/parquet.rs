//! The open layout: the same invocation records as the archive, as Parquet files in a
//! Hive-partitioned folder tree that Athena, Trino, Spark and DuckDB query with no Logbook
//! process in the path.
//!
//! ```text
//! <keyPrefix>/logbook-parquet/v1/account_id=<acct>/region=<region>/dt=<YYYY-MM-DD>/<YYYYMMDD>T<HHMMSSmmm>Z_<16 hex>.parquet
//! ```
//!
//! - **Partitions** are the record's account, region and UTC day (of its `timestamp`, so a
//!   `dt` filter never misses a record a batch carried over midnight). Partition columns
//!   are not stored in the files, as Hive, Athena and Spark expect.
//! - **Columns** ([`COLUMNS`]) carry the same names as Logbook's own SQL table
//!   `invocations`, so one SQL text runs on both. The schema is stable: a column is only
//!   ever added at the end, never renamed, retyped or removed; a change that cannot follow
//!   that rule gets a new `v2/` tree.
//! - **Exactly once.** A file's key is derived from the node id and the journal sequence of
//!   its first record (as the archive's objects are), so delivering the same journal range
//!   again after a crash overwrites the same files: a glob over the tree never counts a
//!   record twice.
//! - **Each body once**, as JSON text in `input_body_json` / `output_body_json`, whatever
//!   its size (Parquet has no 256 KB limit; nothing is offloaded to `data/`), and
//!   `record` is the whole record without those two bodies. The bucket's redaction
//!   profile applies, as it does to the archive.
//!
//! The DDL for each engine is published in `docs/open-layout/`.

use crate::{DeliveryError, Format};
use arrow_array::builder::{
    BooleanBuilder, Decimal128Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use logbook_journal::{Entry, Kind as EntryKind};
use logbook_record::raw::{boolean, int, json, text, RawRecord};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use time::OffsetDateTime;

/// The folder under a key prefix where the open layout's tree starts (its version).
pub const ROOT: &str = "logbook-parquet/v1";

/// The kind of a column of the open layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `TIMESTAMP` in milliseconds, UTC.
    Timestamp,
    /// Text.
    Str,
    /// JSON text.
    Json,
    /// 64-bit integer.
    Int,
    /// Boolean.
    Bool,
    /// `DECIMAL(38, 12)`: money, exactly as the record's decimal string says.
    Decimal,
}

/// One column: its name in the files and the record path it comes from.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Name in the files (and in Logbook's SQL table `invocations`).
    pub name: &'static str,
    /// The record path it holds (`input.inputTokenCount`); `-` for derived columns.
    pub path: &'static str,
    /// Type.
    pub kind: Kind,
}

const fn c(name: &'static str, path: &'static str, kind: Kind) -> Column {
    Column { name, path, kind }
}

/// The columns of every file, in order. Append only (see the module documentation).
pub const COLUMNS: &[Column] = &[
    c("timestamp", "timestamp", Kind::Timestamp),
    c("request_id", "requestId", Kind::Str),
    c("operation", "operation", Kind::Str),
    c("model_id", "modelId", Kind::Str),
    c("schema_type", "schemaType", Kind::Str),
    c("schema_version", "schemaVersion", Kind::Str),
    c("identity_arn", "identity.arn", Kind::Str),
    c("inference_region", "inferenceRegion", Kind::Str),
    c("error_code", "errorCode", Kind::Str),
    c("input_content_type", "input.inputContentType", Kind::Str),
    c("input_token_count", "input.inputTokenCount", Kind::Int),
    c(
        "cache_read_input_token_count",
        "input.cacheReadInputTokenCount",
        Kind::Int,
    ),
    c(
        "cache_write_input_token_count",
        "input.cacheWriteInputTokenCount",
        Kind::Int,
    ),
    c("input_body_json", "input.inputBodyJson", Kind::Json),
    c("input_body_s3_path", "input.inputBodyS3Path", Kind::Str),
    c("output_content_type", "output.outputContentType", Kind::Str),
    c("output_token_count", "output.outputTokenCount", Kind::Int),
    c("output_body_json", "output.outputBodyJson", Kind::Json),
    c("output_body_s3_path", "output.outputBodyS3Path", Kind::Str),
    c("request_metadata", "requestMetadata", Kind::Json),
    c("latency_ms", "logbook.latencyMs", Kind::Int),
    c(
        "time_to_first_token_ms",
        "logbook.timeToFirstTokenMs",
        Kind::Int,
    ),
    c("http_status", "logbook.httpStatus", Kind::Int),
    c("stream", "logbook.stream", Kind::Bool),
    c("provider", "logbook.provider", Kind::Str),
    c("api", "logbook.api", Kind::Str),
    c("error_message", "logbook.errorMessage", Kind::Str),
    c("cost", "logbook.cost", Kind::Decimal),
    c("price_catalog", "logbook.priceCatalog", Kind::Str),
    c("unpriced", "logbook.unpriced", Kind::Str),
    c("principal_tags", "logbook.principalTags", Kind::Json),
    c("log_group", "logbook.destination.logGroup", Kind::Str),
    c("record", "-", Kind::Json),
];

/// The partition columns, outermost first (in the path, not in the files; all text).
pub const PARTITIONS: &[&str] = &["account_id", "region", "dt"];

/// The Arrow schema of the files.
pub fn schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema::new(
            COLUMNS
                .iter()
                .map(|c| {
                    let t = match c.kind {
                        Kind::Timestamp => {
                            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
                        }
                        Kind::Str | Kind::Json => DataType::Utf8,
                        Kind::Int => DataType::Int64,
                        Kind::Bool => DataType::Boolean,
                        Kind::Decimal => DataType::Decimal128(38, 12),
                    };
                    Field::new(c.name, t, c.kind != Kind::Timestamp)
                })
                .collect::<Vec<_>>(),
        ))
    })
    .clone()
}

/// A value of one column of one row.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Null,
    Text(String),
    Int(i64),
    Bool(bool),
}

/// One record, split into the columns.
#[derive(Debug, Clone)]
struct Row {
    timestamp_ms: i64,
    values: Vec<Value>,
}

fn opt_text(v: Option<String>) -> Value {
    v.map_or(Value::Null, Value::Text)
}

fn opt_int(v: Option<i64>) -> Value {
    v.map_or(Value::Null, Value::Int)
}

/// Split a record. `fallback_ms` (the journal time) stands in for a `timestamp` that is
/// missing or not RFC 3339, so no record is ever left out of the layout.
fn row(r: &RawRecord, line: &[u8], fallback_ms: i64) -> Row {
    let (input, output, ext) = (r.input.as_ref(), r.output.as_ref(), r.logbook.as_ref());
    let timestamp_ms = text(r.timestamp)
        .as_deref()
        .and_then(logbook_record::parse_timestamp)
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
        .unwrap_or(fallback_ms);
    let record = std::str::from_utf8(line)
        .ok()
        .and_then(logbook_record::raw::strip_bodies);
    let values = vec![
        Value::Null, // timestamp: its own field
        opt_text(text(r.request_id)),
        opt_text(text(r.operation)),
        opt_text(text(r.model_id)),
        opt_text(text(r.schema_type)),
        opt_text(text(r.schema_version)),
        opt_text(text(r.identity.as_ref().and_then(|i| i.arn))),
        opt_text(text(r.inference_region)),
        opt_text(text(r.error_code)),
        opt_text(text(input.and_then(|i| i.input_content_type))),
        opt_int(int(input.and_then(|i| i.input_token_count))),
        opt_int(int(input.and_then(|i| i.cache_read_input_token_count))),
        opt_int(int(input.and_then(|i| i.cache_write_input_token_count))),
        opt_text(json(input.and_then(|i| i.input_body_json))),
        opt_text(text(input.and_then(|i| i.input_body_s3_path))),
        opt_text(text(output.and_then(|o| o.output_content_type))),
        opt_int(int(output.and_then(|o| o.output_token_count))),
        opt_text(json(output.and_then(|o| o.output_body_json))),
        opt_text(text(output.and_then(|o| o.output_body_s3_path))),
        opt_text(json(r.request_metadata)),
        opt_int(int(ext.and_then(|e| e.latency_ms))),
        opt_int(int(ext.and_then(|e| e.time_to_first_token_ms))),
        opt_int(int(ext.and_then(|e| e.http_status))),
        boolean(ext.and_then(|e| e.stream)).map_or(Value::Null, Value::Bool),
        opt_text(text(ext.and_then(|e| e.provider))),
        opt_text(text(ext.and_then(|e| e.api))),
        opt_text(text(ext.and_then(|e| e.error_message))),
        opt_text(text(ext.and_then(|e| e.cost))),
        opt_text(text(ext.and_then(|e| e.price_catalog))),
        opt_text(text(ext.and_then(|e| e.unpriced))),
        opt_text(json(ext.and_then(|e| e.principal_tags))),
        opt_text(text(r.destination().and_then(|d| d.log_group))),
        opt_text(record),
    ];
    debug_assert_eq!(values.len(), COLUMNS.len());
    Row {
        timestamp_ms,
        values,
    }
}

fn to_batch(rows: &[Row]) -> Result<RecordBatch, DeliveryError> {
    let err = |e: arrow_schema::ArrowError| DeliveryError::Encode(format!("parquet: {e}"));
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(COLUMNS.len());
    for (i, col) in COLUMNS.iter().enumerate() {
        let get = |r: &Row| r.values.get(i).cloned().unwrap_or(Value::Null);
        let a: ArrayRef = match col.kind {
            Kind::Timestamp => {
                let mut b =
                    TimestampMillisecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
                for r in rows {
                    b.append_value(r.timestamp_ms);
                }
                Arc::new(b.finish())
            }
            Kind::Str | Kind::Json => {
                let mut b = StringBuilder::new();
                for r in rows {
                    match &r.values[i] {
                        Value::Text(s) => b.append_value(s),
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            Kind::Int => {
                let mut b = Int64Builder::with_capacity(rows.len());
                for r in rows {
                    b.append_option(match get(r) {
                        Value::Int(n) => Some(n),
                        _ => None,
                    });
                }
                Arc::new(b.finish())
            }
            Kind::Bool => {
                let mut b = BooleanBuilder::with_capacity(rows.len());
                for r in rows {
                    b.append_option(match get(r) {
                        Value::Bool(v) => Some(v),
                        _ => None,
                    });
                }
                Arc::new(b.finish())
            }
            Kind::Decimal => {
                let mut b = Decimal128Builder::with_capacity(rows.len())
                    .with_precision_and_scale(38, 12)
                    .map_err(err)?;
                for r in rows {
                    b.append_option(match &r.values[i] {
                        Value::Text(s) => logbook_record::money::parse(s),
                        _ => None,
                    });
                }
                Arc::new(b.finish())
            }
        };
        arrays.push(a);
    }
    RecordBatch::try_new(schema(), arrays).map_err(err)
}

/// Records (bytes of JSON) per row group: rows are encoded and compressed into the file
/// as each row group fills, so a batch held in memory is mostly compressed bytes.
pub const ROW_GROUP_BYTES: usize = 8 * 1024 * 1024;

fn parquet_err(e: parquet::errors::ParquetError) -> DeliveryError {
    DeliveryError::Encode(format!("parquet: {e}"))
}

/// A file being written: whole row groups already encoded, plus the rows of the next.
struct FileWriter {
    /// In a mutex only to be `Sync`, as a `Format` must be (the writer is not); never
    /// contended: one destination task owns its format.
    writer: std::sync::Mutex<ArrowWriter<Vec<u8>>>,
    rows: Vec<Row>,
    row_bytes: usize,
}

impl FileWriter {
    fn new() -> Result<Self, DeliveryError> {
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).map_err(parquet_err)?,
            ))
            .set_created_by(format!("logbook {}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(FileWriter {
            writer: std::sync::Mutex::new(
                ArrowWriter::try_new(Vec::new(), schema(), Some(props)).map_err(parquet_err)?,
            ),
            rows: Vec::new(),
            row_bytes: 0,
        })
    }

    fn push(&mut self, row: Row, bytes: usize) -> Result<(), DeliveryError> {
        self.rows.push(row);
        self.row_bytes += bytes;
        if self.row_bytes >= ROW_GROUP_BYTES {
            self.end_row_group()?;
        }
        Ok(())
    }

    fn end_row_group(&mut self) -> Result<(), DeliveryError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let batch = to_batch(&self.rows)?;
        let w = self.writer.get_mut().unwrap_or_else(|p| p.into_inner());
        w.write(&batch).map_err(parquet_err)?;
        w.flush().map_err(parquet_err)?;
        self.rows.clear();
        self.row_bytes = 0;
        Ok(())
    }

    /// The whole file, footer included.
    fn finish(mut self) -> Result<Vec<u8>, DeliveryError> {
        self.end_row_group()?;
        self.writer
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .into_inner()
            .map_err(parquet_err)
    }
}

/// A partition value as Hive writes it in a path: `%XX` for anything but ASCII letters,
/// digits, `-`, `_` and `.` (so a value can never add a folder or an `=`).
pub fn escape_partition_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() || out == "." || out == ".." {
        // Hive's name for a null or empty partition value.
        return "__HIVE_DEFAULT_PARTITION__".into();
    }
    out
}

/// The key of one file.
pub fn object_key(
    prefix: &str,
    account: &str,
    region: &str,
    day: &str,
    t: OffsetDateTime,
    node_id: &str,
    first_sequence: u64,
) -> String {
    let p = logbook_record::layout::normalize_prefix(prefix);
    let u = t.to_offset(time::UtcOffset::UTC);
    let tree = format!(
        "{ROOT}/account_id={}/region={}/dt={}/{:04}{:02}{:02}T{:02}{:02}{:02}{:03}Z_{}.parquet",
        escape_partition_value(account),
        escape_partition_value(region),
        day,
        u.year(),
        u8::from(u.month()),
        u.day(),
        u.hour(),
        u.minute(),
        u.second(),
        u.millisecond(),
        logbook_record::layout::object_discriminator(node_id, first_sequence)
    );
    if p.is_empty() {
        tree
    } else {
        format!("{p}/{tree}")
    }
}

fn day_of(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

struct Group {
    first_seq: u64,
    first_time_ms: u64,
    file: FileWriter,
}

/// The open layout of one bucket.
pub struct ParquetFormat {
    bucket: String,
    is_default: bool,
    default_prefix: String,
    node_id: String,
    /// By (prefix, account, region, day).
    groups: BTreeMap<(String, String, String, String), Group>,
    redactor: Option<Arc<logbook_redact::Redactor>>,
}

impl ParquetFormat {
    /// The open layout of `bucket`; when `is_default`, it also takes records that name no
    /// destination, under `default_prefix` (as the archive does).
    pub fn new(bucket: &str, is_default: bool, default_prefix: &str, node_id: &str) -> Self {
        ParquetFormat {
            bucket: bucket.into(),
            is_default,
            default_prefix: default_prefix.into(),
            node_id: node_id.into(),
            groups: BTreeMap::new(),
            redactor: None,
        }
    }

    /// Mask bodies as the bucket's redaction profile says, before they are written.
    pub fn with_redactor(mut self, r: Arc<logbook_redact::Redactor>) -> Self {
        self.redactor = Some(r);
        self
    }
}

impl Format for ParquetFormat {
    type Item = (String, Vec<u8>);

    fn add(&mut self, e: Entry) -> Result<usize, DeliveryError> {
        if e.kind != EntryKind::Record {
            return Ok(0);
        }
        let Ok(head) = RawRecord::parse(&e.payload) else {
            return Ok(0);
        };
        let Some(prefix) =
            crate::archive::prefix_for(&head, &self.bucket, self.is_default, &self.default_prefix)
        else {
            return Ok(0);
        };
        let payload = match &self.redactor {
            Some(r) => r.redact_record(&e.payload).into_owned(),
            None => e.payload,
        };
        let Ok(r) = RawRecord::parse(&payload) else {
            return Ok(0);
        };
        let account = text(r.account_id).unwrap_or_else(|| "000000000000".into());
        let region = text(r.region).unwrap_or_else(|| "us-east-1".into());
        let row = row(&r, &payload, e.time_ms as i64);
        let day = day_of(row.timestamp_ms);
        let group = match self.groups.entry((prefix, account, region, day)) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => v.insert(Group {
                first_seq: e.seq,
                first_time_ms: e.time_ms,
                file: FileWriter::new()?,
            }),
        };
        group.file.push(row, payload.len())?;
        Ok(payload.len() + 1)
    }

    fn take(&mut self) -> Result<Vec<(String, Vec<u8>)>, DeliveryError> {
        let mut out = Vec::with_capacity(self.groups.len());
        for ((prefix, account, region, day), g) in std::mem::take(&mut self.groups) {
            let t =
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(g.first_time_ms) * 1_000_000)
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH);
            let key = object_key(
                &prefix,
                &account,
                &region,
                &day,
                t,
                &self.node_id,
                g.first_seq,
            );
            out.push((key, g.file.finish()?));
        }
        Ok(out)
    }

    fn reset(&mut self) {
        self.groups.clear();
    }
}

#[cfg(test)]
mod tests;
