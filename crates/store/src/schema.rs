//! The columns of a log group: typed columns for the record's fixed fields, the bodies and
//! `requestMetadata` as JSON text, and the whole record as `@message`.
//!
//! Each column has a SQL name (snake_case, so SQL needs no quoting) and the dotted path
//! CloudWatch Logs Insights would discover for it (`input.inputTokenCount`).

use arrow_array::builder::{
    BooleanBuilder, Decimal128Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use std::sync::{Arc, OnceLock};

/// The kind of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Epoch milliseconds, UTC.
    Timestamp,
    /// Text.
    Str,
    /// Integer.
    Int,
    /// Boolean.
    Bool,
    /// JSON text (an object or array kept verbatim); dotted paths below it are extracted
    /// at query time.
    Json,
    /// An exact decimal, `DECIMAL(38, 12)` (money: the record's decimal string).
    Decimal,
}

/// Scale of [`Kind::Decimal`] columns: a cost has at most 12 decimals.
pub const DECIMAL_SCALE: i8 = 12;
/// Precision of [`Kind::Decimal`] columns.
pub const DECIMAL_PRECISION: u8 = 38;

/// One column: SQL name, dotted record path, kind.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Column name in SQL and in Parquet.
    pub name: &'static str,
    /// The record path (`identity.arn`), as Logs Insights names it.
    pub path: &'static str,
    /// Type.
    pub kind: Kind,
}

const fn c(name: &'static str, path: &'static str, kind: Kind) -> Column {
    Column { name, path, kind }
}

/// Every column, in table order.
pub const COLUMNS: &[Column] = &[
    c("timestamp", "timestamp", Kind::Timestamp),
    c("request_id", "requestId", Kind::Str),
    c("account_id", "accountId", Kind::Str),
    c("region", "region", Kind::Str),
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
    c("message", "@message", Kind::Str),
    // Added with cost (files written before have none; they read as null).
    c("cost", "logbook.cost", Kind::Decimal),
    c("price_catalog", "logbook.priceCatalog", Kind::Str),
    c("unpriced", "logbook.unpriced", Kind::Str),
    c("principal_tags", "logbook.principalTags", Kind::Json),
];

/// Index of the `timestamp` column.
pub const TIMESTAMP: usize = 0;
/// Index of the `request_id` column.
pub const REQUEST_ID: usize = 1;
/// Index of the `message` column.
pub const MESSAGE: usize = 29;
/// Index of the `cost` column.
pub const COST: usize = 30;

/// The Arrow schema of a log group.
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
                        Kind::Decimal => DataType::Decimal128(DECIMAL_PRECISION, DECIMAL_SCALE),
                    };
                    Field::new(c.name, t, c.kind != Kind::Timestamp)
                })
                .collect::<Vec<_>>(),
        ))
    })
    .clone()
}

/// A column by SQL name or record path.
pub fn column(name_or_path: &str) -> Option<(usize, &'static Column)> {
    COLUMNS
        .iter()
        .enumerate()
        .find(|(_, c)| c.name == name_or_path || c.path == name_or_path)
}

/// Why a line is not a record.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    /// Not JSON, or not an object.
    #[error("not a JSON object: {0}")]
    Json(#[from] serde_json::Error),
    /// A required member is missing or unusable.
    #[error("{0}")]
    Invalid(&'static str),
}

use logbook_record::raw::{boolean, int, json_ref, text_ref, RawRecord};
use std::borrow::Cow;

/// A cost's decimal string as the `DECIMAL(38, 12)` column's integer
/// ([`logbook_record::money::parse`]).
pub fn scaled_decimal(s: &str) -> Option<i128> {
    logbook_record::money::parse(s)
}

/// Parse an RFC 3339 timestamp to epoch milliseconds.
pub fn parse_millis(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// One record, split into column values.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `timestamp`, epoch ms.
    pub timestamp: i64,
    /// Text/JSON values by column index (`None` for absent).
    pub strs: Vec<Option<String>>,
    /// Integer values by column index.
    pub ints: Vec<Option<i64>>,
    /// Boolean values by column index.
    pub bools: Vec<Option<bool>>,
    /// The log group the logging configuration sent it to (`logbook.destination.logGroup`).
    pub log_group: Option<String>,
}

impl Row {
    /// The record's request id.
    pub fn request_id(&self) -> Option<&str> {
        self.strs.get(REQUEST_ID).and_then(|s| s.as_deref())
    }

    /// The values, borrowed.
    pub fn fields(&self) -> Fields<'_> {
        let str_at = |i: usize| {
            self.strs
                .get(i)
                .and_then(|s| s.as_deref())
                .map(Cow::Borrowed)
        };
        Fields {
            timestamp: self.timestamp,
            strs: std::array::from_fn(str_at),
            ints: std::array::from_fn(|i| self.ints.get(i).copied().flatten()),
            bools: std::array::from_fn(|i| self.bools.get(i).copied().flatten()),
            log_group: self.log_group.as_deref().map(Cow::Borrowed),
        }
    }

    /// The whole record, as journaled (the stored `message` with its bodies put back).
    pub fn message(&self) -> std::borrow::Cow<'_, str> {
        let get = |i: usize| self.strs.get(i).and_then(|s| s.as_deref());
        rebuild_message(
            get(MESSAGE).unwrap_or(""),
            get(INPUT_BODY),
            get(OUTPUT_BODY),
        )
    }
}

/// Where the input body was cut out of a stored `message`: a literal control character,
/// which JSON text can never hold (inside strings it must be escaped, outside them only
/// whitespace may appear), so it cannot be confused with the record's own bytes.
pub const INPUT_BODY_MARK: char = '\u{1}';
/// Where the output body was cut out of a stored `message`.
pub const OUTPUT_BODY_MARK: char = '\u{2}';

/// `line` with the text of each present, non-null body replaced by its mark. A body whose
/// text cannot be located in `line` (never the case for a value parsed from it) is kept.
fn skeleton(line: &str, bodies: [(Option<&serde_json::value::RawValue>, char); 2]) -> String {
    let base = line.as_ptr() as usize;
    let mut cuts: Vec<(usize, usize, char)> = bodies
        .iter()
        .filter_map(|(raw, mark)| {
            let t = (*raw)?.get();
            if t == "null" {
                return None; // stored as null: nothing to put back
            }
            let start = (t.as_ptr() as usize).checked_sub(base)?;
            let end = start.checked_add(t.len())?;
            (line.get(start..end) == Some(t)).then_some((start, end, *mark))
        })
        .collect();
    cuts.sort_unstable();
    let mut out = String::with_capacity(line.len());
    let mut at = 0;
    for (start, end, mark) in cuts {
        if start < at {
            continue; // overlapping spans cannot come from one parse; keep the text
        }
        out.push_str(&line[at..start]);
        out.push(mark);
        at = end;
    }
    out.push_str(&line[at..]);
    out
}

/// The record as it was journaled, from a stored `message` and the body columns: byte
/// for byte. A `message` without marks (files written before bodies were kept once, or
/// rewritten without bodies) is returned as it is; a mark whose body is missing becomes
/// `null`, so the result is always JSON.
pub fn rebuild_message<'a>(
    message: &'a str,
    input_body: Option<&str>,
    output_body: Option<&str>,
) -> std::borrow::Cow<'a, str> {
    let b = message.as_bytes();
    if memchr::memchr2(INPUT_BODY_BYTE, OUTPUT_BODY_BYTE, b).is_none() {
        return std::borrow::Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(
        message.len() + input_body.map_or(4, str::len) + output_body.map_or(4, str::len),
    );
    let mut at = 0;
    for (i, body) in body_marks(b, input_body, output_body) {
        // A mark is one byte that is a whole character: `i` and `i + 1` are boundaries.
        out.push_str(message.get(at..i).unwrap_or_default());
        out.push_str(body);
        at = i + 1;
    }
    out.push_str(message.get(at..).unwrap_or_default());
    std::borrow::Cow::Owned(out)
}

/// [`INPUT_BODY_MARK`] as the one byte UTF-8 makes of it (no other character holds it).
pub(crate) const INPUT_BODY_BYTE: u8 = INPUT_BODY_MARK as u8;
/// [`OUTPUT_BODY_MARK`] as its byte.
pub(crate) const OUTPUT_BODY_BYTE: u8 = OUTPUT_BODY_MARK as u8;

/// The marks in a stored `message` (a SIMD search, where a walk over its characters was
/// a few microseconds a record on every flush, import and rebuilt `@message`), each with
/// the text it stands for: the body, or `null` for a body that is absent.
pub(crate) fn body_marks<'a>(
    message: &'a [u8],
    input_body: Option<&'a str>,
    output_body: Option<&'a str>,
) -> impl Iterator<Item = (usize, &'a str)> + 'a {
    memchr::memchr2_iter(INPUT_BODY_BYTE, OUTPUT_BODY_BYTE, message).map(move |i| {
        let body = if message[i] == INPUT_BODY_BYTE {
            input_body
        } else {
            output_body
        };
        (i, body.unwrap_or("null"))
    })
}

/// Split one record (a JSON line) into column values. Records without a usable
/// `timestamp` or with a `schemaType` other than `ModelInvocationLog` are refused.
pub fn parse_row(line: &str) -> Result<Row, RowError> {
    parse_fields(line).map(Fields::into_row)
}

/// Columns of the table.
const N: usize = COLUMNS.len();

/// One record split into column values, borrowed from its line where they can be (the
/// bodies always, text without escapes): what [`Columns`] takes without a copy of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Fields<'a> {
    /// `timestamp`, epoch ms.
    pub timestamp: i64,
    /// Text/JSON values by column index (`None` for absent).
    pub strs: [Option<Cow<'a, str>>; N],
    /// Integer values by column index.
    pub ints: [Option<i64>; N],
    /// Boolean values by column index.
    pub bools: [Option<bool>; N],
    /// The log group the logging configuration sent it to (`logbook.destination.logGroup`).
    pub log_group: Option<Cow<'a, str>>,
}

impl<'a> Fields<'a> {
    /// The record's request id.
    pub fn request_id(&self) -> Option<&str> {
        self.strs[REQUEST_ID].as_deref()
    }

    /// Bytes of text the record adds to a batch.
    pub fn text_bytes(&self) -> usize {
        self.strs.iter().flatten().map(|s| s.len()).sum()
    }

    /// The values, owned.
    pub fn into_row(self) -> Row {
        Row {
            timestamp: self.timestamp,
            strs: self
                .strs
                .into_iter()
                .map(|s| s.map(Cow::into_owned))
                .collect(),
            ints: self.ints.to_vec(),
            bools: self.bools.to_vec(),
            log_group: self.log_group.map(Cow::into_owned),
        }
    }
}

/// [`parse_row`] without owning its values.
pub fn parse_fields(line: &str) -> Result<Fields<'_>, RowError> {
    // Refuses a `schemaType` other than `ModelInvocationLog`.
    let r = RawRecord::parse_str(line)?;
    let ts = text_ref(r.timestamp)
        .as_deref()
        .and_then(parse_millis)
        .ok_or(RowError::Invalid("timestamp missing or not RFC 3339"))?;
    let mut strs: [Option<Cow<'_, str>>; N] = std::array::from_fn(|_| None);
    let mut ints = [None; N];
    let mut bools = [None; N];
    let (input, output, ext) = (r.input.as_ref(), r.output.as_ref(), r.logbook.as_ref());
    let json = |v| json_ref(v).map(Cow::Borrowed);
    strs[1] = text_ref(r.request_id);
    strs[2] = text_ref(r.account_id);
    strs[3] = text_ref(r.region);
    strs[4] = text_ref(r.operation);
    strs[5] = text_ref(r.model_id);
    strs[6] = text_ref(r.schema_type);
    strs[7] = text_ref(r.schema_version);
    strs[8] = text_ref(r.identity.as_ref().and_then(|i| i.arn));
    strs[9] = text_ref(r.inference_region);
    strs[10] = text_ref(r.error_code);
    strs[11] = text_ref(input.and_then(|i| i.input_content_type));
    ints[12] = int(input.and_then(|i| i.input_token_count));
    ints[13] = int(input.and_then(|i| i.cache_read_input_token_count));
    ints[14] = int(input.and_then(|i| i.cache_write_input_token_count));
    strs[15] = json(input.and_then(|i| i.input_body_json));
    strs[16] = text_ref(input.and_then(|i| i.input_body_s3_path));
    strs[17] = text_ref(output.and_then(|o| o.output_content_type));
    ints[18] = int(output.and_then(|o| o.output_token_count));
    strs[19] = json(output.and_then(|o| o.output_body_json));
    strs[20] = text_ref(output.and_then(|o| o.output_body_s3_path));
    strs[21] = json(r.request_metadata);
    ints[22] = int(ext.and_then(|e| e.latency_ms));
    ints[23] = int(ext.and_then(|e| e.time_to_first_token_ms));
    ints[24] = int(ext.and_then(|e| e.http_status));
    bools[25] = boolean(ext.and_then(|e| e.stream));
    strs[26] = text_ref(ext.and_then(|e| e.provider));
    strs[27] = text_ref(ext.and_then(|e| e.api));
    strs[28] = text_ref(ext.and_then(|e| e.error_message));
    // Each body is kept once, in its own column: `message` holds the record with a mark
    // where each body was, and `rebuild_message` puts them back, byte for byte.
    strs[MESSAGE] = Some(Cow::Owned(skeleton(
        line,
        [
            (input.and_then(|i| i.input_body_json), INPUT_BODY_MARK),
            (output.and_then(|o| o.output_body_json), OUTPUT_BODY_MARK),
        ],
    )));
    strs[COST] = text_ref(ext.and_then(|e| e.cost));
    strs[31] = text_ref(ext.and_then(|e| e.price_catalog));
    strs[32] = text_ref(ext.and_then(|e| e.unpriced));
    strs[33] = json(ext.and_then(|e| e.principal_tags));
    let log_group = text_ref(
        ext.and_then(|e| e.destination.as_ref())
            .and_then(|d| d.log_group),
    );
    Ok(Fields {
        timestamp: ts,
        strs,
        ints,
        bools,
        log_group,
    })
}

/// Bytes of text a record brings to each column ([`Columns::text_sizes`]), to size the
/// next columns' buffers at once instead of growing them (and copying) by doubling.
#[derive(Debug, Clone, Copy)]
pub struct TextSizes([usize; N]);

impl Default for TextSizes {
    fn default() -> Self {
        TextSizes([0; N])
    }
}

/// A batch being built a record at a time: the one place a record's values become Arrow
/// columns ([`to_batch`] and the import both come here).
pub struct Columns {
    timestamps: TimestampMillisecondBuilder,
    strs: Vec<Option<StringBuilder>>,
    ints: Vec<Option<Int64Builder>>,
    bools: Vec<Option<BooleanBuilder>>,
    decimals: Vec<Option<Decimal128Builder>>,
    /// Bytes of text by column since the last [`Columns::finish`].
    text: [usize; N],
    rows: usize,
}

impl Columns {
    /// Empty columns with room for `rows` records.
    pub fn with_capacity(rows: usize) -> Columns {
        Columns::sized(rows, &[0; N])
    }

    /// Empty columns with room for `rows` records like those `sizes` saw.
    pub fn sized_for(rows: usize, sizes: &TextSizes) -> Columns {
        Columns::sized(rows, &sizes.0.map(|t| rows * t + rows * t / 8))
    }

    /// The text each record added brought to each column, on average.
    pub fn text_sizes(&self) -> TextSizes {
        TextSizes(self.text.map(|t| t / self.rows.max(1)))
    }

    /// Empty columns with room for `rows` records and `text[i]` bytes of column `i`'s text
    /// (so a body column's buffer is not grown, and copied, by doubling).
    fn sized(rows: usize, text: &[usize; N]) -> Columns {
        let is = |k: Kind| COLUMNS.iter().map(move |c| c.kind == k);
        Columns {
            timestamps: TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC"),
            strs: COLUMNS
                .iter()
                .zip(text)
                .map(|(c, &t)| {
                    matches!(c.kind, Kind::Str | Kind::Json)
                        .then(|| StringBuilder::with_capacity(rows, t))
                })
                .collect(),
            ints: is(Kind::Int)
                .map(|a| a.then(|| Int64Builder::with_capacity(rows)))
                .collect(),
            bools: is(Kind::Bool)
                .map(|a| a.then(|| BooleanBuilder::with_capacity(rows)))
                .collect(),
            decimals: is(Kind::Decimal)
                .map(|a| {
                    a.then(|| {
                        Decimal128Builder::with_capacity(rows)
                            .with_data_type(DataType::Decimal128(DECIMAL_PRECISION, DECIMAL_SCALE))
                    })
                })
                .collect(),
            text: [0; N],
            rows: 0,
        }
    }

    /// Add a parsed record.
    pub fn append(&mut self, f: &Fields<'_>) {
        self.timestamps.append_value(f.timestamp);
        for (i, b) in self.strs.iter_mut().enumerate() {
            if let Some(b) = b {
                let v = f.strs[i].as_deref();
                self.text[i] += v.map_or(0, str::len);
                b.append_option(v);
            }
        }
        for (i, b) in self.ints.iter_mut().enumerate() {
            if let Some(b) = b {
                b.append_option(f.ints[i]);
            }
        }
        for (i, b) in self.bools.iter_mut().enumerate() {
            if let Some(b) = b {
                b.append_option(f.bools[i]);
            }
        }
        for (i, b) in self.decimals.iter_mut().enumerate() {
            if let Some(b) = b {
                b.append_option(f.strs[i].as_deref().and_then(scaled_decimal));
            }
        }
        self.rows += 1;
    }

    /// Records added since the last [`Columns::finish`].
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Bytes of text added since the last [`Columns::finish`].
    pub fn bytes(&self) -> usize {
        self.text.iter().sum()
    }

    /// The batch of what was added; the columns are empty again, with room for a batch
    /// like this one (an eighth more: its buffers are taken at that size at once).
    pub fn finish(&mut self) -> Result<RecordBatch, arrow_schema::ArrowError> {
        let (rows, text) = (self.rows, self.text.map(|t| t + t / 8));
        let batch = self.arrays();
        *self = Columns::sized(rows, &text);
        RecordBatch::try_new(schema(), batch?)
    }

    /// The batch of what was added, for the last time.
    pub fn into_batch(mut self) -> Result<RecordBatch, arrow_schema::ArrowError> {
        RecordBatch::try_new(schema(), self.arrays()?)
    }

    /// The arrays of what was added (the builders are left empty).
    fn arrays(&mut self) -> Result<Vec<ArrayRef>, arrow_schema::ArrowError> {
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(N);
        for (i, c) in COLUMNS.iter().enumerate() {
            let a: Option<ArrayRef> = match c.kind {
                Kind::Timestamp => Some(Arc::new(self.timestamps.finish())),
                Kind::Str | Kind::Json => self.strs[i]
                    .as_mut()
                    .map(|b| Arc::new(b.finish()) as ArrayRef),
                Kind::Int => self.ints[i]
                    .as_mut()
                    .map(|b| Arc::new(b.finish()) as ArrayRef),
                Kind::Bool => self.bools[i]
                    .as_mut()
                    .map(|b| Arc::new(b.finish()) as ArrayRef),
                Kind::Decimal => self.decimals[i]
                    .as_mut()
                    .map(|b| Arc::new(b.finish()) as ArrayRef),
            };
            arrays.push(a.ok_or_else(|| {
                arrow_schema::ArrowError::SchemaError(format!("no builder for column {}", c.name))
            })?);
        }
        Ok(arrays)
    }
}

/// Build one Arrow batch from parsed records, its buffers taken at their exact size (a
/// batch the tail keeps holds no room it does not use).
pub fn fields_batch(fields: &[Fields<'_>]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let mut text = [0; N];
    for f in fields {
        for (t, s) in text.iter_mut().zip(&f.strs) {
            *t += s.as_ref().map_or(0, |s| s.len());
        }
    }
    let mut cols = Columns::sized(fields.len(), &text);
    for f in fields {
        cols.append(f);
    }
    cols.into_batch()
}

/// Build one Arrow batch from rows.
pub fn to_batch(rows: &[Row]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    fields_batch(&rows.iter().map(Row::fields).collect::<Vec<_>>())
}

/// Column index of `input_body_json`.
pub const INPUT_BODY: usize = 15;
/// Column index of `output_body_json`.
pub const OUTPUT_BODY: usize = 19;

/// `batch` with its bodies gone: the body columns null and `message` the record without
/// its bodies ([`logbook_record::raw::strip_bodies`]).
pub fn without_bodies(batch: &RecordBatch) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let n = batch.num_rows();
    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
    for i in [INPUT_BODY, OUTPUT_BODY] {
        cols[i] = arrow_array::new_null_array(&DataType::Utf8, n);
    }
    let text = |i: usize| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .cloned()
            .ok_or_else(|| arrow_schema::ArrowError::SchemaError("not a text column".into()))
    };
    let (msg, inb, outb) = (text(MESSAGE)?, text(INPUT_BODY)?, text(OUTPUT_BODY)?);
    let mut b = StringBuilder::with_capacity(n, n * 512);
    fn get(a: &arrow_array::StringArray, i: usize) -> Option<&str> {
        use arrow_array::Array;
        a.is_valid(i).then(|| a.value(i))
    }
    for i in 0..n {
        // A message that is not JSON (never written by Logbook) goes rather than stays.
        b.append_option(get(&msg, i).and_then(|m| {
            logbook_record::raw::strip_bodies(&rebuild_message(m, get(&inb, i), get(&outb, i)))
        }));
    }
    cols[MESSAGE] = Arc::new(b.finish());
    RecordBatch::try_new(batch.schema(), cols)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"schemaType":"ModelInvocationLog","schemaVersion":"1.0","timestamp":"2025-03-11T00:38:02Z","accountId":"123456789012","identity":{"arn":"arn:aws:iam::123456789012:user/alice"},"region":"us-east-1","requestId":"r-1","operation":"Converse","modelId":"amazon.nova-lite-v1:0","input":{"inputContentType":"application/json","inputBodyJson":{"messages":[{"role":"user","content":[{"text":"hi \"there\""}]}]},"inputTokenCount":4},"output":{"outputContentType":"application/json","outputBodyJson":{"stopReason":"end_turn"},"outputTokenCount":38},"requestMetadata":{"team":"search"},"logbook":{"latencyMs":12,"stream":false,"httpStatus":200,"destination":{"bucket":"b","keyPrefix":"","logGroup":"g1"}}}"#;

    #[test]
    fn each_body_is_kept_once_and_the_record_comes_back_byte_for_byte() {
        let r = parse_row(LINE).unwrap();
        let m = r.strs[MESSAGE].as_deref().unwrap();
        let (i, o) = (
            r.strs[INPUT_BODY].as_deref(),
            r.strs[OUTPUT_BODY].as_deref(),
        );
        assert!(!m.contains("hi \\\"there") && m.contains(INPUT_BODY_MARK));
        assert!(m.len() + i.unwrap().len() + o.unwrap().len() - 2 == LINE.len());
        assert_eq!(rebuild_message(m, i, o), LINE);
        // Whitespace, escapes, non-ASCII, a null body, no output at all, keys in another
        // order: every line comes back exactly.
        for line in [
            r#"{ "timestamp" : "2025-03-11T00:38:02Z", "input" : { "inputBodyJson" : { "a" : [ 1 , 2 ] , "é" : "\u0001\n" } } }"#,
            r#"{"timestamp":"2025-03-11T00:38:02Z","input":{"inputBodyJson":null},"output":{"outputBodyJson":"just text"}}"#,
            r#"{"output":{"outputBodyJson":[]},"timestamp":"2025-03-11T00:38:02Z","input":{"inputBodyJson":{}}}"#,
            r#"{"timestamp":"2025-03-11T00:38:02Z","input":{"inputTokenCount":3}}"#,
        ] {
            let r = parse_row(line).unwrap();
            let m = r.strs[MESSAGE].as_deref().unwrap();
            let got = rebuild_message(
                m,
                r.strs[INPUT_BODY].as_deref(),
                r.strs[OUTPUT_BODY].as_deref(),
            );
            assert_eq!(got, line);
        }
        // A message of an older file (no marks) is read as it is; a mark without its body
        // reads as null, so the result stays JSON.
        assert!(matches!(
            rebuild_message(LINE, None, None),
            std::borrow::Cow::Borrowed(_)
        ));
        let lost = rebuild_message(m, None, o);
        assert!(
            serde_json::from_str::<serde_json::Value>(&lost).unwrap()["input"]["inputBodyJson"]
                .is_null()
        );
    }

    /// The byte search puts bodies back exactly where the walk over characters did:
    /// marks first, last, side by side, between multi-byte characters, and repeated.
    #[test]
    fn marks_are_found_as_the_character_walk_found_them() {
        fn by_chars(m: &str, i: Option<&str>, o: Option<&str>) -> String {
            m.chars()
                .map(|c| match c {
                    INPUT_BODY_MARK => i.unwrap_or("null").to_string(),
                    OUTPUT_BODY_MARK => o.unwrap_or("null").to_string(),
                    c => c.to_string(),
                })
                .collect()
        }
        for m in [
            "",
            "\u{1}",
            "\u{2}\u{1}",
            "{\"a\":\u{1},\"b\":\u{2}}",
            "é\u{1}ü€\u{2}𝄞",
            "\u{1}\u{1}x\u{2}\u{2}",
            "no marks, 日本語",
        ] {
            for (i, o) in [
                (Some("{\"x\":\"ß\"}"), Some("[1]")),
                (None, Some("\"t\"")),
                (None, None),
            ] {
                assert_eq!(rebuild_message(m, i, o), by_chars(m, i, o), "{m:?}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_bodies_come_back_exactly(a in "\\PC{0,40}", b in proptest::collection::vec(-5i64..5, 0..6), sp in " {0,2}") {
            let line = serde_json::json!({"timestamp": "2025-03-11T00:38:02Z",
                "input": {"inputBodyJson": {"t": a, "n": b}}, "output": {"outputBodyJson": [a]}}).to_string()
                .replace(':', &format!(":{sp}"));
            if let Ok(r) = parse_row(&line) {
                let m = r.strs[MESSAGE].as_deref().unwrap();
                proptest::prop_assert_eq!(
                    rebuild_message(m, r.strs[INPUT_BODY].as_deref(), r.strs[OUTPUT_BODY].as_deref()),
                    line.as_str()
                );
            }
        }
    }

    #[test]
    fn splits_a_record_into_columns() {
        let r = parse_row(LINE).unwrap();
        assert_eq!(r.timestamp, 1_741_653_482_000);
        assert_eq!(r.request_id(), Some("r-1"));
        assert_eq!(r.strs[5].as_deref(), Some("amazon.nova-lite-v1:0"));
        assert_eq!(
            r.strs[8].as_deref(),
            Some("arn:aws:iam::123456789012:user/alice")
        );
        assert_eq!(r.ints[12], Some(4));
        assert_eq!(r.ints[18], Some(38));
        assert_eq!(
            r.strs[15].as_deref(),
            Some(r#"{"messages":[{"role":"user","content":[{"text":"hi \"there\""}]}]}"#)
        );
        assert_eq!(r.strs[21].as_deref(), Some(r#"{"team":"search"}"#));
        assert_eq!(r.ints[22], Some(12));
        assert_eq!(r.bools[25], Some(false));
        assert_eq!(r.log_group.as_deref(), Some("g1"));
        assert_eq!(r.message(), LINE);
        let b = to_batch(&[r.clone(), r]).unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.num_columns(), COLUMNS.len());
    }

    #[test]
    fn refuses_what_is_not_a_record() {
        assert!(parse_row("not json").is_err());
        assert!(parse_row("[1]").is_err());
        assert!(parse_row(r#"{"timestamp":"yesterday"}"#).is_err());
        assert!(parse_row(r#"{"schemaType":"Other","timestamp":"2025-03-11T00:38:02Z"}"#).is_err());
        // Wrong member types degrade to text rather than failing the row.
        let r = parse_row(r#"{"timestamp":"2025-03-11T00:38:02.5Z","modelId":7,"input":{"inputTokenCount":"12"}}"#).unwrap();
        assert_eq!(r.timestamp, 1_741_653_482_500);
        assert_eq!(r.strs[5].as_deref(), Some("7"));
        assert_eq!(r.ints[12], Some(12));
    }

    #[test]
    fn column_table_is_consistent() {
        assert_eq!(COLUMNS[TIMESTAMP].name, "timestamp");
        assert_eq!(COLUMNS[REQUEST_ID].name, "request_id");
        assert_eq!(COLUMNS[MESSAGE].name, "message");
        assert_eq!(column("input.inputTokenCount").map(|c| c.0), Some(12));
        assert_eq!(column("output_token_count").map(|c| c.0), Some(18));
        assert_eq!(column("requestMetadata").map(|c| c.0), Some(21));
        assert_eq!(COLUMNS[COST].name, "cost");
        assert_eq!(column("logbook.principalTags").map(|c| c.0), Some(33));
    }

    #[test]
    fn costs_are_exact_decimals() {
        assert_eq!(scaled_decimal("0.00000936"), Some(9_360_000));
        assert_eq!(scaled_decimal("12"), Some(12_000_000_000_000));
        assert_eq!(scaled_decimal("0.000000000001"), Some(1));
        assert_eq!(scaled_decimal("0.0000000000001"), None);
        assert_eq!(scaled_decimal("-1"), None);
        assert_eq!(scaled_decimal("1e-3"), None);
        assert_eq!(scaled_decimal(""), None);
        assert_eq!(scaled_decimal(".5"), None);
        assert_eq!(
            scaled_decimal("99999999999999999999999999999999999999"),
            None
        );
        let line = LINE.replace(r#""latencyMs":12"#, r#""latencyMs":12,"cost":"0.00000936","priceCatalog":"v1","principalTags":{"team":"a"}"#);
        let r = parse_row(&line).unwrap();
        let b = to_batch(&[r]).unwrap();
        let c = b
            .column(COST)
            .as_any()
            .downcast_ref::<arrow_array::Decimal128Array>()
            .unwrap();
        assert_eq!(c.value(0), 9_360_000);
        assert_eq!(c.value_as_string(0), "0.000009360000");
    }

    /// A record's values are borrowed from its line but for text that must be unescaped
    /// and the `message` (rebuilt without its bodies); the columns built from them are the
    /// ones `to_batch` builds from owned rows, batch after batch (a finished `Columns`
    /// takes the next batch at the last one's sizes, and may take it at any size).
    #[test]
    fn columns_from_borrowed_fields_are_the_batches_rows_make() {
        let escaped = LINE
            .replace(
                "arn:aws:iam::123456789012:user/alice",
                r#"arn:aws:iam::123456789012:user/\u00e9\"q"#,
            )
            .replace(r#""requestId":"r-1""#, r#""requestId":"r-2""#);
        let bare = r#"{"schemaType":"ModelInvocationLog","timestamp":"2025-03-11T00:38:03Z","requestId":"r-3","input":{"inputBodyJson":null},"logbook":{"cost":"0.000009360000","stream":true}}"#;
        let lines = [LINE, escaped.as_str(), bare];
        let f = parse_fields(LINE).unwrap();
        assert!(matches!(
            f.strs[5],
            Some(Cow::Borrowed("amazon.nova-lite-v1:0"))
        ));
        assert!(matches!(f.strs[INPUT_BODY], Some(Cow::Borrowed(_))));
        assert!(matches!(f.strs[MESSAGE], Some(Cow::Owned(_))));
        let e = parse_fields(&escaped).unwrap();
        assert_eq!(
            e.strs[8].as_deref(),
            Some("arn:aws:iam::123456789012:user/é\"q")
        );
        assert!(matches!(e.strs[8], Some(Cow::Owned(_))));
        for l in lines {
            assert_eq!(parse_fields(l).unwrap().into_row(), parse_row(l).unwrap());
        }
        let rows: Vec<Row> = lines.iter().map(|l| parse_row(l).unwrap()).collect();
        let mut cols = Columns::with_capacity(1);
        let mut sizes = TextSizes::default();
        for round in 0..3 {
            for l in lines {
                cols.append(&parse_fields(l).unwrap());
            }
            assert_eq!(cols.rows(), 3);
            assert_eq!(
                cols.bytes(),
                rows.iter()
                    .flat_map(|r| r.strs.iter().enumerate().filter(|(i, _)| *i != COST))
                    .filter_map(|(_, s)| s.as_ref().map(String::len))
                    .sum::<usize>(),
                "the text columns' bytes (the cost is a decimal)"
            );
            sizes = cols.text_sizes();
            assert_eq!(
                cols.finish().unwrap(),
                to_batch(&rows).unwrap(),
                "round {round}"
            );
            assert_eq!(cols.rows(), 0);
        }
        // The tail's batches: exact sizes, as `to_batch`'s.
        let fields: Vec<Fields<'_>> = lines.iter().map(|l| parse_fields(l).unwrap()).collect();
        let (exact, rows_batch) = (fields_batch(&fields).unwrap(), to_batch(&rows).unwrap());
        assert_eq!(exact, rows_batch);
        assert_eq!(
            exact.get_array_memory_size(),
            rows_batch.get_array_memory_size()
        );
        assert!(sizes.0[INPUT_BODY] > 0);
        let mut sized = Columns::sized_for(2, &sizes);
        for r in &rows {
            sized.append(&r.fields());
        }
        assert_eq!(sized.into_batch().unwrap(), to_batch(&rows).unwrap());
    }
}
