//! The `archive` table: Bedrock-format invocation logs (`.json.gz`, JSON Lines) read
//! straight from a bucket through its object store (a local folder or S3), as Athena reads
//! them from S3.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::SendableRecordBatchStream;
use flate2::read::MultiGzDecoder;
use futures::TryStreamExt;
use logbook_store::schema;
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

/// Is this key a batch of records (not an offloaded body under `data/`, not the
/// permission-check marker, not a CloudTrail object)?
pub fn is_record_object(key: &str) -> bool {
    key.ends_with(".json.gz")
        && !key.split('/').any(|s| s == "data")
        && !key.contains("/CloudTrail/")
}

/// Every record object under `prefix` of `store`, sorted by key.
pub async fn record_objects(
    store: &dyn ObjectStore,
    prefix: Option<&StorePath>,
) -> object_store::Result<Vec<ObjectMeta>> {
    let mut out: Vec<ObjectMeta> = store
        .list(prefix)
        .try_filter(|m| std::future::ready(is_record_object(m.location.as_ref())))
        .try_collect()
        .await?;
    out.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(out)
}

/// The longest line an archive or export object may hold. A record whose bodies above
/// 100 KB are offloaded (Bedrock's rule and Logbook's) and a CloudWatch Logs event
/// (256 KB at most) are far below it; an object that decompresses to one endless line (a
/// gzip bomb) costs this much memory, not all of it.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// The lines of one gzipped JSON Lines object (without their `\n` or `\r\n`). A line
/// longer than [`MAX_LINE_BYTES`] is read past without being held and comes as an error
/// that [`is_too_long`] recognises; the lines after it still come.
pub fn lines(bytes: &[u8]) -> impl Iterator<Item = std::io::Result<String>> + '_ {
    lines_within(bytes, MAX_LINE_BYTES)
}

fn lines_within(bytes: &[u8], max: usize) -> impl Iterator<Item = std::io::Result<String>> + '_ {
    BoundedLines {
        r: BufReader::with_capacity(1 << 20, MultiGzDecoder::new(bytes)),
        max,
        done: false,
    }
}

/// A line past [`MAX_LINE_BYTES`].
#[derive(Debug, thiserror::Error)]
#[error("a line longer than {} MiB (skipped: no record is that long)", .0 >> 20)]
pub struct LineTooLong(usize);

/// Is `e` a line past [`MAX_LINE_BYTES`] (the lines after it can still be read)?
pub fn is_too_long(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<LineTooLong>())
}

struct BoundedLines<R> {
    r: R,
    max: usize,
    done: bool,
}

impl<R: BufRead> BoundedLines<R> {
    /// The next line into `line` (cleared first); none at the end.
    fn read_into(&mut self, line: &mut Vec<u8>) -> Option<std::io::Result<()>> {
        if self.done {
            return None;
        }
        line.clear();
        let limit = self.max as u64 + 1;
        match (&mut self.r).take(limit).read_until(b'\n', line) {
            Ok(0) => {
                self.done = true;
                return None;
            }
            Ok(_) => {}
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        } else if line.len() > self.max {
            line.clear();
            // Past the bound: read to the line's end without keeping it.
            if let Err(e) = self.r.skip_until(b'\n') {
                self.done = true;
                return Some(Err(e));
            }
            return Some(Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                LineTooLong(self.max),
            )));
        }
        Some(Ok(()))
    }
}

fn not_utf8() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "stream did not contain valid UTF-8",
    )
}

impl<R: BufRead> Iterator for BoundedLines<R> {
    type Item = std::io::Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut line = Vec::new();
        match self.read_into(&mut line)? {
            Ok(()) => Some(String::from_utf8(line).map_err(|_| not_utf8())),
            Err(e) => Some(Err(e)),
        }
    }
}

/// The lines of one gzipped JSON Lines object as [`lines`] gives them, each read into one
/// buffer the reader keeps (no allocation a line), or borrowed from an object already
/// decompressed whole ([`LineReader::plain`]): for a caller done with a line before it
/// asks for the next.
pub struct LineReader<'a> {
    from: Text<'a>,
}

/// Where a [`LineReader`]'s lines come from.
enum Text<'a> {
    Gzip {
        // Boxed: the decoder's state is 400 bytes, the other variant's two words.
        lines: Box<BoundedLines<BufReader<MultiGzDecoder<&'a [u8]>>>>,
        buf: Vec<u8>,
    },
    Plain {
        rest: &'a [u8],
        max: usize,
    },
}

impl<'a> LineReader<'a> {
    /// A reader of `bytes` (a gzipped object).
    pub fn new(bytes: &'a [u8]) -> LineReader<'a> {
        LineReader::within(bytes, MAX_LINE_BYTES)
    }

    fn within(bytes: &'a [u8], max: usize) -> LineReader<'a> {
        LineReader {
            from: Text::Gzip {
                lines: Box::new(BoundedLines {
                    r: BufReader::with_capacity(1 << 20, MultiGzDecoder::new(bytes)),
                    max,
                    done: false,
                }),
                buf: Vec::new(),
            },
        }
    }

    /// A reader of an object's text already decompressed whole (every gzip member of it):
    /// the same lines and errors as [`LineReader::new`] over the gzipped object, each
    /// borrowed from `text`.
    pub fn plain(text: &'a [u8]) -> LineReader<'a> {
        LineReader::plain_within(text, MAX_LINE_BYTES)
    }

    fn plain_within(text: &'a [u8], max: usize) -> LineReader<'a> {
        LineReader {
            from: Text::Plain { rest: text, max },
        }
    }

    /// The next line; none at the end. Errors as [`lines`] gives them.
    pub fn next_line(&mut self) -> Option<std::io::Result<&str>> {
        match &mut self.from {
            Text::Gzip { lines, buf } => match lines.read_into(buf)? {
                Ok(()) => Some(std::str::from_utf8(buf).map_err(|_| not_utf8())),
                Err(e) => Some(Err(e)),
            },
            Text::Plain { rest, max } => {
                if rest.is_empty() {
                    return None;
                }
                let text: &'a [u8] = rest;
                let (mut line, ended) = match memchr::memchr(b'\n', text) {
                    Some(i) => {
                        *rest = &text[i + 1..];
                        (&text[..i], true)
                    }
                    None => {
                        *rest = &text[text.len()..];
                        (text, false)
                    }
                };
                // As `read_into` bounds it: what precedes the `\n`, a `\r` included.
                if line.len() > *max {
                    return Some(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        LineTooLong(*max),
                    )));
                }
                if ended {
                    line = line.strip_suffix(b"\r").unwrap_or(line);
                }
                Some(std::str::from_utf8(line).map_err(|_| not_utf8()))
            }
        }
    }
}

struct Part {
    store: Arc<dyn ObjectStore>,
    objects: Vec<StorePath>,
}

impl std::fmt::Debug for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Part")
            .field("objects", &self.objects.len())
            .finish()
    }
}

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl PartitionStream for Part {
    fn schema(&self) -> &SchemaRef {
        static S: std::sync::OnceLock<SchemaRef> = std::sync::OnceLock::new();
        S.get_or_init(schema::schema)
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut b = RecordBatchReceiverStreamBuilder::new(schema::schema(), 2);
        let tx = b.tx();
        let (store, objects) = (self.store.clone(), self.objects.clone());
        b.spawn(async move {
            let mut rows = Vec::with_capacity(8192);
            for o in objects {
                let bytes = store
                    .get(&o)
                    .await
                    .map_err(external)?
                    .bytes()
                    .await
                    .map_err(external)?;
                for line in lines(&bytes) {
                    let line = match line {
                        Ok(l) => l,
                        // Skipped, as a line that is no record is.
                        Err(e) if is_too_long(&e) => continue,
                        Err(e) => return Err(external(e)),
                    };
                    if let Ok(r) = schema::parse_row(&line) {
                        rows.push(r);
                    }
                    if rows.len() == 8192 {
                        let batch = schema::to_batch(&rows)?;
                        rows.clear();
                        if tx.send(Ok(batch)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
            if !rows.is_empty() {
                let _ = tx.send(Ok(schema::to_batch(&rows)?)).await;
            }
            Ok(())
        });
        b.build()
    }
}

/// The `archive` table over the record objects of `store`, read by `partitions` parallel
/// streams.
pub async fn table(store: Arc<dyn ObjectStore>, partitions: usize) -> Result<StreamingTable> {
    let objects = record_objects(&*store, None).await.map_err(external)?;
    let n = partitions.max(1);
    let mut parts: Vec<Vec<StorePath>> = vec![Vec::new(); n];
    for (i, o) in objects.into_iter().enumerate() {
        parts[i % n].push(o.location);
    }
    let parts: Vec<Arc<dyn PartitionStream>> = parts
        .into_iter()
        .map(|objects| {
            Arc::new(Part {
                store: store.clone(),
                objects,
            }) as Arc<dyn PartitionStream>
        })
        .collect();
    StreamingTable::try_new(schema::schema(), parts)
}

#[cfg(test)]
mod line_tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Write;

    fn gz(text: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text).unwrap();
        e.finish().unwrap()
    }

    /// The lines as `lines` gives them; `LineReader` (one reused buffer) must give the same.
    fn read(bytes: &[u8], max: usize) -> Vec<Result<String, bool>> {
        let got: Vec<Result<String, bool>> = super::lines_within(bytes, max)
            .map(|l| l.map_err(|e| super::is_too_long(&e)))
            .collect();
        let all = |mut r: super::LineReader<'_>| {
            let mut out = Vec::new();
            while let Some(l) = r.next_line() {
                out.push(l.map(str::to_string).map_err(|e| super::is_too_long(&e)));
            }
            out
        };
        let again = all(super::LineReader::within(bytes, max));
        assert_eq!(again, got, "LineReader and lines differ");
        // The same from the whole object decompressed first.
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(bytes), &mut text)
            .unwrap();
        let plain = all(super::LineReader::plain_within(&text, max));
        assert_eq!(plain, got, "LineReader::plain and lines differ");
        got
    }

    /// As `BufRead::lines` for lines within the bound (`\n` and `\r\n` ends, an empty
    /// line, a last line without its end, many gzip members); a longer line is one
    /// error, read past, and the lines after it come.
    #[test]
    fn lines_are_read_as_lines_and_a_line_past_the_bound_is_skipped() {
        let text = b"a\r\n\nbc\nlast";
        assert_eq!(
            read(&gz(text), 8),
            vec![
                Ok("a".into()),
                Ok("".into()),
                Ok("bc".into()),
                Ok("last".into())
            ]
        );
        let mut two = gz(b"x\n");
        two.extend(gz(b"y\n"));
        assert_eq!(read(&two, 8), vec![Ok("x".into()), Ok("y".into())]);
        // 3 MiB of one line against a 1 MiB bound: bigger than the reader's 1 MiB buffer.
        let mut big = b"first\n".to_vec();
        big.extend(std::iter::repeat_n(b'z', 3 << 20));
        big.extend(b"\n12345678\n123456789\nafter");
        assert_eq!(
            read(&gz(&big), 1 << 20),
            vec![
                Ok("first".into()),
                Err(true),
                Ok("12345678".into()),
                Ok("123456789".into()),
                Ok("after".into())
            ]
        );
        // A long last line without its end, and a line of exactly the bound.
        assert_eq!(
            read(&gz(b"ok\n123456789"), 8),
            vec![Ok("ok".into()), Err(true)]
        );
        assert_eq!(read(&gz(b"12345678"), 8), vec![Ok("12345678".into())]);
        // The bound counts a `\r` before the `\n`; one without a `\n` after it stays.
        assert_eq!(
            read(&gz(b"1234567\r\n12345678\r\nz\r"), 8),
            vec![Ok("1234567".into()), Err(true), Ok("z\r".into())]
        );
        // Not UTF-8: an error that is not "too long".
        assert_eq!(read(&gz(b"\xff\xfe\n"), 8), vec![Err(false)]);
        assert_eq!(read(&gz(b""), 8), Vec::<Result<String, bool>>::new());
    }
}
