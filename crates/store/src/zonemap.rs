//! What each row group of a store file holds of the numeric columns: the least and
//! greatest value and the count of nulls, read from the file's Parquet footer.
//!
//! A query that keeps the first `k` rows in order of one column (an Insights
//! `sort latency desc | limit 10`, and the default newest-first order) can tell from these
//! before reading any row that a value is reached by at least `k` rows: every row group's
//! greatest value is a value some row has. Row groups that cannot reach it need not be read
//! ([`ZoneMap`] is the fact; the query decides what to do with it).

use crate::schema::{self, Kind};
use parquet::basic::Type as PhysicalType;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;

/// The range of one column in one row group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Least non-null value (for a timestamp, epoch ms; for a decimal, the unscaled value).
    pub min: i128,
    /// Greatest non-null value.
    pub max: i128,
    /// Nulls in the row group.
    pub nulls: u64,
}

/// One row group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// Rows in the row group.
    pub rows: u64,
    /// By the index of the column in [`schema::COLUMNS`]: its range, when the column is
    /// numeric (integer, timestamp, decimal) and the footer gives exact statistics for it
    /// (none: all nulls, no statistics, or not numeric).
    pub ranges: Vec<Option<Range>>,
}

/// The row groups of one file, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZoneMap {
    /// The row groups.
    pub zones: Vec<Zone>,
}

impl ZoneMap {
    /// Read from a file's footer.
    pub fn from_metadata(meta: &ParquetMetaData) -> ZoneMap {
        let descr = meta.file_metadata().schema_descr();
        // Leaf index of each store column, by its position in `schema::COLUMNS`.
        let leaves: Vec<Option<usize>> = schema::COLUMNS
            .iter()
            .map(|c| {
                if !matches!(c.kind, Kind::Int | Kind::Timestamp | Kind::Decimal) {
                    return None;
                }
                (0..descr.num_columns()).find(|&i| descr.column(i).path().string() == c.name)
            })
            .collect();
        let zones = meta
            .row_groups()
            .iter()
            .map(|rg| Zone {
                rows: u64::try_from(rg.num_rows()).unwrap_or(0),
                ranges: leaves
                    .iter()
                    .map(|leaf| {
                        let chunk = rg.columns().get((*leaf)?)?;
                        range(chunk.column_type(), chunk.statistics()?)
                    })
                    .collect(),
            })
            .collect();
        ZoneMap { zones }
    }

    /// Bytes held (for a cache's account).
    pub fn size(&self) -> usize {
        self.zones
            .iter()
            .map(|z| {
                std::mem::size_of::<Zone>() + z.ranges.len() * std::mem::size_of::<Option<Range>>()
            })
            .sum::<usize>()
            + std::mem::size_of::<ZoneMap>()
    }
}

/// A column chunk's range, when its statistics are exact and numeric.
fn range(physical: PhysicalType, s: &Statistics) -> Option<Range> {
    let nulls = s.null_count_opt()?;
    let (min, max) = match s {
        Statistics::Int32(v) if v.min_is_exact() && v.max_is_exact() => {
            (i128::from(*v.min_opt()?), i128::from(*v.max_opt()?))
        }
        Statistics::Int64(v) if v.min_is_exact() && v.max_is_exact() => {
            (i128::from(*v.min_opt()?), i128::from(*v.max_opt()?))
        }
        Statistics::FixedLenByteArray(v)
            if physical == PhysicalType::FIXED_LEN_BYTE_ARRAY
                && v.min_is_exact()
                && v.max_is_exact() =>
        {
            (
                be_signed(v.min_bytes_opt()?)?,
                be_signed(v.max_bytes_opt()?)?,
            )
        }
        _ => return None,
    };
    Some(Range { min, max, nulls })
}

/// A big-endian two's-complement integer of at most 16 bytes (Parquet's decimal).
fn be_signed(b: &[u8]) -> Option<i128> {
    if b.is_empty() || b.len() > 16 {
        return None;
    }
    let fill = if b[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut out = [fill; 16];
    out[16 - b.len()..].copy_from_slice(b);
    Some(i128::from_be_bytes(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_read_as_signed_big_endian() {
        assert_eq!(be_signed(&[0x01, 0x00]), Some(256));
        assert_eq!(be_signed(&[0xff]), Some(-1));
        assert_eq!(be_signed(&[0xff, 0x00]), Some(-256));
        assert_eq!(
            be_signed(&[0x7f; 16]),
            Some(i128::from_be_bytes([0x7f; 16]))
        );
        assert_eq!(be_signed(&[]), None);
        assert_eq!(be_signed(&[0; 17]), None);
    }
}
