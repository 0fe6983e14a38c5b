//! The text index of a store file: which blocks of rows may hold a piece of text.
//!
//! A search for a needle in prompts (`filter input.inputBodyJson like /rare-phrase/`)
//! would otherwise decompress and scan every body in its time range. Each store file
//! therefore carries, per block of [`BLOCK_ROWS`] consecutive rows, a Bloom filter of the
//! byte trigrams of the rows' records as a query sees them (the rebuilt `@message`,
//! which holds both bodies verbatim), ASCII letters folded to lower case: the trigrams
//! that start at even offsets of each text (half the work of every offset; see
//! [`VERSION_EVEN`]). A query whose filter implies "the text contains these bytes" reads
//! only the blocks whose filter holds, for one parity of offsets in those bytes, every
//! trigram that starts there (the needle lies at an even or an odd offset of a text, so
//! the trigrams of one of its two parities were indexed); the filter itself still runs
//! on the rows read, so the index can only narrow what is read, never change an answer.
//! A Bloom filter has no false negatives, so no matching row is ever skipped.
//!
//! Where it lives: in the file itself, as one more column ([`COLUMN`], binary) that is
//! null on every row but the last of each block, which holds the block's filter. So the
//! index is written, fsync'd, encrypted, replaced and removed with its file, and readers
//! that do not know it (DataFusion with the table's schema, DuckDB) ignore it. Unlike the
//! footer's key-value metadata, it is not read by every query that opens the file.
//!
//! Types without I/O: building from batches and reading back from the column's values.

use crate::schema;
use arrow_array::{Array, BinaryArray, RecordBatch, StringArray};
use std::sync::Arc;

/// The column that holds the index in a store file.
pub const COLUMN: &str = "logbook_text_index";

/// Rows per block: the unit a search reads or skips (a row group holds eight).
pub const BLOCK_ROWS: u64 = 4096;

/// Bits of filter per distinct trigram (about 1% false positives with [`HASHES`]).
const BITS_PER_GRAM: usize = 10;
/// Hash functions per trigram.
const HASHES: u32 = 7;
/// The format byte of a filter whose bits hold trigram codes (files written before
/// 2026-12-06; still read).
const VERSION_GRAMS: u8 = 1;
/// The format byte of a filter whose bits hold [`slot`]s of the codes of the trigrams at
/// every offset of the text (files written before 2026-12-07; still read).
const VERSION_SLOTS: u8 = 2;
/// The format byte of a filter whose bits hold [`slot`]s of the codes of the trigrams at
/// the even offsets of each text the builder takes (written now). A needle at offset `p`
/// has its trigrams at offsets `j` with `p + j` even indexed: all those at even `j`, or
/// all at odd `j`. It halves the builder's work (a seventh of an import's CPU) and keeps
/// nearly every distinct trigram of a block (each recurs at both parities).
const VERSION_EVEN: u8 = 3;
/// The smallest filter, in bits.
const MIN_BITS: usize = 1024;
/// The largest filter, in bits (a block with every possible trigram needs no more).
const MAX_BITS: usize = 1 << 24;

/// Bits of a trigram's slot: a block's distinct trigrams are gathered in a table of 2^20
/// slots instead of one per possible trigram (2^24: a cache miss on most bytes of text, a
/// sixth of an import's time when it was a bitmap of 2 MiB).
const SLOT_BITS: u32 = 20;
/// Slots of the builder's table: a byte each, so marking one is a store with no load
/// (a bit each took a load, an OR and a store, and a trigram that recurs soon after waits
/// for the last store: 950 against 1,200 MB/s of text in a micro-benchmark).
const SLOTS: usize = 1 << SLOT_BITS;

/// The slot of a trigram code: its multiplicative hash, cut to [`SLOT_BITS`]. Two
/// trigrams that share a slot are one to the filter: a search may read a block it need
/// not (one more chance of a false positive per trigram, about distinct trigrams / 2^20),
/// never skip one it must read.
#[inline]
fn slot(code: u32) -> u32 {
    code.wrapping_mul(0x9E37_79B1) >> (32 - SLOT_BITS)
}

#[inline]
fn fold(b: u8) -> u8 {
    b.to_ascii_lowercase()
}

/// The distinct trigram codes of `text` (ASCII folded to lower case), for a needle.
pub fn grams(text: &[u8]) -> Vec<u32> {
    let mut out: Vec<u32> = text
        .windows(3)
        .map(|w| u32::from(fold(w[0])) << 16 | u32::from(fold(w[1])) << 8 | u32::from(fold(w[2])))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[inline]
fn hash(gram: u32) -> (u64, u64) {
    let h = (u64::from(gram) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let h = (h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (h >> 32, (h & 0xFFFF_FFFF) | 1)
}

/// A Bloom filter of trigrams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bloom {
    bits: Vec<u64>,
    mask: u64,
    /// The bits hold [`slot`]s of trigram codes (else the codes themselves).
    slots: bool,
    /// Only the trigrams at even offsets were put in ([`VERSION_EVEN`]).
    even: bool,
}

impl Bloom {
    fn with_capacity(n: usize, slots: bool, even: bool) -> Bloom {
        let bits = (n.saturating_mul(BITS_PER_GRAM))
            .clamp(MIN_BITS, MAX_BITS)
            .next_power_of_two();
        Bloom {
            bits: vec![0; bits / 64],
            mask: bits as u64 - 1,
            slots,
            even,
        }
    }

    /// Add a key: a slot or a trigram code, as the filter holds.
    fn insert(&mut self, key: u32) {
        let (a, b) = hash(key);
        for i in 0..u64::from(HASHES) {
            let bit = a.wrapping_add(i.wrapping_mul(b)) & self.mask;
            self.bits[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    /// Might the block hold this trigram? (Never false for one it holds.)
    pub fn may_hold(&self, gram: u32) -> bool {
        let (a, b) = hash(if self.slots { slot(gram) } else { gram });
        (0..u64::from(HASHES)).all(|i| {
            let bit = a.wrapping_add(i.wrapping_mul(b)) & self.mask;
            self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0
        })
    }

    /// The filter as stored: a version byte, then the bits (little-endian words).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.bits.len() * 8);
        out.push(match (self.slots, self.even) {
            (true, true) => VERSION_EVEN,
            (true, false) => VERSION_SLOTS,
            (false, _) => VERSION_GRAMS,
        });
        for w in &self.bits {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// A stored filter; none for one this build cannot read (another version, a size
    /// that is not a power of two).
    pub fn from_bytes(b: &[u8]) -> Option<Bloom> {
        let (&v, rest) = b.split_first()?;
        let words = rest.len() / 8;
        let (slots, even) = match v {
            VERSION_EVEN => (true, true),
            VERSION_SLOTS => (true, false),
            VERSION_GRAMS => (false, false),
            _ => return None,
        };
        if rest.len() % 8 != 0 || words == 0 || !words.is_power_of_two() {
            return None;
        }
        let bits: Vec<u64> = rest
            .chunks_exact(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                u64::from_le_bytes(w)
            })
            .collect();
        Some(Bloom {
            mask: (bits.len() * 64) as u64 - 1,
            bits,
            slots,
            even,
        })
    }

    /// Bytes held in memory.
    pub fn size(&self) -> usize {
        self.bits.len() * 8
    }
}

/// The trigrams of a piece of text a row must contain: all of them, and those at its even
/// and at its odd offsets (each sorted, distinct).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grams {
    all: Vec<u32>,
    even: Vec<u32>,
    odd: Vec<u32>,
}

impl Grams {
    fn of(text: &[u8]) -> Grams {
        let code = |w: &[u8]| {
            u32::from(fold(w[0])) << 16 | u32::from(fold(w[1])) << 8 | u32::from(fold(w[2]))
        };
        let sorted = |mut v: Vec<u32>| {
            v.sort_unstable();
            v.dedup();
            v
        };
        let at = |parity: usize| {
            sorted(
                text.windows(3)
                    .enumerate()
                    .filter(|(j, _)| j % 2 == parity)
                    .map(|(_, w)| code(w))
                    .collect(),
            )
        };
        Grams {
            all: grams(text),
            even: at(0),
            odd: at(1),
        }
    }

    /// Might a block with this filter hold the text?
    fn may_match(&self, b: &Bloom) -> bool {
        let all = |g: &[u32]| g.iter().all(|&g| b.may_hold(g));
        if b.even {
            // The text lies at an even offset (its even trigrams were put in) or an odd
            // one (its odd trigrams were). A text of three bytes has no odd trigram: any
            // block may hold it.
            all(&self.even) || all(&self.odd)
        } else {
            all(&self.all)
        }
    }
}

/// What a filter requires of a row's text: a block that cannot meet it holds no row the
/// filter keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// The text contains these bytes (at least three).
    Grams(Grams),
    /// Every one of these.
    All(Vec<Need>),
    /// At least one of these.
    Any(Vec<Need>),
}

impl Need {
    /// The need of a piece of text the row must contain; none when it is too short to
    /// have a trigram (it narrows nothing).
    pub fn contains(text: &[u8]) -> Option<Need> {
        (text.len() >= 3).then(|| Need::Grams(Grams::of(text)))
    }

    /// Might a block with this filter meet the need?
    pub fn may_match(&self, b: &Bloom) -> bool {
        match self {
            Need::Grams(g) => g.may_match(b),
            Need::All(n) => n.iter().all(|n| n.may_match(b)),
            Need::Any(n) => n.iter().any(|n| n.may_match(b)),
        }
    }
}

/// One block of a file's index: rows `start .. start + rows` (in file order).
#[derive(Debug, Clone)]
pub struct Block {
    /// First row.
    pub start: u64,
    /// Rows.
    pub rows: u64,
    /// Its filter; none when it could not be read (the block is always read).
    pub bloom: Option<Bloom>,
}

/// The index of one file.
#[derive(Debug, Clone, Default)]
pub struct TextIndex {
    /// The blocks, in row order, covering rows `0 .. rows`.
    pub blocks: Vec<Block>,
    /// Rows in the file.
    pub rows: u64,
}

impl TextIndex {
    /// The index from the values of the file's [`COLUMN`], batch by batch in row order.
    pub fn from_column<'a>(columns: impl IntoIterator<Item = &'a BinaryArray>) -> TextIndex {
        let mut blocks = Vec::new();
        let (mut row, mut start) = (0u64, 0u64);
        for col in columns {
            for i in 0..col.len() {
                if col.is_valid(i) {
                    blocks.push(Block {
                        start,
                        rows: row + 1 - start,
                        bloom: Bloom::from_bytes(col.value(i)),
                    });
                    start = row + 1;
                }
                row += 1;
            }
        }
        if start < row {
            // Rows after the last filter (never written so): read them.
            blocks.push(Block {
                start,
                rows: row - start,
                bloom: None,
            });
        }
        TextIndex { blocks, rows: row }
    }

    /// The row ranges (`start, rows`, merged, in order) of the blocks that may meet
    /// `need`.
    pub fn select(&self, need: &Need) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for b in &self.blocks {
            if b.bloom.as_ref().is_some_and(|f| !need.may_match(f)) {
                continue;
            }
            match out.last_mut() {
                Some((s, n)) if *s + *n == b.start => *n += b.rows,
                _ => out.push((b.start, b.rows)),
            }
        }
        out
    }

    /// Bytes held in memory (for a cache's budget).
    pub fn size(&self) -> usize {
        self.blocks
            .iter()
            .map(|b| 32 + b.bloom.as_ref().map_or(0, Bloom::size))
            .sum()
    }
}

/// Builds a file's [`COLUMN`] as its batches are written.
pub struct Builder {
    /// One byte per [`slot`], not zero for those seen in the block (1 MiB, of which a
    /// block touches a few thousand lines): gathered and cleared when the block ends. A
    /// fixed size, so indexing by a slot needs no bounds check.
    seen: Box<[u8; SLOTS]>,
    /// One record's text, folded (kept to reuse its allocation).
    buf: Vec<u8>,
    rows_in_block: u64,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// An empty builder.
    pub fn new() -> Builder {
        let seen = vec![0u8; SLOTS].into_boxed_slice();
        Builder {
            seen: seen.try_into().unwrap_or_else(|_| Box::new([0; SLOTS])),
            buf: Vec::new(),
            rows_in_block: 0,
        }
    }

    /// The trigrams at the even offsets of one record's text, given in pieces (windows
    /// span pieces).
    fn add_pieces<'a>(&mut self, pieces: impl IntoIterator<Item = &'a [u8]>) {
        // Folded into one buffer first, so each trigram is read from memory instead of
        // carried from the last one (no chain of dependent instructions per byte).
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        for p in pieces {
            buf.extend(p.iter().map(|&b| fold(b)));
        }
        let seen = &mut *self.seen;
        let grams = buf.len().saturating_sub(2);
        // One 8-byte load per three trigrams, at offsets 0, 2 and 4 of it (the padding
        // makes the last load whole).
        buf.extend_from_slice(&[0; 8]);
        let load = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&buf[i..i + 8]);
            u64::from_be_bytes(w)
        };
        let mut mark = |v: u64| {
            seen[slot((v & 0xFF_FFFF) as u32) as usize] = 1;
        };
        let full = grams / 6 * 6;
        for i in (0..full).step_by(6) {
            let x = load(i);
            mark(x >> 40);
            mark(x >> 24);
            mark(x >> 8);
        }
        for i in (full..grams).step_by(2) {
            mark(load(i) >> 40);
        }
        self.buf = buf;
    }

    /// The trigrams of one row: its `message` as rebuilt, and a body the message does not
    /// hold (so a search in a body column is narrowed soundly whatever the message).
    fn add_row(&mut self, message: Option<&str>, input: Option<&str>, output: Option<&str>) {
        let m = message.unwrap_or("").as_bytes();
        let (mut has_in, mut has_out) = (false, false);
        let mut pieces: Vec<&[u8]> = Vec::new();
        let mut at = 0;
        for (i, body) in schema::body_marks(m, input, output) {
            if m[i] == schema::INPUT_BODY_BYTE {
                has_in = true;
            } else {
                has_out = true;
            }
            pieces.push(&m[at..i]);
            pieces.push(body.as_bytes());
            at = i + 1;
        }
        if pieces.is_empty() {
            self.add_pieces([m]);
        } else {
            pieces.push(&m[at..]);
            self.add_pieces(pieces);
        }
        for (body, held) in [(input, has_in), (output, has_out)] {
            if let Some(b) = body {
                if !held {
                    self.add_pieces([b.as_bytes()]);
                }
            }
        }
    }

    /// The block's filter, and a fresh block.
    fn seal(&mut self) -> Vec<u8> {
        let distinct = self.seen.iter().filter(|&&b| b != 0).count();
        let mut bloom = Bloom::with_capacity(distinct, true, true);
        // Eight slots at a time: most are not set.
        for (i, c) in self.seen.chunks_exact_mut(8).enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            if u64::from_ne_bytes(w) == 0 {
                continue;
            }
            for (k, b) in c.iter_mut().enumerate() {
                if std::mem::take(b) != 0 {
                    bloom.insert((i * 8 + k) as u32);
                }
            }
        }
        self.rows_in_block = 0;
        bloom.to_bytes()
    }

    /// The index column for `batch` (rows in the table's schema): null but on the rows
    /// that end a block; `last` when no row follows in the file, so its last row ends the
    /// final block.
    pub fn column(&mut self, batch: &RecordBatch, last: bool) -> BinaryArray {
        let text = |i: usize| {
            batch
                .columns()
                .get(i)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        };
        let (m, inp, out) = (
            text(schema::MESSAGE),
            schema::column("input_body_json").and_then(|(i, _)| text(i)),
            schema::column("output_body_json").and_then(|(i, _)| text(i)),
        );
        fn get(a: Option<&StringArray>, i: usize) -> Option<&str> {
            a.filter(|a| a.is_valid(i)).map(|a| a.value(i))
        }
        let n = batch.num_rows();
        let mut values: Vec<Option<Vec<u8>>> = Vec::with_capacity(n);
        for i in 0..n {
            self.add_row(get(m, i), get(inp, i), get(out, i));
            self.rows_in_block += 1;
            if self.rows_in_block == BLOCK_ROWS || (last && i + 1 == n) {
                values.push(Some(self.seal()));
            } else {
                values.push(None);
            }
        }
        BinaryArray::from_iter(values)
    }
}

/// The schema of a store file: the table's, then [`COLUMN`].
pub fn file_schema() -> arrow_schema::SchemaRef {
    static S: std::sync::OnceLock<arrow_schema::SchemaRef> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let mut fields: Vec<arrow_schema::FieldRef> =
            schema::schema().fields().iter().cloned().collect();
        fields.push(Arc::new(arrow_schema::Field::new(
            COLUMN,
            arrow_schema::DataType::Binary,
            true,
        )));
        Arc::new(arrow_schema::Schema::new(fields))
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(rows: &[(&str, Option<&str>, Option<&str>)]) -> RecordBatch {
        let s = schema::schema();
        let cols = s
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let name = f.name().as_str();
                let pick = |k: usize| -> Arc<dyn Array> {
                    Arc::new(StringArray::from_iter(rows.iter().map(|r| match k {
                        0 => Some(r.0),
                        1 => r.1,
                        _ => r.2,
                    })))
                };
                match (i, name) {
                    (schema::MESSAGE, _) => pick(0),
                    (_, "input_body_json") => pick(1),
                    (_, "output_body_json") => pick(2),
                    (schema::TIMESTAMP, _) => Arc::new(
                        arrow_array::TimestampMillisecondArray::from(vec![0; rows.len()])
                            .with_timezone("UTC"),
                    ),
                    _ => arrow_array::new_null_array(f.data_type(), rows.len()),
                }
            })
            .collect();
        RecordBatch::try_new_with_options(
            s,
            cols,
            &arrow_array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )
        .unwrap()
    }

    #[test]
    fn a_block_holds_every_trigram_of_its_rows_including_those_across_a_body() {
        let mut b = Builder::new();
        // The message holds marks where the bodies were; the needle spans the mark.
        let rows = [(
            "{\"in\":\u{1},\"out\":\u{2}}",
            Some("{\"p\":\"Rare-Phrase here\"}"),
            Some("\"answer\""),
        )];
        let col = b.column(&batch(&rows), true);
        assert_eq!(col.null_count(), 0);
        let idx = TextIndex::from_column([&col]);
        assert_eq!(idx.blocks.len(), 1);
        let f = idx.blocks[0].bloom.as_ref().unwrap();
        for needle in [
            &b"rare-phrase"[..],
            b"RARE-PHRASE",
            b"{\"in\":{\"p\"",
            b"here\"},\"out\":\"answer\"}",
        ] {
            assert!(Need::contains(needle).unwrap().may_match(f), "{needle:?}");
        }
        // The marks themselves are not text the record holds.
        assert!(!Need::contains(b"\":\x01,").unwrap().may_match(f));
        assert!(!Need::contains(b"zebra-crossing").unwrap().may_match(f));
    }

    #[test]
    fn blocks_end_every_block_rows_and_at_the_last_row() {
        let mut b = Builder::new();
        let n = (BLOCK_ROWS + 10) as usize;
        let texts: Vec<String> = (0..n)
            .map(|i| {
                let w = if i < BLOCK_ROWS as usize {
                    "hello"
                } else {
                    "goodbye"
                };
                format!("row number {i} says {w}")
            })
            .collect();
        let rows: Vec<(&str, Option<&str>, Option<&str>)> =
            texts.iter().map(|t| (t.as_str(), None, None)).collect();
        let (a, c) = rows.split_at(100);
        let cols = [b.column(&batch(a), false), b.column(&batch(c), true)];
        let idx = TextIndex::from_column(cols.iter());
        assert_eq!(idx.rows, n as u64);
        let spans: Vec<(u64, u64)> = idx.blocks.iter().map(|b| (b.start, b.rows)).collect();
        assert_eq!(spans, vec![(0, BLOCK_ROWS), (BLOCK_ROWS, 10)]);
        // "goodbye" is only in the second block; "hello" only in the first.
        let need = Need::contains(b"Goodbye").unwrap();
        assert_eq!(idx.select(&need), vec![(BLOCK_ROWS, 10)]);
        let need = Need::contains(b"says hello").unwrap();
        assert_eq!(idx.select(&need), vec![(0, BLOCK_ROWS)]);
        // Both: the ranges merge.
        let both = Need::Any(vec![
            Need::contains(b"goodbye").unwrap(),
            Need::contains(b"hello").unwrap(),
        ]);
        assert_eq!(idx.select(&both), vec![(0, BLOCK_ROWS + 10)]);
        let neither = Need::All(vec![
            Need::contains(b"goodbye").unwrap(),
            Need::contains(b"hello").unwrap(),
        ]);
        assert!(idx.select(&neither).is_empty());
    }

    /// Only even offsets are indexed: a needle at an odd offset is found through its odd
    /// trigrams, at an even one through its even ones; a needle whose trigrams of neither
    /// parity were all put in is not.
    #[test]
    fn a_needle_is_found_at_either_parity_of_offset() {
        let mut b = Builder::new();
        let col = b.column(&batch(&[("abcdefgh", None, None)]), true);
        let f = TextIndex::from_column([&col]).blocks[0]
            .bloom
            .clone()
            .unwrap();
        assert!(f.even);
        // Put in: abc, cde, efg (offsets 0, 2, 4); bcd, def, fgh were not.
        for g in [&b"abc"[..], b"cde", b"efg"] {
            assert!(f.may_hold(grams(g)[0]), "{g:?}");
        }
        assert!(!f.may_hold(grams(b"bcd")[0]) && !f.may_hold(grams(b"fgh")[0]));
        for needle in [
            &b"bcdef"[..],
            b"cdefg",
            b"bcdefgh",
            b"abcdefgh",
            b"fgh",
            b"defgh",
        ] {
            assert!(Need::contains(needle).unwrap().may_match(&f), "{needle:?}");
        }
        // "bcdfg": its even trigrams bcd, dfg and its odd one cdf: not all of either put in.
        assert!(!Need::contains(b"bcdfg").unwrap().may_match(&f));
    }

    #[test]
    fn every_trigram_at_every_offset_is_held_whatever_the_length() {
        // The builder reads three trigrams per load, then the rest one by one: every
        // piece of text of three to six bytes, at every offset, may be found.
        let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
        for len in 0..40usize {
            let text: String = (0..len)
                .map(|i| alphabet[(i * 7 + len) % alphabet.len()] as char)
                .collect();
            let mut b = Builder::new();
            let col = b.column(&batch(&[(text.as_str(), None, None)]), true);
            let f = TextIndex::from_column([&col]).blocks[0]
                .bloom
                .clone()
                .unwrap();
            for n in 3..=6 {
                for w in text.as_bytes().windows(n) {
                    assert!(Need::contains(w).unwrap().may_match(&f), "{len}: {w:?}");
                }
            }
        }
    }

    #[test]
    fn a_body_outside_the_message_is_indexed_too() {
        let mut b = Builder::new();
        let col = b.column(&batch(&[("{}", Some("needle in the body"), None)]), true);
        let idx = TextIndex::from_column([&col]);
        assert_eq!(idx.select(&Need::contains(b"needle in").unwrap()).len(), 1);
    }

    #[test]
    fn unreadable_filters_and_unindexed_rows_are_read() {
        let col = BinaryArray::from_iter([None, Some(&b"\x09junk"[..]), None, None]);
        let idx = TextIndex::from_column([&col]);
        let spans: Vec<(u64, u64, bool)> = idx
            .blocks
            .iter()
            .map(|b| (b.start, b.rows, b.bloom.is_some()))
            .collect();
        assert_eq!(spans, vec![(0, 2, false), (2, 2, false)]);
        assert_eq!(idx.select(&Need::contains(b"abc").unwrap()), vec![(0, 4)]);
    }

    #[test]
    fn filters_round_trip_and_hold_every_inserted_gram() {
        let mut f = Bloom::with_capacity(5000, false, false);
        let gs: Vec<u32> = (0..5000u32)
            .map(|i| i.wrapping_mul(2_654_435_761) & 0xFF_FFFF)
            .collect();
        for &g in &gs {
            f.insert(g);
        }
        let back = Bloom::from_bytes(&f.to_bytes()).unwrap();
        assert_eq!(back, f);
        assert!(gs.iter().all(|&g| back.may_hold(g)));
        // About 1% false positives.
        let fp = (0..100_000u32)
            .map(|i| 0x80_0000 | i)
            .filter(|g| !gs.contains(g) && back.may_hold(*g))
            .count();
        assert!(fp < 3000, "{fp} false positives of 100000");
        assert!(Bloom::from_bytes(&[4, 0, 0, 0, 0, 0, 0, 0, 0]).is_none());
    }

    #[test]
    fn filters_of_both_formats_are_read_and_match_what_they_hold() {
        let text = b"The quick brown fox";
        // Files written before slots: the filter's bits hold the trigram codes.
        let mut old = Bloom::with_capacity(64, false, false);
        for g in grams(text) {
            old.insert(g);
        }
        // Before 2026-12-07: the slots of the trigrams at every offset.
        let mut every = Bloom::with_capacity(64, true, false);
        for g in grams(text) {
            every.insert(slot(g));
        }
        // Now: the slots of those at even offsets, as a builder's seal writes them.
        let mut b = Builder::new();
        let col = b.column(
            &batch(&[(std::str::from_utf8(text).unwrap(), None, None)]),
            true,
        );
        let new = TextIndex::from_column([&col]).blocks[0]
            .bloom
            .clone()
            .unwrap();
        for (f, version) in [
            (old, VERSION_GRAMS),
            (every, VERSION_SLOTS),
            (new, VERSION_EVEN),
        ] {
            let bytes = f.to_bytes();
            assert_eq!(bytes[0], version);
            let back = Bloom::from_bytes(&bytes).unwrap();
            assert_eq!(back, f);
            assert!(Need::contains(b"QUICK brown").unwrap().may_match(&back));
            assert!(!Need::contains(b"lazy dog jumps").unwrap().may_match(&back));
        }
        assert!(Bloom::from_bytes(&[1; 25]).is_none());
    }
}
